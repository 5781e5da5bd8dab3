/*
 * config.c - the uplink's JSON configuration (see docs/uplink.md).
 *
 * One parser for both homes of the configuration: hedge-uplink's own file
 * (hd_uplink_config_load) and the "uplink" object of hedged's config
 * (hd_uplink_config_parse with the prefix "uplink." and `embedded`, which
 * lets "local" and "spool.path" default to the embedded broker and the state
 * dir). Every error names the field path ("cloud.tls.ca_file: must be a
 * string", "uplink.cloud.port: ...") and unknown keys are refused, so a typo does not silently become a
 * default. "{node_id}" in topic strings and client ids is replaced by the
 * node id. Mapping pairs must carry the same wildcards in the same order
 * (checked here, so hd_uplink_map_topic never meets a pair it cannot map).
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "mqtt/topic.h"
#include "uplink/uplink.h"
#include "base/json.h"
#include "base/util.h"

/* The uplink's configuration errors are usage errors (exit code 2). */
static int cfg_usage(int r, hd_error_t *err)
{
    if (r < 0 && *err)
        (*err)->exit_code = HD_EXIT_USAGE;
    return r;
}

static int cfg_type_error(hd_error_t *err, const char *path, const char *want)
{
    return hd_error_set_code(err, HD_EXIT_USAGE, 0, "%s: must be %s", path, want);
}

static int cfg_string(json_t *obj, const char *key, const char *path, char **out, bool required, hd_error_t *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            return hd_error_set_code(err, HD_EXIT_USAGE, 0, "%s%s: is required", path, key);
        return 0;
    }
    cleanup_free char *p = hd_xasprintf("%s%s", path, key);
    return cfg_usage(hd_json_string(v, p, "a non-empty string", true, out, err), err);
}

static int cfg_int(json_t *obj, const char *key, const char *path, int64_t min, int64_t max, int64_t *out,
                   hd_error_t *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    cleanup_free char *p = hd_xasprintf("%s%s", path, key);
    cleanup_free char *want = hd_xasprintf("an integer in %lld..%lld", (long long)min, (long long)max);
    return cfg_usage(hd_json_int(v, p, min, max, want, out, err), err);
}

static int cfg_bool(json_t *obj, const char *key, const char *path, bool *out, hd_error_t *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    cleanup_free char *p = hd_xasprintf("%s%s", path, key);
    return cfg_usage(hd_json_bool(v, p, "true or false", out, err), err);
}

/* Refuse keys not in `known` (NULL-terminated); path ends in '.' or is empty. */
static int cfg_known_keys(json_t *obj, const char *path, const char *const *known, hd_error_t *err)
{
    size_t len = strlen(path);
    cleanup_free char *parent = hd_xasprintf("%.*s", (int)(len && path[len - 1] == '.' ? len - 1 : len), path);
    return cfg_usage(hd_json_check_keys(obj, parent, known, err), err);
}

static char *cfg_expand(const char *s, const char *node_id)
{
    if (!s)
        return NULL;
    const char *at = strstr(s, "{node_id}");
    if (!at)
        return hd_xstrdup(s);
    cleanup_free char *rest = cfg_expand(at + 9, node_id);
    return hd_xasprintf("%.*s%s%s", (int)(at - s), s, node_id, rest);
}

