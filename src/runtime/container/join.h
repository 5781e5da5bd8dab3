/*
 * join.h - run one more process in a running container (hedge-oci exec).
 *
 * The process joins every namespace of the container's first process (by
 * /proc/PID/ns/NAME, only those that differ from ours), enters the container's
 * cgroup the way the first process did (born in it on v2, "0" written to the
 * v1 tasks files itself), and gets the same security as the first process:
 * the capability set and seccomp filter computed from the spec's security
 * section, no_new_privs, inheritable/ambient capabilities - applied by the
 * same code the container backend runs before the first exec.
 */
#ifndef HEDGE_CONTAINER_JOIN_H
#define HEDGE_CONTAINER_JOIN_H

#include <stdint.h>
#include <sys/types.h>

#include "base/error.h"
#include "cgroup/cgroup.h"
#include "spec/spec.h"

struct hd_container_join {
    pid_t init_pid;                     /* the container's first process */
    const struct hd_security *security; /* cap_add/cap_drop, no_new_privs, seccomp */
    uint64_t caps_inheritable, caps_ambient;
    struct hd_cgroup *cgroup; /* the container's group, or NULL */
    char **argv;
    char **env;
    const char *workdir; /* NULL: "/" */
    const char *user;    /* "uid[:gid]" or a name; NULL: root */
    /* Optional, in the process after it joined the namespaces and the cgroup, before its user and
     * security (hedge-oci exec --tty makes its terminal there). */
    int (*setup)(void *data, hd_error_t *err);
    void *setup_data;
    const gid_t *groups; /* supplementary groups, exactly (as hd_exec_plan); NULL: the primary gid alone */
    size_t n_groups;
    /* Optional: load the filter with a listener (SECCOMP_FILTER_FLAG_NEW_LISTENER) and hand its fd to this
     * callback right after, in the process (hedge-oci's listenerPath); the fd is closed afterwards. */
    int (*seccomp_listener)(void *data, int fd, hd_error_t *err);
    void *seccomp_listener_data;
};

/* Start the process; it has exec'd when this returns 0 (*pid_out is its host pid, our child).
 * Its stdio, umask and rlimits are ours; fds above 2 do not reach it. */
int hd_container_join(const struct hd_container_join *j, pid_t *pid_out, hd_error_t *err);

#endif
