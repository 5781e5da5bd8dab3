/*
 * rootfs.c - the container's mount table (see rootfs.h for the split between
 * parent and child).
 *
 * The table the workload sees, in mount order:
 *
 *   /               the rootfs: a bind of --rootfs (written in place, like
 *                   runc), or for an image an overlay whose lower layer is the
 *                   image's rootfs and whose upper/work dirs live in the run
 *                   dir (the image is never written); with readonly_rootfs an
 *                   image is a read-only bind instead, and a plain rootfs is
 *                   made read-only once the mount points exist
 *   /proc           a new proc for the container's pid namespace
 *   /dev            tmpfs with null zero full random urandom tty, pts (a new
 *                   devpts instance), ptmx -> pts/ptmx, shm, mqueue, fd and
 *                   stdin/stdout/stderr links
 *   /sys            sysfs of the container's network namespace, read-only
 *                   (a read-only bind of the host's when sysfs cannot be
 *                   mounted: host network inside a user namespace)
 *   /etc/hostname   generated in the run dir and bound in (if the rootfs has
 *   /etc/hosts      /etc; a missing file is created unless the root is read-only)
 *   mounts[i]       the spec's bind mounts, read-only ones recursively so
 *   devices[i]      the spec's host device nodes at their targets, each the
 *                   host node bound there (not a mknod twin: a pty slave opens
 *                   only through its own devpts instance, and in a user
 *                   namespace mknod is refused anyway)
 *   masked paths    OCI defaults: /dev/null over files, an empty read-only
 *                   tmpfs over directories
 *   read-only paths OCI defaults, re-bound read-only
 *
 * The new root is attached on top of the old "/" and entered with
 * pivot_root(".", ".") followed by a lazy unmount of the old root stacked
 * above it (runc's technique): no host path is needed to hold the old root.
 * /proc and /sys are created with fsopen/fsmount while the host's /proc is
 * still visible, because inside a user namespace the kernel allows a new proc
 * only where a full one is already visible.
 */
#include "runtime/container/rootfs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"
#include "runtime/secrets.h"

struct device {
    const char *name;
    unsigned major, minor;
};

static const struct device devices[HD_ROOTFS_N_DEVICES] = {
    {"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
};

static const char *const etc_files[HD_ROOTFS_N_ETC] = {"hostname", "hosts"};

static const char *const masked_paths[] = {
    "/proc/acpi",        "/proc/kcore",       "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",       "/sys/devices/virtual/powercap",
};

static const char *const readonly_paths[] = {
    "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
};

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

void hd_rootfs_init(struct hd_rootfs *r)
{
    memset(r, 0, sizeof(*r));
    r->root_tree = -1;
    r->sys_tree = -1;
    for (int i = 0; i < HD_ROOTFS_N_DEVICES; i++)
        r->device_trees[i] = -1;
    for (int i = 0; i < HD_ROOTFS_N_ETC; i++)
        r->etc_trees[i] = -1;
}

void hd_rootfs_close(struct hd_rootfs *r)
{
    close_fd(&r->root_tree);
    close_fd(&r->sys_tree);
    for (int i = 0; i < HD_ROOTFS_N_DEVICES; i++)
        close_fd(&r->device_trees[i]);
    for (int i = 0; i < HD_ROOTFS_N_ETC; i++)
        close_fd(&r->etc_trees[i]);
    for (int i = 0; i < r->n_mounts; i++)
        close_fd(&r->mount_trees[i]);
    for (size_t i = 0; i < r->n_spec_devices; i++)
        close_fd(&r->spec_device_trees[i]);
    free(r->spec_device_trees);
    r->spec_device_trees = NULL;
    r->n_spec_devices = 0;
    for (size_t i = 0; r->secret_dirs && r->secret_dirs[i]; i++)
        close_fd(&r->secret_trees[i]);
    free(r->secret_trees);
    r->secret_trees = NULL;
    hd_strv_free(r->secret_dirs);
    r->secret_dirs = NULL;
    free(r->mount_trees);
    free(r->mount_is_dir);
    r->mount_trees = NULL;
    r->mount_is_dir = NULL;
    r->n_mounts = 0;
}

void hd_rootfs_cleanup(struct hd_rootfs *r)
{
    hd_rootfs_close(r);
    if (r->overlay_dir) {
        hd_error_t err = NULL;
        if (hd_rm_rf(r->overlay_dir, &err) < 0) {
            hd_log_error(HD_LOG_WARN, "cleanup", &err);
        }
        free(r->overlay_dir);
        r->overlay_dir = NULL;
    }
}

/* Set attributes on a whole detached tree: private propagation, optionally read-only. */
static int tree_set_attr(int tree, bool readonly)
{
    struct mount_attr attr = {
        .attr_set = readonly ? MOUNT_ATTR_RDONLY : 0,
        .propagation = MS_PRIVATE,
    };
    return mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof(attr));
}

