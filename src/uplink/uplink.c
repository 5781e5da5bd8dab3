/*
 * uplink.c - the store-and-forward bridge (see uplink.h for the guarantees).
 *
 * Two MQTT clients and one spool in the host's event loop (hd_uplink_attach:
 * hedged's one loop, or hedge-uplink's own). The clients watch their own
 * sockets (hd_mqtt_client_attach); whatever they handled in a turn, the
 * uplink finishes at the end of that turn (deferred work), and one loop timer
 * brings a turn when nothing else does (reconnect back-off, TTL expiry,
 * keepalive, the commit of deletes). A turn:
 *   1. read from the local broker: matching PUBLISHes are appended to the
 *      spool inside one open transaction and their PUBACKs are held back;
 *   2. read from the cloud: PUBACKs delete their rows (same transaction),
 *      downlink PUBLISHes are forwarded to the local broker;
 *   3. refill the cloud window from the spool (the most important class first, rows after the last sent id of each);
 *   4. commit (group commit: one fsync for everything the turn gathered),
 *      then release the held local PUBACKs: the local broker forgets a
 *      message only once it is on disk. A turn with only deletes may defer
 *      its commit up to 50 ms (a lost delete means a resend, not a loss);
 *   5. TTL expiry once a second, status rows on every link change.
 *
 * Link states per broker: DISCONNECTED (waiting for the back-off deadline),
 * connecting (the client's own states), CONNECTED. A lost cloud link forgets
 * the in-flight table and restarts the drain from the oldest row, which is
 * what makes delivery at-least-once across reconnects and kill -9.
 * Back-off: min_ms doubling to max_ms, each delay drawn uniformly from
 * [delay/2, delay] (jitter), reset after a successful CONNACK.
 */
#include "uplink/uplink.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "base/log.h"
#include "base/loop.h"
#include "base/util.h"
#include "mqtt/topic.h"

#define UPLINK_DELETE_COMMIT_NS 50000000ull /* 50 ms */
#define UPLINK_ID_DIRECT (-1)

struct uplink_link {
    struct hd_mqtt_client *client;
    const char *name;
    uint64_t next_attempt_ns;
    int64_t backoff_ms;
    bool connected;
    char *last_error;
};

struct hd_uplink {
    const struct hd_uplink_config *cfg;
    struct hd_spool *spool;
    struct uplink_link local, cloud;
    /* cloud packet id -> spool row id (0 = free, UPLINK_ID_DIRECT: a direct publish or a subscribe) */
    int64_t *inflight;
    int inflight_count;
    uint16_t next_cloud_id;
    struct hd_spool_cursor sent; /* per priority class: the last row handed to the cloud */
    /* local PUBACKs held until the spool commit */
    uint16_t *pending_acks;
    size_t n_pending_acks, cap_pending_acks;
    /* downlink: local packet id -> cloud packet id + 1 (0 = free) */
    uint32_t *downlink;
    uint16_t next_local_id;
    bool downlink_refused;
    char **local_filters, **cloud_filters;
    /* hd_uplink_set_cloud_user */
    char **user_filters;
    struct hd_uplink_cloud_user user;
    hd_error_t fatal;
    uint64_t last_expire_ns, last_commit_ns;
    bool status_dirty;
    int64_t cloud_since_ms, cloud_connects, downlink_count;
    /* hd_uplink_attach */
    struct hd_loop *loop;
    struct hd_timer *timer; /* the next turn when no socket brings one */
    struct hd_defer *turn;  /* the end of the current turn, once there is work */
    bool stopped;           /* a fatal error stopped it */
    hd_uplink_fatal_fn on_fatal;
    void *fatal_ctx;
};

static void uplink_on_timer(struct hd_loop *loop, void *data);

/* A free cloud packet id, marked with what it carries. */
static uint16_t uplink_take_id(struct hd_uplink *u, int64_t what)
{
    uint16_t id;
    do
        id = ++u->next_cloud_id;
    while (id == 0 || u->inflight[id]);
    u->inflight[id] = what;
    return id;
}

static void uplink_fatal(struct hd_uplink *u, hd_error_t *err)
{
    if (!u->fatal)
        u->fatal = get_and_reset(err);
    else
        hd_error_free(err);
}

