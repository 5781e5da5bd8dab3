/*
 * share.c - host directories in a guest (hedge-oci-vm's directory binds): virtiofs.
 *
 * Debian's cloud guest kernel has no 9p but builds virtiofs (fuse + virtiofs modules, which the kernel dir
 * keeps in modules/fs, loaded by hedge-init only for a guest with a share). Each share is one virtiofsd
 * (QEMU's, the vhost-user file system daemon) serving its directory, and one vhost-user-fs-pci device in QEMU
 * with the tag hdfsN; vhost-user maps guest RAM, so that RAM is a shared memfd (qemu.c). hedge listens on the
 * daemon's socket itself (a 0700 dir of its own under /tmp: a socket path has 108 bytes, a run dir may be
 * longer) and gives the listening fd to virtiofsd (--fd), so QEMU's connect waits in the backlog and nothing
 * polls for a socket to appear. virtiofsd runs in a mount namespace of its own where a read-only share is a
 * read-only bind of the directory: the guest cannot write it whatever it mounts (the guest's root is root in
 * its kernel, not on the host's files). It dies with the thread that started it (parent-death signal) and
 * is killed and reaped at cleanup.
 */
#include "runtime/vm/vm_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/util.h"
#include "runtime/backend.h"

/* The virtiofsd to run: $HEDGE_VIRTIOFSD, QEMU's (Debian 12: /usr/lib/qemu), or the Rust one (libexec). */
static const char *virtiofsd_binary(bool *rust)
{
    const char *env = getenv("HEDGE_VIRTIOFSD");
    *rust = false;
    if (env && *env) {
        *rust = strstr(env, "libexec") != NULL;
        return access(env, X_OK) == 0 ? env : NULL;
    }
    if (access("/usr/lib/qemu/virtiofsd", X_OK) == 0)
        return "/usr/lib/qemu/virtiofsd";
    if (access("/usr/libexec/virtiofsd", X_OK) == 0) {
        *rust = true;
        return "/usr/libexec/virtiofsd";
    }
    return NULL;
}

int hd_vm_add_shares(struct hd_workload *w, const struct hd_vm_share *shares, size_t n, hd_error_t *err)
{
    struct vm *vm = w->backend == &hd_backend_vm ? w->backend_data : NULL;
    if (vm == NULL || vm->state != VM_PREPARED)
        return hd_error_set(err, EINVAL, "shares: not a prepared VM");
    if (n == 0)
        return 0;
    if (vm->kernel.fs_modules == NULL || vm->kernel.fs_modules[0] == NULL)
        return hd_error_set(err, ENOENT,
                            "the guest kernel in %s has no virtiofs modules (modules/fs): fetch it again with "
                            "`hedge vm kernel fetch` (or `make guest-kernel`)",
                            vm->kernel.dir);
    bool rust;
    if (virtiofsd_binary(&rust) == NULL)
        return hd_error_set(err, ENOENT,
                            "no virtiofsd to share a host directory (/usr/lib/qemu/virtiofsd of "
                            "qemu-system-common, /usr/libexec/virtiofsd of virtiofsd, or an executable "
                            "$HEDGE_VIRTIOFSD)");
    if (vm->snapshot) { /* a template has no such device, and its RAM is a file, not shared memory */
        if (vm->boot_insist)
            return hd_error_set(err, 0, "vm: --vm-boot snapshot: a template has no shared directories");
        hd_vm_template_free(&vm->tmpl);
        vm->snapshot = false;
    }
    for (size_t i = 0; i < n; i++) {
        if (shares[i].target[0] != '/')
            return hd_error_set(err, EINVAL, "%s: not an absolute path", shares[i].target);
        size_t k = vm->n_shares;
        cleanup_free char *record = hd_xasprintf("%d hdfs%zu %s", shares[i].readonly ? 1 : 0, k, shares[i].target);
        if (hd_vm_config_append(vm, HD_VM_CFG_SHARE, record, err) < 0)
            return hd_error_prefix(err, "%s", shares[i].target);
        vm->shares = hd_xrealloc(vm->shares, (k + 1) * sizeof(*vm->shares));
        vm->shares[k] = (struct vm_share){.source = hd_xstrdup(shares[i].source),
                                          .target = hd_xstrdup(shares[i].target),
                                          .readonly = shares[i].readonly,
                                          .pid = -1};
        vm->n_shares++;
    }
    return 0;
}

