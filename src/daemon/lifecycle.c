/*
 * lifecycle.c - the workload life cycle as one table: for every state, the
 * events that may happen in it, what the supervisor does then and the state
 * that follows. A pair missing from the table is illegal: hd_lifecycle_next
 * says so and nothing changes (a start while stopping is the one the API can
 * provoke; it answers that the workload is stopping, a conflict).
 *
 *   created ─deploy/start─▶ starting ─started─▶ running ─exited──▶ exited
 *                              │ spawn failed      │ ─failed──▶ failed
 *                              ▼                   │ ─crashed─▶ backoff ─restart timer─▶ starting
 *                            failed                └─stop/rm─▶ stopping ─stopped─▶ stopped
 *
 * Settled states (stopped, exited, failed, backoff, created) go back to
 * starting on a start. An upgrade runs beside the current run: health ok
 * makes the candidate the running version from any state; health failed
 * changes nothing (the old version runs on, the candidate is retired). After
 * a restart of hedged, adopt takes a run it finds back to running (an exit
 * recorded while hedged was down follows as exited/failed/crashed), and lost
 * marks a workload whose monitor vanished without a trace as created, to be
 * started again.
 *
 * "keep" marks the events that change nothing (a start while running, a
 * failed upgrade): no state is recorded and no waiting request answered.
 * "nothing" records the state even when it stays (a stop of a stopped
 * workload still answers the stop).
 *
 * A removal is a stop first; the driver deletes the workload once it is
 * stopped (supervisor.c, workload_finish_remove).
 */
#include <stdbool.h>
#include <stddef.h>

#include "daemon/lifecycle.h"

struct entry {
    bool legal;
    enum hd_lc_action action;
    enum hd_lc_state next;
};

#define GO(act, state) \
    { \
        true, HD_LC_DO_##act, HD_LC_##state \
    }

/* The run of a starting or running workload ended: the same outcomes in both states. */
#define RUN_ENDS \
    [HD_LC_EV_EXITED] = GO(NOTHING, EXITED), [HD_LC_EV_FAILED] = GO(NOTHING, FAILED), \
    [HD_LC_EV_CRASHED] = GO(SCHEDULE_RESTART, BACKOFF), [HD_LC_EV_STOPPED] = GO(NOTHING, STOPPED)

/* Down and settled: a start spawns again, a stop or rm has nothing to stop, an upgrade may
 * make its candidate the running version, and hedged may find a run again after a restart. */
#define SETTLED(self) \
    [HD_LC_EV_START] = GO(SPAWN, STARTING), [HD_LC_EV_STOP] = GO(NOTHING, STOPPED), \
    [HD_LC_EV_RM] = GO(NOTHING, STOPPED), [HD_LC_EV_HEALTH_OK] = GO(NOTHING, RUNNING), \
    [HD_LC_EV_HEALTH_FAILED] = GO(KEEP, self), [HD_LC_EV_ADOPT] = GO(NOTHING, RUNNING), \
    [HD_LC_EV_LOST] = GO(NOTHING, CREATED)

