/*
 * config.c - a bundle's config.json (OCI runtime-spec 1.1) turned into a hedge
 * spec, plus the few things a spec cannot say, done inside the container by
 * the runtime's container_setup hook (backend.h).
 *
 * Every field is either honoured or refused with an error that names it
 * ("process.terminal: not supported yet"); properties the runtime spec does
 * not define are ignored, as the spec requires. How each field maps is
 * listed in docs/oci.md. In short:
 *   process.args/env/cwd/user.uid+gid     spec command/env/workdir/user
 *   process.user.additionalGids           cfg groups -> the workload's exact supplementary groups
 *   process.capabilities                  spec cap_drop ALL + cap_add (one set; unknown names
 *                                         dropped with runc's warning), inheritable/ambient masks
 *   process.noNewPrivileges               spec no_new_privs
 *   process.ioPriority, scheduler         set in the container's process before its filter (sched.c)
 *   process.rlimits, oomScoreAdj          set in the runtime before the clone (inherited)
 *   root.path/readonly, hostname          spec rootfs/readonly_rootfs/hostname
 *   mounts: bind/rbind                    spec mounts (+ nosuid/nodev/noexec inside)
 *   mounts: proc, sysfs, /dev tmpfs,      the runtime's own (rootfs.c makes them)
 *           devpts, mqueue, /dev/shm
 *   mounts: other tmpfs/mqueue/..., cgroup  mounted inside by the hook, in config order with the binds
 *                                         (a bind after one is taken off and put back in its turn)
 *   linux.namespaces                      the container backend's set; network absent = host;
 *                                         pid/ipc/uts/cgroup absent = the runtime's own (joined);
 *                                         mount absent = chroot only, nothing mounted (check_host_mount_ns);
 *                                         a path: joined (namespaces.c: oci_namespaces_open, the
 *                                         workload's join_ns_fds)
 *   linux.uidMappings/gidMappings         a new user namespace: the workload's uid_map/gid_map (userns.c)
 *   linux.resources memory/cpu/pids       spec resources (cpu.cpus/mems, realtime*, blockIO,
 *                                         hugepageLimits: resources.c)
 *   linux.cgroupsPath                     cgroup parent + name
 *   linux.seccomp                         written to the state dir, spec seccomp = that file
 *   linux.maskedPaths/readonlyPaths       inside by the hook (on top of hedge's defaults)
 *   linux.devices, domainname,            inside by the hook, after the mounts (extras.c)
 *     linux.personality
 *   linux.sysctl                          namespaced keys, written inside by the hook
 */
#include "oci/oci.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <linux/nsfs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "base/json.h"
#include "base/util.h"
#include "cgroup/devices.h"
#include "runtime/backend.h"
#include "runtime/container/caps.h"

void oci_config_free(struct oci_config *cfg)
{
    if (cfg == NULL)
        return;
    hd_spec_free(cfg->spec);
    oci_hooks_free(&cfg->hooks);
    if (cfg->console_fd >= 0)
        close(cfg->console_fd);
    if (cfg->listener_fd >= 0)
        close(cfg->listener_fd);
    free(cfg->bundle);
    free(cfg->rootfs);
    for (int i = 0; i < cfg->n_mounts; i++) {
        free(cfg->mounts[i].type);
        free(cfg->mounts[i].source);
        free(cfg->mounts[i].target);
        free(cfg->mounts[i].data);
    }
    free(cfg->mounts);
    free(cfg->groups);
    hd_strv_free(cfg->masked_paths);
    hd_strv_free(cfg->readonly_paths);
    for (int i = 0; i < cfg->n_sysctls; i++) {
        free(cfg->sysctls[i].key);
        free(cfg->sysctls[i].value);
    }
    free(cfg->sysctls);
    for (int i = 0; i < cfg->n_rlimits; i++)
        free(cfg->rlimits[i].name);
    free(cfg->rlimits);
    free(cfg->cgroup_parent);
    free(cfg->cgroup_name);
    free(cfg->seccomp_json);
    free(cfg->annotations_json);
    json_decref(cfg->document);
    free(cfg->device_rules);
    free(cfg->uid_map);
    free(cfg->gid_map);
    oci_extras_free(cfg);
    for (size_t t = 0; t < HD_JOIN_NS_COUNT; t++) {
        if (cfg->ns_paths[t] && cfg->ns_fds[t] >= 0)
            close(cfg->ns_fds[t]);
        free(cfg->ns_paths[t]);
    }
    free(cfg);
}

static int unsupported(hd_error_t *err, const char *field, const char *why)
{
    return hd_error_set(err, 0, "%s: %s", field, why ? why : "not supported yet by hedge-oci");
}

/* A field that is set: present, not null, not false, not an empty array, object or string. */
static bool is_set(json_t *v)
{
    if (v == NULL || json_is_null(v) || json_is_false(v))
        return false;
    if (json_is_array(v))
        return json_array_size(v) > 0;
    if (json_is_object(v))
        return json_object_size(v) > 0;
    if (json_is_string(v))
        return json_string_length(v) > 0;
    return true;
}

bool oci_json_is_set(json_t *v)
{
    return is_set(v);
}

static int refuse_if_set(json_t *obj, const char *key, const char *prefix, hd_error_t *err)
{
    if (is_set(json_object_get(obj, key))) {
        char field[128];
        snprintf(field, sizeof(field), "%s%s", prefix, key);
        return unsupported(err, field, NULL);
    }
    return 0;
}

static int get_strv(json_t *arr, const char *field, char ***out, hd_error_t *err)
{
    if (arr == NULL || json_is_null(arr))
        return 0;
    if (!json_is_array(arr))
        return hd_error_set(err, 0, "%s: not an array", field);
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (!json_is_string(v))
            return hd_error_set(err, 0, "%s[%zu]: not a string", field, i);
        hd_strv_push(out, json_string_value(v));
    }
    if (*out == NULL)
        *out = hd_xcalloc(1, sizeof(char *));
    return 0;
}

static bool lsm_enabled(const char *name)
{
    if (strcmp(name, "apparmor") == 0) {
        cleanup_free char *text = NULL;
        hd_error_t ignored = NULL;
        bool on = hd_read_file("/sys/module/apparmor/parameters/enabled", &text, NULL, &ignored) == 0 && text[0] == 'Y';
        hd_error_free(&ignored);
        return on;
    }
    return access("/sys/fs/selinux/enforce", F_OK) == 0;
}

/* ---- process ---- */

static const struct {
    const char *name;
    int resource;
} rlimit_names[] = {
    {"RLIMIT_AS", RLIMIT_AS},           {"RLIMIT_CORE", RLIMIT_CORE},         {"RLIMIT_CPU", RLIMIT_CPU},
    {"RLIMIT_DATA", RLIMIT_DATA},       {"RLIMIT_FSIZE", RLIMIT_FSIZE},       {"RLIMIT_LOCKS", RLIMIT_LOCKS},
    {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK}, {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE}, {"RLIMIT_NICE", RLIMIT_NICE},
    {"RLIMIT_NOFILE", RLIMIT_NOFILE},   {"RLIMIT_NPROC", RLIMIT_NPROC},       {"RLIMIT_RSS", RLIMIT_RSS},
    {"RLIMIT_RTPRIO", RLIMIT_RTPRIO},   {"RLIMIT_RTTIME", RLIMIT_RTTIME},     {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING},
    {"RLIMIT_STACK", RLIMIT_STACK},
};

static int parse_rlimits(json_t *arr, struct oci_config *cfg, hd_error_t *err)
{
    if (arr == NULL || json_is_null(arr))
        return 0;
    if (!json_is_array(arr))
        return hd_error_set(err, 0, "process.rlimits: not an array");
    cfg->rlimits = hd_xcalloc(json_array_size(arr) + 1, sizeof(*cfg->rlimits));
    size_t i;
    json_t *r;
    json_array_foreach(arr, i, r)
    {
        json_t *type = json_object_get(r, "type");
        json_t *soft = json_object_get(r, "soft");
        json_t *hard = json_object_get(r, "hard");
        if (!json_is_string(type) || !json_is_integer(soft) || !json_is_integer(hard))
            return hd_error_set(err, 0, "process.rlimits[%zu]: needs type (string), soft and hard (numbers)", i);
        int resource = -1;
        for (size_t k = 0; k < ARRAY_SIZE(rlimit_names); k++)
            if (strcmp(rlimit_names[k].name, json_string_value(type)) == 0)
                resource = rlimit_names[k].resource;
        if (resource < 0)
            return hd_error_set(err, 0, "process.rlimits[%zu].type: \"%s\" is not a known rlimit", i,
                                json_string_value(type));
        struct oci_rlimit *l = &cfg->rlimits[cfg->n_rlimits++];
        l->resource = resource;
        l->name = hd_xasprintf("process.rlimits[%zu] (%s)", i, json_string_value(type));
        l->limit.rlim_cur = (rlim_t)json_integer_value(soft);
        l->limit.rlim_max = (rlim_t)json_integer_value(hard);
    }
    return 0;
}

