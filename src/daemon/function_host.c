/*
 * function_host.c - function deployments: a spec with a `function` block is
 * run by hedged as an ordinary workload whose command is hedge-functions
 * (src/functions/), the "function host", given the real spec in a file.
 *
 * So the supervisor's whole life cycle (restart policy, upgrade with a
 * health wait, rollback, stop/start/rm, logs, adoption after `kill -9
 * hedged`, since a monitor owns the host) applies to functions unchanged,
 * and hedged's loop never runs an invocation. (The alternative, the invoker
 * inside hedged, would map the whole runtime (libseccomp, libcap, ...) into
 * the daemon, which maps none of it on purpose, would put invocation threads
 * beside the one-thread loop, and would lose every instance and pinned state
 * at `kill -9 hedged`.) The host runs with process
 * isolation and no limits; it runs the invocations at the spec's isolation
 * level and limits, placed as hedged would place them: it inherits hedged's
 * environment (HEDGE_STATE_DIR, HEDGE_RUN_DIR, HEDGE_CGROUP_PARENT,
 * HEDGE_VM_KERNEL_DIR, ...), which the host spec also sets explicitly when
 * they are set, and gets --state-dir for images.
 *
 * Per version, <state>/functions/<name>/v<N>/ holds spec.json (what the
 * host runs), invoke.sock (`hedge invoke NAME`) and stats.json (counters and
 * latency for ps, the API and /metrics; written by the host, at most 4/s).
 * Versions have their own dirs because an upgrade's candidate runs beside
 * the current version during its health wait. `hedge rm` removes the tree.
 *
 * The host subscribes to the triggers in the shared-subscription group
 * "hedge-fn-<name>", so while an upgrade's candidate runs beside the current
 * version each request is answered once.
 *
 * Broker: the host connects as "function:<name>" (workload_creds.c) with the
 * credentials in HEDGE_MQTT_* of its own environment, which it removes before
 * starting instances. When the spec has an mqtt block, the instances get
 * "workload:<name>" through the spec file's env, like any workload.
 */
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "cgroup/cgroup.h"
#include "base/log.h"
#include "daemon/daemon.h"
#include "base/util.h"

/* hedged's environment variables that say where and how workloads run: handed on to the host. */
static const char *const placement_env[] = {
    "HEDGE_STATE_DIR",     "HEDGE_RUN_DIR",       "HEDGE_CGROUP_PARENT", "HEDGE_CGROUP_MODE",
    "HEDGE_VM_KERNEL_DIR", "HEDGE_INIT",          "HEDGE_VM_INITRD",     "HEDGE_VM_MACHINE",
    "HEDGE_BRIDGE",        "HEDGE_BRIDGE_SUBNET", "HEDGE_SECRET_KEY",
};

bool hd_function_is(const struct hd_spec *spec)
{
    return spec->function.mode != HD_FUNCTION_NONE;
}

char *hd_function_dir(const struct hd_daemon_config *cfg, const char *name, int version)
{
    if (version <= 0)
        return hd_xasprintf("%s/functions/%s", cfg->state_dir, name);
    return hd_xasprintf("%s/functions/%s/v%d", cfg->state_dir, name, version);
}

/*
 * Where a version's host puts its instances: a cgroup parent and a runtime dir of its own
 * (HEDGE_CGROUP_PARENT and HEDGE_RUN_DIR in the host's environment, with --own-placement). The host
 * sweeps both when it starts, so what a predecessor killed with SIGKILL left there (its pinned
 * instance with the instance's cgroup in every hierarchy, run dirs) goes before a new instance
 * starts, and removes both when it exits; `hedge rm` sweeps them for every version (the host may
 * have been killed last). Per version, because an upgrade's candidate runs beside the current one.
 * The defaults are the runtime's ("hedge", /run/hedge: cgroup.c, runtime/run.c), which hedged does
 * not link.
 */
static char *function_cgroup_parent(const char *name, int version)
{
    const char *parent = getenv("HEDGE_CGROUP_PARENT");
    if (parent == NULL || *parent == '\0')
        parent = "hedge";
    if (strcmp(parent, "/") == 0)
        return hd_xasprintf("hedge-fn-%s-v%d", name, version);
    return hd_xasprintf("%s/fn-%s-v%d", parent, name, version);
}

