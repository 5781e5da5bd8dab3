/*
 * hedge-init.c - PID 1 of a hedge VM guest (static, no libc beyond glibc's
 * static archive). The initramfs holds it as /init plus the kernel modules
 * the guest needs in /modules, named NN-name.ko in load order.
 *
 * Boot to workload:
 *   1. mount /proc, /sys, /dev (devtmpfs); load /modules/NN-name.ko in name order
 *      with finit_module (Debian's cloud kernel builds virtio, erofs and
 *      overlay as modules; devices then appear asynchronously);
 *   2. find the virtio-serial port named HD_VM_PORT_NAME via
 *      /sys/class/virtio-ports/<dev>/name (no udev here), say READY and read
 *      the CONFIG message (vm-proto.h) the host answers with; credit the
 *      host's entropy seed and reseed the CRNG (no RDRAND in the guest CPU),
 *      set the wall clock from the host's;
 *   3. mount the erofs rootfs from /dev/vda read-only at /lower, a tmpfs for
 *      writes and an overlay of both at /newroot (or /lower as is when the
 *      rootfs is read-only), with /proc, /sys and /dev inside;
 *   3a. make the host's devices (CONFIG's device records) appear at their targets;
 *       bind the files hedge-oci-vm copied in (FILE records, their bytes in
 *       FILE_DATA messages right after CONFIG) at their destinations;
 *   3b. bring lo up; with a network (hedge's bridge, or an engine's network
 *      namespace the host redirects to the tap) load /modules/net, give eth0
 *      the address (and MTU) and a default route via the gateway, if any
 *      (plain ioctls);
 *   4. put the workload in a guest cgroup v2 group whose pids.max and
 *      memory.max come from the spec (so pids are enforced *inside* the guest,
 *      and an OOM kill shows in memory.events), fork, chroot, apply
 *      user/workdir/env and exec - child.c's hd_child_exec, shared with the
 *      process and container backends, so messages and 126/127 are the same;
 *   5. relay stdin/stdout/stderr and signals as messages (and start the
 *      processes EXEC messages ask for beside the workload, relaying theirs:
 *      their stdin through a window of buffered EXEC_STDIN bytes each),
 *      report the exit status (and OOM), wait for the host's EXIT_ACK (its
 *      output is then delivered on the host) and power off.
 *
 * Any failure before or after the workload runs goes to the host as an ERROR
 * message (and to the console), then the guest powers off: the host never
 * waits on a guest that gave up. A malformed message from the host is such a
 * failure.
 *
 * This file holds PID 1's life: boot, the host port, CONFIG (and the bound
 * files' bytes after it), the workload, the relay loop, EXIT and power-off.
 * The guest's set-up (steps 2-4: entropy and clock, rootfs, devices, shares,
 * files, secrets, machine id, cgroup, network) is setup.c; the EXEC sessions
 * (their table, stdin windows, ptys, signals) are exec.c; init.h is what the
 * three share.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/child.h"
#include "base/util.h"
#include "init/init.h"

#define EXIT_ACK_WAIT_MS 10000 /* the host acknowledges EXIT at once; the bound is for a host gone wrong */

int port_fd = -1;
static struct hd_vm_reader host_reader; /* messages from the host, after CONFIG */
static int debug;                       /* "hedge.debug" on the kernel command line: phase timestamps on the console */

