/*
 * spool.c - the uplink's durable queue in SQLite (see spool.h).
 *
 * WAL mode lets `hedge uplink status` read while the uplink writes. With
 * sync=full each commit fsyncs the WAL, so a committed row survives power
 * loss; sync=normal survives a crash of the process (kill -9) but not of the
 * machine. Each row stores its own size so the byte total is kept in memory
 * (loaded once at open) and adjusted with DELETE ... RETURNING size, never by
 * scanning the table on the hot path. The same goes for each priority
 * class's row count, which lets the drain skip empty classes.
 *
 * Files written before priority classes existed get the two columns added
 * on open (their rows take the default class and no expiry of their own).
 *
 * Every SQLite failure is returned as an error. A write that fails inside a
 * transaction poisons it: hd_spool_commit() then rolls it back instead of
 * committing half of it, reloads the totals from the file and fails, so the
 * caller never acknowledges what the spool does not hold.
 */
#include "uplink/spool.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

struct hd_spool {
    sqlite3 *db;
    struct hd_spool_options opts;
    struct hd_spool_counters counters;
    int64_t depth, bytes;
    int64_t class_depth[HD_SPOOL_PRIORITIES];
    bool in_txn, counters_dirty;
    bool txn_failed; /* a write of the open transaction failed: it must not commit */
    sqlite3_stmt *insert, *delete_id, *delete_oldest, *fetch, *fetch_class, *expire, *expire_own, *any_expired,
        *save_counter, *set_status;
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS spool(id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL,"
    " topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL,"
    " size INTEGER NOT NULL, priority INTEGER NOT NULL DEFAULT 5, expires INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS spool_ts ON spool(ts);"
    "CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS status(name TEXT PRIMARY KEY, value TEXT);";

/* Added with priority classes: older files get the columns first (spool_migrate). */
static const char schema_classes[] = "CREATE INDEX IF NOT EXISTS spool_class ON spool(priority, id);"
                                     "CREATE INDEX IF NOT EXISTS spool_expires ON spool(expires) WHERE expires > 0;";
_Static_assert(HD_SPOOL_DEFAULT_PRIORITY == 5, "the schema's column default");

static const char *const counter_names[] = {"received", "drained", "dropped_oldest", "rejected_new", "expired"};

static int64_t *counter_slot(struct hd_spool_counters *c, size_t i)
{
    int64_t *slots[] = {&c->received, &c->drained, &c->dropped_oldest, &c->rejected_new, &c->expired};
    return slots[i];
}

static int spool_sql_error(sqlite3 *db, hd_error_t *err, const char *what)
{
    return hd_error_set(err, 0, "spool: %s: %s", what, db ? sqlite3_errmsg(db) : "out of memory");
}

/* A failed write inside the open transaction. */
static int spool_write_error(struct hd_spool *s, hd_error_t *err, const char *what)
{
    if (s->in_txn)
        s->txn_failed = true;
    return spool_sql_error(s->db, err, what);
}

static int spool_exec(struct hd_spool *s, const char *sql, hd_error_t *err)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        hd_error_set(err, 0, "spool: %s: %s", sql, msg ? msg : "?");
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int spool_prepare(struct hd_spool *s, const char *sql, sqlite3_stmt **st, hd_error_t *err)
{
    if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK)
        return spool_sql_error(s->db, err, sql);
    return 0;
}

void hd_spool_close(struct hd_spool *s)
{
    if (!s)
        return;
    /* uncommitted changes are dropped by design (the caller did not commit them); closing the
     * connection rolls back as well, so a failure of this ROLLBACK loses nothing more */
    if (s->in_txn)
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_stmt *all[] = {s->insert, s->delete_id,  s->delete_oldest, s->fetch,        s->fetch_class,
                           s->expire, s->expire_own, s->any_expired,   s->save_counter, s->set_status};
    for (size_t i = 0; i < ARRAY_SIZE(all); i++)
        sqlite3_finalize(all[i]);
    sqlite3_close(s->db);
    free(s);
}

static int spool_load(struct hd_spool *s, hd_error_t *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM spool", -1, &st, NULL) != SQLITE_OK)
        return spool_sql_error(s->db, err, "count rows");
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        s->depth = sqlite3_column_int64(st, 0);
        s->bytes = sqlite3_column_int64(st, 1);
    }
    if (sqlite3_finalize(st) != SQLITE_OK || rc != SQLITE_ROW)
        return spool_sql_error(s->db, err, "count rows");
    memset(s->class_depth, 0, sizeof(s->class_depth));
    if (sqlite3_prepare_v2(s->db, "SELECT priority, COUNT(*) FROM spool GROUP BY priority", -1, &st, NULL) != SQLITE_OK)
        return spool_sql_error(s->db, err, "count classes");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t p = sqlite3_column_int64(st, 0);
        if (p >= 0 && p < HD_SPOOL_PRIORITIES)
            s->class_depth[p] = sqlite3_column_int64(st, 1);
    }
    if (sqlite3_finalize(st) != SQLITE_OK || rc != SQLITE_DONE)
        return spool_sql_error(s->db, err, "count classes");
    if (sqlite3_prepare_v2(s->db, "SELECT name, value FROM counters", -1, &st, NULL) != SQLITE_OK)
        return spool_sql_error(s->db, err, "load counters");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        for (size_t i = 0; i < ARRAY_SIZE(counter_names); i++)
            if (name && strcmp(name, counter_names[i]) == 0)
                *counter_slot(&s->counters, i) = sqlite3_column_int64(st, 1);
    }
    if (sqlite3_finalize(st) != SQLITE_OK || rc != SQLITE_DONE)
        return spool_sql_error(s->db, err, "load counters");
    return 0;
}