static const char *const cap_sets[] = {"bounding", "effective", "permitted", "inheritable", "ambient"};

int oci_cap_parse(const char *name)
{
    if (strncmp(name, "CAP_", 4) != 0)
        return -1;
    for (const char *p = name; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            return -1;
    return hd_cap_parse(name);
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void oci_warn_unknown_caps(char **unknown)
{
    size_t n = hd_strv_len(unknown);
    if (n == 0)
        return;
    qsort(unknown, n, sizeof(*unknown), compare_names);
    size_t len = 1;
    for (size_t i = 0; i < n; i++)
        len += strlen(unknown[i]) + 1;
    cleanup_free char *list = hd_xcalloc(1, len);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            strcat(list, " ");
        strcat(list, unknown[i]);
    }
    oci_log("warning", "ignoring unknown or unavailable capabilities: [%s]", list);
}

/* Take the names oci_cap_parse does not know out of set, each added once to *unknown (runc drops them). */
static void drop_unknown_caps(char **set, char ***unknown)
{
    size_t kept = 0;
    for (size_t i = 0; set && set[i]; i++) {
        if (oci_cap_parse(set[i]) >= 0) {
            set[kept++] = set[i];
            continue;
        }
        if (!hd_strv_contains(*unknown, set[i]))
            hd_strv_push(unknown, set[i]);
        free(set[i]);
    }
    if (set)
        set[kept] = NULL;
}

static uint64_t cap_mask(char **names)
{
    uint64_t m = 0;
    for (size_t i = 0; names && names[i]; i++)
        m |= 1ULL << hd_cap_parse(names[i]);
    return m;
}

/*
 * The ambient capabilities the kernel lets us raise: those also inheritable (permitted is the
 * bounding set here). As runc (libcontainer/capabilities: one PR_CAP_AMBIENT_RAISE per
 * capability, a failure only warned about), each other one is left out with runc's warning, and
 * the container runs without it: `runc spec` lists ambient capabilities but no inheritable ones.
 */
static uint64_t ambient_raisable(char **ambient, uint64_t inheritable)
{
    for (size_t i = 0; ambient && ambient[i]; i++)
        if ((inheritable & (1ULL << hd_cap_parse(ambient[i]))) == 0)
            oci_log("warning", "can't raise ambient capability %s: operation not permitted", ambient[i]);
    return cap_mask(ambient) & inheritable;
}

static int parse_capabilities(json_t *caps, struct oci_config *cfg, hd_error_t *err)
{
    struct hd_spec *spec = cfg->spec;
    /* runc grants nothing without a capabilities object; hedge's one set serves bounding,
     * effective and permitted, so those must agree; inheritable and ambient stay empty. */
    hd_strv_push(&spec->security.cap_drop, "ALL");
    if (caps == NULL || json_is_null(caps))
        return 0;
    if (!json_is_object(caps))
        return hd_error_set(err, 0, "process.capabilities: not an object");
    char **sets[ARRAY_SIZE(cap_sets)] = {0};
    cleanup_strv char **unknown = NULL;
    int rc = 0;
    for (size_t s = 0; s < ARRAY_SIZE(cap_sets) && rc == 0; s++) {
        char field[64];
        snprintf(field, sizeof(field), "process.capabilities.%s", cap_sets[s]);
        rc = get_strv(json_object_get(caps, cap_sets[s]), field, &sets[s], err);
        drop_unknown_caps(sets[s], &unknown);
    }
    /* as runc (libcontainer/capabilities.New): a name this kernel does not have is left out, with a warning */
    if (rc == 0)
        oci_warn_unknown_caps(unknown);
    /* the set: bounding, else effective, else permitted */
    char **set = sets[0] ? sets[0] : sets[1] ? sets[1] : sets[2];
    for (size_t s = 0; s < 3 && rc == 0; s++) {
        if (sets[s] == NULL || sets[s] == set)
            continue;
        uint64_t a = 0, b = 0;
        for (size_t i = 0; sets[s][i]; i++)
            a |= 1ULL << hd_cap_parse(sets[s][i]);
        for (size_t i = 0; set && set[i]; i++)
            b |= 1ULL << hd_cap_parse(set[i]);
        if (a != b)
            rc = hd_error_set(err, 0,
                              "process.capabilities.%s: differs from the other sets; hedge gives one set as "
                              "bounding, effective and permitted (not supported yet)",
                              cap_sets[s]);
    }
    /* inheritable and ambient: within the set (the permitted set, for any user: runtime/container keeps it
     * over the user switch, as runc) */
    uint64_t main_set = cap_mask(set);
    for (size_t s = 3; s < 5 && rc == 0; s++) {
        uint64_t m = cap_mask(sets[s]);
        if (m == 0)
            continue;
        if ((m & ~main_set) != 0)
            rc = hd_error_set(err, 0, "process.capabilities.%s: holds capabilities the bounding set does not",
                              cap_sets[s]);
        else if (s == 3)
            cfg->caps_inheritable = m;
        else
            cfg->caps_ambient = ambient_raisable(sets[4], cfg->caps_inheritable);
    }
    for (size_t i = 0; rc == 0 && set && set[i]; i++)
        hd_strv_push(&spec->security.cap_add, set[i]);
    for (size_t s = 0; s < ARRAY_SIZE(cap_sets); s++)
        hd_strv_free(sets[s]);
    return rc;
}

void oci_config_add_group(struct oci_config *cfg, gid_t gid)
{
    cfg->groups = hd_xrealloc(cfg->groups, (cfg->n_groups + 1) * sizeof(gid_t));
    cfg->groups[cfg->n_groups++] = gid;
}

static int parse_user(json_t *user, struct oci_config *cfg, hd_error_t *err)
{
    struct hd_spec *spec = cfg->spec;
    /* as runc: the process gets exactly process.user.additionalGids as its supplementary groups, none without */
    free(cfg->groups);
    cfg->groups = hd_xcalloc(1, sizeof(gid_t));
    cfg->n_groups = 0;
    if (user == NULL || json_is_null(user))
        return 0;
    if (!json_is_object(user))
        return hd_error_set(err, 0, "process.user: not an object");
    json_t *uid = json_object_get(user, "uid"), *gid = json_object_get(user, "gid");
    if ((uid && !json_is_integer(uid)) || (gid && !json_is_integer(gid)))
        return hd_error_set(err, 0, "process.user: uid and gid must be numbers");
    long long u = uid ? json_integer_value(uid) : 0, g = gid ? json_integer_value(gid) : 0;
    if (u < 0 || g < 0 || u > UINT32_MAX || g > UINT32_MAX)
        return hd_error_set(err, 0, "process.user: uid/gid out of range");
    spec->user = hd_xasprintf("%lld:%lld", u, g);
    cfg->uid = (uid_t)u;
    cfg->gid = (gid_t)g;
    json_t *umask = json_object_get(user, "umask");
    if (umask && !json_is_null(umask)) {
        if (!json_is_integer(umask) || json_integer_value(umask) < 0 || json_integer_value(umask) > 0777)
            return hd_error_set(err, 0, "process.user.umask: must be a number from 0 to 0777 (511)");
        cfg->umask = (int)json_integer_value(umask);
    }
    json_t *groups = json_object_get(user, "additionalGids");
    if (groups && !json_is_null(groups) && !json_is_array(groups))
        return hd_error_set(err, 0, "process.user.additionalGids: not an array");
    size_t i;
    json_t *v;
    json_array_foreach(groups, i, v)
    {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > UINT32_MAX)
            return hd_error_set(err, 0, "process.user.additionalGids[%zu]: not a gid (a number from 0 to %u)", i,
                                UINT32_MAX);
        if (i >= NGROUPS_MAX)
            return hd_error_set(err, 0, "process.user.additionalGids: more than %d groups", NGROUPS_MAX);
        oci_config_add_group(cfg, (gid_t)json_integer_value(v));
    }
    return refuse_if_set(user, "username", "process.user.", err);
}

