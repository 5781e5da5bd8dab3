/*
 * cgroup-v1.c - the cgroup backend for v1 and hybrid hosts: one directory
 * per v1 hierarchy hedge uses (memory, cpu, cpuacct, pids, freezer), found
 * through /proc/self/mountinfo so co-mounted hierarchies ("cpu,cpuacct")
 * and separate ones both work; a controller sharing a mount with another
 * shares its directory.
 *
 * A hierarchy that is not mounted is skipped unless a limit needs it, in
 * which case creation fails naming the field. On hybrid hosts the group also
 * gets a directory in the unified (cgroup2) hierarchy: it carries no
 * controller but tracks the tasks, and its cgroup.kill ends them at once.
 * When it has cgroup.kill (Linux 5.14+), a new group is lean: memory always
 * (OOM kills and memory figures), cpu and cpuacct only for a CPU limit, pids
 * only for a task limit, no freezer; CPU time and the task count then come
 * from the unified directory. Each v1 directory costs a start a mkdir, an
 * attach and an rmdir (cpu's mkdir alone ~0.15 ms here).
 *
 * Killing on v1 freezes the freezer group first so no task forks away from
 * the SIGKILLs, sends them, then thaws so the killed tasks can die.
 * cpuset is not used, so nothing needs copying from the parent.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgroup/internal.h"
#include "base/util.h"

static const char *const controller_name[CGROUP_N_CONTROLLERS] = {
    [CGROUP_MEMORY] = "memory", [CGROUP_CPU] = "cpu",         [CGROUP_CPUACCT] = "cpuacct",
    [CGROUP_PIDS] = "pids",     [CGROUP_FREEZER] = "freezer", [CGROUP_DEVICES] = "devices",
};

/* The resources.* field that needs controller c, or NULL when no limit asks for it. */
static const char *field_needing(enum cgroup_controller c, const struct hd_resources *res)
{
    switch (c) {
    case CGROUP_MEMORY:
        return res->memory > 0 ? "resources.memory" : res->memory_swap > 0 ? "resources.memory_swap" : NULL;
    case CGROUP_CPU: return res->cpus > 0 ? "resources.cpus" : res->cpu_weight > 0 ? "resources.cpu_weight" : NULL;
    case CGROUP_PIDS: return res->pids > 0 ? "resources.pids" : NULL;
    default: return NULL;
    }
}

/*
 * Whether a lean group (hybrid, the unified directory has cgroup.kill) needs a directory in
 * controller c's hierarchy: memory for the OOM report and memory figures of every group, the
 * others only for their limits (cpuacct goes with cpu: systemd co-mounts them, and the usage
 * sits next to the quota that throttles it). The unified directory tracks and kills the tasks.
 */
static bool v1_lean_needs(enum cgroup_controller c, const struct hd_resources *res)
{
    switch (c) {
    case CGROUP_MEMORY: return true;
    case CGROUP_CPU:
    case CGROUP_CPUACCT: return res->cpus > 0 || res->cpu_weight > 0;
    case CGROUP_PIDS: return res->pids > 0;
    default: return false;
    }
}

/* hybrid: the group's directory in the unified hierarchy (best effort: it only tracks tasks). */
static void v1_make_unified_dir(struct hd_cgroup *cg)
{
    const char *unified = cgroup_v2_root();
    if (cg->mode != HD_CGROUP_HYBRID || unified == NULL)
        return;
    cleanup_free char *parent = hd_xasprintf("%s/%s", unified, cg->parent);
    cleanup_free char *group = hd_xasprintf("%s/%s", unified, cg->name);
    hd_error_t unified_err = NULL;
    if (cg->adopt ? access(group, F_OK) == 0 : cgroup_mkdir_under(parent, group, false, &unified_err) == 0)
        cg->unified_dir = cgroup_add_dir(cg, group);
    hd_error_free(&unified_err);
}

