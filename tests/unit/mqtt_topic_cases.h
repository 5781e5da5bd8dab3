/*
 * mqtt_topic_cases.h - the topic-matching table: test_mqtt_topic.c runs it
 * through hd_mqtt_filter_matches, test_broker_codec.c through the broker's
 * subscription tree, so the two can never disagree. The MQTT 5.0 §4.7
 * examples come first, then the corner cases.
 */
#ifndef HEDGE_TEST_MQTT_TOPIC_CASES_H
#define HEDGE_TEST_MQTT_TOPIC_CASES_H

#include <stdbool.h>

struct topic_match_case {
    const char *filter, *topic;
    bool matches;
};

static const struct topic_match_case topic_match_cases[] = {
    /* §4.7.1.2 multi-level wildcard */
    {"sport/tennis/player1/#", "sport/tennis/player1", true},
    {"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
    {"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
    {"sport/#", "sport", true},
    {"#", "sport/tennis", true},
    /* §4.7.1.3 single-level wildcard */
    {"sport/tennis/+", "sport/tennis/player1", true},
    {"sport/tennis/+", "sport/tennis/player2", true},
    {"sport/tennis/+", "sport/tennis/player1/ranking", false},
    {"sport/+", "sport", false},
    {"sport/+", "sport/", true},
    {"+/+", "/finance", true},
    {"/+", "/finance", true},
    {"+", "/finance", false},
    /* §4.7.2 topics beginning with $ */
    {"#", "$SYS/monitor/Clients", false},
    {"+/monitor/Clients", "$SYS/monitor/Clients", false},
    {"$SYS/#", "$SYS/monitor/Clients", true},
    {"$SYS/monitor/+", "$SYS/monitor/Clients", true},
    /* §4.7.3 case-sensitive, spaces allowed, empty levels are levels */
    {"ACCOUNTS", "Accounts", false},
    {"Accounts payable", "Accounts payable", true},
    {"a//b", "a//b", true},
    {"a/+/b", "a//b", true},
    {"a/b", "a/b/", false},
    /* corner cases */
    {"a/+/c", "a/b/c", true},
    {"a/+/c", "a/b/d", false},
    {"a/#", "a", true},
    {"a/#", "a/b/c", true},
    {"a/+/#", "a/b", true},
    {"a/+", "a/b/c", false},
    {"a/b", "a", false},
    {"a/b", "a/b/c", false},
    {"a/b/c/#", "a/b/c", true},
    {"+/b", "a/b", true},
    {"+/+/+", "a/b/c", true},
    {"+/+/+", "a/b", false},
    {"+", "$SYS", false},
    {"$SYS", "$SYS", true},
    {"a/$x", "a/$x", true},
    {"a/+", "a/$x", true}, /* the $ rule is for the first level only */
    {"a/#", "a/$x/y", true},
    {"abc", "ab", false},
    {"ab", "abc", false},
};

#define N_TOPIC_MATCH_CASES (sizeof(topic_match_cases) / sizeof(topic_match_cases[0]))

#endif
