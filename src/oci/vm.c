/*
 * vm.c - hedge-oci-vm: the same command line as hedge-oci, the bundle's
 * process in a VM with its own kernel (hedge's vm backend, runtime/vm/).
 *
 * The binary is hedge-oci started under the name hedge-oci-vm (a symlink);
 * main.c sets oci_globals.vm and the verbs that differ come here.
 *
 * create forks a holder that does not die with the caller (a double fork,
 * setsid; the engine's subreaper - conmon, the containerd shim - inherits it).
 * The holder owns the workload: hd_workload_create with a vm spec, then
 * hd_workload_start in the vm backend's hold (backend.h): QEMU boots, the
 * guest's hedge-init says READY, the backend calls held() - the holder saves
 * state.json with its own pid and tells create "ready" over a pipe - and the
 * backend waits for a reader of <root>/<id>/exec.fifo. create then writes the
 * pid file and returns; a failure before READY reaches create as text on the
 * same pipe, after the holder removed what it made (QEMU, cgroup, run dir),
 * and create removes the state dir. start is hedge-oci's own (it opens the
 * FIFO: the backend sends CONFIG). The holder then relays the guest's
 * stdout/stderr to its own stdio (create's fds 0-2, which the engine gave),
 * forwards the signals it gets (kill) to the guest as SIGNAL messages, and
 * exits with the workload's status, which it also keeps in <root>/<id>/exit.
 * SIGKILL ends the holder, and QEMU with it (QEMU's parent-death signal).
 * state, kill and delete are hedge-oci's: the pid is the holder's, the cgroup
 * QEMU's.
 *
 * run in the foreground needs no holder: this process runs the workload
 * (hd_workload_* without the hold) and is the pid in the state.
 *
 * exec: whoever runs the workload (the holder, a foreground run) listens on
 * <root>/<id>/exec.sock; `exec` sends the process (CONFIG-style records) with
 * its own stdin, stdout and stderr (SCM_RIGHTS), and the vm backend has
 * hedge-init start it (hd_vm_exec, an EXEC message); the relay feeds what the
 * stdin gives to the guest process's stdin (EXEC_STDIN), the guest's output
 * goes straight into the other two fds and the exit code comes back on the
 * connection, to a small host process `exec` forks (its pid is the exec's
 * pid: --pid-file, --detach). exec --tty sends the slave of a host pty (raw)
 * as all three and asks for a terminal in the guest; the master goes to the
 * console socket, and the host process, on that pty as its controlling
 * terminal, writes each new size on the connection (SIGWINCH). That host process relays the signals it gets
 * on the same connection (the holder sends EXEC_SIGNAL); its death before the exit code (SIGKILL) ends the
 * connection, and the holder has the guest process killed.
 *
 * process.terminal: create makes a host pty, sends its master to --console-socket and gives its slave (raw) to
 * the holder as stdio and controlling terminal; the guest runs the workload on a pty of its own (CONFIG's
 * TERMINAL record) and the holder passes each new size (SIGWINCH) as RESIZE. A foreground run without a
 * socket relays its own stdio (raw when it is a terminal).
 *
 * hooks: prestart and createRuntime run in create (the runtime's namespaces) once the holder said "ready" (the
 * guest held at READY, state.json naming the holder), poststart and poststop are lifecycle.c's (start, delete,
 * from <root>/<id>/hooks.json); a foreground run holds at READY for its own (the FIFO a pipe it reads itself).
 * createContainer and startContainer run in the container's namespaces: a VM has none on the host, refused.
 *
 * What a guest cannot have is refused naming the field; what it does not need
 * is ignored (docs/oci.md#hedge-oci-vm says which and why).
 */
#include "oci/oci.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "base/log.h"
#include "base/fdpass.h"
#include "base/util.h"
#include "cgroup/cgroup.h"
#include "runtime/run.h"
#include "runtime/vm/proto.h"
#include "runtime/vm/vm.h"

static const int forwarded_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

/* Is mount m (config.json's mounts[i]) a bind? */
static bool mount_is_bind(json_t *m)
{
    json_t *type = json_object_get(m, "type");
    if (json_is_string(type) && strcmp(json_string_value(type), "bind") == 0)
        return true;
    size_t k;
    json_t *o;
    json_array_foreach(json_object_get(m, "options"), k, o)
    {
        if (json_is_string(o) &&
            (strcmp(json_string_value(o), "bind") == 0 || strcmp(json_string_value(o), "rbind") == 0))
            return true;
    }
    return false;
}

/* What a guest gets beyond the hedge spec: the bound files' copies and the engine's network namespace. */
struct vm_extras {
    struct hd_vm_file *files;
    size_t n_files;
    struct hd_vm_share *shares; /* bound directories */
    size_t n_shares;
    size_t first_share_index; /* mounts[] of the first one, for errors */
    const char *netns_path;   /* cfg's, not owned */
    size_t netns_index;       /* its linux.namespaces[] */
};

static void vm_extras_free(struct vm_extras *x)
{
    for (size_t i = 0; i < x->n_files; i++) {
        free((char *)x->files[i].target);
        free((char *)x->files[i].data);
    }
    free(x->files);
    for (size_t i = 0; i < x->n_shares; i++) {
        free((char *)x->shares[i].source);
        free((char *)x->shares[i].target);
    }
    free(x->shares);
    *x = (struct vm_extras){0};
}

#define VM_FILE_MAX (1u << 20) /* one bound file's bytes */

static bool mount_option(json_t *m, const char *name)
{
    size_t k;
    json_t *o;
    json_array_foreach(json_object_get(m, "options"), k, o)
    {
        if (json_is_string(o) && strcmp(json_string_value(o), name) == 0)
            return true;
    }
    return false;
}

