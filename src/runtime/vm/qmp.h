/*
 * qmp.h - a typed QMP (QEMU Machine Protocol) client with timeouts: the
 * control channel of the QEMU backend (status, clean quit; next: pause,
 * snapshot to file, restore, hot-plug, stats).
 *
 * QEMU listens on a unix socket (`-qmp unix:PATH,server=on,wait=off`), or
 * holds one end of a socketpair (what the backend does: no socket file). The
 * client connects (retrying until QEMU created the socket, bounded), reads the
 * greeting, sends `qmp_capabilities`, then runs one command at a time. Every
 * command carries an "id"; a reply with another id (a late reply to a command
 * that timed out) is dropped. Asynchronous events (STOP, RESUME, SHUTDOWN,
 * MIGRATION, ...) that arrive meanwhile are recorded, not returned.
 *
 * The framing is a pure reader (hd_qmp_reader): QEMU writes one JSON object
 * per line ending in CRLF. It is exposed for the unit tests.
 */
#ifndef HEDGE_VM_QMP_H
#define HEDGE_VM_QMP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/error.h"

#define HD_QMP_LINE_MAX (1u << 20) /* a reply larger than this is malformed */

/* ---- framing (pure) ------------------------------------------------------ */

struct hd_qmp_reader {
    char *buf;
    size_t len, cap;
};

/* Append n received bytes. */
void hd_qmp_reader_feed(struct hd_qmp_reader *r, const void *data, size_t n);
/*
 * Take the next whole message: 1 with *msg (a new reference to a JSON object), 0 when no whole line
 * is buffered, -1 with err when a line is not a JSON object or a line grows past HD_QMP_LINE_MAX.
 * Empty lines are skipped.
 */
int hd_qmp_reader_next(struct hd_qmp_reader *r, json_t **msg, hd_error_t *err);
void hd_qmp_reader_free(struct hd_qmp_reader *r);

enum hd_qmp_kind {
    HD_QMP_GREETING, /* {"QMP": {...}} */
    HD_QMP_RETURN,   /* {"return": ..., "id": ...} */
    HD_QMP_ERROR,    /* {"error": {"class", "desc"}, "id": ...} */
    HD_QMP_EVENT,    /* {"event": NAME, "data": ..., "timestamp": ...} */
    HD_QMP_UNKNOWN,
};
enum hd_qmp_kind hd_qmp_kind(const json_t *msg);

/* ---- the client --------------------------------------------------------- */

struct hd_qmp;

/* Connect to QEMU's QMP socket at path and negotiate capabilities, all within timeout_ms. */
int hd_qmp_connect(const char *path, int timeout_ms, struct hd_qmp **out, hd_error_t *err);
/* The same on a connected socket QEMU holds the other end of (`-chardev socket,fd=N` + `-mon
 * chardev=...,mode=control`): no socket file. Takes fd (closed by hd_qmp_close, or here on failure). */
int hd_qmp_attach(int fd, int timeout_ms, struct hd_qmp **out, hd_error_t *err);
/*
 * Run command with args (may be NULL; not stolen) and wait up to timeout_ms for its reply. On success
 * *ret (if not NULL) is a new reference to the "return" value. A QMP error becomes
 * "qmp CMD: CLASS: DESC"; a timeout or a closed socket names the command too.
 */
int hd_qmp_command(struct hd_qmp *q, const char *command, json_t *args, int timeout_ms, json_t **ret, hd_error_t *err);
/* query-status: QEMU's run state ("running", "paused", "prelaunch", "inmigrate", ...). */
int hd_qmp_query_status(struct hd_qmp *q, int timeout_ms, char **status, bool *running, hd_error_t *err);
/* quit: QEMU exits. QEMU may close the socket before its reply arrives; both count as done. */
int hd_qmp_quit(struct hd_qmp *q, int timeout_ms, hd_error_t *err);
/* Wait up to timeout_ms for an event named name (one already recorded counts and is taken). */
int hd_qmp_wait_event(struct hd_qmp *q, const char *name, int timeout_ms, hd_error_t *err);
/* How many events named name were recorded and not yet taken by hd_qmp_wait_event. */
size_t hd_qmp_event_count(const struct hd_qmp *q, const char *name);
/* QEMU's version from the greeting, "7.2.0". */
const char *hd_qmp_version(const struct hd_qmp *q);
void hd_qmp_close(struct hd_qmp *q);

#endif
