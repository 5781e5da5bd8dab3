/*
 * vm-qemu.c - how hedge starts QEMU for a guest: the only QEMU-specific file
 * of the VM backend (a native KVM VMM would replace it).
 *
 * Kata-style: no firmware beyond what the machine needs (-kernel/-initrd
 * direct boot), no default devices (-nodefaults -no-user-config), no display,
 * -no-reboot with panic=-1 so a guest panic or reboot ends QEMU at once. The
 * guest's serial console goes to a file the backend quotes when the guest
 * dies; the host↔guest channel is a virtserialport whose chardev is a socket
 * hedge already holds (one end of a socketpair, passed as fd 3), so there is
 * no socket file to race on or leave behind.
 *
 * Machine: `pc` under TCG; `microvm,pcie=on` with KVM (plain microvm hangs in
 * TSC calibration under TCG here; with its PCIe bridge it boots, so the same
 * virtio-pci devices and guest modules serve both machine types).
 * The default CPU model: `-cpu host`/`max` abort on this PVM host.
 * The fork, "go" after the cgroup entry and the exec-failure report are base/spawn.c's.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "cgroup/cgroup.h"
#include "base/log.h"
#include "base/child.h"
#include "base/spawn.h"
#include "base/util.h"
#include "runtime/vm/vm.h"

#define QEMU_BINARY "qemu-system-x86_64"

/* The machine type: pc under TCG; microvm with a PCIe bridge under KVM, so the same virtio-pci
 * devices and modules serve both. $HEDGE_VM_MACHINE overrides it (experiments, other hosts). */
static const char *machine_type(enum hd_vm_accel accel)
{
    return hd_vm_machine_type(accel);
}

/* A path as a QEMU option value: a comma is written twice. Returns a new string. */
static char *qemu_escape(const char *path)
{
    char *out = hd_xmalloc(2 * strlen(path) + 1), *o = out;
    for (const char *p = path; *p; p++) {
        *o++ = *p;
        if (*p == ',')
            *o++ = ',';
    }
    *o = '\0';
    return out;
}

/* The spec's devices: a tty as a serial chardev on a port of the hedge virtio-serial bus, a block
 * device as virtio-blk (after the rootfs's, so the rootfs stays vda). */
static void push_devices(char ***v, const struct hd_vm_launch *l)
{
    for (size_t i = 0; i < l->n_devices; i++) {
        const struct hd_vm_device *d = &l->devices[i];
        cleanup_free char *path = qemu_escape(d->host_path);
        char *s;
        if (d->kind == 'c') {
            hd_strv_push(v, "-chardev");
            s = hd_xasprintf("serial,id=hdev%zu,path=%s", i, path);
            hd_strv_push(v, s);
            free(s);
            hd_strv_push(v, "-device");
            s = hd_xasprintf("virtserialport,bus=hedgeser.0,chardev=hdev%zu,name=%s", i, d->name);
        } else {
            hd_strv_push(v, "-drive");
            s = hd_xasprintf("file=%s,if=none,id=hdev%zu,format=raw,readonly=%s", path, i, d->readonly ? "on" : "off");
            hd_strv_push(v, s);
            free(s);
            hd_strv_push(v, "-device");
            s = hd_xasprintf("virtio-blk-pci,drive=hdev%zu,serial=%s", i, d->name);
        }
        hd_strv_push(v, s);
        free(s);
    }
}

