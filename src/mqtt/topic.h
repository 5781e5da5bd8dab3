/*
 * topic.h - MQTT topic names and topic filters, written once for every part of
 * hedge: the broker (validation, its subscription tree, ACLs), the uplink (its
 * local <-> cloud topic maps), the function host and `hedge invoke`, and the
 * spec's trigger and mqtt.* filters.
 *
 * The rules are MQTT 3.1.1 §4.7 / 5.0 §4.7 (the same in both):
 * - a topic name is 1..65535 bytes without '+', '#' or U+0000;
 * - a topic filter is 1..65535 bytes where '+' is a whole level and '#' is a
 *   whole level and the last one ("a/#" also matches "a");
 * - levels are split on '/', empty levels are levels ("/a" has two);
 * - a filter starting with a wildcard does not match a topic starting with
 *   '$' ($SYS/...), so "#" and "+/x" never see broker-internal topics;
 * - "$share/GROUP/FILTER" is a shared subscription (5.0 §4.8.2): GROUP is a
 *   non-empty level without wildcards, FILTER a valid filter.
 * UTF-8 well-formedness is the codec's job (packet.c checks every string it
 * decodes); these functions look only at the topic structure. Pure: only libc.
 */
#ifndef HEDGE_MQTT_TOPIC_H
#define HEDGE_MQTT_TOPIC_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#define HD_MQTT_TOPIC_MAX 65535

/* A topic name a PUBLISH (or a will) may carry. */
bool hd_mqtt_topic_valid_name(const char *topic, size_t len);
/* A topic filter (SUBSCRIBE, ACL rules, triggers); the NUL-terminated form takes NULL as invalid. */
bool hd_mqtt_filter_valid(const char *filter);
bool hd_mqtt_filter_valid_len(const char *filter, size_t len);
/* A single level to splice into a topic (a node id, a client id in an ACL pattern, a share group):
 * non-empty, no '/', '+' or '#'. */
bool hd_mqtt_level_valid_name(const char *level);
/* Does the NUL-terminated topic name match the filter (wildcards and the '$' rule)? */
bool hd_mqtt_filter_matches(const char *filter, const char *topic);

/* May a wildcard in the first level of a filter match this topic? False for "$..." topics. */
static inline bool hd_mqtt_wildcard_may_match(const char *topic)
{
    return topic[0] != '$';
}

/* One level of a topic or filter: walk with hd_mqtt_level_first / hd_mqtt_level_next. */
enum hd_mqtt_level_kind { HD_MQTT_LEVEL_PLAIN, HD_MQTT_LEVEL_PLUS, HD_MQTT_LEVEL_HASH };
struct hd_mqtt_level {
    const char *start;
    size_t len;
    bool last;                    /* no '/' follows */
    enum hd_mqtt_level_kind kind; /* a lone '+' or '#' (in a topic name they never occur) */
};
/* Inline: the broker's tree walks call these once per level of every routed message. */

/* The kind of the level [start, start+len). */
static inline enum hd_mqtt_level_kind hd_mqtt_level_kind_of(const char *start, size_t len)
{
    if (len == 1 && start[0] == '+')
        return HD_MQTT_LEVEL_PLUS;
    if (len == 1 && start[0] == '#')
        return HD_MQTT_LEVEL_HASH;
    return HD_MQTT_LEVEL_PLAIN;
}

/* The first level of a NUL-terminated topic or filter. */
static inline struct hd_mqtt_level hd_mqtt_level_first(const char *s)
{
    const char *end = strchrnul(s, '/');
    struct hd_mqtt_level l = {.start = s, .len = (size_t)(end - s), .last = *end == '\0'};
    l.kind = hd_mqtt_level_kind_of(s, l.len);
    return l;
}

/* The level after l; only when !l->last. */
static inline struct hd_mqtt_level hd_mqtt_level_next(const struct hd_mqtt_level *l)
{
    return hd_mqtt_level_first(l->start + l->len + 1);
}

/* A subscription's filter split into its share group (NULL/0 when not shared) and the filter proper. */
struct hd_mqtt_subscription {
    const char *group;
    size_t group_len;
    const char *filter;
    size_t filter_len;
};
/* Split and validate "FILTER" or "$share/GROUP/FILTER"; false when either part is invalid. */
bool hd_mqtt_subscription_parse(const char *full, size_t len, struct hd_mqtt_subscription *out);

#endif