static int v1_make_dirs(struct hd_cgroup *cg, const struct hd_resources *res, hd_error_t *err)
{
    cleanup_free char *mountinfo = NULL;
    if (hd_read_file("/proc/self/mountinfo", &mountinfo, NULL, err) < 0)
        return -1;
    char *mount[CGROUP_N_CONTROLLERS] = {0};
    int rc = 0;
    for (int c = 0; c < CGROUP_N_CONTROLLERS; c++) {
        mount[c] = hd_cgroup_v1_mount_point(mountinfo, controller_name[c]);
        const char *field = field_needing(c, res);
        if (mount[c] == NULL && field) {
            rc = hd_error_set(err, 0, "%s: the %s controller is not available (no cgroup v1 hierarchy carries it)",
                              field, controller_name[c]);
            goto out;
        }
    }
    bool any_mounted = false;
    for (int c = 0; c < CGROUP_N_CONTROLLERS; c++)
        any_mounted |= mount[c] != NULL && c != CGROUP_DEVICES;
    if (!any_mounted) {
        rc = hd_error_set(err, 0, "no cgroup v1 hierarchy (memory, cpu, cpuacct, pids, freezer) is mounted");
        goto out;
    }
    /* First the unified directory: whether it can kill decides which v1 hierarchies the group needs.
     * An opened group (adopt) takes every directory its creator made and makes none: a lean group
     * opened by another process (hedge-oci state, ps, pause) must not grow directories nobody removes. */
    v1_make_unified_dir(cg);
    bool lean = !cg->adopt && cg->unified_dir && cgroup_file_exists(cg->unified_dir, "cgroup.kill");
    for (int c = 0; c < CGROUP_N_CONTROLLERS; c++) {
        /* the devices group is made by hd_cgroup_devices_apply; an opened group includes it to remove it */
        if (mount[c] == NULL || (c == CGROUP_DEVICES && !cg->adopt) || (lean && !v1_lean_needs(c, res)))
            continue;
        for (int other = 0; other < c; other++) {
            if (mount[other] && strcmp(mount[other], mount[c]) == 0)
                cg->controller_dir[c] = cg->controller_dir[other];
        }
        if (cg->controller_dir[c])
            continue;
        cleanup_free char *parent = hd_xasprintf("%s/%s", mount[c], cg->parent);
        cleanup_free char *group = hd_xasprintf("%s/%s", mount[c], cg->name);
        if (cg->adopt && access(group, F_OK) < 0)
            continue;
        if (cgroup_mkdir_under(parent, group, cg->adopt, err) < 0) {
            rc = -1;
            goto out;
        }
        cg->controller_dir[c] = cgroup_add_dir(cg, group);
    }
out:
    cg->v1_devices_mount = get_and_reset(&mount[CGROUP_DEVICES]);
    for (int c = 0; c < CGROUP_N_CONTROLLERS; c++)
        free(mount[c]);
    return rc;
}

static int v1_apply_memory(struct hd_cgroup *cg, const struct hd_resources *res, hd_error_t *err)
{
    const char *dir = cg->controller_dir[CGROUP_MEMORY];
    char value[32];
    if (res->memory <= 0)
        return 0;
    snprintf(value, sizeof(value), "%" PRId64, res->memory);
    if (cgroup_write(dir, "memory.limit_in_bytes", value, err) < 0)
        return hd_error_prefix(err, "resources.memory");
    if (cgroup_file_exists(dir, "memory.memsw.limit_in_bytes")) {
        snprintf(value, sizeof(value), "%" PRId64, hd_cgroup_v1_memsw_limit(res));
        if (cgroup_write(dir, "memory.memsw.limit_in_bytes", value, err) < 0)
            return hd_error_prefix(err, "resources.memory_swap");
        return 0;
    }
    /* No swap accounting (swapaccount=0 or no CONFIG_MEMCG_SWAP). */
    if (res->memory_swap > 0)
        return hd_error_set(err, 0,
                            "resources.memory_swap: swap accounting is off on this host "
                            "(no memory.memsw.limit_in_bytes in %s), so memory plus swap cannot be limited",
                            dir);
    if (res->memory_swap == 0 && cgroup_write(dir, "memory.swappiness", "0", err) < 0)
        return hd_error_prefix(err, "resources.memory_swap (no swap: swappiness 0)");
    return 0;
}

static int v1_apply_limits(struct hd_cgroup *cg, const struct hd_resources *res, hd_error_t *err)
{
    char value[32];
    if (v1_apply_memory(cg, res, err) < 0)
        return -1;
    const char *cpu = cg->controller_dir[CGROUP_CPU];
    if (res->cpus > 0) {
        snprintf(value, sizeof(value), "%d", CGROUP_CPU_PERIOD_US);
        if (cgroup_write(cpu, "cpu.cfs_period_us", value, err) < 0)
            return hd_error_prefix(err, "resources.cpus");
        snprintf(value, sizeof(value), "%" PRId64, hd_cgroup_cpu_quota_us(res->cpus, CGROUP_CPU_PERIOD_US));
        if (cgroup_write(cpu, "cpu.cfs_quota_us", value, err) < 0)
            return hd_error_prefix(err, "resources.cpus");
    }
    if (res->cpu_weight > 0) {
        snprintf(value, sizeof(value), "%" PRIu64, hd_cgroup_weight_to_shares((uint64_t)res->cpu_weight));
        if (cgroup_write(cpu, "cpu.shares", value, err) < 0)
            return hd_error_prefix(err, "resources.cpu_weight");
    }
    if (res->pids > 0) {
        snprintf(value, sizeof(value), "%" PRId64, res->pids);
        if (cgroup_write(cg->controller_dir[CGROUP_PIDS], "pids.max", value, err) < 0)
            return hd_error_prefix(err, "resources.pids");
    }
    return 0;
}

