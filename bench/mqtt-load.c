/*
 * mqtt-load.c - an MQTT load generator for bench/mqtt: N publishers and M
 * subscribers over loopback in one epoll thread, measuring delivered
 * messages per second and end-to-end latency percentiles.
 *
 *   mqtt-load --port P --scenario fanin|fanout|pairs --pubs N --subs M
 *             [--qos 0|1] [--size BYTES] [--seconds S] [--window W]
 *   mqtt-load --port P --idle N --pid BROKER_PID      (memory per idle connection)
 *
 * Every connection is an hd_mqtt_client (src/mqtt/client.h, MQTT 3.1.1): the
 * packets are the ones the uplink and the function host send, and only the
 * driving loop is here (the clients' fds in one epoll set, their poll events
 * mapped one to one). Flow control is end to end: a publisher keeps at most W
 * messages whose deliveries have not all arrived yet, so the figure is the
 * broker's sustainable throughput with bounded queues, and latency is not
 * just the depth of a queue the generator itself built up. Each payload
 * carries the publisher index and the send time (CLOCK_MONOTONIC); one
 * timestamp is taken per readiness batch. Output: one line of key=value pairs.
 */
#include <getopt.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "base/util.h"
#include "mqtt/client.h"

struct client {
    struct hd_mqtt_client *mqtt;
    bool is_pub;
    int idx;
    uint32_t events; /* what the epoll set waits for on this client's fd */
    char topic[64];
    uint16_t next_pid;
    uint64_t sent, deliveries; /* publishers: messages sent, deliveries seen by subscribers */
};

static struct client *clients;
static int n_clients, n_pubs, n_subs, epfd;
static int qos, payload_size = 64, window = 16, expected_per_msg = 1;
static int connacks, subacks;
static bool measuring;
static uint64_t now_ns; /* taken once per readiness batch */
static uint64_t delivered_in_window;
static uint32_t *lat; /* latency samples in ns (capped at 4 s) */
static size_t n_lat, cap_lat;

/* Make the epoll set wait for what the client wants now (poll and epoll bits are the same values). */
static void watch(struct client *c)
{
    uint32_t want = (uint32_t)hd_mqtt_client_events(c->mqtt);
    if (want == c->events)
        return;
    struct epoll_event ev = {.events = want, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, hd_mqtt_client_fd(c->mqtt), &ev);
    c->events = want;
}

static void on_connect(void *ctx, bool session_present)
{
    connacks++;
}

static void on_suback(void *ctx, uint16_t packet_id, const uint8_t *codes, size_t n)
{
    subacks++;
}

static void on_disconnect(void *ctx, const char *reason)
{
    fprintf(stderr, "mqtt-load: connection %d: %s\n", ((struct client *)ctx)->idx, reason);
    exit(1);
}

static void on_message(void *ctx, const struct hd_mqtt_message *m)
{
    struct client *c = ctx;
    if (m->qos)
        hd_mqtt_puback(c->mqtt, m->packet_id); /* written when the read batch is done */
    if (m->payload_len < 16)
        return;
    uint32_t pub;
    uint64_t sent_ns;
    memcpy(&pub, m->payload, 4);
    memcpy(&sent_ns, m->payload + 8, 8);
    if (pub < (uint32_t)n_pubs)
        clients[pub].deliveries++;
    if (measuring) {
        delivered_in_window++;
        if (n_lat == cap_lat) {
            cap_lat = cap_lat ? cap_lat * 2 : 1 << 20;
            lat = hd_xrealloc(lat, cap_lat * sizeof(*lat));
        }
        uint64_t d = now_ns - sent_ns;
        lat[n_lat++] = d > 4000000000ull ? 4000000000u : (uint32_t)d;
    }
}

