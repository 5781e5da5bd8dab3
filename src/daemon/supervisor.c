/*
 * supervisor.c - keeps each deployed workload in its desired state.
 *
 * Each workload follows the life cycle of lifecycle.c (a transition table,
 * s6-supervise style); this file is its driver. workload_apply feeds the
 * table an event, records the next state and carries out the action; when
 * the state settles it saves the deployment and answers the requests waiting
 * for it. The events come from the API operations here (deploy, start, stop,
 * rm), from the runs (run.c: started, ended), the upgrade (upgrade.c: health
 * ok/failed), the back-off timer and recovery (recover.c: adopt, lost).
 *
 * Restart policy: when the current run ends, the spec's policy (always,
 * on-failure with max_retries, never) picks crashed (restart after a delay),
 * exited or failed. Restart delays double from backoff_initial up to
 * backoff_max; a run longer than restart_reset_after resets them. "backoff"
 * shows as "crash-loop" once crash_loop_after quick failures follow each other.
 *
 * Results are typed (enum hd_sup_result + an error message); api.c alone
 * speaks HTTP.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "daemon/supervisor_internal.h"
#include "base/util.h"

int64_t supervisor_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void supervisor_log_error(hd_error_t *err)
{
    hd_log(HD_LOG_ERROR, "supervisor", "%s", hd_error_text(*err));
    hd_error_free(err);
}

void supervisor_reply_error(hd_reply_fn reply, void *ctx, enum hd_sup_result result, json_t *extra, const char *fmt,
                            ...)
{
    va_list ap;
    va_start(ap, fmt);
    cleanup_free char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        abort();
    va_end(ap);
    hd_error_t err = NULL;
    hd_error_set(&err, 0, "%s", msg);
    reply(ctx, result, extra, err);
    hd_error_free(&err);
}

struct workload *supervisor_find(struct hd_supervisor *sup, const char *name)
{
    for (struct workload *wl = sup->workloads; wl; wl = wl->next)
        if (strcmp(wl->name, name) == 0)
            return wl;
    return NULL;
}

bool hd_supervisor_exists(struct hd_supervisor *sup, const char *name)
{
    return supervisor_find(sup, name) != NULL;
}

void hd_supervisor_each(struct hd_supervisor *sup, void (*fn)(void *ctx, const char *name, const struct hd_spec *spec),
                        void *ctx)
{
    for (struct workload *wl = sup->workloads; wl; wl = wl->next)
        if (!wl->removing)
            fn(ctx, wl->name, wl->spec);
}

const char *workload_state_name(const struct workload *wl)
{
    if (wl->state == HD_LC_BACKOFF && wl->consecutive_failures >= wl->sup->cfg->crash_loop_after)
        return "crash-loop";
    return hd_lc_state_name(wl->state);
}

void workload_save(struct workload *wl)
{
    hd_error_t err = NULL;
    struct hd_store_deployment d = {wl->name,      wl->version,    wl->desired_running,
                                    wl->restarts,  wl->created_at, (char *)workload_state_name(wl),
                                    wl->last_error};
    if (hd_store_put_deployment(wl->sup->store, &d, &err) < 0)
        supervisor_log_error(&err);
}

static json_t *workload_json(struct workload *wl, bool with_stats);

/* Record the new state; when it is settled, answer whoever waits for it. */
static void workload_settle(struct workload *wl, enum hd_lc_state state)
{
    wl->state = state;
    if (state == HD_LC_STARTING || state == HD_LC_STOPPING || state == HD_LC_CREATED || wl->removing)
        return; /* a removal answers in workload_finish_remove */
    workload_save(wl);
    while (wl->waiters) {
        struct waiter *w = wl->waiters;
        wl->waiters = w->next;
        if (!w->first_deploy)
            w->fn(w->ctx, HD_SUP_OK, workload_json(wl, false), NULL);
        else if (wl->start_error == NULL)
            w->fn(w->ctx, HD_SUP_CREATED,
                  json_pack("{s:s,s:i,s:s}", "name", wl->name, "version", wl->version, "status", "created"), NULL);
        else {
            /* a first deploy that cannot start leaves nothing behind, like a failed `hedge run` */
            supervisor_reply_error(w->fn, w->ctx, HD_SUP_START_FAILED,
                                   json_pack("{s:i}", "exit_code", wl->last_exit_code), "%s", wl->start_error);
            wl->removing = true;
            wl->desired_running = false;
        }
        free(w);
    }
}

