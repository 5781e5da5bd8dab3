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
 * cpuset, blkio and hugetlb directories are made only for the limits that
 * need them (hedge-oci's linux.resources.cpu.cpus/mems, blockIO,
 * hugepageLimits). A new cpuset directory starts with empty cpuset.cpus and
 * cpuset.mems, and no task can enter it so: each level hedge made is filled
 * from the level above before the group's own lists are written.
 */
#include <errno.h>
#include <stddef.h>
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
    [CGROUP_CPUSET] = "cpuset", [CGROUP_BLKIO] = "blkio",     [CGROUP_HUGETLB] = "hugetlb",
};

/* The field name of each throttle list, and its v1 file. */
static const char *const throttle_field[HD_THROTTLE_N] = {
    [HD_THROTTLE_READ_BPS] = "resources.blkio.throttle_read_bps_device",
    [HD_THROTTLE_WRITE_BPS] = "resources.blkio.throttle_write_bps_device",
    [HD_THROTTLE_READ_IOPS] = "resources.blkio.throttle_read_iops_device",
    [HD_THROTTLE_WRITE_IOPS] = "resources.blkio.throttle_write_iops_device",
};
static const char *const throttle_file[HD_THROTTLE_N] = {
    [HD_THROTTLE_READ_BPS] = "blkio.throttle.read_bps_device",
    [HD_THROTTLE_WRITE_BPS] = "blkio.throttle.write_bps_device",
    [HD_THROTTLE_READ_IOPS] = "blkio.throttle.read_iops_device",
    [HD_THROTTLE_WRITE_IOPS] = "blkio.throttle.write_iops_device",
};

/* The first blkio field set in res, or NULL. */
static const char *blkio_field(const struct hd_resources *res)
{
    const struct hd_blkio *b = &res->blkio;
    if (b->weight > 0)
        return "resources.blkio.weight";
    if (b->leaf_weight > 0)
        return "resources.blkio.leaf_weight";
    if (b->n_weight_device > 0)
        return "resources.blkio.weight_device";
    for (int t = 0; t < HD_THROTTLE_N; t++)
        if (b->n_throttle[t] > 0)
            return throttle_field[t];
    return NULL;
}

/* The resources.* field that needs controller c, or NULL when no limit asks for it. */
static const char *field_needing(enum cgroup_controller c, const struct hd_resources *res)
{
    switch (c) {
    case CGROUP_MEMORY:
        return res->memory > 0            ? "resources.memory"
            : res->memory_swap > 0        ? "resources.memory_swap"
            : res->memory_reservation > 0 ? "resources.memory_reservation"
            : res->swappiness_set         ? "resources.swappiness"
            : res->disable_oom_killer     ? "resources.disable_oom_killer"
                                          : NULL;
    case CGROUP_CPU:
        return res->cpus > 0             ? "resources.cpus"
            : res->cpu_weight > 0        ? "resources.cpu_weight"
            : res->cpu_period_us > 0     ? "resources.cpu_period"
            : res->cpu_rt_period_us > 0  ? "resources.cpu_rt_period"
            : res->cpu_rt_runtime_us > 0 ? "resources.cpu_rt_runtime"
                                         : NULL;
    case CGROUP_PIDS: return res->pids > 0 ? "resources.pids" : NULL;
    case CGROUP_CPUSET:
        return res->cpuset_cpus[0] ? "resources.cpuset_cpus" : res->cpuset_mems[0] ? "resources.cpuset_mems" : NULL;
    case CGROUP_BLKIO: return blkio_field(res);
    case CGROUP_HUGETLB: return res->n_hugepage > 0 ? "resources.hugepage_limits" : NULL;
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
    case CGROUP_CPUACCT: return field_needing(CGROUP_CPU, res) != NULL;
    case CGROUP_DEVICES:
    case CGROUP_FREEZER: return false;
    default: return field_needing(c, res) != NULL;
    }
}

/* A directory made only for a limit (cpuset, blkio, hugetlb), never by default. */
static bool v1_only_for_limits(enum cgroup_controller c)
{
    return c == CGROUP_CPUSET || c == CGROUP_BLKIO || c == CGROUP_HUGETLB;
}

/* Is this cpuset file of dir empty (a new cpuset directory's cpus and mems are)? */
static int cpuset_is_empty(const char *dir, const char *file, bool *empty, hd_error_t *err)
{
    cleanup_free char *text = NULL;
    if (cgroup_read(dir, file, &text, err) < 0)
        return -1;
    *empty = text[strspn(text, " \n")] == '\0';
    return 0;
}

