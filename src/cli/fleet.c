/*
 * fleet.c - `hedge fleet`: the operator's side of the fleet protocol
 * (docs/fleet.md), an MQTT client of the cloud broker; it runs anywhere.
 *
 *   hedge fleet [FLAGS] ls
 *   hedge fleet [FLAGS] status NODE
 *   hedge fleet [FLAGS] deploy NODE|-l KEY=VALUE SPEC.json...
 *   hedge fleet [FLAGS] rm NODE|-l KEY=VALUE NAME...
 *   hedge fleet [FLAGS] wait NODE...
 *   hedge fleet [FLAGS] rollout -l KEY=VALUE [--canaries N] SPEC.json...
 *   hedge fleet [FLAGS] [--id ID] job NODE restart NAME | job NODE logs NAME [-n LINES]
 *   hedge fleet [FLAGS] [--id ID] job NODE bench SPEC.json [--runs N] [--port P] [--isolation LIST]
 *   hedge fleet [FLAGS] [--id ID] rollback NODE NAME
 *   hedge fleet [FLAGS] [--id ID] logs NODE NAME [-n LINES] [-f]
 *   FLAGS: --broker HOST:PORT (default 127.0.0.1:1883), --prefix P (default hedge/), --timeout SECONDS
 *          (default 60 for wait, else 10), --ca FILE, --cert FILE, --key FILE (TLS), --sign-key FILE (an
 *          Ed25519 private key: desired documents go out signed), $HEDGE_FLEET_USER and
 *          $HEDGE_FLEET_PASSWORD (MQTT credentials)
 *
 * Every verb starts from a snapshot of the fleet: subscribe to P+/status, P+/reported and P+/desired and
 * keep what the broker sends until nothing new has come for a moment (the retained messages come right
 * after the SUBACK). deploy and rm change each target node's desired document (the generation goes up)
 * and publish it retained; wait keeps reading until every node named reports its desired generation
 * applied; rollout goes canaries first (fleet_rollout); job, rollback and logs publish a job and wait for
 * its result (fleet_ask); logs -f then prints the node's forwarded log batches until SIGINT. Exit codes: 0 done; 1 a node reported errors for the
 * generation it applied (wait), a rollout halted or a node of it failed, or no node matched; 2 usage; 124 wait timed out; 125 the broker could not be reached or refused.
 */
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/util.h"
#include "cli/cli.h"
#include "mqtt/client.h"
#include "mqtt/topic.h"
#include "secret/sign.h"

#define FLEET_QUIET_NS 300000000ull /* the snapshot is complete after this long without a retained message */
#define FLEET_EXIT_TIMEOUT 124
#define JOB_USAGE \
    "job NODE restart NAME | job NODE logs NAME [-n LINES] | job NODE bench SPEC [--runs N] [--port P] " \
    "[--isolation LIST]"
#define FLEET_FOLLOW_SUBSCRIBE_NS 10000000000ull /* logs -f: how long the broker has to grant the subscription */

static const char usage_text[] =
    "hedge fleet [--broker HOST:PORT] [--prefix P] [--timeout S] [--ca F] [--cert F --key F] [--sign-key F] VERB\n"
    "  ls                               every node: status, generation applied/desired, deployments, errors\n"
    "  status NODE                      the node's reported document\n"
    "  deploy NODE|-l KEY=VALUE SPEC... add or replace deployments in the desired document(s)\n"
    "  rm NODE|-l KEY=VALUE NAME...     take deployments out of the desired document(s)\n"
    "  wait NODE...                     until each node reports its desired generation applied\n"
    "  job NODE restart NAME | job NODE logs NAME [-n LINES]   [--id ID: ask again]\n"
    "  job NODE bench SPEC [--runs N] [--port P] [--isolation LIST]\n"
    "                                   hedge bench on the node; prints its report (JSON)\n"
    "  rollback NODE NAME               roll NAME back to its previous version (health-gated), then make that\n"
    "                                   spec the node's desired one\n"
    "  logs NODE NAME [-n LINES] [-f]   the last LINES (default 100) of its log; -f: then the forwarded lines\n"
    "  rollout -l KEY=VALUE [--canaries N] SPEC...\n"
    "                                   staged: N canaries (default 1) first, the rest once they are healthy;\n"
    "                                   a failing canary halts it and gets its previous document back";

struct fleet {
    struct hd_mqtt_client *c;
    const char *prefix;
    const char *sign_key; /* an Ed25519 private key (PEM): desired documents go out signed */
    json_t *nodes;        /* node -> {"status": "...", "reported": {...}, "desired": {...}} */
    bool connected, subscribed, failed;
    uint64_t last_message_ns;
    uint16_t next_id;
    int unacked;              /* our QoS 1 publishes not yet acknowledged */
    const char *follow_topic; /* logs -f: the batches on this topic are printed as they come */
    char *error;
};

static void fleet_on_connect(void *ctx, bool session_present)
{
    struct fleet *f = ctx;
    f->connected = true;
    char *filters[4];
    filters[0] = hd_xasprintf("%s+/status", f->prefix);
    filters[1] = hd_xasprintf("%s+/reported", f->prefix);
    filters[2] = hd_xasprintf("%s+/desired", f->prefix);
    filters[3] = NULL;
    hd_mqtt_subscribe(f->c, ++f->next_id, filters, 1);
    for (int i = 0; i < 3; i++)
        free(filters[i]);
}

static void fleet_on_suback(void *ctx, uint16_t id, const uint8_t *codes, size_t n)
{
    struct fleet *f = ctx;
    for (size_t i = 0; i < n; i++)
        if (codes[i] >= 0x80) {
            f->failed = true;
            f->error = hd_xstrdup("the broker refused the subscription to the fleet's topics (not authorized?)");
        }
    f->subscribed = true;
    f->last_message_ns = hd_now_ns();
}

