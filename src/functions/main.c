/*
 * main.c - `hedge-functions`: one function, invoked by MQTT messages, run by
 * hedged as a function deployment (src/daemon/function_host.c) or on its own.
 *
 *   hedge-functions --spec F.json [--broker HOST:PORT] [--state-dir DIR] [--local DIR] [--check]
 *
 * It connects to the broker with MQTT 5 (for response topics and correlation
 * data), subscribes to the spec's triggers at QoS 1 and hands every message
 * to the invoker. A result is published (QoS 1) to the function's
 * reply_topic, else the request's response topic, else "<topic>/reply", with
 * the request's correlation data. Errors are JSON events on the same topic:
 * {"error": KIND, "function": NAME, "detail": TEXT}. Requests are
 * acknowledged on receipt: an invocation is not durable (a broker outage
 * loses those in flight). On SIGINT/SIGTERM the instances are stopped and
 * removed. The broker connection is retried every 500 ms.
 *
 * Everything runs in one hd_loop (src/base/loop.h): the MQTT client watches
 * its own socket, the invoker's result eventfd and the local socket are
 * watched, signals come through the loop's signalfd, and a 250/500 ms timer
 * retries the connection and ticks the keepalive. Results go out at the end
 * of every turn (deferred work), in one flush.
 *
 * The credentials come from HEDGE_MQTT_USERNAME and HEDGE_MQTT_PASSWORD when
 * set, and without --broker the address from HEDGE_MQTT_HOST and
 * HEDGE_MQTT_PORT (how hedged hands them over); all four are removed from
 * the environment before any instance starts, so that a process-isolated
 * function, which inherits the environment, never sees the host's
 * credentials. --local DIR serves `hedge
 * invoke NAME` on DIR/invoke.sock and keeps DIR/stats.json (local.h).
 * --share GROUP subscribes to "$share/GROUP/<trigger>" (MQTT 5 shared
 * subscriptions): hedged passes it so that while an upgrade's new version
 * runs beside the old one, each request is delivered to one of them, not
 * both (and a retained message does not invoke the function again at every
 * reconnect).
 * --own-placement (hedged passes it): the host owns $HEDGE_CGROUP_PARENT and
 * $HEDGE_RUN_DIR, where its instances' cgroups and run dirs go. It sweeps
 * both at start (a predecessor killed with SIGKILL left its pinned instance
 * and that instance's cgroups there) and removes them at exit.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "base/log.h"
#include "base/loop.h"
#include "cgroup/cgroup.h"
#include "functions/invoker.h"
#include "functions/local.h"
#include "mqtt/client.h"
#include "mqtt/topic.h"
#include "base/util.h"

struct app {
    const struct hd_spec *spec;
    struct hd_invoker *inv;
    struct hd_local *local; /* NULL without --local */
    struct hd_mqtt_client *mqtt;
    char **filters;
    uint16_t next_id;
    bool connected;
    struct hd_loop *loop;
    struct hd_defer *turn; /* results and stats at the end of this turn */
    const char *broker;
    uint64_t next_attempt_ns;
};

static void app_on_connect(void *ctx, bool session_present)
{
    struct app *a = ctx;
    a->connected = true;
    hd_mqtt_subscribe(a->mqtt, 1, a->filters, 1);
    hd_mqtt_client_flush(a->mqtt);
    hd_log(HD_LOG_INFO, "functions", "%s: connected, listening on %s%s", a->spec->name ? a->spec->name : "function",
           a->filters[0], a->filters[1] ? ", ..." : "");
}

static void app_on_suback(void *ctx, uint16_t id, const uint8_t *codes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (codes[i] >= 0x80)
            hd_log(HD_LOG_ERROR, "functions", "subscription %zu refused by the broker (0x%02x)", i, codes[i]);
    hd_log(HD_LOG_INFO, "functions", "subscribed");
}

