/* test_uplink.c - the uplink's pure logic: topic matching, topic remapping, and the spool's limits and order. */
#include <jansson.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "mqtt/client.h"
#include "mqtt/topic.h"
#include "uplink/spool.h"
#include "uplink/uplink.h"
#include "base/util.h"

static void check_map(const char *from, const char *to, const char *topic, const char *want)
{
    char *got = hd_uplink_map_topic(from, to, topic);
    if (want)
        CHECK_STR(got, want);
    else
        CHECK(got == NULL);
    free(got);
}

static bool collect(void *ctx, const struct hd_spool_row *row)
{
    char ***v = ctx;
    hd_strv_push(v, (const char *)row->payload);
    return true;
}

static void test_spool(void)
{
    char dir[] = "/tmp/hedge-test-spool-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char *path = hd_xasprintf("%s/s.db", dir);
    struct hd_spool_options o = {.max_bytes = 30, .policy = HD_SPOOL_DROP_OLDEST};
    hd_error_t err = NULL;
    struct hd_spool *s = hd_spool_open(path, &o, &err);
    CHECK(s != NULL);
    /* "t" + 9-byte payloads incl. NUL = 10 bytes a row: 3 rows fit. */
    const char *p[] = {"msg-0001", "msg-0002", "msg-0003", "msg-0004"};
    for (int i = 0; i < 4; i++)
        CHECK(hd_spool_append(s, "t", p[i], 9, 1, false, &err) == 0);
    CHECK(hd_spool_commit(s, &err) == 0);
    char **rows = NULL;
    CHECK(hd_spool_fetch(s, 0, 10, collect, &rows, &err) == 0);
    CHECK(hd_strv_len(rows) == 3);
    CHECK_STR(rows[0], "msg-0002");
    CHECK_STR(rows[2], "msg-0004");
    hd_strv_free(rows);
    struct hd_spool_stats st;
    CHECK(hd_spool_stats(s, &st, &err) == 0);
    CHECK(st.depth == 3 && st.bytes == 30 && st.counters.dropped_oldest == 1 && st.counters.received == 4);
    hd_spool_close(s);
    /* Reopen with reject-new: the totals come back from the file, the new message is refused. */
    o.policy = HD_SPOOL_REJECT_NEW;
    s = hd_spool_open(path, &o, &err);
    CHECK(s != NULL);
    CHECK(hd_spool_append(s, "t", "msg-0005", 9, 1, false, &err) == 1);
    CHECK(hd_spool_ack(s, 2, &err) == 0);
    CHECK(hd_spool_commit(s, &err) == 0);
    CHECK(hd_spool_stats(s, &st, &err) == 0);
    CHECK(st.depth == 2 && st.counters.rejected_new == 1 && st.counters.drained == 1);
    hd_spool_close(s);
    hd_rm_rf(dir, NULL);
    free(path);
}

static int spool_put(struct hd_spool *s, const char *payload, uint8_t priority, int64_t ttl_ms)
{
    hd_error_t err = NULL;
    struct hd_spool_message m = {
        .topic = "t", .payload = payload, .len = strlen(payload) + 1, .qos = 1, .priority = priority, .ttl_ms = ttl_ms};
    int rc = hd_spool_append_message(s, &m, &err);
    hd_error_free(&err);
    return rc;
}

/* Priority classes: the drain order, eviction from the least important class only, own TTLs, and a
 * file from before the classes existed. */
