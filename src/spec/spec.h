/*
 * spec.h - the workload spec: one description of a workload that runs under
 * any isolation level (design.md §2). The JSON spec and the CLI flags both
 * fill this structure; hd_spec_validate() then checks it against the chosen
 * isolation level, so a field a level cannot honour is an error, never
 * silently ignored.
 */
#ifndef HEDGE_SPEC_H
#define HEDGE_SPEC_H

#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"

enum hd_isolation {
    HD_ISOLATION_PROCESS = 0,
    HD_ISOLATION_CONTAINER,
    HD_ISOLATION_VM,
};

enum hd_net_mode {
    HD_NET_DEFAULT = 0, /* not set: process → host, container/vm → none */
    HD_NET_NONE,
    HD_NET_HOST,
    HD_NET_BRIDGE,
};

enum hd_restart_policy {
    HD_RESTART_NEVER = 0,
    HD_RESTART_ON_FAILURE,
    HD_RESTART_ALWAYS,
};

struct hd_mount {
    char *source; /* absolute host path */
    char *target; /* absolute path inside the workload */
    bool readonly;
};

struct hd_trigger {
    char *topic;
};

/* A host device node given to the workload (devices[]; docs/spec.md#devices). */
struct hd_device {
    char *path;          /* absolute host path of a character or block device */
    char *target;        /* absolute path inside the workload; NULL = path */
    char permissions[4]; /* the cgroup access: a subset of "rwm", in that order; "" = "rwm" */
};

/* A device cgroup rule for a class of devices (device_rules[]): allow TYPE MAJOR:MINOR ACCESS. */
struct hd_device_class {
    char type;      /* 'a' (every device), 'b' block, 'c' char */
    int64_t major;  /* -1 = "*" (any) */
    int64_t minor;  /* -1 = "*" */
    char access[4]; /* a subset of "rwm", in that order */
};

/* hd_resources' cpuset and block I/O parts (hedge-oci's linux.resources.cpu.cpus/mems, blockIO,
 * hugepageLimits): inline arrays, so a struct hd_resources copies by value with nothing to free. */
#define HD_CPUSET_MAX 256
#define HD_BLKIO_DEVICES_MAX 16
#define HD_HUGEPAGE_SIZES_MAX 8

/* One blockIO device entry: a weight (10..1000) or a rate (bytes or I/O operations per second). */
struct hd_blkio_device {
    int64_t major, minor;
    int64_t value;       /* weight, or rate; weightDevice entries may leave it 0 (unset) */
    int64_t leaf_weight; /* weightDevice only (v1 CFQ); 0 = unset */
};

enum hd_blkio_throttle {
    HD_THROTTLE_READ_BPS,
    HD_THROTTLE_WRITE_BPS,
    HD_THROTTLE_READ_IOPS,
    HD_THROTTLE_WRITE_IOPS,
    HD_THROTTLE_N,
};

struct hd_blkio {
    int64_t weight;      /* 10..1000; 0 = unset */
    int64_t leaf_weight; /* 10..1000 (v1 CFQ only); 0 = unset */
    struct hd_blkio_device weight_device[HD_BLKIO_DEVICES_MAX];
    int n_weight_device;
    struct hd_blkio_device throttle[HD_THROTTLE_N][HD_BLKIO_DEVICES_MAX];
    int n_throttle[HD_THROTTLE_N];
};

struct hd_hugepage_limit {
    char size[16]; /* "2MB", "1GB": the page size as the cgroup files name it */
    int64_t limit; /* bytes */
};

