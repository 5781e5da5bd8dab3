/*
 * config.c - the broker's configuration: defaults and a mosquitto-style
 * "key value" file (one setting a line, '#' comments). docs/broker.md lists
 * every key. Unknown keys and bad values are errors naming the line, so a
 * typo never silently weakens security.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "base/util.h"

void hd_broker_config_init(struct hd_broker_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->allow_anonymous = -1;
    cfg->max_packet_size = 1024 * 1024;
    cfg->max_inflight = 20;
    cfg->max_queued_messages = 1000;
    cfg->queue_policy = HD_BROKER_DROP_NEW;
    cfg->topic_alias_max = 10;
    cfg->connect_timeout_ms = 10000;
    cfg->sys_interval = 10;
}

void hd_broker_config_free(struct hd_broker_config *cfg)
{
    hd_strv_free(cfg->listen);
    hd_strv_free(cfg->listen_tls);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg->tls_ca);
    free(cfg->state_dir);
    free(cfg->password_file);
    free(cfg->acl_file);
    memset(cfg, 0, sizeof(*cfg));
}

static int parse_bool(const char *v, bool *out)
{
    if (strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 || strcmp(v, "1") == 0)
        *out = true;
    else if (strcmp(v, "false") == 0 || strcmp(v, "no") == 0 || strcmp(v, "0") == 0)
        *out = false;
    else
        return -1;
    return 0;
}

static int parse_u64(const char *v, uint64_t max, uint64_t *out)
{
    int64_t n;
    if (hd_parse_size(v, &n) < 0 || n < 0 || (uint64_t)n > max)
        return -1;
    *out = (uint64_t)n;
    return 0;
}

static void set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = hd_xstrdup(v);
}

int hd_broker_config_load(struct hd_broker_config *cfg, const char *path, hd_error_t *err)
{
    cleanup_free char *text = NULL;
    if (hd_read_file(path, &text, NULL, err) < 0)
        return hd_error_prefix(err, "broker config");
    int lineno = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        line[strcspn(line, "\r#")] = '\0';
        char *key = line + strspn(line, " \t");
        if (!*key)
            continue;
        char *val = key + strcspn(key, " \t");
        if (*val)
            *val++ = '\0';
        val += strspn(val, " \t");
        for (char *end = val + strlen(val); end > val && (end[-1] == ' ' || end[-1] == '\t'); end--)
            end[-1] = '\0';
        uint64_t n = 0;
        bool flag = false;
        int bad = 0;
        if (!*val) {
            bad = 1;
        } else if (strcmp(key, "listener") == 0) {
            hd_strv_push(&cfg->listen, val);
        } else if (strcmp(key, "listener_tls") == 0) {
            hd_strv_push(&cfg->listen_tls, val);
        } else if (strcmp(key, "tls_cert") == 0) {
            set_str(&cfg->tls_cert, val);
        } else if (strcmp(key, "tls_key") == 0) {
            set_str(&cfg->tls_key, val);
        } else if (strcmp(key, "tls_ca") == 0) {
            set_str(&cfg->tls_ca, val);
        } else if (strcmp(key, "tls_require_certificate") == 0) {
            bad = parse_bool(val, &cfg->tls_require_cert);
        } else if (strcmp(key, "tls_use_identity_as_username") == 0) {
            bad = parse_bool(val, &cfg->tls_cert_as_username);
        } else if (strcmp(key, "state_dir") == 0) {
            set_str(&cfg->state_dir, val);
        } else if (strcmp(key, "persistence_sync") == 0) {
            if (strcmp(val, "full") == 0)
                cfg->sync_full = true;
            else if (strcmp(val, "normal") == 0)
                cfg->sync_full = false;
            else
                bad = 1;
        } else if (strcmp(key, "password_file") == 0) {
            set_str(&cfg->password_file, val);
        } else if (strcmp(key, "acl_file") == 0) {
            set_str(&cfg->acl_file, val);
        } else if (strcmp(key, "allow_anonymous") == 0) {
            bad = parse_bool(val, &flag);
            cfg->allow_anonymous = flag;
        } else if (strcmp(key, "max_packet_size") == 0) {
            bad = parse_u64(val, 268435455, &n) || n < 64;
            cfg->max_packet_size = (uint32_t)n;
        } else if (strcmp(key, "max_inflight_messages") == 0) {
            bad = parse_u64(val, 65535, &n) || n == 0;
            cfg->max_inflight = (uint16_t)n;
        } else if (strcmp(key, "max_queued_messages") == 0) {
            bad = parse_u64(val, UINT32_MAX, &n);
            cfg->max_queued_messages = (uint32_t)n;
        } else if (strcmp(key, "max_queued_bytes") == 0) {
            bad = parse_u64(val, UINT64_MAX >> 1, &n);
            cfg->max_queued_bytes = n;
        } else if (strcmp(key, "queue_full_policy") == 0) {
            if (strcmp(val, "drop-new") == 0)
                cfg->queue_policy = HD_BROKER_DROP_NEW;
            else if (strcmp(val, "drop-oldest") == 0)
                cfg->queue_policy = HD_BROKER_DROP_OLDEST;
            else
                bad = 1;
        } else if (strcmp(key, "max_connections") == 0) {
            bad = parse_u64(val, UINT32_MAX, &n);
            cfg->max_connections = (uint32_t)n;
        } else if (strcmp(key, "connection_rate") == 0) {
            bad = parse_u64(val, UINT32_MAX, &n);
            cfg->connection_rate = (uint32_t)n;
        } else if (strcmp(key, "client_connection_rate") == 0) {
            bad = parse_u64(val, UINT32_MAX, &n);
            cfg->client_connection_rate = (uint32_t)n;
        } else if (strcmp(key, "topic_alias_maximum") == 0) {
            bad = parse_u64(val, 65535, &n);
            cfg->topic_alias_max = (uint16_t)n;
        } else if (strcmp(key, "max_keepalive") == 0) {
            bad = parse_u64(val, 65535, &n);
            cfg->max_keepalive = (uint16_t)n;
        } else if (strcmp(key, "connect_timeout") == 0) {
            bad = parse_u64(val, 3600, &n) || n == 0;
            cfg->connect_timeout_ms = (uint32_t)(n * 1000);
        } else if (strcmp(key, "sys_interval") == 0) {
            bad = parse_u64(val, 86400, &n);
            cfg->sys_interval = (uint32_t)n;
        } else {
            return hd_error_set(err, 0, "broker config %s line %d: unknown key '%s'", path, lineno, key);
        }
        if (bad)
            return hd_error_set(err, 0, "broker config %s line %d: bad value '%s' for %s", path, lineno, val, key);
    }
    return 0;
}
