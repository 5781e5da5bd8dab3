/*
 * daemon.h - the parts of hedged and how they fit:
 *
 *   main.c        flags, config, start-up and shutdown
 *   config.c      embedded defaults + JSON config file (`hedged --check`)
 *   store.c       SQLite (WAL): deployments, versions, instances, events
 *   instance.c    hedged's side of a workload monitor: spawn, adopt, signal, collect
 *   supervisor.c  deployments, restart policy and the lifecycle driver (supervisor_internal.h)
 *   lifecycle.c   the workload life cycle as a transition table (lifecycle.h)
 *   run.c         a workload's runs: spawn, watch, stop, retire
 *   upgrade.c     health-gated upgrade and rollback
 *   recover.c     re-adopting the runs a restarted hedged finds
 *   metrics.c     the /metrics text of the workloads
 *   api.c         HTTP/1.1 + JSON over the unix socket, /metrics
 *   embed_broker.c  the MQTT broker (src/broker/) in the same loop; its config section
 *   workload_creds.c  per-workload broker users from the spec's mqtt/triggers filters
 *   embed_uplink.c  the store-and-forward cloud uplink (src/uplink/) in the same loop
 *   function_host.c  function deployments: the workload run is hedge-functions with the real spec
 *
 * monitor.c (the hedge-monitor binary, one per running workload) is not part of
 * hedged and includes none of this: only the runtime library and monitor_proto.h,
 * the instance dir and fds it shares with instance.c.
 *
 * Everything runs on one thread; nothing blocks the loop for longer than a
 * local file or SQLite write, or one request to a monitor's control socket.
 */
#ifndef HEDGE_DAEMON_H
#define HEDGE_DAEMON_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "runtime/backend.h"
#include "broker/broker.h"
#include "base/error.h"
#include "base/loop.h"
#include "spec/spec.h"

/* ---- config.c ---------------------------------------------------------- */

struct hd_daemon_config {
    char *state_dir;                 /* SQLite DB, instance dirs, logs */
    char *socket_path;               /* API socket */
    char *socket_group;              /* group allowed on the socket (mode 0660), NULL = root only (0600) */
    char *log_dir;                   /* workload logs; default <state_dir>/logs */
    char *secret_key;                /* secret store key; NULL: $HEDGE_SECRET_KEY, <state>/secret.key */
    int64_t log_max_bytes;           /* rotate a workload log past this size */
    double health_wait;              /* seconds a new version must keep running to be healthy */
    double backoff_initial;          /* first restart delay, seconds */
    double backoff_max;              /* restart delay cap, seconds */
    double restart_reset_after;      /* a run this long resets the back-off */
    int crash_loop_after;            /* consecutive quick failures shown as crash-loop */
    double stop_grace;               /* seconds between SIGTERM and SIGKILL */
    int log_level;                   /* enum hd_log_level of hedged's own log (default info) */
    bool broker_enabled;             /* run the MQTT broker in the loop (default true) */
    struct hd_broker_config broker;  /* state_dir defaults to <state_dir>/broker */
    struct hd_uplink_config *uplink; /* the "uplink" section; NULL = no uplink (the default) */
    struct hd_fleet_config *fleet;   /* the "fleet" section; NULL = not managed from a fleet (the default) */
    char **insecure_registries;      /* "registries": {"insecure": [...]}: pulled over plain HTTP */
    char *registry_ca;               /* "registries": {"ca": FILE}: CA bundle for pulls; NULL: the system's */
    int vm_pool;                     /* "vm_pool": restored clones kept waiting per VM template (default 1, 0: off) */
};

void hd_config_defaults(struct hd_daemon_config *cfg);
/* Overlay a JSON config file; errors name the field ("config.json: health_wait: ..."). */
int hd_config_load(struct hd_daemon_config *cfg, const char *path, hd_error_t *err);
/* Fill derived defaults (log_dir) and check the whole. */
int hd_config_finish(struct hd_daemon_config *cfg, hd_error_t *err);
void hd_config_free(struct hd_daemon_config *cfg);

/* ---- embed_broker.c ---------------------------------------------------- */

