/*
 * mqtt-load.c - an MQTT load generator for bench/mqtt: N publishers and M
 * subscribers over loopback in one epoll thread, measuring delivered
 * messages per second and end-to-end latency percentiles.
 *
 *   mqtt-load --port P --scenario fanin|fanout|pairs --pubs N --subs M
 *             [--qos 0|1] [--size BYTES] [--seconds S] [--window W]
 *   mqtt-load --port P --idle N --pid BROKER_PID      (memory per idle connection)
 *
 * Flow control is end to end: a publisher keeps at most W messages whose
 * deliveries have not all arrived yet, so the figure is the broker's
 * sustainable throughput with bounded queues, and latency is not just the
 * depth of a queue the generator itself built up. Each payload carries the
 * publisher index and the send time (CLOCK_MONOTONIC); one timestamp is
 * taken per write/read batch. Output: one line of key=value pairs.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/util.h"

struct buf {
    uint8_t *data;
    size_t len, cap, off;
};

struct client {
    int fd;
    bool is_pub, want_out;
    int idx;
    struct buf in, out;
    char topic[64];
    uint16_t next_pid;
    uint64_t sent, deliveries;  /* publishers: messages sent, deliveries seen by subscribers */
};

static struct client *clients;
static int n_clients, n_pubs, n_subs, epfd;
static int qos, payload_size = 64, window = 16, expected_per_msg = 1;
static int connacks, subacks;
static bool measuring;
static uint64_t delivered_in_window;
static uint32_t *lat;  /* latency samples in ns (capped at 4 s) */
static size_t n_lat, cap_lat;

static void put(struct buf *b, const void *d, size_t n)
{
    if (b->cap - b->len < n) {
        while (b->cap - b->len < n)
            b->cap = b->cap ? b->cap * 2 : 4096;
        b->data = hd_xrealloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, d, n);
    b->len += n;
}

static void put_varint(struct buf *b, uint32_t v)
{
    do {
        uint8_t x = v & 0x7f;
        v >>= 7;
        x |= v ? 0x80 : 0;
        put(b, &x, 1);
    } while (v);
}

static void put_str(struct buf *b, const char *s)
{
    uint8_t len[2] = {(uint8_t)(strlen(s) >> 8), (uint8_t)strlen(s)};
    put(b, len, 2);
    put(b, s, strlen(s));
}

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        perror("mqtt-load: connect");
        exit(1);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static void send_connect(struct client *c, const char *id)
{
    struct buf body = {0};
    put_str(&body, "MQTT");
    uint8_t hdr[4] = {4, 0x02, 0, 60};  /* 3.1.1, clean session, keepalive 60 */
    put(&body, hdr, 4);
    put_str(&body, id);
    uint8_t type = 0x10;
    put(&c->out, &type, 1);
    put_varint(&c->out, (uint32_t)body.len);
    put(&c->out, body.data, body.len);
    free(body.data);
}

static void flush(struct client *c)
{
    while (c->out.off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out.off, c->out.len - c->out.off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN)
                break;
            perror("mqtt-load: send");
            exit(1);
        }
        c->out.off += (size_t)n;
    }
    bool pending = c->out.off < c->out.len;
    if (!pending)
        c->out.len = c->out.off = 0;
    if (pending != c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | (pending ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = pending;
    }
}

static void on_publish(struct client *c, const uint8_t *body, uint32_t len, uint8_t flags, uint64_t now)
{
    uint32_t tl = (uint32_t)body[0] << 8 | body[1];
    uint32_t off = 2 + tl;
    if ((flags >> 1) & 3) {
        uint8_t ack[4] = {0x40, 2, body[off], body[off + 1]};
        put(&c->out, ack, 4);
        off += 2;
    }
    if (len - off < 16)
        return;
    uint32_t pub;
    uint64_t sent_ns;
    memcpy(&pub, body + off, 4);
    memcpy(&sent_ns, body + off + 8, 8);
    if (pub < (uint32_t)n_pubs)
        clients[pub].deliveries++;
    if (measuring) {
        delivered_in_window++;
        if (n_lat == cap_lat) {
            cap_lat = cap_lat ? cap_lat * 2 : 1 << 20;
            lat = hd_xrealloc(lat, cap_lat * sizeof(*lat));
        }
        uint64_t d = now - sent_ns;
        lat[n_lat++] = d > 4000000000ull ? 4000000000u : (uint32_t)d;
    }
}

