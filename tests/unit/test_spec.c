/* test_spec.c - the JSON spec parser and validator: every error names its field. */
#include <jansson.h>

#include "check.h"
#include "spec/spec.h"
#include "mqtt/topic.h"
#include "base/util.h"

/* Parse + validate; return the error text or "" when the spec is valid. */
static char *try_spec(const char *json)
{
    static char buf[1024];
    struct hd_spec *spec = hd_spec_new();
    hd_error_t err = NULL;
    buf[0] = '\0';
    if (hd_spec_parse_json(spec, json, strlen(json), "t.json", &err) < 0 || hd_spec_validate(spec, &err) < 0)
        snprintf(buf, sizeof(buf), "%s", hd_error_text(err));
    hd_error_free(&err);
    hd_spec_free(spec);
    return buf;
}

static void test_full_spec(void)
{
    const char *json = "{\"name\":\"filter\",\"isolation\":\"container\",\"image\":\"busybox:latest\","
                       "\"command\":[\"/bin/filter\",\"--rate\",\"10\"],\"env\":{\"LEVEL\":\"info\"},"
                       "\"workdir\":\"/\",\"user\":\"1000:1000\",\"hostname\":\"filter\","
                       "\"resources\":{\"memory\":\"64M\",\"cpus\":0.5,\"pids\":64},"
                       "\"network\":{\"mode\":\"bridge\"},"
                       "\"mounts\":[{\"source\":\"/var/lib/filter\",\"target\":\"/data\",\"readonly\":false}],"
                       "\"readonly_rootfs\":true,"
                       "\"security\":{\"seccomp\":\"default\",\"cap_add\":[],\"cap_drop\":[]},"
                       "\"restart\":{\"policy\":\"on-failure\",\"max_retries\":5},"
                       "\"triggers\":[{\"topic\":\"sensors/+/temperature\"}]}";
    struct hd_spec *spec = hd_spec_new();
    hd_error_t err = NULL;
    CHECK(hd_spec_parse_json(spec, json, strlen(json), "t.json", &err) == 0);
    CHECK(hd_spec_validate(spec, &err) == 0);
    if (err)
        fprintf(stderr, "%s\n", hd_error_text(err));
    CHECK(spec->isolation == HD_ISOLATION_CONTAINER);
    CHECK(spec->resources.memory == 64 << 20);
    CHECK(spec->resources.cpus == 0.5);
    CHECK(spec->resources.pids == 64);
    CHECK(spec->network == HD_NET_BRIDGE);
    CHECK(spec->n_mounts == 1 && !spec->mounts[0].readonly);
    CHECK(spec->restart.policy == HD_RESTART_ON_FAILURE && spec->restart.max_retries == 5);
    CHECK_STR(spec->env[0], "LEVEL=info");
    CHECK(hd_strv_len(spec->command) == 3);
    /* round trip through the serializer */
    char *out = hd_spec_to_json(spec);
    struct hd_spec *again = hd_spec_new();
    CHECK(hd_spec_parse_json(again, out, strlen(out), "roundtrip", &err) == 0);
    char *out2 = hd_spec_to_json(again);
    CHECK_STR(out, out2);
    free(out);
    free(out2);
    hd_spec_free(again);
    hd_spec_free(spec);
    hd_error_free(&err);
}

