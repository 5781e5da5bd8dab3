/*
 * spec.c - parse, validate and serialize the workload spec (spec.h).
 *
 * JSON goes through jansson. Every error names the field path and the reason
 * ("resources.memory: \"64Q\" is not a size (use K, M or G)"); unknown fields
 * are errors, so a typo never silently changes what runs. Validation is a
 * separate pass (hd_spec_validate) because the CLI fills the same structure
 * from flags, and because the isolation level decides which fields are legal.
 */
#include "spec/spec.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/util.h"
#include "secret/secret.h"
#include "mqtt/topic.h"

static const char *const isolation_names[] = {"process", "container", "vm"};
static const char *const net_mode_names[] = {"default", "none", "host", "bridge"};
static const char *const restart_names[] = {"never", "on-failure", "always"};

const char *hd_isolation_name(enum hd_isolation iso)
{
    return (unsigned)iso < ARRAY_SIZE(isolation_names) ? isolation_names[iso] : "?";
}

int hd_isolation_parse(const char *text, enum hd_isolation *out)
{
    for (size_t i = 0; i < ARRAY_SIZE(isolation_names); i++)
        if (strcmp(text, isolation_names[i]) == 0) {
            *out = (enum hd_isolation)i;
            return 0;
        }
    return -EINVAL;
}

const char *hd_net_mode_name(enum hd_net_mode mode)
{
    return (unsigned)mode < ARRAY_SIZE(net_mode_names) ? net_mode_names[mode] : "?";
}

int hd_net_mode_parse(const char *text, enum hd_net_mode *out)
{
    for (size_t i = 1; i < ARRAY_SIZE(net_mode_names); i++)
        if (strcmp(text, net_mode_names[i]) == 0) {
            *out = (enum hd_net_mode)i;
            return 0;
        }
    return -EINVAL;
}

struct hd_spec *hd_spec_new(void)
{
    struct hd_spec *spec = hd_xcalloc(1, sizeof(*spec));
    spec->isolation = HD_ISOLATION_CONTAINER; /* the default level of a spec */
    spec->security.no_new_privs = true;
    return spec;
}

void hd_spec_free(struct hd_spec *spec)
{
    if (spec == NULL)
        return;
    free(spec->name);
    free(spec->image);
    free(spec->rootfs);
    hd_strv_free(spec->command);
    hd_strv_free(spec->entrypoint);
    hd_strv_free(spec->env);
    free(spec->workdir);
    free(spec->user);
    free(spec->hostname);
    for (int i = 0; i < spec->n_mounts; i++) {
        free(spec->mounts[i].source);
        free(spec->mounts[i].target);
    }
    free(spec->mounts);
    free(spec->security.seccomp);
    hd_strv_free(spec->security.cap_add);
    hd_strv_free(spec->security.cap_drop);
    for (int i = 0; i < spec->n_triggers; i++)
        free(spec->triggers[i].topic);
    free(spec->triggers);
    for (int i = 0; i < spec->n_devices; i++) {
        free(spec->devices[i].path);
        free(spec->devices[i].target);
    }
    free(spec->devices);
    free(spec->device_rules);
    free(spec->vm_accel);
    free(spec->vm_boot);
    free(spec->function.reply_topic);
    hd_strv_free(spec->health.command);
    hd_strv_free(spec->mqtt.publish);
    hd_strv_free(spec->mqtt.subscribe);
    for (int i = 0; i < spec->n_secrets; i++) {
        free(spec->secrets[i].name);
        free(spec->secrets[i].target);
        free(spec->secrets[i].env);
    }
    free(spec->secrets);
    free(spec);
}

void hd_cleanup_specp(struct hd_spec **spec)
{
    hd_spec_free(*spec);
}

/* ---- JSON parsing ---------------------------------------------------- */

/* A size: an integer of bytes or a string with K/M/G ("-1" also for memory_swap: unlimited). */
static int get_size(const json_t *v, const char *path, int64_t *out, hd_error_t *err)
{
    if (json_is_string(v) && strcmp(path, "resources.memory_swap") == 0 && strcmp(json_string_value(v), "-1") == 0) {
        *out = -1;
        return 0;
    }
    return hd_json_size(v, path, 0, NULL, out, err);
}

/* The shape of an object: its known keys, each with a parser. */
struct field {
    const char *key;
    int (*parse)(struct hd_spec *spec, const json_t *v, const char *path, hd_error_t *err);
};

static int check_fields(const json_t *obj, const char *path, const struct field *fields, struct hd_spec *spec,
                        hd_error_t *err)
{
    if (!json_is_object(obj))
        return hd_json_type_error(obj, path[0] ? path : "spec", "an object", err);
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value)
    {
        const struct field *f = fields;
        while (f->key && strcmp(f->key, key) != 0)
            f++;
        cleanup_free char *sub = hd_json_path(path, key);
        if (f->key == NULL)
            return hd_error_set(err, 0, "%s: unknown field", sub);
        if (f->parse(spec, value, sub, err) < 0)
            return -1;
    }
    return 0;
}

#define STRING_FIELD(fn, member) \
    static int fn(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e) \
    { \
        return hd_json_string(v, p, NULL, false, &s->member, e); \
    }
STRING_FIELD(parse_name, name)
STRING_FIELD(parse_image, image)
STRING_FIELD(parse_rootfs, rootfs)
STRING_FIELD(parse_workdir, workdir)
STRING_FIELD(parse_user, user)
STRING_FIELD(parse_hostname, hostname)
STRING_FIELD(parse_seccomp, security.seccomp)
STRING_FIELD(parse_vm_accel, vm_accel)
STRING_FIELD(parse_vm_boot, vm_boot)

static int parse_isolation(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    if (!json_is_string(v))
        return hd_json_type_error(v, p, "a string", e);
    if (hd_isolation_parse(json_string_value(v), &s->isolation) < 0)
        return hd_error_set(e, 0, "%s: \"%s\" is not an isolation level (process, container or vm)", p,
                            json_string_value(v));
    s->isolation_set = true;
    return 0;
}

static int parse_command(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    if (hd_json_strv(v, p, NULL, &s->command, e) < 0)
        return -1;
    if (s->command[0] == NULL)
        return hd_error_set(e, 0, "%s: must not be empty", p);
    return 0;
}

static int parse_entrypoint(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return hd_json_strv(v, p, NULL, &s->entrypoint, e);
}

static int parse_env(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    if (!json_is_object(v))
        return hd_json_type_error(v, p, "an object of strings", e);
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)v, key, value)
    {
        if (!json_is_string(value)) {
            cleanup_free char *sub = hd_xasprintf("%s.%s", p, key);
            return hd_json_type_error(value, sub, "a string", e);
        }
        if (key[0] == '\0' || strchr(key, '='))
            return hd_error_set(e, 0, "%s: \"%s\" is not a variable name", p, key);
        cleanup_free char *kv = hd_xasprintf("%s=%s", key, json_string_value(value));
        hd_env_set(&s->env, kv);
    }
    return 0;
}

static int parse_memory(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return get_size(v, p, &s->resources.memory, e);
}

static int parse_memory_swap(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return get_size(v, p, &s->resources.memory_swap, e);
}

static int parse_cpus(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    if (!json_is_number(v))
        return hd_json_type_error(v, p, "a number", e);
    double cpus = json_number_value(v);
    if (!(cpus > 0 && cpus <= 1024))
        return hd_error_set(e, 0, "%s: %g is out of range (greater than 0, at most 1024)", p, cpus);
    s->resources.cpus = cpus;
    return 0;
}