static void uplink_schedule_reconnect(struct hd_uplink *u, struct uplink_link *l)
{
    int64_t delay = l->backoff_ms ? l->backoff_ms : u->cfg->reconnect_min_ms;
    uint32_t r = 0;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
        r = (uint32_t)hd_now_ns();
    int64_t jittered = delay / 2 + (int64_t)(r % (uint32_t)(delay / 2 + 1));
    l->next_attempt_ns = hd_now_ns() + (uint64_t)jittered * 1000000ull;
    l->backoff_ms = delay * 2 > u->cfg->reconnect_max_ms ? u->cfg->reconnect_max_ms : delay * 2;
}

static void uplink_set_status(struct hd_uplink *u, const char *key, const char *value)
{
    hd_error_t err = NULL;
    if (hd_spool_set_status(u->spool, key, value, &err) < 0)
        uplink_fatal(u, &err);
}

/* Record the cloud link in the spool's status table; `since` moves only when the state changes. */
static void uplink_cloud_status(struct hd_uplink *u, bool state_changed)
{
    char buf[32];
    uplink_set_status(u, "cloud_connected", u->cloud.connected ? "1" : "0");
    if (state_changed) {
        u->cloud_since_ms = hd_wall_ms();
        snprintf(buf, sizeof(buf), "%lld", (long long)u->cloud_since_ms);
        uplink_set_status(u, "cloud_since_ms", buf);
    }
    uplink_set_status(u, "cloud_last_error", u->cloud.last_error ? u->cloud.last_error : "");
}

static void cloud_on_disconnect(void *ctx, const char *reason);

/* ---- local broker callbacks ---- */

static void local_on_connect(void *ctx, bool session_present)
{
    struct hd_uplink *u = ctx;
    u->local.connected = true;
    u->local.backoff_ms = 0;
    hd_log(HD_LOG_INFO, "uplink", "local broker connected (session %s)", session_present ? "resumed" : "new");
    if (u->local_filters)
        hd_mqtt_subscribe(u->local.client, 1, u->local_filters, 1);
    uplink_set_status(u, "local_connected", "1");
    if (u->downlink_refused && u->cloud.connected) {
        /* Downlink messages were left unacknowledged while the local broker was
         * away: reconnect to the cloud so its session redelivers them. */
        u->downlink_refused = false;
        hd_mqtt_client_close(u->cloud.client, false);
        cloud_on_disconnect(u, "reconnecting so that refused downlink messages are redelivered");
        u->cloud.next_attempt_ns = 0;
    }
}

static void local_on_message(void *ctx, const struct hd_mqtt_message *m)
{
    struct hd_uplink *u = ctx;
    for (size_t i = 0; i < u->cfg->n_up; i++) {
        cleanup_free char *cloud_topic = hd_uplink_map_topic(u->cfg->up[i].from, u->cfg->up[i].to, m->topic);
        if (!cloud_topic)
            continue;
        hd_error_t err = NULL;
        /* Spooled messages always go up at QoS 1: a row leaves the spool only on a PUBACK. */
        struct hd_spool_message sm = {.topic = cloud_topic,
                                      .payload = m->payload,
                                      .len = m->payload_len,
                                      .qos = 1,
                                      .retain = m->retain,
                                      .priority = u->cfg->up[i].priority,
                                      .ttl_ms = u->cfg->up[i].ttl_ms};
        if (hd_spool_append_message(u->spool, &sm, &err) < 0) {
            uplink_fatal(u, &err);
            return;
        }
        break;
    }
    if (m->qos) {
        if (u->n_pending_acks == u->cap_pending_acks) {
            u->cap_pending_acks *= 2;
            u->pending_acks = hd_xrealloc(u->pending_acks, u->cap_pending_acks * sizeof(*u->pending_acks));
        }
        u->pending_acks[u->n_pending_acks++] = m->packet_id;
    }
}

static void local_on_puback(void *ctx, uint16_t id, uint8_t reason)
{
    struct hd_uplink *u = ctx;
    uint32_t cloud_id = u->downlink[id];
    u->downlink[id] = 0;
    if (cloud_id && u->cloud.connected)
        hd_mqtt_puback(u->cloud.client, (uint16_t)(cloud_id - 1));
}

static void local_on_disconnect(void *ctx, const char *reason)
{
    struct hd_uplink *u = ctx;
    hd_log(HD_LOG_WARN, "uplink", "local broker %s:%d: %s", u->cfg->local.host, u->cfg->local.port, reason);
    u->local.connected = false;
    /* Held acks are void: the persistent session redelivers those messages. */
    u->n_pending_acks = 0;
    for (size_t i = 0; i < 65536; i++)
        if (u->downlink[i]) {
            u->downlink[i] = 0;
            u->downlink_refused = true;
        }
    uplink_schedule_reconnect(u, &u->local);
    uplink_set_status(u, "local_connected", "0");
}

