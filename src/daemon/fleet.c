/*
 * fleet.c - hedged's end of the fleet protocol (docs/fleet.md): the node's
 * desired state comes from the cloud broker, hedged converges to it with its
 * own machinery and reports what it runs.
 *
 * The network child (fleet_link.c) holds the MQTT side: it subscribes to
 * PREFIX/NODE/desired on the uplink's cloud link and passes each document
 * here over the control socket (HD_NET_FLEET_DESIRED). This file, with its
 * privileges, never touches the network: it parses the document the child
 * passed (JSON, checked field by field like any spec), deploys each
 * deployment through the supervisor (hd_supervisor_deploy: first deploy,
 * health-gated upgrade, unchanged), removes what an earlier document
 * deployed and this one no longer names, and leaves deployments made through
 * the local API alone. One document is applied at a time; one that arrives
 * meanwhile waits, and only the latest waits.
 *
 * What the fleet owns, the generation applied and what it could not do are
 * kept in STATE/fleet.json (written atomically), so that after a restart
 * hedged knows which deployments are the fleet's and does not apply a
 * document twice (the broker sends the retained document again at every
 * connect). The results of the last jobs, and the jobs running, are kept in
 * STATE/fleet-jobs.json the same way: a repeated job ID is answered from it
 * after a restart too, and a job the restart cut short is answered "interrupted".
 *
 * The report (PREFIX/NODE/reported, retained) is built here once a second and
 * handed to the child when it changed; the child publishes it now and at every
 * connect.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <sys/statvfs.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "base/json.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/util.h"
#include "config.h"
#include "daemon/daemon.h"
#include "cgroup/cgroup.h"
#include "mqtt/topic.h"
#include "runtime/vm/vm.h"
#include "secret/sign.h"
#include "uplink/uplink.h"

#define FLEET_REPORT_PERIOD_S 1.0
#define FLEET_FACTS_PERIOD_S 60.0 /* the facts that change all the time are refreshed this often */
#define FLEET_DEFAULT_PREFIX "hedge/"
#define FLEET_JOBS_KEPT 100        /* results kept to answer a repeated job id without running it again */
#define FLEET_LOG_TAIL_BYTES 49152 /* a logs job reads at most this much of the log's end */
#define FLEET_LOG_LINES_MAX 1000

/* ---- config --------------------------------------------------------------- */

int hd_config_load_fleet(struct hd_daemon_config *cfg, const json_t *section, hd_error_t *err)
{
    static const char *const keys[] = {"prefix", "labels", "verify_key", NULL};
    if (hd_json_object(section, "fleet", "an object", err) < 0 || hd_json_check_keys(section, "fleet", keys, err) < 0)
        return -1;
    struct hd_fleet_config *f = hd_xcalloc(1, sizeof(*f));
    json_t *prefix = json_object_get(section, "prefix");
    if (prefix &&
        hd_json_string(prefix, "fleet.prefix", "a topic prefix such as \"hedge/\"", false, &f->prefix, err) < 0)
        goto fail;
    if (!f->prefix)
        f->prefix = hd_xstrdup(FLEET_DEFAULT_PREFIX);
    if (strpbrk(f->prefix, "+#") || (*f->prefix && f->prefix[strlen(f->prefix) - 1] != '/')) {
        hd_error_set(err, 0, "fleet.prefix: \"%s\" must end with '/' and hold no '+' or '#'", f->prefix);
        goto fail;
    }
    json_t *verify_key = json_object_get(section, "verify_key");
    if (verify_key &&
        hd_json_string(verify_key, "fleet.verify_key", "the path of an Ed25519 public key (PEM)", true, &f->verify_key,
                       err) < 0)
        goto fail;
    json_t *labels = json_object_get(section, "labels");
    if (labels) {
        if (hd_json_object(labels, "fleet.labels", "an object of strings", err) < 0)
            goto fail;
        const char *k;
        json_t *v;
        json_object_foreach(labels, k, v) if (!json_is_string(v))
        {
            cleanup_free char *path = hd_json_path("fleet.labels", k);
            hd_json_type_error(v, path, "a string", err);
            goto fail;
        }
        f->labels = json_deep_copy(labels);
    } else {
        f->labels = json_object();
    }
    hd_config_free_fleet(cfg);
    cfg->fleet = f;
    return 0;
fail:
    free(f->prefix);
    free(f->verify_key);
    free(f);
    return -1;
}

