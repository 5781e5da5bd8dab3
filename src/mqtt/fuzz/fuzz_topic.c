/*
 * fuzz_topic.c - libFuzzer target for the topic rules (src/mqtt/topic.c;
 * scripts/fuzz-mqtt-topic, `make fuzz`).
 *
 * Input: a filter, a NUL byte, a topic (either part may hold any bytes). The
 * validators must agree with each other (the length and C-string forms, a
 * valid name is a valid filter, a $share subscription's filter is valid), the
 * level walker must give the string back, and the matcher must agree with a
 * slow reference written here from the spec's wording (levels as arrays,
 * recursion). Any disagreement aborts; ASan/UBSan catch bad reads.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mqtt/topic.h"

#define MAX_LEVELS 64

struct levels {
    const char *start[MAX_LEVELS];
    size_t len[MAX_LEVELS];
    size_t n;
};

/* Split on '/' by hand (not with the walker under test); false past MAX_LEVELS. */
static bool split(const char *s, struct levels *l)
{
    l->n = 0;
    const char *p = s;
    for (;;) {
        if (l->n == MAX_LEVELS)
            return false;
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        l->start[l->n] = p;
        l->len[l->n++] = n;
        if (!e)
            return true;
        p = e + 1;
    }
}

static bool level_is(const struct levels *l, size_t i, const char *s)
{
    return l->len[i] == strlen(s) && memcmp(l->start[i], s, l->len[i]) == 0;
}

/* MQTT §4.7: does filter[i..] match topic[j..]? */
static bool reference_match(const struct levels *f, size_t i, const struct levels *t, size_t j)
{
    if (i == f->n)
        return j == t->n;
    if (level_is(f, i, "#"))
        return true; /* the rest, including nothing ("a/#" matches "a") */
    if (j == t->n)
        return false;
    if (!level_is(f, i, "+") && (f->len[i] != t->len[j] || memcmp(f->start[i], t->start[j], f->len[i]) != 0))
        return false;
    return reference_match(f, i + 1, t, j + 1);
}

static void check_walker(const char *s)
{
    size_t pos = 0, total = strlen(s);
    for (struct hd_mqtt_level l = hd_mqtt_level_first(s);; l = hd_mqtt_level_next(&l)) {
        if (l.start != s + pos || l.len > total - pos || memchr(l.start, '/', l.len))
            abort();
        pos += l.len;
        if (l.last) {
            if (pos != total)
                abort();
            break;
        }
        if (s[pos] != '/')
            abort();
        pos++;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 2);
    memcpy(buf, data, size);
    buf[size] = buf[size + 1] = '\0';
    const char *filter = buf;
    size_t filter_len = strnlen(buf, size);
    const char *topic = buf + filter_len + (filter_len < size ? 1 : 0);
    size_t topic_len = strlen(topic);

    /* the length form sees the raw bytes (NULs included), the C-string form stops at the first NUL */
    bool fvalid = hd_mqtt_filter_valid(filter);
    if (fvalid != hd_mqtt_filter_valid_len(filter, filter_len))
        abort();
    if (size && hd_mqtt_filter_valid_len((const char *)data, size) && memchr(data, 0, size))
        abort();
    bool tvalid = hd_mqtt_topic_valid_name(topic, topic_len);
    if (tvalid && !hd_mqtt_filter_valid(topic))
        abort();
    if (hd_mqtt_level_valid_name(topic) && !tvalid)
        abort();

    struct hd_mqtt_subscription sub;
    if (hd_mqtt_subscription_parse(filter, filter_len, &sub)) {
        if (!hd_mqtt_filter_valid_len(sub.filter, sub.filter_len) || sub.filter + sub.filter_len != filter + filter_len)
            abort();
        if (sub.group &&
            (sub.group_len == 0 || memchr(sub.group, '/', sub.group_len) || memchr(sub.group, '+', sub.group_len) ||
             memchr(sub.group, '#', sub.group_len)))
            abort();
        if (!sub.group && !fvalid)
            abort();
    }

    check_walker(filter);
    check_walker(topic);

    struct levels fl, tl;
    if (fvalid && tvalid && split(filter, &fl) && split(topic, &tl)) {
        bool expect = reference_match(&fl, 0, &tl, 0);
        if (topic[0] == '$' && (level_is(&fl, 0, "+") || level_is(&fl, 0, "#")))
            expect = false; /* §4.7.2 */
        if (hd_mqtt_filter_matches(filter, topic) != expect)
            abort();
        if (!hd_mqtt_filter_matches(topic, topic))
            abort();
    }
    free(buf);
    return 0;
}
