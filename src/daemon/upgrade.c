/*
 * upgrade.c - health-gated upgrade and rollback.
 *
 * A deploy of a changed spec starts the new version as a candidate run beside
 * the current one. The candidate must keep running for health_wait seconds
 * (or, when the spec has health.command, that command, run on the host every
 * 0.5 s, must exit 0 within health_wait); then the old run is retired and the
 * candidate becomes current (the lifecycle's "health ok"). If the candidate
 * fails to start, exits early or its health command never passes, its version
 * is marked failed with the reason and the old run was never stopped ("health
 * failed"). Rollback deploys the spec of the previous good version as a new
 * version (its note says so), through the same gate.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/supervisor_internal.h"
#include "base/util.h"

#define PROBE_INTERVAL 0.5

static void upgrade_probe(struct hd_loop *loop, void *data);

void upgrade_free(struct hd_supervisor *sup, struct upgrade *up)
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

void upgrade_fail(struct workload *wl, const char *why)
{
    struct upgrade *up = wl->up;
    struct hd_supervisor *sup = wl->sup;
    wl->up = NULL;
    hd_error_t err = NULL;
    if (hd_store_set_version_status(sup->store, wl->name, up->version, "failed", why, &err) < 0)
        supervisor_log_error(&err);
    hd_store_event(sup->store, wl->name, "upgrade-failed", "version %d failed: %s; version %d kept", up->version, why,
                   wl->version);
    if (up->run) {
        if (up->run->inst->exited)
            run_free(up->run);
        else
            run_retire(up->run);
    }
    if (wl->desired_running)
        workload_restore_creds(wl);
    workload_apply(wl, HD_LC_EV_HEALTH_FAILED);
    if (up->reply)
        supervisor_reply_error(up->reply, up->ctx, HD_SUP_CONFLICT, NULL,
                               "upgrade %s to version %d failed: %s; version %d kept", wl->name, up->version, why,
                               wl->version);
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
            : hd_xasprintf("the health command did not pass within %gs (last exit code %d)", up->health_wait,
                           up->probe_last_code);
        upgrade_fail(wl, why);
        return;
    }
    wl->up = NULL;
    int old_version = wl->version;
    hd_error_t err = NULL;
    if (hd_store_begin(sup->store, &err) < 0)
        supervisor_log_error(&err);
    if (wl->backoff_timer) {
        hd_loop_cancel(loop, wl->backoff_timer);
        wl->backoff_timer = NULL;
    }
    if (wl->cur)
        run_retire(wl->cur);
    struct run *run = up->run;
    run->role = ROLE_CURRENT;
    if (hd_store_put_instance(sup->store, run->inst->id, wl->name, up->version, "current", &err) < 0 ||
        hd_store_set_version_status(sup->store, wl->name, old_version, "superseded", NULL, &err) < 0 ||
        hd_store_set_version_status(sup->store, wl->name, up->version, "active", NULL, &err) < 0)
        supervisor_log_error(&err);
    wl->cur = run;
    wl->version = up->version;
    hd_spec_free(wl->spec);
    wl->spec = get_and_reset(&up->spec);
    free(wl->digest);
    wl->digest = get_and_reset(&up->digest);
    wl->restarts = 0;
    wl->consecutive_failures = 0;
    wl->desired_running = true;
    workload_save(wl);
    hd_store_event(sup->store, wl->name, "upgraded", "version %d replaced version %d", wl->version, old_version);
    bool recorded = hd_store_commit(sup->store, &err) == 0;
    if (!recorded) {
        /* the new version runs, but a restarted hedged would not know it: say so, never "upgraded" */
        hd_store_rollback(sup->store);
        if (up->reply) {
            supervisor_reply_error(
                up->reply, up->ctx, HD_SUP_INTERNAL,
                json_pack("{s:s,s:i,s:i}", "name", wl->name, "version", wl->version, "previous", old_version),
                "version %d runs, but the state db could not record the upgrade: %s", wl->version, hd_error_text(err));
            up->reply = NULL;
        }
        supervisor_log_error(&err);
    }
    if (up->reply)
        up->reply(up->ctx, HD_SUP_OK,
                  json_pack("{s:s,s:i,s:i,s:s}", "name", wl->name, "version", wl->version, "previous", old_version,
                            "status", "upgraded"),
                  NULL);
    upgrade_free(sup, up);
    workload_apply(wl, HD_LC_EV_HEALTH_OK);
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
        up->probe_timer = hd_loop_timer(loop, PROBE_INTERVAL, upgrade_probe, wl);
        return;
    }
    if (pid == 0) {
        hd_daemon_child_begin(-1, -1);
        setenv("HEDGE_WORKLOAD_NAME", wl->name, 1);
        setenv("HEDGE_WORKLOAD_PID", pid_text, 1);
        setenv("HEDGE_WORKLOAD_VERSION", version_text, 1);
        execvp(up->spec->health.command[0], up->spec->health.command);
        _exit(errno == ENOENT ? HD_EXIT_NOT_FOUND : HD_EXIT_CANNOT_INVOKE);
    }
    up->probe_pid = pid;
}