static char **qemu_argv(const struct hd_vm_launch *l)
{
    bool kvm = l->accel == HD_VM_ACCEL_KVM;
    char **v = NULL;
    const char *fixed[] = {QEMU_BINARY, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-M"};
    for (size_t i = 0; i < ARRAY_SIZE(fixed); i++)
        hd_strv_push(&v, fixed[i]);
    hd_strv_push(&v, machine_type(l->accel));
    hd_strv_push(&v, "-accel");
    /* a small TCG translation buffer: QEMU's default (1 GiB) would count against the memory limit */
    hd_strv_push(&v, kvm ? "kvm" : "tcg,tb-size=64");
    char *s;
    hd_strv_push(&v, "-m");
    s = hd_xasprintf("%lldM", (long long)(l->ram_bytes >> 20));
    hd_strv_push(&v, s);
    free(s);
    if (l->mem_path) { /* guest RAM in a file: a template's (shared) or a clone's private mapping of it */
        hd_strv_push(&v, "-object");
        s = hd_xasprintf("memory-backend-file,id=hedge-ram,size=%lldM,mem-path=%s,share=%s",
                         (long long)(l->ram_bytes >> 20), l->mem_path, l->mem_share ? "on" : "off");
        hd_strv_push(&v, s);
        free(s);
        hd_strv_push(&v, "-machine");
        hd_strv_push(&v, "memory-backend=hedge-ram");
    }
    if (l->share_sockets && l->mem_path == NULL) { /* vhost-user (virtiofsd) maps guest RAM: shared memory */
        hd_strv_push(&v, "-object");
        s = hd_xasprintf("memory-backend-memfd,id=hedge-ram,size=%lldM,share=on", (long long)(l->ram_bytes >> 20));
        hd_strv_push(&v, s);
        free(s);
        hd_strv_push(&v, "-machine");
        hd_strv_push(&v, "memory-backend=hedge-ram");
    }
    for (size_t i = 0; l->share_sockets && l->share_sockets[i]; i++) {
        cleanup_free char *path = qemu_escape(l->share_sockets[i]);
        hd_strv_push(&v, "-chardev");
        s = hd_xasprintf("socket,id=hdfs%zu,path=%s", i, path);
        hd_strv_push(&v, s);
        free(s);
        hd_strv_push(&v, "-device");
        s = hd_xasprintf("vhost-user-fs-pci,chardev=hdfs%zu,tag=hdfs%zu", i, i);
        hd_strv_push(&v, s);
        free(s);
    }
    if (l->incoming) {
        hd_strv_push(&v, "-incoming");
        hd_strv_push(&v, "defer");
    }
    hd_strv_push(&v, "-smp");
    s = hd_xasprintf("%d", l->vcpus);
    hd_strv_push(&v, s);
    free(s);
    hd_strv_push(&v, "-kernel");
    hd_strv_push(&v, l->vmlinuz);
    hd_strv_push(&v, "-initrd");
    hd_strv_push(&v, l->initramfs);
    hd_strv_push(&v, "-append");
    /* panic=-1: reboot at once on panic, which -no-reboot turns into QEMU exiting.
     * cryptomgr.notests: the crypto self-tests take ~1 s of an emulated boot.
     * pci=noacpi on pc with one vCPU: routing PCI interrupts through ACPI's interrupt links runs
     * AML that takes 200-800 ms per virtio device under TCG; the BIOS's routing table does it in
     * milliseconds. It also stops the kernel from finding CPUs in ACPI's MADT, so an SMP guest keeps
     * ACPI routing (and boots slower). microvm finds its PCIe bridge through ACPI: it keeps it too. */
    bool pci_noacpi = strncmp(machine_type(l->accel), "pc", 2) == 0 && l->vcpus == 1;
    s = hd_xasprintf("console=ttyS0 quiet panic=-1 oops=panic reboot=t tsc=reliable no_timer_check "
                     "random.trust_cpu=on cryptomgr.notests%s%s%s",
                     pci_noacpi ? " pci=noacpi" : "", l->extra_append && *l->extra_append ? " " : "",
                     l->extra_append ? l->extra_append : "");
    hd_strv_push(&v, s);
    free(s);
    hd_strv_push(&v, "-chardev");
    s = hd_xasprintf("file,id=console,path=%s", l->console_log);
    hd_strv_push(&v, s);
    free(s);
    hd_strv_push(&v, "-serial");
    hd_strv_push(&v, "chardev:console");
    hd_strv_push(&v, "-drive");
    /* node names: a pooled clone's slot gets the workload's image by blockdev-reopen (pool.c) */
    s = hd_xasprintf("file=%s,if=none,id=rootfs,format=raw,readonly=on,node-name=" HD_VM_SLOT_NODE
                     ",file.node-name=" HD_VM_SLOT_NODE "-file",
                     l->rootfs_image);
    hd_strv_push(&v, s);
    free(s);
    hd_strv_push(&v, "-device");
    hd_strv_push(&v, "virtio-blk-pci,drive=rootfs");
    hd_strv_push(&v, "-device");
    /* port 0 is the (unused) console port, ours is 1, then one per serial device: two ports instead
     * of 31 means 4 virtqueues, not 64 */
    size_t n_ports = 2;
    for (size_t i = 0; i < l->n_devices; i++)
        n_ports += l->devices[i].kind == 'c';
    s = hd_xasprintf("virtio-serial-pci,id=hedgeser,max_ports=%zu", n_ports);
    hd_strv_push(&v, s);
    free(s);
    if (l->tap_fd >= 0) {
        /* the tap is fd 4 in QEMU; vhost would need /dev/vhost-net, plain virtio-net is enough here */
        hd_strv_push(&v, "-netdev");
        hd_strv_push(&v, "tap,id=net0,fd=4,vhost=off");
        hd_strv_push(&v, "-device");
        s = hd_xasprintf("virtio-net-pci,netdev=net0,mac=%s", l->mac);
        hd_strv_push(&v, s);
        free(s);
    }
    if (l->qmp_fd >= 0) { /* QMP on fd 5: a socketpair like the port, no socket file */
        hd_strv_push(&v, "-chardev");
        hd_strv_push(&v, "socket,id=qmp,fd=5");
        hd_strv_push(&v, "-mon");
        hd_strv_push(&v, "chardev=qmp,mode=control");
    }
    hd_strv_push(&v, "-chardev");
    hd_strv_push(&v, "socket,id=hedgeport,fd=3");
    hd_strv_push(&v, "-device");
    hd_strv_push(&v,
                 "virtserialport,bus=hedgeser.0,chardev=hedgeport,name="
                 "org.hedge.0");
    push_devices(&v, l);
    return v;
}

struct qemu_child {
    const struct hd_vm_launch *l;
    char **argv;
    int log_fd, null_fd;
    pid_t parent;
};

/* QEMU gets: /dev/null as stdin/stdout, its log as stderr, the port as fd 3, the tap as fd 4
 * (bridge network only), its QMP monitor as fd 5 (when asked for), a template's state file to restore
 * from as fd 6 (a clone). Nothing else. */
__attribute__((noreturn)) static void qemu_child(void *data, int go_fd, int report_fd)
{
    struct qemu_child *q = data;
    const struct hd_vm_launch *l = q->l;
    /* QEMU must not outlive hedge: nobody else would reap or kill it */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != q->parent)
        _exit(HD_EXIT_HEDGE);
    hd_spawn_child_wait_go(go_fd); /* wait until the parent put us in the cgroup */
    int port = fcntl(l->port_fd, F_DUPFD_CLOEXEC, 10);
    int tap = l->tap_fd >= 0 ? fcntl(l->tap_fd, F_DUPFD_CLOEXEC, 10) : -1;
    int qmp = l->qmp_fd >= 0 ? fcntl(l->qmp_fd, F_DUPFD_CLOEXEC, 10) : -1;
    int incoming = l->incoming && l->incoming_fd >= 0 ? fcntl(l->incoming_fd, F_DUPFD_CLOEXEC, 10) : -1;
    if (port < 0 || dup2(q->null_fd, 0) < 0 || dup2(q->null_fd, 1) < 0 || dup2(q->log_fd, 2) < 0 || dup2(port, 3) < 0 ||
        (l->tap_fd >= 0 && (tap < 0 || dup2(tap, 4) < 0)) || (l->qmp_fd >= 0 && (qmp < 0 || dup2(qmp, 5) < 0)) ||
        (l->incoming && l->incoming_fd >= 0 && (incoming < 0 || dup2(incoming, 6) < 0)))
        hd_child_fail(report_fd, HD_EXIT_HEDGE, errno, "start %s: set up its fds", QEMU_BINARY);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execvp(q->argv[0], q->argv);
    hd_child_fail(report_fd, HD_EXIT_HEDGE, errno, "start %s (package qemu-system-x86)", QEMU_BINARY);
}

