/*
 * cgroup.h - per-workload cgroups on cgroup v1, hybrid and v2 hosts.
 *
 * A workload's cgroup is named hedge/<id> ($HEDGE_CGROUP_PARENT replaces
 * "hedge", so test sessions running side by side never collide; "/" puts it at the top
 * of each hierarchy, for hedge-oci's one-component cgroupsPath). On v2 it is one directory under
 * the unified hierarchy; on v1 and hybrid hosts it is one directory per
 * v1 hierarchy we use (memory, cpu, cpuacct, pids, freezer), plus on hybrid
 * hosts one in /sys/fs/cgroup/unified that tracks the tasks (where it has
 * cgroup.kill, a new group uses only memory and the hierarchies its limits
 * need: docs/cgroups.md, "Which v1 hierarchies"). The two layouts
 * are backends (cgroup-v1.c, cgroup-v2.c) behind this small interface;
 * docs/cgroups.md says how each limit maps. $HEDGE_CGROUP_MODE=v1|hybrid|v2
 * overrides detection (for tests).
 */
#ifndef HEDGE_CGROUP_H
#define HEDGE_CGROUP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/error.h"
#include "spec/spec.h"

/* What a workload's cgroup says it used (the backends' stats() fill the same struct). */
struct hd_stats {
    uint64_t cpu_usage_ns;
    uint64_t memory_bytes;
    uint64_t memory_peak_bytes;
    uint64_t pids;
};

enum hd_cgroup_mode {
    HD_CGROUP_V1,     /* legacy: only v1 hierarchies */
    HD_CGROUP_HYBRID, /* v1 controllers + a v2 hierarchy at /sys/fs/cgroup/unified */
    HD_CGROUP_V2,     /* unified only */
};

struct hd_cgroup;

enum hd_cgroup_mode hd_cgroup_detect(void);
const char *hd_cgroup_mode_name(enum hd_cgroup_mode mode);

/* Create hedge/<name> with the limits applied. The group is empty. */
int hd_cgroup_create(const char *name, const struct hd_resources *res, struct hd_cgroup **out, hd_error_t *err);
/* Find the existing group hedge/<name> (another process created it) to signal or destroy it;
 * directories that are missing are made, so destroy always has a complete group. No limits. */
int hd_cgroup_open(const char *name, struct hd_cgroup **out, hd_error_t *err);
/* Kill every task in the cgroup parent (a relative path like $HEDGE_CGROUP_PARENT, not "/") and in
 * every group below it, then remove them all from every hierarchy: what an owner of the parent that
 * died (a function host killed with SIGKILL) left behind. A parent that does not exist is 0. */
int hd_cgroup_sweep(const char *parent, hd_error_t *err);
/* Free cg without touching the group (it stays for hd_cgroup_open). cg may be NULL. */
void hd_cgroup_forget(struct hd_cgroup *cg);
/* Move pid into the group (all controllers). */
int hd_cgroup_enter(struct hd_cgroup *cg, pid_t pid, hd_error_t *err);
/* On v2: an O_PATH fd of the group directory for clone3(CLONE_INTO_CGROUP); -1 on v1. */
int hd_cgroup_fd(struct hd_cgroup *cg);

/*
 * A forked child enters the group itself, off its parent's critical path.
 * Moving a process in from outside (a pid written to cgroup.procs) takes the
 * kernel's global threadgroup lock, whose first writer waits for an RCU grace
 * period: 7-14 ms per start on this 2-core host. A task moving only itself
 * ("0" written to a v1 "tasks" file) does not take that lock, and a child
 * born by clone3(CLONE_INTO_CGROUP) in the v2 (or hybrid unified) directory
 * needs no write at all. The parent opens the files before forking (so the
 * kernel checks its credentials: the child may already be in a user
 * namespace); the single-threaded child calls hd_cgroup_entry_enter first
 * thing. Either side closes its copies with hd_cgroup_entry_close.
 */
#define HD_CGROUP_ENTRY_MAX 12
struct hd_cgroup_entry {
    int clone_fd;                      /* for clone3(CLONE_INTO_CGROUP), or -1 */
    int tasks_fd[HD_CGROUP_ENTRY_MAX]; /* v1 "tasks" files, opened for writing */
    const char *tasks_dir[HD_CGROUP_ENTRY_MAX];
    int n_tasks;
};
/* Parent, before forking; cg may be NULL (an empty entry). */
int hd_cgroup_entry_open(struct hd_cgroup *cg, struct hd_cgroup_entry *e, hd_error_t *err);
/* Child, single-threaded: move itself into every v1 hierarchy and close e. 0, or -errno with
 * *failed_dir naming the directory. Only syscalls: safe after fork. */
int hd_cgroup_entry_enter(struct hd_cgroup_entry *e, const char **failed_dir);
void hd_cgroup_entry_close(struct hd_cgroup_entry *e);
/* True when the kernel OOM-killed a task of this group. */
bool hd_cgroup_oom_killed(struct hd_cgroup *cg);
int hd_cgroup_stats(struct hd_cgroup *cg, struct hd_stats *stats, hd_error_t *err);
/* SIGKILL every task still in the group (freezing it first so none escapes by forking). */
int hd_cgroup_kill_all(struct hd_cgroup *cg, hd_error_t *err);
/* Change the limits of an existing group: only those set in res (> 0) are written, the others stay. */
int hd_cgroup_update(struct hd_cgroup *cg, const struct hd_resources *res, hd_error_t *err);
/* Freeze (pause) or thaw every task of the group: v1 freezer.state, v2 cgroup.freeze; waits (2 s at
 * most) until the kernel reports the new state. */
int hd_cgroup_freeze(struct hd_cgroup *cg, bool freeze, hd_error_t *err);
/* True when the group is frozen (or freezing). */
bool hd_cgroup_frozen(struct hd_cgroup *cg);
/* Kill what remains, remove the group directories and free cg. cg may be NULL. */
int hd_cgroup_destroy(struct hd_cgroup *cg, hd_error_t *err);
/* A cpuset list as the kernel takes it: "0", "0-3", "0,2-3"; ranges ascending; nothing else. */
bool hd_cgroup_cpuset_list_valid(const char *list);
/* A hugetlb page size as the cgroup files name it: digits then KB, MB or GB ("2MB", "1GB"). */
bool hd_cgroup_hugepage_size_valid(const char *size);
/* The group's directory in the cgroup v2 hierarchy: the group on a v2 host, its unified one on a hybrid host;
 * NULL on a v1 host (or with no directory there). */
const char *hd_cgroup_unified_dir(struct hd_cgroup *cg);
/* Path of the group in the "main" hierarchy (for messages and tests). */
const char *hd_cgroup_path(struct hd_cgroup *cg);

#endif
