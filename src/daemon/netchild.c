/*
 * netchild.c - hedged's side of the network child: the embedded MQTT broker
 * and the cloud uplink run in one child process without privileges
 * (netchild_main.c; why one process: docs/security.md, "Privilege
 * separation"). This file starts it, talks to it over the control socket
 * (netchild_proto.h), keeps what it must get again after a restart, and
 * restarts it when it dies.
 *
 * The child is untrusted: every message it sends is checked (netchild_proto.c),
 * numbers are parsed strictly, its uplink metrics must be Prometheus lines of
 * the uplink's own names, its status must be a JSON object. A malformed
 * message gets it killed and restarted. hedged never waits on it for long:
 * requests (stats, the sync after a user change) give up after a short time.
 *
 * Workload users (workload_creds.c) live here too, in a mirror: each change is
 * sent at once, and the whole mirror is sent again to every new child, since
 * the broker keeps run-time users in memory only. Retained messages and
 * sessions survive a restart in the broker's own store, the uplink's messages
 * in its spool.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/log.h"
#include "base/loop.h"
#include "base/util.h"
#include "daemon/daemon.h"
#include "daemon/netchild_proto.h"
#include "mqtt/topic.h"

#define NETCHILD_READY_TIMEOUT_MS 15000
#define NETCHILD_REQUEST_TIMEOUT_MS 1000
#define NETCHILD_BACKOFF_MIN 0.1
#define NETCHILD_BACKOFF_MAX 10.0
#define NETCHILD_STABLE_MS 30000  /* a child that lived this long restarts at the minimum backoff */
#define NETCHILD_EVENTS_HELD 1000 /* fleet events held while the child restarts */
#define NETCHILD_LOGS_HELD 64     /* forwarded log batches (each at most ~16 KiB) held meanwhile */

struct netchild_rule {
    char *access, *filter;
};

struct netchild_user {
    char *name;
    char *password; /* NULL: rules only */
    bool internal;
    struct netchild_rule *rules;
    size_t n_rules;
};

struct hd_netchild {
    struct hd_loop *loop;
    char **argv; /* hedged's own argv: the child parses the same flags and config */
    bool broker, uplink;
    pid_t pid; /* 0: none */
    int fd;    /* control socket, -1: none */
    struct hd_watch *watch;
    bool ready;
    int port;
    struct netchild_user *users;
    size_t n_users;
    uint64_t crashes, restarts;
    double backoff;
    struct hd_timer *restart_timer;
    int64_t started_ms;
    bool reload; /* the current child was asked to reload: its exit is no crash */
    bool stopping;
    bool serve; /* hd_netchild_serve was called: each child gets SERVE after the users */
    uint64_t ping_seq, pong_seq;
    bool have_stats;
    struct hd_broker_stats stats;
    char *uplink_metrics;
    json_t *uplink_status;
    hd_netchild_fleet_fn fleet_fn;
    hd_netchild_job_fn fleet_job_fn;
    void *fleet_ctx;
    char *fleet_report;  /* the last report, sent again to a restarted child */
    char **fleet_events; /* events waiting for a ready child: a ring of NETCHILD_EVENTS_HELD */
    size_t events_first, events_count;
    uint64_t events_dropped;
    char **fleet_logs; /* log batches waiting for a ready child: a ring of NETCHILD_LOGS_HELD {name, batch} pairs */
    size_t logs_first, logs_count;
    uint64_t logs_dropped;
};

static void netchild_kill(struct hd_netchild *nc, const char *why);

/* ---- the users mirror ------------------------------------------------------ */

static struct netchild_user *netchild_find(struct hd_netchild *nc, const char *name)
{
    for (size_t i = 0; i < nc->n_users; i++)
        if (strcmp(nc->users[i].name, name) == 0)
            return &nc->users[i];
    return NULL;
}

