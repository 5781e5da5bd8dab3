/*
 * vm_pool.c - hedged's warm pool of VM clones (issue 16, docs/vm.md#the-warm-pool).
 *
 * For each template in <state>/vm/templates (`hedge vm template build`), hedged keeps `vm_pool` clones
 * (default 1; 0 turns the pool off) restored and running, their guests waiting for CONFIG. Each is a
 * hedge-monitor in pool mode (monitor.c's pool_member, runtime/vm/pool.c), detached like every monitor
 * and tied to hedged by a SOCK_SEQPACKET socket: "ready QEMU_PID" when its clone runs, or "err ...".
 *
 * A vm deployment whose guest has a template's shape (RAM and vCPUs from its resources, no bridge network,
 * no host devices, boot not cold) takes a ready member: hd_instance_spawn hands it the instance ("take
 * DIR", the start report's write end and the instance lock) instead of forking a new monitor, and the
 * member becomes that instance's monitor. The workload checks that the clone is of the template it
 * would restore (else it restores or boots as usual, and says so). The pool is refilled at once; the
 * templates dir is scanned every few seconds. A member that fails (a stale template: another kernel)
 * is retried with a back-off, and its error is logged once.
 *
 * When hedged ends (even by SIGKILL) the sockets close and the waiting members kill their QEMU, remove
 * its cgroup and exit; taken members are monitors and live on. Each waiting clone's QEMU is in a
 * cgroup of its own (hedge/vm-pool-<id>) limited like a guest of that size, and /metrics shows the
 * pool's members and their QEMUs' resident memory.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/log.h"
#include "base/loop.h"
#include "base/fdpass.h"
#include "base/util.h"
#include "cgroup/cgroup.h"
#include "daemon/daemon.h"
#include "runtime/vm/vm.h"
#include "spec/spec.h"

#define POOL_SCAN_SECONDS 5.0
#define POOL_RETRY_MIN_MS 5000
#define POOL_RETRY_MAX_MS 300000
#define POOL_MAX_SHAPES 16
#define POOL_STOP_WAIT_MS 5000

struct pool_shape { /* one template */
    char key[65];
    int64_t ram_bytes;
    int vcpus;
    char accel[8];
    bool seen;            /* found by the last scan */
    int failures;         /* members that failed in a row */
    int64_t retry_at_ms;  /* no new member before */
    char last_error[256]; /* logged once */
};

struct pool_member {
    struct hd_vm_pool *pool;
    int sock;
    struct hd_watch *watch;
    char key[65];
    char clone_id[16]; /* from "starting ID PID": its cgroup is vm-pool-ID */
    char *clone_dir;
    pid_t pid; /* the member, while its socket is open (0: not said yet) */
    bool ready;
    pid_t qemu_pid;
    struct pool_member *next;
};

struct hd_vm_pool {
    struct hd_loop *loop;
    const struct hd_daemon_config *cfg;
    struct pool_shape shapes[POOL_MAX_SHAPES];
    size_t n_shapes;
    struct pool_member *members;
    struct hd_timer *timer;
    struct hd_defer *fill; /* a refill is due */
    uint64_t taken;        /* deployments that started from the pool */
};

static void pool_fill_soon(struct hd_vm_pool *pool);

static int64_t now_ms(void)
{
    return (int64_t)(hd_now_ns() / 1000000u);
}

static struct pool_shape *shape_find(struct hd_vm_pool *pool, const char *key)
{
    for (size_t i = 0; i < pool->n_shapes; i++)
        if (strcmp(pool->shapes[i].key, key) == 0)
            return &pool->shapes[i];
    return NULL;
}

/*
 * A member that ended removes its clone's cgroup and dir itself, the dir last; a dir still there means it
 * died on the way (SIGKILL): what it left goes here (the cgroup's remaining processes are killed).
 */
