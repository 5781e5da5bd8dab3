/*
 * privdrop.c - giving up root for the parts that parse network input (see
 * privdrop.h for the order of the steps, docs/security.md for the why).
 *
 * The seccomp allow-list is what one event loop (src/base/loop.c), its
 * sockets, SQLite files and OpenSSL use; every entry says why below. The
 * default action kills the whole process (SCMP_ACT_KILL_PROCESS), so a
 * parser bug that reaches for execve, ptrace, mount, a new namespace or
 * a raw socket ends the process instead of continuing.
 */
#include <errno.h>
#include <ftw.h>
#include <grp.h>
#include <pwd.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/privdrop.h"

/* The password and group files are read directly (fgetpwent), not through NSS: system users live
 * there, and NSS modules (libnss_systemd and what it links) would cost the network child ~360 KiB of
 * resident memory for nothing. */
static bool privdrop_passwd_find(const char *name, uid_t id, struct passwd *out)
{
    FILE *f = fopen("/etc/passwd", "re");
    if (f == NULL)
        return false;
    const struct passwd *pw;
    bool found = false;
    while (!found && (pw = fgetpwent(f)) != NULL)
        if (name ? strcmp(pw->pw_name, name) == 0 : pw->pw_uid == id) {
            *out = (struct passwd){.pw_uid = pw->pw_uid, .pw_gid = pw->pw_gid};
            found = true;
        }
    fclose(f);
    return found;
}

static bool privdrop_group_has(gid_t id)
{
    FILE *f = fopen("/etc/group", "re");
    if (f == NULL)
        return false;
    const struct group *gr;
    bool found = false;
    while (!found && (gr = fgetgrent(f)) != NULL)
        found = gr->gr_gid == id;
    fclose(f);
    return found;
}

int hd_privdrop_resolve(const char *name, uid_t *uid, gid_t *gid, hd_error_t *err)
{
    const char *wanted = name ? name : HD_PRIVDROP_DEFAULT_USER;
    struct passwd pw;
    if (privdrop_passwd_find(wanted, 0, &pw)) {
        if (pw.pw_uid == 0)
            return hd_error_set(err, 0, "user %s: is root", wanted);
        *uid = pw.pw_uid;
        *gid = pw.pw_gid;
        return 0;
    }
    if (name)
        return hd_error_set(err, ENOENT, "user %s: no such user (in /etc/passwd)", name);
    /* No such user on this host: a fixed id that no user and no group holds (the first one from
     * HD_PRIVDROP_FALLBACK_ID up, so it stays the same from one start to the next). */
    for (unsigned id = HD_PRIVDROP_FALLBACK_ID; id < HD_PRIVDROP_FALLBACK_ID + 1000; id++)
        if (!privdrop_passwd_find(NULL, id, &pw) && !privdrop_group_has(id)) {
            *uid = id;
            *gid = id;
            return 0;
        }
    return hd_error_set(err, 0, "no unused user id from %d up", HD_PRIVDROP_FALLBACK_ID);
}

static uid_t chown_uid;
static gid_t chown_gid;

static int privdrop_chown_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    lchown(path, chown_uid, chown_gid); /* best effort: what stays root's is refused later, by name */
    return 0;
}

void hd_privdrop_chown_tree(const char *path, uid_t uid, gid_t gid)
{
    chown_uid = uid;
    chown_gid = gid;
    nftw(path, privdrop_chown_one, 16, FTW_PHYS | FTW_MOUNT);
}

static int privdrop_set_caps(bool keep_bind, hd_error_t *err)
{
    cap_t caps = cap_init(); /* all clear */
    if (caps == NULL)
        return hd_error_sys(err, "cap_init");
    int r = 0;
    cap_value_t bind = CAP_NET_BIND_SERVICE;
    if (keep_bind &&
        (cap_set_flag(caps, CAP_PERMITTED, 1, &bind, CAP_SET) < 0 ||
         cap_set_flag(caps, CAP_EFFECTIVE, 1, &bind, CAP_SET) < 0))
        r = hd_error_sys(err, "cap_set_flag");
    if (r == 0 && cap_set_proc(caps) < 0)
        r = hd_error_sys(err, "cap_set_proc");
    cap_free(caps);
    return r;
}

