/*
 * pool.c - a warm pool's member (issue 16): a clone of a template, already restored and running, whose
 * guest waits in hedge-init's read of CONFIG until a workload takes it. hedged keeps a few per template
 * (daemon/vm_pool.c); each lives in a hedge-monitor started in pool mode, which becomes the workload's
 * monitor when hedged hands it a deployment, so QEMU keeps its parent (the monitor reaps it, as always).
 *
 *   start  find and verify the template for (RAM, vCPUs, accelerator) exactly as a workload would (the
 *          same kernel, initramfs and kernel arguments: a stale template is refused here, not later);
 *          spawn QEMU in a cgroup of its own (hedge/vm-pool-<id>, the limits of a guest of that size)
 *          with the template's RAM mapped privately and a sparse placeholder in the disk slot (unlinked
 *          as soon as QEMU holds it); restore; send WARM and wait for WARM_DONE while the guest rehearses
 *          a start on nothing. The guest runs: hedge-init waits for CONFIG.
 *   adopt  (vm.c, at the workload's start) the workload's erofs image replaces the placeholder under
 *          the running guest: blockdev-add of a file node, then blockdev-reopen of the slot's raw node
 *          onto it. The guest read the placeholder only when it probed the disk, and dropped that page
 *          cache when the partition scan closed the device: nothing of the placeholder stays. QEMU moves
 *          into the workload's cgroup; CONFIG goes with this clone's own entropy seed, clock, hostname
 *          and machine id, as after any restore.
 *
 * What the pool saves is QEMU's start and the restore (spawn to a running guest), and with the rehearsal
 * (WARM, init/setup.c's rehearse_start) the first translation under TCG of the code paths a start runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"
#include "cgroup/cgroup.h"
#include "runtime/run.h"
#include "runtime/vm/proto.h"
#include "runtime/vm/qmp.h"
#include "runtime/vm/vm.h"
#include "runtime/vm/vm_internal.h"

#define POOL_RESTORE_TIMEOUT_MS 30000
#define POOL_QMP_TIMEOUT_MS 2000

static void pooled_kill(struct hd_vm_pooled *p)
{
    if (p->qemu_pidfd >= 0)
        syscall(SYS_pidfd_send_signal, p->qemu_pidfd, SIGKILL, NULL, 0);
    else if (p->qemu_pid > 0)
        kill(p->qemu_pid, SIGKILL); /* not reaped: the pid is still ours */
    if (p->qemu_pid > 0)
        while (waitpid(p->qemu_pid, NULL, 0) < 0 && errno == EINTR)
            ;
    p->qemu_pid = -1;
}

void hd_vm_pooled_destroy(struct hd_vm_pooled *p)
{
    if (p == NULL)
        return;
    pooled_kill(p);
    hd_qmp_close(p->qmp);
    if (p->qemu_pidfd >= 0)
        close(p->qemu_pidfd);
    if (p->port_fd >= 0)
        close(p->port_fd);
    hd_error_t err = NULL;
    if (p->cgroup && hd_cgroup_destroy(p->cgroup, &err) < 0) {
        hd_log_error(HD_LOG_WARN, "vm-pool", &err);
    }
    if (p->dir && hd_rm_rf(p->dir, &err) < 0) {
        hd_log_error(HD_LOG_WARN, "vm-pool", &err);
    }
    hd_vm_template_free(&p->tmpl);
    free(p->dir);
    free(p->console_log);
    free(p->qemu_log);
    free(p->vmlinuz);
    free(p->initramfs);
    free(p);
}

pid_t hd_vm_pooled_qemu_pid(const struct hd_vm_pooled *p)
{
    return p->qemu_pid;
}

int hd_vm_pooled_qemu_pidfd(const struct hd_vm_pooled *p)
{
    return p->qemu_pidfd;
}

const char *hd_vm_pooled_key(const struct hd_vm_pooled *p)
{
    return p->tmpl.key;
}

