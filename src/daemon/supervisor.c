/*
 * supervisor.c - keeps each deployed workload in its desired state.
 *
 * Each workload is an explicit state machine (s6-supervise style):
 *
 *   created ─start─▶ starting ─report ok─▶ running ─exit─▶ exited | failed
 *      ▲                │ report err                            │
 *      │                ▼                       restart policy  │
 *   backoff ◀───────────┴───────────────────────────────────────┘
 *   running ─stop─▶ stopping ─exit─▶ stopped     (SIGTERM, grace, SIGKILL)
 *
 * "backoff" is shown as "crash-loop" once crash_loop_after quick failures
 * follow each other. Restart delays double from restart_backoff_initial up
 * to restart_backoff_max; a run longer than restart_reset_after resets them.
 *
 * A workload has at most three runs (a run = an instance = one monitor): the
 * current one, an upgrade candidate, and old ones being retired after an
 * upgrade. Every run is recorded in the store *before* its monitor is
 * spawned, so a restarted hedged finds every monitor it may have started.
 *
 * Upgrade: the candidate must keep running for health_wait seconds (or, when
 * the spec has health.command, that command, run on the host every 0.5 s,
 * must exit 0 within health_wait); then the old run is retired and the
 * candidate becomes current. If the candidate
 * fails to start or exits early, its version is marked failed with the
 * reason and the old run never stopped. Rollback deploys the spec of the
 * previous good version as a new version (its note says so).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "base/util.h"

enum wl_state {
    WL_CREATED,
    WL_STARTING,
    WL_RUNNING,
    WL_STOPPING,
    WL_STOPPED,
    WL_EXITED,
    WL_FAILED,
    WL_BACKOFF,
};

static const char *const state_names[] = {"created", "starting", "running", "stopping",
                                          "stopped", "exited",   "failed",  "backoff"};

enum run_role { ROLE_CURRENT, ROLE_CANDIDATE, ROLE_RETIRING };
static const char *const role_names[] = {"current", "candidate", "retiring"};

struct workload;

struct run {
    struct hd_instance *inst;
    struct workload *wl;      /* NULL once retiring and the workload is gone */
    struct hd_supervisor *sup;
    enum run_role role;
    int version;
    bool started;             /* the start report said ok */
    bool stop_requested;      /* TERM sent (or to send once started) */
    struct hd_timer *kill_timer;
    struct run *next;         /* in sup->retiring */
};

struct waiter {
    hd_reply_fn fn;
    void *ctx;
    bool first_deploy;         /* answer "created" or the start error, not the state */
    struct waiter *next;
};

struct upgrade {
    int version;
    struct hd_spec *spec;
    char *spec_json;
    char *digest;
    struct run *run;
    struct hd_timer *health_timer;   /* the health deadline (or, without a command, the wait) */
    double health_wait;
    pid_t probe_pid;                 /* the spec's health command, running; 0 when not */
    int probe_last_code;             /* its last exit code, -1 before the first */
    struct hd_timer *probe_timer;    /* the next probe */
    hd_reply_fn reply;
    void *ctx;
};

struct workload {
    struct hd_supervisor *sup;
    char *name;
    int version;
    struct hd_spec *spec;
    char *digest;
    bool desired_running;
    bool removing;
    enum wl_state state;
    struct run *cur;
    int restarts;              /* restarts since the last deploy/start */
    int consecutive_failures;
    struct hd_timer *backoff_timer;
    char *last_error;
    char *start_error;         /* the last run never started: the runtime's message */
    int last_exit_code;
    int64_t created_at;
    struct upgrade *up;
    struct waiter *waiters;    /* replies sent when the state settles */
    struct workload *next;
};

struct hd_supervisor {
    struct hd_loop *loop;
    struct hd_store *store;
    const struct hd_daemon_config *cfg;
    struct workload *workloads;
    struct run *retiring;
    struct hd_broker *broker;  /* workload credentials live here; NULL when disabled */
};

static void run_start_watch(struct run *run);
static void workload_start(struct workload *wl);
static void upgrade_fail(struct workload *wl, const char *why);
static void upgrade_probe(struct hd_loop *loop, void *data);