/* Unset numeric limits are 0 (memory, swap, pids, weight) or 0.0 (cpus); unset strings are "". */
struct hd_resources {
    int64_t memory;      /* bytes; 0 = unlimited */
    int64_t memory_swap; /* bytes of memory+swap; 0 = same as memory (no swap), -1 = unlimited */
    double cpus;         /* CPUs of quota; 0 = unlimited */
    int64_t cpu_weight;  /* 1..10000 (cgroup v2 scale); 0 = default */
    int64_t pids;        /* max tasks; 0 = unlimited */
    /* Set by hedge-oci only (linux.resources.memory), not by hedge's spec: */
    int64_t memory_reservation; /* bytes of soft limit (v1 soft_limit_in_bytes, v2 memory.low); 0 = none */
    bool swappiness_set;        /* memory.swappiness (v1 only) */
    int swappiness;
    bool disable_oom_killer;   /* v1 memory.oom_control */
    int64_t cpu_shares;        /* v1 cpu.shares as given (linux.resources.cpu.shares); 0 = from cpu_weight */
    int64_t cpu_period_us;     /* CFS period for cpus; 0 = 100000 */
    int64_t cpu_rt_period_us;  /* v1 cpu.rt_period_us; 0 = unset */
    int64_t cpu_rt_runtime_us; /* v1 cpu.rt_runtime_us; 0 = unset */
    /* cpuset: CPU and memory node lists ("0-1,3"); "" = the parent's */
    char cpuset_cpus[HD_CPUSET_MAX];
    char cpuset_mems[HD_CPUSET_MAX];
    struct hd_blkio blkio;
    struct hd_hugepage_limit hugepage[HD_HUGEPAGE_SIZES_MAX];
    int n_hugepage;
};

struct hd_security {
    char *seccomp;  /* "default" (NULL means default), "unconfined", or a path to a JSON profile */
    char **cap_add; /* "CAP_NET_ADMIN" style names, NULL-terminated; "ALL" allowed */
    char **cap_drop;
    bool no_new_privs; /* default true */
};

struct hd_restart {
    enum hd_restart_policy policy;
    int max_retries; /* 0 = unlimited (for on-failure) */
};

/* The `function` block: how triggers invoke the workload (src/functions/). */
enum hd_function_mode {
    HD_FUNCTION_NONE = 0,  /* no function block: not a function */
    HD_FUNCTION_ON_DEMAND, /* one run-to-completion per invocation: payload on stdin, result on stdout */
    HD_FUNCTION_PINNED,    /* one long-lived instance: length-prefixed events on stdin/stdout */
};

struct hd_function {
    enum hd_function_mode mode;
    int64_t timeout_ms;      /* per invocation; default 10000 */
    int max_concurrency;     /* on-demand instances at once; default 1 (pinned: always 1) */
    int64_t idle_timeout_ms; /* on-demand: warm instances kept this long; default 60000 */
    char *reply_topic;       /* NULL: the MQTT 5 response topic, else "<topic>/reply" */
    int max_queue;           /* invocations waiting for an instance; default 100; beyond: error event */
};

/* When hedged counts a new version as healthy during an upgrade (daemon only). */
struct hd_health {
    char **command; /* run on the host until it exits 0; NULL = "keeps running for wait seconds" */
    double wait;    /* seconds to wait (the deadline, with a command); 0 = the daemon's default */
};

/* The `mqtt` block: topic filters the workload's broker credentials allow (daemon only). */
struct hd_mqtt_access {
    char **publish;   /* filters it may publish to; NULL = none */
    char **subscribe; /* filters it may subscribe to (triggers[].topic count too) */
};

/* One entry of `secrets`: a stored secret delivered as a file (docs/spec.md, "secrets"). */
struct hd_secret_ref {
    char *name;            /* the secret in the node's store (src/secret) */
    char *target;          /* absolute path of the file; a process finds it under $HEDGE_SECRETS_DIR */
    uint32_t mode;         /* file mode; 0 (not given) = 0400 */
    uint32_t uid, gid;     /* file owner inside the workload, when given */
    bool uid_set, gid_set; /* not given: the workload's numeric user and group, else 0 */
    char *env;             /* also exported as this variable, only when given; NULL = file only */
    uint64_t version;      /* the store's version when hedged deployed it (the digest covers it); 0 = not recorded */
};

/* What a running workload does when one of its secrets is updated. */
enum hd_secret_update {
    HD_SECRET_UPDATE_REWRITE = 0, /* its files are replaced in place (rename); default */
    HD_SECRET_UPDATE_RESTART,     /* it is restarted and starts with the new value */
};

/* The `logs` block: the workload's log forwarded to the fleet's logs topic (docs/fleet.md, "Log forwarding";
 * hedged with a fleet section only). The limits are per minute; 0 = the default. */