/* ---- cloud broker callbacks ---- */

static void cloud_on_connect(void *ctx, bool session_present)
{
    struct hd_uplink *u = ctx;
    u->cloud.connected = true;
    u->cloud.backoff_ms = 0;
    u->cloud_connects++;
    free(u->cloud.last_error);
    u->cloud.last_error = NULL;
    hd_log(HD_LOG_INFO, "uplink", "cloud broker %s:%d connected", u->cfg->cloud.host, u->cfg->cloud.port);
    if (u->cloud_filters)
        hd_mqtt_subscribe(u->cloud.client, uplink_take_id(u, UPLINK_ID_DIRECT), u->cloud_filters, 1);
    if (u->user.on_connect)
        u->user.on_connect(u->user.ctx);
    if (u->user_filters)
        hd_mqtt_subscribe(u->cloud.client, uplink_take_id(u, UPLINK_ID_DIRECT), u->user_filters, 1);
    uplink_cloud_status(u, true);
}

static void cloud_on_suback(void *ctx, uint16_t id, const uint8_t *codes, size_t n)
{
    struct hd_uplink *u = ctx;
    for (size_t i = 0; i < n; i++)
        if (codes[i] >= 0x80)
            hd_log(HD_LOG_WARN, "uplink", "cloud broker %s:%d refused a subscription (reason 0x%02x)",
                   u->cfg->cloud.host, u->cfg->cloud.port, codes[i]);
    if (u->inflight[id] == UPLINK_ID_DIRECT)
        u->inflight[id] = 0;
}

static bool uplink_user_topic(const struct hd_uplink *u, const char *topic)
{
    for (char **f = u->user_filters; f && *f; f++)
        if (hd_mqtt_filter_matches(*f, topic))
            return true;
    return false;
}

static void cloud_on_message(void *ctx, const struct hd_mqtt_message *m)
{
    struct hd_uplink *u = ctx;
    if (uplink_user_topic(u, m->topic)) {
        u->user.on_message(u->user.ctx, m->topic, m->payload, m->payload_len);
        if (m->qos)
            hd_mqtt_puback(u->cloud.client, m->packet_id);
        return;
    }
    cleanup_free char *local_topic = NULL;
    for (size_t i = 0; i < u->cfg->n_down && !local_topic; i++)
        local_topic = hd_uplink_map_topic(u->cfg->down[i].from, u->cfg->down[i].to, m->topic);
    if (!local_topic) {
        if (m->qos)
            hd_mqtt_puback(u->cloud.client, m->packet_id);
        return;
    }
    if (!u->local.connected) {
        /* Not acknowledged: the cloud session redelivers it (see local_on_connect). */
        u->downlink_refused = true;
        return;
    }
    u->downlink_count++;
    if (m->qos == 0) {
        hd_mqtt_publish(u->local.client, local_topic, m->payload, m->payload_len, 0, m->retain, 0, NULL, 0);
        return;
    }
    for (int tries = 0; tries < 65535; tries++) {
        uint16_t id = ++u->next_local_id ? u->next_local_id : ++u->next_local_id;
        if (!u->downlink[id]) {
            u->downlink[id] = (uint32_t)m->packet_id + 1;
            hd_mqtt_publish(u->local.client, local_topic, m->payload, m->payload_len, 1, m->retain, id, NULL, 0);
            return;
        }
    }
    u->downlink_refused = true;
}

static void cloud_on_puback(void *ctx, uint16_t id, uint8_t reason)
{
    struct hd_uplink *u = ctx;
    int64_t row = u->inflight[id];
    if (row == UPLINK_ID_DIRECT)
        u->inflight[id] = 0;
    if (row <= 0)
        return;
    u->inflight[id] = 0;
    u->inflight_count--;
    hd_error_t err = NULL;
    if (hd_spool_ack(u->spool, row, &err) < 0)
        uplink_fatal(u, &err);
}

static void cloud_on_disconnect(void *ctx, const char *reason)
{
    struct hd_uplink *u = ctx;
    hd_log(HD_LOG_WARN, "uplink", "cloud broker %s:%d: %s", u->cfg->cloud.host, u->cfg->cloud.port, reason);
    bool was_connected = u->cloud.connected;
    u->cloud.connected = false;
    free(u->cloud.last_error);
    u->cloud.last_error = hd_xstrdup(reason);
    /* Forget what was in flight: the drain restarts from the oldest row. */
    memset(u->inflight, 0, 65536 * sizeof(*u->inflight));
    u->inflight_count = 0;
    memset(&u->sent, 0, sizeof(u->sent));
    uplink_schedule_reconnect(u, &u->cloud);
    uplink_cloud_status(u, was_connected);
}

