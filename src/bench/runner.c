/*
 * bench_runner.c - the experiment behind `hedge bench`.
 *
 * Isolation of the measurement itself:
 *  - The bench moves itself into a network namespace of its own
 *    (unshare(CLONE_NEWNET)) for the whole run and brings up lo there. Every
 *    workload it starts is created from inside it, so a process-level server
 *    listens in that namespace, and a container's veth, the bridge and a VM's
 *    tap are all made in it. When the bench returns to the namespace it came
 *    from and its workloads are gone, the kernel removes the namespace with
 *    everything in it; the root namespace's networking is never touched.
 *  - Levels are interleaved (A B C A B C ...) so drift of the machine hits
 *    every level alike.
 *  - A lock file in the runtime dir keeps two benches from measuring each
 *    other.
 *
 * A workload is started with the runtime library (hd_workload_create/start),
 * the isolation level being only a field of its spec, so the same code
 * measures process, container and vm.
 *
 * CPU accounting. "Host side" is what the host spends to talk to the
 * workload beyond the workload itself: the client (this process, getrusage)
 * plus every other process the bench started that is not in the workload's
 * cgroup (a VM's QEMU, a container shim). "Inside the workload" is the
 * workload cgroup's CPU usage (backend stats); when cgroup stats are not
 * available the workload's process tree from /proc stands in, and the report
 * says so. Memory is the cgroup's usage (or the tree's RSS) and the RSS of
 * the runtime's own processes.
 */
#include "bench/bench.h"

#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <limits.h>
#include <math.h>
#include <net/if.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "runtime/backend.h"
#include "config.h"
#include "image/image.h"
#include "runtime/run.h"
#include "base/util.h"
#include "runtime/vm/vm.h"

/* The limits of the built-in echo workload (and of a neighbour beside it). */
#define ECHO_MEMORY (128ll << 20)
#define ECHO_PIDS 128
#define ECHO_CPUS 1.0
#define NEIGHBOUR_RAMP_S 0.5

static volatile sig_atomic_t bench_stop;

static void on_stop_signal(int sig)
{
    (void)sig;
    bench_stop = 1;
}

const char *hd_bench_neighbour_name(enum hd_bench_neighbour n)
{
    switch (n) {
    case HD_BENCH_NEIGHBOUR_NONE: return "none";
    case HD_BENCH_NEIGHBOUR_CPU: return "cpu";
    case HD_BENCH_NEIGHBOUR_MEMORY: return "memory";
    case HD_BENCH_NEIGHBOUR_FORK: return "fork";
    }
    return "?";
}

int hd_bench_neighbour_parse(const char *text, enum hd_bench_neighbour *out)
{
    for (int n = HD_BENCH_NEIGHBOUR_CPU; n <= HD_BENCH_NEIGHBOUR_FORK; n++)
        if (strcmp(text, hd_bench_neighbour_name((enum hd_bench_neighbour)n)) == 0) {
            *out = (enum hd_bench_neighbour)n;
            return 0;
        }
    return -1;
}

/* ---- lock ---- */

static int bench_lock(int *out, hd_error_t *err)
{
    if (hd_mkdir_p(hd_runtime_dir(), 0755, err) < 0)
        return -1;
    cleanup_free char *path = hd_xasprintf("%s/bench.lock", hd_runtime_dir());
    cleanup_close int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return hd_error_sys(err, "lock %s", path);
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno != EWOULDBLOCK)
            return hd_error_sys(err, "lock %s", path);
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        return hd_error_set(err, 0,
                            "another hedge bench is running (pid %s holds %s); benches would "
                            "measure each other, so only one runs at a time",
                            pid[0] ? pid : "?", path);
    }
    char pid[32];
    int len = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)len, 0) != len)
        return hd_error_sys(err, "write %s", path);
    *out = steal_fd(&fd);
    return 0;
}

/* ---- the bench's own network namespace ---- */

static int link_up(const char *name, hd_error_t *err)
{
    cleanup_close int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return hd_error_sys(err, "socket");
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        return hd_error_sys(err, "get flags of %s", name);
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        return hd_error_sys(err, "bring %s up", name);
    return 0;
}

