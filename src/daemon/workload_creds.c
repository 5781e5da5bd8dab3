/*
 * workload_creds.c - per-workload MQTT credentials from the embedded broker.
 *
 * The broker runs in hedged's network child (netchild.c): users and rules go
 * there through hedged's mirror of them, which a restarted child gets again.
 *
 * A workload whose spec has an `mqtt` block or `triggers` gets its own broker
 * user, "workload:<name>", allowed exactly the spec's filters (mqtt.publish →
 * write; mqtt.subscribe and triggers[].topic → read). The credentials reach
 * the workload only through the environment of the spec copy its monitor runs
 * (HEDGE_MQTT_HOST/PORT/USERNAME/PASSWORD), never the SQLite store or a log.
 *
 * The broker keeps run-time users in memory, so the password is also kept in
 * <state_dir>/mqtt-credentials/<name> (mode 0600, in a 0700 directory): a
 * restarted hedged re-registers the same password for a workload it adopts,
 * and the workload's next run reuses it. `hedge rm` deletes the file; `hedge
 * stop` and `rm` remove the user from the broker at once.
 *
 * A function deployment (function_host.c) has a second user,
 * "function:<name>", for its host, hedge-functions: read on the triggers,
 * write on the reply_topic, or on "#" when replies follow the requests'
 * response topics (the requester picks those). The host is hedge's own
 * binary, never the function's code, and its credentials never reach an
 * instance; "workload:<name>" exists only when the spec has an mqtt block,
 * and reaches the instances. Its password is kept as "<name>@host" ('@'
 * cannot occur in a workload name).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "base/log.h"
#include "daemon/daemon.h"
#include "base/util.h"

#define PASSWORD_BYTES 24

bool hd_creds_wanted(const struct hd_spec *spec)
{
    return spec->mqtt.publish || spec->mqtt.subscribe || spec->n_triggers > 0;
}

static char *creds_user(const char *name)
{
    return hd_xasprintf("workload:%s", name);
}

static char *creds_path(const struct hd_daemon_config *cfg, const char *name)
{
    return hd_xasprintf("%s/mqtt-credentials/%s", cfg->state_dir, name);
}

/* The workload's password: the one kept in its file, else a new random one written there (0600). */
static char *creds_password(const struct hd_daemon_config *cfg, const char *name, hd_error_t *err)
{
    cleanup_free char *path = creds_path(cfg, name);
    char *text = NULL;
    size_t len = 0;
    hd_error_t ignored = NULL;
    if (hd_read_file(path, &text, &len, &ignored) == 0 && len == 2 * PASSWORD_BYTES)
        return text;
    hd_error_free(&ignored);
    free(text);
    uint8_t raw[PASSWORD_BYTES];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
        hd_error_sys(err, "getrandom");
        return NULL;
    }
    char *hex = hd_xmalloc(2 * PASSWORD_BYTES + 1);
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    cleanup_free char *dir = hd_xasprintf("%s/mqtt-credentials", cfg->state_dir);
    cleanup_free char *tmp = hd_xasprintf("%s.tmp", path);
    cleanup_close int fd = -1; /* before the goto: its cleanup runs at fail too */
    if (hd_mkdir_p(dir, 0700, err) < 0)
        goto fail;
    unlink(tmp);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        hd_error_sys(err, "open %s", tmp);
        goto fail;
    }
    if (write(fd, hex, 2 * PASSWORD_BYTES) != 2 * PASSWORD_BYTES || fsync(fd) < 0 || rename(tmp, path) < 0) {
        hd_error_sys(err, "write %s", path);
        unlink(tmp);
        goto fail;
    }
    return hex;
fail:
    free(hex);
    return NULL;
}

/* Host clients reach: the first plain listener's address, with "any" addresses turned into loopback. */
char *hd_daemon_broker_host(const struct hd_daemon_config *cfg)
{
    const char *listen = "127.0.0.1:1883";
    for (char **l = cfg->broker.listen; l && *l; l++) {
        if (strstr(*l, "://") == NULL) { /* the first plain MQTT listener (not ws:// or wss://) */
            listen = *l;
            break;
        }
    }
    const char *colon = strrchr(listen, ':');
    char *host = hd_xasprintf("%.*s", (int)(colon - listen), listen);
    if (host[0] == '[') {
        memmove(host, host + 1, strlen(host));
        host[strcspn(host, "]")] = '\0';
    }
    if (host[0] == '\0' || strcmp(host, "0.0.0.0") == 0) {
        free(host);
        return hd_xstrdup("127.0.0.1");
    }
    if (strcmp(host, "::") == 0) {
        free(host);
        return hd_xstrdup("::1");
    }
    return host;
}

