/*
 * config.c - hedged's configuration: embedded defaults, overlaid by an
 * optional JSON file, overlaid by flags (main.c).
 *
 * The daemon must run with no file at all (design.md: embedded defaults), so
 * every field has a default here. Unknown fields are errors that name the
 * field, as in the workload spec: a typo must never silently keep a default.
 * `hedged --check FILE` runs exactly this code and exits.
 */
#include <errno.h>
#include <grp.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "daemon/daemon.h"
#include "base/json.h"
#include "base/util.h"

void hd_config_defaults(struct hd_daemon_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->state_dir = hd_xstrdup("/var/lib/hedge");
    cfg->socket_path = hd_xstrdup("/run/hedge/hedged.sock");
    cfg->log_max_bytes = 1 << 20;
    cfg->health_wait = 3;
    cfg->backoff_initial = 0.5;
    cfg->backoff_max = 30;
    cfg->restart_reset_after = 10;
    cfg->crash_loop_after = 3;
    cfg->vm_pool = 1;
    cfg->stop_grace = 10;
    cfg->log_level = HD_LOG_INFO;
    cfg->broker_enabled = true;
    hd_broker_config_init(&cfg->broker);
}

void hd_config_free(struct hd_daemon_config *cfg)
{
    free(cfg->state_dir);
    free(cfg->socket_path);
    free(cfg->socket_group);
    free(cfg->log_dir);
    free(cfg->secret_key);
    hd_broker_config_free(&cfg->broker);
    hd_strv_free(cfg->insecure_registries);
    free(cfg->registry_ca);
    hd_config_free_uplink(cfg);
    hd_config_free_fleet(cfg);
    memset(cfg, 0, sizeof(*cfg));
}

static int config_path(const json_t *v, const char *key, char **out, hd_error_t *err)
{
    cleanup_free char *path = NULL;
    if (hd_json_string(v, key, "a non-empty string", true, &path, err) < 0)
        return -1;
    if (path[0] != '/')
        return hd_error_set(err, 0, "%s: \"%s\" must be an absolute path", key, path);
    free(*out);
    *out = get_and_reset(&path);
    return 0;
}

static int config_seconds(const json_t *v, const char *key, double min, double max, double *out, hd_error_t *err)
{
    cleanup_free char *want = hd_xasprintf("a number of seconds in %g..%g", min, max);
    return hd_json_number(v, key, min, max, want, out, err);
}

static const char *const config_keys[] = {
    "state_dir",
    "socket",
    "log_dir",
    "secret_key",
    "socket_group",
    "log_max_size",
    "health_wait",
    "restart_backoff_initial",
    "restart_backoff_max",
    "restart_reset_after",
    "stop_grace",
    "crash_loop_after",
    "vm_pool",
    "log_level",
    "broker",
    "uplink",
    "fleet",
    "registries",
    NULL,
};

/* "registries": {"insecure": ["host:port", ...], "ca": "/path"}: how hedged's pulls reach registries. */
static int config_registries(struct hd_daemon_config *cfg, const json_t *v, hd_error_t *err)
{
    static const char *const keys[] = {"insecure", "ca", NULL};
    if (hd_json_object(v, "registries", "an object", err) < 0 || hd_json_check_keys(v, "registries", keys, err) < 0)
        return -1;
    json_t *insecure = json_object_get(v, "insecure");
    if (insecure) {
        hd_strv_free(cfg->insecure_registries);
        cfg->insecure_registries = NULL;
        if (hd_json_strv(insecure, "registries.insecure", "a list of host[:port] strings", &cfg->insecure_registries,
                         err) < 0)
            return -1;
    }
    json_t *ca = json_object_get(v, "ca");
    return ca ? config_path(ca, "registries.ca", &cfg->registry_ca, err) : 0;
}

