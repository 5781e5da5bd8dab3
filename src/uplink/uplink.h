/*
 * uplink.h - the store-and-forward bridge between the local broker and one
 * cloud broker.
 *
 * Up: the uplink subscribes (persistent session, QoS 1) to the chosen local
 * topics, appends each message to the durable spool, and PUBACKs the local
 * broker only after the spool commit; it forwards spooled messages to the
 * cloud with up to `window` QoS 1 PUBLISHes in flight and deletes a row only
 * when the cloud PUBACKs it. Down: cloud topics are forwarded to the local
 * broker (QoS 1) and the cloud PUBLISH is acknowledged once the local broker
 * acknowledged the copy.
 *
 * Ordering guarantee: messages are sent to the cloud in spool order (the
 * order the local broker delivered them, which for one topic is the order
 * they were published). On one cloud connection the broker receives them in
 * that order. After a reconnect the uplink resends from the oldest
 * unacknowledged row, so the cloud may see a contiguous run of messages a
 * second time, but never a message before one that preceded it: deduplicated
 * by first arrival, the stream is exactly the spool order (at-least-once,
 * in order).
 *
 * The library part (hd_uplink_*) runs in an event loop (src/base/loop.h):
 * hd_uplink_attach registers its two MQTT clients' sockets, its timer and its
 * end-of-turn work; hedged attaches it to its one loop, hedge-uplink to a
 * loop of its own.
 */
#ifndef HEDGE_UPLINK_H
#define HEDGE_UPLINK_H

#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"
#include "mqtt/client.h"
#include "uplink/spool.h"

/* One topic mapping: a filter on one side and its image on the other. */
struct hd_uplink_map {
    char *from; /* filter subscribed to on the source side */
    char *to;   /* the same wildcards, on the destination side */
    /* up[] only: the spool class of the route's messages (0 most important .. 9) and their own
     * time to live (0 = only the spool's ttl) */
    uint8_t priority;
    int64_t ttl_ms;
};

struct hd_uplink_config {
    char *node_id;
    struct hd_mqtt_options local, cloud;
    struct hd_uplink_map *up, *down;
    size_t n_up, n_down;
    char *spool_path;
    struct hd_spool_options spool;
    int window; /* QoS 1 messages in flight to the cloud */
    int64_t reconnect_min_ms, reconnect_max_ms;
    int status_pid; /* the pid `hedge uplink status` checks for liveness (hedged's for its network
                       child, which may outlive it by a moment); 0: this process */
};

/* Parse the JSON config file; errors name the field ("cloud.port: ..."). */
int hd_uplink_config_load(const char *path, struct hd_uplink_config *cfg, hd_error_t *err);
/*
 * The same parser for a JSON object (hedged's "uplink" section). `prefix`
 * starts every field path in errors ("uplink." gives "uplink.cloud.port:
 * ..."). With `embedded`, "local" and "spool" may be left out: local.host
 * stays NULL and local.port 0 (the caller fills in its own broker), and
 * spool_path stays NULL (the caller's default).
 */
struct json_t;
int hd_uplink_config_parse(struct json_t *obj, const char *prefix, bool embedded, struct hd_uplink_config *cfg,
                           hd_error_t *err);
void hd_uplink_config_free(struct hd_uplink_config *cfg);

/*
 * Map a topic through a pair of filters with the same wildcards: the levels
 * matched by + and # in `from` replace the wildcards of `to`. NULL if the
 * topic does not match `from`.
 */
char *hd_uplink_map_topic(const char *from, const char *to, const char *topic);

struct hd_uplink;

struct hd_uplink *hd_uplink_new(const struct hd_uplink_config *cfg, hd_error_t *err);
void hd_uplink_free(struct hd_uplink *u);
/* A fatal spool error stopped the uplink (its links are closed). *err is the owner's to take; the
 * owner may free the uplink, but not inside this callback (defer it). */
typedef void (*hd_uplink_fatal_fn)(void *ctx, hd_error_t *err);
struct hd_loop;
/* Run in loop: connect both links and keep serving them. Once only; free the uplink before the loop. */
int hd_uplink_attach(struct hd_uplink *u, struct hd_loop *loop, hd_uplink_fatal_fn on_fatal, void *ctx,
                     hd_error_t *err);
/* Disconnect both links cleanly (DISCONNECT sent): what hedge-uplink does on SIGTERM. */
void hd_uplink_close(struct hd_uplink *u);
/*
 * A second user of the cloud link: hedged's fleet agent (src/daemon/fleet_link.c). Its filters are
 * subscribed at every CONNACK (QoS 1), after on_connect ran; PUBLISHes on topics they match go to
 * on_message (acknowledged when it returns) instead of the down routes. The strings are copied.
 */
struct hd_uplink_cloud_user {
    char *const *filters; /* NULL-terminated */
    void (*on_connect)(void *ctx);
    void (*on_message)(void *ctx, const char *topic, const uint8_t *payload, size_t len);
    void *ctx;
};
void hd_uplink_set_cloud_user(struct hd_uplink *u, const struct hd_uplink_cloud_user *user);
/* Publish on the cloud link now, QoS 1, outside the spool (state whose latest copy is all that matters,
 * such as a retained report): false when the link is down; the user publishes again from on_connect. */
bool hd_uplink_publish_direct(struct hd_uplink *u, const char *topic, const void *payload, size_t len, bool retain);

/* Spool a message of the node's own (hedged's fleet events) as if a route had taken it in; sent in
 * spool order with the rest. -1 when the spool refuses it (a fatal error stops the uplink as usual). */
int hd_uplink_enqueue(struct hd_uplink *u, const struct hd_spool_message *m, hd_error_t *err);

/* What `hedge uplink status` and /metrics show of a running uplink. */
struct hd_uplink_status {
    bool local_connected, cloud_connected;
    int64_t cloud_since_ms; /* wall-clock ms of the last cloud link change */
    const char *last_error; /* why the cloud link is down ("" when none); valid until the next dispatch */
    int64_t reconnects;     /* cloud connections made after the first one */
    int64_t downlink;       /* cloud messages forwarded to the local broker */
    struct hd_spool_stats spool;
};
int hd_uplink_get_status(struct hd_uplink *u, struct hd_uplink_status *out, hd_error_t *err);

#endif
