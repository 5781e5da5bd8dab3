/*
 * client.c - HTTP/1.1 over hedged's unix socket for the verbs that talk to
 * hedged (deploy, ps, logs, history, rollback, stop, start, rm, move, and
 * invoke NAME and uplink status).
 *
 * The daemon closes every connection after one response, so the client
 * sends one request, reads to EOF and splits status line, headers and body.
 * `logs -f` uses the streaming variant, which copies the body to stdout as
 * it arrives.
 */
#include "cli/client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli/cli.h"
#include "base/util.h"

const char *hd_client_socket(void)
{
    const char *s = getenv("HEDGE_SOCKET");
    return s && *s ? s : "/run/hedge/hedged.sock";
}

char *hd_client_escape(const char *s)
{
    char *out = hd_xmalloc(strlen(s) * 3 + 1), *w = out;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
            ch == '_' || ch == '.' || ch == '~')
            *w++ = (char)ch;
        else
            w += sprintf(w, "%%%02X", ch);
    }
    *w = '\0';
    return out;
}

static int client_connect(hd_error_t *err)
{
    const char *path = hd_client_socket();
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(addr.sun_path))
        return hd_error_set(err, 0, "socket %s: path too long", path);
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return hd_error_sys(err, "socket");
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        int e = errno;
        close(fd);
        return hd_error_set(err, e, "cannot reach hedged at %s (is it running? --socket or $HEDGE_SOCKET)", path);
    }
    return fd;
}

static int client_send(int fd, const char *method, const char *path, const char *body, size_t len, hd_error_t *err)
{
    cleanup_free char *head = hd_xasprintf("%s %s HTTP/1.1\r\nHost: hedged\r\nContent-Length: %zu\r\n"
                                           "Connection: close\r\n\r\n",
                                           method, path, len);
    for (int part = 0; part < 2; part++) {
        const char *p = part ? body : head;
        size_t n = part ? len : strlen(head);
        while (n > 0) {
            ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                return hd_error_sys(err, "send to hedged");
            p += w;
            n -= (size_t)w;
        }
    }
    return 0;
}

/* Parse "HTTP/1.1 200 OK\r\n...\r\n\r\n"; returns the header length or -1. */
static ssize_t parse_status(const char *buf, size_t len, int *status)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (end == NULL || sscanf(buf, "HTTP/1.%*d %d", status) != 1)
        return -1;
    return end - buf + 4;
}

int hd_client_request(const char *method, const char *path, const char *body, size_t len,
                      struct hd_client_response *resp, hd_error_t *err)
{
    memset(resp, 0, sizeof(*resp));
    cleanup_close int fd = client_connect(err);
    if (fd < 0 || client_send(fd, method, path, body, len, err) < 0)
        return -1;
    char *buf = NULL;
    size_t n = 0;
    char chunk[65536];
    for (;;) {
        ssize_t r = read(fd, chunk, sizeof(chunk));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            free(buf);
            return hd_error_sys(err, "read from hedged");
        }
        if (r == 0)
            break;
        buf = hd_xrealloc(buf, n + (size_t)r + 1);
        memcpy(buf + n, chunk, (size_t)r);
        n += (size_t)r;
    }
    ssize_t head;
    /* a "100 Continue" interim response may come first */
    while (buf && (head = parse_status(buf, n, &resp->status)) > 0 && resp->status == 100) {
        memmove(buf, buf + head, n - (size_t)head);
        n -= (size_t)head;
    }
    if (buf == NULL || (head = parse_status(buf, n, &resp->status)) < 0) {
        free(buf);
        return hd_error_set(err, 0, "hedged sent no valid HTTP response");
    }
    resp->len = n - (size_t)head;
    resp->body = hd_xmalloc(resp->len + 1);
    memcpy(resp->body, buf + head, resp->len);
    resp->body[resp->len] = '\0';
    free(buf);
    return 0;
}

void hd_client_response_free(struct hd_client_response *resp)
{
    free(resp->body);
    resp->body = NULL;
}