int hd_config_finish_fleet(struct hd_daemon_config *cfg, hd_error_t *err)
{
    if (!cfg->fleet)
        return 0;
    if (!cfg->uplink)
        return hd_error_set(err, 0, "fleet: needs the \"uplink\" section (the cloud broker and the node_id)");
    if (cfg->fleet->verify_key && access(cfg->fleet->verify_key, R_OK) < 0)
        return hd_error_sys(err, "fleet.verify_key: %s", cfg->fleet->verify_key);
    if (!hd_mqtt_level_valid_name(cfg->uplink->node_id))
        return hd_error_set(err, 0, "uplink.node_id: \"%s\" cannot be a topic level of the fleet's topics",
                            cfg->uplink->node_id);
    /* The broker tells the fleet when the node goes away without a goodbye. */
    struct hd_mqtt_options *cloud = &cfg->uplink->cloud;
    free(cloud->will_topic);
    free(cloud->will_payload);
    cloud->will_topic = hd_fleet_topic(cfg, "status");
    cloud->will_payload = hd_xstrdup("offline");
    cloud->will_qos = 1;
    cloud->will_retain = true;
    return 0;
}

void hd_config_free_fleet(struct hd_daemon_config *cfg)
{
    if (!cfg->fleet)
        return;
    free(cfg->fleet->prefix);
    free(cfg->fleet->verify_key);
    json_decref(cfg->fleet->labels);
    free(cfg->fleet);
    cfg->fleet = NULL;
}

char *hd_fleet_topic(const struct hd_daemon_config *cfg, const char *leaf)
{
    return hd_xasprintf("%s%s/%s", cfg->fleet->prefix, cfg->uplink->node_id, leaf);
}

/* ---- the agent -------------------------------------------------------------- */

struct fleet_step {
    struct hd_fleet *fleet;
    char *name;
    struct fleet_step *next;
};

struct hd_fleet {
    struct hd_loop *loop;
    struct hd_supervisor *sup;
    struct hd_store *store;
    struct hd_netchild *net;
    const struct hd_daemon_config *cfg;
    char *state_path;         /* STATE/fleet.json */
    char *jobs_path;          /* STATE/fleet-jobs.json: the kept results and the jobs running */
    int64_t generation;       /* the last generation applied; -1: none yet */
    json_t *owned;            /* {name: true}: the deployments the fleet made */
    json_t *errors;           /* {field path: reason} of the last document */
    json_t *applying;         /* the document being applied, NULL: none */
    json_t *pending;          /* the newest document that arrived meanwhile */
    struct fleet_step *steps; /* deploys and removals still waiting for their answer */
    int outstanding;
    char *last_report;
    struct hd_timer *timer;
    struct hd_defer *kick;          /* fleet_work, queued */
    json_t *jobs_queued;            /* [[id, request]] waiting for fleet_work */
    json_t *jobs_running;           /* {id: true}; saved when the job is asynchronous (it can be cut short) */
    json_t *jobs_done;              /* {id: result text}, the last FLEET_JOBS_KEPT */
    json_t *jobs_order;             /* [id] in the order they ended */
    struct hd_fleet_bench *benches; /* bench jobs running (fleet_bench.c) */
    struct fleet_job *jobs;         /* the asynchronous jobs running: restart, rollback, bench */
    const char *accel;              /* "kvm" or "tcg": what a vm workload would run on (probed once) */
    json_t *live_facts; /* uptime, load, memory, disk, broker clients, spool depth: refreshed every minute */
    int64_t live_facts_ms;
    struct hd_fleet_logs *logs; /* log forwarding (fleet_logs.c) */
};

static void fleet_apply_next(struct hd_fleet *f);

static void fleet_save(struct hd_fleet *f)
{
    json_t *o =
        json_pack("{s:I,s:O,s:O}", "generation", (json_int_t)f->generation, "owned", f->owned, "errors", f->errors);
    cleanup_free char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    hd_error_t err = NULL;
    if (hd_write_file_atomic(f->state_path, text, strlen(text), &err) < 0) {
        hd_log_error(HD_LOG_ERROR, "fleet", &err);
    }
}

static void fleet_load(struct hd_fleet *f)
{
    f->generation = -1;
    f->owned = json_object();
    json_error_t jerr;
    json_t *o = json_load_file(f->state_path, 0, &jerr);
    if (!o)
        return; /* first start */
    json_t *g = json_object_get(o, "generation"), *owned = json_object_get(o, "owned");
    json_t *errors = json_object_get(o, "errors");
    if (json_is_integer(g))
        f->generation = json_integer_value(g);
    if (json_is_object(owned))
        json_object_update(f->owned, owned);
    if (json_is_object(errors)) /* what the last document could not do, and rollbacks since */
        json_object_update(f->errors, errors);
    json_decref(o);
}

/* The facts that change all the time, rounded, and read once a minute: the report changes (and goes out)
 * when the node's state does, not at every tick of its uptime. */
