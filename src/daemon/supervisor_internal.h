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

/* A deploy waiting for its image: `hedge image pull` runs as a child of hedged (pull.c). */
struct pull {
    struct hd_supervisor *sup;
    char *name;  /* the workload the deploy names */
    char *image; /* the reference being pulled */
    char *isolation;
    char *body; /* the deploy request, run again once the image is stored */
    size_t len;
    char *origin;
    double health_wait;
    hd_reply_fn reply; /* NULL once the client went away (the deploy goes on) */
    void *ctx;
    pid_t pid;
    int out_fd; /* a memfd: the child's stdout and stderr */
    bool cancelled;
    int64_t started_at;
    struct pull *next;
};

struct hd_supervisor {
    struct hd_loop *loop;
    struct hd_store *store;
    const struct hd_daemon_config *cfg;
    struct workload *workloads;
    struct run *retiring;
    struct hd_netchild *broker; /* workload credentials live here (the network child); NULL when disabled */
    struct pull *pulls;         /* deploys waiting for their image */
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

/* The deploy itself; pulled: the spec's image was just pulled (do not pull again). */
void supervisor_deploy(struct hd_supervisor *sup, const char *body, size_t len, const char *origin, double health_wait,
                       bool pulled, hd_reply_fn reply, void *ctx);

/* ---- pull.c ---- */
/* Pin spec->image to its manifest digest when the store knows it. 1: the image is a registry
 * reference (a host or a digest) that is not stored and must be pulled; 0: go on. */
int pull_prepare(struct hd_supervisor *sup, struct hd_spec *spec, bool pulled);
/* Start `hedge image pull` for spec's image; the deploy (body) runs again once it succeeded. */
void pull_start(struct hd_supervisor *sup, const struct hd_spec *spec, const char *body, size_t len, const char *origin,
                double health_wait, hd_reply_fn reply, void *ctx);
struct pull *pull_find(struct hd_supervisor *sup, const char *name);
/* The reaped child was a pull: finish its deploy. */
bool pull_child_exited(struct hd_supervisor *sup, pid_t pid, int status);
/* Kill the pull; its deploy answers that it was cancelled (by rm). */
void pull_cancel(struct pull *p);
void pull_forget(struct hd_supervisor *sup, void *ctx);
/* hedged exits: kill every pull (their deploys were never recorded). */
void pull_free_all(struct hd_supervisor *sup);
/* A deployment that exists only as a pull, as `ps` shows it. */
json_t *pull_json(const struct pull *p);

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