static void on_readable(struct client *c)
{
    if (c->in.cap - c->in.len < 65536) {
        c->in.cap = c->in.len + 65536 * 2;
        c->in.data = hd_xrealloc(c->in.data, c->in.cap);
    }
    ssize_t n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN)) {
        fprintf(stderr, "mqtt-load: connection %d closed by the broker\n", c->idx);
        exit(1);
    }
    if (n < 0)
        return;
    c->in.len += (size_t)n;
    uint64_t now = hd_now_ns();
    size_t pos = 0;
    while (c->in.len - pos >= 2) {
        uint32_t rl = 0, mult = 1, i = 1;
        bool complete = false;
        for (; i < 5 && pos + i < c->in.len; i++) {
            rl += (c->in.data[pos + i] & 0x7fu) * mult;
            mult *= 128;
            if (!(c->in.data[pos + i] & 0x80)) {
                complete = true;
                break;
            }
        }
        if (!complete || c->in.len - pos < i + 1 + rl)
            break;
        uint8_t type = c->in.data[pos] >> 4;
        const uint8_t *body = c->in.data + pos + i + 1;
        if (type == 2)
            connacks++;
        else if (type == 9)
            subacks++;
        else if (type == 3)
            on_publish(c, body, rl, c->in.data[pos] & 0x0f, now);
        pos += i + 1 + rl;
    }
    memmove(c->in.data, c->in.data + pos, c->in.len - pos);
    c->in.len -= pos;
    if (c->out.len)
        flush(c);
}

static void top_up(struct client *p, uint64_t now)
{
    uint8_t *payload = alloca((size_t)payload_size);
    memset(payload, 'x', (size_t)payload_size);
    uint32_t idx = (uint32_t)p->idx;
    memcpy(payload, &idx, 4);
    memcpy(payload + 8, &now, 8);
    size_t tl = strlen(p->topic);
    uint32_t rl = (uint32_t)(2 + tl + (qos ? 2 : 0) + (size_t)payload_size);
    while (p->sent - p->deliveries / (uint64_t)expected_per_msg < (uint64_t)window && p->out.len < (1 << 20)) {
        uint8_t type = (uint8_t)(0x30 | qos << 1);
        put(&p->out, &type, 1);
        put_varint(&p->out, rl);
        put_str(&p->out, p->topic);
        if (qos) {
            if (++p->next_pid == 0)
                p->next_pid = 1;
            uint8_t pid[2] = {(uint8_t)(p->next_pid >> 8), (uint8_t)p->next_pid};
            put(&p->out, pid, 2);
        }
        put(&p->out, payload, (size_t)payload_size);
        p->sent++;
    }
    flush(p);
}