static int64_t unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static json_t *error_body(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *error_body(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cleanup_free char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        abort();
    va_end(ap);
    return json_pack("{s:s}", "error", msg);
}

static void log_error(hd_error_t *err)
{
    hd_error_print(*err, "hedged");
    hd_error_free(err);
}

static struct workload *find(struct hd_supervisor *sup, const char *name)
{
    for (struct workload *wl = sup->workloads; wl; wl = wl->next)
        if (strcmp(wl->name, name) == 0)
            return wl;
    return NULL;
}

bool hd_supervisor_exists(struct hd_supervisor *sup, const char *name)
{
    return find(sup, name) != NULL;
}

static const char *state_name(const struct workload *wl)
{
    if (wl->state == WL_BACKOFF && wl->consecutive_failures >= wl->sup->cfg->crash_loop_after)
        return "crash-loop";
    return state_names[wl->state];
}

static void save_deployment(struct workload *wl)
{
    hd_error_t err = NULL;
    struct hd_store_deployment d = {wl->name,       wl->version,          wl->desired_running, wl->restarts,
                                    wl->created_at, (char *)state_name(wl), wl->last_error};
    if (hd_store_put_deployment(wl->sup->store, &d, &err) < 0)
        log_error(&err);
}

static json_t *workload_json(struct workload *wl, bool with_stats);

/* Change state; when the new state is settled, answer whoever waits for it. */
static void set_state(struct workload *wl, enum wl_state state)
{
    wl->state = state;
    if (state == WL_STARTING || state == WL_STOPPING || wl->removing)
        return; /* a removal answers in workload_finish_remove */
    save_deployment(wl);
    while (wl->waiters) {
        struct waiter *w = wl->waiters;
        wl->waiters = w->next;
        if (!w->first_deploy)
            w->fn(w->ctx, 200, workload_json(wl, false));
        else if (wl->start_error == NULL)
            w->fn(w->ctx, 201, json_pack("{s:s,s:i,s:s}", "name", wl->name, "version", wl->version, "status",
                                         "created"));
        else {
            /* a first deploy that cannot start leaves nothing behind, like a failed `hedge run` */
            w->fn(w->ctx, 422, json_pack("{s:s,s:i}", "error", wl->start_error, "exit_code", wl->last_exit_code));
            wl->removing = true;
            wl->desired_running = false;
        }
        free(w);
    }
}

static void add_waiter(struct workload *wl, hd_reply_fn fn, void *ctx, bool first_deploy)
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

/* ---- runs ------------------------------------------------------------ */

static struct run *run_new(struct workload *wl, enum run_role role, int version)
{
    struct run *run = hd_xcalloc(1, sizeof(*run));
    run->wl = wl;
    run->sup = wl->sup;
    run->role = role;
    run->version = version;
    return run;
}

static void run_free(struct run *run)
{
    struct hd_supervisor *sup = run->sup;
    if (run->kill_timer)
        hd_loop_cancel(sup->loop, run->kill_timer);
    if (run->inst) {
        hd_loop_unwatch(sup->loop, run->inst->watch);
        hd_error_t err = NULL;
        if (hd_store_delete_instance(sup->store, run->inst->id, &err) < 0)
            log_error(&err);
        hd_instance_free(run->inst, true);
    }
    free(run);
}

/* Spawn the run's monitor for spec_json; the instance row is written first. */
static int run_spawn(struct run *run, const char *spec_json, hd_error_t *err)
{
    struct hd_supervisor *sup = run->sup;
    char id[16];
    hd_random_id(id, sizeof(id));
    if (hd_store_put_instance(sup->store, id, run->wl->name, run->version, role_names[run->role], err) < 0)
        return -1;
    if (hd_instance_spawn(sup->cfg, run->wl->name, spec_json, id, &run->inst, err) < 0) {
        hd_error_t ignored = NULL;
        hd_store_delete_instance(sup->store, id, &ignored);
        hd_error_free(&ignored);
        return -1;
    }
    run_start_watch(run);
    return 0;
}

static void run_kill_timeout(struct hd_loop *loop, void *data)
{
    struct run *run = data;
    run->kill_timer = NULL;
    hd_error_t err = NULL;
    if (hd_instance_signal(run->inst, SIGKILL, &err) < 0)
        hd_error_free(&err);
}

/* SIGTERM now, SIGKILL after the grace period (or at once once it starts). */
static void run_stop(struct run *run)
{
    if (run->stop_requested && run->kill_timer == NULL && run->started)
        return;
    run->stop_requested = true;
    if (!run->started || run->inst == NULL || run->inst->exited)
        return; /* run_started sends it */
    hd_error_t err = NULL;
    if (hd_instance_signal(run->inst, SIGTERM, &err) < 0)
        hd_error_free(&err);
    if (run->kill_timer == NULL)
        run->kill_timer = hd_loop_timer(run->sup->loop, run->sup->cfg->stop_grace, run_kill_timeout, run);
}

static void retire(struct run *run)
{
    struct hd_supervisor *sup = run->sup;
    run->role = ROLE_RETIRING;
    hd_error_t err = NULL;
    if (run->inst && hd_store_put_instance(sup->store, run->inst->id, run->wl->name, run->version, "retiring",
                                           &err) < 0)
        log_error(&err);
    run->next = sup->retiring; /* run->wl stays valid: a removal waits for its retiring runs */
    sup->retiring = run;
    run_stop(run);
}

static bool has_retiring(struct hd_supervisor *sup, struct workload *wl)
{
    for (struct run *run = sup->retiring; run; run = run->next)
        if (run->wl == wl)
            return true;
    return false;
}

static void workload_finish_remove(struct workload *wl);

static void retiring_done(struct run *run)
{
    struct hd_supervisor *sup = run->sup;
    struct workload *wl = run->wl;
    for (struct run **p = &sup->retiring; *p; p = &(*p)->next)
        if (*p == run) {
            *p = run->next;
            break;
        }
    run_free(run);
    if (wl->removing && wl->cur == NULL)
        workload_finish_remove(wl);
}

/* ---- the current run ------------------------------------------------- */

static char *describe_exit(const struct hd_instance *inst)
{
    if (inst->lost)
        return hd_xasprintf("lost its monitor, which recorded no exit (its workload was killed)");
    if (inst->start_error)
        return hd_xasprintf("start failed (exit code %d): %s", inst->exit.code, inst->start_error);
    if (inst->exit.oom_killed)
        return hd_xasprintf("OOM-killed (exit code %d)", inst->exit.code);
    if (inst->exit.signal)
        return hd_xasprintf("killed by signal %d (exit code %d)", inst->exit.signal, inst->exit.code);
    return hd_xasprintf("exited with code %d", inst->exit.code);
}

static void backoff_fired(struct hd_loop *loop, void *data)
{
    struct workload *wl = data;
    wl->backoff_timer = NULL;
    wl->restarts++;
    save_deployment(wl);
    hd_store_event(wl->sup->store, wl->name, "restart", "restart %d of version %d", wl->restarts, wl->version);
    workload_start(wl);
}

/* The current run ended (or never started): apply the restart policy. */
static void current_ended(struct workload *wl, bool while_down)
{
    struct run *run = wl->cur;
    struct hd_instance *inst = run->inst;
    const struct hd_daemon_config *cfg = wl->sup->cfg;
    bool failed = inst->start_error || inst->exit.code != 0;
    free(wl->last_error);
    wl->last_error = describe_exit(inst);
    free(wl->start_error);
    wl->start_error = hd_xstrdup(inst->start_error);
    wl->last_exit_code = inst->exit.code;
    int64_t finished = inst->finished_at ? inst->finished_at : unix_ms();
    double ran_for = inst->started_at ? (double)(finished - inst->started_at) / 1000.0 : 0;
    bool was_stopping = run->stop_requested;
    wl->cur = NULL;
    run_free(run);

    if (was_stopping || !wl->desired_running) {
        hd_store_event(wl->sup->store, wl->name, "stopped", "version %d stopped: %s", wl->version,
                       wl->last_error);
        set_state(wl, WL_STOPPED);
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
    if (!restart) {
        set_state(wl, failed ? WL_FAILED : WL_EXITED);
        return;
    }
    wl->consecutive_failures++;
    double delay = cfg->backoff_initial;
    for (int i = 1; i < wl->consecutive_failures && delay < cfg->backoff_max; i++)
        delay *= 2;
    if (delay > cfg->backoff_max)
        delay = cfg->backoff_max;
    wl->backoff_timer = hd_loop_timer(wl->sup->loop, delay, backoff_fired, wl);
    set_state(wl, WL_BACKOFF);
}

static void workload_free(struct workload *wl);

static void workload_finish_remove(struct workload *wl)
{
    struct hd_supervisor *sup = wl->sup;
    if (has_retiring(sup, wl))
        return; /* the last retiring run to end calls us again */
    hd_error_t err = NULL;
    if (hd_store_begin(sup->store, &err) < 0 || hd_store_delete_deployment(sup->store, wl->name, &err) < 0 ||
        hd_store_commit(sup->store, &err) < 0) {
        hd_store_rollback(sup->store);
        log_error(&err);
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
        w->fn(w->ctx, 200, json_pack("{s:s,s:s}", "name", wl->name, "state", "removed"));
        free(w);
    }
    workload_free(wl);
}

/* ---- watching monitors ----------------------------------------------- */

static void run_started(struct run *run)
{
    run->started = true;
    if (run->stop_requested) {
        run->stop_requested = false;
        run_stop(run);
    }
    struct workload *wl = run->wl;
    if (run->role == ROLE_CURRENT) {
        hd_store_event(wl->sup->store, wl->name, "started", "version %d started, pid %d", wl->version,
                       run->inst->pid);
        if (wl->state == WL_STARTING)
            set_state(wl, WL_RUNNING);
    } else if (run->role == ROLE_CANDIDATE) {
        struct upgrade *up = wl->up;
        if (up->spec->health.command) {
            hd_store_event(wl->sup->store, wl->name, "upgrade",
                           "version %d started, pid %d; health command has %gs to pass", up->version,
                           run->inst->pid, up->health_wait);
            upgrade_probe(wl->sup->loop, wl);
        } else
            hd_store_event(wl->sup->store, wl->name, "upgrade", "version %d started, pid %d; healthy after %gs",
                           up->version, run->inst->pid, up->health_wait);
    }
}

static void run_ended(struct run *run, bool while_down)
{
    switch (run->role) {
    case ROLE_RETIRING:
        retiring_done(run);
        return;
    case ROLE_CANDIDATE: {
        cleanup_free char *why = describe_exit(run->inst);
        upgrade_fail(run->wl, why);
        return;
    }
    case ROLE_CURRENT: {
        struct workload *wl = run->wl;
        hd_error_t err = NULL;
        if (hd_store_begin(wl->sup->store, &err) < 0)
            log_error(&err);
        current_ended(wl, while_down);
        if (hd_store_commit(wl->sup->store, &err) < 0) {
            hd_store_rollback(wl->sup->store);
            log_error(&err);
        }
        if (wl->removing && wl->state != WL_STOPPING && wl->state != WL_STARTING)
            workload_finish_remove(wl);
        return;
    }
    }
}

static void on_monitor_exit(struct hd_loop *loop, int fd, uint32_t events, void *data)
{
    struct run *run = data;
    hd_loop_unwatch(loop, run->inst->watch);
    run->inst->watch = NULL;
    hd_instance_collect(run->inst);
    run_ended(run, false);
}

static void on_report(struct hd_loop *loop, int fd, uint32_t events, void *data)
{
    struct run *run = data;
    hd_loop_unwatch(loop, run->inst->watch);
    run->inst->watch = NULL;
    hd_error_t err = NULL;
    if (hd_instance_read_report(run->inst, &err) < 0) {
        if (!run->inst->exited) {
            run->inst->exited = true;
            run->inst->exit.code = hd_error_exit_code(err) ? hd_error_exit_code(err) : HD_EXIT_HEDGE;
            run->inst->start_error = hd_xstrdup(hd_error_text(err));
        }
        hd_error_free(&err);
        run_ended(run, false);
        return;
    }
    run_start_watch(run);
    run_started(run);
}

/* Watch the report pipe until the monitor reported, then its pidfd. */
static void run_start_watch(struct run *run)
{
    hd_error_t err = NULL;
    struct hd_instance *inst = run->inst;
    if (inst->report_fd >= 0)
        inst->watch = hd_loop_watch(run->sup->loop, inst->report_fd, EPOLLIN, on_report, run, &err);
    else
        inst->watch = hd_loop_watch(run->sup->loop, inst->pidfd, EPOLLIN, on_monitor_exit, run, &err);
    if (inst->watch == NULL)
        log_error(&err);
}

/* ---- starting and stopping the current version ------------------------ */

/* The spec JSON a version's monitor runs: the spec with its broker credentials, or for a
 * function the host spec (function_host.c). NULL with err set on failure. */
static char *monitor_spec(struct hd_supervisor *sup, const char *name, int version, const struct hd_spec *spec,
                          hd_error_t *err)
{
    if (hd_function_is(spec))
        return hd_function_host_spec(sup->broker, sup->cfg, name, version, spec, err);
    char *json = hd_creds_grant(sup->broker, sup->cfg, name, spec, err);
    if (json == NULL)
        hd_error_prefix(err, "MQTT credentials");
    return json;
}

/* Register the broker users of the active spec again (adoption, a failed upgrade). */
static void restore_creds(struct workload *wl)
{
    hd_error_t err = NULL;
    int r = hd_function_is(wl->spec) ? hd_function_restore(wl->sup->broker, wl->sup->cfg, wl->name, wl->spec, &err)
                                     : hd_creds_restore(wl->sup->broker, wl->sup->cfg, wl->name, wl->spec, &err);
    if (r < 0)
        log_error(&err);
}

static void workload_start(struct workload *wl)
{
    hd_error_t err = NULL;
    cleanup_free char *spec_json = monitor_spec(wl->sup, wl->name, wl->version, wl->spec, &err);
    struct run *run = run_new(wl, ROLE_CURRENT, wl->version);
    wl->cur = run;
    set_state(wl, WL_STARTING);
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
        set_state(wl, WL_FAILED);
    }
}

/* Bring the current run down; the state settles to stopped when it exits. */
static void workload_stop(struct workload *wl)
{
    if (wl->up)
        upgrade_fail(wl, "stopped during the upgrade");
    if (wl->backoff_timer) {
        hd_loop_cancel(wl->sup->loop, wl->backoff_timer);
        wl->backoff_timer = NULL;
    }
    if (wl->cur) {
        set_state(wl, WL_STOPPING);
        run_stop(wl->cur);
    } else {
        set_state(wl, WL_STOPPED);
    }
}

/* ---- upgrades ---------------------------------------------------------- */

static void upgrade_free(struct hd_supervisor *sup, struct upgrade *up)
{
    if (up->health_timer)
        hd_loop_cancel(sup->loop, up->health_timer);
    if (up->probe_timer)
        hd_loop_cancel(sup->loop, up->probe_timer);
    if (up->probe_pid > 0)
        kill(up->probe_pid, SIGKILL); /* reaped by hd_supervisor_child_exited, which then ignores it */
    hd_spec_free(up->spec);
    free(up->spec_json);
    free(up->digest);
    free(up);
}

static void upgrade_fail(struct workload *wl, const char *why)
{
    struct upgrade *up = wl->up;
    struct hd_supervisor *sup = wl->sup;
    wl->up = NULL;
    hd_error_t err = NULL;
    if (hd_store_set_version_status(sup->store, wl->name, up->version, "failed", why, &err) < 0)
        log_error(&err);
    hd_store_event(sup->store, wl->name, "upgrade-failed", "version %d failed: %s; version %d kept",
                   up->version, why, wl->version);
    if (up->run) {
        if (up->run->inst->exited)
            run_free(up->run);
        else
            retire(up->run);
    }
    if (wl->desired_running)
        restore_creds(wl);
    if (up->reply)
        up->reply(up->ctx, 409,
                  error_body("upgrade %s to version %d failed: %s; version %d kept", wl->name, up->version, why,
                             wl->version));
    upgrade_free(sup, up);
}

static void upgrade_healthy(struct hd_loop *loop, void *data)
{
    struct workload *wl = data;
    struct upgrade *up = wl->up;
    struct hd_supervisor *sup = wl->sup;
    up->health_timer = NULL;
    if (!up->run->started) { /* still starting after the wait: keep waiting */
        up->health_timer = hd_loop_timer(loop, 0.1, upgrade_healthy, wl);
        return;
    }
    if (up->spec->health.command && up->probe_last_code != 0) {
        cleanup_free char *why = up->probe_last_code < 0
                                     ? hd_xasprintf("the health command did not finish within %gs", up->health_wait)
                                     : hd_xasprintf("the health command did not pass within %gs (last exit code %d)",
                                                    up->health_wait, up->probe_last_code);
        upgrade_fail(wl, why);
        return;
    }
    wl->up = NULL;
    int old_version = wl->version;
    hd_error_t err = NULL;
    if (hd_store_begin(sup->store, &err) < 0)
        log_error(&err);
    if (wl->backoff_timer) {
        hd_loop_cancel(loop, wl->backoff_timer);
        wl->backoff_timer = NULL;
    }
    if (wl->cur)
        retire(wl->cur);
    struct run *run = up->run;
    run->role = ROLE_CURRENT;
    if (hd_store_put_instance(sup->store, run->inst->id, wl->name, up->version, "current", &err) < 0 ||
        hd_store_set_version_status(sup->store, wl->name, old_version, "superseded", NULL, &err) < 0 ||
        hd_store_set_version_status(sup->store, wl->name, up->version, "active", NULL, &err) < 0)
        log_error(&err);
    wl->cur = run;
    wl->version = up->version;
    hd_spec_free(wl->spec);
    wl->spec = get_and_reset(&up->spec);
    free(wl->digest);
    wl->digest = get_and_reset(&up->digest);
    wl->restarts = 0;
    wl->consecutive_failures = 0;
    wl->desired_running = true;
    save_deployment(wl);
    hd_store_event(sup->store, wl->name, "upgraded", "version %d replaced version %d", wl->version, old_version);
    if (hd_store_commit(sup->store, &err) < 0) {
        hd_store_rollback(sup->store);
        log_error(&err);
    }
    if (up->reply)
        up->reply(up->ctx, 200,
                  json_pack("{s:s,s:i,s:i,s:s}", "name", wl->name, "version", wl->version, "previous",
                            old_version, "status", "upgraded"));
    upgrade_free(sup, up);
    set_state(wl, WL_RUNNING);
}


/* Run the spec's health command once, on the host, told which workload it checks. */
static void upgrade_probe(struct hd_loop *loop, void *data)
{
    struct workload *wl = data;
    struct upgrade *up = wl->up;
    up->probe_timer = NULL;
    char pid_text[16], version_text[16];
    snprintf(pid_text, sizeof(pid_text), "%d", (int)up->run->inst->pid);
    snprintf(version_text, sizeof(version_text), "%d", up->version);
    pid_t pid = fork();
    if (pid < 0) {
        up->probe_timer = hd_loop_timer(loop, 0.5, upgrade_probe, wl);
        return;
    }
    if (pid == 0) {
        /* not hd_child_reset_signals: child.c would pull the whole runtime into hedged */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        setsid();
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        setenv("HEDGE_WORKLOAD_NAME", wl->name, 1);
        setenv("HEDGE_WORKLOAD_PID", pid_text, 1);
        setenv("HEDGE_WORKLOAD_VERSION", version_text, 1);
        execvp(up->spec->health.command[0], up->spec->health.command);
        _exit(errno == ENOENT ? HD_EXIT_NOT_FOUND : HD_EXIT_CANNOT_INVOKE);
    }
    up->probe_pid = pid;
}

void hd_supervisor_child_exited(struct hd_supervisor *sup, pid_t pid, int status)
{
    for (struct workload *wl = sup->workloads; wl; wl = wl->next) {
        struct upgrade *up = wl->up;
        if (up == NULL || up->probe_pid != pid)
            continue;
        up->probe_pid = 0;
        /* (not hd_exit_from_wait_status: run.c would pull the whole runtime into hedged) */
        up->probe_last_code = WIFEXITED(status) ? WEXITSTATUS(status) : HD_EXIT_SIGNAL(WTERMSIG(status));
        if (up->probe_last_code == 0) {
            hd_store_event(sup->store, wl->name, "health", "version %d: the health command passed", up->version);
            if (up->health_timer)
                hd_loop_cancel(sup->loop, up->health_timer);
            up->health_timer = NULL;
            upgrade_healthy(sup->loop, wl);
        } else
            up->probe_timer = hd_loop_timer(sup->loop, 0.5, upgrade_probe, wl);
        return;
    }
}

static void upgrade_begin(struct workload *wl, struct hd_spec *spec, char *spec_json, char *digest,
                          const char *note, double health_wait, hd_reply_fn reply, void *ctx)
{
    struct hd_supervisor *sup = wl->sup;
    struct upgrade *up = hd_xcalloc(1, sizeof(*up));
    up->version = hd_store_max_version(sup->store, wl->name) + 1;
    up->spec = spec;
    up->spec_json = spec_json;
    up->digest = digest;
    up->health_wait = health_wait >= 0 ? health_wait : spec->health.wait > 0 ? spec->health.wait : sup->cfg->health_wait;
    up->probe_last_code = -1;
    up->reply = reply;
    up->ctx = ctx;
    hd_error_t err = NULL;
    if (hd_store_add_version(sup->store, wl->name, up->version, spec_json, digest, "pending", note, &err) < 0) {
        reply(ctx, 500, error_body("%s", hd_error_text(err)));
        hd_error_free(&err);
        upgrade_free(sup, up);
        return;
    }
    hd_store_event(sup->store, wl->name, "upgrade", "deploying version %d over version %d%s%s", up->version,
                   wl->version, note ? ": " : "", note ? note : "");
    wl->up = up;
    up->run = run_new(wl, ROLE_CANDIDATE, up->version);
    cleanup_free char *monitor_json = monitor_spec(sup, wl->name, up->version, spec, &err);
    if (monitor_json == NULL || run_spawn(up->run, monitor_json, &err) < 0) {
        free(up->run);
        up->run = NULL;
        cleanup_free char *why = hd_xstrdup(hd_error_text(err));
        hd_error_free(&err);
        upgrade_fail(wl, why);
        return;
    }
    up->health_timer = hd_loop_timer(sup->loop, up->health_wait, upgrade_healthy, wl);
}

/* ---- API operations ---------------------------------------------------- */

static struct workload *workload_new(struct hd_supervisor *sup, const char *name)
{
    struct workload *wl = hd_xcalloc(1, sizeof(*wl));
    wl->sup = sup;
    wl->name = hd_xstrdup(name);
    wl->state = WL_CREATED;
    struct workload **p = &sup->workloads;
    while (*p)
        p = &(*p)->next;
    *p = wl;
    return wl;
}

static void workload_free(struct workload *wl)
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

/* Parse and validate a spec the way `hedge run -f` does, so the messages match. */
static struct hd_spec *parse_spec(const char *body, size_t len, const char *origin, json_t **error)
{
    struct hd_spec *spec = hd_spec_new();
    hd_error_t err = NULL;
    if (hd_spec_parse_json(spec, body, len, origin, &err) < 0 || hd_spec_validate(spec, &err) < 0) {
        *error = error_body("%s", hd_error_text(err));
        hd_error_free(&err);
        hd_spec_free(spec);
        return NULL;
    }
    if (spec->name == NULL) {
        *error = error_body("name: is required to deploy a workload");
        hd_spec_free(spec);
        return NULL;
    }
    return spec;
}

/* A first deploy of a name is version 1, started at once; a start failure removes it again.
 * A deploy of a changed spec is an upgrade; of the same spec, a start if it is not running. */
void hd_supervisor_deploy(struct hd_supervisor *sup, const char *body, size_t len, const char *origin,
                          double health_wait, hd_reply_fn reply, void *ctx)
{
    json_t *error = NULL;
    struct hd_spec *spec = parse_spec(body, len, origin ? origin : "spec", &error);
    if (spec == NULL) {
        reply(ctx, 400, error);
        return;
    }
    char *spec_json = hd_spec_to_json(spec);
    char *digest = hd_digest(spec_json, strlen(spec_json));
    struct workload *wl = find(sup, spec->name);
    hd_error_t err = NULL;

    if (wl && wl->removing) {
        reply(ctx, 409, error_body("workload \"%s\": is being removed", spec->name));
        goto drop;
    }
    if (wl && wl->up) {
        reply(ctx, 409, error_body("workload \"%s\": an upgrade to version %d is in progress", spec->name,
                                   wl->up->version));
        goto drop;
    }
    if (wl && strcmp(wl->digest, digest) == 0) {
        if (!wl->desired_running || wl->state == WL_STOPPED || wl->state == WL_EXITED || wl->state == WL_FAILED) {
            wl->desired_running = true;
            wl->restarts = 0;
            wl->consecutive_failures = 0;
            save_deployment(wl);
            if (!wl->cur && !wl->backoff_timer)
                workload_start(wl);
        }
        reply(ctx, 200, json_pack("{s:s,s:i,s:s}", "name", wl->name, "version", wl->version, "status", "unchanged"));
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
    wl->created_at = unix_ms();
    if (hd_store_begin(sup->store, &err) < 0 ||
        hd_store_add_version(sup->store, wl->name, 1, spec_json, digest, "active", NULL, &err) < 0 ||
        hd_store_commit(sup->store, &err) < 0) {
        hd_store_rollback(sup->store);
        reply(ctx, 500, error_body("%s", hd_error_text(err)));
        hd_error_free(&err);
        wl->removing = true;
        workload_finish_remove(wl);
        free(spec_json);
        return;
    }
    save_deployment(wl);
    hd_store_event(sup->store, wl->name, "deployed", "version 1 deployed (%s)", digest);
    free(spec_json);
    add_waiter(wl, reply, ctx, true);
    workload_start(wl);
    if (wl->removing)
        workload_finish_remove(wl);
    return;
drop:
    hd_spec_free(spec);
    free(spec_json);
    free(digest);
}

void hd_supervisor_rollback(struct hd_supervisor *sup, const char *name, double health_wait,
                            hd_reply_fn reply, void *ctx)
{
    struct workload *wl = find(sup, name);
    if (wl == NULL) {
        reply(ctx, 404, error_body("workload \"%s\": not found", name));
        return;
    }
    if (wl->up) {
        reply(ctx, 409, error_body("workload \"%s\": an upgrade to version %d is in progress", name, wl->up->version));
        return;
    }
    /* The previous good version: the newest one before the active one that never failed. */
    json_t *history = hd_store_history(sup->store, name);
    int target = 0;
    size_t i;
    json_t *v;
    json_array_foreach(history, i, v) {
        int ver = (int)json_integer_value(json_object_get(v, "version"));
        const char *status = json_string_value(json_object_get(v, "status"));
        if (ver < wl->version && strcmp(status, "superseded") == 0)
            target = ver;
    }
    json_decref(history);
    char *spec_json = target ? hd_store_version_spec(sup->store, name, target) : NULL;
    if (spec_json == NULL) {
        reply(ctx, 409, error_body("workload \"%s\": no earlier version to roll back to", name));
        return;
    }
    json_t *error = NULL;
    struct hd_spec *spec = parse_spec(spec_json, strlen(spec_json), "stored spec", &error);
    if (spec == NULL) {
        reply(ctx, 500, error);
        free(spec_json);
        return;
    }
    char *digest = hd_digest(spec_json, strlen(spec_json));
    cleanup_free char *note = hd_xasprintf("rollback to version %d", target);
    upgrade_begin(wl, spec, spec_json, digest, note, health_wait, reply, ctx);
}

void hd_supervisor_stop(struct hd_supervisor *sup, const char *name, hd_reply_fn reply, void *ctx)
{
    struct workload *wl = find(sup, name);
    if (wl == NULL) {
        reply(ctx, 404, error_body("workload \"%s\": not found", name));
        return;
    }
    wl->desired_running = false;
    save_deployment(wl);
    hd_creds_revoke(sup->broker, name);
    hd_store_event(sup->store, name, "stop", "stop requested");
    add_waiter(wl, reply, ctx, false);
    if (wl->state != WL_STOPPING)
        workload_stop(wl);
}

void hd_supervisor_start(struct hd_supervisor *sup, const char *name, hd_reply_fn reply, void *ctx)
{
    struct workload *wl = find(sup, name);
    if (wl == NULL) {
        reply(ctx, 404, error_body("workload \"%s\": not found", name));
        return;
    }
    if (wl->state == WL_STOPPING) {
        reply(ctx, 409, error_body("workload \"%s\": is stopping; start it once it stopped", name));
        return;
    }
    wl->desired_running = true;
    wl->restarts = 0;
    wl->consecutive_failures = 0;
    save_deployment(wl);
    if (wl->backoff_timer) {
        hd_loop_cancel(sup->loop, wl->backoff_timer);
        wl->backoff_timer = NULL;
    }
    if (wl->cur) {
        reply(ctx, 200, workload_json(wl, false));
        return;
    }
    hd_store_event(sup->store, name, "start", "start requested");
    add_waiter(wl, reply, ctx, false);
    workload_start(wl);
}

void hd_supervisor_remove(struct hd_supervisor *sup, const char *name, hd_reply_fn reply, void *ctx)
{
    struct workload *wl = find(sup, name);
    if (wl == NULL) {
        reply(ctx, 404, error_body("workload \"%s\": not found", name));
        return;
    }
    wl->removing = true;
    wl->desired_running = false;
    add_waiter(wl, reply, ctx, false);
    if (wl->state != WL_STOPPING)
        workload_stop(wl);
    if (wl->cur == NULL)
        workload_finish_remove(wl);
}

void hd_supervisor_forget(struct hd_supervisor *sup, void *ctx)
{
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
                          hd_isolation_name(wl->spec->isolation), "state", state_name(wl), "desired",
                          wl->desired_running ? "running" : "stopped", "restarts", wl->restarts, "digest",
                          wl->digest);
    struct run *run = wl->cur;
    bool running = run && run->started && !run->inst->exited;
    json_object_set_new(o, "pid", running ? json_integer(run->inst->pid) : json_null());
    json_object_set_new(o, "monitor_pid", running ? json_integer(run->inst->monitor_pid) : json_null());
    json_object_set_new(o, "started_at", running ? json_integer(run->inst->started_at) : json_null());
    json_object_set_new(o, "uptime_seconds",
                        running ? json_real((double)(unix_ms() - run->inst->started_at) / 1000.0) : json_null());
    json_object_set_new(o, "last_error", wl->last_error ? json_string(wl->last_error) : json_null());
    json_object_set_new(o, "upgrading_to", wl->up ? json_integer(wl->up->version) : json_null());
    json_object_set_new(o, "restart_policy", json_string(wl->spec->restart.policy == HD_RESTART_ALWAYS ? "always"
                                                         : wl->spec->restart.policy == HD_RESTART_ON_FAILURE
                                                             ? "on-failure"
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
    return a;
}

json_t *hd_supervisor_get(struct hd_supervisor *sup, const char *name)
{
    struct workload *wl = find(sup, name);
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
    struct workload *wl = find(sup, name);
    if (wl == NULL)
        return NULL;
    return json_pack("{s:s,s:i,s:o,s:o}", "name", name, "version", wl->version, "versions",
                     hd_store_history(sup->store, name), "events", hd_store_events(sup->store, name, 50));
}

char *hd_supervisor_log_path(struct hd_supervisor *sup, const char *name)
{
    if (find(sup, name) == NULL)
        return NULL;
    return hd_xasprintf("%s/%s.log", sup->cfg->log_dir, name);
}

/* Prometheus label values escape \, " and newline. */
static void append_label(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            fputc('\\', f);
        if (*s == '\n') {
            fputs("\\n", f);
            continue;
        }
        fputc(*s, f);
    }
}

/* hedge_function_*{name=...}: the counters and latency the function hosts report (function_host.c). */
static void metrics_functions(struct hd_supervisor *sup, FILE *f)
{
    static const struct {
        const char *name, *type, *key, *help;
        double scale;
    } families[] = {
        {"hedge_function_invocations_total", "counter", "invocations", "Invocations received (MQTT and hedge invoke).", 1},
        {"hedge_function_errors_total", "counter", "errors", "Invocations answered with an error event.", 1},
        {"hedge_function_timeouts_total", "counter", "timeouts", "Invocations that ran out of time.", 1},
        {"hedge_function_rejected_total", "counter", "rejected", "Invocations rejected: the queue was full.", 1},
        {"hedge_function_instance_restarts_total", "counter", "restarts", "Pinned instance restarts.", 1},
        {"hedge_function_latency_p50_seconds", "gauge", "p50_ms", "Median received-to-result latency.", 1e-3},
        {"hedge_function_latency_p99_seconds", "gauge", "p99_ms", "99th percentile received-to-result latency.", 1e-3},
    };
    size_t n = 0;
    for (struct workload *wl = sup->workloads; wl; wl = wl->next)
        n += hd_function_is(wl->spec);
    if (n == 0)
        return;
    cleanup_free json_t **stats = hd_xcalloc(n, sizeof(*stats));
    cleanup_free struct workload **fns = hd_xcalloc(n, sizeof(*fns));
    n = 0;
    for (struct workload *wl = sup->workloads; wl; wl = wl->next)
        if (hd_function_is(wl->spec)) {
            fns[n] = wl;
            stats[n++] = hd_function_json(sup->cfg, wl->name, wl->version, wl->spec, false);
        }
    for (size_t fam = 0; fam < ARRAY_SIZE(families); fam++) {
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", families[fam].name, families[fam].help, families[fam].name,
                families[fam].type);
        for (size_t i = 0; i < n; i++) {
            json_t *v = json_object_get(stats[i], families[fam].key);
            if (!json_is_number(v))
                continue;
            fprintf(f, "%s{name=\"", families[fam].name);
            append_label(f, fns[i]->name);
            if (families[fam].scale == 1)
                fprintf(f, "\"} %lld\n", (long long)json_integer_value(v));
            else
                fprintf(f, "\"} %.6f\n", json_number_value(v) * families[fam].scale);
        }
    }
    for (size_t i = 0; i < n; i++)
        json_decref(stats[i]);
}

static uint64_t self_rss_bytes(void)
{
    cleanup_free char *data = NULL;
    size_t len;
    hd_error_t err = NULL;
    unsigned long size = 0, resident = 0;
    if (hd_read_file("/proc/self/statm", &data, &len, &err) < 0) {
        hd_error_free(&err);
        return 0;
    }
    sscanf(data, "%lu %lu", &size, &resident);
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

char *hd_supervisor_metrics(struct hd_supervisor *sup)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        abort();
    int count = 0;
    for (struct workload *wl = sup->workloads; wl; wl = wl->next)
        count++;
    fprintf(f, "# HELP hedged_resident_memory_bytes Resident set size of the hedged process.\n"
               "# TYPE hedged_resident_memory_bytes gauge\nhedged_resident_memory_bytes %llu\n",
            (unsigned long long)self_rss_bytes());
    fprintf(f, "# HELP hedged_workloads Deployed workloads.\n# TYPE hedged_workloads gauge\nhedged_workloads %d\n",
            count);
    static const struct {
        const char *name, *type, *help;
    } families[] = {
        {"hedge_workload_up", "gauge", "1 when the workload is running."},
        {"hedge_workload_restarts_total", "counter", "Restarts since the last deploy or start."},
        {"hedge_workload_cpu_seconds_total", "counter", "CPU time used by the running workload."},
        {"hedge_workload_memory_bytes", "gauge", "Memory used by the running workload."},
        {"hedge_workload_version", "gauge", "Active version of the workload."},
    };
    for (size_t fam = 0; fam < ARRAY_SIZE(families); fam++) {
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", families[fam].name, families[fam].help, families[fam].name,
                families[fam].type);
        for (struct workload *wl = sup->workloads; wl; wl = wl->next) {
            struct run *run = wl->cur;
            bool running = run && run->started && !run->inst->exited;
            struct hd_stats st = {0};
            if (fam == 2 || fam == 3) {
                hd_error_t err = NULL;
                int r = running ? hd_instance_stats(run->inst, &st, &err) : -1;
                hd_error_free(&err);
                if (r < 0)
                    continue;
            }
            fprintf(f, "%s{name=\"", families[fam].name);
            append_label(f, wl->name);
            fprintf(f, "\",isolation=\"%s\"} ", hd_isolation_name(wl->spec->isolation));
            switch (fam) {
            case 0: fprintf(f, "%d\n", running ? 1 : 0); break;
            case 1: fprintf(f, "%d\n", wl->restarts); break;
            case 2: fprintf(f, "%.6f\n", (double)st.cpu_usage_ns / 1e9); break;
            case 3: fprintf(f, "%llu\n", (unsigned long long)st.memory_bytes); break;
            default: fprintf(f, "%d\n", wl->version); break;
            }
        }
    }
    metrics_functions(sup, f);
    fclose(f);
    return buf;
}

