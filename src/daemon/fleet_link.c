/*
 * fleet_link.c - the node's fleet topics on the cloud link, in the network
 * child (docs/fleet.md; hedged's side is fleet.c).
 *
 * It rides on the uplink's cloud connection (hd_uplink_set_cloud_user): the
 * same client id, TLS and credentials, so one connection per node. At every
 * CONNACK it publishes PREFIX/NODE/status "online" (retained; the CONNECT
 * carried the will "offline", set from the config) and the last report
 * hedged gave it, then subscribes to PREFIX/NODE/desired, whose retained
 * document the broker sends at once. A desired document is parsed here,
 * without privileges, and passed to hedged as jansson's compact form of the
 * object (HD_NET_FLEET_DESIRED), or as the reason it could not be read:
 * hedged, which checks the fields, never reads the network's bytes. At a clean shutdown it publishes
 * "offline" itself, since a DISCONNECT tells the broker not to send the will.
 *
 * Events (PREFIX/NODE/events) and forwarded log batches (PREFIX/NODE/logs/NAME,
 * from fleet_logs.c) go through the uplink's durable spool: events in class 1,
 * logs in class 9, the least important, so that a spool full of logs gives
 * way to everything else.
 */
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/log.h"
#include "base/util.h"
#include "daemon/daemon.h"
#include "daemon/netchild_proto.h"
#include "mqtt/topic.h"
#include "uplink/uplink.h"

#define FLEET_EVENTS_PRIORITY 1 /* after class 0 (the operator's most urgent routes), before telemetry */
#define FLEET_LOGS_PRIORITY 9   /* the least important class: logs never push anything else out of the spool */
#define FLEET_LOGS_TTL_MS (24 * 3600 * 1000LL) /* a day's logs wait in the spool, no more */

struct hd_fleet_link {
    struct hd_uplink *uplink;
    int fd; /* the control socket to hedged */
    char *desired, *reported, *status, *events, *jobs, *jobs_prefix, *logs_prefix;
    char *report; /* the last report from hedged, NULL: none yet */
};

static void fleet_link_publish_state(struct hd_fleet_link *l)
{
    hd_uplink_publish_direct(l->uplink, l->status, "online", 6, true);
    if (l->report)
        hd_uplink_publish_direct(l->uplink, l->reported, l->report, strlen(l->report), true);
}

static void fleet_link_on_connect(void *ctx)
{
    fleet_link_publish_state(ctx);
}

static void fleet_link_job_refused(struct hd_fleet_link *l, const char *id, const char *why)
{
    json_t *r = json_pack("{s:s,s:b,s:s}", "id", id, "ok", 0, "error", why);
    cleanup_free char *text = json_dumps(r, JSON_COMPACT);
    json_decref(r);
    hd_fleet_link_result(l, id, text);
}

/* PREFIX/NODE/jobs/ID: a JSON object, passed to hedged in jansson's compact form (docs/fleet.md, Jobs). */
static void fleet_link_on_job(struct hd_fleet_link *l, const char *id, const uint8_t *payload, size_t len)
{
    if (strlen(id) > 64) {
        hd_log(HD_LOG_WARN, "fleet", "job id of %zu characters refused (at most 64)", strlen(id));
        return;
    }
    json_error_t jerr;
    json_t *o =
        len > HD_NET_MAX_MSG - 1024 ? NULL : json_loadb((const char *)payload, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(o)) {
        fleet_link_job_refused(l, id, o ? "the job must be a JSON object" : "the job is not JSON, or too large");
        json_decref(o);
        return;
    }
    cleanup_free char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (hd_net_send(l->fd, HD_NET_FLEET_JOB, 2, (const char *const[]){id, text}) < 0)
        hd_log(HD_LOG_ERROR, "fleet", "control socket: cannot pass on job %s", id);
}

static void fleet_link_on_message(void *ctx, const char *topic, const uint8_t *payload, size_t len)
{
    struct hd_fleet_link *l = ctx;
    size_t jp = strlen(l->jobs_prefix);
    if (strncmp(topic, l->jobs_prefix, jp) == 0) {
        fleet_link_on_job(l, topic + jp, payload, len);
        return;
    }
    if (len == 0) /* the operator cleared the retained document: nothing to apply */
        return;
    /* Read here, without privileges: hedged gets jansson's own compact output of a parsed object, or for
     * a signed envelope {"document": TEXT, "ed25519": SIGNATURE} the signed text as it is (hedged checks
     * the signature before it reads the text). */
    char why[256] = "";
    const char *signature = "";
    json_error_t jerr;
    json_t *o =
        len > HD_NET_MAX_MSG - 1024 ? NULL : json_loadb((const char *)payload, len, JSON_REJECT_DUPLICATES, &jerr);
    if (len > HD_NET_MAX_MSG - 1024)
        snprintf(why, sizeof(why), "desired: the document is %zu bytes, more than the node takes (%d)", len,
                 HD_NET_MAX_MSG - 1024);
    else if (!o)
        snprintf(why, sizeof(why), "desired: line %d column %d: %s", jerr.line, jerr.column, jerr.text);
    else if (!json_is_object(o))
        snprintf(why, sizeof(why), "desired: must be an object, not %s", hd_json_type_name(o));
    cleanup_free char *doc = NULL;
    json_t *signed_text = json_object_get(o, "document"), *sig = json_object_get(o, "ed25519");
    if (!why[0] && (signed_text || sig)) {
        json_t *inner = json_is_string(signed_text)
            ? json_loadb(json_string_value(signed_text), json_string_length(signed_text), JSON_REJECT_DUPLICATES, &jerr)
            : NULL;
        if (!json_is_string(signed_text) || !json_is_string(sig))
            snprintf(why, sizeof(why),
                     "desired: a signed document has \"document\" (a string) and \"ed25519\" "
                     "(its signature in base64)");
        else if (!json_is_object(inner))
            snprintf(why, sizeof(why), "desired.document: %s", inner ? "must be a JSON object" : jerr.text);
        json_decref(inner);
        if (!why[0]) {
            doc = hd_xstrdup(json_string_value(signed_text));
            signature = json_string_value(sig);
        }
    }
    if (!why[0] && !doc)
        doc = json_dumps(o, JSON_COMPACT);
    if (why[0]) {
        free(doc);
        doc = hd_xstrdup("");
        signature = "";
    }
    if (!doc || strlen(doc) > HD_NET_MAX_MSG - 1024) { /* the compact form is never longer, but be sure */
        free(doc);
        doc = hd_xstrdup("");
        signature = "";
        snprintf(why, sizeof(why), "desired: the document is too large for the node");
    }
    const char *f[] = {doc, signature, why};
    int r = hd_net_send(l->fd, HD_NET_FLEET_DESIRED, 3, f);
    json_decref(o); /* after the send: signature points into it */
    if (r < 0)
        hd_log(HD_LOG_ERROR, "fleet", "control socket: cannot pass on the desired document");
}