static void top_up(struct client *p, uint64_t now)
{
    uint8_t *payload = alloca((size_t)payload_size);
    memset(payload, 'x', (size_t)payload_size);
    uint32_t idx = (uint32_t)p->idx;
    memcpy(payload, &idx, 4);
    memcpy(payload + 8, &now, 8);
    while (p->sent - p->deliveries / (uint64_t)expected_per_msg < (uint64_t)window &&
           hd_mqtt_client_pending(p->mqtt) < (1 << 20)) {
        if (qos && ++p->next_pid == 0)
            p->next_pid = 1;
        hd_mqtt_publish(p->mqtt, p->topic, payload, (size_t)payload_size, (uint8_t)qos, false, p->next_pid, NULL, 0);
        p->sent++;
    }
    hd_mqtt_client_flush(p->mqtt);
    watch(p);
}

static void pump(int timeout_ms)
{
    struct epoll_event ev[512];
    int n = epoll_wait(epfd, ev, 512, timeout_ms);
    now_ns = hd_now_ns();
    for (int i = 0; i < n; i++) {
        struct client *c = ev[i].data.ptr;
        hd_mqtt_client_handle(c->mqtt, (short)ev[i].events);
        watch(c);
    }
}

/* Connect (non-blocking: CONNECT goes out when the socket is writable, CONNACK arrives through pump). */
static void add_client(struct client *c, int port, bool is_pub, int idx, const char *id)
{
    static const struct hd_mqtt_callbacks cb = {
        .on_connect = on_connect,
        .on_message = on_message,
        .on_suback = on_suback,
        .on_disconnect = on_disconnect,
    };
    struct hd_mqtt_options o = {.host = (char *)"127.0.0.1",
                                .port = port,
                                .client_id = (char *)id,
                                .clean_session = true,
                                .keepalive = 60,
                                .protocol = 4};
    c->is_pub = is_pub;
    c->idx = idx;
    c->mqtt = hd_mqtt_client_new(&o, &cb, c);
    hd_error_t err = NULL;
    if (hd_mqtt_client_connect(c->mqtt, &err) < 0) {
        hd_error_print(err, "mqtt-load");
        exit(1);
    }
    c->events = (uint32_t)hd_mqtt_client_events(c->mqtt);
    struct epoll_event ev = {.events = c->events, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_ADD, hd_mqtt_client_fd(c->mqtt), &ev);
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
    rl.rlim_cur = rl.rlim_max; /* only up to the hard limit: no privilege needed */
    setrlimit(RLIMIT_NOFILE, &rl);
    clients = hd_xcalloc((size_t)n, sizeof(*clients));
    long before = rss_kb(pid);
    for (int i = 0; i < n; i += 200) {
        int end = i + 200 < n ? i + 200 : n;
        for (int k = i; k < end; k++) {
            char id[32];
            snprintf(id, sizeof(id), "idle-%d", k);
            add_client(&clients[k], port, false, k, id);
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
        {"port", required_argument, NULL, 'p'},
        {"scenario", required_argument, NULL, 's'},
        {"pubs", required_argument, NULL, 'P'},
        {"subs", required_argument, NULL, 'S'},
        {"qos", required_argument, NULL, 'q'},
        {"size", required_argument, NULL, 'z'},
        {"seconds", required_argument, NULL, 't'},
        {"window", required_argument, NULL, 'w'},
        {"idle", required_argument, NULL, 'i'},
        {"pid", required_argument, NULL, 'd'},
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
        char id[64];
        snprintf(id, sizeof(id), "load-%s-%d-%d", is_pub ? "pub" : "sub", idx, getpid());
        add_client(c, port, is_pub, i, id);
        if (is_pub)
            snprintf(c->topic, sizeof(c->topic), fanout ? "bench/out" : pairs ? "bench/pair/%d" : "bench/in/%d", idx);
    }
    while (connacks < n_clients)
        pump(1000);
    for (int j = 0; j < n_subs; j++) {
        struct client *c = &clients[n_pubs + j];
        char filter[64];
        snprintf(filter, sizeof(filter), fanout ? "bench/out" : pairs ? "bench/pair/%d" : "bench/in/+", j);
        char *filters[] = {filter, NULL};
        hd_mqtt_subscribe(c->mqtt, 1, filters, (uint8_t)qos);
        hd_mqtt_client_flush(c->mqtt);
        watch(c);
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