struct hd_loop;
struct hd_watch;
/* Overlay the config's "broker" object; errors name "broker.<field>". */
int hd_config_load_broker(struct hd_daemon_config *cfg, const json_t *section, hd_error_t *err);
/* --check: load the broker's password, ACL and TLS files without binding its ports. */
int hd_config_check_broker(const struct hd_daemon_config *cfg, hd_error_t *err);
/* The enabled broker has a plain TCP listener (workloads' HEDGE_MQTT_PORT, the uplink's local broker):
 * refuses a `listen` of only ws:// / wss:// entries (or only listen_tls). hedged checks it at start too. */
int hd_config_check_broker_listen(const struct hd_daemon_config *cfg, hd_error_t *err);
/* Start the broker (when enabled) in loop; *out stays NULL when disabled. Stop it before freeing the loop.
 * held: its clients wait until hd_broker_serve() (hedged's network child, until hedged's users are in). */
int hd_daemon_broker_start(struct hd_loop *loop, const struct hd_daemon_config *cfg, bool held, struct hd_broker **out,
                           hd_error_t *err);
void hd_daemon_broker_stop(struct hd_broker *b);
/* Prometheus text of the broker's counters; caller frees. */
struct hd_broker_stats;
char *hd_daemon_broker_metrics_text(const struct hd_broker_stats *s);

/* ---- netchild.c, netchild_main.c: the broker and uplink in a child without privileges ---- */

struct hd_netchild;
/* Start the network child (when the broker is enabled or, without broker_only, an uplink is configured)
 * and wait for it to serve; *out stays NULL when there is nothing to run. argv: hedged's own, which
 * the child is started with again. */
int hd_netchild_start(struct hd_loop *loop, const struct hd_daemon_config *cfg, char **argv, bool broker_only,
                      struct hd_netchild **out, hd_error_t *err);
/* Ask it to shut down (its store is flushed), wait a bounded time, free. NULL is ignored. */
void hd_netchild_stop(struct hd_netchild *nc);
/* The users and rules of the workloads hedged re-adopted at start are in: let the child's broker
 * accept clients (SERVE), now and after every restart of the child (which get the users first). */
void hd_netchild_serve(struct hd_netchild *nc);
/* SIGCHLD: true when pid was the network child (its crash is counted and logged, a restart scheduled). */
bool hd_netchild_reaped(struct hd_netchild *nc, pid_t pid, int status);
/* Start a fresh child that reads the config again (SIGHUP); sessions and spool survive on disk. */
void hd_netchild_reload(struct hd_netchild *nc);
pid_t hd_netchild_pid(struct hd_netchild *nc);
/* hedged was continued (SIGCONT): continue the child, which stops itself while hedged is stopped. */
void hd_netchild_continued(struct hd_netchild *nc);
/* Test hook (HEDGE_TEST_HOOKS=1, SIGUSR2): ask the child to call a forbidden syscall. */
void hd_netchild_test_fault(struct hd_netchild *nc);
/* Broker users and rules: kept by hedged, sent to the child now and to every restarted child. */
int hd_netchild_set_user(struct hd_netchild *nc, const char *user, const char *password, bool internal,
                         hd_error_t *err);
void hd_netchild_remove_user(struct hd_netchild *nc, const char *user);
int hd_netchild_allow(struct hd_netchild *nc, const char *user, const char *access, const char *filter,
                      hd_error_t *err);
