/*
 * store.c - hedged's durable state in SQLite: deployments (desired state,
 * active version, restart count), every version's full spec and digest,
 * the live instances (which monitor runs which version), and an event log.
 *
 * WAL mode with synchronous=NORMAL: a kill -9 of hedged (or a power cut)
 * loses at most the last transactions, never the database; SQLite replays
 * or discards the WAL on the next open. Every multi-row change is one
 * transaction, so a restart never sees half a deploy. This file is the only
 * one that knows SQL.
 *
 * No SQLite failure is silent: writes and commits return it as an error,
 * reads that have no error out-parameter print it. A write that fails inside
 * a transaction poisons it: hd_store_commit() rolls it back and fails rather
 * than commit the other half.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sha2.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "daemon/daemon.h"
#include "base/util.h"

struct hd_store {
    sqlite3 *db;
    bool tx_failed; /* a write of the open transaction failed: it must not commit */
    hd_store_event_fn event_sink;
    void *event_ctx;
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS deployments("
    "  name TEXT PRIMARY KEY, version INTEGER NOT NULL, desired TEXT NOT NULL,"
    "  restarts INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL, state TEXT, last_error TEXT);"
    "CREATE TABLE IF NOT EXISTS versions("
    "  name TEXT NOT NULL, version INTEGER NOT NULL, spec TEXT NOT NULL, digest TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL, status TEXT NOT NULL, reason TEXT, note TEXT,"
    "  PRIMARY KEY(name, version));"
    "CREATE TABLE IF NOT EXISTS instances("
    "  id TEXT PRIMARY KEY, name TEXT NOT NULL, version INTEGER NOT NULL, role TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS events("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, name TEXT NOT NULL,"
    "  type TEXT NOT NULL, message TEXT NOT NULL);";

static int64_t unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int store_fail(struct hd_store *st, hd_error_t *err, const char *what)
{
    return hd_error_set(err, 0, "state db: %s: %s", what, sqlite3_errmsg(st->db));
}

/* A failed write: inside a transaction it must not be committed. */
static int store_write_fail(struct hd_store *st, hd_error_t *err, const char *what)
{
    if (!sqlite3_get_autocommit(st->db))
        st->tx_failed = true;
    return store_fail(st, err, what);
}

/* A failed read of a function that has no error out-parameter: say so. */
static void store_read_fail(struct hd_store *st, hd_error_t *err, const char *what)
{
    if (*err == NULL)
        store_fail(st, err, what);
    hd_error_print(*err, "hedged");
    hd_error_free(err);
}

int hd_store_open(const char *path, struct hd_store **out, hd_error_t *err)
{
    /* Specs may carry secrets in env: the DB is root's alone. SQLite gives the -wal and -shm
     * files the database file's mode, so setting it before the open covers all three. */
    static const char *const suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < ARRAY_SIZE(suffixes); i++) {
        cleanup_free char *file = hd_xasprintf("%s%s", path, suffixes[i]);
        int fd = open(file, O_RDWR | O_CLOEXEC | (i == 0 ? O_CREAT : 0), 0600);
        if (fd >= 0) {
            fchmod(fd, 0600);
            close(fd);
        }
    }
    struct hd_store *st = hd_xcalloc(1, sizeof(*st));
    if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        hd_error_set(err, 0, "state db %s: %s", path, st->db ? sqlite3_errmsg(st->db) : "out of memory");
        hd_store_close(st);
        return -1;
    }
    sqlite3_busy_timeout(st->db, 2000);
    /* A small page cache keeps the daemon's RSS low; the DB is tiny. */
    char *msg = NULL;
    if (sqlite3_exec(st->db,
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-128;"
                     "PRAGMA foreign_keys=ON;",
                     NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(st->db, schema, NULL, NULL, &msg) != SQLITE_OK) {
        hd_error_set(err, 0, "state db %s: %s", path, msg ? msg : "unknown error");
        sqlite3_free(msg);
        hd_store_close(st);
        return -1;
    }
    /* A DB left by a crash must be whole before we trust it. */
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(st->db, "PRAGMA quick_check", -1, &q, NULL) != SQLITE_OK || sqlite3_step(q) != SQLITE_ROW) {
        hd_error_set(err, 0, "state db %s: integrity check: %s", path, sqlite3_errmsg(st->db));
        sqlite3_finalize(q);
        hd_store_close(st);
        return -1;
    }
    const char *r = (const char *)sqlite3_column_text(q, 0);
    if (r == NULL || strcmp(r, "ok") != 0) {
        hd_error_set(err, 0, "state db %s: integrity check failed: %s", path, r ? r : "?");
        sqlite3_finalize(q);
        hd_store_close(st);
        return -1;
    }
    sqlite3_finalize(q);
    *out = st;
    return 0;
}