static int config_field(struct hd_daemon_config *cfg, const char *key, const json_t *v, hd_error_t *err)
{
    if (strcmp(key, "state_dir") == 0)
        return config_path(v, key, &cfg->state_dir, err);
    if (strcmp(key, "socket") == 0)
        return config_path(v, key, &cfg->socket_path, err);
    if (strcmp(key, "log_dir") == 0)
        return config_path(v, key, &cfg->log_dir, err);
    if (strcmp(key, "secret_key") == 0)
        return config_path(v, key, &cfg->secret_key, err);
    if (strcmp(key, "socket_group") == 0)
        return hd_json_string(v, key, "a group name", true, &cfg->socket_group, err);
    if (strcmp(key, "log_max_size") == 0) {
        int64_t size;
        if (hd_json_size(v, key, 4096, "a size of at least 4K (a number of bytes or \"1M\")", &size, err) < 0)
            return -1;
        cfg->log_max_bytes = size;
        return 0;
    }
    if (strcmp(key, "health_wait") == 0)
        return config_seconds(v, key, 0, 3600, &cfg->health_wait, err);
    if (strcmp(key, "restart_backoff_initial") == 0)
        return config_seconds(v, key, 0.01, 3600, &cfg->backoff_initial, err);
    if (strcmp(key, "restart_backoff_max") == 0)
        return config_seconds(v, key, 0.01, 86400, &cfg->backoff_max, err);
    if (strcmp(key, "restart_reset_after") == 0)
        return config_seconds(v, key, 0, 86400, &cfg->restart_reset_after, err);
    if (strcmp(key, "stop_grace") == 0)
        return config_seconds(v, key, 0, 3600, &cfg->stop_grace, err);
    if (strcmp(key, "crash_loop_after") == 0) {
        int64_t n;
        if (hd_json_int(v, key, 1, 1000, "an integer 1..1000", &n, err) < 0)
            return -1;
        cfg->crash_loop_after = (int)n;
        return 0;
    }
    if (strcmp(key, "vm_pool") == 0) {
        int64_t n;
        if (hd_json_int(v, key, 0, 16, "an integer 0..16 (clones per VM template; 0: no warm pool)", &n, err) < 0)
            return -1;
        cfg->vm_pool = (int)n;
        return 0;
    }
    if (strcmp(key, "log_level") == 0) {
        const char *want = "\"error\", \"warn\", \"info\" or \"debug\"";
        cleanup_free char *name = NULL;
        if (hd_json_string(v, key, want, true, &name, err) < 0)
            return -1;
        hd_error_t ignored = NULL;
        enum hd_log_level level;
        if (hd_log_parse_level(name, &level, &ignored) < 0) {
            hd_error_free(&ignored);
            return hd_error_set(err, 0, "%s: must be %s", key, want);
        }
        cfg->log_level = (int)level;
        return 0;
    }
    if (strcmp(key, "broker") == 0)
        return hd_config_load_broker(cfg, v, err);
    if (strcmp(key, "registries") == 0)
        return config_registries(cfg, v, err);
    if (strcmp(key, "fleet") == 0)
        return hd_config_load_fleet(cfg, v, err);
    return hd_config_load_uplink(cfg, v, err); /* "uplink": the only key left (config_keys) */
}

int hd_config_load(struct hd_daemon_config *cfg, const char *path, hd_error_t *err)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return hd_error_set(err, 0, "%s: line %d column %d: %s", path, jerr.line, jerr.column, jerr.text);
    int r = 0;
    if (!json_is_object(root)) {
        r = hd_error_set(err, 0, "must be a JSON object");
        goto out;
    }
    r = hd_json_check_keys(root, NULL, config_keys, err);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (r < 0)
            break;
        r = config_field(cfg, key, v, err);
    }
out:
    json_decref(root);
    if (r < 0)
        return hd_error_prefix(err, "%s", path);
    return 0;
}

int hd_config_finish(struct hd_daemon_config *cfg, hd_error_t *err)
{
    if (cfg->log_dir == NULL)
        cfg->log_dir = hd_xasprintf("%s/logs", cfg->state_dir);
    if (cfg->broker.state_dir == NULL)
        cfg->broker.state_dir = hd_xasprintf("%s/broker", cfg->state_dir);
    if (cfg->backoff_max < cfg->backoff_initial)
        return hd_error_set(err, 0, "restart_backoff_max: must be at least restart_backoff_initial");
    if (cfg->socket_group && getgrnam(cfg->socket_group) == NULL)
        return hd_error_set(err, 0, "socket_group: group \"%s\" does not exist", cfg->socket_group);
    if (strlen(cfg->socket_path) >= 108)
        return hd_error_set(err, 0, "socket: \"%s\" is longer than a unix socket path may be (107)", cfg->socket_path);
    if (hd_config_finish_uplink(cfg, err) < 0)
        return -1;
    return hd_config_finish_fleet(cfg, err);
}
