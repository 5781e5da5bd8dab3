/*
 * qmp-driver - drives runtime/vm/qmp.c against a real QEMU for test_vm.py:
 *   qmp-driver SOCKET TIMEOUT_MS STEP...
 * steps, run in order on one connection:
 *   version          print QEMU's version from the greeting
 *   status           print query-status as "STATUS running|stopped"
 *   cmd NAME [JSON]  run a command, print its return value as compact JSON
 *   event NAME       wait for an event
 *   quit             quit QEMU
 * Prints "error: TEXT" and exits 1 at the first failed step.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/vm/qmp.h"

static int fail(hd_error_t *err, struct hd_qmp *q)
{
    printf("error: %s\n", hd_error_text(*err));
    hd_error_free(err);
    hd_qmp_close(q);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: qmp-driver SOCKET TIMEOUT_MS STEP...\n");
        return 2;
    }
    int timeout = atoi(argv[2]);
    hd_error_t err = NULL;
    struct hd_qmp *q = NULL;
    if (hd_qmp_connect(argv[1], timeout, &q, &err) < 0)
        return fail(&err, NULL);
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "version") == 0) {
            printf("%s\n", hd_qmp_version(q));
        } else if (strcmp(argv[i], "status") == 0) {
            char *status = NULL;
            bool running = false;
            if (hd_qmp_query_status(q, timeout, &status, &running, &err) < 0)
                return fail(&err, q);
            printf("%s %s\n", status, running ? "running" : "stopped");
            free(status);
        } else if (strcmp(argv[i], "cmd") == 0 && i + 1 < argc) {
            const char *name = argv[++i];
            json_t *args = NULL;
            if (i + 1 < argc && argv[i + 1][0] == '{')
                args = json_loads(argv[++i], 0, NULL);
            json_t *ret = NULL;
            int r = hd_qmp_command(q, name, args, timeout, &ret, &err);
            json_decref(args);
            if (r < 0)
                return fail(&err, q);
            char *text = json_dumps(ret, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
            printf("%s\n", text ? text : "null");
            free(text);
            json_decref(ret);
        } else if (strcmp(argv[i], "event") == 0 && i + 1 < argc) {
            if (hd_qmp_wait_event(q, argv[++i], timeout, &err) < 0)
                return fail(&err, q);
            printf("event %s\n", argv[i]);
        } else if (strcmp(argv[i], "quit") == 0) {
            if (hd_qmp_quit(q, timeout, &err) < 0)
                return fail(&err, q);
            printf("quit\n");
        } else {
            fprintf(stderr, "qmp-driver: unknown step %s\n", argv[i]);
            hd_qmp_close(q);
            return 2;
        }
        fflush(stdout);
    }
    hd_qmp_close(q);
    return 0;
}
