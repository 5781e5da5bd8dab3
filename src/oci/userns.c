/*
 * userns.c - a new user namespace for the container: linux.uidMappings and
 * linux.gidMappings checked and turned into the text the runtime writes to
 * /proc/PID/uid_map and gid_map (the workload's uid_map/gid_map, backend.h).
 *
 * Every check the kernel would make when the maps are written is made here
 * first, so that a bad mapping is an error naming its field before anything
 * exists (no state dir, no cgroup, no process): a user namespace needs both
 * lists, mappings need a user namespace, every range has at least one id and
 * stays within 32 bits, no two ranges overlap (inside or on the host), at
 * most 340 of them (the kernel's limit), and the process's uid and gid are
 * mapped. What the runtime does with them (the clone with CLONE_NEWUSER, the
 * maps written by the parent before the child goes on) is in
 * src/runtime/container/container.c.
 *
 * A joined user namespace (linux.namespaces "user" with a path) has maps of
 * its own: oci_userns_check_joined reads them at create (a child joins it)
 * and checks that root and process.user are mapped there; maps the config
 * gives as well are compared with them and otherwise ignored (runc 1.1).
 */
#include "oci/oci.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "base/json.h"
#include "base/util.h"

enum { ID_MAP_MAX = 340 }; /* the kernel's limit per map (since Linux 4.15) */

struct id_range {
    uint32_t inside, outside, count;
};

/* Ranges [a, a+n) and [b, b+m) share an id. */
static bool ranges_overlap(uint64_t a, uint64_t n, uint64_t b, uint64_t m)
{
    return a < b + m && b < a + n;
}

/* The host id inside id maps to, or -1 when no range holds it. */
static int64_t map_id(const struct id_range *ranges, size_t n, uint32_t inside)
{
    for (size_t i = 0; i < n; i++)
        if (inside >= ranges[i].inside && (uint64_t)inside < (uint64_t)ranges[i].inside + ranges[i].count)
            return (int64_t)ranges[i].outside + (inside - ranges[i].inside);
    return -1;
}

/* One of linux.uidMappings / gidMappings: checked, as ranges and as the map's text. */
static int parse_id_map(json_t *arr, const char *field, struct id_range **out, size_t *n_out, char **text,
                        hd_error_t *err)
{
    if (arr == NULL || json_is_null(arr) || (json_is_array(arr) && json_array_size(arr) == 0))
        return hd_error_set(err, 0, "linux.%s: a new user namespace needs them (none given)", field);
    if (!json_is_array(arr))
        return hd_error_set(err, 0, "linux.%s: not an array", field);
    size_t n = json_array_size(arr);
    if (n > ID_MAP_MAX)
        return hd_error_set(err, 0, "linux.%s: %zu ranges, the kernel takes at most %d", field, n, ID_MAP_MAX);
    struct id_range *ranges = hd_xcalloc(n, sizeof(*ranges));
    size_t len = 0;
    char *buf = NULL;
    size_t i;
    json_t *m;
    json_array_foreach(arr, i, m)
    {
        char path[64];
        if (!json_is_object(m)) {
            hd_error_set(err, 0, "linux.%s[%zu]: not an object", field, i);
            goto fail;
        }
        static const char *const keys[] = {"containerID", "hostID", "size"};
        int64_t v[3];
        for (size_t k = 0; k < 3; k++) {
            snprintf(path, sizeof(path), "linux.%s[%zu].%s", field, i, keys[k]);
            if (hd_json_int(json_object_get(m, keys[k]), path, k == 2 ? 1 : 0, UINT32_MAX,
                            k == 2 ? "a number of ids from 1 to 4294967295" : "an id from 0 to 4294967295", &v[k],
                            err) < 0)
                goto fail;
        }
        if (v[0] + v[2] > (int64_t)UINT32_MAX + 1 || v[1] + v[2] > (int64_t)UINT32_MAX + 1) {
            hd_error_set(err, 0, "linux.%s[%zu].size: the range goes past the last id (4294967295)", field, i);
            goto fail;
        }
        ranges[i] = (struct id_range){(uint32_t)v[0], (uint32_t)v[1], (uint32_t)v[2]};
        for (size_t j = 0; j < i; j++) {
            const char *side = ranges_overlap(ranges[j].inside, ranges[j].count, ranges[i].inside, ranges[i].count)
                ? "containerID"
                : ranges_overlap(ranges[j].outside, ranges[j].count, ranges[i].outside, ranges[i].count) ? "hostID"
                                                                                                         : NULL;
            if (side) {
                hd_error_set(err, 0, "linux.%s[%zu]: its %s range overlaps that of linux.%s[%zu]", field, i, side,
                             field, j);
                goto fail;
            }
        }
        char line[48];
        int w = snprintf(line, sizeof(line), "%u %u %u\n", ranges[i].inside, ranges[i].outside, ranges[i].count);
        buf = hd_xrealloc(buf, len + (size_t)w + 1);
        memcpy(buf + len, line, (size_t)w + 1);
        len += (size_t)w;
    }
    *out = ranges;
    *n_out = n;
    *text = buf;
    return 0;
fail:
    free(ranges);
    free(buf);
    return -1;
}

