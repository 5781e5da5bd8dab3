/*
 * fleet_logs.c - log forwarding to the fleet (docs/fleet.md, "Log
 * forwarding"): hedged follows the log of every deployment whose spec says
 * "logs": {"forward": ...} and hands batches of its lines to the network
 * child, which spools them for PREFIX/NODE/logs/NAME in the spool's least
 * important class (fleet_link.c).
 *
 * The log is the file the monitor writes (LOG_DIR/NAME.log, renamed to
 * NAME.log.1 past log_max_bytes and started again), whatever the isolation
 * level. Once a second this file reads what each followed log gained since
 * the last look: it keeps the file open, so the end of a file that was just
 * renamed is read before the new one, and a file that shrank (truncated) is
 * read again from its start. A deployment seen for the first time when hedged
 * starts is followed from the end of its log (what was written while hedged
 * was down is not sent); one that appears later is followed from the start of
 * its log, and one whose upgrade turns forwarding on from where its log was at
 * the last look, which is why every deployment's log size is tracked, even
 * those that do not forward.
 *
 * The bytes are cut into lines (a line longer than FLEET_LOGS_LINE_MAX is cut
 * into pieces; an unfinished last line goes out once it has not grown for
 * FLEET_LOGS_PARTIAL_MS). Each deployment has a budget of lines and bytes per
 * minute (logs.forward.lines_per_minute, bytes_per_minute); a line over it is
 * dropped and counted, and the next batch says how many in "dropped". At most
 * one batch per deployment goes out a second, of at most FLEET_LOGS_BATCH_BYTES
 * of JSON; what does not fit waits for the next second, and lines that would
 * make the waiting ones exceed FLEET_LOGS_PENDING_MAX are dropped, so hedged's
 * memory stays bounded however fast a workload writes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/json.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/util.h"
#include "daemon/daemon.h"
#include "spec/spec.h"

#define FLEET_LOGS_PERIOD_S 1.0
#define FLEET_LOGS_LINE_MAX 4096           /* a longer line is cut into pieces of this many bytes */
#define FLEET_LOGS_BATCH_BYTES 16384       /* a batch's JSON at most about this long */
#define FLEET_LOGS_PENDING_MAX (64 * 1024) /* bytes of lines waiting for a batch, per deployment */
#define FLEET_LOGS_READ_MAX (256 * 1024)   /* bytes read per deployment and second */
#define FLEET_LOGS_PARTIAL_MS 2000         /* an unfinished last line goes out when it stopped growing */
#define FLEET_LOGS_DROPS_ALONE_MS 10000    /* a batch with drops and no lines at most this often */
#define FLEET_LOGS_WINDOW_MS 60000

struct follower {
    char *name;
    char *path;
    bool forward; /* logs.forward: read and send; else only the size is tracked */
    bool seen;    /* in this tick's list of deployments */
    int64_t lines_per_minute, bytes_per_minute;
    int fd; /* the followed file, -1: none open */
    dev_t dev;
    ino_t ino;
    off_t offset;
    bool placed; /* no file open, but offset is a place in the file dev/ino (where reading starts) */
    char partial[FLEET_LOGS_LINE_MAX]; /* an unfinished line */
    size_t partial_len;
    int64_t partial_ms; /* when it last grew */
    int64_t window_ms;  /* the start of the minute the budget counts */
    int64_t window_lines, window_bytes;
    json_t *lines; /* waiting for a batch: [[unix seconds, line], ...] */
    size_t pending_bytes;
    uint64_t dropped; /* since the last batch */
    int64_t last_batch_ms;
    struct follower *next;
};

struct hd_fleet_logs {
    struct hd_loop *loop;
    struct hd_supervisor *sup;
    struct hd_netchild *net;
    struct hd_timer *timer;
    struct follower *followers;
    bool started; /* the first look is done: deployments seen from now on are new */
};

static void follower_close(struct follower *f)
{
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
}

static void follower_free(struct follower *f)
{
    follower_close(f);
    json_decref(f->lines);
    free(f->name);
    free(f->path);
    free(f);
}

/* How many bytes s takes as a JSON string (jansson's escapes, at most 6 bytes a byte). */
static size_t json_escaped_len(const char *s, size_t len)
{
    size_t n = 2;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        n += c == '"' || c == '\\' ? 2 : c < 0x20 || c == 0x7f ? 6 : 1;
    }
    return n;
}