static void test_errors(void)
{
    CHECK_STR(try_spec("{\"image\":\"b\",\"resources\":{\"memory\":\"64Q\"}}"),
              "t.json: resources.memory: \"64Q\" is not a size (use K, M or G)");
    CHECK_STR(try_spec("{\"image\":\"b\",\"colour\":1}"), "t.json: colour: unknown field");
    CHECK_STR(try_spec("{\"image\":\"b\",\"resources\":{\"memroy\":1}}"), "t.json: resources.memroy: unknown field");
    CHECK_STR(try_spec("{\"image\":\"b\""), "t.json: line 1 column 12: '}' expected near end of file");
    CHECK_STR(try_spec("{\"image\":\"b\",\"command\":\"ls\"}"),
              "t.json: command: must be an array of strings, not a string");
    CHECK_STR(try_spec("{\"image\":\"b\",\"command\":[\"ls\",3]}"),
              "t.json: command[1]: must be a string, not an integer");
    CHECK_STR(try_spec("{\"image\":\"b\",\"isolation\":\"docker\"}"),
              "t.json: isolation: \"docker\" is not an isolation level (process, container or vm)");
    CHECK_STR(try_spec("{\"image\":\"b\",\"rootfs\":\"/r\"}"), "image and rootfs: give one, not both");
    CHECK_STR(try_spec("{\"command\":[\"x\"]}"), "image or rootfs: one is required for container isolation");
    CHECK_STR(try_spec("{\"isolation\":\"process\",\"command\":[\"x\"],\"hostname\":\"h\"}"),
              "hostname: not supported with process isolation (a process shares the host's UTS namespace)");
    CHECK_STR(try_spec("{\"isolation\":\"vm\",\"image\":\"b\",\"network\":{\"mode\":\"host\"}}"),
              "network.mode: not supported with vm isolation (a VM has its own kernel and network stack; use none or "
              "bridge)");
    CHECK_STR(try_spec("{\"image\":\"b\",\"mounts\":[{\"source\":\"rel\",\"target\":\"/d\"}]}"),
              "mounts[0].source: \"rel\" must be an absolute path");
    CHECK_STR(try_spec("{\"image\":\"b\",\"mounts\":[{\"target\":\"/d\"}]}"), "t.json: mounts[0].source: is required");
    CHECK_STR(try_spec("{\"image\":\"b\",\"resources\":{\"cpus\":0}}"),
              "t.json: resources.cpus: 0 is out of range (greater than 0, at most 1024)");
    CHECK_STR(try_spec("{\"image\":\"b\",\"resources\":{\"pids\":0}}"),
              "t.json: resources.pids: 0 is out of range (1..4194304)");
    CHECK_STR(try_spec("{\"image\":\"b\",\"env\":{\"A\":1}}"), "t.json: env.A: must be a string, not an integer");
    CHECK_STR(
        try_spec("{\"image\":\"b\",\"name\":\"-bad\"}"),
        "name: \"-bad\" is not a valid name (1-63 letters, digits, '-', '_', '.', starting with a letter or digit)");
    CHECK_STR(try_spec("{\"image\":\"b\",\"image\":\"c\"}"),
              "t.json: line 1 column 20: duplicate object key near '\"image\"'");
    CHECK_STR(try_spec("[]"), "t.json: spec: must be an object, not an array");
    CHECK_STR(try_spec("{\"image\":\"b\",\"resources\":{\"memory\":1024}}"),
              "resources.memory: 1024 bytes is below the 1M minimum");
    CHECK_STR(try_spec("{\"image\":\"b\",\"resources\":{\"memory\":\"64M\"}}"), "");
}