/* ---- life cycle ---------------------------------------------------------- */

struct hd_supervisor *hd_supervisor_new(struct hd_loop *loop, struct hd_store *store,
                                        const struct hd_daemon_config *cfg, hd_error_t *err)
{
    struct hd_supervisor *sup = hd_xcalloc(1, sizeof(*sup));
    sup->loop = loop;
    sup->store = store;
    sup->cfg = cfg;
    return sup;
}

void hd_supervisor_set_broker(struct hd_supervisor *sup, struct hd_broker *broker)
{
    sup->broker = broker;
}

/* Runs that exist only in memory: hedged exits, the monitors stay. */
static void run_detach(struct run *run)
{
    if (run->inst) {
        hd_loop_unwatch(run->sup->loop, run->inst->watch);
        hd_instance_free(run->inst, false);
        run->inst = NULL;
    }
    if (run->kill_timer)
        hd_loop_cancel(run->sup->loop, run->kill_timer);
    free(run);
}

void hd_supervisor_free(struct hd_supervisor *sup)
{
    if (sup == NULL)
        return;
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

/* After a restart: a run recorded in the store is either alive (adopt it) or ended (collect it). */
static void recover_instance(struct hd_supervisor *sup, const struct hd_store_instance *si)
{
    struct workload *wl = find(sup, si->name);
    hd_error_t err = NULL;
    if (wl == NULL || strcmp(si->role, "current") != 0 || wl->cur) {
        /* a candidate of an interrupted upgrade, or a run being retired: stop it */
        if (wl && strcmp(si->role, "candidate") == 0) {
            if (hd_store_set_version_status(sup->store, si->name, si->version, "failed",
                                            "hedged restarted during the upgrade", &err) < 0)
                log_error(&err);
            hd_store_event(sup->store, si->name, "upgrade-failed",
                           "version %d failed: hedged restarted during the upgrade; version %d kept", si->version,
                           wl->version);
        }
        hd_instance_reap_orphan(sup->cfg, si->id);
        if (hd_store_delete_instance(sup->store, si->id, &err) < 0)
            log_error(&err);
        return;
    }
    struct run *run = run_new(wl, ROLE_CURRENT, si->version);
    int alive = hd_instance_adopt(sup->cfg, si->id, &run->inst, &err);
    hd_error_free(&err);
    wl->cur = run;
    if (alive) {
        if (wl->desired_running)
            restore_creds(wl);
        run->started = true;
        run_start_watch(run);
        set_state(wl, WL_RUNNING);
        hd_store_event(sup->store, wl->name, "adopted", "version %d re-adopted, pid %d", wl->version,
                       run->inst->pid);
        if (!wl->desired_running)
            workload_stop(wl);
    } else if (run->inst->lost) {
        /* hedged died before the monitor ran, or the monitor was killed (a reboot):
         * nothing to collect; a workload that should run is started again below */
        hd_store_event(sup->store, wl->name, "lost", "version %d: monitor gone without an exit record",
                       wl->version);
        wl->cur = NULL;
        run_free(run);
        if (wl->desired_running)
            wl->state = WL_CREATED;
    } else {
        run->started = run->inst->started_at != 0;
        set_state(wl, WL_RUNNING);
        run_ended(run, true);
    }
}

int hd_supervisor_recover(struct hd_supervisor *sup, hd_error_t *err)
{
    struct hd_store_deployment *deps = NULL;
    int n = 0;
    if (hd_store_list_deployments(sup->store, &deps, &n, err) < 0)
        return -1;
    for (int i = 0; i < n; i++) {
        cleanup_free char *spec_json = hd_store_version_spec(sup->store, deps[i].name, deps[i].version);
        json_t *error = NULL;
        struct hd_spec *spec = spec_json ? parse_spec(spec_json, strlen(spec_json), "stored spec", &error) : NULL;
        if (spec == NULL) {
            fprintf(stderr, "hedged: %s: version %d cannot be loaded: %s\n", deps[i].name, deps[i].version,
                    error ? json_string_value(json_object_get(error, "error")) : "no spec");
            json_decref(error);
            continue;
        }
        struct workload *wl = workload_new(sup, deps[i].name);
        wl->spec = spec;
        wl->digest = hd_digest(spec_json, strlen(spec_json));
        wl->version = deps[i].version;
        wl->desired_running = deps[i].desired_running;
        wl->restarts = deps[i].restarts;
        wl->created_at = deps[i].created_at;
        /* A run that ended for good stays ended; one that was running when its monitor
         * vanished without a trace (a reboot) is started again below. */
        wl->state = WL_CREATED;
        wl->last_error = hd_xstrdup(deps[i].last_error);
        if (!deps[i].desired_running)
            wl->state = WL_STOPPED;
        else if (deps[i].state && strcmp(deps[i].state, "exited") == 0)
            wl->state = WL_EXITED;
        else if (deps[i].state && strcmp(deps[i].state, "failed") == 0)
            wl->state = WL_FAILED;
    }
    hd_store_deployments_free(deps, n);

    struct hd_store_instance *insts = NULL;
    if (hd_store_list_instances(sup->store, &insts, &n, err) < 0)
        return -1;
    /* current runs first, so a retiring run of the same workload is told apart */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++)
            if ((strcmp(insts[i].role, "current") == 0) == (pass == 0))
                recover_instance(sup, &insts[i]);

    /* Instance dirs the store does not know (a crash between mkdir and the row): orphans. */
    cleanup_free char *dir = hd_xasprintf("%s/instances", sup->cfg->state_dir);
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        bool known = false;
        for (int i = 0; i < n; i++)
            known = known || strcmp(insts[i].id, de->d_name) == 0;
        if (!known)
            hd_instance_reap_orphan(sup->cfg, de->d_name);
    }
    if (d)
        closedir(d);
    hd_store_instances_free(insts, n);

    /* Desired running with nothing running (e.g. after a reboot): start. */
    for (struct workload *wl = sup->workloads; wl; wl = wl->next)
        if (wl->desired_running && wl->cur == NULL && wl->backoff_timer == NULL && wl->state == WL_CREATED)
            workload_start(wl);
    return 0;
}