/*
 * cpuset: fill every level from below the mount point down to group whose cpuset.cpus or
 * cpuset.mems is empty with its parent's, so a task may enter (the kernel refuses one into an
 * empty cpuset with ENOSPC). The group's own lists are written afterwards by the limits.
 */
static int v1_cpuset_fill(const char *mount, const char *group_name, hd_error_t *err)
{
    cleanup_free char *dir = hd_xstrdup(mount);
    cleanup_free char *parts = hd_xstrdup(group_name);
    char *save = NULL;
    for (char *part = strtok_r(parts, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
        char *next = hd_xasprintf("%s/%s", dir, part);
        for (const char *const *file = (const char *const[]){"cpuset.cpus", "cpuset.mems", NULL}; *file; file++) {
            bool empty = false;
            cleanup_free char *value = NULL;
            if (cpuset_is_empty(next, *file, &empty, err) < 0 ||
                (empty && (cgroup_read(dir, *file, &value, err) < 0 || cgroup_write(next, *file, value, err) < 0))) {
                free(next);
                return -1;
            }
        }
        free(dir);
        dir = next;
    }
    return 0;
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
        if (mount[c] == NULL || (c == CGROUP_DEVICES && !cg->adopt) || (lean && !v1_lean_needs(c, res)) ||
            (v1_only_for_limits(c) && !cg->adopt && field_needing(c, res) == NULL))
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
        if (c == CGROUP_CPUSET && !cg->adopt && v1_cpuset_fill(mount[c], cg->name, err) < 0) {
            rc = hd_error_prefix(err, "%s", field_needing(c, res));
            goto out;
        }
    }
out:
    cg->v1_devices_mount = get_and_reset(&mount[CGROUP_DEVICES]);
    for (int c = 0; c < CGROUP_N_CONTROLLERS; c++)
        free(mount[c]);
    return rc;
}

/* The memory controller's settings beside the limit (hedge-oci's linux.resources.memory). */
static int v1_apply_memory_extras(const char *dir, const struct hd_resources *res, hd_error_t *err)
{
    char value[32];
    if (res->memory_reservation > 0) {
        snprintf(value, sizeof(value), "%" PRId64, res->memory_reservation);
        if (cgroup_write(dir, "memory.soft_limit_in_bytes", value, err) < 0)
            return hd_error_prefix(err, "resources.memory_reservation");
    }
    if (res->swappiness_set) {
        snprintf(value, sizeof(value), "%d", res->swappiness);
        if (cgroup_write(dir, "memory.swappiness", value, err) < 0)
            return hd_error_prefix(err, "resources.swappiness");
    }
    if (res->disable_oom_killer && cgroup_write(dir, "memory.oom_control", "1", err) < 0)
        return hd_error_prefix(err, "resources.disable_oom_killer");
    return 0;
}

static int v1_apply_memory(struct hd_cgroup *cg, const struct hd_resources *res, hd_error_t *err)
{
    const char *dir = cg->controller_dir[CGROUP_MEMORY];
    char value[32];
    if (dir && v1_apply_memory_extras(dir, res, err) < 0)
        return -1;
    if (res->memory <= 0)
        return 0;
    snprintf(value, sizeof(value), "%" PRId64, res->memory);
    bool memsw = cgroup_file_exists(dir, "memory.memsw.limit_in_bytes");
    char memsw_value[32];
    snprintf(memsw_value, sizeof(memsw_value), "%" PRId64, hd_cgroup_v1_memsw_limit(res));
    if (cgroup_write(dir, "memory.limit_in_bytes", value, err) < 0) {
        /* the kernel keeps limit <= memory+swap: a limit raised past the group's memsw (an update) can
         * only follow it, so memsw goes first then */
        if (!memsw || !*err || (*err)->errnum != EINVAL)
            return hd_error_prefix(err, "resources.memory");
        hd_error_free(err);
        if (cgroup_write(dir, "memory.memsw.limit_in_bytes", memsw_value, err) < 0)
            return hd_error_prefix(err, "resources.memory_swap");
        if (cgroup_write(dir, "memory.limit_in_bytes", value, err) < 0)
            return hd_error_prefix(err, "resources.memory");
        return 0;
    }
    if (memsw) {
        if (cgroup_write(dir, "memory.memsw.limit_in_bytes", memsw_value, err) < 0)
            return hd_error_prefix(err, "resources.memory_swap");
        return 0;
    }
    /* No swap accounting (swapaccount=0 or no CONFIG_MEMCG_SWAP). */
    if (res->memory_swap > 0)
        return hd_error_set(err, 0,
                            "resources.memory_swap: swap accounting is off on this host "
                            "(no memory.memsw.limit_in_bytes in %s), so memory plus swap cannot be limited",
                            dir);
    if (res->memory_swap == 0 && !res->swappiness_set && cgroup_write(dir, "memory.swappiness", "0", err) < 0)
        return hd_error_prefix(err, "resources.memory_swap (no swap: swappiness 0)");
    return 0;
}

