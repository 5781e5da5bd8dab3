/*
 * config.c - the broker's configuration: defaults and a mosquitto-style
 * "key value" file (one setting a line, '#' comments). docs/broker.md lists
 * every key. Unknown keys and bad values are errors naming the line, so a
 * typo never silently weakens security.
 *
 * The same settings are also read from the `broker` section of hedged's JSON
 * config (hd_broker_config_set_json, called by daemon/embed_broker.c). Both
 * dialects go through one table (settings[]: key, type, range or choices,
 * field): a setting is defined once; the dialects differ only in spelling
 * (a line per listener vs. an array; yes/no vs. JSON booleans) and in how
 * they word an error ("line 3: bad value" vs. "broker.max_keepalive: must be ...").
 */
#include <errno.h>
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/internal.h"
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
    cfg->receive_maximum = 65535;
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
    free(cfg->response_information);
    memset(cfg, 0, sizeof(*cfg));
}

/* ---- the settings, defined once for both dialects ---------------------- */

enum setting_type {
    SETTING_BOOL,    /* file: true/yes/1, false/no/0; JSON: true or false */
    SETTING_NUMBER,  /* an integer in min..max; a size with K/M/G is accepted too */
    SETTING_PATH,    /* a file or directory (hedged's JSON wants it absolute) */
    SETTING_TEXT,    /* a non-empty string of at most 65535 bytes */
    SETTING_CHOICE,  /* one of choices[] */
    SETTING_ADDRESS, /* "HOST:PORT" listeners: a line each in the file, an array in JSON */
};

struct setting_value {
    bool flag;
    uint64_t number;
    const char *text;
    size_t choice; /* index into choices[] */
};

struct setting {
    const char *key;      /* hedged's JSON key, and the file's unless file_key is set */
    const char *file_key; /* the file's (mosquitto's) key where it differs */
    enum setting_type type;
    uint64_t min, max;      /* SETTING_NUMBER */
    const char *choices[3]; /* SETTING_CHOICE */
    void (*set)(struct hd_broker_config *cfg, const struct setting_value *v);
    size_t offset; /* SETTING_PATH, SETTING_TEXT (char *) and SETTING_ADDRESS (char **) fields */
};

#define FIELD(name) offsetof(struct hd_broker_config, name)
#define SETTER(fn, stmt) \
    static void fn(struct hd_broker_config *cfg, const struct setting_value *v) \
    { \
        stmt; \
    }
SETTER(set_tls_require_cert, cfg->tls_require_cert = v->flag)
SETTER(set_tls_cert_as_username, cfg->tls_cert_as_username = v->flag)
SETTER(set_sync, cfg->sync_full = v->choice == 0)
SETTER(set_allow_anonymous, cfg->allow_anonymous = v->flag)
SETTER(set_max_packet_size, cfg->max_packet_size = (uint32_t)v->number)
SETTER(set_max_inflight, cfg->max_inflight = (uint16_t)v->number)
SETTER(set_max_queued_messages, cfg->max_queued_messages = (uint32_t)v->number)
SETTER(set_max_queued_bytes, cfg->max_queued_bytes = v->number)
SETTER(set_queue_policy, cfg->queue_policy = v->choice == 0 ? HD_BROKER_DROP_NEW : HD_BROKER_DROP_OLDEST)
SETTER(set_max_connections, cfg->max_connections = (uint32_t)v->number)
SETTER(set_connection_rate, cfg->connection_rate = (uint32_t)v->number)
SETTER(set_client_connection_rate, cfg->client_connection_rate = (uint32_t)v->number)
SETTER(set_topic_alias_max, cfg->topic_alias_max = (uint16_t)v->number)
SETTER(set_topic_alias_out, cfg->topic_alias_out = (uint16_t)v->number)
SETTER(set_receive_maximum, cfg->receive_maximum = (uint16_t)v->number)
SETTER(set_max_keepalive, cfg->max_keepalive = (uint16_t)v->number)
SETTER(set_connect_timeout, cfg->connect_timeout_ms = (uint32_t)(v->number * 1000))
SETTER(set_sys_interval, cfg->sys_interval = (uint32_t)v->number)
SETTER(set_websocket_max_message, cfg->websocket_max_message = (uint32_t)v->number)