/* Read the bound file source (mounts[i]) into f. */
static int read_bound_file(size_t i, const char *source, const char *target, json_t *m, struct hd_vm_file *f,
                           hd_error_t *err)
{
    cleanup_close int fd = open(source, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        return hd_error_sys(err, "mounts[%zu]: the source %s", i, source);
    if (!S_ISREG(st.st_mode))
        return hd_error_set(err, 0,
                            "mounts[%zu]: a bind of %s (neither a regular file nor a directory) is not supported by "
                            "hedge-oci-vm",
                            i, source);
    if (st.st_size > (off_t)VM_FILE_MAX)
        return hd_error_set(err, EFBIG,
                            "mounts[%zu]: %s is %lld bytes: hedge-oci-vm copies a bound file into the guest, up "
                            "to %u bytes",
                            i, source, (long long)st.st_size, VM_FILE_MAX);
    char *data = hd_xmalloc((size_t)st.st_size + 1);
    if (hd_read_exact(fd, data, (size_t)st.st_size) < 0) {
        free(data);
        return hd_error_sys(err, "mounts[%zu]: read %s", i, source);
    }
    *f = (struct hd_vm_file){.target = hd_xstrdup(target),
                             .mode = st.st_mode & 07777,
                             .uid = st.st_uid,
                             .gid = st.st_gid,
                             .readonly = mount_option(m, "ro"),
                             .data = data,
                             .len = (size_t)st.st_size};
    return 0;
}

/*
 * The bundle's mounts under a VM: the guest makes its own /proc, /sys, /dev (and what else a filesystem
 * mount asks for is not made); a bind of a regular file (/etc/hosts, /etc/resolv.conf, /etc/hostname,
 * /run/.containerenv, secrets) is copied into the guest and bound there by hedge-init (up to VM_FILE_MAX
 * bytes each, HD_VM_FILES_MAX in all); the engines' /dev/shm bind is the guest's own /dev/shm; a bind of
 * any other directory is shared with the guest through virtiofs (runtime/vm/share.c).
 */
static int check_mounts(const struct oci_config *cfg, struct vm_extras *x, hd_error_t *err)
{
    json_t *mounts = json_object_get(cfg->document, "mounts");
    size_t i, total = 0;
    json_t *m;
    int rc = 0;
    json_array_foreach(mounts, i, m)
    {
        if (!mount_is_bind(m))
            continue;
        const char *source = json_string_value(json_object_get(m, "source"));
        const char *target = json_string_value(json_object_get(m, "destination"));
        struct stat st;
        if (source == NULL || target == NULL || target[0] != '/') {
            rc = hd_error_set(err, 0, "mounts[%zu]: a bind needs a source and an absolute destination", i);
            break;
        }
        if (stat(source, &st) < 0) {
            rc = hd_error_sys(err, "mounts[%zu]: the source %s", i, source);
            break;
        }
        if (S_ISDIR(st.st_mode)) {
            if (strcmp(target, "/dev/shm") == 0)
                continue;
            if (x->n_shares == 0)
                x->first_share_index = i;
            x->shares = hd_xrealloc(x->shares, (x->n_shares + 1) * sizeof(*x->shares));
            x->shares[x->n_shares++] = (struct hd_vm_share){
                .source = hd_xstrdup(source), .target = hd_xstrdup(target), .readonly = mount_option(m, "ro")};
            continue;
        }
        x->files = hd_xrealloc(x->files, (x->n_files + 1) * sizeof(*x->files));
        if ((rc = read_bound_file(i, source, target, m, &x->files[x->n_files], err)) < 0)
            break;
        total += x->files[x->n_files++].len;
        if (total > HD_VM_FILES_MAX) {
            rc = hd_error_set(err, EFBIG,
                              "mounts[%zu]: the bound files take more than %u bytes in all (hedge-oci-vm copies "
                              "them into the guest)",
                              i, HD_VM_FILES_MAX);
            break;
        }
    }
    if (rc < 0)
        vm_extras_free(x);
    return rc;
}

/* A pod's sandbox container (Kubernetes' pause, as containerd's CRI and CRI-O mark it in the annotations): it
 * only holds the pod's namespaces, so its VM leaves the pod's network to the containers that serve on it. */
static bool is_pod_sandbox(const struct oci_config *cfg)
{
    json_t *ann = json_object_get(cfg->document, "annotations");
    const char *cri = json_string_value(json_object_get(ann, "io.kubernetes.cri.container-type"));
    const char *crio = json_string_value(json_object_get(ann, "io.kubernetes.cri-o.ContainerType"));
    return (cri && strcmp(cri, "sandbox") == 0) || (crio && strcmp(crio, "sandbox") == 0);
}

/* Turn cfg's container spec into a vm spec; refuse what a guest cannot have, naming the field. */
static int vm_spec_from_config(struct oci_config *cfg, struct vm_extras *x, hd_error_t *err)
{
    struct hd_spec *spec = cfg->spec;
    for (size_t t = 0; t < HD_JOIN_NS_COUNT; t++) {
        if (cfg->ns_paths[t] == NULL || cfg->ns_inherited[t])
            continue; /* the host's own: nothing of it reaches the guest */
        if (t == HD_JOIN_NET && is_pod_sandbox(cfg)) {
            oci_log("info", "linux.namespaces[%zu].path: %s is left to the pod's containers (this is its sandbox)",
                    cfg->ns_index[t], cfg->ns_paths[t]);
            continue;
        }
        if (t == HD_JOIN_NET) { /* the guest's NIC is bridged to it (hd_vm_attach_netns) */
            x->netns_path = cfg->ns_paths[t];
            x->netns_index = cfg->ns_index[t];
            continue;
        }
        /* A pod's containers join its sandbox's ipc, uts, pid (and cgroup, mount) namespaces by path (Kubernetes,
         * podman pods). Each container here is a VM with its own kernel: nothing of a host namespace reaches
         * the guest, except the uts namespace's name, which becomes the guest's hostname (oci_namespaces_open
         * read it when the config names none). The pod still runs; its containers share what their VMs can. */
        if (t != HD_JOIN_UTS)
            oci_log("warning",
                    "linux.namespaces[%zu].path: %s is not shared with the guest (it runs under its own kernel)",
                    cfg->ns_index[t], cfg->ns_paths[t]);
    }
    if (spec->userns.enabled || cfg->new_userns)
        return hd_error_set(err, 0,
                            "linux.uidMappings: a user namespace is not supported by hedge-oci-vm (the guest "
                            "kernel is the isolation boundary)");
    /* prestart, createRuntime, poststart and poststop run on the host (run_create_hooks, lifecycle.c); these two
     * run in the container's namespaces, which a VM does not have on the host */
    for (int p = OCI_HOOK_CREATE_CONTAINER; p <= OCI_HOOK_START_CONTAINER; p++)
        if (cfg->hooks.n[p] > 0)
            return hd_error_set(err, 0,
                                "hooks.%s: not supported by hedge-oci-vm (it runs in the container's namespaces, "
                                "and the process runs under the guest's own kernel, not in namespaces on the host)",
                                oci_hook_phase_name((enum oci_hook_phase)p));
    if (check_mounts(cfg, x, err) < 0)
        return -1;
    for (int i = 0; i < spec->n_mounts; i++) {
        free(spec->mounts[i].source);
        free(spec->mounts[i].target);
    }
    free(spec->mounts);
    spec->mounts = NULL;
    spec->n_mounts = 0;
    /* root in its own guest kernel: no capability sets, no seccomp filter, no host namespaces */
    hd_strv_free(spec->security.cap_add);
    hd_strv_free(spec->security.cap_drop);
    spec->security.cap_add = spec->security.cap_drop = NULL;
    free(spec->security.seccomp);
    spec->security.seccomp = hd_xstrdup("unconfined");
    spec->network = HD_NET_NONE;
    spec->isolation = HD_ISOLATION_VM;
    /* chosen here, quietly: the backend's warning would land in the workload's stderr */
    enum hd_vm_accel accel;
    if (hd_vm_accel_choose(getenv("HEDGE_OCI_VM_ACCEL"), true, &accel, err) < 0)
        return hd_error_prefix(err, "HEDGE_OCI_VM_ACCEL");
    free(spec->vm_accel);
    spec->vm_accel = hd_xstrdup(hd_vm_accel_name(accel));
    if (hd_spec_validate(spec, err) < 0)
        return hd_error_prefix(err, "config.json (as a hedge vm spec)");
    return 0;
}

/* process.terminal and --console-socket, runc's rules: the socket needs a terminal, and a terminal that nobody
 * in the foreground relays needs the socket. */
static int check_terminal(const struct oci_config *cfg, const struct oci_vm_flags *f, bool foreground, hd_error_t *err)
{
    bool socket_given = f->console_socket && *f->console_socket;
    if (!cfg->terminal && socket_given)
        return hd_error_set(err, 0, "--console-socket: the config has no terminal (process.terminal is false)");
    if (cfg->terminal && !socket_given && !foreground)
        return hd_error_set(err, 0, "process.terminal: a detached container needs --console-socket for its terminal");
    return 0;
}

static int load_vm_config(const char *id, const struct oci_vm_flags *f, bool foreground, struct oci_config **out,
                          struct vm_extras *x, hd_error_t *err)
{
    if (oci_id_check(id, err) < 0)
        return -1;
    if (f->preserve_fds && strcmp(f->preserve_fds, "0") != 0)
        return hd_error_set(err, 0, "--preserve-fds: passing extra file descriptors is not supported yet");
    struct oci_config *cfg = NULL;
    if (oci_config_load(f->bundle ? f->bundle : ".", id, &cfg, err) < 0)
        return -1;
    cfg->id = id;
    if (cfg->ns_paths[HD_JOIN_USER]) {
        hd_error_set(err, 0,
                     "linux.namespaces[%zu].path: joining the user namespace %s is not supported by hedge-oci-vm "
                     "(the guest kernel is the isolation boundary)",
                     cfg->ns_index[HD_JOIN_USER], cfg->ns_paths[HD_JOIN_USER]);
        oci_config_free(cfg);
        return -1;
    }
    /* the paths are checked as for a container (errors name the entry), and a joined uts namespace gives its name */
    if (oci_namespaces_open(cfg, err) < 0 || check_terminal(cfg, f, foreground, err) < 0 ||
        vm_spec_from_config(cfg, x, err) < 0) {
        vm_extras_free(x);
        oci_config_free(cfg);
        return -1;
    }
    if (cfg->cgroup_name == NULL)
        cfg->cgroup_name = hd_xstrdup(id);
    *out = cfg;
    return 0;
}

static char *vm_net_path(const char *id)
{
    return hd_xasprintf("%s/%s/vm-net", oci_globals.root, id);
}

/*
 * After hd_workload_create: the bound files go with CONFIG, the guest's NIC goes on the engine's network
 * namespace. <root>/<id>/vm-net keeps the namespace and its interface for delete (oci_vm_delete_net), in
 * case the holder dies before it undoes the redirect.
 */
static int apply_extras(struct hd_workload *w, const char *id, const struct vm_extras *x, hd_error_t *err)
{
    if (x->n_files && hd_vm_add_files(w, x->files, x->n_files, err) < 0)
        return hd_error_prefix(err, "mounts");
    if (x->n_shares && hd_vm_add_shares(w, x->shares, x->n_shares, err) < 0)
        return hd_error_prefix(err, "mounts[%zu]: a bind of the directory %s at %s", x->first_share_index,
                               x->shares[0].source, x->shares[0].target);
    if (x->netns_path == NULL)
        return 0;
    struct hd_vm_netns_link link;
    if (hd_vm_attach_netns(w, x->netns_path, &link, err) < 0)
        return hd_error_prefix(err, "linux.namespaces[%zu].path", x->netns_index);
    cleanup_free char *path = vm_net_path(id);
    cleanup_free char *text = hd_xasprintf("%s\n%s\n", x->netns_path, link.ifname);
    if (hd_write_file_atomic(path, text, strlen(text), err) < 0)
        return -1;
    oci_log("debug", "%s: the guest's NIC (%s, %s) on %s of %s via %s", id, link.mac, link.address, link.ifname,
            x->netns_path, link.tap);
    return 0;
}

void oci_vm_delete_net(const char *id)
{
    cleanup_free char *path = vm_net_path(id);
    cleanup_free char *text = NULL;
    size_t len = 0;
    hd_error_t err = NULL;
    if (hd_read_file(path, &text, &len, &err) == 0) {
        char *nl = strchr(text, '\n');
        char *ifname = nl ? nl + 1 : NULL;
        char *end = ifname ? strchr(ifname, '\n') : NULL;
        if (end) {
            *nl = *end = '\0';
            if (hd_vm_netns_detach(text, ifname, &err) < 0)
                oci_log("warning", "delete %s: %s", id, hd_error_text(err));
        }
    }
    hd_error_free(&err);
}

/* state.json for a workload w whose pid (in the state) is pid: the holder, or the foreground run. */
static int save_state(const char *id, const struct oci_config *cfg, const struct hd_workload *w, pid_t pid,
                      hd_error_t *err)
{
    const char *parent = getenv("HEDGE_CGROUP_PARENT");
    cleanup_free char *created = oci_now_rfc3339();
    struct oci_state st = {
        .id = (char *)id,
        .pid = pid,
        .pid_start = hd_proc_start_time(pid),
        .bundle = cfg->bundle,
        .rootfs = cfg->rootfs,
        .created = created,
        .cgroup_parent = (char *)(parent && *parent ? parent : "hedge"),
        .cgroup_name = cfg->cgroup_name,
        .cgroup_mode = (char *)hd_cgroup_mode_name(hd_cgroup_detect()),
        .run_dir = w->run_dir,
        .annotations_json = cfg->annotations_json,
    };
    return oci_state_save(&st, err);
}

static void remove_state_dir(const char *id)
{
    cleanup_free char *dir = oci_state_dir(id);
    hd_error_t ignored = NULL;
    hd_rm_rf(dir, &ignored);
    hd_error_free(&ignored);
}

/* Keep the workload's exit code in <root>/<id>/exit (the holder's own exit status says the same). */
static void save_exit_code(const char *id, int code)
{
    cleanup_free char *path = hd_xasprintf("%s/%s/exit", oci_globals.root, id);
    char text[16];
    snprintf(text, sizeof(text), "%d\n", code);
    hd_error_t ignored = NULL;
    hd_write_file_atomic(path, text, strlen(text), &ignored);
    hd_error_free(&ignored);
}

static int block_forwarded_signals(sigset_t *mask, hd_error_t *err)
{
    sigemptyset(mask);
    for (size_t i = 0; i < ARRAY_SIZE(forwarded_signals); i++)
        sigaddset(mask, forwarded_signals[i]);
    if (sigprocmask(SIG_BLOCK, mask, NULL) < 0)
        return hd_error_sys(err, "sigprocmask");
    return 0;
}

/* ---- exec: <root>/<id>/exec.sock, served by whoever runs the workload (the holder, a foreground run) ---- */

static char *exec_socket_path(const char *id)
{
    return hd_xasprintf("%s/%s/exec.sock", oci_globals.root, id);
}

static int exec_socket_address(const char *id, struct sockaddr_un *addr, hd_error_t *err)
{
    cleanup_free char *path = exec_socket_path(id);
    *addr = (struct sockaddr_un){.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(addr->sun_path))
        return hd_error_set(err, ENAMETOOLONG, "exec socket %s: the path is too long (--root)", path);
    strcpy(addr->sun_path, path);
    return 0;
}

/* The exec socket, or -1 with a warning in the log: a container without it runs, only exec is refused. */
static int open_exec_socket(const char *id)
{
    struct sockaddr_un addr;
    hd_error_t err = NULL;
    int fd = -1;
    if (exec_socket_address(id, &addr, &err) == 0) {
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 8) < 0) {
            hd_error_sys(&err, "exec socket %s", addr.sun_path);
            if (fd >= 0)
                close(fd);
            fd = -1;
        }
    }
    if (err)
        oci_log("warning", "%s: exec will be refused: %s", id, hd_error_text(err));
    hd_error_free(&err);
    return fd;
}

