/*
 * vm_internal.h - what the vm backend's parts share: vm.c (prepare, start, the relay thread, signal,
 * wait, cleanup), config.c (the CONFIG message: built at prepare, sent at READY) and vm_exec.c (the processes
 * hedge-oci-vm exec runs beside the workload: their sessions, and the relay of their EXEC_* messages), and
 * share.c's virtiofsd. Not for use outside runtime/vm/.
 *
 * struct vm is one guest. The relay thread owns the channel to the guest; the exec sessions in it are
 * shared between the thread that asks for an exec (hd_vm_exec, the holder's main thread) and the relay,
 * under vm->lock.
 */
#ifndef HEDGE_VM_INTERNAL_H
#define HEDGE_VM_INTERNAL_H

#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "runtime/vm/proto.h"
#include "runtime/vm/vm.h"

enum vm_state { VM_PREPARED, VM_BOOTING, VM_RUNNING, VM_EXITED, VM_DEAD };

#define MAX_EXECS 16                /* as hedge-init's */
#define QEMU_OVERHEAD (192ll << 20) /* QEMU itself + 64 MiB TCG translation buffer: its cgroup has guest RAM + this */
#define QEMU_PIDS 64                /* QEMU's threads: vCPUs, I/O, RCU, workers */

/* A process exec'd beside the workload (hd_vm_exec): where its stdin comes from, where its output and its
 * exit code go. */
struct vm_exec {
    uint32_t id;
    int in_fd;                   /* the caller's stdin, -1 once its end went to the guest */
    int out_fd, err_fd, done_fd; /* done_fd -1: a free slot */
    uint32_t unacked;            /* EXEC_STDIN bytes sent and not acknowledged (relay thread) */
    bool tty;                    /* on a terminal: done_fd also brings its sizes */
    bool caller_open;            /* done_fd (signals, sizes: struct hd_vm_exec_control) has not ended (relay) */
};

/* A host directory for the guest (share.c): its virtiofsd. */
struct vm_share {
    char *source, *target;
    bool readonly;
    pid_t pid; /* virtiofsd, -1 before it runs */
};

/* A message for the guest waiting for the relay (EXEC). */
struct vm_pending {
    uint32_t type;
    uint32_t length;
    unsigned char *payload;
    struct vm_pending *next;
};

struct vm {
    enum vm_state state;
    struct hd_vm_kernel kernel;
    char *initramfs;
    char *rootfs_image;
    char *console_log;
    char *qemu_log;
    enum hd_vm_accel accel;
    char *config;
    size_t config_len;
    char *secrets; /* HD_VM_CFG_SECRET records (decrypted values): wiped once sent */
    size_t secrets_len;
    struct hd_net *net;             /* the tap of a bridge network, or NULL */
    struct hd_vm_netns_link *netns; /* hedge-oci-vm: the tap in an engine's network namespace, or NULL */
    char *netns_path;
    char *files; /* hedge-oci-vm: the FILE records' bytes (files_len), sent after CONFIG */
    size_t files_len;
    struct vm_share *shares; /* hedge-oci-vm: host directories (n_shares), one virtiofsd each */
    size_t n_shares;
    char *share_dir;      /* the 0700 dir of their sockets */
    char **share_sockets; /* for QEMU */
    char mac[18];
    int stdio[3];       /* our copies of w->stdio, -1 once the relay is done with one */
    int port_fd;        /* our end of the channel */
    int qemu_end;       /* QEMU's end until it is spawned */
    int qmp_end;        /* QEMU's end of the QMP socketpair until it is spawned */
    int qmp_fd;         /* our end, until hd_qmp_attach takes it */
    struct hd_qmp *qmp; /* attached on first use (main thread only, before the relay runs) */
    pid_t qemu_pid;
    int qemu_pidfd; /* signals go through it: never to a recycled pid */
    int qemu_status;
    bool qemu_reaped;

    pthread_t relay;
    bool relay_started;
    int wake_fd; /* eventfd: queued signals or stop request for the relay */
    pthread_mutex_t lock;
    /* guarded by lock */
    int queued_signals[16];
    int n_queued;
    uint64_t kill_at_ms; /* 0, or when the relay kills QEMU (grace expired) */
    bool stop;
    bool discard_output; /* the VM is being killed: output nobody takes at once is dropped */
    bool kill_requested; /* SIGKILL was asked for (no message: like a process killed by its owner) */
    struct vm_exec execs[MAX_EXECS];
    uint32_t next_exec_id;
    size_t next_stdin_session;  /* relay thread: where the next round over the sessions' stdin starts */
    struct vm_pending *pending; /* messages for the guest, in order */
    /* written by the relay, read after it is joined */
    bool got_exit;
    struct hd_vm_exit_msg exit_msg;
    bool got_error;
    int error_code;
    char error_text[1024];
    char relay_problem[300]; /* protocol error or a deadline that fired */
    bool killed_after_grace;
    struct hd_vm_device *devices; /* spec devices for the guest (n_devices) */
    size_t n_devices;
    /* templates: restore instead of boot (vm_boot auto/snapshot and a verified template) */
    bool snapshot;
    bool boot_insist; /* --vm-boot snapshot: no fallback to a cold boot */
    struct hd_vm_template tmpl;
    char machine_id[33];         /* the guest's /etc/machine-id: its own, also for clones */
    int state_fd;                /* the template's state file, open while QEMU starts (fd 6 in QEMU) */
    struct hd_vm_pooled *pooled; /* a warm pool's clone of tmpl this guest takes over at start (pool.c) */
    char *pool_dir;              /* its dir (logs), removed at cleanup once taken over */
};