/* A detached recursive bind of a host path. */
static int clone_tree(const char *path, bool recursive, bool readonly)
{
    int fd = open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (recursive ? AT_RECURSIVE : 0));
    if (fd < 0)
        return -1;
    if (tree_set_attr(fd, readonly) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* An overlay with the image rootfs as its only lower layer, as a detached mount. */
static int overlay_tree(const char *lower, const char *upper, const char *work, hd_error_t *err)
{
    cleanup_close int fs = fsopen("overlay", FSOPEN_CLOEXEC);
    if (fs < 0)
        return hd_error_sys(err, "rootfs: overlay");
    /* "lowerdir+" (Linux 6.8) takes the path verbatim; older kernels parse ':' in lowerdir */
    if (fsconfig(fs, FSCONFIG_SET_STRING, "lowerdir+", lower, 0) < 0 &&
        fsconfig(fs, FSCONFIG_SET_STRING, "lowerdir", lower, 0) < 0)
        return hd_error_sys(err, "rootfs: overlay lowerdir %s", lower);
    if (fsconfig(fs, FSCONFIG_SET_STRING, "upperdir", upper, 0) < 0)
        return hd_error_sys(err, "rootfs: overlay upperdir %s", upper);
    if (fsconfig(fs, FSCONFIG_SET_STRING, "workdir", work, 0) < 0)
        return hd_error_sys(err, "rootfs: overlay workdir %s", work);
    if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        return hd_error_sys(err, "rootfs: mount overlay on %s", lower);
    int tree = fsmount(fs, FSMOUNT_CLOEXEC, 0);
    if (tree < 0)
        return hd_error_sys(err, "rootfs: mount overlay on %s", lower);
    if (tree_set_attr(tree, false) < 0) {
        int e = errno;
        close(tree);
        return hd_error_set(err, e, "rootfs: overlay propagation");
    }
    return tree;
}

static int prepare_overlay(const struct hd_workload *w, struct hd_rootfs *r, hd_error_t *err)
{
    struct stat lower;
    if (stat(w->rootfs, &lower) < 0)
        return hd_error_sys(err, "rootfs: %s", w->rootfs);
    r->overlay_dir = hd_xasprintf("%s/overlay", w->run_dir);
    cleanup_free char *upper = hd_xasprintf("%s/upper", r->overlay_dir);
    cleanup_free char *work = hd_xasprintf("%s/work", r->overlay_dir);
    if (mkdir(r->overlay_dir, 0700) < 0 || mkdir(upper, 0700) < 0 || mkdir(work, 0700) < 0)
        return hd_error_sys(err, "rootfs: overlay dirs in %s", w->run_dir);
    /* the merged root takes its owner and mode from upper: make them the image's */
    if (chown(upper, lower.st_uid, lower.st_gid) < 0 || chmod(upper, lower.st_mode & 07777) < 0)
        return hd_error_sys(err, "rootfs: overlay upper dir %s", upper);
    r->root_tree = overlay_tree(w->rootfs, upper, work, err);
    return r->root_tree < 0 ? -1 : 0;
}

/* /etc/hostname and /etc/hosts for the container, written to <run_dir>/etc. */
static int prepare_etc(const struct hd_workload *w, struct hd_rootfs *r, const char *hostname, bool host_network,
                       hd_error_t *err)
{
    cleanup_free char *dir = hd_xasprintf("%s/etc", w->run_dir);
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return hd_error_sys(err, "mkdir %s", dir);
    cleanup_free char *hosts = NULL;
    if (host_network) {
        /* the host's network, so the host's names (as Docker does) */
        hd_error_t ignored = NULL;
        if (hd_read_file("/etc/hosts", &hosts, NULL, &ignored) < 0)
            hd_error_free(&ignored);
    }
    if (hosts == NULL)
        hosts = hd_xasprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                             "127.0.1.1\t%s\n",
                             hostname);
    cleanup_free char *name = hd_xasprintf("%s\n", hostname);
    const char *contents[HD_ROOTFS_N_ETC] = {name, hosts};
    for (int i = 0; i < HD_ROOTFS_N_ETC; i++) {
        cleanup_free char *path = hd_xasprintf("%s/%s", dir, etc_files[i]);
        if (hd_write_file(path, contents[i], strlen(contents[i]), err) < 0)
            return -1;
        r->etc_trees[i] = clone_tree(path, false, false);
        if (r->etc_trees[i] < 0)
            return hd_error_sys(err, "/etc/%s: bind %s", etc_files[i], path);
    }
    return 0;
}

