/*
 * recover.c - what a restarted hedged does before it serves: load the
 * deployments from the store, then take back every run the store recorded.
 *
 * A current run whose monitor is alive is adopted (the lifecycle's "adopt");
 * one whose monitor exited while hedged was down is collected, and its exit
 * goes through the restart policy like any other. A monitor gone without an
 * exit record (a reboot) makes the workload "lost": created again and started
 * if it should run. Candidates of an interrupted upgrade fail, runs being
 * retired are finished, and instance dirs the store never heard of (a crash
 * between mkdir and the row) are orphans: killed and removed.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "daemon/supervisor_internal.h"
#include "base/util.h"

/* A run recorded in the store is either alive (adopt it) or ended (collect it). */
static void recover_instance(struct hd_supervisor *sup, const struct hd_store_instance *si)
{
    struct workload *wl = supervisor_find(sup, si->name);
    hd_error_t err = NULL;
    if (wl == NULL || strcmp(si->role, "current") != 0 || wl->cur) {
        /* a candidate of an interrupted upgrade, or a run being retired: stop it */
        if (wl && strcmp(si->role, "candidate") == 0) {
            if (hd_store_set_version_status(sup->store, si->name, si->version, "failed",
                                            "hedged restarted during the upgrade", &err) < 0)
                supervisor_log_error(&err);
            hd_store_event(sup->store, si->name, "upgrade-failed",
                           "version %d failed: hedged restarted during the upgrade; version %d kept", si->version,
                           wl->version);
        }
        hd_instance_reap_orphan(sup->cfg, si->id);
        if (hd_store_delete_instance(sup->store, si->id, &err) < 0)
            supervisor_log_error(&err);
        return;
    }
    struct run *run = run_new(wl, ROLE_CURRENT, si->version);
    int alive = hd_instance_adopt(sup->cfg, si->id, &run->inst, &err);
    hd_error_free(&err);
    wl->cur = run;
    if (alive) {
        if (wl->desired_running)
            workload_restore_creds(wl);
        run->started = true;
        run_start_watch(run);
        workload_apply(wl, HD_LC_EV_ADOPT);
        hd_store_event(sup->store, wl->name, "adopted", "version %d re-adopted, pid %d", wl->version, run->inst->pid);
        if (!wl->desired_running)
            workload_stop(wl);
    } else if (run->inst->lost) {
        /* hedged died before the monitor ran, or the monitor was killed (a reboot):
         * nothing to collect; a workload that should run is started again below */
        hd_store_event(sup->store, wl->name, "lost", "version %d: monitor gone without an exit record", wl->version);
        wl->cur = NULL;
        run_free(run);
        if (wl->desired_running)
            workload_apply(wl, HD_LC_EV_LOST);
    } else {
        run->started = run->inst->started_at != 0;
        workload_apply(wl, HD_LC_EV_ADOPT);
        run_ended(run, true);
    }
}

/* The workloads of the store, in the state they settled in before hedged went down. */
static void recover_deployments(struct hd_supervisor *sup, const struct hd_store_deployment *deps, int n)
{
    for (int i = 0; i < n; i++) {
        cleanup_free char *spec_json = hd_store_version_spec(sup->store, deps[i].name, deps[i].version);
        hd_error_t err = NULL;
        struct hd_spec *spec =
            spec_json ? supervisor_parse_spec(spec_json, strlen(spec_json), "stored spec", &err) : NULL;
        if (spec == NULL) {
            hd_log(HD_LOG_ERROR, "supervisor", "%s: version %d cannot be loaded: %s", deps[i].name, deps[i].version,
                   err ? hd_error_text(err) : "no spec");
            hd_error_free(&err);
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
        wl->state = HD_LC_CREATED;
        wl->last_error = hd_xstrdup(deps[i].last_error);
        if (!deps[i].desired_running)
            wl->state = HD_LC_STOPPED;
        else if (deps[i].state && strcmp(deps[i].state, "exited") == 0)
            wl->state = HD_LC_EXITED;
        else if (deps[i].state && strcmp(deps[i].state, "failed") == 0)
            wl->state = HD_LC_FAILED;
    }
}

/* Instance dirs the store does not know (a crash between mkdir and the row): orphans. */
static void recover_reap_orphans(struct hd_supervisor *sup, const struct hd_store_instance *insts, int n)
{
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
}

int hd_supervisor_recover(struct hd_supervisor *sup, hd_error_t *err)
{
    struct hd_store_deployment *deps = NULL;
    int n = 0;
    if (hd_store_list_deployments(sup->store, &deps, &n, err) < 0)
        return -1;
    recover_deployments(sup, deps, n);
    hd_store_deployments_free(deps, n);

    struct hd_store_instance *insts = NULL;
    if (hd_store_list_instances(sup->store, &insts, &n, err) < 0)
        return -1;
    /* current runs first, so a retiring run of the same workload is told apart */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++)
            if ((strcmp(insts[i].role, "current") == 0) == (pass == 0))
                recover_instance(sup, &insts[i]);
    recover_reap_orphans(sup, insts, n);
    hd_store_instances_free(insts, n);

    /* Desired running with nothing running (e.g. after a reboot): start. */
    for (struct workload *wl = sup->workloads; wl; wl = wl->next)
        if (wl->desired_running && wl->cur == NULL && wl->backoff_timer == NULL && wl->state == HD_LC_CREATED)
            workload_apply(wl, HD_LC_EV_START);
    return 0;
}
