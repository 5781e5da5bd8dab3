/*
 * extras.c - config.json fields that hedge-oci applies inside the container itself, beside config.c's
 * mounts, masks and sysctls (config.c keeps the parsing of everything else and calls these):
 *
 *   linux.devices      device nodes in the container: mknod (type, numbers, fileMode, uid, gid) after the
 *                      config's mounts, as runc does; in a new user namespace (no mknod there) the host's
 *                      node of the same path is bound instead (a spec device, as `hedge run --device`),
 *                      fifos are made with mknod there too. The device cgroup's allow rules are the
 *                      config's linux.resources.devices, as runc (nothing is added for these nodes).
 *   domainname         setdomainname(2) in the container's uts namespace (refused when it is the host's)
 *   linux.personality  personality(2) in the container before its filter and exec: LINUX or LINUX32 and
 *                      the flags of personality(2) by name
 *   linux.resources.unified  key/value pairs written to the files of the container's group in the cgroup v2
 *                      hierarchy (v2 host, or the unified part of a hybrid one), after the process is in it
 *                      and held before exec
 *   linux.seccomp.listenerPath  create connects to the unix socket there; the container's process loads its
 *                      filter with SECCOMP_FILTER_FLAG_NEW_LISTENER and sends the listener fd over that
 *                      connection (SCM_RIGHTS) with the container process state (runtime-spec "Seccomp
 *                      listener": ociVersion, fds ["seccompFd"], pid, metadata, state), as runc sends it
 *   linux.timeOffsets  with a new time namespace: the runtime's workload time_offsets (backend.h), written for
 *                      the namespace it unshares for the clone; a time namespace by path: its fd, which the
 *                      runtime enters for the clone (time_ns_fd)
 *   --preserve-fds N   fds 3..3+N-1 of hedge-oci (after the LISTEN_FDS of socket activation, as runc) kept
 *                      open at the same numbers for the process: the runtime marks every fd above 2
 *                      close-on-exec in the child; the hook clears the mark right before exec
 */
#include "oci/oci.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "base/fdpass.h"
#include "base/util.h"
#include "cgroup/cgroup.h"

void oci_extras_free(struct oci_config *cfg)
{
    for (size_t i = 0; i < cfg->n_devices; i++)
        free(cfg->devices[i].path);
    free(cfg->devices);
    free(cfg->domainname);
    oci_unified_free(cfg->unified, cfg->n_unified);
    free(cfg->listener_path);
    free(cfg->listener_metadata);
    free(cfg->time_offsets);
    free(cfg->time_ns_path);
    free(cfg->affinity_initial);
    free(cfg->affinity_final);
    if (cfg->time_ns_fd >= 0)
        close(cfg->time_ns_fd);
}

static bool clean_absolute(const char *p)
{
    if (p[0] != '/' || strcmp(p, "/") == 0)
        return false;
    size_t n = strlen(p);
    return strstr(p, "/../") == NULL && !(n >= 3 && strcmp(p + n - 3, "/..") == 0);
}

/* A number field of linux.devices[i]: absent is def; else an integer in [0, max]. */
static int device_number(json_t *d, size_t i, const char *key, bool required, int64_t def, int64_t max, int64_t *out,
                         hd_error_t *err)
{
    json_t *v = json_object_get(d, key);
    if (v == NULL || json_is_null(v)) {
        if (required)
            return hd_error_set(err, 0, "linux.devices[%zu].%s: missing (needed for type c, b and u)", i, key);
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max)
        return hd_error_set(err, 0, "linux.devices[%zu].%s: not an integer from 0 to %lld", i, key, (long long)max);
    *out = json_integer_value(v);
    return 0;
}

/* linux.devices of the "linux" object lx: kept in cfg->devices; in a new user namespace the character and block
 * nodes become spec devices (the host's node bound). */
