/*
 * bench_client.c - the load generators of `hedge bench`.
 *
 * Request/response follows netperf's TCP_RR: one connection, one transaction
 * in flight, a transaction is "send the request, read the whole response";
 * the latency of each transaction is kept and the percentiles are taken over
 * all transactions after the warm-up. Stream follows TCP_STREAM: one
 * connection writing fixed-size chunks as fast as it can; the server counts
 * what it received and reports it when the client shuts its side down, so
 * the figure is bytes the workload really read, not bytes queued in a socket
 * buffer.
 *
 * The message protocol is sockperf's framing (see src/bench/echo-server.c),
 * so this client measures `sockperf server` and sockperf's client measures
 * hedge-echo-server: the two cross-check each other.
 */
#include "bench/bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/util.h"

#define MESSAGE_HEADER 14
#define FLAG_CLIENT 0x0001
#define FLAG_PONG_REQUEST 0x0002
#define FLAG_RESPONSE_LENGTH 0x0100
#define FLAG_STREAM 0x0200
#define MESSAGE_MAX (1u << 20)

const char *hd_bench_protocol_name(enum hd_bench_protocol p)
{
    switch (p) {
    case HD_BENCH_MESSAGE: return "message";
    case HD_BENCH_ECHO: return "echo";
    case HD_BENCH_CONNECT: return "connect";
    }
    return "?";
}

int hd_bench_protocol_parse(const char *text, enum hd_bench_protocol *out)
{
    for (int p = HD_BENCH_MESSAGE; p <= HD_BENCH_CONNECT; p++)
        if (strcmp(text, hd_bench_protocol_name((enum hd_bench_protocol)p)) == 0) {
            *out = (enum hd_bench_protocol)p;
            return 0;
        }
    return -1;
}

int hd_bench_target_set(struct hd_bench_target *t, const char *host, int port, hd_error_t *err)
{
    memset(t, 0, sizeof(*t));
    struct sockaddr_in *in4 = (struct sockaddr_in *)&t->addr;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&t->addr;
    if (port < 1 || port > 65535)
        return hd_error_set(err, 0, "port %d: not a TCP port (1..65535)", port);
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        t->addr_len = sizeof(*in4);
        snprintf(t->text, sizeof(t->text), "%s:%d", host, port);
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        t->addr_len = sizeof(*in6);
        snprintf(t->text, sizeof(t->text), "[%s]:%d", host, port);
    } else {
        return hd_error_set(err, 0, "address \"%s\": not an IPv4 or IPv6 address", host);
    }
    return 0;
}