static void workload_add_waiter(struct workload *wl, hd_reply_fn fn, void *ctx, bool first_deploy)
{
    struct waiter *w = hd_xcalloc(1, sizeof(*w));
    w->fn = fn;
    w->ctx = ctx;
    w->first_deploy = first_deploy;
    struct waiter **p = &wl->waiters;
    while (*p)
        p = &(*p)->next;
    *p = w;
}

/* ---- the lifecycle driver ---------------------------------------------- */

char *supervisor_monitor_spec(struct hd_supervisor *sup, const char *name, int version, const struct hd_spec *spec,
                              hd_error_t *err)
{
    if (hd_function_is(spec))
        return hd_function_host_spec(sup->broker, sup->cfg, name, version, spec, err);
    char *json = hd_creds_grant(sup->broker, sup->cfg, name, spec, err);
    if (json == NULL)
        hd_error_prefix(err, "MQTT credentials");
    return json;
}

void workload_restore_creds(struct workload *wl)
{
    hd_error_t err = NULL;
    int r = hd_function_is(wl->spec) ? hd_function_restore(wl->sup->broker, wl->sup->cfg, wl->name, wl->spec, &err)
                                     : hd_creds_restore(wl->sup->broker, wl->sup->cfg, wl->name, wl->spec, &err);
    if (r < 0)
        supervisor_log_error(&err);
}

/* HD_LC_DO_SPAWN: a monitor for the current version; a failure is the event "spawn failed". */
static void workload_spawn(struct workload *wl)
{
    hd_error_t err = NULL;
    cleanup_free char *spec_json = supervisor_monitor_spec(wl->sup, wl->name, wl->version, wl->spec, &err);
    struct run *run = run_new(wl, ROLE_CURRENT, wl->version);
    wl->cur = run;
    free(wl->start_error);
    wl->start_error = NULL;
    if (spec_json == NULL || run_spawn(run, spec_json, &err) < 0) {
        wl->cur = NULL;
        free(wl->last_error);
        wl->last_error = hd_xstrdup(hd_error_text(err));
        wl->start_error = hd_xstrdup(wl->last_error);
        wl->last_exit_code = HD_EXIT_HEDGE;
        hd_store_event(wl->sup->store, wl->name, "failed", "%s", wl->last_error);
        hd_error_free(&err);
        free(run);
        workload_apply(wl, HD_LC_EV_SPAWN_FAILED);
    }
}

static void workload_backoff_fired(struct hd_loop *loop, void *data)
{
    struct workload *wl = data;
    wl->backoff_timer = NULL;
    wl->restarts++;
    workload_save(wl);
    hd_store_event(wl->sup->store, wl->name, "restart", "restart %d of version %d", wl->restarts, wl->version);
    workload_apply(wl, HD_LC_EV_RESTART_TIMER);
}

/* HD_LC_DO_SCHEDULE_RESTART: the delay doubles with each quick failure, up to backoff_max. */
static void workload_schedule_restart(struct workload *wl)
{
    const struct hd_daemon_config *cfg = wl->sup->cfg;
    wl->consecutive_failures++;
    double delay = cfg->backoff_initial;
    for (int i = 1; i < wl->consecutive_failures && delay < cfg->backoff_max; i++)
        delay *= 2;
    if (delay > cfg->backoff_max)
        delay = cfg->backoff_max;
    wl->backoff_timer = hd_loop_timer(wl->sup->loop, delay, workload_backoff_fired, wl);
}

static void workload_cancel_restart(struct workload *wl)
{
    if (wl->backoff_timer) {
        hd_loop_cancel(wl->sup->loop, wl->backoff_timer);
        wl->backoff_timer = NULL;
    }
}