static int parse_devices(json_t *lx, struct oci_config *cfg, hd_error_t *err)
{
    json_t *arr = json_object_get(lx, "devices");
    if (arr == NULL || json_is_null(arr))
        return 0;
    if (!json_is_array(arr))
        return hd_error_set(err, 0, "linux.devices: not an array");
    cfg->devices = hd_xcalloc(json_array_size(arr) + 1, sizeof(*cfg->devices));
    size_t i;
    json_t *d;
    json_array_foreach(arr, i, d)
    {
        if (!json_is_object(d))
            return hd_error_set(err, 0, "linux.devices[%zu]: not an object", i);
        const char *path = json_string_value(json_object_get(d, "path"));
        if (path == NULL || !clean_absolute(path))
            return hd_error_set(err, 0, "linux.devices[%zu].path: \"%s\" is not an absolute path without \"..\"", i,
                                path ? path : "");
        const char *type = json_string_value(json_object_get(d, "type"));
        mode_t kind = 0;
        if (type && (strcmp(type, "c") == 0 || strcmp(type, "u") == 0))
            kind = S_IFCHR;
        else if (type && strcmp(type, "b") == 0)
            kind = S_IFBLK;
        else if (type && strcmp(type, "p") == 0)
            kind = S_IFIFO;
        else
            return hd_error_set(err, 0, "linux.devices[%zu].type: \"%s\" is not c, b, u or p", i, type ? type : "");
        int64_t maj, min, mode, uid, gid;
        bool numbered = kind != S_IFIFO;
        if (device_number(d, i, "major", numbered, 0, 0xfff, &maj, err) < 0 ||
            device_number(d, i, "minor", numbered, 0, 0xfffff, &min, err) < 0 ||
            device_number(d, i, "fileMode", false, 0666, 07777, &mode, err) < 0 ||
            device_number(d, i, "uid", false, 0, UINT32_MAX - 1, &uid, err) < 0 ||
            device_number(d, i, "gid", false, 0, UINT32_MAX - 1, &gid, err) < 0)
            return -1;
        struct oci_device *o = &cfg->devices[cfg->n_devices++];
        *o = (struct oci_device){.path = hd_xstrdup(path),
                                 .mode = kind | (mode_t)mode,
                                 .rdev = numbered ? makedev((unsigned)maj, (unsigned)min) : 0,
                                 .uid = (uid_t)uid,
                                 .gid = (gid_t)gid};
        if (cfg->new_userns && kind != S_IFIFO) {
            /* no mknod in a user namespace: the host's node, bound (runc does the same) */
            struct hd_spec *s = cfg->spec;
            s->devices = hd_xrealloc(s->devices, ((size_t)s->n_devices + 1) * sizeof(*s->devices));
            s->devices[s->n_devices++] = (struct hd_device){.path = hd_xstrdup(path), .target = hd_xstrdup(path)};
            o->bound = true;
        }
    }
    return 0;
}

static const struct oci_flag_name personality_flags[] = {
    {"UNAME26", UNAME26},
    {"ADDR_NO_RANDOMIZE", ADDR_NO_RANDOMIZE},
    {"FDPIC_FUNCPTRS", FDPIC_FUNCPTRS},
    {"MMAP_PAGE_ZERO", MMAP_PAGE_ZERO},
    {"ADDR_COMPAT_LAYOUT", ADDR_COMPAT_LAYOUT},
    {"READ_IMPLIES_EXEC", READ_IMPLIES_EXEC},
    {"ADDR_LIMIT_32BIT", ADDR_LIMIT_32BIT},
    {"SHORT_INODE", SHORT_INODE},
    {"WHOLE_SECONDS", WHOLE_SECONDS},
    {"STICKY_TIMEOUTS", STICKY_TIMEOUTS},
    {"ADDR_LIMIT_3GB", ADDR_LIMIT_3GB},
};

