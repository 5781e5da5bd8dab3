/*
 * acl.c - topic access control lists, in mosquitto's acl_file format:
 *
 *   topic read $SYS/#            # lines before any "user": anonymous clients
 *   user alice
 *   topic readwrite alice/#      # alice only
 *   topic deny alice/secret/#    # deny wins over any allow
 *   pattern write devices/%c/up  # every client; %c = client id, %u = username
 *
 * Without an acl_file every topic is allowed (authentication still applies).
 * With one, access is denied unless a rule allows it. Reads are checked at
 * SUBSCRIBE (the filter against the rules, wildcards taken literally) and
 * again for every delivered message; writes for every PUBLISH and the will.
 * A %u/%c substitution is skipped when the name holds '/', '+' or '#', so a
 * crafted client id cannot widen its own pattern.
 */
#include <stdlib.h>
#include <string.h>

#include "broker/internal.h"
#include "base/util.h"

struct acl_rule {
    char *user;   /* NULL: anonymous ("topic" before any "user") */
    bool pattern; /* applies to every client, with %u/%c */
    int access;   /* ACL_READ | ACL_WRITE, 0 = deny */
    char *topic;
    bool runtime; /* added by hd_broker_allow(); may use %u/%c */
};

struct broker_acl {
    struct acl_rule *rules;
    size_t n_rules;
    bool from_file; /* without a file, only users with run-time rules are restricted */
};

int broker_acl_load(struct hd_broker *b, hd_error_t *err)
{
    if (!b->cfg.acl_file)
        return 0;
    cleanup_free char *text = NULL;
    if (hd_read_file(b->cfg.acl_file, &text, NULL, err) < 0)
        return hd_error_prefix(err, "acl file");
    b->acl = hd_xcalloc(1, sizeof(*b->acl));
    b->acl->from_file = true;
    cleanup_free char *user = NULL;
    int lineno = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        line[strcspn(line, "\r")] = '\0';
        while (*line == ' ' || *line == '\t')
            line++;
        if (!line[0] || line[0] == '#')
            continue;
        char *rest = line + strcspn(line, " \t");
        if (*rest)
            *rest++ = '\0';
        while (*rest == ' ' || *rest == '\t')
            rest++;
        if (strcmp(line, "user") == 0) {
            if (!*rest)
                return hd_error_set(err, 0, "acl file %s line %d: user needs a name", b->cfg.acl_file, lineno);
            free(user);
            user = hd_xstrdup(rest);
            continue;
        }
        bool pattern = strcmp(line, "pattern") == 0;
        if (!pattern && strcmp(line, "topic") != 0)
            return hd_error_set(err, 0, "acl file %s line %d: unknown keyword %s", b->cfg.acl_file, lineno, line);
        int access = ACL_READ | ACL_WRITE;
        char *word_end = rest + strcspn(rest, " \t");
        if (*word_end) {
            char saved = *word_end;
            *word_end = '\0';
            int a = strcmp(rest, "read") == 0    ? ACL_READ
                : strcmp(rest, "write") == 0     ? ACL_WRITE
                : strcmp(rest, "readwrite") == 0 ? (ACL_READ | ACL_WRITE)
                : strcmp(rest, "deny") == 0      ? 0
                                                 : -1;
            if (a >= 0) {
                access = a;
                rest = word_end + 1;
                while (*rest == ' ' || *rest == '\t')
                    rest++;
            } else {
                *word_end = saved;
            }
        }
        if (!*rest || !hd_mqtt_filter_valid(rest))
            return hd_error_set(err, 0, "acl file %s line %d: invalid topic '%s'", b->cfg.acl_file, lineno, rest);
        b->acl->rules = hd_xrealloc(b->acl->rules, (b->acl->n_rules + 1) * sizeof(struct acl_rule));
        b->acl->rules[b->acl->n_rules++] = (struct acl_rule){pattern    ? NULL
                                                                 : user ? hd_xstrdup(user)
                                                                        : NULL,
                                                             pattern, access, hd_xstrdup(rest), false};
    }
    return 0;
}