enum hd_sup_result workload_apply(struct workload *wl, enum hd_lc_event event)
{
    struct hd_lc_transition t;
    if (hd_lifecycle_next(wl->state, event, &t) != HD_LC_OK) {
        hd_log(HD_LOG_WARN, "supervisor", "%s: lifecycle: event \"%s\" in state %s ignored", wl->name,
               hd_lc_event_name(event), hd_lc_state_name(wl->state));
        return HD_SUP_CONFLICT;
    }
    if (t.action == HD_LC_DO_KEEP)
        return HD_SUP_OK;
    switch (t.action) {
    case HD_LC_DO_SCHEDULE_RESTART: workload_schedule_restart(wl); break;
    case HD_LC_DO_CANCEL_RESTART: workload_cancel_restart(wl); break;
    default: break;
    }
    workload_settle(wl, t.next);
    switch (t.action) {
    case HD_LC_DO_SPAWN: workload_spawn(wl); break;
    case HD_LC_DO_TERMINATE:
        if (wl->cur)
            run_stop(wl->cur);
        break;
    default: break;
    }
    return HD_SUP_OK;
}

/* ---- restart policy ------------------------------------------------------ */

void workload_current_ended(struct workload *wl, bool while_down)
{
    struct run *run = wl->cur;
    struct hd_instance *inst = run->inst;
    const struct hd_daemon_config *cfg = wl->sup->cfg;
    bool failed = inst->start_error || inst->exit.code != 0;
    free(wl->last_error);
    wl->last_error = run_describe_exit(inst);
    free(wl->start_error);
    wl->start_error = hd_xstrdup(inst->start_error);
    wl->last_exit_code = inst->exit.code;
    int64_t finished = inst->finished_at ? inst->finished_at : supervisor_unix_ms();
    double ran_for = inst->started_at ? (double)(finished - inst->started_at) / 1000.0 : 0;
    bool was_stopping = run->stop_requested;
    wl->cur = NULL;
    run_free(run);

    if (was_stopping || !wl->desired_running) {
        hd_store_event(wl->sup->store, wl->name, "stopped", "version %d stopped: %s", wl->version, wl->last_error);
        workload_apply(wl, HD_LC_EV_STOPPED);
        return;
    }
    hd_store_event(wl->sup->store, wl->name, failed ? "failed" : "exited", "version %d %s%s", wl->version,
                   wl->last_error, while_down ? " (while hedged was down)" : "");
    if (ran_for >= cfg->restart_reset_after)
        wl->consecutive_failures = 0;
    const struct hd_restart *policy = &wl->spec->restart;
    bool restart = policy->policy == HD_RESTART_ALWAYS || (policy->policy == HD_RESTART_ON_FAILURE && failed);
    if (restart && policy->policy == HD_RESTART_ON_FAILURE && policy->max_retries &&
        wl->restarts >= policy->max_retries) {
        char *why = hd_xasprintf("%s; gave up after %d restarts", wl->last_error, wl->restarts);
        free(wl->last_error);
        wl->last_error = why;
        hd_store_event(wl->sup->store, wl->name, "gave-up", "%s", why);
        restart = false;
    }
    if (!restart)
        workload_apply(wl, failed ? HD_LC_EV_FAILED : HD_LC_EV_EXITED);
    else
        workload_apply(wl, HD_LC_EV_CRASHED);
}

/* ---- workloads ----------------------------------------------------------- */

struct workload *workload_new(struct hd_supervisor *sup, const char *name)
{
    struct workload *wl = hd_xcalloc(1, sizeof(*wl));
    wl->sup = sup;
    wl->name = hd_xstrdup(name);
    wl->state = HD_LC_CREATED;
    struct workload **p = &sup->workloads;
    while (*p)
        p = &(*p)->next;
    *p = wl;
    return wl;
}

void workload_free(struct workload *wl)
{
    if (wl->backoff_timer)
        hd_loop_cancel(wl->sup->loop, wl->backoff_timer);
    if (wl->cur)
        run_free(wl->cur);
    hd_spec_free(wl->spec);
    free(wl->digest);
    free(wl->name);
    free(wl->last_error);
    free(wl->start_error);
    free(wl);
}

/* Bring the current run down; the state settles to stopped when it exits. */
void workload_stop(struct workload *wl)
{
    if (wl->up)
        upgrade_fail(wl, "stopped during the upgrade");
    workload_cancel_restart(wl);
    workload_apply(wl, wl->removing ? HD_LC_EV_RM : HD_LC_EV_STOP);
}