static int parse_cpu_weight(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return hd_json_int(v, p, 1, 10000, NULL, &s->resources.cpu_weight, e);
}

static int parse_pids(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return hd_json_int(v, p, 1, 4194304, NULL, &s->resources.pids, e);
}

static const struct field resources_fields[] = {
    {"memory", parse_memory}, {"memory_swap", parse_memory_swap},
    {"cpus", parse_cpus},     {"cpu_weight", parse_cpu_weight},
    {"pids", parse_pids},     {NULL, NULL},
};

static int parse_resources(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return check_fields(v, p, resources_fields, s, e);
}

static int parse_network_mode(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    if (!json_is_string(v))
        return hd_json_type_error(v, p, "a string", e);
    if (hd_net_mode_parse(json_string_value(v), &s->network) < 0)
        return hd_error_set(e, 0, "%s: \"%s\" is not a network mode (none, host or bridge)", p, json_string_value(v));
    return 0;
}

static const struct field network_fields[] = {
    {"mode", parse_network_mode},
    {NULL, NULL},
};

static int parse_network(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return check_fields(v, p, network_fields, s, e);
}

/*
 * Mounts and triggers are arrays of small objects. Each entry must be an
 * object; it is appended to *items (zeroed, item_size bytes), each of its keys
 * goes to parse_key with its path ("mounts[2].source"), which refuses the
 * unknown ones, and check then sees the whole entry (required fields).
 */
typedef int (*item_key_fn)(void *item, const char *key, const json_t *value, const char *path, hd_error_t *e);
typedef int (*item_check_fn)(const void *item, const char *path, hd_error_t *e);

static int parse_object_array(const json_t *v, const char *p, const char *what, void **items, int *n, size_t item_size,
                              item_key_fn parse_key, item_check_fn check, hd_error_t *e)
{
    if (!json_is_array(v))
        return hd_json_type_error(v, p, what, e);
    size_t i;
    json_t *entry;
    json_array_foreach(v, i, entry)
    {
        cleanup_free char *ip = hd_xasprintf("%s[%zu]", p, i);
        if (!json_is_object(entry))
            return hd_json_type_error(entry, ip, "an object", e);
        *items = hd_xrealloc(*items, (size_t)(*n + 1) * item_size);
        void *item = (char *)*items + (size_t)(*n)++ * item_size;
        memset(item, 0, item_size);
        const char *key;
        json_t *value;
        json_object_foreach(entry, key, value)
        {
            cleanup_free char *kp = hd_xasprintf("%s.%s", ip, key);
            if (parse_key(item, key, value, kp, e) < 0)
                return -1;
        }
        if (check(item, ip, e) < 0)
            return -1;
    }
    return 0;
}

static int parse_mount_key(void *item, const char *key, const json_t *value, const char *kp, hd_error_t *e)
{
    struct hd_mount *m = item;
    if (strcmp(key, "source") == 0)
        return hd_json_string(value, kp, NULL, false, &m->source, e);
    if (strcmp(key, "target") == 0)
        return hd_json_string(value, kp, NULL, false, &m->target, e);
    if (strcmp(key, "readonly") == 0)
        return hd_json_bool(value, kp, NULL, &m->readonly, e);
    return hd_error_set(e, 0, "%s: unknown field", kp);
}

static int check_mount(const void *item, const char *ip, hd_error_t *e)
{
    const struct hd_mount *m = item;
    if (m->source == NULL)
        return hd_error_set(e, 0, "%s.source: is required", ip);
    if (m->target == NULL)
        return hd_error_set(e, 0, "%s.target: is required", ip);
    return 0;
}

static int parse_mounts(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return parse_object_array(v, p, "an array of mounts", (void **)&s->mounts, &s->n_mounts, sizeof(*s->mounts),
                              parse_mount_key, check_mount, e);
}

static int parse_trigger_key(void *item, const char *key, const json_t *value, const char *kp, hd_error_t *e)
{
    struct hd_trigger *t = item;
    if (strcmp(key, "topic") == 0)
        return hd_json_string(value, kp, NULL, false, &t->topic, e);
    return hd_error_set(e, 0, "%s: unknown field", kp);
}

static int check_trigger(const void *item, const char *ip, hd_error_t *e)
{
    const struct hd_trigger *t = item;
    if (t->topic == NULL || t->topic[0] == '\0')
        return hd_error_set(e, 0, "%s.topic: is required", ip);
    return 0;
}

static int parse_triggers(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return parse_object_array(v, p, "an array of triggers", (void **)&s->triggers, &s->n_triggers, sizeof(*s->triggers),
                              parse_trigger_key, check_trigger, e);
}

/* ---- devices --------------------------------------------------------- */

int hd_device_access_parse(const char *text, char out[4])
{
    bool r = false, w = false, m = false;
    if (text == NULL || text[0] == '\0')
        return -1;
    for (const char *c = text; *c; c++) {
        bool *bit = *c == 'r' ? &r : *c == 'w' ? &w : *c == 'm' ? &m : NULL;
        if (bit == NULL || *bit)
            return -1;
        *bit = true;
    }
    size_t n = 0;
    if (r)
        out[n++] = 'r';
    if (w)
        out[n++] = 'w';
    if (m)
        out[n++] = 'm';
    out[n] = '\0';
    return 0;
}

#define DEVICE_NUMBER_MAX 0xfffff

/* A major or minor of a rule: digits up to DEVICE_NUMBER_MAX, or "*" (-1). */
static int device_number_parse(const char *text, size_t len, int64_t *out)
{
    if (len == 1 && text[0] == '*') {
        *out = -1;
        return 0;
    }
    if (len == 0 || len > 7)
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)text[i]))
            return -1;
        v = v * 10 + (text[i] - '0');
    }
    if (v > DEVICE_NUMBER_MAX)
        return -1;
    *out = v;
    return 0;
}

int hd_device_class_parse(const char *text, struct hd_device_class *out, const char **why)
{
    struct hd_device_class c = {.major = -1, .minor = -1};
    cleanup_free char *copy = hd_xstrdup(text);
    char *save = NULL;
    const char *type = strtok_r(copy, " ", &save);
    const char *numbers = type ? strtok_r(NULL, " ", &save) : NULL;
    const char *access = numbers ? strtok_r(NULL, " ", &save) : NULL;
    if (type == NULL || strlen(type) != 1 || strchr("abc", type[0]) == NULL) {
        *why = "is not TYPE MAJOR:MINOR ACCESS (the type is a, b or c)";
        return -1;
    }
    c.type = type[0];
    if (c.type == 'a' && numbers == NULL) {
        memcpy(c.access, "rwm", 4);
        *out = c;
        return 0;
    }
    const char *colon = numbers ? strchr(numbers, ':') : NULL;
    if (colon == NULL || device_number_parse(numbers, (size_t)(colon - numbers), &c.major) < 0 ||
        device_number_parse(colon + 1, strlen(colon + 1), &c.minor) < 0) {
        *why = "is not TYPE MAJOR:MINOR ACCESS (numbers up to 1048575, or *)";
        return -1;
    }
    if (c.type == 'a' && (c.major != -1 || c.minor != -1)) {
        *why = "has device numbers, but type a means every device (a *:*)";
        return -1;
    }
    if (hd_device_access_parse(access ? access : "rwm", c.access) < 0) {
        *why = "has an access that is not made of r, w and m";
        return -1;
    }
    if (access && strtok_r(NULL, " ", &save) != NULL) {
        *why = "has text after the access";
        return -1;
    }
    *out = c;
    return 0;
}