static void console_print(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void console_print(const char *fmt, ...)
{
    char line[1200];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    int fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        fd = 2;
    dprintf(fd, "hedge-init: %s\n", line);
    if (fd != 2)
        close(fd);
}

void debug_phase(const char *phase)
{
    if (!debug)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    console_print("%ld.%03ld %s", (long)ts.tv_sec, ts.tv_nsec / 1000000, phase);
}

__attribute__((noreturn)) static void power_off(void)
{
    sync();
    reboot(RB_POWER_OFF);
    /* reboot(2) only returns on failure; PID 1 must not exit (that panics, which -no-reboot also ends) */
    for (;;)
        pause();
}

static void wait_for_exit_ack(void);

/* Report a failure to the host (exit code + text) and the console, then power off. */
void guest_fail(int code, int errnum, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (n >= 0 && errnum && (size_t)n < sizeof(text))
        snprintf(text + n, sizeof(text) - (size_t)n, ": %s", strerror(errnum));
    console_print("%s", text);
    if (port_fd >= 0) {
        char msg[4 + sizeof(text)];
        uint32_t c = (uint32_t)code;
        size_t len = strlen(text);
        memcpy(msg, &c, 4);
        memcpy(msg + 4, text, len);
        /* As after EXIT: power off only once the host has the message (QEMU drops what its chardev has not
         * passed on yet when the guest goes down, which a loaded host shows) */
        if (hd_vm_send(port_fd, HD_VM_MSG_ERROR, msg, (uint32_t)(4 + len)) == 0)
            wait_for_exit_ack();
    }
    power_off();
}

uint64_t now_ms(void)
{
    return hd_now_ns() / 1000000u;
}

void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Read a one-line sysfs attribute dir/entry/attr into buf (newline dropped); 0, or -1 if absent. */
int read_sysfs_attr(const char *dir, const char *entry, const char *attr, char *buf, size_t size)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s/%s", dir, entry, attr);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    return 0;
}

void mount_or_fail(const char *src, const char *target, const char *type, unsigned long flags, const char *data)
{
    mkdir(target, 0755);
    if (mount(src, target, type, flags, data) < 0)
        guest_fail(HD_EXIT_HEDGE, errno, "mount %s (%s) on %s", src, type, target);
}

static int select_ko(const struct dirent *d)
{
    size_t n = strlen(d->d_name);
    return n > 3 && strcmp(d->d_name + n - 3, ".ko") == 0;
}

/* Load the modules in dir in name order; a module already built in or loaded is fine. */
void load_modules(const char *dir)
{
    struct dirent **names = NULL;
    int n = scandir(dir, &names, select_ko, alphasort);
    if (n < 0)
        return; /* a custom kernel with everything built in */
    for (int i = 0; i < n; i++) {
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            guest_fail(HD_EXIT_HEDGE, errno, "open module %s", path);
        if (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST)
            guest_fail(HD_EXIT_HEDGE, errno, "load module %s", path);
        close(fd);
        debug_phase(names[i]->d_name);
        free(names[i]);
    }
    free(names);
}

/* Find /dev/<port> whose /sys/class/virtio-ports/<port>/name is ours; wait for it to appear. */
static int open_host_port(void)
{
    uint64_t deadline = now_ms() + DEVICE_WAIT_MS;
    for (;;) {
        DIR *d = opendir("/sys/class/virtio-ports");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char path[300], name[64];
            if (read_sysfs_attr("/sys/class/virtio-ports", e->d_name, "name", name, sizeof(name)) < 0 ||
                strcmp(name, HD_VM_PORT_NAME) != 0)
                continue;
            snprintf(path, sizeof(path), "/dev/%s", e->d_name);
            closedir(d);
            int port;
            while ((port = open(path, O_RDWR | O_CLOEXEC)) < 0 && errno == ENOENT && now_ms() < deadline)
                sleep_ms(1);
            if (port < 0)
                guest_fail(HD_EXIT_HEDGE, errno, "open host port %s", path);
            return port;
        }
        if (d)
            closedir(d);
        if (now_ms() >= deadline)
            guest_fail(HD_EXIT_HEDGE, 0, "virtio port %s did not appear within %d ms", HD_VM_PORT_NAME, DEVICE_WAIT_MS);
        sleep_ms(1);
    }
}

/*
 * The FILE records' bytes follow CONFIG as FILE_DATA messages (proto.h): written to FILES_DIR/<index> in
 * the initramfs's root (memory), bound at their targets once the rootfs is mounted (setup_files).
 */
