/*
 * uplink.c - `hedge uplink status`: what the store-and-forward uplink is doing,
 * read from its spool database (WAL mode: readable while the uplink writes).
 *
 *   hedge uplink status (--spool FILE | --config FILE) [--json]
 *
 * Shows: cloud link up or down and since when (and the last error), spool
 * depth / bytes / oldest message age, and the drained, dropped (drop-oldest),
 * rejected (reject-new) and expired counts. The uplink process is checked to
 * be alive (its pid is in the spool); a dead one reads as "not running".
 */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "spool.h"
#include "uplink.h"
#include "util.h"

static const char usage_text[] = "hedge uplink status (--spool FILE | --config FILE) [--json]";

static const char *kv_get(char **kv, const char *key)
{
    for (size_t i = 0; kv && kv[i] && kv[i + 1]; i += 2)
        if (strcmp(kv[i], key) == 0)
            return kv[i + 1];
    return "";
}

static int uplink_status(const char *spool_path, bool json)
{
    hd_error_t err = NULL;
    struct hd_spool_stats st;
    cleanup_strv char **kv = NULL;
    if (hd_spool_read_status(spool_path, &st, &kv, &err) < 0)
        return cli_fail(&err);
    int64_t now = hd_wall_ms();
    long pid = strtol(kv_get(kv, "pid"), NULL, 10);
    bool running = pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
    bool connected = running && strcmp(kv_get(kv, "cloud_connected"), "1") == 0;
    int64_t since = strtoll(kv_get(kv, "cloud_since_ms"), NULL, 10);
    double oldest_age = st.oldest_ms ? (double)(now - st.oldest_ms) / 1000.0 : 0.0;
    const char *last_error = kv_get(kv, "cloud_last_error");
    if (json) {
        json_t *o = json_pack("{s:b, s:b, s:I, s:s, s:I, s:I, s:f, s:I, s:I, s:I, s:I, s:I}",
                              "running", running, "connected", connected, "since_ms", (json_int_t)since,
                              "last_error", last_error, "depth", (json_int_t)st.depth, "bytes",
                              (json_int_t)st.bytes, "oldest_age_s", oldest_age, "received",
                              (json_int_t)st.counters.received, "drained", (json_int_t)st.counters.drained,
                              "dropped_oldest", (json_int_t)st.counters.dropped_oldest, "rejected_new",
                              (json_int_t)st.counters.rejected_new, "expired", (json_int_t)st.counters.expired);
        char *text = json_dumps(o, JSON_COMPACT);
        printf("%s\n", text);
        free(text);
        json_decref(o);
        return 0;
    }
    if (!running)
        printf("uplink:    not running\n");
    else
        printf("cloud:     %s for %.1fs%s%s\n", connected ? "connected" : "disconnected",
               since ? (double)(now - since) / 1000.0 : 0.0, !connected && *last_error ? " - " : "",
               !connected ? last_error : "");
    printf("spool:     %lld messages, %lld bytes, oldest %.1fs\n", (long long)st.depth, (long long)st.bytes,
           oldest_age);
    printf("received:  %lld\ndrained:   %lld\ndropped:   %lld (drop-oldest %lld, reject-new %lld, expired %lld)\n",
           (long long)st.counters.received, (long long)st.counters.drained,
           (long long)(st.counters.dropped_oldest + st.counters.rejected_new + st.counters.expired),
           (long long)st.counters.dropped_oldest, (long long)st.counters.rejected_new,
           (long long)st.counters.expired);
    return 0;
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
    if (!spool == !config)
        return cli_usage_error("uplink", usage_text, "give one of --spool or --config");
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
