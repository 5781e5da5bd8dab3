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

#include <jansson.h>

#include "base/error.h"
#include "runtime/backend.h"
#include "spec/spec.h"

#define OCI_VERSION "1.1.0"
#define OCI_DEFAULT_ROOT "/run/hedge-oci"
#define OCI_VM_DEFAULT_ROOT "/run/hedge-oci-vm"

/* runc's convention: any failure of the runtime itself exits 1. */
enum { OCI_EXIT_FAILURE = 1 };

struct oci_globals {
    const char *root;     /* --root: state dirs live in <root>/<id> */
    const char *log_path; /* --log, or NULL (stderr only) */
    bool log_json;        /* --log-format json */
    bool debug;
    bool systemd_cgroup;
    bool vm; /* started as hedge-oci-vm: the process runs in a VM (vm.c) */
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
    unsigned long flags;       /* MS_* for a new filesystem */
    unsigned attr;             /* MOUNT_ATTR_* to set on a bind */
    char *data;                /* filesystem options, or NULL */
    unsigned long propagation; /* MS_SHARED/MS_SLAVE/MS_PRIVATE/MS_UNBINDABLE (| MS_REC), or 0 */
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

/* ---- hooks (hooks.c) ---- */

enum oci_hook_phase {
    OCI_HOOK_PRESTART,
    OCI_HOOK_CREATE_RUNTIME,
    OCI_HOOK_CREATE_CONTAINER,
    OCI_HOOK_START_CONTAINER,
    OCI_HOOK_POSTSTART,
    OCI_HOOK_POSTSTOP,
    OCI_HOOK_PHASES
};

struct oci_hook {
    char *path;
    char **args; /* NULL: argv is the path alone */
    char **env;  /* NULL: hedge-oci's environment */
    int timeout; /* seconds, 0: none */
};

struct oci_hooks {
    struct oci_hook *list[OCI_HOOK_PHASES];
    size_t n[OCI_HOOK_PHASES];
    char *json; /* the "hooks" object as text (kept in <root>/<id>/hooks.json for poststart and poststop) */
};

/* config.json's "hooks" (NULL or null: none); errors name the field ("hooks.poststop[1].path: ..."). */
int oci_hooks_parse(json_t *hooks, struct oci_hooks *out, hd_error_t *err);
void oci_hooks_free(struct oci_hooks *hooks);
const char *oci_hook_phase_name(enum oci_hook_phase phase);
/* Any hook in the phases first..last. */
bool oci_hooks_any(const struct oci_hooks *hooks, enum oci_hook_phase first, enum oci_hook_phase last);
/* Run the phase's hooks in order with state on stdin; the first failure is the error. */
int oci_hooks_run(const struct oci_hooks *hooks, enum oci_hook_phase phase, const char *state, hd_error_t *err);
/* The same, every failure a warning in the log (poststart, poststop). */
void oci_hooks_run_warn(const struct oci_hooks *hooks, enum oci_hook_phase phase, const char *state);
/* Keep (at create) and read back (start, delete) the hooks in <root>/<id>/hooks.json. */
int oci_hooks_save(const struct oci_hooks *hooks, const char *id, hd_error_t *err);
int oci_hooks_load(const char *id, struct oci_hooks *out, hd_error_t *err);
/* before_pivot_parent (backend.h), data the oci_config: the prestart and createRuntime hooks, then the state
 * documents for the hooks inside as the message. */
int oci_hooks_before_pivot_parent(const struct hd_workload *w, pid_t pid, void *data, char **message, hd_error_t *err);
/* Inside the container: the state document handed over before pivot_root, "creating" or "created". */
const char *oci_hook_state(const struct hd_workload *w, const char *status);

/* ---- terminal (console.c) ---- */

struct oci_console {
    int socket_fd;       /* the console socket (or our socketpair's end): the master goes there */
    unsigned rows, cols; /* process.consoleSize; 0: the pty's default */
    uid_t uid;           /* the slave's owner: the process's user */
    gid_t gid;
    bool bind_dev_console; /* the first process: the slave over /dev/console too */
};

/* hedge-oci-vm exec --tty: a host pty, its master sent to c->socket_fd, its slave (raw: the guest's pty does the
 * line discipline) returned for the VM's relay; sized by c->rows/cols when given. The slave, or -1. */
int oci_console_host_pty(const struct oci_console *c, hd_error_t *err);
/* Connect to an engine's --console-socket. */
int oci_console_connect(const char *path, hd_error_t *err);
/* No --console-socket, in the foreground: a socketpair; hedge-oci keeps *ours and relays the terminal. */
int oci_console_pair(int *ours, int *theirs, hd_error_t *err);
/* Inside the container, after its mounts: make the pty, send its master, take the slave as stdio and
 * controlling terminal. */
int oci_console_make(const struct oci_console *c, hd_error_t *err);
/* Receive the master the container's process sent over socket_fd. Returns the fd. */
int oci_console_receive(int socket_fd, hd_error_t *err);
/* Relay the master to our stdio (raw mode, window size) until pid (our child or not) exits. */
int oci_console_relay(int master, pid_t pid, hd_error_t *err);

/* process.scheduler (sched.c): sched_setattr(2)'s fields. */
struct oci_sched {
    unsigned policy;
    uint64_t flags;
    int nice;
    unsigned priority;
    uint64_t runtime, deadline, period;
};

/* One entry of linux.devices (extras.c). */
struct oci_device {
    char *path;
    mode_t mode; /* S_IFCHR/S_IFBLK/S_IFIFO | fileMode */
    dev_t rdev;
    uid_t uid;
    gid_t gid;
    bool bound; /* a new user namespace: the host's node at path, bound by the runtime (a spec device) */
};

struct oci_config {
    struct hd_spec *spec;
    const char *id; /* the container id (the caller's string) */
    bool terminal;  /* process.terminal */
    unsigned console_rows, console_cols;
    uid_t uid; /* process.user */
    gid_t gid;
    int console_fd; /* the console connection the container's process inherits, or -1 */
    char *bundle;   /* absolute path */
    char *rootfs;   /* absolute path */
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
    int umask;     /* process.user.umask, or -1: hedge's 0022 */
    gid_t *groups; /* process.user.additionalGids: the supplementary groups, exactly (never NULL once parsed) */
    size_t n_groups;
    bool have_oom_score_adj;
    int oom_score_adj;
    unsigned long rootfs_propagation; /* linux.rootfsPropagation as MS_* flags, or 0 */
    char *cgroup_parent;              /* from linux.cgroupsPath, or NULL: hedge's default parent */
    char *cgroup_name;                /* from linux.cgroupsPath, or NULL: the container id */
    char *seccomp_json;               /* linux.seccomp as text, or NULL: unconfined */
    /* the container's device list (cgroup/devices.h): deny all, linux.resources.devices in order,
     * then the runtime's defaults for its own /dev nodes (runc's order) */
    struct hd_device_rule *device_rules;
    size_t n_device_rules;
    char *annotations_json; /* "annotations" as text, or NULL */
    json_t *document;       /* config.json as parsed, for what only a backend reads (hedge-oci-vm's binds) */
    struct oci_hooks hooks;
    /* the container's state documents for the hooks that run inside it, handed over at create
     * (before_pivot_parent): "creating" for createContainer, "created" for startContainer */
    char *state_creating;
    char *state_created;
    /* linux.namespaces[].path by enum hd_join_ns (NULL: a new namespace), the entry's index for errors, and
     * the fds oci_namespaces_open opened (-1 until then). A pid, ipc or uts namespace the config does not
     * list is the runtime's own, joined through /proc/self/ns (ns_inherited; the VM handler ignores it). */
    char *ns_paths[HD_JOIN_NS_COUNT];
    size_t ns_index[HD_JOIN_NS_COUNT];
    bool ns_inherited[HD_JOIN_NS_COUNT];
    int ns_fds[HD_JOIN_NS_COUNT];
    /* a new user namespace (linux.namespaces "user" without a path): linux.uidMappings/gidMappings as the
     * text of /proc/PID/uid_map and gid_map (userns.c), else NULL */
    bool new_userns;
    /* no "mount" entry in linux.namespaces: the runtime's mount namespace is shared, the process only chroots
     * into the rootfs and nothing of the config is mounted (the workload's share_mount_ns) */
    bool host_mount_ns;
    size_t n_mounts_skipped; /* with host_mount_ns: the config's mounts left out (create warns) */
    char *uid_map;
    char *gid_map;
    /* linux.devices, domainname, linux.personality (extras.c) */
    struct oci_device *devices;
    size_t n_devices;
    char *domainname; /* NULL: left as it is */
    bool have_personality;
    unsigned long personality;
    /* --preserve-fds N and the LISTEN_FDS of the runtime's environment: fds 3..3+n_pass_fds-1 reach the
     * process at the same numbers */
    int n_pass_fds;
    /* linux.resources.unified: files of the cgroup v2 group and their values */
    struct oci_sysctl *unified;
    size_t n_unified;
    /* linux.seccomp.listenerPath and listenerMetadata (NULL: none); the connection to it create makes, which the
     * container's process inherits and sends the listener fd over (-1 until then) */
    char *listener_path;
    char *listener_metadata;
    int listener_fd;
    /* a new time namespace (linux.namespaces "time" without a path) and linux.timeOffsets as the text of
     * /proc/PID/timens_offsets ("" without offsets) */
    bool new_timens;
    char *time_offsets;
    /* linux.namespaces "time" with a path: the path, the entry's index, its fd once opened (-1 until then) */
    char *time_ns_path;
    size_t time_ns_index;
    int time_ns_fd;
    /* process.ioPriority (ioprio_set's value) and process.scheduler (sched.c) */
    bool have_io_priority;
    int io_priority;
    bool have_sched;
    struct oci_sched sched;
    /* process.execCPUAffinity (exec'd processes only): CPU lists, or NULL */
    char *affinity_initial;
    char *affinity_final;
    /* linux.memoryPolicy: set_mempolicy's mode (with its flags) and node mask (nodes 0..1023) */
    bool have_mpol;
    int mpol_mode;
    unsigned long mpol_nodes[1024 / (8 * sizeof(unsigned long))];
};

/* ---- fields applied inside the container beside config.c's (extras.c) ---- */

/* linux.uidMappings/gidMappings (lx: the "linux" object): checked (errors name the field) and kept as cfg's
 * uid_map/gid_map with a new user namespace; refused without one. After process and linux.namespaces. */
int oci_userns_parse(json_t *lx, bool new_userns, struct oci_config *cfg, hd_error_t *err);
/* A joined user namespace (linux.namespaces "user" with a path, fd open): read its maps and check that root and
 * process.user are mapped there (errors name the field). oci_namespaces_open calls it. */
int oci_userns_check_joined(struct oci_config *cfg, int fd, hd_error_t *err);
/* linux.devices, domainname and linux.personality of config.json (root) into cfg, after linux.namespaces and
 * the user namespace; errors name the field. */
int oci_extras_parse(json_t *root, struct oci_config *cfg, hd_error_t *err);
void oci_extras_free(struct oci_config *cfg);
/* --preserve-fds (text, NULL: 0) and, with activation (create, run), $LISTEN_FDS (runc's socket activation:
 * those first, LISTEN_FDS and LISTEN_PID=1 in the process's environment): check the fds are open and keep their
 * count in cfg. */
int oci_pass_fds_setup(struct oci_config *cfg, const char *preserve_fds, bool activation, hd_error_t *err);
/* linux.resources.unified (NULL or null: none) into cfg: checked keys (no "/" or "..", not cgroup.procs or
 * cgroup.threads), string values, a host with a cgroup v2 hierarchy; errors name the field. */
int oci_unified_parse(json_t *unified, struct oci_config *cfg, hd_error_t *err);
/* Write the n pairs to the container's group in the v2 hierarchy (create, after the process is held in it;
 * update): a file the group does not have is an error naming linux.resources.unified.KEY. */
int oci_unified_apply(const struct oci_sysctl *unified, size_t n, struct hd_cgroup *cg, hd_error_t *err);
void oci_unified_free(struct oci_sysctl *unified, size_t n);
/* process.ioPriority and process.scheduler of a process object (config.json's, exec --process's); errors name
 * the field. */
int oci_sched_parse(json_t *proc, struct oci_config *cfg, hd_error_t *err);
/* Apply them to this process (the container's, before its filter and exec). */
int oci_sched_apply(const struct oci_config *cfg, hd_error_t *err);
/* linux.memoryPolicy of the "linux" object lx into cfg; errors name the field. */
int oci_memory_policy_parse(json_t *lx, struct oci_config *cfg, hd_error_t *err);
/* exec: process.execCPUAffinity.initial as hedge-oci's own affinity while it starts the process (none: nothing). */
int oci_affinity_initial(const struct oci_config *cfg, hd_error_t *err);
/* In the exec'd process after it joined the cgroup: .final, or (with only .initial) the cgroup's CPUs. */
int oci_affinity_final(const struct oci_config *cfg, hd_error_t *err);
/* create: open the time namespace linux.namespaces joins by path (cfg->time_ns_fd) and check its type. */
int oci_time_ns_open(struct oci_config *cfg, hd_error_t *err);
/* linux.seccomp.listenerPath/listenerMetadata of the seccomp object sc into cfg; errors name the field. */
int oci_listener_parse(json_t *sc, struct oci_config *cfg, hd_error_t *err);
/* create: connect to the listenerPath (cfg->listener_fd), before the container exists. */
int oci_listener_connect(struct oci_config *cfg, hd_error_t *err);
/* The workload's seccomp_listener (backend.h), data the oci_config: the listener fd and the container process
 * state (runtime-spec "Seccomp listener") sent over cfg->listener_fd. */
int oci_listener_send(const struct hd_workload *w, void *data, int fd, hd_error_t *err);
/* The same for any process (exec's): fd and the message around state_json (a state document). */
int oci_listener_send_fd(const struct oci_config *cfg, const char *state_json, int fd, hd_error_t *err);
/* A name of a kernel flag and its bit (sched.c's, extras.c's tables). */
struct oci_flag_name {
    const char *name;
    unsigned long value;
};
/* The flag names of the array arr (field "path", e.g. "process.scheduler.flags") ORed into *out; an unknown one
 * is an error naming its index and the syscall (what), and so is a value other than an array or null. */
int oci_flags_parse(json_t *arr, const char *path, const char *what, const struct oci_flag_name *table, size_t n,
                    unsigned long *out, hd_error_t *err);
/* process.ioPriority, process.scheduler and linux.personality, those given, for this process (the first one's
 * hook, exec's set-up). */
int oci_process_attrs_apply(const struct oci_config *cfg, hd_error_t *err);
/* Right before exec: the passed fds lose close-on-exec (the runtime marked every inherited fd so). */
int oci_pass_fds_before_exec(const struct oci_config *cfg, hd_error_t *err);
/* Inside the container, after the config's mounts: the device nodes, the domain name, the personality. */
int oci_extras_setup_inside(const struct oci_config *cfg, hd_error_t *err);
/* Read <bundle>/config.json; errors name the field ("process.terminal: ..."). */
int oci_config_load(const char *bundle, const char *id, struct oci_config **out, hd_error_t *err);
void oci_config_free(struct oci_config *cfg);
/* Open every linux.namespaces[].path (create does it before anything else) and check each is a namespace of
 * its entry's type; errors name the field. cfg->ns_fds then feed the workload's join_ns_fds. */
int oci_namespaces_open(struct oci_config *cfg, hd_error_t *err);
/* namespaces.c: linux.namespaces (an array) into cfg: new, joined by path, or the runtime's own (inherited). */
int oci_namespaces_parse(json_t *arr, struct oci_config *cfg, hd_error_t *err);
/* update --resources: a linux.resources object as the limits it sets (fields it leaves out are 0: unchanged) and
 * its unified pairs (*unified owned by the caller: oci_unified_free). */
int oci_resources_load(const char *text, size_t len, struct hd_resources *out, struct oci_sysctl **unified,
                       size_t *n_unified, hd_error_t *err);
/* resources.c: linux.resources.cpu.cpus/mems/realtimePeriod/realtimeRuntime, blockIO and hugepageLimits of
 * res (a linux.resources object) into r. */
int oci_resources_parse_cpuset_io(json_t *res, struct hd_resources *r, hd_error_t *err);
/* A JSON value that is set: present, not null, not false, not an empty array, object or string. */
bool oci_json_is_set(json_t *v);
/* exec --process FILE: replace cfg's process part with the file's (errors name "--process FILE: process.x"). */
int oci_process_load(const char *path, struct oci_config *cfg, hd_error_t *err);
/* Append one supplementary group (exec --additional-gids adds to the config's, as runc). */
void oci_config_add_group(struct oci_config *cfg, gid_t gid);
/* A capability name as runc takes it ("CAP_" and the name in capitals, one this kernel has): its number,
 * or -1. */
int oci_cap_parse(const char *name);
/* runc's warning for the capability names it drops, "ignoring unknown or unavailable capabilities: [A B]"
 * (sorts unknown; nothing when it is empty). */
void oci_warn_unknown_caps(char **unknown);
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
/* The same document with the status and pid given (the hooks' stdin). Caller frees. */
char *oci_state_document(const struct oci_state *st, const char *status, pid_t pid, bool pretty);
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

/* lifecycle.c: the current time as RFC 3339 (state's "created"; caller frees), and --pid-file */
char *oci_now_rfc3339(void);
int oci_write_pid_file(const char *path, pid_t pid, hd_error_t *err);

/* ---- hedge-oci-vm (vm.c): the bundle's process in a VM with its own kernel ---- */

struct oci_vm_flags {
    const char *bundle;
    const char *pid_file;
    const char *console_socket; /* process.terminal's: the host pty's master goes there */
    const char *preserve_fds;
};

/* create: a holder process (outlives the caller) boots the VM and holds it at READY; start is hedge-oci's
 * (the exec FIFO). 0 once the guest is ready; an error leaves nothing (no QEMU, state dir or cgroup). */
int oci_vm_create(const char *id, const struct oci_vm_flags *f, hd_error_t *err);
/* exec: one more process in the guest (spec's command, env, workdir, user), through the holder's exec socket.
 * *pid_out is a host process that relays nothing (the guest's output goes straight to our stdout/stderr) and
 * exits with the guest process's exit code. */
int oci_vm_exec(const struct oci_state *st, const struct hd_spec *spec, const struct oci_console *console,
                pid_t *pid_out, hd_error_t *err);
/* run in the foreground: this process runs the VM; *code is the workload's exit code. */
/* delete: undo what a VM's holder could not (its guest's redirect in the engine's network namespace). */
void oci_vm_delete_net(const char *id);
int oci_vm_run_foreground(const char *id, const struct oci_vm_flags *f, int *code, hd_error_t *err);

/* ---- option parsing shared by the verbs (main.c) ---- */
struct oci_option {
    const char *name; /* long name without dashes */
    char short_name;  /* or 0 */
    bool has_arg;
    const char **value; /* has_arg: where the value goes */
    bool *flag;         /* !has_arg: set to true */
    char ***values;     /* has_arg, repeatable (runc's --env, --cap): every value appended (caller frees) */
};
/* Parse runc-style flags (-x, --name, --name=value, -name value) up to the first
 * positional; returns the index of the first positional, or -1 (error printed, naming verb; NULL for the
 * global flags). */
int oci_parse_options(const char *verb, int argc, char **argv, const struct oci_option *opts);

#endif
