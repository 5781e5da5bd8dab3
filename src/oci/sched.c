/*
 * sched.c - process.ioPriority and process.scheduler of config.json (and of exec --process): parsed into the
 * config (errors name the field) and applied in the container's process before its filter and exec, in the
 * first process's hook and in exec's set-up, as runc applies them (ioprio_set(2), sched_setattr(2)). And
 * process.execCPUAffinity, which the runtime-spec keeps for exec'd processes: `initial` is hedge-oci's own
 * affinity while it starts the process (inherited until the process joins the cgroup), `final` the process's
 * after it joined; without `final` the process may run on any CPU of its cgroup (runc's reset). And
 * linux.memoryPolicy: set_mempolicy(2) in the process with the mode, nodes and flags (inherited across exec).
 */
#include "oci/oci.h"

#include <errno.h>
#include <stdlib.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/util.h"
#include "cgroup/cgroup.h"

enum { IOPRIO_WHO_PROCESS = 1, IOPRIO_CLASS_SHIFT = 13 };

/* sched_setattr(2)'s argument (the first fields: the size says which). */
struct sched_attr_v1 {
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime;
    uint64_t sched_deadline;
    uint64_t sched_period;
};

static const struct {
    const char *name;
    int value;
} io_classes[] = {{"IOPRIO_CLASS_RT", 1}, {"IOPRIO_CLASS_BE", 2}, {"IOPRIO_CLASS_IDLE", 3}};

static const struct {
    const char *name;
    int value;
} policies[] = {{"SCHED_OTHER", 0}, {"SCHED_FIFO", 1}, {"SCHED_RR", 2},      {"SCHED_BATCH", 3},
                {"SCHED_ISO", 4},   {"SCHED_IDLE", 5}, {"SCHED_DEADLINE", 6}};

static const struct oci_flag_name sched_flags[] = {
    {"SCHED_FLAG_RESET_ON_FORK", 0x01},  {"SCHED_FLAG_RECLAIM", 0x02},     {"SCHED_FLAG_DL_OVERRUN", 0x04},
    {"SCHED_FLAG_KEEP_POLICY", 0x08},    {"SCHED_FLAG_KEEP_PARAMS", 0x10}, {"SCHED_FLAG_UTIL_CLAMP_MIN", 0x20},
    {"SCHED_FLAG_UTIL_CLAMP_MAX", 0x40},
};

int oci_flags_parse(json_t *arr, const char *path, const char *what, const struct oci_flag_name *table, size_t n,
                    unsigned long *out, hd_error_t *err)
{
    if (arr != NULL && !json_is_null(arr) && !json_is_array(arr))
        return hd_error_set(err, 0, "%s: not an array", path);
    size_t i;
    json_t *f;
    json_array_foreach(arr, i, f)
    {
        const char *name = json_is_string(f) ? json_string_value(f) : "";
        size_t j = 0;
        while (j < n && strcmp(table[j].name, name) != 0)
            j++;
        if (j == n)
            return hd_error_set(err, 0, "%s[%zu]: \"%s\" is not a flag of %s", path, i, name, what);
        *out |= table[j].value;
    }
    return 0;
}

static int parse_io_priority(json_t *io, struct oci_config *cfg, hd_error_t *err)
{
    if (!json_is_object(io))
        return hd_error_set(err, 0, "process.ioPriority: not an object");
    const char *cls = json_string_value(json_object_get(io, "class"));
    size_t k = 0;
    while (k < ARRAY_SIZE(io_classes) && !(cls && strcmp(cls, io_classes[k].name) == 0))
        k++;
    if (k == ARRAY_SIZE(io_classes))
        return hd_error_set(err, 0, "process.ioPriority.class: \"%s\" is not IOPRIO_CLASS_RT, _BE or _IDLE",
                            cls ? cls : "");
    json_t *prio = json_object_get(io, "priority");
    if (prio && (!json_is_integer(prio) || json_integer_value(prio) < 0 || json_integer_value(prio) > 7))
        return hd_error_set(err, 0, "process.ioPriority.priority: not an integer from 0 to 7");
    cfg->io_priority = (io_classes[k].value << IOPRIO_CLASS_SHIFT) | (int)(prio ? json_integer_value(prio) : 0);
    cfg->have_io_priority = true;
    return 0;
}

/* A non-negative integer field of process.scheduler (absent: 0). */
static int sched_u64(json_t *s, const char *key, uint64_t *out, hd_error_t *err)
{
    json_t *v = json_object_get(s, key);
    if (v && (!json_is_integer(v) || json_integer_value(v) < 0))
        return hd_error_set(err, 0, "process.scheduler.%s: not a non-negative integer", key);
    *out = v ? (uint64_t)json_integer_value(v) : 0;
    return 0;
}