/*
 * One exec request: a u32 length with the caller's stdin, stdout and stderr (SCM_RIGHTS), then that many
 * bytes of records. The guest's process reads the first and writes to the others; the connection gets its
 * exit code (hd_vm_exec).
 */
static void serve_exec(struct hd_workload *w, int listen_fd)
{
    int conn = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (conn < 0)
        return;
    struct timeval tv = {2, 0};
    setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    uint32_t len = 0;
    int fds[3] = {-1, -1, -1};
    size_t n_fds = 0;
    ssize_t n = hd_recv_fds(conn, &len, sizeof(len), fds, 3, &n_fds, MSG_WAITALL);
    if (n != (ssize_t)sizeof(len) || n_fds != 3) { /* not the three we expect: close what came */
        for (size_t i = 0; i < n_fds; i++)
            close(fds[i]);
        fds[0] = fds[1] = fds[2] = -1;
    }
    cleanup_free char *records = NULL;
    hd_error_t err = NULL;
    if (fds[0] < 0 || fds[1] < 0 || fds[2] < 0 || len == 0 || len > HD_VM_MSG_MAX) {
        hd_error_set(&err, EPROTO, "exec: a malformed request");
    } else {
        records = hd_xmalloc(len);
        if (hd_read_exact(conn, records, len) < 0)
            hd_error_sys(&err, "exec: read the request");
    }
    if (err == NULL) {
        hd_vm_exec(w, records, len, fds[0], fds[1], fds[2], conn, &err); /* takes the four fds, also on error */
        fds[0] = fds[1] = fds[2] = conn = -1;
    }
    if (err)
        oci_log("warning", "%s", hd_error_text(err));
    hd_error_free(&err);
    int left[4] = {fds[0], fds[1], fds[2], conn};
    for (int i = 0; i < 4; i++)
        if (left[i] >= 0)
            close(left[i]);
}