void hd_store_close(struct hd_store *st)
{
    if (st == NULL)
        return;
    sqlite3_close(st->db);
    free(st);
}

static int store_exec(struct hd_store *st, const char *sql, hd_error_t *err)
{
    char *msg = NULL;
    if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        hd_error_set(err, 0, "state db: %s: %s", sql, msg ? msg : "?");
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

int hd_store_begin(struct hd_store *st, hd_error_t *err)
{
    st->tx_failed = false;
    return store_exec(st, "BEGIN IMMEDIATE", err);
}

int hd_store_commit(struct hd_store *st, hd_error_t *err)
{
    if (st->tx_failed) {
        hd_error_set(err, 0, "state db: a write of this transaction failed: rolled back, not committed");
        hd_store_rollback(st);
        return -1;
    }
    if (store_exec(st, "COMMIT", err) == 0)
        return 0;
    hd_store_rollback(st); /* a failed COMMIT (SQLITE_BUSY, SQLITE_FULL) may leave it open */
    return -1;
}

void hd_store_rollback(struct hd_store *st)
{
    st->tx_failed = false;
    if (sqlite3_get_autocommit(st->db))
        return; /* no transaction open (never begun, committed, or already rolled back) */
    hd_error_t err = NULL;
    if (store_exec(st, "ROLLBACK", &err) < 0) {
        hd_error_print(err, "hedged");
        hd_error_free(&err);
    }
}

/*
 * Prepare sql and bind the arguments described by types: 's' text, 'i' int,
 * 'I' int64, 'n' NULL-able text. Returns NULL (err filled) on failure.
 */
static sqlite3_stmt *store_prepare(struct hd_store *st, hd_error_t *err, const char *sql, const char *types, ...)
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(st->db, sql, -1, &q, NULL) != SQLITE_OK) {
        store_fail(st, err, sql);
        return NULL;
    }
    va_list ap;
    va_start(ap, types);
    for (int i = 0; types[i]; i++) {
        int r;
        switch (types[i]) {
        case 's':
        case 'n': {
            const char *s = va_arg(ap, const char *);
            r = s ? sqlite3_bind_text(q, i + 1, s, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(q, i + 1);
            break;
        }
        case 'i': r = sqlite3_bind_int(q, i + 1, va_arg(ap, int)); break;
        default: r = sqlite3_bind_int64(q, i + 1, va_arg(ap, int64_t)); break;
        }
        if (r != SQLITE_OK) {
            va_end(ap);
            store_fail(st, err, "bind");
            sqlite3_finalize(q);
            return NULL;
        }
    }
    va_end(ap);
    return q;
}

/* Step a statement that returns no rows, and finalize it. */
static int store_run(struct hd_store *st, sqlite3_stmt *q, hd_error_t *err)
{
    if (q == NULL) { /* store_prepare filled err */
        if (!sqlite3_get_autocommit(st->db))
            st->tx_failed = true;
        return -1;
    }
    int r = sqlite3_step(q);
    sqlite3_finalize(q);
    if (r != SQLITE_DONE)
        return store_write_fail(st, err, "write");
    return 0;
}