static void fleet_print_batch(const struct hd_mqtt_message *m);

static void fleet_on_message(void *ctx, const struct hd_mqtt_message *m)
{
    struct fleet *f = ctx;
    f->last_message_ns = hd_now_ns();
    if (m->qos)
        hd_mqtt_puback(f->c, m->packet_id);
    if (f->follow_topic && strcmp(m->topic, f->follow_topic) == 0) {
        fleet_print_batch(m);
        return;
    }
    size_t plen = strlen(f->prefix);
    if (strncmp(m->topic, f->prefix, plen) != 0)
        return;
    const char *node = m->topic + plen, *slash = strchr(node, '/');
    if (!slash || slash == node)
        return;
    cleanup_free char *name = hd_xasprintf("%.*s", (int)(slash - node), node);
    const char *leaf = slash + 1;
    json_t *entry = json_object_get(f->nodes, name);
    if (!entry) {
        entry = json_object();
        json_object_set_new(f->nodes, name, entry);
    }
    if (m->payload_len == 0) { /* a cleared retained message */
        json_object_del(entry, leaf);
        return;
    }
    if (strcmp(leaf, "status") == 0) {
        json_object_set_new(entry, leaf, json_stringn((const char *)m->payload, m->payload_len));
        return;
    }
    json_t *doc = json_loadb((const char *)m->payload, m->payload_len, 0, NULL);
    json_t *signed_text = json_object_get(doc, "document");
    if (json_is_string(signed_text)) { /* a signed envelope: the document is its text */
        json_t *inner = json_loads(json_string_value(signed_text), 0, NULL);
        json_decref(doc);
        doc = inner;
    }
    if (json_is_object(doc))
        json_object_set_new(entry, leaf, doc);
    else
        json_decref(doc);
}

static void fleet_on_puback(void *ctx, uint16_t id, uint8_t reason)
{
    struct fleet *f = ctx;
    f->unacked--;
    if (reason >= 0x80) {
        f->failed = true;
        free(f->error);
        f->error = hd_xasprintf("the broker refused a desired document (reason 0x%02x: not authorized?)", reason);
    }
}

static void fleet_on_disconnect(void *ctx, const char *reason)
{
    struct fleet *f = ctx;
    f->failed = true;
    if (!f->error)
        f->error = hd_xstrdup(reason);
}

/* Serve the connection until done(f) or the deadline: 0, -1 on a broker failure (f->error), 1 at the deadline. */
static int fleet_run(struct fleet *f, bool (*done)(struct fleet *f, void *arg), void *arg, uint64_t deadline)
{
    while (!f->failed) {
        if (done(f, arg))
            return 0;
        uint64_t now = hd_now_ns();
        if (now >= deadline)
            return 1;
        struct pollfd p = {.fd = hd_mqtt_client_fd(f->c), .events = hd_mqtt_client_events(f->c)};
        uint64_t left_ms = (deadline - now) / 1000000 + 1;
        if (poll(&p, 1, left_ms > 50 ? 50 : (int)left_ms) > 0)
            hd_mqtt_client_handle(f->c, p.revents);
        hd_mqtt_client_flush(f->c);
        hd_mqtt_client_tick(f->c, hd_now_ns());
    }
    return -1;
}

static bool fleet_snapshot_done(struct fleet *f, void *arg)
{
    return f->subscribed && hd_now_ns() - f->last_message_ns >= FLEET_QUIET_NS;
}

static bool fleet_acked(struct fleet *f, void *arg)
{
    return f->unacked == 0;
}

static int64_t doc_generation(json_t *entry, const char *which)
{
    json_t *g = json_object_get(json_object_get(entry, which), "generation");
    return json_is_integer(g) ? json_integer_value(g) : -1;
}

/* ---- ls, status ---- */

/* "12s ago", "5m ago", "3h ago", "2d ago": how long ago a report's facts were read (facts.time_ms), or "-". */
static void fleet_age(json_t *facts, char *out, size_t size)
{
    json_t *t = json_object_get(facts, "time_ms");
    if (!json_is_integer(t)) {
        snprintf(out, size, "-");
        return;
    }
    int64_t s = (hd_wall_ms() - (int64_t)json_integer_value(t)) / 1000;
    if (s < 0)
        s = 0;
    if (s < 120)
        snprintf(out, size, "%llds ago", (long long)s);
    else if (s < 7200)
        snprintf(out, size, "%lldm ago", (long long)(s / 60));
    else if (s < 172800)
        snprintf(out, size, "%lldh ago", (long long)(s / 3600));
    else
        snprintf(out, size, "%lldd ago", (long long)(s / 86400));
}

static int fleet_ls(struct fleet *f)
{
    printf("%-20s %-8s %-9s %-9s %-11s %-6s %-6s %-9s %s\n", "NODE", "STATUS", "APPLIED", "DESIRED", "DEPLOYMENTS",
           "ERRORS", "SPOOL", "VERSION", "LAST SEEN");
    const char *name;
    json_t *e;
    json_object_foreach(f->nodes, name, e)
    {
        json_t *reported = json_object_get(e, "reported");
        json_t *deployments = json_object_get(reported, "deployments");
        size_t running = 0;
        const char *k;
        json_t *d;
        json_object_foreach(deployments, k, d) running +=
            strcmp(json_string_value(json_object_get(d, "state")) ?: "", "running") == 0;
        char applied[24] = "-", desired[24] = "-", deps[32] = "-";
        if (doc_generation(e, "reported") >= 0)
            snprintf(applied, sizeof(applied), "%lld", (long long)doc_generation(e, "reported"));
        if (doc_generation(e, "desired") >= 0)
            snprintf(desired, sizeof(desired), "%lld", (long long)doc_generation(e, "desired"));
        if (reported)
            snprintf(deps, sizeof(deps), "%zu/%zu running", running, json_object_size(deployments));
        const char *status = json_string_value(json_object_get(e, "status"));
        json_t *facts = json_object_get(reported, "facts");
        char spool[24] = "-", seen[24];
        if (json_is_integer(json_object_get(facts, "spool_depth")))
            snprintf(spool, sizeof(spool), "%lld",
                     (long long)json_integer_value(json_object_get(facts, "spool_depth")));
        fleet_age(facts, seen, sizeof(seen));
        const char *version = json_string_value(json_object_get(facts, "hedge_version"));
        printf("%-20s %-8s %-9s %-9s %-11s %-6zu %-6s %-9s %s\n", name, status ? status : "-", applied, desired, deps,
               json_object_size(json_object_get(reported, "errors")), spool, version ? version : "-", seen);
    }
    return 0;
}