int hd_device_flag_parse(const char *text, struct hd_device *out, const char **why)
{
    cleanup_free char *copy = hd_xstrdup(text);
    char *parts[3] = {copy, NULL, NULL};
    int n = 1;
    for (char *c = copy; *c; c++)
        if (*c == ':') {
            if (n == 3) {
                *why = "is not HOST[:TARGET][:PERMISSIONS]";
                return -1;
            }
            *c = '\0';
            parts[n++] = c + 1;
        }
    const char *target = parts[1], *perms = parts[2];
    /* docker: HOST:PERMS when the second part is not a path */
    if (n == 2 && target[0] != '/') {
        perms = target;
        target = NULL;
    }
    struct hd_device d = {0};
    if (parts[0][0] == '\0' || (target && target[0] == '\0')) {
        *why = "is not HOST[:TARGET][:PERMISSIONS]";
        return -1;
    }
    if (perms && hd_device_access_parse(perms, d.permissions) < 0) {
        *why = "has permissions that are not made of r, w and m";
        return -1;
    }
    d.path = hd_xstrdup(parts[0]);
    d.target = target ? hd_xstrdup(target) : NULL;
    *out = d;
    return 0;
}

static int parse_device_key(void *item, const char *key, const json_t *value, const char *kp, hd_error_t *e)
{
    struct hd_device *d = item;
    if (strcmp(key, "path") == 0)
        return hd_json_string(value, kp, NULL, true, &d->path, e);
    if (strcmp(key, "target") == 0)
        return hd_json_string(value, kp, NULL, true, &d->target, e);
    if (strcmp(key, "permissions") == 0) {
        if (!json_is_string(value))
            return hd_json_type_error(value, kp, "a string", e);
        if (hd_device_access_parse(json_string_value(value), d->permissions) < 0)
            return hd_error_set(e, 0, "%s: \"%s\" is not made of r, w and m (each at most once)", kp,
                                json_string_value(value));
        return 0;
    }
    return hd_error_set(e, 0, "%s: unknown field", kp);
}

static int parse_secret_key(void *item, const char *key, const json_t *value, const char *kp, hd_error_t *e)
{
    struct hd_secret_ref *r = item;
    int64_t n = 0;
    if (strcmp(key, "name") == 0)
        return hd_json_string(value, kp, NULL, true, &r->name, e);
    if (strcmp(key, "target") == 0)
        return hd_json_string(value, kp, NULL, true, &r->target, e);
    if (strcmp(key, "env") == 0)
        return hd_json_string(value, kp, NULL, true, &r->env, e);
    if (strcmp(key, "mode") == 0) {
        /* "0400" (octal, as chmod reads it) or a number */
        if (json_is_string(value)) {
            const char *t = json_string_value(value);
            char *end = NULL;
            errno = 0;
            unsigned long m = strtoul(t, &end, 8);
            if (t[0] == '\0' || *end || errno || m > 0777)
                return hd_error_set(e, 0, "%s: \"%s\" is not a file mode (octal, like \"0400\")", kp, t);
            r->mode = (uint32_t)m;
            return 0;
        }
        if (hd_json_int(value, kp, 0, 0777, "a file mode (\"0400\")", &n, e) < 0)
            return -1;
        r->mode = (uint32_t)n;
        return 0;
    }
    if (strcmp(key, "uid") == 0 || strcmp(key, "gid") == 0) {
        if (hd_json_int(value, kp, 0, UINT32_MAX - 1, NULL, &n, e) < 0)
            return -1;
        *(key[0] == 'u' ? &r->uid : &r->gid) = (uint32_t)n;
        *(key[0] == 'u' ? &r->uid_set : &r->gid_set) = true;
        return 0;
    }
    if (strcmp(key, "version") == 0) {
        if (hd_json_int(value, kp, 0, INT64_MAX, NULL, &n, e) < 0)
            return -1;
        r->version = (uint64_t)n;
        return 0;
    }
    return hd_error_set(e, 0, "%s: unknown field", kp);
}

static int check_device(const void *item, const char *ip, hd_error_t *e)
{
    const struct hd_device *d = item;
    if (d->path == NULL)
        return hd_error_set(e, 0, "%s.path: is required", ip);
    return 0;
}

static int parse_devices(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return parse_object_array(v, p, "an array of devices", (void **)&s->devices, &s->n_devices, sizeof(*s->devices),
                              parse_device_key, check_device, e);
}

/* major/minor of a device rule: an integer 0..1048575 or "*". */
static int parse_device_number(const json_t *v, const char *kp, int64_t *out, hd_error_t *e)
{
    if (json_is_string(v) && strcmp(json_string_value(v), "*") == 0) {
        *out = -1;
        return 0;
    }
    return hd_json_int(v, kp, 0, DEVICE_NUMBER_MAX, "a device number (0..1048575) or \"*\"", out, e);
}

static int parse_device_rule_key(void *item, const char *key, const json_t *value, const char *kp, hd_error_t *e)
{
    struct hd_device_class *c = item;
    if (strcmp(key, "type") == 0) {
        if (!json_is_string(value))
            return hd_json_type_error(value, kp, "a string", e);
        const char *t = json_string_value(value);
        if (strlen(t) != 1 || strchr("abc", t[0]) == NULL)
            return hd_error_set(e, 0, "%s: \"%s\" is not a device type (a, b or c)", kp, t);
        c->type = t[0];
        return 0;
    }
    if (strcmp(key, "major") == 0)
        return parse_device_number(value, kp, &c->major, e);
    if (strcmp(key, "minor") == 0)
        return parse_device_number(value, kp, &c->minor, e);
    if (strcmp(key, "access") == 0) {
        if (!json_is_string(value))
            return hd_json_type_error(value, kp, "a string", e);
        if (hd_device_access_parse(json_string_value(value), c->access) < 0)
            return hd_error_set(e, 0, "%s: \"%s\" is not made of r, w and m (each at most once)", kp,
                                json_string_value(value));
        return 0;
    }
    return hd_error_set(e, 0, "%s: unknown field", kp);
}

static int check_device_rule(const void *item, const char *ip, hd_error_t *e)
{
    const struct hd_device_class *c = item;
    if (c->type == '\0')
        return hd_error_set(e, 0, "%s.type: is required (a, b or c)", ip);
    return 0;
}

/* Entries read as zeroed items; then the keys an entry leaves out take their defaults: major and minor
 * "*", access "rwm". Type a means every device: numbers other than "*" are refused. */
static int parse_device_rules(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    int first = s->n_device_rules;
    if (parse_object_array(v, p, "an array of device rules", (void **)&s->device_rules, &s->n_device_rules,
                           sizeof(*s->device_rules), parse_device_rule_key, check_device_rule, e) < 0)
        return -1;
    for (int i = first; i < s->n_device_rules; i++) {
        struct hd_device_class *c = &s->device_rules[i];
        const json_t *entry = json_array_get(v, (size_t)(i - first));
        if (json_object_get(entry, "major") == NULL)
            c->major = -1;
        if (json_object_get(entry, "minor") == NULL)
            c->minor = -1;
        if (c->access[0] == '\0')
            memcpy(c->access, "rwm", 4);
        if (c->type == 'a' && (c->major != -1 || c->minor != -1))
            return hd_error_set(e, 0, "%s[%d]: type a means every device; major and minor must be \"*\" or absent", p,
                                i - first);
    }
    return 0;
}

