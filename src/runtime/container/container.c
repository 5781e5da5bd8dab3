/*
 * container.c - the `container` isolation backend: the workload runs as PID 1
 * of new pid, mount, uts, ipc, net and cgroup namespaces (optionally a user
 * namespace too), pivot_root'ed into its rootfs, with Docker's default
 * capabilities and a seccomp filter.
 *
 * Start sequence (one clone, a socket and a pipe, no helper binaries):
 *
 *   parent                                child (PID 1 in its namespaces)
 *   prepare: caps mask, seccomp BPF,
 *            detached rootfs/bind mounts
 *   device allow-list on the cgroup
 *   (cgroup/devices.h: v1 devices files
 *   or a v2 BPF_CGROUP_DEVICE program)
 *   open the cgroup's v1 "tasks" files
 *   clone3(NEWPID|NEWNS|NEWUTS|NEWIPC
 *         |NEWNET|NEWUSER?, INTO_CGROUP
 *         for v2/the unified dir) ──────▶  enter the v1 cgroups itself ("0" → tasks)
 *   [user namespace: uid/gid maps,
 *    idmapped rootfs, send "u"] ─────────▶  [wait for "u", become uid/gid 0 inside]
 *   network                                hostname, mounts, pivot_root (rootfs.c),
 *                                          drop the bounding set (in parallel)
 *   send go  ────────────────────────────▶  unshare(NEWCGROUP): its cgroup is now "/"
 *                                           [--init: fork; PID 1 stays as reaper]
 *                                           user, workdir, no_new_privs,
 *                                           caps, seccomp, exec (child.c)
 *   read report: EOF = exec'd  ◀──────────  CLOEXEC report pipe (125/126/127)
 *   (the clone, "go" and report are base/spawn.c's)
 *
 * The child is in every cgroup of the workload before it does anything else
 * (born there on v2, its first step on v1/hybrid: cgroup.h says why it moves
 * itself - the parent writing its pid would wait for an RCU grace period on
 * every start), so the workload starts inside its cgroup. hedge's own mount
 * work overlaps the parent's network set-up, which hides the RCU grace
 * period the kernel waits for when the old root is detached.
 *
 * The cgroup namespace is unshared only after the child is in the
 * workload's cgroup, so the namespace root is that cgroup and
 * /proc/self/cgroup reads "/" inside. The seccomp filter is compiled in the
 * parent and installed by the child as the very last step, so nothing of
 * hedge's own set-up has to fit through it; when no_new_privs is off it is
 * installed before the user switch instead, while CAP_SYS_ADMIN still allows
 * it.
 *
 * A caller can hand over existing namespaces to join instead (backend.h:
 * join_ns_fds, hedge-oci's linux.namespaces[].path, as runc does): their
 * CLONE_NEW* flags are left out, the child setns()es into network, ipc, uts
 * and mount first thing after entering its cgroups (mount last), into the
 * cgroup namespace where it would unshare one, and the parent enters a joined
 * pid namespace for the clone only (the code hd_container_join uses), so the
 * child is born there. A joined network namespace is left as it is. With a
 * new user namespace the child would have no rights over namespaces the
 * host's user namespace owns: the parent enters joined network, ipc and uts
 * namespaces for the clone too, and joined mount, pid and cgroup ones are
 * refused. hedge-oci's id maps (w->uid_map) are written as given, with
 * setgroups allowed and no idmapped rootfs, as runc does as root.
 *
 * A joined user namespace (join_ns_fds[HD_JOIN_USER]) cannot be entered by
 * the parent for the clone (no way back out of it): the spawned child is an
 * intermediate that enters the cgroups and the joined network, ipc and uts
 * namespaces, then the user namespace, clones the container's process with
 * the new namespaces and CLONE_PARENT, sends its pid and exits
 * (clone_in_joined_userns); the process goes on as in a new user namespace,
 * without id maps to wait for.
 *
 * Without a mount namespace of its own (share_mount_ns, hedge-oci's config
 * without a "mount" entry) nothing is mounted at all: the child stays in the
 * runtime's mount namespace and only chroot()s into the rootfs, as runc does
 * (enter_root_by_chroot), and exec chroots into the first process's root. A
 * joined cgroup namespace that is the runtime's own is neither joined nor
 * unshared: the child just stays in it (with a new user namespace too).
 *
 * Every mount lives in the container's mount namespace and dies with its last
 * process, so cleanup only has to kill PID 1 (which kills the whole pid
 * namespace), reap it, tear the network down and remove the overlay dirs.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <linux/sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/backend.h"
#include "runtime/container/caps.h"
#include "cgroup/cgroup.h"
#include "cgroup/devices.h"
#include "base/log.h"
#include "base/child.h"
#include "base/spawn.h"
#include "net/net.h"
#include "runtime/container/join.h"
#include "runtime/container/rootfs.h"
#include "runtime/container/seccomp_filter.h"
#include "base/util.h"

struct container {
    uint64_t caps;              /* capability set of the workload */
    struct hd_seccomp *seccomp; /* compiled filter, NULL = unconfined */
    struct hd_rootfs rootfs;    /* detached mounts until start, overlay dirs until cleanup */
    char *hostname;
    enum hd_net_mode net_mode;
    struct hd_net *net;
    int report_fd; /* child side: the report pipe, for the exec hold */
    int proc_fd;   /* child side, share_mount_ns: the runtime's /proc and /dev/null, kept across the chroot */
    int null_fd;   /* (for the exec hold; -1 otherwise) */
};

static struct container *container_of(struct hd_workload *w)
{
    return w->backend_data;
}

/* The fd of an existing namespace the workload joins instead of a new one, or -1. */
static int joined_ns_fd(const struct hd_workload *w, enum hd_join_ns ns)
{
    return w->join_ns_fds ? w->join_ns_fds[ns] : -1;
}

/* Our next children are born in the pid namespace ns_fd (setns of a pid namespace applies to children only);
 * *own_fd keeps ours for pid_ns_restore. The first process of a container that joins one and every process
 * hd_container_join starts go through here. */