struct bench_netns {
    int origin_fd; /* the namespace we came from */
    int own_fd;    /* the bench's namespace */
    char name[40]; /* "net:[4026532...]" */
};

static int netns_enter_new(struct bench_netns *ns, hd_error_t *err)
{
    ns->origin_fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    ns->own_fd = -1;
    if (ns->origin_fd < 0)
        return hd_error_sys(err, "open /proc/self/ns/net");
    if (unshare(CLONE_NEWNET) < 0) {
        hd_error_sys(err, "create the bench's network namespace");
        close(ns->origin_fd);
        ns->origin_fd = -1;
        return -1;
    }
    ns->own_fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    ssize_t n = readlink("/proc/self/ns/net", ns->name, sizeof(ns->name) - 1);
    ns->name[n > 0 ? n : 0] = '\0';
    if (ns->own_fd < 0 || link_up("lo", err) < 0) {
        if (ns->own_fd < 0)
            hd_error_sys(err, "open the bench's network namespace");
        return hd_error_prefix(err, "bench network namespace");
    }
    return 0;
}

static void netns_leave(struct bench_netns *ns)
{
    if (ns->origin_fd >= 0 && setns(ns->origin_fd, CLONE_NEWNET) < 0)
        fprintf(stderr, "hedge bench: return to the original network namespace: %s\n", strerror(errno));
    if (ns->origin_fd >= 0)
        close(ns->origin_fd);
    if (ns->own_fd >= 0)
        close(ns->own_fd);
    ns->origin_fd = ns->own_fd = -1;
}

/* ---- the built-in echo workload ---- */

static char *find_echo_server(const struct hd_bench_options *o, hd_error_t *err)
{
    if (o->echo_server) {
        if (access(o->echo_server, X_OK) < 0) {
            hd_error_sys(err, "echo server %s", o->echo_server);
            return NULL;
        }
        return hd_xstrdup(o->echo_server);
    }
    return hd_find_program("hedge-echo-server", err);
}

/* ---- per-level specs ---- */

static struct hd_spec *spec_copy(const struct hd_spec *spec, hd_error_t *err)
{
    cleanup_free char *json = hd_spec_to_json(spec);
    struct hd_spec *copy = hd_spec_new();
    if (hd_spec_parse_json(copy, json, strlen(json), "bench spec", err) < 0) {
        hd_spec_free(copy);
        return NULL;
    }
    return copy;
}

struct bench_ctx {
    const struct hd_bench_options *o;
    struct hd_bench_report *report;
    struct bench_netns netns;
    char *echo_server; /* host path of the static server (process level) */
    char *echo_image;  /* its image in the store (container, vm) */
    char *tmp_dir;     /* the bench's own temp dir (workload logs) */
    int step, steps;
    uint64_t started_ns;
};

/*
 * The spec of the built-in echo server (or a neighbour hog when hog is set)
 * at one level: the same binary, run from the host for process, from its
 * image in the store for container and vm.
 */
static struct hd_spec *builtin_spec(struct bench_ctx *c, enum hd_isolation level, const char *hog,
                                    const struct hd_resources *limits)
{
    struct hd_spec *s = hd_spec_new();
    s->isolation = level;
    s->isolation_set = true;
    s->name = hd_xstrdup(hog ? "bench-neighbour" : "bench-echo");
    if (level == HD_ISOLATION_PROCESS) {
        hd_strv_push(&s->command, c->echo_server);
    } else {
        s->image = hd_xstrdup(c->echo_image);
        hd_strv_push(&s->entrypoint, "/hedge-echo-server");
        s->network = hog ? HD_NET_NONE : HD_NET_BRIDGE; /* a hog needs no network */
    }
    if (hog) {
        hd_strv_push(&s->command, "--hog");
        hd_strv_push(&s->command, hog);
    } else {
        cleanup_free char *port = hd_xasprintf("%d", c->o->port);
        hd_strv_push(&s->command, "--port");
        hd_strv_push(&s->command, port);
    }
    if (limits) {
        s->resources = *limits;
    } else {
        s->resources.memory = ECHO_MEMORY;
        s->resources.pids = ECHO_PIDS;
        s->resources.cpus = ECHO_CPUS;
    }
    return s;
}