int oci_userns_parse(json_t *lx, bool new_userns, struct oci_config *cfg, hd_error_t *err)
{
    json_t *uids = json_object_get(lx, "uidMappings"), *gids = json_object_get(lx, "gidMappings");
    if (cfg->ns_paths[HD_JOIN_USER]) {
        /* the runtime's user namespace set-up (rootfs.c: /dev nodes bound, sysfs made under the old root); the
         * namespace's maps are read at create (oci_userns_check_joined). containerd, CRI-O and podman pass the
         * namespace's maps too: kept (checked, as text) to be compared with them there, as runc does. */
        cfg->spec->userns = (struct hd_user_namespace){.enabled = true, .size = 65536};
        if (json_array_size(uids) == 0 && json_array_size(gids) == 0)
            return 0;
        cleanup_free struct id_range *u = NULL, *g = NULL;
        size_t nu = 0, ng = 0;
        if (parse_id_map(uids, "uidMappings", &u, &nu, &cfg->uid_map, err) < 0 ||
            parse_id_map(gids, "gidMappings", &g, &ng, &cfg->gid_map, err) < 0)
            return -1;
        return 0;
    }
    if (!new_userns) {
        static const char *const fields[] = {"uidMappings", "gidMappings"};
        for (size_t k = 0; k < 2; k++)
            if (json_array_size(json_object_get(lx, fields[k])) > 0)
                return hd_error_set(err, 0,
                                    "linux.%s: mappings need a new user namespace (linux.namespaces has no "
                                    "\"user\" entry)",
                                    fields[k]);
        return 0;
    }
    cleanup_free struct id_range *uid_ranges = NULL, *gid_ranges = NULL;
    size_t n_uid = 0, n_gid = 0;
    if (parse_id_map(uids, "uidMappings", &uid_ranges, &n_uid, &cfg->uid_map, err) < 0 ||
        parse_id_map(gids, "gidMappings", &gid_ranges, &n_gid, &cfg->gid_map, err) < 0)
        return -1;
    /* the process switches to its uid and gid inside: they must have a host id */
    if (map_id(uid_ranges, n_uid, cfg->uid) < 0)
        return hd_error_set(err, 0, "process.user.uid: %u is not mapped by linux.uidMappings", (unsigned)cfg->uid);
    if (map_id(gid_ranges, n_gid, cfg->gid) < 0)
        return hd_error_set(err, 0, "process.user.gid: %u is not mapped by linux.gidMappings", (unsigned)cfg->gid);
    for (size_t i = 0; i < cfg->n_groups; i++)
        if (map_id(gid_ranges, n_gid, cfg->groups[i]) < 0)
            return hd_error_set(err, 0, "process.user.additionalGids[%zu]: %u is not mapped by linux.gidMappings", i,
                                (unsigned)cfg->groups[i]);
    /* hedge's own description of the namespace (the maps themselves are the text above): root's host ids */
    int64_t root_uid = map_id(uid_ranges, n_uid, 0), root_gid = map_id(gid_ranges, n_gid, 0);
    cfg->spec->userns = (struct hd_user_namespace){
        .enabled = true,
        .uid_base = root_uid >= 0 ? (uint32_t)root_uid : uid_ranges[0].outside,
        .gid_base = root_gid >= 0 ? (uint32_t)root_gid : gid_ranges[0].outside,
        .size = uid_ranges[0].count,
    };
    return 0;
}

/* The text of /proc/self/{uid,gid}_map in the user namespace fd: a child joins it and writes both to a pipe
 * (uid map, a NUL, gid map). */