static void records_add(char **buf, size_t *len, char tag, const char *value)
{
    size_t n = strlen(value) + 1;
    *buf = hd_xrealloc(*buf, *len + 1 + n);
    (*buf)[*len] = tag;
    memcpy(*buf + *len + 1, value, n);
    *len += 1 + n;
}

/* A control record (struct hd_vm_exec_control) to the holder: a signal, or (signal 0) the terminal's size. */
static void send_control(int sock, uint32_t sig, int slave)
{
    struct hd_vm_exec_control c = {.signal = sig};
    if (sig == 0) {
        struct winsize ws;
        if (ioctl(slave, TIOCGWINSZ, &ws) < 0)
            return;
        c.rows = ws.ws_row;
        c.cols = ws.ws_col;
    }
    ssize_t n = send(sock, &c, sizeof(c), MSG_NOSIGNAL);
    (void)n; /* the holder went away: the exit code will not come either */
}

/*
 * The exec'd process on the host side (the pid exec reports): ends with the guest process's exit code. The
 * signals an engine sends it (forwarded_signals; mask: blocked already, by oci_vm_exec before the fork) go to
 * the holder, which has hedge-init send them to the guest process (EXEC_SIGNAL); SIGKILL ends this process,
 * the holder sees its connection end and has the guest process killed. With a terminal (slave >= 0) it makes
 * the host pty its controlling terminal, so that a new size the engine sets on the master comes as SIGWINCH,
 * and passes each size on (the first at once: one set before it took the terminal is read here, one set
 * after comes as SIGWINCH).
 */