static int pid_ns_enter_for_children(int ns_fd, int *own_fd, hd_error_t *err)
{
    *own_fd = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
    if (*own_fd < 0 || setns(ns_fd, CLONE_NEWPID) < 0)
        return hd_error_sys(err, "join the container's pid namespace");
    return 0;
}

/* Back to our own pid namespace for later children (own_fd from pid_ns_enter_for_children, -1: nothing to do);
 * closes own_fd. */
static int pid_ns_restore(int *own_fd, hd_error_t *err)
{
    if (*own_fd < 0)
        return 0;
    int rc = setns(*own_fd, CLONE_NEWPID) < 0 ? hd_error_sys(err, "return to our own pid namespace") : 0;
    close(*own_fd);
    *own_fd = -1;
    return rc;
}

static int container_prepare(struct hd_workload *w, hd_error_t *err)
{
    const struct hd_spec *spec = w->spec;
    struct container *c = hd_xcalloc(1, sizeof(*c));
    hd_rootfs_init(&c->rootfs);
    c->proc_fd = -1;
    c->null_fd = -1;
    w->backend_data = c;
    if (w->rootfs == NULL)
        return hd_error_set(err, 0, "rootfs: container isolation needs an image or a rootfs");
    c->net_mode = spec->network == HD_NET_DEFAULT ? HD_NET_NONE : spec->network;
    c->hostname = hd_xstrdup(spec->hostname ? spec->hostname : spec->name ? spec->name : w->id);
    bool have_hostname = false;
    for (size_t i = 0; w->env && w->env[i]; i++)
        if (strncmp(w->env[i], "HOSTNAME=", 9) == 0)
            have_hostname = true;
    if (!have_hostname) {
        cleanup_free char *kv = hd_xasprintf("HOSTNAME=%s", c->hostname);
        hd_env_set(&w->env, kv);
    }
    if (hd_caps_from_spec(&spec->security, &c->caps, err) < 0)
        return -1;
    if (hd_seccomp_build(&spec->security, c->caps, &c->seccomp, err) < 0)
        return -1;
    return hd_rootfs_prepare(w, &c->rootfs, c->hostname, spec->userns.enabled, c->net_mode == HD_NET_HOST, err);
}

/* ---- child side ------------------------------------------------------ */

/*
 * hold_before_exec (backend.h): report "ready" by closing the report pipe (a
 * /dev/null takes its fd number, so a later exec failure writes nowhere), then
 * wait in open(2) of the exec FIFO until the starter opens it for reading.
 */
static int container_hold_before_exec(const struct hd_workload *w, const struct container *c, hd_error_t *err)
{
    int proc_fd = c->proc_fd, report_fd = c->report_fd;
    char path[64];
    snprintf(path, sizeof(path), "%s/self/fd/%d", proc_fd >= 0 ? "." : "/proc", w->exec_fifo_fd);
    int null = c->null_fd >= 0 ? c->null_fd : open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null < 0)
        return hd_error_sys(err, "exec hold: open /dev/null");
    if (dup3(null, report_fd, O_CLOEXEC) < 0) {
        close(null);
        return hd_error_sys(err, "exec hold: close the report pipe");
    }
    close(null);
    int fifo;
    do
        fifo = openat(proc_fd >= 0 ? proc_fd : AT_FDCWD, path, O_WRONLY | O_CLOEXEC);
    while (fifo < 0 && errno == EINTR);
    if (fifo < 0)
        _exit(HD_EXIT_HEDGE);
    close(w->exec_fifo_fd);
    /* started: the last step (the OCI startContainer hooks) before the byte that lets the starter go on,
     * so that what it does next (poststart hooks) comes after it; a failure ends us without the byte */
    if (w->container_setup && w->container_setup(w, w->container_setup_data, HD_SETUP_BEFORE_EXEC, err) < 0) {
        /* nobody reads the report past the hold: say it on the container's stderr, exit 125 */
        dprintf(2, "hedge: %s\n", hd_error_text(*err));
        _exit(HD_EXIT_HEDGE);
    }
    ssize_t n = write(fifo, "0", 1);
    close(fifo);
    if (n != 1)
        _exit(HD_EXIT_HEDGE);
    return 0;
}

/* The process's security, last before exec: capabilities, then (with no_new_privs) seccomp.
 * The first process and every joined one (hd_container_join) go through here. */
/* Load the filter; with a listener callback (hedge-oci's listenerPath), with a listener whose fd the callback
 * gets. */
static int load_filter(int (*listener)(void *data, int fd, hd_error_t *err), void *data,
                       const struct hd_seccomp *seccomp, hd_error_t *err)
{
    if (listener == NULL || seccomp == NULL)
        return hd_seccomp_load(seccomp, err);
    int fd = hd_seccomp_load_listener(seccomp, err);
    if (fd < 0)
        return -1;
    int rc = listener(data, fd, err);
    close(fd);
    return rc;
}

/* The workload's seccomp_listener as load_filter's callback (data: the workload). */
static int workload_listener(void *data, int fd, hd_error_t *err)
{
    const struct hd_workload *w = data;
    return w->seccomp_listener(w, w->container_setup_data, fd, err);
}

static int apply_process_security(int (*listener)(void *data, int fd, hd_error_t *err), void *listener_data,
                                  uint64_t caps, uint64_t inheritable, uint64_t ambient, bool no_new_privs,
                                  const struct hd_seccomp *seccomp, hd_error_t *err)
{
    /* with inheritable/ambient sets (hedge-oci), as runc: the permitted set whatever the user (keep_caps held
     * it over the user switch), so that ambient capabilities can be raised and outlive exec */
    if (inheritable || ambient) {
        if (hd_caps_apply_any_user(caps, err) < 0 || hd_caps_set_inheritable_ambient(inheritable, ambient, err) < 0)
            return -1;
    } else if (hd_caps_apply(caps, err) < 0) {
        return -1;
    }
    if (no_new_privs && load_filter(listener, listener_data, seccomp, err) < 0)
        return -1;
    return 0;
}

