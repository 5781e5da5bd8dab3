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
 * takes it. Exec failures come back over the report pipe (child.c) as 126/127.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/backend.h"
#include "cgroup/cgroup.h"
#include "base/child.h"
#include "base/util.h"

static int process_prepare(struct hd_workload *w, hd_error_t *err)
{
    return 0;
}

static int process_start(struct hd_workload *w, hd_error_t *err)
{
    int go[2], report[2];
    if (pipe2(go, O_CLOEXEC) < 0)
        return hd_error_sys(err, "pipe");
    if (pipe2(report, O_CLOEXEC) < 0) {
        close(go[0]);
        close(go[1]);
        return hd_error_sys(err, "pipe");
    }
    struct hd_cgroup_entry cgroup_entry;
    if (hd_cgroup_entry_open(w->cgroup, &cgroup_entry, err) < 0) {
        close(go[0]); close(go[1]); close(report[0]); close(report[1]);
        return -1;
    }
    /* Born in the cgroup where there is a v2 directory; the child enters v1 hierarchies itself. */
    int cgroup_fd = cgroup_entry.clone_fd;
    pid_t pid;
    if (cgroup_fd >= 0) {
        struct clone_args args = {
            .flags = CLONE_INTO_CGROUP,
            .exit_signal = SIGCHLD,
            .cgroup = (uint64_t)cgroup_fd,
        };
        pid = (pid_t)syscall(SYS_clone3, &args, sizeof(args));
    } else {
        pid = fork();
    }
    if (pid < 0) {
        int e = errno;
        close(go[0]); close(go[1]); close(report[0]); close(report[1]);
        hd_cgroup_entry_close(&cgroup_entry);
        return hd_error_set(err, e, "fork");
    }
    if (pid == 0) {
        close(go[1]);
        close(report[0]);
        char c;
        if (read(go[0], &c, 1) != 1)
            _exit(125); /* parent gave up on us */
        /* after "go" (a failure here must not meet the parent's write to a closed pipe), before exec */
        const char *failed_dir = NULL;
        int r = hd_cgroup_entry_enter(&cgroup_entry, &failed_dir);
        if (r < 0)
            hd_child_fail(report[1], 125, -r, "cgroup: enter %s", failed_dir);
        hd_child_setup_stdio(w->stdio, report[1]);
        struct hd_exec_plan plan = {
            .argv = w->argv,
            .env = w->env,
            .workdir = w->workdir,
            .user = w->user,
            .no_new_privs = false, /* a bare process keeps the caller's privilege model */
        };
        hd_child_exec(report[1], &plan);
    }
    hd_cgroup_entry_close(&cgroup_entry);
    close(go[0]);
    close(report[1]);
    cleanup_close int report_fd = report[0];
    cleanup_close int go_fd = go[1];
    w->pid = pid;
    if (write(go_fd, "g", 1) != 1) {
        int e = errno;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        w->pid = -1;
        return hd_error_set(err, e, "start workload");
    }
    close(steal_fd(&go_fd));
    if (hd_child_read_report(report_fd, err) < 0) {
        waitpid(pid, NULL, 0);
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
