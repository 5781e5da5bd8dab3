/* test_uplink.c - the uplink's pure logic: topic matching, topic remapping, and the spool's limits and order. */
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "spool.h"
#include "uplink.h"
#include "util.h"

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

int main(void)
{
    CHECK(hd_mqtt_topic_matches("a/#", "a"));
    CHECK(hd_mqtt_topic_matches("a/#", "a/b/c"));
    CHECK(hd_mqtt_topic_matches("a/+/c", "a/b/c"));
    CHECK(hd_mqtt_topic_matches("+/+", "/x"));
    CHECK(!hd_mqtt_topic_matches("a/+/c", "a/b/d"));
    CHECK(!hd_mqtt_topic_matches("#", "$SYS/x"));
    CHECK(!hd_mqtt_topic_matches("a/b", "a/b/c"));
    check_map("sensors/#", "nodes/n1/sensors/#", "sensors/room1/temp", "nodes/n1/sensors/room1/temp");
    check_map("sensors/#", "nodes/n1/sensors/#", "sensors", "nodes/n1/sensors");
    check_map("a/+/b/#", "x/+/y/z/#", "a/k/b/1/2", "x/k/y/z/1/2");
    check_map("nodes/n1/cmd/#", "cmd/#", "nodes/n1/cmd/reboot", "cmd/reboot");
    check_map("sensors/#", "nodes/n1/sensors/#", "other/x", NULL);
    check_map("exact/topic", "cloud/topic", "exact/topic", "cloud/topic");
    test_spool();
    CHECK_DONE();
}
