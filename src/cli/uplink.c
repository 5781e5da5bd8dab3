/*
 * uplink.c - `hedge uplink status`: what the store-and-forward uplink is doing.
 *
 *   hedge uplink status [--json]                     (the uplink inside hedged)
 *   hedge uplink status (--spool FILE | --config FILE) [--json]   (a hedge-uplink's)
 *
 * Shows: cloud link up or down and since when (and the last error), spool
 * depth / bytes / oldest message age, and the drained, dropped (drop-oldest),
 * rejected (reject-new) and expired counts.
 *
 * Without a file, hedged is asked (GET /v1/uplink on --socket, $HEDGE_SOCKET
 * or /run/hedge/hedged.sock). When no hedged answers there, the status is
 * read from hedged's spool file instead ($HEDGE_STATE_DIR, default
 * /var/lib/hedge, + /uplink/spool.db), as it is for a file given with
 * --spool/--config: the spool keeps the counters and the link state (WAL
 * mode: readable while the uplink writes), and the pid of the uplink's process
 * is checked to be alive; a dead one reads as "not running". Both ways build
 * the same JSON object, printed by the same code, so the output is the same.
 * The spool is read by uplink/spool_read.c, which loads SQLite only when it
 * is called: hedge itself does not link it.
 */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "uplink/spool.h"
#include "uplink/uplink.h"
#include "base/util.h"

static const char usage_text[] = "hedge uplink status [--spool FILE | --config FILE] [--json]";

static const char *kv_get(char **kv, const char *key)
{
    for (size_t i = 0; kv && kv[i] && kv[i + 1]; i += 2)
        if (strcmp(kv[i], key) == 0)
            return kv[i + 1];
    return "";
}

/* The status object read from a spool file (the keys GET /v1/uplink answers with too). */
static json_t *uplink_status_from_spool(const char *spool_path, hd_error_t *err)
{
    struct hd_spool_stats st;
    cleanup_strv char **kv = NULL;
    if (hd_spool_read_status(spool_path, &st, &kv, err) < 0)
        return NULL;
    int64_t now = hd_wall_ms();
    long pid = strtol(kv_get(kv, "pid"), NULL, 10);
    bool running = pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
    bool connected = running && strcmp(kv_get(kv, "cloud_connected"), "1") == 0;
    int64_t since = strtoll(kv_get(kv, "cloud_since_ms"), NULL, 10);
    double oldest_age = st.oldest_ms ? (double)(now - st.oldest_ms) / 1000.0 : 0.0;
    return json_pack("{s:b, s:b, s:I, s:s, s:I, s:I, s:f, s:I, s:I, s:I, s:I, s:I}", "running", running, "connected",
                     connected, "since_ms", (json_int_t)since, "last_error", kv_get(kv, "cloud_last_error"), "depth",
                     (json_int_t)st.depth, "bytes", (json_int_t)st.bytes, "oldest_age_s", oldest_age, "received",
                     (json_int_t)st.counters.received, "drained", (json_int_t)st.counters.drained, "dropped_oldest",
                     (json_int_t)st.counters.dropped_oldest, "rejected_new", (json_int_t)st.counters.rejected_new,
                     "expired", (json_int_t)st.counters.expired);
}

static int64_t status_int(json_t *o, const char *key)
{
    return (int64_t)json_integer_value(json_object_get(o, key));
}

static int uplink_print(json_t *o, bool json)
{
    if (json) {
        char *text = json_dumps(o, JSON_COMPACT);
        printf("%s\n", text);
        free(text);
        return 0;
    }
    int64_t now = hd_wall_ms(), since = status_int(o, "since_ms");
    bool running = json_is_true(json_object_get(o, "running"));
    bool connected = json_is_true(json_object_get(o, "connected"));
    const char *last_error = json_string_value(json_object_get(o, "last_error"));
    if (!last_error)
        last_error = "";
    if (!running)
        printf("uplink:    not running\n");
    else
        printf("cloud:     %s for %.1fs%s%s\n", connected ? "connected" : "disconnected",
               since ? (double)(now - since) / 1000.0 : 0.0, !connected && *last_error ? " - " : "",
               !connected ? last_error : "");
    long long dropped_oldest = status_int(o, "dropped_oldest"), rejected_new = status_int(o, "rejected_new"),
              expired = status_int(o, "expired");
    printf("spool:     %lld messages, %lld bytes, oldest %.1fs\n", (long long)status_int(o, "depth"),
           (long long)status_int(o, "bytes"), json_number_value(json_object_get(o, "oldest_age_s")));
    printf("received:  %lld\ndrained:   %lld\ndropped:   %lld (drop-oldest %lld, reject-new %lld, expired %lld)\n",
           (long long)status_int(o, "received"), (long long)status_int(o, "drained"),
           dropped_oldest + rejected_new + expired, dropped_oldest, rejected_new, expired);
    return 0;
}

static int uplink_status(const char *spool_path, bool json)
{
    hd_error_t err = NULL;
    json_t *o = uplink_status_from_spool(spool_path, &err);
    if (!o)
        return cli_fail(&err);
    int rc = uplink_print(o, json);
    json_decref(o);
    return rc;
}

/* Whether a hedged accepts connections on its API socket (a stale socket file after kill -9 does not). */
static bool hedged_answers(void)
{
    const char *path = hd_client_socket();
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(addr.sun_path))
        return false;
    strcpy(addr.sun_path, path);
    cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    return fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0;
}

/* hedged's uplink: asked over the API, else read from hedged's spool file. */
static int uplink_status_hedged(bool json)
{
    if (!hedged_answers()) {
        const char *state = getenv("HEDGE_STATE_DIR");
        cleanup_free char *spool = hd_xasprintf("%s/uplink/spool.db", state && *state ? state : "/var/lib/hedge");
        return uplink_status(spool, json);
    }
    int code = 0;
    json_t *o = hd_client_call("uplink", "GET", "/v1/uplink", NULL, 0, &code);
    if (!o)
        return code;
    int rc = uplink_print(o, json);
    json_decref(o);
    return rc;
}

int cmd_uplink(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "status") != 0)
        return cli_usage_error("uplink", usage_text, "expected 'status'");
    const char *spool = NULL, *config = NULL;
    bool json = false;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--spool") == 0 && i + 1 < argc)
            spool = argv[++i];
        else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            config = argv[++i];
        else if (strcmp(argv[i], "--json") == 0)
            json = true;
        else
            return cli_usage_error("uplink", usage_text, "unexpected argument '%s'", argv[i]);
    }
    if (spool && config)
        return cli_usage_error("uplink", usage_text, "give one of --spool or --config");
    if (!spool && !config)
        return uplink_status_hedged(json);
    if (config) {
        hd_error_t err = NULL;
        struct hd_uplink_config cfg;
        if (hd_uplink_config_load(config, &cfg, &err) < 0)
            return cli_fail(&err);
        int rc = uplink_status(cfg.spool_path, json);
        hd_uplink_config_free(&cfg);
        return rc;
    }
    return uplink_status(spool, json);
}