static int parse_personality(json_t *lx, struct oci_config *cfg, hd_error_t *err)
{
    json_t *p = json_object_get(lx, "personality");
    if (p == NULL || json_is_null(p))
        return 0;
    if (!json_is_object(p))
        return hd_error_set(err, 0, "linux.personality: not an object");
    const char *domain = json_string_value(json_object_get(p, "domain"));
    if (domain && strcmp(domain, "LINUX") == 0)
        cfg->personality = PER_LINUX;
    else if (domain && strcmp(domain, "LINUX32") == 0)
        cfg->personality = PER_LINUX32;
    else
        return hd_error_set(err, 0, "linux.personality.domain: \"%s\" is not LINUX or LINUX32", domain ? domain : "");
    if (oci_flags_parse(json_object_get(p, "flags"), "linux.personality.flags", "personality(2)", personality_flags,
                        ARRAY_SIZE(personality_flags), &cfg->personality, err) < 0)
        return -1;
    cfg->have_personality = true;
    return 0;
}

/* linux.timeOffsets: {"monotonic": {"secs": N, "nanosecs": M}, "boottime": {...}} as timens_offsets lines. */
static int parse_time_offsets(json_t *lx, struct oci_config *cfg, hd_error_t *err)
{
    json_t *offsets = json_object_get(lx, "timeOffsets");
    bool given = offsets && !json_is_null(offsets);
    if (given && !json_is_object(offsets))
        return hd_error_set(err, 0, "linux.timeOffsets: not an object");
    if (!cfg->new_timens) {
        if (given && json_object_size(offsets) > 0)
            return hd_error_set(err, 0, "linux.timeOffsets: needs a new time namespace (linux.namespaces %s)",
                                cfg->time_ns_path ? "joins one by path" : "has no time entry");
        return 0;
    }
    cfg->time_offsets = hd_xstrdup("");
    const char *clock;
    json_t *o;
    json_object_foreach(given ? offsets : NULL, clock, o)
    {
        if (strcmp(clock, "monotonic") != 0 && strcmp(clock, "boottime") != 0)
            return hd_error_set(err, 0, "linux.timeOffsets.%s: not monotonic or boottime", clock);
        json_t *secs = json_object_get(o, "secs"), *nsecs = json_object_get(o, "nanosecs");
        if (!json_is_object(o) || (secs && !json_is_integer(secs)))
            return hd_error_set(err, 0, "linux.timeOffsets.%s.secs: not an integer", clock);
        if (nsecs &&
            (!json_is_integer(nsecs) || json_integer_value(nsecs) < 0 || json_integer_value(nsecs) >= 1000000000))
            return hd_error_set(err, 0, "linux.timeOffsets.%s.nanosecs: not an integer from 0 to 999999999", clock);
        char *more =
            hd_xasprintf("%s%s %lld %lld\n", cfg->time_offsets, clock, (long long)(secs ? json_integer_value(secs) : 0),
                         (long long)(nsecs ? json_integer_value(nsecs) : 0));
        free(cfg->time_offsets);
        cfg->time_offsets = more;
    }
    return 0;
}