static int connect_to(const struct hd_bench_target *t, hd_error_t *err)
{
    int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return hd_error_sys(err, "socket");
    if (connect(fd, (const struct sockaddr *)&t->addr, t->addr_len) < 0) {
        int e = errno;
        close(fd);
        return hd_error_set(err, e, "connect to %s", t->text);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

int hd_bench_wait_ready(const struct hd_bench_target *t, int pidfd, double timeout_s, volatile sig_atomic_t *stop,
                        hd_error_t *err)
{
    uint64_t deadline = hd_now_ns() + (uint64_t)(timeout_s * 1e9);
    for (;;) {
        hd_error_t ignored = NULL;
        int fd = connect_to(t, &ignored);
        hd_error_free(&ignored);
        if (fd >= 0) {
            close(fd);
            return 0;
        }
        if (pidfd >= 0) {
            struct pollfd p = {.fd = pidfd, .events = POLLIN};
            if (poll(&p, 1, 0) == 1)
                return hd_error_set(err, 0, "the workload exited before %s accepted a connection", t->text);
        }
        if (stop && *stop)
            return hd_error_set(err, EINTR, "waiting for %s", t->text);
        if (hd_now_ns() > deadline)
            return hd_error_set(err, ETIMEDOUT, "%s did not accept a connection within %g s", t->text, timeout_s);
        /* 200 us between probes: fine enough for a start-to-ready figure */
        usleep(200);
    }
}

/* hd_read_exact, with errno 0 for end of file (the callers say "the server closed the connection"). */
static int read_full(int fd, void *buf, size_t len)
{
    if (hd_read_exact(fd, buf, len) == 0)
        return 0;
    if (errno == EPIPE) /* read(2) never fails with EPIPE: hd_read_exact's end of file */
        errno = 0;
    return -1;
}

static void put_be(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (unsigned char)(v >> (8 * (bytes - 1 - i)));
}

static uint64_t get_be(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = v << 8 | p[i];
    return v;
}

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array. */
static double percentile_us(const uint64_t *sorted, size_t n, double q)
{
    size_t rank = (size_t)ceil(q * (double)n);
    if (rank < 1)
        rank = 1;
    return (double)sorted[rank - 1] / 1e3;
}

/* One transaction on fd (or a fresh connection for HD_BENCH_CONNECT). */
static int rr_transaction(const struct hd_bench_target *t, const struct hd_bench_client_options *o, int fd,
                          unsigned char *req, unsigned char *resp, uint64_t seq, hd_error_t *err)
{
    switch (o->protocol) {
    case HD_BENCH_CONNECT: {
        int c = connect_to(t, err);
        if (c < 0)
            return -1;
        close(c);
        return 0;
    }
    case HD_BENCH_ECHO:
        if (hd_write_all(fd, req, o->request_size) < 0)
            return hd_error_sys(err, "send a request to %s", t->text);
        if (read_full(fd, resp, o->request_size) < 0)
            return hd_error_set(err, errno, "read a response from %s%s", t->text,
                                errno ? "" : ": the server closed the connection");
        return 0;
    case HD_BENCH_MESSAGE:
        put_be(req, seq, 8);
        if (hd_write_all(fd, req, o->request_size) < 0)
            return hd_error_sys(err, "send a request to %s", t->text);
        if (read_full(fd, resp, MESSAGE_HEADER) < 0)
            return hd_error_set(err, errno, "read a response from %s%s", t->text,
                                errno ? "" : ": the server closed the connection");
        uint64_t len = get_be(resp + 10, 4);
        if (get_be(resp, 8) != seq || len < MESSAGE_HEADER || len > MESSAGE_MAX)
            return hd_error_set(err, 0,
                                "%s: the response is not a reply to request %llu "
                                "(is it speaking the message protocol?)",
                                t->text, (unsigned long long)seq);
        if (read_full(fd, resp + MESSAGE_HEADER, len - MESSAGE_HEADER) < 0)
            return hd_error_set(err, errno, "read a response from %s", t->text);
        return 0;
    }
    return hd_error_set(err, EINVAL, "protocol");
}

int hd_bench_rr(const struct hd_bench_target *t, const struct hd_bench_client_options *o,
                struct hd_bench_rr_result *out, hd_error_t *err)
{
    memset(out, 0, sizeof(*out));
    if (o->protocol == HD_BENCH_MESSAGE && o->request_size < MESSAGE_HEADER + 4)
        return hd_error_set(err, 0, "request size %zu: the message protocol needs at least %d bytes", o->request_size,
                            MESSAGE_HEADER + 4);
    if (o->request_size > MESSAGE_MAX || o->response_size > MESSAGE_MAX)
        return hd_error_set(err, 0, "request and response sizes are limited to %u bytes", MESSAGE_MAX);
    cleanup_free unsigned char *req = hd_xcalloc(1, o->request_size ? o->request_size : 1);
    cleanup_free unsigned char *resp = hd_xcalloc(1, MESSAGE_MAX);
    if (o->protocol == HD_BENCH_MESSAGE) {
        uint16_t flags = FLAG_CLIENT | FLAG_PONG_REQUEST;
        if (o->response_size != o->request_size) {
            flags |= FLAG_RESPONSE_LENGTH;
            put_be(req + MESSAGE_HEADER, o->response_size, 4);
        }
        put_be(req + 8, flags, 2);
        put_be(req + 10, o->request_size, 4);
    } else {
        memset(req, 'h', o->request_size);
    }
    cleanup_close int fd = -1;
    if (o->protocol != HD_BENCH_CONNECT && (fd = connect_to(t, err)) < 0)
        return -1;

    size_t cap = 1 << 16, n = 0;
    cleanup_free uint64_t *lat = hd_xmalloc(cap * sizeof(*lat));
    uint64_t start = hd_now_ns();
    uint64_t warm_end = start + (uint64_t)(o->warmup_s * 1e9);
    uint64_t end = warm_end + (uint64_t)(o->duration_s * 1e9);
    bool measuring = o->warmup_s <= 0;
    uint64_t measure_start = start, seq = 1, now;
    if (measuring && o->on_measure)
        o->on_measure(o->ctx, true);
    for (;; seq++) {
        if (o->stop && *o->stop)
            return hd_error_set(err, EINTR, "request/response test against %s", t->text);
        uint64_t t0 = hd_now_ns();
        if (rr_transaction(t, o, fd, req, resp, seq, err) < 0)
            return -1;
        now = hd_now_ns();
        if (!measuring) {
            if (now < warm_end)
                continue;
            measuring = true;
            measure_start = now;
            if (o->on_measure)
                o->on_measure(o->ctx, true);
            continue;
        }
        if (n == cap) {
            cap *= 2;
            lat = hd_xrealloc(lat, cap * sizeof(*lat));
        }
        lat[n++] = now - t0;
        if (o->count ? n >= o->count : now >= end)
            break;
    }
    if (o->on_measure)
        o->on_measure(o->ctx, false);
    qsort(lat, n, sizeof(*lat), compare_u64);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)lat[i];
    out->transactions = n;
    out->elapsed_s = (double)(now - measure_start) / 1e9;
    out->tps = out->elapsed_s > 0 ? (double)n / out->elapsed_s : 0;
    out->p50_us = percentile_us(lat, n, 0.50);
    out->p90_us = percentile_us(lat, n, 0.90);
    out->p99_us = percentile_us(lat, n, 0.99);
    out->mean_us = sum / (double)n / 1e3;
    return 0;
}

int hd_bench_stream(const struct hd_bench_target *t, const struct hd_bench_client_options *o,
                    struct hd_bench_stream_result *out, hd_error_t *err)
{
    memset(out, 0, sizeof(*out));
    if (o->protocol != HD_BENCH_MESSAGE)
        return hd_error_set(err, 0, "stream test: needs the message protocol (hedge-echo-server)");
    cleanup_close int fd = connect_to(t, err);
    if (fd < 0)
        return -1;
    unsigned char header[MESSAGE_HEADER] = {0};
    put_be(header + 8, FLAG_CLIENT | FLAG_STREAM, 2);
    put_be(header + 10, MESSAGE_HEADER, 4);
    if (hd_write_all(fd, header, sizeof(header)) < 0)
        return hd_error_sys(err, "stream test: send to %s", t->text);
    size_t chunk = o->stream_chunk ? o->stream_chunk : 64 * 1024;
    cleanup_free char *buf = hd_xcalloc(1, chunk);
    uint64_t start = hd_now_ns();
    uint64_t warm_end = start + (uint64_t)(o->warmup_s * 1e9);
    uint64_t end = warm_end + (uint64_t)(o->duration_s * 1e9);
    uint64_t sent = 0, sent_at_warm = 0, measure_start = 0;
    bool measuring = false;
    for (;;) {
        if (o->stop && *o->stop)
            return hd_error_set(err, EINTR, "stream test against %s", t->text);
        if (hd_write_all(fd, buf, chunk) < 0)
            return hd_error_sys(err, "stream test: send to %s", t->text);
        sent += chunk;
        uint64_t now = hd_now_ns();
        if (!measuring && now >= warm_end) {
            measuring = true;
            sent_at_warm = sent;
            measure_start = now;
        }
        if (measuring && now >= end)
            break;
    }
    if (shutdown(fd, SHUT_WR) < 0)
        return hd_error_sys(err, "stream test: shutdown");
    unsigned char answer[8];
    if (read_full(fd, answer, sizeof(answer)) < 0)
        return hd_error_set(err, errno, "stream test: read the byte count from %s%s", t->text,
                            errno ? "" : ": the server closed the connection");
    uint64_t done = hd_now_ns();
    uint64_t received = get_be(answer, 8);
    if (received != sent)
        return hd_error_set(err, 0, "stream test: sent %llu bytes but %s counted %llu", (unsigned long long)sent,
                            t->text, (unsigned long long)received);
    out->bytes = received - sent_at_warm;
    out->elapsed_s = (double)(done - measure_start) / 1e9;
    out->mbit_s = out->elapsed_s > 0 ? (double)out->bytes * 8 / 1e6 / out->elapsed_s : 0;
    return 0;
}