static char *function_run_dir(const char *name, int version)
{
    const char *run = getenv("HEDGE_RUN_DIR");
    if (version <= 0)
        return hd_xasprintf("%s/functions/%s", run && *run ? run : "/run/hedge", name);
    return hd_xasprintf("%s/functions/%s/v%d", run && *run ? run : "/run/hedge", name, version);
}

/* hedge-functions beside hedged (a build dir, or the install's bindir), else in PATH. */
static char *function_host_exe(void)
{
    char *path = hd_program_sibling("hedge-functions");
    return path ? path : hd_xstrdup("hedge-functions");
}

/*
 * `hedge invoke NAME` for members of the API socket's group, without root: the CLI asks the API for the
 * invoke socket and connects to it, so functions/, functions/NAME and its version dir become
 * group-searchable (0710: no listing) and the host makes invoke.sock 0660 in that group (it takes the
 * group of its dir, src/functions/local.c). spec.json stays 0600: it may hold instance credentials.
 * (The state dir itself must be searchable: the package makes /var/lib/hedge 0711.)
 */
static int function_dirs_share(const struct hd_daemon_config *cfg, const char *name, int version, hd_error_t *err)
{
    if (!cfg->socket_group)
        return 0;
    struct group *g = getgrnam(cfg->socket_group);
    if (g == NULL)
        return hd_error_set(err, 0, "socket_group: group \"%s\" does not exist", cfg->socket_group);
    char *dirs[] = {hd_xasprintf("%s/functions", cfg->state_dir), hd_function_dir(cfg, name, 0),
                    hd_function_dir(cfg, name, version)};
    int r = 0;
    for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
        if (r == 0 && (chown(dirs[i], (uid_t)-1, g->gr_gid) < 0 || chmod(dirs[i], 0710) < 0))
            r = hd_error_sys(err, "%s: share with group %s", dirs[i], cfg->socket_group);
        free(dirs[i]);
    }
    return r;
}