static void __attribute__((noreturn)) exec_waiter(int sock, int slave, const char *id, const sigset_t *mask)
{
    int sfd = signalfd(-1, mask, SFD_CLOEXEC | SFD_NONBLOCK);
    bool tty = slave >= 0 && setsid() >= 0 && ioctl(slave, TIOCSCTTY, 0) == 0;
    if (tty)
        send_control(sock, 0, slave);
    while (sfd >= 0) {
        struct pollfd p[2] = {{.fd = sock, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        struct signalfd_siginfo si;
        bool resized = false;
        while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
            if (si.ssi_signo == SIGWINCH)
                resized = true;
            else
                send_control(sock, si.ssi_signo, -1);
        }
        if (resized && tty)
            send_control(sock, 0, slave);
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR))
            break; /* the exit code, or the end */
    }
    uint32_t code;
    if (hd_read_exact(sock, &code, sizeof(code)) == 0)
        _exit((int)(code & 0xff));
    fprintf(stderr, "hedge-oci-vm: exec %s: the VM ended before the process did, or refused it (see --log)\n", id);
    _exit(255);
}

int oci_vm_exec(const struct oci_state *st, const struct hd_spec *spec, const struct oci_console *console,
                pid_t *pid_out, hd_error_t *err)
{
    cleanup_free char *records = NULL;
    size_t len = 0;
    for (size_t i = 0; spec->command && spec->command[i]; i++)
        records_add(&records, &len, HD_VM_CFG_ARG, spec->command[i]);
    for (size_t i = 0; spec->env && spec->env[i]; i++)
        records_add(&records, &len, HD_VM_CFG_ENV, spec->env[i]);
    if (spec->workdir)
        records_add(&records, &len, HD_VM_CFG_WORKDIR, spec->workdir);
    if (spec->user)
        records_add(&records, &len, HD_VM_CFG_USER, spec->user);
    if (len + 4 + 16 > HD_VM_MSG_MAX)
        return hd_error_set(err, E2BIG, "the command and environment take %zu bytes, more than %u", len,
                            HD_VM_MSG_MAX - 4 - 16);
    struct sockaddr_un addr;
    if (exec_socket_address(st->id, &addr, err) < 0)
        return -1;
    cleanup_close int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0 || connect(sock, (struct sockaddr *)&addr, sizeof(addr)) < 0)
        return hd_error_sys(err, "connect to the VM's holder (%s)", addr.sun_path);
    /* a terminal: the process's stdio is the slave of a host pty whose master went to the console socket */
    cleanup_close int slave = -1;
    if (console) {
        if ((slave = oci_console_host_pty(console, err)) < 0)
            return -1;
        struct winsize ws = {0};
        ioctl(slave, TIOCGWINSZ, &ws);
        char size[32];
        snprintf(size, sizeof(size), "%u %u", ws.ws_row, ws.ws_col);
        records_add(&records, &len, HD_VM_CFG_TERMINAL, size);
    }
    uint32_t n32 = (uint32_t)len;
    /* a caller without a stdin (fd 0 closed) gives the process an empty one */
    cleanup_close int null_fd =
        slave < 0 && fcntl(STDIN_FILENO, F_GETFD) < 0 ? open("/dev/null", O_RDONLY | O_CLOEXEC) : -1;
    int fds[3] = {null_fd >= 0 ? null_fd : STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO};
    if (slave >= 0)
        fds[0] = fds[1] = fds[2] = slave;
    if (hd_send_fds(sock, &n32, sizeof(n32), fds, 3) != (ssize_t)sizeof(n32) || hd_write_all(sock, records, len) < 0)
        return hd_error_sys(err, "send the process to the VM's holder");
    fflush(NULL);
    /* blocked before the fork: a signal sent to the new pid as soon as it exists is relayed, not lost */
    sigset_t mask, old;
    sigemptyset(&mask);
    for (size_t i = 0; i < ARRAY_SIZE(forwarded_signals); i++)
        sigaddset(&mask, forwarded_signals[i]);
    sigprocmask(SIG_BLOCK, &mask, &old);
    pid_t pid = fork();
    if (pid == 0) {
        if (console)
            close(console->socket_fd);
        exec_waiter(sock, slave, st->id, &mask);
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (pid < 0)
        return hd_error_sys(err, "fork");
    *pid_out = pid;
    return 0;
}

/* The size of the terminal tty_fd to the workload's guest pty (RESIZE; the kernel there signals only a change). */
static void pass_terminal_size(struct hd_workload *w, int tty_fd)
{
    struct winsize ws;
    hd_error_t ignored = NULL;
    if (ioctl(tty_fd, TIOCGWINSZ, &ws) == 0 && (ws.ws_row || ws.ws_col) &&
        hd_vm_resize(w, ws.ws_row, ws.ws_col, &ignored) < 0)
        oci_log("warning", "terminal size: %s", hd_error_text(ignored));
    hd_error_free(&ignored);
}

/*
 * The workload runs: forward our signals to the guest and serve exec until QEMU ends, then its exit code. With
 * a terminal (tty_fd: the host terminal relayed to the workload's guest pty, our controlling one), SIGWINCH
 * is its new size, passed on as RESIZE (the guest's pty signals its process itself).
 */
static int forward_and_wait(struct hd_workload *w, const sigset_t *mask, int exec_fd, int tty_fd, int *code,
                            hd_error_t *err)
{
    cleanup_close int sfd = signalfd(-1, mask, SFD_CLOEXEC | SFD_NONBLOCK);
    cleanup_close int pidfd = (int)syscall(SYS_pidfd_open, w->pid, 0);
    if (sfd < 0 || pidfd < 0)
        return hd_error_sys(err, "watch QEMU (pid %d)", (int)w->pid);
    if (tty_fd >= 0)
        pass_terminal_size(w, tty_fd); /* one set while the container was created, not started */
    for (;;) {
        struct pollfd fds[3] = {
            {.fd = pidfd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}, {.fd = exec_fd, .events = POLLIN}};
        if (poll(fds, 3, -1) < 0 && errno != EINTR)
            return hd_error_sys(err, "poll");
        if (fds[2].revents & POLLIN)
            serve_exec(w, exec_fd);
        struct signalfd_siginfo si;
        while ((fds[1].revents & POLLIN) && read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
            if (si.ssi_signo == SIGWINCH && tty_fd >= 0) {
                pass_terminal_size(w, tty_fd);
                continue;
            }
            hd_error_t ignored = NULL;
            if (hd_workload_signal(w, (int)si.ssi_signo, &ignored) < 0)
                oci_log("warning", "signal %d: %s", (int)si.ssi_signo, hd_error_text(ignored));
            hd_error_free(&ignored);
        }
        if (fds[0].revents & POLLIN)
            break;
    }
    struct hd_exit exit;
    if (hd_workload_wait(w, &exit, err) < 0)
        return -1;
    *code = exit.code;
    return 0;
}