int hd_client_stream(const char *path, int out_fd, hd_error_t *err)
{
    cleanup_close int fd = client_connect(err);
    if (fd < 0 || client_send(fd, "GET", path, "", 0, err) < 0)
        return -1;
    char buf[65536];
    size_t n = 0;
    bool in_body = false;
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof(buf) - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return hd_error_sys(err, "read from hedged");
        if (r == 0)
            break;
        n += (size_t)r;
        if (!in_body) {
            int status;
            ssize_t head = parse_status(buf, n, &status);
            if (head < 0) {
                if (n == sizeof(buf))
                    return hd_error_set(err, 0, "hedged sent no valid HTTP response");
                continue;
            }
            if (status >= 300) {
                /* the whole error body follows; read it and report */
                struct hd_client_response resp = {.status = status};
                while ((r = read(fd, buf + n, sizeof(buf) - n - 1)) > 0)
                    n += (size_t)r;
                buf[n] = '\0';
                resp.body = buf + head;
                resp.len = n - (size_t)head;
                json_t *o = json_loads(resp.body, 0, NULL);
                const char *msg = json_string_value(json_object_get(o, "error"));
                hd_error_set(err, 0, "%s", msg ? msg : "request failed");
                json_decref(o);
                return -1;
            }
            in_body = true;
            memmove(buf, buf + head, n - (size_t)head);
            n -= (size_t)head;
        }
        if (write(out_fd, buf, n) < 0)
            return 0; /* the reader went away (e.g. `| head`) */
        n = 0;
    }
    if (!in_body)
        return hd_error_set(err, 0, "hedged sent no valid HTTP response");
    return 0;
}

json_t *hd_client_json(const struct hd_client_response *resp, hd_error_t *err)
{
    json_error_t jerr;
    json_t *o = json_loadb(resp->body, resp->len, 0, &jerr);
    if (o == NULL)
        hd_error_set(err, 0, "hedged sent invalid JSON: %s", jerr.text);
    return o;
}

int hd_client_fail(const char *verb, const struct hd_client_response *resp)
{
    json_t *o = json_loadb(resp->body, resp->len, 0, NULL);
    const char *msg = json_string_value(json_object_get(o, "error"));
    int code = HD_EXIT_HEDGE;
    json_t *ec = json_object_get(o, "exit_code");
    if (json_is_integer(ec) && json_integer_value(ec) > 0 && json_integer_value(ec) < 256)
        code = (int)json_integer_value(ec);
    fprintf(stderr, "hedge: %s\n", msg ? msg : resp->body);
    json_decref(o);
    return code;
}

json_t *hd_client_call(const char *verb, const char *method, const char *path, const char *body, size_t len, int *code)
{
    struct hd_client_response resp;
    hd_error_t err = NULL;
    if (hd_client_request(method, path, body ? body : "", body ? len : 0, &resp, &err) < 0) {
        *code = cli_fail(&err);
        return NULL;
    }
    json_t *o = NULL;
    if (resp.status >= 300)
        *code = hd_client_fail(verb, &resp);
    else if ((o = hd_client_json(&resp, &err)) == NULL)
        *code = cli_fail(&err);
    hd_client_response_free(&resp);
    return o;
}

void hd_client_duration(double s, char *buf, size_t size)
{
    long t = (long)s;
    if (t < 60)
        snprintf(buf, size, "%lds", t);
    else if (t < 3600)
        snprintf(buf, size, "%ldm%lds", t / 60, t % 60);
    else if (t < 86400)
        snprintf(buf, size, "%ldh%ldm", t / 3600, (t % 3600) / 60);
    else
        snprintf(buf, size, "%ldd%ldh", t / 86400, (t % 86400) / 3600);
}

void hd_client_size(double b, char *buf, size_t size)
{
    const char *units = "BKMGT";
    int u = 0;
    while (b >= 1024 && u < 4) {
        b /= 1024;
        u++;
    }
    snprintf(buf, size, u ? "%.1f%c" : "%.0f%c", b, units[u]);
}

int hd_client_workload_verb(int argc, char **argv, const char *method, const char *suffix, const char *usage)
{
    bool json;
    int i, done = cli_options(argc, argv, argv[0], usage, &json, &i);
    if (done >= 0)
        return done;
    if (i >= argc)
        return cli_usage_error(argv[0], usage, "no workload named");
    int ret = 0;
    json_t *all = json_array();
    for (; i < argc; i++) {
        cleanup_free char *name = hd_client_escape(argv[i]);
        cleanup_free char *path = hd_xasprintf("/v1/workloads/%s%s", name, suffix);
        int code = 0;
        json_t *o = hd_client_call(argv[0], method, path, NULL, 0, &code);
        if (o == NULL) {
            ret = code;
            continue;
        }
        if (json)
            json_array_append(all, o);
        else
            printf("%s: %s\n", argv[i], json_string_value(json_object_get(o, "state")));
        json_decref(o);
    }
    if (json)
        json_dumpf(all, stdout, JSON_INDENT(2)), putchar('\n');
    json_decref(all);
    return ret;
}
