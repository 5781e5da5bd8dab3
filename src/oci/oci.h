/*
 * oci.h - what the files of hedge-oci share: the global options, the log,
 * the bundle's config.json turned into a hedge spec (config.c), the state a
 * container keeps under --root between runtime calls (state.c), and the verbs.
 *
 * hedge-oci has no container code of its own: a bundle becomes a struct
 * hd_spec run by the runtime's container backend (src/runtime/). What the
 * spec cannot say (extra mounts, masked paths, sysctls, rlimits, the exec
 * hold between create and start) rides on the small extension points of
 * struct hd_workload (backend.h).
 */
#ifndef HEDGE_OCI_H
#define HEDGE_OCI_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

#include "base/error.h"
#include "runtime/backend.h"
#include "spec/spec.h"

#define OCI_VERSION "1.1.0"
#define OCI_DEFAULT_ROOT "/run/hedge-oci"

/* runc's convention: any failure of the runtime itself exits 1. */
enum { OCI_EXIT_FAILURE = 1 };

struct oci_globals {
    const char *root;     /* --root: state dirs live in <root>/<id> */
    const char *log_path; /* --log, or NULL (stderr only) */
    bool log_json;        /* --log-format json */
    bool debug;
    bool systemd_cgroup;
};

extern struct oci_globals oci_globals;