/* process.terminal: the guest runs the workload on a pty of the size the host terminal tty_fd has (-1: none,
 * process.consoleSize's). */
static int set_terminal(struct hd_workload *w, int tty_fd, const struct oci_config *cfg, hd_error_t *err)
{
    struct winsize ws = {.ws_row = (unsigned short)cfg->console_rows, .ws_col = (unsigned short)cfg->console_cols};
    if (tty_fd >= 0)
        ioctl(tty_fd, TIOCGWINSZ, &ws);
    if (hd_vm_set_terminal(w, ws.ws_row, ws.ws_col, err) < 0)
        return hd_error_prefix(err, "process.terminal");
    return 0;
}

/* ---- hooks on the host ---- */

/* prestart ("created", first) and createRuntime ("creating") in hedge-oci-vm (the runtime's namespaces) once the
 * guest is at READY and state.json names the pid (the holder's, or the foreground run's): the documents `state`
 * prints, in the order and with the statuses a container's hooks get (hooks.c). poststart and poststop are
 * lifecycle.c's (start, delete: <root>/<id>/hooks.json) but for a foreground run's, below. */
static int run_create_hooks(const char *id, const struct oci_hooks *hooks, hd_error_t *err)
{
    if (!oci_hooks_any(hooks, OCI_HOOK_PRESTART, OCI_HOOK_CREATE_RUNTIME))
        return 0;
    struct oci_state *st = NULL;
    if (oci_state_load(id, &st, err) < 0)
        return -1;
    cleanup_free char *created = oci_state_document(st, "created", st->pid, false);
    cleanup_free char *creating = oci_state_document(st, "creating", st->pid, false);
    int rc = 0;
    if (oci_hooks_run(hooks, OCI_HOOK_PRESTART, created, err) < 0 ||
        oci_hooks_run(hooks, OCI_HOOK_CREATE_RUNTIME, creating, err) < 0)
        rc = -1;
    oci_state_free(st);
    return rc;
}

/* A foreground run holds at READY only for its hooks (the FIFO is a pipe whose reader it keeps: no wait). */
struct foreground_hooks {
    const char *id;
    const struct oci_hooks *hooks;
    bool created; /* the create hooks passed: poststop runs at the end */
};

static int foreground_held(const struct hd_workload *w, void *data, hd_error_t *err)
{
    (void)w;
    struct foreground_hooks *fh = data;
    if (run_create_hooks(fh->id, fh->hooks, err) < 0)
        return -1;
    fh->created = true;
    return 0;
}

/* process.terminal with --console-socket (socket_path): a host pty of process.consoleSize whose master goes to
 * the socket; its slave (raw), or -1 with err. */
static int console_socket_pty(const struct oci_config *cfg, const char *socket_path, hd_error_t *err)
{
    struct oci_console console = {.socket_fd = -1, .rows = cfg->console_rows, .cols = cfg->console_cols};
    if ((console.socket_fd = oci_console_connect(socket_path, err)) < 0)
        return -1;
    int slave = oci_console_host_pty(&console, err);
    close(console.socket_fd);
    return slave;
}

/* ---- create: the holder ---- */

struct holder {
    const char *id;
    struct oci_config *cfg;
    const struct vm_extras *x;
    int notify_fd; /* to create, until "ready" or the error went */
    int fifo_fd;   /* O_PATH of exec.fifo */
    int tty_fd;    /* process.terminal: the slave of the host pty whose master went to the console socket */
};

/* The guest is at READY (vm backend's held): state.json with our pid, then "ready PID" to create. */
static int holder_held(const struct hd_workload *w, void *data, hd_error_t *err)
{
    struct holder *h = data;
    if (save_state(h->id, h->cfg, w, getpid(), err) < 0)
        return -1;
    char msg[32];
    int n = snprintf(msg, sizeof(msg), "ready %d\n", (int)getpid());
    if (hd_write_all(h->notify_fd, msg, (size_t)n) < 0)
        return hd_error_sys(err, "tell create the VM is ready");
    close(h->notify_fd);
    h->notify_fd = -1;
    return 0;
}

/* hd_log lines (the backend's) go to a text --log file, else nowhere: the holder's stderr is the workload's,
 * and a JSON log (containerd reads it back) takes only JSON lines. */
static void holder_log_setup(void)
{
    hd_error_t ignored = NULL;
    if (oci_globals.log_path == NULL || oci_globals.log_json || hd_log_open(oci_globals.log_path, &ignored) < 0) {
        int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (fd >= 0)
            hd_log_set_fd(fd);
    }
    hd_error_free(&ignored);
}

/*
 * The holder keeps only its stdio, the pipe to create and the FIFO: a descriptor the engine left open to create
 * (a pipe it reads to its end) must not stay open for the container's life. Its cwd is /, not the caller's.
 */
static void holder_drop_inherited(const struct holder *h)
{
    if (h->tty_fd >= 0) { /* a terminal: the slave is our stdio and our controlling terminal (SIGWINCH) */
        for (int fd = 0; fd < 3; fd++)
            dup2(h->tty_fd, fd);
        if (h->tty_fd > 2)
            close(h->tty_fd);
        if (setsid() < 0 || ioctl(0, TIOCSCTTY, 0) < 0)
            oci_log("warning", "terminal: make it the controlling one: %s", strerror(errno));
    }
    int keep_low = h->notify_fd < h->fifo_fd ? h->notify_fd : h->fifo_fd;
    int keep_high = h->notify_fd < h->fifo_fd ? h->fifo_fd : h->notify_fd;
    for (int fd = 3; fd < keep_low; fd++)
        close(fd);
    if (keep_high > keep_low + 1)
        syscall(SYS_close_range, (unsigned)keep_low + 1, (unsigned)keep_high - 1, 0u);
    syscall(SYS_close_range, (unsigned)keep_high + 1, ~0u, 0u);
    if (chdir("/") < 0)
        oci_log("warning", "chdir /: %s", strerror(errno));
}

