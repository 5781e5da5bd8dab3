/*
 * cgroup-v2.c - the cgroup backend for the unified hierarchy: one directory,
 * <root>/<parent>/<id>, where root is /sys/fs/cgroup on a v2 host (or the
 * unified hierarchy at /sys/fs/cgroup/unified when v2 is forced on a hybrid
 * host for tests; see cgroup.c).
 *
 * Controllers must be enabled in cgroup.subtree_control of every level above
 * the group. hedge enables the ones its limits need (an absent one is an
 * error naming the field and the hierarchy) plus memory, cpu and pids when
 * the hierarchy has them, for OOM reporting and stats. It never enables a
 * controller that no limit needs and the hierarchy lacks, so a group without
 * limits works on any cgroup2 mount.
 *
 * Killing uses cgroup.kill (Linux 5.14+), which kills every task of the
 * group and its descendants at once; on older kernels, cgroup.freeze, a
 * SIGKILL per task, and a thaw.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cgroup/internal.h"
#include "base/util.h"

/* memory, cpu and pids are enabled whenever the hierarchy has them; the others only for their limits. */
enum v2_controller { V2_MEMORY, V2_CPU, V2_PIDS, V2_CPUSET, V2_IO, V2_HUGETLB, V2_N_CONTROLLERS };

static const char *const v2_controller_name[V2_N_CONTROLLERS] = {
    [V2_MEMORY] = "memory", [V2_CPU] = "cpu", [V2_PIDS] = "pids",
    [V2_CPUSET] = "cpuset", [V2_IO] = "io",   [V2_HUGETLB] = "hugetlb",
};

static const char *const throttle_field[HD_THROTTLE_N] = {
    "resources.blkio.throttle_read_bps_device", "resources.blkio.throttle_write_bps_device",
    "resources.blkio.throttle_read_iops_device", "resources.blkio.throttle_write_iops_device"};

static const char *v2_io_field(const struct hd_resources *res)
{
    if (res->blkio.weight > 0)
        return "resources.blkio.weight";
    if (res->blkio.leaf_weight > 0)
        return "resources.blkio.leaf_weight";
    if (res->blkio.n_weight_device > 0)
        return "resources.blkio.weight_device";
    for (int t = 0; t < HD_THROTTLE_N; t++)
        if (res->blkio.n_throttle[t] > 0)
            return throttle_field[t];
    return NULL;
}

static const char *v2_field_needing(enum v2_controller c, const struct hd_resources *res)
{
    switch (c) {
    case V2_MEMORY:
        return res->memory > 0            ? "resources.memory"
            : res->memory_swap > 0        ? "resources.memory_swap"
            : res->memory_reservation > 0 ? "resources.memory_reservation"
                                          : NULL;
    case V2_CPU:
        return res->cpus > 0         ? "resources.cpus"
            : res->cpu_weight > 0    ? "resources.cpu_weight"
            : res->cpu_period_us > 0 ? "resources.cpu_period"
                                     : NULL;
    case V2_PIDS: return res->pids > 0 ? "resources.pids" : NULL;
    case V2_CPUSET:
        return res->cpuset_cpus[0] ? "resources.cpuset_cpus" : res->cpuset_mems[0] ? "resources.cpuset_mems" : NULL;
    case V2_IO: return v2_io_field(res);
    case V2_HUGETLB: return res->n_hugepage > 0 ? "resources.hugepage_limits" : NULL;
    default: return NULL;
    }
}

/* Is word one of the space-separated words of a cgroup.controllers / subtree_control text? */
static bool word_listed(const char *text, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = text; (p = strstr(p, word)) != NULL; p += n) {
        bool starts = p == text || p[-1] == ' ';
        bool ends = p[n] == '\0' || p[n] == ' ' || p[n] == '\n';
        if (starts && ends)
            return true;
    }
    return false;
}

/*
 * Enable the wanted controllers in dir/cgroup.subtree_control. A required
 * controller that cannot be enabled is an error; an optional one is dropped
 * from *wanted.
 */
