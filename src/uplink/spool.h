/*
 * spool.h - the uplink's durable store-and-forward queue (SQLite, WAL mode).
 *
 * Every upward message is one row, ids strictly increasing (AUTOINCREMENT, so
 * an id is never reused even after the tail is deleted): the id order is the
 * order the local broker delivered the messages, and the drain sends in it.
 * Writes are grouped: the caller opens a transaction with hd_spool_begin(),
 * appends and deletes any number of rows, and hd_spool_commit() makes them
 * durable in one commit (one fsync with sync=full). Only after that commit
 * does the uplink PUBACK the local broker.
 *
 * Limits: max_bytes (topic + payload bytes of all rows), ttl_ms (rows older
 * are deleted and counted as expired), and the full policy: drop-oldest
 * deletes the oldest rows to make room, reject-new refuses the new message.
 * Both are counted; the counters and the link status live in the same
 * database so `hedge uplink status` reads everything from one file.
 *
 * Priority classes: each row has a priority, 0 (most important) to 9 (least),
 * and may have its own expiry. The drain sends the most important class
 * first, each class in id order (so order is kept within a class). When the
 * spool is full under drop-oldest, a new message makes room by deleting the
 * oldest rows of the least important class at or below its own priority; it
 * never deletes more important rows, and is refused (counted as rejected)
 * when only those are left. So logs (class 9) never push telemetry or events
 * out of a full spool.
 */
#ifndef HEDGE_UPLINK_SPOOL_H
#define HEDGE_UPLINK_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

enum hd_spool_policy {
    HD_SPOOL_DROP_OLDEST,
    HD_SPOOL_REJECT_NEW,
};

#define HD_SPOOL_PRIORITIES 10      /* classes 0 (most important) .. 9 */
#define HD_SPOOL_DEFAULT_PRIORITY 5 /* a message (or uplink route) that names none */

struct hd_spool_options {
    int64_t max_bytes; /* 0 = unlimited */
    int64_t ttl_ms;    /* 0 = forever */
    enum hd_spool_policy policy;
    bool sync_full; /* fsync every commit (survives power loss), else WAL sync=NORMAL */
};

/* Counters kept in the database (monotonic over the spool's life). */
struct hd_spool_counters {
    int64_t received;       /* messages offered to the spool */
    int64_t drained;        /* deleted after the cloud acknowledged them */
    int64_t dropped_oldest; /* deleted to make room (drop-oldest) */
    int64_t rejected_new;   /* refused because full (reject-new) */
    int64_t expired;        /* deleted by the TTL */
};

struct hd_spool_stats {
    struct hd_spool_counters counters;
    int64_t depth, bytes;
    int64_t oldest_ms; /* wall-clock ms of the oldest row, 0 if empty */
};

/* One spooled message handed to the fetch callback (pointers valid during the call). */
struct hd_spool_row {
    int64_t id;
    int64_t ts_ms;
    const char *topic;
    const void *payload;
    size_t payload_len;
    uint8_t qos;
    bool retain;
    uint8_t priority;
    int64_t expires_ms; /* wall-clock ms after which the row is deleted, 0 = only the spool's ttl */
};

/* A message to append with its class and its own time to live. */
struct hd_spool_message {
    const char *topic;
    const void *payload;
    size_t len;
    uint8_t qos;
    bool retain;
    uint8_t priority; /* 0..HD_SPOOL_PRIORITIES-1 */
    int64_t ttl_ms;   /* 0 = only the spool's ttl */
};

/* The drain's position in each class: rows up to cursor[p] of class p were handed out. */
struct hd_spool_cursor {
    int64_t after_id[HD_SPOOL_PRIORITIES];
};

struct hd_spool;

struct hd_spool *hd_spool_open(const char *path, const struct hd_spool_options *opts, hd_error_t *err);
void hd_spool_close(struct hd_spool *s);

/* Open a transaction if none is open (cheap to call per message). */
int hd_spool_begin(struct hd_spool *s, hd_error_t *err);
/* Whether a transaction is open (changes not yet committed). */
bool hd_spool_in_transaction(const struct hd_spool *s);
/* Commit the open transaction (and the counters); no-op when none is open. */
int hd_spool_commit(struct hd_spool *s, hd_error_t *err);

/* Append one message of the default class. Returns 0 stored, 1 refused (reject-new, larger than the cap, or
 * only more important rows left to drop), -1 error. */
int hd_spool_append(struct hd_spool *s, const char *topic, const void *payload, size_t len, uint8_t qos, bool retain,
                    hd_error_t *err);
/* The same with a class and a time to live. */
int hd_spool_append_message(struct hd_spool *s, const struct hd_spool_message *m, hd_error_t *err);
/* Delete a row acknowledged by the cloud; counts it drained if it still existed. */
int hd_spool_ack(struct hd_spool *s, int64_t id, hd_error_t *err);
/* Rows with id > after_id in id order whatever their class, at most limit; cb returns false to stop. */
int hd_spool_fetch(struct hd_spool *s, int64_t after_id, int limit,
                   bool (*cb)(void *ctx, const struct hd_spool_row *row), void *ctx, hd_error_t *err);
/* The drain's fetch: at most limit rows not yet handed out, the most important class first, each class in id
 * order; advances the cursor past each row cb accepts (returns true). A zeroed cursor starts from the oldest. */
int hd_spool_fetch_next(struct hd_spool *s, struct hd_spool_cursor *cursor, int limit,
                        bool (*cb)(void *ctx, const struct hd_spool_row *row), void *ctx, hd_error_t *err);
/* Delete rows older than the TTL or past their own expiry; returns how many. */
int64_t hd_spool_expire(struct hd_spool *s, int64_t now_ms, hd_error_t *err);

int hd_spool_stats(struct hd_spool *s, struct hd_spool_stats *out, hd_error_t *err);
/* Link status, stored in the same database (key/value text). */
int hd_spool_set_status(struct hd_spool *s, const char *key, const char *value, hd_error_t *err);

/*
 * For readers in other processes (`hedge uplink status`): stats and status of
 * a spool file, read-only. In spool_read.c, which loads SQLite with dlopen on
 * first use, so that a program linking only it does not map libsqlite3.
 */
int hd_spool_read_status(const char *path, struct hd_spool_stats *stats, char ***status_kv, hd_error_t *err);

#endif