static int fleet_status(struct fleet *f, const char *node)
{
    json_t *e = json_object_get(f->nodes, node);
    if (!e || !json_object_get(e, "reported")) {
        fprintf(stderr, "hedge fleet: no node %s has reported under %s\n", node, f->prefix);
        return 1;
    }
    json_t *out = json_deep_copy(json_object_get(e, "reported"));
    json_object_set(out, "status", json_object_get(e, "status") ?: json_null());
    json_object_set_new(out, "desired_generation",
                        doc_generation(e, "desired") >= 0 ? json_integer(doc_generation(e, "desired")) : json_null());
    char *text = json_dumps(out, JSON_INDENT(2) | JSON_SORT_KEYS);
    puts(text);
    free(text);
    json_decref(out);
    return 0;
}

/* ---- deploy, rm ---- */

/* The nodes a NODE or -l KEY=VALUE operand names: a node named is taken as it is (it may not have
 * reported yet); a label matches the nodes whose reported facts.labels hold it. */
static json_t *fleet_targets(struct fleet *f, const char *node, const char *label)
{
    json_t *names = json_array();
    if (node || !label) {
        if (node)
            json_array_append_new(names, json_string(node));
        return names;
    }
    const char *eq = strchr(label, '=');
    cleanup_free char *key = hd_xasprintf("%.*s", (int)(eq - label), label);
    const char *name;
    json_t *e;
    json_object_foreach(f->nodes, name, e)
    {
        json_t *labels = json_object_get(json_object_get(json_object_get(e, "reported"), "facts"), "labels");
        const char *v = json_string_value(json_object_get(labels, key));
        if (v && strcmp(v, eq + 1) == 0)
            json_array_append_new(names, json_string(name));
    }
    return names;
}

/* Publish the node's next desired document: its current one (or an empty one) with deployments_to_set
 * added or replaced and names_to_rm taken out; with replace_all, deployments_to_set is the whole set. */
static int64_t fleet_publish_desired(struct fleet *f, const char *node, json_t *deployments_to_set, char **names_to_rm,
                                     bool replace_all)
{
    json_t *e = json_object_get(f->nodes, node);
    json_t *doc = json_deep_copy(json_object_get(e, "desired"));
    if (!doc)
        doc = json_object();
    if (replace_all)
        json_object_set_new(doc, "deployments", json_object());
    json_t *deployments = json_object_get(doc, "deployments");
    if (!json_is_object(deployments)) {
        deployments = json_object();
        json_object_set_new(doc, "deployments", deployments);
    }
    if (deployments_to_set)
        json_object_update(deployments, deployments_to_set);
    for (char **n = names_to_rm; n && *n; n++)
        json_object_del(deployments, *n);
    int64_t g = doc_generation(e, "desired"), r = doc_generation(e, "reported");
    int64_t next = (g > r ? g : r) + 1;
    json_object_set_new(doc, "generation", json_integer(next < 1 ? 1 : next));
    cleanup_free char *topic = hd_xasprintf("%s%s/desired", f->prefix, node);
    cleanup_free char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    if (f->sign_key) { /* {"document": TEXT, "ed25519": its signature}: the node checks the exact bytes */
        hd_error_t err = NULL;
        cleanup_free char *sig = hd_sign_ed25519(f->sign_key, text, strlen(text), &err);
        if (!sig) {
            if (!f->error)
                f->error = hd_xasprintf("--sign-key: %s", hd_error_text(err));
            hd_error_free(&err);
            f->failed = true;
            json_decref(doc);
            return -1;
        }
        json_t *envelope = json_pack("{s:s,s:s}", "document", text, "ed25519", sig);
        free(text);
        text = json_dumps(envelope, JSON_COMPACT);
        json_decref(envelope);
    }
    hd_mqtt_publish(f->c, topic, text, strlen(text), 1, true, ++f->next_id ? f->next_id : ++f->next_id, NULL, 0);
    f->unacked++;
    int64_t generation = json_integer_value(json_object_get(doc, "generation"));
    printf("%s: generation %lld\n", node, (long long)generation);
    json_decref(doc);
    return generation;
}

/* {name: spec} of the SPEC files; NULL with err naming the file. */
static json_t *fleet_load_specs(char **files, hd_error_t *err)
{
    json_t *set = json_object();
    for (char **p = files; *p; p++) {
        json_error_t jerr;
        json_t *spec = json_load_file(*p, JSON_REJECT_DUPLICATES, &jerr);
        const char *name = json_string_value(json_object_get(spec, "name"));
        if (!json_is_object(spec) || !name) {
            json_decref(spec);
            json_decref(set);
            hd_error_set(err, 0, "%s: %s", *p,
                         !spec ? jerr.text : "must be a workload spec with a \"name\" (docs/spec.md)");
            return NULL;
        }
        json_object_set_new(set, name, spec);
    }
    return set;
}