static int check_secret(const void *item, const char *ip, hd_error_t *e)
{
    /* the default target is filled here, so the stored spec (and its digest) says where the file goes */
    struct hd_secret_ref *r = (struct hd_secret_ref *)item;
    if (r->name == NULL)
        return hd_error_set(e, 0, "%s.name: is required", ip);
    if (!hd_secret_name_valid(r->name))
        return hd_error_set(e, 0,
                            "%s.name: \"%s\" is not a secret name (1-63 letters, digits, '-', '_', '.', starting "
                            "with a letter or digit)",
                            ip, r->name);
    if (r->target == NULL)
        r->target = hd_xasprintf("/run/secrets/%s", r->name);
    size_t n = strlen(r->target);
    if (r->target[0] != '/' || r->target[n - 1] == '/' || strstr(r->target, "/../") || strstr(r->target, "/./") ||
        strstr(r->target, "//") || (n >= 3 && strcmp(r->target + n - 3, "/..") == 0) ||
        (n >= 2 && strcmp(r->target + n - 2, "/.") == 0) || strcmp(r->target, "/") == 0)
        return hd_error_set(e, 0, "%s.target: \"%s\" must be an absolute path to a file, without \".\" or \"..\"", ip,
                            r->target);
    if (strrchr(r->target, '/') == r->target)
        return hd_error_set(e, 0,
                            "%s.target: \"%s\" must be in a directory (its directory becomes a tmpfs), like "
                            "/run/secrets/%s",
                            ip, r->target, r->name);
    if (r->env) {
        for (const char *c = r->env; *c; c++)
            if (!(isalnum((unsigned char)*c) || *c == '_') || isdigit((unsigned char)r->env[0]))
                return hd_error_set(e, 0, "%s.env: \"%s\" is not a variable name (letters, digits, '_')", ip, r->env);
    }
    return 0;
}

static int parse_secrets(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return parse_object_array(v, p, "an array of secrets", (void **)&s->secrets, &s->n_secrets, sizeof(*s->secrets),
                              parse_secret_key, check_secret, e);
}

static int parse_secret_update(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    if (!json_is_string(v))
        return hd_json_type_error(v, p, "a string", e);
    const char *t = json_string_value(v);
    if (strcmp(t, "rewrite") == 0)
        s->secret_update = HD_SECRET_UPDATE_REWRITE;
    else if (strcmp(t, "restart") == 0)
        s->secret_update = HD_SECRET_UPDATE_RESTART;
    else
        return hd_error_set(e, 0, "%s: \"%s\" is not a secret update policy (rewrite or restart)", p, t);
    return 0;
}

static int parse_readonly_rootfs(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return hd_json_bool(v, p, NULL, &s->readonly_rootfs, e);
}

static int parse_init(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return hd_json_bool(v, p, NULL, &s->init, e);
}

static int parse_cap_add(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return hd_json_strv(v, p, NULL, &s->security.cap_add, e);
}

static int parse_cap_drop(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return hd_json_strv(v, p, NULL, &s->security.cap_drop, e);
}

static int parse_no_new_privs(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return hd_json_bool(v, p, NULL, &s->security.no_new_privs, e);
}

static const struct field security_fields[] = {
    {"seccomp", parse_seccomp},
    {"cap_add", parse_cap_add},
    {"cap_drop", parse_cap_drop},
    {"no_new_privs", parse_no_new_privs},
    {NULL, NULL},
};

static int parse_security(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return check_fields(v, p, security_fields, s, e);
}

static int parse_restart_policy(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    if (!json_is_string(v))
        return hd_json_type_error(v, p, "a string", e);
    for (size_t i = 0; i < ARRAY_SIZE(restart_names); i++)
        if (strcmp(json_string_value(v), restart_names[i]) == 0) {
            s->restart.policy = (enum hd_restart_policy)i;
            return 0;
        }
    return hd_error_set(e, 0, "%s: \"%s\" is not a restart policy (never, on-failure or always)", p,
                        json_string_value(v));
}

static int parse_max_retries(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    int64_t n = 0;
    if (hd_json_int(v, p, 0, 1000000, NULL, &n, e) < 0)
        return -1;
    s->restart.max_retries = (int)n;
    return 0;
}

static const struct field restart_fields[] = {
    {"policy", parse_restart_policy},
    {"max_retries", parse_max_retries},
    {NULL, NULL},
};

static int parse_restart(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return check_fields(v, p, restart_fields, s, e);
}

static int parse_userns_field(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    int64_t n = 0;
    if (hd_json_int(v, p, 0, UINT32_MAX, NULL, &n, e) < 0)
        return -1;
    const char *leaf = strrchr(p, '.') + 1;
    if (strcmp(leaf, "uid") == 0)
        s->userns.uid_base = (uint32_t)n;
    else if (strcmp(leaf, "gid") == 0)
        s->userns.gid_base = (uint32_t)n;
    else
        s->userns.size = (uint32_t)n;
    return 0;
}

static const struct field userns_fields[] = {
    {"uid", parse_userns_field},
    {"gid", parse_userns_field},
    {"size", parse_userns_field},
    {NULL, NULL},
};

static int parse_userns(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    s->userns.enabled = true;
    s->userns.size = 65536;
    s->userns.uid_base = s->userns.gid_base = 100000;
    return check_fields(v, p, userns_fields, s, e);
}

static const struct field vm_fields[] = {
    {"accel", parse_vm_accel},
    {"boot", parse_vm_boot},
    {NULL, NULL},
};

static int parse_vm(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return check_fields(v, p, vm_fields, s, e);
}

static const char *const function_mode_names[] = {"none", "on-demand", "pinned"};

const char *hd_function_mode_name(enum hd_function_mode mode)
{
    return (size_t)mode < ARRAY_SIZE(function_mode_names) ? function_mode_names[mode] : "?";
}

static int parse_function_mode(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    if (!json_is_string(v))
        return hd_json_type_error(v, p, "a string", e);
    for (size_t i = 1; i < ARRAY_SIZE(function_mode_names); i++)
        if (strcmp(json_string_value(v), function_mode_names[i]) == 0) {
            s->function.mode = (enum hd_function_mode)i;
            return 0;
        }
    return hd_error_set(e, 0, "%s: \"%s\" is not a function mode (on-demand or pinned)", p, json_string_value(v));
}

/* A duration: a number of seconds (fractions allowed) or a string "250ms", "10s", "5m". */
static int get_duration_ms(const json_t *v, const char *p, int64_t *out, hd_error_t *e)
{
    double seconds;
    if (json_is_number(v)) {
        seconds = json_number_value(v);
    } else if (json_is_string(v)) {
        char *end;
        const char *text = json_string_value(v);
        seconds = strtod(text, &end);
        if (end == text)
            goto bad;
        if (strcmp(end, "ms") == 0)
            seconds /= 1000.0;
        else if (strcmp(end, "m") == 0)
            seconds *= 60.0;
        else if (strcmp(end, "s") != 0 && *end)
            goto bad;
    } else {
        return hd_json_type_error(v, p, "a duration (seconds, or \"250ms\", \"10s\", \"5m\")", e);
    }
    if (!(seconds > 0) || seconds > 86400.0 * 365)
        return hd_error_set(e, 0, "%s: must be more than 0 and at most a year", p);
    *out = (int64_t)(seconds * 1000.0 + 0.5);
    if (*out == 0)
        *out = 1;
    return 0;
bad:
    return hd_error_set(e, 0, "%s: \"%s\" is not a duration (\"250ms\", \"10s\", \"5m\")", p, json_string_value(v));
}