char *hd_function_host_spec(struct hd_netchild *b, const struct hd_daemon_config *cfg, const char *name, int version,
                            const struct hd_spec *spec, hd_error_t *err)
{
    cleanup_free char *dir = hd_function_dir(cfg, name, version);
    cleanup_free char *spec_path = hd_xasprintf("%s/spec.json", dir);
    if (hd_mkdir_p(dir, 0700, err) < 0)
        return NULL;
    /* the real spec, with instance credentials only when it asks for broker access itself */
    cleanup_free char *inner = NULL;
    if (spec->mqtt.publish || spec->mqtt.subscribe) {
        inner = hd_creds_grant(b, cfg, name, spec, err);
        if (inner == NULL) {
            hd_error_prefix(err, "MQTT credentials");
            return NULL;
        }
    } else {
        hd_creds_revoke(b, name); /* drops a "workload:" user of an earlier version (and the host's, re-added below) */
        inner = hd_spec_to_json(spec);
    }
    if (hd_write_file_atomic(spec_path, inner, strlen(inner), err) < 0)
        return NULL;
    if (chmod(spec_path, 0600) < 0) {
        hd_error_sys(err, "%s", spec_path);
        return NULL;
    }
    if (function_dirs_share(cfg, name, version, err) < 0)
        return NULL;

    cleanup_free char *exe = function_host_exe();
    json_t *env = json_object();
    for (size_t i = 0; i < ARRAY_SIZE(placement_env); i++)
        if (getenv(placement_env[i]))
            json_object_set_new(env, placement_env[i], json_string(getenv(placement_env[i])));
    json_object_set_new(env, "HEDGE_STATE_DIR", json_string(cfg->state_dir));
    cleanup_free char *instances_cgroup = function_cgroup_parent(name, version);
    cleanup_free char *instances_run_dir = function_run_dir(name, version);
    json_object_set_new(env, "HEDGE_CGROUP_PARENT", json_string(instances_cgroup));
    json_object_set_new(env, "HEDGE_RUN_DIR", json_string(instances_run_dir));
    if (b) {
        cleanup_free char *user = NULL, *password = NULL;
        if (hd_creds_function_host(b, cfg, name, spec, &user, &password, err) < 0) {
            json_decref(env);
            hd_error_prefix(err, "MQTT credentials for the function host");
            return NULL;
        }
        hd_creds_env(env, b, cfg, user, password);
    }
    /* one share group per function: during an upgrade each request reaches one version, not both */
    cleanup_free char *group = hd_xasprintf("hedge-fn-%s", name);
    json_t *host = json_pack("{s:s,s:s,s:[s,s,s,s,s,s,s,s,s,s],s:o}", "name", name, "isolation", "process", "command",
                             exe, "--spec", spec_path, "--state-dir", cfg->state_dir, "--local", dir, "--share", group,
                             "--own-placement", "env", env);
    char *text = json_dumps(host, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(host);
    if (text == NULL)
        abort();
    return text;
}

int hd_function_restore(struct hd_netchild *b, const struct hd_daemon_config *cfg, const char *name,
                        const struct hd_spec *spec, hd_error_t *err)
{
    if (b == NULL)
        return 0;
    if ((spec->mqtt.publish || spec->mqtt.subscribe) && hd_creds_restore(b, cfg, name, spec, err) < 0)
        return -1;
    cleanup_free char *user = NULL, *password = NULL;
    return hd_creds_function_host(b, cfg, name, spec, &user, &password, err);
}

json_t *hd_function_json(const struct hd_daemon_config *cfg, const char *name, int version, const struct hd_spec *spec,
                         bool running)
{
    cleanup_free char *dir = hd_function_dir(cfg, name, version);
    cleanup_free char *stats_path = hd_xasprintf("%s/stats.json", dir);
    json_t *stats = json_load_file(stats_path, 0, NULL);
    json_t *o =
        json_pack("{s:s,s:i}", "mode", hd_function_mode_name(spec->function.mode), "triggers", spec->n_triggers);
    json_object_set_new(o, "socket", running ? json_sprintf("%s/invoke.sock", dir) : json_null());
    static const char *const counters[] = {"invocations", "errors", "timeouts", "rejected", "restarts"};
    for (size_t i = 0; i < ARRAY_SIZE(counters); i++) {
        json_t *v = json_object_get(stats, counters[i]);
        json_object_set_new(o, counters[i], json_integer(json_is_integer(v) ? json_integer_value(v) : 0));
    }
    /* no latency before the first result */
    bool any = json_integer_value(json_object_get(o, "invocations")) > 0;
    json_t *p50 = json_object_get(stats, "p50_ms"), *p99 = json_object_get(stats, "p99_ms");
    json_object_set_new(o, "p50_ms", any && json_is_number(p50) ? json_real(json_number_value(p50)) : json_null());
    json_object_set_new(o, "p99_ms", any && json_is_number(p99) ? json_real(json_number_value(p99)) : json_null());
    json_decref(stats);
    return o;
}

void hd_function_forget(const struct hd_daemon_config *cfg, const char *name)
{
    cleanup_free char *dir = hd_function_dir(cfg, name, 0);
    hd_error_t err = NULL;
    /* every version's instance placement (function_cgroup_parent): a host killed last left it */
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        char tail;
        int version;
        if (sscanf(e->d_name, "v%d%c", &version, &tail) != 1 || version <= 0)
            continue;
        cleanup_free char *parent = function_cgroup_parent(name, version);
        if (hd_cgroup_sweep(parent, &err) < 0) {
            hd_log_error(HD_LOG_WARN, "functions", &err);
        }
    }
    if (d)
        closedir(d);
    cleanup_free char *run_dir = function_run_dir(name, 0);
    if (hd_rm_rf(run_dir, &err) < 0) {
        hd_log_error(HD_LOG_WARN, "functions", &err);
    }
    if (hd_rm_rf(dir, &err) < 0) {
        hd_log_error(HD_LOG_WARN, "functions", &err);
    }
}
