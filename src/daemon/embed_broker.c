/*
 * embed_broker.c - the MQTT broker (src/broker/) inside hedged.
 *
 * The broker attaches to hedged's one loop (hd_broker_attach): its listeners,
 * its connections, its 1 s tick (keepalive, wills, session expiry, $SYS) and
 * its end-of-turn group commit all live there. Embedded default: plain MQTT on
 * 127.0.0.1:1883, persistence under <state_dir>/broker.
 *
 * The `broker` section of hedged's JSON config maps onto struct
 * hd_broker_config with the key names of the broker's own config file
 * (docs/broker.md); unknown fields are errors naming "broker.<field>".
 * `hedged --check` also builds a throw-away broker (listeners on port 0, no
 * store) so missing password, ACL and certificate files are reported there.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "daemon/daemon.h"
#include "base/util.h"

static int broker_bool(const json_t *v, const char *key, bool *out, hd_error_t *err)
{
    if (!json_is_boolean(v))
        return hd_error_set(err, 0, "broker.%s: must be true or false", key);
    *out = json_is_true(v);
    return 0;
}

static int broker_path(const json_t *v, const char *key, char **out, hd_error_t *err)
{
    if (!json_is_string(v) || json_string_value(v)[0] != '/')
        return hd_error_set(err, 0, "broker.%s: must be an absolute path", key);
    free(*out);
    *out = hd_xstrdup(json_string_value(v));
    return 0;
}

/* An integer (or a size string such as "1M" where sizes make sense) within min..max. */
static int broker_number(const json_t *v, const char *key, uint64_t min, uint64_t max, uint64_t *out,
                         hd_error_t *err)
{
    int64_t n = -1;
    if (json_is_integer(v))
        n = json_integer_value(v);
    else if (json_is_string(v) && hd_parse_size(json_string_value(v), &n) < 0)
        n = -1;
    if (n < 0 || (uint64_t)n < min || (uint64_t)n > max)
        return hd_error_set(err, 0, "broker.%s: must be an integer %llu..%llu", key, (unsigned long long)min,
                            (unsigned long long)max);
    *out = (uint64_t)n;
    return 0;
}

/* "HOST:PORT", "[V6]:PORT" or ":PORT" (all addresses). */
static bool broker_address_ok(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon[1] == '\0' || strlen(colon + 1) > 5)
        return false;
    for (const char *p = colon + 1; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    return atoi(colon + 1) <= 65535;
}

static int broker_addresses(const json_t *v, const char *key, char ***out, hd_error_t *err)
{
    if (!json_is_array(v))
        return hd_error_set(err, 0, "broker.%s: must be an array of \"HOST:PORT\" strings", key);
    char **list = NULL;
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item) {
        if (!json_is_string(item) || !broker_address_ok(json_string_value(item))) {
            hd_strv_free(list);
            return hd_error_set(err, 0, "broker.%s[%zu]: must be \"HOST:PORT\"", key, i);
        }
        hd_strv_push(&list, json_string_value(item));
    }
    hd_strv_free(*out);
    *out = list;
    return 0;
}