static int cfg_broker(json_t *root, const char *prefix, const char *name, struct hd_mqtt_options *o,
                      const char *node_id, bool cloud, bool embedded, hd_error_t *err)
{
    json_t *obj = json_object_get(root, name);
    cleanup_free char *path = hd_xasprintf("%s%s.", prefix, name);
    /* hedged's local side is its own broker unless said otherwise: host and port stay unset (NULL, 0). */
    bool embedded_local = embedded && !cloud;
    if (!obj && embedded_local)
        obj = json_object();
    else if (!obj)
        return hd_error_set_code(err, HD_EXIT_USAGE, 0, "%s%s: is required", prefix, name);
    else if (!json_is_object(obj)) {
        cleanup_free char *p = hd_xasprintf("%s%s", prefix, name);
        return cfg_type_error(err, p, "an object");
    } else
        json_incref(obj);
    json_auto_t *owned = obj;
    static const char *const known[] = {"host",      "port",          "client_id", "username", "password",
                                        "keepalive", "clean_session", "tls",       NULL};
    if (cfg_known_keys(obj, path, known, err) < 0)
        return -1;
    int64_t port = embedded_local ? 0 : cloud ? 8883 : 1883, keepalive = 30;
    o->host = embedded_local ? NULL : hd_xstrdup("127.0.0.1");
    if (cfg_string(obj, "host", path, &o->host, false, err) < 0 ||
        cfg_int(obj, "port", path, 1, 65535, &port, err) < 0 ||
        cfg_string(obj, "client_id", path, &o->client_id, false, err) < 0 ||
        cfg_string(obj, "username", path, &o->username, false, err) < 0 ||
        cfg_string(obj, "password", path, &o->password, false, err) < 0 ||
        cfg_int(obj, "keepalive", path, 0, 65535, &keepalive, err) < 0 ||
        cfg_bool(obj, "clean_session", path, &o->clean_session, err) < 0)
        return -1;
    o->port = (int)port;
    o->keepalive = (uint16_t)keepalive;
    o->protocol = 4;
    if (!o->client_id)
        o->client_id = hd_xasprintf("hedge-uplink-%s", node_id);
    else {
        char *expanded = cfg_expand(o->client_id, node_id);
        free(o->client_id);
        o->client_id = expanded;
    }
    json_t *tls = json_object_get(obj, "tls");
    if (tls) {
        cleanup_free char *tpath = hd_xasprintf("%stls.", path);
        if (!json_is_object(tls)) {
            cleanup_free char *p = hd_xasprintf("%stls", path);
            return cfg_type_error(err, p, "an object");
        }
        static const char *const tls_known[] = {"ca_file", "cert_file", "key_file", "server_name", "insecure", NULL};
        if (cfg_known_keys(tls, tpath, tls_known, err) < 0)
            return -1;
        o->tls.enabled = true;
        if (cfg_string(tls, "ca_file", tpath, &o->tls.ca_file, false, err) < 0 ||
            cfg_string(tls, "cert_file", tpath, &o->tls.cert_file, false, err) < 0 ||
            cfg_string(tls, "key_file", tpath, &o->tls.key_file, false, err) < 0 ||
            cfg_string(tls, "server_name", tpath, &o->tls.server_name, false, err) < 0 ||
            cfg_bool(tls, "insecure", tpath, &o->tls.insecure, err) < 0)
            return -1;
        if (o->tls.key_file && !o->tls.cert_file)
            return hd_error_set_code(err, HD_EXIT_USAGE, 0, "%stls.key_file: needs cert_file", path);
    }
    return 0;
}

/* The wildcard skeleton of a filter ("+#" for "a/+/b/#"); NULL if the filter is malformed. */
static char *cfg_wildcards(const char *filter)
{
    if (!hd_mqtt_filter_valid(filter))
        return NULL;
    char *w = hd_xcalloc(strlen(filter) + 1, 1);
    size_t k = 0;
    for (struct hd_mqtt_level l = hd_mqtt_level_first(filter);; l = hd_mqtt_level_next(&l)) {
        if (l.kind != HD_MQTT_LEVEL_PLAIN)
            w[k++] = l.start[0];
        if (l.last)
            break;
    }
    return w;
}