static int fleet_change(struct fleet *f, bool deploy, const char *node, const char *label, char **operands,
                        uint64_t deadline)
{
    json_t *set = NULL;
    hd_error_t err = NULL;
    if (deploy && !(set = fleet_load_specs(operands, &err)))
        return cli_fail(&err);
    json_t *targets = fleet_targets(f, node, label);
    if (json_array_size(targets) == 0) {
        fprintf(stderr, "hedge fleet: no node reports the label %s\n", label);
        json_decref(targets);
        json_decref(set);
        return 1;
    }
    size_t i;
    json_t *t;
    json_array_foreach(targets, i, t)
        fleet_publish_desired(f, json_string_value(t), set, deploy ? NULL : operands, false);
    json_decref(targets);
    json_decref(set);
    hd_mqtt_client_flush(f->c);
    int r = fleet_run(f, fleet_acked, NULL, deadline);
    if (r != 0) {
        fprintf(stderr, "hedge fleet: %s\n", r < 0 ? f->error : "the broker did not acknowledge in time");
        return HD_EXIT_HEDGE;
    }
    return 0;
}

/* ---- wait ---- */

static bool fleet_converged(struct fleet *f, void *arg)
{
    for (char **n = arg; *n; n++) {
        json_t *e = json_object_get(f->nodes, *n);
        json_t *applying = json_object_get(json_object_get(e, "reported"), "applying");
        int64_t want = doc_generation(e, "desired");
        if (want < 0 || doc_generation(e, "reported") < want || (applying && !json_is_null(applying)))
            return false;
    }
    return true;
}

static int fleet_wait(struct fleet *f, char **nodes, uint64_t deadline)
{
    int r = fleet_run(f, fleet_converged, nodes, deadline);
    if (r < 0) {
        fprintf(stderr, "hedge fleet: %s\n", f->error);
        return HD_EXIT_HEDGE;
    }
    int code = 0;
    for (char **n = nodes; *n; n++) {
        json_t *e = json_object_get(f->nodes, *n);
        json_t *errors = json_object_get(json_object_get(e, "reported"), "errors");
        if (r == 1 && !fleet_converged(f, (char *[]){*n, NULL})) {
            printf("%s: not converged (applied %lld, desired %lld)\n", *n, (long long)doc_generation(e, "reported"),
                   (long long)doc_generation(e, "desired"));
            code = FLEET_EXIT_TIMEOUT;
            continue;
        }
        printf("%s: generation %lld applied%s\n", *n, (long long)doc_generation(e, "reported"),
               json_object_size(errors) ? " with errors:" : "");
        const char *k;
        json_t *v;
        json_object_foreach(errors, k, v) printf("  %s: %s\n", k, json_string_value(v));
        if (json_object_size(errors) && code == 0)
            code = 1;
    }
    return code;
}

/* ---- rollout ---- */

struct rollout_stage {
    const char *what;   /* "canaries", "the rest" */
    json_t *nodes;      /* [name] */
    json_t *generation; /* {name: the generation published to it} */
};

/* Every node of the stage reports its generation applied; on a terminal, a progress bar. */
static bool rollout_stage_done(struct fleet *f, void *arg)
{
    struct rollout_stage *s = arg;
    size_t done = 0, i;
    json_t *n;
    json_array_foreach(s->nodes, i, n)
    {
        json_t *e = json_object_get(f->nodes, json_string_value(n));
        json_t *applying = json_object_get(json_object_get(e, "reported"), "applying");
        int64_t want = json_integer_value(json_object_get(s->generation, json_string_value(n)));
        done += doc_generation(e, "reported") >= want && (!applying || json_is_null(applying));
    }
    size_t total = json_array_size(s->nodes);
    if (isatty(STDOUT_FILENO)) {
        char bar[31];
        size_t filled = total ? done * 30 / total : 30;
        memset(bar, '#', filled);
        memset(bar + filled, '.', 30 - filled);
        bar[30] = '\0';
        printf("\r%-9s [%s] %zu/%zu applied", s->what, bar, done, total);
        if (done == total)
            printf("\n");
        fflush(stdout);
    }
    return done == total;
}

/* Why the node is not healthy with these deployments, or NULL: errors reported, or one not running. */
static char *rollout_unhealthy(struct fleet *f, const char *node, json_t *set)
{
    json_t *reported = json_object_get(json_object_get(f->nodes, node), "reported");
    json_t *errors = json_object_get(reported, "errors");
    const char *k;
    json_t *v;
    json_object_foreach(errors, k, v) return hd_xasprintf("%s: %s", k, json_string_value(v));
    json_object_foreach(set, k, v)
    {
        const char *state =
            json_string_value(json_object_get(json_object_get(json_object_get(reported, "deployments"), k), "state"));
        if (!state || strcmp(state, "running") != 0)
            return hd_xasprintf("deployment %s is %s", k, state ? state : "missing");
    }
    return NULL;
}

static int rollout_publish_and_wait(struct fleet *f, struct rollout_stage *s, json_t *set, json_t *previous,
                                    uint64_t deadline)
{
    size_t i;
    json_t *n;
    json_array_foreach(s->nodes, i, n)
    {
        const char *node = json_string_value(n);
        json_t *whole = previous ? json_object_get(previous, node) : NULL;
        int64_t g = fleet_publish_desired(f, node, whole ? whole : set, NULL, whole != NULL);
        json_object_set_new(s->generation, node, json_integer(g));
    }
    hd_mqtt_client_flush(f->c);
    int r = fleet_run(f, rollout_stage_done, s, deadline);
    if (r < 0)
        fprintf(stderr, "hedge fleet: %s\n", f->error ? f->error : "the broker connection failed");
    return r;
}