static void test_spool_classes(void)
{
    char dir[] = "/tmp/hedge-test-spool-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char *path = hd_xasprintf("%s/s.db", dir);
    hd_error_t err = NULL;

    /* An old-format file (no priority/expires columns) with one row: opened, migrated, kept. */
    sqlite3 *old = NULL;
    CHECK(sqlite3_open(path, &old) == SQLITE_OK);
    CHECK(
        sqlite3_exec(old,
                     "CREATE TABLE spool(id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, topic TEXT NOT "
                     "NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, size INTEGER NOT "
                     "NULL); INSERT INTO spool(ts, topic, payload, qos, retain, size) VALUES(1, 't', 'old', 1, 0, 4);",
                     NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(old);

    /* 5-byte payloads + "t" = 6 bytes a row (4 with "old"); cap 40. */
    struct hd_spool_options o = {.max_bytes = 40, .policy = HD_SPOOL_DROP_OLDEST};
    struct hd_spool *s = hd_spool_open(path, &o, &err);
    CHECK(s != NULL);
    char **rows = NULL;
    CHECK(hd_spool_fetch(s, 0, 10, collect, &rows, &err) == 0);
    CHECK(hd_strv_len(rows) == 1 && strcmp(rows[0], "old") == 0);
    hd_strv_free(rows);
    rows = NULL;
    CHECK(hd_spool_ack(s, 1, &err) == 0);
    CHECK(spool_put(s, "log1", 9, 0) == 0);
    CHECK(spool_put(s, "tel1", 5, 0) == 0);
    CHECK(spool_put(s, "evt1", 1, 0) == 0);
    CHECK(spool_put(s, "log2", 9, 0) == 0);
    CHECK(spool_put(s, "tel2", 5, 0) == 0);
    CHECK(spool_put(s, "evt2", 1, 0) == 0);
    CHECK(hd_spool_commit(s, &err) == 0);
    /* The drain: most important class first, id order within a class; the cursor moves on. */
    struct hd_spool_cursor cur = {0};
    CHECK(hd_spool_fetch_next(s, &cur, 3, collect, &rows, &err) == 0);
    CHECK(hd_strv_len(rows) == 3);
    CHECK_STR(rows[0], "evt1");
    CHECK_STR(rows[1], "evt2");
    CHECK_STR(rows[2], "tel1");
    hd_strv_free(rows);
    rows = NULL;
    /* A new important row is sent before the rest of the less important ones. The 7th row (42 bytes > 40)
     * made room by dropping the oldest row of the least important class: log1. */
    CHECK(spool_put(s, "evt3", 1, 0) == 0);
    CHECK(hd_spool_fetch_next(s, &cur, 10, collect, &rows, &err) == 0);
    CHECK(hd_strv_len(rows) == 3);
    CHECK_STR(rows[0], "evt3");
    CHECK_STR(rows[1], "tel2");
    CHECK_STR(rows[2], "log2");
    hd_strv_free(rows);
    rows = NULL;
    /* Full: events push out logs first, then telemetry, never an event; a log is refused once only more
     * important rows are left. */
    struct hd_spool_stats st;
    CHECK(hd_spool_stats(s, &st, &err) == 0);
    CHECK(st.depth == 6 && st.counters.dropped_oldest == 1);
    CHECK(spool_put(s, "evt4", 1, 0) == 0); /* drops log2 */
    CHECK(spool_put(s, "evt5", 1, 0) == 0); /* drops tel1 */
    CHECK(spool_put(s, "log3", 9, 0) == 1); /* no log or lower left to drop: refused */
    CHECK(hd_spool_stats(s, &st, &err) == 0);
    CHECK(st.depth == 6 && st.counters.dropped_oldest == 3 && st.counters.rejected_new == 1);
    CHECK(hd_spool_fetch(s, 0, 10, collect, &rows, &err) == 0);
    CHECK(hd_strv_len(rows) == 6);
    for (size_t i = 0; rows && rows[i]; i++)
        CHECK(strncmp(rows[i], "log", 3) != 0 && strcmp(rows[i], "tel1") != 0);
    hd_strv_free(rows);
    rows = NULL;
    CHECK(hd_spool_commit(s, &err) == 0);
    hd_spool_close(s);

    /* Own TTLs (the spool has none): only the expired row goes, and the class counts survive a reopen. */
    o.max_bytes = 0;
    s = hd_spool_open(path, &o, &err);
    CHECK(s != NULL);
    CHECK(spool_put(s, "shrt", 5, 1000) == 0);
    CHECK(hd_spool_commit(s, &err) == 0);
    CHECK(hd_spool_expire(s, hd_wall_ms(), &err) == 0);
    CHECK(hd_spool_expire(s, hd_wall_ms() + 2000, &err) == 1);
    CHECK(hd_spool_commit(s, &err) == 0);
    struct hd_spool_cursor fresh = {0};
    CHECK(hd_spool_fetch_next(s, &fresh, 10, collect, &rows, &err) == 0);
    CHECK(hd_strv_len(rows) == 6);
    CHECK_STR(rows[0], "evt1");
    hd_strv_free(rows);
    CHECK(err == NULL);
    hd_spool_close(s);
    hd_rm_rf(dir, NULL);
    free(path);
}

struct client_seen {
    int connects, messages, subacks, disconnects;
    char topic[64], response[64], correlation[16], payload[16];
};

static void seen_connect(void *ctx, bool sp)
{
    ((struct client_seen *)ctx)->connects++;
}
static void seen_suback(void *ctx, uint16_t id, const uint8_t *c, size_t n)
{
    ((struct client_seen *)ctx)->subacks++;
}
static void seen_disconnect(void *ctx, const char *r)
{
    ((struct client_seen *)ctx)->disconnects++;
}
static void seen_message(void *ctx, const struct hd_mqtt_message *m)
{
    struct client_seen *s = ctx;
    s->messages++;
    snprintf(s->topic, sizeof(s->topic), "%s", m->topic);
    snprintf(s->response, sizeof(s->response), "%.*s", (int)m->response_topic_len, (const char *)m->response_topic);
    snprintf(s->correlation, sizeof(s->correlation), "%.*s", (int)m->correlation_len, (const char *)m->correlation);
    snprintf(s->payload, sizeof(s->payload), "%.*s", (int)m->payload_len, (const char *)m->payload);
}

/* The client's decoding of what a v5 broker sends, byte-exact. */
static void test_client_v5(void)
{
    struct client_seen s = {0};
    struct hd_mqtt_options o = {.host = (char *)"127.0.0.1", .port = 1, .protocol = 5};
    struct hd_mqtt_callbacks cb = {.on_connect = seen_connect,
                                   .on_message = seen_message,
                                   .on_suback = seen_suback,
                                   .on_disconnect = seen_disconnect};
    struct hd_mqtt_client *c = hd_mqtt_client_new(&o, &cb, &s);
    const uint8_t connack[] = {0x20, 0x03, 0x00, 0x00, 0x00};
    const uint8_t suback[] = {0x90, 0x04, 0x00, 0x01, 0x00, 0x01};
    /* PUBLISH QoS 1 "t/a", id 5, props: response topic "r/1", correlation "c9"; payload "hi" */
    const uint8_t publish[] = {0x32, 0x15, 0x00, 0x03, 't',  '/',  'a',  0x00, 0x05, 0x0b, 0x08, 0x00,
                               0x03, 'r',  '/',  '1',  0x09, 0x00, 0x02, 'c',  '9',  'h',  'i'};
    CHECK(hd_mqtt_client_feed(c, connack, sizeof(connack)) == 0);
    CHECK(hd_mqtt_client_state(c) == HD_MQTT_CONNECTED && s.connects == 1);
    CHECK(hd_mqtt_client_feed(c, suback, sizeof(suback)) == 0 && s.subacks == 1);
    /* split across two reads */
    CHECK(hd_mqtt_client_feed(c, publish, 9) == 0 && s.messages == 0);
    CHECK(hd_mqtt_client_feed(c, publish + 9, sizeof(publish) - 9) == 0 && s.messages == 1);
    CHECK_STR(s.topic, "t/a");
    CHECK_STR(s.response, "r/1");
    CHECK_STR(s.correlation, "c9");
    CHECK_STR(s.payload, "hi");
    /* a SUBACK whose property length runs past the packet: dropped */
    const uint8_t bad_suback[] = {0x90, 0x04, 0x00, 0x02, 0x7f, 0x00};
    CHECK(hd_mqtt_client_feed(c, bad_suback, sizeof(bad_suback)) < 0);
    CHECK(hd_mqtt_client_state(c) == HD_MQTT_DISCONNECTED && s.disconnects == 1);
    hd_mqtt_client_free(c);
    /* a refused CONNACK (3.1.1 code 5) */
    o.protocol = 4;
    c = hd_mqtt_client_new(&o, &cb, &s);
    const uint8_t refused[] = {0x20, 0x02, 0x00, 0x05};
    CHECK(hd_mqtt_client_feed(c, refused, sizeof(refused)) < 0 && s.connects == 1);
    hd_mqtt_client_free(c);
}

/* hedged's "uplink" object: local and spool may be left out; errors carry the prefix. */
static void test_config_parse(void)
{
    json_t *o = json_loads("{\"node_id\": \"n1\", \"cloud\": {\"port\": 8884},"
                           " \"up\": [{\"local\": \"s/#\", \"cloud\": \"nodes/{node_id}/s/#\"}]}",
                           0, NULL);
    CHECK(o != NULL);
    struct hd_uplink_config cfg;
    hd_error_t err = NULL;
    CHECK(hd_uplink_config_parse(o, "uplink.", true, &cfg, &err) == 0);
    CHECK(cfg.local.host == NULL && cfg.local.port == 0 && cfg.spool_path == NULL);
    CHECK_STR(cfg.local.client_id, "hedge-uplink-n1");
    CHECK_STR(cfg.cloud.host, "127.0.0.1");
    CHECK(cfg.cloud.port == 8884 && cfg.spool.sync_full && cfg.window == 256 && cfg.n_up == 1);
    CHECK_STR(cfg.up[0].to, "nodes/n1/s/#");
    hd_uplink_config_free(&cfg);
    /* The standalone file needs both. */
    CHECK(hd_uplink_config_parse(o, "", false, &cfg, &err) < 0);
    CHECK_STR(hd_error_text(err), "local: is required");
    hd_error_free(&err);
    json_object_set_new(json_object_get(o, "cloud"), "port", json_integer(0));
    CHECK(hd_uplink_config_parse(o, "uplink.", true, &cfg, &err) < 0);
    CHECK(strstr(hd_error_text(err), "uplink.cloud.port: must be an integer in 1..65535") != NULL);
    hd_error_free(&err);
    json_decref(o);
}

int main(void)
{
    test_config_parse();
    test_client_v5();
    CHECK(hd_mqtt_filter_matches("a/#", "a"));
    CHECK(hd_mqtt_filter_matches("a/#", "a/b/c"));
    CHECK(hd_mqtt_filter_matches("a/+/c", "a/b/c"));
    CHECK(hd_mqtt_filter_matches("+/+", "/x"));
    CHECK(!hd_mqtt_filter_matches("a/+/c", "a/b/d"));
    CHECK(!hd_mqtt_filter_matches("#", "$SYS/x"));
    CHECK(!hd_mqtt_filter_matches("a/b", "a/b/c"));
    check_map("sensors/#", "nodes/n1/sensors/#", "sensors/room1/temp", "nodes/n1/sensors/room1/temp");
    check_map("sensors/#", "nodes/n1/sensors/#", "sensors", "nodes/n1/sensors");
    check_map("a/+/b/#", "x/+/y/z/#", "a/k/b/1/2", "x/k/y/z/1/2");
    check_map("nodes/n1/cmd/#", "cmd/#", "nodes/n1/cmd/reboot", "cmd/reboot");
    check_map("sensors/#", "nodes/n1/sensors/#", "other/x", NULL);
    check_map("exact/topic", "cloud/topic", "exact/topic", "cloud/topic");
    test_spool();
    test_spool_classes();
    CHECK_DONE();
}
