/*
 * vm.c - the `vm` isolation backend: the workload runs in a QEMU guest with
 * its own kernel, started by hedge-init (src/init/hedge-init.c) as PID 1.
 *
 *   prepare  check the spec's devices (a tty or a block device each; plan_vm_devices),
 *            find the guest kernel, build/reuse the initramfs and the erofs
 *            image of the rootfs (vm-assets.c), pick the accelerator
 *            (vm-accel.c), encode the spec as the CONFIG message (config.c)
 *   start    spawn QEMU in the workload's cgroup (vm-qemu.c), [hold_before_exec
 *            (hedge-oci-vm): at READY call w->held, wait for the exec FIFO's
 *            reader], send CONFIG (config.c),
 *            wait for STARTED (or the guest's ERROR: 125/126/127 like the
 *            other backends), then start the relay thread; w->pid is QEMU
 *   signal   queue a SIGNAL message; SIGTERM also arms the stop grace period
 *   wait     reap QEMU, join the relay, turn the guest's EXIT message into
 *            struct hd_exit - or, without one, report why the guest died
 *            (kernel panic quoted from the console, QEMU's own error) as 125
 *   cleanup  kill QEMU, join the relay, close everything
 *
 * The relay thread owns the host end of the virtio-serial channel (a
 * socketpair: no socket file exists). It moves stdin in and stdout/stderr
 * out, sends queued signals, and enforces deadlines: the stop grace period
 * after SIGTERM and the power-off bound after the EXIT message.
 *
 * The workload's stdio fds are the caller's (a terminal, or pipes a caller
 * such as the function invoker or the daemon's monitor closes right after
 * start, as it may with the other backends whose child holds its own copies):
 * the backend takes its own copies at prepare, like a child would, and the
 * relay closes each when it is done with it - stdin once its end was sent as
 * STDIN_EOF, stdout/stderr when the guest is gone - so the caller sees end of
 * file as from a process. The EXIT message is acknowledged (EXIT_ACK) only
 * after the output before it was written out, and the guest powers off only
 * then: when QEMU's pid has exited, the output is in the caller's fds. The foreground
 * loop in run.c (pidfd of QEMU + signalfd) needs no change: it sees QEMU exit
 * and calls wait. The socket is non-blocking with one pending outgoing
 * message, and stdin is only read when nothing is pending, so neither side can
 * deadlock the other by not reading.
 *
 * Lifecycle (state): PREPARED → BOOTING → RUNNING → EXITED; any → DEAD when
 * QEMU ends without an EXIT message (the cause is then diagnosed).
 *
 * Processes exec'd beside the workload (hedge-oci-vm exec) are vm_exec.c's: the relay hands it their
 * messages. The CONFIG message (its records, secrets, the additions of hedge-oci-vm, the send at READY) is
 * config.c's. struct vm and what these files use are in vm_internal.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "runtime/backend.h"
#include "cgroup/cgroup.h"
#include "net/net.h"
#include "base/log.h"
#include "base/util.h"
#include "runtime/vm/proto.h"
#include "runtime/vm/qmp.h"
#include "runtime/vm/vm.h"
#include "runtime/vm/vm_internal.h"

#define STOP_GRACE_MS 10000        /* after SIGTERM, then the VM is killed ($HEDGE_VM_STOP_GRACE_MS) */
#define POWEROFF_GRACE_MS 10000    /* after the EXIT message, for QEMU to end */
#define BOOT_TIMEOUT_TCG_MS 120000 /* a TCG boot takes ~3-6 s; allow a very loaded host */
#define BOOT_TIMEOUT_KVM_MS 30000

static uint64_t now_ms(void)
{
    return hd_now_ns() / 1000000u;
}

static int stop_grace_ms(void)
{
    const char *env = getenv("HEDGE_VM_STOP_GRACE_MS");
    return env && atoi(env) > 0 ? atoi(env) : STOP_GRACE_MS;
}

void hd_vm_host_resources(const struct hd_resources *spec_res, struct hd_resources *out)
{
    *out = *spec_res;
    out->memory = hd_spec_vm_ram(spec_res) + QEMU_OVERHEAD;
    out->memory_swap = 0;
    out->pids = QEMU_PIDS;
}

