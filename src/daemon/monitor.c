/*
 * monitor.c - hedge-monitor, the per-workload monitor (`hedge-monitor DIR`),
 * hedge's conmon/containerd-shim: one small process per running workload that
 *
 *   - runs the workload with the runtime library (hd_workload_create/start/
 *     wait/destroy), so process, container and vm isolation behave the same;
 *   - owns the workload's stdout/stderr pipes and appends them to the log
 *     file, rotating it past a size limit;
 *   - records the exit status in DIR/exit.json (atomically) before it exits;
 *   - answers "signal N", "stats" and "secrets NAME" on DIR/ctl.sock;
 *   - holds an flock on DIR/monitor.lock for its whole life (taken by hedged
 *     before the fork and inherited as fd 4), so a restarted hedged can tell
 *     "alive" from "dead" without trusting a pid, and without a window.
 *
 * hedged double-forks it away (see instance.c), so `kill -9 hedged` leaves
 * the monitor and its workload running. It is its own binary so that hedged
 * never maps what only a running workload needs (libseccomp, libcap,
 * libarchive, OpenSSL): the daemon's RSS stays small. The start report goes to fd 3:
 * "ok PID\n" once the command exec'd, or "err CODE MESSAGE\n".
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* The runtime library and the protocol with hedged (monitor_proto.h): nothing else of hedged,
 * no broker header (daemon.h names the broker's config). */
#include "base/error.h"
#include "base/fdpass.h"
#include "base/log.h"
#include "base/util.h"
#include "daemon/monitor_proto.h"
#include "image/image.h"
#include "runtime/backend.h"
#include "runtime/run.h"
#include "runtime/vm/vm.h"
#include "spec/spec.h"

struct monitor {
    int dirfd;
    char *dir;
    char *log_path;
    int64_t log_max_bytes;
    int log_fd;
    struct hd_workload *workload;
};

static int64_t unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Write DIR/name atomically (the reader never sees half a record). */
static void monitor_write_json(struct monitor *m, const char *name, json_t *o)
{
    char *text = json_dumps(o, JSON_COMPACT);
    cleanup_free char *path = hd_xasprintf("%s/%s", m->dir, name);
    hd_error_t err = NULL;
    if (text == NULL || hd_write_file_atomic(path, text, strlen(text), &err) < 0) {
        hd_error_print(err, "hedge-monitor");
        hd_error_free(&err);
    }
    free(text);
    json_decref(o);
}

static void monitor_report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void monitor_report(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vdprintf(HD_MONITOR_REPORT_FD, fmt, ap);
    va_end(ap);
    close(HD_MONITOR_REPORT_FD);
}

/* The workload never ran: record and report why, so hedged shows the same message as `hedge run`. */
static int monitor_start_failed(struct monitor *m, hd_error_t *err)
{
    int code = hd_error_exit_code(*err);
    const char *text = hd_error_text(*err);
    monitor_write_json(m, HD_MONITOR_EXIT_FILE,
                       json_pack("{s:i,s:i,s:i,s:b,s:I,s:s}", "code", code ? code : HD_EXIT_HEDGE, "status", -1,
                                 "signal", 0, "oom_killed", 0, "finished_at", (json_int_t)unix_ms(), "start_error",
                                 text));
    monitor_report("err %d %s\n", code ? code : HD_EXIT_HEDGE, text);
    hd_error_free(err);
    if (m->dirfd >= 0)
        close(m->dirfd);
    free(m->dir);
    free(m->log_path);
    return 1;
}