/* A JSON string of the line: bytes that are not UTF-8 become U+FFFD, which jansson takes. */
static json_t *line_string(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    if (j)
        return j;
    char *out = hd_xcalloc(1, len * 3 + 1);
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        bool ok = n > 0 && i + n <= len;
        for (size_t k = 1; ok && k < n; k++)
            ok = ((unsigned char)s[i + k] & 0xc0) == 0x80;
        if (ok && n > 1) {
            json_t *one = json_stringn(s + i, n); /* jansson's own judgement: overlong forms, surrogates */
            ok = one != NULL;
            json_decref(one);
        }
        if (ok) {
            memcpy(out + o, s + i, n);
            o += n;
            i += n;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    j = json_stringn(out, o);
    free(out);
    return j ? j : json_string("(a line that is not UTF-8)");
}

/* One line read: within the minute's budget it waits for the next batch, else it is dropped and counted. */
static void follower_line(struct follower *f, const char *s, size_t len, int64_t now)
{
    if (now - f->window_ms >= FLEET_LOGS_WINDOW_MS) {
        f->window_ms = now;
        f->window_lines = f->window_bytes = 0;
    }
    int64_t lines_cap = f->lines_per_minute ? f->lines_per_minute : HD_LOGS_LINES_PER_MINUTE;
    int64_t bytes_cap = f->bytes_per_minute ? f->bytes_per_minute : HD_LOGS_BYTES_PER_MINUTE;
    if (f->window_lines + 1 > lines_cap || f->window_bytes + (int64_t)len > bytes_cap ||
        f->pending_bytes + json_escaped_len(s, len) > FLEET_LOGS_PENDING_MAX) {
        f->dropped++;
        return;
    }
    json_t *line = line_string(s, len);
    /* what it costs in a batch, counted again when it leaves (follower_send): the string as sent */
    size_t cost = json_escaped_len(json_string_value(line), json_string_length(line));
    f->window_lines++;
    f->window_bytes += (int64_t)len;
    json_array_append_new(f->lines, json_pack("[I,o]", (json_int_t)(now / 1000), line));
    f->pending_bytes += cost;
}

static void follower_partial_flush(struct follower *f, int64_t now)
{
    follower_line(f, f->partial, f->partial_len, now);
    f->partial_len = 0;
}

/* Bytes read from the log: complete lines go on, the rest waits in partial. */
static void follower_bytes(struct follower *f, const char *buf, size_t n, int64_t now)
{
    while (n > 0) {
        const char *nl = memchr(buf, '\n', n);
        size_t seg = nl ? (size_t)(nl - buf) : n;
        size_t used = seg;
        while (seg > 0) {
            size_t room = FLEET_LOGS_LINE_MAX - f->partial_len;
            size_t take = seg < room ? seg : room;
            memcpy(f->partial + f->partial_len, buf, take);
            f->partial_len += take;
            buf += take;
            seg -= take;
            if (f->partial_len == FLEET_LOGS_LINE_MAX)
                follower_partial_flush(f, now); /* a long line, cut */
        }
        f->partial_ms = now;
        if (nl) {
            follower_partial_flush(f, now);
            buf++;
            used++;
        }
        n -= used;
    }
}

/* Open the log at path (not following a link): 0 and its identity, or -1 when there is none yet. */
static int follower_open(struct follower *f)
{
    int fd = open(f->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -1;
    }
    follower_close(f);
    f->fd = fd;
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    return 0;
}

/* Read what the open file gained, up to *budget bytes. */
static void follower_drain(struct follower *f, size_t *budget, int64_t now)
{
    struct stat st;
    if (fstat(f->fd, &st) == 0 && st.st_size < f->offset) { /* truncated: from its start again */
        f->offset = 0;
        f->partial_len = 0;
    }
    char buf[16384];
    while (*budget > 0) {
        size_t want = *budget < sizeof(buf) ? *budget : sizeof(buf);
        ssize_t n = pread(f->fd, buf, want, f->offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        f->offset += n;
        *budget -= (size_t)n;
        follower_bytes(f, buf, (size_t)n, now);
    }
}

/* Read what the log gained since the last look: the rest of the open file, then (after a rotation) the
 * new file at the path from its start. */
static void follower_read(struct follower *f, int64_t now)
{
    size_t budget = FLEET_LOGS_READ_MAX;
    if (f->fd < 0) {
        dev_t dev = f->dev;
        ino_t ino = f->ino;
        if (follower_open(f) < 0)
            return; /* nothing written yet */
        if (!f->placed || dev != f->dev || ino != f->ino)
            f->offset = 0; /* a new file */
        f->placed = false;
    }
    follower_drain(f, &budget, now);
    if (budget == 0)
        return; /* more next second */
    struct stat st;
    if (stat(f->path, &st) == 0 && (st.st_ino != f->ino || st.st_dev != f->dev)) {
        if (f->partial_len) /* the monitor's writes are whole lines: an unfinished one ended with the file */
            follower_partial_flush(f, now);
        if (follower_open(f) == 0) {
            f->offset = 0;
            follower_drain(f, &budget, now);
        }
    }
    if (f->partial_len && now - f->partial_ms >= FLEET_LOGS_PARTIAL_MS)
        follower_partial_flush(f, now);
}

/* Send one batch: as many waiting lines as fit, and the drops since the last batch. */
static void follower_send(struct hd_fleet_logs *fl, struct follower *f, int64_t now)
{
    size_t waiting = json_array_size(f->lines);
    if (!waiting && (!f->dropped || now - f->last_batch_ms < FLEET_LOGS_DROPS_ALONE_MS))
        return;
    json_t *lines = json_array();
    size_t size = 128 + strlen(f->name), taken = 0;
    int64_t ts = now / 1000;
    for (; taken < waiting; taken++) {
        json_t *entry = json_array_get(f->lines, taken);
        json_t *line = json_array_get(entry, 1);
        size_t cost = json_escaped_len(json_string_value(line), json_string_length(line)) + 1;
        if (taken > 0 && size + cost > FLEET_LOGS_BATCH_BYTES)
            break;
        if (taken == 0)
            ts = json_integer_value(json_array_get(entry, 0));
        size += cost;
        f->pending_bytes = f->pending_bytes > cost - 1 ? f->pending_bytes - (cost - 1) : 0;
        json_array_append(lines, line);
    }
    json_t *rest = json_array(); /* what did not fit waits; one copy, not a removal per line */
    for (size_t i = taken; i < waiting; i++)
        json_array_append(rest, json_array_get(f->lines, i));
    json_decref(f->lines);
    f->lines = rest;
    json_t *batch = json_pack("{s:s,s:o,s:I,s:I}", "deployment", f->name, "lines", lines, "dropped",
                              (json_int_t)f->dropped, "ts", (json_int_t)ts);
    char *text = json_dumps(batch, JSON_COMPACT);
    json_decref(batch);
    if (text)
        hd_netchild_fleet_log(fl->net, f->name, text);
    free(text);
    f->dropped = 0;
    f->last_batch_ms = now;
}

/* Keep only a place: the end of the log as it is now (a follower that does not forward, or one seen at
 * hedged's start). */
static void follower_place(struct follower *f)
{
    struct stat st;
    follower_close(f);
    f->partial_len = 0;
    f->placed = lstat(f->path, &st) == 0 && S_ISREG(st.st_mode);
    if (!f->placed)
        return;
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    f->offset = st.st_size;
}

static struct follower *fleet_logs_find(struct hd_fleet_logs *fl, const char *name)
{
    for (struct follower *f = fl->followers; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

/* Each deployment of this tick: a new one gets a follower at the right place, a known one its caps. */
static void fleet_logs_on_deployment(void *ctx, const char *name, const struct hd_spec *spec)
{
    struct hd_fleet_logs *fl = ctx;
    struct follower *f = fleet_logs_find(fl, name);
    if (!f) {
        f = hd_xcalloc(1, sizeof(*f));
        f->name = hd_xstrdup(name);
        f->path = hd_supervisor_log_path(fl->sup, name);
        f->fd = -1;
        f->lines = json_array();
        f->next = fl->followers;
        fl->followers = f;
        if (!fl->started) /* there at hedged's start: from the end of its log */
            follower_place(f);
        /* else a deployment made since: its log from the start */
    }
    f->seen = true;
    f->lines_per_minute = spec->logs.lines_per_minute;
    f->bytes_per_minute = spec->logs.bytes_per_minute;
    if (spec->logs.forward && !f->forward) {
        f->forward = true;
        f->window_ms = hd_wall_ms();
        f->window_lines = f->window_bytes = 0;
    } else if (!spec->logs.forward && f->forward) {
        f->forward = false;
        json_array_clear(f->lines);
        f->pending_bytes = 0;
        f->partial_len = 0;
        f->dropped = 0;
    }
}

static void fleet_logs_tick(struct hd_loop *loop, void *data)
{
    struct hd_fleet_logs *fl = data;
    for (struct follower *f = fl->followers; f; f = f->next)
        f->seen = false;
    hd_supervisor_each(fl->sup, fleet_logs_on_deployment, fl);
    fl->started = true;
    int64_t now = hd_wall_ms();
    for (struct follower **p = &fl->followers; *p;) {
        struct follower *f = *p;
        if (!f->seen) { /* removed */
            *p = f->next;
            follower_free(f);
            continue;
        }
        if (f->forward) {
            follower_read(f, now);
            follower_send(fl, f, now);
        } else {
            follower_place(f);
        }
        p = &f->next;
    }
    fl->timer = hd_loop_timer(loop, FLEET_LOGS_PERIOD_S, fleet_logs_tick, fl);
}

struct hd_fleet_logs *hd_fleet_logs_new(struct hd_loop *loop, struct hd_supervisor *sup, struct hd_netchild *net)
{
    struct hd_fleet_logs *fl = hd_xcalloc(1, sizeof(*fl));
    fl->loop = loop;
    fl->sup = sup;
    fl->net = net;
    fl->timer = hd_loop_timer(loop, 0, fleet_logs_tick, fl); /* the first look: in the loop's first turn,
                                                                  after the supervisor recovered */
    return fl;
}

void hd_fleet_logs_free(struct hd_fleet_logs *fl)
{
    if (!fl)
        return;
    if (fl->timer)
        hd_loop_cancel(fl->loop, fl->timer);
    while (fl->followers) {
        struct follower *f = fl->followers;
        fl->followers = f->next;
        follower_free(f);
    }
    free(fl);
}