static int parse_scheduler(json_t *s, struct oci_config *cfg, hd_error_t *err)
{
    if (!json_is_object(s))
        return hd_error_set(err, 0, "process.scheduler: not an object");
    const char *policy = json_string_value(json_object_get(s, "policy"));
    size_t k = 0;
    while (k < ARRAY_SIZE(policies) && !(policy && strcmp(policy, policies[k].name) == 0))
        k++;
    if (k == ARRAY_SIZE(policies))
        return hd_error_set(err, 0, "process.scheduler.policy: \"%s\" is not a scheduling policy",
                            policy ? policy : "");
    struct oci_sched *o = &cfg->sched;
    *o = (struct oci_sched){.policy = (unsigned)policies[k].value};
    json_t *nice = json_object_get(s, "nice"), *prio = json_object_get(s, "priority");
    if (nice && (!json_is_integer(nice) || json_integer_value(nice) < -20 || json_integer_value(nice) > 19))
        return hd_error_set(err, 0, "process.scheduler.nice: not an integer from -20 to 19");
    if (prio && (!json_is_integer(prio) || json_integer_value(prio) < 0 || json_integer_value(prio) > 99))
        return hd_error_set(err, 0, "process.scheduler.priority: not an integer from 0 to 99");
    o->nice = nice ? (int)json_integer_value(nice) : 0;
    o->priority = prio ? (unsigned)json_integer_value(prio) : 0;
    bool realtime = o->policy == 1 || o->policy == 2;
    if (realtime && o->priority == 0)
        return hd_error_set(err, 0, "process.scheduler.priority: %s needs a priority from 1 to 99", policy);
    if (!realtime && o->priority != 0)
        return hd_error_set(err, 0, "process.scheduler.priority: only for SCHED_FIFO and SCHED_RR");
    if (sched_u64(s, "runtime", &o->runtime, err) < 0 || sched_u64(s, "deadline", &o->deadline, err) < 0 ||
        sched_u64(s, "period", &o->period, err) < 0)
        return -1;
    unsigned long flags = 0;
    if (oci_flags_parse(json_object_get(s, "flags"), "process.scheduler.flags", "sched_setattr(2)", sched_flags,
                        ARRAY_SIZE(sched_flags), &flags, err) < 0)
        return -1;
    o->flags |= flags;
    cfg->have_sched = true;
    return 0;
}

/* A cpu list ("0-3,5") of process.execCPUAffinity.key into *out (NULL when absent). */
static int parse_affinity(json_t *aff, const char *key, char **out, hd_error_t *err)
{
    free(*out);
    *out = NULL;
    json_t *v = json_object_get(aff, key);
    if (v == NULL || json_is_null(v))
        return 0;
    const char *list = json_string_value(v);
    if (list == NULL || !hd_cgroup_cpuset_list_valid(list))
        return hd_error_set(err, 0, "process.execCPUAffinity.%s: not a CPU list like 0-3,5", key);
    for (const char *p = list; *p;) { /* every number within what sched_setaffinity takes */
        char *end = NULL;
        if (strtoul(p, &end, 10) >= CPU_SETSIZE)
            return hd_error_set(err, 0, "process.execCPUAffinity.%s: CPU numbers go up to %d", key, CPU_SETSIZE - 1);
        p = *end ? end + 1 : end;
    }
    *out = hd_xstrdup(list);
    return 0;
}

static void cpu_list_to_set(const char *list, cpu_set_t *set)
{
    CPU_ZERO(set);
    for (const char *p = list; *p;) {
        char *end = NULL;
        unsigned long first = strtoul(p, &end, 10), last = first;
        if (*end == '-')
            last = strtoul(end + 1, &end, 10);
        for (unsigned long c = first; c <= last; c++)
            CPU_SET(c, set);
        p = *end ? end + 1 : end;
    }
}

int oci_affinity_initial(const struct oci_config *cfg, hd_error_t *err)
{
    if (cfg->affinity_initial == NULL)
        return 0;
    cpu_set_t set;
    cpu_list_to_set(cfg->affinity_initial, &set);
    if (sched_setaffinity(0, sizeof(set), &set) < 0)
        return hd_error_sys(err, "process.execCPUAffinity.initial: sched_setaffinity %s", cfg->affinity_initial);
    return 0;
}

int oci_affinity_final(const struct oci_config *cfg, hd_error_t *err)
{
    if (cfg->affinity_initial == NULL && cfg->affinity_final == NULL)
        return 0;
    cpu_set_t set;
    if (cfg->affinity_final) {
        cpu_list_to_set(cfg->affinity_final, &set);
    } else {
        CPU_ZERO(&set);
        for (int c = 0; c < CPU_SETSIZE; c++)
            CPU_SET(c, &set); /* the kernel keeps the cgroup's CPUs of them */
    }
    if (sched_setaffinity(0, sizeof(set), &set) < 0)
        return hd_error_sys(err, "process.execCPUAffinity.final: sched_setaffinity %s",
                            cfg->affinity_final ? cfg->affinity_final : "(the cgroup's CPUs)");
    return 0;
}

static const struct {
    const char *name;
    int value;
} mpol_modes[] = {{"MPOL_DEFAULT", 0},
                  {"MPOL_PREFERRED", 1},
                  {"MPOL_BIND", 2},
                  {"MPOL_INTERLEAVE", 3},
                  {"MPOL_LOCAL", 4},
                  {"MPOL_PREFERRED_MANY", 5},
                  {"MPOL_WEIGHTED_INTERLEAVE", 6}};

