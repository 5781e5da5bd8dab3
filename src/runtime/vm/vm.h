/*
 * vm.h - the parts of the VM isolation backend, shared by vm.c (the backend:
 * lifecycle and I/O relay), vm_exec.c (processes exec'd beside the workload),
 * vm-qemu.c (how QEMU is started), vm-assets.c (guest kernel, initramfs,
 * rootfs images) and vm-accel.c (is KVM usable?), plus what the CLI's
 * `hedge vm` verb and run.c need.
 *
 * The QEMU-specific part is only vm-qemu.c: a native KVM VMM would replace it
 * and keep the rest (protocol, assets, relay).
 */
#ifndef HEDGE_VM_H
#define HEDGE_VM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/error.h"
#include "spec/spec.h"

/* The guest kernel hedge boots: a dir laid out by scripts/fetch-guest-kernel. */
struct hd_vm_kernel {
    char *dir;          /* $HEDGE_VM_KERNEL_DIR or <state>/vm/kernel */
    char *vmlinuz;      /* dir/vmlinuz */
    char *release;      /* contents of dir/release, e.g. 6.1.0-56-cloud-amd64 */
    char **modules;     /* dir/modules/NN-name.ko in load order (may be empty) */
    char **net_modules; /* dir/modules/net/NN-name.ko: loaded only when the guest has a network */
    char **fs_modules;  /* dir/modules/fs/NN-name.ko (virtiofs): loaded only when it has a host directory */
};

/* The one place the guest kernel lives: $HEDGE_VM_KERNEL_DIR, else <state>/vm/kernel (by default
 * /var/lib/hedge/vm/kernel). `hedge vm kernel fetch`, `make guest-kernel`, hedged and the package all
 * use it. Returns a new string. */
char *hd_vm_kernel_dir(const char *state_dir);
int hd_vm_kernel_find(const char *state_dir, struct hd_vm_kernel *k, hd_error_t *err);
void hd_vm_kernel_free(struct hd_vm_kernel *k);

/* Path of the hedge-init binary: $HEDGE_INIT, next to the running hedge, or libexecdir. */
int hd_vm_init_binary(char **out, hd_error_t *err);

/*
 * The initramfs (newc cpio: hedge-init as /init + the kernel's modules),
 * built once per content and cached in <state>/vm/. $HEDGE_VM_INITRD
 * replaces it with a custom one.
 */
int hd_vm_initramfs(const char *state_dir, const struct hd_vm_kernel *k, char **path, hd_error_t *err);

/*
 * The read-only erofs image of a rootfs, cached in <state>/vm/rootfs/ by the
 * image's content digest, or for a plain directory by a digest of its tree's
 * metadata (paths, modes, owners, sizes, mtimes, link targets).
 */
int hd_vm_rootfs_image(const char *state_dir, const char *rootfs, const char *image_digest, char **path,
                       hd_error_t *err);

enum hd_vm_accel {
    HD_VM_ACCEL_TCG,
    HD_VM_ACCEL_KVM,
};

struct hd_vm_accel_probe {
    bool usable;      /* KVM runs an ordinary guest at native speed */
    double loop_ms;   /* time of the probe guest's loop, < 0 if it did not run */
    char reason[256]; /* why not usable, or a short description */
};

/* Time a tiny real-mode guest loop through the KVM API (bounded to a few ms). */
void hd_vm_accel_probe(struct hd_vm_accel_probe *probe);
/* Pick the accelerator for want ("auto", "kvm", "tcg" or NULL = auto). auto
 * without a usable KVM prints one warning line and picks TCG. */
int hd_vm_accel_choose(const char *want, bool quiet, enum hd_vm_accel *out, hd_error_t *err);
const char *hd_vm_accel_name(enum hd_vm_accel accel);

struct hd_workload;
/* The guest's address ("10.89.0.2/24") on the hedge bridge, or NULL without a bridge network. */
const char *hd_vm_guest_address(const struct hd_workload *w);