static char *column_dup(sqlite3_stmt *q, int col)
{
    const unsigned char *s = sqlite3_column_text(q, col);
    return s ? hd_xstrdup((const char *)s) : NULL;
}

int hd_store_put_deployment(struct hd_store *st, const struct hd_store_deployment *d, hd_error_t *err)
{
    return store_run(
        st,
        store_prepare(st, err,
                      "INSERT INTO deployments(name, version, desired, restarts, created_at, state, last_error) "
                      "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(name) DO UPDATE SET "
                      "version=?2, desired=?3, restarts=?4, state=?6, last_error=?7",
                      "sisiInn", d->name, d->version, d->desired_running ? "running" : "stopped", d->restarts,
                      (int64_t)(d->created_at ? d->created_at : unix_ms()), d->state, d->last_error),
        err);
}

int hd_store_delete_deployment(struct hd_store *st, const char *name, hd_error_t *err)
{
    if (store_run(st, store_prepare(st, err, "DELETE FROM deployments WHERE name=?1", "s", name), err) < 0 ||
        store_run(st, store_prepare(st, err, "DELETE FROM versions WHERE name=?1", "s", name), err) < 0 ||
        store_run(st, store_prepare(st, err, "DELETE FROM instances WHERE name=?1", "s", name), err) < 0)
        return -1;
    return 0;
}

int hd_store_list_deployments(struct hd_store *st, struct hd_store_deployment **out, int *n, hd_error_t *err)
{
    sqlite3_stmt *q =
        store_prepare(st, err,
                      "SELECT name, version, desired, restarts, created_at, state, last_error FROM deployments "
                      "ORDER BY name",
                      "");
    if (q == NULL)
        return -1;
    struct hd_store_deployment *v = NULL;
    int count = 0, r;
    while ((r = sqlite3_step(q)) == SQLITE_ROW) {
        v = hd_xrealloc(v, (size_t)(count + 1) * sizeof(*v));
        v[count].name = column_dup(q, 0);
        v[count].version = sqlite3_column_int(q, 1);
        v[count].desired_running = strcmp((const char *)sqlite3_column_text(q, 2), "running") == 0;
        v[count].restarts = sqlite3_column_int(q, 3);
        v[count].created_at = sqlite3_column_int64(q, 4);
        v[count].state = column_dup(q, 5);
        v[count].last_error = column_dup(q, 6);
        count++;
    }
    sqlite3_finalize(q);
    if (r != SQLITE_DONE) {
        hd_store_deployments_free(v, count);
        return store_fail(st, err, "read deployments");
    }
    *out = v;
    *n = count;
    return 0;
}

void hd_store_deployments_free(struct hd_store_deployment *d, int n)
{
    for (int i = 0; i < n; i++) {
        free(d[i].name);
        free(d[i].state);
        free(d[i].last_error);
    }
    free(d);
}