static int v1_create(struct hd_cgroup *cg, const struct hd_resources *res, hd_error_t *err)
{
    if (v1_make_dirs(cg, res, err) < 0)
        return -1;
    return v1_apply_limits(cg, res, err);
}

static int v1_enter(struct hd_cgroup *cg, pid_t pid, hd_error_t *err)
{
    char value[24];
    snprintf(value, sizeof(value), "%d", (int)pid);
    for (int i = 0; i < cg->n_dirs; i++) {
        if (cgroup_write(cg->dirs[i], "cgroup.procs", value, err) < 0)
            return -1;
    }
    return 0;
}

static bool v1_oom_killed(struct hd_cgroup *cg)
{
    const char *dir = cg->controller_dir[CGROUP_MEMORY];
    uint64_t kills = 0;
    hd_error_t err = NULL;
    /* "oom_kill N" is in memory.oom_control since Linux 4.13. */
    if (dir == NULL || cgroup_read_key(dir, "memory.oom_control", "oom_kill", &kills, &err) < 0) {
        hd_error_free(&err);
        return false;
    }
    return kills > 0;
}

/* Lines of a cgroup file (cgroup.threads: one per task); 0 when it cannot be read. */
static uint64_t v1_count_lines(const char *dir, const char *file)
{
    cleanup_free char *text = NULL;
    hd_error_t ignored = NULL;
    if (cgroup_read(dir, file, &text, &ignored) < 0) {
        hd_error_free(&ignored);
        return 0;
    }
    uint64_t n = 0;
    for (const char *p = text; *p; p++)
        n += *p == '\n';
    return n;
}

static int v1_stats(struct hd_cgroup *cg, struct hd_stats *stats, hd_error_t *err)
{
    const char *cpuacct = cg->controller_dir[CGROUP_CPUACCT];
    const char *memory = cg->controller_dir[CGROUP_MEMORY];
    const char *pids = cg->controller_dir[CGROUP_PIDS];
    if (cpuacct && cgroup_read_u64(cpuacct, "cpuacct.usage", &stats->cpu_usage_ns, err) < 0)
        return -1;
    if (cpuacct == NULL && cg->unified_dir) {
        /* a lean group: cgroup2 counts every group's CPU time, controller or not */
        uint64_t usec = 0;
        hd_error_t ignored = NULL;
        if (cgroup_read_key(cg->unified_dir, "cpu.stat", "usage_usec", &usec, &ignored) == 0)
            stats->cpu_usage_ns = usec * 1000;
        hd_error_free(&ignored);
    }
    if (memory &&
        (cgroup_read_u64(memory, "memory.usage_in_bytes", &stats->memory_bytes, err) < 0 ||
         cgroup_read_u64(memory, "memory.max_usage_in_bytes", &stats->memory_peak_bytes, err) < 0))
        return -1;
    if (pids && cgroup_read_u64(pids, "pids.current", &stats->pids, err) < 0)
        return -1;
    if (pids == NULL && cg->unified_dir)
        stats->pids = v1_count_lines(cg->unified_dir, "cgroup.threads");
    return 0;
}

static bool v1_all_empty(struct hd_cgroup *cg)
{
    for (int i = 0; i < cg->n_dirs; i++) {
        if (!cgroup_is_empty(cg->dirs[i]))
            return false;
    }
    return true;
}

/* SIGKILL every task in every hierarchy's group; returns how many were listed. */
static int v1_signal_all(struct hd_cgroup *cg, int *n_tasks, hd_error_t *err)
{
    int rc = 0;
    *n_tasks = 0;
    for (int i = 0; i < cg->n_dirs; i++) {
        int n = 0;
        if (cgroup_signal_tasks(cg->dirs[i], SIGKILL, &n, err) < 0)
            rc = -1;
        *n_tasks += n;
    }
    return rc;
}

/* Freeze and wait (bounded) until the freezer says FROZEN; a task stuck in the kernel may delay it. */
static int v1_freeze(const char *freezer, hd_error_t *err)
{
    if (cgroup_write(freezer, "freezer.state", "FROZEN", err) < 0)
        return -1;
    uint64_t deadline = hd_now_ns() + 1000000000ULL;
    for (int round = 0; hd_now_ns() < deadline; round++) {
        cleanup_free char *state = NULL;
        if (cgroup_read(freezer, "freezer.state", &state, err) < 0)
            return -1;
        if (strncmp(state, "FROZEN", 6) == 0)
            return 0;
        cgroup_poll_sleep(round);
    }
    return 0; /* go on: the SIGKILLs are queued and the thaw lets them land */
}