int hd_rootfs_prepare(const struct hd_workload *w, struct hd_rootfs *r, const char *hostname, bool user_namespace,
                      bool host_network, hd_error_t *err)
{
    const struct hd_spec *spec = w->spec;
    r->user_namespace = user_namespace;
    if (w->rootfs_from_image && !spec->readonly_rootfs) {
        if (prepare_overlay(w, r, err) < 0)
            return -1;
    } else {
        /* an image is read-only from the first moment, so nothing can ever write it */
        r->root_tree = clone_tree(w->rootfs, true, w->rootfs_from_image);
        if (r->root_tree < 0)
            return hd_error_sys(err, "rootfs: bind %s", w->rootfs);
    }

    if (prepare_etc(w, r, hostname, host_network, err) < 0)
        return -1;

    r->mount_trees = hd_xcalloc((size_t)spec->n_mounts + 1, sizeof(int));
    r->mount_is_dir = hd_xcalloc((size_t)spec->n_mounts + 1, sizeof(bool));
    for (int i = 0; i < spec->n_mounts; i++)
        r->mount_trees[i] = -1;
    r->n_mounts = spec->n_mounts;
    for (int i = 0; i < spec->n_mounts; i++) {
        const struct hd_mount *m = &spec->mounts[i];
        struct stat st;
        if (stat(m->source, &st) < 0)
            return hd_error_sys(err, "mounts[%d]: source %s", i, m->source);
        r->mount_is_dir[i] = S_ISDIR(st.st_mode);
        r->mount_trees[i] = clone_tree(m->source, true, m->readonly);
        if (r->mount_trees[i] < 0)
            return hd_error_sys(err, "mounts[%d]: bind %s", i, m->source);
    }

    /* the spec's devices: the host nodes themselves, bound at their targets */
    r->spec_device_trees = hd_xcalloc(w->n_devices + 1, sizeof(int));
    r->n_spec_devices = w->n_devices;
    for (size_t i = 0; i < w->n_devices; i++)
        r->spec_device_trees[i] = -1;
    for (size_t i = 0; i < w->n_devices; i++) {
        r->spec_device_trees[i] = clone_tree(w->devices[i].host_path, false, false);
        if (r->spec_device_trees[i] < 0)
            return hd_error_sys(err, "devices[%zu]: bind %s", i, w->devices[i].host_path);
    }

    if (w->secrets_dir) {
        r->secret_dirs = hd_secrets_container_dirs(w);
        size_t n = 0;
        while (r->secret_dirs && r->secret_dirs[n])
            n++;
        r->secret_trees = hd_xcalloc(n + 1, sizeof(int));
        for (size_t i = 0; i < n; i++)
            r->secret_trees[i] = -1;
        for (size_t i = 0; i < n; i++) {
            cleanup_free char *host = hd_xasprintf("%s%s", w->secrets_dir, r->secret_dirs[i]);
            r->secret_trees[i] = clone_tree(host, false, true);
            if (r->secret_trees[i] < 0)
                return hd_error_sys(err, "secrets: bind %s", host);
        }
    }

    if (user_namespace) {
        /* mknod is not allowed in a user namespace: bind the host's nodes instead */
        for (int i = 0; i < HD_ROOTFS_N_DEVICES; i++) {
            cleanup_free char *path = hd_xasprintf("/dev/%s", devices[i].name);
            r->device_trees[i] = clone_tree(path, false, false);
            if (r->device_trees[i] < 0)
                return hd_error_sys(err, "/dev: bind %s", path);
        }
        if (host_network && hd_rootfs_use_host_sys(r, err) < 0)
            return -1;
    }
    return 0;
}