static int parse_function_timeout(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return get_duration_ms(v, p, &s->function.timeout_ms, e);
}

static int parse_function_idle_timeout(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return get_duration_ms(v, p, &s->function.idle_timeout_ms, e);
}

static int parse_function_max_concurrency(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    int64_t n = 0;
    if (hd_json_int(v, p, 1, 1024, NULL, &n, e) < 0)
        return -1;
    s->function.max_concurrency = (int)n;
    return 0;
}

static int parse_function_max_queue(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    int64_t n = 0;
    if (hd_json_int(v, p, 1, 1000000, NULL, &n, e) < 0)
        return -1;
    s->function.max_queue = (int)n;
    return 0;
}

STRING_FIELD(parse_function_reply_topic, function.reply_topic)

static const struct field function_fields[] = {
    {"mode", parse_function_mode},
    {"timeout", parse_function_timeout},
    {"max_concurrency", parse_function_max_concurrency},
    {"idle_timeout", parse_function_idle_timeout},
    {"reply_topic", parse_function_reply_topic},
    {"max_queue", parse_function_max_queue},
    {NULL, NULL},
};

static int parse_function(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    if (check_fields(v, p, function_fields, s, e) < 0)
        return -1;
    if (s->function.mode == HD_FUNCTION_NONE)
        return hd_error_set(e, 0, "%s.mode: is required (on-demand or pinned)", p);
    return 0;
}

static int parse_health_command(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    hd_strv_free(s->health.command);
    s->health.command = NULL;
    if (hd_json_strv(v, p, NULL, &s->health.command, e) < 0)
        return -1;
    if (s->health.command[0] == NULL || s->health.command[0][0] == '\0')
        return hd_error_set(e, 0, "%s: must not be empty", p);
    return 0;
}

static int parse_health_wait(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    if (!json_is_number(v))
        return hd_json_type_error(v, p, "a number of seconds", e);
    double d = json_number_value(v);
    if (!(d > 0 && d <= 3600))
        return hd_error_set(e, 0, "%s: %g is out of range (greater than 0, at most 3600 seconds)", p, d);
    s->health.wait = d;
    return 0;
}

static const struct field health_fields[] = {
    {"command", parse_health_command},
    {"wait", parse_health_wait},
    {NULL, NULL},
};

static int parse_health(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return check_fields(v, p, health_fields, s, e);
}

static int parse_mqtt_publish(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return hd_json_strv(v, p, NULL, &s->mqtt.publish, e);
}

static int parse_mqtt_subscribe(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return hd_json_strv(v, p, NULL, &s->mqtt.subscribe, e);
}

static const struct field mqtt_fields[] = {
    {"publish", parse_mqtt_publish},
    {"subscribe", parse_mqtt_subscribe},
    {NULL, NULL},
};

static int parse_mqtt(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return check_fields(v, p, mqtt_fields, s, e);
}

static int parse_logs_lines(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return hd_json_int(v, p, 1, HD_LOGS_LINES_PER_MINUTE_MAX, "an integer 1..100000", &s->logs.lines_per_minute, e);
}

static int parse_logs_bytes(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return hd_json_int(v, p, HD_LOGS_BYTES_PER_MINUTE_MIN, HD_LOGS_BYTES_PER_MINUTE_MAX, "an integer 1024..1048576",
                       &s->logs.bytes_per_minute, e);
}

static const struct field logs_forward_fields[] = {
    {"lines_per_minute", parse_logs_lines},
    {"bytes_per_minute", parse_logs_bytes},
    {NULL, NULL},
};

/* true, false, or the caps: {"lines_per_minute": N, "bytes_per_minute": N} (forwarding on). */
static int parse_logs_forward(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    s->logs = (struct hd_logs){0};
    if (json_is_boolean(v)) {
        s->logs.forward = json_is_true(v);
        return 0;
    }
    if (!json_is_object(v))
        return hd_json_type_error(v, p, "true, false or an object {lines_per_minute, bytes_per_minute}", e);
    s->logs.forward = true;
    return check_fields(v, p, logs_forward_fields, s, e);
}

static const struct field logs_fields[] = {
    {"forward", parse_logs_forward},
    {NULL, NULL},
};

static int parse_logs(struct hd_spec *s, const json_t *v, const char *p, hd_error_t *e)
{
    return check_fields(v, p, logs_fields, s, e);
}

static const struct field spec_fields[] = {
    {"logs", parse_logs},
    {"mqtt", parse_mqtt},
    {"health", parse_health},
    {"name", parse_name},
    {"isolation", parse_isolation},
    {"image", parse_image},
    {"rootfs", parse_rootfs},
    {"command", parse_command},
    {"entrypoint", parse_entrypoint},
    {"env", parse_env},
    {"workdir", parse_workdir},
    {"user", parse_user},
    {"hostname", parse_hostname},
    {"resources", parse_resources},
    {"network", parse_network},
    {"mounts", parse_mounts},
    {"readonly_rootfs", parse_readonly_rootfs},
    {"security", parse_security},
    {"restart", parse_restart},
    {"triggers", parse_triggers},
    {"devices", parse_devices},
    {"device_rules", parse_device_rules},
    {"init", parse_init},
    {"user_namespace", parse_userns},
    {"vm", parse_vm},
    {"function", parse_function},
    {"secrets", parse_secrets},
    {"secret_update", parse_secret_update},
    {NULL, NULL},
};

int hd_spec_parse_json(struct hd_spec *spec, const char *json, size_t len, const char *origin, hd_error_t *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return hd_error_set(err, 0, "%s: line %d column %d: %s", origin, jerr.line, jerr.column, jerr.text);
    int r = check_fields(root, "", spec_fields, spec, err);
    json_decref(root);
    if (r < 0)
        return hd_error_prefix(err, "%s", origin);
    return 0;
}

int hd_spec_load_file(struct hd_spec *spec, const char *path, hd_error_t *err)
{
    cleanup_free char *data = NULL;
    size_t len;
    if (hd_read_file(path, &data, &len, err) < 0)
        return hd_error_prefix(err, "spec");
    return hd_spec_parse_json(spec, data, len, path, err);
}

/* ---- validation ----------------------------------------------------- */

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || !isalnum((unsigned char)s[0]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
            return false;
    return true;
}

static bool valid_hostname(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '.')
            return false;
    return true;
}

/* A field the isolation level cannot honour: one message shape for all of them. */
static int refuse(hd_error_t *err, const struct hd_spec *spec, const char *field, const char *why)
{
    return hd_error_set(err, 0, "%s: not supported with %s isolation (%s)", field, hd_isolation_name(spec->isolation),
                        why);
}