/*
 * One more process in the running guest beside the workload (hedge-oci-vm exec): records are CONFIG's
 * HD_VM_CFG_ARG/ENV/WORKDIR/USER records. Takes in_fd, out_fd, err_fd and done_fd (closed on error too):
 * what in_fd gives until its end is the process's stdin (read without blocking the relay; in_fd is closed at
 * its end), its stdout and stderr are written to out_fd and err_fd, its exit code (u32, docker's) to done_fd,
 * then all are closed; when the VM ends first they are closed without a code.
 */
int hd_vm_exec(struct hd_workload *w, const char *records, size_t len, int in_fd, int out_fd, int err_fd, int done_fd,
               hd_error_t *err);

/* ---- hedge-oci-vm: what an OCI bundle gives a guest beyond a hedge spec ---- */

/*
 * What an exec's caller writes on the done connection (hd_vm_exec) while its process runs: signal 0 and a
 * terminal's new size (EXEC_RESIZE), or a signal for the process (EXEC_SIGNAL). When the connection ends
 * before the process did (the caller died: SIGKILL), the process gets SIGKILL.
 */
struct hd_vm_exec_control {
    uint32_t signal;
    uint16_t rows, cols;
};

/* After hd_workload_create, before start: the workload runs on a pty of the guest's, rows x cols (0 0:
 * unknown); its stdin and stdout (a raw host terminal's slave, or pipes) are relayed to the pty's master. */
int hd_vm_set_terminal(struct hd_workload *w, unsigned rows, unsigned cols, hd_error_t *err);
/* The workload's terminal has a new size (RESIZE: its foreground process group gets SIGWINCH). */
int hd_vm_resize(struct hd_workload *w, unsigned rows, unsigned cols, hd_error_t *err);

/* A file an engine binds into the container (/etc/hosts, /etc/resolv.conf, ...): copied into the guest and
 * bound at target there (a file of its own, on the guest's side: writes do not reach the host). */
struct hd_vm_file {
    const char *target;
    unsigned mode; /* permission bits */
    uid_t uid;
    gid_t gid;
    bool readonly;
    const char *data; /* len bytes */
    size_t len;
};

/* The files' total a guest takes (they follow CONFIG as FILE_DATA messages). */
#define HD_VM_FILES_MAX (4u << 20)

/* After hd_workload_create, before hd_workload_start: the files go to the guest with CONFIG. */
int hd_vm_add_files(struct hd_workload *w, const struct hd_vm_file *files, size_t n, hd_error_t *err);

/* A host directory shared with the guest (hedge-oci-vm's bind mounts of directories): virtiofs, one
 * virtiofsd per share, mounted by hedge-init at target. */
struct hd_vm_share {
    const char *source;
    const char *target;
    bool readonly; /* virtiofsd sees source read-only (a read-only bind in its own mount namespace) */
};
/* After hd_workload_create, before start: needs the guest kernel's virtiofs modules and virtiofsd (a cold
 * boot, guest RAM on shared memory). */
int hd_vm_add_shares(struct hd_workload *w, const struct hd_vm_share *shares, size_t n, hd_error_t *err);

/* The guest's NIC on an engine's network namespace (netns.c, Kata's tc redirect). */
struct hd_vm_netns_link {
    char ifname[16];  /* the engine's interface in the namespace (the veth, eth0) */
    char tap[16];     /* the tap made beside it */
    char mac[18];     /* the veth's MAC: the guest NIC's */
    char address[24]; /* its IPv4 address, "10.88.0.5/16" */
    char gateway[16]; /* the default route's gateway, "" if none */
    int mtu;
    int tap_fd; /* the tap (alive while open), for QEMU */
};
/* Read the interface, make the tap and redirect both ways (tc) in the namespace at netns_path. */
int hd_vm_netns_attach(const char *netns_path, struct hd_vm_netns_link *l, hd_error_t *err);
/* Remove the redirect from ifname (the tap goes with its last fd); nothing when the namespace is gone. */
int hd_vm_netns_detach(const char *netns_path, const char *ifname, hd_error_t *err);
/* After hd_workload_create, before start: the guest's NIC on the namespace at netns_path (a cold boot: a
 * template has no NIC). What it made is undone when the workload is destroyed or released; *link (may be
 * NULL) gets the interface's names for a later hd_vm_netns_detach by another process. */
