/*
 * namespaces.c - linux.namespaces of a bundle's config.json: which namespaces
 * the container gets new, which it joins by path (opened and checked at
 * create: oci_namespaces_open), and which it shares with the runtime because
 * the list leaves them out (runtime-spec: "the container MUST inherit the
 * runtime namespace of that type"): pid, ipc and uts are joined through
 * /proc/self/ns, the cgroup namespace is kept, and without a mount entry the
 * process only chroots (config.c checks what that refuses). New user and time
 * namespaces are flagged here and made with their maps and offsets by
 * userns.c and extras.c. docs/oci.md has the rows of each case.
 */
#include "oci/oci.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/nsfs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "base/util.h"
#include "runtime/backend.h"

static const char *const namespace_types[] = {"pid", "mount", "ipc", "uts", "network", "cgroup", "user", "time"};
/* namespace_types[t] as the runtime's enum hd_join_ns and its CLONE_NEW* type (time: not joined) */
static const struct {
    int join;
    int clone_type;
} namespace_joins[] = {
    {HD_JOIN_PID, CLONE_NEWPID},   {HD_JOIN_MNT, CLONE_NEWNS},  {HD_JOIN_IPC, CLONE_NEWIPC},
    {HD_JOIN_UTS, CLONE_NEWUTS},   {HD_JOIN_NET, CLONE_NEWNET}, {HD_JOIN_CGROUP, CLONE_NEWCGROUP},
    {HD_JOIN_USER, CLONE_NEWUSER}, {-1, CLONE_NEWTIME},
};

/* The name linux.namespaces uses for a CLONE_NEW* type, or NULL. */
static const char *namespace_type_name(int clone_type)
{
    for (size_t t = 0; t < ARRAY_SIZE(namespace_joins); t++)
        if (namespace_joins[t].clone_type == clone_type)
            return namespace_types[t];
    return NULL;
}