static json_t *fleet_live_facts(struct hd_fleet *f)
{
    json_t *o = hd_netchild_facts(f->net);
    /* when these were read: a node's "last seen" for the operator, to the minute (the report changes with
     * them, so this adds no publish) */
    json_object_set_new(o, "time_ms", json_integer((json_int_t)hd_wall_ms()));
    struct sysinfo si;
    if (sysinfo(&si) == 0) {
        json_object_set_new(o, "uptime_s", json_integer((json_int_t)si.uptime));
        json_object_set_new(o, "memory_total_bytes", json_integer((json_int_t)si.totalram * si.mem_unit));
    }
    cleanup_free char *meminfo = NULL;
    size_t len;
    hd_error_t err = NULL;
    if (hd_read_file("/proc/meminfo", &meminfo, &len, &err) == 0) {
        const char *avail = strstr(meminfo, "MemAvailable:");
        if (avail)
            json_object_set_new(o, "memory_available_bytes", json_integer(strtoll(avail + 13, NULL, 10) * 1024));
    }
    hd_error_free(&err);
    double load[3];
    if (getloadavg(load, 3) == 3)
        json_object_set_new(
            o, "load",
            json_pack("[f,f,f]", round(load[0] * 100) / 100, round(load[1] * 100) / 100, round(load[2] * 100) / 100));
    struct statvfs vfs;
    if (statvfs(f->cfg->state_dir, &vfs) == 0) {
        json_object_set_new(o, "disk_total_bytes", json_integer((json_int_t)(vfs.f_blocks * vfs.f_frsize)));
        json_object_set_new(o, "disk_available_bytes", json_integer((json_int_t)(vfs.f_bavail * vfs.f_frsize)));
    }
    return o;
}

/* The report: what the node runs and what it made of the last document (docs/fleet.md). */
static json_t *fleet_report(struct hd_fleet *f)
{
    json_t *deployments = json_object();
    json_t *list = hd_supervisor_list(f->sup);
    size_t i;
    json_t *w;
    json_array_foreach(list, i, w)
    {
        const char *name = json_string_value(json_object_get(w, "name"));
        if (!name)
            continue;
        json_t *d = json_object();
        static const char *const copied[] = {"version",  "digest",     "state",        "desired",
                                             "restarts", "last_error", "upgrading_to", "pulling"};
        for (size_t k = 0; k < ARRAY_SIZE(copied); k++) {
            json_t *v = json_object_get(w, copied[k]);
            if (v)
                json_object_set(d, copied[k], v);
        }
        json_object_set_new(d, "managed", json_string(json_object_get(f->owned, name) ? "fleet" : "local"));
        json_object_set_new(deployments, name, d);
    }
    json_decref(list);
    struct utsname u;
    uname(&u);
    int64_t now = hd_wall_ms();
    if (!f->live_facts || now - f->live_facts_ms >= (int64_t)(FLEET_FACTS_PERIOD_S * 1000)) {
        json_decref(f->live_facts);
        f->live_facts = fleet_live_facts(f);
        /* the network child's counts missing (it is starting or restarting): read them again next second */
        f->live_facts_ms = json_object_get(f->live_facts, "broker_clients") ? now : 0;
    }
    json_t *facts = json_pack("{s:s,s:s,s:s,s:O,s:s,s:s}", "hedge_version", HEDGE_VERSION, "kernel", u.release, "arch",
                              u.machine, "labels", f->cfg->fleet->labels, "cgroup",
                              hd_cgroup_mode_name(hd_cgroup_detect()), "vm_accelerator", f->accel);
    json_object_update(facts, f->live_facts);
    json_t *r = json_pack("{s:s,s:o,s:o,s:O,s:o}", "node", f->cfg->uplink->node_id, "generation",
                          f->generation >= 0 ? json_integer(f->generation) : json_null(), "deployments", deployments,
                          "errors", f->errors, "facts", facts);
    json_object_set_new(r, "applying",
                        f->applying ? json_deep_copy(json_object_get(f->applying, "generation")) : json_null());
    return r;
}