static int parse_process(json_t *proc, struct oci_config *cfg, hd_error_t *err)
{
    struct hd_spec *spec = cfg->spec;
    if (!json_is_object(proc))
        return hd_error_set(err, 0, "process: missing or not an object");
    cfg->terminal = json_is_true(json_object_get(proc, "terminal"));
    json_t *size = json_object_get(proc, "consoleSize");
    if (size && !json_is_null(size)) {
        int64_t height = 0, width = 0;
        if (hd_json_object(size, "process.consoleSize", "an object", err) < 0 ||
            hd_json_int(json_object_get(size, "height"), "process.consoleSize.height", 0, 65535,
                        "a number from 0 to 65535", &height, err) < 0 ||
            hd_json_int(json_object_get(size, "width"), "process.consoleSize.width", 0, 65535,
                        "a number from 0 to 65535", &width, err) < 0)
            return -1;
        cfg->console_rows = (unsigned)height;
        cfg->console_cols = (unsigned)width;
    }
    if (refuse_if_set(proc, "commandLine", "process.", err) < 0 || oci_sched_parse(proc, cfg, err) < 0)
        return -1;
    if (get_strv(json_object_get(proc, "args"), "process.args", &spec->command, err) < 0)
        return -1;
    if (spec->command == NULL || spec->command[0] == NULL)
        return hd_error_set(err, 0, "process.args: at least one argument is required");
    if (get_strv(json_object_get(proc, "env"), "process.env", &spec->env, err) < 0)
        return -1;
    json_t *cwd = json_object_get(proc, "cwd");
    if (!json_is_string(cwd) || json_string_value(cwd)[0] != '/')
        return hd_error_set(err, 0, "process.cwd: must be an absolute path");
    spec->workdir = hd_xstrdup(json_string_value(cwd));
    if (parse_user(json_object_get(proc, "user"), cfg, err) < 0 ||
        parse_capabilities(json_object_get(proc, "capabilities"), cfg, err) < 0 ||
        parse_rlimits(json_object_get(proc, "rlimits"), cfg, err) < 0)
        return -1;
    spec->security.no_new_privs = json_is_true(json_object_get(proc, "noNewPrivileges"));
    json_t *oom = json_object_get(proc, "oomScoreAdj");
    if (oom && !json_is_null(oom)) {
        if (!json_is_integer(oom) || json_integer_value(oom) < -1000 || json_integer_value(oom) > 1000)
            return hd_error_set(err, 0, "process.oomScoreAdj: must be a number from -1000 to 1000");
        cfg->have_oom_score_adj = true;
        cfg->oom_score_adj = (int)json_integer_value(oom);
    }
    /* as runc: a profile or label is an error only where that LSM is active */
    if (is_set(json_object_get(proc, "apparmorProfile")) && lsm_enabled("apparmor"))
        return unsupported(err, "process.apparmorProfile", "AppArmor profiles are not supported yet");
    if (is_set(json_object_get(proc, "selinuxLabel")) && lsm_enabled("selinux"))
        return unsupported(err, "process.selinuxLabel", "SELinux labels are not supported yet");
    return 0;
}

/* exec --process FILE: the file's process replaces the config's (args, env, cwd, user, capabilities,
 * noNewPrivileges, rlimits, oomScoreAdj); the rest of cfg (seccomp, namespaces, cgroup) stays. */
int oci_process_load(const char *path, struct oci_config *cfg, hd_error_t *err)
{
    cleanup_free char *text = NULL;
    size_t len = 0;
    if (hd_read_file(path, &text, &len, err) < 0)
        return hd_error_prefix(err, "--process");
    json_error_t jerr;
    json_t *proc = json_loadb(text, len, 0, &jerr);
    if (!json_is_object(proc)) {
        json_decref(proc);
        return hd_error_set(err, 0, "--process %s: line %d: %s", path, jerr.line, "not a JSON object");
    }
    struct hd_spec *spec = cfg->spec;
    hd_strv_free(spec->command);
    hd_strv_free(spec->env);
    hd_strv_free(spec->security.cap_add);
    hd_strv_free(spec->security.cap_drop);
    spec->command = spec->env = spec->security.cap_add = spec->security.cap_drop = NULL;
    free(spec->workdir);
    free(spec->user);
    spec->workdir = spec->user = NULL;
    for (int i = 0; i < cfg->n_rlimits; i++)
        free(cfg->rlimits[i].name);
    free(cfg->rlimits);
    cfg->rlimits = NULL;
    cfg->n_rlimits = 0;
    cfg->caps_inheritable = cfg->caps_ambient = 0;
    cfg->have_oom_score_adj = false;
    cfg->umask = -1;
    int rc = parse_process(proc, cfg, err);
    json_decref(proc);
    return rc < 0 ? hd_error_prefix(err, "--process %s", path) : 0;
}

/* ---- mounts ---- */

struct mount_option {
    const char *name;
    unsigned long set; /* MS_* for new filesystems */
    unsigned attr;     /* MOUNT_ATTR_* for binds */
};

/* Propagation: of a mount (mounts[i].options) and of the root (linux.rootfsPropagation), set after the
 * mount is made, inside the container's mount namespace (every mount starts private there, rootfs.c). */
static const struct {
    const char *name;
    unsigned long flags;
} propagations[] = {
    {"private", MS_PRIVATE},       {"rprivate", MS_PRIVATE | MS_REC},
    {"shared", MS_SHARED},         {"rshared", MS_SHARED | MS_REC},
    {"slave", MS_SLAVE},           {"rslave", MS_SLAVE | MS_REC},
    {"unbindable", MS_UNBINDABLE}, {"runbindable", MS_UNBINDABLE | MS_REC},
};

static unsigned long propagation_flags(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(propagations); i++)
        if (strcmp(propagations[i].name, name) == 0)
            return propagations[i].flags;
    return 0;
}

static const struct mount_option flag_options[] = {
    {"ro", MS_RDONLY, MOUNT_ATTR_RDONLY},
    {"nosuid", MS_NOSUID, MOUNT_ATTR_NOSUID},
    {"nodev", MS_NODEV, MOUNT_ATTR_NODEV},
    {"noexec", MS_NOEXEC, MOUNT_ATTR_NOEXEC},
    {"noatime", MS_NOATIME, MOUNT_ATTR_NOATIME},
    {"nodiratime", MS_NODIRATIME, MOUNT_ATTR_NODIRATIME},
    {"strictatime", MS_STRICTATIME, MOUNT_ATTR_STRICTATIME},
    {"relatime", MS_RELATIME, 0},
    {"rw", 0, 0},
    {"suid", 0, 0},
    {"dev", 0, 0},
    {"exec", 0, 0},
    {"atime", 0, 0},
    {"bind", 0, 0},
    {"rbind", 0, 0},
};

/* Mounts the runtime makes itself (rootfs.c): accepted at exactly these places. */
static const struct {
    const char *type;
    const char *target;
} runtime_mounts[] = {
    {"proc", "/proc"},         {"tmpfs", "/dev"},     {"devpts", "/dev/pts"},
    {"mqueue", "/dev/mqueue"}, {"tmpfs", "/dev/shm"}, {"sysfs", "/sys"},
};

static bool is_new_fs_type(const char *type)
{
    static const char *const types[] = {"tmpfs", "proc", "sysfs", "mqueue", "devpts"};
    for (size_t i = 0; i < ARRAY_SIZE(types); i++)
        if (strcmp(type, types[i]) == 0)
            return true;
    return false;
}