/* The child: its own mount namespace (a read-only share is a read-only bind there), then virtiofsd. */
__attribute__((noreturn)) static void virtiofsd_child(const struct vm_share *s, int listen_fd, int log_fd, pid_t parent)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
        _exit(127);
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
        dprintf(log_fd, "hedge: a mount namespace for virtiofsd: %s\n", strerror(errno));
        _exit(127);
    }
    if (s->readonly &&
        (mount(s->source, s->source, NULL, MS_BIND | MS_REC, NULL) < 0 ||
         mount(NULL, s->source, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0)) {
        dprintf(log_fd, "hedge: %s read-only: %s\n", s->source, strerror(errno));
        _exit(127);
    }
    int null = open("/dev/null", O_RDWR);
    if (null < 0 || dup2(null, 0) < 0 || dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0 || dup2(listen_fd, 3) < 0)
        _exit(127);
    syscall(SYS_close_range, 4u, ~0u, 0u);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    bool rust;
    const char *bin = virtiofsd_binary(&rust);
    char source[4200];
    if (rust) {
        snprintf(source, sizeof(source), "--shared-dir=%s", s->source);
        execl(bin, "virtiofsd", "--fd=3", source, "--sandbox=chroot", "--cache=auto", (char *)NULL);
    } else {
        snprintf(source, sizeof(source), "source=%s", s->source);
        execl(bin, "virtiofsd", "--fd=3", "-o", source, "-o", "cache=auto", "-o", "sandbox=chroot", "-o",
              "log_level=err", (char *)NULL);
    }
    dprintf(2, "hedge: exec %s: %s\n", bin ? bin : "virtiofsd", strerror(errno));
    _exit(127);
}

int hd_vm_shares_start(struct vm *vm, const char *run_dir, hd_error_t *err)
{
    if (vm->n_shares == 0)
        return 0;
    char dir[] = "/tmp/hedge-vfs.XXXXXX";
    if (mkdtemp(dir) == NULL)
        return hd_error_sys(err, "vm: a dir for virtiofsd's sockets");
    vm->share_dir = hd_xstrdup(dir);
    for (size_t i = 0; i < vm->n_shares; i++) {
        struct vm_share *s = &vm->shares[i];
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/%zu.sock", dir, i);
        cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 1) < 0)
            return hd_error_sys(err, "vm: virtiofsd socket %s", addr.sun_path);
        cleanup_free char *log_path = hd_xasprintf("%s/virtiofsd-%zu.log", run_dir, i);
        cleanup_close int log = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (log < 0)
            return hd_error_sys(err, "create %s", log_path);
        pid_t parent = getpid();
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0)
            return hd_error_sys(err, "vm: fork virtiofsd");
        if (pid == 0)
            virtiofsd_child(s, fd, log, parent);
        s->pid = pid;
        hd_strv_push(&vm->share_sockets, addr.sun_path);
    }
    return 0;
}

void hd_vm_shares_stop(struct vm *vm)
{
    for (size_t i = 0; i < vm->n_shares; i++) {
        struct vm_share *s = &vm->shares[i];
        if (s->pid > 0) {
            kill(s->pid, SIGKILL);
            while (waitpid(s->pid, NULL, 0) < 0 && errno == EINTR)
                ;
        }
        free(s->source);
        free(s->target);
    }
    free(vm->shares);
    vm->shares = NULL;
    vm->n_shares = 0;
    hd_strv_free(vm->share_sockets);
    vm->share_sockets = NULL;
    if (vm->share_dir) {
        hd_error_t ignored = NULL;
        hd_rm_rf(vm->share_dir, &ignored);
        hd_error_free(&ignored);
        free(vm->share_dir);
        vm->share_dir = NULL;
    }
}