static void read_files(struct guest_config *cfg)
{
    if (cfg->n_files == 0)
        return;
    if (mkdir(FILES_DIR, 0700) < 0 && errno != EEXIST)
        guest_fail(HD_EXIT_HEDGE, errno, "mkdir %s", FILES_DIR);
    size_t have = 0; /* bytes left in the current FILE_DATA message */
    char *chunk = hd_xmalloc(HD_VM_MSG_MAX);
    for (size_t i = 0; i < cfg->n_files; i++) {
        char path[64];
        snprintf(path, sizeof(path), FILES_DIR "/%zu", i);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
            guest_fail(HD_EXIT_HEDGE, errno, "files: create %s", path);
        for (size_t left = cfg->files[i].len; left > 0;) {
            if (have == 0) {
                struct hd_vm_msg_header h;
                int r = hd_vm_read_all(port_fd, &h, sizeof(h));
                if (r < 0)
                    guest_fail(HD_EXIT_HEDGE, -r, "read files from host");
                if (h.type != HD_VM_MSG_FILE_DATA || !hd_vm_msg_valid(h.type, h.length, 0))
                    guest_fail(HD_EXIT_HEDGE, 0, "protocol: expected file data, got type %u length %u", h.type,
                               h.length);
                have = h.length;
            }
            size_t n = have < left ? have : left;
            int r = hd_vm_read_all(port_fd, chunk, n);
            if (r == 0)
                r = hd_vm_write_all(fd, chunk, n);
            if (r < 0)
                guest_fail(HD_EXIT_HEDGE, -r, "files: %s", cfg->files[i].target);
            have -= n;
            left -= n;
        }
        close(fd);
    }
    free(chunk);
    if (have != 0)
        guest_fail(HD_EXIT_HEDGE, 0, "protocol: %zu bytes of file data beyond the files", have);
}