/* Last step before exec (child.c calls it after user, workdir and no_new_privs). */
static int container_before_exec(void *data, hd_error_t *err)
{
    struct hd_workload *w = data;
    struct container *c = container_of(w);
    if (apply_process_security(w->seccomp_listener ? workload_listener : NULL, w, c->caps, w->caps_inheritable,
                               w->caps_ambient, w->spec->security.no_new_privs, c->seccomp, err) < 0)
        return -1;
    if (w->hold_before_exec)
        return container_hold_before_exec(w, c, err);
    if (w->container_setup && w->container_setup(w, w->container_setup_data, HD_SETUP_BEFORE_EXEC, err) < 0)
        return -1;
    return 0;
}

/*
 * --init: PID 1 stays behind as a minimal reaper. It forwards every signal it
 * can catch to the workload, reaps orphans, and exits with the workload's
 * status (128+N when a signal killed it). Signals are blocked and read with
 * sigwaitinfo, so none is lost and no handler runs. It keeps only CAP_KILL.
 */
static void container_init_or_continue(int report_fd)
{
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    pid_t child = fork();
    if (child < 0)
        hd_child_fail(report_fd, HD_EXIT_HEDGE, errno, "init: fork the workload");
    if (child == 0)
        return; /* the workload; hd_child_exec resets the signal mask */
    close(report_fd);
    /* the reaper needs no privilege but CAP_KILL (to signal a workload of another uid) */
    hd_error_t err = NULL;
    if (hd_caps_apply(1ULL << CAP_KILL, &err) < 0) {
        kill(child, SIGKILL);
        _exit(HD_EXIT_HEDGE);
    }
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    for (int fd = 0; fd < 3; fd++)
        if (null >= 0)
            dup2(null, fd);
    prctl(PR_SET_NAME, "hedge-init", 0, 0, 0);
    for (;;) {
        siginfo_t si;
        int sig = sigwaitinfo(&all, &si);
        if (sig < 0)
            continue;
        if (sig != SIGCHLD) {
            kill(child, sig);
            continue;
        }
        int status;
        pid_t p;
        while ((p = waitpid(-1, &status, WNOHANG)) > 0)
            if (p == child)
                _exit(WIFEXITED(status) ? WEXITSTATUS(status) : HD_EXIT_SIGNAL(WTERMSIG(status)));
    }
}

/* The namespaces the first process joins right after its cgroups, in enum hd_join_ns order (mount last).
 * With a new user namespace the parent enters them for the clone instead (parent_enter_for_clone). */
static const struct {
    enum hd_join_ns ns;
    int type;
    const char *name;
    const char *proc_name; /* under /proc/PID/ns */
} child_joins[] = {
    {HD_JOIN_NET, CLONE_NEWNET, "network", "net"},
    {HD_JOIN_IPC, CLONE_NEWIPC, "ipc", "ipc"},
    {HD_JOIN_UTS, CLONE_NEWUTS, "uts", "uts"},
    {HD_JOIN_MNT, CLONE_NEWNS, "mount", "mnt"},
};

/*
 * A process cloned into a new user namespace has no rights over the namespaces the host's user namespace
 * owns, so it could not setns() into them: with one, we enter the joined network, ipc and uts namespaces for
 * the clone, the child is born in them (runc joins them before it unshares the user namespace), and
 * parent_return_after_clone takes us back. own_fds[i] (-1: not joined) keeps ours for child_joins[i].
 */
static int parent_enter_for_clone(const struct hd_workload *w, int own_fds[], hd_error_t *err)
{
    for (size_t i = 0; i < ARRAY_SIZE(child_joins); i++)
        own_fds[i] = -1;
    for (size_t i = 0; i < ARRAY_SIZE(child_joins); i++) {
        int fd = joined_ns_fd(w, child_joins[i].ns);
        if (fd < 0)
            continue;
        char path[32];
        snprintf(path, sizeof(path), "/proc/self/ns/%s", child_joins[i].proc_name);
        own_fds[i] = open(path, O_RDONLY | O_CLOEXEC);
        if (own_fds[i] < 0)
            return hd_error_sys(err, "open %s", path);
        if (setns(fd, child_joins[i].type) < 0)
            return hd_error_sys(err, "join the existing %s namespace", child_joins[i].name);
    }
    return 0;
}

/* Back to our own namespaces after parent_enter_for_clone (also after one that failed half-way); closes them. */
static int parent_return_after_clone(int own_fds[], hd_error_t *err)
{
    int rc = 0;
    for (size_t i = 0; i < ARRAY_SIZE(child_joins); i++) {
        if (own_fds[i] < 0)
            continue;
        if (setns(own_fds[i], child_joins[i].type) < 0 && rc == 0)
            rc = hd_error_sys(err, "return to our own %s namespace", child_joins[i].name);
        close(own_fds[i]);
        own_fds[i] = -1;
    }
    return rc;
}

struct container_child_args {
    struct hd_workload *w;
    struct hd_cgroup_entry *cgroup_entry;
    bool cgroup_ns_ours;       /* the joined cgroup namespace is the one we are in: nothing to join or unshare */
    unsigned long clone_flags; /* a joined user namespace: the container's process's, cloned by the child */
    int go_fd;                 /* child side */
};

/* Whether the namespace fd is the one we are in (/proc/self/ns/NAME). */
static bool ns_is_ours(int fd, const char *proc_name)
{
    char path[32];
    snprintf(path, sizeof(path), "/proc/self/ns/%s", proc_name);
    struct stat theirs, ours;
    return fd >= 0 && fstat(fd, &theirs) == 0 && stat(path, &ours) == 0 && theirs.st_ino == ours.st_ino &&
        theirs.st_dev == ours.st_dev;
}