int hd_vm_resize(struct hd_workload *w, unsigned rows, unsigned cols, hd_error_t *err)
{
    struct vm *vm = w->backend == &hd_backend_vm ? w->backend_data : NULL;
    if (vm == NULL || vm->state != VM_RUNNING || !vm->relay_started)
        return hd_error_set(err, ESRCH, "resize: the VM is not running");
    struct hd_vm_winsize size = {.rows = (uint16_t)(rows > 65535 ? 65535 : rows),
                                 .cols = (uint16_t)(cols > 65535 ? 65535 : cols)};
    struct vm_pending *m = hd_xcalloc(1, sizeof(*m));
    m->type = HD_VM_MSG_RESIZE;
    m->length = sizeof(size);
    m->payload = hd_xmalloc(sizeof(size));
    memcpy(m->payload, &size, sizeof(size));
    pthread_mutex_lock(&vm->lock);
    struct vm_pending **tail = &vm->pending;
    while (*tail)
        tail = &(*tail)->next;
    *tail = m;
    pthread_mutex_unlock(&vm->lock);
    uint64_t one = 1;
    if (write(vm->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        return hd_error_sys(err, "resize: wake relay");
    return 0;
}

int hd_vm_attach_netns(struct hd_workload *w, const char *netns_path, struct hd_vm_netns_link *link, hd_error_t *err)
{
    struct vm *vm = w->backend == &hd_backend_vm ? w->backend_data : NULL;
    if (vm == NULL || vm->state != VM_PREPARED || vm->net || vm->netns)
        return hd_error_set(err, EINVAL, "network namespace: not a prepared VM without a network");
    if (vm->snapshot) { /* a template has no NIC: this guest boots cold */
        if (vm->boot_insist)
            return hd_error_set(err, 0, "vm: --vm-boot snapshot: a template has no network device");
        hd_vm_template_free(&vm->tmpl);
        vm->snapshot = false;
    }
    struct hd_vm_netns_link *l = hd_xcalloc(1, sizeof(*l));
    if (hd_vm_netns_attach(netns_path, l, err) < 0) {
        free(l);
        return -1;
    }
    vm->netns = l;
    vm->netns_path = hd_xstrdup(netns_path);
    snprintf(vm->mac, sizeof(vm->mac), "%s", l->mac);
    char mtu[16];
    snprintf(mtu, sizeof(mtu), "%d", l->mtu);
    if (hd_vm_config_append(vm, HD_VM_CFG_NET_ADDRESS, l->address, err) < 0 ||
        (l->gateway[0] && hd_vm_config_append(vm, HD_VM_CFG_NET_GATEWAY, l->gateway, err) < 0) ||
        hd_vm_config_append(vm, HD_VM_CFG_NET_MTU, mtu, err) < 0)
        return -1; /* cleanup undoes the attach */
    if (link)
        *link = *l;
    return 0;
}

/* ---- devices ----------------------------------------------------------- */

/*
 * A serial device QEMU can open as a tty: a node of the kernel's tty class (sysfs, so the device is not
 * opened here: opening a USB serial adapter raises DTR and resets some boards) or a UNIX98 pty slave
 * (136-143: devpts nodes have no sysfs entry), but none of the 5:* nodes (/dev/tty is the opener's own
 * terminal, /dev/console the host's, /dev/ptmx makes a new pty).
 */
static bool serial_tty(dev_t rdev)
{
    unsigned maj = major(rdev), min = minor(rdev);
    if (maj == 5)
        return false;
    if (maj >= 136 && maj <= 143)
        return true;
    char link[64], target[PATH_MAX];
    snprintf(link, sizeof(link), "/sys/dev/char/%u:%u/subsystem", maj, min);
    ssize_t n = readlink(link, target, sizeof(target) - 1);
    if (n <= 0)
        return false;
    target[n] = '\0';
    const char *base = strrchr(target, '/');
    return base && strcmp(base, "/tty") == 0;
}

/*
 * spec->devices for the guest (docs/vm.md#devices): a tty becomes a virtio-serial port (QEMU's serial
 * chardev opens it read-write, so it must be given "rw"), a block device a virtio-blk disk (read-only
 * without "w"). Anything else is refused here, before anything is built or started.
 */
static int plan_vm_devices(struct hd_workload *w, struct vm *vm, hd_error_t *err)
{
    if (w->n_devices == 0)
        return 0;
    vm->devices = hd_xcalloc(w->n_devices, sizeof(*vm->devices));
    for (size_t i = 0; i < w->n_devices; i++) {
        const struct hd_workload_device *d = &w->devices[i];
        const char *perms = w->spec->devices[i].permissions;
        if (perms[0] == '\0')
            perms = "rwm";
        bool can_read = strchr(perms, 'r') != NULL, can_write = strchr(perms, 'w') != NULL;
        struct stat st;
        if (stat(d->host_path, &st) < 0)
            return hd_error_sys(err, "devices[%zu].path: %s", i, d->host_path);
        struct hd_vm_device *v = &vm->devices[vm->n_devices];
        *v = (struct hd_vm_device){
            .host_path = d->host_path,
            .target = d->target,
            .readonly = !can_write,
            .mode = (can_read ? 0444u : 0) | (can_write ? 0222u : 0),
        };
        if (S_ISBLK(st.st_mode)) {
            if (!can_read)
                return hd_error_set(err, 0,
                                    "devices[%zu]: %s: not supported with vm isolation without \"r\" in its "
                                    "permissions (a guest disk is always readable)",
                                    i, d->host_path);
            v->kind = 'b';
            snprintf(v->name, sizeof(v->name), "hedge-dev-%zu", i);
        } else if (S_ISCHR(st.st_mode) && serial_tty(st.st_rdev)) {
            if (!can_read || !can_write)
                return hd_error_set(err, 0,
                                    "devices[%zu]: %s: a serial device reaches a vm only read-write (QEMU opens "
                                    "a tty read-write); give permissions \"rw\"",
                                    i, d->host_path);
            v->kind = 'c';
            snprintf(v->name, sizeof(v->name), "org.hedge.dev.%zu", i);
        } else if (S_ISCHR(st.st_mode) && major(st.st_rdev) == 189) {
            return hd_error_set(err, 0,
                                "devices[%zu]: %s: not supported with vm isolation (USB passthrough to a guest "
                                "is not supported: QEMU's usb-host needs an xHCI controller and USB drivers in "
                                "the guest, which hedge's guest does not have)",
                                i, d->host_path);
        } else {
            return hd_error_set(err, 0,
                                "devices[%zu]: %s: not supported with vm isolation (a guest gets only serial "
                                "devices (ttys, as virtio-serial ports) and block devices (as virtio-blk); "
                                "this is a character device that is not a tty)",
                                i, d->host_path);
        }
        vm->n_devices++;
    }
    return 0;
}

/* ---- prepare / start ---------------------------------------------------- */

/* n random bytes from the host as 2n hex digits in out. */
static int random_hex(char *out, size_t n, hd_error_t *err)
{
    unsigned char bytes[64];
    if (n > sizeof(bytes) || getrandom(bytes, n, 0) != (ssize_t)n)
        return hd_error_sys(err, "vm: getrandom");
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", bytes[i]);
    return 0;
}

/* Both ends of the guest's channel and QMP socketpairs (a failed restore, a pool's clone taken over). */
static void close_channels(struct vm *vm)
{
    int *fds[] = {&vm->port_fd, &vm->qemu_end, &vm->qmp_fd, &vm->qmp_end};
    for (size_t i = 0; i < ARRAY_SIZE(fds); i++) {
        if (*fds[i] >= 0)
            close(*fds[i]);
        *fds[i] = -1;
    }
}

/* The guest's channel and QMP socketpairs (again after a failed restore). */
static int open_channels(struct vm *vm, hd_error_t *err)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return hd_error_sys(err, "socketpair");
    vm->port_fd = sv[0];
    vm->qemu_end = sv[1];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return hd_error_sys(err, "socketpair");
    vm->qmp_fd = sv[0];
    vm->qmp_end = sv[1];
    return 0;
}

/* Pad the rootfs image to the template's disk slot (sparse; erofs ignores what follows its blocks). */
static int fit_rootfs_slot(const char *image, hd_error_t *err)
{
    struct stat st;
    if (stat(image, &st) < 0)
        return hd_error_sys(err, "stat %s", image);
    if (st.st_size > HD_VM_SLOT_BYTES)
        return hd_error_set(err, EFBIG, "the rootfs image (%lld MiB) is larger than a template's disk slot (%lld MiB)",
                            (long long)(st.st_size >> 20), HD_VM_SLOT_BYTES >> 20);
    if (st.st_size == HD_VM_SLOT_BYTES)
        return 0;
    if (truncate(image, HD_VM_SLOT_BYTES) < 0)
        return hd_error_sys(err, "pad %s to the template's disk slot", image);
    return 0;
}

/*
 * vm.boot: cold, snapshot (a template must be used) or auto (the default: a template when a verified
 * one matches this guest). A corrupt template under auto is a log line and a cold boot.
 */
static int choose_boot(struct hd_workload *w, struct vm *vm, hd_error_t *err)
{
    const char *want = w->spec->vm_boot ? w->spec->vm_boot : "auto";
    if (strcmp(want, "cold") == 0)
        return 0;
    vm->boot_insist = strcmp(want, "snapshot") == 0;
    hd_error_t why = NULL;
    if (w->spec->network == HD_NET_BRIDGE) { /* a template has no NIC: auto boots such a guest cold, as always */
        if (!vm->boot_insist)
            return 0;
        hd_error_set(&why, 0, "a template has no network device (bridge network); use --vm-boot cold or auto");
    } else if (w->spec->n_devices > 0) { /* nor the ports and disks of host devices: the same */
        if (!vm->boot_insist)
            return 0;
        hd_error_set(&why, 0, "a template has no host devices (devices); use --vm-boot cold or auto");
    } else {
        char stale[65];
        if (hd_vm_template_lookup(w->state_dir, vm->kernel.vmlinuz, vm->initramfs, hd_spec_vm_ram(&w->spec->resources),
                                  hd_spec_vm_vcpus(&w->spec->resources), vm->accel, &vm->tmpl, stale, &why) == 0 &&
            fit_rootfs_slot(vm->rootfs_image, &why) < 0) {
            hd_vm_template_free(&vm->tmpl);
        } else if (stale[0]) {
            hd_error_free(&why);
            hd_error_set(&why, 0,
                         "template %.12s is stale: built from another kernel, initramfs or QEMU (rebuild it with "
                         "`hedge vm template build`)",
                         stale);
        }
    }
    if (why == NULL) {
        vm->snapshot = true;
        if (w->vm_pooled && strcmp(hd_vm_pooled_key(w->vm_pooled), vm->tmpl.key) == 0) {
            vm->pooled = w->vm_pooled; /* a warm pool's clone of this very template: vm_start takes it over */
            w->vm_pooled = NULL;
        }
        return 0;
    }
    if (vm->boot_insist) {
        if (why->errnum == ENOENT)
            hd_error_set(err, 0,
                         "vm: --vm-boot snapshot: no template for this guest (%lld MiB RAM, %d vCPU, %s); build it "
                         "with `hedge vm template build` and the same --memory and --cpus",
                         (long long)(hd_spec_vm_ram(&w->spec->resources) >> 20), hd_spec_vm_vcpus(&w->spec->resources),
                         hd_vm_accel_name(vm->accel));
        else
            hd_error_set(err, 0, "vm: --vm-boot snapshot: %s", hd_error_text(why));
        hd_error_free(&why);
        return -1;
    }
    if (why->errnum != ENOENT) /* no template at all is the plain cold boot; anything else is news */
        hd_log(HD_LOG_WARN, "vm", "%s; cold boot", hd_error_text(why));
    hd_error_free(&why);
    return 0;
}

static int vm_prepare(struct hd_workload *w, hd_error_t *err)
{
    struct vm *vm = hd_xcalloc(1, sizeof(*vm));
    vm->port_fd = vm->qemu_end = vm->wake_fd = vm->qemu_pidfd = vm->qmp_end = vm->qmp_fd = vm->state_fd = -1;
    vm->stdio[0] = vm->stdio[1] = vm->stdio[2] = -1;
    vm->qemu_pid = -1;
    hd_vm_exec_init(vm);
    pthread_mutex_init(&vm->lock, NULL);
    w->backend_data = vm;
    /* our own copies: the caller may close its fds once the workload started */
    for (int i = 0; i < 3; i++) {
        vm->stdio[i] = fcntl(w->stdio[i], F_DUPFD_CLOEXEC, 3);
        if (vm->stdio[i] < 0)
            return hd_error_sys(err, "stdio: dup fd %d", w->stdio[i]);
    }

    /* cheapest checks first: nothing is built for a VM that cannot start */
    if (plan_vm_devices(w, vm, err) < 0)
        return -1;
    if (hd_vm_accel_choose(w->spec->vm_accel, false, &vm->accel, err) < 0)
        return -1;
    if (hd_vm_kernel_find(w->state_dir, &vm->kernel, err) < 0)
        return -1;
    if (hd_vm_initramfs(w->state_dir, &vm->kernel, &vm->initramfs, err) < 0)
        return -1;
    if (hd_vm_rootfs_image(w->state_dir, w->rootfs, w->image_digest, &vm->rootfs_image, err) < 0)
        return -1;
    if (choose_boot(w, vm, err) < 0) /* before the network: a refusal leaves nothing to undo */
        return -1;
    if (w->vm_pooled) { /* a pool's clone this guest cannot use: its QEMU goes now, not when the workload ends */
        hd_log(HD_LOG_INFO, "vm", "the warm pool's clone (template %.12s) does not fit this guest (%s); not used",
               hd_vm_pooled_key(w->vm_pooled), vm->snapshot ? "another template" : "a cold boot");
        hd_vm_pooled_destroy(w->vm_pooled);
        w->vm_pooled = NULL;
    }
    if (w->spec->network == HD_NET_BRIDGE) {
        const char *tap, *cidr, *gateway;
        if (hd_net_setup_tap(w->state_dir, w->id, &vm->net, &tap, &cidr, &gateway, err) < 0)
            return -1;
        /* locally administered, unique per run: taken from the run id */
        snprintf(vm->mac, sizeof(vm->mac), "52:54:%.2s:%.2s:%.2s:%.2s", w->id, w->id + 2, w->id + 4, w->id + 6);
    }
    if (random_hex(vm->machine_id, 16, err) < 0 || hd_vm_config_build(w, vm, err) < 0)
        return -1;
    vm->console_log = hd_xasprintf("%s/console.log", w->run_dir);
    vm->qemu_log = hd_xasprintf("%s/qemu.log", w->run_dir);
    if (open_channels(vm, err) < 0)
        return -1;
    vm->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (vm->wake_fd < 0)
        return hd_error_sys(err, "eventfd");
    vm->state = VM_PREPARED;
    return 0;
}

/* Send one whole message on the (blocking) socket, without SIGPIPE. */
int hd_vm_socket_send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) { /* non-blocking: wait for room, bounded */
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            int r = poll(&pfd, 1, 10000);
            if (r == 0)
                return -ETIMEDOUT;
            if (r < 0 && errno != EINTR)
                return -errno;
            continue;
        }
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void reap_qemu(struct vm *vm, bool block)
{
    if (vm->qemu_pid <= 0 || vm->qemu_reaped)
        return;
    pid_t r;
    do
        r = waitpid(vm->qemu_pid, &vm->qemu_status, block ? 0 : WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == vm->qemu_pid)
        vm->qemu_reaped = true;
}

