/*
 * embed_uplink.c - the store-and-forward cloud uplink (src/uplink/) inside
 * hedged, configured by the "uplink" section of hedged's config (the same
 * fields as hedge-uplink's file, parsed by the same hd_uplink_config_parse).
 *
 * The uplink attaches itself to hedged's one loop (hd_uplink_attach): its
 * two MQTT clients watch their own sockets, and its timer and end-of-turn
 * work (spool commit, held PUBACKs) are the loop's too. What stays here is
 * the config section, the embedded broker as the local side, and status.
 *
 * Nothing blocks the loop: the MQTT client (src/mqtt/client.c) connects,
 * waits for CONNACK and writes without blocking, which matters because the
 * local side is hedged's own broker in this same thread. Host names are
 * resolved with getaddrinfo, which can block on DNS: numeric addresses never
 * do (see src/mqtt/client.c), so use an address for the cloud host when a slow
 * resolver must not stall hedged. SQLite commits of the spool run in the loop
 * like the broker's (one group commit per turn).
 *
 * The local side defaults to the embedded broker (its first listener), where
 * hedged registers an internal user "hedged:uplink" with a random password
 * kept in memory only, allowed to read the up filters and write the down
 * topics. Its session on the broker is thus always its own, whatever
 * anonymous clients may do later (workload users turn them away), and as an
 * internal user it does not itself turn anonymous clients away.
 * A fatal spool error stops the uplink (hedged keeps running) and is shown
 * by /v1/uplink.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "base/log.h"
#include "daemon/daemon.h"
#include "uplink/uplink.h"
#include "base/util.h"

#define UPLINK_BROKER_USER "hedged:uplink"

struct hd_daemon_uplink {
    struct hd_loop *loop;
    struct hd_uplink_config *cfg; /* hedged's config; local.username/password set here */
    struct hd_uplink *uplink;     /* NULL once a fatal error stopped it */
    struct hd_broker *broker;     /* the embedded broker, when it is the local side */
    bool broker_user;             /* "hedged:uplink" is registered */
    char *failed;                 /* the fatal error, once stopped */
};

/* ---- config ------------------------------------------------------------- */

int hd_config_load_uplink(struct hd_daemon_config *cfg, const json_t *section, hd_error_t *err)
{
    struct hd_uplink_config *uc = hd_xcalloc(1, sizeof(*uc));
    if (hd_uplink_config_parse((json_t *)section, "uplink.", true, uc, err) < 0) {
        free(uc);
        return -1;
    }
    hd_config_free_uplink(cfg);
    cfg->uplink = uc;
    return 0;
}

int hd_config_finish_uplink(struct hd_daemon_config *cfg, hd_error_t *err)
{
    struct hd_uplink_config *uc = cfg->uplink;
    if (uc == NULL)
        return 0;
    if (uc->spool_path == NULL)
        uc->spool_path = hd_xasprintf("%s/uplink/spool.db", cfg->state_dir);
    if (uc->local.host == NULL && !cfg->broker_enabled)
        return hd_error_set(err, 0, "uplink.local.host: is required when the embedded broker is disabled");
    if (uc->local.host != NULL && uc->local.port == 0)
        uc->local.port = 1883;
    /* Files the TLS context loads at the first connect: report a missing one here (and in --check). */
    const struct hd_mqtt_tls *tls = &uc->cloud.tls;
    const char *const files[][2] = {
        {"ca_file", tls->ca_file}, {"cert_file", tls->cert_file}, {"key_file", tls->key_file}};
    for (size_t i = 0; i < ARRAY_SIZE(files); i++)
        if (files[i][1] && access(files[i][1], R_OK) < 0)
            return hd_error_sys(err, "uplink.cloud.tls.%s: %s", files[i][0], files[i][1]);
    return 0;
}

void hd_config_free_uplink(struct hd_daemon_config *cfg)
{
    if (cfg->uplink == NULL)
        return;
    hd_uplink_config_free(cfg->uplink);
    free(cfg->uplink);
    cfg->uplink = NULL;
}

/* ---- the embedded broker as the local side ------------------------------- */

/* Register "hedged:uplink" with a fresh random password: read the up filters, write the down topics. */
static int uplink_broker_user(struct hd_daemon_uplink *d, struct hd_uplink_config *uc, hd_error_t *err)
{
    uint8_t raw[24];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
        return hd_error_sys(err, "getrandom");
    char hex[2 * sizeof(raw) + 1];
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    hd_broker_remove_user(d->broker, UPLINK_BROKER_USER);
    if (hd_broker_set_internal_user(d->broker, UPLINK_BROKER_USER, hex, err) < 0)
        return -1;
    d->broker_user = true;
    for (size_t i = 0; i < uc->n_up; i++)
        if (hd_broker_allow(d->broker, UPLINK_BROKER_USER, "read", uc->up[i].from, err) < 0)
            return -1;
    for (size_t i = 0; i < uc->n_down; i++)
        if (hd_broker_allow(d->broker, UPLINK_BROKER_USER, "write", uc->down[i].to, err) < 0)
            return -1;
    free(uc->local.username);
    free(uc->local.password);
    uc->local.username = hd_xstrdup(UPLINK_BROKER_USER);
    uc->local.password = hd_xstrdup(hex);
    explicit_bzero(hex, sizeof(hex));
    return 0;
}

