/*
 * invoke.c - `hedge invoke`: call a function by hand and print its result.
 *
 *   hedge invoke NAME [--payload DATA] [--timeout SECONDS]
 *   hedge invoke --topic TOPIC [--payload DATA] [--broker HOST:PORT] [--timeout SECONDS]
 *
 * By NAME: a function deployed with hedged. GET /v1/workloads/NAME gives the
 * invoke socket of its running hedge-functions (src/functions/local.h); DATA
 * (default: stdin) goes there as one frame and the result comes back the
 * same way, through the same invoker (queue, timeout, stats) as MQTT
 * requests, without the broker. By --topic: publishes DATA to TOPIC with
 * MQTT 5 request/response properties (a private response topic,
 * hedge/invoke/<id>, and correlation data) and waits for the reply.
 *
 * Either way the result goes to stdout (exit 0); an error event ({"error":
 * ..., "function": ...}: timeout, crash, bad output, queue full) goes to
 * stderr with exit 1; hedge's own failures (unknown NAME, not a function,
 * not running, no answer within the timeout, default 30 s) exit 125.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "mqtt/client.h"
#include "mqtt/topic.h"
#include "base/util.h"

/* a result is at most 1 MiB (HD_INVOKER_MAX_OUTPUT); an error event is smaller */
#define MAX_ANSWER ((1u << 20) + 4096)

static const char usage_text[] =
    "hedge invoke NAME [--payload DATA] [--timeout SECONDS]\n"
    "       hedge invoke --topic TOPIC [--payload DATA] [--broker HOST:PORT] [--timeout SECONDS]";

struct invoke_state {
    struct hd_mqtt_client *c;
    const char *topic, *reply_topic;
    const char *payload;
    size_t payload_len;
    char correlation[13];
    bool subscribed, done, failed;
    int exit_code;
};

static void invoke_on_connect(void *ctx, bool session_present)
{
    struct invoke_state *s = ctx;
    char *filters[] = {(char *)s->reply_topic, NULL};
    hd_mqtt_subscribe(s->c, 1, filters, 1);
}

static void invoke_on_suback(void *ctx, uint16_t id, const uint8_t *codes, size_t n)
{
    struct invoke_state *s = ctx;
    if (n < 1 || codes[0] >= 0x80) {
        fprintf(stderr, "hedge invoke: the broker refused the subscription to %s\n", s->reply_topic);
        s->done = s->failed = true;
        s->exit_code = HD_EXIT_HEDGE;
        return;
    }
    s->subscribed = true;
    hd_mqtt_publish_request(s->c, s->topic, s->payload, s->payload_len, 1, 2, s->reply_topic, s->correlation,
                            strlen(s->correlation));
}

/* A function's answer: an error event to stderr (1), anything else to stdout (0). */
static int invoke_print(const void *body, size_t len)
{
    json_t *o = json_loadb(body, len, 0, NULL);
    int code = 0;
    if (o && json_is_string(json_object_get(o, "error")) && json_is_string(json_object_get(o, "function"))) {
        fprintf(stderr, "hedge invoke: %s: %s: %s\n", json_string_value(json_object_get(o, "function")),
                json_string_value(json_object_get(o, "error")),
                json_is_string(json_object_get(o, "detail")) ? json_string_value(json_object_get(o, "detail")) : "");
        code = 1;
    } else {
        fwrite(body, 1, len, stdout);
        fflush(stdout);
    }
    json_decref(o);
    return code;
}

static void invoke_on_message(void *ctx, const struct hd_mqtt_message *m)
{
    struct invoke_state *s = ctx;
    if (m->qos)
        hd_mqtt_puback(s->c, m->packet_id);
    if (!m->correlation || m->correlation_len != strlen(s->correlation) ||
        memcmp(m->correlation, s->correlation, m->correlation_len) != 0)
        return;
    s->done = true;
    s->exit_code = invoke_print(m->payload, m->payload_len);
}

