/*
 * api.c - the daemon's API: HTTP/1.1 + JSON on a unix socket (0600, or 0660
 * for a configured group), usable with `curl --unix-socket`.
 *
 * Why a parser of our own and not libmicrohttpd: the API only ever speaks to
 * local clients over a unix socket, one request per connection, and must run
 * inside hedged's single epoll loop next to the supervisor without threads.
 * What it needs is small: a request line, a few headers, a Content-Length
 * body. The parser (http.c, fuzzed by fuzz/fuzz_http.c) accepts exactly that
 * and refuses the rest with a JSON error: headers above 16 KiB (431), bodies above 1 MiB (413), chunked
 * bodies (411), anything but HTTP/1.0 or 1.1 (505). Every response closes
 * the connection, so there is no keep-alive or pipelining state to get wrong.
 *
 * Some answers come later: a deploy answers once the new version is healthy
 * or failed, a stop once the workload stopped. `logs?follow=1` streams the
 * log file until the client goes away or the workload is removed.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "base/log.h"
#include "daemon/daemon.h"
#include "daemon/http.h"
#include "base/util.h"

#define MAX_HEADER HD_HTTP_MAX_HEADER
#define MAX_BODY HD_HTTP_MAX_BODY
#define FOLLOW_INTERVAL 0.2

struct hd_api {
    struct hd_loop *loop;
    struct hd_supervisor *sup;
    const struct hd_daemon_config *cfg;
    struct hd_netchild *net;    /* the broker's and uplink's counters join /metrics, GET /v1/uplink; NULL: none */
    struct hd_vm_pool *vm_pool; /* the warm pool's gauges join /metrics; NULL: none */
    int fd;
    struct hd_watch *watch;
    struct conn *conns;
};

enum conn_state { CONN_READING, CONN_WAITING, CONN_WRITING, CONN_FOLLOWING };

struct conn {
    struct hd_api *api;
    int fd;
    struct hd_watch *watch;
    enum conn_state state;
    char *in;
    size_t in_len;
    size_t header_len; /* bytes of request line + headers, 0 until complete */
    size_t body_len;
    char method[16];
    size_t target_off; /* offset of the request target in in (in may move) */
    char *out;
    size_t out_len, out_off;
    /* logs?follow=1 */
    char *follow_name;
    char *follow_path;
    int follow_fd;
    struct hd_timer *follow_timer;
    struct conn *next;
};

static void conn_close(struct conn *c);

static const char *status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 431: return "Request Header Fields Too Large";
    case 505: return "HTTP Version Not Supported";
    default: return status >= 500 ? "Internal Server Error" : "Error";
    }
}

static void conn_append(struct conn *c, const char *data, size_t len)
{
    c->out = hd_xrealloc(c->out, c->out_len + len);
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
}

/* Write what is buffered; returns false when the connection was closed. */
static bool conn_flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            hd_loop_modify(c->api->loop, c->watch, EPOLLOUT);
            return true;
        }
        if (n <= 0) {
            conn_close(c);
            return false;
        }
        c->out_off += (size_t)n;
    }
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = 0;
    if (c->state == CONN_WRITING) {
        conn_close(c);
        return false;
    }
    hd_loop_modify(c->api->loop, c->watch, 0); /* streaming: only hang-ups matter now */
    return true;
}

static void respond_raw(struct conn *c, int status, const char *type, const char *body, size_t len)
{
    cleanup_free char *head = hd_xasprintf("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                                           "Connection: close\r\n\r\n",
                                           status, status_text(status), type, len);
    conn_append(c, head, strlen(head));
    conn_append(c, body, len);
    c->state = CONN_WRITING;
    conn_flush(c);
}

/* Send a JSON body (stolen) and close. */
static void respond_json(struct conn *c, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(body);
    cleanup_free char *with_nl = hd_xasprintf("%s\n", text ? text : "{}");
    free(text);
    respond_raw(c, status, "application/json", with_nl, strlen(with_nl));
}