static int parse_mount(json_t *m, size_t i, struct oci_config *cfg, hd_error_t *err)
{
    json_t *dest = json_object_get(m, "destination");
    if (!json_is_string(dest) || json_string_value(dest)[0] != '/')
        return hd_error_set(err, 0, "mounts[%zu].destination: must be an absolute path", i);
    const char *target = json_string_value(dest);
    json_t *type_j = json_object_get(m, "type");
    json_t *source_j = json_object_get(m, "source");
    const char *type = json_is_string(type_j) ? json_string_value(type_j) : "";
    const char *source = json_is_string(source_j) ? json_string_value(source_j) : "";
    if (is_set(json_object_get(m, "uidMappings")) || is_set(json_object_get(m, "gidMappings")))
        return hd_error_set(err, 0, "mounts[%zu].uidMappings: idmapped mounts are not supported yet", i);
    cleanup_strv char **options = NULL;
    char field[64];
    snprintf(field, sizeof(field), "mounts[%zu].options", i);
    if (get_strv(json_object_get(m, "options"), field, &options, err) < 0)
        return -1;
    bool bind = strcmp(type, "bind") == 0 || strcmp(type, "rbind") == 0;
    unsigned long flags = 0, propagation = 0;
    unsigned attr = 0;
    cleanup_free char *data = NULL;
    for (size_t k = 0; options && options[k]; k++) {
        const char *o = options[k];
        if (strcmp(o, "bind") == 0 || strcmp(o, "rbind") == 0)
            bind = true;
        bool known = false;
        if (propagation_flags(o)) {
            propagation = propagation_flags(o); /* the last one counts, as with mount(8) */
            continue;
        }
        for (size_t f = 0; f < ARRAY_SIZE(flag_options); f++) {
            if (strcmp(flag_options[f].name, o) == 0) {
                flags |= flag_options[f].set;
                attr |= flag_options[f].attr;
                known = true;
            }
        }
        if (known)
            continue;
        if (!bind && strchr(o, '=') == NULL && strcmp(o, "newinstance") != 0)
            return hd_error_set(err, 0, "mounts[%zu].options[%zu]: \"%s\" is not supported yet", i, k, o);
        if (strncmp(o, "tmpcopyup", 9) == 0 || (bind && strchr(o, '=') == NULL))
            return hd_error_set(err, 0, "mounts[%zu].options[%zu]: \"%s\" is not supported yet", i, k, o);
        if (bind)
            continue; /* filesystem data on a bind means nothing (runc ignores it) */
        /* filesystem data such as size=65536k, mode=755 */
        char *joined = data ? hd_xasprintf("%s,%s", data, o) : hd_xstrdup(o);
        free(data);
        data = joined;
    }
    if (bind) {
        if (strcmp(source, "") == 0)
            return hd_error_set(err, 0, "mounts[%zu].source: a bind mount needs a source", i);
        cleanup_free char *abs = source[0] == '/' ? hd_xstrdup(source) : hd_xasprintf("%s/%s", cfg->bundle, source);
        struct hd_spec *spec = cfg->spec;
        spec->mounts = hd_xrealloc(spec->mounts, (size_t)(spec->n_mounts + 1) * sizeof(*spec->mounts));
        spec->mounts[spec->n_mounts++] = (struct hd_mount){
            .source = get_and_reset(&abs), .target = hd_xstrdup(target), .readonly = (attr & MOUNT_ATTR_RDONLY) != 0};
        attr &= ~(unsigned)MOUNT_ATTR_RDONLY; /* the runtime binds it read-only (recursively) */
        /* every bind gets its entry, even with nothing to set: its place in the config order (setup_inside) */
        cfg->mounts = hd_xrealloc(cfg->mounts, (size_t)(cfg->n_mounts + 1) * sizeof(*cfg->mounts));
        cfg->mounts[cfg->n_mounts++] = (struct oci_mount){.kind = OCI_MOUNT_ATTR,
                                                          .type = hd_xstrdup("bind"),
                                                          .target = hd_xstrdup(target),
                                                          .attr = attr,
                                                          .propagation = propagation};
        return 0;
    }
    for (size_t r = 0; r < ARRAY_SIZE(runtime_mounts); r++) {
        if (strcmp(runtime_mounts[r].type, type) != 0 || strcmp(runtime_mounts[r].target, target) != 0)
            continue;
        if (strcmp(type, "sysfs") == 0 && !(flags & MS_RDONLY))
            return hd_error_set(err, 0, "mounts[%zu]: sysfs at /sys is always read-only in hedge; add \"ro\"", i);
        return 0; /* the runtime's own, with its own options (docs/oci.md lists them) */
    }
    if (strcmp(type, "cgroup") == 0 || strcmp(type, "cgroup2") == 0) {
        cfg->mounts = hd_xrealloc(cfg->mounts, (size_t)(cfg->n_mounts + 1) * sizeof(*cfg->mounts));
        cfg->mounts[cfg->n_mounts++] = (struct oci_mount){
            .kind = OCI_MOUNT_CGROUP, .type = hd_xstrdup(type), .target = hd_xstrdup(target), .flags = flags};
        return 0;
    }
    if (!is_new_fs_type(type))
        return hd_error_set(err, 0, "mounts[%zu].type: \"%s\" is not supported yet", i, type);
    if (strcmp(target, "/") == 0 || strncmp(target, "/proc", 5) == 0 || strcmp(target, "/sys") == 0)
        return hd_error_set(err, 0, "mounts[%zu].destination: %s over %s is not supported yet", i, type, target);
    cfg->mounts = hd_xrealloc(cfg->mounts, (size_t)(cfg->n_mounts + 1) * sizeof(*cfg->mounts));
    cfg->mounts[cfg->n_mounts++] = (struct oci_mount){.kind = OCI_MOUNT_FS,
                                                      .propagation = propagation,
                                                      .type = hd_xstrdup(type),
                                                      .source = hd_xstrdup(*source ? source : type),
                                                      .target = hd_xstrdup(target),
                                                      .flags = flags,
                                                      .data = get_and_reset(&data)};
    return 0;
}

/* ---- linux ---- */

/* Add one rule to the container's device list (cgroup/devices.h). */
static void push_device_rule(struct oci_config *cfg, const struct hd_device_rule *rule)
{
    cfg->device_rules = hd_xrealloc(cfg->device_rules, (cfg->n_device_rules + 1) * sizeof(*cfg->device_rules));
    cfg->device_rules[cfg->n_device_rules++] = *rule;
}

/*
 * The list runc applies: deny everything, then resources.devices in order,
 * then the runtime's defaults for the nodes it puts in /dev (Docker's list
 * without its leading deny-all; see cgroup/devices.c). A config without
 * rules gets the same: only the default nodes.
 */
static void finish_device_rules(struct oci_config *cfg)
{
    struct hd_device_rule *config_rules = cfg->device_rules;
    size_t n_config = cfg->n_device_rules;
    cfg->device_rules = NULL;
    cfg->n_device_rules = 0;
    push_device_rule(cfg, &hd_device_rules_default[0]);
    for (size_t i = 0; i < n_config; i++)
        push_device_rule(cfg, &config_rules[i]);
    for (size_t i = 1; i < hd_device_rules_default_count; i++)
        push_device_rule(cfg, &hd_device_rules_default[i]);
    free(config_rules);
}

/* resources.devices: rules of the device list, in order (finish_device_rules completes it). */
static int parse_devices_rules(json_t *arr, struct oci_config *cfg, hd_error_t *err)
{
    size_t i;
    json_t *r;
    json_array_foreach(arr, i, r)
    {
        json_t *type = json_object_get(r, "type"), *major = json_object_get(r, "major");
        json_t *minor = json_object_get(r, "minor"), *access_j = json_object_get(r, "access");
        const char *t = json_is_string(type) ? json_string_value(type) : "a";
        const char *access = json_is_string(access_j) ? json_string_value(access_j) : "rwm";
        if (strcmp(t, "a") != 0 && strcmp(t, "b") != 0 && strcmp(t, "c") != 0)
            return hd_error_set(err, 0, "linux.resources.devices[%zu].type: \"%s\" is not a, b or c", i, t);
        if (strspn(access, "rwm") != strlen(access) || !*access)
            return hd_error_set(err, 0, "linux.resources.devices[%zu].access: \"%s\" is not made of r, w, m", i,
                                access);
        struct hd_device_rule rule = {
            .allow = json_is_true(json_object_get(r, "allow")), .type = t[0], .major = HD_DEV_ANY, .minor = HD_DEV_ANY};
        for (const char *p = access; *p; p++)
            rule.access |= *p == 'r' ? HD_DEV_READ : *p == 'w' ? HD_DEV_WRITE : HD_DEV_MKNOD;
        if (t[0] != 'a') { /* type a means every device: its numbers do not count */
            json_t *num[2] = {major, minor};
            int64_t *field[2] = {&rule.major, &rule.minor};
            for (int k = 0; k < 2; k++) {
                if (!json_is_integer(num[k]) || json_integer_value(num[k]) < 0)
                    continue; /* absent or -1: any */
                if (json_integer_value(num[k]) > 0xfffff)
                    return hd_error_set(err, 0, "linux.resources.devices[%zu].%s: %lld is not a device number", i,
                                        k == 0 ? "major" : "minor", (long long)json_integer_value(num[k]));
                *field[k] = json_integer_value(num[k]);
            }
        }
        push_device_rule(cfg, &rule);
    }
    return 0;
}