static struct netchild_user *netchild_find_or_add(struct hd_netchild *nc, const char *name)
{
    struct netchild_user *u = netchild_find(nc, name);
    if (u)
        return u;
    nc->users = hd_xrealloc(nc->users, (nc->n_users + 1) * sizeof(*nc->users));
    u = &nc->users[nc->n_users++];
    *u = (struct netchild_user){.name = hd_xstrdup(name)};
    return u;
}

static void netchild_user_free(struct netchild_user *u)
{
    free(u->name);
    if (u->password)
        explicit_bzero(u->password, strlen(u->password));
    free(u->password);
    for (size_t i = 0; i < u->n_rules; i++) {
        free(u->rules[i].access);
        free(u->rules[i].filter);
    }
    free(u->rules);
}

static bool netchild_up(struct hd_netchild *nc)
{
    return nc->fd >= 0 && nc->ready;
}

static void netchild_send(struct hd_netchild *nc, enum hd_net_type type, int n, const char *const *fields)
{
    if (!netchild_up(nc))
        return; /* the mirror goes to the next child */
    if (hd_net_send(nc->fd, type, n, fields) < 0 && errno != EPIPE && errno != ECONNRESET)
        hd_log(HD_LOG_ERROR, "netchild", "control socket: send: %s", strerror(errno));
}

static void netchild_send_user(struct hd_netchild *nc, const struct netchild_user *u)
{
    if (u->password) {
        const char *f[] = {u->name, u->password, u->internal ? "1" : "0"};
        netchild_send(nc, HD_NET_SET_USER, 3, f);
    }
    for (size_t i = 0; i < u->n_rules; i++) {
        const char *f[] = {u->name, u->rules[i].access, u->rules[i].filter};
        netchild_send(nc, HD_NET_ALLOW, 3, f);
    }
}

int hd_netchild_set_user(struct hd_netchild *nc, const char *user, const char *password, bool internal, hd_error_t *err)
{
    if (!user[0])
        return hd_error_set(err, 0, "broker user: must be non-empty");
    struct netchild_user *u = netchild_find_or_add(nc, user);
    free(u->password);
    u->password = hd_xstrdup(password);
    u->internal = internal;
    const char *f[] = {u->name, u->password, internal ? "1" : "0"};
    netchild_send(nc, HD_NET_SET_USER, 3, f);
    return 0;
}

void hd_netchild_remove_user(struct hd_netchild *nc, const char *user)
{
    struct netchild_user *u = netchild_find(nc, user);
    if (u) {
        netchild_user_free(u);
        *u = nc->users[--nc->n_users];
    }
    const char *f[] = {user};
    netchild_send(nc, HD_NET_REMOVE_USER, 1, f);
}

int hd_netchild_allow(struct hd_netchild *nc, const char *user, const char *access, const char *filter, hd_error_t *err)
{
    /* the broker's own checks (broker/acl.c), here so that the caller hears of them */
    if (strcmp(access, "read") != 0 && strcmp(access, "write") != 0 && strcmp(access, "readwrite") != 0)
        return hd_error_set(err, 0, "broker acl for %s: access '%s': expected read, write or readwrite", user, access);
    if (!hd_mqtt_filter_valid(filter))
        return hd_error_set(err, 0, "broker acl for %s: invalid topic filter '%s'", user, filter);
    struct netchild_user *u = netchild_find_or_add(nc, user);
    u->rules = hd_xrealloc(u->rules, (u->n_rules + 1) * sizeof(*u->rules));
    u->rules[u->n_rules++] = (struct netchild_rule){hd_xstrdup(access), hd_xstrdup(filter)};
    const char *f[] = {user, access, filter};
    netchild_send(nc, HD_NET_ALLOW, 3, f);
    return 0;
}

int hd_netchild_port(struct hd_netchild *nc)
{
    return nc->port;
}

/* ---- messages from the child ------------------------------------------------ */

static bool netchild_parse_u64(const char *s, uint64_t *out)
{
    if (!*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 20)
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, NULL, 10);
    if (errno)
        return false;
    *out = v;
    return true;
}