/*
 * Staged rollout to a label: the canaries (the first N nodes by name) get the specs first; only when
 * every canary reports them applied and running does the rest get them. A canary that fails (errors
 * reported, a deployment not running, or no answer in time) halts the rollout, and the canaries get
 * their previous desired documents back (as a new generation).
 */
static int fleet_rollout(struct fleet *f, const char *label, int canaries, char **files, double stage_timeout)
{
    hd_error_t err = NULL;
    json_t *set = fleet_load_specs(files, &err);
    if (!set)
        return cli_fail(&err);
    json_t *targets = fleet_targets(f, NULL, label);
    int code = 0;
    cleanup_free char *why = NULL;
    if (json_array_size(targets) == 0) {
        fprintf(stderr, "hedge fleet: no node reports the label %s\n", label);
        code = 1;
        goto out;
    }
    struct rollout_stage first = {"canaries", json_array(), json_object()},
                         rest = {"the rest", json_array(), json_object()};
    json_t *previous = json_object();
    size_t i;
    json_t *n;
    json_array_foreach(targets, i, n)
    {
        json_array_append(i < (size_t)canaries ? first.nodes : rest.nodes, n);
        json_t *d =
            json_object_get(json_object_get(json_object_get(f->nodes, json_string_value(n)), "desired"), "deployments");
        json_object_set_new(previous, json_string_value(n), d ? json_deep_copy(d) : json_object());
    }
    printf("rollout to %zu node%s with %s: %zu canar%s first\n", json_array_size(targets),
           json_array_size(targets) == 1 ? "" : "s", label, json_array_size(first.nodes),
           json_array_size(first.nodes) == 1 ? "y" : "ies");
    int r = rollout_publish_and_wait(f, &first, set, NULL, hd_now_ns() + (uint64_t)(stage_timeout * 1e9));
    const char *failed = NULL;
    json_array_foreach(first.nodes, i, n)
    {
        if (r != 0 || (why = rollout_unhealthy(f, json_string_value(n), set))) {
            failed = json_string_value(n);
            if (!why)
                why = hd_xstrdup(r > 0 ? "did not report the generation applied in time" : "broker failure");
            break;
        }
    }
    if (failed) {
        printf("rollout halted: canary %s: %s\nrolling the canaries back to their previous documents\n", failed, why);
        struct rollout_stage back = {"rollback", first.nodes, json_object()};
        rollout_publish_and_wait(f, &back, NULL, previous, hd_now_ns() + (uint64_t)(stage_timeout * 1e9));
        json_decref(back.generation);
        code = 1;
    } else if (json_array_size(rest.nodes)) {
        r = rollout_publish_and_wait(f, &rest, set, NULL, hd_now_ns() + (uint64_t)(stage_timeout * 1e9));
        json_array_foreach(rest.nodes, i, n)
        {
            cleanup_free char *bad = r == 0 ? rollout_unhealthy(f, json_string_value(n), set) : NULL;
            if (r != 0 || bad) {
                printf("%s: %s\n", json_string_value(n), bad ? bad : "did not report the generation applied in time");
                code = 1;
            }
        }
    }
    if (!code)
        printf("rollout done: %zu node%s\n", json_array_size(targets), json_array_size(targets) == 1 ? "" : "s");
    json_decref(first.nodes);
    json_decref(first.generation);
    json_decref(rest.nodes);
    json_decref(rest.generation);
    json_decref(previous);
out:
    json_decref(targets);
    json_decref(set);
    return code;
}

/* ---- job, rollback, logs ---- */

struct job_wait {
    const char *node, *leaf;
    bool subscribed;
};

static bool fleet_job_answered(struct fleet *f, void *arg)
{
    struct job_wait *w = arg;
    return json_object_get(json_object_get(f->nodes, w->node), w->leaf) != NULL;
}

static bool fleet_subscribed(struct fleet *f, void *arg)
{
    return f->unacked == 0 && ((struct job_wait *)arg)->subscribed;
}

/* Subscribe to the filter and wait for the SUBACK: 0, or the exit code after printing why. */
static int fleet_subscribe(struct fleet *f, const char *filter, uint64_t deadline)
{
    char *filters[] = {(char *)filter, NULL};
    f->subscribed = false;
    hd_mqtt_subscribe(f->c, ++f->next_id ? f->next_id : ++f->next_id, filters, 1);
    hd_mqtt_client_flush(f->c);
    if (fleet_run(f, fleet_snapshot_done, NULL, deadline) != 0) {
        fprintf(stderr, "hedge fleet: %s\n", f->error ? f->error : "the broker did not answer in time");
        return HD_EXIT_HEDGE;
    }
    return 0;
}

/*
 * Publish the request (taken) to PREFIX/NODE/jobs/ID and wait for its result: 0 with *result (owned by
 * f->nodes) when the node answered ok; else the exit code, after saying why: 1 the job failed, 124 no
 * result in time, 125 the broker.
 */
static int fleet_ask(struct fleet *f, const char *node, const char *id, json_t *request, uint64_t deadline,
                     json_t **result)
{
    cleanup_free char *text = json_dumps(request, JSON_COMPACT);
    json_decref(request);
    cleanup_free char *leaf = hd_xasprintf("jobs/%s/result", id);
    cleanup_free char *result_topic = hd_xasprintf("%s%s/%s", f->prefix, node, leaf);
    cleanup_free char *job_topic = hd_xasprintf("%s%s/jobs/%s", f->prefix, node, id);
    struct job_wait w = {node, leaf, false};
    int code = fleet_subscribe(f, result_topic, deadline);
    if (code)
        return code;
    w.subscribed = true;
    hd_mqtt_publish(f->c, job_topic, text, strlen(text), 1, false, ++f->next_id ? f->next_id : ++f->next_id, NULL, 0);
    f->unacked++;
    hd_mqtt_client_flush(f->c);
    int r = fleet_run(f, fleet_subscribed, &w, deadline);
    if (r == 0)
        r = fleet_run(f, fleet_job_answered, &w, deadline);
    if (r < 0) {
        fprintf(stderr, "hedge fleet: %s\n", f->error ? f->error : "the broker connection failed");
        return HD_EXIT_HEDGE;
    }
    if (r > 0) {
        fprintf(stderr, "hedge fleet: job %s: no result from %s in time (is it online? `--id %s` asks again)\n", id,
                node, id);
        return FLEET_EXIT_TIMEOUT;
    }
    json_t *res = json_object_get(json_object_get(f->nodes, node), leaf);
    if (!json_is_true(json_object_get(res, "ok"))) {
        fprintf(stderr, "hedge fleet: job %s on %s: %s\n", id, node,
                json_string_value(json_object_get(res, "error")) ?: "failed");
        return 1;
    }
    *result = res;
    return 0;
}

