/*
 * test_broker_config.c - the broker's settings are defined once (broker/config.c)
 * and read in two dialects: hedge-broker's "key value" file and the `broker`
 * object of hedged's JSON config. The same settings must give the same config,
 * and each dialect words its errors its own way.
 */
#include <jansson.h>
#include <unistd.h>

#include "check.h"
#include "broker/broker.h"
#include "base/util.h"

static const char file_text[] = "# comment\n"
                                "listener 127.0.0.1:1884\n"
                                "listener [::1]:1885\n"
                                "listener_tls :8883\n"
                                "tls_cert /etc/c.pem\n"
                                "tls_key /etc/k.pem\n"
                                "tls_require_certificate yes\n"
                                "persistence_sync full\n"
                                "allow_anonymous false\n"
                                "max_packet_size 64K\n"
                                "max_inflight_messages 5\n"
                                "max_queued_bytes 1M\n"
                                "queue_full_policy drop-oldest\n"
                                "connect_timeout 3\n"
                                "receive_maximum 7\n"
                                "topic_alias_to_client 4\n"
                                "response_information resp/node 1\n"
                                "sys_interval 0\n";

static const char json_text[] =
    "{\"listen\":[\"127.0.0.1:1884\",\"[::1]:1885\"],\"listen_tls\":[\":8883\"],"
    "\"tls_cert\":\"/etc/c.pem\",\"tls_key\":\"/etc/k.pem\",\"tls_require_certificate\":true,"
    "\"persistence_sync\":\"full\",\"allow_anonymous\":false,\"max_packet_size\":\"64K\","
    "\"max_inflight_messages\":5,\"max_queued_bytes\":1048576,\"queue_full_policy\":\"drop-oldest\","
    "\"connect_timeout\":3,\"receive_maximum\":7,\"topic_alias_to_client\":4,"
    "\"response_information\":\"resp/node 1\",\"sys_interval\":0}";

static int load_file(struct hd_broker_config *cfg, const char *text, hd_error_t *err)
{
    char path[] = "/tmp/hedge-test-broker-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0 || hd_write_all(fd, text, strlen(text)) < 0) {
        perror("temp file");
        exit(1);
    }
    close(fd);
    int r = hd_broker_config_load(cfg, path, err);
    unlink(path);
    return r;
}

static int load_json(struct hd_broker_config *cfg, const char *text, hd_error_t *err)
{
    json_t *obj = json_loads(text, 0, NULL);
    CHECK(obj != NULL);
    const char *key;
    json_t *v;
    int r = 0;
    json_object_foreach(obj, key, v)
    {
        if ((r = hd_broker_config_set_json(cfg, key, v, err)) < 0)
            break;
    }
    json_decref(obj);
    return r;
}

static void check_same(const struct hd_broker_config *a, const struct hd_broker_config *b)
{
    for (size_t i = 0; i < 3; i++) {
        CHECK((a->listen[i] == NULL) == (b->listen[i] == NULL));
        if (a->listen[i] == NULL || b->listen[i] == NULL)
            break;
        CHECK_STR(a->listen[i], b->listen[i]);
    }
    CHECK_STR(a->listen_tls[0], b->listen_tls[0]);
    CHECK_STR(a->tls_cert, b->tls_cert);
    CHECK_STR(a->tls_key, b->tls_key);
    CHECK(a->tls_require_cert == b->tls_require_cert);
    CHECK(a->sync_full == b->sync_full);
    CHECK(a->allow_anonymous == b->allow_anonymous);
    CHECK(a->max_packet_size == b->max_packet_size);
    CHECK(a->max_inflight == b->max_inflight);
    CHECK(a->max_queued_bytes == b->max_queued_bytes);
    CHECK(a->queue_policy == b->queue_policy);
    CHECK(a->connect_timeout_ms == b->connect_timeout_ms);
    CHECK(a->sys_interval == b->sys_interval);
    CHECK(a->receive_maximum == b->receive_maximum);
    CHECK(a->topic_alias_out == b->topic_alias_out);
    CHECK_STR(a->response_information, b->response_information);
}

static void test_same_settings(void)
{
    struct hd_broker_config f, j;
    hd_broker_config_init(&f);
    hd_broker_config_init(&j);
    hd_error_t err = NULL;
    CHECK(load_file(&f, file_text, &err) == 0);
    CHECK(load_json(&j, json_text, &err) == 0);
    if (err)
        fprintf(stderr, "%s\n", hd_error_text(err));
    hd_error_free(&err);
    CHECK(f.listen && f.listen[0] && f.listen[1] && !f.listen[2]);
    CHECK(f.tls_require_cert && f.sync_full && f.allow_anonymous == 0);
    CHECK(f.max_packet_size == 65536 && f.max_inflight == 5 && f.max_queued_bytes == 1 << 20);
    CHECK(f.queue_policy == HD_BROKER_DROP_OLDEST && f.connect_timeout_ms == 3000 && f.sys_interval == 0);
    CHECK(f.receive_maximum == 7 && f.topic_alias_out == 4);
    CHECK(f.response_information && strcmp(f.response_information, "resp/node 1") == 0);
    if (f.listen && j.listen && f.listen_tls && j.listen_tls)
        check_same(&f, &j);
    hd_broker_config_free(&f);
    hd_broker_config_free(&j);
}