int hd_rootfs_use_host_sys(struct hd_rootfs *r, hd_error_t *err)
{
    if (r->sys_tree >= 0)
        return 0;
    r->sys_tree = clone_tree("/sys", true, true);
    if (r->sys_tree < 0)
        return hd_error_sys(err, "/sys: bind the host's /sys");
    return 0;
}

int hd_rootfs_idmap(struct hd_rootfs *r, int userns_fd, hd_error_t *err)
{
    /* overlayfs cannot be idmapped as a whole (it could over idmapped layers, which
     * needs path-less layer set-up); an image overlay keeps host ownership: files of
     * host root show as nobody inside and the container's root cannot replace them */
    if (r->overlay_dir)
        return 0;
    struct mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)userns_fd};
    if (mount_setattr(r->root_tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof(attr)) < 0)
        return hd_error_sys(err, "rootfs: idmapped mount for the user namespace");
    return 0;
}

/* ---- child side ------------------------------------------------------ */

/* A new filesystem as a detached mount (fsopen + fsconfig + fsmount); errors say "mount TARGET". */
static int new_fs(const char *type, const char *target, unsigned attrs, hd_error_t *err)
{
    cleanup_close int fs = fsopen(type, FSOPEN_CLOEXEC);
    if (fs < 0)
        return hd_error_sys(err, "mount %s", target);
    /* the source /proc/self/mountinfo shows ("proc", "sysfs"), as mount(2) with that source would */
    if (fsconfig(fs, FSCONFIG_SET_STRING, "source", type, 0) < 0 ||
        fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        return hd_error_sys(err, "mount %s", target);
    int tree = fsmount(fs, FSMOUNT_CLOEXEC, attrs);
    if (tree < 0)
        return hd_error_sys(err, "mount %s", target);
    return tree;
}

static int attach(int tree, const char *target)
{
    return move_mount(tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH);
}

/* A read-only sysfs of the container's network namespace, or the host's bound read-only (prepared in
 * r->sys_tree) when one cannot be mounted. */
static int new_sysfs(const struct hd_rootfs *r, unsigned attrs, hd_error_t *err)
{
    int sys = new_fs("sysfs", "/sys", attrs | MOUNT_ATTR_RDONLY, err);
    if (sys < 0 && r->sys_tree >= 0) {
        hd_error_free(err);
        sys = fcntl(r->sys_tree, F_DUPFD_CLOEXEC, 3);
        if (sys < 0)
            return hd_error_sys(err, "mount /sys");
    }
    return sys;
}

/* The mount point of a filesystem: a directory, made if missing. Errors read "mount PATH: ...". */
static int ensure_dir(const char *path, mode_t mode, hd_error_t *err)
{
    if (mkdir(path, mode) == 0)
        return 0;
    if (errno != EEXIST)
        return hd_error_sys(err, "mount %s", path);
    struct stat st;
    if (stat(path, &st) < 0)
        return hd_error_sys(err, "mount %s", path);
    if (!S_ISDIR(st.st_mode))
        return hd_error_set(err, ENOTDIR, "mount %s", path);
    return 0;
}

static int ensure_file(const char *path, hd_error_t *err)
{
    /* one that is there is not opened: it may be a bind of a file the container's root may not write (hedge's
     * own /etc/hosts, in a user namespace) */
    struct stat st;
    if (lstat(path, &st) == 0 && !S_ISLNK(st.st_mode))
        return 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0 && errno != EEXIST && errno != EISDIR)
        return hd_error_sys(err, "create %s", path);
    if (fd >= 0)
        close(fd);
    return 0;
}