/* Hand the report to the child when it changed. */
static void fleet_report_now(struct hd_fleet *f)
{
    json_t *r = fleet_report(f);
    char *text = json_dumps(r, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(r);
    if (f->last_report && strcmp(f->last_report, text) == 0) {
        free(text);
        return;
    }
    free(f->last_report);
    f->last_report = text;
    hd_netchild_fleet_report(f->net, text);
}

static void fleet_on_timer(struct hd_loop *loop, void *data)
{
    struct hd_fleet *f = data;
    fleet_report_now(f);
    f->timer = hd_loop_timer(loop, FLEET_REPORT_PERIOD_S, fleet_on_timer, f);
}

/* Apply what waits and report, at the end of the loop's turn: never inside whatever delivered a desired
 * document (a synchronous request to the network child reads its messages, and hedged's start-up runs
 * before the supervisor has recovered its deployments). */
static void fleet_run_jobs(struct hd_fleet *f);

static void fleet_work(struct hd_loop *loop, void *data)
{
    struct hd_fleet *f = data;
    f->kick = NULL;
    fleet_apply_next(f);
    fleet_run_jobs(f);
    fleet_report_now(f);
}

static void fleet_kick(struct hd_fleet *f)
{
    if (!f->kick)
        f->kick = hd_loop_defer(f->loop, fleet_work, f);
}

static void fleet_error(struct hd_fleet *f, const char *path, const char *reason)
{
    hd_log(HD_LOG_WARN, "fleet", "%s: %s", path, reason);
    json_object_set_new(f->errors, path, json_string(reason));
}

/* The document is applied: record it, report, and take the next one. */
static void fleet_applied(struct hd_fleet *f)
{
    json_t *g = json_object_get(f->applying, "generation");
    f->generation = json_integer_value(g);
    hd_log(HD_LOG_INFO, "fleet", "generation %lld applied (%zu error%s)", (long long)f->generation,
           json_object_size(f->errors), json_object_size(f->errors) == 1 ? "" : "s");
    json_decref(f->applying);
    f->applying = NULL;
    fleet_save(f);
    fleet_report_now(f);
    fleet_apply_next(f);
}

static void fleet_step_done(void *ctx, enum hd_sup_result result, json_t *body, hd_error_t err)
{
    struct fleet_step *s = ctx;
    struct hd_fleet *f = s->fleet;
    bool ok = result == HD_SUP_OK || result == HD_SUP_CREATED;
    bool removal = !json_object_get(json_object_get(f->applying, "deployments"), s->name);
    if (removal && (ok || result == HD_SUP_NOT_FOUND)) {
        json_object_del(f->owned, s->name);
    } else if (!ok) {
        cleanup_free char *path = hd_xasprintf("deployments.%s", s->name);
        const char *why = err ? hd_error_text(err) : "failed";
        size_t n = strlen(path); /* the spec's own errors start with the origin given to the deploy */
        if (strncmp(why, path, n) == 0 && strncmp(why + n, ": ", 2) == 0)
            why += n + 2;
        fleet_error(f, path, why);
    }
    json_decref(body);
    for (struct fleet_step **p = &f->steps; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    free(s->name);
    free(s);
    if (--f->outstanding == 0)
        fleet_applied(f);
}

static struct fleet_step *fleet_step_new(struct hd_fleet *f, const char *name)
{
    struct fleet_step *s = hd_xcalloc(1, sizeof(*s));
    s->fleet = f;
    s->name = hd_xstrdup(name);
    s->next = f->steps;
    f->steps = s;
    f->outstanding++;
    return s;
}

/* Deploy what the document names, remove what the fleet owned and it no longer names. */
static void fleet_apply(struct hd_fleet *f)
{
    json_t *deployments = json_object_get(f->applying, "deployments");
    json_object_clear(f->errors);
    f->outstanding = 1; /* held until every step is issued: a step answered at once must not finish */
    const char *name;
    json_t *spec;
    json_object_foreach(deployments, name, spec)
    {
        cleanup_free char *path = hd_xasprintf("deployments.%s", name);
        json_t *given = json_object_get(spec, "name");
        if (!json_is_object(spec)) {
            fleet_error(f, path, "must be a workload spec (an object)");
            continue;
        }
        if (given && !(json_is_string(given) && strcmp(json_string_value(given), name) == 0)) {
            cleanup_free char *field = hd_xasprintf("%s.name", path);
            fleet_error(f, field, "must be the deployment's key, or left out");
            continue;
        }
        json_t *copy = json_deep_copy(spec);
        json_object_set_new(copy, "name", json_string(name));
        cleanup_free char *text = json_dumps(copy, JSON_COMPACT);
        json_decref(copy);
        json_object_set_new(f->owned, name, json_true());
        struct fleet_step *s = fleet_step_new(f, name);
        hd_supervisor_deploy(f->sup, text, strlen(text), path, -1, fleet_step_done, s); /* the spec's health wait */
    }
    json_t *owned = json_deep_copy(f->owned);
    json_t *v;
    json_object_foreach(owned, name, v) if (!json_object_get(deployments, name))
        hd_supervisor_remove(f->sup, name, fleet_step_done, fleet_step_new(f, name));
    json_decref(owned);
    fleet_save(f); /* a deploy that kill -9 interrupts is still the fleet's after the restart */
    if (--f->outstanding == 0)
        fleet_applied(f);
}

static void fleet_apply_next(struct hd_fleet *f)
{
    if (f->applying || !f->pending)
        return;
    f->applying = f->pending;
    f->pending = NULL;
    hd_log(HD_LOG_INFO, "fleet", "applying generation %lld",
           (long long)json_integer_value(json_object_get(f->applying, "generation")));
    fleet_report_now(f);
    fleet_apply(f);
}

/* Check the document's own fields (each spec is checked by the deploy). */
static json_t *fleet_parse(const char *doc, size_t len, hd_error_t *err)
{
    json_error_t jerr;
    json_t *o = json_loadb(doc, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!o)
        return hd_error_set(err, 0, "desired: line %d column %d: %s", jerr.line, jerr.column, jerr.text), NULL;
    int64_t generation;
    json_t *deployments = json_object_get(o, "deployments");
    if (hd_json_object(o, "desired", "an object", err) < 0 ||
        hd_json_int(json_object_get(o, "generation"), "desired.generation", 0, INT64_MAX, "an integer of at least 0",
                    &generation, err) < 0 ||
        (deployments && hd_json_object(deployments, "desired.deployments", "an object", err) < 0)) {
        json_decref(o);
        return NULL;
    }
    if (!deployments)
        json_object_set_new(o, "deployments", json_object());
    return o;
}

/* With fleet.verify_key, only a document it signed goes on to be read. */
static int fleet_check_signature(struct hd_fleet *f, const char *doc, size_t len, const char *signature,
                                 hd_error_t *err)
{
    const char *key = f->cfg->fleet->verify_key;
    if (!key)
        return 0;
    if (!*signature)
        return hd_error_set(err, 0, "desired: not signed, and fleet.verify_key asks for a signature");
    if (hd_verify_ed25519(key, doc, len, signature, err) < 0)
        return hd_error_prefix(err, "desired: refused");
    return 0;
}

void hd_fleet_desired(struct hd_fleet *f, const char *doc, size_t len, const char *signature, const char *child_error)
{
    hd_error_t err = NULL;
    json_t *o = NULL;
    if (!*child_error && fleet_check_signature(f, doc, len, signature, &err) == 0)
        o = fleet_parse(doc, len, &err);
    if (!o) {
        const char *why = *child_error ? child_error : hd_error_text(err);
        hd_log(HD_LOG_WARN, "fleet", "desired document refused: %s", why);
        json_object_clear(f->errors);
        json_object_set_new(f->errors, "desired", json_string(why));
        hd_error_free(&err);
        fleet_kick(f);
        return;
    }
    int64_t g = json_integer_value(json_object_get(o, "generation"));
    json_t *latest = f->pending ? f->pending : f->applying;
    int64_t newest = latest ? json_integer_value(json_object_get(latest, "generation")) : f->generation;
    if (g <= newest) { /* the retained copy again at a connect, or an older one: nothing to do */
        json_decref(o);
        return;
    }
    json_decref(f->pending);
    f->pending = o;
    fleet_kick(f);
}

/* ---- jobs: one-shot requests with a result (docs/fleet.md, Jobs) ---- */

struct fleet_job {
    struct hd_fleet *fleet;
    char *id, *deployment;
    struct fleet_job *next; /* f->jobs */
};

/* STATE/fleet-jobs.json: {"done": [[id, result text], ...] oldest first, "running": [id, ...]}. */
static void fleet_jobs_save(struct hd_fleet *f)
{
    json_t *done = json_array();
    size_t i;
    json_t *id;
    json_array_foreach(f->jobs_order, i, id)
        json_array_append_new(done, json_pack("[O,O]", id, json_object_get(f->jobs_done, json_string_value(id))));
    json_t *running = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(f->jobs_running, k, v) if (json_is_true(v)) json_array_append_new(running, json_string(k));
    json_t *o = json_pack("{s:o,s:o}", "done", done, "running", running);
    cleanup_free char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    hd_error_t err = NULL;
    if (hd_write_file_atomic(f->jobs_path, text, strlen(text), &err) < 0) {
        hd_log_error(HD_LOG_ERROR, "fleet", &err);
    }
}

static void fleet_jobs_keep(struct hd_fleet *f, const char *id, const char *text)
{
    if (!json_object_get(f->jobs_done, id))
        json_array_append_new(f->jobs_order, json_string(id));
    json_object_set_new(f->jobs_done, id, json_string(text));
    while (json_array_size(f->jobs_order) > FLEET_JOBS_KEPT) {
        json_object_del(f->jobs_done, json_string_value(json_array_get(f->jobs_order, 0)));
        json_array_remove(f->jobs_order, 0);
    }
}

/* The kept results again; a job that was running when hedged stopped is answered as interrupted. */
static void fleet_jobs_load(struct hd_fleet *f)
{
    json_t *o = json_load_file(f->jobs_path, 0, NULL);
    if (!o)
        return; /* first start, or a file from before: nothing kept */
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(o, "done"), i, v)
    {
        const char *id = json_string_value(json_array_get(v, 0)), *text = json_string_value(json_array_get(v, 1));
        if (id && text)
            fleet_jobs_keep(f, id, text);
    }
    bool interrupted = false;
    json_array_foreach(json_object_get(o, "running"), i, v)
    {
        const char *id = json_string_value(v);
        if (!id || json_object_get(f->jobs_done, id))
            continue;
        json_t *r = json_pack("{s:s,s:b,s:s}", "id", id, "ok", 0, "error", "interrupted by a restart of hedged");
        cleanup_free char *text = json_dumps(r, JSON_COMPACT);
        json_decref(r);
        fleet_jobs_keep(f, id, text);
        hd_log(HD_LOG_WARN, "fleet", "job %s: interrupted by the restart", id);
        interrupted = true;
    }
    json_decref(o);
    if (interrupted)
        fleet_jobs_save(f);
}

static void fleet_job_finish(struct hd_fleet *f, const char *id, json_t *result)
{
    json_object_set_new(result, "id", json_string(id));
    char *text = json_dumps(result, JSON_COMPACT);
    json_decref(result);
    json_object_del(f->jobs_running, id);
    fleet_jobs_keep(f, id, text);
    fleet_jobs_save(f);
    hd_netchild_fleet_result(f->net, id, text);
    free(text);
}

static void fleet_job_failed(struct hd_fleet *f, const char *id, const char *why)
{
    fleet_job_finish(f, id, json_pack("{s:b,s:s}", "ok", 0, "error", why));
}

/* An asynchronous job: on record as running before it starts, so that a restart can answer it. */
static struct fleet_job *fleet_job_new(struct hd_fleet *f, const char *id, const char *name)
{
    struct fleet_job *j = hd_xcalloc(1, sizeof(*j));
    j->fleet = f;
    j->id = hd_xstrdup(id);
    j->deployment = hd_xstrdup(name);
    j->next = f->jobs;
    f->jobs = j;
    json_object_set_new(f->jobs_running, id, json_true());
    fleet_jobs_save(f);
    return j;
}

static void fleet_job_free(struct fleet_job *j)
{
    for (struct fleet_job **p = &j->fleet->jobs; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            break;
        }
    free(j->id);
    free(j->deployment);
    free(j);
}

static void fleet_job_started(void *ctx, enum hd_sup_result result, json_t *body, hd_error_t err)
{
    struct fleet_job *j = ctx;
    if (result == HD_SUP_OK || result == HD_SUP_CREATED)
        fleet_job_finish(j->fleet, j->id,
                         json_pack("{s:b,s:s,s:s,s:O?}", "ok", 1, "type", "restart", "deployment", j->deployment,
                                   "state", json_object_get(body, "state")));
    else
        fleet_job_failed(j->fleet, j->id, err ? hd_error_text(err) : "start failed");
    json_decref(body);
    fleet_job_free(j);
}

static void fleet_job_stopped(void *ctx, enum hd_sup_result result, json_t *body, hd_error_t err)
{
    struct fleet_job *j = ctx;
    json_decref(body);
    if (result != HD_SUP_OK) {
        fleet_job_failed(j->fleet, j->id, err ? hd_error_text(err) : "stop failed");
        fleet_job_free(j);
        return;
    }
    hd_supervisor_start(j->fleet->sup, j->deployment, fleet_job_started, j);
}

/*
 * The rollback went through its health gate: answer with the spec that runs now. A fleet deployment now
 * runs another spec than its desired document says; like an upgrade that failed its health check, that is
 * reported under errors until the next generation is applied, and the same generation is never applied
 * again (the operator's `hedge fleet rollback` publishes the next one, with the spec that runs).
 */
static void fleet_job_rolled_back(void *ctx, enum hd_sup_result result, json_t *body, hd_error_t err)
{
    struct fleet_job *j = ctx;
    struct hd_fleet *f = j->fleet;
    json_t *now = result == HD_SUP_OK ? hd_supervisor_get(f->sup, j->deployment) : NULL;
    if (!now) {
        fleet_job_failed(f, j->id, err ? hd_error_text(err) : "the rollback failed");
    } else {
        bool fleet_managed = json_object_get(f->owned, j->deployment) != NULL;
        json_t *version = json_object_get(now, "version"), *digest = json_object_get(now, "digest");
        if (fleet_managed) {
            cleanup_free char *path = hd_xasprintf("deployments.%s", j->deployment);
            cleanup_free char *why =
                hd_xasprintf("rolled back by job %s to version %lld (%s): runs another spec than the desired one",
                             j->id, (long long)json_integer_value(version), json_string_value(digest) ?: "?");
            fleet_error(f, path, why);
            fleet_save(f);
            fleet_kick(f);
        }
        fleet_job_finish(f, j->id,
                         json_pack("{s:b,s:s,s:s,s:O,s:O?,s:O,s:s}", "ok", 1, "type", "rollback", "deployment",
                                   j->deployment, "version", version, "digest", digest, "spec",
                                   json_object_get(now, "spec"), "managed", fleet_managed ? "fleet" : "local"));
    }
    json_decref(now);
    json_decref(body);
    fleet_job_free(j);
}

/* The last lines of the deployment's log (at most FLEET_LOG_TAIL_BYTES of its end). */
static json_t *fleet_log_tail(const char *path, int lines, hd_error_t *err)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return json_array(); /* nothing written yet */
    if (fd < 0)
        return hd_error_sys(err, "%s", path), NULL;
    off_t end = lseek(fd, 0, SEEK_END);
    off_t from = end > FLEET_LOG_TAIL_BYTES ? end - FLEET_LOG_TAIL_BYTES : 0;
    cleanup_free char *buf = hd_xcalloc(1, FLEET_LOG_TAIL_BYTES + 1);
    ssize_t n = pread(fd, buf, FLEET_LOG_TAIL_BYTES, from);
    if (n < 0)
        return hd_error_sys(err, "%s", path), NULL;
    json_t *all = json_array();
    char *p = buf;
    if (from > 0 && (p = strchr(buf, '\n')) != NULL) /* the first line is cut */
        p++;
    while (p && *p) {
        char *nl = strchr(p, '\n');
        json_t *line = json_stringn(p, nl ? (size_t)(nl - p) : strlen(p));
        json_array_append_new(all, line ? line : json_string("(a line that is not UTF-8)"));
        p = nl ? nl + 1 : NULL;
    }
    while (json_array_size(all) > (size_t)lines)
        json_array_remove(all, 0);
    return all;
}