static void member_sweep(struct pool_member *m)
{
    struct stat st;
    if (m->clone_dir == NULL || m->clone_id[0] == '\0' || stat(m->clone_dir, &st) < 0)
        return;
    hd_error_t err = NULL;
    cleanup_free char *name = hd_xasprintf("vm-pool-%s", m->clone_id);
    struct hd_cgroup *cg = NULL;
    if (hd_cgroup_open(name, &cg, &err) < 0 || hd_cgroup_destroy(cg, &err) < 0 || hd_rm_rf(m->clone_dir, &err) < 0) {
        hd_log_error(HD_LOG_WARN, "vm-pool", &err);
        return;
    }
    hd_log(HD_LOG_INFO, "vm-pool", "removed what the pool member of clone %s left", m->clone_id);
}

static void member_free(struct hd_vm_pool *pool, struct pool_member *m)
{
    for (struct pool_member **p = &pool->members; *p; p = &(*p)->next)
        if (*p == m) {
            *p = m->next;
            break;
        }
    if (m->watch)
        hd_loop_unwatch(pool->loop, m->watch);
    if (m->sock >= 0)
        close(m->sock); /* the member kills its clone and exits */
    free(m->clone_dir);
    free(m);
}

static void member_failed(struct hd_vm_pool *pool, struct pool_member *m, const char *why)
{
    struct pool_shape *shape = shape_find(pool, m->key);
    if (shape) {
        shape->failures++;
        int64_t backoff = POOL_RETRY_MIN_MS << (shape->failures < 6 ? shape->failures - 1 : 6);
        shape->retry_at_ms = now_ms() + (backoff < POOL_RETRY_MAX_MS ? backoff : POOL_RETRY_MAX_MS);
        if (strncmp(shape->last_error, why, sizeof(shape->last_error) - 1) != 0) {
            hd_log(HD_LOG_WARN, "vm-pool", "template %.12s: %s (retried with a back-off; `hedge vm template ls`)",
                   m->key, why);
            snprintf(shape->last_error, sizeof(shape->last_error), "%s", why);
        }
    }
    member_free(pool, m);
}

/* "starting ID PID", the member's first message: its clone's name (the clone's cgroup is vm-pool-ID, its dir
 * hd_vm_pooled_dir(ID)) and its pid. */
static bool member_starting(struct pool_member *m, const char *msg)
{
    char id[16];
    int pid = 0, pos = 0;
    if (sscanf(msg, "starting %15s %d%n", id, &pid, &pos) != 2 || pos == 0)
        return false;
    m->pid = pid > 1 ? pid : 0;
    if (id[0] && strspn(id, "0123456789abcdef") == strlen(id)) { /* a name, never a path */
        snprintf(m->clone_id, sizeof(m->clone_id), "%s", id);
        free(m->clone_dir);
        m->clone_dir = hd_vm_pooled_dir(id);
    }
    return true;
}

static void on_member(struct hd_loop *loop, int fd, uint32_t events, void *data)
{
    struct pool_member *m = data;
    struct hd_vm_pool *pool = m->pool;
    char msg[PATH_MAX + 64];
    ssize_t n = recv(fd, msg, sizeof(msg) - 1, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) { /* the member ended: its clone's QEMU died, or it failed before saying why */
        member_sweep(m);
        member_failed(pool, m, m->ready ? "a waiting clone ended" : "the pool member ended before its clone ran");
        pool_fill_soon(pool);
        return;
    }
    msg[n] = '\0';
    if (member_starting(m, msg))
        return;
    int qemu = 0, pos = 0;
    /* "ready QEMU_PID": a clone of the template hedged named (the member refuses any other) runs */
    if (sscanf(msg, "ready %d%n", &qemu, &pos) == 1 && pos > 0) {
        m->ready = true;
        m->qemu_pid = qemu;
        struct pool_shape *shape = shape_find(pool, m->key);
        if (shape) {
            shape->failures = 0;
            shape->last_error[0] = '\0';
        }
        hd_log(HD_LOG_DEBUG, "vm-pool", "template %.12s: a clone is ready (QEMU %d)", m->key, qemu);
        return;
    }
    member_failed(pool, m, strncmp(msg, "err ", 4) == 0 ? msg + 4 : msg);
}

