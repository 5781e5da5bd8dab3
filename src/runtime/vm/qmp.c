/*
 * qmp.c - the QMP client of the QEMU backend (see qmp.h).
 *
 * One blocking-free socket, one deadline per call: every wait is a poll()
 * bounded by what is left of the caller's timeout, so a QEMU that hangs or
 * never answers costs the caller its timeout, never more. Replies are matched
 * by "id"; events are kept in a small ring by name for hd_qmp_wait_event.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/util.h"
#include "runtime/vm/qmp.h"

#define QMP_EVENTS_KEPT 64

struct hd_qmp {
    int fd;
    char *path;
    struct hd_qmp_reader reader;
    unsigned long next_id;
    char version[32];
    char *events[QMP_EVENTS_KEPT]; /* names of recorded events not yet taken, oldest first */
    size_t n_events;
};

/* ---- framing -------------------------------------------------------------- */

void hd_qmp_reader_feed(struct hd_qmp_reader *r, const void *data, size_t n)
{
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n + 1)
            cap *= 2;
        r->buf = hd_xrealloc(r->buf, cap);
        r->cap = cap;
    }
    memcpy(r->buf + r->len, data, n);
    r->len += n;
}

int hd_qmp_reader_next(struct hd_qmp_reader *r, json_t **msg, hd_error_t *err)
{
    for (;;) {
        char *nl = r->len ? memchr(r->buf, '\n', r->len) : NULL;
        if (nl == NULL) {
            if (r->len > HD_QMP_LINE_MAX)
                return hd_error_set(err, EMSGSIZE, "qmp: a message longer than %u bytes", HD_QMP_LINE_MAX);
            return 0;
        }
        size_t line_len = (size_t)(nl - r->buf);
        size_t used = line_len + 1;
        if (line_len && r->buf[line_len - 1] == '\r')
            line_len--;
        json_t *value = NULL;
        json_error_t jerr;
        bool blank = true;
        for (size_t i = 0; i < line_len && blank; i++)
            blank = r->buf[i] == ' ' || r->buf[i] == '\t' || r->buf[i] == '\r';
        if (!blank)
            value = json_loadb(r->buf, line_len, JSON_REJECT_DUPLICATES, &jerr);
        memmove(r->buf, r->buf + used, r->len - used);
        r->len -= used;
        if (blank)
            continue;
        if (value == NULL)
            return hd_error_set(err, EBADMSG, "qmp: malformed message: %s", jerr.text);
        if (!json_is_object(value)) {
            json_decref(value);
            return hd_error_set(err, EBADMSG, "qmp: malformed message: not a JSON object");
        }
        *msg = value;
        return 1;
    }
}

void hd_qmp_reader_free(struct hd_qmp_reader *r)
{
    free(r->buf);
    memset(r, 0, sizeof(*r));
}

enum hd_qmp_kind hd_qmp_kind(const json_t *msg)
{
    if (json_object_get(msg, "QMP"))
        return HD_QMP_GREETING;
    if (json_object_get(msg, "return"))
        return HD_QMP_RETURN;
    if (json_is_object(json_object_get(msg, "error")))
        return HD_QMP_ERROR;
    if (json_is_string(json_object_get(msg, "event")))
        return HD_QMP_EVENT;
    return HD_QMP_UNKNOWN;
}

/* ---- the client ------------------------------------------------------------ */

static uint64_t now_ms(void)
{
    return hd_now_ns() / 1000000u;
}

static int remaining_ms(uint64_t deadline)
{
    uint64_t now = now_ms();
    return now >= deadline ? 0 : (int)(deadline - now);
}

static void record_event(struct hd_qmp *q, const json_t *msg)
{
    if (q->n_events == QMP_EVENTS_KEPT) { /* keep the newest */
        free(q->events[0]);
        memmove(q->events, q->events + 1, (QMP_EVENTS_KEPT - 1) * sizeof(char *));
        q->n_events--;
    }
    q->events[q->n_events++] = hd_xstrdup(json_string_value(json_object_get(msg, "event")));
}