static int cfg_maps(json_t *root, const char *prefix, const char *name, const char *from_key, const char *to_key,
                    const char *node_id, struct hd_uplink_map **out, size_t *n_out, hd_error_t *err)
{
    json_t *arr = json_object_get(root, name);
    if (!arr)
        return 0;
    if (!json_is_array(arr)) {
        cleanup_free char *p = hd_xasprintf("%s%s", prefix, name);
        return cfg_type_error(err, p, "an array of {\"local\": FILTER, \"cloud\": FILTER}");
    }
    *out = hd_xcalloc(json_array_size(arr) + 1, sizeof(**out));
    size_t i;
    json_t *item;
    json_array_foreach(arr, i, item)
    {
        cleanup_free char *path = hd_xasprintf("%s%s[%zu].", prefix, name, i);
        if (!json_is_object(item))
            return cfg_type_error(err, path, "an object");
        bool up = strcmp(name, "up") == 0;
        static const char *const known_down[] = {"local", "cloud", NULL};
        static const char *const known_up[] = {"local", "cloud", "priority", "ttl", NULL};
        if (cfg_known_keys(item, path, up ? known_up : known_down, err) < 0)
            return -1;
        int64_t priority = HD_SPOOL_DEFAULT_PRIORITY, ttl = 0;
        if (up &&
            (cfg_int(item, "priority", path, 0, HD_SPOOL_PRIORITIES - 1, &priority, err) < 0 ||
             cfg_int(item, "ttl", path, 0, INT64_MAX / 1000, &ttl, err) < 0))
            return -1;
        cleanup_free char *from = NULL, *to = NULL;
        if (cfg_string(item, from_key, path, &from, true, err) < 0 ||
            cfg_string(item, to_key, path, &to, true, err) < 0)
            return -1;
        struct hd_uplink_map *m = &(*out)[i];
        m->from = cfg_expand(from, node_id);
        m->to = cfg_expand(to, node_id);
        m->priority = (uint8_t)priority;
        m->ttl_ms = ttl * 1000;
        *n_out = i + 1;
        cleanup_free char *wf = cfg_wildcards(m->from), *wt = cfg_wildcards(m->to);
        if (!wf)
            return hd_error_set_code(err, HD_EXIT_USAGE, 0, "%s%s: \"%s\" is not a valid topic filter", path, from_key,
                                     m->from);
        if (!wt)
            return hd_error_set_code(err, HD_EXIT_USAGE, 0, "%s%s: \"%s\" is not a valid topic filter", path, to_key,
                                     m->to);
        if (strcmp(wf, wt) != 0)
            return hd_error_set_code(err, HD_EXIT_USAGE, 0, "%s%s: \"%s\" must have the same wildcards as \"%s\"", path,
                                     to_key, m->to, m->from);
    }
    return 0;
}

static int cfg_spool(json_t *root, const char *prefix, bool embedded, struct hd_uplink_config *cfg, hd_error_t *err)
{
    json_t *obj = json_object_get(root, "spool");
    cleanup_free char *path = hd_xasprintf("%sspool.", prefix);
    if (!obj && embedded)
        return 0;
    if (!obj)
        return hd_error_set_code(err, HD_EXIT_USAGE, 0, "%sspool: is required (at least spool.path)", prefix);
    if (!json_is_object(obj)) {
        cleanup_free char *p = hd_xasprintf("%sspool", prefix);
        return cfg_type_error(err, p, "an object");
    }
    static const char *const known[] = {"path", "max_bytes", "ttl", "full_policy", "sync", NULL};
    if (cfg_known_keys(obj, path, known, err) < 0 ||
        cfg_string(obj, "path", path, &cfg->spool_path, !embedded, err) < 0)
        return -1;
    json_t *v = json_object_get(obj, "max_bytes");
    if (v) {
        cleanup_free char *p = hd_xasprintf("%smax_bytes", path);
        int64_t bytes;
        if (cfg_usage(hd_json_size(v, p, 0, "a size (\"64M\") or a number of bytes", &bytes, err), err) < 0)
            return -1;
        cfg->spool.max_bytes = bytes;
    }
    int64_t ttl = 0;
    if (cfg_int(obj, "ttl", path, 0, INT64_MAX / 1000, &ttl, err) < 0)
        return -1;
    cfg->spool.ttl_ms = ttl * 1000;
    cleanup_free char *policy = NULL, *sync = NULL;
    if (cfg_string(obj, "full_policy", path, &policy, false, err) < 0 ||
        cfg_string(obj, "sync", path, &sync, false, err) < 0)
        return -1;
    if (!policy || strcmp(policy, "drop-oldest") == 0)
        cfg->spool.policy = HD_SPOOL_DROP_OLDEST;
    else if (strcmp(policy, "reject-new") == 0)
        cfg->spool.policy = HD_SPOOL_REJECT_NEW;
    else
        return hd_error_set_code(err, HD_EXIT_USAGE, 0, "%sfull_policy: \"%s\" is not drop-oldest or reject-new", path,
                                 policy);
    if (!sync || strcmp(sync, "full") == 0)
        cfg->spool.sync_full = true;
    else if (strcmp(sync, "normal") == 0)
        cfg->spool.sync_full = false;
    else
        return hd_error_set_code(err, HD_EXIT_USAGE, 0, "%ssync: \"%s\" is not full or normal", path, sync);
    return 0;
}

