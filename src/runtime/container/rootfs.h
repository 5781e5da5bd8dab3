/*
 * rootfs.h - the container's mount table: root filesystem, /proc, /dev, /sys,
 * bind mounts, masked and read-only paths, and the switch into it.
 *
 * Work is split between the two sides of the clone. The parent, still in the
 * host mount namespace and with full access to host paths, turns every host
 * path the container needs into a detached mount (open_tree/fsmount): the
 * rootfs (a bind, or an overlay over an image), each bind mount, and, for a
 * user namespace, the host device nodes. The child then only attaches these
 * by file descriptor inside its own mount namespace. This keeps host path
 * walks out of the container's process (which, in a user namespace, could
 * not even traverse a 0700 directory), and host path errors come back as
 * ordinary errors naming mounts[i] before anything has started.
 */
#ifndef HEDGE_ROOTFS_H
#define HEDGE_ROOTFS_H

#include <stdbool.h>

#include "runtime/backend.h"
#include "base/error.h"

enum { HD_ROOTFS_N_DEVICES = 6, HD_ROOTFS_N_ETC = 2 };

struct hd_rootfs {
    int root_tree;    /* detached mount of the new root */
    int *mount_trees; /* one per spec->mounts[i] */
    bool *mount_is_dir;
    int n_mounts;
    int device_trees[HD_ROOTFS_N_DEVICES]; /* host nodes to bind (user namespace), else -1 */
    int *spec_device_trees;                /* the host nodes of w->devices[i], bound at their targets */
    size_t n_spec_devices;
    int sys_tree;                   /* host /sys, read-only, when sysfs cannot be mounted; else -1 */
    int etc_trees[HD_ROOTFS_N_ETC]; /* generated /etc/hostname and /etc/hosts (in the run dir) */
    int *secret_trees;              /* one per secret_dirs[i]: the run's secret tmpfs dir, bound read-only */
    char **secret_dirs;             /* where they go inside (runtime/secrets.h), NULL-terminated */
    bool user_namespace;
    char *overlay_dir; /* <run_dir>/overlay holding upper/ and work/, or NULL */
};

void hd_rootfs_init(struct hd_rootfs *r);
/* Parent side: build the detached mounts for w (see above). */
int hd_rootfs_prepare(const struct hd_workload *w, struct hd_rootfs *r, const char *hostname, bool user_namespace,
                      bool host_network, hd_error_t *err);
/* Parent side, user namespace only: /sys will be the host's, bound read-only (the container's network namespace
 * is not its user namespace's, so sysfs cannot be mounted there). prepare does it for host_network. */
int hd_rootfs_use_host_sys(struct hd_rootfs *r, hd_error_t *err);
/*
 * Parent side, user namespace only: map the rootfs through the namespace's id
 * map (an idmapped mount), so files owned by host root belong to root inside.
 * Not done for an image overlay (overlayfs refuses it; see rootfs.c).
 */
int hd_rootfs_idmap(struct hd_rootfs *r, int userns_fd, hd_error_t *err);
/*
 * Child side, in the new mount namespace: make the host's mounts private,
 * attach the root, pivot_root into it and detach the old root, then mount
 * /proc, /dev, /sys, the bind mounts, the masks, and make / read-only if asked.
 * Errors name the step ("mount /proc: ...").
 */
/* before_pivot (or NULL) runs right before pivot_root: the root tree is attached, the host's root is still
 * the process's root (the OCI createContainer hooks run there). */
int hd_rootfs_enter(const struct hd_workload *w, const struct hd_rootfs *r,
                    int (*before_pivot)(void *arg, hd_error_t *err), void *before_pivot_arg, hd_error_t *err);
/* Close the detached mounts (they vanish with their last fd). */
void hd_rootfs_close(struct hd_rootfs *r);
/* Close, and remove the overlay's upper and work dirs. */
void hd_rootfs_cleanup(struct hd_rootfs *r);

#endif