static int parse_resources(json_t *res, struct oci_config *cfg, hd_error_t *err)
{
    struct hd_spec *spec = cfg->spec;
    if (res == NULL || json_is_null(res))
        return 0;
    static const char *const refused[] = {"network", "rdma"};
    for (size_t i = 0; i < ARRAY_SIZE(refused); i++)
        if (refuse_if_set(res, refused[i], "linux.resources.", err) < 0)
            return -1;
    if (parse_devices_rules(json_object_get(res, "devices"), cfg, err) < 0 ||
        oci_unified_parse(json_object_get(res, "unified"), cfg, err) < 0)
        return -1;
    json_t *mem = json_object_get(res, "memory");
    if (json_is_object(mem)) {
        static const char *const mem_refused[] = {"useHierarchy", "checkBeforeUpdate"};
        for (size_t i = 0; i < ARRAY_SIZE(mem_refused); i++)
            if (refuse_if_set(mem, mem_refused[i], "linux.resources.memory.", err) < 0)
                return -1;
        /* as runc: kernel memory limits are gone from recent kernels (kernel) or nearly so (kernelTCP) */
        for (const char *const *k = (const char *const[]){"kernel", "kernelTCP", NULL}; *k; k++)
            if (is_set(json_object_get(mem, *k)))
                oci_log("warning", "linux.resources.memory.%s: kernel memory limits are ignored", *k);
        int64_t value = 0;
        json_t *reservation = json_object_get(mem, "reservation");
        if (is_set(reservation)) {
            if (hd_json_int(reservation, "linux.resources.memory.reservation", -1, INT64_MAX, NULL, &value, err) < 0)
                return -1;
            spec->resources.memory_reservation = value > 0 ? value : 0;
        }
        json_t *swappiness = json_object_get(mem, "swappiness");
        if (is_set(swappiness)) {
            if (hd_json_int(swappiness, "linux.resources.memory.swappiness", 0, 100, NULL, &value, err) < 0)
                return -1;
            spec->resources.swappiness_set = true;
            spec->resources.swappiness = (int)value;
        }
        spec->resources.disable_oom_killer = json_is_true(json_object_get(mem, "disableOOMKiller"));
        json_t *limit = json_object_get(mem, "limit"), *swap = json_object_get(mem, "swap");
        if (json_is_integer(limit) && json_integer_value(limit) > 0) {
            spec->resources.memory = json_integer_value(limit);
            /* as runc: swap unset means no swap limit */
            spec->resources.memory_swap = -1;
            if (json_is_integer(swap) && json_integer_value(swap) > 0) {
                if (json_integer_value(swap) < spec->resources.memory)
                    return hd_error_set(err, 0, "linux.resources.memory.swap: must be at least memory.limit");
                spec->resources.memory_swap = json_integer_value(swap);
            }
        } else if (json_is_integer(swap) && json_integer_value(swap) > 0) {
            return unsupported(err, "linux.resources.memory.swap", "a swap limit needs memory.limit");
        }
    }
    json_t *cpu = json_object_get(res, "cpu");
    if (json_is_object(cpu)) {
        static const char *const cpu_refused[] = {"idle", "burst"};
        for (size_t i = 0; i < ARRAY_SIZE(cpu_refused); i++)
            if (refuse_if_set(cpu, cpu_refused[i], "linux.resources.cpu.", err) < 0)
                return -1;
        json_t *shares = json_object_get(cpu, "shares");
        if (json_is_integer(shares) && json_integer_value(shares) > 0) {
            long long s = json_integer_value(shares);
            if (s < 2 || s > 262144)
                return hd_error_set(err, 0, "linux.resources.cpu.shares: must be 2..262144");
            /* crun's shares → weight; the cgroup backend maps the weight back on v1 (rounded) */
            spec->resources.cpu_weight = 1 + ((s - 2) * 9999) / 262142;
            spec->resources.cpu_shares = s; /* v1 writes it as given, as runc does */
        }
        json_t *quota = json_object_get(cpu, "quota"), *period = json_object_get(cpu, "period");
        int64_t p = 100000;
        if (is_set(period)) {
            /* the kernel's CFS bounds: 1 ms .. 1 s */
            if (hd_json_int(period, "linux.resources.cpu.period", 1000, 1000000, NULL, &p, err) < 0)
                return -1;
            spec->resources.cpu_period_us = p;
        }
        if (json_is_integer(quota) && json_integer_value(quota) > 0)
            spec->resources.cpus = (double)json_integer_value(quota) / (double)p;
    }
    if (oci_resources_parse_cpuset_io(res, &spec->resources, err) < 0)
        return -1;
    json_t *pids = json_object_get(res, "pids");
    if (json_is_object(pids)) {
        json_t *limit = json_object_get(pids, "limit");
        if (json_is_integer(limit) && json_integer_value(limit) > 0)
            spec->resources.pids = json_integer_value(limit);
    }
    return 0;
}

int oci_resources_load(const char *text, size_t len, struct hd_resources *out, struct oci_sysctl **unified,
                       size_t *n_unified, hd_error_t *err)
{
    json_error_t jerr;
    json_t *res = json_loadb(text, len, 0, &jerr);
    if (!json_is_object(res)) {
        json_decref(res);
        return hd_error_set(err, 0, "--resources: line %d: not a JSON object", jerr.line);
    }
    int rc = -1;
    struct oci_config *cfg = hd_xcalloc(1, sizeof(*cfg));
    cfg->spec = hd_spec_new();
    cfg->console_fd = -1; /* not stdin: oci_config_free closes what is >= 0 */
    cfg->listener_fd = -1;
    cfg->time_ns_fd = -1;
    if (is_set(json_object_get(res, "devices")))
        unsupported(err, "linux.resources.devices",
                    "changing the device list of a running container is not "
                    "supported yet");
    else if (parse_resources(res, cfg, err) == 0)
        rc = 0;
    if (rc == 0) {
        *out = cfg->spec->resources; /* as at create: memory without swap leaves swap unlimited */
        *unified = get_and_reset(&cfg->unified);
        *n_unified = cfg->n_unified;
        cfg->n_unified = 0;
    }
    oci_config_free(cfg);
    json_decref(res);
    return rc < 0 ? hd_error_prefix(err, "update") : 0;
}

static int parse_cgroups_path(json_t *path_j, struct oci_config *cfg, hd_error_t *err)
{
    if (!is_set(path_j))
        return 0;
    if (!json_is_string(path_j))
        return hd_error_set(err, 0, "linux.cgroupsPath: not a string");
    const char *path = json_string_value(path_j);
    if (strchr(path, ':'))
        return unsupported(err, "linux.cgroupsPath",
                           "systemd \"slice:prefix:name\" paths are not supported yet; use a cgroupfs path");
    while (*path == '/')
        path++;
    const char *slash = strrchr(path, '/');
    if (*path == '\0' || slash == path || (slash && slash[1] == '\0'))
        return hd_error_set(err, 0, "linux.cgroupsPath: \"%s\": not a cgroup path (\"/parent/name\" or \"/name\")",
                            json_string_value(path_j));
    /* "/name": at the top of each hierarchy (the cgroup module's parent "/") */
    cfg->cgroup_parent = slash ? hd_xasprintf("%.*s", (int)(slash - path), path) : hd_xstrdup("/");
    cfg->cgroup_name = hd_xstrdup(slash ? slash + 1 : path);
    if (strstr(cfg->cgroup_parent, "..") || strcmp(cfg->cgroup_name, "..") == 0)
        return hd_error_set(err, 0, "linux.cgroupsPath: \"..\" is not allowed");
    return 0;
}

static bool sysctl_namespaced(const char *key, bool own_network, bool own_ipc)
{
    static const char *const ipc[] = {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                                      "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"};
    for (size_t i = 0; i < ARRAY_SIZE(ipc); i++)
        if (strcmp(key, ipc[i]) == 0)
            return own_ipc;
    if (strncmp(key, "fs.mqueue.", 10) == 0)
        return own_ipc;
    return own_network && strncmp(key, "net.", 4) == 0;
}