static const char *file_error(const char *text)
{
    static char buf[256];
    struct hd_broker_config cfg;
    hd_broker_config_init(&cfg);
    hd_error_t err = NULL;
    buf[0] = '\0';
    if (load_file(&cfg, text, &err) < 0) {
        /* drop the temp file's name: "broker config PATH line N: ..." -> "line N: ..." */
        const char *line = strstr(hd_error_text(err), " line ");
        snprintf(buf, sizeof(buf), "%s", line ? line + 1 : hd_error_text(err));
    }
    hd_error_free(&err);
    hd_broker_config_free(&cfg);
    return buf;
}

static const char *json_error(const char *text)
{
    static char buf[256];
    struct hd_broker_config cfg;
    hd_broker_config_init(&cfg);
    hd_error_t err = NULL;
    buf[0] = '\0';
    if (load_json(&cfg, text, &err) < 0)
        snprintf(buf, sizeof(buf), "%s", hd_error_text(err));
    hd_error_free(&err);
    hd_broker_config_free(&cfg);
    return buf;
}

static void test_errors(void)
{
    CHECK_STR(file_error("max_inflight_messages 0\n"), "line 1: bad value '0' for max_inflight_messages");
    CHECK_STR(json_error("{\"max_inflight_messages\":0}"), "broker.max_inflight_messages: must be an integer 1..65535");
    CHECK_STR(file_error("receive_maximum 0\n"), "line 1: bad value '0' for receive_maximum");
    CHECK_STR(json_error("{\"receive_maximum\":70000}"), "broker.receive_maximum: must be an integer 1..65535");
    CHECK_STR(json_error("{\"response_information\":5}"), "broker.response_information: must be a non-empty string");
    CHECK_STR(json_error("{\"response_information\":\"\"}"), "broker.response_information: must be a non-empty string");
    CHECK_STR(file_error("\nallow_anonymus true\n"), "line 2: unknown key 'allow_anonymus'");
    CHECK_STR(json_error("{\"allow_anonymus\":true}"), "broker.allow_anonymus: unknown field");
    CHECK_STR(file_error("allow_anonymous maybe\n"), "line 1: bad value 'maybe' for allow_anonymous");
    CHECK_STR(json_error("{\"allow_anonymous\":\"yes\"}"), "broker.allow_anonymous: must be true or false");
    CHECK_STR(file_error("queue_full_policy drop-all\n"), "line 1: bad value 'drop-all' for queue_full_policy");
    CHECK_STR(json_error("{\"queue_full_policy\":\"drop-all\"}"),
              "broker.queue_full_policy: must be \"drop-new\" or \"drop-oldest\"");
    CHECK_STR(file_error("listener nowhere\n"), "line 1: bad value 'nowhere' for listener");
    CHECK_STR(json_error("{\"listen\":\"127.0.0.1:1883\"}"),
              "broker.listen: must be an array of \"HOST:PORT\" strings");
    CHECK_STR(json_error("{\"listen\":[\"127.0.0.1:1883\",\"x\"]}"), "broker.listen[1]: must be \"HOST:PORT\"");
    CHECK_STR(json_error("{\"password_file\":\"relative\"}"), "broker.password_file: must be an absolute path");
    CHECK_STR(file_error("tls_cert\n"), "line 1: bad value '' for tls_cert");
    /* the file's own spelling of a key is not the JSON one, and back */
    CHECK_STR(json_error("{\"listener\":[\":1\"]}"), "broker.listener: unknown field");
    CHECK_STR(file_error("listen :1\n"), "line 1: unknown key 'listen'");
}

/* WebSocket listeners (src/broker/websocket.c) go in listen, in both dialects; a bad one is refused. */
static void test_websocket_listeners(void)
{
    CHECK_STR(file_error("listener ws://0.0.0.0:8080/mqtt\nlistener wss://[::1]:8443\n"), "");
    CHECK_STR(json_error("{\"listen\":[\"127.0.0.1:1883\",\"ws://0.0.0.0:8080/mqtt\"],"
                         "\"websocket_max_message_size\":\"64K\"}"),
              "");
    CHECK_STR(file_error("listener ws://0.0.0.0/mqtt\n"), "line 1: bad value 'ws://0.0.0.0/mqtt' for listener");
    CHECK_STR(file_error("listener ws://h:80/a b\n"), "line 1: bad value 'ws://h:80/a b' for listener");
    CHECK_STR(json_error("{\"listen\":[\"ws://h:80/a?b\"]}"), "broker.listen[0]: must be \"HOST:PORT\"");
    CHECK_STR(json_error("{\"listen\":[\"http://h:80/mqtt\"]}"), "broker.listen[0]: must be \"HOST:PORT\"");
    struct hd_broker_config cfg;
    hd_broker_config_init(&cfg);
    hd_error_t err = NULL;
    CHECK(load_file(&cfg, "websocket_max_message_size 1M\n", &err) == 0 && cfg.websocket_max_message == 1 << 20);
    hd_error_free(&err);
    hd_broker_config_free(&cfg);
}

int main(void)
{
    test_same_settings();
    test_errors();
    test_websocket_listeners();
    CHECK_DONE();
}
