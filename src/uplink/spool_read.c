/*
 * spool_read.c - read a spool file's stats and link status from another
 * process: hd_spool_read_status() (spool.h), behind `hedge uplink status`.
 *
 * The uplink itself (spool.c) links SQLite. This reader does not: it loads
 * libsqlite3.so.0 with dlopen() on first call and reaches it through the
 * small table below, so that `hedge`, which links this file, starts without
 * mapping SQLite (every `hedge run` would pay for it; the same reason as
 * image/archive_lazy.c and mqtt/openssl_lazy.c). The header is used for its
 * types and constants only. The file is opened read-only; the uplink writes
 * it in WAL mode, so reading never blocks the uplink.
 */
#include "uplink/spool.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "base/dynlib.h"
#include "base/util.h"

/* The SQLite calls this reader makes, each resolved from the loaded library.
 * (clang-format gives no stable layout for an X-macro list: kept by hand.) */
/* clang-format off */
#define SPOOL_SQLITE_FUNCTIONS(X) \
    X(sqlite3_open_v2) \
    X(sqlite3_close) \
    X(sqlite3_errmsg) \
    X(sqlite3_busy_timeout) \
    X(sqlite3_prepare_v2) \
    X(sqlite3_step) \
    X(sqlite3_column_int64) \
    X(sqlite3_column_text) \
    X(sqlite3_finalize)
/* clang-format on */

static struct {
#define SPOOL_SQLITE_SLOT(name) __typeof__(name) *name;
    SPOOL_SQLITE_FUNCTIONS(SPOOL_SQLITE_SLOT)
#undef SPOOL_SQLITE_SLOT
} sql;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_error[256];

static void sqlite_load_once(void)
{
    char why[160];
    void *lib = hd_dlopen("libsqlite3.so.0", why, sizeof(why));
    if (lib == NULL) {
        snprintf(load_error, sizeof(load_error), "load libsqlite3.so.0: %s (install libsqlite3-0)", why);
        return;
    }
#define SPOOL_SQLITE_RESOLVE(name) \
    *(void **)&sql.name = dlsym(lib, #name); \
    if (*(void **)&sql.name == NULL) { \
        snprintf(load_error, sizeof(load_error), "libsqlite3.so.0 has no %s", #name); \
        return; \
    }
    SPOOL_SQLITE_FUNCTIONS(SPOOL_SQLITE_RESOLVE)
#undef SPOOL_SQLITE_RESOLVE
}

static int read_error(sqlite3 *db, hd_error_t *err, const char *what)
{
    return hd_error_set(err, 0, "spool: %s: %s", what, sql.sqlite3_errmsg(db));
}

/* The counters table, by the names spool.c stores them under. */
static int64_t *counter_by_name(struct hd_spool_counters *c, const char *name)
{
    static const struct {
        const char *name;
        size_t offset;
    } fields[] = {
        {"received", offsetof(struct hd_spool_counters, received)},
        {"drained", offsetof(struct hd_spool_counters, drained)},
        {"dropped_oldest", offsetof(struct hd_spool_counters, dropped_oldest)},
        {"rejected_new", offsetof(struct hd_spool_counters, rejected_new)},
        {"expired", offsetof(struct hd_spool_counters, expired)},
    };
    for (size_t i = 0; name && i < ARRAY_SIZE(fields); i++)
        if (strcmp(name, fields[i].name) == 0)
            return (int64_t *)((char *)c + fields[i].offset);
    return NULL;
}

static int read_stats(sqlite3 *db, struct hd_spool_stats *out, hd_error_t *err)
{
    sqlite3_stmt *st;
    memset(out, 0, sizeof(*out));
    if (sql.sqlite3_prepare_v2(db, "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MIN(ts), 0) FROM spool", -1, &st,
                               NULL) != SQLITE_OK)
        return read_error(db, err, "read spool");
    if (sql.sqlite3_step(st) == SQLITE_ROW) {
        out->depth = sql.sqlite3_column_int64(st, 0);
        out->bytes = sql.sqlite3_column_int64(st, 1);
        out->oldest_ms = sql.sqlite3_column_int64(st, 2);
    }
    sql.sqlite3_finalize(st);
    if (sql.sqlite3_prepare_v2(db, "SELECT name, value FROM counters", -1, &st, NULL) != SQLITE_OK)
        return read_error(db, err, "read counters");
    while (sql.sqlite3_step(st) == SQLITE_ROW) {
        int64_t *slot = counter_by_name(&out->counters, (const char *)sql.sqlite3_column_text(st, 0));
        if (slot)
            *slot = sql.sqlite3_column_int64(st, 1);
    }
    sql.sqlite3_finalize(st);
    return 0;
}

int hd_spool_read_status(const char *path, struct hd_spool_stats *stats, char ***status_kv, hd_error_t *err)
{
    pthread_once(&load_once, sqlite_load_once);
    if (load_error[0])
        return hd_error_set(err, 0, "spool %s: %s", path, load_error);
    sqlite3 *db = NULL;
    int ret = -1;
    if (sql.sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        hd_error_set(err, ENOENT, "spool %s: %s", path, db ? sql.sqlite3_errmsg(db) : "cannot open");
        goto out;
    }
    sql.sqlite3_busy_timeout(db, 5000);
    if (read_stats(db, stats, err) < 0)
        goto out;
    sqlite3_stmt *st;
    if (sql.sqlite3_prepare_v2(db, "SELECT name, value FROM status ORDER BY name", -1, &st, NULL) != SQLITE_OK) {
        read_error(db, err, "read status");
        goto out;
    }
    *status_kv = NULL;
    while (sql.sqlite3_step(st) == SQLITE_ROW) {
        const char *k = (const char *)sql.sqlite3_column_text(st, 0);
        const char *v = (const char *)sql.sqlite3_column_text(st, 1);
        hd_strv_push(status_kv, k ? k : "");
        hd_strv_push(status_kv, v ? v : "");
    }
    sql.sqlite3_finalize(st);
    ret = 0;
out:
    sql.sqlite3_close(db);
    return ret;
}