static void respond_error(struct conn *c, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void respond_error(struct conn *c, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cleanup_free char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        abort();
    va_end(ap);
    respond_json(c, status, json_pack("{s:s}", "error", msg));
}

/* The one place a supervisor result becomes an HTTP status. */
static int api_status(enum hd_sup_result result)
{
    switch (result) {
    case HD_SUP_OK: return 200;
    case HD_SUP_CREATED: return 201;
    case HD_SUP_INVALID: return 400;
    case HD_SUP_NOT_FOUND: return 404;
    case HD_SUP_CONFLICT: return 409;
    case HD_SUP_START_FAILED: return 422;
    case HD_SUP_INTERNAL: return 500;
    case HD_SUP_PULL_FAILED: return 502;
    }
    return 500;
}

/* The supervisor's answer to a request (now or after a wait). A failure is {"error": message}
 * plus what the supervisor added to body (a failed first deploy's exit_code). */
static void reply_later(void *ctx, enum hd_sup_result result, json_t *body, hd_error_t err)
{
    struct conn *c = ctx;
    if (result != HD_SUP_OK && result != HD_SUP_CREATED) {
        if (body == NULL)
            body = json_object();
        /* the message as the supervisor wrote it: hd_error_text would cut it at 4 KiB */
        json_object_set_new(body, "error", json_string(err ? err->message : "unknown error"));
    }
    respond_json(c, api_status(result), body ? body : json_object());
}

/* ---- query strings ------------------------------------------------------ */

static bool query_flag(const char *query, const char *key)
{
    cleanup_free char *v = hd_http_query_get(query, key);
    return v && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0);
}

/* health_wait=SECONDS, or -1 (the configured default). */
static int query_seconds(const char *query, const char *key, double *out)
{
    cleanup_free char *v = hd_http_query_get(query, key);
    *out = -1;
    if (v == NULL)
        return 0;
    char *end;
    double d = strtod(v, &end);
    if (end == v || *end || !(d >= 0 && d <= 3600))
        return -1;
    *out = d;
    return 0;
}

/* ---- logs ---------------------------------------------------------------- */

/* The last `lines` lines of the rotated and the current log (lines < 0: all). */
static char *log_tail(const char *path, long lines, size_t *len)
{
    cleanup_free char *old_path = hd_xasprintf("%s.1", path);
    cleanup_free char *old = NULL, *cur = NULL;
    size_t old_len = 0, cur_len = 0;
    hd_error_t err = NULL;
    if (hd_read_file(old_path, &old, &old_len, &err) < 0)
        hd_error_free(&err);
    if (hd_read_file(path, &cur, &cur_len, &err) < 0)
        hd_error_free(&err);
    char *all = hd_xmalloc(old_len + cur_len + 1);
    if (old_len)
        memcpy(all, old, old_len);
    if (cur_len)
        memcpy(all + old_len, cur, cur_len);
    size_t n = old_len + cur_len;
    all[n] = '\0';
    size_t start = 0;
    if (lines >= 0) {
        long seen = 0;
        size_t i = n;
        if (i > 0 && all[i - 1] == '\n')
            i--;
        while (i > 0) {
            if (all[i - 1] == '\n' && ++seen == lines)
                break;
            i--;
        }
        start = lines == 0 ? n : i;
    }
    memmove(all, all + start, n - start + 1);
    *len = n - start;
    return all;
}

static void follow_poll(struct hd_loop *loop, void *data)
{
    struct conn *c = data;
    c->follow_timer = NULL;
    if (!hd_supervisor_exists(c->api->sup, c->follow_name)) {
        c->state = CONN_WRITING;
        if (c->out_len == 0)
            conn_close(c);
        return;
    }
    char buf[16384];
    for (int rounds = 0; rounds < 2; rounds++) {
        if (c->follow_fd >= 0) {
            ssize_t n;
            while ((n = read(c->follow_fd, buf, sizeof(buf))) > 0)
                conn_append(c, buf, (size_t)n);
        }
        /* rotated (or created): finish the old file above, then continue in the new one */
        struct stat now, ours;
        if (stat(c->follow_path, &now) < 0)
            break;
        if (c->follow_fd >= 0 && fstat(c->follow_fd, &ours) == 0 && ours.st_ino == now.st_ino &&
            ours.st_dev == now.st_dev)
            break;
        if (c->follow_fd >= 0)
            close(c->follow_fd);
        c->follow_fd = open(c->follow_path, O_RDONLY | O_CLOEXEC);
    }
    if (c->out_len && !conn_flush(c))
        return;
    c->follow_timer = hd_loop_timer(loop, FOLLOW_INTERVAL, follow_poll, c);
}