void workload_finish_remove(struct workload *wl)
{
    struct hd_supervisor *sup = wl->sup;
    if (run_has_retiring(sup, wl))
        return; /* the last retiring run to end calls us again */
    hd_error_t err = NULL;
    if (hd_store_begin(sup->store, &err) < 0 || hd_store_delete_deployment(sup->store, wl->name, &err) < 0 ||
        hd_store_commit(sup->store, &err) < 0) {
        hd_store_rollback(sup->store);
        supervisor_log_error(&err);
    }
    hd_creds_forget(sup->broker, sup->cfg, wl->name);
    hd_function_forget(sup->cfg, wl->name);
    hd_store_event(sup->store, wl->name, "removed", "removed");
    for (const char *suffix = ""; suffix; suffix = *suffix ? NULL : ".1") {
        cleanup_free char *log = hd_xasprintf("%s/%s.log%s", sup->cfg->log_dir, wl->name, suffix);
        unlink(log);
    }
    for (struct workload **p = &sup->workloads; *p; p = &(*p)->next)
        if (*p == wl) {
            *p = wl->next;
            break;
        }
    while (wl->waiters) {
        struct waiter *w = wl->waiters;
        wl->waiters = w->next;
        w->fn(w->ctx, HD_SUP_OK, json_pack("{s:s,s:s}", "name", wl->name, "state", "removed"), NULL);
        free(w);
    }
    workload_free(wl);
}

struct hd_spec *supervisor_parse_spec(const char *body, size_t len, const char *origin, hd_error_t *err)
{
    struct hd_spec *spec = hd_spec_new();
    if (hd_spec_parse_json(spec, body, len, origin, err) < 0 || hd_spec_validate(spec, err) < 0) {
        hd_spec_free(spec);
        return NULL;
    }
    if (spec->name == NULL) {
        hd_error_set(err, 0, "name: is required to deploy a workload");
        hd_spec_free(spec);
        return NULL;
    }
    return spec;
}

/* ---- API operations ------------------------------------------------------ */

/* A first deploy of a name is version 1, started at once; a start failure removes it again.
 * A deploy of a changed spec is an upgrade; of the same spec, a start if it is not running. */
void hd_supervisor_deploy(struct hd_supervisor *sup, const char *body, size_t len, const char *origin,
                          double health_wait, hd_reply_fn reply, void *ctx)
{
    supervisor_deploy(sup, body, len, origin, health_wait, false, reply, ctx);
}