static void kill_qemu(struct vm *vm)
{
    if (vm->qemu_pidfd >= 0)
        syscall(SYS_pidfd_send_signal, vm->qemu_pidfd, SIGKILL, NULL, 0);
}

/* Last line of a log file containing needle (or the last non-empty line when needle is NULL). */
static char *log_line(const char *path, const char *needle)
{
    cleanup_free char *text = NULL;
    size_t len = 0;
    hd_error_t ignored = NULL;
    if (path == NULL || hd_read_file(path, &text, &len, &ignored) < 0) {
        hd_error_free(&ignored);
        return NULL;
    }
    char *found = NULL;
    for (char *line = strtok(text, "\r\n"); line; line = strtok(NULL, "\r\n")) {
        if (needle ? strstr(line, needle) != NULL : line[strspn(line, " \t")] != '\0') {
            free(found);
            found = hd_xstrdup(needle ? strstr(line, needle) : line);
        }
    }
    return found;
}

/* The guest ended without an EXIT message: say why, as well as we can tell. */
static int diagnose_dead_guest(struct hd_workload *w, struct vm *vm, hd_error_t *err)
{
    vm->state = VM_DEAD;
    if (vm->relay_problem[0])
        return hd_error_set(err, 0, "vm: %s", vm->relay_problem);
    cleanup_free char *panic = log_line(vm->console_log, "Kernel panic - not syncing:");
    if (panic)
        return hd_error_set(err, 0, "vm: guest kernel panic: %s",
                            panic + strlen("Kernel panic - not syncing:") + (panic[27] == ' ' ? 1 : 0));
    if (vm->qemu_reaped && WIFSIGNALED(vm->qemu_status)) {
        if (w->cgroup && hd_cgroup_oom_killed(w->cgroup))
            return hd_error_set(err, 0,
                                "vm: QEMU was OOM-killed on the host (its cgroup limit is guest RAM + %lld MiB)",
                                QEMU_OVERHEAD >> 20);
        return hd_error_set(err, 0, "vm: QEMU was killed by signal %d before the guest reported an exit",
                            WTERMSIG(vm->qemu_status));
    }
    cleanup_free char *qemu_err = log_line(vm->qemu_log, NULL);
    if (vm->qemu_reaped && WIFEXITED(vm->qemu_status) && WEXITSTATUS(vm->qemu_status) != 0)
        return hd_error_set(err, 0, "vm: QEMU exited with status %d: %s", WEXITSTATUS(vm->qemu_status),
                            qemu_err ? qemu_err : "no message");
    cleanup_free char *last = log_line(vm->console_log, NULL);
    return hd_error_set(err, 0, "vm: the guest stopped without reporting an exit status (last console line: %s)",
                        last ? last : "none");
}