int hd_store_add_version(struct hd_store *st, const char *name, int version, const char *spec_json, const char *digest,
                         const char *status, const char *note, hd_error_t *err)
{
    return store_run(st,
                     store_prepare(st, err,
                                   "INSERT INTO versions(name, version, spec, digest, created_at, status, note) "
                                   "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                                   "sissIsn", name, version, spec_json, digest, unix_ms(), status, note),
                     err);
}

int hd_store_set_version_status(struct hd_store *st, const char *name, int version, const char *status,
                                const char *reason, hd_error_t *err)
{
    return store_run(st,
                     store_prepare(st, err,
                                   "UPDATE versions SET status=?3, reason=coalesce(?4, reason) "
                                   "WHERE name=?1 AND version=?2",
                                   "sisn", name, version, status, reason),
                     err);
}

char *hd_store_version_spec(struct hd_store *st, const char *name, int version)
{
    hd_error_t err = NULL;
    sqlite3_stmt *q =
        store_prepare(st, &err, "SELECT spec FROM versions WHERE name=?1 AND version=?2", "si", name, version);
    if (q == NULL) {
        store_read_fail(st, &err, "read spec");
        return NULL;
    }
    int r = sqlite3_step(q);
    char *spec = r == SQLITE_ROW ? column_dup(q, 0) : NULL;
    if (r != SQLITE_ROW && r != SQLITE_DONE)
        store_read_fail(st, &err, "read spec");
    sqlite3_finalize(q);
    return spec;
}

int hd_store_max_version(struct hd_store *st, const char *name)
{
    hd_error_t err = NULL;
    sqlite3_stmt *q =
        store_prepare(st, &err, "SELECT coalesce(max(version), 0) FROM versions WHERE name=?1", "s", name);
    if (q == NULL) {
        store_read_fail(st, &err, "read versions");
        return 0;
    }
    int r = sqlite3_step(q);
    int v = r == SQLITE_ROW ? sqlite3_column_int(q, 0) : 0;
    if (r != SQLITE_ROW)
        store_read_fail(st, &err, "read versions");
    sqlite3_finalize(q);
    return v;
}

json_t *hd_store_history(struct hd_store *st, const char *name)
{
    hd_error_t err = NULL;
    sqlite3_stmt *q = store_prepare(st, &err,
                                    "SELECT version, created_at, digest, status, reason, note FROM versions "
                                    "WHERE name=?1 ORDER BY version",
                                    "s", name);
    json_t *a = json_array();
    if (q == NULL) {
        store_read_fail(st, &err, "read history");
        return a;
    }
    int r;
    while ((r = sqlite3_step(q)) == SQLITE_ROW) {
        json_t *o = json_pack("{s:i,s:I,s:s,s:s}", "version", sqlite3_column_int(q, 0), "created_at",
                              (json_int_t)sqlite3_column_int64(q, 1), "digest", (const char *)sqlite3_column_text(q, 2),
                              "status", (const char *)sqlite3_column_text(q, 3));
        const char *reason = (const char *)sqlite3_column_text(q, 4);
        const char *note = (const char *)sqlite3_column_text(q, 5);
        json_object_set_new(o, "reason", reason ? json_string(reason) : json_null());
        json_object_set_new(o, "note", note ? json_string(note) : json_null());
        json_array_append_new(a, o);
    }
    if (r != SQLITE_DONE)
        store_read_fail(st, &err, "read history");
    sqlite3_finalize(q);
    return a;
}

json_t *hd_store_version_images(struct hd_store *st)
{
    hd_error_t err = NULL;
    sqlite3_stmt *q = store_prepare(st, &err, "SELECT spec FROM versions ORDER BY name, version", "");
    json_t *a = json_array();
    if (q == NULL) {
        store_read_fail(st, &err, "read versions");
        return a;
    }
    int r;
    while ((r = sqlite3_step(q)) == SQLITE_ROW) {
        json_t *spec = json_loads((const char *)sqlite3_column_text(q, 0), 0, NULL);
        const char *image = json_string_value(json_object_get(spec, "image"));
        if (image)
            json_array_append_new(a, json_string(image));
        json_decref(spec);
    }
    if (r != SQLITE_DONE)
        store_read_fail(st, &err, "read versions");
    sqlite3_finalize(q);
    return a;
}

int hd_store_put_instance(struct hd_store *st, const char *id, const char *name, int version, const char *role,
                          hd_error_t *err)
{
    return store_run(st,
                     store_prepare(st, err,
                                   "INSERT OR REPLACE INTO instances(id, name, version, role) "
                                   "VALUES(?1, ?2, ?3, ?4)",
                                   "ssis", id, name, version, role),
                     err);
}

int hd_store_delete_instance(struct hd_store *st, const char *id, hd_error_t *err)
{
    return store_run(st, store_prepare(st, err, "DELETE FROM instances WHERE id=?1", "s", id), err);
}

int hd_store_list_instances(struct hd_store *st, struct hd_store_instance **out, int *n, hd_error_t *err)
{
    sqlite3_stmt *q = store_prepare(st, err, "SELECT id, name, version, role FROM instances", "");
    if (q == NULL)
        return -1;
    struct hd_store_instance *v = NULL;
    int count = 0, r;
    while ((r = sqlite3_step(q)) == SQLITE_ROW) {
        v = hd_xrealloc(v, (size_t)(count + 1) * sizeof(*v));
        v[count].id = column_dup(q, 0);
        v[count].name = column_dup(q, 1);
        v[count].version = sqlite3_column_int(q, 2);
        v[count].role = column_dup(q, 3);
        count++;
    }
    sqlite3_finalize(q);
    if (r != SQLITE_DONE) {
        hd_store_instances_free(v, count);
        return store_fail(st, err, "read instances");
    }
    *out = v;
    *n = count;
    return 0;
}

void hd_store_instances_free(struct hd_store_instance *v, int n)
{
    for (int i = 0; i < n; i++) {
        free(v[i].id);
        free(v[i].name);
        free(v[i].role);
    }
    free(v);
}

void hd_store_event(struct hd_store *st, const char *name, const char *type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cleanup_free char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        abort();
    va_end(ap);
    hd_error_t err = NULL;
    int64_t now = unix_ms();
    if (st->event_sink)
        st->event_sink(st->event_ctx, now, name, type, msg);
    if (store_run(st,
                  store_prepare(st, &err, "INSERT INTO events(time, name, type, message) VALUES(?1,?2,?3,?4)", "Isss",
                                now, name, type, msg),
                  &err) < 0) {
        hd_log_error(HD_LOG_ERROR, "store", &err);
    }
    /* Keep the event log bounded. */
    if (sqlite3_exec(st->db, "DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - 10000", NULL, NULL, NULL) !=
        SQLITE_OK) {
        store_write_fail(st, &err, "trim events");
        hd_error_print(err, "hedged");
        hd_error_free(&err);
    }
}

json_t *hd_store_events(struct hd_store *st, const char *name, int limit)
{
    hd_error_t err = NULL;
    sqlite3_stmt *q = store_prepare(st, &err,
                                    "SELECT time, name, type, message FROM (SELECT * FROM events "
                                    "WHERE ?1 IS NULL OR name=?1 ORDER BY id DESC LIMIT ?2) ORDER BY id",
                                    "ni", name, limit);
    json_t *a = json_array();
    if (q == NULL) {
        store_read_fail(st, &err, "read events");
        return a;
    }
    int r;
    while ((r = sqlite3_step(q)) == SQLITE_ROW)
        json_array_append_new(a,
                              json_pack("{s:I,s:s,s:s,s:s}", "time", (json_int_t)sqlite3_column_int64(q, 0), "name",
                                        (const char *)sqlite3_column_text(q, 1), "type",
                                        (const char *)sqlite3_column_text(q, 2), "message",
                                        (const char *)sqlite3_column_text(q, 3)));
    if (r != SQLITE_DONE)
        store_read_fail(st, &err, "read events");
    sqlite3_finalize(q);
    return a;
}

char *hd_digest(const char *data, size_t len)
{
    /* libmd, not libcrypto: mapping OpenSSL would cost hedged ~1.4 MiB of RSS for one hash */
    char hex[SHA256_DIGEST_STRING_LENGTH];
    if (SHA256Data((const uint8_t *)data, len, hex) == NULL)
        abort();
    return hd_xasprintf("sha256:%s", hex);
}

void hd_store_set_event_sink(struct hd_store *st, hd_store_event_fn fn, void *ctx)
{
    st->event_sink = fn;
    st->event_ctx = ctx;
}
