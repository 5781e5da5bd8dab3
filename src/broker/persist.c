/*
 * persist.c - the broker's durable state in SQLite (STATE_DIR/broker.db, WAL):
 * retained messages, persistent sessions with their subscriptions, and the
 * QoS 1/2 messages queued or in flight toward them.
 *
 * Group commit: the first write of a dispatch round opens a transaction and
 * broker_store_commit() closes it at the end of the round, before any reply
 * of that round is written to a socket. So a QoS 1/2 PUBLISH that a persistent
 * session must receive (or a retained one) is committed before its PUBACK or
 * PUBREC leaves. With persistence_sync=normal (default) a commit survives a
 * crash or kill -9 of the broker; persistence_sync=full also fsyncs each
 * commit to survive power loss.
 *
 * A failure is never silent: when a statement or the COMMIT of a round fails,
 * the round is rolled back, the failure is logged and broker_store_commit()
 * returns -1, so that the round's acknowledgements (PUBACK, PUBREC, SUBACK,
 * CONNACK of a persistent session) do not leave: their connections are closed
 * unflushed and the clients send again. Memory keeps serving; the store no
 * longer matches it, so it is rewritten from memory (store_resync) at the end
 * of a round, at most once a second, until that succeeds. Delivery rows get
 * their ids from a counter in memory, never from SQLite: a rolled-back id is
 * never handed out twice.
 *
 * Time in the store is wall-clock seconds (message expiry); a restored offline
 * session starts its expiry interval again from the restart.
 */
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "broker/internal.h"
#include "base/util.h"

enum {
    ST_PUT_RETAINED,
    ST_DEL_RETAINED,
    ST_PUT_SESSION,
    ST_DEL_SESSION,
    ST_DEL_SUBS,
    ST_PUT_SUB,
    ST_DEL_SESSION_DELIVERIES,
    ST_PUT_DELIVERY,
    ST_UPD_DELIVERY,
    ST_DEL_DELIVERY,
    ST_PUT_QOS2,
    ST_DEL_QOS2,
    ST_DEL_SESSION_QOS2,
    ST_COUNT,
};

static const char *const statements[ST_COUNT] = {
    [ST_PUT_RETAINED] = "INSERT OR REPLACE INTO retained(topic, qos, props, payload, expires_at) VALUES (?,?,?,?,?)",
    [ST_DEL_RETAINED] = "DELETE FROM retained WHERE topic = ?",
    [ST_PUT_SESSION] = "INSERT OR REPLACE INTO sessions(client_id, expiry, username) VALUES (?,?,?)",
    [ST_DEL_SESSION] = "DELETE FROM sessions WHERE client_id = ?",
    [ST_DEL_SUBS] = "DELETE FROM subs WHERE client_id = ?",
    [ST_PUT_SUB] = "INSERT INTO subs(client_id, filter, share_group, options, sub_id) VALUES (?,?,?,?,?)",
    [ST_DEL_SESSION_DELIVERIES] = "DELETE FROM deliveries WHERE client_id = ?",
    [ST_PUT_DELIVERY] = "INSERT INTO deliveries(client_id, topic, qos, retain, props, payload, expires_at, state, "
                        "packet_id, sub_id, id) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
    [ST_UPD_DELIVERY] = "UPDATE deliveries SET state = ?, packet_id = ? WHERE id = ?",
    [ST_DEL_DELIVERY] = "DELETE FROM deliveries WHERE id = ?",
    [ST_PUT_QOS2] = "INSERT OR IGNORE INTO qos2_in(client_id, packet_id) VALUES (?,?)",
    [ST_DEL_QOS2] = "DELETE FROM qos2_in WHERE client_id = ? AND packet_id = ?",
    [ST_DEL_SESSION_QOS2] = "DELETE FROM qos2_in WHERE client_id = ?",
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS retained(topic TEXT PRIMARY KEY, qos INT, props BLOB, payload BLOB, expires_at INT);"
    "CREATE TABLE IF NOT EXISTS sessions(client_id TEXT PRIMARY KEY, expiry INT, username TEXT);"
    "CREATE TABLE IF NOT EXISTS subs(client_id TEXT, filter TEXT, share_group TEXT, options INT, sub_id INT);"
    "CREATE INDEX IF NOT EXISTS subs_client ON subs(client_id);"
    "CREATE TABLE IF NOT EXISTS deliveries(id INTEGER PRIMARY KEY AUTOINCREMENT, client_id TEXT, topic TEXT, "
    "qos INT, retain INT, props BLOB, payload BLOB, expires_at INT, state INT, packet_id INT, sub_id INT);"
    "CREATE INDEX IF NOT EXISTS deliveries_client ON deliveries(client_id);"
    "CREATE TABLE IF NOT EXISTS qos2_in(client_id TEXT, packet_id INT, PRIMARY KEY(client_id, packet_id));";

struct broker_store {
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT];
    bool in_tx;
    bool tx_failed;        /* a statement of the open transaction failed: it must not commit */
    bool round_failed;     /* a commit of this dispatch round failed: withhold the round's acks */
    bool diverged;         /* a rollback left the store behind memory: store_resync() pending */
    uint64_t resync_at_ns; /* the last attempt of store_resync() */
    int64_t next_delivery_id;
    uint64_t failures; /* failed commits since start (logged with each) */
};