static int v2_enable_controllers(const char *dir, bool wanted[V2_N_CONTROLLERS], const bool required[V2_N_CONTROLLERS],
                                 hd_error_t *err)
{
    cleanup_free char *enabled = NULL;
    if (cgroup_read(dir, "cgroup.subtree_control", &enabled, err) < 0)
        return -1;
    for (int c = 0; c < V2_N_CONTROLLERS; c++) {
        if (!wanted[c] || word_listed(enabled, v2_controller_name[c]))
            continue;
        cleanup_free char *plus = hd_xasprintf("+%s", v2_controller_name[c]);
        if (required[c]) {
            if (cgroup_write(dir, "cgroup.subtree_control", plus, err) < 0)
                return -1;
            continue;
        }
        hd_error_t optional_err = NULL;
        if (cgroup_write(dir, "cgroup.subtree_control", plus, &optional_err) < 0) {
            hd_error_free(&optional_err);
            wanted[c] = false;
        }
    }
    return 0;
}

/* Enable the controllers res needs (and the default ones present) from root down to the group's parent. */
static int v2_enable_along(struct hd_cgroup *cg, const char *root, const struct hd_resources *res, hd_error_t *err)
{
    cleanup_free char *available = NULL;
    if (cgroup_read(root, "cgroup.controllers", &available, err) < 0)
        return -1;
    bool wanted[V2_N_CONTROLLERS], required[V2_N_CONTROLLERS];
    for (int c = 0; c < V2_N_CONTROLLERS; c++) {
        const char *field = v2_field_needing(c, res);
        bool present = word_listed(available, v2_controller_name[c]);
        if (field && !present)
            return hd_error_set(err, 0, "%s: the %s controller is not available in the cgroup2 hierarchy %s", field,
                                v2_controller_name[c], root);
        required[c] = field != NULL;
        wanted[c] = present && (c <= V2_PIDS || required[c]);
    }
    /* Walk down from the root: enable, then make the next level. */
    cleanup_free char *dir = hd_xstrdup(root);
    cleanup_free char *parts = hd_xstrdup(cg->parent);
    char *save = NULL;
    for (char *part = strtok_r(parts, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
        if (v2_enable_controllers(dir, wanted, required, err) < 0)
            return -1;
        char *next = hd_xasprintf("%s/%s", dir, part);
        free(dir);
        dir = next;
        if (cgroup_mkdir(dir, true, err) < 0)
            return -1;
    }
    return v2_enable_controllers(dir, wanted, required, err);
}

static int v2_make_dir(struct hd_cgroup *cg, const char *root, const struct hd_resources *res, hd_error_t *err)
{
    if (v2_enable_along(cg, root, res, err) < 0)
        return -1;
    cleanup_free char *group = hd_xasprintf("%s/%s", root, cg->name);
    if (cgroup_mkdir(group, cg->adopt, err) < 0)
        return -1;
    cg->v2_dir = cgroup_add_dir(cg, group);
    return 0;
}

static int v2_apply_cpuset(const char *dir, const struct hd_resources *res, hd_error_t *err)
{
    if (res->cpuset_cpus[0] && cgroup_write(dir, "cpuset.cpus", res->cpuset_cpus, err) < 0)
        return hd_error_prefix(err,
                               "resources.cpuset_cpus: \"%s\" (is every CPU in the parent's cpuset.cpus.effective?)",
                               res->cpuset_cpus);
    if (res->cpuset_mems[0] && cgroup_write(dir, "cpuset.mems", res->cpuset_mems, err) < 0)
        return hd_error_prefix(err, "resources.cpuset_mems: \"%s\"", res->cpuset_mems);
    return 0;
}

/* io.weight ("default N", then "MAJOR:MINOR N" per device) and io.max (one line per device). */
static int v2_apply_io(const char *dir, const struct hd_resources *res, hd_error_t *err)
{
    static const char *const io_max_key[HD_THROTTLE_N] = {"rbps", "wbps", "riops", "wiops"};
    const struct hd_blkio *b = &res->blkio;
    char line[96];
    if (b->leaf_weight > 0)
        return hd_error_set(err, 0, "resources.blkio.leaf_weight: cgroup v2 has no leaf weight");
    if ((b->weight > 0 || b->n_weight_device > 0) && !cgroup_file_exists(dir, "io.weight"))
        return hd_error_set(err, 0, "resources.blkio.weight: no io.weight in %s (the I/O scheduler is not BFQ)", dir);
    if (b->weight > 0) {
        snprintf(line, sizeof(line), "default %" PRIu64, hd_cgroup_blkio_weight_to_io_weight((uint64_t)b->weight));
        if (cgroup_write(dir, "io.weight", line, err) < 0)
            return hd_error_prefix(err, "resources.blkio.weight");
    }
    for (int i = 0; i < b->n_weight_device; i++) {
        const struct hd_blkio_device *d = &b->weight_device[i];
        if (d->leaf_weight > 0)
            return hd_error_set(err, 0, "resources.blkio.weight_device[%d].leafWeight: cgroup v2 has no leaf weight",
                                i);
        if (d->value <= 0)
            continue;
        snprintf(line, sizeof(line), "%" PRId64 ":%" PRId64 " %" PRIu64, d->major, d->minor,
                 hd_cgroup_blkio_weight_to_io_weight((uint64_t)d->value));
        if (cgroup_write(dir, "io.weight", line, err) < 0)
            return hd_error_prefix(err, "resources.blkio.weight_device[%d]", i);
    }
    for (int t = 0; t < HD_THROTTLE_N; t++)
        for (int i = 0; i < b->n_throttle[t]; i++) {
            const struct hd_blkio_device *d = &b->throttle[t][i];
            snprintf(line, sizeof(line), "%" PRId64 ":%" PRId64 " %s=%" PRId64, d->major, d->minor, io_max_key[t],
                     d->value);
            if (cgroup_write(dir, "io.max", line, err) < 0)
                return hd_error_prefix(err, "%s[%d] (device %" PRId64 ":%" PRId64 ")", throttle_field[t], i, d->major,
                                       d->minor);
        }
    return 0;
}

static int v2_apply_hugetlb(const char *dir, const struct hd_resources *res, hd_error_t *err)
{
    char value[32];
    for (int i = 0; i < res->n_hugepage; i++) {
        cleanup_free char *file = hd_xasprintf("hugetlb.%s.max", res->hugepage[i].size);
        if (!cgroup_file_exists(dir, file))
            return hd_error_set(err, 0, "resources.hugepage_limits[%d]: the host has no %s huge pages (no %s)", i,
                                res->hugepage[i].size, file);
        snprintf(value, sizeof(value), "%" PRId64, res->hugepage[i].limit);
        if (cgroup_write(dir, file, value, err) < 0)
            return hd_error_prefix(err, "resources.hugepage_limits[%d]", i);
    }
    return 0;
}

static int v2_apply_limits(const char *dir, const struct hd_resources *res, hd_error_t *err)
{
    char value[48];
    if (res->swappiness_set)
        return hd_error_set(err, 0, "resources.swappiness: cgroup v2 has no per-group swappiness");
    if (res->disable_oom_killer)
        return hd_error_set(err, 0, "resources.disable_oom_killer: cgroup v2 cannot turn the OOM killer off");
    if (res->memory_reservation > 0) {
        snprintf(value, sizeof(value), "%" PRId64, res->memory_reservation);
        if (cgroup_write(dir, "memory.low", value, err) < 0)
            return hd_error_prefix(err, "resources.memory_reservation");
    }
    if (res->memory > 0) {
        snprintf(value, sizeof(value), "%" PRId64, res->memory);
        if (cgroup_write(dir, "memory.max", value, err) < 0)
            return hd_error_prefix(err, "resources.memory");
        int64_t swap = hd_cgroup_v2_swap_max(res);
        if (cgroup_file_exists(dir, "memory.swap.max")) {
            if (swap < 0)
                snprintf(value, sizeof(value), "max");
            else
                snprintf(value, sizeof(value), "%" PRId64, swap);
            if (cgroup_write(dir, "memory.swap.max", value, err) < 0)
                return hd_error_prefix(err, "resources.memory_swap");
        } else if (res->memory_swap > 0) {
            return hd_error_set(err, 0,
                                "resources.memory_swap: swap accounting is off on this host "
                                "(no memory.swap.max in %s), so memory plus swap cannot be limited",
                                dir);
        }
    }
    int64_t period = hd_cgroup_cpu_period_us(res);
    if (res->cpus > 0) {
        snprintf(value, sizeof(value), "%" PRId64 " %" PRId64, hd_cgroup_cpu_quota_us(res->cpus, period), period);
        if (cgroup_write(dir, "cpu.max", value, err) < 0)
            return hd_error_prefix(err, "resources.cpus");
    } else if (res->cpu_period_us > 0) {
        snprintf(value, sizeof(value), "max %" PRId64, period);
        if (cgroup_write(dir, "cpu.max", value, err) < 0)
            return hd_error_prefix(err, "resources.cpu_period");
    }
    if (res->cpu_rt_period_us > 0 || res->cpu_rt_runtime_us > 0)
        return hd_error_set(err, 0, "resources.cpu_rt_%s: cgroup v2 has no real-time group scheduling",
                            res->cpu_rt_period_us > 0 ? "period" : "runtime");
    if (v2_apply_cpuset(dir, res, err) < 0 || v2_apply_io(dir, res, err) < 0 || v2_apply_hugetlb(dir, res, err) < 0)
        return -1;
    if (res->cpu_weight > 0) {
        snprintf(value, sizeof(value), "%" PRId64, res->cpu_weight);
        if (cgroup_write(dir, "cpu.weight", value, err) < 0)
            return hd_error_prefix(err, "resources.cpu_weight");
    }
    if (res->pids > 0) {
        snprintf(value, sizeof(value), "%" PRId64, res->pids);
        if (cgroup_write(dir, "pids.max", value, err) < 0)
            return hd_error_prefix(err, "resources.pids");
    }
    return 0;
}

static int v2_update(struct hd_cgroup *cg, const struct hd_resources *res, hd_error_t *err)
{
    const char *root = cgroup_v2_root();
    if (root && v2_enable_along(cg, root, res, err) < 0) /* a limit the creation did not need */
        return -1;
    return v2_apply_limits(cg->v2_dir, res, err);
}

static int v2_create(struct hd_cgroup *cg, const struct hd_resources *res, hd_error_t *err)
{
    const char *root = cgroup_v2_root();
    if (root == NULL)
        return hd_error_set(err, 0, "no cgroup2 hierarchy is mounted at /sys/fs/cgroup or /sys/fs/cgroup/unified");
    if (v2_make_dir(cg, root, res, err) < 0 || v2_apply_limits(cg->v2_dir, res, err) < 0)
        return -1;
    cg->v2_fd = open(cg->v2_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (cg->v2_fd < 0)
        return hd_error_sys(err, "open %s", cg->v2_dir);
    return 0;
}

static int v2_enter(struct hd_cgroup *cg, pid_t pid, hd_error_t *err)
{
    char value[24];
    snprintf(value, sizeof(value), "%d", (int)pid);
    return cgroup_write(cg->v2_dir, "cgroup.procs", value, err);
}

static bool v2_oom_killed(struct hd_cgroup *cg)
{
    uint64_t kills = 0;
    hd_error_t err = NULL;
    if (cgroup_read_key(cg->v2_dir, "memory.events", "oom_kill", &kills, &err) < 0) {
        hd_error_free(&err); /* no memory controller here: no OOM kill to report */
        return false;
    }
    return kills > 0;
}

/* Read a counter that exists only with its controller enabled: absent reads as 0. */
static int v2_read_optional(const char *dir, const char *file, uint64_t *out, hd_error_t *err)
{
    if (!cgroup_file_exists(dir, file)) {
        *out = 0;
        return 0;
    }
    return cgroup_read_u64(dir, file, out, err);
}

static int v2_stats(struct hd_cgroup *cg, struct hd_stats *stats, hd_error_t *err)
{
    uint64_t usec = 0;
    if (cgroup_read_key(cg->v2_dir, "cpu.stat", "usage_usec", &usec, err) < 0)
        return -1;
    stats->cpu_usage_ns = usec * 1000;
    if (v2_read_optional(cg->v2_dir, "memory.current", &stats->memory_bytes, err) < 0 ||
        v2_read_optional(cg->v2_dir, "memory.peak", &stats->memory_peak_bytes, err) < 0 ||
        v2_read_optional(cg->v2_dir, "pids.current", &stats->pids, err) < 0)
        return -1;
    return 0;
}

/* "populated 0" in cgroup.events: no task in the group or below (a removed group is empty too). */
static bool v2_is_empty(const char *dir)
{
    uint64_t populated = 1;
    hd_error_t err = NULL;
    if (cgroup_read_key(dir, "cgroup.events", "populated", &populated, &err) < 0) {
        bool gone = err->errnum == ENOENT || err->errnum == ENODEV;
        hd_error_free(&err);
        return gone;
    }
    return populated == 0;
}

/* Without cgroup.kill (before Linux 5.14): freeze, SIGKILL each task, thaw. */
int cgroup_v2_freeze_and_kill(const char *dir, hd_error_t *err)
{
    int n_tasks = 0, rc = 0;
    if (cgroup_write(dir, "cgroup.freeze", "1", err) < 0)
        return -1;
    uint64_t deadline = hd_now_ns() + 1000000000ULL;
    for (int round = 0; hd_now_ns() < deadline; round++) {
        uint64_t frozen = 0;
        hd_error_t read_err = NULL;
        if (cgroup_read_key(dir, "cgroup.events", "frozen", &frozen, &read_err) < 0 || frozen) {
            hd_error_free(&read_err);
            break;
        }
        cgroup_poll_sleep(round);
    }
    if (cgroup_signal_tasks(dir, SIGKILL, &n_tasks, err) < 0)
        rc = -1;
    if (cgroup_write(dir, "cgroup.freeze", "0", err) < 0)
        rc = -1;
    return rc;
}

static int v2_kill_all(struct hd_cgroup *cg, hd_error_t *err)
{
    const char *dir = cg->v2_dir;
    if (v2_is_empty(dir))
        return 0;
    bool has_kill = cgroup_file_exists(dir, "cgroup.kill");
    if (has_kill ? cgroup_write(dir, "cgroup.kill", "1", err) < 0 : cgroup_v2_freeze_and_kill(dir, err) < 0)
        return -1;
    uint64_t deadline = hd_now_ns() + CGROUP_KILL_TIMEOUT_NS;
    int n_tasks = 0;
    for (int round = 0;; round++) {
        if (v2_is_empty(dir))
            return 0;
        if (hd_now_ns() > deadline)
            break;
        cgroup_poll_sleep(round);
        if (round % 10 == 9 && cgroup_signal_tasks(dir, SIGKILL, &n_tasks, err) < 0)
            return -1;
    }
    cgroup_signal_tasks(dir, SIGKILL, &n_tasks, err);
    return hd_error_set(err, EBUSY, "%d task(s) still in %s %llu s after SIGKILL", n_tasks, dir,
                        CGROUP_KILL_TIMEOUT_NS / 1000000000ULL);
}

const struct cgroup_backend cgroup_backend_v2 = {
    .name = "v2",
    .create = v2_create,
    .enter = v2_enter,
    .oom_killed = v2_oom_killed,
    .stats = v2_stats,
    .kill_all = v2_kill_all,
    .update = v2_update,
};