/* Read exactly n bytes from the go socket; false on EOF or error. */
static bool go_read(int fd, void *buf, size_t n)
{
    for (size_t done = 0; done < n;) {
        ssize_t r = read(fd, (char *)buf + done, n - done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        done += (size_t)r;
    }
    return true;
}

/*
 * Right before pivot_root (rootfs.c): with before_pivot_parent, ask the parent over the go socket ("h"),
 * wait for its answer (a length, then the message) and keep the message; then container_setup's
 * HD_SETUP_BEFORE_PIVOT. A parent that fails kills us: a socket that closes unanswered means just that, so
 * we leave without a report of our own.
 */
static int container_before_pivot(void *data, hd_error_t *err)
{
    struct container_child_args *args = data;
    struct hd_workload *w = args->w;
    if (w->before_pivot_parent) {
        uint32_t len;
        /* no answer: the parent failed (its error is the one to report, and it is killing us) */
        if (write(args->go_fd, "h", 1) != 1 || !go_read(args->go_fd, &len, sizeof(len)))
            _exit(HD_EXIT_HEDGE);
        if (len > 0) {
            char *message = hd_xcalloc(1, (size_t)len + 1);
            if (!go_read(args->go_fd, message, len)) {
                free(message);
                return hd_error_set(err, EPIPE, "before pivot_root: the runtime's message was cut short");
            }
            w->before_pivot_message = message;
        }
    }
    if (w->container_setup && w->container_setup(w, w->container_setup_data, HD_SETUP_BEFORE_PIVOT, err) < 0)
        return -1;
    return 0;
}

/*
 * share_mount_ns (backend.h): no mount namespace of the container's own, so nothing is mounted at all (it would
 * land on the runtime's mount table); the process only chroot()s into the rootfs, as runc does without one. The
 * runtime's /proc stays reachable through c->proc_fd for the exec hold (the rootfs has no /proc mounted).
 */
static int enter_root_by_chroot(const struct hd_workload *w, struct container *c, struct container_child_args *args,
                                hd_error_t *err)
{
    c->proc_fd = open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (c->proc_fd < 0)
        return hd_error_sys(err, "open /proc");
    c->null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (c->null_fd < 0)
        return hd_error_sys(err, "open /dev/null");
    /* the createContainer hooks run in the rootfs directory, as with pivot_root (and runc) */
    if (chdir(w->rootfs) < 0)
        return hd_error_sys(err, "rootfs: chdir %s", w->rootfs);
    if (container_before_pivot(args, err) < 0)
        return -1;
    if (chdir(w->rootfs) < 0 || chroot(".") < 0 || chdir("/") < 0)
        return hd_error_sys(err, "chroot %s", w->rootfs);
    return 0;
}

/*
 * A joined user namespace (join_ns_fds[HD_JOIN_USER]): we are an intermediate process. A process cannot enter
 * a user namespace and come back, so the parent cannot enter it for the clone the way it enters joined
 * network, ipc and uts namespaces for a new one. We, its child, are in the workload's cgroups and in the joined
 * namespaces already (entered as the host's root, which a process inside the user namespace could not), enter
 * the user namespace and clone the container's process with its new namespaces, which that user namespace then
 * owns; CLONE_PARENT makes the parent its parent (it waits for it). We send its pid (in the parent's pid
 * namespace) over the go socket and exit; it goes on once we are gone. runc's nsexec does the same in stages:
 * a child that joins the namespaces and unshares the rest, and a grandchild that becomes the container's init.
 * Returns in the container's process only.
 */
static void clone_in_joined_userns(const struct container_child_args *args, int go_fd, int report_fd)
{
    if (setns(joined_ns_fd(args->w, HD_JOIN_USER), CLONE_NEWUSER) < 0)
        hd_child_fail(report_fd, HD_EXIT_HEDGE, errno, "join the existing user namespace");
    int order[2];
    if (pipe2(order, O_CLOEXEC) < 0)
        hd_child_fail(report_fd, HD_EXIT_HEDGE, errno, "joined user namespace: pipe");
    /* clone3 takes no exit signal with CLONE_PARENT: the child gets ours (SIGCHLD) */
    struct clone_args ca = {.flags = args->clone_flags | CLONE_PARENT};
    pid_t pid = (pid_t)syscall(SYS_clone3, &ca, sizeof(ca));
    if (pid < 0)
        hd_child_fail(report_fd, HD_EXIT_HEDGE, errno, "clone the container's namespaces in the joined user namespace");
    if (pid == 0) {
        close(order[1]);
        char byte;
        while (read(order[0], &byte, 1) < 0 && errno == EINTR)
            ; /* EOF: the intermediate sent our pid and is gone */
        close(order[0]);
        return;
    }
    int32_t sent = (int32_t)pid;
    if (write(go_fd, &sent, sizeof(sent)) != (ssize_t)sizeof(sent)) {
        kill(pid, SIGKILL);
        _exit(HD_EXIT_HEDGE);
    }
    _exit(0);
}

__attribute__((noreturn)) static void container_child(void *data, int go_fd, int report_fd)
{
    struct container_child_args *args = data;
    struct hd_workload *w = args->w;
    struct hd_cgroup_entry *cgroup_entry = args->cgroup_entry;
    struct container *c = container_of(w);
    const struct hd_spec *spec = w->spec;
    bool userns = spec->userns.enabled;
    bool join_userns = joined_ns_fd(w, HD_JOIN_USER) >= 0;
    hd_error_t err = NULL;
    /* first: nothing of the container runs outside its cgroup (the parent's credentials opened the files) */
    const char *failed_dir = NULL;
    int r = hd_cgroup_entry_enter(cgroup_entry, &failed_dir);
    if (r < 0)
        hd_child_fail(report_fd, HD_EXIT_HEDGE, -r, "cgroup: enter %s", failed_dir);
    if (w->container_setup && w->container_setup(w, w->container_setup_data, HD_SETUP_CGROUPS, &err) < 0)
        hd_child_fail(report_fd, HD_EXIT_HEDGE, err->errnum, "%s", err->message);
    for (size_t i = 0; i < ARRAY_SIZE(child_joins) && (!userns || join_userns); i++) {
        int fd = joined_ns_fd(w, child_joins[i].ns);
        if (fd >= 0 && setns(fd, child_joins[i].type) < 0)
            hd_child_fail(report_fd, HD_EXIT_HEDGE, errno, "join the existing %s namespace", child_joins[i].name);
    }
    if (join_userns)
        clone_in_joined_userns(args, go_fd, report_fd);
    /*
     * The mount work does not depend on the parent's network set-up, so it runs
     * while the parent does it; in a user namespace it needs the id maps first
     * (the parent's "u" once they are written).
     */
    char maps_written;
    if (userns && !join_userns && (!go_read(go_fd, &maps_written, 1) || maps_written != 'u'))
        _exit(HD_EXIT_HEDGE); /* the parent failed: its error is the one to report */
    hd_child_setup_stdio(w->stdio, report_fd);
    /* no fd hedge inherited from its caller may reach the workload (only 0, 1, 2) */
    if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        hd_child_fail(report_fd, HD_EXIT_HEDGE, errno, "mark inherited fds close-on-exec");
    if (userns && (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0))
        hd_child_fail(report_fd, HD_EXIT_HEDGE, errno, "user namespace: become root inside");
    /* a joined uts namespace keeps its name unless the spec gives another one (runc sets the config's) */
    char current[sizeof(((struct utsname *)0)->nodename)] = "";
    bool rename = joined_ns_fd(w, HD_JOIN_UTS) < 0 ||
        (spec->hostname && (gethostname(current, sizeof(current)) < 0 || strcmp(current, c->hostname) != 0));
    if (rename && sethostname(c->hostname, strlen(c->hostname)) < 0)
        hd_child_fail(report_fd, HD_EXIT_HEDGE, errno, "sethostname %s", c->hostname);
    args->go_fd = go_fd;
    if (w->share_mount_ns ? enter_root_by_chroot(w, c, args, &err) < 0
                          : hd_rootfs_enter(w, &c->rootfs, container_before_pivot, args, &err) < 0)
        hd_child_fail(report_fd, HD_EXIT_HEDGE, err->errnum, "%s", err->message);
    if (hd_caps_drop_bounding(c->caps, &err) < 0)
        hd_child_fail(report_fd, HD_EXIT_HEDGE, err->errnum, "%s", err->message);
    hd_spawn_child_wait_go(go_fd);
    int cgroup_ns = joined_ns_fd(w, HD_JOIN_CGROUP);
    if (!args->cgroup_ns_ours &&
        (cgroup_ns >= 0 ? setns(cgroup_ns, CLONE_NEWCGROUP) < 0 : unshare(CLONE_NEWCGROUP) < 0))
        hd_child_fail(report_fd, HD_EXIT_HEDGE, errno, "%s the cgroup namespace",
                      cgroup_ns >= 0 ? "join the existing" : "unshare");
    umask(022);
    if (spec->init)
        container_init_or_continue(report_fd);
    if (w->container_setup && w->container_setup(w, w->container_setup_data, HD_SETUP_INSIDE, &err) < 0)
        hd_child_fail(report_fd, HD_EXIT_HEDGE, err->errnum, "%s", err->message);
    c->report_fd = report_fd;
    if (!spec->security.no_new_privs &&
        load_filter(w->seccomp_listener ? workload_listener : NULL, w, c->seccomp, &err) < 0)
        hd_child_fail(report_fd, HD_EXIT_HEDGE, err->errnum, "%s", err->message);
    struct hd_exec_plan plan = {
        .argv = w->argv,
        .env = w->env,
        .workdir = w->workdir ? w->workdir : "/",
        .user = w->user,
        .groups = w->groups,
        .n_groups = w->n_groups,
        .keep_caps = w->caps_inheritable || w->caps_ambient,
        .no_new_privs = spec->security.no_new_privs,
        .before_exec = container_before_exec,
        .before_exec_data = w,
    };
    hd_child_exec(report_fd, &plan);
}

/* ---- parent side ----------------------------------------------------- */

/* The child's uid and gid maps: hedge's one range (setgroups denied), or the caller's maps (w->uid_map, hedge-oci:
 * setgroups allowed, as runc leaves it when it runs as root). */
static int write_id_maps(pid_t pid, const struct hd_workload *w, hd_error_t *err)
{
    const struct hd_user_namespace *ns = &w->spec->userns;
    char path[64];
    cleanup_free char *uid_map =
        w->uid_map ? hd_xstrdup(w->uid_map) : hd_xasprintf("0 %u %u\n", ns->uid_base, ns->size);
    cleanup_free char *gid_map =
        w->gid_map ? hd_xstrdup(w->gid_map) : hd_xasprintf("0 %u %u\n", ns->gid_base, ns->size);
    snprintf(path, sizeof(path), "/proc/%d/setgroups", pid);
    if (w->uid_map == NULL && hd_write_file(path, "deny", 4, err) < 0)
        return hd_error_prefix(err, "user namespace");
    snprintf(path, sizeof(path), "/proc/%d/uid_map", pid);
    if (hd_write_file(path, uid_map, strlen(uid_map), err) < 0)
        return hd_error_prefix(err, "user namespace: uid map \"%.*s\"", (int)strlen(uid_map) - 1, uid_map);
    snprintf(path, sizeof(path), "/proc/%d/gid_map", pid);
    if (hd_write_file(path, gid_map, strlen(gid_map), err) < 0)
        return hd_error_prefix(err, "user namespace: gid map \"%.*s\"", (int)strlen(gid_map) - 1, gid_map);
    return 0;
}

/* Everything the parent does between clone and "go". In a user namespace the child waits for the id maps (and
 * the idmapped rootfs) first: "u" on the go socket says they are there. */
static int container_setup_from_parent(struct hd_workload *w, const struct hd_spawn *s, hd_error_t *err)
{
    struct container *c = container_of(w);
    pid_t pid = s->pid;
    if (w->spec->userns.enabled && joined_ns_fd(w, HD_JOIN_USER) < 0) {
        if (write_id_maps(pid, w, err) < 0)
            return -1;
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/ns/user", pid);
        cleanup_close int userns_fd = open(path, O_RDONLY | O_CLOEXEC);
        if (userns_fd < 0)
            return hd_error_sys(err, "user namespace: open %s", path);
        if (w->uid_map == NULL && hd_rootfs_idmap(&c->rootfs, userns_fd, err) < 0)
            return -1;
        if (send(s->go_fd, "u", 1, MSG_NOSIGNAL) != 1)
            return hd_error_sys(err, "user namespace: hand the id maps over to the container's process");
    }
    if (c->net_mode != HD_NET_HOST && hd_net_setup(w->state_dir, w->id, c->net_mode, pid, &c->net, err) < 0)
        return hd_error_prefix(err, "network");
    return 0;
}

/* The parent's half of container_before_pivot: wait for the child's "h", call before_pivot_parent, answer
 * with the length and the message. A child that failed first closes the socket: its report says why. */
static int container_parent_before_pivot(struct hd_workload *w, struct hd_spawn *s, hd_error_t *err)
{
    char byte;
    ssize_t n;
    do
        n = read(s->go_fd, &byte, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1 || byte != 'h')
        return hd_error_set(err, EPIPE, "the container's process ended before pivot_root");
    cleanup_free char *message = NULL;
    if (w->before_pivot_parent(w, s->pid, w->container_setup_data, &message, err) < 0)
        return -1;
    uint32_t len = message ? (uint32_t)strlen(message) : 0;
    struct iovec iov[2] = {{.iov_base = &len, .iov_len = sizeof(len)}, {.iov_base = message, .iov_len = len}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = len ? 2 : 1};
    size_t want = sizeof(len) + len;
    if (sendmsg(s->go_fd, &msg, MSG_NOSIGNAL) != (ssize_t)want)
        return hd_error_sys(err, "hand the message over to the container's process");
    return 0;
}

/* A joined user namespace: read the container's process's pid from the intermediate (clone_in_joined_userns),
 * reap the intermediate and make the container's process the spawn's child (it is ours: CLONE_PARENT). */
static int take_over_from_intermediate(struct hd_spawn *s, hd_error_t *err)
{
    int32_t pid;
    if (!go_read(s->go_fd, &pid, sizeof(pid)) || pid <= 0) {
        hd_error_set(err, EPIPE, "the intermediate process in the joined user namespace ended early");
        return hd_spawn_abort(s, err); /* its report says why */
    }
    int status;
    while (waitpid(s->pid, &status, 0) < 0 && errno == EINTR)
        ;
    s->pid = pid;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        hd_error_set(err, 0, "the intermediate process in the joined user namespace failed");
        return hd_spawn_abort(s, err);
    }
    return 0;
}