/* Read and decode the CONFIG message (after any WARM: a rehearsal, answered WARM_DONE); malformed → fail. */
static void read_config(struct guest_config *cfg)
{
    struct hd_vm_msg_header h;
    int r;
    for (;;) {
        r = hd_vm_read_all(port_fd, &h, sizeof(h));
        if (r < 0)
            guest_fail(HD_EXIT_HEDGE, -r, "read config from host");
        if (h.type != HD_VM_MSG_WARM || h.length != 0)
            break;
        rehearse_start();
        debug_phase("rehearsed");
        r = hd_vm_send(port_fd, HD_VM_MSG_WARM_DONE, NULL, 0);
        if (r < 0)
            guest_fail(HD_EXIT_HEDGE, -r, "send warm-done");
    }
    if (h.type != HD_VM_MSG_CONFIG || !hd_vm_msg_valid(h.type, h.length, 0))
        guest_fail(HD_EXIT_HEDGE, 0, "protocol: expected a config message, got type %u length %u", h.type, h.length);
    char *buf = hd_xmalloc(h.length);
    r = hd_vm_read_all(port_fd, buf, h.length);
    if (r < 0)
        guest_fail(HD_EXIT_HEDGE, -r, "read config from host");
    for (size_t off = 0; off < h.length;) {
        char tag = buf[off++];
        const char *value = buf + off;
        const char *nul = memchr(value, '\0', h.length - off);
        if (nul == NULL)
            guest_fail(HD_EXIT_HEDGE, 0, "protocol: config record '%c' is not NUL-terminated", tag);
        off += (size_t)(nul - value) + 1;
        switch (tag) {
        case HD_VM_CFG_ARG: hd_strv_push(&cfg->argv, value); break;
        case HD_VM_CFG_ENV: hd_strv_push(&cfg->env, value); break;
        case HD_VM_CFG_WORKDIR: cfg->workdir = hd_xstrdup(value); break;
        case HD_VM_CFG_USER: cfg->user = hd_xstrdup(value); break;
        case HD_VM_CFG_HOSTNAME: cfg->hostname = hd_xstrdup(value); break;
        case HD_VM_CFG_PIDS: cfg->pids = hd_xstrdup(value); break;
        case HD_VM_CFG_MEMORY: cfg->memory = hd_xstrdup(value); break;
        case HD_VM_CFG_READONLY: cfg->readonly = strcmp(value, "1") == 0; break;
        case HD_VM_CFG_NET_ADDRESS: cfg->net_address = hd_xstrdup(value); break;
        case HD_VM_CFG_NET_GATEWAY: cfg->net_gateway = hd_xstrdup(value); break;
        case HD_VM_CFG_DEVICE: hd_strv_push(&cfg->devices, value); break;
        case HD_VM_CFG_SECRET: {
            struct guest_secret sec = {0};
            size_t len = 0;
            int n = 0;
            if (sscanf(value, "%o %lld %lld %zu %n", &sec.mode, &sec.uid, &sec.gid, &len, &n) != 4 || n == 0 ||
                value[n] != '/' || sec.mode > 0777 || len > h.length - off)
                guest_fail(HD_EXIT_HEDGE, 0, "protocol: config secret \"%s\" is not MODE UID GID LEN TARGET", value);
            sec.target = hd_xstrdup(value + n);
            sec.value = hd_xmalloc(len ? len : 1);
            memcpy(sec.value, buf + off, len);
            sec.len = len;
            off += len;
            cfg->secrets = hd_xrealloc(cfg->secrets, (cfg->n_secrets + 1) * sizeof(*cfg->secrets));
            cfg->secrets[cfg->n_secrets++] = sec;
            break;
        }
        case HD_VM_CFG_NET_MTU: cfg->net_mtu = hd_xstrdup(value); break;
        case HD_VM_CFG_SHARE: hd_strv_push(&cfg->shares, value); break;
        case HD_VM_CFG_TERMINAL:
            if (sscanf(value, "%u %u", &cfg->tty_rows, &cfg->tty_cols) != 2 || cfg->tty_rows > 65535 ||
                cfg->tty_cols > 65535)
                guest_fail(HD_EXIT_HEDGE, 0, "protocol: config terminal size \"%s\" is not \"ROWS COLS\"", value);
            cfg->tty = 1;
            break;
        case HD_VM_CFG_FILE: {
            struct guest_file f = {0};
            int n = 0;
            if (sscanf(value, "%o %u %u %d %zu %n", &f.mode, &f.uid, &f.gid, &f.readonly, &f.len, &n) != 5 || n == 0 ||
                value[n] != '/' || f.mode > 07777)
                guest_fail(HD_EXIT_HEDGE, 0, "protocol: config file \"%s\" is not MODE UID GID RO LEN TARGET", value);
            f.target = hd_xstrdup(value + n);
            cfg->files = hd_xrealloc(cfg->files, (cfg->n_files + 1) * sizeof(*cfg->files));
            cfg->files[cfg->n_files++] = f;
            break;
        }
        case HD_VM_CFG_MACHINE_ID: {
            unsigned char id[16];
            if (hd_vm_hex_decode(value, id, sizeof(id)) < 0)
                guest_fail(HD_EXIT_HEDGE, 0, "protocol: config machine id is not 32 hex digits");
            cfg->machine_id = hd_xstrdup(value);
            break;
        }
        case HD_VM_CFG_SEED:
            if (hd_vm_hex_decode(value, cfg->seed, sizeof(cfg->seed)) < 0)
                guest_fail(HD_EXIT_HEDGE, 0, "protocol: config seed is not %d hex digits", 2 * HD_VM_SEED_BYTES);
            cfg->have_seed = 1;
            break;
        case HD_VM_CFG_CLOCK: {
            char *end;
            errno = 0;
            long long sec = strtoll(value, &end, 10);
            long nsec = *end == '.' ? strtol(end + 1, &end, 10) : -1;
            if (errno || *end || sec <= 0 || nsec < 0 || nsec > 999999999)
                guest_fail(HD_EXIT_HEDGE, 0, "protocol: config clock \"%s\" is not SEC.NSEC", value);
            cfg->clock.tv_sec = (time_t)sec;
            cfg->clock.tv_nsec = nsec;
            cfg->have_clock = 1;
            break;
        }
        default: guest_fail(HD_EXIT_HEDGE, 0, "protocol: unknown config tag 0x%02x", (unsigned char)tag);
        }
    }
    explicit_bzero(buf, h.length);
    free(buf);
    if (cfg->argv == NULL)
        guest_fail(HD_EXIT_HEDGE, 0, "protocol: config has no command");
    read_files(cfg);
}