/* Uplink metrics: printable lines, each a comment or a sample of the uplink's own names. */
static bool netchild_metrics_valid(const char *text)
{
    for (const char *l = text; *l;) {
        const char *end = strchr(l, '\n');
        if (end == NULL)
            return false;
        for (const char *c = l; c < end; c++)
            if (*c < 0x20 || *c > 0x7e)
                return false;
        if (strncmp(l, "# HELP hedge_uplink_", 20) != 0 && strncmp(l, "# TYPE hedge_uplink_", 20) != 0 &&
            strncmp(l, "hedge_uplink_", 13) != 0)
            return false;
        l = end + 1;
    }
    return true;
}

/* The oldest held log batch ({name, batch}) leaves the ring: sent, or dropped for a newer one. */
static void netchild_logs_drop_first(struct hd_netchild *nc)
{
    char **b = &nc->fleet_logs[2 * nc->logs_first];
    free(b[0]);
    free(b[1]);
    b[0] = b[1] = NULL;
    nc->logs_first = (nc->logs_first + 1) % NETCHILD_LOGS_HELD;
    nc->logs_count--;
}

static void netchild_on_ready(struct hd_netchild *nc, const char *port_text)
{
    uint64_t port;
    if (!netchild_parse_u64(port_text, &port) || port > 65535)
        return netchild_kill(nc, "READY: not a port");
    nc->port = (int)port;
    nc->ready = true;
    for (size_t i = 0; i < nc->n_users; i++)
        netchild_send_user(nc, &nc->users[i]);
    if (nc->serve)
        netchild_send(nc, HD_NET_SERVE, 0, NULL); /* the child's clients waited for these */
    if (nc->fleet_report)
        hd_net_send(nc->fd, HD_NET_FLEET_REPORT, 1, (const char *const[]){nc->fleet_report});
    if (nc->events_dropped)
        hd_log(HD_LOG_WARN, "netchild", "%llu fleet events dropped while the network child was away",
               (unsigned long long)nc->events_dropped);
    nc->events_dropped = 0;
    for (; nc->events_count; nc->events_count--) {
        char **e = &nc->fleet_events[nc->events_first];
        hd_net_send(nc->fd, HD_NET_FLEET_EVENT, 1, (const char *const[]){*e});
        free(*e);
        *e = NULL;
        nc->events_first = (nc->events_first + 1) % NETCHILD_EVENTS_HELD;
    }
    if (nc->logs_dropped)
        hd_log(HD_LOG_WARN, "netchild", "%llu forwarded log batches dropped while the network child was away",
               (unsigned long long)nc->logs_dropped);
    nc->logs_dropped = 0;
    while (nc->logs_count) {
        char **b = &nc->fleet_logs[2 * nc->logs_first];
        hd_net_send(nc->fd, HD_NET_FLEET_LOG, 2, (const char *const[]){b[0], b[1]});
        netchild_logs_drop_first(nc);
    }
}

static int netchild_on_stats(struct hd_netchild *nc, const struct hd_net_msg *m)
{
    uint64_t v[9];
    for (int i = 0; i < 9; i++)
        if (!netchild_parse_u64(m->field[i], &v[i]))
            return -1;
    if (!netchild_metrics_valid(m->field[9]))
        return -1;
    json_t *status = NULL;
    if (m->field_len[10]) {
        status = json_loadb(m->field[10], m->field_len[10], JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(status)) {
            json_decref(status);
            return -1;
        }
    }
    nc->stats = (struct hd_broker_stats){.clients_connected = v[0],
                                         .clients_total = v[1],
                                         .messages_received = v[2],
                                         .messages_sent = v[3],
                                         .bytes_received = v[4],
                                         .bytes_sent = v[5],
                                         .messages_dropped = v[6],
                                         .retained_count = v[7],
                                         .subscriptions = v[8]};
    nc->have_stats = true;
    free(nc->uplink_metrics);
    nc->uplink_metrics = hd_xstrdup(m->field[9]);
    json_decref(nc->uplink_status);
    nc->uplink_status = status;
    return 0;
}

