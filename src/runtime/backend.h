/*
 * backend.h - the isolation backend interface and the workload it acts on.
 *
 * hd_run (run.c) turns a spec into a plan (struct hd_workload: resolved
 * rootfs, argv, env, ids, cgroup) and hands it to one backend. Every
 * isolation level (process, container, vm) implements the same six steps, so
 * a new backend (a native KVM VMM, another hypervisor) slots in without
 * touching the callers:
 *
 *   prepare  - build what the workload needs before it starts (run dir,
 *              rootfs image, network); nothing visible runs yet
 *   start    - create the workload's processes; on return w->pid is the
 *              host pid to wait for and signal, and the command has been
 *              exec'd (exec failures come back as errors with 126/127)
 *   signal   - deliver a signal to the workload
 *   wait     - block until the workload exits; fill struct hd_exit
 *   stats    - cpu/memory/pids figures
 *   cleanup  - remove everything prepare/start created; safe to call on a
 *              half-prepared workload and more than once
 */
#ifndef HEDGE_BACKEND_H
#define HEDGE_BACKEND_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/error.h"
#include "cgroup/cgroup.h" /* struct hd_stats */
#include "spec/spec.h"

struct hd_cgroup;
struct hd_image_config;

struct hd_exit {
    int code;        /* docker-style exit code: status, or 128+signal */
    int status;      /* exit status if exited normally, else -1 */
    int signal;      /* terminating signal, else 0 */
    bool oom_killed; /* the memory limit was hit and the kernel killed a task */
};

/* When a container's first process calls container_setup (backend.h, struct hd_workload). */
enum hd_setup_phase { HD_SETUP_CGROUPS, HD_SETUP_BEFORE_PIVOT, HD_SETUP_INSIDE, HD_SETUP_BEFORE_EXEC };

struct hd_device_rule;

/* The namespaces a container's first process can join instead of making new ones (join_ns_fds below),
 * in the order it joins them: mount last (it changes the view of the paths), pid before the clone; a user
 * namespace through an intermediate process (container.c). */
enum hd_join_ns {
    HD_JOIN_NET,
    HD_JOIN_IPC,
    HD_JOIN_UTS,
    HD_JOIN_CGROUP,
    HD_JOIN_MNT,
    HD_JOIN_PID,
    HD_JOIN_USER,
    HD_JOIN_NS_COUNT
};

/* A host device node of spec->devices[], checked on the host (stat) by the plan. */
struct hd_workload_device {
    const char *host_path; /* spec->devices[i].path: a character or block device */
    const char *target;    /* where it appears inside (container): target, else path */
};

struct hd_workload {
    const struct hd_spec *spec;
    char id[16]; /* unique run id, names the cgroup and run dir */
    const struct hd_backend *backend;

    /* The plan: what to run, resolved from spec + image config defaults. */
    char *rootfs;           /* host path of the rootfs dir (container/vm); NULL for process */
    bool rootfs_from_image; /* rootfs is an image store dir: must never be written */
    char *image_digest;     /* content digest of the image, if from the store */
    char **argv;            /* NULL-terminated, argv[0] is the command */
    char **env;             /* KEY=VALUE, NULL-terminated */
    char *workdir;          /* NULL = "/" in container/vm, cwd for process */
    char *user;             /* "uid:gid" or name, NULL = 0:0 / current */
    char *run_dir;          /* host dir for this run's temp files (owned) */
    char *secrets_dir;      /* the tmpfs holding this run's secret files (runtime/secrets.c), or NULL */
    const char *state_dir;  /* hedge state dir (image store lives there) */

    struct hd_cgroup *cgroup; /* created by run.c before start, entered by the backend */
    int stdio[3];             /* fds the workload gets as 0,1,2 */
    bool console_only;        /* reserved */

