/*
 * spawn.c - fork/clone a child with a CLOEXEC report pipe and an optional
 * "go" socket (spawn.h). The report format is child.c's.
 *
 * "go" is a socket, not a pipe, so that sending it to a child that already
 * failed is EPIPE (MSG_NOSIGNAL), not SIGPIPE. The clone is fork-like (no new
 * stack): the child continues with a copy of our memory, so the callback may
 * use anything the parent prepared.
 */
#include "base/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/child.h"
#include "base/util.h"

static void close_if_open(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static void spawn_close(struct hd_spawn *s)
{
    close_if_open(&s->go_fd);
    close_if_open(&s->report_fd);
}

static void spawn_kill_and_reap(struct hd_spawn *s)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGKILL);
    while (waitpid(s->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    s->pid = -1;
}

static pid_t spawn_clone(const struct hd_spawn_options *opts)
{
    if (opts->cgroup_fd >= 0) {
        struct clone_args args = {
            .flags = opts->clone_flags | CLONE_INTO_CGROUP,
            .exit_signal = SIGCHLD,
            .cgroup = (uint64_t)opts->cgroup_fd,
        };
        return (pid_t)syscall(SYS_clone3, &args, sizeof(args));
    }
    if (opts->clone_flags)
        return (pid_t)syscall(SYS_clone, opts->clone_flags | SIGCHLD, NULL, NULL, NULL, 0);
    return fork();
}

int hd_spawn_start(const struct hd_spawn_options *opts, struct hd_spawn *s, hd_error_t *err)
{
    *s = (struct hd_spawn){.pid = -1, .go_fd = -1, .report_fd = -1, .what = opts->what ? opts->what : "spawn"};
    int go[2] = {-1, -1}, report[2];
    if (opts->go && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, go) < 0)
        return hd_error_sys(err, "%s: socketpair", s->what);
    if (pipe2(report, O_CLOEXEC) < 0) {
        int e = errno;
        close_if_open(&go[0]);
        close_if_open(&go[1]);
        return hd_error_set(err, e, "%s: pipe", s->what);
    }
    pid_t pid = spawn_clone(opts);
    if (pid < 0) {
        int e = errno;
        close_if_open(&go[0]);
        close_if_open(&go[1]);
        close(report[0]);
        close(report[1]);
        return hd_error_set(err, e, "%s: %s", s->what, opts->clone_flags ? "clone" : "fork");
    }
    if (pid == 0) {
        close_if_open(&go[1]);
        close(report[0]);
        opts->child(opts->data, go[0], report[1]);
    }
    close_if_open(&go[0]);
    close(report[1]);
    s->pid = pid;
    s->go_fd = go[1];
    s->report_fd = report[0];
    return 0;
}

int hd_spawn_finish(struct hd_spawn *s, hd_error_t *err)
{
    bool sent = true;
    if (s->go_fd >= 0) {
        sent = send(s->go_fd, "g", 1, MSG_NOSIGNAL) == 1;
        close_if_open(&s->go_fd);
    }
    /* a child that failed before "go" has left its report: that is the error */
    int ret = hd_child_read_report(s->report_fd, err);
    if (ret == 0 && !sent)
        ret = hd_error_set(err, 0, "%s: the child exited during set-up", s->what);
    if (ret < 0)
        spawn_kill_and_reap(s);
    spawn_close(s);
    return ret;
}

int hd_spawn_abort(struct hd_spawn *s, hd_error_t *err)
{
    close_if_open(&s->go_fd);
    spawn_kill_and_reap(s);
    hd_error_t child_err = NULL;
    if (s->report_fd >= 0 && hd_child_read_report(s->report_fd, &child_err) < 0) {
        hd_error_free(err);
        *err = get_and_reset(&child_err);
    }
    hd_error_free(&child_err);
    spawn_close(s);
    return -1;
}

void hd_spawn_child_wait_go(int go_fd)
{
    char byte;
    ssize_t n;
    do
        n = read(go_fd, &byte, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1)
        _exit(HD_EXIT_HEDGE); /* the parent gave up on us */
    close(go_fd);
}
