/*
 * process.c - the `process` isolation backend: a plain fork+exec on the host,
 * in its own cgroup, with env/workdir/user applied. Lowest latency, weakest
 * isolation.
 *
 * On cgroup v2 the child is born inside its cgroup (clone3 with
 * CLONE_INTO_CGROUP). Elsewhere the child waits on a pipe until the parent
 * has moved it in, so no instruction of the workload runs outside its limits.
 * The difference matters for speed: writing a pid to cgroup.procs takes the
 * kernel's global cgroup_threadgroup_rwsem for writing, which waits for an
 * RCU grace period (~5-15 ms here), while CLONE_INTO_CGROUP only reads it.
 * Exec failures come back over the report pipe (child.c) as 126/127.
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

#include "backend.h"
#include "cgroup.h"
#include "child.h"
#include "util.h"

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
    /* Born in the cgroup when the host can (v2); else forked and moved in below. */
    int cgroup_fd = w->cgroup ? hd_cgroup_fd(w->cgroup) : -1;
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
        return hd_error_set(err, e, "fork");
    }
    if (pid == 0) {
        close(go[1]);
        close(report[0]);
        char c;
        if (read(go[0], &c, 1) != 1)
            _exit(125); /* parent gave up on us */
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
    close(go[0]);
    close(report[1]);
    cleanup_close int report_fd = report[0];
    cleanup_close int go_fd = go[1];
    w->pid = pid;
    if (w->cgroup && cgroup_fd < 0 && hd_cgroup_enter(w->cgroup, pid, err) < 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        w->pid = -1;
        return -1;
    }
    if (write(go_fd, "g", 1) != 1) {
        int e = errno;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        w->pid = -1;
        return hd_error_set(err, e, "start workload");
    }
    close(go_fd);
    go_fd = -1;
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