/* Substitute %u and %c; NULL when a name is missing or unsafe. */
static char *pattern_expand(const char *pat, const char *username, const char *client_id)
{
    if (!strchr(pat, '%'))
        return hd_xstrdup(pat);
    struct mqtt_buf out = {0};
    for (const char *p = pat; *p; p++) {
        if (p[0] == '%' && (p[1] == 'u' || p[1] == 'c')) {
            const char *v = p[1] == 'u' ? username : client_id;
            if (v == NULL || !hd_mqtt_level_valid_name(v)) {
                mqtt_buf_free(&out);
                return NULL;
            }
            mqtt_put_bytes(&out, v, strlen(v));
            p++;
        } else {
            mqtt_put_u8(&out, (uint8_t)*p);
        }
    }
    mqtt_put_u8(&out, 0);
    return (char *)out.data;
}

bool broker_acl_allows(struct hd_broker *b, const char *username, const char *client_id, const char *topic, int access)
{
    if (!b->acl)
        return true;
    if (!b->acl->from_file) {
        bool restricted = false;
        for (size_t i = 0; i < b->acl->n_rules && !restricted; i++)
            restricted = b->acl->rules[i].user && username && strcmp(b->acl->rules[i].user, username) == 0;
        if (!restricted)
            return true;
    }
    bool allowed = false;
    for (size_t i = 0; i < b->acl->n_rules; i++) {
        struct acl_rule *r = &b->acl->rules[i];
        if (!r->pattern) {
            if ((r->user == NULL) != (username == NULL) || (r->user && strcmp(r->user, username) != 0))
                continue;
        }
        bool expand = r->pattern || r->runtime;
        cleanup_free char *expanded = expand ? pattern_expand(r->topic, username, client_id) : NULL;
        const char *filter = expand ? expanded : r->topic;
        if (!filter || !hd_mqtt_filter_matches(filter, topic))
            continue;
        if (r->access == 0)
            return false;
        if (r->access & access)
            allowed = true;
    }
    return allowed;
}

int hd_broker_allow(struct hd_broker *b, const char *user, const char *access, const char *filter, hd_error_t *err)
{
    int a = strcmp(access, "read") == 0    ? ACL_READ
        : strcmp(access, "write") == 0     ? ACL_WRITE
        : strcmp(access, "readwrite") == 0 ? (ACL_READ | ACL_WRITE)
                                           : -1;
    if (a < 0)
        return hd_error_set(err, 0, "broker acl for %s: access '%s': expected read, write or readwrite", user, access);
    if (!hd_mqtt_filter_valid(filter))
        return hd_error_set(err, 0, "broker acl for %s: invalid topic filter '%s'", user, filter);
    if (!b->acl)
        b->acl = hd_xcalloc(1, sizeof(*b->acl));
    b->acl->rules = hd_xrealloc(b->acl->rules, (b->acl->n_rules + 1) * sizeof(struct acl_rule));
    /* a user rule with %u/%c is stored as a pattern bound to that user */
    b->acl->rules[b->acl->n_rules++] = (struct acl_rule){hd_xstrdup(user), false, a, hd_xstrdup(filter), true};
    return 0;
}

void broker_acl_forget_user(struct hd_broker *b, const char *user)
{
    if (!b->acl)
        return;
    for (size_t i = 0; i < b->acl->n_rules;) {
        struct acl_rule *r = &b->acl->rules[i];
        if (r->runtime && strcmp(r->user, user) == 0) {
            free(r->user);
            free(r->topic);
            memmove(r, r + 1, (b->acl->n_rules - i - 1) * sizeof(*r)); /* keep rule order */
            b->acl->n_rules--;
        } else {
            i++;
        }
    }
}

void broker_acl_free(struct hd_broker *b)
{
    if (!b->acl)
        return;
    for (size_t i = 0; i < b->acl->n_rules; i++) {
        free(b->acl->rules[i].user);
        free(b->acl->rules[i].topic);
    }
    free(b->acl->rules);
    free(b->acl);
    b->acl = NULL;
}