static void app_on_message(void *ctx, const struct hd_mqtt_message *m)
{
    struct app *a = ctx;
    if (m->qos)
        hd_mqtt_puback(a->mqtt, m->packet_id);
    struct hd_invocation *call = hd_xcalloc(1, sizeof(*call));
    call->received_ns = hd_now_ns();
    if (a->spec->function.reply_topic)
        call->reply_topic = hd_xstrdup(a->spec->function.reply_topic);
    else if (m->response_topic && m->response_topic_len)
        call->reply_topic = strndup((const char *)m->response_topic, m->response_topic_len);
    else
        call->reply_topic = hd_xasprintf("%s/reply", m->topic);
    call->payload = hd_xmalloc(m->payload_len + 1);
    memcpy(call->payload, m->payload, m->payload_len);
    call->payload_len = m->payload_len;
    if (m->correlation) {
        call->correlation = hd_xmalloc(m->correlation_len + 1);
        memcpy(call->correlation, m->correlation, m->correlation_len);
        call->correlation_len = m->correlation_len;
    }
    hd_invoker_submit(a->inv, call);
}

static void app_on_disconnect(void *ctx, const char *reason)
{
    struct app *a = ctx;
    a->connected = false;
    hd_log(HD_LOG_WARN, "functions", "broker: %s", reason);
}

static void app_publish_results(struct app *a)
{
    struct hd_invocation *call;
    while ((call = hd_invoker_next_result(a->inv))) {
        if (a->local && hd_local_complete(a->local, call))
            continue;
        if (a->connected) {
            if (++a->next_id == 0)
                a->next_id = 1;
            hd_mqtt_publish(a->mqtt, call->reply_topic, call->body ? call->body : "", call->body_len, 1, false,
                            a->next_id, call->correlation, call->correlation_len);
        } else {
            hd_log(HD_LOG_WARN, "functions", "result for %s dropped: not connected", call->reply_topic);
        }
        hd_invocation_free(call);
    }
    hd_mqtt_client_flush(a->mqtt);
}

static void app_on_turn_end(struct hd_loop *loop, void *data)
{
    struct app *a = data;
    a->turn = NULL;
    app_publish_results(a);
    if (a->local)
        hd_local_write_stats(a->local, a->inv, false);
}

static void app_want_turn(struct app *a)
{
    if (a->turn == NULL)
        a->turn = hd_loop_defer(a->loop, app_on_turn_end, a);
}

static void app_after_io(void *ctx)
{
    app_want_turn(ctx);
}

static void app_on_results(struct hd_loop *loop, int fd, uint32_t events, void *data)
{
    app_want_turn(data); /* the turn's end drains the queue (and its eventfd) */
}

static void app_on_local(struct hd_loop *loop, int fd, uint32_t events, void *data)
{
    struct app *a = data;
    hd_local_accept(a->local, a->inv);
    app_want_turn(a);
}

/* Connect when due, keepalive, stats: every 250 ms with --local (a stats write may be due), else 500 ms. */
static void app_on_timer(struct hd_loop *loop, void *data)
{
    struct app *a = data;
    uint64_t now = hd_now_ns();
    if (hd_mqtt_client_state(a->mqtt) == HD_MQTT_DISCONNECTED && now >= a->next_attempt_ns) {
        a->next_attempt_ns = now + 500000000ull;
        hd_error_t err = NULL;
        if (hd_mqtt_client_connect(a->mqtt, &err) < 0) {
            hd_log(HD_LOG_WARN, "functions", "broker %s: %s", a->broker, hd_error_text(err));
            hd_error_free(&err);
        }
    }
    hd_mqtt_client_tick(a->mqtt, hd_now_ns()); /* not `now`: a connect just made is younger */
    app_want_turn(a);
    hd_loop_timer(loop, a->local ? 0.25 : 0.5, app_on_timer, a);
}

static void on_signal(struct hd_loop *loop, int signo, void *data)
{
    hd_loop_quit(loop);
}