/* A member for shape: hedge-monitor --vm-pool, detached like every monitor (instance.c). */
static void member_spawn(struct hd_vm_pool *pool, struct pool_shape *shape)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        hd_log(HD_LOG_WARN, "vm-pool", "socketpair: %s", strerror(errno));
        return;
    }
    char ram[24], vcpus[12];
    snprintf(ram, sizeof(ram), "%lld", (long long)shape->ram_bytes);
    snprintf(vcpus, sizeof(vcpus), "%d", shape->vcpus);
    const char *argv[] = {"hedge-monitor", "--vm-pool", ram, vcpus, shape->accel, shape->key, NULL};
    hd_error_t err = NULL;
    int r = hd_instance_exec_detached(pool->cfg, argv, sv[1], -1, &err);
    close(sv[1]);
    if (r < 0) {
        hd_log_error(HD_LOG_WARN, "vm-pool", &err);
        close(sv[0]);
        return;
    }
    struct pool_member *m = hd_xcalloc(1, sizeof(*m));
    m->pool = pool;
    m->sock = sv[0];
    snprintf(m->key, sizeof(m->key), "%s", shape->key);
    m->next = pool->members;
    pool->members = m;
    m->watch = hd_loop_watch(pool->loop, m->sock, EPOLLIN, on_member, m, &err);
    if (m->watch == NULL) { /* never heard: it goes at once (the end of its socket ends it) */
        hd_log_error(HD_LOG_WARN, "vm-pool", &err);
        member_free(pool, m);
    }
}

/* The templates on disk, from their manifests (the member verifies the template itself). */
static void pool_scan(struct hd_vm_pool *pool)
{
    for (size_t i = 0; i < pool->n_shapes; i++)
        pool->shapes[i].seen = false;
    cleanup_free char *root = hd_xasprintf("%s/vm/templates", pool->cfg->state_dir);
    DIR *d = opendir(root);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (strlen(e->d_name) != 64)
            continue;
        cleanup_free char *path = hd_xasprintf("%s/%s/manifest.json", root, e->d_name);
        json_t *man = json_load_file(path, 0, NULL);
        const char *accel = json_string_value(json_object_get(man, "accel"));
        json_int_t ram = json_integer_value(json_object_get(man, "ram_bytes"));
        json_int_t vcpus = json_integer_value(json_object_get(man, "vcpus"));
        struct pool_shape *shape = shape_find(pool, e->d_name);
        if (man && accel && strlen(accel) < sizeof(shape->accel) && ram > 0 && vcpus > 0) {
            if (shape == NULL && pool->n_shapes < POOL_MAX_SHAPES) {
                shape = &pool->shapes[pool->n_shapes++];
                memset(shape, 0, sizeof(*shape));
                memcpy(shape->key, e->d_name, 64); /* the name is 64 hex digits (checked above) */
                shape->key[64] = '\0';
                shape->ram_bytes = ram;
                shape->vcpus = (int)vcpus;
                snprintf(shape->accel, sizeof(shape->accel), "%s", accel);
            }
            if (shape)
                shape->seen = true;
        }
        json_decref(man);
    }
    if (d)
        closedir(d);
    /* templates removed (or replaced): their members go */
    for (size_t i = 0; i < pool->n_shapes;) {
        if (pool->shapes[i].seen) {
            i++;
            continue;
        }
        for (struct pool_member *m = pool->members, *next; m; m = next) {
            next = m->next;
            if (strcmp(m->key, pool->shapes[i].key) == 0)
                member_free(pool, m);
        }
        pool->shapes[i] = pool->shapes[--pool->n_shapes];
    }
}

static void pool_fill(struct hd_vm_pool *pool)
{
    int64_t now = now_ms();
    for (size_t i = 0; i < pool->n_shapes; i++) {
        struct pool_shape *shape = &pool->shapes[i];
        if (shape->retry_at_ms > now)
            continue;
        int have = 0;
        for (struct pool_member *m = pool->members; m; m = m->next)
            have += strcmp(m->key, shape->key) == 0;
        for (; have < pool->cfg->vm_pool; have++)
            member_spawn(pool, shape);
    }
}

