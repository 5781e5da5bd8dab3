/*
 * init.h - what the three parts of hedge-init share.
 *
 * hedge-init.c is PID 1's life: boot, the host port and the CONFIG message, the workload and the relay loop,
 * EXIT and power-off. setup.c builds the guest the workload runs in from that CONFIG (entropy and clock,
 * rootfs, devices, shares, bound files, secrets, machine id, cgroup, network). exec.c runs the processes EXEC
 * messages start beside the workload, each a session with its own stdio, stdin window, pty and signals.
 *
 * There is one thread and one host port: port_fd and the guest_fail that reports on it are global, and any
 * part may end the guest with guest_fail (it never returns).
 */
#ifndef HEDGE_INIT_H
#define HEDGE_INIT_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "runtime/vm/proto.h"

#define GUEST_CGROUP "/cg"
#define WORKLOAD_CGROUP GUEST_CGROUP "/workload"
#define DEVICE_WAIT_MS 20000
#define FILES_DIR "/hedge-files"

struct guest_config {
    char **argv;
    char **env;
    char *workdir;
    char *user;
    char *hostname;
    char *pids;
    char *memory;
    int readonly;
    char *net_address; /* "10.89.0.2/24" with a bridge network, else NULL */
    char *net_gateway;
    char *machine_id; /* 32 hex digits for /etc/machine-id */
    unsigned char seed[HD_VM_SEED_BYTES];
    int have_seed;
    struct timespec clock; /* the host's wall clock when it sent CONFIG */
    int have_clock;
    char **devices;               /* HD_VM_CFG_DEVICE records: "KIND NAME MODE TARGET" */
    struct guest_secret *secrets; /* HD_VM_CFG_SECRET records, wiped once written */
    size_t n_secrets;
    struct guest_file *files; /* HD_VM_CFG_FILE records: their bytes in FILES_DIR/N */
    size_t n_files;
    char *net_mtu;
    char **shares; /* HD_VM_CFG_SHARE records: "RO TAG TARGET" */
    int tty;       /* HD_VM_CFG_TERMINAL: the workload runs on a guest pty of tty_rows x tty_cols */
    unsigned tty_rows, tty_cols;
};

/* A file bound into the guest (hedge-oci-vm's bind mounts of files): FILES_DIR/<index>, bound at target. */
struct guest_file {
    unsigned mode;
    unsigned uid, gid;
    int readonly;
    size_t len;
    char *target;
};

struct guest_secret {
    unsigned mode;
    long long uid, gid; /* -1: the workload user's */
    char *target;
    char *value;
    size_t len;
};

/* ---- hedge-init.c ---- */

extern int port_fd; /* the virtio-serial port to the host */

/* Report a failure to the host (exit code + text) and the console, then power off. */
__attribute__((noreturn, format(printf, 3, 4))) void guest_fail(int code, int errnum, const char *fmt, ...);
void debug_phase(const char *phase);
uint64_t now_ms(void);
void sleep_ms(long ms);
/* Read a one-line sysfs attribute dir/entry/attr into buf (newline dropped); 0, or -1 if absent. */
int read_sysfs_attr(const char *dir, const char *entry, const char *attr, char *buf, size_t size);
void mount_or_fail(const char *src, const char *target, const char *type, unsigned long flags, const char *data);
void load_modules(const char *dir);

/* ---- setup.c: the guest, built in this order before the workload starts ---- */

void apply_host_state(struct guest_config *cfg);
void setup_rootfs(const struct guest_config *cfg);
void setup_devices(const struct guest_config *cfg);
void setup_shares(const struct guest_config *cfg);
void setup_files(const struct guest_config *cfg);
void setup_secrets(struct guest_config *cfg);
void setup_machine_id(const struct guest_config *cfg);
void setup_cgroup(const struct guest_config *cfg);
void setup_network(const struct guest_config *cfg);
/* WARM (a pool's clone, before CONFIG): run the start's code paths once on nothing, undo them all. */
void rehearse_start(void);
/* hedge-init exec'd by the rehearsal: argv[0], it exits at once. */
#define HD_INIT_REHEARSAL_ARGV0 "hedge-init-rehearsal"

/* ---- exec.c: exec sessions, and the stdio plumbing the workload shares with them ---- */

#define MAX_EXECS 16
#define EXEC_POLL_FDS (3 * MAX_EXECS) /* the pollfds exec_poll_fds fills */

int exec_stdio(int tty, unsigned rows, unsigned cols, int in[2], int out[2], int errp[2]);
ssize_t read_pipe(int *fd, char *buf, size_t cap);

/* The host's EXEC_* messages (their payloads checked against proto.h already). */
void start_exec(const unsigned char *payload, uint32_t length);
void exec_stdin(const unsigned char *payload, uint32_t length);
void exec_stdin_eof(const unsigned char *payload);
void exec_resize(const unsigned char *payload);
void exec_signal(const unsigned char *payload);

/* The relay loop's side: what to poll, what poll said, a reaped child, and sessions that are done. */
void exec_poll_fds(struct pollfd fds[EXEC_POLL_FDS]);
void exec_poll_events(const struct pollfd fds[EXEC_POLL_FDS]);
void exec_reaped(pid_t pid, int status);
void finish_execs(void);

#endif