static int setup_dev(const struct hd_rootfs *r, hd_error_t *err)
{
    if (ensure_dir("/dev", 0755, err) < 0)
        return -1;
    if (mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k") < 0)
        return hd_error_sys(err, "mount /dev");
    char path[64];
    for (int i = 0; i < HD_ROOTFS_N_DEVICES; i++) {
        snprintf(path, sizeof(path), "/dev/%s", devices[i].name);
        if (r->device_trees[i] >= 0) {
            if (ensure_file(path, err) < 0)
                return -1;
            if (attach(r->device_trees[i], path) < 0)
                return hd_error_sys(err, "bind %s", path);
        } else {
            if (mknod(path, S_IFCHR | 0666, makedev(devices[i].major, devices[i].minor)) < 0)
                return hd_error_sys(err, "mknod %s", path);
            if (chmod(path, 0666) < 0)
                return hd_error_sys(err, "chmod %s", path);
        }
    }
    if (ensure_dir("/dev/pts", 0755, err) < 0)
        return -1;
    const char *pts_opts =
        r->user_namespace ? "newinstance,ptmxmode=0666,mode=0620" : "newinstance,ptmxmode=0666,mode=0620,gid=5";
    if (mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, pts_opts) < 0)
        return hd_error_sys(err, "mount /dev/pts");
    if (symlink("pts/ptmx", "/dev/ptmx") < 0)
        return hd_error_sys(err, "symlink /dev/ptmx");
    if (ensure_dir("/dev/shm", 01777, err) < 0)
        return -1;
    if (mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k") < 0)
        return hd_error_sys(err, "mount /dev/shm");
    if (ensure_dir("/dev/mqueue", 0755, err) < 0)
        return -1;
    if (mount("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        return hd_error_sys(err, "mount /dev/mqueue");
    static const char *const links[][2] = {
        {"/proc/self/fd", "/dev/fd"},
        {"/proc/self/fd/0", "/dev/stdin"},
        {"/proc/self/fd/1", "/dev/stdout"},
        {"/proc/self/fd/2", "/dev/stderr"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(links); i++)
        if (symlink(links[i][0], links[i][1]) < 0)
            return hd_error_sys(err, "symlink %s", links[i][1]);
    return 0;
}

/* Bind the generated /etc files over the rootfs's; a rootfs without /etc gets none. */
static int setup_etc(const struct hd_workload *w, const struct hd_rootfs *r, hd_error_t *err)
{
    struct stat st;
    if (stat("/etc", &st) < 0 || !S_ISDIR(st.st_mode))
        return 0;
    char path[64];
    for (int i = 0; i < HD_ROOTFS_N_ETC; i++) {
        snprintf(path, sizeof(path), "/etc/%s", etc_files[i]);
        if (lstat(path, &st) < 0) {
            if (w->spec->readonly_rootfs)
                continue; /* a read-only root is never written, not even for a mount point */
            int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
            if (fd < 0 && (errno == EACCES || errno == EPERM || errno == EROFS))
                continue; /* root inside may not own /etc (user namespace over an image) */
            if (fd < 0)
                return hd_error_sys(err, "create %s", path);
            close(fd);
        } else if (!S_ISREG(st.st_mode)) {
            continue; /* e.g. a symlink the image manages itself */
        }
        if (attach(r->etc_trees[i], path) < 0)
            return hd_error_sys(err, "bind %s", path);
    }
    return 0;
}

static int setup_bind_mounts(const struct hd_workload *w, const struct hd_rootfs *r, hd_error_t *err)
{
    for (int i = 0; i < r->n_mounts; i++) {
        const char *target = w->spec->mounts[i].target;
        hd_error_t sub = NULL;
        int ret;
        if (r->mount_is_dir[i]) {
            ret = hd_mkdir_p(target, 0755, &sub);
        } else {
            cleanup_free char *parent = hd_xstrdup(target);
            char *slash = strrchr(parent, '/');
            if (slash && slash != parent)
                *slash = '\0';
            else
                parent[1] = '\0';
            ret = hd_mkdir_p(parent, 0755, &sub);
            if (ret == 0)
                ret = ensure_file(target, &sub);
        }
        if (ret < 0) {
            hd_error_set(err, sub->errnum, "mounts[%d]: target %s: %s", i, target, sub->message);
            hd_error_free(&sub);
            return -1;
        }
        if (attach(r->mount_trees[i], target) < 0)
            return hd_error_sys(err, "mounts[%d]: mount %s on %s", i, w->spec->mounts[i].source, target);
    }
    return 0;
}

/* The spec's devices at their targets (parent directories made as needed): the host nodes bound there. The
 * device cgroup decides whether they can be opened. */
static int setup_spec_devices(const struct hd_workload *w, const struct hd_rootfs *r, hd_error_t *err)
{
    for (size_t i = 0; i < r->n_spec_devices; i++) {
        const struct hd_workload_device *d = &w->devices[i];
        cleanup_free char *parent = hd_xstrdup(d->target);
        char *slash = strrchr(parent, '/');
        if (slash && slash != parent)
            *slash = '\0';
        else
            parent[1] = '\0';
        hd_error_t sub = NULL;
        if (hd_mkdir_p(parent, 0755, &sub) < 0) {
            hd_error_set(err, sub->errnum, "devices[%zu]: target %s: %s", i, d->target, sub->message);
            hd_error_free(&sub);
            return -1;
        }
        /* the mount point: an empty file (mknod of a regular file opens nothing that may already be there) */
        struct stat st;
        if (mknod(d->target, S_IFREG | 0644, 0) < 0 &&
            (errno != EEXIST || stat(d->target, &st) < 0 || S_ISDIR(st.st_mode)))
            return hd_error_set(err, errno == EEXIST ? EISDIR : errno, "devices[%zu]: target %s", i, d->target);
        if (attach(r->spec_device_trees[i], d->target) < 0)
            return hd_error_sys(err, "devices[%zu]: bind %s on %s", i, d->host_path, d->target);
    }
    return 0;
}

/* Each secret directory (a tmpfs dir of the host's, read-only) on its path inside. */
static int setup_secrets(const struct hd_rootfs *r, hd_error_t *err)
{
    for (size_t i = 0; r->secret_dirs && r->secret_dirs[i]; i++) {
        const char *dir = r->secret_dirs[i];
        if (hd_mkdir_p(dir, 0755, err) < 0)
            return hd_error_prefix(err, "secrets: mount %s", dir);
        if (attach(r->secret_trees[i], dir) < 0)
            return hd_error_sys(err, "secrets: mount %s", dir);
    }
    return 0;
}

static int setup_masks(hd_error_t *err)
{
    for (size_t i = 0; i < ARRAY_SIZE(masked_paths); i++) {
        const char *p = masked_paths[i];
        struct stat st;
        if (lstat(p, &st) < 0)
            continue; /* not on this kernel */
        if (S_ISDIR(st.st_mode)) {
            if (mount("tmpfs", p, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0") < 0)
                return hd_error_sys(err, "mask %s", p);
        } else if (mount("/dev/null", p, NULL, MS_BIND, NULL) < 0) {
            return hd_error_sys(err, "mask %s", p);
        }
    }
    struct mount_attr ro = {.attr_set = MOUNT_ATTR_RDONLY};
    for (size_t i = 0; i < ARRAY_SIZE(readonly_paths); i++) {
        const char *p = readonly_paths[i];
        if (access(p, F_OK) < 0)
            continue;
        if (mount(p, p, NULL, MS_BIND | MS_REC, NULL) < 0 ||
            mount_setattr(AT_FDCWD, p, AT_RECURSIVE, &ro, sizeof(ro)) < 0)
            return hd_error_sys(err, "read-only %s", p);
    }
    return 0;
}

int hd_rootfs_enter(const struct hd_workload *w, const struct hd_rootfs *r,
                    int (*before_pivot)(void *arg, hd_error_t *err), void *before_pivot_arg, hd_error_t *err)
{
    /* nothing mounted from here on may propagate back to the host */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return hd_error_sys(err, "make mounts private");

    const unsigned safe = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
    cleanup_close int proc = new_fs("proc", "/proc", safe, err);
    if (proc < 0)
        return -1;
    /* sysfs is made after /dev, so that /proc/self/mountinfo (in creation order on recent kernels) lists
     * the mounts in the order the OCI runtime spec's default config gives them. In a user namespace the
     * kernel makes it, like proc, only while a full one is visible in the mount namespace: there the old
     * root stays stacked on the new one (pivot_root(".", ".")) until then; paths from "/" resolve in the
     * new root all the same. */
    cleanup_close int sys_fd = -1;

    if (attach(r->root_tree, "/") < 0)
        return hd_error_sys(err, "rootfs: attach %s", w->rootfs);
    if (fchdir(r->root_tree) < 0)
        return hd_error_sys(err, "rootfs: chdir %s", w->rootfs);
    if (before_pivot && before_pivot(before_pivot_arg, err) < 0)
        return -1;
    if (fchdir(r->root_tree) < 0) /* the callback may have moved */
        return hd_error_sys(err, "rootfs: chdir %s", w->rootfs);
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        return hd_error_sys(err, "pivot_root %s", w->rootfs);
    if (!r->user_namespace && umount2(".", MNT_DETACH) < 0)
        return hd_error_sys(err, "detach the old root");
    if (chdir("/") < 0)
        return hd_error_sys(err, "chdir /");

    if (ensure_dir("/proc", 0555, err) < 0)
        return -1;
    if (attach(proc, "/proc") < 0)
        return hd_error_sys(err, "mount /proc");
    if (setup_dev(r, err) < 0)
        return -1;
    if ((sys_fd = new_sysfs(r, safe, err)) < 0)
        return -1;
    if (r->user_namespace && umount2(".", MNT_DETACH) < 0) /* "." (the cwd, "/") is the old root on top */
        return hd_error_sys(err, "detach the old root");
    if (ensure_dir("/sys", 0555, err) < 0)
        return -1;
    if (attach(sys_fd, "/sys") < 0)
        return hd_error_sys(err, "mount /sys");
    if (setup_etc(w, r, err) < 0 || setup_bind_mounts(w, r, err) < 0 || setup_spec_devices(w, r, err) < 0 ||
        setup_secrets(r, err) < 0)
        return -1;
    if (setup_masks(err) < 0)
        return -1;
    if (w->spec->readonly_rootfs && !w->rootfs_from_image) {
        struct mount_attr ro = {.attr_set = MOUNT_ATTR_RDONLY};
        if (mount_setattr(AT_FDCWD, "/", 0, &ro, sizeof(ro)) < 0)
            return hd_error_sys(err, "make / read-only");
    }
    return 0;
}