static int creds_register(struct hd_netchild *b, const char *user, const char *password, const struct hd_spec *spec,
                          hd_error_t *err)
{
    hd_netchild_remove_user(b, user); /* drops old rules: a new version may allow less */
    if (hd_netchild_set_user(b, user, password, false, err) < 0)
        return -1;
    for (size_t i = 0; spec->mqtt.publish && spec->mqtt.publish[i]; i++)
        if (hd_netchild_allow(b, user, "write", spec->mqtt.publish[i], err) < 0)
            goto fail;
    for (size_t i = 0; spec->mqtt.subscribe && spec->mqtt.subscribe[i]; i++)
        if (hd_netchild_allow(b, user, "read", spec->mqtt.subscribe[i], err) < 0)
            goto fail;
    for (int i = 0; i < spec->n_triggers; i++)
        if (hd_netchild_allow(b, user, "read", spec->triggers[i].topic, err) < 0)
            goto fail;
    hd_netchild_sync(b); /* the workload may connect as soon as it starts */
    return 0;
fail:
    hd_netchild_remove_user(b, user);
    return -1;
}

void hd_creds_env(json_t *env, struct hd_netchild *b, const struct hd_daemon_config *cfg, const char *user,
                  const char *password)
{
    cleanup_free char *host = hd_daemon_broker_host(cfg);
    cleanup_free char *port = hd_xasprintf("%d", hd_netchild_port(b));
    json_object_set_new(env, "HEDGE_MQTT_HOST", json_string(host));
    json_object_set_new(env, "HEDGE_MQTT_PORT", json_string(port));
    json_object_set_new(env, "HEDGE_MQTT_USERNAME", json_string(user));
    json_object_set_new(env, "HEDGE_MQTT_PASSWORD", json_string(password));
}

char *hd_creds_grant(struct hd_netchild *b, const struct hd_daemon_config *cfg, const char *name,
                     const struct hd_spec *spec, hd_error_t *err)
{
    char *spec_json = hd_spec_to_json(spec);
    if (b == NULL)
        return spec_json;
    if (!hd_creds_wanted(spec)) {
        hd_creds_revoke(b, name); /* a new version without mqtt/triggers: no user (the kept password stays) */
        return spec_json;
    }
    cleanup_free char *user = creds_user(name);
    cleanup_free char *password = creds_password(cfg, name, err);
    if (password == NULL || creds_register(b, user, password, spec, err) < 0) {
        free(spec_json);
        return NULL;
    }
    json_t *o = json_loads(spec_json, 0, NULL);
    free(spec_json);
    if (o == NULL)
        abort();
    json_t *env = json_object_get(o, "env");
    if (env == NULL) {
        env = json_object();
        json_object_set_new(o, "env", env);
    }
    hd_creds_env(env, b, cfg, user, password);
    spec_json = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    if (spec_json == NULL)
        abort();
    return spec_json;
}

int hd_creds_restore(struct hd_netchild *b, const struct hd_daemon_config *cfg, const char *name,
                     const struct hd_spec *spec, hd_error_t *err)
{
    char *json = hd_creds_grant(b, cfg, name, spec, err);
    if (json == NULL)
        return -1;
    free(json);
    return 0;
}

void hd_creds_revoke(struct hd_netchild *b, const char *name)
{
    if (b == NULL)
        return;
    cleanup_free char *user = creds_user(name);
    hd_netchild_remove_user(b, user);
    cleanup_free char *host_user = hd_xasprintf("function:%s", name);
    hd_netchild_remove_user(b, host_user);
}

void hd_creds_forget(struct hd_netchild *b, const struct hd_daemon_config *cfg, const char *name)
{
    hd_creds_revoke(b, name);
    for (int i = 0; i < 2; i++) {
        cleanup_free char *key = i ? hd_xasprintf("%s@host", name) : hd_xstrdup(name);
        cleanup_free char *path = creds_path(cfg, key);
        if (unlink(path) < 0 && errno != ENOENT)
            hd_log(HD_LOG_WARN, "supervisor", "%s: cannot remove its MQTT credentials: %s", name, strerror(errno));
    }
}

int hd_creds_function_host(struct hd_netchild *b, const struct hd_daemon_config *cfg, const char *name,
                           const struct hd_spec *spec, char **user_out, char **password_out, hd_error_t *err)
{
    cleanup_free char *key = hd_xasprintf("%s@host", name);
    cleanup_free char *user = hd_xasprintf("function:%s", name);
    cleanup_free char *password = creds_password(cfg, key, err);
    if (password == NULL)
        return -1;
    hd_netchild_remove_user(b, user);
    if (hd_netchild_set_user(b, user, password, false, err) < 0)
        return -1;
    const char *reply = spec->function.reply_topic ? spec->function.reply_topic : "#";
    if (hd_netchild_allow(b, user, "write", reply, err) < 0)
        goto fail;
    for (int i = 0; i < spec->n_triggers; i++)
        if (hd_netchild_allow(b, user, "read", spec->triggers[i].topic, err) < 0)
            goto fail;
    hd_netchild_sync(b);
    *user_out = get_and_reset(&user);
    *password_out = get_and_reset(&password);
    return 0;
fail:
    hd_netchild_remove_user(b, user);
    return -1;
}