static void store_report(struct hd_broker *b, const char *what)
{
    hd_log(HD_LOG_ERROR, "broker", "store %s/broker.db: %s: %s", b->cfg.state_dir, what, sqlite3_errmsg(b->store->db));
}

static sqlite3_stmt *stmt(struct hd_broker *b, int which)
{
    struct broker_store *st = b->store;
    if (!st->in_tx) {
        if (sqlite3_exec(st->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
            store_report(b, "begin");
            st->tx_failed = true;
        }
        st->in_tx = true;
    }
    sqlite3_stmt *s = st->st[which];
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return s;
}

static void run(struct hd_broker *b, sqlite3_stmt *s)
{
    if (sqlite3_step(s) != SQLITE_DONE) {
        if (!b->store->tx_failed) /* the first failure of a transaction names the cause */
            store_report(b, "write");
        b->store->tx_failed = true;
    }
    sqlite3_reset(s);
}

static int64_t wall_expiry(const struct broker_msg *m)
{
    if (!m->expire_at_ns)
        return 0;
    uint64_t now = hd_now_ns();
    uint64_t left = m->expire_at_ns > now ? (m->expire_at_ns - now) / BROKER_NS_PER_S + 1 : 0;
    return (int64_t)time(NULL) + (int64_t)left;
}

static uint64_t mono_expiry(int64_t wall)
{
    if (!wall)
        return 0;
    int64_t left = wall - (int64_t)time(NULL);
    return hd_now_ns() + (uint64_t)(left > 0 ? left : 0) * BROKER_NS_PER_S + (left > 0 ? 0 : 1);
}

/* Commit the open transaction; on any failure roll it back: 0 or -1. */
static int store_tx_end(struct hd_broker *b)
{
    struct broker_store *st = b->store;
    if (!st->in_tx)
        return 0;
    st->in_tx = false;
    bool failed = st->tx_failed;
    st->tx_failed = false;
    if (!failed && sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    if (!failed)
        store_report(b, "commit");
    /* a failed COMMIT (SQLITE_BUSY, SQLITE_FULL, an I/O error) may leave the transaction open */
    if (!sqlite3_get_autocommit(st->db) && sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL) != SQLITE_OK)
        store_report(b, "rollback");
    return -1;
}

static void store_resync(struct hd_broker *b);

int broker_store_commit(struct hd_broker *b)
{
    struct broker_store *st = b->store;
    if (!st)
        return 0;
    if (store_tx_end(b) < 0) {
        st->failures++;
        st->diverged = true;
        st->round_failed = true;
        hd_log(HD_LOG_ERROR, "broker",
               "store: transaction rolled back (%llu so far); its acknowledgements are withheld",
               (unsigned long long)st->failures);
    }
    return st->round_failed ? -1 : 0;
}

void broker_store_round_end(struct hd_broker *b)
{
    struct broker_store *st = b->store;
    if (!st)
        return;
    broker_store_commit(b);
    st->round_failed = false;
    uint64_t now = hd_now_ns();
    if (st->diverged && now - st->resync_at_ns >= BROKER_NS_PER_S) {
        st->resync_at_ns = now;
        store_resync(b);
        if (store_tx_end(b) == 0) {
            st->diverged = false;
            hd_log(HD_LOG_INFO, "broker", "store: rewritten from memory, in step again");
        }
    }
}

void broker_store_retain(struct hd_broker *b, const char *topic, struct broker_msg *m)
{
    if (!b->store)
        return;
    if (!m) {
        sqlite3_stmt *s = stmt(b, ST_DEL_RETAINED);
        sqlite3_bind_text(s, 1, topic, -1, SQLITE_STATIC);
        run(b, s);
        return;
    }
    sqlite3_stmt *s = stmt(b, ST_PUT_RETAINED);
    sqlite3_bind_text(s, 1, topic, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, m->qos);
    sqlite3_bind_blob(s, 3, m->props, (int)m->props_len, SQLITE_STATIC);
    sqlite3_bind_blob(s, 4, m->payload, (int)m->payload_len, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, wall_expiry(m));
    run(b, s);
}

void broker_store_session(struct hd_broker *b, struct broker_session *s)
{
    if (!b->store)
        return;
    sqlite3_stmt *q = stmt(b, ST_PUT_SESSION);
    sqlite3_bind_text(q, 1, s->client_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, s->expiry_interval);
    if (s->username)
        sqlite3_bind_text(q, 3, s->username, -1, SQLITE_STATIC);
    run(b, q);
    q = stmt(b, ST_DEL_SUBS);
    sqlite3_bind_text(q, 1, s->client_id, -1, SQLITE_STATIC);
    run(b, q);
    for (uint32_t i = 0; i < s->n_subs; i++) {
        q = stmt(b, ST_PUT_SUB);
        sqlite3_bind_text(q, 1, s->client_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, s->subs[i].filter, -1, SQLITE_STATIC);
        if (s->subs[i].share_group)
            sqlite3_bind_text(q, 3, s->subs[i].share_group, -1, SQLITE_STATIC);
        sqlite3_bind_int(q, 4, s->subs[i].options);
        sqlite3_bind_int64(q, 5, s->subs[i].sub_id);
        run(b, q);
    }
    if (!s->persisted) {
        s->persisted = true;
        /* deliveries queued before the session became persistent */
        for (struct broker_delivery *d = s->out_head; d; d = d->next)
            if (!d->store_id)
                broker_store_delivery_add(b, s, d);
    }
}

void broker_store_session_delete(struct hd_broker *b, struct broker_session *s)
{
    s->persisted = false;
    for (struct broker_delivery *d = s->out_head; d; d = d->next)
        d->store_id = 0;
    if (!b->store)
        return;
    static const int which[] = {ST_DEL_SESSION, ST_DEL_SUBS, ST_DEL_SESSION_DELIVERIES, ST_DEL_SESSION_QOS2};
    for (size_t i = 0; i < ARRAY_SIZE(which); i++) {
        sqlite3_stmt *q = stmt(b, which[i]);
        sqlite3_bind_text(q, 1, s->client_id, -1, SQLITE_STATIC);
        run(b, q);
    }
}

void broker_store_delivery_add(struct hd_broker *b, struct broker_session *s, struct broker_delivery *d)
{
    if (!b->store)
        return;
    struct broker_msg *m = d->msg;
    sqlite3_stmt *q = stmt(b, ST_PUT_DELIVERY);
    sqlite3_bind_text(q, 1, s->client_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, m->topic, m->topic_len, SQLITE_STATIC);
    sqlite3_bind_int(q, 3, d->qos);
    sqlite3_bind_int(q, 4, d->retain);
    sqlite3_bind_blob(q, 5, m->props, (int)m->props_len, SQLITE_STATIC);
    sqlite3_bind_blob(q, 6, m->payload, (int)m->payload_len, SQLITE_STATIC);
    sqlite3_bind_int64(q, 7, wall_expiry(m));
    sqlite3_bind_int(q, 8, d->state);
    sqlite3_bind_int(q, 9, d->packet_id);
    /* sub_id: one Subscription Identifier as an integer (0 = none), or several (overlapping subscriptions)
     * as a blob of big-endian 32-bit values; SQLite keeps a blob in an INT column as it is, so the
     * schema and older stores stay as they were */
    const uint32_t *ids;
    uint32_t n_ids = broker_delivery_sub_ids(d, &ids);
    if (n_ids <= 1) {
        sqlite3_bind_int64(q, 10, n_ids ? ids[0] : 0);
    } else {
        uint8_t *blob = hd_xmalloc(n_ids * 4);
        for (uint32_t i = 0; i < n_ids; i++) {
            blob[4 * i] = (uint8_t)(ids[i] >> 24);
            blob[4 * i + 1] = (uint8_t)(ids[i] >> 16);
            blob[4 * i + 2] = (uint8_t)(ids[i] >> 8);
            blob[4 * i + 3] = (uint8_t)ids[i];
        }
        sqlite3_bind_blob(q, 10, blob, (int)(n_ids * 4), SQLITE_TRANSIENT);
        free(blob);
    }
    d->store_id = ++b->store->next_delivery_id;
    sqlite3_bind_int64(q, 11, d->store_id);
    run(b, q);
}

void broker_store_delivery_update(struct hd_broker *b, struct broker_delivery *d)
{
    if (!b->store || !d->store_id)
        return;
    sqlite3_stmt *q = stmt(b, ST_UPD_DELIVERY);
    sqlite3_bind_int(q, 1, d->state);
    sqlite3_bind_int(q, 2, d->packet_id);
    sqlite3_bind_int64(q, 3, d->store_id);
    run(b, q);
}

void broker_store_delivery_delete(struct hd_broker *b, struct broker_delivery *d)
{
    if (!b->store || !d->store_id)
        return;
    sqlite3_stmt *q = stmt(b, ST_DEL_DELIVERY);
    sqlite3_bind_int64(q, 1, d->store_id);
    run(b, q);
    d->store_id = 0;
}

void broker_store_qos2_in(struct hd_broker *b, struct broker_session *s, uint16_t packet_id, bool add)
{
    if (!b->store || !s->persisted)
        return;
    sqlite3_stmt *q = stmt(b, add ? ST_PUT_QOS2 : ST_DEL_QOS2);
    sqlite3_bind_text(q, 1, s->client_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 2, packet_id);
    run(b, q);
}

static struct broker_msg *row_msg(sqlite3_stmt *q, int topic_col, int qos_col, int retain_col, int props_col,
                                  int payload_col, int expiry_col)
{
    const char *topic = (const char *)sqlite3_column_text(q, topic_col);
    struct broker_msg *m = broker_msg_new(
        topic, strlen(topic), sqlite3_column_blob(q, payload_col), (size_t)sqlite3_column_bytes(q, payload_col),
        sqlite3_column_blob(q, props_col), (size_t)sqlite3_column_bytes(q, props_col),
        (uint8_t)sqlite3_column_int(q, qos_col), retain_col >= 0 ? sqlite3_column_int(q, retain_col) : true);
    m->expire_at_ns = mono_expiry(sqlite3_column_int64(q, expiry_col));
    return m;
}

static int store_load(struct hd_broker *b, hd_error_t *err)
{
    sqlite3 *db = b->store->db;
    sqlite3_stmt *q;
    int rc;
    if (sqlite3_prepare_v2(db, "SELECT topic, qos, props, payload, expires_at FROM retained", -1, &q, NULL))
        goto fail;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct broker_msg *m = row_msg(q, 0, 1, -1, 2, 3, 4);
        if (!broker_msg_expired(m, hd_now_ns()))
            broker_retain_set(b, m->topic, m);
        broker_msg_unref(m);
    }
    if (sqlite3_finalize(q) != SQLITE_OK || rc != SQLITE_DONE)
        goto fail;

    if (sqlite3_prepare_v2(db, "SELECT client_id, expiry, username FROM sessions", -1, &q, NULL))
        goto fail;
    uint64_t now = hd_now_ns();
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct broker_session *s = broker_session_create(b, (const char *)sqlite3_column_text(q, 0));
        s->expiry_interval = (uint32_t)sqlite3_column_int64(q, 1);
        s->offline_since_ns = now;
        s->persisted = true;
        if (sqlite3_column_type(q, 2) == SQLITE_TEXT)
            s->username = hd_xstrdup((const char *)sqlite3_column_text(q, 2));
    }
    if (sqlite3_finalize(q) != SQLITE_OK || rc != SQLITE_DONE)
        goto fail;

    if (sqlite3_prepare_v2(db, "SELECT client_id, filter, share_group, options, sub_id FROM subs", -1, &q, NULL))
        goto fail;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct broker_session *s = broker_session_find(b, (const char *)sqlite3_column_text(q, 0));
        if (!s)
            continue;
        const char *filter = (const char *)sqlite3_column_text(q, 1);
        const char *group = (const char *)sqlite3_column_text(q, 2);
        uint8_t options = (uint8_t)sqlite3_column_int(q, 3);
        uint32_t sub_id = (uint32_t)sqlite3_column_int64(q, 4);
        bool existed;
        broker_tree_subscribe(&b->sub_root, filter, group, s, options, sub_id, &existed);
        broker_session_add_sub(s, filter, group, options, sub_id);
        b->stats.subscriptions++;
    }
    if (sqlite3_finalize(q) != SQLITE_OK || rc != SQLITE_DONE)
        goto fail;

    if (sqlite3_prepare_v2(db,
                           "SELECT id, client_id, topic, qos, retain, props, payload, expires_at, state, "
                           "packet_id, sub_id FROM deliveries ORDER BY id",
                           -1, &q, NULL))
        goto fail;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        b->store->next_delivery_id = sqlite3_column_int64(q, 0); /* ORDER BY id: the largest is last */
        struct broker_session *s = broker_session_find(b, (const char *)sqlite3_column_text(q, 1));
        if (!s)
            continue;
        struct broker_msg *m = row_msg(q, 2, 3, 4, 5, 6, 7);
        uint32_t one = 0, n_ids = 0, *many = NULL;
        if (sqlite3_column_type(q, 10) == SQLITE_BLOB) { /* several identifiers (broker_store_delivery_add) */
            const uint8_t *blob = sqlite3_column_blob(q, 10);
            n_ids = (uint32_t)sqlite3_column_bytes(q, 10) / 4;
            many = hd_xmalloc((n_ids ? n_ids : 1) * sizeof(*many));
            for (uint32_t i = 0; i < n_ids; i++)
                many[i] = (uint32_t)blob[4 * i] << 24 | (uint32_t)blob[4 * i + 1] << 16 |
                    (uint32_t)blob[4 * i + 2] << 8 | blob[4 * i + 3];
        } else {
            one = (uint32_t)sqlite3_column_int64(q, 10);
            n_ids = one ? 1 : 0;
        }
        broker_session_restore_delivery(s, m, (uint8_t)sqlite3_column_int(q, 3), sqlite3_column_int(q, 4),
                                        many ? many : &one, n_ids, (uint8_t)sqlite3_column_int(q, 8),
                                        (uint16_t)sqlite3_column_int(q, 9), sqlite3_column_int64(q, 0));
        free(many);
        broker_msg_unref(m);
    }
    if (sqlite3_finalize(q) != SQLITE_OK || rc != SQLITE_DONE)
        goto fail;

    if (sqlite3_prepare_v2(db, "SELECT client_id, packet_id FROM qos2_in", -1, &q, NULL))
        goto fail;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct broker_session *s = broker_session_find(b, (const char *)sqlite3_column_text(q, 0));
        if (s)
            broker_session_qos2_in_add(s, (uint16_t)sqlite3_column_int(q, 1));
    }
    if (sqlite3_finalize(q) != SQLITE_OK || rc != SQLITE_DONE)
        goto fail;
    return 0;