/* Return once the child applied what was sent before (bounded wait). */
void hd_netchild_sync(struct hd_netchild *nc);
/* The broker's first plain listener port. */
int hd_netchild_port(struct hd_netchild *nc);
bool hd_netchild_has_uplink(struct hd_netchild *nc);
/* Prometheus text: the broker's and uplink's counters (fetched from the child) and the child's own. */
char *hd_netchild_metrics(struct hd_netchild *nc);
/* GET /v1/uplink's object, from the child. */
json_t *hd_netchild_uplink_status(struct hd_netchild *nc);
/* {"broker_clients", "spool_depth"} as the child counts them now ({} while it restarts). */
json_t *hd_netchild_facts(struct hd_netchild *nc);
/* Desired documents from the child go to fn (NULL: dropped). */
typedef void (*hd_netchild_fleet_fn)(void *ctx, const char *doc, size_t len, const char *signature, const char *error);
/* A job from the cloud (its id, and the request as a compact JSON object). */
typedef void (*hd_netchild_job_fn)(void *ctx, const char *id, const char *request);
void hd_netchild_set_fleet(struct hd_netchild *nc, hd_netchild_fleet_fn fn, hd_netchild_job_fn job_fn, void *ctx);
/* Publish a job's result (dropped while no child is ready: the operator asks again with the same id). */
void hd_netchild_fleet_result(struct hd_netchild *nc, const char *id, const char *result);
/* Send the fleet report to the child; kept and sent again to a restarted child. */
void hd_netchild_fleet_report(struct hd_netchild *nc, const char *report);
/* Send one event (JSON) to the child's spool; held (up to 1000, oldest dropped) while no child is ready. */
void hd_netchild_fleet_event(struct hd_netchild *nc, const char *event);
/* Send a batch of a deployment's forwarded log lines; a bounded number is held while the child restarts. */
void hd_netchild_fleet_log(struct hd_netchild *nc, const char *deployment, const char *batch);
/* The child's side: serve over control socket fd until told to stop; the exit code. */
int hd_netchild_main(struct hd_daemon_config *cfg, int fd, bool broker_only);

/* ---- embed_uplink.c ---------------------------------------------------- */

struct hd_daemon_uplink;
/* Parse the config's "uplink" object (errors name "uplink.<field>"); free with hd_config_free. */
int hd_config_load_uplink(struct hd_daemon_config *cfg, const json_t *section, hd_error_t *err);
/* Derived defaults (spool path, local broker) and checks; part of hd_config_finish. */
int hd_config_finish_uplink(struct hd_daemon_config *cfg, hd_error_t *err);
void hd_config_free_uplink(struct hd_daemon_config *cfg);
/* Start the uplink (when configured) in loop; *out stays NULL when there is none. */
int hd_daemon_uplink_start(struct hd_loop *loop, struct hd_daemon_config *cfg, struct hd_broker *broker,
                           struct hd_daemon_uplink **out, hd_error_t *err);
void hd_daemon_uplink_stop(struct hd_daemon_uplink *d);
/* Prometheus text of the uplink's link state and counters; caller frees. */
char *hd_daemon_uplink_metrics(struct hd_daemon_uplink *d);
/* The status object of GET /v1/uplink (the keys of `hedge uplink status --json`). */
json_t *hd_daemon_uplink_status(struct hd_daemon_uplink *d);
/* The running uplink, NULL once a fatal error stopped it. */
struct hd_uplink *hd_daemon_uplink_get(struct hd_daemon_uplink *d);

struct hd_supervisor;

/* ---- fleet.c, fleet_link.c: the node's desired state from the cloud broker (docs/fleet.md) ---- */

struct hd_fleet_config {
    char *prefix;     /* the topics' prefix, ending with '/' (default "hedge/") */
    json_t *labels;   /* {"key": "value"}: reported, for the operator's selectors */
    char *verify_key; /* an Ed25519 public key (PEM): only documents it signed apply; NULL: any */
};
int hd_config_load_fleet(struct hd_daemon_config *cfg, const json_t *section, hd_error_t *err);
/* Needs the uplink (its cloud link and node_id); sets the cloud link's will ("offline" on the status topic). */
int hd_config_finish_fleet(struct hd_daemon_config *cfg, hd_error_t *err);
void hd_config_free_fleet(struct hd_daemon_config *cfg);
/* PREFIX NODE_ID "/" leaf; caller frees. */
char *hd_fleet_topic(const struct hd_daemon_config *cfg, const char *leaf);

/* In the network child: the fleet topics on the uplink's cloud link; NULL when no fleet is configured. */
struct hd_fleet_link;
struct hd_fleet_link *hd_fleet_link_start(const struct hd_daemon_config *cfg, struct hd_daemon_uplink *d,
                                          int control_fd);