/* ---- the drain ---- */

static bool uplink_send_row(void *ctx, const struct hd_spool_row *row)
{
    struct hd_uplink *u = ctx;
    uint16_t id = uplink_take_id(u, row->id);
    u->inflight_count++;
    hd_mqtt_publish(u->cloud.client, row->topic, row->payload, row->payload_len, 1, row->retain, id, NULL, 0);
    return true;
}

static void uplink_fill_window(struct hd_uplink *u)
{
    if (!u->cloud.connected || hd_mqtt_client_pending(u->cloud.client) > (4u << 20))
        return;
    int room = u->cfg->window - u->inflight_count;
    if (room <= 0)
        return;
    hd_error_t err = NULL;
    if (hd_spool_fetch_next(u->spool, &u->sent, room, uplink_send_row, u, &err) < 0) {
        uplink_fatal(u, &err);
        return;
    }
    hd_mqtt_client_flush(u->cloud.client);
}

static void uplink_try_connect(struct hd_uplink *u, struct uplink_link *l, uint64_t now)
{
    if (hd_mqtt_client_state(l->client) != HD_MQTT_DISCONNECTED || now < l->next_attempt_ns)
        return;
    hd_error_t err = NULL;
    if (hd_mqtt_client_connect(l->client, &err) < 0) {
        hd_log(HD_LOG_WARN, "uplink", "%s broker: %s", l->name, hd_error_text(err));
        if (l == &u->cloud) {
            free(u->cloud.last_error);
            u->cloud.last_error = hd_xstrdup(hd_error_text(err));
            uplink_cloud_status(u, false);
        }
        hd_error_free(&err);
        uplink_schedule_reconnect(u, l);
    }
}

static char **uplink_filters(const struct hd_uplink_map *maps, size_t n)
{
    if (n == 0)
        return NULL;
    char **v = hd_xcalloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        v[i] = hd_xstrdup(maps[i].from);
    return v;
}

struct hd_uplink *hd_uplink_new(const struct hd_uplink_config *cfg, hd_error_t *err)
{
    struct hd_spool *spool = hd_spool_open(cfg->spool_path, &cfg->spool, err);
    if (!spool)
        return NULL;
    struct hd_uplink *u = hd_xcalloc(1, sizeof(*u));
    u->cfg = cfg;
    u->spool = spool;
    u->inflight = hd_xcalloc(65536, sizeof(*u->inflight));
    u->downlink = hd_xcalloc(65536, sizeof(*u->downlink));
    u->cap_pending_acks = 4096;
    u->pending_acks = hd_xcalloc(u->cap_pending_acks, sizeof(*u->pending_acks));
    u->local_filters = uplink_filters(cfg->up, cfg->n_up);
    u->cloud_filters = uplink_filters(cfg->down, cfg->n_down);
    static const struct hd_mqtt_callbacks local_cb = {
        .on_connect = local_on_connect,
        .on_message = local_on_message,
        .on_puback = local_on_puback,
        .on_disconnect = local_on_disconnect,
    };
    static const struct hd_mqtt_callbacks cloud_cb = {
        .on_connect = cloud_on_connect,
        .on_message = cloud_on_message,
        .on_puback = cloud_on_puback,
        .on_suback = cloud_on_suback,
        .on_disconnect = cloud_on_disconnect,
    };
    struct hd_mqtt_options local = cfg->local;
    local.clean_session = false; /* the local broker keeps our messages while we are away */
    u->local.client = hd_mqtt_client_new(&local, &local_cb, u);
    u->local.name = "local";
    u->cloud.client = hd_mqtt_client_new(&cfg->cloud, &cloud_cb, u);
    u->cloud.name = "cloud";
    char pid[32];
    snprintf(pid, sizeof(pid), "%d", cfg->status_pid ? cfg->status_pid : (int)getpid());
    uplink_set_status(u, "pid", pid);
    uplink_set_status(u, "cloud_connected", "0");
    uplink_set_status(u, "local_connected", "0");
    char since[32];
    u->cloud_since_ms = hd_wall_ms();
    snprintf(since, sizeof(since), "%lld", (long long)u->cloud_since_ms);
    uplink_set_status(u, "cloud_since_ms", since);
    if (u->fatal || hd_spool_commit(u->spool, err) < 0) {
        if (u->fatal)
            *err = get_and_reset(&u->fatal);
        hd_uplink_free(u);
        return NULL;
    }
    return u;
}