#define QMP_TIMEOUT_MS 2000

/* QMP to this VM's QEMU, attached on first use; NULL (with a log line) when QEMU does not answer. */
static struct hd_qmp *vm_qmp(struct vm *vm)
{
    if (vm->qmp == NULL && vm->qmp_fd >= 0) {
        hd_error_t err = NULL;
        int fd = vm->qmp_fd;
        vm->qmp_fd = -1; /* hd_qmp_attach owns it now */
        if (hd_qmp_attach(fd, QMP_TIMEOUT_MS, &vm->qmp, &err) < 0) {
            hd_log_error(HD_LOG_WARN, "vm", &err);
        }
    }
    return vm->qmp;
}

/* QEMU's run state as QMP reports it ("running", "paused", ...), or why it cannot be had. */
static char *qemu_status(struct vm *vm)
{
    struct hd_qmp *q = vm_qmp(vm);
    if (q == NULL)
        return hd_xstrdup("status unknown, QMP does not answer");
    char *status = NULL;
    hd_error_t err = NULL;
    if (hd_qmp_query_status(q, QMP_TIMEOUT_MS, &status, NULL, &err) < 0) {
        status = hd_xstrdup(hd_error_text(err));
        hd_error_free(&err);
    }
    return status;
}

/* Ask QEMU to quit through QMP (bounded); the caller still kills it if it does not go. */
static void qemu_quit(struct vm *vm)
{
    struct hd_qmp *q = vm_qmp(vm);
    hd_error_t err = NULL;
    if (q == NULL)
        return;
    if (hd_qmp_quit(q, QMP_TIMEOUT_MS, &err) < 0) {
        hd_log_error(HD_LOG_WARN, "vm", &err);
        return;
    }
    uint64_t until = now_ms() + QMP_TIMEOUT_MS;
    while (!vm->qemu_reaped && now_ms() < until) {
        reap_qemu(vm, false);
        if (!vm->qemu_reaped)
            usleep(5000);
    }
}

#define HOLD_POLL_MS 10

/*
 * hold_before_exec (hedge-oci-vm's create/start split, backend.h): the guest is at READY; tell the caller
 * (held), then wait until the exec FIFO has a reader, give it its byte and return so that CONFIG goes.
 * The FIFO is opened non-blocking every HOLD_POLL_MS so that a QEMU that ends meanwhile ends the hold.
 */
static int hold_until_start(struct hd_workload *w, struct vm *vm, hd_error_t *err)
{
    if (!w->hold_before_exec)
        return 0;
    if (w->held && w->held(w, w->held_data, err) < 0)
        return -1;
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", w->exec_fifo_fd);
    for (;;) {
        int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0) {
            ssize_t n;
            do
                n = write(fd, "0", 1);
            while (n < 0 && errno == EINTR);
            int e = errno;
            close(fd);
            if (n != 1)
                return hd_error_set(err, e, "vm: write the exec FIFO");
            return 0;
        }
        if (errno != ENXIO && errno != EINTR)
            return hd_error_sys(err, "vm: open the exec FIFO");
        struct pollfd p = {.fd = vm->qemu_pidfd, .events = POLLIN};
        if (poll(&p, 1, HOLD_POLL_MS) > 0)
            return hd_error_set(err, 0, "vm: QEMU ended while the guest was held before its command");
        sigset_t pending;
        if (w->hold_end_signals && sigpending(&pending) == 0)
            for (int sig = 1; sig < NSIG; sig++)
                if (sigismember(w->hold_end_signals, sig) == 1 && sigismember(&pending, sig) == 1)
                    return hd_error_set(err, ECANCELED, "vm: signal %d ended the hold before the command started", sig);
    }
}

/* Answer READY with CONFIG (a restored guest said READY before its snapshot: ready is true and CONFIG
 * goes at once), then wait for STARTED or ERROR; bounded by the boot timeout (not counting a hold). */