void upgrade_candidate_started(struct workload *wl)
{
    struct upgrade *up = wl->up;
    if (up->spec->health.command) {
        hd_store_event(wl->sup->store, wl->name, "upgrade",
                       "version %d started, pid %d; health command has %gs to pass", up->version, up->run->inst->pid,
                       up->health_wait);
        upgrade_probe(wl->sup->loop, wl);
    } else
        hd_store_event(wl->sup->store, wl->name, "upgrade", "version %d started, pid %d; healthy after %gs",
                       up->version, up->run->inst->pid, up->health_wait);
}

void hd_supervisor_child_exited(struct hd_supervisor *sup, pid_t pid, int status)
{
    if (pull_child_exited(sup, pid, status))
        return;
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
            up->probe_timer = hd_loop_timer(sup->loop, PROBE_INTERVAL, upgrade_probe, wl);
        return;
    }
}

void upgrade_begin(struct workload *wl, struct hd_spec *spec, char *spec_json, char *digest, const char *note,
                   double health_wait, hd_reply_fn reply, void *ctx)
{
    struct hd_supervisor *sup = wl->sup;
    struct upgrade *up = hd_xcalloc(1, sizeof(*up));
    up->version = hd_store_max_version(sup->store, wl->name) + 1;
    up->spec = spec;
    up->spec_json = spec_json;
    up->digest = digest;
    up->health_wait = health_wait >= 0 ? health_wait
        : spec->health.wait > 0        ? spec->health.wait
                                       : sup->cfg->health_wait;
    up->probe_last_code = -1;
    up->reply = reply;
    up->ctx = ctx;
    hd_error_t err = NULL;
    if (hd_store_add_version(sup->store, wl->name, up->version, spec_json, digest, "pending", note, &err) < 0) {
        supervisor_reply_error(reply, ctx, HD_SUP_INTERNAL, NULL, "%s", hd_error_text(err));
        hd_error_free(&err);
        upgrade_free(sup, up);
        return;
    }
    hd_store_event(sup->store, wl->name, "upgrade", "deploying version %d over version %d%s%s", up->version,
                   wl->version, note ? ": " : "", note ? note : "");
    wl->up = up;
    up->run = run_new(wl, ROLE_CANDIDATE, up->version);
    cleanup_free char *monitor_json = supervisor_monitor_spec(sup, wl->name, up->version, spec, &err);
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

void hd_supervisor_rollback(struct hd_supervisor *sup, const char *name, double health_wait, hd_reply_fn reply,
                            void *ctx)
{
    struct workload *wl = supervisor_find(sup, name);
    if (wl == NULL)
        return supervisor_reply_error(reply, ctx, HD_SUP_NOT_FOUND, NULL, "workload \"%s\": not found", name);
    if (wl->up)
        return supervisor_reply_error(reply, ctx, HD_SUP_CONFLICT, NULL,
                                      "workload \"%s\": an upgrade to version %d is in progress", name,
                                      wl->up->version);
    /* The previous good version: the newest one before the active one that never failed. */
    json_t *history = hd_store_history(sup->store, name);
    int target = 0;
    size_t i;
    json_t *v;
    json_array_foreach(history, i, v)
    {
        int ver = (int)json_integer_value(json_object_get(v, "version"));
        const char *status = json_string_value(json_object_get(v, "status"));
        if (ver < wl->version && strcmp(status, "superseded") == 0)
            target = ver;
    }
    json_decref(history);
    char *spec_json = target ? hd_store_version_spec(sup->store, name, target) : NULL;
    if (spec_json == NULL)
        return supervisor_reply_error(reply, ctx, HD_SUP_CONFLICT, NULL,
                                      "workload \"%s\": no earlier version to roll back to", name);
    hd_error_t err = NULL;
    struct hd_spec *spec = supervisor_parse_spec(spec_json, strlen(spec_json), "stored spec", &err);
    if (spec == NULL) {
        supervisor_reply_error(reply, ctx, HD_SUP_INTERNAL, NULL, "%s", hd_error_text(err));
        hd_error_free(&err);
        free(spec_json);
        return;
    }
    char *digest = hd_digest(spec_json, strlen(spec_json));
    cleanup_free char *note = hd_xasprintf("rollback to version %d", target);
    upgrade_begin(wl, spec, spec_json, digest, note, health_wait, reply, ctx);
}
