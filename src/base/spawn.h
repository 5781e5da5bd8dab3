/*
 * spawn.h - start a child that does its own set-up before exec, and hear
 * about a failed set-up from it: the fork/clone + status pipe scaffolding the
 * process, container and VM (QEMU) backends share.
 *
 * hd_spawn_start forks (or clones with namespace flags, optionally straight
 * into a cgroup with clone3's CLONE_INTO_CGROUP) and runs opts->child in the
 * child. The child reports a failed step with hd_child_fail(report_fd, ...)
 * (child.h: one report of {exit code, errno, message} on a CLOEXEC pipe); if
 * it execs, the pipe closes empty. With opts->go the child can also wait
 * (hd_spawn_child_wait_go) until the parent has finished its side of the
 * set-up (cgroup entry, id maps, network) and called hd_spawn_finish.
 *
 * Cost: one pipe, one socketpair when there is a "go", one fork/clone; the
 * parent blocks only in the report read, which ends when the child execs.
 *
 * Parent side, in order:
 *   hd_spawn_start  -> child running; s->pid set
 *   ...the parent's own steps...
 *   hd_spawn_finish -> send "go", read the report; 0 = exec'd, else the
 *                      child's message and exit code in *err (child reaped)
 *   or hd_spawn_abort when a parent step failed: kill and reap the child and,
 *                      when the child had failed first, return its report.
 */
#ifndef HEDGE_SPAWN_H
#define HEDGE_SPAWN_H

#include <stdbool.h>
#include <sys/types.h>

#include "base/error.h"

struct hd_spawn_options {
    const char *what;          /* names the child in errors: "start qemu-system-x86_64" */
    unsigned long clone_flags; /* CLONE_NEW* flags; 0: a plain fork */
    int cgroup_fd;             /* >= 0: born in this cgroup (CLONE_INTO_CGROUP); -1: where we are */
    bool go;                   /* the child waits for the parent's "go" (hd_spawn_child_wait_go) */
    /* vfork semantics (CLONE_VM|CLONE_VFORK): the child runs on a stack of its own in our memory and
     * hd_spawn_start returns once it exec'd or exited, so our page tables are not copied (the largest
     * cost of starting a bare process). Not with go. The child must touch nothing of ours that
     * another thread may change. x86_64 without ASan; elsewhere a fork-like clone as before. */
    bool share_memory;
    /* Runs in the child; never returns (exec, or hd_child_fail). go_fd is -1 without opts->go. */
    __attribute__((noreturn)) void (*child)(void *data, int go_fd, int report_fd);
    void *data;
};

struct hd_spawn {
    pid_t pid;     /* the child; -1 once reaped by finish/abort */
    int go_fd;     /* parent's end of the "go" socket, -1 once sent */
    int report_fd; /* read end of the report pipe */
    const char *what;
};

/* Fork/clone and run opts->child in the child. On failure nothing is left open. */
int hd_spawn_start(const struct hd_spawn_options *opts, struct hd_spawn *s, hd_error_t *err);
/* Send "go" (if any) and read the child's report: 0 when it exec'd; else -1
 * with the child's report in *err, the child reaped and s->pid -1. Closes the fds. */
int hd_spawn_finish(struct hd_spawn *s, hd_error_t *err);
/* A parent step failed (its error is in *err): kill and reap the child; when the
 * child had reported a failure, that report replaces *err (the parent's step may
 * have failed only because the child failed first). Closes the fds. Returns -1. */
int hd_spawn_abort(struct hd_spawn *s, hd_error_t *err);

/* Child side: block until the parent's "go"; _exit(HD_EXIT_HEDGE) if the parent gave up. */
void hd_spawn_child_wait_go(int go_fd);

#endif