struct hd_fleet_link *hd_fleet_link_start(const struct hd_daemon_config *cfg, struct hd_daemon_uplink *d, int fd)
{
    struct hd_uplink *u = d ? hd_daemon_uplink_get(d) : NULL;
    if (!cfg->fleet || !u)
        return NULL;
    struct hd_fleet_link *l = hd_xcalloc(1, sizeof(*l));
    l->uplink = u;
    l->fd = fd;
    l->desired = hd_fleet_topic(cfg, "desired");
    l->reported = hd_fleet_topic(cfg, "reported");
    l->status = hd_fleet_topic(cfg, "status");
    l->events = hd_fleet_topic(cfg, "events");
    l->jobs = hd_fleet_topic(cfg, "jobs/+");
    l->jobs_prefix = hd_fleet_topic(cfg, "jobs/");
    l->logs_prefix = hd_fleet_topic(cfg, "logs/");
    char *filters[] = {l->desired, l->jobs, NULL};
    struct hd_uplink_cloud_user user = {
        .filters = filters,
        .on_connect = fleet_link_on_connect,
        .on_message = fleet_link_on_message,
        .ctx = l,
    };
    hd_uplink_set_cloud_user(u, &user);
    return l;
}

void hd_fleet_link_report(struct hd_fleet_link *l, const char *report)
{
    if (!l)
        return;
    free(l->report);
    l->report = hd_xstrdup(report);
    hd_uplink_publish_direct(l->uplink, l->reported, l->report, strlen(l->report), true);
}

void hd_fleet_link_event(struct hd_fleet_link *l, const char *event)
{
    if (!l)
        return;
    struct hd_spool_message m = {
        .topic = l->events, .payload = event, .len = strlen(event), .qos = 1, .priority = FLEET_EVENTS_PRIORITY};
    hd_error_t err = NULL;
    if (hd_uplink_enqueue(l->uplink, &m, &err) < 0) {
        hd_log(HD_LOG_ERROR, "fleet", "event: %s", hd_error_text(err));
        hd_error_free(&err);
    }
}

/* A batch of a deployment's forwarded log lines (fleet_logs.c builds it): through the spool in the least
 * important class, with a day to live. */
void hd_fleet_link_log(struct hd_fleet_link *l, const char *deployment, const char *batch)
{
    if (!l)
        return;
    if (!hd_mqtt_level_valid_name(deployment)) {
        hd_log(HD_LOG_WARN, "fleet", "log batch for \"%s\": not a topic level, dropped", deployment);
        return;
    }
    cleanup_free char *topic = hd_xasprintf("%s%s", l->logs_prefix, deployment);
    struct hd_spool_message m = {.topic = topic,
                                 .payload = batch,
                                 .len = strlen(batch),
                                 .qos = 1,
                                 .priority = FLEET_LOGS_PRIORITY,
                                 .ttl_ms = FLEET_LOGS_TTL_MS};
    hd_error_t err = NULL;
    if (hd_uplink_enqueue(l->uplink, &m, &err) < 0) {
        hd_log(HD_LOG_WARN, "fleet", "log batch of %s: %s", deployment, hd_error_text(err));
        hd_error_free(&err);
    }
}

void hd_fleet_link_result(struct hd_fleet_link *l, const char *id, const char *result)
{
    if (!l)
        return;
    cleanup_free char *topic = hd_xasprintf("%s%s/result", l->jobs_prefix, id);
    hd_uplink_publish_direct(l->uplink, topic, result, strlen(result), false);
}

void hd_fleet_link_stop(struct hd_fleet_link *l)
{
    if (!l)
        return;
    hd_uplink_publish_direct(l->uplink, l->status, "offline", 7, true);
    free(l->desired);
    free(l->reported);
    free(l->status);
    free(l->events);
    free(l->jobs);
    free(l->jobs_prefix);
    free(l->logs_prefix);
    free(l->report);
    free(l);
}