/* The template a workload of this shape would restore: the same inputs as vm.c's choose_boot. */
static int pooled_find_template(const char *state_dir, const char *want_key, struct hd_vm_pooled *p, hd_error_t *err)
{
    struct hd_vm_kernel kernel = {0};
    cleanup_free char *initramfs = NULL;
    int r = -1;
    if (hd_vm_kernel_find(state_dir, &kernel, err) < 0 || hd_vm_initramfs(state_dir, &kernel, &initramfs, err) < 0)
        goto out;
    char stale[65];
    if (hd_vm_template_lookup(state_dir, kernel.vmlinuz, initramfs, p->ram_bytes, p->vcpus, p->accel, &p->tmpl, stale,
                              err) < 0) {
        if (stale[0]) {
            hd_error_free(err);
            hd_error_set(err, 0, "stale: built from another kernel, initramfs or QEMU than the current ones");
        }
    } else if (want_key && strcmp(p->tmpl.key, want_key) != 0) {
        hd_error_set(err, 0, "stale: this guest's template is %.12s now", p->tmpl.key);
    } else {
        p->vmlinuz = hd_xstrdup(kernel.vmlinuz);
        p->initramfs = hd_xstrdup(initramfs);
        r = 0;
    }
out:
    hd_vm_kernel_free(&kernel);
    return r;
}

/*
 * WARM, then wait for WARM_DONE: the guest runs a start's code paths once (init/setup.c's rehearse_start),
 * so that under TCG they are translated in this QEMU before a workload waits on them.
 */
static int pooled_rehearse(struct hd_vm_pooled *p, hd_error_t *err)
{
    uint64_t t0 = hd_now_ns();
    struct hd_vm_msg_header h = {HD_VM_MSG_WARM, 0};
    int r = hd_vm_socket_send_all(p->port_fd, &h, sizeof(h));
    if (r < 0)
        return hd_error_set(err, -r, "send WARM to the guest");
    size_t got = 0;
    while (got < sizeof(h)) {
        struct pollfd pfd = {.fd = p->port_fd, .events = POLLIN};
        int pr = poll(&pfd, 1, POOL_RESTORE_TIMEOUT_MS);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            return hd_error_set(err, ETIMEDOUT, "the guest did not finish its rehearsal within %d ms",
                                POOL_RESTORE_TIMEOUT_MS);
        ssize_t n = read(p->port_fd, (char *)&h + got, sizeof(h) - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return hd_error_set(err, n < 0 ? errno : EPIPE, "the guest's channel ended during its rehearsal");
        got += (size_t)n;
    }
    if (h.type != HD_VM_MSG_WARM_DONE || h.length != 0)
        return hd_error_set(err, EPROTO,
                            "protocol: the guest answered WARM with type %u length %u (an initramfs "
                            "without the rehearsal?)",
                            h.type, h.length);
    if (getenv("HEDGE_VM_DEBUG"))
        hd_log(HD_LOG_INFO, "vm-pool", "rehearsal in %.3f s", (double)(hd_now_ns() - t0) / 1e9);
    return 0;
}

char *hd_vm_pooled_dir(const char *id)
{
    return hd_xasprintf("%s/vm-pool/%s", hd_runtime_dir(), id);
}

int hd_vm_pooled_start(const char *id, const char *state_dir, int64_t ram_bytes, int vcpus, const char *accel,
                       const char *want_key, struct hd_vm_pooled **out, hd_error_t *err)
{
    struct hd_vm_pooled *p = hd_xcalloc(1, sizeof(*p));
    p->qemu_pid = -1;
    p->qemu_pidfd = p->port_fd = -1;
    p->ram_bytes = ram_bytes;
    p->vcpus = vcpus;
    snprintf(p->id, sizeof(p->id), "%s", id);
    int qemu_port = -1, qmp_fd = -1, qmp_end = -1, state_fd = -1;
    cleanup_free char *slot = NULL;
    cleanup_free char *cg_name = NULL;
    cleanup_free char *append = hd_vm_extra_append();
    struct hd_resources res = {.memory = ram_bytes + QEMU_OVERHEAD, .pids = QEMU_PIDS};
    int sv[2];
    if (hd_vm_accel_choose(accel, true, &p->accel, err) < 0 || pooled_find_template(state_dir, want_key, p, err) < 0)
        goto fail;
    p->dir = hd_vm_pooled_dir(p->id);
    if (hd_mkdir_p(p->dir, 0700, err) < 0)
        goto fail;
    p->console_log = hd_xasprintf("%s/console.log", p->dir);
    p->qemu_log = hd_xasprintf("%s/qemu.log", p->dir);
    slot = hd_xasprintf("%s/slot.img", p->dir);
    {
        cleanup_close int fd = open(slot, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || ftruncate(fd, HD_VM_SLOT_BYTES) < 0) {
            hd_error_sys(err, "placeholder disk %s", slot);
            goto fail;
        }
    }
    cg_name = hd_xasprintf("vm-pool-%s", p->id);
    if (hd_cgroup_create(cg_name, &res, &p->cgroup, err) < 0)
        goto fail;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        hd_error_sys(err, "socketpair");
        goto fail;
    }
    p->port_fd = sv[0];
    qemu_port = sv[1];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        hd_error_sys(err, "socketpair");
        goto fail;
    }
    qmp_fd = sv[0];
    qmp_end = sv[1];
    state_fd = open(p->tmpl.state_path, O_RDONLY | O_CLOEXEC);
    if (state_fd < 0) {
        hd_error_sys(err, "open %s", p->tmpl.state_path);
        goto fail;
    }
    struct hd_vm_launch launch = {
        .vmlinuz = p->vmlinuz,
        .initramfs = p->initramfs,
        .rootfs_image = slot,
        .console_log = p->console_log,
        .qemu_log = p->qemu_log,
        .port_fd = qemu_port,
        .accel = p->accel,
        .ram_bytes = ram_bytes,
        .vcpus = vcpus,
        .extra_append = append,
        .tap_fd = -1,
        .qmp_fd = qmp_end,
        .mem_path = p->tmpl.ram_path,
        .mem_share = false, /* copy-on-write: share=on would write into the template */
        .incoming = true,
        .incoming_fd = state_fd,
    };
    if (hd_vm_qemu_spawn(&launch, p->cgroup, &p->qemu_pid, err) < 0)
        goto fail;
    close(qemu_port);
    close(qmp_end);
    close(state_fd);
    qemu_port = qmp_end = state_fd = -1;
    p->qemu_pidfd = (int)syscall(SYS_pidfd_open, p->qemu_pid, 0);
    if (p->qemu_pidfd < 0) {
        hd_error_sys(err, "pidfd_open %d", p->qemu_pid);
        goto fail;
    }
    int attach_fd = qmp_fd;
    qmp_fd = -1;
    if (hd_qmp_attach(attach_fd, POOL_RESTORE_TIMEOUT_MS, &p->qmp, err) < 0)
        goto fail;
    unlink(slot); /* QEMU opened it at start (it answered QMP): nothing is left on disk if it dies */
    if (hd_vm_template_restore(p->qmp, POOL_RESTORE_TIMEOUT_MS, err) < 0 || pooled_rehearse(p, err) < 0)
        goto fail;
    *out = p;
    return 0;