static int wait_for_start(struct hd_workload *w, struct vm *vm, bool ready, hd_error_t *err)
{
    cleanup_free struct hd_vm_reader *reader = hd_xcalloc(1, sizeof(*reader));
    int timeout_ms = vm->accel == HD_VM_ACCEL_KVM ? BOOT_TIMEOUT_KVM_MS : BOOT_TIMEOUT_TCG_MS;
    const char *env = getenv("HEDGE_VM_BOOT_TIMEOUT_MS");
    if (env && atoi(env) > 0)
        timeout_ms = atoi(env);
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    fcntl(vm->port_fd, F_SETFL, O_NONBLOCK);
    if (ready && (hold_until_start(w, vm, err) < 0 || hd_vm_config_send(vm, err) < 0)) {
        kill_qemu(vm);
        reap_qemu(vm, true);
        return -1;
    }
    if (ready && w->hold_before_exec)
        deadline = now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        struct hd_vm_msg_header h;
        const unsigned char *payload;
        size_t used;
        int r = hd_vm_reader_next(reader, 1, &h, &payload, &used);
        if (r < 0) {
            snprintf(vm->relay_problem, sizeof(vm->relay_problem),
                     "protocol: malformed message from the guest (type %u, length %u)", h.type, h.length);
            break;
        }
        if (r > 0) {
            if (h.type == HD_VM_MSG_READY && !ready) {
                ready = true;
                hd_vm_reader_consume(reader, used);
                if (hold_until_start(w, vm, err) < 0 || hd_vm_config_send(vm, err) < 0) {
                    kill_qemu(vm);
                    reap_qemu(vm, true);
                    return -1;
                }
                if (w->hold_before_exec)
                    deadline = now_ms() + (uint64_t)timeout_ms;
                continue;
            }
            if (h.type == HD_VM_MSG_STARTED)
                return 0;
            if (h.type == HD_VM_MSG_ERROR) {
                uint32_t code;
                memcpy(&code, payload, 4);
                if (code != HD_EXIT_HEDGE && code != HD_EXIT_CANNOT_INVOKE && code != HD_EXIT_NOT_FOUND)
                    code = HD_EXIT_HEDGE;
                vm->got_error = true;
                /* the guest powers off after an error once we acknowledge it; give QEMU a moment to go */
                struct hd_vm_msg_header ack = {HD_VM_MSG_EXIT_ACK, 0};
                (void)hd_vm_socket_send_all(vm->port_fd, &ack, sizeof(ack));
                uint64_t until = now_ms() + POWEROFF_GRACE_MS;
                while (!vm->qemu_reaped && now_ms() < until) {
                    reap_qemu(vm, false);
                    usleep(5000);
                }
                return hd_error_set_code(err, (int)code, 0, "%.*s", (int)(h.length - 4), payload + 4);
            }
            snprintf(vm->relay_problem, sizeof(vm->relay_problem),
                     "protocol: the guest sent message type %u before starting the workload", h.type);
            break;
        }
        uint64_t now = now_ms();
        if (now >= deadline) {
            cleanup_free char *status = qemu_status(vm);
            snprintf(vm->relay_problem, sizeof(vm->relay_problem),
                     "the guest did not start the workload within %d ms (QEMU: %s; console: %s)", timeout_ms, status,
                     vm->console_log);
            qemu_quit(vm);
            break;
        }
        struct pollfd p = {.fd = vm->port_fd, .events = POLLIN};
        int pr = poll(&p, 1, (int)(deadline - now < 100 ? deadline - now : 100));
        if (pr < 0 && errno != EINTR)
            return hd_error_sys(err, "poll");
        if (pr > 0) {
            ssize_t n = hd_vm_reader_fill(reader, vm->port_fd);
            if (n == 0 || (n < 0 && n != -EAGAIN))
                break; /* QEMU closed the channel: it is gone or going */
        }
        reap_qemu(vm, false);
        if (vm->qemu_reaped)
            break;
    }
    kill_qemu(vm);
    reap_qemu(vm, true);
    return diagnose_dead_guest(w, vm, err);
}

static void *relay_main(void *arg);

#define RESTORE_TIMEOUT_MS 30000

/* Spawn QEMU for this guest: a cold boot, or (vm->snapshot) a clone of the template waiting for its state. */
static int spawn_qemu(struct hd_workload *w, struct vm *vm, hd_error_t *err)
{
    cleanup_free char *extra_append = hd_vm_extra_append();
    if (vm->snapshot && vm->state_fd < 0) {
        vm->state_fd = open(vm->tmpl.state_path, O_RDONLY | O_CLOEXEC);
        if (vm->state_fd < 0)
            return hd_error_sys(err, "vm: open %s", vm->tmpl.state_path);
    }
    if (vm->n_shares && vm->share_sockets == NULL && hd_vm_shares_start(vm, w->run_dir, err) < 0)
        return -1;
    struct hd_vm_launch launch = {
        .vmlinuz = vm->kernel.vmlinuz,
        .initramfs = vm->initramfs,
        .rootfs_image = vm->rootfs_image,
        .console_log = vm->console_log,
        .qemu_log = vm->qemu_log,
        .port_fd = vm->qemu_end,
        .accel = vm->accel,
        .ram_bytes = hd_spec_vm_ram(&w->spec->resources),
        .vcpus = hd_spec_vm_vcpus(&w->spec->resources),
        .extra_append = extra_append,
        .tap_fd = vm->net ? hd_net_tap_fd(vm->net)
            : vm->netns   ? vm->netns->tap_fd
                          : -1,
        .mac = vm->mac,
        .qmp_fd = vm->qmp_end,
        .devices = vm->devices,
        .n_devices = vm->n_devices,
        /* a clone maps the template's RAM privately: share=on would write into the template */
        .mem_path = vm->snapshot ? vm->tmpl.ram_path : NULL,
        .mem_share = false,
        .incoming = vm->snapshot,
        .incoming_fd = vm->state_fd,
        .share_sockets = vm->share_sockets,
    };
    vm->state = VM_BOOTING;
    if (hd_vm_qemu_spawn(&launch, w->cgroup, &vm->qemu_pid, err) < 0)
        return hd_error_prefix(err, "vm");
    close(vm->qemu_end);
    vm->qemu_end = -1;
    close(vm->qmp_end);
    vm->qmp_end = -1;
    if (vm->state_fd >= 0)
        close(vm->state_fd);
    vm->state_fd = -1;
    vm->qemu_pidfd = (int)syscall(SYS_pidfd_open, vm->qemu_pid, 0);
    if (vm->qemu_pidfd < 0) {
        int e = errno;
        kill(vm->qemu_pid, SIGKILL); /* not reaped yet: the pid is still ours */
        reap_qemu(vm, true);
        return hd_error_set(err, e, "vm: pidfd_open %d", vm->qemu_pid);
    }
    return 0;
}

/* Load the template's device state into the waiting clone and let it run (template.c). */
static int restore_template(struct vm *vm, hd_error_t *err)
{
    int fd = vm->qmp_fd;
    vm->qmp_fd = -1;
    if (hd_qmp_attach(fd, RESTORE_TIMEOUT_MS, &vm->qmp, err) < 0)
        return -1;
    if (hd_vm_template_restore(vm->qmp, RESTORE_TIMEOUT_MS, err) < 0) {
        reap_qemu(vm, false);
        cleanup_free char *why = log_line(vm->qemu_log, NULL);
        if (why)
            hd_error_prefix(err, "%s", why);
        return -1;
    }
    return 0;
}

/* A restore that failed before the workload's CONFIG went out: end that QEMU, start afresh. */
static int reset_for_cold_boot(struct vm *vm, hd_error_t *err)
{
    kill_qemu(vm);
    reap_qemu(vm, true);
    if (vm->qemu_pidfd >= 0)
        close(vm->qemu_pidfd);
    vm->qemu_pidfd = -1;
    vm->qemu_pid = -1;
    vm->qemu_reaped = false;
    hd_qmp_close(vm->qmp);
    vm->qmp = NULL;
    close_channels(vm);
    vm->snapshot = false;
    vm->relay_problem[0] = '\0';
    return open_channels(vm, err);
}