    pid_t pid;                      /* host pid that backend->wait waits for */
    void *backend_data;             /* backend-private state */
    struct hd_vm_pooled *vm_pooled; /* hd_run_options.vm_pooled until the vm backend takes it; destroyed with w */
    char vm_boot[12]; /* vm, once started: how the guest came up: "cold", "snapshot" (a template) or "pool" */

    /*
     * Optional extensions for callers that drive the container backend step by
     * step (hedge-oci, src/oci/); all zero for hedge itself. Set them between
     * hd_workload_create and hd_workload_start.
     *
     * container_setup runs in the container's first process: with
     * HD_SETUP_CGROUPS right after it entered its cgroups (before anything of
     * its own, and before its cgroup namespace); with HD_SETUP_BEFORE_PIVOT
     * right before pivot_root (its namespaces made, the host's root still
     * its root); with HD_SETUP_INSIDE after its mounts, pivot_root and cgroup
     * namespace, before the user switch: still root with every capability the
     * bounding set keeps; and with HD_SETUP_BEFORE_EXEC last, right before the
     * exec (after the hold, when there is one). A failure is reported as a
     * start error (after the hold: the process exits with status 125).
     *
     * With before_pivot_parent, the first process
     * stops right before pivot_root, the parent calls
     * before_pivot_parent(w, pid, data, &message) in its own namespaces, and the
     * child gets the message it returned (a string, or NULL) in
     * w->before_pivot_message before its HD_SETUP_BEFORE_PIVOT call: the OCI
     * prestart/createRuntime hooks and the state document of the hooks that
     * run inside. A failure kills the child and fails the start.
     *
     * With hold_before_exec, the first process does everything up to exec
     * (user, workdir, capabilities, seccomp), reports "ready" (start returns),
     * then blocks opening exec_fifo_fd (an O_PATH fd of a FIFO, reopened through
     * /proc/self/fd) for writing until someone opens the FIFO for reading, writes
     * one byte and execs: runc's create/start split. Exec failures after the
     * hold only show in the exit status (127/126).
     *
     * The vm backend holds too (hedge-oci-vm): with hold_before_exec, start
     * boots the guest to READY, calls held(w, held_data) (when set; a failure
     * fails the start), then waits until someone opens exec_fifo_fd's FIFO for
     * reading (or QEMU ends), writes it one byte and only then sends the
     * workload's CONFIG; start returns once the guest started the command.
     * With hold_end_signals, one of those signals pending (the caller blocks
     * them) ends the hold: start fails with ECANCELED and leaves the signal
     * pending (a held container dies of a signal, as runc's does).
     */
    int (*container_setup)(const struct hd_workload *w, void *data, enum hd_setup_phase phase, hd_error_t *err);
    void *container_setup_data;
    int (*before_pivot_parent)(const struct hd_workload *w, pid_t pid, void *data, char **message, hd_error_t *err);
    char *before_pivot_message; /* the child's copy only */
    bool hold_before_exec;
    int exec_fifo_fd;
    int (*held)(const struct hd_workload *w, void *data, hd_error_t *err); /* vm backend: at the hold */
    void *held_data;
    const sigset_t *hold_end_signals;
    /* Container backend: the first process loads its seccomp filter with a listener
     * (SECCOMP_FILTER_FLAG_NEW_LISTENER) and hands the fd to this callback (data: container_setup_data) right
     * after, in the container; it closes the fd afterwards. NULL: no listener. hedge-oci's listenerPath. */
    int (*seccomp_listener)(const struct hd_workload *w, void *data, int fd, hd_error_t *err);
    /* Container backend: a new time namespace for the first process, with these offsets (the text of
     * /proc/PID/timens_offsets: "monotonic SECS NSECS\n", "boottime ..."; "" none); NULL: the runtime's. Not
     * owned. */
    const char *time_offsets;
    /* Container backend: an existing time namespace (an fd of it) for the first process, entered for the clone
     * only as a new one is; NULL: none. Not owned. */
    const int *time_ns_fd;
    /* Capability sets beyond hedge's one set (hedge itself leaves them empty): applied last. */
    uint64_t caps_inheritable;
    uint64_t caps_ambient;
    /* The supplementary groups (hedge-oci's process.user.additionalGids), exactly; NULL: the primary gid
     * alone (hedge's own). Not owned. */
    const gid_t *groups;
    size_t n_groups;
    /* The container's device allow-list (cgroup/devices.h), NULL: Docker's default list. Not owned. */
    const struct hd_device_rule *device_rules;
    size_t n_device_rules;
    /*
     * Existing namespaces to join (hedge-oci's linux.namespaces[].path): NULL, or HD_JOIN_NS_COUNT open
     * namespace fds indexed by enum hd_join_ns, -1 where the container gets a new one. Not owned. The first
     * process setns()es into each instead of unsharing it (the pid namespace: it is born there; a user
     * namespace, HD_JOIN_USER with spec->userns.enabled and no maps: an intermediate process enters it and
     * clones the first process, container.c); hedge configures nothing in a joined network namespace (no lo, no addresses) and
     * sets the hostname of a joined uts namespace only when the spec names another one.
     */
    const int *join_ns_fds;
    /*
     * hedge-oci's config without a mount namespace (linux.namespaces has no "mount" entry): the first process
     * stays in the runtime's mount namespace and only chroot()s into rootfs (runc does the same), with nothing
     * mounted: neither the rootfs prepared (its detached trees are dropped) nor /proc, /dev, /sys, the spec's
     * mounts, devices or secrets (the caller refuses what would need them). HD_SETUP_BEFORE_PIVOT comes right
     * before the chroot, HD_SETUP_INSIDE right after it.
     */
    bool share_mount_ns;
    /*
     * hedge-oci's linux.uidMappings/gidMappings, with spec->userns.enabled: the text written to
     * /proc/PID/uid_map and gid_map ("inside host count" lines) instead of spec->userns's one range, the way
     * runc does it as root: setgroups stays allowed (the process's additionalGids) and the rootfs is not
     * idmapped (the mapped ids see the bundle's owners as they are). NULL for hedge itself. Not owned.
     */
    const char *uid_map;
    const char *gid_map;