static void cfg_defaults(struct hd_uplink_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->window = 256;
    cfg->reconnect_min_ms = 500;
    cfg->reconnect_max_ms = 30000;
    cfg->spool.sync_full = true;
}

int hd_uplink_config_parse(json_t *root, const char *prefix, bool embedded, struct hd_uplink_config *cfg,
                           hd_error_t *err)
{
    cfg_defaults(cfg);
    int ret = -1;
    if (!json_is_object(root)) {
        hd_error_set_code(err, HD_EXIT_USAGE, 0, "%.*s: must be a JSON object", (int)(*prefix ? strlen(prefix) - 1 : 6),
                          *prefix ? prefix : "config");
        goto out;
    }
    static const char *const known[] = {
        "node_id", "local", "cloud", "up", "down", "spool", "window", "reconnect_min_ms", "reconnect_max_ms", NULL};
    int64_t window = cfg->window;
    if (cfg_known_keys(root, prefix, known, err) < 0 ||
        cfg_string(root, "node_id", prefix, &cfg->node_id, true, err) < 0)
        goto out;
    if (!hd_mqtt_level_valid_name(cfg->node_id)) {
        hd_error_set_code(err, HD_EXIT_USAGE, 0, "%snode_id: \"%s\" must not contain '/', '+' or '#'", prefix,
                          cfg->node_id);
        goto out;
    }
    if (cfg_broker(root, prefix, "local", &cfg->local, cfg->node_id, false, embedded, err) < 0 ||
        cfg_broker(root, prefix, "cloud", &cfg->cloud, cfg->node_id, true, embedded, err) < 0 ||
        cfg_maps(root, prefix, "up", "local", "cloud", cfg->node_id, &cfg->up, &cfg->n_up, err) < 0 ||
        cfg_maps(root, prefix, "down", "cloud", "local", cfg->node_id, &cfg->down, &cfg->n_down, err) < 0 ||
        cfg_spool(root, prefix, embedded, cfg, err) < 0 ||
        cfg_int(root, "window", prefix, 1, 65535, &window, err) < 0 ||
        cfg_int(root, "reconnect_min_ms", prefix, 1, 3600000, &cfg->reconnect_min_ms, err) < 0 ||
        cfg_int(root, "reconnect_max_ms", prefix, 1, 3600000, &cfg->reconnect_max_ms, err) < 0)
        goto out;
    cfg->window = (int)window;
    if (cfg->n_up + cfg->n_down == 0) {
        hd_error_set_code(err, HD_EXIT_USAGE, 0, "%sup: no topics to forward (give \"up\" and/or \"down\" mappings)",
                          prefix);
        goto out;
    }
    if (cfg->local.tls.enabled) {
        hd_error_set_code(err, HD_EXIT_USAGE, 0, "%slocal.tls: the local broker is reached in plain TCP on the node",
                          prefix);
        goto out;
    }
    ret = 0;
out:
    if (ret < 0)
        hd_uplink_config_free(cfg);
    return ret;
}

