/* test_broker_codec.c - the broker's pure parts: packet decoding (including the
 * corrupt inputs it must refuse), UTF-8 rules and topic matching. */
#include <string.h>

#include "check.h"
#include "mqtt/packet.h"

/* the topic trees live in topic_tree.c, declared in internal.h; names and filters are mqtt/topic.h */
#include "broker/internal.h"
#include "mqtt_topic_cases.h"

static int decode(const char *bytes, size_t len, uint8_t proto)
{
    uint8_t tf;
    uint32_t remaining, hlen;
    const uint8_t *b = (const uint8_t *)bytes;
    int r = mqtt_parse_fixed_header(b, len, &tf, &remaining, &hlen);
    if (r <= 0)
        return -1;
    if (hlen + remaining != len)
        return -2;
    return mqtt_decode_any(tf, b + hlen, remaining, proto);
}

#define DEC(lit, proto) decode(lit, sizeof(lit) - 1, proto)

static int matched[8];
static void count_match(void *ctx, struct broker_session *s, uint8_t options, uint32_t sub_id)
{
    (void)options;
    (void)sub_id;
    matched[s - (struct broker_session *)ctx]++; /* ctx is the array of fake sessions */
}

/* Subscribe fake sessions to filters, match topics, unsubscribe: the tree must end empty. */
static void check_tree(void)
{
    static struct broker_session fake[8];
    struct topic_node root = {0};
    const char *filters[] = {"a/b/c", "a/+/c", "a/#", "#", "+/+/+", "$SYS/#", "+/b", "a/b/c/#"};
    bool existed;
    for (int i = 0; i < 8; i++)
        broker_tree_subscribe(&root, filters[i], NULL, &fake[i], 0, 0, &existed);
    broker_tree_subscribe(&root, "a/+/c", NULL, &fake[1], 1, 0, &existed);
    CHECK(existed);
    memset(matched, 0, sizeof(matched));
    broker_tree_match(&root, "a/b/c", count_match, fake);
    /* a/b/c, a/+/c, a/#, #, +/+/+, a/b/c/# ("a/b/c/#" matches its parent level) */
    CHECK(matched[0] == 1 && matched[1] == 1 && matched[2] == 1 && matched[3] == 1 && matched[4] == 1 &&
          matched[5] == 0 && matched[6] == 0 && matched[7] == 1);
    memset(matched, 0, sizeof(matched));
    broker_tree_match(&root, "$SYS/x", count_match, fake);
    CHECK(matched[3] == 0 && matched[5] == 1 && matched[6] == 0); /* "#" and "+/b" skip $ topics */
    memset(matched, 0, sizeof(matched));
    broker_tree_match(&root, "a", count_match, fake);
    CHECK(matched[2] == 1 && matched[3] == 1 && matched[0] == 0);
    for (int i = 0; i < 8; i++)
        CHECK(broker_tree_unsubscribe(&root, filters[i], NULL, &fake[i]));
    CHECK(!broker_tree_unsubscribe(&root, "a/b/c", NULL, &fake[0]));
    CHECK(root.n_children == 0 && !root.plus && !root.hash);
    broker_tree_free(&root);
}

/* The subscription tree must agree with hd_mqtt_filter_matches on the whole shared table. */
static void check_tree_table(void)
{
    static struct broker_session fake[N_TOPIC_MATCH_CASES];
    struct topic_node root = {0};
    bool existed;
    for (size_t i = 0; i < N_TOPIC_MATCH_CASES; i++) {
        memset(matched, 0, sizeof(matched));
        broker_tree_subscribe(&root, topic_match_cases[i].filter, NULL, &fake[0], 0, 0, &existed);
        broker_tree_match(&root, topic_match_cases[i].topic, count_match, fake);
        if ((matched[0] == 1) != topic_match_cases[i].matches || matched[0] > 1) {
            fprintf(stderr, "tree: filter \"%s\" topic \"%s\": %d match(es)\n", topic_match_cases[i].filter,
                    topic_match_cases[i].topic, matched[0]);
            check_failures++;
        }
        CHECK(broker_tree_unsubscribe(&root, topic_match_cases[i].filter, NULL, &fake[0]));
        CHECK(root.n_children == 0 && !root.plus && !root.hash);
    }
    broker_tree_free(&root);
}