static void on_fill(struct hd_loop *loop, void *data)
{
    struct hd_vm_pool *pool = data;
    pool->fill = NULL;
    pool_fill(pool);
}

static void pool_fill_soon(struct hd_vm_pool *pool)
{
    if (pool->fill == NULL)
        pool->fill = hd_loop_defer(pool->loop, on_fill, pool);
}

static void on_scan(struct hd_loop *loop, void *data)
{
    struct hd_vm_pool *pool = data;
    pool_scan(pool);
    pool_fill(pool);
    pool->timer = hd_loop_timer(loop, POOL_SCAN_SECONDS, on_scan, pool);
}

struct hd_vm_pool *hd_vm_pool_new(struct hd_loop *loop, const struct hd_daemon_config *cfg)
{
    if (cfg->vm_pool <= 0)
        return NULL;
    struct hd_vm_pool *pool = hd_xcalloc(1, sizeof(*pool));
    pool->loop = loop;
    pool->cfg = cfg;
    pool->timer = hd_loop_timer(loop, 0, on_scan, pool);
    return pool;
}

void hd_vm_pool_free(struct hd_vm_pool *pool)
{
    if (pool == NULL)
        return;
    if (pool->timer)
        hd_loop_cancel(pool->loop, pool->timer);
    if (pool->fill)
        hd_loop_cancel_defer(pool->loop, pool->fill);
    /* Tell every member to go (the end of its socket), then wait, bounded, until each has killed its
     * clone and exited (its end closes): hedged leaves no QEMU, cgroup or file of the pool behind. */
    size_t n = 0;
    for (struct pool_member *m = pool->members; m; m = m->next) {
        char msg[PATH_MAX + 64]; /* what the loop has not read yet: "starting" (the pid) and "ready" */
        ssize_t got;
        while ((got = recv(m->sock, msg, sizeof(msg) - 1, MSG_DONTWAIT)) > 0) {
            msg[got] = '\0';
            m->ready |= !member_starting(m, msg) && strncmp(msg, "ready ", 6) == 0;
        }
        n += shutdown(m->sock, SHUT_WR) == 0;
        if (!m->ready && m->pid > 0) /* busy starting its clone, it reads the socket only after: stop it now */
            kill(m->pid, SIGKILL);
    }
    int64_t deadline = now_ms() + POOL_STOP_WAIT_MS;
    while (n > 0 && now_ms() < deadline) {
        struct pollfd fds[64];
        size_t k = 0;
        for (struct pool_member *m = pool->members; m && k < ARRAY_SIZE(fds); m = m->next)
            if (m->sock >= 0)
                fds[k++] = (struct pollfd){.fd = m->sock, .events = POLLIN};
        if (k == 0 || poll(fds, k, (int)(deadline - now_ms())) <= 0)
            break;
        for (size_t i = 0; i < k; i++) {
            char buf[256];
            if (fds[i].revents && recv(fds[i].fd, buf, sizeof(buf), MSG_DONTWAIT) <= 0)
                for (struct pool_member *m = pool->members; m; m = m->next)
                    if (m->sock == fds[i].fd) {
                        close(m->sock);
                        m->sock = -1;
                        n--;
                    }
        }
    }
    /* one still busy starting its clone (it reads the socket only once the clone runs) is killed, its QEMU
     * with it (PDEATHSIG); its socket is still open, so the pid is still the member's */
    bool killed = false;
    for (struct pool_member *m = pool->members; m; m = m->next)
        if (m->sock >= 0 && m->pid > 0)
            killed |= kill(m->pid, SIGKILL) == 0;
    for (struct pool_member *m = pool->members; killed && m; m = m->next)
        if (m->sock >= 0) {
            struct pollfd pfd = {.fd = m->sock, .events = POLLIN};
            char buf[256];
            while (poll(&pfd, 1, 2000) > 0 && recv(m->sock, buf, sizeof(buf), MSG_DONTWAIT) > 0)
                ;
        }
    while (pool->members) {
        member_sweep(pool->members); /* a member killed above, or one that died: what it left */
        member_free(pool, pool->members);
    }
    free(pool);
}