    /*
     * spec->devices resolved (n_devices entries, owned), and the device list
     * the plan builds when the spec gives devices or device_rules: Docker's
     * default list, then an allow per device and per rule (device_rules points
     * to it). A process gets a device cgroup only then.
     */
    struct hd_workload_device *devices;
    size_t n_devices;
    struct hd_device_rule *plan_device_rules;
};

struct hd_backend {
    const char *name;
    int (*prepare)(struct hd_workload *w, hd_error_t *err);
    int (*start)(struct hd_workload *w, hd_error_t *err);
    int (*signal)(struct hd_workload *w, int sig, hd_error_t *err);
    int (*wait)(struct hd_workload *w, struct hd_exit *exit, hd_error_t *err);
    int (*stats)(struct hd_workload *w, struct hd_stats *stats, hd_error_t *err);
    void (*cleanup)(struct hd_workload *w);
};

extern const struct hd_backend hd_backend_process;
extern const struct hd_backend hd_backend_container;
extern const struct hd_backend hd_backend_vm;

const struct hd_backend *hd_backend_for(enum hd_isolation iso);

/* Turn a wait(2) status into struct hd_exit (docker's codes). */
void hd_exit_from_wait_status(int wstatus, struct hd_exit *exit);

/* Steps shared by backends whose workload is one host process (w->pid) in w->cgroup. */
int hd_backend_pid_signal(struct hd_workload *w, int sig, hd_error_t *err);
int hd_backend_pid_wait(struct hd_workload *w, struct hd_exit *exit, hd_error_t *err);
int hd_backend_cgroup_stats(struct hd_workload *w, struct hd_stats *stats, hd_error_t *err);

#endif