/*
 * A time namespace applies to children only (clone(2) has no room for CLONE_NEWTIME). With offsets: unshare a
 * new one for our next child and write its offsets while no process is in it; without: join the existing one
 * join_fd (setns changes ours too: we are single-threaded). Either way ours is kept open in *own, and the
 * caller goes back to it once the child is cloned (or this failed), so that nothing else we start lands there.
 */
static int time_ns_for_children(const char *offsets, int join_fd, int *own, hd_error_t *err)
{
    *own = open("/proc/self/ns/time", O_RDONLY | O_CLOEXEC);
    if (*own < 0)
        return hd_error_sys(err, "time namespace: open /proc/self/ns/time");
    if (offsets == NULL)
        return setns(join_fd, CLONE_NEWTIME) < 0 ? hd_error_sys(err, "join the existing time namespace") : 0;
    if (unshare(CLONE_NEWTIME) < 0)
        return hd_error_sys(err, "time namespace: unshare");
    if (*offsets && hd_write_file("/proc/self/timens_offsets", offsets, strlen(offsets), err) < 0)
        return hd_error_prefix(err, "time namespace: its offsets");
    return 0;
}

static int container_start(struct hd_workload *w, hd_error_t *err)
{
    struct container *c = container_of(w);
    struct hd_cgroup_entry cgroup_entry;
    /* the device list is on the group before the child is born in it (v2) or opens its files (v1) */
    const struct hd_device_rule *rules = w->device_rules ? w->device_rules : hd_device_rules_default;
    size_t n_rules = w->device_rules ? w->n_device_rules : hd_device_rules_default_count;
    if (w->cgroup && hd_cgroup_devices_apply(w->cgroup, rules, n_rules, err) < 0)
        return -1;
    bool userns = w->spec->userns.enabled;
    /* the cgroup namespace we are in (hedge-oci's config without a cgroup entry): the child just stays there */
    bool cgroup_ns_ours = ns_is_ours(joined_ns_fd(w, HD_JOIN_CGROUP), "cgroup");
    /* mount: the child sets up its root there; pid, cgroup: its proc and cgroup mounts; all need rights in
     * the namespace's owner, which a process in a new user namespace lacks */
    if (userns &&
        (joined_ns_fd(w, HD_JOIN_MNT) >= 0 || joined_ns_fd(w, HD_JOIN_PID) >= 0 ||
         (joined_ns_fd(w, HD_JOIN_CGROUP) >= 0 && !cgroup_ns_ours)))
        return hd_error_set(err, EINVAL,
                            "joining an existing mount, pid or cgroup namespace: not with a new user namespace");
    if (w->share_mount_ns && (joined_ns_fd(w, HD_JOIN_MNT) >= 0 || userns))
        return hd_error_set(err, EINVAL,
                            "sharing the runtime's mount namespace: not with a joined mount namespace or a user "
                            "namespace");
    if (w->share_mount_ns)
        hd_rootfs_close(&c->rootfs); /* nothing is mounted: the prepared trees go unused */
    if (joined_ns_fd(w, HD_JOIN_NET) >= 0) {
        c->net_mode = HD_NET_HOST; /* nothing to make or set up: the namespace is someone else's */
        /* sysfs belongs to the network namespace's owner: the host's /sys is bound instead */
        if (userns && hd_rootfs_use_host_sys(&c->rootfs, err) < 0)
            return -1;
    }
    if (hd_cgroup_entry_open(w->cgroup, &cgroup_entry, err) < 0)
        return -1;
    unsigned long flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC;
    if (w->share_mount_ns)
        flags &= ~(unsigned long)CLONE_NEWNS;
    if (c->net_mode != HD_NET_HOST)
        flags |= CLONE_NEWNET; /* not for a joined one (HD_NET_HOST above) */
    for (size_t i = 0; i < ARRAY_SIZE(child_joins); i++)
        if (joined_ns_fd(w, child_joins[i].ns) >= 0)
            flags &= ~(unsigned long)child_joins[i].type;
    /* a joined pid namespace: the child is born in it */
    cleanup_close int own_pid_ns = -1;
    if (joined_ns_fd(w, HD_JOIN_PID) >= 0) {
        flags &= ~(unsigned long)CLONE_NEWPID;
        if (pid_ns_enter_for_children(joined_ns_fd(w, HD_JOIN_PID), &own_pid_ns, err) < 0) {
            hd_cgroup_entry_close(&cgroup_entry);
            return -1;
        }
    }
    int own_ns[ARRAY_SIZE(child_joins)];
    bool join_userns = joined_ns_fd(w, HD_JOIN_USER) >= 0;
    if (userns && !join_userns) {
        flags |= CLONE_NEWUSER;
        if (parent_enter_for_clone(w, own_ns, err) < 0) {
            hd_error_t ignored = NULL;
            if (parent_return_after_clone(own_ns, &ignored) < 0)
                hd_error_free(&ignored);
            hd_cgroup_entry_close(&cgroup_entry);
            return -1;
        }
    }
    /*
     * A fork-like clone (spawn.c): the child continues with a copy of our
     * memory. On cgroup v2 (and in the unified directory of a hybrid host) it
     * is born in its cgroup (CLONE_INTO_CGROUP); it enters v1 hierarchies itself.
     */
    struct container_child_args args = {
        .w = w, .cgroup_entry = &cgroup_entry, .cgroup_ns_ours = cgroup_ns_ours, .clone_flags = flags};
    struct hd_spawn_options opts = {
        .what = "container set-up",
        .clone_flags = join_userns ? 0 : flags, /* the intermediate process clones with them */
        .cgroup_fd = cgroup_entry.clone_fd,
        .go = true,
        .child = container_child,
        .data = &args,
    };
    struct hd_spawn s;
    cleanup_close int own_time_ns = -1;
    int ret = w->time_offsets || w->time_ns_fd
        ? time_ns_for_children(w->time_offsets, w->time_ns_fd ? *w->time_ns_fd : -1, &own_time_ns, err)
        : 0;
    if (ret == 0)
        ret = hd_spawn_start(&opts, &s, err);
    if (own_time_ns >= 0 && setns(own_time_ns, CLONE_NEWTIME) < 0 && ret == 0) {
        hd_error_sys(err, "time namespace: back to ours");
        ret = hd_spawn_abort(&s, err); /* below, as a failed clone */
    }
    hd_cgroup_entry_close(&cgroup_entry);
    if (userns && !join_userns && parent_return_after_clone(own_ns, err) < 0) {
        if (ret == 0)
            hd_spawn_abort(&s, err);
        return -1;
    }
    if (pid_ns_restore(&own_pid_ns, err) < 0) {
        if (ret == 0)
            hd_spawn_abort(&s, err);
        return -1;
    }
    if (ret < 0 && joined_ns_fd(w, HD_JOIN_PID) >= 0 && *err && (*err)->errnum == ENOMEM)
        return hd_error_prefix(err, "clone into the joined pid namespace (its init process has exited)");
    if (ret < 0)
        return hd_error_prefix(err, "clone the container's namespaces");
    if (join_userns && take_over_from_intermediate(&s, err) < 0) {
        hd_rootfs_close(&c->rootfs);
        return -1;
    }
    w->pid = s.pid;
    if (container_setup_from_parent(w, &s, err) < 0 ||
        (w->before_pivot_parent && container_parent_before_pivot(w, &s, err) < 0))
        ret = hd_spawn_abort(&s, err);
    else
        ret = hd_spawn_finish(&s, err);
    /* the child holds its own copies of the detached mounts now */
    hd_rootfs_close(&c->rootfs);
    if (ret < 0)
        w->pid = -1;
    return ret;
}