/* Read and act on one message: -1 when the child is gone or was dropped. */
static int netchild_read_one(struct hd_netchild *nc, struct hd_net_msg *m)
{
    hd_error_t err = NULL;
    int r = hd_net_recv(nc->fd, true, m, &err);
    if (r < 0 && err && err->errnum == EAGAIN) {
        hd_error_free(&err);
        return 0;
    }
    if (r < 0 && err && err->errnum == ECONNRESET) {
        /* the child closed with something of ours unread (it exits on RELOAD or a crash): not a bad
         * message; how it ended comes through SIGCHLD */
        hd_error_free(&err);
        r = 0;
    }
    if (r <= 0) {
        if (r < 0) {
            hd_log(HD_LOG_ERROR, "netchild", "network child: %s", hd_error_text(err));
            hd_error_free(&err);
            netchild_kill(nc, "malformed control message");
        } else { /* the child closed: its exit comes through SIGCHLD */
            hd_loop_unwatch(nc->loop, nc->watch);
            nc->watch = NULL;
            close(nc->fd);
            nc->fd = -1;
            nc->ready = false;
        }
        return -1;
    }
    switch (m->type) {
    case HD_NET_READY:
        if (nc->ready)
            return netchild_kill(nc, "READY twice"), -1;
        netchild_on_ready(nc, m->field[0]);
        if (nc->ready && nc->restarts)
            hd_log(HD_LOG_INFO, "netchild", "network child restarted (pid %d)", (int)nc->pid);
        break;
    case HD_NET_FAILED: hd_log(HD_LOG_ERROR, "netchild", "network child: %s", m->field[0]); break;
    case HD_NET_STATS:
        if (netchild_on_stats(nc, m) < 0)
            return netchild_kill(nc, "malformed STATS"), -1;
        break;
    case HD_NET_PONG:
        if (!netchild_parse_u64(m->field[0], &nc->pong_seq))
            return netchild_kill(nc, "malformed PONG"), -1;
        break;
    case HD_NET_FLEET_JOB:
        if (nc->fleet_job_fn)
            nc->fleet_job_fn(nc->fleet_ctx, m->field[0], m->field[1]);
        break;
    case HD_NET_FLEET_DESIRED:
        if (nc->fleet_fn)
            nc->fleet_fn(nc->fleet_ctx, m->field[0], m->field_len[0], m->field[1], m->field[2]);
        break;
    }
    return 1;
}

static void netchild_on_control(struct hd_loop *loop, int fd, uint32_t events, void *data)
{
    struct hd_netchild *nc = data;
    struct hd_net_msg *m = hd_xcalloc(1, sizeof(*m));
    netchild_read_one(nc, m);
    free(m);
}

/* Send a request and read until done() says its answer came, for at most timeout_ms. */
static bool netchild_request(struct hd_netchild *nc, enum hd_net_type type, int n, const char *const *fields,
                             bool (*done)(struct hd_netchild *, const struct hd_net_msg *), int timeout_ms)
{
    if (!netchild_up(nc) || hd_net_send(nc->fd, type, n, fields) < 0)
        return false;
    struct hd_net_msg *m = hd_xcalloc(1, sizeof(*m));
    int64_t deadline = hd_wall_ms() + timeout_ms;
    bool ok = false;
    while (!ok && nc->fd >= 0) {
        int64_t left = deadline - hd_wall_ms();
        if (left <= 0)
            break;
        struct pollfd p = {nc->fd, POLLIN, 0};
        if (poll(&p, 1, (int)left) <= 0)
            continue;
        if (netchild_read_one(nc, m) < 0)
            break;
        ok = done(nc, m);
    }
    free(m);
    return ok;
}

static bool netchild_is_stats(struct hd_netchild *nc, const struct hd_net_msg *m)
{
    return m->type == HD_NET_STATS;
}

