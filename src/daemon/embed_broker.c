/*
 * embed_broker.c - the MQTT broker (src/broker/) inside hedged.
 *
 * The broker attaches to hedged's one loop (hd_broker_attach): its listeners,
 * its connections, its 1 s tick (keepalive, wills, session expiry, $SYS) and
 * its end-of-turn group commit all live there. Embedded default: plain MQTT on
 * 127.0.0.1:1883, persistence under <state_dir>/broker.
 *
 * The `broker` section of hedged's JSON config maps onto struct
 * hd_broker_config through the broker's own table of settings (broker/config.c,
 * the same one its config file goes through; docs/broker.md); unknown fields
 * are errors naming "broker.<field>".
 * `hedged --check` also builds a throw-away broker (listeners on port 0, no
 * store) so missing password, ACL and certificate files are reported there.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "daemon/daemon.h"
#include "base/json.h"
#include "base/util.h"

int hd_config_load_broker(struct hd_daemon_config *cfg, const json_t *section, hd_error_t *err)
{
    if (!json_is_object(section))
        return hd_error_set(err, 0, "broker: must be an object");
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)section, key, v)
    {
        int r;
        if (strcmp(key, "enabled") == 0)
            r = hd_json_bool(v, "broker.enabled", "true or false", &cfg->broker_enabled, err);
        else /* every other key is a broker setting, defined once in broker/config.c */
            r = hd_broker_config_set_json(&cfg->broker, key, v, err);
        if (r < 0)
            return -1;
    }
    return 0;
}

int hd_config_check_broker(const struct hd_daemon_config *cfg, hd_error_t *err)
{
    if (!cfg->broker_enabled)
        return 0;
    if (cfg->broker.listen_tls && cfg->broker.listen_tls[0] && (!cfg->broker.tls_cert || !cfg->broker.tls_key))
        return hd_error_set(err, 0, "broker.listen_tls: needs broker.tls_cert and broker.tls_key");
    /* Load the password, ACL and certificate files as the real broker would; bind nothing it needs. */
    struct hd_broker_config trial = cfg->broker;
    char any_port[] = "127.0.0.1:0", any_port_tls[] = "127.0.0.1:0";
    char *plain[] = {any_port, NULL};
    char *tls[] = {any_port_tls, NULL};
    bool any_tls = trial.listen_tls && trial.listen_tls[0];
    for (char **l = trial.listen; l && *l; l++)
        any_tls = any_tls || strncmp(*l, "wss://", 6) == 0; /* a wss:// listener loads the certificates too */
    trial.listen = plain;
    trial.listen_tls = any_tls ? tls : NULL;
    trial.state_dir = NULL;
    trial.sys_interval = 0;
    struct hd_broker *b = NULL;
    if (hd_broker_new(&trial, &b, err) < 0)
        return hd_error_prefix(err, "broker");
    hd_broker_free(b);
    return hd_config_check_broker_listen(cfg, err);
}

int hd_config_check_broker_listen(const struct hd_daemon_config *cfg, hd_error_t *err)
{
    if (!cfg->broker_enabled)
        return 0;
    bool any = cfg->broker.listen_tls && cfg->broker.listen_tls[0];
    for (char **l = cfg->broker.listen; l && *l; l++) {
        if (strstr(*l, "://") == NULL) /* a plain MQTT listener: HEDGE_MQTT_PORT and the uplink use it */
            return 0;
        any = true;
    }
    if (!any) /* none given: the broker's default 127.0.0.1:1883 */
        return 0;
    return hd_error_set(err, 0,
                        "broker.listen: needs a plain TCP listener (\"HOST:PORT\"): workloads and the uplink reach "
                        "the broker over TCP; ws://, wss:// and listen_tls listeners can only be added next to one");
}

#define BROKER_BIND_WAIT_NS (3ULL * 1000 * 1000 * 1000)

/* A listener's address is taken (on Debian, mosquitto.service holds 127.0.0.1:1883): keep the broker's
 * "listener HOST:PORT: bind: Address already in use" and say what to change. */
static void broker_explain_address_in_use(hd_error_t *err)
{
    cleanup_free char *text = hd_xstrdup(hd_error_text(*err));
    hd_error_free(err);
    hd_error_set(err, 0,
                 "%s (another program holds that address, e.g. another MQTT broker such as "
                 "mosquitto.service; choose a free one with broker.listen (or broker.listen_tls) in the "
                 "config file, or --mqtt-listen HOST:PORT)",
                 text);
}