void supervisor_deploy(struct hd_supervisor *sup, const char *body, size_t len, const char *origin, double health_wait,
                       bool pulled, hd_reply_fn reply, void *ctx)
{
    hd_error_t err = NULL;
    struct hd_spec *spec = supervisor_parse_spec(body, len, origin ? origin : "spec", &err);
    if (spec == NULL) {
        supervisor_reply_error(reply, ctx, HD_SUP_INVALID, NULL, "%s", hd_error_text(err));
        hd_error_free(&err);
        return;
    }
    if (hd_supervisor_pin_secrets(sup->cfg, spec, &err) < 0) {
        supervisor_reply_error(reply, ctx, HD_SUP_INVALID, NULL, "%s", hd_error_text(err));
        hd_error_free(&err);
        hd_spec_free(spec);
        return;
    }
    char *spec_json = NULL, *digest = NULL;
    struct workload *wl = supervisor_find(sup, spec->name);
    struct pull *pending = pull_find(sup, spec->name);

    if (pending) {
        supervisor_reply_error(reply, ctx, HD_SUP_CONFLICT, NULL, "workload \"%s\": its image %s is being pulled",
                               spec->name, pending->image);
        goto drop;
    }
    if (!(wl && (wl->removing || wl->up)) && pull_prepare(sup, spec, pulled) == 1) {
        pull_start(sup, spec, body, len, origin ? origin : "spec", health_wait, reply, ctx);
        goto drop;
    }
    /* the spec as recorded: its image pinned to the digest it resolved to */
    spec_json = hd_spec_to_json(spec);
    digest = hd_digest(spec_json, strlen(spec_json));

    if (wl && wl->removing) {
        supervisor_reply_error(reply, ctx, HD_SUP_CONFLICT, NULL, "workload \"%s\": is being removed", spec->name);
        goto drop;
    }
    if (wl && wl->up) {
        supervisor_reply_error(reply, ctx, HD_SUP_CONFLICT, NULL,
                               "workload \"%s\": an upgrade to version %d is in progress", spec->name, wl->up->version);
        goto drop;
    }
    if (wl && strcmp(wl->digest, digest) == 0) {
        if (!wl->desired_running || wl->state == HD_LC_STOPPED || wl->state == HD_LC_EXITED ||
            wl->state == HD_LC_FAILED) {
            wl->desired_running = true;
            wl->restarts = 0;
            wl->consecutive_failures = 0;
            workload_save(wl);
            if (!wl->cur && !wl->backoff_timer)
                workload_apply(wl, HD_LC_EV_START);
        }
        reply(ctx, HD_SUP_OK,
              json_pack("{s:s,s:i,s:s}", "name", wl->name, "version", wl->version, "status", "unchanged"), NULL);
        goto drop;
    }
    if (wl) {
        upgrade_begin(wl, spec, spec_json, digest, NULL, health_wait, reply, ctx);
        return;
    }

    wl = workload_new(sup, spec->name);
    wl->spec = spec;
    wl->digest = digest;
    wl->version = 1;
    wl->desired_running = true;
    wl->created_at = supervisor_unix_ms();
    if (hd_store_begin(sup->store, &err) < 0 ||
        hd_store_add_version(sup->store, wl->name, 1, spec_json, digest, "active", NULL, &err) < 0 ||
        hd_store_commit(sup->store, &err) < 0) {
        hd_store_rollback(sup->store);
        supervisor_reply_error(reply, ctx, HD_SUP_INTERNAL, NULL, "%s", hd_error_text(err));
        hd_error_free(&err);
        wl->removing = true;
        workload_finish_remove(wl);
        free(spec_json);
        return;
    }
    workload_save(wl);
    hd_store_event(sup->store, wl->name, "deployed", "version 1 deployed (%s)", digest);
    free(spec_json);
    workload_add_waiter(wl, reply, ctx, true);
    workload_apply(wl, HD_LC_EV_DEPLOY);
    if (wl->removing)
        workload_finish_remove(wl);
    return;
drop:
    hd_spec_free(spec);
    free(spec_json);
    free(digest);
}

void hd_supervisor_stop(struct hd_supervisor *sup, const char *name, hd_reply_fn reply, void *ctx)
{
    struct workload *wl = supervisor_find(sup, name);
    if (wl == NULL)
        return supervisor_reply_error(reply, ctx, HD_SUP_NOT_FOUND, NULL, "workload \"%s\": not found", name);
    wl->desired_running = false;
    workload_save(wl);
    hd_creds_revoke(sup->broker, name);
    hd_store_event(sup->store, name, "stop", "stop requested");
    workload_add_waiter(wl, reply, ctx, false);
    if (wl->state != HD_LC_STOPPING)
        workload_stop(wl);
}

void hd_supervisor_start(struct hd_supervisor *sup, const char *name, hd_reply_fn reply, void *ctx)
{
    struct workload *wl = supervisor_find(sup, name);
    if (wl == NULL)
        return supervisor_reply_error(reply, ctx, HD_SUP_NOT_FOUND, NULL, "workload \"%s\": not found", name);
    struct hd_lc_transition t;
    if (hd_lifecycle_next(wl->state, HD_LC_EV_START, &t) != HD_LC_OK)
        return supervisor_reply_error(reply, ctx, HD_SUP_CONFLICT, NULL,
                                      "workload \"%s\": is %s; start it once it stopped", name,
                                      hd_lc_state_name(wl->state));
    wl->desired_running = true;
    wl->restarts = 0;
    wl->consecutive_failures = 0;
    workload_save(wl);
    workload_cancel_restart(wl);
    if (wl->cur) {
        reply(ctx, HD_SUP_OK, workload_json(wl, false), NULL);
        return;
    }
    hd_store_event(sup->store, name, "start", "start requested");
    workload_add_waiter(wl, reply, ctx, false);
    workload_apply(wl, HD_LC_EV_START);
}