static int read_joined_maps(int fd, char **uid_map, char **gid_map, hd_error_t *err)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return hd_error_sys(err, "pipe");
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return hd_error_sys(err, "fork");
    }
    if (pid == 0) { /* exits with the errno of what failed (the parent's error names it), 0 once both went */
        char *u = NULL, *g = NULL;
        hd_error_t e = NULL;
        if (setns(fd, CLONE_NEWUSER) < 0)
            _exit(errno ? errno : EIO);
        if (hd_read_file("/proc/self/uid_map", &u, NULL, &e) < 0 ||
            hd_read_file("/proc/self/gid_map", &g, NULL, &e) < 0)
            _exit(e->errnum ? e->errnum : EIO);
        _exit(write(p[1], u, strlen(u) + 1) < 0 || write(p[1], g, strlen(g)) < 0 ? (errno ? errno : EIO) : 0);
    }
    close(p[1]);
    char *buf = NULL;
    size_t len = 0;
    char chunk[4096];
    ssize_t n;
    while ((n = read(p[0], chunk, sizeof(chunk))) > 0 || (n < 0 && errno == EINTR)) {
        if (n <= 0)
            continue;
        buf = hd_xrealloc(buf, len + (size_t)n + 1);
        memcpy(buf + len, chunk, (size_t)n);
        len += (size_t)n;
        buf[len] = '\0';
    }
    close(p[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || buf == NULL || strlen(buf) == len) {
        free(buf);
        if (!WIFEXITED(status))
            return hd_error_set(err, 0, "join it to read its id maps: the child ended by signal %d",
                                WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        if (WEXITSTATUS(status) != 0)
            return hd_error_set(err, WEXITSTATUS(status), "join it to read its id maps");
        return hd_error_set(err, 0, "join it to read its id maps: they did not come back whole");
    }
    *uid_map = buf;
    *gid_map = hd_xstrdup(buf + strlen(buf) + 1);
    return 0;
}

/* The host id inside maps to in the map's text ("inside outside count" lines), or -1. */
static int64_t map_text_id(const char *text, uint32_t inside, uint32_t *count)
{
    for (const char *line = text; line && *line;) {
        unsigned long long in, out, n;
        if (sscanf(line, "%llu %llu %llu", &in, &out, &n) == 3 && inside >= in && inside < in + n) {
            if (count)
                *count = (uint32_t)n;
            return (int64_t)(out + (inside - in));
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return -1;
}

/* Whether two maps' texts hold the same ranges (in any order, spaced any way). */
static bool same_ranges(const char *a, const char *b)
{
    size_t na = 0, nb = 0;
    for (const char *line = a; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        unsigned long long in, out, n;
        if (sscanf(line, "%llu %llu %llu", &in, &out, &n) != 3)
            continue;
        na++;
        bool found = false;
        for (const char *l2 = b; l2 && *l2 && !found; l2 = strchr(l2, '\n') ? strchr(l2, '\n') + 1 : NULL) {
            unsigned long long in2, out2, n2;
            found = sscanf(l2, "%llu %llu %llu", &in2, &out2, &n2) == 3 && in == in2 && out == out2 && n == n2;
        }
        if (!found)
            return false;
    }
    for (const char *line = b; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        unsigned long long in, out, n;
        nb += sscanf(line, "%llu %llu %llu", &in, &out, &n) == 3;
    }
    return na == nb;
}

int oci_userns_check_joined(struct oci_config *cfg, int fd, hd_error_t *err)
{
    size_t i = cfg->ns_index[HD_JOIN_USER];
    cleanup_free char *uids = NULL, *gids = NULL;
    if (read_joined_maps(fd, &uids, &gids, err) < 0)
        return hd_error_prefix(err, "linux.namespaces[%zu].path: %s", i, cfg->ns_paths[HD_JOIN_USER]);
    /* maps given with the path are the namespace's (runc's warning), or are ignored, as runc 1.1 ignores them
     * (podman 4 passes "0 0 1" with --userns=ns:PATH; runc 1.2 refuses maps that differ) */
    if (cfg->uid_map && same_ranges(cfg->uid_map, uids) && same_ranges(cfg->gid_map, gids))
        oci_log("warning",
                "config.json has both a userns path to join and a matching userns mapping specified -- "
                "you may only provide one");
    else if (cfg->uid_map)
        oci_log("warning",
                "linux.uidMappings/gidMappings: ignored: not the maps of the joined user namespace %s, which has its "
                "own",
                cfg->ns_paths[HD_JOIN_USER]);
    /* the container's process sets itself up as root inside, then switches to process.user */
    uint32_t size = 0;
    int64_t root_uid = map_text_id(uids, 0, &size), root_gid = map_text_id(gids, 0, NULL);
    if (root_uid < 0 || root_gid < 0)
        return hd_error_set(err, 0, "linux.namespaces[%zu].path: %s maps no %s 0 (root inside sets the container up)",
                            i, cfg->ns_paths[HD_JOIN_USER], root_uid < 0 ? "uid" : "gid");
    if (map_text_id(uids, cfg->uid, NULL) < 0)
        return hd_error_set(err, 0, "process.user.uid: %u is not mapped by the joined user namespace %s",
                            (unsigned)cfg->uid, cfg->ns_paths[HD_JOIN_USER]);
    if (map_text_id(gids, cfg->gid, NULL) < 0)
        return hd_error_set(err, 0, "process.user.gid: %u is not mapped by the joined user namespace %s",
                            (unsigned)cfg->gid, cfg->ns_paths[HD_JOIN_USER]);
    for (size_t k = 0; k < cfg->n_groups; k++)
        if (map_text_id(gids, cfg->groups[k], NULL) < 0)
            return hd_error_set(err, 0,
                                "process.user.additionalGids[%zu]: %u is not mapped by the joined user "
                                "namespace %s",
                                k, (unsigned)cfg->groups[k], cfg->ns_paths[HD_JOIN_USER]);
    cfg->spec->userns.uid_base = (uint32_t)root_uid;
    cfg->spec->userns.gid_base = (uint32_t)root_gid;
    cfg->spec->userns.size = size;
    return 0;
}