static const struct oci_flag_name mpol_flags[] = {
    {"MPOL_F_NUMA_BALANCING", 1 << 13}, {"MPOL_F_RELATIVE_NODES", 1 << 14}, {"MPOL_F_STATIC_NODES", 1 << 15}};

enum { MPOL_NODES_MAX = 1024 };

int oci_memory_policy_parse(json_t *lx, struct oci_config *cfg, hd_error_t *err)
{
    json_t *mp = json_object_get(lx, "memoryPolicy");
    if (mp == NULL || json_is_null(mp))
        return 0;
    if (!json_is_object(mp))
        return hd_error_set(err, 0, "linux.memoryPolicy: not an object");
    const char *mode = json_string_value(json_object_get(mp, "mode"));
    size_t k = 0;
    while (k < ARRAY_SIZE(mpol_modes) && !(mode && strcmp(mode, mpol_modes[k].name) == 0))
        k++;
    if (k == ARRAY_SIZE(mpol_modes))
        return hd_error_set(err, 0, "linux.memoryPolicy.mode: \"%s\" is not a mode of set_mempolicy(2)",
                            mode ? mode : "");
    cfg->mpol_mode = mpol_modes[k].value;
    json_t *nodes = json_object_get(mp, "nodes");
    const char *list = json_string_value(nodes);
    bool no_nodes = cfg->mpol_mode == 0 || cfg->mpol_mode == 4; /* default, local */
    if (nodes && !json_is_null(nodes) && list == NULL)
        return hd_error_set(err, 0, "linux.memoryPolicy.nodes: not a string");
    if (no_nodes && list && *list)
        return hd_error_set(err, 0, "linux.memoryPolicy.nodes: %s takes no nodes", mode);
    if (!no_nodes && (list == NULL || !hd_cgroup_cpuset_list_valid(list)))
        return hd_error_set(err, 0, "linux.memoryPolicy.nodes: %s needs a node list like 0-1,3", mode);
    memset(cfg->mpol_nodes, 0, sizeof(cfg->mpol_nodes));
    for (const char *p = no_nodes ? "" : list; *p;) {
        char *end = NULL;
        unsigned long first = strtoul(p, &end, 10), last = first;
        if (*end == '-')
            last = strtoul(end + 1, &end, 10);
        if (last >= MPOL_NODES_MAX)
            return hd_error_set(err, 0, "linux.memoryPolicy.nodes: node numbers go up to %d", MPOL_NODES_MAX - 1);
        for (unsigned long n = first; n <= last; n++)
            cfg->mpol_nodes[n / (8 * sizeof(unsigned long))] |= 1UL << (n % (8 * sizeof(unsigned long)));
        p = *end ? end + 1 : end;
    }
    unsigned long flags = 0;
    if (oci_flags_parse(json_object_get(mp, "flags"), "linux.memoryPolicy.flags", "set_mempolicy(2)", mpol_flags,
                        ARRAY_SIZE(mpol_flags), &flags, err) < 0)
        return -1;
    cfg->mpol_mode |= (int)flags;
    cfg->have_mpol = true;
    return 0;
}

int oci_sched_parse(json_t *proc, struct oci_config *cfg, hd_error_t *err)
{
    cfg->have_io_priority = false;
    cfg->have_sched = false;
    json_t *aff = json_object_get(proc, "execCPUAffinity");
    if (aff && !json_is_null(aff) && !json_is_object(aff))
        return hd_error_set(err, 0, "process.execCPUAffinity: not an object");
    if (parse_affinity(aff, "initial", &cfg->affinity_initial, err) < 0 ||
        parse_affinity(aff, "final", &cfg->affinity_final, err) < 0)
        return -1;
    json_t *io = json_object_get(proc, "ioPriority");
    json_t *s = json_object_get(proc, "scheduler");
    if (io && !json_is_null(io) && parse_io_priority(io, cfg, err) < 0)
        return -1;
    if (s && !json_is_null(s) && parse_scheduler(s, cfg, err) < 0)
        return -1;
    return 0;
}

int oci_sched_apply(const struct oci_config *cfg, hd_error_t *err)
{
    if (cfg->have_mpol &&
        syscall(SYS_set_mempolicy, cfg->mpol_mode, cfg->mpol_nodes, (unsigned long)MPOL_NODES_MAX + 1) < 0)
        return hd_error_sys(err, "linux.memoryPolicy: set_mempolicy");
    if (cfg->have_io_priority && syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, cfg->io_priority) < 0)
        return hd_error_sys(err, "process.ioPriority: ioprio_set");
    if (cfg->have_sched) {
        const struct oci_sched *o = &cfg->sched;
        struct sched_attr_v1 attr = {
            .size = sizeof(attr),
            .sched_policy = o->policy,
            .sched_flags = o->flags,
            .sched_nice = o->nice,
            .sched_priority = o->priority,
            .sched_runtime = o->runtime,
            .sched_deadline = o->deadline,
            .sched_period = o->period,
        };
        if (syscall(SYS_sched_setattr, 0, &attr, 0) < 0)
            return hd_error_sys(err, "process.scheduler: sched_setattr");
    }
    return 0;
}