int hd_privdrop_user(uid_t uid, gid_t gid, bool keep_bind, hd_error_t *err)
{
    /* Nothing can come back through exec (the bounding set) or be inherited (ambient). */
    for (int cap = 0; cap <= CAP_LAST_CAP; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
            return hd_error_sys(err, "drop capability %d from the bounding set", cap);
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    if (keep_bind && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
        return hd_error_sys(err, "PR_SET_KEEPCAPS");
    if (setgroups(0, NULL) < 0)
        return hd_error_sys(err, "setgroups");
    if (setresgid(gid, gid, gid) < 0)
        return hd_error_sys(err, "setresgid %u", (unsigned)gid);
    if (setresuid(uid, uid, uid) < 0)
        return hd_error_sys(err, "setresuid %u", (unsigned)uid);
    prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
    if (getuid() == 0 || geteuid() == 0)
        return hd_error_set(err, 0, "setresuid %u: still root", (unsigned)uid);
    return privdrop_set_caps(keep_bind, err);
}

/* clang-format off */
/* The allow-list. Grouped by who needs it; nothing here creates processes, changes credentials,
 * mounts, traces, loads modules or programs, or opens namespaces. */
static const int privdrop_allowed[] = {
    /* the event loop (src/base/loop.c): epoll, timers, its signalfd, deferred work */
    SCMP_SYS(epoll_create1), SCMP_SYS(epoll_ctl), SCMP_SYS(epoll_wait), SCMP_SYS(epoll_pwait),
    SCMP_SYS(epoll_pwait2), SCMP_SYS(poll), SCMP_SYS(ppoll), SCMP_SYS(timerfd_create),
    SCMP_SYS(timerfd_settime), SCMP_SYS(timerfd_gettime), SCMP_SYS(signalfd4), SCMP_SYS(eventfd2),
    SCMP_SYS(pipe2), SCMP_SYS(rt_sigaction), SCMP_SYS(rt_sigprocmask), SCMP_SYS(rt_sigreturn),
    SCMP_SYS(sigaltstack), SCMP_SYS(restart_syscall),
    SCMP_SYS(clock_gettime), SCMP_SYS(clock_getres), SCMP_SYS(gettimeofday), SCMP_SYS(time),
    SCMP_SYS(clock_nanosleep), SCMP_SYS(nanosleep), SCMP_SYS(sched_yield),
    /* memory: malloc, OpenSSL and SQLite page caches */
    SCMP_SYS(brk), SCMP_SYS(mmap), SCMP_SYS(munmap), SCMP_SYS(mremap), SCMP_SYS(mprotect),
    SCMP_SYS(madvise), SCMP_SYS(futex), SCMP_SYS(set_robust_list), SCMP_SYS(rseq),
    /* fds and sockets: accepting MQTT clients on listeners bound before the drop, the uplink's
     * outgoing connections (DNS included: a UDP socket and, for AI_ADDRCONFIG, a netlink one),
     * the control socketpair. bind is harmless without capabilities (no port below 1024). */
    SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(readv), SCMP_SYS(writev), SCMP_SYS(close),
    SCMP_SYS(socket), SCMP_SYS(connect), SCMP_SYS(accept), SCMP_SYS(accept4), SCMP_SYS(bind),
    SCMP_SYS(getsockname), SCMP_SYS(getpeername), SCMP_SYS(setsockopt), SCMP_SYS(getsockopt),
    SCMP_SYS(shutdown), SCMP_SYS(sendto), SCMP_SYS(recvfrom), SCMP_SYS(sendmsg), SCMP_SYS(recvmsg),
    SCMP_SYS(sendmmsg), SCMP_SYS(recvmmsg), SCMP_SYS(fcntl), SCMP_SYS(ioctl), SCMP_SYS(dup),
    SCMP_SYS(dup3),
    /* SQLite's files (broker.db, spool.db, their -wal/-shm/-journal) in the own state directory;
     * OpenSSL and getaddrinfo read certificates, /etc/hosts, /etc/resolv.conf */
    SCMP_SYS(openat), SCMP_SYS(open), SCMP_SYS(fstat), SCMP_SYS(newfstatat), SCMP_SYS(stat),
    SCMP_SYS(lstat), SCMP_SYS(statx), SCMP_SYS(lseek), SCMP_SYS(pread64), SCMP_SYS(pwrite64),
    SCMP_SYS(fsync), SCMP_SYS(fdatasync), SCMP_SYS(ftruncate), SCMP_SYS(fallocate),
    SCMP_SYS(unlink), SCMP_SYS(unlinkat), SCMP_SYS(access), SCMP_SYS(faccessat),
    SCMP_SYS(faccessat2), SCMP_SYS(getcwd), SCMP_SYS(readlink), SCMP_SYS(fchmod),
    SCMP_SYS(fchown), SCMP_SYS(getdents64), SCMP_SYS(mkdir), SCMP_SYS(mkdirat),
    /* random numbers (client ids, OpenSSL), identity, limits, the log's time and host */
    SCMP_SYS(getrandom), SCMP_SYS(getpid), SCMP_SYS(gettid), SCMP_SYS(getuid), SCMP_SYS(geteuid),
    SCMP_SYS(getgid), SCMP_SYS(getegid), SCMP_SYS(uname), SCMP_SYS(prlimit64), SCMP_SYS(getrusage),
    SCMP_SYS(sysinfo),
    /* abort() and raise() (tgkill to itself), the end */
    SCMP_SYS(tgkill), SCMP_SYS(exit), SCMP_SYS(exit_group),
};
/* clang-format on */

#if defined(__SANITIZE_ADDRESS__)
/* The sanitizer build only: LeakSanitizer's exit-time check runs a tracer process (clone, ptrace)
 * that the filter would kill, leaving the exit waiting for it forever. A filtered process skips
 * that check (LeakSanitizer asks this hook); everything else of the sanitizers stays on. */
static bool privdrop_filtered;
int __lsan_is_turned_off(void);
int __lsan_is_turned_off(void)
{
    return privdrop_filtered;
}
#endif

int hd_privdrop_finish(hd_error_t *err)
{
    if (privdrop_set_caps(false, err) < 0)
        return -1;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return hd_error_sys(err, "PR_SET_NO_NEW_PRIVS");
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
    if (ctx == NULL)
        return hd_error_set(err, ENOMEM, "seccomp_init");
    for (size_t i = 0; i < sizeof(privdrop_allowed) / sizeof(privdrop_allowed[0]); i++)
        if (privdrop_allowed[i] >= 0) /* negative: not a syscall on this architecture */
            seccomp_rule_add(ctx, SCMP_ACT_ALLOW, privdrop_allowed[i], 0);
    int r = seccomp_load(ctx);
    seccomp_release(ctx);
    if (r < 0)
        return hd_error_set(err, -r, "seccomp_load");
#if defined(__SANITIZE_ADDRESS__)
    privdrop_filtered = true;
#endif
    return 0;
}

void hd_privdrop_forbidden_syscall(void)
{
    /* mount is on no allow-list here (not even the sanitizer build's): the process dies with SIGSYS. */
    syscall(SYS_mount, NULL, NULL, NULL, 0, NULL);
}