static bool netchild_is_pong(struct hd_netchild *nc, const struct hd_net_msg *m)
{
    return m->type == HD_NET_PONG && nc->pong_seq == nc->ping_seq;
}

void hd_netchild_sync(struct hd_netchild *nc)
{
    char seq[24];
    snprintf(seq, sizeof(seq), "%llu", (unsigned long long)++nc->ping_seq);
    const char *f[] = {seq};
    netchild_request(nc, HD_NET_PING, 1, f, netchild_is_pong, NETCHILD_REQUEST_TIMEOUT_MS);
}

/* ---- start, crash, restart ------------------------------------------------- */

static int netchild_spawn(struct hd_netchild *nc, hd_error_t *err)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return hd_error_sys(err, "network child: socketpair");
    pid_t pid = fork();
    if (pid < 0) {
        close(sv[0]);
        close(sv[1]);
        return hd_error_sys(err, "network child: fork");
    }
    if (pid == 0) {
        /* hedged blocks its signals for its signalfd: the new program starts with none blocked */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (sv[1] == 3 ? fcntl(3, F_SETFD, 0) < 0 : dup2(sv[1], 3) < 0)
            _exit(127);
        close_range(4, ~0U, 0);
        setenv("HEDGE_NET_CHILD", "3", 1);
        if (nc->port > 0) { /* a restart: the port the first child got (a ":0" listener stays put) */
            char port[16];
            snprintf(port, sizeof(port), "%d", nc->port);
            setenv("HEDGE_NET_PORT", port, 1);
        } else {
            unsetenv("HEDGE_NET_PORT");
        }
        execv("/proc/self/exe", nc->argv);
        _exit(127);
    }
    close(sv[1]);
    nc->pid = pid;
    nc->fd = sv[0];
    nc->ready = false;
    nc->reload = false;
    nc->started_ms = hd_wall_ms();
    nc->watch = hd_loop_watch(nc->loop, nc->fd, EPOLLIN, netchild_on_control, nc, err);
    if (nc->watch == NULL) {
        netchild_kill(nc, "cannot watch its control socket");
        return -1;
    }
    return 0;
}

static void netchild_kill(struct hd_netchild *nc, const char *why)
{
    if (nc->pid > 0) {
        hd_log(HD_LOG_ERROR, "netchild", "killing the network child (pid %d): %s", (int)nc->pid, why);
        kill(nc->pid, SIGKILL);
    }
    hd_loop_unwatch(nc->loop, nc->watch);
    nc->watch = NULL;
    if (nc->fd >= 0)
        close(nc->fd);
    nc->fd = -1;
    nc->ready = false;
}

static void netchild_restart(struct hd_loop *loop, void *data)
{
    struct hd_netchild *nc = data;
    nc->restart_timer = NULL;
    hd_error_t err = NULL;
    nc->restarts++;
    if (netchild_spawn(nc, &err) < 0) {
        hd_log_error(HD_LOG_ERROR, "netchild", &err);
        nc->backoff = nc->backoff * 2 > NETCHILD_BACKOFF_MAX ? NETCHILD_BACKOFF_MAX : nc->backoff * 2;
        nc->restart_timer = hd_loop_timer(nc->loop, nc->backoff, netchild_restart, nc);
    }
}

void hd_netchild_serve(struct hd_netchild *nc)
{
    if (nc == NULL || nc->serve)
        return;
    nc->serve = true;
    netchild_send(nc, HD_NET_SERVE, 0, NULL); /* or, while it restarts, after its READY */
}

