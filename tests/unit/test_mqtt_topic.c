/* test_mqtt_topic.c - src/mqtt/topic.c: topic names, filters, matching, levels and $share parsing. */
#include <string.h>

#include "check.h"
#include "mqtt/topic.h"
#include "mqtt_topic_cases.h"

struct valid_case {
    const char *text;
    bool valid;
};

/* Topic filters: the spec's examples (§4.7.1), then corner cases. */
static const struct valid_case filter_cases[] = {
    {"sport/tennis/player1/#", true},
    {"sport/#", true},
    {"#", true},
    {"sport/tennis#", false},
    {"sport/tennis/#/ranking", false},
    {"+", true},
    {"+/tennis/#", true},
    {"sport+", false},
    {"sport/+/player1", true},
    {"/+", true},
    {"+/+", true},
    {"$SYS/#", true},
    {"a/+/b/#", true},
    {"/a//b", true},
    {"/", true},
    {"//", true},
    {"", false},
    {"a/#/b", false},
    {"a#", false},
    {"a/b+", false},
    {"+a/b", false},
    {"a/b#", false},
    {"##", false},
    {"++", false},
    {"#/", false},
    {"a/+#", false},
    {"+/#", true},
    {"$share/g/a", true}, /* as a plain filter it is just levels */
};

/* Topic names (§4.7.3). */
static const struct valid_case name_cases[] = {
    {"sport/tennis/player1", true},
    {"/", true},
    {"//", true},
    {"Accounts payable", true},
    {"$SYS/broker/uptime", true},
    {"a/b/", true},
    {"", false},
    {"sport/+", false},
    {"sport/#", false},
    {"+", false},
    {"#", false},
    {"a+b", false},
};

/* Single levels spliced into topics (node ids, share groups, ACL %u/%c). */
static const struct valid_case level_cases[] = {
    {"node-1", true}, {"$x", true}, {"a b", true}, {"", false},
    {"a/b", false},   {"+", false}, {"a#", false}, {"/", false},
};

struct share_case {
    const char *full;
    bool valid;
    const char *group, *filter; /* group NULL: not shared */
};

static const struct share_case share_cases[] = {
    {"a/b", true, NULL, "a/b"},
    {"$share/g/a/+", true, "g", "a/+"},
    {"$share/group1/#", true, "group1", "#"},
    {"$share/g/$SYS/#", true, "g", "$SYS/#"},
    {"$sharex/a", true, NULL, "$sharex/a"},
    {"$SHARE/g/a", true, NULL, "$SHARE/g/a"}, /* the prefix is case-sensitive */
    {"$share/g", false, NULL, NULL},
    {"$share/g/", false, NULL, NULL},
    {"$share//a", false, NULL, NULL},
    {"$share/g+/a", false, NULL, NULL},
    {"$share/#/a", false, NULL, NULL},
    {"$share/g/a#", false, NULL, NULL},
    {"$share/", false, NULL, NULL},
    {"a/#/b", false, NULL, NULL},
};

static void test_filters(void)
{
    for (size_t i = 0; i < sizeof(filter_cases) / sizeof(filter_cases[0]); i++) {
        const struct valid_case *c = &filter_cases[i];
        if (hd_mqtt_filter_valid(c->text) != c->valid ||
            hd_mqtt_filter_valid_len(c->text, strlen(c->text)) != c->valid) {
            fprintf(stderr, "filter \"%s\": expected %s\n", c->text, c->valid ? "valid" : "invalid");
            check_failures++;
        }
    }
    CHECK(!hd_mqtt_filter_valid(NULL));
    CHECK(!hd_mqtt_filter_valid_len("a\0b", 3));  /* U+0000 is never part of a topic */
    CHECK(hd_mqtt_filter_valid_len("a/#xyz", 3)); /* only len bytes count */
    static char longest[HD_MQTT_TOPIC_MAX + 2];
    memset(longest, 'a', HD_MQTT_TOPIC_MAX);
    CHECK(hd_mqtt_filter_valid(longest));
    CHECK(hd_mqtt_topic_valid_name(longest, HD_MQTT_TOPIC_MAX));
    longest[HD_MQTT_TOPIC_MAX] = 'a';
    CHECK(!hd_mqtt_filter_valid(longest));
    CHECK(!hd_mqtt_topic_valid_name(longest, HD_MQTT_TOPIC_MAX + 1));
}