static int parse_seccomp(json_t *sc, struct oci_config *cfg, hd_error_t *err)
{
    if (!is_set(sc))
        return 0;
    if (refuse_if_set(sc, "flags", "linux.seccomp.", err) < 0 || oci_listener_parse(sc, cfg, err) < 0)
        return -1;
    size_t i;
    json_t *arch;
    json_array_foreach(json_object_get(sc, "architectures"), i, arch)
    {
        const char *a = json_is_string(arch) ? json_string_value(arch) : "";
        if (strcmp(a, "SCMP_ARCH_X86_64") != 0 && strcmp(a, "SCMP_ARCH_X86") != 0 && strcmp(a, "SCMP_ARCH_X32") != 0)
            return hd_error_set(err, 0,
                                "linux.seccomp.architectures[%zu]: \"%s\" is not supported yet "
                                "(the filter covers x86_64 and i386; x32 is refused)",
                                i, a);
    }
    cfg->seccomp_json = json_dumps(sc, JSON_COMPACT);
    return 0;
}

static int parse_linux(json_t *lx, struct oci_config *cfg, hd_error_t *err)
{
    if (!json_is_object(lx))
        return hd_error_set(err, 0, "linux: missing or not an object");
    static const char *const refused[] = {"intelRdt", "netDevices"};
    for (size_t i = 0; i < ARRAY_SIZE(refused); i++)
        if (refuse_if_set(lx, refused[i], "linux.", err) < 0)
            return -1;
    json_t *prop = json_object_get(lx, "rootfsPropagation");
    if (is_set(prop)) {
        if (!json_is_string(prop) || propagation_flags(json_string_value(prop)) == 0)
            return hd_error_set(err, 0,
                                "linux.rootfsPropagation: must be one of private, rprivate, shared, rshared, slave, "
                                "rslave, unbindable, runbindable");
        cfg->rootfs_propagation = propagation_flags(json_string_value(prop));
    }
    if (is_set(json_object_get(lx, "mountLabel")) && lsm_enabled("selinux"))
        return unsupported(err, "linux.mountLabel", "SELinux labels are not supported yet");
    if (oci_namespaces_parse(json_object_get(lx, "namespaces"), cfg, err) < 0 ||
        oci_userns_parse(lx, cfg->new_userns, cfg, err) < 0 ||
        parse_resources(json_object_get(lx, "resources"), cfg, err) < 0 ||
        parse_cgroups_path(json_object_get(lx, "cgroupsPath"), cfg, err) < 0 ||
        parse_seccomp(json_object_get(lx, "seccomp"), cfg, err) < 0 ||
        get_strv(json_object_get(lx, "maskedPaths"), "linux.maskedPaths", &cfg->masked_paths, err) < 0 ||
        get_strv(json_object_get(lx, "readonlyPaths"), "linux.readonlyPaths", &cfg->readonly_paths, err) < 0)
        return -1;
    json_t *sysctl = json_object_get(lx, "sysctl");
    if (is_set(sysctl)) {
        if (!json_is_object(sysctl))
            return hd_error_set(err, 0, "linux.sysctl: not an object");
        cfg->sysctls = hd_xcalloc(json_object_size(sysctl), sizeof(*cfg->sysctls));
        const char *key;
        json_t *value;
        json_object_foreach(sysctl, key, value)
        {
            if (!json_is_string(value))
                return hd_error_set(err, 0, "linux.sysctl.%s: not a string", key);
            if (!sysctl_namespaced(key, cfg->spec->network != HD_NET_HOST, !cfg->ns_inherited[HD_JOIN_IPC]) ||
                strstr(key, ".."))
                return hd_error_set(err, 0, "linux.sysctl.%s: not a sysctl of the container's own namespaces", key);
            cfg->sysctls[cfg->n_sysctls].key = hd_xstrdup(key);
            cfg->sysctls[cfg->n_sysctls++].value = hd_xstrdup(json_string_value(value));
        }
    }
    return 0;
}

/*
 * No mount namespace of the container's own (linux.namespaces has no mount entry): the process shares the host's
 * and only chroots into root.path (runc does the same). runc makes the config's mounts there all the same, on
 * the host's mount table (and leaves them behind after delete); hedge-oci mounts nothing there: the kernel
 * filesystems of the config (proc, sysfs, tmpfs, devpts, mqueue, cgroup) are left out (create warns:
 * cfg->n_mounts_skipped), and what cannot be left out without changing what the process reads or writes is
 * refused, naming the field: bind mounts (parse_mount's caller), linux.maskedPaths and readonlyPaths (runc
 * refuses them too), root.readonly (runc ignores it), linux.rootfsPropagation and process.terminal (the
 * console is the container's /dev/console and its pty comes from its /dev/pts).
 */
static int check_host_mount_ns(json_t *root, struct oci_config *cfg, hd_error_t *err)
{
    static const char *const because = "needs a mount namespace of the container's own (linux.namespaces has no "
                                       "mount entry: the host's is shared, and hedge-oci mounts nothing there)";
    if (is_set(json_object_get(json_object_get(root, "linux"), "maskedPaths")))
        return hd_error_set(err, 0, "linux.maskedPaths: %s", because);
    if (is_set(json_object_get(json_object_get(root, "linux"), "readonlyPaths")))
        return hd_error_set(err, 0, "linux.readonlyPaths: %s", because);
    if (cfg->spec->readonly_rootfs)
        return hd_error_set(err, 0, "root.readonly: %s", because);
    if (cfg->rootfs_propagation)
        return hd_error_set(err, 0, "linux.rootfsPropagation: %s", because);
    if (cfg->terminal)
        return hd_error_set(err, 0, "process.terminal: %s", because);
    cfg->n_mounts_skipped = json_array_size(json_object_get(root, "mounts"));
    for (int i = 0; i < cfg->n_mounts; i++) {
        free(cfg->mounts[i].type);
        free(cfg->mounts[i].source);
        free(cfg->mounts[i].target);
        free(cfg->mounts[i].data);
    }
    cfg->n_mounts = 0;
    return 0;
}

int oci_config_load(const char *bundle, const char *id, struct oci_config **out, hd_error_t *err)
{
    char resolved[PATH_MAX];
    if (realpath(bundle, resolved) == NULL)
        return hd_error_sys(err, "bundle %s", bundle);
    cleanup_free char *path = hd_xasprintf("%s/config.json", resolved);
    cleanup_free char *text = NULL;
    size_t len = 0;
    if (hd_read_file(path, &text, &len, err) < 0)
        return -1;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        return hd_error_set(err, 0, "%s: line %d: %s", path, jerr.line, root ? "not an object" : jerr.text);
    }
    struct oci_config *cfg = hd_xcalloc(1, sizeof(*cfg));
    cfg->spec = hd_spec_new();
    cfg->spec->isolation = HD_ISOLATION_CONTAINER;
    cfg->spec->isolation_set = true;
    cfg->spec->security.seccomp = hd_xstrdup("unconfined");
    cfg->bundle = hd_xstrdup(resolved);
    cfg->umask = -1;
    cfg->console_fd = -1;
    cfg->listener_fd = -1;
    cfg->time_ns_fd = -1;
    for (size_t t = 0; t < HD_JOIN_NS_COUNT; t++)
        cfg->ns_fds[t] = -1;
    int rc = -1;
    json_t *ver = json_object_get(root, "ociVersion");
    if (!json_is_string(ver) || strncmp(json_string_value(ver), "1.", 2) != 0) {
        hd_error_set(err, 0, "ociVersion: \"%s\" is not a 1.x version",
                     json_is_string(ver) ? json_string_value(ver) : "");
        goto out;
    }
    json_t *rootobj = json_object_get(root, "root");
    json_t *rootpath = json_object_get(rootobj, "path");
    if (!json_is_string(rootpath) || json_string_length(rootpath) == 0) {
        hd_error_set(err, 0, "root.path: missing");
        goto out;
    }
    const char *rp = json_string_value(rootpath);
    cfg->rootfs = rp[0] == '/' ? hd_xstrdup(rp) : hd_xasprintf("%s/%s", resolved, rp);
    struct stat st;
    if (stat(cfg->rootfs, &st) < 0 || !S_ISDIR(st.st_mode)) {
        hd_error_set(err, errno, "root.path: %s is not a directory", cfg->rootfs);
        goto out;
    }
    cfg->spec->rootfs = hd_xstrdup(cfg->rootfs);
    cfg->spec->readonly_rootfs = json_is_true(json_object_get(rootobj, "readonly"));
    json_t *hostname = json_object_get(root, "hostname");
    if (is_set(hostname))
        cfg->spec->hostname = hd_xstrdup(json_string_value(hostname));
    else if (strlen(id) <= 63 &&
             strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") == strlen(id))
        cfg->spec->hostname = hd_xstrdup(id); /* else the runtime's run id */
    if (refuse_if_set(root, "vm", "", err) < 0 || refuse_if_set(root, "windows", "", err) < 0 ||
        refuse_if_set(root, "solaris", "", err) < 0 || refuse_if_set(root, "zos", "", err) < 0 ||
        oci_hooks_parse(json_object_get(root, "hooks"), &cfg->hooks, err) < 0)
        goto out;
    if (parse_process(json_object_get(root, "process"), cfg, err) < 0 ||
        parse_linux(json_object_get(root, "linux"), cfg, err) < 0 || oci_extras_parse(root, cfg, err) < 0)
        goto out;
    if (cfg->ns_inherited[HD_JOIN_UTS] && is_set(hostname)) {
        hd_error_set(err, 0,
                     "hostname: needs a uts namespace of the container's own (linux.namespaces has no uts "
                     "entry: the host's is shared)");
        goto out;
    }
    if (cfg->ns_paths[HD_JOIN_UTS] && !is_set(hostname)) {
        free(cfg->spec->hostname); /* a joined uts namespace keeps its name (oci_namespaces_open reads it) */
        cfg->spec->hostname = NULL;
    }
    finish_device_rules(cfg);
    json_t *mounts = json_object_get(root, "mounts");
    size_t i;
    json_t *m;
    json_array_foreach(mounts, i, m)
    {
        int binds = cfg->spec->n_mounts;
        if (parse_mount(m, i, cfg, err) < 0)
            goto out;
        if (cfg->host_mount_ns && cfg->spec->n_mounts > binds) {
            hd_error_set(err, 0,
                         "mounts[%zu]: a bind mount needs a mount namespace of the container's own (linux.namespaces "
                         "has no mount entry: the host's is shared, and hedge-oci mounts nothing there)",
                         i);
            goto out;
        }
    }
    if (cfg->host_mount_ns && check_host_mount_ns(root, cfg, err) < 0)
        goto out;
    json_t *ann = json_object_get(root, "annotations");
    if (json_is_object(ann))
        cfg->annotations_json = json_dumps(ann, JSON_COMPACT);
    if (hd_spec_validate(cfg->spec, err) < 0) {
        hd_error_prefix(err, "config.json (as a hedge spec)");
        goto out;
    }
    cfg->document = json_incref(root);
    *out = get_and_reset(&cfg);
    rc = 0;
out:
    oci_config_free(cfg);
    json_decref(root);
    return rc;
}

