/*
 * run.h - from spec to a running workload: hd_workload_create resolves the
 * plan (image defaults, env, ids), creates the cgroup and lets the backend
 * prepare; start/signal/wait/destroy drive it. hd_run does all of it in the
 * foreground with signal forwarding, which is what `hedge run` is.
 */
#ifndef HEDGE_RUN_H
#define HEDGE_RUN_H

#include "runtime/backend.h"
#include "base/error.h"
#include "spec/spec.h"

struct hd_run_options {
    const char *state_dir;          /* NULL: hd_state_dir() */
    int stdio[3];                   /* fds for the workload's 0,1,2; {0,1,2} by default */
    bool set_stdio;                 /* stdio[] was filled in */
    const char *cgroup_name;        /* the group under the cgroup parent; NULL: the run id (hedge-oci names it) */
    struct hd_vm_pooled *vm_pooled; /* a warm pool's restored clone for a vm workload (runtime/vm/vm.h): the
                                       workload owns it from hd_workload_create on, used or not */
};

int hd_workload_create(const struct hd_spec *spec, const struct hd_run_options *opts, struct hd_workload **out,
                       hd_error_t *err);
int hd_workload_start(struct hd_workload *w, hd_error_t *err);
int hd_workload_signal(struct hd_workload *w, int sig, hd_error_t *err);
int hd_workload_wait(struct hd_workload *w, struct hd_exit *exit, hd_error_t *err);
/* Kill what remains, clean up everything the run created, free w. w may be NULL. */
void hd_workload_destroy(struct hd_workload *w);
/*
 * Free w but leave the started workload running: its processes, cgroup and run
 * dir stay for another process to find (hedge-oci's create returns while the
 * container waits for start; delete removes them later). Only for the
 * container backend with network none or host, whose remaining state in w
 * (namespaces, mounts) lives in the workload's own processes. w may be NULL.
 */
void hd_workload_release(struct hd_workload *w);

/*
 * Rewrite the files of the workload's secrets named name (every secret when
 * NULL) from the store, each replaced by rename(2), so the workload reads the
 * old value or the new one (docs/security.md). Variables set from a secret keep
 * the value they started with. No-op for a workload without secrets.
 */
int hd_workload_refresh_secrets(struct hd_workload *w, const char *name, hd_error_t *err);

/* Run a workload to completion in the foreground, forwarding SIGINT, SIGTERM,
 * SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2. Returns 0 with *exit filled, or -1. */
int hd_run(const struct hd_spec *spec, const struct hd_run_options *opts, struct hd_exit *exit, hd_error_t *err);

/* Runtime directory for per-run temp state: $HEDGE_RUN_DIR or /run/hedge. */
const char *hd_runtime_dir(void);

#endif