/*
 * Take over a warm pool's clone (pool.c): the workload's image into its disk slot, QEMU into the workload's
 * cgroup, then its channel, QMP, pid and logs become this guest's. The guest is at READY: CONFIG goes next.
 */
static int adopt_pooled(struct hd_workload *w, struct vm *vm, hd_error_t *err)
{
    struct hd_vm_pooled *p = vm->pooled;
    if (hd_vm_pooled_attach_rootfs(p, vm->rootfs_image, err) < 0) /* choose_boot fitted it to the slot */
        return -1;
    if (w->cgroup && hd_cgroup_enter(w->cgroup, p->qemu_pid, err) < 0)
        return hd_error_prefix(err, "move QEMU into the workload's cgroup");
    close_channels(vm);
    vm->port_fd = p->port_fd;
    vm->qmp = p->qmp;
    vm->qemu_pid = p->qemu_pid;
    vm->qemu_pidfd = p->qemu_pidfd;
    p->port_fd = p->qemu_pidfd = -1;
    p->qemu_pid = -1;
    p->qmp = NULL;
    free(vm->console_log);
    free(vm->qemu_log);
    vm->console_log = p->console_log;
    vm->qemu_log = p->qemu_log;
    vm->pool_dir = p->dir;
    p->console_log = p->qemu_log = p->dir = NULL;
    hd_vm_pooled_destroy(p); /* its cgroup is empty now */
    vm->pooled = NULL;
    vm->state = VM_BOOTING;
    return 0;
}

static int vm_start(struct hd_workload *w, hd_error_t *err)
{
    struct vm *vm = w->backend_data;
    uint64_t t0 = hd_now_ns();
    bool ready = false;
    if (vm->pooled) {
        hd_error_t why = NULL;
        if (vm->snapshot && adopt_pooled(w, vm, &why) == 0) {
            ready = true; /* restored long ago, waiting for CONFIG */
            hd_log(HD_LOG_INFO, "vm", "boot: pool (template %.12s), taken in %.3f s", vm->tmpl.key,
                   (double)(hd_now_ns() - t0) / 1e9);
        } else {
            hd_log(HD_LOG_WARN, "vm", "the warm pool's clone: %s; restoring from the template",
                   why ? hd_error_text(why) : "not a snapshot boot");
            hd_error_free(&why);
            hd_vm_pooled_destroy(vm->pooled);
            vm->pooled = NULL;
        }
    }
    if (!ready && spawn_qemu(w, vm, err) < 0)
        return -1;
    if (!ready && vm->snapshot) {
        hd_error_t why = NULL;
        if (restore_template(vm, &why) == 0) {
            ready = true; /* the guest said READY before the snapshot: CONFIG goes now */
            hd_log(HD_LOG_INFO, "vm", "boot: snapshot (template %.12s), restored in %.2f s", vm->tmpl.key,
                   (double)(hd_now_ns() - t0) / 1e9);
        } else if (vm->boot_insist) {
            hd_error_set(err, 0, "vm: restore from template %.12s: %s", vm->tmpl.key, hd_error_text(why));
            hd_error_free(&why);
            kill_qemu(vm);
            reap_qemu(vm, true);
            return -1;
        } else {
            hd_log(HD_LOG_WARN, "vm", "restore from template %.12s: %s; cold boot", vm->tmpl.key, hd_error_text(why));
            hd_error_free(&why);
            if (reset_for_cold_boot(vm, err) < 0 || spawn_qemu(w, vm, err) < 0)
                return -1;
        }
    }
    snprintf(w->vm_boot, sizeof(w->vm_boot), "%s", !vm->snapshot ? "cold" : vm->pool_dir ? "pool" : "snapshot");
    /* CONFIG goes when the guest says READY (wait_for_start) */
    if (wait_for_start(w, vm, ready, err) < 0)
        return -1;
    vm->state = VM_RUNNING;
    int r = pthread_create(&vm->relay, NULL, relay_main, vm);
    if (r != 0) {
        kill_qemu(vm);
        reap_qemu(vm, true);
        return hd_error_set(err, r, "vm: start relay thread");
    }
    vm->relay_started = true;
    w->pid = vm->qemu_pid;
    return 0;
}

/* ---- the relay thread --------------------------------------------------- */

void hd_vm_outgoing_set(struct outgoing *o, uint32_t type, const void *payload, uint32_t length)
{
    struct hd_vm_msg_header h = {type, length};
    memcpy(o->buf, &h, sizeof(h));
    if (length)
        memcpy(o->buf + sizeof(h), payload, length);
    o->len = sizeof(h) + length;
    o->off = 0;
}

static bool discarding_output(struct vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    bool discard = vm->discard_output || vm->stop;
    pthread_mutex_unlock(&vm->lock);
    return discard;
}

/*
 * Write guest output to the caller's fd. Its reader may stop reading (a caller that gave up on the
 * workload and kills it): so wait for room together with the wake eventfd, write at most PIPE_BUF
 * at a time (a pipe that polls writable takes that much without blocking), and once the VM is
 * being killed drop what cannot be written at once - the relay must always reach the end.
 */
void hd_vm_write_out(struct vm *vm, int fd, const unsigned char *data, size_t len)
{
    while (len && fd >= 0) {
        bool discard = discarding_output(vm);
        struct pollfd p[2] = {{.fd = fd, .events = POLLOUT}, {.fd = vm->wake_fd, .events = POLLIN}};
        int r = poll(p, discard ? 1 : 2, discard ? 0 : -1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 || (discard && r == 0))
            return;
        if (p[1].revents & POLLIN) {
            uint64_t v;
            ssize_t n = read(vm->wake_fd, &v, sizeof(v)); /* the main loop checks why at its next turn */
            (void)n;
        }
        if (p[0].revents & (POLLERR | POLLNVAL))
            return; /* the reader of our stdout went away: the output is dropped, the workload runs on */
        if (!(p[0].revents & (POLLOUT | POLLHUP)))
            continue;
        ssize_t n = write(fd, data, len < PIPE_BUF ? len : PIPE_BUF);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0)
            return; /* EPIPE: as above */
        data += n;
        len -= (size_t)n;
    }
}

