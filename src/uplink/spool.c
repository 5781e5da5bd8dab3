/*
 * spool.c - the uplink's durable queue in SQLite (see spool.h).
 *
 * WAL mode lets `hedge uplink status` read while the uplink writes. With
 * sync=full each commit fsyncs the WAL, so a committed row survives power
 * loss; sync=normal survives a crash of the process (kill -9) but not of the
 * machine. Each row stores its own size so the byte total is kept in memory
 * (loaded once at open) and adjusted with DELETE ... RETURNING size, never by
 * scanning the table on the hot path.
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
    bool in_txn, counters_dirty;
    bool txn_failed; /* a write of the open transaction failed: it must not commit */
    sqlite3_stmt *insert, *delete_id, *delete_oldest, *fetch, *expire, *save_counter, *set_status;
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS spool(id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL,"
    " topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL,"
    " size INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS spool_ts ON spool(ts);"
    "CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS status(name TEXT PRIMARY KEY, value TEXT);";

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
    sqlite3_stmt *all[] = {s->insert, s->delete_id,    s->delete_oldest, s->fetch,
                           s->expire, s->save_counter, s->set_status};
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
        spool_exec(s, schema, err) < 0)
        goto fail;
    if (spool_prepare(s, "INSERT INTO spool(ts, topic, payload, qos, retain, size) VALUES(?,?,?,?,?,?)", &s->insert,
                      err) < 0 ||
        spool_prepare(s, "DELETE FROM spool WHERE id = ? RETURNING size", &s->delete_id, err) < 0 ||
        spool_prepare(s, "DELETE FROM spool WHERE id = (SELECT MIN(id) FROM spool) RETURNING size", &s->delete_oldest,
                      err) < 0 ||
        spool_prepare(s, "SELECT id, ts, topic, payload, qos, retain FROM spool WHERE id > ? ORDER BY id LIMIT ?",
                      &s->fetch, err) < 0 ||
        spool_prepare(s, "DELETE FROM spool WHERE ts < ? RETURNING size", &s->expire, err) < 0 ||
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
        rows++;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return spool_write_error(s, err, "delete");
    return rows;
}

int hd_spool_append(struct hd_spool *s, const char *topic, const void *payload, size_t len, uint8_t qos, bool retain,
                    hd_error_t *err)
{
    int64_t size = (int64_t)(strlen(topic) + len);
    if (hd_spool_begin(s, err) < 0)
        return -1;
    s->counters.received++;
    s->counters_dirty = true;
    if (s->opts.max_bytes > 0 && s->bytes + size > s->opts.max_bytes) {
        if (s->opts.policy == HD_SPOOL_REJECT_NEW || size > s->opts.max_bytes) {
            s->counters.rejected_new++;
            return 1;
        }
        while (s->depth > 0 && s->bytes + size > s->opts.max_bytes) {
            int64_t n = spool_step_delete(s, s->delete_oldest, err);
            if (n < 0)
                return -1;
            if (n == 0)
                break;
            s->counters.dropped_oldest += n;
        }
    }
    sqlite3_bind_int64(s->insert, 1, hd_wall_ms());
    sqlite3_bind_text(s->insert, 2, topic, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s->insert, 3, len ? payload : "", (int)len, SQLITE_STATIC);
    sqlite3_bind_int(s->insert, 4, qos);
    sqlite3_bind_int(s->insert, 5, retain);
    sqlite3_bind_int64(s->insert, 6, size);
    int rc = sqlite3_step(s->insert);
    sqlite3_reset(s->insert);
    sqlite3_clear_bindings(s->insert);
    if (rc != SQLITE_DONE)
        return spool_write_error(s, err, "append");
    s->depth++;
    s->bytes += size;
    return 0;
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

int hd_spool_fetch(struct hd_spool *s, int64_t after_id, int limit,
                   bool (*cb)(void *ctx, const struct hd_spool_row *row), void *ctx, hd_error_t *err)
{
    sqlite3_bind_int64(s->fetch, 1, after_id);
    sqlite3_bind_int(s->fetch, 2, limit);
    int rc;
    while ((rc = sqlite3_step(s->fetch)) == SQLITE_ROW) {
        struct hd_spool_row row = {
            .id = sqlite3_column_int64(s->fetch, 0),
            .ts_ms = sqlite3_column_int64(s->fetch, 1),
            .topic = (const char *)sqlite3_column_text(s->fetch, 2),
            .payload = sqlite3_column_blob(s->fetch, 3),
            .payload_len = (size_t)sqlite3_column_bytes(s->fetch, 3),
            .qos = (uint8_t)sqlite3_column_int(s->fetch, 4),
            .retain = sqlite3_column_int(s->fetch, 5) != 0,
        };
        if (!cb(ctx, &row)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_reset(s->fetch);
    if (rc != SQLITE_DONE)
        return spool_sql_error(s->db, err, "fetch");
    return 0;
}

int64_t hd_spool_expire(struct hd_spool *s, int64_t now_ms, hd_error_t *err)
{
    if (s->opts.ttl_ms <= 0 || s->depth == 0)
        return 0;
    if (hd_spool_begin(s, err) < 0)
        return -1;
    sqlite3_bind_int64(s->expire, 1, now_ms - s->opts.ttl_ms);
    int64_t n = spool_step_delete(s, s->expire, err);
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