static int validate_process(const struct hd_spec *spec, hd_error_t *err)
{
    const char *why = "a process runs on the host's filesystem";
    if (spec->image)
        return refuse(err, spec, "image", why);
    if (spec->rootfs)
        return refuse(err, spec, "rootfs", why);
    if (spec->readonly_rootfs)
        return refuse(err, spec, "readonly_rootfs", why);
    if (spec->n_mounts)
        return refuse(err, spec, "mounts", why);
    if (spec->hostname)
        return refuse(err, spec, "hostname", "a process shares the host's UTS namespace");
    if (spec->network != HD_NET_DEFAULT && spec->network != HD_NET_HOST)
        return refuse(err, spec, "network.mode", "a process shares the host's network; only \"host\"");
    if (spec->userns.enabled)
        return refuse(err, spec, "user_namespace", "use container isolation");
    if (spec->init)
        return refuse(err, spec, "init", "the workload is not PID 1");
    if (spec->command == NULL)
        return hd_error_set(err, 0, "command: is required for process isolation");
    return 0;
}

static int validate_container_or_vm(const struct hd_spec *spec, hd_error_t *err)
{
    if (spec->image && spec->rootfs)
        return hd_error_set(err, 0, "image and rootfs: give one, not both");
    if (!spec->image && !spec->rootfs)
        return hd_error_set(err, 0, "image or rootfs: one is required for %s isolation",
                            hd_isolation_name(spec->isolation));
    if (spec->rootfs && spec->rootfs[0] != '/')
        return hd_error_set(err, 0, "rootfs: \"%s\" must be an absolute path", spec->rootfs);
    if (spec->workdir && spec->workdir[0] != '/')
        return hd_error_set(err, 0, "workdir: \"%s\" must be an absolute path", spec->workdir);
    if (spec->isolation == HD_ISOLATION_VM) {
        if (spec->network == HD_NET_HOST)
            return refuse(err, spec, "network.mode", "a VM has its own kernel and network stack; use none or bridge");
        if (spec->userns.enabled)
            return refuse(err, spec, "user_namespace", "the guest kernel is the isolation boundary");
        if (spec->n_mounts)
            return hd_error_set(err, 0,
                                "mounts[0]: %s → %s: not supported with vm isolation (the guest cannot share "
                                "host directories: no 9p/virtiofs here)",
                                spec->mounts[0].source, spec->mounts[0].target);
        if (spec->security.cap_add || spec->security.cap_drop)
            return refuse(err, spec, spec->security.cap_add ? "security.cap_add" : "security.cap_drop",
                          "the workload is root in its own guest kernel; hedge-init does not change capabilities");
        if (spec->security.seccomp && strcmp(spec->security.seccomp, "unconfined") != 0)
            return refuse(err, spec, "security.seccomp",
                          "no seccomp filter is applied inside the guest; the hypervisor is the boundary");
    }
    if (spec->isolation != HD_ISOLATION_VM && spec->vm_accel)
        return refuse(err, spec, "vm.accel", "only vm isolation has an accelerator");
    if (spec->isolation != HD_ISOLATION_VM && spec->vm_boot)
        return refuse(err, spec, "vm.boot", "only vm isolation boots from a template");
    return 0;
}

static int validate_mqtt_filters(char *const *filters, const char *field, hd_error_t *err)
{
    for (size_t i = 0; filters && filters[i]; i++)
        if (!hd_mqtt_filter_valid(filters[i]))
            return hd_error_set(err, 0,
                                "%s[%zu]: \"%s\" is not a topic filter (non-empty; '+' and '#' must be a whole "
                                "level, '#' only last)",
                                field, i, filters[i]);
    return 0;
}

/* An absolute path without a ".." component. */
static bool clean_absolute_path(const char *path)
{
    if (path[0] != '/')
        return false;
    size_t n = strlen(path);
    return strstr(path, "/../") == NULL && !(n >= 3 && strcmp(path + n - 3, "/..") == 0);
}

static int validate_devices(const struct hd_spec *spec, hd_error_t *err)
{
    for (int i = 0; i < spec->n_devices; i++) {
        const struct hd_device *d = &spec->devices[i];
        if (!clean_absolute_path(d->path))
            return hd_error_set(err, 0, "devices[%d].path: \"%s\" must be an absolute path without \"..\"", i, d->path);
        if (d->target && !clean_absolute_path(d->target))
            return hd_error_set(err, 0, "devices[%d].target: \"%s\" must be an absolute path without \"..\"", i,
                                d->target);
        if (d->target && strcmp(d->target, "/") == 0)
            return hd_error_set(err, 0, "devices[%d].target: must not be /", i);
        char canonical[4];
        if (d->permissions[0] && (hd_device_access_parse(d->permissions, canonical) < 0))
            return hd_error_set(err, 0, "devices[%d].permissions: \"%s\" is not made of r, w and m", i, d->permissions);
        if (spec->isolation == HD_ISOLATION_PROCESS && d->target && strcmp(d->target, d->path) != 0)
            return hd_error_set(err, 0,
                                "devices[%d].target: not supported with process isolation (a process sees the "
                                "host's /dev; the target must be the path or absent)",
                                i);
    }
    for (int i = 0; i < spec->n_device_rules; i++) {
        const struct hd_device_class *c = &spec->device_rules[i];
        char canonical[4];
        if (c->type == '\0' || strchr("abc", c->type) == NULL || c->major < -1 || c->major > DEVICE_NUMBER_MAX ||
            c->minor < -1 || c->minor > DEVICE_NUMBER_MAX || hd_device_access_parse(c->access, canonical) < 0)
            return hd_error_set(err, 0,
                                "device_rules[%d]: is not a device rule (type a, b or c; major and minor "
                                "0..1048575 or *; access of r, w, m)",
                                i);
    }
    /* devices with vm isolation: which host nodes can reach a guest is the vm backend's check (vm.c) */
    if (spec->isolation == HD_ISOLATION_VM && spec->n_device_rules)
        return refuse(err, spec, "device_rules", "QEMU runs in no device cgroup; the guest kernel owns its devices");
    return 0;
}