int hd_vm_qemu_spawn(const struct hd_vm_launch *l, struct hd_cgroup *cg, pid_t *pid_out, hd_error_t *err)
{
    cleanup_strv char **argv = qemu_argv(l);
    if (getenv("HEDGE_VM_DEBUG")) {
        cleanup_free char *line = NULL;
        for (size_t i = 0; argv[i]; i++) {
            char *longer = hd_xasprintf("%s%s%s", line ? line : "", i ? " " : "", argv[i]);
            free(line);
            line = longer;
        }
        hd_log(HD_LOG_INFO, "vm", "%s", line);
    }
    cleanup_close int log = open(l->qemu_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (log < 0)
        return hd_error_sys(err, "create %s", l->qemu_log);
    cleanup_close int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0)
        return hd_error_sys(err, "open /dev/null");
    struct qemu_child q = {.l = l, .argv = argv, .log_fd = log, .null_fd = null, .parent = getpid()};
    struct hd_spawn_options opts = {
        .what = "start " QEMU_BINARY,
        .cgroup_fd = -1,
        .go = true,
        .child = qemu_child,
        .data = &q,
    };
    struct hd_spawn s;
    if (hd_spawn_start(&opts, &s, err) < 0)
        return -1;
    if (cg && hd_cgroup_enter(cg, s.pid, err) < 0) {
        hd_error_prefix(err, "qemu cgroup");
        return hd_spawn_abort(&s, err);
    }
    pid_t pid = s.pid;
    if (hd_spawn_finish(&s, err) < 0)
        return -1;
    *pid_out = pid;
    return 0;
}