static void log_open(struct monitor *m)
{
    if (m->log_fd >= 0)
        close(m->log_fd);
    m->log_fd = open(m->log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

/*
 * Append to the log; past the size limit rename it to .1 (the previous .1
 * goes) and start a new one. During an upgrade two monitors share one log:
 * if the path no longer names our file, the other one rotated, so reopen.
 */
static void log_write(struct monitor *m, const char *buf, size_t len)
{
    if (m->log_fd < 0)
        log_open(m);
    if (m->log_fd < 0)
        return;
    while (len > 0) {
        ssize_t n = write(m->log_fd, buf, len);
        if (n <= 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
    struct stat ours, now;
    if (fstat(m->log_fd, &ours) < 0)
        return;
    if (stat(m->log_path, &now) < 0 || now.st_ino != ours.st_ino || now.st_dev != ours.st_dev) {
        log_open(m);
        return;
    }
    if (ours.st_size >= m->log_max_bytes) {
        cleanup_free char *old = hd_xasprintf("%s.1", m->log_path);
        rename(m->log_path, old);
        log_open(m);
    }
}

/* Move what is in the pipe now to the log. Returns false at EOF. */
static bool log_drain(struct monitor *m, int fd)
{
    char buf[8192];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n > 0) {
            log_write(m, buf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        return n < 0 && errno == EAGAIN;
    }
}

/* Fallback figures from /proc when the backend has none (no cgroup yet). */
static void stats_from_proc(pid_t pid, struct hd_stats *s)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    if (n <= 0)
        return;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return;
    unsigned long utime = 0, stime = 0;
    long rss = 0;
    /* fields after ')': state(3) ... utime(14) stime(15) ... rss(24) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d %*u %*u %ld", &utime,
               &stime, &rss) == 3) {
        long hz = sysconf(_SC_CLK_TCK);
        s->cpu_usage_ns = (uint64_t)(utime + stime) * (1000000000ULL / (uint64_t)(hz > 0 ? hz : 100));
        s->memory_bytes = (uint64_t)rss * (uint64_t)sysconf(_SC_PAGESIZE);
        s->pids = 1;
    }
}

/* One request per connection: "signal N", "stats" or "secrets NAME" (rewrite that secret's files). */
static void monitor_serve(struct monitor *m, int listen_fd)
{
    cleanup_close int c = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
        return;
    struct timeval tv = {.tv_sec = 1};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    char req[128];
    ssize_t n = read(c, req, sizeof(req) - 1);
    if (n <= 0)
        return;
    req[n] = '\0';
    int sig;
    if (sscanf(req, "signal %d", &sig) == 1 && sig > 0 && sig < 65) {
        hd_error_t err = NULL;
        if (m->workload->pid <= 0 || hd_workload_signal(m->workload, sig, &err) < 0) {
            dprintf(c, "err %s\n", err ? hd_error_text(err) : "not running");
            hd_error_free(&err);
        } else
            dprintf(c, "ok\n");
    } else if (strncmp(req, "stats", 5) == 0) {
        struct hd_stats s = {0};
        hd_error_t err = NULL;
        if (m->workload->backend->stats(m->workload, &s, &err) < 0 && m->workload->pid > 0)
            stats_from_proc(m->workload->pid, &s);
        hd_error_free(&err);
        dprintf(c, "ok %llu %llu %llu\n", (unsigned long long)s.cpu_usage_ns, (unsigned long long)s.memory_bytes,
                (unsigned long long)s.pids);
    } else if (strncmp(req, "secrets ", 8) == 0) {
        char *name = req + 8;
        name[strcspn(name, "\n")] = '\0';
        hd_error_t err = NULL;
        if (hd_workload_refresh_secrets(m->workload, name, &err) < 0) {
            dprintf(c, "err %s\n", hd_error_text(err));
            hd_error_free(&err);
        } else
            dprintf(c, "ok\n");
    } else
        dprintf(c, "err unknown request\n");
}

static int monitor_listen(struct monitor *m)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    /* Through /proc/self/fd so that a long state dir path still fits sun_path. */
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof(addr.sun_path), "/proc/self/fd/%d/" HD_MONITOR_CTL_SOCKET, m->dirfd);
    unlinkat(m->dirfd, HD_MONITOR_CTL_SOCKET, 0);
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 8) < 0) {
        close(fd);
        return -1;
    }
    fchmodat(m->dirfd, HD_MONITOR_CTL_SOCKET, 0600, 0);
    return fd;
}