/* A spool file from before priority classes: add the columns (its rows keep the default class). */
static int spool_migrate(struct hd_spool *s, hd_error_t *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, "SELECT priority, expires FROM spool LIMIT 0", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_finalize(st);
        return 0;
    }
    sqlite3_finalize(st);
    return spool_exec(s,
                      "BEGIN IMMEDIATE;"
                      "ALTER TABLE spool ADD COLUMN priority INTEGER NOT NULL DEFAULT 5;"
                      "ALTER TABLE spool ADD COLUMN expires INTEGER NOT NULL DEFAULT 0;"
                      "COMMIT;",
                      err);
}

struct hd_spool *hd_spool_open(const char *path, const struct hd_spool_options *opts, hd_error_t *err)
{
    struct hd_spool *s = hd_xcalloc(1, sizeof(*s));
    s->opts = *opts;
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        hd_error_set(err, 0, "spool: open %s: %s", path, s->db ? sqlite3_errmsg(s->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(s->db, 5000);
    if (spool_exec(s, "PRAGMA journal_mode=WAL", err) < 0 ||
        spool_exec(s, opts->sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL", err) < 0 ||
        spool_exec(s, schema, err) < 0 || spool_migrate(s, err) < 0 || spool_exec(s, schema_classes, err) < 0)
        goto fail;
    /* delete_oldest: the oldest row of the least important class at or below the new row's priority */
    if (spool_prepare(s,
                      "INSERT INTO spool(ts, topic, payload, qos, retain, size, priority, expires)"
                      " VALUES(?,?,?,?,?,?,?,?)",
                      &s->insert, err) < 0 ||
        spool_prepare(s, "DELETE FROM spool WHERE id = ? RETURNING size, priority", &s->delete_id, err) < 0 ||
        spool_prepare(s,
                      "DELETE FROM spool WHERE id = (SELECT MIN(id) FROM spool WHERE priority ="
                      " (SELECT MAX(priority) FROM spool WHERE priority >= ?)) RETURNING size, priority",
                      &s->delete_oldest, err) < 0 ||
        spool_prepare(s,
                      "SELECT id, ts, topic, payload, qos, retain, priority, expires FROM spool WHERE id > ?"
                      " ORDER BY id LIMIT ?",
                      &s->fetch, err) < 0 ||
        spool_prepare(s,
                      "SELECT id, ts, topic, payload, qos, retain, priority, expires FROM spool"
                      " WHERE priority = ? AND id > ? ORDER BY id LIMIT ?",
                      &s->fetch_class, err) < 0 ||
        spool_prepare(s, "DELETE FROM spool WHERE ts < ? RETURNING size, priority", &s->expire, err) < 0 ||
        spool_prepare(s, "DELETE FROM spool WHERE expires > 0 AND expires <= ? RETURNING size, priority",
                      &s->expire_own, err) < 0 ||
        spool_prepare(s, "SELECT 1 FROM spool WHERE expires > 0 AND expires <= ? LIMIT 1", &s->any_expired, err) < 0 ||
        spool_prepare(s, "INSERT OR REPLACE INTO counters(name, value) VALUES(?, ?)", &s->save_counter, err) < 0 ||
        spool_prepare(s, "INSERT OR REPLACE INTO status(name, value) VALUES(?, ?)", &s->set_status, err) < 0)
        goto fail;
    if (spool_load(s, err) < 0)
        goto fail;
    return s;
fail:
    hd_spool_close(s);
    return NULL;
}

int hd_spool_begin(struct hd_spool *s, hd_error_t *err)
{
    if (s->in_txn)
        return 0;
    if (spool_exec(s, "BEGIN IMMEDIATE", err) < 0)
        return -1;
    s->in_txn = true;
    return 0;
}

static int spool_save_counters(struct hd_spool *s, hd_error_t *err)
{
    for (size_t i = 0; i < ARRAY_SIZE(counter_names); i++) {
        sqlite3_bind_text(s->save_counter, 1, counter_names[i], -1, SQLITE_STATIC);
        sqlite3_bind_int64(s->save_counter, 2, *counter_slot(&s->counters, i));
        int rc = sqlite3_step(s->save_counter);
        sqlite3_reset(s->save_counter);
        if (rc != SQLITE_DONE)
            return spool_write_error(s, err, "save counters");
    }
    s->counters_dirty = false;
    return 0;
}

bool hd_spool_in_transaction(const struct hd_spool *s)
{
    return s->in_txn;
}

int hd_spool_commit(struct hd_spool *s, hd_error_t *err)
{
    if (!s->in_txn)
        return 0;
    if (s->txn_failed)
        hd_error_set(err, 0, "spool: a write of this transaction failed: not committed");
    else if ((!s->counters_dirty || spool_save_counters(s, err) == 0) && spool_exec(s, "COMMIT", err) == 0) {
        s->in_txn = false;
        return 0;
    }
    /* a failed COMMIT (SQLITE_BUSY, SQLITE_FULL, an I/O error) may leave the transaction open */
    hd_error_t again = NULL;
    if (!sqlite3_get_autocommit(s->db) && spool_exec(s, "ROLLBACK", &again) < 0)
        hd_error_prefix(err, "%s; after", hd_error_text(again));
    hd_error_free(&again);
    s->in_txn = s->txn_failed = false;
    /* The in-memory totals and counters may now be ahead of the file: reload them. */
    if (spool_load(s, &again) < 0)
        hd_error_prefix(err, "%s; after", hd_error_text(again));
    hd_error_free(&again);
    return -1;
}

/* Step a DELETE ... RETURNING size statement to the end; returns rows deleted or -1. */
static int64_t spool_step_delete(struct hd_spool *s, sqlite3_stmt *st, hd_error_t *err)
{
    int64_t rows = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        s->bytes -= sqlite3_column_int64(st, 0);
        s->depth--;
        int64_t p = sqlite3_column_int64(st, 1);
        if (p >= 0 && p < HD_SPOOL_PRIORITIES)
            s->class_depth[p]--;
        rows++;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return spool_write_error(s, err, "delete");
    return rows;
}

int hd_spool_append_message(struct hd_spool *s, const struct hd_spool_message *m, hd_error_t *err)
{
    if (m->priority >= HD_SPOOL_PRIORITIES)
        return hd_error_set(err, EINVAL, "spool: priority %u is not 0..%d", m->priority, HD_SPOOL_PRIORITIES - 1);
    int64_t size = (int64_t)(strlen(m->topic) + m->len);
    if (hd_spool_begin(s, err) < 0)
        return -1;
    s->counters.received++;
    s->counters_dirty = true;
    if (s->opts.max_bytes > 0 && s->bytes + size > s->opts.max_bytes) {
        if (s->opts.policy == HD_SPOOL_REJECT_NEW || size > s->opts.max_bytes) {
            s->counters.rejected_new++;
            return 1;
        }
        /* Make room from the least important class at or below this one; never from a more important one. */
        sqlite3_bind_int(s->delete_oldest, 1, m->priority);
        while (s->depth > 0 && s->bytes + size > s->opts.max_bytes) {
            int64_t n = spool_step_delete(s, s->delete_oldest, err);
            if (n < 0)
                return -1;
            if (n == 0)
                break;
            s->counters.dropped_oldest += n;
        }
        sqlite3_clear_bindings(s->delete_oldest);
        if (s->bytes + size > s->opts.max_bytes) {
            s->counters.rejected_new++;
            return 1;
        }
    }
    int64_t now = hd_wall_ms();
    sqlite3_bind_int64(s->insert, 1, now);
    sqlite3_bind_text(s->insert, 2, m->topic, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s->insert, 3, m->len ? m->payload : "", (int)m->len, SQLITE_STATIC);
    sqlite3_bind_int(s->insert, 4, m->qos);
    sqlite3_bind_int(s->insert, 5, m->retain);
    sqlite3_bind_int64(s->insert, 6, size);
    sqlite3_bind_int(s->insert, 7, m->priority);
    sqlite3_bind_int64(s->insert, 8, m->ttl_ms > 0 ? now + m->ttl_ms : 0);
    int rc = sqlite3_step(s->insert);
    sqlite3_reset(s->insert);
    sqlite3_clear_bindings(s->insert);
    if (rc != SQLITE_DONE)
        return spool_write_error(s, err, "append");
    s->depth++;
    s->bytes += size;
    s->class_depth[m->priority]++;
    return 0;
}

int hd_spool_append(struct hd_spool *s, const char *topic, const void *payload, size_t len, uint8_t qos, bool retain,
                    hd_error_t *err)
{
    struct hd_spool_message m = {.topic = topic,
                                 .payload = payload,
                                 .len = len,
                                 .qos = qos,
                                 .retain = retain,
                                 .priority = HD_SPOOL_DEFAULT_PRIORITY};
    return hd_spool_append_message(s, &m, err);
}

int hd_spool_ack(struct hd_spool *s, int64_t id, hd_error_t *err)
{
    if (hd_spool_begin(s, err) < 0)
        return -1;
    sqlite3_bind_int64(s->delete_id, 1, id);
    int64_t n = spool_step_delete(s, s->delete_id, err);
    if (n < 0)
        return -1;
    if (n > 0) {
        s->counters.drained += n;
        s->counters_dirty = true;
    }
    return 0;
}

/* Step a fetch statement, handing each row to cb; the cursor (if any) moves past each accepted row.
 * Returns the rows accepted, or -1. */
static int spool_step_fetch(struct hd_spool *s, sqlite3_stmt *st, struct hd_spool_cursor *cursor,
                            bool (*cb)(void *ctx, const struct hd_spool_row *row), void *ctx, bool *stopped,
                            hd_error_t *err)
{
    int rc, accepted = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct hd_spool_row row = {
            .id = sqlite3_column_int64(st, 0),
            .ts_ms = sqlite3_column_int64(st, 1),
            .topic = (const char *)sqlite3_column_text(st, 2),
            .payload = sqlite3_column_blob(st, 3),
            .payload_len = (size_t)sqlite3_column_bytes(st, 3),
            .qos = (uint8_t)sqlite3_column_int(st, 4),
            .retain = sqlite3_column_int(st, 5) != 0,
            .priority = (uint8_t)sqlite3_column_int(st, 6),
            .expires_ms = sqlite3_column_int64(st, 7),
        };
        if (!cb(ctx, &row)) {
            *stopped = true;
            rc = SQLITE_DONE;
            break;
        }
        accepted++;
        if (cursor && row.priority < HD_SPOOL_PRIORITIES)
            cursor->after_id[row.priority] = row.id;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return spool_sql_error(s->db, err, "fetch");
    return accepted;
}

int hd_spool_fetch(struct hd_spool *s, int64_t after_id, int limit,
                   bool (*cb)(void *ctx, const struct hd_spool_row *row), void *ctx, hd_error_t *err)
{
    sqlite3_bind_int64(s->fetch, 1, after_id);
    sqlite3_bind_int(s->fetch, 2, limit);
    bool stopped = false;
    return spool_step_fetch(s, s->fetch, NULL, cb, ctx, &stopped, err) < 0 ? -1 : 0;
}

int hd_spool_fetch_next(struct hd_spool *s, struct hd_spool_cursor *cursor, int limit,
                        bool (*cb)(void *ctx, const struct hd_spool_row *row), void *ctx, hd_error_t *err)
{
    bool stopped = false;
    for (int p = 0; p < HD_SPOOL_PRIORITIES && limit > 0 && !stopped; p++) {
        if (s->class_depth[p] <= 0)
            continue;
        sqlite3_bind_int(s->fetch_class, 1, p);
        sqlite3_bind_int64(s->fetch_class, 2, cursor->after_id[p]);
        sqlite3_bind_int(s->fetch_class, 3, limit);
        int n = spool_step_fetch(s, s->fetch_class, cursor, cb, ctx, &stopped, err);
        if (n < 0)
            return -1;
        limit -= n;
    }
    return 0;
}

int64_t hd_spool_expire(struct hd_spool *s, int64_t now_ms, hd_error_t *err)
{
    if (s->depth == 0)
        return 0;
    if (s->opts.ttl_ms <= 0) {
        /* no transaction (and no commit) unless a row's own time to live is up */
        sqlite3_bind_int64(s->any_expired, 1, now_ms);
        int rc = sqlite3_step(s->any_expired);
        sqlite3_reset(s->any_expired);
        if (rc == SQLITE_DONE)
            return 0;
        if (rc != SQLITE_ROW)
            return spool_sql_error(s->db, err, "look for expired rows");
    }
    if (hd_spool_begin(s, err) < 0)
        return -1;
    int64_t n = 0;
    if (s->opts.ttl_ms > 0) {
        sqlite3_bind_int64(s->expire, 1, now_ms - s->opts.ttl_ms);
        n = spool_step_delete(s, s->expire, err);
    }
    if (n >= 0) {
        /* rows with their own time to live (uses the partial index on expires) */
        sqlite3_bind_int64(s->expire_own, 1, now_ms);
        int64_t own = spool_step_delete(s, s->expire_own, err);
        n = own < 0 ? -1 : n + own;
    }
    if (n > 0) {
        s->counters.expired += n;
        s->counters_dirty = true;
    }
    return n;
}

int hd_spool_set_status(struct hd_spool *s, const char *key, const char *value, hd_error_t *err)
{
    if (hd_spool_begin(s, err) < 0)
        return -1;
    sqlite3_bind_text(s->set_status, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->set_status, 2, value, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s->set_status);
    sqlite3_reset(s->set_status);
    if (rc != SQLITE_DONE)
        return spool_write_error(s, err, "set status");
    return 0;
}

int hd_spool_stats(struct hd_spool *s, struct hd_spool_stats *out, hd_error_t *err)
{
    /* The totals from memory (exact after every append and delete): a /metrics scrape of a
     * million-row spool costs one index lookup (MIN over spool_ts), not a table scan. */
    memset(out, 0, sizeof(*out));
    out->counters = s->counters;
    out->depth = s->depth;
    out->bytes = s->bytes;
    if (s->depth == 0)
        return 0;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT COALESCE(MIN(ts), 0) FROM spool", -1, &st, NULL) != SQLITE_OK)
        return spool_sql_error(s->db, err, "read spool");
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        out->oldest_ms = sqlite3_column_int64(st, 0);
    if (sqlite3_finalize(st) != SQLITE_OK || rc != SQLITE_ROW)
        return spool_sql_error(s->db, err, "read spool");
    return 0;
}