int hd_vm_attach_netns(struct hd_workload *w, const char *netns_path, struct hd_vm_netns_link *link, hd_error_t *err);

/* Limits for the host cgroup that holds QEMU: guest RAM + QEMU's own overhead,
 * pids for QEMU's threads (the spec's pids apply inside the guest). */
void hd_vm_host_resources(const struct hd_resources *spec_res, struct hd_resources *out);

/*
 * A host device given to the guest (spec devices[], docs/vm.md#devices): a tty as a virtio-serial port
 * named name (QEMU's serial chardev), a block device as virtio-blk with serial name. hedge-init finds it
 * by that name and makes its node at target.
 */
struct hd_vm_device {
    char kind;             /* 'c' (tty → virtserialport) or 'b' (block → virtio-blk) */
    const char *host_path; /* the host node */
    const char *target;    /* where the node appears in the guest */
    bool readonly;         /* block only: readonly=on */
    unsigned mode;         /* the guest node's permission bits (r → 0444, w → 0222) */
    char name[40];         /* port name or disk serial (virtio-blk keeps 20 bytes: ours are shorter) */
};

/* How QEMU is started (vm-qemu.c). */
struct hd_vm_launch {
    const char *vmlinuz;
    const char *initramfs;
    const char *rootfs_image;
    const char *console_log; /* guest serial console goes here */
    const char *qemu_log;    /* QEMU's own stderr */
    int port_fd;             /* connected socket: the virtio-serial port's host end */
    enum hd_vm_accel accel;
    int64_t ram_bytes;
    int vcpus;
    const char *extra_append;           /* appended to the kernel command line, may be NULL */
    int tap_fd;                         /* a tap on the hedge bridge for virtio-net, or -1 */
    const char *mac;                    /* the guest NIC's MAC when tap_fd >= 0 */
    int qmp_fd;                         /* connected socket: QEMU's QMP monitor (fd 5 in QEMU), or -1 */
    const struct hd_vm_device *devices; /* n_devices host devices for the guest */
    size_t n_devices;
    /* templates (template.c): guest RAM in this file instead of anonymous memory (NULL: anonymous).
     * mem_share: writes go to the file (building a template); else the file is mapped privately
     * (a clone: copy-on-write, the template stays as it is). */
    const char *mem_path;
    bool mem_share;
    bool incoming;        /* -incoming defer: wait for migrate-incoming (restore from a template) */
    int incoming_fd;      /* with incoming: the template's state file, fd 6 in QEMU (migrate-incoming "fd:6"); -1 */
    char **share_sockets; /* virtiofsd's vhost-user sockets, one vhost-user-fs device each (tag hdfsN); RAM
                             then is shared memory (memfd) */
};

struct hd_cgroup;
/* Spawn QEMU inside cg (may be NULL) before it runs; returns its pid. QEMU gets
 * port_fd as fd 3 and no other descriptor of ours. */
int hd_vm_qemu_spawn(const struct hd_vm_launch *launch, struct hd_cgroup *cg, pid_t *pid, hd_error_t *err);

/* The machine type for accel ($HEDGE_VM_MACHINE overrides it). */
const char *hd_vm_machine_type(enum hd_vm_accel accel);
/* Extra kernel arguments from $HEDGE_VM_APPEND and $HEDGE_VM_DEBUG (new string, may be ""). */
char *hd_vm_extra_append(void);

/* ---- templates (template.c) ---- */