static int oom_kills(void)
{
    char *text = NULL;
    size_t len;
    hd_error_t err = NULL;
    if (hd_read_file(WORKLOAD_CGROUP "/memory.events", &text, &len, &err) < 0) {
        hd_error_free(&err);
        return 0;
    }
    const char *p = strstr(text, "oom_kill ");
    int n = p ? atoi(p + 9) : 0;
    free(text);
    return n;
}

struct workload {
    pid_t pid;
    int in_fd;  /* our end of its stdin, -1 once closed; a terminal's master */
    int out_fd; /* our end of its stdout, -1 at EOF; a terminal's master too (a dup) */
    int err_fd; /* -1 from the start on a terminal: it has one output stream */
    int tty;
};

/* The workload: its stdio three pipes, or (CONFIG's TERMINAL) a guest pty, its controlling terminal. */
static void start_workload(const struct guest_config *cfg, struct workload *wl)
{
    int in[2] = {-1, -1}, out[2] = {-1, -1}, errp[2] = {-1, -1}, report[2];
    if (exec_stdio(cfg->tty, cfg->tty_rows, cfg->tty_cols, in, out, errp) < 0)
        guest_fail(HD_EXIT_HEDGE, errno, cfg->tty ? "a terminal (/dev/pts/ptmx)" : "pipe");
    if (pipe2(report, O_CLOEXEC) < 0)
        guest_fail(HD_EXIT_HEDGE, errno, "pipe");
    pid_t pid = fork();
    if (pid < 0)
        guest_fail(HD_EXIT_HEDGE, errno, "fork");
    if (pid == 0) {
        setsid();
        if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0 || dup2(errp[1], 2) < 0)
            hd_child_fail(report[1], HD_EXIT_HEDGE, errno, "stdio: dup2");
        if (cfg->tty && ioctl(0, TIOCSCTTY, 0) < 0)
            hd_child_fail(report[1], HD_EXIT_HEDGE, errno, "make the terminal the controlling one");
        hd_error_t err = NULL;
        /* hedge-init is exempt from the OOM killer; the workload must not inherit that */
        if (hd_write_file("/proc/self/oom_score_adj", "0", 1, &err) < 0 ||
            hd_write_file(WORKLOAD_CGROUP "/cgroup.procs", "0", 1, &err) < 0)
            hd_child_fail(report[1], HD_EXIT_HEDGE, err->errnum, "%s", err->message);
        if (chroot("/newroot") < 0 || chdir("/") < 0)
            hd_child_fail(report[1], HD_EXIT_HEDGE, errno, "chroot /newroot");
        if (cfg->hostname && sethostname(cfg->hostname, strlen(cfg->hostname)) < 0)
            hd_child_fail(report[1], HD_EXIT_HEDGE, errno, "sethostname %s", cfg->hostname);
        if (cfg->workdir && !cfg->readonly)
            hd_mkdir_p(cfg->workdir, 0755, &err); /* docker creates a missing workdir; chdir reports failure */
        hd_error_free(&err);
        struct hd_exec_plan plan = {
            .argv = cfg->argv,
            .env = cfg->env,
            .workdir = cfg->workdir ? cfg->workdir : "/",
            .user = cfg->user,
            .no_new_privs = false, /* root in the guest: the guest kernel is the boundary */
        };
        hd_child_exec(report[1], &plan);
    }
    close(in[0]);
    close(out[1]);
    close(errp[1]);
    close(report[1]);
    hd_error_t err = NULL;
    if (hd_child_read_report(report[0], &err) < 0) {
        waitpid(pid, NULL, 0);
        guest_fail(hd_error_exit_code(err), 0, "%s", hd_error_text(err));
    }
    close(report[0]);
    wl->pid = pid;
    wl->in_fd = in[1];
    wl->out_fd = out[0];
    wl->err_fd = errp[0];
    wl->tty = cfg->tty;
    fcntl(wl->in_fd, F_SETFL, O_NONBLOCK); /* a terminal's: also out_fd, the same open file */
    int r = hd_vm_send(port_fd, HD_VM_MSG_STARTED, NULL, 0);
    if (r < 0)
        guest_fail(HD_EXIT_HEDGE, -r, "send started");
}

