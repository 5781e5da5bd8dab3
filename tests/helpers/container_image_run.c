/*
 * container_image_run.c - test driver: run a command in the container backend
 * with a plan that marks ROOTFS as an image store rootfs (rootfs_from_image),
 * to test the overlay / read-only path before the image store exists.
 *
 *   container_image_run ROOTFS rw|ro|rw-userns COMMAND [ARG...]
 *
 * "rw" is a writable container (overlay over ROOTFS), "ro" readonly_rootfs (a
 * read-only bind), "rw-userns" the overlay in a user namespace (0 inside =
 * 100000 outside). It drives the real backend (prepare, start, wait,
 * cleanup) exactly as run.c does, and exits with the workload's code.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/backend.h"
#include "runtime/run.h"
#include "spec/spec.h"
#include "base/util.h"

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s ROOTFS rw|ro|rw-userns COMMAND [ARG...]\n", argv[0]);
        return 2;
    }
    struct hd_spec *spec = hd_spec_new();
    spec->readonly_rootfs = strcmp(argv[2], "ro") == 0;
    if (strcmp(argv[2], "rw-userns") == 0)
        spec->userns = (struct hd_user_namespace){true, 100000, 100000, 65536};
    struct hd_workload *w = hd_xcalloc(1, sizeof(*w));
    w->spec = spec;
    w->backend = &hd_backend_container;
    w->pid = -1;
    hd_random_id(w->id, sizeof(w->id));
    w->rootfs = hd_xstrdup(argv[1]);
    w->rootfs_from_image = true;
    w->argv = hd_strv_dup(argv + 3);
    hd_strv_push(&w->env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    w->state_dir = "/nonexistent";
    for (int i = 0; i < 3; i++)
        w->stdio[i] = i;
    w->run_dir = hd_xasprintf("%s/runs/%s", hd_runtime_dir(), w->id);

    hd_error_t err = NULL;
    struct hd_exit exit_status = {.code = 125};
    int ret = hd_mkdir_p(w->run_dir, 0700, &err);
    if (ret == 0)
        ret = w->backend->prepare(w, &err);
    if (ret == 0)
        ret = w->backend->start(w, &err);
    if (ret == 0)
        ret = w->backend->wait(w, &exit_status, &err);
    if (ret < 0) {
        hd_error_print(err, "container_image_run");
        exit_status.code = hd_error_exit_code(err);
        hd_error_free(&err);
    }
    /* the same teardown as hd_workload_destroy, without a cgroup */
    w->backend->cleanup(w);
    if (hd_rm_rf(w->run_dir, &err) < 0) {
        hd_error_print(err, "container_image_run");
        hd_error_free(&err);
        exit_status.code = 125;
    }
    free(w->run_dir);
    free(w->rootfs);
    hd_strv_free(w->argv);
    hd_strv_free(w->env);
    free(w);
    hd_spec_free(spec);
    return exit_status.code;
}