void hd_uplink_free(struct hd_uplink *u)
{
    if (!u)
        return;
    if (u->turn)
        hd_loop_cancel_defer(u->loop, u->turn);
    if (u->timer)
        hd_loop_cancel(u->loop, u->timer);
    hd_mqtt_client_free(u->local.client);
    hd_mqtt_client_free(u->cloud.client);
    if (u->spool) {
        uplink_set_status(u, "cloud_connected", "0");
        uplink_set_status(u, "local_connected", "0");
        uplink_set_status(u, "pid", "");
        hd_error_t err = NULL;
        if (hd_spool_commit(u->spool, &err) < 0)
            uplink_fatal(u, &err);
        if (u->fatal) /* a failure of this last write; an earlier one was returned already */
            hd_error_print(u->fatal, "hedge-uplink: final status");
    }
    hd_spool_close(u->spool);
    free(u->inflight);
    free(u->downlink);
    free(u->pending_acks);
    hd_strv_free(u->local_filters);
    hd_strv_free(u->cloud_filters);
    hd_strv_free(u->user_filters);
    free(u->local.last_error);
    free(u->cloud.last_error);
    hd_error_free(&u->fatal);
    free(u);
}

/* Connect what is due and arm the timer for the next turn nobody else brings. */
static void uplink_arm(struct hd_uplink *u)
{
    uint64_t now = hd_now_ns();
    uplink_try_connect(u, &u->local, now);
    uplink_try_connect(u, &u->cloud, now);
    int timeout = 1000;
    const struct uplink_link *links[2] = {&u->local, &u->cloud};
    for (int i = 0; i < 2; i++) {
        uint64_t next = links[i]->next_attempt_ns;
        if (hd_mqtt_client_state(links[i]->client) == HD_MQTT_DISCONNECTED && next > now &&
            (next - now) / 1000000 + 1 < (uint64_t)timeout)
            timeout = (int)((next - now) / 1000000 + 1);
    }
    /* Deletes-only transactions are committed within UPLINK_DELETE_COMMIT_NS. */
    if (hd_spool_in_transaction(u->spool) && timeout > 10)
        timeout = 10;
    if (u->timer)
        hd_loop_cancel(u->loop, u->timer);
    u->timer = hd_loop_timer(u->loop, timeout / 1000.0, uplink_on_timer, u);
}

/* The end of a turn: expiry and keepalive, refill the window, commit, release local PUBACKs. */
static int uplink_turn(struct hd_uplink *u, hd_error_t *err)
{
    uint64_t now = hd_now_ns();
    if (now - u->last_expire_ns > 1000000000ull) {
        u->last_expire_ns = now;
        hd_error_t e = NULL;
        if (hd_spool_expire(u->spool, hd_wall_ms(), &e) < 0)
            uplink_fatal(u, &e);
        hd_mqtt_client_tick(u->local.client, now);
        hd_mqtt_client_tick(u->cloud.client, now);
    }
    /* Refill the cloud window first: sending needs no commit, so the next
     * batch is on the wire while the commit below waits for the disk. */
    uplink_fill_window(u);
    if (u->cloud.connected)
        hd_mqtt_client_flush(u->cloud.client);
    /*
     * Commit at once when local messages wait for their PUBACK (durability
     * first); a transaction holding only deletes of acknowledged rows (and
     * counters) may wait up to UPLINK_DELETE_COMMIT_NS so a fast drain pays
     * one fsync per interval, not per turn. Losing such a transaction in a
     * crash only resends rows the cloud already has (at-least-once).
     */
    hd_error_t e = NULL;
    if (!u->fatal && hd_spool_in_transaction(u->spool) &&
        (u->n_pending_acks > 0 || now - u->last_commit_ns >= UPLINK_DELETE_COMMIT_NS)) {
        if (hd_spool_commit(u->spool, &e) < 0)
            uplink_fatal(u, &e);
        u->last_commit_ns = now;
    }
    if (u->fatal) {
        *err = get_and_reset(&u->fatal);
        return -1;
    }
    /* Durable now: let the local broker forget these messages. */
    if (u->local.connected && u->n_pending_acks)
        for (size_t i = 0; i < u->n_pending_acks; i++)
            hd_mqtt_puback(u->local.client, u->pending_acks[i]);
    u->n_pending_acks = 0;
    /* What callbacks queued (downlink publishes, cloud PUBACKs) leaves now; nothing queued: no syscall. */
    hd_mqtt_client_flush(u->local.client);
    hd_mqtt_client_flush(u->cloud.client);
    if (u->fatal) {
        *err = get_and_reset(&u->fatal);
        return -1;
    }
    return 0;
}