/* Log a line (text or JSON per --log-format) to the --log file; errors also go to stderr. */
void oci_log(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Report err (stderr and log) and return OCI_EXIT_FAILURE; frees err. */
int oci_fail(hd_error_t *err);

/* ---- config.json (config.c) ---- */

enum oci_mount_kind {
    OCI_MOUNT_FS,     /* a new filesystem, mounted in the container (tmpfs, proc, mqueue, ...) */
    OCI_MOUNT_CGROUP, /* the container's cgroup hierarchies at the destination */
    OCI_MOUNT_ATTR,   /* a bind the runtime made (spec.mounts): only attributes to add */
};

/* Mount work done inside the container (container_setup hook), in config order. */
struct oci_mount {
    enum oci_mount_kind kind;
    char *type;
    char *source;
    char *target;
    unsigned long flags; /* MS_* for a new filesystem */
    unsigned attr;       /* MOUNT_ATTR_* to set on a bind */
    char *data;          /* filesystem options, or NULL */
};

struct oci_rlimit {
    int resource;
    struct rlimit limit;
    char *name;
};

struct oci_sysctl {
    char *key;
    char *value;
};

struct oci_config {
    struct hd_spec *spec;
    char *bundle; /* absolute path */
    char *rootfs; /* absolute path */
    struct oci_mount *mounts;
    int n_mounts;
    char **masked_paths;
    char **readonly_paths;
    struct oci_sysctl *sysctls;
    int n_sysctls;
    struct oci_rlimit *rlimits;
    int n_rlimits;
    uint64_t caps_inheritable; /* process.capabilities.inheritable / ambient (root only) */
    uint64_t caps_ambient;
    int umask; /* process.user.umask, or -1: hedge's 0022 */
    bool have_oom_score_adj;
    int oom_score_adj;
    char *cgroup_parent; /* from linux.cgroupsPath, or NULL: hedge's default parent */
    char *cgroup_name;   /* from linux.cgroupsPath, or NULL: the container id */
    char *seccomp_json;  /* linux.seccomp as text, or NULL: unconfined */
    /* the container's device list (cgroup/devices.h): deny all, linux.resources.devices in order,
     * then the runtime's defaults for its own /dev nodes (runc's order) */
    struct hd_device_rule *device_rules;
    size_t n_device_rules;
    char *annotations_json; /* "annotations" as text, or NULL */
};

/* Read <bundle>/config.json; errors name the field ("process.terminal: ..."). */
int oci_config_load(const char *bundle, const char *id, struct oci_config **out, hd_error_t *err);
void oci_config_free(struct oci_config *cfg);
/* update --resources: a linux.resources object as the limits it sets (fields it leaves out are 0: unchanged). */
int oci_resources_load(const char *text, size_t len, struct hd_resources *out, hd_error_t *err);
/* exec --process FILE: replace cfg's process part with the file's (errors name "--process FILE: process.x"). */
int oci_process_load(const char *path, struct oci_config *cfg, hd_error_t *err);
/* The container_setup hook (backend.h): mounts, masks, read-only paths and sysctls inside. */
int oci_container_setup(const struct hd_workload *w, void *data, enum hd_setup_phase phase, hd_error_t *err);
/* The default config.json of `spec`. Caller frees. */
char *oci_default_config(void);

/* ---- state under --root (state.c) ---- */

enum oci_status { OCI_CREATED, OCI_RUNNING, OCI_PAUSED, OCI_STOPPED };

struct oci_state {
    char *id;
    pid_t pid;
    uint64_t pid_start; /* /proc/PID/stat start time: the pid names this process only */
    char *bundle;
    char *rootfs;
    char *created;       /* RFC 3339 */
    char *cgroup_parent; /* NULL: hedge's default */
    char *cgroup_name;
    char *cgroup_mode; /* "v1", "hybrid", "v2": the layout the cgroup was made in (NULL: detect) */
    char *run_dir;
    char *annotations_json;
};

int oci_id_check(const char *id, hd_error_t *err);
char *oci_state_dir(const char *id);
char *oci_fifo_path(const char *id);
int oci_state_save(const struct oci_state *st, hd_error_t *err);
/* Load <root>/<id>/state.json; a missing container is ENOENT ("container X does not exist"). */
int oci_state_load(const char *id, struct oci_state **out, hd_error_t *err);
void oci_state_free(struct oci_state *st);
enum oci_status oci_state_status(const struct oci_state *st);
const char *oci_status_name(enum oci_status s);
/* The OCI state document (`state`, `list --format json`). Caller frees. */
char *oci_state_json(const struct oci_state *st, bool pretty);
/* Kill what is left, remove the cgroup, the run dir and the state dir. */
int oci_state_destroy(const struct oci_state *st, hd_error_t *err);
/* Point hd_cgroup_* at the container's cgroup parent (they read $HEDGE_CGROUP_PARENT); oci_state_load also
 * sets $HEDGE_CGROUP_MODE to the layout the container's cgroup was made in. */
void oci_use_cgroup_parent(const char *parent);

/* ---- verbs ---- */
int oci_cmd_create(int argc, char **argv);
int oci_cmd_run(int argc, char **argv);
int oci_cmd_start(int argc, char **argv);
int oci_cmd_state(int argc, char **argv);
int oci_cmd_kill(int argc, char **argv);
int oci_cmd_delete(int argc, char **argv);
int oci_cmd_list(int argc, char **argv);
int oci_cmd_spec(int argc, char **argv);
int oci_cmd_features(int argc, char **argv);
int oci_cmd_exec(int argc, char **argv);
int oci_cmd_pause(int argc, char **argv);
int oci_cmd_resume(int argc, char **argv);
int oci_cmd_ps(int argc, char **argv);
int oci_cmd_update(int argc, char **argv);
int oci_cmd_events(int argc, char **argv);
/* lifecycle.c: forward signals to pid until it exits (it is our child; not reaped here) */
int oci_forward_signals_until_exit(pid_t pid, hd_error_t *err);

/* ---- option parsing shared by the verbs (main.c) ---- */
struct oci_option {
    const char *name; /* long name without dashes */
    char short_name;  /* or 0 */
    bool has_arg;
    const char **value; /* has_arg: where the value goes */
    bool *flag;         /* !has_arg: set to true */
};
/* Parse runc-style flags (-x, --name, --name=value, -name value) up to the first
 * positional; returns the index of the first positional, or -1 (error printed). */
int oci_parse_options(const char *verb, int argc, char **argv, const struct oci_option *opts);

#endif