static void fleet_bench_done(void *ctx, json_t *result)
{
    struct fleet_job *j = ctx;
    fleet_job_finish(j->fleet, j->id, result);
    fleet_job_free(j);
}

/* `hedge bench` on the request's spec, as hedged's child; the result comes when it exits. */
static void fleet_bench_start(struct hd_fleet *f, const char *id, const json_t *request)
{
    struct fleet_job *j = fleet_job_new(f, id, "");
    hd_error_t err = NULL;
    if (hd_fleet_bench_start(&f->benches, f->loop, f->cfg->state_dir, request, fleet_bench_done, j, &err) < 0) {
        fleet_job_failed(f, id, hd_error_text(err));
        hd_error_free(&err);
        fleet_job_free(j);
    }
}

bool hd_fleet_child_exited(struct hd_fleet *f, pid_t pid, int status)
{
    return f && hd_fleet_bench_reaped(&f->benches, pid, status);
}

static void fleet_job_start(struct hd_fleet *f, const char *id, const char *request)
{
    json_t *o = json_loads(request, 0, NULL);
    const char *type = json_string_value(json_object_get(o, "type"));
    const char *name = json_string_value(json_object_get(o, "deployment"));
    json_t *lines_v = json_object_get(o, "lines");
    json_object_set_new(f->jobs_running, id, json_false()); /* running, not on record (it ends in this call) */
    if (!type ||
        (strcmp(type, "restart") != 0 && strcmp(type, "logs") != 0 && strcmp(type, "rollback") != 0 &&
         strcmp(type, "bench") != 0)) {
        fleet_job_failed(f, id, "type: must be \"restart\", \"logs\", \"rollback\" or \"bench\"");
    } else if (strcmp(type, "bench") == 0) {
        fleet_bench_start(f, id, o);
    } else if (!name) {
        fleet_job_failed(f, id, "deployment: the name of a deployment is required");
    } else if (!hd_supervisor_exists(f->sup, name)) {
        cleanup_free char *why = hd_xasprintf("deployment: no deployment %s on this node", name);
        fleet_job_failed(f, id, why);
    } else if (lines_v &&
               (!json_is_integer(lines_v) || json_integer_value(lines_v) < 1 ||
                json_integer_value(lines_v) > FLEET_LOG_LINES_MAX)) {
        fleet_job_failed(f, id, "lines: must be an integer 1..1000");
    } else if (strcmp(type, "logs") == 0) {
        cleanup_free char *path = hd_supervisor_log_path(f->sup, name);
        hd_error_t err = NULL;
        json_t *lines = fleet_log_tail(path, lines_v ? (int)json_integer_value(lines_v) : 100, &err);
        if (lines)
            fleet_job_finish(
                f, id, json_pack("{s:b,s:s,s:s,s:o}", "ok", 1, "type", "logs", "deployment", name, "lines", lines));
        else
            fleet_job_failed(f, id, hd_error_text(err));
        hd_error_free(&err);
    } else if (strcmp(type, "rollback") == 0) {
        hd_supervisor_rollback(f->sup, name, -1, fleet_job_rolled_back, fleet_job_new(f, id, name));
    } else {
        hd_supervisor_stop(f->sup, name, fleet_job_stopped, fleet_job_new(f, id, name));
    }
    json_decref(o);
}

