/*
 * child.c - set-up and exec of a workload's first process, with failures
 * reported to the parent over a CLOEXEC pipe (see child.h).
 *
 * Runs between fork and exec, so it avoids anything that may take locks held
 * by other threads of the parent (we are single-threaded when we fork, but
 * keep it simple anyway): no stdio, only syscalls and small string work.
 */
#include "base/child.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/util.h"

struct report {
    int exit_code;
    int errnum;
    char message[1024];
};

void hd_child_fail(int report_fd, int exit_code, int errnum, const char *fmt, ...)
{
    struct report r = {.exit_code = exit_code, .errnum = errnum};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r.message, sizeof(r.message), fmt, ap);
    va_end(ap);
    if (report_fd >= 0) {
        ssize_t w = write(report_fd, &r, sizeof(r));
        (void)w;
    }
    _exit(exit_code);
}

int hd_child_read_report(int report_fd, hd_error_t *err)
{
    struct report r;
    ssize_t n;
    do
        n = read(report_fd, &r, sizeof(r));
    while (n < 0 && errno == EINTR);
    if (n == 0)
        return 0;
    if (n != (ssize_t)sizeof(r))
        return hd_error_set(err, n < 0 ? errno : 0, "workload set-up: short report from child");
    r.message[sizeof(r.message) - 1] = '\0';
    return hd_error_set_code(err, r.exit_code, r.errnum, "%s", r.message);
}

void hd_child_setup_stdio(const int stdio[3], int report_fd)
{
    if (stdio[0] == 0 && stdio[1] == 1 && stdio[2] == 2) {
        /* inherited as they are (hedge run's own stdio): only a close-on-exec flag could be in the way */
        for (int i = 0; i < 3; i++) {
            int flags = fcntl(i, F_GETFD);
            if (flags < 0 || ((flags & FD_CLOEXEC) && fcntl(i, F_SETFD, flags & ~FD_CLOEXEC) < 0))
                hd_child_fail(report_fd, HD_EXIT_HEDGE, errno, "stdio: dup fd %d", i);
        }
        return;
    }
    int copies[3];
    for (int i = 0; i < 3; i++) {
        copies[i] = fcntl(stdio[i], F_DUPFD_CLOEXEC, 3);
        if (copies[i] < 0)
            hd_child_fail(report_fd, HD_EXIT_HEDGE, errno, "stdio: dup fd %d", stdio[i]);
    }
    for (int i = 0; i < 3; i++)
        if (dup2(copies[i], i) < 0)
            hd_child_fail(report_fd, HD_EXIT_HEDGE, errno, "stdio: dup2");
}

/*
 * Only signals whose disposition is not the default need a call: the ignored ones (exec keeps
 * SIG_IGN) and the caught ones (a handler of the parent must not run between the unblock below and
 * exec; with vfork it would run in the parent's memory). /proc/self/status lists both sets: three
 * syscalls instead of one sigaction per signal (64 of ~3 us each on a paravirtualised host, on the
 * path of every start). Without /proc, every signal is reset.
 */
/*
 * glibc keeps signals 32 and 33 for its threads and refuses to change them, but a parent may have left
 * them ignored (GNU make does), and an ignored disposition survives exec: reset them through the kernel.
 * All fields zero is SIG_DFL with no flags, whatever the architecture's field order.
 */
static void reset_reserved_signal(int sig)
{
    struct {
        void *handler;
        unsigned long flags;
        void *restorer;
        uint64_t mask;
    } dfl = {0};
    syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof(dfl.mask));
}

void hd_child_reset_signals(void)
{
    uint64_t touched = ~(uint64_t)0;
    char status[8192];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        size_t len = 0;
        ssize_t n;
        while (len < sizeof(status) - 1 && (n = read(fd, status + len, sizeof(status) - 1 - len)) > 0)
            len += (size_t)n;
        status[len] = '\0';
        close(fd);
        if (!hd_child_parse_signal_masks(status, &touched))
            touched = ~(uint64_t)0;
    }
    for (int sig = 1; sig < NSIG && sig <= 64; sig++)
        if (sig != SIGKILL && sig != SIGSTOP && (touched >> (sig - 1) & 1) && signal(sig, SIG_DFL) == SIG_ERR)
            reset_reserved_signal(sig);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

/* Find name in a passwd- or group-style file under root; fields split on ':'. */
static bool lookup_colon_file(const char *root, const char *file, const char *name, unsigned *id, unsigned *gid_out)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s%s", strcmp(root, "/") == 0 ? "" : root, file);
    cleanup_free char *data = NULL;
    hd_error_t ignored = NULL;
    if (hd_read_file(path, &data, NULL, &ignored) < 0) {
        hd_error_free(&ignored);
        return false;
    }
    size_t nlen = strlen(name);
    for (char *line = data; line && *line;) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (strncmp(line, name, nlen) == 0 && line[nlen] == ':') {
            /* name:x:ID:GID... */
            char *p = strchr(line + nlen + 1, ':');
            if (p) {
                *id = (unsigned)strtoul(p + 1, &p, 10);
                if (gid_out && *p == ':')
                    *gid_out = (unsigned)strtoul(p + 1, NULL, 10);
                return true;
            }
        }
        line = next;
    }
    return false;
}