int hd_uplink_config_load(const char *path, struct hd_uplink_config *cfg, hd_error_t *err)
{
    cfg_defaults(cfg);
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return hd_error_set_code(err, HD_EXIT_USAGE, 0, "%s:%d: %s", path, jerr.line, jerr.text);
    int ret = 0;
    if (!json_is_object(root))
        ret = hd_error_set_code(err, HD_EXIT_USAGE, 0, "%s: must be a JSON object", path);
    else
        ret = hd_uplink_config_parse(root, "", false, cfg, err);
    json_decref(root);
    if (ret < 0)
        return hd_error_prefix(err, "uplink config %s", path);
    return 0;
}

static void free_options(struct hd_mqtt_options *o)
{
    free(o->host);
    free(o->client_id);
    free(o->username);
    free(o->password);
    free(o->tls.ca_file);
    free(o->tls.cert_file);
    free(o->tls.key_file);
    free(o->tls.server_name);
    free(o->will_topic);
    free(o->will_payload);
}

void hd_uplink_config_free(struct hd_uplink_config *cfg)
{
    free(cfg->node_id);
    free_options(&cfg->local);
    free_options(&cfg->cloud);
    for (size_t i = 0; i < cfg->n_up; i++) {
        free(cfg->up[i].from);
        free(cfg->up[i].to);
    }
    for (size_t i = 0; i < cfg->n_down; i++) {
        free(cfg->down[i].from);
        free(cfg->down[i].to);
    }
    free(cfg->up);
    free(cfg->down);
    free(cfg->spool_path);
    memset(cfg, 0, sizeof(*cfg));
}

char *hd_uplink_map_topic(const char *from, const char *to, const char *topic)
{
    if (!hd_mqtt_filter_matches(from, topic))
        return NULL;
    /* Walk `from` and `topic` level by level, collecting what each wildcard matched. */
    const char *captures[64];
    size_t capture_len[64], n = 0;
    struct hd_mqtt_level f = hd_mqtt_level_first(from), t = hd_mqtt_level_first(topic);
    bool topic_done = false; /* "a/#" matched "a": '#' captures nothing */
    while (n < 64) {
        if (f.kind == HD_MQTT_LEVEL_HASH) {
            captures[n] = topic_done ? "" : t.start;
            capture_len[n++] = topic_done ? 0 : strlen(t.start);
            break;
        }
        if (f.kind == HD_MQTT_LEVEL_PLUS) {
            captures[n] = t.start;
            capture_len[n++] = t.len;
        }
        if (f.last)
            break;
        f = hd_mqtt_level_next(&f);
        if (t.last)
            topic_done = true;
        else
            t = hd_mqtt_level_next(&t);
    }
    /* Rebuild `to` with the captures in order. */
    size_t cap = strlen(to) + strlen(topic) + 2, k = 0, len = 0;
    char *out = hd_xmalloc(cap);
    for (struct hd_mqtt_level p = hd_mqtt_level_first(to);; p = hd_mqtt_level_next(&p)) {
        if (p.kind != HD_MQTT_LEVEL_PLAIN && k < n) {
            if (p.kind == HD_MQTT_LEVEL_HASH && capture_len[k] == 0 && len > 0) {
                len--; /* "a/#" matched "a": drop the trailing '/' */
            } else {
                memcpy(out + len, captures[k], capture_len[k]);
                len += capture_len[k];
            }
            k++;
        } else {
            memcpy(out + len, p.start, p.len);
            len += p.len;
        }
        if (p.last)
            break;
        out[len++] = '/';
    }
    out[len] = 0;
    return out;
}