static void handle_logs(struct conn *c, const char *name, const char *query)
{
    struct hd_api *api = c->api;
    cleanup_free char *path = hd_supervisor_log_path(api->sup, name);
    if (path == NULL)
        return respond_error(c, 404, "workload \"%s\": not found", name);
    cleanup_free char *tail = hd_http_query_get(query, "tail");
    long lines = -1;
    if (tail) {
        char *end;
        lines = strtol(tail, &end, 10);
        if (end == tail || *end || lines < 0)
            return respond_error(c, 400, "tail: \"%s\" is not a number of lines", tail);
    }
    size_t len;
    cleanup_free char *text = log_tail(path, lines, &len);
    if (!query_flag(query, "follow"))
        return respond_raw(c, 200, "text/plain; charset=utf-8", text, len);
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
                               "Connection: close\r\n\r\n";
    conn_append(c, head, strlen(head));
    conn_append(c, text, len);
    c->state = CONN_FOLLOWING;
    c->follow_name = hd_xstrdup(name);
    c->follow_path = get_and_reset(&path);
    c->follow_fd = open(c->follow_path, O_RDONLY | O_CLOEXEC);
    if (c->follow_fd >= 0)
        lseek(c->follow_fd, 0, SEEK_END);
    if (!conn_flush(c))
        return;
    c->follow_timer = hd_loop_timer(api->loop, FOLLOW_INTERVAL, follow_poll, c);
}

/* ---- routing ------------------------------------------------------------- */

static void handle_info(struct conn *c)
{
    const struct hd_daemon_config *cfg = c->api->cfg;
    respond_json(c, 200,
                 json_pack("{s:s,s:i,s:s,s:s,s:s}", "version", HEDGE_VERSION, "pid", (int)getpid(), "state_dir",
                           cfg->state_dir, "socket", cfg->socket_path, "log_dir", cfg->log_dir));
}

static void route(struct conn *c, const char *method, char *target, const char *body, size_t body_len)
{
    struct hd_api *api = c->api;
    char *query = strchr(target, '?');
    if (query)
        *query++ = '\0';
    if (!hd_http_url_decode(target))
        return respond_error(c, 400, "request target: malformed percent-escape");
    bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0, del = strcmp(method, "DELETE") == 0;

    if (strcmp(target, "/metrics") == 0) {
        if (!get)
            return respond_error(c, 405, "%s /metrics: use GET", method);
        cleanup_free char *text = hd_supervisor_metrics(api->sup);
        if (api->net) {
            cleanup_free char *workloads = get_and_reset(&text);
            cleanup_free char *net = hd_netchild_metrics(api->net);
            text = hd_xasprintf("%s%s", workloads, net);
        }
        if (api->vm_pool) {
            cleanup_free char *before = get_and_reset(&text);
            cleanup_free char *pool = hd_vm_pool_metrics_text(api->vm_pool);
            text = hd_xasprintf("%s%s", before, pool);
        }
        return respond_raw(c, 200, "text/plain; version=0.0.4", text, strlen(text));
    }
    if (strcmp(target, "/v1/uplink") == 0) {
        if (!get)
            return respond_error(c, 405, "%s /v1/uplink: use GET", method);
        if (!hd_netchild_has_uplink(api->net))
            return respond_error(c, 404, "no uplink: hedged's config has no \"uplink\" section");
        return respond_json(c, 200, hd_netchild_uplink_status(api->net));
    }
    if (strcmp(target, "/v1/info") == 0) {
        if (!get)
            return respond_error(c, 405, "%s /v1/info: use GET", method);
        return handle_info(c);
    }
    if (strcmp(target, "/v1/images/in-use") == 0) {
        if (!get)
            return respond_error(c, 405, "%s /v1/images/in-use: use GET", method);
        return respond_json(c, 200, hd_supervisor_images_in_use(api->sup));
    }
    if (strcmp(target, "/v1/workloads") == 0 || strcmp(target, "/v1/workloads/") == 0) {
        if (get)
            return respond_json(c, 200, hd_supervisor_list(api->sup));
        if (!post)
            return respond_error(c, 405, "%s /v1/workloads: use GET or POST", method);
        double health_wait;
        if (query_seconds(query, "health_wait", &health_wait) < 0)
            return respond_error(c, 400, "health_wait: must be a number of seconds (0..3600)");
        cleanup_free char *origin = hd_http_query_get(query, "origin");
        c->state = CONN_WAITING;
        hd_supervisor_deploy(api->sup, body, body_len, origin ? origin : "request body", health_wait, reply_later, c);
        return;
    }
    if (strncmp(target, "/v1/secrets/", 12) == 0) {
        if (!post)
            return respond_error(c, 405, "%s /v1/secrets/NAME: use POST (the body is ignored)", method);
        c->state = CONN_WAITING;
        return hd_supervisor_secret_updated(api->sup, target + 12, reply_later, c);
    }
    if (strncmp(target, "/v1/workloads/", 14) != 0)
        return respond_error(c, 404, "%s %s: no such endpoint", method, target);

    char *name = target + 14;
    char *action = strchr(name, '/');
    if (action)
        *action++ = '\0';
    if (*name == '\0')
        return respond_error(c, 404, "%s %s: no such endpoint", method, target);
    if (action == NULL || *action == '\0') {
        if (get) {
            json_t *o = hd_supervisor_get(api->sup, name);
            if (o == NULL)
                return respond_error(c, 404, "workload \"%s\": not found", name);
            return respond_json(c, 200, o);
        }
        if (del) {
            c->state = CONN_WAITING;
            return hd_supervisor_remove(api->sup, name, reply_later, c);
        }
        return respond_error(c, 405, "%s /v1/workloads/%s: use GET or DELETE", method, name);
    }
    if (strcmp(action, "history") == 0 || strcmp(action, "logs") == 0) {
        if (!get)
            return respond_error(c, 405, "%s /v1/workloads/%s/%s: use GET", method, name, action);
        if (action[0] == 'l')
            return handle_logs(c, name, query);
        json_t *o = hd_supervisor_history(api->sup, name);
        if (o == NULL)
            return respond_error(c, 404, "workload \"%s\": not found", name);
        return respond_json(c, 200, o);
    }
    bool start = strcmp(action, "start") == 0, stop = strcmp(action, "stop") == 0,
         rollback = strcmp(action, "rollback") == 0;
    if (!start && !stop && !rollback)
        return respond_error(c, 404, "%s %s/%s: no such endpoint", method, target, action);
    if (!post)
        return respond_error(c, 405, "%s /v1/workloads/%s/%s: use POST", method, name, action);
    c->state = CONN_WAITING;
    if (start)
        return hd_supervisor_start(api->sup, name, reply_later, c);
    if (stop)
        return hd_supervisor_stop(api->sup, name, reply_later, c);
    double health_wait;
    if (query_seconds(query, "health_wait", &health_wait) < 0)
        return respond_error(c, 400, "health_wait: must be a number of seconds (0..3600)");
    hd_supervisor_rollback(api->sup, name, health_wait, reply_later, c);
}