static bool all_digits(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

int hd_resolve_user(const char *root, const char *user, uid_t *uid, gid_t *gid, hd_error_t *err)
{
    cleanup_free char *copy = hd_xstrdup(user);
    char *group = strchr(copy, ':');
    if (group)
        *group++ = '\0';
    /* docker's rules: a numeric uid alone runs with gid 0; a name takes its passwd group */
    unsigned u = 0, g = 0;
    if (all_digits(copy))
        u = (unsigned)strtoul(copy, NULL, 10);
    else if (!lookup_colon_file(root, "/etc/passwd", copy, &u, &g))
        return hd_error_set(err, 0, "user: \"%s\" not found in /etc/passwd", copy);
    if (group && all_digits(group))
        g = (unsigned)strtoul(group, NULL, 10);
    else if (group && !lookup_colon_file(root, "/etc/group", group, &g, NULL))
        return hd_error_set(err, 0, "user: group \"%s\" not found in /etc/group", group);
    *uid = u;
    *gid = g;
    return 0;
}

int hd_child_set_user(const char *user, const gid_t *groups, size_t n_groups, hd_error_t *err)
{
    uid_t uid = 0;
    gid_t gid = 0;
    if (user && hd_resolve_user("/", user, &uid, &gid, err) < 0)
        return -1;
    /* groups asked for must be set; the primary gid alone is best effort (EPERM in a user namespace) */
    if (groups && setgroups(n_groups, groups) < 0)
        return hd_error_sys(err, "setgroups (%zu supplementary groups)", n_groups);
    if (!groups && user && setgroups(1, &gid) < 0 && errno != EPERM)
        return hd_error_sys(err, "setgroups");
    if (user == NULL)
        return 0;
    if (setresgid(gid, gid, gid) < 0)
        return hd_error_sys(err, "setgid %u", gid);
    if (setresuid(uid, uid, uid) < 0)
        return hd_error_sys(err, "setuid %u", uid);
    return 0;
}

static const char *env_get(char *const *env, const char *key)
{
    size_t klen = strlen(key);
    for (size_t i = 0; env && env[i]; i++)
        if (strncmp(env[i], key, klen) == 0 && env[i][klen] == '=')
            return env[i] + klen + 1;
    return NULL;
}

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

void hd_child_exec(int report_fd, const struct hd_exec_plan *plan)
{
    hd_error_t err = NULL;
    hd_child_reset_signals();
    if (plan->keep_caps && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
        hd_child_fail(report_fd, HD_EXIT_HEDGE, errno, "prctl(PR_SET_KEEPCAPS)");
    if ((plan->user || plan->groups) && hd_child_set_user(plan->user, plan->groups, plan->n_groups, &err) < 0)
        hd_child_fail(report_fd, HD_EXIT_HEDGE, err->errnum, "%s", err->message);
    if (plan->workdir && chdir(plan->workdir) < 0)
        hd_child_fail(report_fd, HD_EXIT_HEDGE, errno, "workdir: chdir %s", plan->workdir);
    if (plan->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        hd_child_fail(report_fd, HD_EXIT_HEDGE, errno, "prctl(PR_SET_NO_NEW_PRIVS)");
    if (plan->before_exec && plan->before_exec(plan->before_exec_data, &err) < 0)
        hd_child_fail(report_fd, HD_EXIT_HEDGE, err->errnum, "%s", err->message);

    const char *cmd = plan->argv[0];
    if (strchr(cmd, '/')) {
        execve(cmd, plan->argv, plan->env);
        int e = errno;
        hd_child_fail(report_fd, e == ENOENT ? HD_EXIT_NOT_FOUND : HD_EXIT_CANNOT_INVOKE, e, "exec %s", cmd);
    }
    const char *path = env_get(plan->env, "PATH");
    if (path == NULL)
        path = DEFAULT_PATH;
    int last_error = ENOENT;
    bool saw_eacces = false;
    char candidate[PATH_MAX];
    for (const char *p = path; *p;) {
        const char *colon = strchr(p, ':');
        size_t dlen = colon ? (size_t)(colon - p) : strlen(p);
        if (dlen == 0)
            snprintf(candidate, sizeof(candidate), "%s", cmd);
        else
            snprintf(candidate, sizeof(candidate), "%.*s/%s", (int)dlen, p, cmd);
        execve(candidate, plan->argv, plan->env);
        if (errno == EACCES)
            saw_eacces = true;
        else if (errno != ENOENT && errno != ENOTDIR)
            last_error = errno;
        p = colon ? colon + 1 : p + dlen;
    }
    if (saw_eacces)
        last_error = EACCES;
    if (last_error == ENOENT)
        hd_child_fail(report_fd, HD_EXIT_NOT_FOUND, 0, "exec %s: command not found in PATH", cmd);
    hd_child_fail(report_fd, HD_EXIT_CANNOT_INVOKE, last_error, "exec %s", cmd);
}
