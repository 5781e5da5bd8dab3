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
 */
#include "oci/oci.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