static void pump(int timeout_ms)
{
    struct epoll_event ev[512];
    int n = epoll_wait(epfd, ev, 512, timeout_ms);
    for (int i = 0; i < n; i++) {
        struct client *c = ev[i].data.ptr;
        if (ev[i].events & EPOLLOUT)
            flush(c);
        if (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
            on_readable(c);
    }
}

static void add_client(struct client *c, int port, bool is_pub, int idx)
{
    c->fd = connect_to(port);
    c->is_pub = is_pub;
    c->idx = idx;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static long rss_kb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static int run_idle(int port, int n, int pid)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;  /* only up to the hard limit: no privilege needed */
    setrlimit(RLIMIT_NOFILE, &rl);
    clients = hd_xcalloc((size_t)n, sizeof(*clients));
    long before = rss_kb(pid);
    for (int i = 0; i < n; i += 200) {
        int end = i + 200 < n ? i + 200 : n;
        for (int k = i; k < end; k++) {
            add_client(&clients[k], port, false, k);
            char id[32];
            snprintf(id, sizeof(id), "idle-%d", k);
            send_connect(&clients[k], id);
            flush(&clients[k]);
        }
        while (connacks < end)
            pump(1000);
    }
    usleep(500000);
    long after = rss_kb(pid);
    printf("idle=%d rss_before_kb=%ld rss_after_kb=%ld bytes_per_conn=%.0f\n", n, before, after,
           (double)(after - before) * 1024.0 / n);
    return 0;
}

int main(int argc, char **argv)
{
    int port = 1883, seconds = 3, idle = 0, pid = 0;
    const char *scenario = "pairs";
    n_pubs = n_subs = 1;
    static const struct option opts[] = {
        {"port", required_argument, NULL, 'p'}, {"scenario", required_argument, NULL, 's'},
        {"pubs", required_argument, NULL, 'P'}, {"subs", required_argument, NULL, 'S'},
        {"qos", required_argument, NULL, 'q'}, {"size", required_argument, NULL, 'z'},
        {"seconds", required_argument, NULL, 't'}, {"window", required_argument, NULL, 'w'},
        {"idle", required_argument, NULL, 'i'}, {"pid", required_argument, NULL, 'd'},
        {NULL, 0, NULL, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'p': port = atoi(optarg); break;
        case 's': scenario = optarg; break;
        case 'P': n_pubs = atoi(optarg); break;
        case 'S': n_subs = atoi(optarg); break;
        case 'q': qos = atoi(optarg); break;
        case 'z': payload_size = atoi(optarg); break;
        case 't': seconds = atoi(optarg); break;
        case 'w': window = atoi(optarg); break;
        case 'i': idle = atoi(optarg); break;
        case 'd': pid = atoi(optarg); break;
        default: return 2;
        }
    }
    if (payload_size < 16)
        payload_size = 16;
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (idle)
        return run_idle(port, idle, pid);

    bool fanout = strcmp(scenario, "fanout") == 0, pairs = strcmp(scenario, "pairs") == 0;
    expected_per_msg = fanout ? n_subs : 1;
    n_clients = n_pubs + n_subs;
    clients = hd_xcalloc((size_t)n_clients, sizeof(*clients));
    for (int i = 0; i < n_clients; i++) {
        bool is_pub = i < n_pubs;
        int idx = is_pub ? i : i - n_pubs;
        struct client *c = &clients[i];
        add_client(c, port, is_pub, i);
        char id[64];
        snprintf(id, sizeof(id), "load-%s-%d-%d", is_pub ? "pub" : "sub", idx, getpid());
        send_connect(c, id);
        flush(c);
        if (is_pub)
            snprintf(c->topic, sizeof(c->topic), fanout ? "bench/out" : pairs ? "bench/pair/%d" : "bench/in/%d", idx);
    }
    while (connacks < n_clients)
        pump(1000);
    for (int j = 0; j < n_subs; j++) {
        struct client *c = &clients[n_pubs + j];
        char filter[64];
        snprintf(filter, sizeof(filter), fanout ? "bench/out" : pairs ? "bench/pair/%d" : "bench/in/+", j);
        struct buf body = {0};
        uint8_t pid2[2] = {0, 1};
        put(&body, pid2, 2);
        put_str(&body, filter);
        uint8_t q = (uint8_t)qos;
        put(&body, &q, 1);
        uint8_t type = 0x82;
        put(&c->out, &type, 1);
        put_varint(&c->out, (uint32_t)body.len);
        put(&c->out, body.data, body.len);
        free(body.data);
        flush(c);
    }
    while (subacks < n_subs)
        pump(1000);

    uint64_t start = hd_now_ns(), warm = start + 500000000ull, end = warm + (uint64_t)seconds * 1000000000ull;
    uint64_t sent_at_warm = 0;
    for (;;) {
        uint64_t now = hd_now_ns();
        if (!measuring && now >= warm) {
            measuring = true;
            for (int i = 0; i < n_pubs; i++)
                sent_at_warm += clients[i].sent;
        }
        if (now >= end)
            break;
        for (int i = 0; i < n_pubs; i++)
            top_up(&clients[i], now);
        pump(5);
    }
    uint64_t sent = 0;
    for (int i = 0; i < n_pubs; i++)
        sent += clients[i].sent;
    qsort(lat, n_lat, sizeof(*lat), cmp_u32);
    double p50 = n_lat ? lat[n_lat / 2] / 1000.0 : 0, p99 = n_lat ? lat[n_lat * 99 / 100] / 1000.0 : 0;
    printf("scenario=%s qos=%d size=%d pubs=%d subs=%d msgs_per_s=%.0f p50_us=%.1f p99_us=%.1f published=%llu\n",
           scenario, qos, payload_size, n_pubs, n_subs, delivered_in_window / (double)seconds, p50, p99,
           (unsigned long long)(sent - sent_at_warm));
    return 0;
}