/* docs/broker.md lists them; a new setting is one line here. */
static const struct setting settings[] = {
    {"listen", "listener", SETTING_ADDRESS, .offset = FIELD(listen)},
    {"listen_tls", "listener_tls", SETTING_ADDRESS, .offset = FIELD(listen_tls)},
    {"tls_cert", NULL, SETTING_PATH, .offset = FIELD(tls_cert)},
    {"tls_key", NULL, SETTING_PATH, .offset = FIELD(tls_key)},
    {"tls_ca", NULL, SETTING_PATH, .offset = FIELD(tls_ca)},
    {"tls_require_certificate", NULL, SETTING_BOOL, .set = set_tls_require_cert},
    {"tls_use_identity_as_username", NULL, SETTING_BOOL, .set = set_tls_cert_as_username},
    {"state_dir", NULL, SETTING_PATH, .offset = FIELD(state_dir)},
    {"persistence_sync", NULL, SETTING_CHOICE, .choices = {"full", "normal"}, .set = set_sync},
    {"password_file", NULL, SETTING_PATH, .offset = FIELD(password_file)},
    {"acl_file", NULL, SETTING_PATH, .offset = FIELD(acl_file)},
    {"allow_anonymous", NULL, SETTING_BOOL, .set = set_allow_anonymous},
    {"max_packet_size", NULL, SETTING_NUMBER, 64, 268435455, .set = set_max_packet_size},
    {"max_inflight_messages", NULL, SETTING_NUMBER, 1, 65535, .set = set_max_inflight},
    {"max_queued_messages", NULL, SETTING_NUMBER, 0, UINT32_MAX, .set = set_max_queued_messages},
    {"max_queued_bytes", NULL, SETTING_NUMBER, 0, UINT64_MAX >> 1, .set = set_max_queued_bytes},
    {"queue_full_policy", NULL, SETTING_CHOICE, .choices = {"drop-new", "drop-oldest"}, .set = set_queue_policy},
    {"max_connections", NULL, SETTING_NUMBER, 0, UINT32_MAX, .set = set_max_connections},
    {"connection_rate", NULL, SETTING_NUMBER, 0, UINT32_MAX, .set = set_connection_rate},
    {"client_connection_rate", NULL, SETTING_NUMBER, 0, UINT32_MAX, .set = set_client_connection_rate},
    {"topic_alias_maximum", NULL, SETTING_NUMBER, 0, 65535, .set = set_topic_alias_max},
    {"topic_alias_to_client", NULL, SETTING_NUMBER, 0, 65535, .set = set_topic_alias_out},
    {"receive_maximum", NULL, SETTING_NUMBER, 1, 65535, .set = set_receive_maximum},
    {"response_information", NULL, SETTING_TEXT, .offset = FIELD(response_information)},
    {"max_keepalive", NULL, SETTING_NUMBER, 0, 65535, .set = set_max_keepalive},
    {"connect_timeout", NULL, SETTING_NUMBER, 1, 3600, .set = set_connect_timeout},
    {"sys_interval", NULL, SETTING_NUMBER, 0, 86400, .set = set_sys_interval},
    {"websocket_max_message_size", NULL, SETTING_NUMBER, 0, 268435455, .set = set_websocket_max_message},
};

static const struct setting *setting_find(const char *key, bool file)
{
    for (size_t i = 0; i < ARRAY_SIZE(settings); i++) {
        const char *name = file && settings[i].file_key ? settings[i].file_key : settings[i].key;
        if (strcmp(name, key) == 0)
            return &settings[i];
    }
    return NULL;
}

/* "HOST:PORT", "[V6]:PORT" or ":PORT" (all addresses), or a WebSocket listener's
 * "ws://HOST:PORT[/PATH]" or "wss://HOST:PORT[/PATH]" (websocket.c). */
static bool address_ok(const char *s)
{
    struct broker_listen_addr a;
    if (!broker_listen_addr_parse(s, &a))
        return false;
    broker_listen_addr_free(&a);
    return true;
}

/* Parse and check text as s's value (both dialects end here); false when it is not one. */
static bool setting_parse(const struct setting *s, const char *text, struct setting_value *v)
{
    *v = (struct setting_value){.text = text};
    switch (s->type) {
    case SETTING_BOOL:
        if (strcmp(text, "true") == 0 || strcmp(text, "yes") == 0 || strcmp(text, "1") == 0)
            v->flag = true;
        else if (strcmp(text, "false") == 0 || strcmp(text, "no") == 0 || strcmp(text, "0") == 0)
            v->flag = false;
        else
            return false;
        return true;
    case SETTING_NUMBER: {
        int64_t n;
        if (hd_parse_size(text, &n) < 0 || n < 0 || (uint64_t)n < s->min || (uint64_t)n > s->max)
            return false;
        v->number = (uint64_t)n;
        return true;
    }
    case SETTING_PATH: return text[0] != '\0';
    case SETTING_TEXT: return text[0] != '\0' && strlen(text) <= 65535;
    case SETTING_CHOICE:
        for (v->choice = 0; v->choice < ARRAY_SIZE(s->choices) && s->choices[v->choice]; v->choice++)
            if (strcmp(text, s->choices[v->choice]) == 0)
                return true;
        return false;
    case SETTING_ADDRESS: return address_ok(text);
    }
    return false;
}