/* ---- request parsing ------------------------------------------------------ */

static void conn_read(struct conn *c)
{
    char buf[8192];
    bool eof = false;
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n < 0) {
            conn_close(c);
            return;
        }
        if (n == 0) { /* a client may half-close after its request: answer it all the same */
            eof = true;
            break;
        }
        if (c->in_len + (size_t)n > MAX_HEADER + MAX_BODY + 1) {
            respond_error(c, 413, "request: too large");
            return;
        }
        c->in = hd_xrealloc(c->in, c->in_len + (size_t)n + 1);
        memcpy(c->in + c->in_len, buf, (size_t)n);
        c->in_len += (size_t)n;
        c->in[c->in_len] = '\0';
    }
    if (c->in == NULL) {
        if (eof)
            conn_close(c);
        return;
    }
    if (c->header_len == 0) {
        char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
        if (end == NULL) {
            if (c->in_len > MAX_HEADER)
                respond_error(c, 431, "request header: more than %d bytes", MAX_HEADER);
            else if (eof)
                conn_close(c);
            return;
        }
        c->header_len = (size_t)(end - c->in) + 4;
        if (c->header_len > MAX_HEADER)
            return respond_error(c, 431, "request header: more than %d bytes", MAX_HEADER);
        if (memchr(c->in, '\0', c->header_len))
            return respond_error(c, 400, "request header: NUL byte");
        hd_error_t err = NULL;
        int status;
        struct hd_http_request req;
        if (hd_http_parse_head(c->in, c->header_len, MAX_BODY, &req, &status, &err) < 0) {
            respond_error(c, status, "%s", hd_error_text(err));
            hd_error_free(&err);
            return;
        }
        memcpy(c->method, req.method, sizeof(c->method));
        c->target_off = (size_t)(req.target - c->in);
        c->body_len = req.content_length;
        if (req.expect_continue && c->body_len > 0 && c->in_len < c->header_len + c->body_len) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            send(c->fd, cont, sizeof(cont) - 1, MSG_NOSIGNAL);
        }
    }
    if (c->in_len < c->header_len + c->body_len) {
        if (eof)
            conn_close(c);
        return;
    }
    if (eof)
        hd_loop_modify(c->api->loop, c->watch, 0); /* the read side is done; RDHUP would repeat */
    if (c->in_len > c->header_len + c->body_len)
        return respond_error(c, 400, "request: more bytes than Content-Length (one request per connection)");
    route(c, c->method, c->in + c->target_off, c->in + c->header_len, c->body_len);
}