/* Write a number to dir/file, or say which field needs the file when the kernel lacks it. */
static int write_i64(const char *dir, const char *file, int64_t n, const char *field, hd_error_t *err)
{
    char value[32];
    if (!cgroup_file_exists(dir, file))
        return hd_error_set(err, 0, "%s: this kernel's %s has no %s", field, dir, file);
    snprintf(value, sizeof(value), "%" PRId64, n);
    if (cgroup_write(dir, file, value, err) < 0)
        return hd_error_prefix(err, "%s", field);
    return 0;
}

/* cpu.cfs_period_us and cfs_quota_us (cpus), then the real-time period and runtime (runc's order). */
static int v1_apply_cpu_time(const char *cpu, const struct hd_resources *res, hd_error_t *err)
{
    int64_t period = hd_cgroup_cpu_period_us(res);
    if ((res->cpus > 0 || res->cpu_period_us > 0) &&
        write_i64(cpu, "cpu.cfs_period_us", period, res->cpus > 0 ? "resources.cpus" : "resources.cpu_period", err) < 0)
        return -1;
    if (res->cpus > 0 &&
        write_i64(cpu, "cpu.cfs_quota_us", hd_cgroup_cpu_quota_us(res->cpus, period), "resources.cpus", err) < 0)
        return -1;
    if (res->cpu_rt_period_us > 0 &&
        write_i64(cpu, "cpu.rt_period_us", res->cpu_rt_period_us, "resources.cpu_rt_period", err) < 0)
        return -1;
    if (res->cpu_rt_runtime_us > 0 &&
        write_i64(cpu, "cpu.rt_runtime_us", res->cpu_rt_runtime_us, "resources.cpu_rt_runtime", err) < 0)
        return -1;
    return 0;
}

/* cpuset.cpus / cpuset.mems; a list outside the parent's is named with the parent's list. */
static int v1_apply_cpuset(const char *dir, const struct hd_resources *res, hd_error_t *err)
{
    static const struct {
        const char *file, *field;
        size_t offset;
    } lists[] = {
        {"cpuset.cpus", "resources.cpuset_cpus", offsetof(struct hd_resources, cpuset_cpus)},
        {"cpuset.mems", "resources.cpuset_mems", offsetof(struct hd_resources, cpuset_mems)},
    };
    for (size_t i = 0; i < ARRAY_SIZE(lists); i++) {
        const char *value = (const char *)res + lists[i].offset;
        if (value[0] == '\0')
            continue;
        hd_error_t write_err = NULL;
        if (cgroup_write(dir, lists[i].file, value, &write_err) == 0)
            continue;
        cleanup_free char *parent_dir = hd_xstrdup(dir);
        char *slash = strrchr(parent_dir, '/');
        if (slash)
            *slash = '\0';
        cleanup_free char *allowed = NULL;
        hd_error_t read_err = NULL;
        if (write_err->errnum == EINVAL && cgroup_read(parent_dir, lists[i].file, &allowed, &read_err) == 0) {
            allowed[strcspn(allowed, "\n")] = '\0';
            hd_error_set(err, EINVAL, "%s: \"%s\" is not within the parent cgroup's %s (%s)", lists[i].field, value,
                         lists[i].file, allowed);
        } else {
            hd_error_set(err, write_err->errnum, "%s: %s", lists[i].field, write_err->message);
        }
        hd_error_free(&write_err);
        hd_error_free(&read_err);
        return -1;
    }
    return 0;
}

/* Write "MAJOR:MINOR VALUE" lines to dir/file (one write each, as the kernel wants). */
static int write_devices(const char *dir, const char *file, const struct hd_blkio_device *devs, int n, bool leaf,
                         const char *field, hd_error_t *err)
{
    for (int i = 0; i < n; i++) {
        int64_t v = leaf ? devs[i].leaf_weight : devs[i].value;
        if (v <= 0)
            continue;
        if (!cgroup_file_exists(dir, file))
            return hd_error_set(err, 0, "%s: this host's blkio controller has no %s (%s)", field, file, dir);
        char line[96];
        snprintf(line, sizeof(line), "%" PRId64 ":%" PRId64 " %" PRId64, devs[i].major, devs[i].minor, v);
        if (cgroup_write(dir, file, line, err) < 0)
            return hd_error_prefix(err, "%s[%d] (device %" PRId64 ":%" PRId64 ")", field, i, devs[i].major,
                                   devs[i].minor);
    }
    return 0;
}