static void fleet_run_jobs(struct hd_fleet *f)
{
    while (json_array_size(f->jobs_queued)) {
        json_t *job = json_incref(json_array_get(f->jobs_queued, 0));
        json_array_remove(f->jobs_queued, 0);
        fleet_job_start(f, json_string_value(json_array_get(job, 0)), json_string_value(json_array_get(job, 1)));
        json_decref(job);
    }
}

/* A job from the child: a repeated id gets the result it had (or nothing yet while it runs). */
static void fleet_on_job(void *ctx, const char *id, const char *request)
{
    struct hd_fleet *f = ctx;
    json_t *done = json_object_get(f->jobs_done, id);
    if (done) {
        hd_netchild_fleet_result(f->net, id, json_string_value(done));
        return;
    }
    if (json_object_get(f->jobs_running, id))
        return;
    size_t i;
    json_t *q;
    json_array_foreach(f->jobs_queued, i, q) if (strcmp(json_string_value(json_array_get(q, 0)), id) == 0) return;
    json_array_append_new(f->jobs_queued, json_pack("[s,s]", id, request));
    fleet_kick(f);
}

static void fleet_on_desired(void *ctx, const char *doc, size_t len, const char *signature, const char *error)
{
    hd_fleet_desired(ctx, doc, len, signature, error);
}