/* A signal ended the hold (created, not started): QEMU goes, and the holder dies of the signal. */
static void die_of_pending_signal(const struct holder *h, struct hd_workload *w, const sigset_t *ending)
{
    struct timespec now = {0, 0};
    int sig = sigtimedwait(ending, NULL, &now);
    if (sig <= 0)
        return;
    save_exit_code(h->id, 128 + sig);
    hd_workload_release(w); /* QEMU is killed; delete removes the cgroup and the run dir */
    signal(sig, SIG_DFL);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, sig);
    raise(sig);
    sigprocmask(SIG_UNBLOCK, &one, NULL);
    _exit(128 + sig);
}

/* The holder's life; returns its exit status (the workload's). */
static int holder_main(struct holder *h)
{
    holder_drop_inherited(h);
    holder_log_setup();
    hd_error_t err = NULL;
    struct hd_workload *w = NULL;
    sigset_t mask;
    /* blocked before the relay thread exists: a signal is forwarded, never the thread's default action */
    if (block_forwarded_signals(&mask, &err) < 0)
        goto early_fail;
    oci_use_cgroup_parent(h->cfg->cgroup_parent);
    struct hd_run_options opts = {.cgroup_name = h->cfg->cgroup_name};
    int exec_fd = open_exec_socket(h->id); /* the holder's until it exits */
    if (hd_workload_create(h->cfg->spec, &opts, &w, &err) < 0 || apply_extras(w, h->id, h->x, &err) < 0 ||
        (h->tty_fd >= 0 && set_terminal(w, 0, h->cfg, &err) < 0))
        goto early_fail;
    w->hold_before_exec = true;
    w->exec_fifo_fd = h->fifo_fd;
    w->held = holder_held;
    w->held_data = h;
    sigset_t ending = mask; /* what ends a held container: the forwarded signals whose default is to end */
    sigdelset(&ending, SIGWINCH);
    w->hold_end_signals = &ending;
    int code = 0;
    if (hd_workload_start(w, &err) < 0) {
        if (h->notify_fd >= 0)
            goto early_fail;
        if (err->errnum == ECANCELED) /* killed while created: die of that signal, as a held process does */
            die_of_pending_signal(h, w, &ending);
        /* after start: the guest could not run the command (126/127), as a container's exec error */
        code = hd_error_exit_code(err);
        fprintf(stderr, "hedge-oci-vm: %s\n", hd_error_text(err));
        oci_log("warning", "%s: %s", h->id, hd_error_text(err));
        hd_error_free(&err);
    } else if (forward_and_wait(w, &mask, exec_fd, h->tty_fd >= 0 ? 0 : -1, &code, &err) < 0) {
        code = hd_error_exit_code(err);
        oci_log("warning", "%s: %s", h->id, hd_error_text(err));
        hd_error_free(&err);
    }
    save_exit_code(h->id, code);
    /* QEMU is gone (or killed here); delete removes the cgroup and the run dir */
    hd_workload_release(w);
    return code;
early_fail:
    hd_workload_destroy(w); /* QEMU, cgroup, run dir: nothing is left when create reports */
    if (h->notify_fd >= 0) {
        cleanup_free char *msg = hd_xasprintf("error %s", err ? hd_error_text(err) : "unknown error");
        (void)hd_write_all(h->notify_fd, msg, strlen(msg));
    }
    hd_error_free(&err);
    return OCI_EXIT_FAILURE;
}

/* Read the holder's word until it closes the pipe. */
static char *read_word(int fd)
{
    size_t len = 0, cap = 256;
    char *buf = hd_xmalloc(cap);
    for (;;) {
        if (len + 1 >= cap)
            buf = hd_xrealloc(buf, cap *= 2);
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    return buf;
}

/* A holder that died without a word: its QEMU died with it; remove the cgroup it may have left. */
static void remove_cgroup(const struct oci_config *cfg)
{
    struct hd_cgroup *cg = NULL;
    hd_error_t ignored = NULL;
    oci_use_cgroup_parent(cfg->cgroup_parent);
    if (hd_cgroup_open(cfg->cgroup_name, &cg, &ignored) == 0)
        hd_cgroup_destroy(cg, &ignored);
    hd_error_free(&ignored);
}

static int make_state_dir(const char *id, hd_error_t *err)
{
    cleanup_free char *dir = oci_state_dir(id);
    if (hd_mkdir_p(oci_globals.root, 0711, err) < 0)
        return -1;
    if (mkdir(dir, 0711) < 0) {
        if (errno == EEXIST)
            return hd_error_set(err, EEXIST, "container \"%s\" already exists", id);
        return hd_error_sys(err, "mkdir %s", dir);
    }
    return 0;
}

int oci_vm_create(const char *id, const struct oci_vm_flags *f, hd_error_t *err)
{
    struct oci_config *cfg = NULL;
    struct vm_extras x = {0};
    if (load_vm_config(id, f, false, &cfg, &x, err) < 0)
        return hd_error_prefix(err, "create %s", id);
    if (make_state_dir(id, err) < 0) {
        vm_extras_free(&x);
        oci_config_free(cfg);
        return hd_error_prefix(err, "create %s", id);
    }
    cleanup_free char *fifo_path = oci_fifo_path(id);
    cleanup_close int fifo = -1;
    cleanup_close int tty = -1;
    cleanup_free char *word = NULL;
    int pipefd[2] = {-1, -1};
    /* the pty is the host's; its master goes to the engine now, as runc's create does */
    if (cfg->terminal && (tty = console_socket_pty(cfg, f->console_socket, err)) < 0)
        goto fail;
    if (mkfifo(fifo_path, 0622) < 0 || chmod(fifo_path, 0622) < 0 || (fifo = open(fifo_path, O_PATH | O_CLOEXEC)) < 0) {
        hd_error_sys(err, "mkfifo %s", fifo_path);
        goto fail;
    }
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        hd_error_sys(err, "pipe");
        goto fail;
    }
    fflush(NULL);
    pid_t child = fork();
    if (child < 0) {
        hd_error_sys(err, "fork");
        goto fail;
    }
    if (child == 0) {
        /* a session of its own, then the grandchild: it outlives create and no terminal hangs it up */
        close(pipefd[0]);
        if (setsid() < 0)
            _exit(OCI_EXIT_FAILURE);
        pid_t holder = fork();
        if (holder != 0)
            _exit(holder < 0 ? OCI_EXIT_FAILURE : 0);
        struct holder h = {.id = id, .cfg = cfg, .x = &x, .notify_fd = pipefd[1], .fifo_fd = fifo, .tty_fd = tty};
        exit(holder_main(&h));
    }
    close(pipefd[1]);
    pipefd[1] = -1;
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR)
        ;
    word = read_word(pipefd[0]);
    close(pipefd[0]);
    pid_t pid = 0;
    if (sscanf(word, "ready %d", &pid) != 1 || pid <= 0) {
        if (strncmp(word, "error ", 6) == 0)
            hd_error_set(err, 0, "%s", word + 6);
        else
            hd_error_set(err, 0, "the VM's holder process ended before the guest was ready");
        remove_cgroup(cfg);
        goto fail;
    }
    if (run_create_hooks(id, &cfg->hooks, err) < 0 || oci_hooks_save(&cfg->hooks, id, err) < 0 ||
        (f->pid_file && oci_write_pid_file(f->pid_file, pid, err) < 0)) {
        /* as delete: the holder (QEMU ends with it), the cgroup, the run dir the state names */
        struct oci_state *st = NULL;
        hd_error_t ignored = NULL;
        if (oci_state_load(id, &st, &ignored) == 0)
            oci_state_destroy(st, &ignored);
        hd_error_free(&ignored);
        oci_state_free(st);
        goto fail;
    }
    oci_log("debug", "created %s in a VM: holder pid %d", id, (int)pid);
    vm_extras_free(&x);
    oci_config_free(cfg);
    return 0;