int hd_daemon_broker_start(struct hd_loop *loop, const struct hd_daemon_config *cfg, bool held, struct hd_broker **out,
                           hd_error_t *err)
{
    *out = NULL;
    if (!cfg->broker_enabled)
        return 0;
    struct hd_broker *b = NULL;
    /* A hedged killed with -9 takes its network child along (PDEATHSIG), but that child may still hold
     * the listeners for a moment while the kernel tears it down: a taken address is tried again for a
     * while before it is an error (another broker holding it costs that wait once, at start). */
    uint64_t give_up = hd_now_ns() + BROKER_BIND_WAIT_NS;
    while (hd_broker_new(&cfg->broker, &b, err) < 0) {
        if (*err && (*err)->errnum == EADDRINUSE && hd_now_ns() < give_up) {
            hd_error_free(err);
            usleep(50 * 1000);
            continue;
        }
        if (*err && (*err)->errnum == EADDRINUSE)
            broker_explain_address_in_use(err);
        return hd_error_prefix(err, "broker");
    }
    if ((held ? hd_broker_attach_held(b, loop, err) : hd_broker_attach(b, loop, err)) < 0) {
        hd_broker_free(b);
        return hd_error_prefix(err, "broker");
    }
    for (char **l = cfg->broker.listen; l && *l; l++)
        hd_log(HD_LOG_INFO, "broker", "MQTT broker listening on %s", *l);
    for (char **l = cfg->broker.listen_tls; l && *l; l++)
        hd_log(HD_LOG_INFO, "broker", "MQTT broker listening on %s (TLS)", *l);
    *out = b;
    return 0;
}

void hd_daemon_broker_stop(struct hd_broker *b)
{
    hd_broker_free(b);
}

char *hd_daemon_broker_metrics_text(const struct hd_broker_stats *stats)
{
    const struct hd_broker_stats s = *stats;
    return hd_xasprintf("# HELP hedge_broker_clients_connected MQTT clients connected now.\n"
                        "# TYPE hedge_broker_clients_connected gauge\n"
                        "hedge_broker_clients_connected %llu\n"
                        "# HELP hedge_broker_clients_total MQTT connections accepted since start.\n"
                        "# TYPE hedge_broker_clients_total counter\n"
                        "hedge_broker_clients_total %llu\n"
                        "# HELP hedge_broker_messages_received_total PUBLISH packets received from clients.\n"
                        "# TYPE hedge_broker_messages_received_total counter\n"
                        "hedge_broker_messages_received_total %llu\n"
                        "# HELP hedge_broker_messages_sent_total PUBLISH packets sent to clients.\n"
                        "# TYPE hedge_broker_messages_sent_total counter\n"
                        "hedge_broker_messages_sent_total %llu\n"
                        "# HELP hedge_broker_messages_dropped_total Messages dropped by full queues.\n"
                        "# TYPE hedge_broker_messages_dropped_total counter\n"
                        "hedge_broker_messages_dropped_total %llu\n"
                        "# HELP hedge_broker_bytes_received_total Bytes received from MQTT clients.\n"
                        "# TYPE hedge_broker_bytes_received_total counter\n"
                        "hedge_broker_bytes_received_total %llu\n"
                        "# HELP hedge_broker_bytes_sent_total Bytes sent to MQTT clients.\n"
                        "# TYPE hedge_broker_bytes_sent_total counter\n"
                        "hedge_broker_bytes_sent_total %llu\n"
                        "# HELP hedge_broker_retained_messages Retained messages held.\n"
                        "# TYPE hedge_broker_retained_messages gauge\n"
                        "hedge_broker_retained_messages %llu\n"
                        "# HELP hedge_broker_subscriptions Subscriptions held (all sessions).\n"
                        "# TYPE hedge_broker_subscriptions gauge\n"
                        "hedge_broker_subscriptions %llu\n",
                        (unsigned long long)s.clients_connected, (unsigned long long)s.clients_total,
                        (unsigned long long)s.messages_received, (unsigned long long)s.messages_sent,
                        (unsigned long long)s.messages_dropped, (unsigned long long)s.bytes_received,
                        (unsigned long long)s.bytes_sent, (unsigned long long)s.retained_count,
                        (unsigned long long)s.subscriptions);
}