/* The rootfs disk slot a template leaves: virtio-blk reads a disk's size once, so every clone's
 * rootfs image is padded to this size (sparse); a larger image cannot use a template. */
#define HD_VM_SLOT_BYTES (1ll << 30)
/* The slot disk's format node in QEMU (its file node is HD_VM_SLOT_NODE "-file"). */
#define HD_VM_SLOT_NODE "hdslot"

struct hd_vm_template_inputs {
    const char *state_dir;
    const char *vmlinuz;
    const char *initramfs;
    int64_t ram_bytes;
    int vcpus;
    enum hd_vm_accel accel;
    const char *append; /* extra kernel arguments (hd_vm_extra_append), may be NULL */
};

struct hd_vm_template {
    char key[65];
    char *dir, *ram_path, *state_path, *manifest_path;
};

/* <state>/vm/templates (new string). */
char *hd_vm_templates_dir(const char *state_dir);
/* The SHA-256 of every input that shapes a saved guest. */
int hd_vm_template_key(const struct hd_vm_template_inputs *in, char key[65], hd_error_t *err);
/* The verified template for a guest of this shape booting vmlinuz and initramfs with this process's extra
 * kernel arguments (hd_vm_extra_append): 0; -1 with errnum ENOENT when there is none (stale then gets the key
 * of one of the same shape built from other inputs, or ""), another error when it is corrupt (manifest, state
 * file's sha256, RAM file's size). */
int hd_vm_template_lookup(const char *state_dir, const char *vmlinuz, const char *initramfs, int64_t ram_bytes,
                          int vcpus, enum hd_vm_accel accel, struct hd_vm_template *t, char stale[65], hd_error_t *err);
/* Build it (boot, READY, pause, save) unless a verified one exists (force: rebuild). */
int hd_vm_template_build(const struct hd_vm_template_inputs *in, bool force, struct hd_vm_template *t, bool *built,
                         hd_error_t *err);
struct json_t;
/* Check the template in dir (against want_key if not NULL); its manifest in *manifest when asked. */
int hd_vm_template_verify(const char *dir, const char *want_key, struct json_t **manifest, hd_error_t *err);
struct hd_qmp;
/* A clone waiting in -incoming defer with the template's state file as fd 6: load it (x-ignore-shared: the RAM
 * is the template's file) and let the guest run; bounded by timeout_ms. */
int hd_vm_template_restore(struct hd_qmp *q, int timeout_ms, hd_error_t *err);
void hd_vm_template_free(struct hd_vm_template *t);

/* ---- a warm pool's member (pool.c) ---- */

/*
 * A clone (named id, hd_random_id) of the template for (ram_bytes, vcpus, accel: "auto", "kvm", "tcg" or NULL; want_key: the template that
 * must be found, or NULL for any), restored, rehearsed (WARM) and running
 * in a cgroup of its own, its guest waiting for CONFIG. A workload takes it through hd_run_options.vm_pooled
 * (its template must be the one the workload would restore; else the workload destroys it and starts as
 * usual). The caller must stay QEMU's parent: the workload's process reaps it.
 */
struct hd_vm_pooled;
int hd_vm_pooled_start(const char *id, const char *state_dir, int64_t ram_bytes, int vcpus, const char *accel,
                       const char *want_key, struct hd_vm_pooled **out, hd_error_t *err);
/* The clone id's dir: <runtime>/vm-pool/<id> (its cgroup is hedge/vm-pool-<id>). New string. */
char *hd_vm_pooled_dir(const char *id);
/* Kill QEMU, reap it, remove its cgroup and files. p may be NULL. */
void hd_vm_pooled_destroy(struct hd_vm_pooled *p);
pid_t hd_vm_pooled_qemu_pid(const struct hd_vm_pooled *p);
int hd_vm_pooled_qemu_pidfd(const struct hd_vm_pooled *p); /* readable when QEMU ended */
const char *hd_vm_pooled_key(const struct hd_vm_pooled *p);

#endif