bool hd_netchild_reaped(struct hd_netchild *nc, pid_t pid, int status)
{
    if (nc == NULL || pid != nc->pid || pid <= 0)
        return false;
    nc->pid = 0;
    netchild_kill(nc, "gone");
    if (nc->stopping)
        return true;
    bool reload = nc->reload && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (reload) {
        hd_log(HD_LOG_INFO, "netchild", "network child (pid %d) exited to reload: starting it again", (int)pid);
        nc->backoff = 0;
    } else {
        nc->crashes++;
        if (hd_wall_ms() - nc->started_ms >= NETCHILD_STABLE_MS || nc->backoff == 0)
            nc->backoff = NETCHILD_BACKOFF_MIN;
        else
            nc->backoff = nc->backoff * 2 > NETCHILD_BACKOFF_MAX ? NETCHILD_BACKOFF_MAX : nc->backoff * 2;
        if (WIFSIGNALED(status))
            hd_log(HD_LOG_ERROR, "netchild", "network child (pid %d) killed by signal %d (%s): restarting in %.1f s",
                   (int)pid, WTERMSIG(status), strsignal(WTERMSIG(status)), nc->backoff);
        else
            hd_log(HD_LOG_ERROR, "netchild", "network child (pid %d) exited with status %d: restarting in %.1f s",
                   (int)pid, WEXITSTATUS(status), nc->backoff);
    }
    nc->restart_timer = hd_loop_timer(nc->loop, nc->backoff, netchild_restart, nc);
    return true;
}

void hd_netchild_reload(struct hd_netchild *nc)
{
    if (!netchild_up(nc))
        return;
    nc->reload = true;
    netchild_send(nc, HD_NET_RELOAD, 0, NULL);
}

/* Wait for the first child's READY (hedged is starting: nothing else to serve yet). */
static int netchild_wait_ready(struct hd_netchild *nc, hd_error_t *err)
{
    struct hd_net_msg *m = hd_xcalloc(1, sizeof(*m));
    int64_t deadline = hd_wall_ms() + NETCHILD_READY_TIMEOUT_MS;
    int r = -1;
    while (nc->fd >= 0) {
        int64_t left = deadline - hd_wall_ms();
        struct pollfd p = {nc->fd, POLLIN, 0};
        if (left <= 0 || poll(&p, 1, (int)left) == 0) {
            hd_error_set(err, ETIMEDOUT, "network child: not ready after %d ms", NETCHILD_READY_TIMEOUT_MS);
            break;
        }
        hd_error_t rerr = NULL;
        int got = hd_net_recv(nc->fd, true, m, &rerr);
        if (got < 0 && rerr && rerr->errnum == EAGAIN) {
            hd_error_free(&rerr);
            continue;
        }
        if (got <= 0) {
            if (got < 0)
                *err = rerr;
            else
                hd_error_set(err, 0, "network child: exited before it was ready");
            break;
        }
        if (m->type == HD_NET_FAILED) {
            /* the child's own error ("broker: listener ...: bind: Address already in use ...") */
            for (char *c = (char *)m->field[0]; *c; c++)
                if (*c < 0x20 || *c > 0x7e)
                    *c = '?';
            hd_error_set(err, 0, "%s", m->field[0]);
            break;
        }
        if (m->type == HD_NET_READY) {
            netchild_on_ready(nc, m->field[0]);
            if (nc->ready)
                r = 0;
            break;
        }
    }
    free(m);
    if (r < 0) {
        netchild_kill(nc, "not started");
        int status;
        if (nc->pid > 0)
            waitpid(nc->pid, &status, 0);
        nc->pid = 0;
    }
    return r;
}

int hd_netchild_start(struct hd_loop *loop, const struct hd_daemon_config *cfg, char **argv, bool broker_only,
                      struct hd_netchild **out, hd_error_t *err)
{
    *out = NULL;
    bool uplink = !broker_only && cfg->uplink != NULL;
    if (!cfg->broker_enabled && !uplink)
        return 0;
    struct hd_netchild *nc = hd_xcalloc(1, sizeof(*nc));
    nc->loop = loop;
    nc->argv = argv;
    nc->broker = cfg->broker_enabled;
    nc->uplink = uplink;
    nc->fd = -1;
    if (netchild_spawn(nc, err) < 0 || netchild_wait_ready(nc, err) < 0) {
        hd_netchild_stop(nc);
        return -1;
    }
    hd_log(HD_LOG_INFO, "netchild", "network child serving (pid %d)", (int)nc->pid);
    *out = nc;
    return 0;
}