/* Every event hedged records (deploys, upgrades and rollbacks, starts, exits, crash loops) goes to the
 * fleet's events topic through the durable spool, in order, outages included. */
static void fleet_on_event(void *ctx, int64_t time_ms, const char *name, const char *type, const char *message)
{
    struct hd_fleet *f = ctx;
    json_t *e = json_pack("{s:s,s:I,s:s,s:s,s:s}", "node", f->cfg->uplink->node_id, "time_ms", (json_int_t)time_ms,
                          "deployment", name, "type", type, "message", message);
    if (!e)
        return; /* not UTF-8: jansson refuses it */
    json_object_set_new(e, "managed", json_string(json_object_get(f->owned, name) ? "fleet" : "local"));
    cleanup_free char *text = json_dumps(e, JSON_COMPACT);
    json_decref(e);
    hd_netchild_fleet_event(f->net, text);
}

struct hd_fleet *hd_fleet_new(struct hd_loop *loop, struct hd_supervisor *sup, struct hd_store *store,
                              struct hd_netchild *net, const struct hd_daemon_config *cfg)
{
    if (!cfg->fleet || !net)
        return NULL;
    struct hd_fleet *f = hd_xcalloc(1, sizeof(*f));
    f->loop = loop;
    f->sup = sup;
    f->store = store;
    f->net = net;
    f->cfg = cfg;
    f->state_path = hd_xasprintf("%s/fleet.json", cfg->state_dir);
    f->jobs_path = hd_xasprintf("%s/fleet-jobs.json", cfg->state_dir);
    f->errors = json_object();
    struct hd_vm_accel_probe probe;
    hd_vm_accel_probe(&probe);
    f->accel = hd_vm_accel_name(probe.usable ? HD_VM_ACCEL_KVM : HD_VM_ACCEL_TCG);
    fleet_load(f);
    f->jobs_queued = json_array();
    f->jobs_running = json_object();
    f->jobs_done = json_object();
    f->jobs_order = json_array();
    fleet_jobs_load(f);
    hd_netchild_set_fleet(net, fleet_on_desired, fleet_on_job, f);
    hd_store_set_event_sink(store, fleet_on_event, f);
    fleet_kick(f); /* the first report, once the loop runs: after the supervisor recovered */
    f->timer = hd_loop_timer(loop, FLEET_REPORT_PERIOD_S, fleet_on_timer, f);
    f->logs = hd_fleet_logs_new(loop, sup, net);
    hd_log(HD_LOG_INFO, "fleet", "node %s, desired state from %s", cfg->uplink->node_id, cfg->fleet->prefix);
    return f;
}