static void test_function_block(void)
{
    const char *json = "{\"isolation\":\"process\",\"command\":[\"/bin/cat\"],"
                       "\"triggers\":[{\"topic\":\"fn/echo\"}],"
                       "\"function\":{\"mode\":\"on-demand\",\"timeout\":\"250ms\",\"max_concurrency\":4,"
                       "\"idle_timeout\":30,\"reply_topic\":\"fn/echo/out\",\"max_queue\":10}}";
    struct hd_spec *spec = hd_spec_new();
    hd_error_t err = NULL;
    CHECK(hd_spec_parse_json(spec, json, strlen(json), "t.json", &err) == 0);
    CHECK(hd_spec_validate(spec, &err) == 0);
    CHECK(spec->function.mode == HD_FUNCTION_ON_DEMAND);
    CHECK(spec->function.timeout_ms == 250 && spec->function.idle_timeout_ms == 30000);
    CHECK(spec->function.max_concurrency == 4 && spec->function.max_queue == 10);
    CHECK_STR(spec->function.reply_topic, "fn/echo/out");
    char *out = hd_spec_to_json(spec);
    struct hd_spec *again = hd_spec_new();
    CHECK(hd_spec_parse_json(again, out, strlen(out), "roundtrip", &err) == 0);
    char *out2 = hd_spec_to_json(again);
    CHECK_STR(out, out2);
    CHECK(again->function.timeout_ms == 250);
    free(out);
    free(out2);
    hd_spec_free(again);
    hd_spec_free(spec);
    hd_error_free(&err);

    const char *base = "{\"isolation\":\"process\",\"command\":[\"x\"],\"triggers\":[{\"topic\":\"t\"}],";
    char buf[512];
#define FN(rest) (snprintf(buf, sizeof(buf), "%s%s}", base, rest), try_spec(buf))
    CHECK_STR(FN("\"function\":{\"mode\":\"lazy\"}"),
              "t.json: function.mode: \"lazy\" is not a function mode (on-demand or pinned)");
    CHECK_STR(FN("\"function\":{\"timeout\":5}"), "t.json: function.mode: is required (on-demand or pinned)");
    CHECK_STR(FN("\"function\":{\"mode\":\"pinned\",\"timeout\":\"soon\"}"),
              "t.json: function.timeout: \"soon\" is not a duration (\"250ms\", \"10s\", \"5m\")");
    CHECK_STR(FN("\"function\":{\"mode\":\"pinned\",\"timeout\":0}"),
              "t.json: function.timeout: must be more than 0 and at most a year");
    CHECK_STR(FN("\"function\":{\"mode\":\"pinned\",\"max_concurrency\":2}"),
              "function.max_concurrency: a pinned function has one instance");
    CHECK_STR(FN("\"function\":{\"mode\":\"on-demand\",\"max_concurrency\":0}"),
              "t.json: function.max_concurrency: 0 is out of range (1..1024)");
    CHECK_STR(FN("\"function\":{\"mode\":\"pinned\",\"idle_timeout\":5}"),
              "function.idle_timeout: only applies to on-demand functions");
    CHECK_STR(FN("\"function\":{\"mode\":\"pinned\",\"reply_topic\":\"a/#\"}"),
              "function.reply_topic: \"a/#\" must be a topic name without wildcards");
    CHECK_STR(FN("\"function\":{\"mode\":\"pinned\",\"retries\":1}"), "t.json: function.retries: unknown field");
    CHECK_STR(try_spec("{\"isolation\":\"process\",\"command\":[\"x\"],\"function\":{\"mode\":\"pinned\"}}"),
              "triggers: a function needs at least one trigger topic");
#undef FN
}

/* The mqtt block: parsed, serialized, validated at every isolation level. */
static void test_mqtt_block(void)
{
    const char *json = "{\"isolation\":\"process\",\"command\":[\"x\"],"
                       "\"mqtt\":{\"publish\":[\"sensors/a/#\",\"+/status\"],\"subscribe\":[\"cmd/a\"]}}";
    struct hd_spec *spec = hd_spec_new();
    hd_error_t err = NULL;
    CHECK(hd_spec_parse_json(spec, json, strlen(json), "t.json", &err) == 0);
    CHECK(hd_spec_validate(spec, &err) == 0);
    CHECK(hd_strv_len(spec->mqtt.publish) == 2);
    CHECK_STR(spec->mqtt.publish[1], "+/status");
    CHECK_STR(spec->mqtt.subscribe[0], "cmd/a");
    char *out = hd_spec_to_json(spec);
    CHECK(strstr(out, "\"mqtt\":{\"publish\":[\"sensors/a/#\",\"+/status\"],\"subscribe\":[\"cmd/a\"]}") != NULL);
    struct hd_spec *again = hd_spec_new();
    CHECK(hd_spec_parse_json(again, out, strlen(out), "stored", &err) == 0);
    char *out2 = hd_spec_to_json(again);
    CHECK_STR(out, out2);
    free(out);
    free(out2);
    hd_spec_free(again);
    hd_spec_free(spec);
    hd_error_free(&err);

    CHECK(hd_mqtt_filter_valid("#"));
    CHECK(hd_mqtt_filter_valid("+"));
    CHECK(hd_mqtt_filter_valid("a/+/b/#"));
    CHECK(hd_mqtt_filter_valid("/a//b"));
    CHECK(!hd_mqtt_filter_valid(""));
    CHECK(!hd_mqtt_filter_valid("a/#/b"));
    CHECK(!hd_mqtt_filter_valid("a#"));
    CHECK(!hd_mqtt_filter_valid("a/b+"));
    CHECK(!hd_mqtt_filter_valid("+a/b"));

    const char *base = "{\"isolation\":\"process\",\"command\":[\"x\"],";
    char buf[512];
#define MQ(rest) (snprintf(buf, sizeof(buf), "%s%s}", base, rest), try_spec(buf))
    CHECK_STR(MQ("\"mqtt\":{\"publish\":[\"a\",\"b/#/c\"]}"),
              "mqtt.publish[1]: \"b/#/c\" is not a topic filter (non-empty; '+' and '#' must be a whole level, "
              "'#' only last)");
    CHECK_STR(MQ("\"mqtt\":{\"subscribe\":[\"\"]}"),
              "mqtt.subscribe[0]: \"\" is not a topic filter (non-empty; '+' and '#' must be a whole level, "
              "'#' only last)");
    CHECK_STR(MQ("\"mqtt\":{\"publish\":\"a\"}"), "t.json: mqtt.publish: must be an array of strings, not a string");
    CHECK_STR(MQ("\"mqtt\":{\"retain\":true}"), "t.json: mqtt.retain: unknown field");
    CHECK_STR(MQ("\"triggers\":[{\"topic\":\"a+\"}]"), "triggers[0].topic: \"a+\" is not a topic filter");
#undef MQ
    /* Accepted at every isolation level. */
    CHECK_STR(try_spec("{\"isolation\":\"container\",\"rootfs\":\"/r\",\"mqtt\":{\"publish\":[\"x\"]}}"), "");
    CHECK_STR(try_spec("{\"isolation\":\"vm\",\"rootfs\":\"/r\",\"mqtt\":{\"subscribe\":[\"x\"]}}"), "");
}