void hd_netchild_stop(struct hd_netchild *nc)
{
    if (nc == NULL)
        return;
    nc->stopping = true;
    hd_loop_cancel(nc->loop, nc->restart_timer);
    if (nc->pid > 0) {
        if (nc->fd >= 0)
            hd_net_send(nc->fd, HD_NET_SHUTDOWN, 0, NULL);
        int status;
        pid_t r = 0;
        for (int i = 0; i < 1000 && (r = waitpid(nc->pid, &status, WNOHANG)) == 0; i++)
            usleep(5000); /* the broker flushes its store: up to 5 s */
        if (r == 0) {
            kill(nc->pid, SIGKILL);
            waitpid(nc->pid, &status, 0);
        }
        nc->pid = 0;
    }
    netchild_kill(nc, "stopped");
    for (size_t i = 0; i < nc->n_users; i++)
        netchild_user_free(&nc->users[i]);
    free(nc->users);
    free(nc->uplink_metrics);
    json_decref(nc->uplink_status);
    free(nc->fleet_report);
    for (size_t i = 0; nc->fleet_events && i < NETCHILD_EVENTS_HELD; i++)
        free(nc->fleet_events[i]);
    free(nc->fleet_events);
    for (size_t i = 0; nc->fleet_logs && i < 2 * NETCHILD_LOGS_HELD; i++)
        free(nc->fleet_logs[i]);
    free(nc->fleet_logs);
    free(nc);
}

void hd_netchild_set_fleet(struct hd_netchild *nc, hd_netchild_fleet_fn fn, hd_netchild_job_fn job_fn, void *ctx)
{
    if (!nc)
        return;
    nc->fleet_fn = fn;
    nc->fleet_job_fn = job_fn;
    nc->fleet_ctx = ctx;
}

void hd_netchild_fleet_report(struct hd_netchild *nc, const char *report)
{
    if (!nc)
        return;
    free(nc->fleet_report);
    nc->fleet_report = hd_xstrdup(report);
    if (nc->ready && nc->fd >= 0 && strlen(report) < HD_NET_MAX_MSG - 64)
        hd_net_send(nc->fd, HD_NET_FLEET_REPORT, 1, (const char *const[]){report});
}

/* ---- metrics and status ------------------------------------------------------ */

static void netchild_refresh(struct hd_netchild *nc)
{
    netchild_request(nc, HD_NET_STATS_REQUEST, 0, NULL, netchild_is_stats, NETCHILD_REQUEST_TIMEOUT_MS);
}

json_t *hd_netchild_facts(struct hd_netchild *nc)
{
    netchild_refresh(nc);
    if (!netchild_up(nc) || !nc->have_stats)
        return json_object();
    json_t *o = json_pack("{s:I}", "broker_clients", (json_int_t)nc->stats.clients_connected);
    json_t *depth = json_object_get(nc->uplink_status, "depth");
    if (json_is_integer(depth))
        json_object_set(o, "spool_depth", depth);
    return o;
}

bool hd_netchild_has_uplink(struct hd_netchild *nc)
{
    return nc && nc->uplink;
}

char *hd_netchild_metrics(struct hd_netchild *nc)
{
    netchild_refresh(nc);
    cleanup_free char *broker = nc->broker ? hd_daemon_broker_metrics_text(&nc->stats) : hd_xstrdup("");
    const char *uplink = nc->uplink && nc->uplink_metrics ? nc->uplink_metrics : "";
    return hd_xasprintf("%s%s"
                        "# HELP hedge_netchild_up 1 while the network child (broker, uplink) serves.\n"
                        "# TYPE hedge_netchild_up gauge\n"
                        "hedge_netchild_up %d\n"
                        "# HELP hedge_netchild_crashes_total Network child exits hedged did not ask for.\n"
                        "# TYPE hedge_netchild_crashes_total counter\n"
                        "hedge_netchild_crashes_total %llu\n"
                        "# HELP hedge_netchild_restarts_total Network child starts after the first.\n"
                        "# TYPE hedge_netchild_restarts_total counter\n"
                        "hedge_netchild_restarts_total %llu\n",
                        broker, uplink, netchild_up(nc), (unsigned long long)nc->crashes,
                        (unsigned long long)nc->restarts);
}