fail:
    return hd_error_set(err, 0, "store %s: load: %s", b->cfg.state_dir, sqlite3_errmsg(db));
}

static void resync_retained(void *ctx, struct broker_msg *m)
{
    struct hd_broker *b = ctx;
    broker_store_retain(b, m->topic, m);
}

/* Write all of memory into the store again, in one transaction the caller ends. */
static void store_resync(struct hd_broker *b)
{
    /* "#" does not reach retained topics starting with '$': their rows stay as they are */
    static const char *const deletes[] = {
        "DELETE FROM retained WHERE substr(topic, 1, 1) <> '$'",
        "DELETE FROM sessions",
        "DELETE FROM subs",
        "DELETE FROM deliveries",
        "DELETE FROM qos2_in",
    };
    stmt(b, ST_DEL_RETAINED); /* opens the transaction */
    for (size_t i = 0; i < ARRAY_SIZE(deletes); i++) {
        if (sqlite3_exec(b->store->db, deletes[i], NULL, NULL, NULL) != SQLITE_OK && !b->store->tx_failed) {
            store_report(b, "resync");
            b->store->tx_failed = true;
        }
    }
    broker_retain_match(b, "#", resync_retained, b);
    for (uint32_t i = 0; i < b->n_session_buckets; i++)
        for (struct broker_session *s = b->sessions[i]; s; s = s->hash_next) {
            if (!s->persisted)
                continue;
            s->persisted = false;
            for (struct broker_delivery *d = s->out_head; d; d = d->next)
                d->store_id = 0;
            broker_store_session(b, s); /* the session, its subscriptions and deliveries */
            for (uint32_t k = 0; k < s->n_qos2_in; k++)
                broker_store_qos2_in(b, s, s->qos2_in[k], true);
        }
}

