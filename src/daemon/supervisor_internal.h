/*
 * supervisor_internal.h - what the supervisor's files share and nothing else
 * includes: the workload, its runs and its upgrade, and the functions one
 * file of the supervisor calls in another.
 *
 *   supervisor.c  deployments (deploy, start, stop, rm), restart policy, views,
 *                 and workload_apply, the driver of the lifecycle table
 *   lifecycle.c   the table itself (lifecycle.h)
 *   run.c         runs: spawn a monitor, watch its report and exit, stop, retire
 *   upgrade.c     health-gated upgrade, its health command, rollback
 *   recover.c     after a restart of hedged: adopt or collect the recorded runs
 *   metrics.c     the /metrics text
 *
 * A workload has at most three kinds of runs (a run = an instance = one
 * monitor): the current one, an upgrade candidate, and old ones being retired
 * after an upgrade. Every run is recorded in the store *before* its monitor is
 * spawned, so a restarted hedged finds every monitor it may have started.
 */
#ifndef HEDGE_DAEMON_SUPERVISOR_INTERNAL_H
#define HEDGE_DAEMON_SUPERVISOR_INTERNAL_H

#include "daemon/daemon.h"
#include "daemon/lifecycle.h"

enum run_role { ROLE_CURRENT, ROLE_CANDIDATE, ROLE_RETIRING };

struct workload;

struct run {
    struct hd_instance *inst;
    struct workload *wl; /* NULL once retiring and the workload is gone */
    struct hd_supervisor *sup;
    enum run_role role;
    int version;
    bool started;        /* the start report said ok */
    bool stop_requested; /* TERM sent (or to send once started) */
    struct hd_timer *kill_timer;
    struct run *next; /* in sup->retiring */
};

/* A request that is answered when the workload's state settles. */
struct waiter {
    hd_reply_fn fn;
    void *ctx;
    bool first_deploy; /* answer "created" or the start error, not the state */
    struct waiter *next;
};

struct upgrade {
    int version;
    struct hd_spec *spec;
    char *spec_json;
    char *digest;
    struct run *run;
    struct hd_timer *health_timer; /* the health deadline (or, without a command, the wait) */
    double health_wait;
    pid_t probe_pid;              /* the spec's health command, running; 0 when not */
    int probe_last_code;          /* its last exit code, -1 before the first */
    struct hd_timer *probe_timer; /* the next probe */
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
    enum hd_lc_state state; /* changed only by workload_apply (and recover.c, from the store) */
    struct run *cur;
    int restarts; /* restarts since the last deploy/start */
    int consecutive_failures;
    struct hd_timer *backoff_timer;
    char *last_error;
    char *start_error; /* the last run never started: the runtime's message */
    int last_exit_code;
    int64_t created_at;
    struct upgrade *up;
    struct waiter *waiters; /* replies sent when the state settles */
    struct workload *next;
};

struct hd_supervisor {
    struct hd_loop *loop;
    struct hd_store *store;
    const struct hd_daemon_config *cfg;
    struct workload *workloads;
    struct run *retiring;
    struct hd_netchild *broker; /* workload credentials live here (the network child); NULL when disabled */
};

/* ---- supervisor.c ---- */
int64_t supervisor_unix_ms(void);
void supervisor_log_error(hd_error_t *err);
/* Answer a request with a failure: the message goes out as err. extra (stolen, may be NULL)
 * carries more of the answer (a failed first deploy's exit code). */
void supervisor_reply_error(hd_reply_fn reply, void *ctx, enum hd_sup_result result, json_t *extra, const char *fmt,
                            ...) __attribute__((format(printf, 5, 6)));
struct workload *supervisor_find(struct hd_supervisor *sup, const char *name);
/* Parse and validate a spec the way `hedge run -f` does, so the messages match. */
struct hd_spec *supervisor_parse_spec(const char *body, size_t len, const char *origin, hd_error_t *err);
/* The spec JSON a version's monitor runs (with its broker credentials, or a function's host spec). */
char *supervisor_monitor_spec(struct hd_supervisor *sup, const char *name, int version, const struct hd_spec *spec,
                              hd_error_t *err);

struct workload *workload_new(struct hd_supervisor *sup, const char *name);
void workload_free(struct workload *wl);
/* Feed an event to the lifecycle table: change state, do the action, answer the waiters once the
 * state settles. An illegal event changes nothing and says HD_SUP_CONFLICT. */
enum hd_sup_result workload_apply(struct workload *wl, enum hd_lc_event event);
/* The state name the API shows ("crash-loop" for a backoff after crash_loop_after quick failures). */
const char *workload_state_name(const struct workload *wl);
void workload_save(struct workload *wl);
void workload_stop(struct workload *wl);
void workload_finish_remove(struct workload *wl);
/* The current run ended (or never started): apply the restart policy. */
void workload_current_ended(struct workload *wl, bool while_down);
/* Register the broker users of the active spec again (adoption, a failed upgrade). */
void workload_restore_creds(struct workload *wl);

/* ---- run.c ---- */
struct run *run_new(struct workload *wl, enum run_role role, int version);
void run_free(struct run *run);
/* Free the in-memory run only: hedged exits, the monitor stays. */
void run_detach(struct run *run);
/* Spawn the run's monitor for spec_json; the instance row is written first. */
int run_spawn(struct run *run, const char *spec_json, hd_error_t *err);
/* Watch the report pipe until the monitor reported, then its pidfd. */
void run_start_watch(struct run *run);
void run_stop(struct run *run);
void run_retire(struct run *run);
bool run_has_retiring(struct hd_supervisor *sup, struct workload *wl);
void run_ended(struct run *run, bool while_down);
char *run_describe_exit(const struct hd_instance *inst);
bool run_is_up(const struct run *run);

/* ---- upgrade.c ---- */
void upgrade_begin(struct workload *wl, struct hd_spec *spec, char *spec_json, char *digest, const char *note,
                   double health_wait, hd_reply_fn reply, void *ctx);
/* The candidate's monitor reported a start: run the health command, or just wait. */
void upgrade_candidate_started(struct workload *wl);
void upgrade_fail(struct workload *wl, const char *why);
void upgrade_free(struct hd_supervisor *sup, struct upgrade *up);

#endif