static void on_conn(struct hd_loop *loop, int fd, uint32_t events, void *data)
{
    struct conn *c = data;
    if (c->state == CONN_READING && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
        conn_read(c);
        return;
    }
    if (events & (EPOLLHUP | EPOLLERR)) {
        conn_close(c); /* the client went away while we waited or streamed */
        return;
    }
    if (events & EPOLLOUT) {
        conn_flush(c);
        return;
    }
    /* Waiting or streaming: a half-close (shutdown(SHUT_WR), as `nc -N` does) or stray bytes
     * end nothing; stop listening for them (EPOLLHUP and EPOLLERR are always reported). */
    hd_loop_modify(loop, c->watch, c->out_off < c->out_len ? EPOLLOUT : 0);
}

static void conn_close(struct conn *c)
{
    struct hd_api *api = c->api;
    hd_supervisor_forget(api->sup, c);
    hd_loop_unwatch(api->loop, c->watch);
    if (c->follow_timer)
        hd_loop_cancel(api->loop, c->follow_timer);
    if (c->follow_fd >= 0)
        close(c->follow_fd);
    close(c->fd);
    for (struct conn **p = &api->conns; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    free(c->in);
    free(c->out);
    free(c->follow_name);
    free(c->follow_path);
    free(c);
}

static void on_accept(struct hd_loop *loop, int fd, uint32_t events, void *data)
{
    struct hd_api *api = data;
    for (;;) {
        int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (cfd < 0)
            return;
        struct conn *c = hd_xcalloc(1, sizeof(*c));
        c->api = api;
        c->fd = cfd;
        c->follow_fd = -1;
        hd_error_t err = NULL;
        c->watch = hd_loop_watch(loop, cfd, EPOLLIN | EPOLLRDHUP, on_conn, c, &err);
        if (c->watch == NULL) {
            hd_log_error(HD_LOG_ERROR, "api", &err);
            close(cfd);
            free(c);
            continue;
        }
        c->next = api->conns;
        api->conns = c;
    }
}

void hd_api_set_vm_pool(struct hd_api *api, struct hd_vm_pool *pool)
{
    if (api)
        api->vm_pool = pool;
}

void hd_api_set_netchild(struct hd_api *api, struct hd_netchild *net)
{
    api->net = net;
}

int hd_api_start(struct hd_loop *loop, struct hd_supervisor *sup, const struct hd_daemon_config *cfg,
                 struct hd_api **out, hd_error_t *err)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", cfg->socket_path);
    cleanup_free char *parent = hd_xstrdup(cfg->socket_path);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) {
        *slash = '\0';
        if (hd_mkdir_p(parent, 0755, err) < 0)
            return hd_error_prefix(err, "socket");
    }
    cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return hd_error_sys(err, "socket");
    /* A live daemon on this socket is an error; a stale socket file is not. */
    {
        cleanup_close int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *)&addr, sizeof(addr)) == 0)
            return hd_error_set(err, 0, "socket %s: another hedged is listening there", cfg->socket_path);
    }
    unlink(cfg->socket_path);
    mode_t old = umask(0177);
    int r = bind(fd, (struct sockaddr *)&addr, sizeof(addr));
    umask(old);
    if (r < 0)
        return hd_error_sys(err, "socket %s: bind", cfg->socket_path);
    if (cfg->socket_group) {
        struct group *g = getgrnam(cfg->socket_group);
        if (g == NULL || chown(cfg->socket_path, 0, g->gr_gid) < 0 || chmod(cfg->socket_path, 0660) < 0) {
            unlink(cfg->socket_path);
            return hd_error_set(err, g ? errno : 0, "socket %s: group %s %s", cfg->socket_path, cfg->socket_group,
                                g ? "cannot be set" : "does not exist");
        }
    }
    if (listen(fd, 64) < 0)
        return hd_error_sys(err, "socket %s: listen", cfg->socket_path);
    struct hd_api *api = hd_xcalloc(1, sizeof(*api));
    api->loop = loop;
    api->sup = sup;
    api->cfg = cfg;
    api->watch = hd_loop_watch(loop, fd, EPOLLIN, on_accept, api, err);
    if (api->watch == NULL) {
        free(api);
        return -1;
    }
    api->fd = steal_fd(&fd);
    *out = api;
    return 0;
}

void hd_api_stop(struct hd_api *api)
{
    if (api == NULL)
        return;
    /* next is read before conn_close frees c (the analyzer cannot see that conn_close unlinks it) */
    for (struct conn *c = api->conns, *next; c; c = next) {
        next = c->next;
        conn_close(c);
    }
    hd_loop_unwatch(api->loop, api->watch);
    close(api->fd);
    unlink(api->cfg->socket_path);
    free(api);
}