static struct hd_spec *level_spec(struct bench_ctx *c, enum hd_isolation level, hd_error_t *err)
{
    if (c->o->builtin_echo)
        return builtin_spec(c, level, NULL, NULL);
    struct hd_spec *s = spec_copy(c->o->spec, err);
    if (s == NULL)
        return NULL;
    s->isolation = level;
    s->isolation_set = true;
    return s;
}

/* ---- process accounting from /proc ---- */

struct proc_info {
    pid_t pid, ppid;
    double cpu_s;
    uint64_t rss_bytes;
    int group; /* 0 runtime overhead, 1 workload under test, 2 neighbour, -1 not ours */
};

static bool in_cgroup_named(pid_t pid, const char *id)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
    cleanup_free char *text = NULL;
    hd_error_t ignored = NULL;
    if (hd_read_file(path, &text, NULL, &ignored) < 0) {
        hd_error_free(&ignored);
        return false;
    }
    size_t idlen = strlen(id);
    for (char *p = strstr(text, id); p; p = strstr(p + 1, id))
        if (p > text && p[-1] == '/' && (p[idlen] == '\n' || p[idlen] == '/' || p[idlen] == '\0'))
            return true;
    return false;
}

/* All processes with their parent, CPU time and RSS. */
static size_t read_procs(struct proc_info **out)
{
    size_t n = 0, cap = 256;
    struct proc_info *v = hd_xmalloc(cap * sizeof(*v));
    DIR *d = opendir("/proc");
    struct dirent *e;
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    while (d && (e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char path[300];
        snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
        cleanup_free char *text = NULL;
        hd_error_t ignored = NULL;
        if (hd_read_file(path, &text, NULL, &ignored) < 0) {
            hd_error_free(&ignored);
            continue;
        }
        char *rp = strrchr(text, ')');
        if (rp == NULL)
            continue;
        /* fields after the command: state ppid pgrp session tty tpgid flags minflt cminflt majflt
         * cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime vsize rss */
        char state;
        int ppid;
        unsigned long long utime, stime, vsize;
        long long rss;
        if (sscanf(rp + 2,
                   "%c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d "
                   "%*u %llu %lld",
                   &state, &ppid, &utime, &stime, &vsize, &rss) != 6)
            continue;
        if (n == cap)
            v = hd_xrealloc(v, (cap *= 2) * sizeof(*v));
        v[n++] = (struct proc_info){.pid = atoi(e->d_name),
                                    .ppid = ppid,
                                    .cpu_s = (double)(utime + stime) / (double)tick,
                                    .rss_bytes = (uint64_t)(rss > 0 ? rss : 0) * (uint64_t)page,
                                    .group = -1};
    }
    if (d)
        closedir(d);
    *out = v;
    return n;
}

static bool descends_from(const struct proc_info *v, size_t n, pid_t pid, pid_t ancestor)
{
    for (int depth = 0; depth < 64 && pid > 1; depth++) {
        if (pid == ancestor)
            return true;
        pid_t parent = 0;
        for (size_t i = 0; i < n; i++)
            if (v[i].pid == pid) {
                parent = v[i].ppid;
                break;
            }
        pid = parent;
    }
    return pid == ancestor;
}

struct usage {
    double client_cpu_s;   /* this process */
    double workload_cpu_s; /* the workload under test */
    double overhead_cpu_s; /* the runtime's own processes (not in a workload) */
    double workload_mem;   /* bytes */
    double overhead_mem;   /* bytes */
    bool from_cgroup;
};

/* Classify the bench's descendants: workload under test, neighbour, or runtime overhead. */
static void measure_usage(struct hd_workload *w, struct hd_workload *neighbour, struct usage *u)
{
    memset(u, 0, sizeof(*u));
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    u->client_cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
        (double)ru.ru_stime.tv_usec / 1e6;

    struct proc_info *v = NULL;
    size_t n = read_procs(&v);
    pid_t self = getpid();
    bool any_by_cgroup = false;
    for (size_t i = 0; i < n; i++) {
        if (v[i].pid == self || !descends_from(v, n, v[i].pid, self))
            continue;
        if (in_cgroup_named(v[i].pid, w->id)) {
            v[i].group = 1;
            any_by_cgroup = true;
        } else if (neighbour && in_cgroup_named(v[i].pid, neighbour->id)) {
            v[i].group = 2;
        } else {
            v[i].group = 0;
        }
    }
    if (!any_by_cgroup) /* no cgroup to go by: the workload is its process tree */
        for (size_t i = 0; i < n; i++)
            if (v[i].group >= 0) {
                if (w->pid > 0 && descends_from(v, n, v[i].pid, w->pid))
                    v[i].group = 1;
                else if (neighbour && neighbour->pid > 0 && descends_from(v, n, v[i].pid, neighbour->pid))
                    v[i].group = 2;
            }
    for (size_t i = 0; i < n; i++) {
        if (v[i].group == 1) {
            u->workload_cpu_s += v[i].cpu_s;
            u->workload_mem += (double)v[i].rss_bytes;
        } else if (v[i].group == 0) {
            u->overhead_cpu_s += v[i].cpu_s;
            u->overhead_mem += (double)v[i].rss_bytes;
        }
    }
    free(v);

    struct hd_stats st = {0};
    hd_error_t ignored = NULL;
    if (w->backend->stats && w->backend->stats(w, &st, &ignored) == 0) {
        u->workload_cpu_s = (double)st.cpu_usage_ns / 1e9;
        u->workload_mem = (double)st.memory_bytes;
        u->from_cgroup = true;
    }
    hd_error_free(&ignored);
}

/* ---- one workload's life ---- */

struct live {
    struct hd_spec *spec;
    struct hd_workload *w;
    int pidfd;
    int log_fd;
    char *log_path;
    struct hd_bench_target target;
    double start_ms;
};

/* True while pid exists and is not a zombie. */
static bool process_alive(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    cleanup_free char *text = NULL;
    hd_error_t ignored = NULL;
    if (hd_read_file(path, &text, NULL, &ignored) < 0) {
        hd_error_free(&ignored);
        return false;
    }
    char *rp = strrchr(text, ')');
    return rp && rp[1] == ' ' && rp[2] != 'Z' && rp[2] != 'X';
}

/*
 * Stop a workload and make sure its whole process tree is gone before the
 * next measurement: the runtime's destroy kills what its cgroup holds, but a
 * fork-storm neighbour without a cgroup (or one whose children were already
 * reparented) would outlive it. Only descendants of the workload we started
 * are touched.
 */
static void live_stop(struct live *l)
{
    if (l == NULL)
        return;
    pid_t *tree = NULL;
    size_t n_tree = 0;
    if (l->w && l->w->pid > 0) {
        struct proc_info *v = NULL;
        size_t n = read_procs(&v);
        tree = hd_xcalloc(n + 1, sizeof(pid_t));
        for (size_t i = 0; i < n; i++)
            if (v[i].pid != l->w->pid && descends_from(v, n, v[i].pid, l->w->pid))
                tree[n_tree++] = v[i].pid;
        free(v);
    }
    hd_workload_destroy(l->w);
    for (size_t i = 0; i < n_tree; i++)
        kill(tree[i], SIGKILL);
    for (int tries = 0; tries < 400; tries++) {
        bool any = false;
        for (size_t i = 0; i < n_tree && !any; i++)
            any = process_alive(tree[i]);
        if (!any)
            break;
        struct timespec pause = {0, 5 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    free(tree);
    if (l->pidfd >= 0)
        close(l->pidfd);
    if (l->log_fd >= 0)
        close(l->log_fd);
    if (l->log_path)
        unlink(l->log_path);
    free(l->log_path);
    hd_spec_free(l->spec);
    memset(l, 0, sizeof(*l));
    l->pidfd = l->log_fd = -1;
}

/* The last line the workload wrote, to explain why it never became ready. */
static char *log_tail(const struct live *l)
{
    cleanup_free char *text = NULL;
    hd_error_t ignored = NULL;
    if (l->log_path == NULL || hd_read_file(l->log_path, &text, NULL, &ignored) < 0) {
        hd_error_free(&ignored);
        return NULL;
    }
    size_t len = strlen(text);
    while (len && text[len - 1] == '\n')
        text[--len] = '\0';
    char *nl = strrchr(text, '\n');
    return len ? hd_xstrdup(nl ? nl + 1 : text) : NULL;
}

/*
 * Where the client reaches the workload: loopback when it shares the bench's
 * namespace (process, host network), else the first IPv4 address of its own
 * namespace (container on the bridge).
 */
static int workload_address(struct bench_ctx *c, struct live *l, hd_error_t *err)
{
    enum hd_isolation level = l->spec->isolation;
    if (level == HD_ISOLATION_PROCESS || l->spec->network == HD_NET_HOST)
        return hd_bench_target_set(&l->target, "127.0.0.1", c->o->port, err);
    if (level == HD_ISOLATION_VM) { /* the guest's address on the bridge, through its tap */
        const char *cidr = hd_vm_guest_address(l->w);
        if (cidr == NULL)
            return hd_error_set(err, 0, "the vm workload has no address (network mode %s)",
                                hd_net_mode_name(l->spec->network));
        char guest[INET_ADDRSTRLEN];
        snprintf(guest, sizeof(guest), "%.*s", (int)strcspn(cidr, "/"), cidr);
        return hd_bench_target_set(&l->target, guest, c->o->port, err);
    }
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)l->w->pid);
    struct stat theirs, ours;
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &theirs) < 0 || fstat(c->netns.own_fd, &ours) < 0)
        return hd_error_sys(err, "network namespace of pid %d", (int)l->w->pid);
    if (theirs.st_ino == ours.st_ino)
        return hd_bench_target_set(&l->target, "127.0.0.1", c->o->port, err);
    if (setns(fd, CLONE_NEWNET) < 0)
        return hd_error_sys(err, "enter the workload's network namespace");
    struct ifaddrs *list = NULL;
    char host[INET_ADDRSTRLEN] = "";
    if (getifaddrs(&list) == 0) {
        for (struct ifaddrs *a = list; a; a = a->ifa_next)
            if (a->ifa_addr && a->ifa_addr->sa_family == AF_INET && !(a->ifa_flags & IFF_LOOPBACK) &&
                (a->ifa_flags & IFF_UP)) {
                inet_ntop(AF_INET, &((struct sockaddr_in *)a->ifa_addr)->sin_addr, host, sizeof(host));
                break;
            }
        freeifaddrs(list);
    }
    if (setns(c->netns.own_fd, CLONE_NEWNET) < 0)
        return hd_error_sys(err, "return to the bench's network namespace");
    if (host[0] == '\0')
        return hd_error_set(err, 0,
                            "the %s workload has no IPv4 address in its network namespace "
                            "(network mode %s)",
                            hd_isolation_name(level), hd_net_mode_name(l->spec->network));
    return hd_bench_target_set(&l->target, host, c->o->port, err);
}

