/*
 * process.c - the `process` isolation backend: a plain fork+exec on the host,
 * in its own cgroup, with env/workdir/user applied. Lowest latency, weakest
 * isolation.
 *
 * On cgroup v2 (and in a hybrid host's unified directory) the child is born
 * inside its cgroup (clone3 with CLONE_INTO_CGROUP); it moves itself into v1
 * hierarchies before anything else of its own (hd_cgroup_entry_enter), so no instruction of
 * the workload runs outside its limits. The difference matters for speed:
 * the parent writing the pid to cgroup.procs would take the kernel's global
 * cgroup_threadgroup_rwsem for writing, which waits for an RCU grace period
 * (~5-15 ms here); neither CLONE_INTO_CGROUP nor a task moving only itself
 * takes it. Exec failures come back over the report pipe (base/child.c, base/spawn.c)
 * as 126/127.
 *
 * With devices or device_rules in the spec, the process's cgroup gets a
 * device list (Docker's default plus the listed ones, cgroup/devices.h) before
 * the child exists; without, it keeps the host's devices, as before.
 *
 * The child is a vfork child (hd_spawn_options.share_memory): it runs in our
 * memory until it execs, so the kernel copies none of our page tables; the
 * child only makes syscalls on what we prepared and writes nothing of ours.
 *
 * The static `hedge` runs the plain `hedge run -i process -- CMD` without this
 * file, from its ELF entry before glibc starts (src/cli/fast_run.c, the same
 * steps with raw system calls); flags, specs, hedged and hedge-full come here.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/backend.h"
#include "cgroup/cgroup.h"
#include "cgroup/devices.h"
#include "base/child.h"
#include "base/spawn.h"
#include "base/util.h"

static int process_prepare(struct hd_workload *w, hd_error_t *err)
{
    return 0;
}

struct process_child {
    struct hd_workload *w;
    struct hd_cgroup_entry *cgroup_entry;
};

__attribute__((noreturn)) static void process_child(void *data, int go_fd, int report_fd)
{
    struct process_child *pc = data;
    struct hd_workload *w = pc->w;
    /* no "go": the parent has nothing to do between fork and exec; the child enters its
     * v1 cgroups itself before anything else (born in the v2 one) */
    const char *failed_dir = NULL;
    /* a copy: entering closes (and marks closed) the entry, and we share the parent's memory */
    struct hd_cgroup_entry entry = *pc->cgroup_entry;
    int r = hd_cgroup_entry_enter(&entry, &failed_dir);
    if (r < 0)
        hd_child_fail(report_fd, HD_EXIT_HEDGE, -r, "cgroup: enter %s", failed_dir);
    hd_child_setup_stdio(w->stdio, report_fd);
    struct hd_exec_plan plan = {
        .argv = w->argv,
        .env = w->env,
        .workdir = w->workdir,
        .user = w->user,
        .no_new_privs = false, /* a bare process keeps the caller's privilege model */
    };
    hd_child_exec(report_fd, &plan);
}

static int process_start(struct hd_workload *w, hd_error_t *err)
{
    struct hd_cgroup_entry cgroup_entry;
    /* a device list only when the spec gives devices or device_rules (run.c); else the host's devices */
    if (w->cgroup && w->device_rules && hd_cgroup_devices_apply(w->cgroup, w->device_rules, w->n_device_rules, err) < 0)
        return -1;
    if (hd_cgroup_entry_open(w->cgroup, &cgroup_entry, err) < 0)
        return -1;
    /* Born in the cgroup where there is a v2 directory; the child enters v1 hierarchies itself. */
    struct process_child pc = {.w = w, .cgroup_entry = &cgroup_entry};
    struct hd_spawn_options opts = {
        .what = "start workload",
        .cgroup_fd = cgroup_entry.clone_fd,
        .share_memory = true, /* vfork semantics: our page tables are not copied */
        .child = process_child,
        .data = &pc,
    };
    struct hd_spawn s;
    int r = hd_spawn_start(&opts, &s, err);
    hd_cgroup_entry_close(&cgroup_entry);
    if (r < 0)
        return -1;
    w->pid = s.pid;
    if (hd_spawn_finish(&s, err) < 0) {
        w->pid = -1;
        return -1;
    }
    return 0;
}

static void process_cleanup(struct hd_workload *w)
{
    if (w->pid > 0) {
        kill(w->pid, SIGKILL);
        waitpid(w->pid, NULL, 0);
        w->pid = -1;
    }
}

const struct hd_backend hd_backend_process = {
    .name = "process",
    .prepare = process_prepare,
    .start = process_start,
    .signal = hd_backend_pid_signal,
    .wait = hd_backend_pid_wait,
    .stats = hd_backend_cgroup_stats,
    .cleanup = process_cleanup,
};