static int monitor_load(struct monitor *m, struct hd_spec *spec, hd_error_t *err)
{
    cleanup_free char *path = hd_xasprintf("%s/" HD_MONITOR_SPEC_FILE, m->dir);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (root == NULL)
        return hd_error_set(err, 0, "%s: %s", path, jerr.text);
    json_t *s = json_object_get(root, "spec");
    const char *log = json_string_value(json_object_get(root, "log"));
    char *text = s ? json_dumps(s, JSON_COMPACT) : NULL;
    int r = 0;
    if (text == NULL || log == NULL)
        r = hd_error_set(err, 0, "%s: spec or log missing", path);
    else
        r = hd_spec_parse_json(spec, text, strlen(text), "spec", err);
    if (r == 0) {
        m->log_path = hd_xstrdup(log);
        m->log_max_bytes = json_integer_value(json_object_get(root, "log_max_bytes"));
        if (m->log_max_bytes <= 0)
            m->log_max_bytes = 1 << 20;
    }
    free(text);
    json_decref(root);
    return r;
}

static int monitor_main(const char *dir, struct hd_vm_pooled *pooled)
{
    prctl(PR_SET_NAME, "hedge-monitor");
    struct monitor m = {.dirfd = -1, .log_fd = -1, .dir = hd_xstrdup(dir)};
    hd_error_t err = NULL;
    cleanup_spec struct hd_spec *spec = hd_spec_new();
    int out[2] = {-1, -1}, errp[2] = {-1, -1};

    m.dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (m.dirfd < 0) {
        hd_vm_pooled_destroy(pooled);
        hd_error_sys(&err, "monitor: %s", dir);
        monitor_report("err %d %s\n", HD_EXIT_HEDGE, hd_error_text(err));
        return 1;
    }
    /* fd 4: DIR/monitor.lock, locked by hedged before it forked us; it is our lock now
     * (same open file). CLOEXEC, so that a workload never holds it. */
    cleanup_close int lock = HD_MONITOR_LOCK_FD;
    if (fcntl(lock, F_SETFD, FD_CLOEXEC) < 0 || flock(lock, LOCK_EX | LOCK_NB) < 0) {
        hd_vm_pooled_destroy(pooled);
        hd_error_sys(&err, "monitor: lock %s/" HD_MONITOR_LOCK_FILE, dir);
        return monitor_start_failed(&m, &err);
    }
    if (monitor_load(&m, spec, &err) < 0) {
        hd_vm_pooled_destroy(pooled);
        return monitor_start_failed(&m, &err);
    }

    /* Signals to the monitor go to the workload; we read them from a signalfd. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    cleanup_close int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    cleanup_close int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (sfd < 0 || devnull < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
        hd_vm_pooled_destroy(pooled);
        hd_error_sys(&err, "monitor: set up");
        return monitor_start_failed(&m, &err);
    }
    /* the workload owns the pool's clone from here on, used or not */
    struct hd_run_options opts = {.set_stdio = true, .stdio = {devnull, out[1], errp[1]}, .vm_pooled = pooled};
    if (hd_workload_create(spec, &opts, &m.workload, &err) < 0)
        return monitor_start_failed(&m, &err);
    if (hd_workload_start(m.workload, &err) < 0) {
        hd_workload_destroy(m.workload);
        return monitor_start_failed(&m, &err);
    }
    close(out[1]);
    close(errp[1]);
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    fcntl(errp[0], F_SETFL, O_NONBLOCK);
    pid_t pid = m.workload->pid;
    cleanup_close int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    int listen_fd = monitor_listen(&m);
    json_t *state = json_pack("{s:i,s:i,s:I,s:I,s:s}", "monitor_pid", (int)getpid(), "pid", (int)pid, "started_at",
                              (json_int_t)unix_ms(), "pid_start", (json_int_t)hd_proc_start_time(pid), "run_dir",
                              m.workload->run_dir);
    if (m.workload->vm_boot[0]) /* hedge ps: cold, snapshot or pool */
        json_object_set_new(state, "vm_boot", json_string(m.workload->vm_boot));
    if (m.workload->secrets_dir) /* for hedged, which unmounts it if this monitor is killed */
        json_object_set_new(state, "secrets_dir", json_string(m.workload->secrets_dir));
    monitor_write_json(&m, HD_MONITOR_STATE_FILE, state);
    monitor_report("ok %d\n", (int)pid);

    bool out_open = true, err_open = true;
    for (;;) {
        struct pollfd fds[5] = {
            {.fd = pidfd, .events = POLLIN},
            {.fd = out_open ? out[0] : -1, .events = POLLIN},
            {.fd = err_open ? errp[0] : -1, .events = POLLIN},
            {.fd = sfd, .events = POLLIN},
            {.fd = listen_fd, .events = POLLIN},
        };
        if (poll(fds, 5, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (fds[1].revents)
            out_open = log_drain(&m, out[0]);
        if (fds[2].revents)
            err_open = log_drain(&m, errp[0]);
        if (fds[3].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                if (si.ssi_signo == SIGCHLD)
                    continue;
                hd_error_t ignored = NULL;
                hd_workload_signal(m.workload, (int)si.ssi_signo, &ignored);
                hd_error_free(&ignored);
            }
        }
        if (fds[4].revents & POLLIN)
            monitor_serve(&m, listen_fd);
        if (pidfd < 0 || (fds[0].revents & POLLIN))
            break;
    }
    /* The workload is gone; what it wrote last is still in the pipes. */
    log_drain(&m, out[0]);
    log_drain(&m, errp[0]);
    struct hd_exit ex = {.code = HD_EXIT_HEDGE, .status = -1};
    hd_error_t werr = NULL;
    if (hd_workload_wait(m.workload, &ex, &werr) < 0)
        hd_error_free(&werr);
    hd_workload_destroy(m.workload);
    monitor_write_json(&m, HD_MONITOR_EXIT_FILE,
                       json_pack("{s:i,s:i,s:i,s:b,s:I}", "code", ex.code, "status", ex.status, "signal", ex.signal,
                                 "oom_killed", ex.oom_killed, "finished_at", (json_int_t)unix_ms()));
    if (listen_fd >= 0) {
        unlinkat(m.dirfd, HD_MONITOR_CTL_SOCKET, 0);
        close(listen_fd);
    }
    close(out[0]);
    close(errp[0]);
    if (m.log_fd >= 0)
        close(m.log_fd);
    close(m.dirfd);
    free(m.dir);
    free(m.log_path);
    return 0;
}

/*
 * Pool mode (`hedge-monitor --vm-pool RAM_BYTES VCPUS ACCEL TEMPLATE_KEY`, hedged's daemon/vm_pool.c): fd 3
 * is a SOCK_SEQPACKET socket to hedged. Say "starting ID PID" (the clone's name, which names its cgroup and
 * dir, and this process), start a restored clone of the template of that shape (runtime/vm/pool.c), say
 * "ready QEMU_PID" (or "err MESSAGE" and exit), then wait for "take INSTANCE_DIR" with the start report's
 * write end and the instance lock (SCM_RIGHTS): from then on this process is that instance's monitor, and
 * the workload takes the clone. The end of the socket (hedged stopped or shrinks its pool), or QEMU ending,
 * ends the member: QEMU is killed, its cgroup and files removed.
 */
static int pool_member(int argc, char **argv)
{
    prctl(PR_SET_NAME, "hedge-vm-pool");
    char *end = NULL;
    long long ram = argc == 6 ? strtoll(argv[2], &end, 10) : 0;
    int vcpus = argc == 6 ? atoi(argv[3]) : 0;
    if (argc != 6 || *end || ram <= 0 || vcpus <= 0) {
        fprintf(stderr, "usage: hedge-monitor --vm-pool RAM_BYTES VCPUS ACCEL TEMPLATE_KEY (started by hedged)\n");
        return 2;
    }
    /* the socket leaves fd 3 (and 4) free for the instance's start report and lock */
    int sock = fcntl(3, F_DUPFD_CLOEXEC, 10);
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull >= 0 && devnull < 10) { /* it may be fd 4 itself */
        int high = fcntl(devnull, F_DUPFD_CLOEXEC, 10);
        close(devnull);
        devnull = high;
    }
    if (sock < 0 || devnull < 0 || dup3(devnull, 3, O_CLOEXEC) < 0 || dup3(devnull, 4, O_CLOEXEC) < 0)
        return 1; /* 3 and 4 stay taken until the instance's fds replace them: nothing of the clone lands there */
    close(devnull);
    signal(SIGPIPE, SIG_IGN);
    /* SIGTERM, SIGINT, SIGHUP end a waiting member as the socket's end does (its clone goes, nothing stays);
     * after a take monitor_main blocks them too and reads them from a signalfd of its own */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    hd_error_t err = NULL;
    struct hd_vm_pooled *p = NULL;
    char msg[PATH_MAX + 64];
    /* first the clone's name (its cgroup and dir follow from it): if this process dies unseen, hedged removes
     * what it left */
    char id[16];
    hd_random_id(id, sizeof(id));
    int n = snprintf(msg, sizeof(msg), "starting %s %d", id, (int)getpid());
    if (sfd < 0 || n >= (int)sizeof(msg) || send(sock, msg, (size_t)n, MSG_NOSIGNAL) < 0)
        return 1;
    if (hd_vm_pooled_start(id, hd_state_dir(), ram, vcpus, argv[4], argv[5], &p, &err) < 0) {
        n = snprintf(msg, sizeof(msg), "err %s", hd_error_text(err));
        hd_error_free(&err);
        (void)!send(sock, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1, MSG_NOSIGNAL);
        return 1;
    }
    n = snprintf(msg, sizeof(msg), "ready %d", (int)hd_vm_pooled_qemu_pid(p));
    if (send(sock, msg, (size_t)n, MSG_NOSIGNAL) < 0) {
        hd_vm_pooled_destroy(p);
        return 1;
    }
    for (;;) {
        struct pollfd fds[3] = {{.fd = sock, .events = POLLIN},
                                {.fd = hd_vm_pooled_qemu_pidfd(p), .events = POLLIN},
                                {.fd = sfd, .events = POLLIN}};
        if (poll(fds, 3, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (fds[1].revents) { /* QEMU ended while waiting */
            hd_log(HD_LOG_WARN, "vm-pool", "QEMU of the pool's clone (template %.12s) ended", hd_vm_pooled_key(p));
            break;
        }
        if (fds[2].revents) /* told to go */
            break;
        if (!fds[0].revents)
            continue;
        int fds_in[2];
        size_t nfds = 0;
        ssize_t got = hd_recv_fds(sock, msg, sizeof(msg) - 1, fds_in, 2, &nfds, 0);
        if (got <= 0)
            break; /* hedged closed it: go */
        msg[got] = '\0';
        if (strncmp(msg, "take /", 6) != 0 || nfds != 2) {
            hd_log(HD_LOG_WARN, "vm-pool", "bad request from hedged (%zu descriptors): %.60s", nfds, msg);
            for (size_t i = 0; i < nfds; i++)
                close(fds_in[i]);
            break;
        }
        close(sock);
        /* fd 3: the start report, fd 4: the instance lock, as a monitor hedged forks gets them */
        if (dup2(fds_in[0], HD_MONITOR_REPORT_FD) < 0 || dup2(fds_in[1], HD_MONITOR_LOCK_FD) < 0) {
            hd_vm_pooled_destroy(p);
            return 1;
        }
        close(fds_in[0]);
        close(fds_in[1]);
        close(sfd);
        fcntl(HD_MONITOR_REPORT_FD, F_SETFD, 0);
        prctl(PR_SET_NAME, "hedge-monitor");
        return monitor_main(msg + 5, p);
    }
    hd_vm_pooled_destroy(p);
    close(sfd);
    close(sock);
    return 0;
}

int main(int argc, char **argv)
{
    hd_log_init("hedge-monitor", NULL);
    if (argc >= 2 && strcmp(argv[1], "--vm-pool") == 0)
        return pool_member(argc, argv);
    if (argc != 2 || argv[1][0] != '/') {
        fprintf(stderr, "usage: hedge-monitor INSTANCE_DIR (started by hedged, with the start report on fd 3)\n");
        return 2;
    }
    return monitor_main(argv[1], NULL);
}