/* Forward what a workload pipe has to the host; close it at EOF. */
static void forward_output(int *fd, uint32_t type)
{
    char buf[16384];
    ssize_t n = read_pipe(fd, buf, sizeof(buf));
    if (n == 0)
        return;
    int r = hd_vm_send(port_fd, type, buf, (uint32_t)n);
    if (r < 0)
        guest_fail(HD_EXIT_HEDGE, -r, "send output to host");
}

/* Stdin bytes the workload has not taken yet; while some wait, the port is not read (backpressure). */
struct pending_input {
    unsigned char *data;
    size_t len, off;
    int eof; /* close stdin once the pending bytes are written */
};

/* The end of the workload's stdin: a pipe is closed; a terminal gets ^D (the end of input, as a terminal says
 * it) and our writing copy of its master is closed. */
static void close_workload_stdin(struct workload *wl)
{
    if (wl->tty) {
        char eof = 4;
        ssize_t n = write(wl->in_fd, &eof, 1);
        (void)n;
    }
    close(wl->in_fd);
    wl->in_fd = -1;
}

static void flush_input(struct workload *wl, struct pending_input *in)
{
    while (wl->in_fd >= 0 && in->off < in->len) {
        ssize_t n = write(wl->in_fd, in->data + in->off, in->len - in->off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n < 0) { /* EPIPE: the workload closed its stdin; drop the rest */
            in->off = in->len;
            break;
        }
        in->off += (size_t)n;
    }
    if (in->off >= in->len) {
        free(in->data);
        in->data = NULL;
        in->len = in->off = 0;
        if (in->eof && wl->in_fd >= 0)
            close_workload_stdin(wl);
    }
}

static void handle_host_message(struct workload *wl, struct pending_input *in, const struct hd_vm_msg_header *h,
                                const unsigned char *payload)
{
    switch (h->type) {
    case HD_VM_MSG_STDIN:
        if (wl->in_fd >= 0 && h->length) {
            in->data = hd_xmalloc(h->length);
            memcpy(in->data, payload, h->length);
            in->len = h->length;
            in->off = 0;
        }
        break;
    case HD_VM_MSG_STDIN_EOF: in->eof = 1; break;
    case HD_VM_MSG_SIGNAL: {
        uint32_t sig;
        memcpy(&sig, payload, 4);
        if (sig == 0 || sig >= 65)
            guest_fail(HD_EXIT_HEDGE, 0, "protocol: signal %u out of range", sig);
        if (wl->pid > 0)
            kill(wl->pid, (int)sig);
        break;
    }
    case HD_VM_MSG_EXEC: start_exec(payload, h->length); break;
    case HD_VM_MSG_EXEC_STDIN: exec_stdin(payload, h->length); break;
    case HD_VM_MSG_EXEC_STDIN_EOF: exec_stdin_eof(payload); break;
    case HD_VM_MSG_EXEC_RESIZE: exec_resize(payload); break;
    case HD_VM_MSG_EXEC_SIGNAL: exec_signal(payload); break;
    case HD_VM_MSG_RESIZE: {
        struct hd_vm_winsize size;
        memcpy(&size, payload, sizeof(size));
        struct winsize ws = {.ws_row = size.rows, .ws_col = size.cols};
        int master = !wl->tty ? -1 : wl->out_fd >= 0 ? wl->out_fd : wl->in_fd;
        if (master >= 0)
            ioctl(master, TIOCSWINSZ, &ws);
        break;
    }
    default: guest_fail(HD_EXIT_HEDGE, 0, "protocol: unexpected message type %u from host", h->type);
    }
    flush_input(wl, in);
}

