/*
 * netchild_main.c - the network child: hedged started again (same flags, same
 * config) with HEDGE_NET_CHILD naming its control socket. It runs the
 * embedded broker and the uplink (embed_broker.c, embed_uplink.c: the same
 * code as before the split) in a loop of its own, without privileges.
 *
 * Start-up, as root:
 *   1. the broker binds its listeners (ports below 1024 too), opens its store
 *      and loads its password, ACL and TLS files;
 *   2. a mount namespace of its own hides hedged's state dir (the deploy
 *      store, instances, images), the API socket's dir and the log dir under
 *      empty tmpfs, with only the broker's and the spool's dirs bound back;
 *      copies of the uplink's TLS files go there (it reads them at each
 *      connect), then the uplink opens its spool;
 *   3. those two dirs are given to the unprivileged user (HD_PRIVDROP_DEFAULT_USER
 *      or the fallback id, base/privdrop.c);
 *   4. it becomes that user: no capabilities, no_new_privs, seccomp allow-list.
 * Then READY goes to hedged, with the port workloads are told to use. hedged
 * answers with its users and rules, then SERVE: only then are the listeners
 * watched. Clients that came earlier (a restart) wait in the backlog, so none
 * is judged without the users (it would pass as anonymous) and no PUBLISH is
 * routed between a user's write and read rules (its subscriber would miss it).
 *
 * Messages from hedged (netchild_proto.h) add and remove workload users and
 * rules, ask for the counters, reload (exit so that hedged starts a fresh
 * child that reads the config again) or shut down. A malformed message, or
 * hedged closing the socket, ends the child. HD_NET_TEST_FAULT is honoured
 * only when HEDGE_TEST_HOOKS=1 was in the environment at start (the tests).
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "base/loop.h"
#include "base/privdrop.h"
#include "base/util.h"
#include "broker/broker.h"
#include "daemon/daemon.h"
#include "daemon/netchild_proto.h"
#include "uplink/uplink.h"

struct netchild {
    struct hd_loop *loop;
    int fd;
    struct hd_broker *broker;
    struct hd_daemon_uplink *uplink;
    struct hd_fleet_link *fleet;
    bool hooks;
    int exit_code;
};

/* ---- start-up ------------------------------------------------------------------ */