static void setting_apply(const struct setting *s, struct hd_broker_config *cfg, const struct setting_value *v)
{
    char *base = (char *)cfg;
    if (s->type == SETTING_PATH || s->type == SETTING_TEXT) {
        char **field = (char **)(base + s->offset);
        free(*field);
        *field = hd_xstrdup(v->text);
    } else if (s->type == SETTING_ADDRESS) {
        hd_strv_push((char ***)(base + s->offset), v->text);
    } else {
        s->set(cfg, v);
    }
}

/* What hedged's JSON dialect says a setting must be. */
static char *setting_want(const struct setting *s)
{
    switch (s->type) {
    case SETTING_BOOL: return hd_xstrdup("true or false");
    case SETTING_NUMBER:
        return hd_xasprintf("an integer %llu..%llu", (unsigned long long)s->min, (unsigned long long)s->max);
    case SETTING_PATH: return hd_xstrdup("an absolute path");
    case SETTING_TEXT: return hd_xstrdup("a non-empty string");
    case SETTING_CHOICE: return hd_xasprintf("\"%s\" or \"%s\"", s->choices[0], s->choices[1]);
    case SETTING_ADDRESS: return hd_xstrdup("an array of \"HOST:PORT\" strings");
    }
    return hd_xstrdup("?");
}

int hd_broker_config_set_json(struct hd_broker_config *cfg, const char *key, const json_t *value, hd_error_t *err)
{
    const struct setting *s = setting_find(key, false);
    if (s == NULL)
        return hd_error_set(err, 0, "broker.%s: unknown field", key);
    cleanup_free char *want = setting_want(s);
    struct setting_value v;
    char number[32];
    const char *text = NULL;
    if (s->type == SETTING_ADDRESS) {
        if (!json_is_array(value))
            return hd_error_set(err, 0, "broker.%s: must be %s", key, want);
        char **list = NULL;
        size_t i;
        json_t *item;
        json_array_foreach(value, i, item)
        {
            if (!json_is_string(item) || !setting_parse(s, json_string_value(item), &v)) {
                hd_strv_free(list);
                return hd_error_set(err, 0, "broker.%s[%zu]: must be \"HOST:PORT\"", key, i);
            }
            hd_strv_push(&list, json_string_value(item));
        }
        char ***field = (char ***)((char *)cfg + s->offset);
        hd_strv_free(*field);
        *field = list;
        return 0;
    }
    /* JSON's own types first: a boolean is true or false, a number an integer (or a size string) */
    if (s->type == SETTING_BOOL && json_is_boolean(value))
        text = json_is_true(value) ? "true" : "false";
    else if (s->type == SETTING_NUMBER && json_is_integer(value) && json_integer_value(value) >= 0) {
        snprintf(number, sizeof(number), "%lld", (long long)json_integer_value(value));
        text = number;
    } else if (s->type != SETTING_BOOL && json_is_string(value))
        text = json_string_value(value);
    /* hedged's working directory is "/": a relative path would mean nothing there */
    if (text == NULL || (s->type == SETTING_PATH && text[0] != '/') || !setting_parse(s, text, &v))
        return hd_error_set(err, 0, "broker.%s: must be %s", key, want);
    setting_apply(s, cfg, &v);
    return 0;
}

int hd_broker_config_load(struct hd_broker_config *cfg, const char *path, hd_error_t *err)
{
    cleanup_free char *text = NULL;
    if (hd_read_file(path, &text, NULL, err) < 0)
        return hd_error_prefix(err, "broker config");
    int lineno = 0;
    /* line by line, blank ones included, so that "line N" is the file's line N */
    for (char *line = text, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
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
        const struct setting *s = setting_find(key, true);
        struct setting_value v;
        if (*val && s && setting_parse(s, val, &v)) {
            setting_apply(s, cfg, &v);
            continue;
        }
        if (s == NULL && *val)
            return hd_error_set(err, 0, "broker config %s line %d: unknown key '%s'", path, lineno, key);
        return hd_error_set(err, 0, "broker config %s line %d: bad value '%s' for %s", path, lineno, val, key);
    }
    return 0;
}