/* hedge-oci-vm: the guest's hedge-init has none of these (docs/oci.md, "config.json under hedge-oci-vm"). */
static int refuse_under_vm(json_t *root, hd_error_t *err)
{
    json_t *lx = json_object_get(root, "linux");
    const struct {
        json_t *parent;
        const char *key, *field;
    } fields[] = {
        {root, "domainname", "domainname"},
        {json_object_get(root, "process"), "ioPriority", "process.ioPriority"},
        {json_object_get(root, "process"), "scheduler", "process.scheduler"},
        {json_object_get(root, "process"), "execCPUAffinity", "process.execCPUAffinity"},
        {lx, "devices", "linux.devices"},
        {lx, "personality", "linux.personality"},
        {lx, "timeOffsets", "linux.timeOffsets"},
        {lx, "memoryPolicy", "linux.memoryPolicy"},
        {json_object_get(lx, "resources"), "unified", "linux.resources.unified"},
        {json_object_get(lx, "seccomp"), "listenerPath", "linux.seccomp.listenerPath"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(fields); i++)
        if (oci_json_is_set(json_object_get(fields[i].parent, fields[i].key)))
            return hd_error_set(err, 0, "%s: not supported under hedge-oci-vm", fields[i].field);
    return 0;
}

int oci_extras_parse(json_t *root, struct oci_config *cfg, hd_error_t *err)
{
    if (oci_globals.vm && refuse_under_vm(root, err) < 0)
        return -1;
    json_t *lx = json_object_get(root, "linux");
    if (parse_devices(lx, cfg, err) < 0 || parse_personality(lx, cfg, err) < 0 ||
        parse_time_offsets(lx, cfg, err) < 0 || oci_memory_policy_parse(lx, cfg, err) < 0)
        return -1;
    json_t *dn = json_object_get(root, "domainname");
    if (dn && !json_is_null(dn) && !json_is_string(dn))
        return hd_error_set(err, 0, "domainname: not a string");
    if (dn && json_string_length(dn) > 0) {
        if (json_string_length(dn) > 64)
            return hd_error_set(err, 0, "domainname: longer than 64 characters");
        if (cfg->ns_inherited[HD_JOIN_UTS])
            return hd_error_set(err, 0,
                                "domainname: needs a uts namespace of the container's own (linux.namespaces has no "
                                "uts entry: the host's is shared)");
        cfg->domainname = hd_xstrdup(json_string_value(dn));
    }
    return 0;
}

/* One node of linux.devices at its path (parents made): whatever is there (not a directory) is replaced, as the
 * runtime's own /dev/null and the like are when the config lists them. */
static int make_device(const struct oci_device *d, size_t i, hd_error_t *err)
{
    cleanup_free char *parent = hd_xstrdup(d->path);
    *strrchr(parent, '/') = '\0';
    if (parent[0] && hd_mkdir_p(parent, 0755, err) < 0)
        return hd_error_prefix(err, "linux.devices[%zu]", i);
    struct stat st;
    if (lstat(d->path, &st) == 0) {
        if (S_ISDIR(st.st_mode))
            return hd_error_set(err, EISDIR, "linux.devices[%zu].path: %s is a directory", i, d->path);
        if (unlink(d->path) < 0)
            return hd_error_sys(err, "linux.devices[%zu]: remove %s", i, d->path);
    }
    mode_t old = umask(0);
    int rc = mknod(d->path, d->mode, d->rdev);
    umask(old);
    if (rc < 0)
        return hd_error_sys(err, "linux.devices[%zu]: mknod %s", i, d->path);
    if (lchown(d->path, d->uid, d->gid) < 0)
        return hd_error_sys(err, "linux.devices[%zu]: chown %s to %u:%u", i, d->path, (unsigned)d->uid,
                            (unsigned)d->gid);
    return 0;
}

/* A count of fds: a decimal number from 0 to 65536 (where is names it for errors). */
static int fd_count(const char *text, const char *where, int *out, hd_error_t *err)
{
    char *end = NULL;
    errno = 0;
    long n = strtol(text, &end, 10);
    if (text[0] < '0' || text[0] > '9' || *end != '\0' || errno || n > 65536)
        return hd_error_set(err, 0, "%s: \"%s\" is not a number of file descriptors", where, text);
    *out = (int)n;
    return 0;
}

int oci_pass_fds_setup(struct oci_config *cfg, const char *preserve_fds, bool activation, hd_error_t *err)
{
    int listen = 0, preserve = 0;
    const char *lf = activation ? getenv("LISTEN_FDS") : NULL;
    const char *lp = getenv("LISTEN_PID");
    /* runc's socket activation: LISTEN_FDS for us (LISTEN_PID, when set, is our pid) */
    if (lf && *lf && (lp == NULL || strtol(lp, NULL, 10) == (long)getpid()) &&
        fd_count(lf, "LISTEN_FDS", &listen, err) < 0)
        return -1;
    if (preserve_fds && fd_count(preserve_fds, "--preserve-fds", &preserve, err) < 0)
        return -1;
    for (int fd = 3; fd < 3 + listen + preserve; fd++)
        if (fcntl(fd, F_GETFD) < 0)
            return hd_error_set(err, EBADF, "%s: fd %d is not open", fd < 3 + listen ? "LISTEN_FDS" : "--preserve-fds",
                                fd);
    cfg->n_pass_fds = listen + preserve;
    if (listen > 0) {
        cleanup_free char *kv = hd_xasprintf("LISTEN_FDS=%d", listen);
        hd_env_set(&cfg->spec->env, kv);
        hd_env_set(&cfg->spec->env, "LISTEN_PID=1");
    }
    return 0;
}

int oci_pass_fds_before_exec(const struct oci_config *cfg, hd_error_t *err)
{
    for (int fd = 3; fd < 3 + cfg->n_pass_fds; fd++)
        if (fcntl(fd, F_SETFD, 0) < 0)
            return hd_error_sys(err, "--preserve-fds: fd %d", fd);
    return 0;
}

int oci_unified_parse(json_t *unified, struct oci_config *cfg, hd_error_t *err)
{
    if (unified == NULL || json_is_null(unified))
        return 0;
    if (!json_is_object(unified))
        return hd_error_set(err, 0, "linux.resources.unified: not an object");
    if (json_object_size(unified) == 0)
        return 0;
    if (hd_cgroup_detect() == HD_CGROUP_V1)
        return hd_error_set(err, 0, "linux.resources.unified: needs a cgroup v2 hierarchy (this host has v1 only)");
    cfg->unified = hd_xcalloc(json_object_size(unified), sizeof(*cfg->unified));
    const char *key;
    json_t *value;
    json_object_foreach(unified, key, value)
    {
        if (key[0] == '\0' || strchr(key, '/') || strstr(key, ".."))
            return hd_error_set(err, 0, "linux.resources.unified.%s: not the name of a file of the group", key);
        if (strcmp(key, "cgroup.procs") == 0 || strcmp(key, "cgroup.threads") == 0)
            return hd_error_set(err, 0, "linux.resources.unified.%s: moves processes, not a limit", key);
        if (!json_is_string(value))
            return hd_error_set(err, 0, "linux.resources.unified.%s: not a string", key);
        cfg->unified[cfg->n_unified].key = hd_xstrdup(key);
        cfg->unified[cfg->n_unified++].value = hd_xstrdup(json_string_value(value));
    }
    return 0;
}

void oci_unified_free(struct oci_sysctl *unified, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(unified[i].key);
        free(unified[i].value);
    }
    free(unified);
}