/* Publish hedged's report (retained), now when connected and again at every connect. */
void hd_fleet_link_report(struct hd_fleet_link *l, const char *report);
/* Spool an event for PREFIX/NODE/events (priority class 1: after class 0, before telemetry). */
void hd_fleet_link_event(struct hd_fleet_link *l, const char *event);
/* Spool a batch of a deployment's forwarded log lines for PREFIX/NODE/logs/DEPLOYMENT (class 9). */
void hd_fleet_link_log(struct hd_fleet_link *l, const char *deployment, const char *batch);
/* Publish a job's result on PREFIX/NODE/jobs/ID/result (QoS 1, not retained). */
void hd_fleet_link_result(struct hd_fleet_link *l, const char *id, const char *result);
/* Say "offline" (a clean shutdown sends no will) and free. */
void hd_fleet_link_stop(struct hd_fleet_link *l);

/* In hedged: apply desired documents, report; NULL when no fleet is configured or no network child runs. */
struct hd_fleet;
struct hd_store;
struct hd_fleet *hd_fleet_new(struct hd_loop *loop, struct hd_supervisor *sup, struct hd_store *store,
                              struct hd_netchild *net, const struct hd_daemon_config *cfg);
/* A desired document the child passed on, with its signature ("" unsigned; error: why the child could not
 * read it, else ""). */
void hd_fleet_desired(struct hd_fleet *f, const char *doc, size_t len, const char *signature, const char *error);
/* A child of hedged ended: true when it was the fleet's (a bench job); f may be NULL. */
bool hd_fleet_child_exited(struct hd_fleet *f, pid_t pid, int status);
void hd_fleet_free(struct hd_fleet *f);

/* fleet_bench.c: the bench job, `hedge bench --json` as a child of hedged. done gets the job's result
 * ({"ok": true, "type": "bench", "report": {...}} or {"ok": false, "error": ...}), to take. */
struct hd_fleet_bench;
typedef void (*hd_fleet_bench_done)(void *ctx, json_t *result);
/* Start it; -1 with err naming the request's field, or saying what failed. */
int hd_fleet_bench_start(struct hd_fleet_bench **list, struct hd_loop *loop, const char *state_dir,
                         const json_t *request, hd_fleet_bench_done done, void *ctx, hd_error_t *err);
bool hd_fleet_bench_reaped(struct hd_fleet_bench **list, pid_t pid, int status);
/* Stop and reap every bench (hedged stops), without answers: done is not called, ctx stays the caller's. */
void hd_fleet_bench_stop_all(struct hd_fleet_bench **list);
/* Remove the directories of benches a killed hedged left behind. */
void hd_fleet_bench_clean_stale(const char *state_dir);

/* In hedged (fleet_logs.c): follow the log of every deployment with logs.forward and hand batches of its
 * lines to the network child (docs/fleet.md, "Log forwarding"). */
struct hd_fleet_logs;
struct hd_fleet_logs *hd_fleet_logs_new(struct hd_loop *loop, struct hd_supervisor *sup, struct hd_netchild *net);
void hd_fleet_logs_free(struct hd_fleet_logs *fl);

/* ---- workload_creds.c -------------------------------------------------- */

/* The host a client on this node uses to reach the broker (its first listener; "any" → loopback). */
char *hd_daemon_broker_host(const struct hd_daemon_config *cfg);

/* Set HEDGE_MQTT_HOST/PORT/USERNAME/PASSWORD in env: how a client of this node reaches broker b as user. */
void hd_creds_env(json_t *env, struct hd_netchild *b, const struct hd_daemon_config *cfg, const char *user,
                  const char *password);
/* The spec asks for broker credentials (an mqtt block or triggers). */
bool hd_creds_wanted(const struct hd_spec *spec);
/* The spec JSON for the workload's monitor: with broker b (may be NULL) and a spec that wants
 * credentials, the user "workload:<name>" is (re-)registered with the spec's filters and
 * HEDGE_MQTT_HOST/PORT/USERNAME/PASSWORD are added to its env. Caller frees; NULL on error. */
