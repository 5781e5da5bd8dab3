/*
 * test_lifecycle.c - the workload life cycle table (src/daemon/lifecycle.c).
 *
 * Every (state, event) pair is pinned below: either illegal or one action and
 * one next state, so a change to the table shows up here as a one-cell diff.
 * Then the paths the supervisor takes are walked event by event.
 */
#include "daemon/lifecycle.h"

#include <stdarg.h>
#include <stdbool.h>

#include "check.h"

/* Rows: the states; columns: the events, in the order of enum hd_lc_event.
 * One cell: "-" illegal, else "<action letter><next state letter>".
 * Actions: n nothing, k keep, s spawn, t terminate, r schedule restart, c cancel restart.
 * States:  C created, S starting, R running, T stopping, P stopped, E exited, F failed, B backoff. */
static const char *const expected[HD_LC_STATE_COUNT][HD_LC_EVENT_COUNT] = {
    /*                  dply  start strtd spwnf exitd faild crash stopd timer stop  rm    hok   hfail adopt lost */
    [HD_LC_CREATED] = {"sS", "sS", "-", "-", "-", "-", "-", "-", "-", "nP", "nP", "nR", "kC", "nR", "nC"},
    [HD_LC_STARTING] = {"-", "kS", "nR", "nF", "nE", "nF", "rB", "nP", "-", "tT", "tT", "nR", "kS", "-", "-"},
    [HD_LC_RUNNING] = {"-", "kR", "-", "-", "nE", "nF", "rB", "nP", "-", "tT", "tT", "nR", "kR", "-", "-"},
    [HD_LC_STOPPING] = {"-", "-", "kT", "-", "-", "-", "-", "nP", "-", "kT", "kT", "nR", "kT", "-", "-"},
    [HD_LC_STOPPED] = {"-", "sS", "-", "-", "-", "-", "-", "-", "-", "nP", "nP", "nR", "kP", "nR", "nC"},
    [HD_LC_EXITED] = {"-", "sS", "-", "-", "-", "-", "-", "-", "-", "nP", "nP", "nR", "kE", "nR", "nC"},
    [HD_LC_FAILED] = {"-", "sS", "-", "-", "-", "-", "-", "-", "-", "nP", "nP", "nR", "kF", "nR", "nC"},
    [HD_LC_BACKOFF] = {"-", "sS", "-", "-", "-", "-", "-", "-", "sS", "cP", "cP", "cR", "kB", "-", "-"},
};

static char action_letter(enum hd_lc_action a)
{
    static const char letters[] = {[HD_LC_DO_NOTHING] = 'n',
                                   [HD_LC_DO_KEEP] = 'k',
                                   [HD_LC_DO_SPAWN] = 's',
                                   [HD_LC_DO_TERMINATE] = 't',
                                   [HD_LC_DO_SCHEDULE_RESTART] = 'r',
                                   [HD_LC_DO_CANCEL_RESTART] = 'c'};
    return (unsigned)a < sizeof(letters) && letters[a] ? letters[a] : '?';
}

static char state_letter(enum hd_lc_state s)
{
    return (unsigned)s < HD_LC_STATE_COUNT ? "CSRTPEFB"[s] : '?';
}

/* The table's cell, in the notation of expected[][]. */
static void cell(enum hd_lc_state s, enum hd_lc_event e, char out[3])
{
    struct hd_lc_transition t = {.action = (enum hd_lc_action) - 1, .next = (enum hd_lc_state) - 1};
    enum hd_lc_result r = hd_lifecycle_next(s, e, &t);
    if (r == HD_LC_ILLEGAL) {
        strcpy(out, "-");
        CHECK(t.action == (enum hd_lc_action) - 1 && t.next == (enum hd_lc_state) - 1); /* untouched */
        return;
    }
    CHECK(r == HD_LC_OK);
    out[0] = action_letter(t.action);
    out[1] = state_letter(t.next);
    out[2] = '\0';
}

/* Feed events from state; returns the state reached, or -1 at the first illegal event. */
static int walk(enum hd_lc_state s, ...)
{
    va_list ap;
    va_start(ap, s);
    int e;
    while ((e = va_arg(ap, int)) >= 0) {
        struct hd_lc_transition t;
        if (hd_lifecycle_next(s, (enum hd_lc_event)e, &t) != HD_LC_OK) {
            va_end(ap);
            return -1;
        }
        s = t.next;
    }
    va_end(ap);
    return (int)s;
}