/* Read one message before deadline. 0 with *msg, or -1 with err naming what (for which command). */
static int read_message(struct hd_qmp *q, const char *what, uint64_t deadline, json_t **msg, hd_error_t *err)
{
    for (;;) {
        int r = hd_qmp_reader_next(&q->reader, msg, err);
        if (r < 0)
            return hd_error_prefix(err, "qmp %s", what);
        if (r > 0)
            return 0;
        int wait = remaining_ms(deadline);
        if (wait == 0)
            return hd_error_set(err, ETIMEDOUT, "qmp %s: no answer from QEMU", what);
        struct pollfd p = {.fd = q->fd, .events = POLLIN};
        int pr = poll(&p, 1, wait);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr < 0)
            return hd_error_sys(err, "qmp %s: poll", what);
        if (pr == 0)
            continue;
        char buf[8192];
        ssize_t n = recv(q->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            return hd_error_sys(err, "qmp %s: read", what);
        if (n == 0)
            return hd_error_set(err, EPIPE, "qmp %s: QEMU closed the connection", what);
        hd_qmp_reader_feed(&q->reader, buf, (size_t)n);
    }
}

static int send_line(struct hd_qmp *q, const char *what, const char *text, uint64_t deadline, hd_error_t *err)
{
    size_t len = strlen(text);
    while (len) {
        ssize_t n = send(q->fd, text, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = q->fd, .events = POLLOUT};
            int wait = remaining_ms(deadline);
            if (wait == 0 || poll(&p, 1, wait) == 0)
                return hd_error_set(err, ETIMEDOUT, "qmp %s: QEMU does not take the command", what);
            continue;
        }
        if (n < 0)
            return hd_error_sys(err, "qmp %s: send", what);
        text += n;
        len -= (size_t)n;
    }
    return 0;
}

static int command_until(struct hd_qmp *q, const char *command, json_t *args, uint64_t deadline, json_t **ret,
                         hd_error_t *err)
{
    unsigned long id = ++q->next_id;
    json_t *req = json_pack("{s:s, s:I}", "execute", command, "id", (json_int_t)id);
    if (req == NULL)
        return hd_error_set(err, ENOMEM, "qmp %s: build the command", command);
    if (args)
        json_object_set(req, "arguments", args);
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (text == NULL)
        return hd_error_set(err, ENOMEM, "qmp %s: encode the command", command);
    cleanup_free char *line = hd_xasprintf("%s\n", text);
    free(text);
    if (send_line(q, command, line, deadline, err) < 0)
        return -1;
    for (;;) {
        json_t *msg = NULL;
        if (read_message(q, command, deadline, &msg, err) < 0)
            return -1;
        enum hd_qmp_kind kind = hd_qmp_kind(msg);
        json_t *msg_id = json_object_get(msg, "id");
        if (kind == HD_QMP_EVENT) {
            record_event(q, msg);
        } else if ((kind == HD_QMP_RETURN || kind == HD_QMP_ERROR) && json_is_integer(msg_id) &&
                   (unsigned long)json_integer_value(msg_id) == id) {
            if (kind == HD_QMP_ERROR) {
                json_t *e = json_object_get(msg, "error");
                const char *class = json_string_value(json_object_get(e, "class"));
                const char *desc = json_string_value(json_object_get(e, "desc"));
                hd_error_set(err, 0, "qmp %s: %s: %s", command, class ? class : "unknown class",
                             desc ? desc : "no description");
                json_decref(msg);
                return -1;
            }
            if (ret)
                *ret = json_incref(json_object_get(msg, "return"));
            json_decref(msg);
            return 0;
        }
        /* else: a late reply to an earlier command, or something unknown: dropped */
        json_decref(msg);
    }
}

int hd_qmp_command(struct hd_qmp *q, const char *command, json_t *args, int timeout_ms, json_t **ret, hd_error_t *err)
{
    return command_until(q, command, args, now_ms() + (uint64_t)timeout_ms, ret, err);
}

static int qmp_handshake(int fd, const char *path, uint64_t deadline, struct hd_qmp **out, hd_error_t *err);

int hd_qmp_connect(const char *path, int timeout_ms, struct hd_qmp **out, hd_error_t *err)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(addr.sun_path))
        return hd_error_set(err, ENAMETOOLONG, "qmp: socket path %s is too long", path);
    strcpy(addr.sun_path, path);
    int fd;
    for (;;) { /* QEMU creates the socket early in its start: wait for it, bounded */
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return hd_error_sys(err, "qmp: socket");
        if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0)
            break;
        int e = errno;
        close(fd);
        if ((e != ENOENT && e != ECONNREFUSED && e != EINTR) || remaining_ms(deadline) == 0)
            return hd_error_set(err, e, "qmp: connect to %s", path);
        usleep(2000);
    }
    return qmp_handshake(fd, path, deadline, out, err);
}