static void invoke_on_disconnect(void *ctx, const char *reason)
{
    struct invoke_state *s = ctx;
    fprintf(stderr, "hedge invoke: broker: %s\n", reason);
    s->done = s->failed = true;
    s->exit_code = HD_EXIT_HEDGE;
}

static int invoke_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int invoke_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("hedge invoke: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return HD_EXIT_HEDGE;
}

/* hedge invoke NAME: through the invoke socket hedged reports for the deployed function. */
static int invoke_by_name(const char *name, const char *payload, size_t payload_len, double timeout)
{
    cleanup_free char *escaped = hd_client_escape(name);
    cleanup_free char *path = hd_xasprintf("/v1/workloads/%s", escaped);
    int code = 0;
    json_t *w = hd_client_call("invoke", "GET", path, NULL, 0, &code);
    if (w == NULL)
        return code;
    json_t *fn = json_object_get(w, "function");
    const char *sock = json_string_value(json_object_get(fn, "socket"));
    const char *state = json_string_value(json_object_get(w, "state"));
    cleanup_free char *sock_copy = sock ? hd_xstrdup(sock) : NULL;
    cleanup_free char *state_copy = hd_xstrdup(state ? state : "unknown");
    bool is_function = json_is_object(fn);
    json_decref(w);
    if (!is_function)
        return invoke_fail("%s: is not a function (its spec has no function block)", name);
    if (sock_copy == NULL || strcmp(state_copy, "running") != 0)
        return invoke_fail("%s: function is not running (state %s)", name, state_copy);
    /* connect through /proc/self/fd/<dir>/ so that a long state dir path still fits sun_path */
    cleanup_free char *dir = hd_xstrdup(sock_copy);
    cleanup_close int dirfd = open(dirname(dir), O_PATH | O_DIRECTORY | O_CLOEXEC);
    cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof(addr.sun_path), "/proc/self/fd/%d/invoke.sock", dirfd);
    /* a host that was just (re)started binds its socket after its pinned instance started: wait for it */
    uint64_t give_up = hd_now_ns() + (uint64_t)(timeout * 1e9);
    int r;
    while ((r = dirfd < 0 || fd < 0 ? -1 : connect(fd, (struct sockaddr *)&addr, sizeof(addr))) < 0 && dirfd >= 0 &&
           fd >= 0 && (errno == ENOENT || errno == ECONNREFUSED) && hd_now_ns() < give_up)
        usleep(50 * 1000);
    if (r < 0)
        return invoke_fail("%s: cannot reach the function at %s: %s", name, sock_copy, strerror(errno));
    struct timeval tv = {.tv_sec = (time_t)timeout,
                         .tv_usec = (suseconds_t)((timeout - (double)(time_t)timeout) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    uint8_t head[5] = {(uint8_t)(payload_len >> 24), (uint8_t)(payload_len >> 16), (uint8_t)(payload_len >> 8),
                       (uint8_t)payload_len};
    if (hd_write_all(fd, head, 4) < 0 || hd_write_all(fd, payload, payload_len) < 0)
        return invoke_fail("%s: sending the payload: %s", name, errno ? strerror(errno) : "connection closed");
    errno = 0;
    if (hd_read_exact(fd, head, 5) < 0)
        return invoke_fail("%s: %s", name,
                           errno == EAGAIN || errno == EWOULDBLOCK
                               ? "no result within the timeout"
                               : "the function host closed the connection without a result");
    size_t len = (size_t)head[1] << 24 | (size_t)head[2] << 16 | (size_t)head[3] << 8 | head[4];
    if ((head[0] != 'R' && head[0] != 'E') || len > MAX_ANSWER)
        return invoke_fail("%s: malformed answer from the function host", name);
    cleanup_free char *body = hd_xmalloc(len + 1);
    if (hd_read_exact(fd, body, len) < 0)
        return invoke_fail("%s: the function host closed the connection in the middle of the result", name);
    if (head[0] == 'E')
        return invoke_print(body, len) ? 1 : invoke_fail("%s: malformed error event", name);
    fwrite(body, 1, len, stdout);
    fflush(stdout);
    return 0;
}

int cmd_invoke(int argc, char **argv)
{
    const char *topic = NULL, *payload = NULL, *broker = "127.0.0.1:1883", *name = NULL;
    double timeout = 30;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0)
            return cli_help(usage_text);
        if (argv[i][0] != '-' && name == NULL)
            name = argv[i];
        else if (strcmp(argv[i], "--topic") == 0 && i + 1 < argc)
            topic = argv[++i];
        else if (strcmp(argv[i], "--payload") == 0 && i + 1 < argc)
            payload = argv[++i];
        else if (strcmp(argv[i], "--broker") == 0 && i + 1 < argc)
            broker = argv[++i];
        else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
            timeout = atof(argv[++i]);
        else
            return cli_usage_error("invoke", usage_text, "unexpected argument '%s'", argv[i]);
    }
    if (name && topic)
        return cli_usage_error("invoke", usage_text, "give a function NAME or --topic, not both");
    if (!name && (!topic || !hd_mqtt_topic_valid_name(topic, strlen(topic))))
        return cli_usage_error("invoke", usage_text,
                               "give a function NAME, or --topic with a topic name (no wildcards)");
    if (timeout <= 0)
        return cli_usage_error("invoke", usage_text, "--timeout must be more than 0");
    hd_error_t err = NULL;
    cleanup_free char *host = NULL, *stdin_data = NULL;
    int port;
    if (hd_mqtt_parse_address(broker, 1883, &host, &port, &err) < 0)
        return cli_fail(&err);
    struct invoke_state s = {.topic = topic, .exit_code = HD_EXIT_HEDGE};
    if (payload) {
        s.payload = payload;
        s.payload_len = strlen(payload);
    } else {
        size_t len = 0;
        if (hd_read_file("/dev/stdin", &stdin_data, &len, &err) < 0)
            return cli_fail(&err);
        s.payload = stdin_data;
        s.payload_len = len;
    }
    if (name)
        return invoke_by_name(name, s.payload, s.payload_len, timeout);
    hd_random_id(s.correlation, sizeof(s.correlation));
    cleanup_free char *reply_topic = hd_xasprintf("hedge/invoke/%s", s.correlation);
    s.reply_topic = reply_topic;
    char client_id[32];
    snprintf(client_id, sizeof(client_id), "hedge-invoke-%s", s.correlation);
    struct hd_mqtt_options mo = {
        .host = host, .port = port, .client_id = client_id, .clean_session = true, .keepalive = 60, .protocol = 5};
    struct hd_mqtt_callbacks cb = {.on_connect = invoke_on_connect,
                                   .on_message = invoke_on_message,
                                   .on_suback = invoke_on_suback,
                                   .on_disconnect = invoke_on_disconnect};
    s.c = hd_mqtt_client_new(&mo, &cb, &s);
    if (hd_mqtt_client_connect(s.c, &err) < 0) {
        hd_mqtt_client_free(s.c);
        hd_error_prefix(&err, "broker %s", broker);
        return cli_fail(&err);
    }
    uint64_t deadline = hd_now_ns() + (uint64_t)(timeout * 1e9);
    while (!s.done) {
        uint64_t now = hd_now_ns();
        if (now >= deadline) {
            fprintf(stderr, "hedge invoke: no reply on %s within %gs (is a function listening on %s?)\n", reply_topic,
                    timeout, topic);
            break;
        }
        struct pollfd p = {.fd = hd_mqtt_client_fd(s.c), .events = hd_mqtt_client_events(s.c)};
        uint64_t left_ms = (deadline - now) / 1000000 + 1;
        if (poll(&p, 1, left_ms > 1000 ? 1000 : (int)left_ms) > 0)
            hd_mqtt_client_handle(s.c, p.revents);
        hd_mqtt_client_flush(s.c);
    }
    hd_mqtt_client_close(s.c, true);
    hd_mqtt_client_free(s.c);
    return s.exit_code;
}