int oci_unified_apply(const struct oci_sysctl *unified, size_t n, struct hd_cgroup *cg, hd_error_t *err)
{
    if (n == 0)
        return 0;
    const char *dir = hd_cgroup_unified_dir(cg);
    if (dir == NULL)
        return hd_error_set(err, 0, "linux.resources.unified: the container's cgroup has no cgroup v2 directory");
    for (size_t i = 0; i < n; i++) {
        const struct oci_sysctl *u = &unified[i];
        cleanup_free char *path = hd_xasprintf("%s/%s", dir, u->key);
        int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
            return hd_error_set(err, errno, "linux.resources.unified.%s: %s", u->key,
                                errno == ENOENT ? "the container's cgroup has no such file" : "cannot open it");
        ssize_t wrote = write(fd, u->value, strlen(u->value));
        int e = errno;
        close(fd);
        if (wrote < 0 || (size_t)wrote != strlen(u->value))
            return hd_error_set(err, wrote < 0 ? e : EIO, "linux.resources.unified.%s: write \"%s\" to %s", u->key,
                                u->value, path);
    }
    return 0;
}

int oci_time_ns_open(struct oci_config *cfg, hd_error_t *err)
{
    if (cfg->time_ns_path == NULL)
        return 0;
    size_t i = cfg->time_ns_index;
    cfg->time_ns_fd = open(cfg->time_ns_path, O_RDONLY | O_CLOEXEC);
    if (cfg->time_ns_fd < 0)
        return hd_error_sys(err, "linux.namespaces[%zu].path: open %s", i, cfg->time_ns_path);
    int type = ioctl(cfg->time_ns_fd, NS_GET_NSTYPE);
    if (type < 0)
        return hd_error_set(err, 0, "linux.namespaces[%zu].path: %s is not a namespace file", i, cfg->time_ns_path);
    if (type != CLONE_NEWTIME)
        return hd_error_set(err, 0, "linux.namespaces[%zu].path: %s is not a time namespace", i, cfg->time_ns_path);
    return 0;
}

