/*
 * deploy.c - `hedge deploy FILE`: create or upgrade a workload on hedged.
 *
 * The spec is sent as it is (POST /v1/workloads?origin=FILE), so hedged's
 * messages name the file exactly as `hedge run -f FILE` would. A first
 * deploy answers once the workload started; an upgrade once the new version
 * was healthy for --health-wait seconds (or failed, keeping the old one).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "client.h"
#include "util.h"

static const char usage[] = "hedge deploy [--json] [--health-wait SECONDS] FILE|-";

int cmd_deploy(int argc, char **argv)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"health-wait", required_argument, NULL, 'w'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool json = false;
    const char *health = NULL;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "+", options, NULL)) != -1) {
        switch (opt) {
        case 'j': json = true; break;
        case 'w': health = optarg; break;
        case 'h': printf("usage: %s\n", usage); return 0;
        default: return cli_usage_error("deploy", usage, "unknown option");
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("deploy", usage, "give one spec file");
    const char *file = argv[optind];
    cleanup_free char *data = NULL;
    size_t len = 0;
    hd_error_t err = NULL;
    if (strcmp(file, "-") == 0) {
        FILE *mem = open_memstream(&data, &len);
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), stdin)) > 0)
            fwrite(buf, 1, n, mem);
        fclose(mem);
    } else if (hd_read_file(file, &data, &len, &err) < 0) {
        hd_error_prefix(&err, "spec");
        return cli_fail(&err);
    }
    cleanup_free char *origin = hd_client_escape(strcmp(file, "-") == 0 ? "stdin" : file);
    cleanup_free char *wait = health ? hd_client_escape(health) : NULL;
    cleanup_free char *path = hd_xasprintf("/v1/workloads?origin=%s%s%s", origin, wait ? "&health_wait=" : "",
                                           wait ? wait : "");
    int code = 0;
    json_t *o = hd_client_call("deploy", "POST", path, data, len, &code);
    if (o == NULL)
        return code;
    if (json) {
        json_dumpf(o, stdout, JSON_INDENT(2));
        putchar('\n');
    } else {
        const char *name = json_string_value(json_object_get(o, "name"));
        const char *status = json_string_value(json_object_get(o, "status"));
        int version = (int)json_integer_value(json_object_get(o, "version"));
        if (status && strcmp(status, "upgraded") == 0)
            printf("%s: version %d (upgraded from version %d)\n", name, version,
                   (int)json_integer_value(json_object_get(o, "previous")));
        else
            printf("%s: version %d (%s)\n", name, version, status ? status : "?");
    }
    json_decref(o);
    return 0;
}