/* ---- inside the container: the container_setup hook ---- */

static int mkdir_p_inside(const char *path, hd_error_t *err)
{
    return hd_mkdir_p(path, 0755, err);
}

/*
 * One cgroup hierarchy (fstype "cgroup" with mount(8)'s options, "cpu,cpuacct" or "none,name=systemd", or
 * "cgroup2" with opts NULL) on dir, the way mount(2) would put it there, or, with path (the process's cgroup,
 * /proc/self/cgroup's third field) other than "/", only that directory of it, as runc binds it: a container in
 * the host's cgroup namespace (its config has no cgroup entry) sees its own cgroup there, not the host's tree.
 * A path "/.." (a cgroup outside the namespace's root: a joined namespace) mounts the namespace's root.
 */
static int mount_cgroup_hierarchy(const char *fstype, const char *opts, const char *path, const char *dir,
                                  unsigned long flags, hd_error_t *err)
{
    if (strcmp(path, "/") == 0 || strncmp(path, "/..", 3) == 0) {
        if (mount(fstype, dir, fstype, flags, opts) < 0)
            return hd_error_sys(err, "mount %s %s on %s", fstype, opts ? opts : "", dir);
        return 0;
    }
    cleanup_close int fs = fsopen(fstype, FSOPEN_CLOEXEC);
    if (fs < 0)
        return hd_error_sys(err, "mount %s on %s", fstype, dir);
    cleanup_free char *copy = opts ? hd_xstrdup(opts) : NULL;
    char *save = NULL;
    for (char *o = copy ? strtok_r(copy, ",", &save) : NULL; o; o = strtok_r(NULL, ",", &save)) {
        char *value = strchr(o, '=');
        if (value)
            *value++ = '\0';
        if (fsconfig(fs, value ? FSCONFIG_SET_STRING : FSCONFIG_SET_FLAG, o, value, 0) < 0)
            return hd_error_sys(err, "mount %s %s on %s: option %s", fstype, opts, dir, o);
    }
    if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        return hd_error_sys(err, "mount %s %s on %s", fstype, opts ? opts : "", dir);
    unsigned attrs =
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC | ((flags & MS_RDONLY) ? MOUNT_ATTR_RDONLY : 0);
    cleanup_close int whole = fsmount(fs, FSMOUNT_CLOEXEC, attrs);
    if (whole < 0)
        return hd_error_sys(err, "mount %s %s on %s", fstype, opts ? opts : "", dir);
    cleanup_close int sub = open_tree(whole, path + 1, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (sub < 0)
        return hd_error_sys(err, "mount %s %s on %s: its directory %s", fstype, opts ? opts : "", dir, path);
    if (move_mount(sub, "", AT_FDCWD, dir, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        return hd_error_sys(err, "mount %s %s on %s", fstype, opts ? opts : "", dir);
    return 0;
}

/* The container's cgroup hierarchies, as /proc/self/cgroup lists them, under target. */
static int mount_cgroups(const struct oci_mount *m, hd_error_t *err)
{
    cleanup_free char *text = NULL;
    if (hd_read_file("/proc/self/cgroup", &text, NULL, err) < 0)
        return -1;
    unsigned long base = MS_NOSUID | MS_NODEV | MS_NOEXEC | (m->flags & MS_RDONLY);
    bool only_v2 = strncmp(text, "0::", 3) == 0 && strchr(text, '\n') == text + strlen(text) - 1;
    if (mkdir_p_inside(m->target, err) < 0)
        return -1;
    if (only_v2) {
        text[strlen(text) - 1] = '\0'; /* "0::PATH\n" */
        return mount_cgroup_hierarchy("cgroup2", NULL, text + 3, m->target, base, err);
    }
    if (mount("tmpfs", m->target, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755") < 0)
        return hd_error_sys(err, "mount tmpfs on %s", m->target);
    for (char *line = text; line && *line;) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        /* "ID:CONTROLLERS:PATH" */
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (c2) {
            *c2 = '\0';
            const char *path = c2 + 1;
            const char *ctrls = c1 + 1;
            const char *name = *ctrls == '\0' ? "unified" : strncmp(ctrls, "name=", 5) == 0 ? ctrls + 5 : ctrls;
            cleanup_free char *dir = hd_xasprintf("%s/%s", m->target, name);
            if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                return hd_error_sys(err, "mkdir %s", dir);
            cleanup_free char *opts =
                strncmp(ctrls, "name=", 5) == 0 ? hd_xasprintf("none,%s", ctrls) : hd_xstrdup(ctrls);
            if (mount_cgroup_hierarchy(*ctrls == '\0' ? "cgroup2" : "cgroup", *ctrls == '\0' ? NULL : opts, path, dir,
                                       base, err) < 0)
                return -1;
            /* runc's links: cpu and cpuacct for "cpu,cpuacct" */
            if (strchr(name, ',')) {
                cleanup_free char *copy = hd_xstrdup(name);
                char *save = NULL;
                for (char *part = strtok_r(copy, ",", &save); part; part = strtok_r(NULL, ",", &save)) {
                    cleanup_free char *link = hd_xasprintf("%s/%s", m->target, part);
                    if (symlink(name, link) < 0 && errno != EEXIST)
                        return hd_error_sys(err, "symlink %s", link);
                }
            }
        }
        line = next;
    }
    if ((m->flags & MS_RDONLY) &&
        mount(NULL, m->target, NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755") < 0)
        return hd_error_sys(err, "remount %s read-only", m->target);
    return 0;
}

static int setup_mount(const struct oci_mount *m, int index, hd_error_t *err)
{
    switch (m->kind) {
    case OCI_MOUNT_ATTR: {
        struct mount_attr a = {.attr_set = m->attr};
        if (m->attr & MOUNT_ATTR__ATIME)
            a.attr_clr = MOUNT_ATTR__ATIME; /* the kernel changes the atime mode only as a whole */
        if (m->attr && syscall(SYS_mount_setattr, AT_FDCWD, m->target, AT_RECURSIVE, &a, sizeof(a)) < 0)
            return hd_error_sys(err, "mounts: set nosuid/nodev/noexec on %s", m->target);
        break;
    }
    case OCI_MOUNT_CGROUP: return mount_cgroups(m, err);
    case OCI_MOUNT_FS:
        if (mkdir_p_inside(m->target, err) < 0)
            return -1;
        if (mount(m->source, m->target, m->type, m->flags, m->data) < 0)
            return hd_error_sys(err, "mounts: mount %s on %s", m->type, m->target);
        break;
    }
    if (m->propagation && mount(NULL, m->target, NULL, m->propagation, NULL) < 0)
        return hd_error_sys(err, "mounts[%d]: propagation of %s", index, m->target);
    return 0;
}

static int mask_path(const char *path, hd_error_t *err)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return 0; /* as runc: a path that does not exist needs no mask */
    if (S_ISDIR(st.st_mode)) {
        if (mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0") < 0)
            return hd_error_sys(err, "linux.maskedPaths: %s", path);
    } else if (mount("/dev/null", path, NULL, MS_BIND, NULL) < 0) {
        return hd_error_sys(err, "linux.maskedPaths: %s", path);
    }
    return 0;
}

static int readonly_path(const char *path, hd_error_t *err)
{
    if (access(path, F_OK) < 0)
        return 0;
    if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0)
        return hd_error_sys(err, "linux.readonlyPaths: %s", path);
    struct mount_attr ro = {.attr_set = MOUNT_ATTR_RDONLY};
    if (syscall(SYS_mount_setattr, AT_FDCWD, path, AT_RECURSIVE, &ro, sizeof(ro)) < 0)
        return hd_error_sys(err, "linux.readonlyPaths: %s", path);
    return 0;
}

/* Write the sysctls through a private, detached proc (the container's /proc/sys is read-only). */
static int write_sysctls(const struct oci_config *cfg, hd_error_t *err)
{
    if (cfg->n_sysctls == 0)
        return 0;
    cleanup_close int fs = (int)syscall(SYS_fsopen, "proc", FSOPEN_CLOEXEC);
    if (fs < 0 || syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        return hd_error_sys(err, "linux.sysctl: mount a private proc");
    cleanup_close int proc = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, 0);
    if (proc < 0)
        return hd_error_sys(err, "linux.sysctl: mount a private proc");
    for (int i = 0; i < cfg->n_sysctls; i++) {
        cleanup_free char *rel = hd_xasprintf("sys/%s", cfg->sysctls[i].key);
        for (char *p = rel + 4; *p; p++)
            if (*p == '.')
                *p = '/';
        if (hd_write_file_at(proc, rel, cfg->sysctls[i].value, strlen(cfg->sysctls[i].value), err) < 0)
            return hd_error_prefix(err, "linux.sysctl.%s", cfg->sysctls[i].key);
    }
    return 0;
}

static int setup_inside(const struct oci_config *cfg, hd_error_t *err);

int oci_container_setup(const struct hd_workload *w, void *data, enum hd_setup_phase phase, hd_error_t *err)
{
    const struct oci_config *cfg = data;
    switch (phase) {
    case HD_SETUP_CGROUPS:
        return 0; /* the device list is on the workload's cgroup, entered with it (cgroup/devices.h) */
    case HD_SETUP_BEFORE_PIVOT:
        return oci_hooks_run(&cfg->hooks, OCI_HOOK_CREATE_CONTAINER, oci_hook_state(w, "creating"), err);
    case HD_SETUP_BEFORE_EXEC:
        if (oci_hooks_run(&cfg->hooks, OCI_HOOK_START_CONTAINER, oci_hook_state(w, "created"), err) < 0)
            return -1;
        return oci_pass_fds_before_exec(cfg, err);
    case HD_SETUP_INSIDE: break;
    }
    if (setup_inside(cfg, err) < 0)
        return -1;
    if (cfg->terminal) {
        struct oci_console console = {.socket_fd = cfg->console_fd,
                                      .rows = cfg->console_rows,
                                      .cols = cfg->console_cols,
                                      .uid = cfg->uid,
                                      .gid = cfg->gid,
                                      .bind_dev_console = true};
        return oci_console_make(&console, err);
    }
    return 0;
}

/* Put a bind taken off by take_off_late_binds back on its target (made again if a mount before it hid it),
 * as a fresh clone. */
static int put_back_bind(int tree, const struct oci_mount *m, hd_error_t *err)
{
    struct stat st;
    if (fstat(tree, &st) < 0)
        return hd_error_sys(err, "mounts: %s", m->target);
    if (S_ISDIR(st.st_mode)) {
        if (mkdir_p_inside(m->target, err) < 0)
            return -1;
    } else {
        cleanup_free char *parent = hd_xstrdup(m->target);
        char *slash = strrchr(parent, '/');
        if (slash && slash != parent)
            *slash = '\0';
        if (slash && slash != parent && mkdir_p_inside(parent, err) < 0)
            return -1;
        int fd = open(m->target, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
            return hd_error_sys(err, "mounts: create %s", m->target);
        close(fd);
    }
    if (move_mount(tree, "", AT_FDCWD, m->target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        return hd_error_sys(err, "mounts: bind on %s", m->target);
    /* mountinfo lists mounts by their id, given when a mount is made: clone it again here, in its turn */
    cleanup_close int again = open_tree(AT_FDCWD, m->target, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (again < 0 || umount2(m->target, MNT_DETACH) < 0 ||
        move_mount(again, "", AT_FDCWD, m->target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        return hd_error_sys(err, "mounts: bind again on %s", m->target);
    return 0;
}

/*
 * The runtime attaches the config's binds (rootfs.c) before this hook makes the other mounts. A bind
 * that follows a new filesystem (tmpfs, mqueue, cgroup) in the config is therefore taken off first:
 * a detached clone of it is kept in trees[i] and the bind unmounted, the last one first (a bind
 * below another goes before it). setup_inside puts each back in its turn, so the mounts are made in
 * the config's order: mountinfo lists them so, and a tmpfs that comes before a bind below it does
 * not hide it.
 */
static int take_off_late_binds(const struct oci_config *cfg, int *trees, hd_error_t *err)
{
    int first_fs = cfg->n_mounts;
    for (int i = 0; i < cfg->n_mounts && first_fs == cfg->n_mounts; i++)
        if (cfg->mounts[i].kind != OCI_MOUNT_ATTR)
            first_fs = i;
    for (int i = cfg->n_mounts - 1; i > first_fs; i--) {
        const struct oci_mount *m = &cfg->mounts[i];
        if (m->kind != OCI_MOUNT_ATTR)
            continue;
        trees[i] = open_tree(AT_FDCWD, m->target, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
        if (trees[i] < 0)
            return hd_error_sys(err, "mounts: clone the bind on %s", m->target);
        if (umount2(m->target, MNT_DETACH) < 0)
            return hd_error_sys(err, "mounts: take off the bind on %s", m->target);
    }
    return 0;
}

/* HD_SETUP_INSIDE: the config's mounts, umask, masked and read-only paths, sysctls. */
static int setup_inside(const struct oci_config *cfg, hd_error_t *err)
{
    int *trees = hd_xcalloc((size_t)cfg->n_mounts + 1, sizeof(int));
    for (int i = 0; i < cfg->n_mounts; i++)
        trees[i] = -1;
    int rc = take_off_late_binds(cfg, trees, err);
    for (int i = 0; i < cfg->n_mounts && rc == 0; i++) {
        if (trees[i] >= 0 && put_back_bind(trees[i], &cfg->mounts[i], err) < 0)
            rc = -1;
        else if (setup_mount(&cfg->mounts[i], i, err) < 0)
            rc = -1;
    }
    for (int i = 0; i < cfg->n_mounts; i++)
        if (trees[i] >= 0)
            close(trees[i]);
    free(trees);
    if (rc < 0)
        return -1;
    if (cfg->umask >= 0)
        umask((mode_t)cfg->umask); /* the runtime set 0022 just before; this one reaches the exec */
    for (size_t i = 0; cfg->masked_paths && cfg->masked_paths[i]; i++)
        if (mask_path(cfg->masked_paths[i], err) < 0)
            return -1;
    for (size_t i = 0; cfg->readonly_paths && cfg->readonly_paths[i]; i++)
        if (readonly_path(cfg->readonly_paths[i], err) < 0)
            return -1;
    if (write_sysctls(cfg, err) < 0)
        return -1;
    if (cfg->rootfs_propagation && mount(NULL, "/", NULL, cfg->rootfs_propagation, NULL) < 0)
        return hd_error_sys(err, "linux.rootfsPropagation");
    return oci_extras_setup_inside(cfg, err);
}