/* The hostname of the uts namespace fd: a child joins it and writes its nodename to a pipe. */
static char *uts_namespace_hostname(int fd, hd_error_t *err)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return hd_error_sys(err, "pipe"), NULL;
    pid_t pid = fork();
    if (pid < 0) {
        hd_error_sys(err, "fork");
        close(p[0]);
        close(p[1]);
        return NULL;
    }
    if (pid == 0) {
        struct utsname u;
        if (setns(fd, CLONE_NEWUTS) < 0 || uname(&u) < 0)
            _exit(1);
        _exit(write(p[1], u.nodename, strlen(u.nodename)) < 0);
    }
    close(p[1]);
    char name[sizeof(((struct utsname *)0)->nodename)] = {0};
    size_t got = 0;
    ssize_t n;
    while (got < sizeof(name) - 1 &&
           ((n = read(p[0], name + got, sizeof(name) - 1 - got)) > 0 || (n < 0 && errno == EINTR)))
        got += n > 0 ? (size_t)n : 0;
    close(p[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return hd_error_set(err, 0, "join it to read its hostname"), NULL;
    return hd_xstrdup(name);
}

int oci_namespaces_open(struct oci_config *cfg, hd_error_t *err)
{
    for (size_t t = 0; t < ARRAY_SIZE(namespace_joins); t++) {
        int j = namespace_joins[t].join;
        if (j < 0 || cfg->ns_paths[j] == NULL)
            continue;
        const char *path = cfg->ns_paths[j];
        size_t i = cfg->ns_index[j];
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat theirs, ours;
        /* the container's root would be set up (mounts, pivot_root) on the host's mount table */
        if (fd >= 0 && j == HD_JOIN_MNT && fstat(fd, &theirs) == 0 && stat("/proc/self/ns/mnt", &ours) == 0 &&
            theirs.st_ino == ours.st_ino && theirs.st_dev == ours.st_dev) {
            close(fd);
            return hd_error_set(err, 0,
                                "linux.namespaces[%zu].path: %s is the runtime's own mount namespace: leave the "
                                "mount entry out to share it",
                                i, path);
        }
        if (fd < 0 && cfg->ns_inherited[j])
            return hd_error_sys(err, "linux.namespaces: no %s entry, so the runtime's own: open %s", namespace_types[t],
                                path);
        if (fd < 0)
            return hd_error_sys(err, "linux.namespaces[%zu].path: open %s", i, path);
        cfg->ns_fds[j] = fd;
        /* what setns(fd, type) checks in the child, asked here so the error names the field */
        int type = ioctl(fd, NS_GET_NSTYPE);
        if (type < 0)
            return hd_error_set(err, 0, "linux.namespaces[%zu].path: %s is not a namespace file", i, path);
        if (type != namespace_joins[t].clone_type) {
            const char *name = namespace_type_name(type);
            return hd_error_set(err, 0, "linux.namespaces[%zu].path: %s is a namespace of type %s, not %s", i, path,
                                name ? name : "unknown", namespace_types[t]);
        }
        if (j == HD_JOIN_USER && oci_userns_check_joined(cfg, fd, err) < 0)
            return -1;
        /* no hostname in the config: the container's (/etc/hostname, $HOSTNAME) is the joined namespace's */
        if (j == HD_JOIN_UTS && cfg->spec->hostname == NULL && !cfg->ns_inherited[j] &&
            (cfg->spec->hostname = uts_namespace_hostname(fd, err)) == NULL)
            return hd_error_prefix(err, "linux.namespaces[%zu].path: %s", i, path);
    }
    return 0;
}

int oci_namespaces_parse(json_t *arr, struct oci_config *cfg, hd_error_t *err)
{
    struct hd_spec *spec = cfg->spec;
    bool have[ARRAY_SIZE(namespace_types)] = {0};
    size_t i;
    json_t *ns;
    json_array_foreach(arr, i, ns)
    {
        json_t *type = json_object_get(ns, "type");
        size_t t = 0;
        while (t < ARRAY_SIZE(namespace_types) &&
               !(json_is_string(type) && strcmp(json_string_value(type), namespace_types[t]) == 0))
            t++;
        if (t == ARRAY_SIZE(namespace_types))
            return hd_error_set(err, 0, "linux.namespaces[%zu].type: not a namespace type", i);
        json_t *path = json_object_get(ns, "path");
        if (have[t])
            return hd_error_set(err, 0, "linux.namespaces[%zu]: a second %s namespace", i, namespace_types[t]);
        if (oci_json_is_set(path) && namespace_joins[t].clone_type == CLONE_NEWTIME) {
            if (!json_is_string(path) || json_string_value(path)[0] != '/')
                return hd_error_set(err, 0, "linux.namespaces[%zu].path: not an absolute path", i);
            cfg->time_ns_path = hd_xstrdup(json_string_value(path)); /* opened by oci_time_ns_open (extras.c) */
            cfg->time_ns_index = i;
            have[t] = true;
            continue;
        }
        if (oci_json_is_set(path)) {
            int j = namespace_joins[t].join;
            if (j < 0)
                return hd_error_set(err, 0,
                                    "linux.namespaces[%zu].path: joining an existing %s namespace is not "
                                    "supported yet (network, ipc, uts, mount, cgroup, pid and user are)",
                                    i, namespace_types[t]);
            if (!json_is_string(path) || json_string_value(path)[0] != '/')
                return hd_error_set(err, 0, "linux.namespaces[%zu].path: not an absolute path", i);
            cfg->ns_paths[j] = hd_xstrdup(json_string_value(path));
            cfg->ns_index[j] = i;
            cfg->ns_fds[j] = -1;
            have[t] = true;
            continue;
        }
        if (strcmp(namespace_types[t], "time") == 0)
            cfg->new_timens = true; /* with linux.timeOffsets (extras.c) */
        if (strcmp(namespace_types[t], "user") == 0)
            cfg->new_userns = true; /* with linux.uidMappings/gidMappings (userns.c) */
        have[t] = true;
    }
    /* with a new or joined user namespace the runtime enters joined network, ipc and uts namespaces for the
     * clone (the process is born there); the others need rights in their owner inside the container (mount,
     * proc, cgroup) */
    bool userns = cfg->new_userns || cfg->ns_paths[HD_JOIN_USER];
    const char *which = cfg->new_userns ? "new" : "joined";
    static const enum hd_join_ns owned_inside[] = {HD_JOIN_MNT, HD_JOIN_PID, HD_JOIN_CGROUP};
    for (size_t k = 0; k < ARRAY_SIZE(owned_inside) && userns; k++)
        if (cfg->ns_paths[owned_inside[k]])
            return hd_error_set(err, 0,
                                "linux.namespaces[%zu].path: joining an existing %s namespace together with a %s "
                                "user namespace is not supported yet (network, ipc and uts are)",
                                cfg->ns_index[owned_inside[k]],
                                owned_inside[k] == HD_JOIN_MNT       ? "mount"
                                    : owned_inside[k] == HD_JOIN_PID ? "pid"
                                                                     : "cgroup",
                                which);
    /* A type the config does not list is the runtime's own (runtime-spec: "the container MUST inherit the
     * runtime namespace of that type"; podman --pid=host, --ipc=host, --uts=host, --cgroupns=host): pid, ipc,
     * uts and cgroup are joined through /proc/self/ns with the code that joins them by path (the runtime
     * stays in a cgroup namespace that is its own: container.c). The mount namespace is shared by not
     * making one: the process only chroots into the rootfs (host_mount_ns, checked in check_host_mount_ns).
     * With a new or joined user namespace the cgroup namespace stays the container's own: cgroupfs can be mounted
     * inside only in a cgroup namespace that user namespace owns. The network namespace is its own unless
     * the config shares the host's. */
    cfg->host_mount_ns = !have[1];
    if (cfg->host_mount_ns && userns)
        return hd_error_set(err, 0,
                            "linux.namespaces: sharing the host's mount namespace together with a %s user namespace "
                            "is not supported",
                            which);
    static const struct {
        size_t type;
        enum hd_join_ns join;
        const char *proc_name;
    } inherited[] = {
        {0, HD_JOIN_PID, "pid"}, {2, HD_JOIN_IPC, "ipc"}, {3, HD_JOIN_UTS, "uts"}, {5, HD_JOIN_CGROUP, "cgroup"}};
    for (size_t k = 0; k < ARRAY_SIZE(inherited); k++) {
        if (have[inherited[k].type] || (userns && inherited[k].join == HD_JOIN_CGROUP))
            continue;
        if (userns)
            return hd_error_set(err, 0,
                                "linux.namespaces: sharing the host's %s namespace together with a %s user "
                                "namespace is not supported",
                                namespace_types[inherited[k].type], which);
        enum hd_join_ns j = inherited[k].join;
        cfg->ns_paths[j] = hd_xasprintf("/proc/self/ns/%s", inherited[k].proc_name);
        cfg->ns_inherited[j] = true;
        cfg->ns_fds[j] = -1;
    }
    spec->network = have[4] ? HD_NET_NONE : HD_NET_HOST;
    return 0;
}
