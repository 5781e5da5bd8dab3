/*
 * spawn.c - fork/clone a child with a CLOEXEC report pipe and an optional
 * "go" socket (spawn.h). The report format is child.c's.
 *
 * "go" is a socket, not a pipe, so that sending it to a child that already
 * failed is EPIPE (MSG_NOSIGNAL), not SIGPIPE. The clone is fork-like (no new
 * stack): the child continues with a copy of our memory, so the callback may
 * use anything the parent prepared.
 *
 * With share_memory the child is a vfork child instead (what glibc's
 * posix_spawn does, but with clone3 so CLONE_INTO_CGROUP still applies): it
 * shares our memory and runs the callback on a stack we map for it, and we
 * are suspended until it exec'd or exited. clone3 cannot be called from C
 * for that (the child would return into our frame on its new stack), so a
 * few lines of assembly make the call and jump to the callback.
 */
#include "base/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <pthread.h>
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

/* ASan (gcc's macro, clang's feature) would track the child's frames on a stack we unmap: no sharing there. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SPAWN_ASAN 1
#endif
#endif
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) && !defined(SPAWN_ASAN)
#define SPAWN_CAN_SHARE_MEMORY 1
#include <sys/mman.h>

/* long spawn_clone3_call(struct clone_args *args, size_t size, void (*fn)(void *), void *arg):
 * the raw clone3 result (pid, or -errno) in the parent; the child calls fn(arg) on args->stack. */
long spawn_clone3_call(struct clone_args *args, size_t size, void (*fn)(void *), void *arg);
__asm__(".text\n"
        ".type spawn_clone3_call, @function\n"
        "spawn_clone3_call:\n"
        "    mov %rdx, %r8\n" /* fn and arg survive the syscall in r8 and r9 */
        "    mov %rcx, %r9\n"
        "    mov $435, %eax\n" /* __NR_clone3 */
        "    syscall\n"
        "    test %rax, %rax\n"
        "    jnz 1f\n"
        "    xor %ebp, %ebp\n" /* the child: on its own stack, the end of a frame chain */
        "    mov %r9, %rdi\n"
        "    call *%r8\n"
        "    mov $60, %eax\n" /* fn never returns; if it did: _exit(127) */
        "    mov $127, %edi\n"
        "    syscall\n"
        "1:  ret\n"
        ".size spawn_clone3_call, .-spawn_clone3_call\n");

struct spawn_shared_child {
    const struct hd_spawn_options *opts;
    int go_fd, report_fd;
};

static void spawn_shared_child_main(void *data)
{
    struct spawn_shared_child *c = data;
    c->opts->child(c->opts->data, c->go_fd, c->report_fd);
}

#define SPAWN_CHILD_STACK (256 * 1024)

/* A vfork child (see the top of this file); returns its pid, or -1 with errno. */
static pid_t spawn_clone_shared(const struct hd_spawn_options *opts, int go_fd, int report_fd)
{
    void *stack = mmap(NULL, SPAWN_CHILD_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED)
        return -1;
    struct spawn_shared_child c = {.opts = opts, .go_fd = go_fd, .report_fd = report_fd};
    struct clone_args args = {
        .flags = opts->clone_flags | CLONE_VM | CLONE_VFORK | (opts->cgroup_fd >= 0 ? CLONE_INTO_CGROUP : 0),
        .exit_signal = SIGCHLD,
        .stack = (uint64_t)(uintptr_t)stack,
        .stack_size = SPAWN_CHILD_STACK,
        .cgroup = opts->cgroup_fd >= 0 ? (uint64_t)opts->cgroup_fd : 0,
    };
    /* No signal handler of ours may run on the child's stack in our memory; the child unblocks
     * (hd_child_reset_signals) before it execs. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    long r = spawn_clone3_call(&args, sizeof(args), spawn_shared_child_main, &c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    munmap(stack, SPAWN_CHILD_STACK); /* the child exec'd or exited: its stack is ours again */
    if (r < 0) {
        errno = (int)-r;
        return -1;
    }
    return (pid_t)r;
}
#endif

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
    pid_t pid;
#ifdef SPAWN_CAN_SHARE_MEMORY
    if (opts->share_memory && !opts->go) {
        /* the child closes report[0] (it is CLOEXEC anyway) and never comes back here */
        pid = spawn_clone_shared(opts, -1, report[1]);
    } else
#endif
        pid = spawn_clone(opts);
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
