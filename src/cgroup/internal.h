/*
 * cgroup-internal.h - what cgroup.c shares with its two backends
 * (cgroup-v1.c for v1 and hybrid hosts, cgroup-v2.c for the unified
 * hierarchy), and the pure helpers the unit tests check.
 *
 * struct hd_cgroup is one workload's group: the list of directories it
 * created (one per v1 hierarchy, or one in the unified hierarchy) and the
 * backend that knows which files to write. cgroup.c owns the lifecycle
 * (mode choice, name, removal); a backend creates its directories, applies
 * the limits, moves tasks in, reads counters and kills what is inside.
 */
#ifndef HEDGE_CGROUP_INTERNAL_H
#define HEDGE_CGROUP_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "cgroup/cgroup.h"

/* The v1 controllers hedge uses. Order is the order of the directories. */
enum cgroup_controller {
    CGROUP_MEMORY,
    CGROUP_CPU,
    CGROUP_CPUACCT,
    CGROUP_PIDS,
    CGROUP_FREEZER,
    CGROUP_DEVICES, /* only with a device list (devices.c) or when opening an existing group */
    /* Only for the limits that need them (or when opening an existing group): */
    CGROUP_CPUSET,
    CGROUP_BLKIO,
    CGROUP_HUGETLB,
    CGROUP_N_CONTROLLERS,
};

#define CGROUP_MAX_DIRS (CGROUP_N_CONTROLLERS + 1)
#define CGROUP_CPU_PERIOD_US 100000

struct cgroup_backend {
    const char *name;
    /* Make the group's directories (recording each in cg->dirs) and apply the limits. */
    int (*create)(struct hd_cgroup *cg, const struct hd_resources *res, hd_error_t *err);
    int (*enter)(struct hd_cgroup *cg, pid_t pid, hd_error_t *err);
    bool (*oom_killed)(struct hd_cgroup *cg);
    int (*stats)(struct hd_cgroup *cg, struct hd_stats *stats, hd_error_t *err);
    int (*kill_all)(struct hd_cgroup *cg, hd_error_t *err);
    /* Write the limits that are set (> 0) in res to the existing group. */
    int (*update)(struct hd_cgroup *cg, const struct hd_resources *res, hd_error_t *err);
};

struct hd_cgroup {
    enum hd_cgroup_mode mode;
    const struct cgroup_backend *backend;
    char *name;                  /* "<parent>/<id>" */
    char *parent;                /* "<parent>" */
    char *dirs[CGROUP_MAX_DIRS]; /* every directory we created, removed in reverse order */
    int n_dirs;
    /* v1: the group directory per controller (aliases of dirs[]), NULL when not mounted. */
    const char *controller_dir[CGROUP_N_CONTROLLERS];
    /* v1: mount point of the devices hierarchy (found with the others), or NULL; for devices.c. */
    char *v1_devices_mount;
    /* hybrid: the group's directory in the unified hierarchy (alias), or NULL. */
    const char *unified_dir;
    /* v2: the group directory (alias of dirs[0]) and an O_PATH fd of it. */
    const char *v2_dir;
    int v2_fd;
    bool adopt; /* hd_cgroup_open: directories may exist already */
};

extern const struct cgroup_backend cgroup_backend_v1;
extern const struct cgroup_backend cgroup_backend_v2;

/* ---- pure helpers (unit-tested) ---- */

/* cgroup v2 cpu.weight (1..10000) to v1 cpu.shares (2..262144), as crun/OCI convert. */
uint64_t hd_cgroup_weight_to_shares(uint64_t weight);
/* CFS quota in microseconds for `cpus` CPUs per period (at least the kernel's 1 ms minimum). */
int64_t hd_cgroup_cpu_quota_us(double cpus, int64_t period_us);
/* The CFS period of res: its cpu_period_us, or the default 100000. */
int64_t hd_cgroup_cpu_period_us(const struct hd_resources *res);
/* blkio weight (10..1000, v1 and OCI) to cgroup v2 io.weight (1..10000), as runc converts. */
uint64_t hd_cgroup_blkio_weight_to_io_weight(uint64_t weight);
/* v1 memory.memsw.limit_in_bytes for res (res->memory > 0): -1 means unlimited. */
int64_t hd_cgroup_v1_memsw_limit(const struct hd_resources *res);
/* v2 memory.swap.max for res (res->memory > 0): -1 means "max". */
int64_t hd_cgroup_v2_swap_max(const struct hd_resources *res);
/* "v1" | "hybrid" | "v2" to a mode; -1 for anything else. */
int hd_cgroup_mode_parse(const char *text, enum hd_cgroup_mode *out);
/* Mode from the filesystem magic of /sys/fs/cgroup and whether /sys/fs/cgroup/unified is cgroup2. */
enum hd_cgroup_mode hd_cgroup_mode_from_fs(unsigned long root_magic, bool unified_is_cgroup2);
/*
 * Mount point of the v1 hierarchy carrying `controller`, from the text of
 * /proc/self/mountinfo; NULL when none is mounted. Co-mounted hierarchies
 * ("cpu,cpuacct") answer for each of their controllers. Caller frees.
 */
char *hd_cgroup_v1_mount_point(const char *mountinfo, const char *controller);
/* Check a cgroup parent name ("hedge", "a/b"): relative, no "." or ".." parts. */
bool hd_cgroup_parent_valid(const char *parent);

/* ---- file helpers shared by the backends (errors name the file) ---- */

int cgroup_write(const char *dir, const char *file, const char *value, hd_error_t *err);
bool cgroup_file_exists(const char *dir, const char *file);
int cgroup_read(const char *dir, const char *file, char **out, hd_error_t *err);
/* A single number ("max" reads as UINT64_MAX). */
int cgroup_read_u64(const char *dir, const char *file, uint64_t *out, hd_error_t *err);
/* The value of "key N" in a flat keyed file (memory.events, cpu.stat); -1 if key absent. */
int cgroup_read_key(const char *dir, const char *file, const char *key, uint64_t *out, hd_error_t *err);
/* Make one directory level; EEXIST is fine when may_exist. */
int cgroup_mkdir(const char *path, bool may_exist, hd_error_t *err);
/* cgroup_mkdir, making parent (and its parents) only when path's mkdir says ENOENT. */
int cgroup_mkdir_under(const char *parent, const char *path, bool may_exist, hd_error_t *err);
/* Record a directory the group owns (removed by hd_cgroup_destroy). Returns the stored copy. */
const char *cgroup_add_dir(struct hd_cgroup *cg, const char *path);
/* Send sig to every pid listed in cgroup.procs of dir and of the groups below it;
 * *n_tasks gets how many were listed. */
int cgroup_signal_tasks(const char *dir, int sig, int *n_tasks, hd_error_t *err);
/* True when no cgroup.procs of dir or below lists a task (or dir is gone). */
bool cgroup_is_empty(const char *dir);
/* Sleep a little between polls: backoff from 1 ms to 20 ms. */
void cgroup_poll_sleep(int round);
/* Where the v2 backend works: /sys/fs/cgroup on a v2 host, the unified hierarchy on a
 * hybrid one; NULL when no cgroup2 hierarchy is mounted at either place. */
const char *cgroup_v2_root(void);
/* v2 kill for kernels without cgroup.kill: freeze, SIGKILL every task, thaw (tests call it directly). */
int cgroup_v2_freeze_and_kill(const char *dir, hd_error_t *err);
/* How long kill_all waits for the killed tasks to leave the group. */
#define CGROUP_KILL_TIMEOUT_NS (5ULL * 1000000000ULL)

#endif