static void container_cleanup(struct hd_workload *w)
{
    /* PID 1 dying takes the whole pid namespace, and with it every mount */
    if (w->pid > 0) {
        kill(w->pid, SIGKILL);
        while (waitpid(w->pid, NULL, 0) < 0 && errno == EINTR)
            ;
        w->pid = -1;
    }
    struct container *c = container_of(w);
    if (c == NULL)
        return;
    hd_error_t err = NULL;
    if (hd_net_teardown(c->net, &err) < 0) {
        hd_log_error(HD_LOG_WARN, "cleanup", &err);
    }
    hd_rootfs_cleanup(&c->rootfs);
    hd_seccomp_free(c->seccomp);
    free(c->hostname);
    free(c);
    w->backend_data = NULL;
}

const struct hd_backend hd_backend_container = {
    .name = "container",
    .prepare = container_prepare,
    .start = container_start,
    .signal = hd_backend_pid_signal,
    .wait = hd_backend_pid_wait,
    .stats = hd_backend_cgroup_stats,
    .cleanup = container_cleanup,
};

/* ---- joining a running container (join.h) ---------------------------- */

/* The namespaces a joined process enters, mount last. We are root on the host, with rights in every user
 * namespace, so the container's user namespace comes late: its process may share namespaces the host's user
 * namespace owns (a joined network namespace), which it could not enter from inside. */