/*
 * Create and start one workload. WAIT_PORT: wait until it accepts (start_ms
 * = create to ready); WAIT_EXIT: wait for its exit (start_ms = create to
 * exit; a non-zero status is an error); WAIT_NONE: just start it.
 * l->spec takes spec; live_stop(l) undoes everything, also after a failure.
 */
enum live_wait { WAIT_PORT, WAIT_EXIT, WAIT_NONE };

static int live_start(struct bench_ctx *c, struct hd_spec *spec, enum live_wait wait, struct live *l, hd_error_t *err)
{
    memset(l, 0, sizeof(*l));
    l->pidfd = -1;
    l->spec = spec;
    static int serial;
    l->log_path = hd_xasprintf("%s/workload-%d.log", c->tmp_dir, ++serial);
    l->log_fd = open(l->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    cleanup_close int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (l->log_fd < 0 || null_fd < 0)
        return hd_error_sys(err, "open %s", l->log_path);
    struct hd_run_options ro = {.stdio = {null_fd, l->log_fd, l->log_fd}, .set_stdio = true};

    uint64_t t0 = hd_now_ns();
    if (hd_workload_create(spec, &ro, &l->w, err) < 0)
        return -1;
    if (hd_workload_start(l->w, err) < 0)
        return -1;
    l->pidfd = (int)syscall(SYS_pidfd_open, l->w->pid, 0);
    if (l->pidfd < 0)
        return hd_error_sys(err, "pidfd_open %d", (int)l->w->pid);
    if (wait == WAIT_NONE)
        return 0;
    if (wait == WAIT_EXIT) {
        struct hd_exit ex;
        if (hd_workload_wait(l->w, &ex, err) < 0)
            return -1;
        l->start_ms = (double)(hd_now_ns() - t0) / 1e6;
        if (ex.code != 0)
            return hd_error_set(err, 0, "the workload exited with code %d", ex.code);
        return 0;
    }
    if (workload_address(c, l, err) < 0)
        return -1;
    if (hd_bench_wait_ready(&l->target, l->pidfd, c->o->ready_timeout_s, &bench_stop, err) < 0) {
        cleanup_free char *tail = log_tail(l);
        if (tail)
            hd_error_prefix(err, "(its last output: \"%s\")", tail);
        return -1;
    }
    l->start_ms = (double)(hd_now_ns() - t0) / 1e6;
    return 0;
}

/* ---- progress ---- */

static void progress(struct bench_ctx *c, const char *level, int rep, const char *what)
{
    c->step++;
    if (c->o->quiet)
        return;
    double elapsed = (double)(hd_now_ns() - c->started_ns) / 1e9;
    /* before the first step is done, guess: RR and stream phases, or one second for a command */
    double first_guess = c->o->port ? 2 * (c->o->client.duration_s + c->o->client.warmup_s) + 1 : 1;
    double per_step = c->step > 1 ? elapsed / (c->step - 1) : first_guess;
    fprintf(stderr, "hedge bench: %s, repetition %d of %d%s (step %d of %d, about %.0f s left)\n", level, rep + 1,
            c->o->runs, what, c->step, c->steps, per_step * (c->steps - c->step + 1));
}

/* ---- measuring ---- */

struct measure_window {
    struct hd_workload *w, *neighbour;
    struct usage before, after;
};

static void on_measure(void *ctx, bool start)
{
    struct measure_window *m = ctx;
    measure_usage(m->w, m->neighbour, start ? &m->before : &m->after);
}

static int measure_level(struct bench_ctx *c, int li, int rep, hd_error_t *err)
{
    enum hd_isolation level = c->o->levels[li];
    progress(c, hd_isolation_name(level), rep, "");
    struct hd_spec *spec = level_spec(c, level, err);
    if (spec == NULL)
        return -1;
    struct live l;
    int ret = -1;
    if (live_start(c, spec, c->o->port > 0 ? WAIT_PORT : WAIT_EXIT, &l, err) < 0)
        goto out;
    if (c->o->port == 0) {
        hd_bench_report_add(c->report, li, HD_FIG_EXIT_MS, l.start_ms);
        ret = 0;
        goto out;
    }
    hd_bench_report_add(c->report, li, HD_FIG_START_MS, l.start_ms);

    struct measure_window m = {.w = l.w};
    struct hd_bench_client_options co = c->o->client;
    co.on_measure = on_measure;
    co.ctx = &m;
    co.stop = &bench_stop;
    struct hd_bench_rr_result rr;
    if (hd_bench_rr(&l.target, &co, &rr, err) < 0)
        goto out;
    hd_bench_report_add(c->report, li, HD_FIG_RR_P50_US, rr.p50_us);
    hd_bench_report_add(c->report, li, HD_FIG_RR_P90_US, rr.p90_us);
    hd_bench_report_add(c->report, li, HD_FIG_RR_P99_US, rr.p99_us);
    hd_bench_report_add(c->report, li, HD_FIG_RR_TPS, rr.tps);
    if (rr.transactions > 0) {
        double per10k = 10000.0 / (double)rr.transactions;
        double host =
            (m.after.client_cpu_s - m.before.client_cpu_s) + (m.after.overhead_cpu_s - m.before.overhead_cpu_s);
        hd_bench_report_add(c->report, li, HD_FIG_HOST_CPU_10K, host * per10k);
        hd_bench_report_add(c->report, li, HD_FIG_WORKLOAD_CPU_10K,
                            (m.after.workload_cpu_s - m.before.workload_cpu_s) * per10k);
    }
    hd_bench_report_add(c->report, li, HD_FIG_WORKLOAD_MEM_MIB, m.after.workload_mem / (1 << 20));
    hd_bench_report_add(c->report, li, HD_FIG_OVERHEAD_MEM_MIB, m.after.overhead_mem / (1 << 20));
    if (!m.after.from_cgroup && rep == 0) {
        cleanup_free char *note = hd_xasprintf("%s: no cgroup statistics; workload CPU and memory are its "
                                               "process tree's from /proc",
                                               hd_isolation_name(level));
        hd_bench_report_add_note(c->report, note);
    }

    if (!c->o->no_stream && c->o->client.protocol == HD_BENCH_MESSAGE) {
        struct hd_bench_client_options so = c->o->client;
        so.stop = &bench_stop;
        struct hd_bench_stream_result st;
        if (hd_bench_stream(&l.target, &so, &st, err) < 0)
            goto out;
        hd_bench_report_add(c->report, li, HD_FIG_STREAM_MBIT, st.mbit_s);
    }
    ret = 0;
out:
    if (ret < 0)
        hd_error_prefix(err, "%s, repetition %d", hd_isolation_name(level), rep + 1);
    live_stop(&l);
    return ret;
}

static int measure_with_neighbour(struct bench_ctx *c, int li, int rep, hd_error_t *err)
{
    enum hd_isolation level = c->o->levels[li];
    cleanup_free char *what = hd_xasprintf(", with a %s neighbour", hd_bench_neighbour_name(c->o->neighbour));
    progress(c, hd_isolation_name(level), rep, what);
    struct hd_spec *spec = level_spec(c, level, err);
    if (spec == NULL)
        return -1;
    struct live l, nb;
    memset(&nb, 0, sizeof(nb));
    nb.pidfd = nb.log_fd = -1;
    int ret = -1;
    if (live_start(c, spec, WAIT_PORT, &l, err) < 0)
        goto out;
    /* the hostile neighbour: same level, same limits as the workload under test */
    struct hd_spec *nb_spec = builtin_spec(c, level, hd_bench_neighbour_name(c->o->neighbour), &l.spec->resources);
    if (live_start(c, nb_spec, WAIT_NONE, &nb, err) < 0) {
        hd_error_prefix(err, "neighbour");
        goto out;
    }
    struct timespec ramp = {0, (long)(NEIGHBOUR_RAMP_S * 1e9)};
    nanosleep(&ramp, NULL);
    struct hd_bench_client_options co = c->o->client;
    co.stop = &bench_stop;
    struct hd_bench_rr_result rr;
    if (hd_bench_rr(&l.target, &co, &rr, err) < 0)
        goto out;
    hd_bench_report_add(c->report, li, HD_FIG_NB_RR_P50_US, rr.p50_us);
    hd_bench_report_add(c->report, li, HD_FIG_NB_RR_P99_US, rr.p99_us);
    hd_bench_report_add(c->report, li, HD_FIG_NB_RR_TPS, rr.tps);
    ret = 0;
out:
    if (ret < 0)
        hd_error_prefix(err, "%s with a %s neighbour, repetition %d", hd_isolation_name(level),
                        hd_bench_neighbour_name(c->o->neighbour), rep + 1);
    live_stop(&nb);
    live_stop(&l);
    return ret;
}

/* Measure a server that is already running (--connect): the client figures only. */
static int measure_external(struct bench_ctx *c, int rep, hd_error_t *err)
{
    progress(c, "external", rep, "");
    struct hd_bench_target t;
    cleanup_free char *host = hd_xstrdup(c->o->connect);
    char *colon = strrchr(host, ':');
    if (colon == NULL)
        return hd_error_set(err, 0, "--connect %s: not HOST:PORT", c->o->connect);
    *colon = '\0';
    char *h = host;
    if (h[0] == '[' && colon > h && colon[-1] == ']') {
        h++;
        colon[-1] = '\0';
    }
    if (hd_bench_target_set(&t, h, atoi(colon + 1), err) < 0)
        return hd_error_prefix(err, "--connect");
    struct hd_bench_client_options co = c->o->client;
    co.stop = &bench_stop;
    struct hd_bench_rr_result rr;
    if (hd_bench_rr(&t, &co, &rr, err) < 0)
        return -1;
    hd_bench_report_add(c->report, 0, HD_FIG_RR_P50_US, rr.p50_us);
    hd_bench_report_add(c->report, 0, HD_FIG_RR_P90_US, rr.p90_us);
    hd_bench_report_add(c->report, 0, HD_FIG_RR_P99_US, rr.p99_us);
    hd_bench_report_add(c->report, 0, HD_FIG_RR_TPS, rr.tps);
    if (!c->o->no_stream && c->o->client.protocol == HD_BENCH_MESSAGE) {
        struct hd_bench_stream_result st;
        if (hd_bench_stream(&t, &co, &st, err) < 0)
            return -1;
        hd_bench_report_add(c->report, 0, HD_FIG_STREAM_MBIT, st.mbit_s);
    }
    return 0;
}

static int run_all(struct bench_ctx *c, hd_error_t *err)
{
    const struct hd_bench_options *o = c->o;
    if (o->connect) {
        c->steps = o->runs;
        for (int rep = 0; rep < o->runs; rep++)
            if (measure_external(c, rep, err) < 0)
                return -1;
        return 0;
    }
    c->steps = o->runs * o->n_levels * (o->neighbour ? 2 : 1);
    /* interleaved: A B C A B C ... so drift of the machine hits every level alike */
    for (int rep = 0; rep < o->runs; rep++)
        for (int li = 0; li < o->n_levels; li++)
            if (measure_level(c, li, rep, err) < 0)
                return -1;
    if (o->neighbour && o->port > 0)
        for (int rep = 0; rep < o->runs; rep++)
            for (int li = 0; li < o->n_levels; li++)
                if (measure_with_neighbour(c, li, rep, err) < 0)
                    return -1;
    return 0;
}

int hd_bench_run(const struct hd_bench_options *o, struct hd_bench_report **out, hd_error_t *err)
{
    struct bench_ctx c = {.o = o, .netns = {.origin_fd = -1, .own_fd = -1}, .started_ns = hd_now_ns()};
    cleanup_close int lock_fd = -1;
    int ret = -1;
    if (o->neighbour && o->port == 0 && !o->connect)
        return hd_error_set(err, 0, "--neighbour: needs a workload serving a port (--port)");
    if (bench_lock(&lock_fd, err) < 0)
        return -1;

    struct sigaction sa = {.sa_handler = on_stop_signal}, old_int, old_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    bench_stop = 0;

    c.report = hd_bench_report_new(o);
    if (!o->connect) {
        c.tmp_dir = hd_xasprintf("%s/bench-%d", hd_runtime_dir(), (int)getpid());
        if (hd_mkdir_p(c.tmp_dir, 0700, err) < 0)
            goto out;
        if (o->builtin_echo || o->neighbour) {
            if ((c.echo_server = find_echo_server(o, err)) == NULL)
                goto out;
            bool isolated = false;
            for (int i = 0; i < o->n_levels; i++)
                isolated |= o->levels[i] != HD_ISOLATION_PROCESS;
            if (isolated && (c.echo_image = hd_bench_echo_image(hd_state_dir(), c.echo_server, c.tmp_dir, err)) == NULL)
                goto out;
        }
        if (netns_enter_new(&c.netns, err) < 0)
            goto out;
        hd_bench_report_set_netns(c.report, c.netns.name);
    }
    ret = run_all(&c, err);
out:
    netns_leave(&c.netns);
    if (c.tmp_dir) {
        hd_error_t ignored = NULL;
        hd_rm_rf(c.tmp_dir, &ignored);
        hd_error_free(&ignored);
    }
    free(c.tmp_dir);
    free(c.echo_server);
    free(c.echo_image);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (ret < 0) {
        hd_bench_report_free(c.report);
        return hd_error_prefix(err, "bench");
    }
    *out = c.report;
    return 0;
}