/* --own-placement: kill and remove what is in our instances' cgroup parent and run dir (see the top). */
static int placement_sweep(hd_error_t *err)
{
    const char *parent = getenv("HEDGE_CGROUP_PARENT"), *run_dir = getenv("HEDGE_RUN_DIR");
    if (parent == NULL || !*parent || run_dir == NULL || !*run_dir)
        return hd_error_set(err, 0, "--own-placement: HEDGE_CGROUP_PARENT and HEDGE_RUN_DIR must be set");
    if (hd_cgroup_sweep(parent, err) < 0 || hd_rm_rf(run_dir, err) < 0)
        return hd_error_prefix(err, "--own-placement: sweep");
    return 0;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: hedge-functions --spec F.json [--broker HOST:PORT] [--state-dir DIR] [--local DIR] "
            "[--share GROUP] [--own-placement] [--check] [--log-level LEVEL]\n"
            "  without --broker: HEDGE_MQTT_HOST/PORT/USERNAME/PASSWORD, else 127.0.0.1:1883\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"spec", required_argument, NULL, 's'},
        {"broker", required_argument, NULL, 'b'},
        {"state-dir", required_argument, NULL, 'd'},
        {"check", no_argument, NULL, 'n'},
        {"local", required_argument, NULL, 'l'},
        {"share", required_argument, NULL, 'g'},
        {"log-level", required_argument, NULL, 'L'},
        {"own-placement", no_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    hd_log_init("hedge-functions", "functions");
    hd_error_t err = NULL;
    const char *spec_path = NULL, *broker = NULL, *state_dir = NULL, *local_dir = NULL, *share = NULL;
    bool check = false, own_placement = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "s:b:d:l:g:nhL:", longopts, NULL)) != -1) {
        switch (opt) {
        case 's': spec_path = optarg; break;
        case 'b': broker = optarg; break;
        case 'd': state_dir = optarg; break;
        case 'l': local_dir = optarg; break;
        case 'g': share = optarg; break;
        case 'n': check = true; break;
        case 'P': own_placement = true; break;
        case 'L':
            if (hd_log_set_level_name(optarg, &err) < 0) {
                hd_error_print(err, "hedge-functions: --log-level");
                hd_error_free(&err);
                return HD_EXIT_USAGE;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return HD_EXIT_USAGE;
        }
    }
    if (!spec_path || optind != argc) {
        usage(stderr);
        return HD_EXIT_USAGE;
    }
    cleanup_spec struct hd_spec *spec = hd_spec_new();
    cleanup_free char *host = NULL, *env_broker = NULL, *username = NULL, *password = NULL;
    int port;
    /* the host's broker credentials: read, then gone from the environment instances inherit */
    if (getenv("HEDGE_MQTT_USERNAME"))
        username = hd_xstrdup(getenv("HEDGE_MQTT_USERNAME"));
    if (getenv("HEDGE_MQTT_PASSWORD"))
        password = hd_xstrdup(getenv("HEDGE_MQTT_PASSWORD"));
    const char *h = getenv("HEDGE_MQTT_HOST");
    if (broker == NULL && h) {
        const char *p = getenv("HEDGE_MQTT_PORT");
        env_broker =
            strchr(h, ':') ? hd_xasprintf("[%s]:%s", h, p ? p : "1883") : hd_xasprintf("%s:%s", h, p ? p : "1883");
        broker = env_broker;
    }
    if (broker == NULL)
        broker = "127.0.0.1:1883";
    unsetenv("HEDGE_MQTT_HOST");
    unsetenv("HEDGE_MQTT_PORT");
    unsetenv("HEDGE_MQTT_USERNAME");
    unsetenv("HEDGE_MQTT_PASSWORD");
    if (hd_spec_load_file(spec, spec_path, &err) < 0 || hd_spec_validate(spec, &err) < 0 ||
        hd_mqtt_parse_address(broker, 1883, &host, &port, &err) < 0)
        goto fail_usage;
    if (spec->function.mode == HD_FUNCTION_NONE) {
        hd_error_set_code(&err, HD_EXIT_USAGE, 0, "%s: function: the spec has no function block", spec_path);
        goto fail_usage;
    }
    if (check) {
        printf("%s: ok (%s function, %d trigger(s))\n", spec_path, hd_function_mode_name(spec->function.mode),
               spec->n_triggers);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    if (own_placement && placement_sweep(&err) < 0)
        goto fail;

    struct app a = {.spec = spec, .broker = broker};
    if (share && !hd_mqtt_level_valid_name(share)) {
        hd_error_set_code(&err, HD_EXIT_USAGE, 0, "--share %s: a group name has no '/', '+' or '#'", share);
        goto fail_usage;
    }
    for (int i = 0; i < spec->n_triggers; i++) {
        if (share) {
            char *shared = hd_xasprintf("$share/%s/%s", share, spec->triggers[i].topic);
            hd_strv_push(&a.filters, shared);
            free(shared);
        } else
            hd_strv_push(&a.filters, spec->triggers[i].topic);
    }
    /* Before the invoker starts its threads: they inherit the blocked signals, so SIGTERM reaches the
     * loop's signalfd and never a thread's default action. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    a.loop = hd_loop_new(&err);
    if (a.loop == NULL || hd_loop_signals(a.loop, &stop_signals, on_signal, NULL, &err) < 0) {
        hd_loop_free(a.loop);
        hd_strv_free(a.filters);
        goto fail;
    }
    a.inv = hd_invoker_new(spec, state_dir, &err);
    if (!a.inv) {
        hd_loop_free(a.loop);
        hd_strv_free(a.filters);
        goto fail;
    }
    if (local_dir && (a.local = hd_local_new(local_dir, &err)) == NULL) {
        hd_invoker_free(a.inv);
        hd_loop_free(a.loop);
        hd_strv_free(a.filters);
        goto fail;
    }
    if (a.local)
        hd_local_write_stats(a.local, a.inv, true);
    char client_id[64];
    snprintf(client_id, sizeof(client_id), "hedge-fn-%s-%d", spec->name ? spec->name : "f", (int)getpid());
    struct hd_mqtt_options mo = {.host = host,
                                 .port = port,
                                 .client_id = client_id,
                                 .clean_session = true,
                                 .keepalive = 30,
                                 .protocol = 5,
                                 .username = username,
                                 .password = password};
    struct hd_mqtt_callbacks cb = {.on_connect = app_on_connect,
                                   .on_message = app_on_message,
                                   .on_suback = app_on_suback,
                                   .on_disconnect = app_on_disconnect};
    a.mqtt = hd_mqtt_client_new(&mo, &cb, &a);
    int rc = -1;
    if (a.loop && hd_loop_watch(a.loop, hd_invoker_fd(a.inv), EPOLLIN, app_on_results, &a, &err) != NULL &&
        (!a.local || hd_loop_watch(a.loop, hd_local_fd(a.local), EPOLLIN, app_on_local, &a, &err) != NULL)) {
        hd_mqtt_client_attach(a.mqtt, a.loop, app_after_io);
        app_on_timer(a.loop, &a); /* connect now */
        rc = hd_loop_run(a.loop, &err);
    }
    if (rc < 0) {
        hd_log_error(HD_LOG_ERROR, "functions", &err);
    }
    struct hd_invoker_stats st;
    hd_invoker_get_stats(a.inv, &st);
    hd_log(HD_LOG_INFO, "functions",
           "stopping (%llu invocations, %llu errors, %llu timeouts, %llu rejected, "
           "%llu restarts, latency p50 %.2f ms p99 %.2f ms)",
           (unsigned long long)st.invocations, (unsigned long long)st.errors, (unsigned long long)st.timeouts,
           (unsigned long long)st.rejected, (unsigned long long)st.restarts, (double)st.p50_ns / 1e6,
           (double)st.p99_ns / 1e6);
    if (a.local) {
        hd_local_write_stats(a.local, a.inv, true);
        hd_local_free(a.local);
    }
    hd_invoker_free(a.inv);
    if (own_placement && placement_sweep(&err) < 0) {
        hd_log_error(HD_LOG_WARN, "functions", &err);
    }
    hd_mqtt_client_close(a.mqtt, true);
    hd_mqtt_client_free(a.mqtt);
    hd_loop_free(a.loop); /* its watches, timer and pending turn go with it */
    hd_strv_free(a.filters);
    return rc < 0 ? HD_EXIT_HEDGE : 0;

fail_usage:
fail : {
    int code = hd_error_exit_code(err);
    hd_error_print(err, "hedge-functions");
    hd_error_free(&err);
    return code ? code : HD_EXIT_HEDGE;
}
}