void hd_supervisor_remove(struct hd_supervisor *sup, const char *name, hd_reply_fn reply, void *ctx)
{
    struct workload *wl = supervisor_find(sup, name);
    struct pull *pending = pull_find(sup, name);
    if (pending)
        pull_cancel(pending); /* its deploy answers that it was removed */
    if (wl == NULL && pending) {
        reply(ctx, HD_SUP_OK, json_pack("{s:s,s:s}", "name", name, "state", "removed"), NULL);
        return;
    }
    if (wl == NULL)
        return supervisor_reply_error(reply, ctx, HD_SUP_NOT_FOUND, NULL, "workload \"%s\": not found", name);
    wl->removing = true;
    wl->desired_running = false;
    workload_add_waiter(wl, reply, ctx, false);
    if (wl->state != HD_LC_STOPPING)
        workload_stop(wl);
    if (wl->cur == NULL)
        workload_finish_remove(wl);
}

void hd_supervisor_forget(struct hd_supervisor *sup, void *ctx)
{
    pull_forget(sup, ctx);
    for (struct workload *wl = sup->workloads; wl; wl = wl->next) {
        for (struct waiter **p = &wl->waiters; *p;) {
            if ((*p)->ctx == ctx) {
                struct waiter *w = *p;
                *p = w->next;
                free(w);
            } else
                p = &(*p)->next;
        }
        if (wl->up && wl->up->ctx == ctx)
            wl->up->reply = NULL;
    }
}

/* ---- views --------------------------------------------------------------- */

static json_t *workload_json(struct workload *wl, bool with_stats)
{
    json_t *o = json_pack("{s:s,s:i,s:s,s:s,s:s,s:i,s:s}", "name", wl->name, "version", wl->version, "isolation",
                          hd_isolation_name(wl->spec->isolation), "state", workload_state_name(wl), "desired",
                          wl->desired_running ? "running" : "stopped", "restarts", wl->restarts, "digest", wl->digest);
    struct run *run = wl->cur;
    bool running = run_is_up(run);
    json_object_set_new(o, "pid", running ? json_integer(run->inst->pid) : json_null());
    json_object_set_new(o, "monitor_pid", running ? json_integer(run->inst->monitor_pid) : json_null());
    json_object_set_new(o, "started_at", running ? json_integer(run->inst->started_at) : json_null());
    json_object_set_new(o, "uptime_seconds",
                        running ? json_real((double)(supervisor_unix_ms() - run->inst->started_at) / 1000.0)
                                : json_null());
    json_object_set_new(o, "last_error", wl->last_error ? json_string(wl->last_error) : json_null());
    json_object_set_new(o, "vm_boot",
                        run && run->inst && run->inst->vm_boot[0] ? json_string(run->inst->vm_boot) : json_null());
    json_object_set_new(o, "upgrading_to", wl->up ? json_integer(wl->up->version) : json_null());
    struct pull *pending = pull_find(wl->sup, wl->name);
    json_object_set_new(o, "pulling", pending ? json_string(pending->image) : json_null());
    json_object_set_new(o, "restart_policy",
                        json_string(wl->spec->restart.policy == HD_RESTART_ALWAYS           ? "always"
                                        : wl->spec->restart.policy == HD_RESTART_ON_FAILURE ? "on-failure"
                                                                                            : "never"));
    if (with_stats) {
        struct hd_stats st = {0};
        hd_error_t err = NULL;
        if (running && hd_instance_stats(run->inst, &st, &err) == 0) {
            json_object_set_new(o, "cpu_seconds", json_real((double)st.cpu_usage_ns / 1e9));
            json_object_set_new(o, "memory_bytes", json_integer((json_int_t)st.memory_bytes));
        } else {
            json_object_set_new(o, "cpu_seconds", json_null());
            json_object_set_new(o, "memory_bytes", json_null());
        }
        hd_error_free(&err);
    }
    if (hd_function_is(wl->spec))
        json_object_set_new(o, "function", hd_function_json(wl->sup->cfg, wl->name, wl->version, wl->spec, running));
    return o;
}