/* `job NODE restart NAME` or `job NODE logs NAME [-n N]`: publish PREFIX/NODE/jobs/ID, wait for its result. */
static int fleet_job(struct fleet *f, const char *node, char **args, int n_args, const char *id, uint64_t deadline)
{
    static const char what[] = JOB_USAGE;
    json_t *request = NULL;
    if (n_args >= 2 && strcmp(args[0], "bench") == 0) {
        hd_error_t err = NULL;
        json_t *set = fleet_load_specs((char *[]){args[1], NULL}, &err);
        if (!set)
            return cli_fail(&err);
        request = json_pack("{s:s,s:O}", "type", "bench", "spec", json_object_iter_value(json_object_iter(set)));
        json_decref(set);
        for (int i = 2; i < n_args; i += 2) {
            const char *flag = args[i], *value = i + 1 < n_args ? args[i + 1] : NULL;
            if (value && (strcmp(flag, "--runs") == 0 || strcmp(flag, "--port") == 0))
                json_object_set_new(request, flag + 2, json_integer(atoi(value)));
            else if (value && strcmp(flag, "--isolation") == 0)
                json_object_set_new(request, "isolation", json_string(value));
            else {
                json_decref(request);
                return cli_usage_error("fleet", usage_text, what);
            }
        }
    } else if (n_args == 2 && strcmp(args[0], "restart") == 0)
        request = json_pack("{s:s,s:s}", "type", "restart", "deployment", args[1]);
    else if ((n_args == 2 || (n_args == 4 && strcmp(args[2], "-n") == 0)) && strcmp(args[0], "logs") == 0)
        request = json_pack("{s:s,s:s,s:i}", "type", "logs", "deployment", args[1], "lines",
                            n_args == 4 ? atoi(args[3]) : 100);
    else
        return cli_usage_error("fleet", usage_text, what);
    if (!request) /* not UTF-8 */
        return cli_usage_error("fleet", usage_text, "'%s' is not a deployment name", args[1]);
    json_t *res;
    int code = fleet_ask(f, node, id, request, deadline, &res);
    if (code)
        return code;
    if (strcmp(args[0], "logs") == 0) {
        size_t i;
        json_t *line;
        json_array_foreach(json_object_get(res, "lines"), i, line) if (json_is_string(line))
            puts(json_string_value(line));
    } else if (strcmp(args[0], "bench") == 0) { /* hedge bench's report.json */
        char *text = json_dumps(json_object_get(res, "report"), JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        puts(text ? text : "{}");
        free(text);
    } else {
        printf("%s: %s restarted (%s)\n", node, args[1], json_string_value(json_object_get(res, "state")) ?: "?");
    }
    return 0;
}

/*
 * `rollback NODE NAME`: the rollback job (hedged's health-gated rollback to the previous good version),
 * then, for a fleet deployment, the node's next desired document with the spec that runs now, so that
 * desired and reported agree again; waits until the node applied it.
 */
static int fleet_rollback(struct fleet *f, const char *node, const char *name, const char *id, uint64_t deadline)
{
    json_t *request = json_pack("{s:s,s:s}", "type", "rollback", "deployment", name);
    if (!request)
        return cli_usage_error("fleet", usage_text, "'%s' is not a deployment name", name);
    json_t *res;
    int code = fleet_ask(f, node, id, request, deadline, &res);
    if (code)
        return code;
    json_t *spec = json_object_get(res, "spec");
    printf("%s: %s rolled back to version %lld (%s)\n", node, name,
           (long long)json_integer_value(json_object_get(res, "version")),
           json_string_value(json_object_get(res, "digest")) ?: "?");
    if (!json_is_object(spec) || strcmp(json_string_value(json_object_get(res, "managed")) ?: "", "fleet") != 0) {
        printf("%s: %s is a local deployment: no desired document to change\n", node, name);
        return 0;
    }
    json_t *set = json_pack("{s:O}", name, spec);
    int64_t g = fleet_publish_desired(f, node, set, NULL, false);
    json_decref(set);
    if (g < 0) {
        fprintf(stderr, "hedge fleet: %s\n", f->error);
        return HD_EXIT_HEDGE;
    }
    /* wait for this generation, not for the one the broker may not have echoed back yet */
    json_t *entry = json_object_get(f->nodes, node), *desired = json_object_get(entry, "desired");
    if (json_is_object(desired))
        json_object_set_new(desired, "generation", json_integer(g));
    else if (entry)
        json_object_set_new(entry, "desired", json_pack("{s:I}", "generation", (json_int_t)g));
    hd_mqtt_client_flush(f->c);
    int r = fleet_run(f, fleet_acked, NULL, deadline);
    if (r != 0) {
        fprintf(stderr, "hedge fleet: %s\n", r < 0 ? f->error : "the broker did not acknowledge in time");
        return HD_EXIT_HEDGE;
    }
    return fleet_wait(f, (char *[]){(char *)node, NULL}, deadline);
}

static volatile sig_atomic_t fleet_interrupted;

static void fleet_on_sigint(int sig)
{
    fleet_interrupted = 1;
}

static bool fleet_stop_following(struct fleet *f, void *arg)
{
    return fleet_interrupted;
}

/* A batch of forwarded log lines: {"deployment", "lines": [...], "dropped": N, "ts"}. */
static void fleet_print_batch(const struct hd_mqtt_message *m)
{
    json_t *batch = json_loadb((const char *)m->payload, m->payload_len, 0, NULL);
    size_t i;
    json_t *line;
    json_array_foreach(json_object_get(batch, "lines"), i, line) if (json_is_string(line))
        puts(json_string_value(line));
    json_int_t dropped = json_integer_value(json_object_get(batch, "dropped"));
    if (dropped > 0)
        fprintf(stderr, "hedge fleet: %lld line%s dropped by the node's rate cap\n", (long long)dropped,
                dropped == 1 ? "" : "s");
    fflush(stdout);
    json_decref(batch);
}

/* `logs NODE NAME [-n LINES] [-f]`: the logs job's tail; with -f, then the forwarded batches until SIGINT. */
static int fleet_logs(struct fleet *f, const char *node, const char *name, int lines, bool follow, const char *id,
                      uint64_t deadline)
{
    json_t *request = json_pack("{s:s,s:s,s:i}", "type", "logs", "deployment", name, "lines", lines);
    if (!request)
        return cli_usage_error("fleet", usage_text, "'%s' is not a deployment name", name);
    json_t *res;
    int code = fleet_ask(f, node, id, request, deadline, &res);
    if (code)
        return code;
    size_t i;
    json_t *line;
    json_array_foreach(json_object_get(res, "lines"), i, line) if (json_is_string(line)) puts(json_string_value(line));
    fflush(stdout);
    if (!follow)
        return 0;
    cleanup_free char *topic = hd_xasprintf("%s%s/logs/%s", f->prefix, node, name);
    struct sigaction sa = {.sa_handler = fleet_on_sigint};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    f->follow_topic = topic;
    code = fleet_subscribe(f, topic, hd_now_ns() + FLEET_FOLLOW_SUBSCRIBE_NS);
    if (code == 0 && fleet_run(f, fleet_stop_following, NULL, UINT64_MAX) < 0) {
        fprintf(stderr, "hedge fleet: %s\n", f->error ? f->error : "the broker connection failed");
        code = HD_EXIT_HEDGE;
    }
    f->follow_topic = NULL;
    return code;
}
int cmd_fleet(int argc, char **argv)
{
    const char *broker = "127.0.0.1:1883", *prefix = "hedge/", *label = NULL, *sign_key = NULL, *job_id = NULL;
    double timeout = -1; /* not given */
    struct hd_mqtt_tls tls = {0};
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return cli_help(usage_text);
        if (i + 1 >= argc)
            return cli_usage_error("fleet", usage_text, "%s needs a value", argv[i]);
        if (strcmp(argv[i], "--broker") == 0)
            broker = argv[++i];
        else if (strcmp(argv[i], "--prefix") == 0)
            prefix = argv[++i];
        else if (strcmp(argv[i], "--timeout") == 0) {
            timeout = atof(argv[++i]);
            if (timeout <= 0)
                return cli_usage_error("fleet", usage_text, "--timeout must be more than 0");
        } else if (strcmp(argv[i], "--ca") == 0)
            tls.enabled = true, tls.ca_file = argv[++i];
        else if (strcmp(argv[i], "--cert") == 0)
            tls.enabled = true, tls.cert_file = argv[++i];
        else if (strcmp(argv[i], "--key") == 0)
            tls.enabled = true, tls.key_file = argv[++i];
        else if (strcmp(argv[i], "--sign-key") == 0)
            sign_key = argv[++i];
        else if (strcmp(argv[i], "--id") == 0)
            job_id = argv[++i];
        else
            return cli_usage_error("fleet", usage_text, "unknown option %s", argv[i]);
    }
    if (i >= argc)
        return cli_usage_error("fleet", usage_text, "which verb?");
    const char *verb = argv[i++];
    char **rest = argv + i;
    int n_rest = argc - i;
    int canaries = 1, log_lines = 100;
    bool follow = false;
    bool is_job = strcmp(verb, "job") == 0, is_rollback = strcmp(verb, "rollback") == 0,
         is_logs = strcmp(verb, "logs") == 0;
    if (is_job || is_rollback || is_logs) {
        if (is_logs) {
            int n = 2;
            for (; n < n_rest; n++) {
                if (strcmp(rest[n], "-f") == 0)
                    follow = true;
                else if (strcmp(rest[n], "-n") == 0 && n + 1 < n_rest && (log_lines = atoi(rest[n + 1])) >= 1 &&
                         log_lines <= 1000)
                    n++;
                else
                    return cli_usage_error("fleet", usage_text, "logs NODE NAME [-n LINES (1..1000)] [-f]");
            }
        }
        if ((is_job ? n_rest < 3 : is_rollback ? n_rest != 2 : n_rest < 2) || !hd_mqtt_level_valid_name(rest[0]))
            return cli_usage_error("fleet", usage_text, "%s",
                                   is_job            ? JOB_USAGE
                                       : is_rollback ? "rollback NODE NAME"
                                                     : "logs NODE NAME [-n LINES] [-f]");
        if (job_id && (!hd_mqtt_level_valid_name(job_id) || strlen(job_id) > 64))
            return cli_usage_error("fleet", usage_text, "--id: a topic level of at most 64 characters");
    } else if (strcmp(verb, "rollout") == 0) {
        for (; n_rest >= 2 && rest[0][0] == '-'; rest += 2, n_rest -= 2) {
            if (strcmp(rest[0], "-l") == 0)
                label = rest[1];
            else if (strcmp(rest[0], "--canaries") == 0 && (canaries = atoi(rest[1])) >= 1)
                continue;
            else
                return cli_usage_error("fleet", usage_text, "rollout: '%s %s'?", rest[0], rest[1]);
        }
        if (!label || !strchr(label, '=') || label[0] == '=' || n_rest < 1)
            return cli_usage_error("fleet", usage_text, "rollout needs -l KEY=VALUE and SPEC files");
    } else if (strcmp(verb, "deploy") == 0 || strcmp(verb, "rm") == 0) {
        if (n_rest >= 2 && strcmp(rest[0], "-l") == 0) {
            label = rest[1];
            rest += 2, n_rest -= 2;
            if (!strchr(label, '=') || label[0] == '=')
                return cli_usage_error("fleet", usage_text, "-l takes KEY=VALUE, not '%s'", label);
        } else if (n_rest >= 1) {
            rest++, n_rest--;
        }
        if (n_rest < 1)
            return cli_usage_error("fleet", usage_text, "%s needs NODE or -l KEY=VALUE, then %s", verb,
                                   verb[0] == 'd' ? "SPEC files" : "deployment names");
    } else if (strcmp(verb, "status") == 0     ? n_rest != 1
                   : strcmp(verb, "wait") == 0 ? n_rest < 1
                   : strcmp(verb, "ls") == 0   ? n_rest != 0
                                               : true) {
        return cli_usage_error("fleet", usage_text, "'%s' %s", verb,
                               strcmp(verb, "ls") && strcmp(verb, "status") && strcmp(verb, "wait")
                                   ? "is not a fleet verb"
                                   : "takes other operands");
    }
    if (timeout < 0)
        timeout = is_job && strcmp(rest[1], "bench") == 0 ? 330 /* the node's bench timeout, 300 s, and some */
            : strcmp(verb, "wait") == 0 || strcmp(verb, "rollout") == 0 || is_rollback ? 60
                                                                                       : 10;
    size_t plen = strlen(prefix);
    if (strpbrk(prefix, "+#") || (plen && prefix[plen - 1] != '/'))
        return cli_usage_error("fleet", usage_text, "--prefix must end with '/' and hold no '+' or '#'");
    const char *node = (strcmp(verb, "deploy") == 0 || strcmp(verb, "rm") == 0) && !label ? rest[-1] : NULL;
    for (char **n = strcmp(verb, "wait") == 0 || strcmp(verb, "status") == 0 ? rest : (char *[]){(char *)node, NULL};
         *n; n++)
        if (!hd_mqtt_level_valid_name(*n))
            return cli_usage_error("fleet", usage_text, "'%s' is not a node id", *n);

    hd_error_t err = NULL;
    cleanup_free char *host = NULL;
    int port;
    if (hd_mqtt_parse_address(broker, tls.enabled ? 8883 : 1883, &host, &port, &err) < 0)
        return cli_fail(&err);
    char client_id[40];
    char rnd[13];
    hd_random_id(rnd, sizeof(rnd));
    snprintf(client_id, sizeof(client_id), "hedge-fleet-%s", rnd);
    struct hd_mqtt_options mo = {.host = host,
                                 .port = port,
                                 .client_id = client_id,
                                 .username = getenv("HEDGE_FLEET_USER"),
                                 .password = getenv("HEDGE_FLEET_PASSWORD"),
                                 .clean_session = true,
                                 .keepalive = 60,
                                 .protocol = 4,
                                 .tls = tls};
    struct hd_mqtt_callbacks cb = {.on_connect = fleet_on_connect,
                                   .on_message = fleet_on_message,
                                   .on_puback = fleet_on_puback,
                                   .on_suback = fleet_on_suback,
                                   .on_disconnect = fleet_on_disconnect};
    struct fleet f = {.prefix = prefix, .sign_key = sign_key, .nodes = json_object()};
    f.c = hd_mqtt_client_new(&mo, &cb, &f);
    int code = HD_EXIT_HEDGE;
    uint64_t deadline = hd_now_ns() + (uint64_t)(timeout * 1e9);
    if (hd_mqtt_client_connect(f.c, &err) < 0) {
        hd_error_prefix(&err, "broker %s", broker);
        code = cli_fail(&err);
        goto out;
    }
    int r = fleet_run(&f, fleet_snapshot_done, NULL, deadline);
    if (r != 0) {
        fprintf(stderr, "hedge fleet: broker %s: %s\n", broker, r < 0 ? f.error : "no answer in time");
        goto out;
    }
    if (strcmp(verb, "ls") == 0)
        code = fleet_ls(&f);
    else if (strcmp(verb, "status") == 0)
        code = fleet_status(&f, rest[0]);
    else if (strcmp(verb, "wait") == 0)
        code = fleet_wait(&f, rest, deadline);
    else if (strcmp(verb, "rollout") == 0)
        code = fleet_rollout(&f, label, canaries, rest, timeout);
    else if (strcmp(verb, "job") == 0)
        code = fleet_job(&f, rest[0], rest + 1, n_rest - 1, job_id ? job_id : rnd, deadline);
    else if (strcmp(verb, "rollback") == 0)
        code = fleet_rollback(&f, rest[0], rest[1], job_id ? job_id : rnd, deadline);
    else if (strcmp(verb, "logs") == 0)
        code = fleet_logs(&f, rest[0], rest[1], log_lines, follow, job_id ? job_id : rnd, deadline);
    else
        code = fleet_change(&f, verb[0] == 'd', node, label, rest, deadline);
out:
    hd_mqtt_client_close(f.c, true);
    hd_mqtt_client_free(f.c);
    json_decref(f.nodes);
    free(f.error);
    return code;
}
