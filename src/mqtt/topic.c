/*
 * topic.c - MQTT topic names, filters, matching and shared subscriptions (see
 * topic.h for the rules).
 *
 * The matcher walks filter and topic level by level with no allocation; it is
 * what the ACL check, the uplink's maps and the clients use. The broker's
 * subscription tree does not call it per subscription: it walks its tree with
 * the same level splitting (hd_mqtt_level_*) and the same '$' rule
 * (hd_mqtt_wildcard_may_match), so the cost of routing a message does not grow
 * with the number of subscriptions. tests/unit/test_mqtt_topic.c holds the
 * table (the spec's own examples included) both must agree with.
 */
#include "mqtt/topic.h"

#include <string.h>

static bool has_nul(const char *s, size_t len)
{
    return memchr(s, '\0', len) != NULL;
}

bool hd_mqtt_topic_valid_name(const char *topic, size_t len)
{
    if (topic == NULL || len == 0 || len > HD_MQTT_TOPIC_MAX)
        return false;
    return memchr(topic, '+', len) == NULL && memchr(topic, '#', len) == NULL && !has_nul(topic, len);
}

bool hd_mqtt_filter_valid_len(const char *filter, size_t len)
{
    if (filter == NULL || len == 0 || len > HD_MQTT_TOPIC_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        bool level_start = i == 0 || filter[i - 1] == '/';
        bool level_end = i + 1 == len || filter[i + 1] == '/';
        if (filter[i] == '\0')
            return false;
        if (filter[i] == '+' && !(level_start && level_end))
            return false;
        if (filter[i] == '#' && !(level_start && i + 1 == len))
            return false;
    }
    return true;
}

bool hd_mqtt_filter_valid(const char *filter)
{
    return filter != NULL && hd_mqtt_filter_valid_len(filter, strlen(filter));
}

bool hd_mqtt_level_valid_name(const char *level)
{
    return level != NULL && level[0] != '\0' && strpbrk(level, "/+#") == NULL;
}

bool hd_mqtt_filter_matches(const char *filter, const char *topic)
{
    struct hd_mqtt_level f = hd_mqtt_level_first(filter), t = hd_mqtt_level_first(topic);
    if (f.kind != HD_MQTT_LEVEL_PLAIN && !hd_mqtt_wildcard_may_match(topic))
        return false;
    for (;;) {
        if (f.kind == HD_MQTT_LEVEL_HASH)
            return true;
        if (f.kind != HD_MQTT_LEVEL_PLUS && (f.len != t.len || memcmp(f.start, t.start, f.len) != 0))
            return false;
        if (f.last && t.last)
            return true;
        if (t.last) { /* the topic ended: "a/#" matches "a" */
            struct hd_mqtt_level rest = hd_mqtt_level_next(&f);
            return rest.kind == HD_MQTT_LEVEL_HASH && rest.last;
        }
        if (f.last)
            return false;
        f = hd_mqtt_level_next(&f);
        t = hd_mqtt_level_next(&t);
    }
}

bool hd_mqtt_subscription_parse(const char *full, size_t len, struct hd_mqtt_subscription *out)
{
    static const char share[] = "$share/";
    const size_t share_len = sizeof(share) - 1;
    *out = (struct hd_mqtt_subscription){.filter = full, .filter_len = len};
    if (full == NULL)
        return false;
    if (len >= share_len && memcmp(full, share, share_len) == 0) {
        const char *group = full + share_len;
        const char *slash = memchr(group, '/', len - share_len);
        if (slash == NULL || slash == group)
            return false;
        size_t group_len = (size_t)(slash - group);
        if (memchr(group, '+', group_len) || memchr(group, '#', group_len))
            return false;
        out->group = group;
        out->group_len = group_len;
        out->filter = slash + 1;
        out->filter_len = len - share_len - group_len - 1;
    }
    return hd_mqtt_filter_valid_len(out->filter, out->filter_len);
}
