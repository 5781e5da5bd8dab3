/*
 * run.c - the runs of a workload. A run is one instance: one hedge-monitor
 * process (instance.c) running one version. The supervisor watches the
 * monitor's start report, then its pidfd; the report and the exit become
 * lifecycle events of the workload (supervisor.c) or, for an upgrade's
 * candidate, of the upgrade (upgrade.c).
 *
 * Stopping is SIGTERM, then SIGKILL after stop_grace. A run asked to stop
 * before its start report came gets the signal once it has started.
 * Retired runs (the old version after an upgrade) live on sup->retiring
 * until their monitor exits; a removal waits for them.
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>

#include "daemon/supervisor_internal.h"
#include "base/util.h"

static const char *const role_names[] = {"current", "candidate", "retiring"};

struct run *run_new(struct workload *wl, enum run_role role, int version)
{
    struct run *run = hd_xcalloc(1, sizeof(*run));
    run->wl = wl;
    run->sup = wl->sup;
    run->role = role;
    run->version = version;
    return run;
}

void run_free(struct run *run)
{
    struct hd_supervisor *sup = run->sup;
    if (run->kill_timer)
        hd_loop_cancel(sup->loop, run->kill_timer);
    if (run->inst) {
        hd_loop_unwatch(sup->loop, run->inst->watch);
        hd_error_t err = NULL;
        if (hd_store_delete_instance(sup->store, run->inst->id, &err) < 0)
            supervisor_log_error(&err);
        hd_instance_free(run->inst, true);
    }
    free(run);
}

void run_detach(struct run *run)
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

/* Started and not yet ended: the run has a workload pid. */
bool run_is_up(const struct run *run)
{
    return run && run->started && !run->inst->exited;
}

int run_spawn(struct run *run, const char *spec_json, hd_error_t *err)
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
void run_stop(struct run *run)
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

void run_retire(struct run *run)
{
    struct hd_supervisor *sup = run->sup;
    run->role = ROLE_RETIRING;
    hd_error_t err = NULL;
    if (run->inst &&
        hd_store_put_instance(sup->store, run->inst->id, run->wl->name, run->version, "retiring", &err) < 0)
        supervisor_log_error(&err);
    run->next = sup->retiring; /* run->wl stays valid: a removal waits for its retiring runs */
    sup->retiring = run;
    run_stop(run);
}

bool run_has_retiring(struct hd_supervisor *sup, struct workload *wl)
{
    for (struct run *run = sup->retiring; run; run = run->next)
        if (run->wl == wl)
            return true;
    return false;
}

static void run_retiring_done(struct run *run)
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

char *run_describe_exit(const struct hd_instance *inst)
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

static void run_started(struct run *run)
{
    run->started = true;
    if (run->stop_requested) {
        run->stop_requested = false;
        run_stop(run);
    }
    struct workload *wl = run->wl;
    if (run->role == ROLE_CURRENT) {
        hd_store_event(wl->sup->store, wl->name, "started", "version %d started, pid %d", wl->version, run->inst->pid);
        if (wl->state == HD_LC_STARTING || wl->state == HD_LC_STOPPING)
            workload_apply(wl, HD_LC_EV_STARTED);
    } else if (run->role == ROLE_CANDIDATE) {
        upgrade_candidate_started(wl);
    }
}

void run_ended(struct run *run, bool while_down)
{
    switch (run->role) {
    case ROLE_RETIRING: run_retiring_done(run); return;
    case ROLE_CANDIDATE: {
        cleanup_free char *why = run_describe_exit(run->inst);
        upgrade_fail(run->wl, why);
        return;
    }
    case ROLE_CURRENT: {
        struct workload *wl = run->wl;
        hd_error_t err = NULL;
        if (hd_store_begin(wl->sup->store, &err) < 0)
            supervisor_log_error(&err);
        workload_current_ended(wl, while_down);
        if (hd_store_commit(wl->sup->store, &err) < 0) {
            hd_store_rollback(wl->sup->store);
            supervisor_log_error(&err);
        }
        if (wl->removing && wl->state != HD_LC_STOPPING && wl->state != HD_LC_STARTING)
            workload_finish_remove(wl);
        return;
    }
    }
}

static void run_on_monitor_exit(struct hd_loop *loop, int fd, uint32_t events, void *data)
{
    struct run *run = data;
    hd_loop_unwatch(loop, run->inst->watch);
    run->inst->watch = NULL;
    hd_instance_collect(run->inst);
    run_ended(run, false);
}

static void run_on_report(struct hd_loop *loop, int fd, uint32_t events, void *data)
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

void run_start_watch(struct run *run)
{
    hd_error_t err = NULL;
    struct hd_instance *inst = run->inst;
    if (inst->report_fd >= 0)
        inst->watch = hd_loop_watch(run->sup->loop, inst->report_fd, EPOLLIN, run_on_report, run, &err);
    else
        inst->watch = hd_loop_watch(run->sup->loop, inst->pidfd, EPOLLIN, run_on_monitor_exit, run, &err);
    if (inst->watch == NULL)
        supervisor_log_error(&err);
}