/* A warm pool's member (pool.c): a restored clone of tmpl, running, its guest waiting for CONFIG. */
struct hd_vm_pooled {
    char id[16];
    char *dir; /* <runtime>/vm-pool/<id>: QEMU's log and the guest's console (the placeholder is unlinked) */
    char *console_log, *qemu_log;
    char *vmlinuz, *initramfs;
    struct hd_vm_template tmpl;
    int64_t ram_bytes;
    int vcpus;
    enum hd_vm_accel accel;
    struct hd_cgroup *cgroup; /* hedge/vm-pool-<id> until a workload's cgroup takes QEMU */
    pid_t qemu_pid;           /* our child */
    int qemu_pidfd;
    int port_fd; /* our end of the guest's channel */
    struct hd_qmp *qmp;
};

/* The relay's one message for the guest in flight (the socket is non-blocking). */
struct outgoing {
    unsigned char buf[sizeof(struct hd_vm_msg_header) + HD_VM_MSG_MAX];
    size_t len, off;
};

/* ---- vm.c ---- */

/* Put one message in the relay's outgoing buffer (which is empty). */
void hd_vm_outgoing_set(struct outgoing *o, uint32_t type, const void *payload, uint32_t length);
/* Write guest output to a caller's fd without ever blocking the relay for good (see vm.c). */
void hd_vm_write_out(struct vm *vm, int fd, const unsigned char *data, size_t len);

/* Send one whole message on the (blocking) socket, without SIGPIPE: 0 or -errno. */
int hd_vm_socket_send_all(int fd, const void *buf, size_t len);

/* ---- config.c ---- */

/* Encode the spec as the CONFIG message's records (vm->config) and the secrets' (vm->secrets), at prepare. */
int hd_vm_config_build(struct hd_workload *w, struct vm *vm, hd_error_t *err);
/* Add a record to a prepared guest's CONFIG, within the message's bound. */
int hd_vm_config_append(struct vm *vm, char tag, const char *value, hd_error_t *err);
/* Answer READY: CONFIG with a fresh seed and clock, then the bound files' bytes; the buffers are wiped. */
int hd_vm_config_send(struct vm *vm, hd_error_t *err);
/* Wipe and free what CONFIG held (cleanup, when it never went). */
void hd_vm_config_wipe(struct vm *vm);

/* ---- pool.c ---- */

/* The workload's rootfs image into a pooled clone's disk slot, under the running guest. */
int hd_vm_pooled_attach_rootfs(struct hd_vm_pooled *p, const char *image, hd_error_t *err);

/* ---- share.c ---- */

/* Start each share's virtiofsd (before QEMU; logs in run_dir). */
int hd_vm_shares_start(struct vm *vm, const char *run_dir, hd_error_t *err);
/* Kill and reap them, remove their sockets, free the shares. */
void hd_vm_shares_stop(struct vm *vm);

/* ---- vm_exec.c ---- */

/* Mark every exec slot free (prepare). */
void hd_vm_exec_init(struct vm *vm);
/* An EXEC_STDOUT/EXEC_STDERR/EXEC_EXIT/EXEC_STDIN_ACK message from the guest: relay it. 1 when handled, 0
 * when h is not one of them, -1 on a protocol violation (vm->relay_problem says which). */
int hd_vm_exec_handle(struct vm *vm, const struct hd_vm_msg_header *h, const unsigned char *payload);
/* The relay's poll entries for the sessions' input (fds[2 * MAX_EXECS]): their stdin, read when may_send (the
 * relay has no message in flight), no EXEC waits to go out and the session's window has room; then their
 * callers' done connections (signals, terminal sizes). */
void hd_vm_exec_input_poll(struct vm *vm, bool may_send, struct pollfd *fds);
/* After poll: a caller's signal as EXEC_SIGNAL or terminal size as EXEC_RESIZE, else one chunk (or the end) of a ready session's stdin as
 * EXEC_STDIN (EXEC_STDIN_EOF), into out. */
void hd_vm_exec_input_read(struct vm *vm, const struct pollfd *fds, struct outgoing *out);
/* The guest is gone: close every session's descriptors (their callers see the end, without a code). */
void hd_vm_exec_close_all(struct vm *vm);

#endif