int hd_config_load_broker(struct hd_daemon_config *cfg, const json_t *section, hd_error_t *err)
{
    if (!json_is_object(section))
        return hd_error_set(err, 0, "broker: must be an object");
    struct hd_broker_config *bc = &cfg->broker;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)section, key, v) {
        uint64_t n = 0;
        bool flag = false;
        int r = 0;
        if (strcmp(key, "enabled") == 0)
            r = broker_bool(v, key, &cfg->broker_enabled, err);
        else if (strcmp(key, "listen") == 0)
            r = broker_addresses(v, key, &bc->listen, err);
        else if (strcmp(key, "listen_tls") == 0)
            r = broker_addresses(v, key, &bc->listen_tls, err);
        else if (strcmp(key, "tls_cert") == 0)
            r = broker_path(v, key, &bc->tls_cert, err);
        else if (strcmp(key, "tls_key") == 0)
            r = broker_path(v, key, &bc->tls_key, err);
        else if (strcmp(key, "tls_ca") == 0)
            r = broker_path(v, key, &bc->tls_ca, err);
        else if (strcmp(key, "tls_require_certificate") == 0)
            r = broker_bool(v, key, &bc->tls_require_cert, err);
        else if (strcmp(key, "tls_use_identity_as_username") == 0)
            r = broker_bool(v, key, &bc->tls_cert_as_username, err);
        else if (strcmp(key, "state_dir") == 0)
            r = broker_path(v, key, &bc->state_dir, err);
        else if (strcmp(key, "persistence_sync") == 0) {
            const char *s = json_string_value(v);
            if (s && strcmp(s, "full") == 0)
                bc->sync_full = true;
            else if (s && strcmp(s, "normal") == 0)
                bc->sync_full = false;
            else
                r = hd_error_set(err, 0, "broker.%s: must be \"full\" or \"normal\"", key);
        } else if (strcmp(key, "password_file") == 0)
            r = broker_path(v, key, &bc->password_file, err);
        else if (strcmp(key, "acl_file") == 0)
            r = broker_path(v, key, &bc->acl_file, err);
        else if (strcmp(key, "allow_anonymous") == 0) {
            r = broker_bool(v, key, &flag, err);
            bc->allow_anonymous = flag;
        } else if (strcmp(key, "max_packet_size") == 0) {
            r = broker_number(v, key, 64, 268435455, &n, err);
            bc->max_packet_size = (uint32_t)n;
        } else if (strcmp(key, "max_inflight_messages") == 0) {
            r = broker_number(v, key, 1, 65535, &n, err);
            bc->max_inflight = (uint16_t)n;
        } else if (strcmp(key, "max_queued_messages") == 0) {
            r = broker_number(v, key, 0, UINT32_MAX, &n, err);
            bc->max_queued_messages = (uint32_t)n;
        } else if (strcmp(key, "max_queued_bytes") == 0) {
            r = broker_number(v, key, 0, UINT64_MAX >> 1, &n, err);
            bc->max_queued_bytes = n;
        } else if (strcmp(key, "queue_full_policy") == 0) {
            const char *s = json_string_value(v);
            if (s && strcmp(s, "drop-new") == 0)
                bc->queue_policy = HD_BROKER_DROP_NEW;
            else if (s && strcmp(s, "drop-oldest") == 0)
                bc->queue_policy = HD_BROKER_DROP_OLDEST;
            else
                r = hd_error_set(err, 0, "broker.%s: must be \"drop-new\" or \"drop-oldest\"", key);
        } else if (strcmp(key, "max_connections") == 0) {
            r = broker_number(v, key, 0, UINT32_MAX, &n, err);
            bc->max_connections = (uint32_t)n;
        } else if (strcmp(key, "connection_rate") == 0) {
            r = broker_number(v, key, 0, UINT32_MAX, &n, err);
            bc->connection_rate = (uint32_t)n;
        } else if (strcmp(key, "client_connection_rate") == 0) {
            r = broker_number(v, key, 0, UINT32_MAX, &n, err);
            bc->client_connection_rate = (uint32_t)n;
        } else if (strcmp(key, "topic_alias_maximum") == 0) {
            r = broker_number(v, key, 0, 65535, &n, err);
            bc->topic_alias_max = (uint16_t)n;
        } else if (strcmp(key, "max_keepalive") == 0) {
            r = broker_number(v, key, 0, 65535, &n, err);
            bc->max_keepalive = (uint16_t)n;
        } else if (strcmp(key, "connect_timeout") == 0) {
            r = broker_number(v, key, 1, 3600, &n, err);
            bc->connect_timeout_ms = (uint32_t)(n * 1000);
        } else if (strcmp(key, "sys_interval") == 0) {
            r = broker_number(v, key, 0, 86400, &n, err);
            bc->sys_interval = (uint32_t)n;
        } else
            r = hd_error_set(err, 0, "broker.%s: unknown field", key);
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
    trial.listen = plain;
    trial.listen_tls = trial.listen_tls && trial.listen_tls[0] ? tls : NULL;
    trial.state_dir = NULL;
    trial.sys_interval = 0;
    struct hd_broker *b = NULL;
    if (hd_broker_new(&trial, &b, err) < 0)
        return hd_error_prefix(err, "broker");
    hd_broker_free(b);
    return 0;
}

/* A listener's address is taken (on Debian, mosquitto.service holds 127.0.0.1:1883): keep the broker's
 * "listener HOST:PORT: bind: Address already in use" and say what to change. */
static void broker_explain_address_in_use(hd_error_t *err)
{
    cleanup_free char *text = hd_xstrdup(hd_error_text(*err));
    hd_error_free(err);
    hd_error_set(err, 0,
                 "%s (another program holds that address, e.g. another MQTT broker such as "
                 "mosquitto.service; choose a free one with broker.listen (or broker.listen_tls) in the "
                 "config file, or --mqtt-listen HOST:PORT)", text);
}

int hd_daemon_broker_start(struct hd_loop *loop, const struct hd_daemon_config *cfg, struct hd_broker **out,
                           hd_error_t *err)
{
    *out = NULL;
    if (!cfg->broker_enabled)
        return 0;
    struct hd_broker *b = NULL;
    if (hd_broker_new(&cfg->broker, &b, err) < 0) {
        if (*err && (*err)->errnum == EADDRINUSE)
            broker_explain_address_in_use(err);
        return hd_error_prefix(err, "broker");
    }
    if (hd_broker_attach(b, loop, err) < 0) {
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

char *hd_daemon_broker_metrics(struct hd_broker *b)
{
    struct hd_broker_stats s;
    hd_broker_get_stats(b, &s);
    return hd_xasprintf(
        "# HELP hedge_broker_clients_connected MQTT clients connected now.\n"
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
