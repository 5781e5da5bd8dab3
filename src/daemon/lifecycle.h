/*
 * lifecycle.h - the life cycle of a deployed workload as a transition table:
 * (state, event) -> (action, next state). lifecycle.c holds the table and
 * nothing else; supervisor.c is the driver that feeds it events and carries
 * out the actions. The table depends on nothing of hedged, so a unit test
 * walks it whole (tests/unit/test_lifecycle.c).
 */
#ifndef HEDGE_DAEMON_LIFECYCLE_H
#define HEDGE_DAEMON_LIFECYCLE_H

/* The states `hedge ps` shows ("backoff" reads "crash-loop" after crash_loop_after quick failures). */
enum hd_lc_state {
    HD_LC_CREATED,  /* known, never started (or its monitor vanished while hedged was down) */
    HD_LC_STARTING, /* its monitor is spawned; the start report has not come */
    HD_LC_RUNNING,
    HD_LC_STOPPING, /* SIGTERM sent, SIGKILL after the grace period */
    HD_LC_STOPPED,  /* stopped on request; stays down */
    HD_LC_EXITED,   /* ended with code 0 and the restart policy let it be */
    HD_LC_FAILED,   /* ended in failure (or could not start) and is not restarted */
    HD_LC_BACKOFF,  /* ended; restarts when the back-off timer fires */
    HD_LC_STATE_COUNT,
};

enum hd_lc_event {
    HD_LC_EV_DEPLOY,        /* the first deploy of a name */
    HD_LC_EV_START,         /* a start request, or a deploy of the unchanged spec of a stopped workload */
    HD_LC_EV_STARTED,       /* the monitor reported the workload started */
    HD_LC_EV_SPAWN_FAILED,  /* the monitor could not be spawned (or its spec not built) */
    HD_LC_EV_EXITED,        /* the run ended with code 0; the restart policy keeps it down */
    HD_LC_EV_FAILED,        /* the run ended in failure; the policy keeps it down (or gave up) */
    HD_LC_EV_CRASHED,       /* the run ended; the restart policy restarts it */
    HD_LC_EV_STOPPED,       /* the run ended after a stop (or while not desired running) */
    HD_LC_EV_RESTART_TIMER, /* the back-off delay is over */
    HD_LC_EV_STOP,          /* a stop request */
    HD_LC_EV_RM,            /* a remove request: stop first; the driver deletes it once stopped */
    HD_LC_EV_HEALTH_OK,     /* an upgrade's candidate passed its health wait: it is the running version */
    HD_LC_EV_HEALTH_FAILED, /* an upgrade's candidate failed: rolled back, the old version runs on */
    HD_LC_EV_ADOPT,         /* hedged restarted and found the run's monitor (alive, or with an exit record) */
    HD_LC_EV_LOST,          /* hedged restarted and the monitor is gone without an exit record */
    HD_LC_EVENT_COUNT,
};

/* What the driver does on the transition (beyond recording the new state). */
enum hd_lc_action {
    HD_LC_DO_NOTHING,          /* only the state is recorded (and, once settled, the waiting requests answered) */
    HD_LC_DO_KEEP,             /* nothing at all: the state stays, nobody waiting is answered */
    HD_LC_DO_SPAWN,            /* spawn a monitor for the current version */
    HD_LC_DO_TERMINATE,        /* SIGTERM the current run, SIGKILL after stop_grace */
    HD_LC_DO_SCHEDULE_RESTART, /* arm the back-off timer (delays double up to backoff_max) */
    HD_LC_DO_CANCEL_RESTART,   /* disarm it */
};

enum hd_lc_result {
    HD_LC_OK,
    HD_LC_ILLEGAL, /* the event cannot happen in this state: nothing changes */
};

struct hd_lc_transition {
    enum hd_lc_action action;
    enum hd_lc_state next;
};

/* Look up (state, event). HD_LC_ILLEGAL leaves *out untouched; out-of-range values are illegal. */
enum hd_lc_result hd_lifecycle_next(enum hd_lc_state state, enum hd_lc_event event, struct hd_lc_transition *out);
/* "created", "running", ... (the names the API shows); "?" when out of range. */
const char *hd_lc_state_name(enum hd_lc_state state);
/* "deploy", "started", ...; "?" when out of range. */
const char *hd_lc_event_name(enum hd_lc_event event);
const char *hd_lc_action_name(enum hd_lc_action action);

#endif