int oci_listener_parse(json_t *sc, struct oci_config *cfg, hd_error_t *err)
{
    json_t *path = json_object_get(sc, "listenerPath");
    json_t *meta = json_object_get(sc, "listenerMetadata");
    if (path && !json_is_null(path) && !json_is_string(path))
        return hd_error_set(err, 0, "linux.seccomp.listenerPath: not a string");
    if (meta && !json_is_null(meta) && !json_is_string(meta))
        return hd_error_set(err, 0, "linux.seccomp.listenerMetadata: not a string");
    if (path == NULL || json_string_length(path) == 0) {
        if (meta && json_string_length(meta) > 0)
            return hd_error_set(err, 0, "linux.seccomp.listenerMetadata: given without a listenerPath");
        return 0;
    }
    const char *p = json_string_value(path);
    struct sockaddr_un addr;
    if (p[0] != '/' || strlen(p) >= sizeof(addr.sun_path))
        return hd_error_set(err, 0, "linux.seccomp.listenerPath: \"%s\" is not an absolute path of a unix socket", p);
    cfg->listener_path = hd_xstrdup(p);
    cfg->listener_metadata = hd_xstrdup(meta && json_is_string(meta) ? json_string_value(meta) : "");
    return 0;
}

int oci_listener_connect(struct oci_config *cfg, hd_error_t *err)
{
    if (cfg->listener_path == NULL)
        return 0;
    if (cfg->seccomp_json == NULL)
        return 0; /* an empty linux.seccomp: no filter, so no listener */
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strcpy(addr.sun_path, cfg->listener_path);
    cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return hd_error_sys(err, "linux.seccomp.listenerPath: socket");
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
        return hd_error_sys(err, "linux.seccomp.listenerPath: connect to %s", cfg->listener_path);
    cfg->listener_fd = steal_fd(&fd);
    return 0;
}

int oci_listener_send_fd(const struct oci_config *cfg, const char *state_json, int fd, hd_error_t *err)
{
    json_t *state = json_loads(state_json, 0, NULL);
    json_t *pid = json_object_get(state, "pid");
    json_t *msg = json_pack("{s:s, s:[s], s:O?, s:s, s:O?}", "ociVersion", OCI_VERSION, "fds", "seccompFd", "pid", pid,
                            "metadata", cfg->listener_metadata, "state", state);
    cleanup_free char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    json_decref(state);
    if (text == NULL)
        return hd_error_set(err, 0, "linux.seccomp.listenerPath: the container process state");
    if (hd_send_fds(cfg->listener_fd, text, strlen(text), &fd, 1) < 0)
        return hd_error_sys(err, "linux.seccomp.listenerPath: send the listener to %s", cfg->listener_path);
    close(cfg->listener_fd); /* the process's copy: the agent sees the end of the message */
    return 0;
}

int oci_listener_send(const struct hd_workload *w, void *data, int fd, hd_error_t *err)
{
    return oci_listener_send_fd(data, oci_hook_state(w, "creating"), fd, err);
}

int oci_extras_setup_inside(const struct oci_config *cfg, hd_error_t *err)
{
    for (size_t i = 0; i < cfg->n_devices; i++)
        if (!cfg->devices[i].bound && make_device(&cfg->devices[i], i, err) < 0)
            return -1;
    if (cfg->domainname && setdomainname(cfg->domainname, strlen(cfg->domainname)) < 0)
        return hd_error_sys(err, "domainname: setdomainname %s", cfg->domainname);
    return oci_process_attrs_apply(cfg, err);
}

int oci_process_attrs_apply(const struct oci_config *cfg, hd_error_t *err)
{
    if (oci_sched_apply(cfg, err) < 0)
        return -1;
    if (cfg->have_personality && personality(cfg->personality) < 0)
        return hd_error_sys(err, "linux.personality: personality(0x%lx)", cfg->personality);
    return 0;
}