char *hd_creds_grant(struct hd_netchild *b, const struct hd_daemon_config *cfg, const char *name,
                     const struct hd_spec *spec, hd_error_t *err);
/* Register the user again with spec's filters (adoption, a failed upgrade). */
int hd_creds_restore(struct hd_netchild *b, const struct hd_daemon_config *cfg, const char *name,
                     const struct hd_spec *spec, hd_error_t *err);
/* Remove the broker user (stop); forget also deletes the kept password (rm). */
void hd_creds_revoke(struct hd_netchild *b, const char *name);
void hd_creds_forget(struct hd_netchild *b, const struct hd_daemon_config *cfg, const char *name);
/* (Re-)register "function:<name>", a function host's user: read on the triggers, write on the
 * reply topic ("#" without one); its user name and password go to *user and *password. */
int hd_creds_function_host(struct hd_netchild *b, const struct hd_daemon_config *cfg, const char *name,
                           const struct hd_spec *spec, char **user, char **password, hd_error_t *err);

/* ---- function_host.c --------------------------------------------------- */

/* The spec has a function block: hedged runs it through hedge-functions. */
bool hd_function_is(const struct hd_spec *spec);
/* <state>/functions/<name>/v<version> (version 0: the name's whole tree); caller frees. */
char *hd_function_dir(const struct hd_daemon_config *cfg, const char *name, int version);
/* Write the version's spec file and return the JSON of the host spec the monitor runs
 * (hedge-functions, process isolation, broker credentials in its env). Caller frees. */
char *hd_function_host_spec(struct hd_netchild *b, const struct hd_daemon_config *cfg, const char *name, int version,
                            const struct hd_spec *spec, hd_error_t *err);
/* Register the host's (and the instances') broker users again (adoption, a failed upgrade). */
int hd_function_restore(struct hd_netchild *b, const struct hd_daemon_config *cfg, const char *name,
                        const struct hd_spec *spec, hd_error_t *err);
/* {mode, triggers, socket, invocations, errors, timeouts, rejected, restarts, p50_ms, p99_ms}. */
json_t *hd_function_json(const struct hd_daemon_config *cfg, const char *name, int version, const struct hd_spec *spec,
                         bool running);
/* Remove <state>/functions/<name> (rm). */
void hd_function_forget(const struct hd_daemon_config *cfg, const char *name);

/* ---- store.c ----------------------------------------------------------- */

struct hd_store;

struct hd_store_deployment {
    char *name;
    int version; /* the active version */
    bool desired_running;
    int restarts;       /* restarts since the last deploy/start */
    int64_t created_at; /* unix ms */
    char *state;        /* last settled state ("exited", "failed", ...), NULL if never */
    char *last_error;
};

struct hd_store_instance {
    char *id;
    char *name;
    int version;
    char *role; /* "current", "candidate" */
};

int hd_store_open(const char *path, struct hd_store **out, hd_error_t *err);
void hd_store_close(struct hd_store *st);
int hd_store_begin(struct hd_store *st, hd_error_t *err);
int hd_store_commit(struct hd_store *st, hd_error_t *err);
void hd_store_rollback(struct hd_store *st);

int hd_store_put_deployment(struct hd_store *st, const struct hd_store_deployment *d, hd_error_t *err);
int hd_store_delete_deployment(struct hd_store *st, const char *name, hd_error_t *err);
/* All deployments; caller frees with hd_store_deployments_free. */
int hd_store_list_deployments(struct hd_store *st, struct hd_store_deployment **out, int *n, hd_error_t *err);
void hd_store_deployments_free(struct hd_store_deployment *d, int n);

int hd_store_add_version(struct hd_store *st, const char *name, int version, const char *spec_json, const char *digest,
                         const char *status, const char *note, hd_error_t *err);
int hd_store_set_version_status(struct hd_store *st, const char *name, int version, const char *status,
                                const char *reason, hd_error_t *err);