/* Relay until the workload exited and its output is drained; returns its wait status. */
static int relay(struct workload *wl, int sigchld_fd)
{
    struct hd_vm_reader *reader = &host_reader;
    struct pending_input in = {0};
    int status = -1;
    int port_open = 1;
    /* The port stays blocking: reads only follow POLLIN (one read returns what is there), and
     * writes must wait while the host drains the virtqueue rather than fail with EAGAIN. */
    while (wl->pid > 0 || wl->out_fd >= 0 || wl->err_fd >= 0) {
        struct pollfd fds[5 + EXEC_POLL_FDS] = {
            {.fd = sigchld_fd, .events = POLLIN},
            {.fd = port_open && in.len == 0 ? port_fd : -1, .events = POLLIN},
            {.fd = wl->out_fd, .events = POLLIN},
            {.fd = wl->err_fd, .events = POLLIN},
            {.fd = in.len ? wl->in_fd : -1, .events = POLLOUT},
        };
        exec_poll_fds(fds + 5);
        if (poll(fds, 5 + EXEC_POLL_FDS, -1) < 0) {
            if (errno == EINTR)
                continue;
            guest_fail(HD_EXIT_HEDGE, errno, "poll");
        }
        if (fds[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sigchld_fd, &si, sizeof(si)) > 0)
                ;
            int st;
            pid_t p;
            while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
                exec_reaped(p, st);
                if (p == wl->pid) {
                    status = st;
                    wl->pid = -1;
                    /* background tasks of the workload would keep its pipes open forever */
                    int fd = open(WORKLOAD_CGROUP "/cgroup.kill", O_WRONLY | O_CLOEXEC);
                    if (fd >= 0) {
                        ssize_t w = write(fd, "1", 1);
                        (void)w;
                        close(fd);
                    }
                }
            }
        }
        if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = hd_vm_reader_fill(reader, port_fd);
            if (n == 0 || (n < 0 && n != -EAGAIN)) {
                port_open = 0; /* host went away; finish the workload anyway */
            }
        }
        if (fds[2].revents & (POLLIN | POLLHUP | POLLERR))
            forward_output(&wl->out_fd, HD_VM_MSG_STDOUT);
        if (fds[3].revents & (POLLIN | POLLHUP | POLLERR))
            forward_output(&wl->err_fd, HD_VM_MSG_STDERR);
        if (fds[4].revents & (POLLOUT | POLLERR | POLLHUP))
            flush_input(wl, &in);
        exec_poll_events(fds + 5);
        finish_execs();
        /* whole messages already buffered, also those held back while stdin was full */
        struct hd_vm_msg_header h;
        const unsigned char *payload;
        size_t used;
        int r;
        while (in.len == 0 && (r = hd_vm_reader_next(reader, 0, &h, &payload, &used)) != 0) {
            if (r < 0)
                guest_fail(HD_EXIT_HEDGE, 0, "protocol: malformed message from host (type %u, length %u)", h.type,
                           h.length);
            handle_host_message(wl, &in, &h, payload);
            hd_vm_reader_consume(reader, used);
        }
        if (in.len == 0 && in.eof && wl->in_fd >= 0)
            close_workload_stdin(wl);
    }
    free(in.data);
    return status;
}