int hd_spec_validate(const struct hd_spec *spec, hd_error_t *err)
{
    if (validate_devices(spec, err) < 0)
        return -1;
    if (validate_mqtt_filters(spec->mqtt.publish, "mqtt.publish", err) < 0 ||
        validate_mqtt_filters(spec->mqtt.subscribe, "mqtt.subscribe", err) < 0)
        return -1;
    for (int i = 0; i < spec->n_triggers; i++)
        if (!hd_mqtt_filter_valid(spec->triggers[i].topic))
            return hd_error_set(err, 0, "triggers[%d].topic: \"%s\" is not a topic filter", i, spec->triggers[i].topic);
    if (spec->name && !valid_name(spec->name))
        return hd_error_set(err, 0,
                            "name: \"%s\" is not a valid name (1-63 letters, digits, '-', '_', '.', "
                            "starting with a letter or digit)",
                            spec->name);
    if (spec->hostname && !valid_hostname(spec->hostname))
        return hd_error_set(err, 0, "hostname: \"%s\" is not a valid hostname", spec->hostname);
    if (spec->command && spec->command[0] && spec->command[0][0] == '\0')
        return hd_error_set(err, 0, "command[0]: must not be empty");
    const struct hd_resources *r = &spec->resources;
    if (r->memory && r->memory < (1 << 20))
        return hd_error_set(err, 0, "resources.memory: %lld bytes is below the 1M minimum", (long long)r->memory);
    if (r->memory_swap > 0 && r->memory == 0)
        return hd_error_set(err, 0, "resources.memory_swap: needs resources.memory");
    if (r->memory_swap > 0 && r->memory_swap < r->memory)
        return hd_error_set(err, 0,
                            "resources.memory_swap: must be at least resources.memory (it counts memory plus swap)");
    for (int i = 0; i < spec->n_mounts; i++) {
        const struct hd_mount *m = &spec->mounts[i];
        if (m->source[0] != '/')
            return hd_error_set(err, 0, "mounts[%d].source: \"%s\" must be an absolute path", i, m->source);
        if (m->target[0] != '/')
            return hd_error_set(err, 0, "mounts[%d].target: \"%s\" must be an absolute path", i, m->target);
        if (strstr(m->target, "/../") ||
            strcmp(m->target + strlen(m->target) - (strlen(m->target) >= 3 ? 3 : 0), "/..") == 0)
            return hd_error_set(err, 0, "mounts[%d].target: \"%s\" must not contain \"..\"", i, m->target);
    }
    if (spec->security.seccomp && strcmp(spec->security.seccomp, "default") != 0 &&
        strcmp(spec->security.seccomp, "unconfined") != 0 && spec->security.seccomp[0] != '/')
        return hd_error_set(err, 0,
                            "security.seccomp: \"%s\" is not a profile (default, unconfined or an "
                            "absolute path to a JSON profile)",
                            spec->security.seccomp);
    if (spec->restart.max_retries && spec->restart.policy != HD_RESTART_ON_FAILURE)
        return hd_error_set(err, 0, "restart.max_retries: only applies to the on-failure policy");
    if (spec->userns.enabled && spec->userns.size == 0)
        return hd_error_set(err, 0, "user_namespace.size: must be at least 1");
    if (spec->vm_accel && strcmp(spec->vm_accel, "auto") != 0 && strcmp(spec->vm_accel, "kvm") != 0 &&
        strcmp(spec->vm_accel, "tcg") != 0)
        return hd_error_set(err, 0, "vm.accel: \"%s\" is not an accelerator (auto, kvm or tcg)", spec->vm_accel);
    if (spec->vm_boot && strcmp(spec->vm_boot, "auto") != 0 && strcmp(spec->vm_boot, "cold") != 0 &&
        strcmp(spec->vm_boot, "snapshot") != 0)
        return hd_error_set(err, 0, "vm.boot: \"%s\" is not a boot path (auto, cold or snapshot)", spec->vm_boot);
    for (int i = 0; i < spec->n_secrets; i++)
        for (int j = 0; j < i; j++) {
            if (strcmp(spec->secrets[i].target, spec->secrets[j].target) == 0)
                return hd_error_set(err, 0, "secrets[%d].target: \"%s\" is also the target of secrets[%d]", i,
                                    spec->secrets[i].target, j);
            if (spec->secrets[i].env && spec->secrets[j].env && strcmp(spec->secrets[i].env, spec->secrets[j].env) == 0)
                return hd_error_set(err, 0, "secrets[%d].env: \"%s\" is also the variable of secrets[%d]", i,
                                    spec->secrets[i].env, j);
        }
    const struct hd_function *fn = &spec->function;
    if (fn->mode != HD_FUNCTION_NONE) {
        if (spec->n_triggers == 0)
            return hd_error_set(err, 0, "triggers: a function needs at least one trigger topic");
        if (fn->mode == HD_FUNCTION_PINNED && fn->max_concurrency > 1)
            return hd_error_set(err, 0, "function.max_concurrency: a pinned function has one instance");
        if (fn->mode == HD_FUNCTION_PINNED && fn->idle_timeout_ms)
            return hd_error_set(err, 0, "function.idle_timeout: only applies to on-demand functions");
        if (fn->reply_topic && !hd_mqtt_topic_valid_name(fn->reply_topic, strlen(fn->reply_topic)))
            return hd_error_set(err, 0, "function.reply_topic: \"%s\" must be a topic name without wildcards",
                                fn->reply_topic);
    } else if (fn->timeout_ms || fn->max_concurrency || fn->idle_timeout_ms || fn->reply_topic || fn->max_queue) {
        return hd_error_set(err, 0, "function.mode: is required");
    }
    if (spec->isolation == HD_ISOLATION_PROCESS)
        return validate_process(spec, err);
    return validate_container_or_vm(spec, err);
}

/* ---- serialization -------------------------------------------------- */