/* blkio: weights (CFQ's blkio.weight, else BFQ's blkio.bfq.weight), then the throttles. */
static int v1_apply_blkio(const char *dir, const struct hd_resources *res, hd_error_t *err)
{
    const struct hd_blkio *b = &res->blkio;
    bool bfq = !cgroup_file_exists(dir, "blkio.weight") && cgroup_file_exists(dir, "blkio.bfq.weight");
    const char *weight_file = bfq ? "blkio.bfq.weight" : "blkio.weight";
    if (b->weight > 0 && !cgroup_file_exists(dir, weight_file))
        return hd_error_set(err, 0,
                            "resources.blkio.weight: this host's blkio controller has no blkio.weight or "
                            "blkio.bfq.weight (no disk uses the CFQ or BFQ I/O scheduler)");
    if (b->weight > 0 && write_i64(dir, weight_file, b->weight, "resources.blkio.weight", err) < 0)
        return -1;
    if (b->leaf_weight > 0 &&
        write_i64(dir, "blkio.leaf_weight", b->leaf_weight, "resources.blkio.leaf_weight", err) < 0)
        return -1;
    if (write_devices(dir, bfq ? "blkio.bfq.weight_device" : "blkio.weight_device", b->weight_device,
                      b->n_weight_device, false, "resources.blkio.weight_device", err) < 0 ||
        write_devices(dir, "blkio.leaf_weight_device", b->weight_device, b->n_weight_device, true,
                      "resources.blkio.weight_device", err) < 0)
        return -1;
    for (int t = 0; t < HD_THROTTLE_N; t++)
        if (write_devices(dir, throttle_file[t], b->throttle[t], b->n_throttle[t], false, throttle_field[t], err) < 0)
            return -1;
    return 0;
}

static int v1_apply_hugetlb(const char *dir, const struct hd_resources *res, hd_error_t *err)
{
    for (int i = 0; i < res->n_hugepage; i++) {
        cleanup_free char *file = hd_xasprintf("hugetlb.%s.limit_in_bytes", res->hugepage[i].size);
        cleanup_free char *field = hd_xasprintf("resources.hugepage_limits[%d]", i);
        if (!cgroup_file_exists(dir, file))
            return hd_error_set(err, 0, "%s: the host has no %s huge pages (no %s)", field, res->hugepage[i].size,
                                file);
        if (write_i64(dir, file, res->hugepage[i].limit, field, err) < 0)
            return -1;
    }
    return 0;
}

static int v1_apply_limits(struct hd_cgroup *cg, const struct hd_resources *res, hd_error_t *err)
{
    char value[32];
    if (v1_apply_memory(cg, res, err) < 0)
        return -1;
    const char *cpu = cg->controller_dir[CGROUP_CPU];
    if (field_needing(CGROUP_CPU, res) && v1_apply_cpu_time(cpu, res, err) < 0)
        return -1;
    if (field_needing(CGROUP_CPUSET, res) && v1_apply_cpuset(cg->controller_dir[CGROUP_CPUSET], res, err) < 0)
        return -1;
    if (field_needing(CGROUP_BLKIO, res) && v1_apply_blkio(cg->controller_dir[CGROUP_BLKIO], res, err) < 0)
        return -1;
    if (res->n_hugepage > 0 && v1_apply_hugetlb(cg->controller_dir[CGROUP_HUGETLB], res, err) < 0)
        return -1;
    if (res->cpu_weight > 0) {
        uint64_t shares =
            res->cpu_shares > 0 ? (uint64_t)res->cpu_shares : hd_cgroup_weight_to_shares((uint64_t)res->cpu_weight);
        snprintf(value, sizeof(value), "%" PRIu64, shares);
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
    /* the tasks to move: the unified directory's (hybrid) or, on v1, those of the group's first directory */
    const char *tasks_dir = cg->unified_dir ? cg->unified_dir : cg->n_dirs > 0 ? cg->dirs[0] : NULL;
    if (tasks_dir == NULL)
        return hd_error_set(err, 0, "cgroup %s: the group has no directory listing its tasks", cg->name);
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
        if (c == CGROUP_CPUSET && v1_cpuset_fill(mount, cg->name, err) < 0) {
            rc = hd_error_prefix(err, "%s", field);
            break;
        }
        cleanup_free char *procs = NULL;
        if (cgroup_read(tasks_dir, "cgroup.procs", &procs, err) < 0) {
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