json_t *hd_supervisor_list(struct hd_supervisor *sup)
{
    json_t *a = json_array();
    for (struct workload *wl = sup->workloads; wl; wl = wl->next)
        json_array_append_new(a, workload_json(wl, true));
    for (struct pull *p = sup->pulls; p; p = p->next)
        if (supervisor_find(sup, p->name) == NULL)
            json_array_append_new(a, pull_json(p));
    return a;
}

json_t *hd_supervisor_images_in_use(struct hd_supervisor *sup)
{
    json_t *images = hd_store_version_images(sup->store);
    for (struct pull *p = sup->pulls; p; p = p->next)
        json_array_append_new(images, json_string(p->image));
    return json_pack("{s:s,s:o}", "state_dir", sup->cfg->state_dir, "images", images);
}

json_t *hd_supervisor_get(struct hd_supervisor *sup, const char *name)
{
    struct workload *wl = supervisor_find(sup, name);
    struct pull *pending = wl ? NULL : pull_find(sup, name);
    if (pending)
        return pull_json(pending);
    if (wl == NULL)
        return NULL;
    json_t *o = workload_json(wl, true);
    char *spec = hd_spec_to_json(wl->spec);
    json_object_set_new(o, "spec", json_loads(spec, 0, NULL));
    free(spec);
    json_object_set_new(o, "events", hd_store_events(sup->store, name, 20));
    return o;
}

json_t *hd_supervisor_history(struct hd_supervisor *sup, const char *name)
{
    struct workload *wl = supervisor_find(sup, name);
    if (wl == NULL)
        return NULL;
    return json_pack("{s:s,s:i,s:o,s:o}", "name", name, "version", wl->version, "versions",
                     hd_store_history(sup->store, name), "events", hd_store_events(sup->store, name, 50));
}

char *hd_supervisor_log_path(struct hd_supervisor *sup, const char *name)
{
    if (supervisor_find(sup, name) == NULL)
        return NULL;
    return hd_xasprintf("%s/%s.log", sup->cfg->log_dir, name);
}

/* ---- the supervisor ------------------------------------------------------ */

struct hd_supervisor *hd_supervisor_new(struct hd_loop *loop, struct hd_store *store,
                                        const struct hd_daemon_config *cfg, hd_error_t *err)
{
    struct hd_supervisor *sup = hd_xcalloc(1, sizeof(*sup));
    sup->loop = loop;
    sup->store = store;
    sup->cfg = cfg;
    return sup;
}

void hd_supervisor_set_broker(struct hd_supervisor *sup, struct hd_netchild *broker)
{
    sup->broker = broker;
}

/* hedged exits: the runs exist only in memory here, their monitors stay. */
void hd_supervisor_free(struct hd_supervisor *sup)
{
    if (sup == NULL)
        return;
    pull_free_all(sup);
    while (sup->workloads) {
        struct workload *wl = sup->workloads;
        sup->workloads = wl->next;
        if (wl->up) {
            if (wl->up->run)
                run_detach(wl->up->run);
            upgrade_free(sup, wl->up);
        }
        if (wl->cur) {
            run_detach(wl->cur);
            wl->cur = NULL;
        }
        while (wl->waiters) {
            struct waiter *w = wl->waiters;
            wl->waiters = w->next;
            free(w);
        }
        workload_free(wl);
    }
    while (sup->retiring) {
        struct run *run = sup->retiring;
        sup->retiring = run->next;
        run_detach(run);
    }
    free(sup);
}

void hd_daemon_child_begin(int out_fd, int err_fd)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    setsid();
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull >= 0)
        dup2(devnull, 0);
    dup2(out_fd >= 0 ? out_fd : devnull, 1);
    dup2(err_fd >= 0 ? err_fd : devnull, 2);
}

char *hd_daemon_hedge_path(void)
{
    char *path = hd_program_sibling("hedge");
    return path ? path : hd_xstrdup("hedge");
}

void hd_daemon_exec_hedge(const char *hedge, char *const argv[])
{
    if (strchr(hedge, '/'))
        execv(hedge, argv);
    else
        execvp(hedge, argv);
    dprintf(2, "hedge: exec %s: %s\n", hedge, strerror(errno));
    _exit(127);
}