/*
 * After EXIT (or ERROR): wait until the host says it delivered the output (EXIT_ACK), so
 * QEMU ends only after that. Input the host still sends (stdin, signals for a
 * workload that is gone) is dropped. Bounded: a host that went away or never
 * answers does not keep the guest up.
 */
static void wait_for_exit_ack(void)
{
    uint64_t deadline = now_ms() + EXIT_ACK_WAIT_MS;
    for (;;) {
        struct hd_vm_msg_header h;
        const unsigned char *payload;
        size_t used;
        int r;
        while ((r = hd_vm_reader_next(&host_reader, 0, &h, &payload, &used)) != 0) {
            if (r < 0)
                return; /* malformed: nothing more to learn from this host */
            hd_vm_reader_consume(&host_reader, used);
            if (h.type == HD_VM_MSG_EXIT_ACK)
                return;
        }
        uint64_t now = now_ms();
        if (now >= deadline)
            return;
        struct pollfd p = {.fd = port_fd, .events = POLLIN};
        int pr = poll(&p, 1, (int)(deadline - now));
        if (pr < 0 && errno != EINTR)
            return;
        if (pr > 0) {
            ssize_t n = hd_vm_reader_fill(&host_reader, port_fd);
            if (n == 0 || (n < 0 && n != -EAGAIN))
                return; /* the host closed the port */
        }
    }
}

int main(int argc, char **argv)
{
    if (argc >= 1 && strcmp(argv[0], HD_INIT_REHEARSAL_ARGV0) == 0)
        return 0; /* rehearse_start's exec */
    /* SIGCHLD through a signalfd; the rest default (PID 1 ignores signals it has no handler for anyway). */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sigchld_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);

    mount_or_fail("proc", "/proc", "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV, NULL);
    mount_or_fail("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NOEXEC | MS_NODEV, NULL);
    mount_or_fail("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, NULL);
    hd_write_file("/proc/self/oom_score_adj", "-1000", 5, NULL);
    char *cmdline = NULL;
    size_t cmdline_len;
    if (hd_read_file("/proc/cmdline", &cmdline, &cmdline_len, NULL) == 0)
        debug = strstr(cmdline, "hedge.debug") != NULL;
    free(cmdline);
    debug_phase("init");
    load_modules("/modules");
    debug_phase("modules loaded");
    port_fd = open_host_port();
    debug_phase("port open");

    /* say READY: the host answers with CONFIG (a snapshot taken here sees fresh state on restore) */
    int r = hd_vm_send(port_fd, HD_VM_MSG_READY, NULL, 0);
    if (r < 0)
        guest_fail(HD_EXIT_HEDGE, -r, "send ready");
    struct guest_config cfg = {0};
    read_config(&cfg);
    apply_host_state(&cfg);
    debug_phase("entropy and clock from host");
    if (sigchld_fd < 0)
        guest_fail(HD_EXIT_HEDGE, errno, "signalfd");
    setup_rootfs(&cfg);
    setup_devices(&cfg);
    setup_shares(&cfg);
    setup_files(&cfg);
    setup_secrets(&cfg);
    setup_machine_id(&cfg);
    debug_phase("rootfs mounted");
    setup_cgroup(&cfg);
    setup_network(&cfg);
    debug_phase("network up");

    struct workload wl = {.pid = -1, .in_fd = -1, .out_fd = -1, .err_fd = -1};
    start_workload(&cfg, &wl);
    debug_phase("workload started");
    int status = relay(&wl, sigchld_fd);
    debug_phase("workload exited");

    struct hd_vm_exit_msg exit_msg = {.status = -1};
    if (WIFEXITED(status)) {
        exit_msg.status = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        exit_msg.signal = WTERMSIG(status);
    }
    exit_msg.oom_killed = oom_kills() > 0;
    if (hd_vm_send(port_fd, HD_VM_MSG_EXIT, &exit_msg, sizeof(exit_msg)) == 0)
        wait_for_exit_ack();
    power_off();
}