/* Does a deployment of spec start from shape's template? (The workload checks it again, exactly.) */
static bool shape_fits(const struct pool_shape *shape, const struct hd_spec *spec)
{
    if (spec->isolation != HD_ISOLATION_VM || spec->network == HD_NET_BRIDGE || spec->n_devices > 0)
        return false;
    if (spec->vm_boot && strcmp(spec->vm_boot, "cold") == 0)
        return false;
    if (spec->vm_accel && strcmp(spec->vm_accel, "auto") != 0 && strcmp(spec->vm_accel, shape->accel) != 0)
        return false;
    return hd_spec_vm_ram(&spec->resources) == shape->ram_bytes && hd_spec_vm_vcpus(&spec->resources) == shape->vcpus;
}

bool hd_vm_pool_take(struct hd_vm_pool *pool, const char *spec_json, const char *dir, int report_fd, int lock_fd)
{
    if (pool == NULL || pool->members == NULL)
        return false;
    cleanup_spec struct hd_spec *spec = hd_spec_new();
    hd_error_t err = NULL;
    if (hd_spec_parse_json(spec, spec_json, strlen(spec_json), "spec", &err) < 0) {
        hd_error_free(&err);
        return false;
    }
    for (struct pool_member *m = pool->members; m; m = m->next) {
        struct pool_shape *shape = shape_find(pool, m->key);
        if (!m->ready || shape == NULL || !shape_fits(shape, spec))
            continue;
        cleanup_free char *msg = hd_xasprintf("take %s", dir);
        int fds[2] = {report_fd, lock_fd};
        bool sent = hd_send_fds(m->sock, msg, strlen(msg), fds, 2) == (ssize_t)strlen(msg);
        member_free(pool, m); /* taken (it is a monitor now), or gone */
        pool_fill_soon(pool);
        if (sent)
            pool->taken++;
        return sent;
    }
    return false;
}

/* Prometheus text: the pool's members and their QEMUs' resident memory. */
char *hd_vm_pool_metrics_text(struct hd_vm_pool *pool)
{
    if (pool == NULL)
        return hd_xstrdup("");
    long ready = 0, starting = 0;
    long long rss = 0;
    for (struct pool_member *m = pool->members; m; m = m->next) {
        if (!m->ready) {
            starting++;
            continue;
        }
        ready++;
        cleanup_free char *path = hd_xasprintf("/proc/%d/statm", (int)m->qemu_pid);
        cleanup_free char *text = NULL;
        size_t len = 0;
        hd_error_t ignored = NULL;
        long long size = 0, resident = 0;
        if (hd_read_file(path, &text, &len, &ignored) == 0 && sscanf(text, "%lld %lld", &size, &resident) == 2)
            rss += resident * sysconf(_SC_PAGESIZE);
        hd_error_free(&ignored);
    }
    return hd_xasprintf("# HELP hedge_vm_pool_clones Restored VM clones waiting in the warm pool.\n"
                        "# TYPE hedge_vm_pool_clones gauge\n"
                        "hedge_vm_pool_clones{state=\"ready\"} %ld\n"
                        "hedge_vm_pool_clones{state=\"starting\"} %ld\n"
                        "# HELP hedge_vm_pool_rss_bytes Resident memory of the waiting clones' QEMU processes.\n"
                        "# TYPE hedge_vm_pool_rss_bytes gauge\n"
                        "hedge_vm_pool_rss_bytes %lld\n"
                        "# HELP hedge_vm_pool_taken_total Deployments started from the warm pool.\n"
                        "# TYPE hedge_vm_pool_taken_total counter\n"
                        "hedge_vm_pool_taken_total %llu\n",
                        ready, starting, rss, (unsigned long long)pool->taken);
}