fail:
    if (qemu_port >= 0)
        close(qemu_port);
    if (qmp_fd >= 0)
        close(qmp_fd);
    if (qmp_end >= 0)
        close(qmp_end);
    if (state_fd >= 0)
        close(state_fd);
    hd_vm_pooled_destroy(p);
    return -1;
}

/* The workload's rootfs image in the slot: a file node for it, then the slot's raw node reopened onto it. */
int hd_vm_pooled_attach_rootfs(struct hd_vm_pooled *p, const char *image, hd_error_t *err)
{
    json_t *add = json_pack("{s:s,s:s,s:s,s:b}", "driver", "file", "node-name", HD_VM_SLOT_NODE "-rootfs", "filename",
                            image, "read-only", 1);
    int r = hd_qmp_command(p->qmp, "blockdev-add", add, POOL_QMP_TIMEOUT_MS, NULL, err);
    json_decref(add);
    if (r < 0)
        return hd_error_prefix(err, "blockdev-add %s", image);
    json_t *reopen = json_pack("{s:[{s:s,s:s,s:s,s:b}]}", "options", "driver", "raw", "node-name", HD_VM_SLOT_NODE,
                               "file", HD_VM_SLOT_NODE "-rootfs", "read-only", 1);
    r = hd_qmp_command(p->qmp, "blockdev-reopen", reopen, POOL_QMP_TIMEOUT_MS, NULL, err);
    json_decref(reopen);
    if (r < 0)
        return hd_error_prefix(err, "blockdev-reopen of the disk slot");
    return 0;
}