static const struct {
    const char *name;
    int type;
} join_namespaces[] = {
    {"ipc", CLONE_NEWIPC},       {"uts", CLONE_NEWUTS},   {"net", CLONE_NEWNET}, {"time", CLONE_NEWTIME},
    {"cgroup", CLONE_NEWCGROUP}, {"user", CLONE_NEWUSER}, {"mnt", CLONE_NEWNS},
};
#define JOIN_NS_MAX ARRAY_SIZE(join_namespaces)

struct join_child_args {
    const struct hd_container_join *j;
    struct hd_cgroup_entry *cgroup_entry;
    int ns_fd[JOIN_NS_MAX]; /* -1: the same as ours */
    int root_fd;            /* the container's root when it shares our mount namespace (chroot), else -1 */
    uint64_t caps;
    struct hd_seccomp *seccomp;
};

static int join_before_exec(void *data, hd_error_t *err)
{
    struct join_child_args *a = data;
    return apply_process_security(a->j->seccomp_listener, a->j->seccomp_listener_data, a->caps, a->j->caps_inheritable,
                                  a->j->caps_ambient, a->j->security->no_new_privs, a->seccomp, err);
}

__attribute__((noreturn)) static void join_child(void *data, int go_fd, int report_fd)
{
    (void)go_fd;
    struct join_child_args *a = data;
    const struct hd_container_join *j = a->j;
    hd_error_t err = NULL;
    const char *failed_dir = NULL;
    int r = hd_cgroup_entry_enter(a->cgroup_entry, &failed_dir);
    if (r < 0)
        hd_child_fail(report_fd, HD_EXIT_HEDGE, -r, "cgroup: enter %s", failed_dir);
    for (size_t i = 0; i < JOIN_NS_MAX; i++)
        if (a->ns_fd[i] >= 0 && setns(a->ns_fd[i], join_namespaces[i].type) < 0)
            hd_child_fail(report_fd, HD_EXIT_HEDGE, errno, "join the container's %s namespace",
                          join_namespaces[i].name);
    if (a->root_fd >= 0 && (fchdir(a->root_fd) < 0 || chroot(".") < 0 || chdir("/") < 0))
        hd_child_fail(report_fd, HD_EXIT_HEDGE, errno, "chroot into the container's root");
    if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        hd_child_fail(report_fd, HD_EXIT_HEDGE, errno, "mark inherited fds close-on-exec");
    if (j->setup && j->setup(j->setup_data, &err) < 0)
        hd_child_fail(report_fd, HD_EXIT_HEDGE, err->errnum, "%s", err->message);
    if (hd_caps_drop_bounding(a->caps, &err) < 0)
        hd_child_fail(report_fd, HD_EXIT_HEDGE, err->errnum, "%s", err->message);
    if (!j->security->no_new_privs && load_filter(j->seccomp_listener, j->seccomp_listener_data, a->seccomp, &err) < 0)
        hd_child_fail(report_fd, HD_EXIT_HEDGE, err->errnum, "%s", err->message);
    struct hd_exec_plan plan = {
        .argv = j->argv,
        .env = j->env,
        .workdir = j->workdir ? j->workdir : "/",
        .user = j->user,
        .groups = j->groups,
        .n_groups = j->n_groups,
        .keep_caps = j->caps_inheritable || j->caps_ambient,
        .no_new_privs = j->security->no_new_privs,
        .before_exec = join_before_exec,
        .before_exec_data = a,
    };
    hd_child_exec(report_fd, &plan);
}