/* Handle one message from the guest; false on a protocol violation. */
static bool relay_handle(struct vm *vm, const struct hd_vm_msg_header *h, const unsigned char *payload)
{
    int handled = hd_vm_exec_handle(vm, h, payload);
    if (handled != 0)
        return handled > 0;
    switch (h->type) {
    case HD_VM_MSG_STDOUT: hd_vm_write_out(vm, vm->stdio[1], payload, h->length); return true;
    case HD_VM_MSG_STDERR: hd_vm_write_out(vm, vm->stdio[2], payload, h->length); return true;
    case HD_VM_MSG_EXIT:
        memcpy(&vm->exit_msg, payload, sizeof(vm->exit_msg));
        vm->got_exit = true;
        return true;
    case HD_VM_MSG_ERROR: {
        uint32_t code;
        memcpy(&code, payload, 4);
        vm->got_error = true;
        vm->error_code = code == HD_EXIT_CANNOT_INVOKE || code == HD_EXIT_NOT_FOUND ? (int)code : HD_EXIT_HEDGE;
        snprintf(vm->error_text, sizeof(vm->error_text), "%.*s", (int)(h->length - 4), payload + 4);
        return true;
    }
    default:
        snprintf(vm->relay_problem, sizeof(vm->relay_problem),
                 "protocol: unexpected message type %u from the running guest", h->type);
        return false;
    }
}

static void close_stdio_copy(struct vm *vm, int i)
{
    if (vm->stdio[i] >= 0)
        close(vm->stdio[i]);
    vm->stdio[i] = -1;
}

static void relay_loop(struct vm *vm, struct hd_vm_reader *reader, struct outgoing *out)
{
    bool ack_due = false; /* EXIT came, the output before it is written: send EXIT_ACK next */
    uint64_t exit_deadline = 0;
    for (;;) {
        /* EXIT_ACK, else a queued signal goes next when nothing is pending */
        pthread_mutex_lock(&vm->lock);
        bool stop = vm->stop;
        uint64_t kill_at = vm->kill_at_ms;
        if (out->len == 0 && ack_due) {
            hd_vm_outgoing_set(out, HD_VM_MSG_EXIT_ACK, NULL, 0);
            ack_due = false;
        } else if (out->len == 0 && vm->n_queued > 0) {
            uint32_t sig = (uint32_t)vm->queued_signals[0];
            memmove(vm->queued_signals, vm->queued_signals + 1, (size_t)(--vm->n_queued) * sizeof(int));
            hd_vm_outgoing_set(out, HD_VM_MSG_SIGNAL, &sig, 4);
        } else if (out->len == 0 && vm->pending && !vm->got_exit) {
            struct vm_pending *m = vm->pending;
            vm->pending = m->next;
            hd_vm_outgoing_set(out, m->type, m->payload, m->length);
            free(m->payload);
            free(m);
        }
        pthread_mutex_unlock(&vm->lock);
        if (stop)
            return;
        uint64_t now = now_ms();
        if (kill_at && now >= kill_at && !vm->got_exit) {
            pthread_mutex_lock(&vm->lock);
            vm->discard_output = true;
            bool requested = vm->kill_requested;
            pthread_mutex_unlock(&vm->lock);
            if (!requested)
                snprintf(vm->relay_problem, sizeof(vm->relay_problem),
                         "the guest did not stop within %d ms of SIGTERM; the VM was killed", stop_grace_ms());
            vm->killed_after_grace = true;
            kill_qemu(vm);
            kill_at = 0;
        }
        if (exit_deadline && now >= exit_deadline) {
            kill_qemu(vm); /* reported exit, but QEMU hangs in power-off */
            exit_deadline = 0;
        }

        /* stdin is read only when nothing is pending, and no more once the workload exited */
        bool read_stdin = vm->stdio[0] >= 0 && out->len == 0 && !ack_due && !vm->got_exit;
        struct pollfd fds[3 + 2 * MAX_EXECS] = {
            {.fd = vm->port_fd, .events = POLLIN | (out->len ? POLLOUT : 0)},
            {.fd = read_stdin ? vm->stdio[0] : -1, .events = POLLIN},
            {.fd = vm->wake_fd, .events = POLLIN},
        };
        hd_vm_exec_input_poll(vm, out->len == 0 && !ack_due && !vm->got_exit, fds + 3); /* exec'd processes' */
        int timeout = (kill_at || exit_deadline) ? 100 : -1;
        if (poll(fds, ARRAY_SIZE(fds), timeout) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (fds[2].revents & POLLIN) {
            uint64_t v;
            ssize_t n = read(vm->wake_fd, &v, sizeof(v));
            (void)n;
        }
        if (fds[1].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) {
            unsigned char buf[16384];
            ssize_t n = read(vm->stdio[0], buf, sizeof(buf));
            if (n > 0) {
                hd_vm_outgoing_set(out, HD_VM_MSG_STDIN, buf, (uint32_t)n);
            } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
                close_stdio_copy(vm, 0); /* done with it: the guest gets the end next */
                hd_vm_outgoing_set(out, HD_VM_MSG_STDIN_EOF, NULL, 0);
            }
        }
        if (out->len == 0)
            hd_vm_exec_input_read(vm, fds + 3, out);
        if (out->len && (fds[0].revents & POLLOUT)) {
            ssize_t n = send(vm->port_fd, out->buf + out->off, out->len - out->off, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) {
                out->off += (size_t)n;
                if (out->off == out->len)
                    out->len = out->off = 0;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                out->len = out->off = 0; /* QEMU is gone; reading will see the end */
            }
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = hd_vm_reader_fill(reader, vm->port_fd);
            if (n == 0 || (n < 0 && n != -EAGAIN))
                break; /* QEMU ended: wait() takes it from here */
            struct hd_vm_msg_header h;
            const unsigned char *payload;
            size_t used;
            int r;
            while ((r = hd_vm_reader_next(reader, 1, &h, &payload, &used)) != 0) {
                if (r < 0) {
                    snprintf(vm->relay_problem, sizeof(vm->relay_problem),
                             "protocol: malformed message from the guest (type %u, length %u)", h.type, h.length);
                    kill_qemu(vm);
                    return;
                }
                if (!relay_handle(vm, &h, payload)) {
                    kill_qemu(vm);
                    return;
                }
                hd_vm_reader_consume(reader, used);
                if (h.type == HD_VM_MSG_EXIT || h.type == HD_VM_MSG_ERROR)
                    ack_due = true; /* what came before EXIT (or ERROR) is written out by now */
                if ((vm->got_exit || vm->got_error) && exit_deadline == 0)
                    exit_deadline = now_ms() + POWEROFF_GRACE_MS;
            }
        }
    }
}

static void *relay_main(void *arg)
{
    struct vm *vm = arg;
    /* a reader that closed our stdout must give EPIPE here, not kill hedge with SIGPIPE */
    sigset_t pipe_mask;
    sigemptyset(&pipe_mask);
    sigaddset(&pipe_mask, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_mask, NULL);
    /* 64 KiB each: not on the thread's stack */
    cleanup_free struct hd_vm_reader *reader = hd_xcalloc(1, sizeof(*reader));
    cleanup_free struct outgoing *out = hd_xcalloc(1, sizeof(*out));
    relay_loop(vm, reader, out);
    /* the guest is gone (or being killed): no more output, so the readers see end of file */
    for (int i = 0; i < 3; i++)
        close_stdio_copy(vm, i);
    hd_vm_exec_close_all(vm);
    return NULL;
}