int broker_store_open(struct hd_broker *b, hd_error_t *err)
{
    if (hd_mkdir_p(b->cfg.state_dir, 0700, err) < 0)
        return hd_error_prefix(err, "store");
    cleanup_free char *path = hd_xasprintf("%s/broker.db", b->cfg.state_dir);
    b->store = hd_xcalloc(1, sizeof(*b->store));
    if (sqlite3_open_v2(path, &b->store->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK)
        return hd_error_set(err, 0, "store %s: open: %s", path, sqlite3_errmsg(b->store->db));
    /* A broker killed with -9 (or its hedged, whose network child then gets SIGKILL) may still hold
     * the file's lock for a moment while the kernel tears it down: the next one waits for it while it
     * opens the store. Once serving, a busy store never blocks the loop (busy timeout 0 again, below). */
    sqlite3_busy_timeout(b->store->db, 5000);
    const char *sync = b->cfg.sync_full ? "PRAGMA synchronous=FULL;" : "PRAGMA synchronous=NORMAL;";
    char *msg = NULL;
    if (sqlite3_exec(b->store->db, "PRAGMA journal_mode=WAL;", NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(b->store->db, sync, NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(b->store->db, schema, NULL, NULL, &msg) != SQLITE_OK) {
        hd_error_set(err, 0, "store %s: %s", path, msg ? msg : "schema");
        sqlite3_free(msg);
        return -1;
    }
    for (int i = 0; i < ST_COUNT; i++)
        if (sqlite3_prepare_v2(b->store->db, statements[i], -1, &b->store->st[i], NULL) != SQLITE_OK)
            return hd_error_set(err, 0, "store %s: prepare: %s", path, sqlite3_errmsg(b->store->db));
    int r = store_load(b, err);
    sqlite3_busy_timeout(b->store->db, 0);
    return r;
}

void broker_store_close(struct hd_broker *b)
{
    if (!b->store)
        return;
    broker_store_commit(b);
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(b->store->st[i]);
    sqlite3_close(b->store->db);
    free(b->store);
    b->store = NULL;
}