/* ---- a fatal spool error ------------------------------------------------- */

static void uplink_free_stopped(struct hd_loop *loop, void *data)
{
    struct hd_daemon_uplink *d = data;
    hd_uplink_free(d->uplink);
    d->uplink = NULL;
}

/* The uplink stopped itself (hedged keeps running); /v1/uplink shows why. */
static void uplink_on_fatal(void *ctx, hd_error_t *err)
{
    struct hd_daemon_uplink *d = ctx;
    hd_error_prefix(err, "uplink stopped");
    hd_log(HD_LOG_ERROR, "uplink", "%s", hd_error_text(*err));
    free(d->failed);
    d->failed = hd_xstrdup(hd_error_text(*err));
    hd_error_free(err);
    hd_loop_defer(d->loop, uplink_free_stopped, d); /* not inside the uplink's own callback */
}

int hd_daemon_uplink_start(struct hd_loop *loop, struct hd_daemon_config *cfg, struct hd_broker *broker,
                           struct hd_daemon_uplink **out, hd_error_t *err)
{
    *out = NULL;
    struct hd_uplink_config *uc = cfg->uplink;
    if (uc == NULL)
        return 0;
    struct hd_daemon_uplink *d = hd_xcalloc(1, sizeof(*d));
    d->loop = loop;
    d->cfg = uc;
    cleanup_free char *dir = hd_xstrdup(uc->spool_path); /* before any goto: its cleanup runs at fail too */
    if (uc->local.host == NULL) {
        if (broker == NULL) {
            hd_error_set(err, 0, "uplink.local.host: is required when the embedded broker is disabled");
            goto fail;
        }
        d->broker = broker;
        uc->local.host = hd_daemon_broker_host(cfg);
        if (uc->local.port == 0)
            uc->local.port = hd_broker_port(broker, 0);
        if (uc->local.username == NULL && uplink_broker_user(d, uc, err) < 0)
            goto fail;
    }
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (hd_mkdir_p(dir, 0700, err) < 0)
            goto fail;
    }
    d->uplink = hd_uplink_new(uc, err);
    if (d->uplink == NULL)
        goto fail;
    if (hd_uplink_attach(d->uplink, loop, uplink_on_fatal, d, err) < 0)
        goto fail;
    hd_log(HD_LOG_INFO, "uplink", "%s: local %s:%d, cloud %s:%d%s, spool %s", uc->node_id, uc->local.host,
           uc->local.port, uc->cloud.host, uc->cloud.port, uc->cloud.tls.enabled ? " (TLS)" : "", uc->spool_path);
    *out = d;
    return 0;
fail:
    hd_daemon_uplink_stop(d);
    return hd_error_prefix(err, "uplink");
}

void hd_daemon_uplink_stop(struct hd_daemon_uplink *d)
{
    if (d == NULL)
        return;
    hd_uplink_free(d->uplink);
    if (d->broker_user)
        hd_broker_remove_user(d->broker, UPLINK_BROKER_USER);
    free(d->failed);
    free(d);
}

struct hd_uplink *hd_daemon_uplink_get(struct hd_daemon_uplink *d)
{
    return d->uplink;
}

/* ---- status --------------------------------------------------------------- */

json_t *hd_daemon_uplink_status(struct hd_daemon_uplink *d)
{
    struct hd_uplink_status st = {.last_error = d->failed ? d->failed : ""};
    hd_error_t err = NULL;
    if (d->uplink && hd_uplink_get_status(d->uplink, &st, &err) < 0) {
        st.last_error = "";
        json_t *o = json_pack("{s:b,s:s}", "running", 0, "error", hd_error_text(err));
        hd_error_free(&err);
        return o;
    }
    int64_t now = hd_wall_ms();
    double oldest_age = st.spool.oldest_ms ? (double)(now - st.spool.oldest_ms) / 1000.0 : 0.0;
    cleanup_free char *cloud = hd_xasprintf("%s:%d", d->cfg->cloud.host, d->cfg->cloud.port);
    json_t *o =
        json_pack("{s:b,s:b,s:I,s:s,s:I,s:I,s:f,s:I,s:I,s:I,s:I,s:I}", "running", d->uplink != NULL, "connected",
                  st.cloud_connected, "since_ms", (json_int_t)st.cloud_since_ms, "last_error", st.last_error, "depth",
                  (json_int_t)st.spool.depth, "bytes", (json_int_t)st.spool.bytes, "oldest_age_s", oldest_age,
                  "received", (json_int_t)st.spool.counters.received, "drained", (json_int_t)st.spool.counters.drained,
                  "dropped_oldest", (json_int_t)st.spool.counters.dropped_oldest, "rejected_new",
                  (json_int_t)st.spool.counters.rejected_new, "expired", (json_int_t)st.spool.counters.expired);
    json_object_set_new(o, "local_connected", json_boolean(st.local_connected));
    json_object_set_new(o, "downlink", json_integer(st.downlink));
    json_object_set_new(o, "reconnects", json_integer(st.reconnects));
    json_object_set_new(o, "node_id", json_string(d->cfg->node_id));
    json_object_set_new(o, "cloud", json_string(cloud));
    json_object_set_new(o, "spool", json_string(d->cfg->spool_path));
    if (d->failed)
        json_object_set_new(o, "error", json_string(d->failed));
    return o;
}