static json_t *strv_to_json(char *const *v)
{
    json_t *a = json_array();
    for (size_t i = 0; v && v[i]; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

char *hd_spec_to_json(const struct hd_spec *spec)
{
    json_t *o = json_object();
    if (spec->name)
        json_object_set_new(o, "name", json_string(spec->name));
    json_object_set_new(o, "isolation", json_string(hd_isolation_name(spec->isolation)));
    if (spec->image)
        json_object_set_new(o, "image", json_string(spec->image));
    if (spec->rootfs)
        json_object_set_new(o, "rootfs", json_string(spec->rootfs));
    if (spec->command)
        json_object_set_new(o, "command", strv_to_json(spec->command));
    if (spec->entrypoint)
        json_object_set_new(o, "entrypoint", strv_to_json(spec->entrypoint));
    if (spec->env) {
        json_t *env = json_object();
        for (size_t i = 0; spec->env[i]; i++) {
            cleanup_free char *k = hd_xstrdup(spec->env[i]);
            char *eq = strchr(k, '=');
            if (!eq)
                continue;
            *eq = '\0';
            json_object_set_new(env, k, json_string(eq + 1));
        }
        json_object_set_new(o, "env", env);
    }
    if (spec->workdir)
        json_object_set_new(o, "workdir", json_string(spec->workdir));
    if (spec->user)
        json_object_set_new(o, "user", json_string(spec->user));
    if (spec->hostname)
        json_object_set_new(o, "hostname", json_string(spec->hostname));
    const struct hd_resources *r = &spec->resources;
    if (r->memory || r->memory_swap || r->cpus > 0 || r->cpu_weight || r->pids) {
        json_t *res = json_object();
        if (r->memory)
            json_object_set_new(res, "memory", json_integer(r->memory));
        if (r->memory_swap > 0)
            json_object_set_new(res, "memory_swap", json_integer(r->memory_swap));
        else if (r->memory_swap < 0)
            json_object_set_new(res, "memory_swap", json_string("-1"));
        if (r->cpus > 0)
            json_object_set_new(res, "cpus", json_real(r->cpus));
        if (r->cpu_weight)
            json_object_set_new(res, "cpu_weight", json_integer(r->cpu_weight));
        if (r->pids)
            json_object_set_new(res, "pids", json_integer(r->pids));
        json_object_set_new(o, "resources", res);
    }
    if (spec->network != HD_NET_DEFAULT)
        json_object_set_new(o, "network", json_pack("{s:s}", "mode", hd_net_mode_name(spec->network)));
    if (spec->n_mounts) {
        json_t *a = json_array();
        for (int i = 0; i < spec->n_mounts; i++)
            json_array_append_new(a,
                                  json_pack("{s:s,s:s,s:b}", "source", spec->mounts[i].source, "target",
                                            spec->mounts[i].target, "readonly", spec->mounts[i].readonly));
        json_object_set_new(o, "mounts", a);
    }
    if (spec->readonly_rootfs)
        json_object_set_new(o, "readonly_rootfs", json_true());
    json_t *sec = json_object();
    if (spec->security.seccomp)
        json_object_set_new(sec, "seccomp", json_string(spec->security.seccomp));
    if (spec->security.cap_add)
        json_object_set_new(sec, "cap_add", strv_to_json(spec->security.cap_add));
    if (spec->security.cap_drop)
        json_object_set_new(sec, "cap_drop", strv_to_json(spec->security.cap_drop));
    if (!spec->security.no_new_privs)
        json_object_set_new(sec, "no_new_privs", json_false());
    if (json_object_size(sec))
        json_object_set_new(o, "security", sec);
    else
        json_decref(sec);
    if (spec->restart.policy != HD_RESTART_NEVER || spec->restart.max_retries) {
        json_t *rs = json_pack("{s:s}", "policy", restart_names[spec->restart.policy]);
        if (spec->restart.max_retries)
            json_object_set_new(rs, "max_retries", json_integer(spec->restart.max_retries));
        json_object_set_new(o, "restart", rs);
    }
    if (spec->n_triggers) {
        json_t *a = json_array();
        for (int i = 0; i < spec->n_triggers; i++)
            json_array_append_new(a, json_pack("{s:s}", "topic", spec->triggers[i].topic));
        json_object_set_new(o, "triggers", a);
    }
    if (spec->n_devices) {
        json_t *a = json_array();
        for (int i = 0; i < spec->n_devices; i++) {
            const struct hd_device *d = &spec->devices[i];
            json_array_append_new(a,
                                  json_pack("{s:s,s:s,s:s}", "path", d->path, "target", d->target ? d->target : d->path,
                                            "permissions", d->permissions[0] ? d->permissions : "rwm"));
        }
        json_object_set_new(o, "devices", a);
    }
    if (spec->n_device_rules) {
        json_t *a = json_array();
        for (int i = 0; i < spec->n_device_rules; i++) {
            const struct hd_device_class *c = &spec->device_rules[i];
            char type[2] = {c->type, '\0'};
            json_t *rule = json_pack("{s:s,s:s}", "type", type, "access", c->access);
            json_object_set_new(rule, "major", c->major < 0 ? json_string("*") : json_integer(c->major));
            json_object_set_new(rule, "minor", c->minor < 0 ? json_string("*") : json_integer(c->minor));
            json_array_append_new(a, rule);
        }
        json_object_set_new(o, "device_rules", a);
    }
    if (spec->init)
        json_object_set_new(o, "init", json_true());
    if (spec->userns.enabled)
        json_object_set_new(o, "user_namespace",
                            json_pack("{s:I,s:I,s:I}", "uid", (json_int_t)spec->userns.uid_base, "gid",
                                      (json_int_t)spec->userns.gid_base, "size", (json_int_t)spec->userns.size));
    if (spec->vm_accel || spec->vm_boot) {
        json_t *vmo = json_object();
        if (spec->vm_accel)
            json_object_set_new(vmo, "accel", json_string(spec->vm_accel));
        if (spec->vm_boot)
            json_object_set_new(vmo, "boot", json_string(spec->vm_boot));
        json_object_set_new(o, "vm", vmo);
    }
    if (spec->function.mode != HD_FUNCTION_NONE) {
        const struct hd_function *fn = &spec->function;
        json_t *f = json_pack("{s:s}", "mode", hd_function_mode_name(fn->mode));
        if (fn->timeout_ms)
            json_object_set_new(f, "timeout", json_real((double)fn->timeout_ms / 1000.0));
        if (fn->max_concurrency)
            json_object_set_new(f, "max_concurrency", json_integer(fn->max_concurrency));
        if (fn->idle_timeout_ms)
            json_object_set_new(f, "idle_timeout", json_real((double)fn->idle_timeout_ms / 1000.0));
        if (fn->reply_topic)
            json_object_set_new(f, "reply_topic", json_string(fn->reply_topic));
        if (fn->max_queue)
            json_object_set_new(f, "max_queue", json_integer(fn->max_queue));
        json_object_set_new(o, "function", f);
    }
    if (spec->health.command || spec->health.wait > 0) {
        json_t *h = json_object();
        if (spec->health.command)
            json_object_set_new(h, "command", strv_to_json(spec->health.command));
        if (spec->health.wait > 0)
            json_object_set_new(h, "wait", json_real(spec->health.wait));
        json_object_set_new(o, "health", h);
    }
    if (spec->mqtt.publish || spec->mqtt.subscribe) {
        json_t *m = json_object();
        if (spec->mqtt.publish)
            json_object_set_new(m, "publish", strv_to_json(spec->mqtt.publish));
        if (spec->mqtt.subscribe)
            json_object_set_new(m, "subscribe", strv_to_json(spec->mqtt.subscribe));
        json_object_set_new(o, "mqtt", m);
    }
    if (spec->n_secrets) {
        json_t *a = json_array();
        for (int i = 0; i < spec->n_secrets; i++) {
            const struct hd_secret_ref *ref = &spec->secrets[i];
            char mode[16];
            snprintf(mode, sizeof(mode), "%04o", ref->mode ? ref->mode : 0400);
            json_t *so = json_pack("{s:s,s:s,s:s}", "name", ref->name, "target", ref->target, "mode", mode);
            if (ref->uid_set)
                json_object_set_new(so, "uid", json_integer(ref->uid));
            if (ref->gid_set)
                json_object_set_new(so, "gid", json_integer(ref->gid));
            if (ref->env)
                json_object_set_new(so, "env", json_string(ref->env));
            if (ref->version)
                json_object_set_new(so, "version", json_integer((json_int_t)ref->version));
            json_array_append_new(a, so);
        }
        json_object_set_new(o, "secrets", a);
    }
    if (spec->secret_update == HD_SECRET_UPDATE_RESTART)
        json_object_set_new(o, "secret_update", json_string("restart"));
    if (spec->logs.forward) {
        json_t *fw = json_true();
        if (spec->logs.lines_per_minute || spec->logs.bytes_per_minute) {
            json_decref(fw);
            fw = json_object();
            if (spec->logs.lines_per_minute)
                json_object_set_new(fw, "lines_per_minute", json_integer(spec->logs.lines_per_minute));
            if (spec->logs.bytes_per_minute)
                json_object_set_new(fw, "bytes_per_minute", json_integer(spec->logs.bytes_per_minute));
        }
        json_object_set_new(o, "logs", json_pack("{s:o}", "forward", fw));
    }
    char *out = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    if (out == NULL)
        abort();
    return out;
}

#define VM_DEFAULT_GUEST_RAM (256ll << 20)
#define VM_GUEST_KERNEL_OVERHEAD (64ll << 20) /* kernel, page tables, initramfs, tmpfs metadata */

int64_t hd_spec_vm_ram(const struct hd_resources *res)
{
    if (res->memory <= 0)
        return VM_DEFAULT_GUEST_RAM;
    int64_t ram = res->memory + VM_GUEST_KERNEL_OVERHEAD;
    return (ram + (1 << 20) - 1) & ~((int64_t)(1 << 20) - 1);
}

int hd_spec_vm_vcpus(const struct hd_resources *res)
{
    if (res->cpus <= 0)
        return 1;
    int whole = (int)res->cpus; /* rounded up by hand: hedge does not link libm */
    return whole < res->cpus ? whole + 1 : whole;
}