/* fd of /proc/PID/ns/NAME when it differs from ours, else -1 (*fd = -1) */
static int open_ns_if_other(pid_t pid, const char *name, int *fd, hd_error_t *err)
{
    char path[64], self[64];
    snprintf(path, sizeof(path), "/proc/%d/ns/%s", (int)pid, name);
    snprintf(self, sizeof(self), "/proc/self/ns/%s", name);
    *fd = -1;
    struct stat theirs, ours;
    if (stat(path, &theirs) < 0) {
        if (errno == ENOENT && stat(self, &ours) < 0)
            return 0; /* the kernel has no such namespace type */
        return hd_error_sys(err, "%s", path);
    }
    if (stat(self, &ours) == 0 && ours.st_ino == theirs.st_ino && ours.st_dev == theirs.st_dev)
        return 0;
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0)
        return hd_error_sys(err, "open %s", path);
    return 0;
}

/* fd of /proc/PID/root when it is not our root, else -1 (*fd = -1) */
static int open_root_if_other(pid_t pid, int *fd, hd_error_t *err)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/root", (int)pid);
    *fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (*fd < 0)
        return hd_error_sys(err, "open %s", path);
    struct stat theirs, ours;
    if (fstat(*fd, &theirs) < 0 || stat("/", &ours) < 0)
        return hd_error_sys(err, "stat %s", path);
    if (theirs.st_ino == ours.st_ino && theirs.st_dev == ours.st_dev) {
        close(*fd);
        *fd = -1;
    }
    return 0;
}

int hd_container_join(const struct hd_container_join *j, pid_t *pid_out, hd_error_t *err)
{
    struct join_child_args a = {.j = j, .root_fd = -1};
    for (size_t i = 0; i < JOIN_NS_MAX; i++)
        a.ns_fd[i] = -1;
    struct hd_cgroup_entry cgroup_entry;
    bool entry_open = false;
    cleanup_close int pid_ns = -1;
    int own_pid_ns = -1;
    int rc = -1;
    if (hd_caps_from_spec(j->security, &a.caps, err) < 0 || hd_seccomp_build(j->security, a.caps, &a.seccomp, err) < 0)
        goto out;
    for (size_t i = 0; i < JOIN_NS_MAX; i++)
        if (open_ns_if_other(j->init_pid, join_namespaces[i].name, &a.ns_fd[i], err) < 0)
            goto out;
    /* our own mount namespace (hedge-oci's share_mount_ns): the container's root is a chroot, entered the same way */
    if (a.ns_fd[JOIN_NS_MAX - 1] < 0 && open_root_if_other(j->init_pid, &a.root_fd, err) < 0)
        goto out;
    /* the pid namespace applies to our next child: ours is set for the clone and restored after */
    if (open_ns_if_other(j->init_pid, "pid", &pid_ns, err) < 0)
        goto out;
    if (pid_ns >= 0 && pid_ns_enter_for_children(pid_ns, &own_pid_ns, err) < 0)
        goto out;
    if (hd_cgroup_entry_open(j->cgroup, &cgroup_entry, err) < 0)
        goto out;
    entry_open = true;
    a.cgroup_entry = &cgroup_entry;
    struct hd_spawn_options opts = {
        .what = "exec in the container",
        .cgroup_fd = cgroup_entry.clone_fd,
        .child = join_child,
        .data = &a,
    };
    struct hd_spawn s;
    if (hd_spawn_start(&opts, &s, err) < 0)
        goto out;
    *pid_out = s.pid;
    rc = hd_spawn_finish(&s, err); /* a failed child is reaped there */
out:
    if (pid_ns_restore(&own_pid_ns, err) < 0)
        rc = -1;
    if (entry_open)
        hd_cgroup_entry_close(&cgroup_entry);
    for (size_t i = 0; i < JOIN_NS_MAX; i++)
        if (a.ns_fd[i] >= 0)
            close(a.ns_fd[i]);
    if (a.root_fd >= 0)
        close(a.root_fd);
    hd_seccomp_free(a.seccomp);
    return rc;
}