static const struct entry table[HD_LC_STATE_COUNT][HD_LC_EVENT_COUNT] =
    {
        [HD_LC_CREATED] =
            {
                SETTLED(CREATED),
                [HD_LC_EV_DEPLOY] = GO(SPAWN, STARTING),
            },
        [HD_LC_STARTING] =
            {
                [HD_LC_EV_START] = GO(KEEP, STARTING),
                [HD_LC_EV_STARTED] = GO(NOTHING, RUNNING),
                [HD_LC_EV_SPAWN_FAILED] = GO(NOTHING, FAILED),
                RUN_ENDS,
                [HD_LC_EV_STOP] = GO(TERMINATE, STOPPING),
                [HD_LC_EV_RM] = GO(TERMINATE, STOPPING),
                [HD_LC_EV_HEALTH_OK] = GO(NOTHING, RUNNING), /* the starting run is retired */
                [HD_LC_EV_HEALTH_FAILED] = GO(KEEP, STARTING),
            },
        [HD_LC_RUNNING] =
            {
                [HD_LC_EV_START] = GO(KEEP, RUNNING),
                RUN_ENDS,
                [HD_LC_EV_STOP] = GO(TERMINATE, STOPPING),
                [HD_LC_EV_RM] = GO(TERMINATE, STOPPING),
                [HD_LC_EV_HEALTH_OK] = GO(NOTHING, RUNNING), /* the old run is retired */
                [HD_LC_EV_HEALTH_FAILED] = GO(KEEP, RUNNING),
            },
        [HD_LC_STOPPING] =
            {
                /* no start: the caller waits until it stopped */
                [HD_LC_EV_STARTED] = GO(KEEP, STOPPING), /* the run is stopped once it reported */
                [HD_LC_EV_STOPPED] = GO(NOTHING, STOPPED),
                [HD_LC_EV_STOP] = GO(KEEP, STOPPING),
                [HD_LC_EV_RM] = GO(KEEP, STOPPING),
                [HD_LC_EV_HEALTH_OK] = GO(NOTHING, RUNNING), /* an upgrade deployed while stopping */
                [HD_LC_EV_HEALTH_FAILED] = GO(KEEP, STOPPING),
            },
        [HD_LC_STOPPED] = {SETTLED(STOPPED)},
        [HD_LC_EXITED] = {SETTLED(EXITED)},
        [HD_LC_FAILED] = {SETTLED(FAILED)},
        [HD_LC_BACKOFF] =
            {
                [HD_LC_EV_START] = GO(SPAWN, STARTING),
                [HD_LC_EV_RESTART_TIMER] = GO(SPAWN, STARTING),
                [HD_LC_EV_STOP] = GO(CANCEL_RESTART, STOPPED),
                [HD_LC_EV_RM] = GO(CANCEL_RESTART, STOPPED),
                [HD_LC_EV_HEALTH_OK] = GO(CANCEL_RESTART, RUNNING),
                [HD_LC_EV_HEALTH_FAILED] = GO(KEEP, BACKOFF),
            },
};

enum hd_lc_result hd_lifecycle_next(enum hd_lc_state state, enum hd_lc_event event, struct hd_lc_transition *out)
{
    if ((unsigned)state >= HD_LC_STATE_COUNT || (unsigned)event >= HD_LC_EVENT_COUNT)
        return HD_LC_ILLEGAL;
    const struct entry *e = &table[state][event];
    if (!e->legal)
        return HD_LC_ILLEGAL;
    out->action = e->action;
    out->next = e->next;
    return HD_LC_OK;
}

const char *hd_lc_state_name(enum hd_lc_state state)
{
    static const char *const names[HD_LC_STATE_COUNT] = {
        [HD_LC_CREATED] = "created",   [HD_LC_STARTING] = "starting", [HD_LC_RUNNING] = "running",
        [HD_LC_STOPPING] = "stopping", [HD_LC_STOPPED] = "stopped",   [HD_LC_EXITED] = "exited",
        [HD_LC_FAILED] = "failed",     [HD_LC_BACKOFF] = "backoff",
    };
    return (unsigned)state < HD_LC_STATE_COUNT ? names[state] : "?";
}

const char *hd_lc_event_name(enum hd_lc_event event)
{
    static const char *const names[HD_LC_EVENT_COUNT] = {
        [HD_LC_EV_DEPLOY] = "deploy",
        [HD_LC_EV_START] = "start",
        [HD_LC_EV_STARTED] = "started",
        [HD_LC_EV_SPAWN_FAILED] = "spawn failed",
        [HD_LC_EV_EXITED] = "exited",
        [HD_LC_EV_FAILED] = "failed",
        [HD_LC_EV_CRASHED] = "crashed",
        [HD_LC_EV_STOPPED] = "stopped",
        [HD_LC_EV_RESTART_TIMER] = "restart timer",
        [HD_LC_EV_STOP] = "stop",
        [HD_LC_EV_RM] = "rm",
        [HD_LC_EV_HEALTH_OK] = "health ok",
        [HD_LC_EV_HEALTH_FAILED] = "health failed",
        [HD_LC_EV_ADOPT] = "adopt",
        [HD_LC_EV_LOST] = "lost",
    };
    return (unsigned)event < HD_LC_EVENT_COUNT ? names[event] : "?";
}

const char *hd_lc_action_name(enum hd_lc_action action)
{
    switch (action) {
    case HD_LC_DO_NOTHING: return "nothing";
    case HD_LC_DO_KEEP: return "keep";
    case HD_LC_DO_SPAWN: return "spawn";
    case HD_LC_DO_TERMINATE: return "terminate";
    case HD_LC_DO_SCHEDULE_RESTART: return "schedule restart";
    case HD_LC_DO_CANCEL_RESTART: return "cancel restart";
    }
    return "?";
}