char *hd_daemon_uplink_metrics(struct hd_daemon_uplink *d)
{
    struct hd_uplink_status st = {0};
    hd_error_t err = NULL;
    if (d->uplink && hd_uplink_get_status(d->uplink, &st, &err) < 0) {
        hd_log(HD_LOG_ERROR, "uplink", "metrics: %s", hd_error_text(err));
        hd_error_free(&err);
    }
    int64_t now = hd_wall_ms();
    double oldest_age = st.spool.oldest_ms ? (double)(now - st.spool.oldest_ms) / 1000.0 : 0.0;
    const struct hd_spool_counters *c = &st.spool.counters;
    return hd_xasprintf(
        "# HELP hedge_uplink_running 1 while the uplink runs (0 after a fatal spool error).\n"
        "# TYPE hedge_uplink_running gauge\n"
        "hedge_uplink_running %d\n"
        "# HELP hedge_uplink_connected 1 while the cloud broker link is up.\n"
        "# TYPE hedge_uplink_connected gauge\n"
        "hedge_uplink_connected %d\n"
        "# HELP hedge_uplink_local_connected 1 while the local broker link is up.\n"
        "# TYPE hedge_uplink_local_connected gauge\n"
        "hedge_uplink_local_connected %d\n"
        "# HELP hedge_uplink_connected_since_seconds Unix time of the last cloud link change.\n"
        "# TYPE hedge_uplink_connected_since_seconds gauge\n"
        "hedge_uplink_connected_since_seconds %.3f\n"
        "# HELP hedge_uplink_spool_messages Messages waiting in the spool.\n"
        "# TYPE hedge_uplink_spool_messages gauge\n"
        "hedge_uplink_spool_messages %lld\n"
        "# HELP hedge_uplink_spool_bytes Topic and payload bytes waiting in the spool.\n"
        "# TYPE hedge_uplink_spool_bytes gauge\n"
        "hedge_uplink_spool_bytes %lld\n"
        "# HELP hedge_uplink_spool_oldest_age_seconds Age of the oldest spooled message (0 when empty).\n"
        "# TYPE hedge_uplink_spool_oldest_age_seconds gauge\n"
        "hedge_uplink_spool_oldest_age_seconds %.3f\n"
        "# HELP hedge_uplink_received_total Messages offered to the spool.\n"
        "# TYPE hedge_uplink_received_total counter\n"
        "hedge_uplink_received_total %lld\n"
        "# HELP hedge_uplink_forwarded_total Messages acknowledged by the cloud broker and drained.\n"
        "# TYPE hedge_uplink_forwarded_total counter\n"
        "hedge_uplink_forwarded_total %lld\n"
        "# HELP hedge_uplink_dropped_total Messages dropped by the full spool, per full policy.\n"
        "# TYPE hedge_uplink_dropped_total counter\n"
        "hedge_uplink_dropped_total{policy=\"drop-oldest\"} %lld\n"
        "hedge_uplink_dropped_total{policy=\"reject-new\"} %lld\n"
        "# HELP hedge_uplink_expired_total Messages deleted by the spool TTL.\n"
        "# TYPE hedge_uplink_expired_total counter\n"
        "hedge_uplink_expired_total %lld\n"
        "# HELP hedge_uplink_downlink_messages_total Cloud messages forwarded to the local broker.\n"
        "# TYPE hedge_uplink_downlink_messages_total counter\n"
        "hedge_uplink_downlink_messages_total %lld\n"
        "# HELP hedge_uplink_reconnects_total Cloud connections made after the first.\n"
        "# TYPE hedge_uplink_reconnects_total counter\n"
        "hedge_uplink_reconnects_total %lld\n",
        d->uplink != NULL, st.cloud_connected, st.local_connected, (double)st.cloud_since_ms / 1000.0,
        (long long)st.spool.depth, (long long)st.spool.bytes, oldest_age, (long long)c->received, (long long)c->drained,
        (long long)c->dropped_oldest, (long long)c->rejected_new, (long long)c->expired, (long long)st.downlink,
        (long long)st.reconnects);
}