static void relay_join(struct vm *vm)
{
    if (!vm->relay_started)
        return;
    pthread_join(vm->relay, NULL);
    vm->relay_started = false;
}

const char *hd_vm_guest_address(const struct hd_workload *w)
{
    const struct vm *vm = w->backend == &hd_backend_vm ? w->backend_data : NULL;
    return vm && vm->net ? hd_net_address(vm->net) : NULL;
}

/* ---- signal / wait / cleanup ------------------------------------------- */

static int vm_signal(struct hd_workload *w, int sig, hd_error_t *err)
{
    struct vm *vm = w->backend_data;
    if (vm == NULL || vm->state != VM_RUNNING)
        return hd_error_set(err, ESRCH, "signal: the VM is not running");
    pthread_mutex_lock(&vm->lock);
    if (vm->n_queued < (int)ARRAY_SIZE(vm->queued_signals))
        vm->queued_signals[vm->n_queued++] = sig;
    if (sig == SIGTERM && vm->kill_at_ms == 0)
        vm->kill_at_ms = now_ms() + (uint64_t)stop_grace_ms();
    if (sig == SIGKILL) {
        /* SIGKILL for the workload: end the whole VM now, here (the relay may be waiting for a
         * reader of its output that is the caller, now busy killing) */
        vm->kill_at_ms = now_ms();
        vm->discard_output = true;
        vm->kill_requested = true;
        kill_qemu(vm);
    }
    pthread_mutex_unlock(&vm->lock);
    uint64_t one = 1;
    if (write(vm->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        return hd_error_sys(err, "signal: wake relay");
    return 0;
}

static int vm_wait(struct hd_workload *w, struct hd_exit *exit, hd_error_t *err)
{
    struct vm *vm = w->backend_data;
    reap_qemu(vm, true);
    relay_join(vm);
    w->pid = -1;
    memset(exit, 0, sizeof(*exit));
    if (vm->got_exit) {
        vm->state = VM_EXITED;
        exit->status = vm->exit_msg.status;
        exit->signal = vm->exit_msg.signal;
        exit->code = exit->signal ? HD_EXIT_SIGNAL(exit->signal) : exit->status;
        if (exit->status < 0 && exit->signal == 0)
            exit->code = HD_EXIT_HEDGE;
        exit->oom_killed = vm->exit_msg.oom_killed != 0;
        return 0;
    }
    if (vm->got_error)
        return hd_error_set_code(err, vm->error_code, 0, "%s", vm->error_text);
    if (vm->killed_after_grace || vm->kill_requested) { /* kill_requested: QEMU may end before the relay looks */
        if (vm->relay_problem[0])
            hd_log(HD_LOG_WARN, "vm", "%s", vm->relay_problem);
        exit->status = -1;
        exit->signal = SIGKILL;
        exit->code = HD_EXIT_SIGNAL(SIGKILL);
        return 0;
    }
    return diagnose_dead_guest(w, vm, err);
}

static int vm_stats(struct hd_workload *w, struct hd_stats *stats, hd_error_t *err)
{
    return hd_cgroup_stats(w->cgroup, stats, err); /* QEMU's footprint on the host */
}

static void vm_cleanup(struct hd_workload *w)
{
    struct vm *vm = w->backend_data;
    if (vm == NULL)
        return;
    kill_qemu(vm);
    reap_qemu(vm, true);
    if (vm->relay_started) {
        pthread_mutex_lock(&vm->lock);
        vm->stop = true;
        pthread_mutex_unlock(&vm->lock);
        uint64_t one = 1;
        ssize_t n = write(vm->wake_fd, &one, sizeof(one));
        (void)n;
        relay_join(vm);
    }
    if (vm->net) { /* QEMU is dead: nothing holds the tap any more */
        hd_error_t err = NULL;
        if (hd_net_teardown(vm->net, &err) < 0) {
            hd_log_error(HD_LOG_WARN, "cleanup", &err);
        }
        vm->net = NULL;
    }
    if (vm->netns) { /* QEMU is dead: the tap goes with our fd, then the veth's redirect */
        hd_error_t err = NULL;
        if (vm->netns->tap_fd >= 0)
            close(vm->netns->tap_fd);
        if (hd_vm_netns_detach(vm->netns_path, vm->netns->ifname, &err) < 0) {
            hd_log_error(HD_LOG_WARN, "cleanup", &err);
        }
        free(vm->netns);
        vm->netns = NULL;
    }
    free(vm->netns_path);
    free(vm->files);
    hd_vm_shares_stop(vm); /* QEMU is dead: nothing uses the daemons */
    for (int i = 0; i < 3; i++)
        close_stdio_copy(vm, i);
    hd_vm_exec_close_all(vm);
    while (vm->pending) {
        struct vm_pending *m = vm->pending;
        vm->pending = m->next;
        free(m->payload);
        free(m);
    }
    if (vm->port_fd >= 0)
        close(vm->port_fd);
    if (vm->qemu_end >= 0)
        close(vm->qemu_end);
    if (vm->qmp_end >= 0)
        close(vm->qmp_end);
    if (vm->qmp_fd >= 0)
        close(vm->qmp_fd);
    if (vm->state_fd >= 0)
        close(vm->state_fd);
    hd_qmp_close(vm->qmp);
    if (vm->wake_fd >= 0)
        close(vm->wake_fd);
    if (vm->qemu_pidfd >= 0)
        close(vm->qemu_pidfd);
    if (vm->console_log && getenv("HEDGE_VM_DEBUG")) {
        cleanup_free char *text = NULL;
        size_t len = 0;
        hd_error_t ignored = NULL;
        if (hd_read_file(vm->console_log, &text, &len, &ignored) == 0) {
            char *save = NULL;
            for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
                hd_log(HD_LOG_INFO, "vm", "guest console: %s", line);
        }
        hd_error_free(&ignored);
    }
    if (vm->console_log)
        unlink(vm->console_log);
    if (vm->qemu_log)
        unlink(vm->qemu_log);
    hd_vm_pooled_destroy(vm->pooled);
    if (vm->pool_dir) {
        hd_error_t ignored = NULL;
        if (hd_rm_rf(vm->pool_dir, &ignored) < 0)
            hd_error_free(&ignored);
        free(vm->pool_dir);
    }
    pthread_mutex_destroy(&vm->lock);
    hd_vm_kernel_free(&vm->kernel);
    hd_vm_template_free(&vm->tmpl);
    free(vm->initramfs);
    free(vm->rootfs_image);
    free(vm->console_log);
    free(vm->qemu_log);
    hd_vm_config_wipe(vm);
    free(vm->devices);
    free(vm);
    w->backend_data = NULL;
    w->pid = -1;
}

const struct hd_backend hd_backend_vm = {
    .name = "vm",
    .prepare = vm_prepare,
    .start = vm_start,
    .signal = vm_signal,
    .wait = vm_wait,
    .stats = vm_stats,
    .cleanup = vm_cleanup,
};