void hd_fleet_free(struct hd_fleet *f)
{
    if (!f)
        return;
    hd_netchild_set_fleet(f->net, NULL, NULL, NULL);
    hd_store_set_event_sink(f->store, NULL, NULL);
    /* the jobs still running stay on record as running: the next hedged answers them "interrupted" */
    hd_fleet_bench_stop_all(&f->benches);
    while (f->jobs) {
        struct fleet_job *j = f->jobs;
        f->jobs = j->next; /* out of the list first: fleet_job_free finds nothing to unlink */
        hd_supervisor_forget(f->sup, j);
        fleet_job_free(j);
    }
    hd_fleet_logs_free(f->logs);
    if (f->timer)
        hd_loop_cancel(f->loop, f->timer);
    if (f->kick)
        hd_loop_cancel_defer(f->loop, f->kick);
    while (f->steps) {
        struct fleet_step *s = f->steps;
        f->steps = s->next;
        hd_supervisor_forget(f->sup, s);
        free(s->name);
        free(s);
    }
    json_decref(f->owned);
    json_decref(f->errors);
    json_decref(f->applying);
    json_decref(f->pending);
    json_decref(f->live_facts);
    json_decref(f->jobs_queued);
    json_decref(f->jobs_running);
    json_decref(f->jobs_done);
    json_decref(f->jobs_order);
    free(f->last_report);
    free(f->state_path);
    free(f->jobs_path);
    free(f);
}