/* Hide dir under an empty tmpfs, binding back the kept dirs that lie under it. */
static int netchild_hide(const char *dir, char *const *keep, hd_error_t *err)
{
    struct stat st;
    if (dir == NULL || stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
        return 0;
    size_t dlen = strlen(dir);
    int fds[4] = {-1, -1, -1, -1};
    for (int i = 0; keep[i] && i < 4; i++)
        if (strncmp(keep[i], dir, dlen) == 0 && keep[i][dlen] == '/')
            fds[i] = open(keep[i], O_PATH | O_DIRECTORY | O_CLOEXEC);
    int r = 0;
    if (mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=1m") < 0)
        r = hd_error_sys(err, "hide %s: mount tmpfs", dir);
    for (int i = 0; r == 0 && i < 4 && keep[i]; i++) {
        if (fds[i] < 0)
            continue;
        char from[64];
        snprintf(from, sizeof(from), "/proc/self/fd/%d", fds[i]);
        if (hd_mkdir_p(keep[i], 0755, err) < 0)
            r = -1;
        else if (mount(from, keep[i], NULL, MS_BIND | MS_REC, NULL) < 0)
            r = hd_error_sys(err, "bind %s back", keep[i]);
    }
    for (int i = 0; i < 4; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return r;
}

/* The outermost dir above path that uid/gid cannot search (a 0700 parent), or NULL. */
static char *netchild_closed_ancestor(const char *path, uid_t uid, gid_t gid)
{
    cleanup_free char *p = hd_xstrdup(path);
    for (char *slash = strchr(p + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        struct stat st;
        bool open = stat(p, &st) == 0 &&
            ((st.st_mode & S_IXOTH) || (st.st_uid == uid && (st.st_mode & S_IXUSR)) ||
             (st.st_gid == gid && (st.st_mode & S_IXGRP)));
        if (!open)
            return hd_xstrdup(p);
        *slash = '/';
    }
    return NULL;
}

static int netchild_confine(const struct hd_daemon_config *cfg, char *const *keep, uid_t uid, gid_t gid,
                            hd_error_t *err)
{
    if (unshare(CLONE_NEWNS) < 0)
        return hd_error_sys(err, "unshare mount namespace");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return hd_error_sys(err, "make / private");
    /* A kept dir under a dir the user cannot search (pytest's 0700 temp root, say): hide that one too,
     * so that the path to the kept dir is open in this view. */
    for (int i = 0; keep[i]; i++) {
        cleanup_free char *closed = netchild_closed_ancestor(keep[i], uid, gid);
        if (closed && netchild_hide(closed, keep, err) < 0)
            return -1;
    }
    cleanup_free char *socket_dir = hd_xstrdup(cfg->socket_path);
    char *slash = strrchr(socket_dir, '/');
    if (slash && slash != socket_dir)
        *slash = '\0';
    if (netchild_hide(socket_dir, keep, err) < 0 || netchild_hide(cfg->log_dir, keep, err) < 0 ||
        netchild_hide(cfg->state_dir, keep, err) < 0)
        return -1;
    return 0;
}

/* The uplink reads its TLS files when it connects, after the drop: read them now (as root, before
 * the confinement hides them), write copies the user may read on the tmpfs that hides the state dir
 * (in this namespace only; gone with the child) and point the config at them. */
struct netchild_tls_copy {
    char *data[3];
    size_t len[3];
};

static char **netchild_tls_file(struct hd_daemon_config *cfg, int i)
{
    struct hd_mqtt_tls *tls = &cfg->uplink->cloud.tls;
    return i == 0 ? &tls->ca_file : i == 1 ? &tls->cert_file : &tls->key_file;
}

static int netchild_read_tls(struct hd_daemon_config *cfg, struct netchild_tls_copy *t, hd_error_t *err)
{
    for (int i = 0; i < 3; i++)
        if (*netchild_tls_file(cfg, i) && hd_read_file(*netchild_tls_file(cfg, i), &t->data[i], &t->len[i], err) < 0)
            return -1;
    return 0;
}

static int netchild_write_tls(struct hd_daemon_config *cfg, struct netchild_tls_copy *t, uid_t uid, gid_t gid,
                              hd_error_t *err)
{
    static const char *const names[] = {"ca.pem", "cert.pem", "key.pem"};
    /* the state dir's path is now on a tmpfs of netchild_confine (it hides the state dir or a parent) */
    cleanup_free char *dir = hd_xasprintf("%s/.uplink-tls", cfg->state_dir);
    if (hd_mkdir_p(cfg->state_dir, 0755, err) < 0)
        return -1;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return hd_error_sys(err, "mkdir %s", dir);
    if (chown(dir, uid, gid) < 0)
        return hd_error_sys(err, "chown %s", dir);
    for (int i = 0; i < 3; i++) {
        if (t->data[i] == NULL)
            continue;
        char *copy = hd_xasprintf("%s/%s", dir, names[i]);
        int fd = open(copy, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0400);
        if (fd < 0 || fchown(fd, uid, gid) < 0 || hd_write_all(fd, t->data[i], t->len[i]) < 0) {
            hd_error_sys(err, "copy %s to %s", *netchild_tls_file(cfg, i), copy);
            if (fd >= 0)
                close(fd);
            free(copy);
            return -1;
        }
        close(fd);
        free(*netchild_tls_file(cfg, i));
        *netchild_tls_file(cfg, i) = copy;
    }
    return 0;
}

static void netchild_tls_free(struct netchild_tls_copy *t)
{
    for (int i = 0; i < 3; i++)
        if (t->data[i]) {
            explicit_bzero(t->data[i], t->len[i]);
            free(t->data[i]);
        }
}

/* ---- the control socket ------------------------------------------------------------ */

static void netchild_send_stats(struct netchild *c)
{
    struct hd_broker_stats s = {0};
    if (c->broker)
        hd_broker_get_stats(c->broker, &s);
    const uint64_t v[9] = {s.clients_connected, s.clients_total,  s.messages_received,
                           s.messages_sent,     s.bytes_received, s.bytes_sent,
                           s.messages_dropped,  s.retained_count, s.subscriptions};
    char num[9][24];
    const char *f[11];
    for (int i = 0; i < 9; i++) {
        snprintf(num[i], sizeof(num[i]), "%llu", (unsigned long long)v[i]);
        f[i] = num[i];
    }
    cleanup_free char *metrics = c->uplink ? hd_daemon_uplink_metrics(c->uplink) : hd_xstrdup("");
    cleanup_free char *status = NULL;
    if (c->uplink) {
        json_t *o = hd_daemon_uplink_status(c->uplink);
        status = json_dumps(o, JSON_COMPACT);
        json_decref(o);
    }
    f[9] = metrics;
    f[10] = status ? status : "";
    hd_net_send(c->fd, HD_NET_STATS, 11, f);
}

static void netchild_on_control(struct hd_loop *loop, int fd, uint32_t events, void *data)
{
    struct netchild *c = data;
    struct hd_net_msg *m = hd_xcalloc(1, sizeof(*m));
    hd_error_t err = NULL;
    int r = hd_net_recv(fd, false, m, &err);
    if (r < 0 && err && err->errnum == EAGAIN) {
        hd_error_free(&err);
        free(m);
        return;
    }
    if (r <= 0) {
        if (r < 0) {
            hd_log(HD_LOG_ERROR, "netchild", "%s", hd_error_text(err));
            c->exit_code = 1;
        }
        hd_error_free(&err);
        hd_loop_quit(loop); /* hedged is gone, or sent garbage */
        free(m);
        return;
    }
    switch (m->type) {
    case HD_NET_SET_USER:
    case HD_NET_REMOVE_USER:
    case HD_NET_ALLOW:
        if (c->broker == NULL)
            break;
        if (m->type == HD_NET_REMOVE_USER)
            hd_broker_remove_user(c->broker, m->field[0]);
        else if (m->type == HD_NET_ALLOW)
            r = hd_broker_allow(c->broker, m->field[0], m->field[1], m->field[2], &err);
        else if (strcmp(m->field[2], "1") == 0)
            r = hd_broker_set_internal_user(c->broker, m->field[0], m->field[1], &err);
        else
            r = hd_broker_set_user(c->broker, m->field[0], m->field[1], &err);
        if (r < 0) {
            hd_log_error(HD_LOG_ERROR, "netchild", &err);
        }
        break;
    case HD_NET_SERVE:
        if (c->broker && hd_broker_serve(c->broker, &err) < 0) {
            hd_log_error(HD_LOG_ERROR, "netchild", &err);
            c->exit_code = 1;
            hd_loop_quit(loop);
        }
        break;
    case HD_NET_STATS_REQUEST: netchild_send_stats(c); break;
    case HD_NET_FLEET_REPORT: hd_fleet_link_report(c->fleet, m->field[0]); break;
    case HD_NET_FLEET_EVENT: hd_fleet_link_event(c->fleet, m->field[0]); break;
    case HD_NET_FLEET_RESULT: hd_fleet_link_result(c->fleet, m->field[0], m->field[1]); break;
    case HD_NET_FLEET_LOG: hd_fleet_link_log(c->fleet, m->field[0], m->field[1]); break;
    case HD_NET_PING: hd_net_send(fd, HD_NET_PONG, 1, &m->field[0]); break;
    case HD_NET_RELOAD: /* a fresh child reads the config again; sessions and spool are on disk */
    case HD_NET_SHUTDOWN: hd_loop_quit(loop); break;
    case HD_NET_TEST_FAULT:
        if (c->hooks) {
            hd_log(HD_LOG_WARN, "netchild", "test hook: calling a forbidden syscall");
            hd_privdrop_forbidden_syscall();
        }
        break;
    }
    free(m);
}

/* Stopping hedged (SIGSTOP, SIGTSTP, a debugger) stops the child too, as when both were one process;
 * hedged sends SIGCONT on when it continues. A pread of hedged's /proc stat every 50 ms. */
#define NETCHILD_STOP_CHECK_S 0.05

static int parent_stat_fd = -1;

static void netchild_check_parent(struct hd_loop *loop, void *data)
{
    char buf[256];
    ssize_t n = pread(parent_stat_fd, buf, sizeof(buf) - 1, 0);
    if (n > 0) {
        buf[n] = '\0';
        const char *end = strrchr(buf, ')'); /* "pid (comm) S ..." */
        if (end && end[1] == ' ' && end[2] == 'T')
            raise(SIGSTOP);
    }
    hd_loop_timer(loop, NETCHILD_STOP_CHECK_S, netchild_check_parent, data);
}

static void netchild_on_signal(struct hd_loop *loop, int signo, void *data)
{
    if (signo == SIGTERM)
        hd_loop_quit(loop);
    /* SIGINT (a terminal's ^C reaches the whole group) and SIGHUP: hedged decides */
}

/* A restarted child binds the port its first predecessor got for a ":0" plain listener (netchild.c
 * passes it in HEDGE_NET_PORT), so workloads' HEDGE_MQTT_PORT and their clients stay right. Only the first
 * plain listener: READY reports that one alone, and it is the one workloads are given. */
static void netchild_pin_port(struct hd_daemon_config *cfg)
{
    const char *pinned = getenv("HEDGE_NET_PORT");
    int port = pinned ? atoi(pinned) : 0;
    if (!cfg->broker_enabled || port <= 0 || port > 65535)
        return;
    for (char **l = cfg->broker.listen; l && *l; l++) {
        if (strstr(*l, "://") != NULL)
            continue;
        size_t n = strlen(*l);
        if (n >= 2 && strcmp(*l + n - 2, ":0") == 0) {
            char *bound = hd_xasprintf("%.*s:%d", (int)(n - 2), *l, port);
            free(*l);
            *l = bound;
        }
        return;
    }
}

int hd_netchild_main(struct hd_daemon_config *cfg, int fd, bool broker_only)
{
    struct netchild c = {.fd = fd, .exit_code = 1};
    const char *hooks = getenv("HEDGE_TEST_HOOKS");
    c.hooks = hooks && strcmp(hooks, "1") == 0;
    hd_error_t err = NULL;
    prctl(PR_SET_NAME, "hedged-net", 0, 0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    char parent_stat[64];
    snprintf(parent_stat, sizeof(parent_stat), "/proc/%d/stat", (int)getppid());
    parent_stat_fd =
        open(parent_stat, O_RDONLY | O_CLOEXEC); /* hedged killed: the next one must be able to bind at once */
    bool root = geteuid() == 0;
    uid_t uid = 0;
    gid_t gid = 0;
    char *keep[3] = {NULL, NULL, NULL};
    int n_keep = 0;
    cleanup_free char *spool_dir = NULL;
    struct netchild_tls_copy tls = {0};
    bool tls_copy = !broker_only && cfg->uplink && cfg->uplink->cloud.tls.enabled;
    if (cfg->broker_enabled && cfg->broker.state_dir)
        keep[n_keep++] = cfg->broker.state_dir;
    if (!broker_only && cfg->uplink && cfg->uplink->spool_path) {
        spool_dir = hd_xstrdup(cfg->uplink->spool_path);
        char *slash = strrchr(spool_dir, '/');
        if (slash && slash != spool_dir) {
            *slash = '\0';
            keep[n_keep++] = spool_dir;
        }
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    signal(SIGPIPE, SIG_IGN);
    for (int i = 0; i < n_keep; i++)
        if (hd_mkdir_p(keep[i], 0700, &err) < 0)
            goto fail;
    if (root && hd_privdrop_resolve(NULL, &uid, &gid, &err) < 0)
        goto fail;
    if ((c.loop = hd_loop_new(&err)) == NULL || hd_loop_signals(c.loop, &mask, netchild_on_signal, &c, &err) < 0)
        goto fail;
    /* 1. as root: listeners, store, files */
    netchild_pin_port(cfg);
    if (hd_daemon_broker_start(c.loop, cfg, !broker_only, &c.broker, &err) < 0)
        goto fail;
    /* 2. a view without hedged's state */
    if (root && tls_copy && netchild_read_tls(cfg, &tls, &err) < 0)
        goto fail;
    if (root && netchild_confine(cfg, keep, uid, gid, &err) < 0)
        goto fail;
    if (root && tls_copy && netchild_write_tls(cfg, &tls, uid, gid, &err) < 0)
        goto fail;
    if (!broker_only && cfg->uplink)
        cfg->uplink->status_pid = (int)getppid(); /* hedged: `hedge uplink status` says running while it lives */
    if (!broker_only && hd_daemon_uplink_start(c.loop, cfg, c.broker, &c.uplink, &err) < 0)
        goto fail;
    if (!broker_only)
        c.fleet = hd_fleet_link_start(cfg, c.uplink, fd);
    if (root) {
        /* 3. the own dirs to the user; 4. the user */
        for (int i = 0; i < n_keep; i++)
            hd_privdrop_chown_tree(keep[i], uid, gid);
        if (hd_privdrop_user(uid, gid, false, &err) < 0)
            goto fail;
    }
    if (hd_privdrop_finish(&err) < 0)
        goto fail;
    if (hd_loop_watch(c.loop, fd, EPOLLIN, netchild_on_control, &c, &err) == NULL)
        goto fail;
    if (parent_stat_fd >= 0)
        hd_loop_timer(c.loop, NETCHILD_STOP_CHECK_S, netchild_check_parent, &c);
    malloc_trim(0); /* what start-up freed (config parsing, the TLS copies) goes back: the node's RSS budget */
    char port[16];
    snprintf(port, sizeof(port), "%d", c.broker ? hd_broker_port(c.broker, 0) : 0);
    const char *f[] = {port};
    if (hd_net_send(fd, HD_NET_READY, 1, f) < 0) {
        hd_error_sys(&err, "control socket: send READY");
        goto fail;
    }
    hd_log(HD_LOG_DEBUG, "netchild", "serving as uid %u", (unsigned)getuid());
    c.exit_code = 0;
    if (hd_loop_run(c.loop, &err) < 0) {
        c.exit_code = 1;
        hd_log_error(HD_LOG_ERROR, "netchild", &err);
    }
    goto out;
fail : {
    const char *text[] = {hd_error_text(err)};
    if (hd_net_send(fd, HD_NET_FAILED, 1, text) < 0)
        hd_error_print(err, "hedged (network child)");
    hd_error_free(&err);
}
out:
    netchild_tls_free(&tls);
    hd_fleet_link_stop(c.fleet);
    hd_daemon_uplink_stop(c.uplink);
    hd_daemon_broker_stop(c.broker);
    hd_loop_free(c.loop);
    if (parent_stat_fd >= 0)
        close(parent_stat_fd);
    close(fd);
    return c.exit_code;
}