/* devices[] and device_rules[]: defaults, canonical access, errors naming the field, the round trip. */
static void test_devices_block(void)
{
    const char *json = "{\"rootfs\":\"/r\",\"devices\":[{\"path\":\"/dev/ttyUSB0\",\"permissions\":\"wr\"},"
                       "{\"path\":\"/dev/loop3\",\"target\":\"/dev/disk\"}],"
                       "\"device_rules\":[{\"type\":\"c\",\"major\":188,\"minor\":\"*\",\"access\":\"rwm\"},"
                       "{\"type\":\"b\",\"major\":7},{\"type\":\"a\",\"access\":\"m\"}]}";
    struct hd_spec *spec = hd_spec_new();
    hd_error_t err = NULL;
    CHECK(hd_spec_parse_json(spec, json, strlen(json), "t.json", &err) == 0);
    CHECK(hd_spec_validate(spec, &err) == 0);
    CHECK(spec->n_devices == 2 && spec->n_device_rules == 3);
    CHECK_STR(spec->devices[0].permissions, "rw");
    CHECK(spec->devices[0].target == NULL);
    CHECK_STR(spec->devices[1].permissions, "");
    CHECK(spec->device_rules[0].type == 'c' && spec->device_rules[0].major == 188 && spec->device_rules[0].minor == -1);
    CHECK(spec->device_rules[1].minor == -1);
    CHECK_STR(spec->device_rules[1].access, "rwm");
    CHECK(spec->device_rules[2].type == 'a' && spec->device_rules[2].major == -1);
    char *out = hd_spec_to_json(spec);
    /* the serialized spec (the digest's input) spells every default out */
    CHECK(strstr(out,
                 "\"devices\":[{\"path\":\"/dev/ttyUSB0\",\"permissions\":\"rw\",\"target\":\"/dev/ttyUSB0\"},"
                 "{\"path\":\"/dev/loop3\",\"permissions\":\"rwm\",\"target\":\"/dev/disk\"}]") != NULL);
    CHECK(strstr(out, "{\"access\":\"rwm\",\"major\":7,\"minor\":\"*\",\"type\":\"b\"}") != NULL);
    struct hd_spec *again = hd_spec_new();
    CHECK(hd_spec_parse_json(again, out, strlen(out), "roundtrip", &err) == 0);
    char *out2 = hd_spec_to_json(again);
    CHECK_STR(out, out2);
    /* a different permission is a different spec */
    memcpy(again->devices[0].permissions, "r", 2);
    char *out3 = hd_spec_to_json(again);
    CHECK(strcmp(out, out3) != 0);
    free(out);
    free(out2);
    free(out3);
    hd_spec_free(again);
    hd_spec_free(spec);
    hd_error_free(&err);

#define DV(body) try_spec("{\"rootfs\":\"/r\"," body "}")
    CHECK_STR(DV("\"devices\":[{\"path\":\"/dev/x\",\"permissions\":\"rx\"}]"),
              "t.json: devices[0].permissions: \"rx\" is not made of r, w and m (each at most once)");
    CHECK_STR(DV("\"devices\":[{\"path\":\"/dev/x\",\"permissions\":\"rr\"}]"),
              "t.json: devices[0].permissions: \"rr\" is not made of r, w and m (each at most once)");
    CHECK_STR(DV("\"devices\":[{\"target\":\"/dev/x\"}]"), "t.json: devices[0].path: is required");
    CHECK_STR(DV("\"devices\":[{\"path\":\"/dev/x\",\"mode\":\"rw\"}]"), "t.json: devices[0].mode: unknown field");
    CHECK_STR(DV("\"devices\":[{\"path\":\"dev/x\"}]"),
              "devices[0].path: \"dev/x\" must be an absolute path without \"..\"");
    CHECK_STR(DV("\"devices\":[{\"path\":\"/dev/x\",\"target\":\"/dev/../etc/x\"}]"),
              "devices[0].target: \"/dev/../etc/x\" must be an absolute path without \"..\"");
    CHECK_STR(DV("\"device_rules\":[{\"type\":\"x\"}]"),
              "t.json: device_rules[0].type: \"x\" is not a device type (a, b or c)");
    CHECK_STR(DV("\"device_rules\":[{\"major\":1}]"), "t.json: device_rules[0].type: is required (a, b or c)");
    CHECK_STR(DV("\"device_rules\":[{\"type\":\"c\",\"minor\":\"**\"}]"),
              "t.json: device_rules[0].minor: must be a device number (0..1048575) or \"*\"");
    CHECK_STR(DV("\"device_rules\":[{\"type\":\"c\",\"major\":1048576}]"),
              "t.json: device_rules[0].major: must be a device number (0..1048575) or \"*\"");
    CHECK_STR(DV("\"device_rules\":[{\"type\":\"a\",\"major\":1}]"),
              "t.json: device_rules[0]: type a means every device; major and minor must be \"*\" or absent");
    CHECK_STR(DV("\"device_rules\":[{\"type\":\"c\",\"access\":\"\"}]"),
              "t.json: device_rules[0].access: \"\" is not made of r, w and m (each at most once)");
#undef DV
    CHECK_STR(try_spec("{\"isolation\":\"process\",\"command\":[\"x\"],\"devices\":[{\"path\":\"/dev/a\",\"target\":"
                       "\"/dev/b\"}]}"),
              "devices[0].target: not supported with process isolation (a process sees the host's /dev; the "
              "target must be the path or absent)");
    CHECK_STR(try_spec("{\"isolation\":\"process\",\"command\":[\"x\"],\"devices\":[{\"path\":\"/dev/a\"}],"
                       "\"device_rules\":[{\"type\":\"c\",\"major\":4}]}"),
              "");
    CHECK_STR(try_spec("{\"isolation\":\"vm\",\"rootfs\":\"/r\",\"device_rules\":[{\"type\":\"c\"}]}"),
              "device_rules: not supported with vm isolation (QEMU runs in no device cgroup; the guest kernel owns "
              "its devices)");

    /* the flag forms (hedge run --device, --device-cgroup-rule) */
    struct hd_device d;
    const char *why = NULL;
    CHECK(hd_device_flag_parse("/dev/a", &d, &why) == 0 && d.target == NULL && d.permissions[0] == '\0');
    free(d.path);
    CHECK(hd_device_flag_parse("/dev/a:mr", &d, &why) == 0 && d.target == NULL);
    CHECK_STR(d.permissions, "rm");
    free(d.path);
    CHECK(hd_device_flag_parse("/dev/a:/dev/b:w", &d, &why) == 0);
    CHECK_STR(d.target, "/dev/b");
    CHECK_STR(d.permissions, "w");
    free(d.path);
    free(d.target);
    CHECK(hd_device_flag_parse("/dev/a:/dev/b:x", &d, &why) < 0);
    CHECK(hd_device_flag_parse("/dev/a:/b:r:w", &d, &why) < 0);
    CHECK(hd_device_flag_parse(":/b", &d, &why) < 0);
    struct hd_device_class c;
    CHECK(hd_device_class_parse("c 188:* rwm", &c, &why) == 0 && c.type == 'c' && c.major == 188 && c.minor == -1);
    CHECK(hd_device_class_parse("b *:3 r", &c, &why) == 0 && c.major == -1 && c.minor == 3);
    CHECK_STR(c.access, "r");
    CHECK(hd_device_class_parse("a", &c, &why) == 0 && c.type == 'a');
    CHECK(hd_device_class_parse("x 1:1 r", &c, &why) < 0);
    CHECK(hd_device_class_parse("c 1 r", &c, &why) < 0);
    CHECK(hd_device_class_parse("c 1:1 rq", &c, &why) < 0);
    CHECK(hd_device_class_parse("c 1:1 r extra", &c, &why) < 0);
    CHECK(hd_device_class_parse("a 1:1 r", &c, &why) < 0);
}