static void test_names(void)
{
    for (size_t i = 0; i < sizeof(name_cases) / sizeof(name_cases[0]); i++) {
        const struct valid_case *c = &name_cases[i];
        if (hd_mqtt_topic_valid_name(c->text, strlen(c->text)) != c->valid) {
            fprintf(stderr, "topic name \"%s\": expected %s\n", c->text, c->valid ? "valid" : "invalid");
            check_failures++;
        }
    }
    CHECK(!hd_mqtt_topic_valid_name("a\0b", 3));
    CHECK(!hd_mqtt_topic_valid_name(NULL, 0));
    for (size_t i = 0; i < sizeof(level_cases) / sizeof(level_cases[0]); i++) {
        const struct valid_case *c = &level_cases[i];
        if (hd_mqtt_level_valid_name(c->text) != c->valid) {
            fprintf(stderr, "level \"%s\": expected %s\n", c->text, c->valid ? "valid" : "invalid");
            check_failures++;
        }
    }
    CHECK(!hd_mqtt_level_valid_name(NULL));
}

static void test_matches(void)
{
    for (size_t i = 0; i < N_TOPIC_MATCH_CASES; i++) {
        const struct topic_match_case *c = &topic_match_cases[i];
        CHECK(hd_mqtt_filter_valid(c->filter));
        CHECK(hd_mqtt_topic_valid_name(c->topic, strlen(c->topic)));
        if (hd_mqtt_filter_matches(c->filter, c->topic) != c->matches) {
            fprintf(stderr, "filter \"%s\" topic \"%s\": expected %s\n", c->filter, c->topic,
                    c->matches ? "a match" : "no match");
            check_failures++;
        }
        /* a topic name used as a filter matches itself */
        CHECK(hd_mqtt_filter_matches(c->topic, c->topic));
    }
}

static void test_levels(void)
{
    const char *expect[] = {"", "a", "+", "", "#"};
    enum hd_mqtt_level_kind kinds[] = {HD_MQTT_LEVEL_PLAIN, HD_MQTT_LEVEL_PLAIN, HD_MQTT_LEVEL_PLUS,
                                       HD_MQTT_LEVEL_PLAIN, HD_MQTT_LEVEL_HASH};
    size_t n = 0;
    for (struct hd_mqtt_level l = hd_mqtt_level_first("/a/+//#");; l = hd_mqtt_level_next(&l)) {
        CHECK(n < 5);
        if (n >= 5)
            break;
        CHECK(l.len == strlen(expect[n]) && memcmp(l.start, expect[n], l.len) == 0);
        CHECK(l.kind == kinds[n]);
        CHECK(l.last == (n == 4));
        n++;
        if (l.last)
            break;
    }
    CHECK(n == 5);
    struct hd_mqtt_level one = hd_mqtt_level_first("");
    CHECK(one.len == 0 && one.last && one.kind == HD_MQTT_LEVEL_PLAIN);
    CHECK(hd_mqtt_level_kind_of("++", 2) == HD_MQTT_LEVEL_PLAIN);
    CHECK(hd_mqtt_level_kind_of("#", 1) == HD_MQTT_LEVEL_HASH);
    CHECK(hd_mqtt_wildcard_may_match("a/$SYS") && !hd_mqtt_wildcard_may_match("$SYS"));
}

static void test_subscriptions(void)
{
    for (size_t i = 0; i < sizeof(share_cases) / sizeof(share_cases[0]); i++) {
        const struct share_case *c = &share_cases[i];
        struct hd_mqtt_subscription s;
        bool ok = hd_mqtt_subscription_parse(c->full, strlen(c->full), &s);
        if (ok != c->valid) {
            fprintf(stderr, "subscription \"%s\": expected %s\n", c->full, c->valid ? "valid" : "invalid");
            check_failures++;
            continue;
        }
        if (!ok)
            continue;
        if (c->group)
            CHECK(s.group && s.group_len == strlen(c->group) && memcmp(s.group, c->group, s.group_len) == 0);
        else
            CHECK(s.group == NULL && s.group_len == 0);
        CHECK(s.filter_len == strlen(c->filter) && memcmp(s.filter, c->filter, s.filter_len) == 0);
    }
}

int main(void)
{
    test_filters();
    test_names();
    test_matches();
    test_levels();
    test_subscriptions();
    CHECK_DONE();
}