json_t *hd_netchild_uplink_status(struct hd_netchild *nc)
{
    netchild_refresh(nc);
    if (netchild_up(nc) && nc->uplink_status)
        return json_deep_copy(nc->uplink_status);
    return json_pack("{s:b,s:s}", "running", 0, "error", "the network child is restarting");
}

static void netchild_continue(struct hd_loop *loop, void *data)
{
    struct hd_netchild *nc = data;
    if (nc->pid > 0)
        kill(nc->pid, SIGCONT);
}

void hd_netchild_continued(struct hd_netchild *nc)
{
    /* now, and once more shortly: a child that saw hedged stopped just before it continued stops
     * itself after this first SIGCONT */
    netchild_continue(nc->loop, nc);
    hd_loop_timer(nc->loop, 0.2, netchild_continue, nc);
}

void hd_netchild_test_fault(struct hd_netchild *nc)
{
    netchild_send(nc, HD_NET_TEST_FAULT, 0, NULL);
}

pid_t hd_netchild_pid(struct hd_netchild *nc)
{
    return nc ? nc->pid : 0;
}

void hd_netchild_fleet_event(struct hd_netchild *nc, const char *event)
{
    if (!nc || strlen(event) >= HD_NET_MAX_MSG - 64)
        return;
    if (nc->ready && nc->fd >= 0 && nc->events_count == 0 &&
        hd_net_send(nc->fd, HD_NET_FLEET_EVENT, 1, (const char *const[]){event}) == 0)
        return;
    if (!nc->fleet_events)
        nc->fleet_events = hd_xcalloc(NETCHILD_EVENTS_HELD, sizeof(char *));
    if (nc->events_count == NETCHILD_EVENTS_HELD) { /* full: the oldest goes */
        free(nc->fleet_events[nc->events_first]);
        nc->fleet_events[nc->events_first] = NULL;
        nc->events_first = (nc->events_first + 1) % NETCHILD_EVENTS_HELD;
        nc->events_count--;
        nc->events_dropped++;
    }
    nc->fleet_events[(nc->events_first + nc->events_count++) % NETCHILD_EVENTS_HELD] = hd_xstrdup(event);
}

void hd_netchild_fleet_log(struct hd_netchild *nc, const char *deployment, const char *batch)
{
    if (!nc || strlen(batch) + strlen(deployment) >= HD_NET_MAX_MSG - 64)
        return;
    if (nc->ready && nc->fd >= 0 && nc->logs_count == 0 &&
        hd_net_send(nc->fd, HD_NET_FLEET_LOG, 2, (const char *const[]){deployment, batch}) == 0)
        return;
    if (!nc->fleet_logs)
        nc->fleet_logs = hd_xcalloc(2 * NETCHILD_LOGS_HELD, sizeof(char *));
    if (nc->logs_count == NETCHILD_LOGS_HELD) { /* full: the oldest goes */
        netchild_logs_drop_first(nc);
        nc->logs_dropped++;
    }
    char **b = &nc->fleet_logs[2 * ((nc->logs_first + nc->logs_count++) % NETCHILD_LOGS_HELD)];
    b[0] = hd_xstrdup(deployment);
    b[1] = hd_xstrdup(batch);
}

void hd_netchild_fleet_result(struct hd_netchild *nc, const char *id, const char *result)
{
    if (nc && nc->ready && nc->fd >= 0 && strlen(result) < HD_NET_MAX_MSG - 256)
        hd_net_send(nc->fd, HD_NET_FLEET_RESULT, 2, (const char *const[]){id, result});
}