fail:
    if (pipefd[0] >= 0 && word == NULL)
        close(pipefd[0]);
    if (pipefd[1] >= 0)
        close(pipefd[1]);
    remove_state_dir(id);
    vm_extras_free(&x);
    oci_config_free(cfg);
    return hd_error_prefix(err, "create %s", id);
}

/* ---- run in the foreground: no holder ---- */

int oci_vm_run_foreground(const char *id, const struct oci_vm_flags *f, int *code, hd_error_t *err)
{
    struct oci_config *cfg = NULL;
    struct vm_extras x = {0};
    if (load_vm_config(id, f, true, &cfg, &x, err) < 0)
        return hd_error_prefix(err, "run %s", id);
    if (make_state_dir(id, err) < 0) {
        vm_extras_free(&x);
        oci_config_free(cfg);
        return hd_error_prefix(err, "run %s", id);
    }
    struct hd_workload *w = NULL;
    struct oci_state *st = NULL;
    struct foreground_hooks fh = {.id = id, .hooks = &cfg->hooks, .created = false};
    int hold[2] = {-1, -1};
    sigset_t mask;
    int rc = -1;
    hd_log_set_level(HD_LOG_WARN); /* the backend's notes (a template restore) would mix into the output */
    oci_use_cgroup_parent(cfg->cgroup_parent);
    struct hd_run_options opts = {.cgroup_name = cfg->cgroup_name};
    cleanup_close int exec_fd = open_exec_socket(id);
    /* process.terminal: with --console-socket, a host pty whose master goes there (its slave the workload's
     * stdio); without, our own terminal (raw: the guest's pty does the line discipline), or our pipes */
    cleanup_close int slave = -1;
    int tty_fd = -1;
    struct termios saved;
    if (cfg->terminal && f->console_socket && *f->console_socket) {
        if ((slave = console_socket_pty(cfg, f->console_socket, err)) < 0)
            goto out;
        opts.stdio[0] = opts.stdio[1] = opts.stdio[2] = slave;
        opts.set_stdio = true;
    } else if (cfg->terminal && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0) {
        struct termios raw = saved;
        cfmakeraw(&raw);
        tcsetattr(STDIN_FILENO, TCSANOW, &raw);
        tty_fd = STDIN_FILENO;
    }
    if (block_forwarded_signals(&mask, err) < 0 || hd_workload_create(cfg->spec, &opts, &w, err) < 0 ||
        apply_extras(w, id, &x, err) < 0 ||
        (cfg->terminal && set_terminal(w, tty_fd >= 0 ? tty_fd : slave, cfg, err) < 0) ||
        save_state(id, cfg, w, getpid(), err) < 0 ||
        (f->pid_file && oci_write_pid_file(f->pid_file, getpid(), err) < 0))
        goto out;
    if (oci_hooks_any(&cfg->hooks, OCI_HOOK_PRESTART, OCI_HOOK_POSTSTOP)) {
        if (oci_state_load(id, &st, err) < 0)
            goto out;
        if (pipe2(hold, O_CLOEXEC) < 0) {
            hd_error_sys(err, "pipe");
            goto out;
        }
        w->hold_before_exec = true;
        w->exec_fifo_fd = hold[1];
        w->held = foreground_held;
        w->held_data = &fh;
    }
    if (hd_workload_start(w, err) < 0)
        goto out;
    if (st && cfg->hooks.n[OCI_HOOK_POSTSTART] > 0) {
        cleanup_free char *state = oci_state_document(st, "running", st->pid, false);
        oci_hooks_run_warn(&cfg->hooks, OCI_HOOK_POSTSTART, state);
    }
    rc = forward_and_wait(w, &mask, exec_fd, tty_fd, code, err);
out:
    if (tty_fd >= 0)
        tcsetattr(tty_fd, TCSANOW, &saved);
    hd_workload_destroy(w);
    remove_state_dir(id);
    if (fh.created && cfg->hooks.n[OCI_HOOK_POSTSTOP] > 0) {
        cleanup_free char *state = oci_state_document(st, "stopped", 0, false);
        oci_hooks_run_warn(&cfg->hooks, OCI_HOOK_POSTSTOP, state);
    }
    oci_state_free(st);
    for (int i = 0; i < 2; i++)
        if (hold[i] >= 0)
            close(hold[i]);
    vm_extras_free(&x);
    oci_config_free(cfg);
    return rc < 0 ? hd_error_prefix(err, "run %s", id) : 0;
}