#define HD_LOGS_LINES_PER_MINUTE 600
#define HD_LOGS_BYTES_PER_MINUTE 65536
#define HD_LOGS_LINES_PER_MINUTE_MAX 100000
#define HD_LOGS_BYTES_PER_MINUTE_MIN 1024
#define HD_LOGS_BYTES_PER_MINUTE_MAX 1048576
struct hd_logs {
    bool forward;
    int64_t lines_per_minute; /* 0 = HD_LOGS_LINES_PER_MINUTE */
    int64_t bytes_per_minute; /* 0 = HD_LOGS_BYTES_PER_MINUTE */
};

struct hd_user_namespace {
    bool enabled;
    uint32_t uid_base; /* host uid that maps to 0 inside */
    uint32_t gid_base;
    uint32_t size; /* number of ids mapped */
};

struct hd_spec {
    char *name;
    enum hd_isolation isolation;
    bool isolation_set;
    char *image;       /* NAME:TAG in the image store, or NULL */
    char *rootfs;      /* host path of a root filesystem directory, or NULL */
    char **command;    /* argv, NULL-terminated; NULL = image default */
    char **entrypoint; /* overrides the image entrypoint; NULL = image default */
    char **env;        /* KEY=VALUE, NULL-terminated */
    char *workdir;
    char *user; /* "uid[:gid]" or a name resolved in the rootfs */
    char *hostname;
    struct hd_resources resources;
    enum hd_net_mode network;
    struct hd_mount *mounts;
    int n_mounts;
    bool readonly_rootfs;
    struct hd_security security;
    struct hd_restart restart;
    struct hd_trigger *triggers;
    int n_triggers;
    struct hd_device *devices;
    int n_devices;
    struct hd_device_class *device_rules;
    int n_device_rules;
    bool init; /* run a minimal reaper as PID 1 (container) */
    struct hd_user_namespace userns;
    char *vm_accel; /* "auto" | "kvm" | "tcg" (vm only); NULL = auto */
    char *vm_boot;  /* "auto" | "cold" | "snapshot" (vm only): start from a template? NULL = auto */
    struct hd_function function;
    struct hd_health health;
    struct hd_mqtt_access mqtt;
    struct hd_secret_ref *secrets;
    int n_secrets;
    enum hd_secret_update secret_update;
    struct hd_logs logs;
};

const char *hd_function_mode_name(enum hd_function_mode mode);

const char *hd_isolation_name(enum hd_isolation iso);
int hd_isolation_parse(const char *text, enum hd_isolation *out);
const char *hd_net_mode_name(enum hd_net_mode mode);
int hd_net_mode_parse(const char *text, enum hd_net_mode *out);

struct hd_spec *hd_spec_new(void);
void hd_spec_free(struct hd_spec *spec);
void hd_cleanup_specp(struct hd_spec **spec);
#define cleanup_spec __attribute__((cleanup(hd_cleanup_specp)))

/*
 * Access letters ("rw", "mr") as the canonical subset of "rwm" (in that order)
 * in out[4]; -1 if text is empty or holds another letter or one twice.
 */
int hd_device_access_parse(const char *text, char out[4]);
/* "c 188:* rwm" (docker's --device-cgroup-rule): -1 with a reason in *why. */
int hd_device_class_parse(const char *text, struct hd_device_class *out, const char **why);
/* "HOST[:TARGET][:PERMS]" (docker's --device) into *out (owned strings); -1 with a reason in *why. */
int hd_device_flag_parse(const char *text, struct hd_device *out, const char **why);

/* Parse a JSON document into *out (fields not present keep their defaults).
 * origin names the document in messages ("filter.json"). */
int hd_spec_parse_json(struct hd_spec *spec, const char *json, size_t len, const char *origin, hd_error_t *err);
int hd_spec_load_file(struct hd_spec *spec, const char *path, hd_error_t *err);
/* Serialize to JSON (the daemon stores this); caller frees. */
char *hd_spec_to_json(const struct hd_spec *spec);

/* Check the spec as a whole and against its isolation level. */
int hd_spec_validate(const struct hd_spec *spec, hd_error_t *err);

/* A vm workload's guest: RAM is resources.memory + 64 MiB for the guest kernel, rounded up to a MiB (256 MiB
 * without a memory limit); vCPUs are ceil(resources.cpus) (1 without). A template and a warm pool match on both. */
int64_t hd_spec_vm_ram(const struct hd_resources *res);
int hd_spec_vm_vcpus(const struct hd_resources *res);

#endif