/* logs.forward: true, or the caps; the round trip keeps what was given; errors name the field. */
static char *logs_round_trip(const char *json)
{
    static char buf[512];
    struct hd_spec *spec = hd_spec_new();
    hd_error_t err = NULL;
    CHECK(hd_spec_parse_json(spec, json, strlen(json), "t.json", &err) == 0);
    CHECK(hd_spec_validate(spec, &err) == 0);
    char *out = hd_spec_to_json(spec);
    struct hd_spec *again = hd_spec_new();
    CHECK(hd_spec_parse_json(again, out, strlen(out), "roundtrip", &err) == 0);
    char *out2 = hd_spec_to_json(again);
    CHECK_STR(out, out2);
    CHECK(again->logs.forward == spec->logs.forward);
    CHECK(again->logs.lines_per_minute == spec->logs.lines_per_minute);
    CHECK(again->logs.bytes_per_minute == spec->logs.bytes_per_minute);
    json_t *o = json_loads(out, 0, NULL);
    char *logs =
        json_object_get(o, "logs") ? json_dumps(json_object_get(o, "logs"), JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    snprintf(buf, sizeof(buf), "%s", logs ? logs : "");
    free(logs);
    json_decref(o);
    free(out);
    free(out2);
    hd_spec_free(again);
    hd_spec_free(spec);
    hd_error_free(&err);
    return buf;
}

static void test_logs_block(void)
{
    CHECK_STR(logs_round_trip("{\"isolation\":\"process\",\"command\":[\"x\"],\"logs\":{\"forward\":true}}"),
              "{\"forward\":true}");
    CHECK_STR(logs_round_trip("{\"isolation\":\"process\",\"command\":[\"x\"],\"logs\":{\"forward\":false}}"), "");
    CHECK_STR(logs_round_trip("{\"image\":\"b\",\"logs\":{\"forward\":{\"lines_per_minute\":5}}}"),
              "{\"forward\":{\"lines_per_minute\":5}}");
    CHECK_STR(logs_round_trip("{\"image\":\"b\",\"logs\":{\"forward\":{\"lines_per_minute\":5,"
                              "\"bytes_per_minute\":2048}}}"),
              "{\"forward\":{\"bytes_per_minute\":2048,\"lines_per_minute\":5}}");
    CHECK_STR(try_spec("{\"image\":\"b\",\"logs\":{\"forward\":{\"lines_per_minute\":0}}}"),
              "t.json: logs.forward.lines_per_minute: must be an integer 1..100000");
    CHECK_STR(try_spec("{\"image\":\"b\",\"logs\":{\"forward\":{\"lines_per_minute\":\"9\"}}}"),
              "t.json: logs.forward.lines_per_minute: must be an integer 1..100000");
    CHECK_STR(try_spec("{\"image\":\"b\",\"logs\":{\"forward\":{\"bytes_per_minute\":10}}}"),
              "t.json: logs.forward.bytes_per_minute: must be an integer 1024..1048576");
    CHECK_STR(try_spec("{\"image\":\"b\",\"logs\":{\"forward\":{\"rate\":1}}}"),
              "t.json: logs.forward.rate: unknown field");
    CHECK_STR(try_spec("{\"image\":\"b\",\"logs\":{\"forward\":\"yes\"}}"),
              "t.json: logs.forward: must be true, false or an object {lines_per_minute, bytes_per_minute}, not a "
              "string");
    CHECK_STR(try_spec("{\"image\":\"b\",\"logs\":{\"fwd\":true}}"), "t.json: logs.fwd: unknown field");
    CHECK_STR(try_spec("{\"image\":\"b\",\"logs\":true}"), "t.json: logs: must be an object, not a boolean");
}

int main(void)
{
    test_logs_block();
    test_devices_block();
    test_mqtt_block();
    test_full_spec();
    test_errors();
    test_function_block();
    CHECK_DONE();
}