static void uplink_on_turn_end(struct hd_loop *loop, void *data)
{
    struct hd_uplink *u = data;
    u->turn = NULL;
    hd_error_t err = NULL;
    if (uplink_turn(u, &err) < 0) {
        /* Stopped for good: the links close, the owner hears why (and may free u after this turn). */
        u->stopped = true;
        if (u->timer)
            hd_loop_cancel(loop, u->timer);
        u->timer = NULL;
        hd_mqtt_client_close(u->local.client, false);
        hd_mqtt_client_close(u->cloud.client, false);
        if (u->on_fatal)
            u->on_fatal(u->fatal_ctx, &err);
        hd_error_free(&err);
        return;
    }
    uplink_arm(u);
}

/* Something happened in this turn: finish it at its end (once). */
static void uplink_want_turn(struct hd_uplink *u)
{
    if (u->turn == NULL && !u->stopped)
        u->turn = hd_loop_defer(u->loop, uplink_on_turn_end, u);
}

static void uplink_after_io(void *ctx)
{
    uplink_want_turn(ctx);
}

static void uplink_on_timer(struct hd_loop *loop, void *data)
{
    struct hd_uplink *u = data;
    u->timer = NULL; /* the loop frees a timer before calling it */
    uplink_want_turn(u);
}

int hd_uplink_attach(struct hd_uplink *u, struct hd_loop *loop, hd_uplink_fatal_fn on_fatal, void *ctx, hd_error_t *err)
{
    if (u->loop)
        return hd_error_set(err, EBUSY, "uplink: attached to a loop already");
    u->loop = loop;
    u->on_fatal = on_fatal;
    u->fatal_ctx = ctx;
    hd_mqtt_client_attach(u->local.client, loop, uplink_after_io);
    hd_mqtt_client_attach(u->cloud.client, loop, uplink_after_io);
    uplink_want_turn(u); /* the first turn connects both links */
    return 0;
}

void hd_uplink_close(struct hd_uplink *u)
{
    hd_mqtt_client_close(u->local.client, true);
    hd_mqtt_client_close(u->cloud.client, true);
}

int hd_uplink_get_status(struct hd_uplink *u, struct hd_uplink_status *out, hd_error_t *err)
{
    memset(out, 0, sizeof(*out));
    out->local_connected = u->local.connected;
    out->cloud_connected = u->cloud.connected;
    out->cloud_since_ms = u->cloud_since_ms;
    out->last_error = u->cloud.last_error ? u->cloud.last_error : "";
    out->reconnects = u->cloud_connects > 1 ? u->cloud_connects - 1 : 0;
    out->downlink = u->downlink_count;
    return hd_spool_stats(u->spool, &out->spool, err);
}

void hd_uplink_set_cloud_user(struct hd_uplink *u, const struct hd_uplink_cloud_user *user)
{
    hd_strv_free(u->user_filters);
    u->user_filters = NULL;
    size_t n = 0;
    while (user->filters && user->filters[n])
        n++;
    if (n) {
        u->user_filters = hd_xcalloc(n + 1, sizeof(char *));
        for (size_t i = 0; i < n; i++)
            u->user_filters[i] = hd_xstrdup(user->filters[i]);
    }
    u->user = *user;
    u->user.filters = u->user_filters;
}

bool hd_uplink_publish_direct(struct hd_uplink *u, const char *topic, const void *payload, size_t len, bool retain)
{
    if (!u->cloud.connected)
        return false;
    hd_mqtt_publish(u->cloud.client, topic, payload, len, 1, retain, uplink_take_id(u, UPLINK_ID_DIRECT), NULL, 0);
    hd_mqtt_client_flush(u->cloud.client);
    return true;
}

int hd_uplink_enqueue(struct hd_uplink *u, const struct hd_spool_message *m, hd_error_t *err)
{
    if (u->stopped)
        return hd_error_set(err, 0, "the uplink is stopped");
    if (hd_spool_append_message(u->spool, m, err) < 0)
        return -1;
    uplink_want_turn(u);
    return 0;
}