/* Spec JSON of one version (caller frees), or NULL when absent. */
char *hd_store_version_spec(struct hd_store *st, const char *name, int version);
int hd_store_max_version(struct hd_store *st, const char *name);
/* JSON array of {version, created_at, digest, status, reason, note}. */
json_t *hd_store_history(struct hd_store *st, const char *name);
/* JSON array of the "image" of every recorded version of every deployment (pinned references). */
json_t *hd_store_version_images(struct hd_store *st);

int hd_store_put_instance(struct hd_store *st, const char *id, const char *name, int version, const char *role,
                          hd_error_t *err);
int hd_store_delete_instance(struct hd_store *st, const char *id, hd_error_t *err);
int hd_store_list_instances(struct hd_store *st, struct hd_store_instance **out, int *n, hd_error_t *err);
void hd_store_instances_free(struct hd_store_instance *v, int n);

/* Every event recorded from now on also goes to fn (the fleet's events topic); NULL: none. */
typedef void (*hd_store_event_fn)(void *ctx, int64_t time_ms, const char *name, const char *type, const char *message);
void hd_store_set_event_sink(struct hd_store *st, hd_store_event_fn fn, void *ctx);
void hd_store_event(struct hd_store *st, const char *name, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* JSON array of the last `limit` events of name (all names when NULL), oldest first. */
json_t *hd_store_events(struct hd_store *st, const char *name, int limit);

/* "sha256:<hex>" of data; caller frees. */
char *hd_digest(const char *data, size_t len);

/* ---- instance.c -------------------------------------------------------- */

/* One run of one version of a workload, owned by a monitor process. */
struct hd_instance {
    char id[16];
    char *dir; /* <state>/instances/<id> */
    pid_t monitor_pid;
    pid_t pid;              /* the workload's host pid */
    uint64_t pid_start;     /* its start time (hd_proc_start_time), to tell it from a reused pid */
    char *run_dir;          /* the run's runtime dir (removed by the monitor, or by us if it was lost) */
    char *secrets_dir;      /* the run's secrets tmpfs, or NULL (unmounted likewise) */
    int64_t started_at;     /* unix ms */
    char vm_boot[12];       /* a vm workload's start: "cold", "snapshot" or "pool"; "" otherwise */
    int report_fd;          /* start report from the monitor, -1 once read */
    int pidfd;              /* the monitor's pidfd, -1 until known */
    struct hd_watch *watch; /* on report_fd, then on pidfd */
    /* After the monitor exits: */
    bool exited;
    struct hd_exit exit;
    char *start_error;   /* the workload never started: why */
    bool lost;           /* no exit record: the monitor never ran or was killed */
    int64_t finished_at; /* unix ms */
};

/* ---- supervisor.c: a child hedged forks to exec a helper (health probe, image pull, fleet bench) ---- */

/* In the child: hedged's signal mask off, SIGPIPE default, a session of its own, stdin from /dev/null, stdout
 * to out_fd and stderr to err_fd (-1: /dev/null). Not hd_child_reset_signals: base/child.c would pull the
 * whole runtime into hedged. */
void hd_daemon_child_begin(int out_fd, int err_fd);
/* The hedge CLI: next to hedged (a build dir), else from PATH (an install: bin/ beside sbin/). New string. */
char *hd_daemon_hedge_path(void);
/* In the child: exec hedge (hd_daemon_hedge_path) with argv, or say why on stderr and exit 127. */
__attribute__((noreturn)) void hd_daemon_exec_hedge(const char *hedge, char *const argv[]);

/* Path of the hedge-monitor binary. */
void hd_instance_set_exe(const char *path);
struct hd_vm_pool;
/* The warm pool hd_instance_spawn offers each instance to first (NULL: none). */
void hd_instance_set_pool(struct hd_vm_pool *pool);
/* Exec hedge-monitor with argv detached (double fork, own session, stdin/stdout /dev/null, stderr
 * <state>/monitor.log), fd3 as its fd 3 and fd4 (unless -1) as its fd 4. */
int hd_instance_exec_detached(const struct hd_daemon_config *cfg, const char *const argv[], int fd3, int fd4,
                              hd_error_t *err);
/* Start a monitor for spec_json (or hand the instance to a ready member of the warm pool); returns with
 * inst->report_fd to watch. */
int hd_instance_spawn(const struct hd_daemon_config *cfg, const char *name, const char *spec_json, const char *id,
                      struct hd_instance **out, hd_error_t *err);
/* Read the start report: 0 started (pidfd set), -1 failed (err holds the workload's error). */
int hd_instance_read_report(struct hd_instance *inst, hd_error_t *err);
/* Re-attach to an instance dir after a daemon restart: 1 monitor alive (pidfd set), 0 exited (exit filled). */
int hd_instance_adopt(const struct hd_daemon_config *cfg, const char *id, struct hd_instance **out, hd_error_t *err);
/* After the pidfd fired: read the exit record. */
void hd_instance_collect(struct hd_instance *inst);
int hd_instance_signal(struct hd_instance *inst, int sig, hd_error_t *err);
int hd_instance_stats(struct hd_instance *inst, struct hd_stats *stats, hd_error_t *err);
/* Have the monitor rewrite the files of the workload's secret name from the store ("secrets NAME"). */
int hd_instance_refresh_secrets(struct hd_instance *inst, const char *name, hd_error_t *err);
/* Close fds, remove the instance dir, free. */
void hd_instance_free(struct hd_instance *inst, bool remove_dir);
/* Kill a monitor whose instance is not referenced (orphan after a crash) and remove its dir. */
void hd_instance_reap_orphan(const struct hd_daemon_config *cfg, const char *id);

/* ---- supervisor.c, upgrade.c, recover.c, metrics.c ------------------------ */

struct hd_supervisor;

/* What a supervisor operation came to. The supervisor knows nothing of HTTP: api.c alone
 * turns a result into a status code (api_status). */
enum hd_sup_result {
    HD_SUP_OK,           /* done; the body says what the workload is now */
    HD_SUP_CREATED,      /* a first deploy started its workload */
    HD_SUP_INVALID,      /* the request is malformed (a spec that does not parse or validate) */
    HD_SUP_NOT_FOUND,    /* no such workload */
    HD_SUP_CONFLICT,     /* not in this state: removing, upgrading, stopping; or the upgrade failed */
    HD_SUP_START_FAILED, /* a first deploy could not start (the body holds its exit code) */
    HD_SUP_INTERNAL,     /* hedged's own failure (the store) */
    HD_SUP_PULL_FAILED,  /* the spec's image is not stored and pulling it failed (registry, auth, not found) */
};

/* The answer to a request that may complete later (deploy waits for health). body (stolen,
 * may be NULL) is the answer; on a failure err says why (the caller keeps and frees it). */
typedef void (*hd_reply_fn)(void *ctx, enum hd_sup_result result, json_t *body, hd_error_t err);

struct hd_supervisor *hd_supervisor_new(struct hd_loop *loop, struct hd_store *store,
                                        const struct hd_daemon_config *cfg, hd_error_t *err);
void hd_supervisor_free(struct hd_supervisor *sup);
/* The broker whose users hold workload credentials (NULL: none); set before recover. */
void hd_supervisor_set_broker(struct hd_supervisor *sup, struct hd_netchild *broker);
/* Load deployments from the store and re-adopt or restart their instances. */
int hd_supervisor_recover(struct hd_supervisor *sup, hd_error_t *err);

/* Deploy a spec: a new name answers CREATED once started (START_FAILED when it cannot start,
 * and nothing is kept); an unchanged spec OK at once; a changed one OK once the upgrade is healthy,
 * CONFLICT when it failed. INVALID for a bad spec, CONFLICT while removing or upgrading. */
void hd_supervisor_deploy(struct hd_supervisor *sup, const char *body, size_t len, const char *origin,
                          double health_wait, hd_reply_fn reply, void *ctx);
/* Deploy the previous good version again, as an upgrade; CONFLICT when there is none. */
void hd_supervisor_rollback(struct hd_supervisor *sup, const char *name, double health_wait, hd_reply_fn reply,
                            void *ctx);
/* OK once the state settled (stopped; started or failed); start says CONFLICT while stopping. */
void hd_supervisor_stop(struct hd_supervisor *sup, const char *name, hd_reply_fn reply, void *ctx);
void hd_supervisor_start(struct hd_supervisor *sup, const char *name, hd_reply_fn reply, void *ctx);
/*
 * The secret name was updated in the store (`hedge secret set`): the running
 * workloads that use it get their files rewritten in place, or, with
 * "secret_update": "restart", an upgrade to their spec with the new version.
 * OK with {name, version, rewritten[], restarted[], errors{}}; never a value.
 */
void hd_supervisor_secret_updated(struct hd_supervisor *sup, const char *name, hd_reply_fn reply, void *ctx);
/* Pin the store's current version of each secret into spec (the digest covers it); -1 names a missing one. */
int hd_supervisor_pin_secrets(const struct hd_daemon_config *cfg, struct hd_spec *spec, hd_error_t *err);
/* OK once stopped and forgotten (its store rows, logs and broker user). */
void hd_supervisor_remove(struct hd_supervisor *sup, const char *name, hd_reply_fn reply, void *ctx);
/* A child of hedged was reaped (SIGCHLD): a health probe's status goes to its upgrade, a pull's to its deploy. */
void hd_supervisor_child_exited(struct hd_supervisor *sup, pid_t pid, int status);
/* Cancel every pending reply that uses ctx (the client went away). */
void hd_supervisor_forget(struct hd_supervisor *sup, void *ctx);

/* JSON views; NULL when the workload is unknown. */
json_t *hd_supervisor_list(struct hd_supervisor *sup);
json_t *hd_supervisor_get(struct hd_supervisor *sup, const char *name);
json_t *hd_supervisor_history(struct hd_supervisor *sup, const char *name);
/* Log file of a workload (caller frees), NULL when unknown. */
char *hd_supervisor_log_path(struct hd_supervisor *sup, const char *name);
bool hd_supervisor_exists(struct hd_supervisor *sup, const char *name);
/* Call fn for every deployment with its current spec (fleet_logs.c reads logs.forward). */
struct hd_spec;
void hd_supervisor_each(struct hd_supervisor *sup, void (*fn)(void *ctx, const char *name, const struct hd_spec *spec),
                        void *ctx);
/* {"state_dir", "images": [...]}: the image references deployments record (every version) and pulls
 * in progress name: what `hedge image prune` keeps. */
json_t *hd_supervisor_images_in_use(struct hd_supervisor *sup);
/* Prometheus text for the workloads; caller frees. */
char *hd_supervisor_metrics(struct hd_supervisor *sup);

/* ---- api.c ------------------------------------------------------------- */

struct hd_api;
int hd_api_start(struct hd_loop *loop, struct hd_supervisor *sup, const struct hd_daemon_config *cfg,
                 struct hd_api **out, hd_error_t *err);
void hd_api_stop(struct hd_api *api);
/* Add the network child's counters (broker, uplink) to /metrics and serve GET /v1/uplink (NULL: none). */
void hd_api_set_netchild(struct hd_api *api, struct hd_netchild *net);
/* The warm pool's part of /metrics. */
void hd_api_set_vm_pool(struct hd_api *api, struct hd_vm_pool *pool);

/* ---- vm_pool.c: restored VM clones waiting for vm deployments (docs/vm.md#the-warm-pool) ---- */

/* NULL when cfg->vm_pool is 0. The templates dir is scanned at once, then every few seconds. */
struct hd_vm_pool *hd_vm_pool_new(struct hd_loop *loop, const struct hd_daemon_config *cfg);
/* Close every waiting member (each kills its clone and exits). pool may be NULL. */
void hd_vm_pool_free(struct hd_vm_pool *pool);
/* Hand the instance (dir, start report's write end, lock) to a ready member whose template fits spec_json:
 * true when one took it (it is that instance's monitor now); false: fork a monitor as usual. */
bool hd_vm_pool_take(struct hd_vm_pool *pool, const char *spec_json, const char *dir, int report_fd, int lock_fd);
/* Prometheus text (new string; "" without a pool). */
char *hd_vm_pool_metrics_text(struct hd_vm_pool *pool);

#endif