static enum hd_lc_action action_of(enum hd_lc_state s, enum hd_lc_event e)
{
    struct hd_lc_transition t = {.action = (enum hd_lc_action) - 1};
    hd_lifecycle_next(s, e, &t);
    return t.action;
}

int main(void)
{
    /* every pair: the outcome pinned above, and names for all of it */
    for (int s = 0; s < HD_LC_STATE_COUNT; s++) {
        CHECK(strcmp(hd_lc_state_name((enum hd_lc_state)s), "?") != 0);
        for (int e = 0; e < HD_LC_EVENT_COUNT; e++) {
            char got[3];
            cell((enum hd_lc_state)s, (enum hd_lc_event)e, got);
            if (expected[s][e] == NULL || strcmp(got, expected[s][e]) != 0) {
                fprintf(stderr, "state %s, event %s: got %s, expected %s\n", hd_lc_state_name((enum hd_lc_state)s),
                        hd_lc_event_name((enum hd_lc_event)e), got, expected[s][e] ? expected[s][e] : "(none)");
                check_failures++;
            }
        }
    }
    for (int e = 0; e < HD_LC_EVENT_COUNT; e++)
        CHECK(strcmp(hd_lc_event_name((enum hd_lc_event)e), "?") != 0);
    for (int a = HD_LC_DO_NOTHING; a <= HD_LC_DO_CANCEL_RESTART; a++)
        CHECK(strcmp(hd_lc_action_name((enum hd_lc_action)a), "?") != 0);
    CHECK_STR(hd_lc_state_name(HD_LC_BACKOFF), "backoff");
    CHECK_STR(hd_lc_state_name(HD_LC_STATE_COUNT), "?");
    CHECK_STR(hd_lc_event_name(HD_LC_EVENT_COUNT), "?");

    /* out of range: illegal, not a crash */
    struct hd_lc_transition t;
    CHECK(hd_lifecycle_next(HD_LC_STATE_COUNT, HD_LC_EV_START, &t) == HD_LC_ILLEGAL);
    CHECK(hd_lifecycle_next(HD_LC_RUNNING, HD_LC_EVENT_COUNT, &t) == HD_LC_ILLEGAL);
    CHECK(hd_lifecycle_next((enum hd_lc_state) - 1, (enum hd_lc_event) - 1, &t) == HD_LC_ILLEGAL);

    /* deploy -> running */
    CHECK(walk(HD_LC_CREATED, HD_LC_EV_DEPLOY, HD_LC_EV_STARTED, -1) == HD_LC_RUNNING);
    CHECK(action_of(HD_LC_CREATED, HD_LC_EV_DEPLOY) == HD_LC_DO_SPAWN);
    /* a first deploy whose monitor cannot be spawned, or whose start report is an error */
    CHECK(walk(HD_LC_CREATED, HD_LC_EV_DEPLOY, HD_LC_EV_SPAWN_FAILED, -1) == HD_LC_FAILED);
    CHECK(walk(HD_LC_CREATED, HD_LC_EV_DEPLOY, HD_LC_EV_FAILED, -1) == HD_LC_FAILED);
    /* a second deploy is not a first deploy */
    CHECK(walk(HD_LC_RUNNING, HD_LC_EV_DEPLOY, -1) == -1);

    /* crash -> restarting -> running: the back-off timer is armed, then fires a spawn */
    CHECK(walk(HD_LC_RUNNING, HD_LC_EV_CRASHED, -1) == HD_LC_BACKOFF);
    CHECK(action_of(HD_LC_RUNNING, HD_LC_EV_CRASHED) == HD_LC_DO_SCHEDULE_RESTART);
    CHECK(action_of(HD_LC_BACKOFF, HD_LC_EV_RESTART_TIMER) == HD_LC_DO_SPAWN);
    CHECK(walk(HD_LC_RUNNING, HD_LC_EV_CRASHED, HD_LC_EV_RESTART_TIMER, HD_LC_EV_STARTED, -1) == HD_LC_RUNNING);

    /* crash loop -> failed: restarts until the policy gives up (max_retries) */
    CHECK(walk(HD_LC_RUNNING, HD_LC_EV_CRASHED, HD_LC_EV_RESTART_TIMER, HD_LC_EV_CRASHED, HD_LC_EV_RESTART_TIMER,
               HD_LC_EV_STARTED, HD_LC_EV_CRASHED, HD_LC_EV_RESTART_TIMER, HD_LC_EV_FAILED, -1) == HD_LC_FAILED);
    /* a clean exit the policy does not restart */
    CHECK(walk(HD_LC_RUNNING, HD_LC_EV_EXITED, -1) == HD_LC_EXITED);
    /* the restart timer only fires in backoff */
    CHECK(walk(HD_LC_RUNNING, HD_LC_EV_RESTART_TIMER, -1) == -1);

    /* upgrade: health failure rolls back (nothing changes for the running version), health ok promotes */
    CHECK(walk(HD_LC_RUNNING, HD_LC_EV_HEALTH_FAILED, -1) == HD_LC_RUNNING);
    CHECK(action_of(HD_LC_RUNNING, HD_LC_EV_HEALTH_FAILED) == HD_LC_DO_KEEP);
    for (int s = 0; s < HD_LC_STATE_COUNT; s++) {
        CHECK(walk((enum hd_lc_state)s, HD_LC_EV_HEALTH_FAILED, -1) == s);
        CHECK(walk((enum hd_lc_state)s, HD_LC_EV_HEALTH_OK, -1) == HD_LC_RUNNING);
    }
    CHECK(action_of(HD_LC_BACKOFF, HD_LC_EV_HEALTH_OK) == HD_LC_DO_CANCEL_RESTART);

    /* stop / start / rm */
    CHECK(walk(HD_LC_RUNNING, HD_LC_EV_STOP, HD_LC_EV_STOPPED, -1) == HD_LC_STOPPED);
    CHECK(action_of(HD_LC_RUNNING, HD_LC_EV_STOP) == HD_LC_DO_TERMINATE);
    CHECK(walk(HD_LC_RUNNING, HD_LC_EV_STOP, HD_LC_EV_STOPPED, HD_LC_EV_START, HD_LC_EV_STARTED, -1) == HD_LC_RUNNING);
    CHECK(walk(HD_LC_RUNNING, HD_LC_EV_STOP, HD_LC_EV_START, -1) == -1); /* start while stopping: a conflict */
    CHECK(walk(HD_LC_STOPPED, HD_LC_EV_STOP, -1) == HD_LC_STOPPED);      /* still answered: "nothing", not "keep" */
    CHECK(action_of(HD_LC_STOPPED, HD_LC_EV_STOP) == HD_LC_DO_NOTHING);
    CHECK(walk(HD_LC_BACKOFF, HD_LC_EV_STOP, -1) == HD_LC_STOPPED);
    CHECK(action_of(HD_LC_BACKOFF, HD_LC_EV_STOP) == HD_LC_DO_CANCEL_RESTART);
    CHECK(walk(HD_LC_BACKOFF, HD_LC_EV_START, HD_LC_EV_STARTED, -1) == HD_LC_RUNNING);
    CHECK(walk(HD_LC_STARTING, HD_LC_EV_STOP, HD_LC_EV_STARTED, HD_LC_EV_STOPPED, -1) == HD_LC_STOPPED);
    CHECK(walk(HD_LC_RUNNING, HD_LC_EV_RM, HD_LC_EV_STOPPED, -1) == HD_LC_STOPPED);
    CHECK(walk(HD_LC_EXITED, HD_LC_EV_RM, -1) == HD_LC_STOPPED);

    /* hedged restarts: adopt a live run, collect one that ended meanwhile, restart a lost one */
    CHECK(walk(HD_LC_CREATED, HD_LC_EV_ADOPT, -1) == HD_LC_RUNNING);
    CHECK(walk(HD_LC_STOPPED, HD_LC_EV_ADOPT, HD_LC_EV_STOP, HD_LC_EV_STOPPED, -1) == HD_LC_STOPPED);
    CHECK(walk(HD_LC_CREATED, HD_LC_EV_ADOPT, HD_LC_EV_CRASHED, -1) == HD_LC_BACKOFF);
    CHECK(walk(HD_LC_EXITED, HD_LC_EV_LOST, HD_LC_EV_START, HD_LC_EV_STARTED, -1) == HD_LC_RUNNING);
    CHECK(walk(HD_LC_RUNNING, HD_LC_EV_ADOPT, -1) == -1);

    CHECK_DONE();
}