static int v1_kill_all(struct hd_cgroup *cg, hd_error_t *err)
{
    if (v1_all_empty(cg))
        return 0;
    if (cg->unified_dir && cgroup_file_exists(cg->unified_dir, "cgroup.kill") &&
        cgroup_write(cg->unified_dir, "cgroup.kill", "1", err) < 0)
        return -1;
    const char *freezer = cg->controller_dir[CGROUP_FREEZER];
    int n_tasks = 0, rc = 0;
    if (freezer && v1_freeze(freezer, err) < 0)
        rc = -1;
    if (v1_signal_all(cg, &n_tasks, err) < 0)
        rc = -1;
    if (freezer && cgroup_write(freezer, "freezer.state", "THAWED", err) < 0)
        rc = -1;
    if (rc < 0)
        return -1;
    uint64_t deadline = hd_now_ns() + CGROUP_KILL_TIMEOUT_NS;
    for (int round = 0;; round++) {
        if (v1_all_empty(cg))
            return 0;
        if (hd_now_ns() > deadline)
            break;
        cgroup_poll_sleep(round);
        /* Anything that slipped in (a fork racing the first pass without a freezer) gets its own. */
        if (round % 10 == 9 && v1_signal_all(cg, &n_tasks, err) < 0)
            return -1;
    }
    v1_signal_all(cg, &n_tasks, err);
    return hd_error_set(err, EBUSY, "%d task(s) still in the group %llu s after SIGKILL", n_tasks,
                        CGROUP_KILL_TIMEOUT_NS / 1000000000ULL);
}

/*
 * Update: a lean group (hybrid) lacks the directories of the controllers its creation did not need;
 * a new limit makes the missing ones and moves the group's tasks in (frozen meanwhile, through the
 * unified directory, so no fork slips past), then writes the limits.
 */
static int v1_join_missing(struct hd_cgroup *cg, const struct hd_resources *res, hd_error_t *err)
{
    bool missing = false;
    for (int c = 0; c < CGROUP_N_CONTROLLERS; c++)
        missing |= field_needing(c, res) != NULL && cg->controller_dir[c] == NULL;
    if (!missing)
        return 0;
    if (cg->unified_dir == NULL)
        return hd_error_set(
            err, 0, "cgroup %s: a controller directory is missing and no unified directory tracks the tasks", cg->name);
    cleanup_free char *mountinfo = NULL;
    if (hd_read_file("/proc/self/mountinfo", &mountinfo, NULL, err) < 0)
        return -1;
    bool was_frozen = hd_cgroup_frozen(cg);
    if (!was_frozen && hd_cgroup_freeze(cg, true, err) < 0)
        return -1;
    int rc = 0;
    for (int c = 0; c < CGROUP_N_CONTROLLERS && rc == 0; c++) {
        const char *field = field_needing(c, res);
        if (field == NULL || cg->controller_dir[c] != NULL)
            continue;
        cleanup_free char *mount = hd_cgroup_v1_mount_point(mountinfo, controller_name[c]);
        if (mount == NULL) {
            rc = hd_error_set(err, 0, "%s: the %s controller is not available (no cgroup v1 hierarchy carries it)",
                              field, controller_name[c]);
            break;
        }
        cleanup_free char *parent = hd_xasprintf("%s/%s", mount, cg->parent);
        cleanup_free char *group = hd_xasprintf("%s/%s", mount, cg->name);
        if (cgroup_mkdir_under(parent, group, true, err) < 0) {
            rc = -1;
            break;
        }
        cg->controller_dir[c] = cgroup_add_dir(cg, group);
        cleanup_free char *procs = NULL;
        if (cgroup_read(cg->unified_dir, "cgroup.procs", &procs, err) < 0) {
            rc = -1;
            break;
        }
        for (char *line = procs, *next; rc == 0 && line && *line; line = next) {
            next = strchr(line, '\n');
            if (next)
                *next++ = '\0';
            hd_error_t move_err = NULL;
            if (*line && cgroup_write(group, "cgroup.procs", line, &move_err) < 0 && move_err->errnum != ESRCH) {
                rc = hd_error_set(err, move_err->errnum, "%s", move_err->message);
            }
            hd_error_free(&move_err); /* ESRCH: the task ended meanwhile */
        }
    }
    hd_error_t thaw_err = NULL;
    if (!was_frozen && hd_cgroup_freeze(cg, false, rc == 0 ? err : &thaw_err) < 0)
        rc = -1;
    hd_error_free(&thaw_err);
    return rc;
}

static int v1_update(struct hd_cgroup *cg, const struct hd_resources *res, hd_error_t *err)
{
    if (v1_join_missing(cg, res, err) < 0)
        return -1;
    return v1_apply_limits(cg, res, err);
}

const struct cgroup_backend cgroup_backend_v1 = {
    .name = "v1",
    .create = v1_create,
    .enter = v1_enter,
    .oom_killed = v1_oom_killed,
    .stats = v1_stats,
    .kill_all = v1_kill_all,
    .update = v1_update,
};