int hd_qmp_attach(int fd, int timeout_ms, struct hd_qmp **out, hd_error_t *err)
{
    return qmp_handshake(fd, "a socket", now_ms() + (uint64_t)timeout_ms, out, err);
}

/* Greeting and capabilities on a connected fd (owned from here on). */
static int qmp_handshake(int fd, const char *path, uint64_t deadline, struct hd_qmp **out, hd_error_t *err)
{
    struct hd_qmp *q = hd_xcalloc(1, sizeof(*q));
    q->fd = fd;
    q->path = hd_xstrdup(path);
    json_t *greeting = NULL;
    if (read_message(q, "greeting", deadline, &greeting, err) < 0)
        goto fail;
    if (hd_qmp_kind(greeting) != HD_QMP_GREETING) {
        json_decref(greeting);
        hd_error_set(err, EBADMSG, "qmp: %s: the first message is not QMP's greeting", path);
        goto fail;
    }
    json_t *v = json_object_get(json_object_get(json_object_get(greeting, "QMP"), "version"), "qemu");
    snprintf(q->version, sizeof(q->version), "%lld.%lld.%lld",
             (long long)json_integer_value(json_object_get(v, "major")),
             (long long)json_integer_value(json_object_get(v, "minor")),
             (long long)json_integer_value(json_object_get(v, "micro")));
    json_decref(greeting);
    if (command_until(q, "qmp_capabilities", NULL, deadline, NULL, err) < 0)
        goto fail;
    *out = q;
    return 0;
fail:
    hd_qmp_close(q);
    return -1;
}

int hd_qmp_query_status(struct hd_qmp *q, int timeout_ms, char **status, bool *running, hd_error_t *err)
{
    json_t *ret = NULL;
    if (hd_qmp_command(q, "query-status", NULL, timeout_ms, &ret, err) < 0)
        return -1;
    const char *s = json_string_value(json_object_get(ret, "status"));
    json_t *r = json_object_get(ret, "running");
    if (s == NULL || !json_is_boolean(r)) {
        json_decref(ret);
        return hd_error_set(err, EBADMSG, "qmp query-status: the reply has no status/running");
    }
    if (status)
        *status = hd_xstrdup(s);
    if (running)
        *running = json_is_true(r);
    json_decref(ret);
    return 0;
}

int hd_qmp_quit(struct hd_qmp *q, int timeout_ms, hd_error_t *err)
{
    hd_error_t e = NULL;
    if (hd_qmp_command(q, "quit", NULL, timeout_ms, NULL, &e) == 0)
        return 0;
    if (e->errnum == EPIPE || e->errnum == ECONNRESET) { /* QEMU went before its reply: done all the same */
        hd_error_free(&e);
        return 0;
    }
    hd_error_set(err, e->errnum, "%s", e->message); /* the first error set wins */
    hd_error_free(&e);
    return -1;
}

static bool take_event(struct hd_qmp *q, const char *name)
{
    for (size_t i = 0; i < q->n_events; i++) {
        if (strcmp(q->events[i], name) == 0) {
            free(q->events[i]);
            memmove(q->events + i, q->events + i + 1, (q->n_events - i - 1) * sizeof(char *));
            q->n_events--;
            return true;
        }
    }
    return false;
}

int hd_qmp_wait_event(struct hd_qmp *q, const char *name, int timeout_ms, hd_error_t *err)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    cleanup_free char *what = hd_xasprintf("event %s", name);
    while (!take_event(q, name)) {
        json_t *msg = NULL;
        if (read_message(q, what, deadline, &msg, err) < 0)
            return -1;
        if (hd_qmp_kind(msg) == HD_QMP_EVENT)
            record_event(q, msg);
        json_decref(msg);
    }
    return 0;
}

size_t hd_qmp_event_count(const struct hd_qmp *q, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < q->n_events; i++)
        n += strcmp(q->events[i], name) == 0;
    return n;
}

const char *hd_qmp_version(const struct hd_qmp *q)
{
    return q->version;
}

void hd_qmp_close(struct hd_qmp *q)
{
    if (q == NULL)
        return;
    if (q->fd >= 0)
        close(q->fd);
    for (size_t i = 0; i < q->n_events; i++)
        free(q->events[i]);
    hd_qmp_reader_free(&q->reader);
    free(q->path);
    free(q);
}