int main(void)
{
    /* fixed header */
    uint8_t tf;
    uint32_t rem, hl;
    CHECK(mqtt_parse_fixed_header((const uint8_t *)"\x30", 1, &tf, &rem, &hl) == 0);
    CHECK(mqtt_parse_fixed_header((const uint8_t *)"\x30\xff\xff\xff\x7f", 5, &tf, &rem, &hl) == 1 && rem == 268435455);
    CHECK(mqtt_parse_fixed_header((const uint8_t *)"\x30\xff\xff\xff\xff\x01", 6, &tf, &rem, &hl) == -1);
    /* a Variable Byte Integer in its minimum number of bytes only (MQTT-1.5.5-1) */
    CHECK(mqtt_parse_fixed_header((const uint8_t *)"\x30\x80\x01", 3, &tf, &rem, &hl) == 1 && rem == 128);
    CHECK(mqtt_parse_fixed_header((const uint8_t *)"\xc0\x80\x00", 3, &tf, &rem, &hl) == -1);
    CHECK(mqtt_parse_fixed_header((const uint8_t *)"\x30\x85\x80\x00", 4, &tf, &rem, &hl) == -1);
    CHECK(DEC("\x82\x09\x00\x01\x02\x0b\x01\x00\x01"
              "a\x00",
              5) == 0); /* Subscription Identifier 1 */
    CHECK(DEC("\x82\x0a\x00\x01\x03\x0b\x81\x00\x00\x01"
              "a\x00",
              5) == RC_MALFORMED); /* the same in two bytes */

    /* CONNECT */
    CHECK(DEC("\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01x", 4) == 0);
    CHECK(DEC("\x10\x0d\x00\x04MQTT\x04\x03\x00\x3c\x00\x01x", 4) == RC_MALFORMED); /* reserved flag */
    CHECK(DEC("\x10\x0d\x00\x04MQTT\x07\x02\x00\x3c\x00\x01x", 4) == RC_UNSUPPORTED_PROTOCOL);
    CHECK(DEC("\x10\x0d\x00\x04MQTT\x04\x12\x00\x3c\x00\x01x", 4) == RC_MALFORMED); /* will qos, no will */
    CHECK(DEC("\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x01", 4) == RC_MALFORMED);  /* short client id */
    CHECK(DEC("\x10\x0e\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x01x", 5) == 0);
    /* 5.0 duplicate property and a property not allowed in CONNECT */
    CHECK(DEC("\x10\x17\x00\x04MQTT\x05\x02\x00\x3c\x0a\x11\x00\x00\x00\x01\x11\x00\x00\x00\x01\x00\x00", 5) ==
          RC_PROTOCOL_ERROR);
    CHECK(DEC("\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x03\x23\x00\x01\x00\x00", 5) == RC_MALFORMED); /* §2.2.2.2 */

    /* PUBLISH */
    CHECK(DEC("\x30\x05\x00\x01"
              "ahi",
              4) == 0);
    CHECK(DEC("\x36\x05\x00\x01"
              "ahi",
              4) == RC_MALFORMED); /* qos 3 */
    CHECK(DEC("\x38\x05\x00\x01"
              "ahi",
              4) == RC_MALFORMED); /* dup on qos 0 */
    CHECK(DEC("\x32\x05\x00\x01"
              "a\x00\x00",
              4) == RC_PROTOCOL_ERROR);                         /* packet id 0 */
    CHECK(DEC("\x30\x05\x00\x02\xc3\x28x", 4) == RC_MALFORMED); /* bad utf-8 */
    CHECK(DEC("\x30\x06\x00\x01"
              "a\x05\x01\x01",
              5) == RC_MALFORMED); /* props overrun */
    CHECK(DEC("\x30\x07\x00\x01"
              "a\x02\x01\x01\xff",
              5) == RC_PAYLOAD_FORMAT_INVALID); /* utf-8 payload flag */

    /* SUBSCRIBE */
    CHECK(DEC("\x82\x06\x00\x01\x00\x01"
              "a\x01",
              4) == 0);
    CHECK(DEC("\x80\x06\x00\x01\x00\x01"
              "a\x01",
              4) == RC_MALFORMED); /* flags must be 0010 */
    CHECK(DEC("\x82\x06\x00\x01\x00\x01"
              "a\x03",
              4) == RC_MALFORMED);                          /* qos 3 */
    CHECK(DEC("\x82\x02\x00\x01", 4) == RC_PROTOCOL_ERROR); /* no filters */
    CHECK(DEC("\x82\x07\x00\x01\x00\x00\x01"
              "a\x2c",
              5) == 0); /* 5.0 options NL|RAP|RH=2 */
    CHECK(DEC("\x82\x07\x00\x01\x00\x00\x01"
              "a\x30",
              5) == RC_PROTOCOL_ERROR); /* retain handling 3: Protocol Error (5.0 §3.8.3.1) */
    CHECK(DEC("\x82\x07\x00\x01\x00\x00\x01"
              "a\x03",
              5) == RC_PROTOCOL_ERROR); /* 5.0 maximum QoS 3: Protocol Error */
    CHECK(DEC("\x82\x07\x00\x01\x00\x00\x01"
              "a\x40",
              5) == RC_MALFORMED); /* reserved bit 6: malformed (MQTT-3.8.3-5) */

    /* acks, ping, disconnect */
    CHECK(DEC("\x40\x02\x00\x01", 4) == 0);
    CHECK(DEC("\x62\x02\x00\x01", 4) == 0);
    CHECK(DEC("\x60\x02\x00\x01", 4) == RC_MALFORMED);
    CHECK(DEC("\x40\x02\x00\x00", 4) == RC_MALFORMED);
    CHECK(DEC("\xc0\x00", 4) == 0);
    CHECK(DEC("\xc0\x01\x00", 4) == RC_MALFORMED);
    CHECK(DEC("\xe0\x00", 4) == 0);
    CHECK(DEC("\xe0\x01\x04", 5) == 0);
    CHECK(DEC("\xe0\x01\x04", 4) == RC_MALFORMED);
    CHECK(DEC("\xf0\x00", 4) == RC_MALFORMED); /* AUTH is 5.0 only */
    CHECK(DEC("\x00\x00", 4) == RC_PROTOCOL_ERROR);

    /* UTF-8 */
    CHECK(mqtt_utf8_valid((const uint8_t *)"h\xc3\xa9llo", 6));
    CHECK(!mqtt_utf8_valid((const uint8_t *)"\xed\xa0\x80", 3)); /* surrogate */
    CHECK(!mqtt_utf8_valid((const uint8_t *)"\xc0\x80", 2));     /* overlong NUL */
    CHECK(!mqtt_utf8_valid((const uint8_t *)"\xf4\x90\x80\x80", 4));

    /* topics */
    CHECK(hd_mqtt_topic_valid_name("a/b", 3));
    CHECK(!hd_mqtt_topic_valid_name("a/+", 3));
    CHECK(!hd_mqtt_topic_valid_name("", 0));
    CHECK(hd_mqtt_filter_valid_len("a/+/#", 5));
    CHECK(hd_mqtt_filter_valid_len("+", 1));
    CHECK(!hd_mqtt_filter_valid_len("a/#/b", 5));
    CHECK(!hd_mqtt_filter_valid_len("a+", 2));
    CHECK(!hd_mqtt_filter_valid_len("a/b#", 4));
    CHECK(hd_mqtt_filter_matches("a/+/c", "a/b/c"));
    CHECK(hd_mqtt_filter_matches("a/#", "a"));
    CHECK(hd_mqtt_filter_matches("a/#", "a/b/c"));
    CHECK(hd_mqtt_filter_matches("+/+", "/x"));
    CHECK(!hd_mqtt_filter_matches("a/+", "a/b/c"));
    CHECK(!hd_mqtt_filter_matches("#", "$SYS/x"));
    CHECK(!hd_mqtt_filter_matches("+/x", "$SYS/x"));
    CHECK(hd_mqtt_filter_matches("$SYS/#", "$SYS/x"));
    CHECK(!hd_mqtt_filter_matches("a/b", "a"));
    check_tree();
    check_tree_table();
    CHECK_DONE();
}
