/*
 * resources.c - hedge-oci's linux.resources beyond memory, CPU quota/shares, pids and devices (those are in
 * config.c): the cpuset lists cpu.cpus/mems, the real-time period and runtime, blockIO and hugepageLimits,
 * parsed into struct hd_resources (src/spec/spec.h) for the cgroup backends (src/cgroup/, docs/cgroups.md).
 * Each bad value is an error naming the field and the reason; whether the host can apply a value (a CPU it
 * lacks, a device, a controller) is the backend's to say, when it writes the value.
 */
#include "oci/oci.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "base/json.h"
#include "base/util.h"
#include "cgroup/cgroup.h"

/* cpu.cpus / cpu.mems (the cpuset lists) and the real-time period and runtime. */
static int parse_cpu_extras(json_t *cpu, struct hd_resources *r, hd_error_t *err)
{
    static const struct {
        const char *key;
        size_t offset;
    } lists[] = {{"cpus", offsetof(struct hd_resources, cpuset_cpus)},
                 {"mems", offsetof(struct hd_resources, cpuset_mems)}};
    for (size_t i = 0; i < ARRAY_SIZE(lists); i++) {
        json_t *v = json_object_get(cpu, lists[i].key);
        if (!oci_json_is_set(v))
            continue;
        const char *text = json_string_value(v);
        if (text == NULL || strlen(text) >= HD_CPUSET_MAX || !hd_cgroup_cpuset_list_valid(text))
            return hd_error_set(err, 0, "linux.resources.cpu.%s: \"%s\" is not a list like \"0-3,5\"", lists[i].key,
                                text ? text : "(not a string)");
        snprintf((char *)r + lists[i].offset, HD_CPUSET_MAX, "%s", text);
    }
    int64_t value = 0;
    json_t *rt_period = json_object_get(cpu, "realtimePeriod"), *rt_runtime = json_object_get(cpu, "realtimeRuntime");
    if (oci_json_is_set(rt_period)) {
        if (hd_json_int(rt_period, "linux.resources.cpu.realtimePeriod", 1, 1000000000, NULL, &value, err) < 0)
            return -1;
        r->cpu_rt_period_us = value;
    }
    if (oci_json_is_set(rt_runtime)) {
        if (hd_json_int(rt_runtime, "linux.resources.cpu.realtimeRuntime", 0, 1000000000, NULL, &value, err) < 0)
            return -1;
        r->cpu_rt_runtime_us = value;
    }
    return 0;
}

/* dev.key, a device number in 0..max (required). */
static int parse_device_number(json_t *dev, const char *path, const char *key, int64_t max, int64_t *out,
                               hd_error_t *err)
{
    char field[128];
    snprintf(field, sizeof(field), "%s.%s", path, key);
    json_t *v = json_object_get(dev, key);
    if (v == NULL)
        return hd_error_set(err, 0, "%s: missing", field);
    return hd_json_int(v, field, 0, max, NULL, out, err);
}

/* One device entry of blockIO: major, minor and the value named key (weight, rate); leafWeight for weights. */
static int parse_block_device(json_t *dev, const char *path, const char *key, int64_t min, int64_t max,
                              struct hd_blkio_device *out, hd_error_t *err)
{
    if (!json_is_object(dev))
        return hd_error_set(err, 0, "%s: not an object", path);
    char field[128];
    if (parse_device_number(dev, path, "major", 0xfff, &out->major, err) < 0 ||
        parse_device_number(dev, path, "minor", 0xfffff, &out->minor, err) < 0)
        return -1;
    json_t *v = json_object_get(dev, key);
    snprintf(field, sizeof(field), "%s.%s", path, key);
    if (oci_json_is_set(v) && hd_json_int(v, field, min, max, NULL, &out->value, err) < 0)
        return -1;
    json_t *leaf = json_object_get(dev, "leafWeight");
    if (strcmp(key, "weight") == 0 && oci_json_is_set(leaf)) {
        snprintf(field, sizeof(field), "%s.leafWeight", path);
        if (hd_json_int(leaf, field, 10, 1000, NULL, &out->leaf_weight, err) < 0)
            return -1;
    }
    return 0;
}

/* A device list of blockIO into devs (at most HD_BLKIO_DEVICES_MAX). */
static int parse_block_devices(json_t *list, const char *key, const char *value_key, int64_t min, int64_t max,
                               struct hd_blkio_device *devs, int *n, hd_error_t *err)
{
    if (!oci_json_is_set(list))
        return 0;
    if (!json_is_array(list))
        return hd_error_set(err, 0, "linux.resources.blockIO.%s: not an array", key);
    if (json_array_size(list) > HD_BLKIO_DEVICES_MAX)
        return hd_error_set(err, 0, "linux.resources.blockIO.%s: more than %d devices", key, HD_BLKIO_DEVICES_MAX);
    size_t i;
    json_t *dev;
    json_array_foreach(list, i, dev)
    {
        char path[96];
        snprintf(path, sizeof(path), "linux.resources.blockIO.%s[%zu]", key, i);
        if (parse_block_device(dev, path, value_key, min, max, &devs[i], err) < 0)
            return -1;
    }
    *n = (int)json_array_size(list);
    return 0;
}

static int parse_block_io(json_t *bio, struct hd_blkio *out, hd_error_t *err)
{
    if (!oci_json_is_set(bio))
        return 0;
    if (!json_is_object(bio))
        return hd_error_set(err, 0, "linux.resources.blockIO: not an object");
    json_t *weight = json_object_get(bio, "weight"), *leaf = json_object_get(bio, "leafWeight");
    if (oci_json_is_set(weight) &&
        hd_json_int(weight, "linux.resources.blockIO.weight", 10, 1000, NULL, &out->weight, err) < 0)
        return -1;
    if (oci_json_is_set(leaf) &&
        hd_json_int(leaf, "linux.resources.blockIO.leafWeight", 10, 1000, NULL, &out->leaf_weight, err) < 0)
        return -1;
    if (parse_block_devices(json_object_get(bio, "weightDevice"), "weightDevice", "weight", 10, 1000,
                            out->weight_device, &out->n_weight_device, err) < 0)
        return -1;
    static const char *const throttle_key[HD_THROTTLE_N] = {
        [HD_THROTTLE_READ_BPS] = "throttleReadBpsDevice",
        [HD_THROTTLE_WRITE_BPS] = "throttleWriteBpsDevice",
        [HD_THROTTLE_READ_IOPS] = "throttleReadIOPSDevice",
        [HD_THROTTLE_WRITE_IOPS] = "throttleWriteIOPSDevice",
    };
    for (int t = 0; t < HD_THROTTLE_N; t++)
        if (parse_block_devices(json_object_get(bio, throttle_key[t]), throttle_key[t], "rate", 0, INT64_MAX,
                                out->throttle[t], &out->n_throttle[t], err) < 0)
            return -1;
    return 0;
}

static int parse_hugepage_limits(json_t *list, struct hd_resources *r, hd_error_t *err)
{
    if (!oci_json_is_set(list))
        return 0;
    if (!json_is_array(list))
        return hd_error_set(err, 0, "linux.resources.hugepageLimits: not an array");
    if (json_array_size(list) > HD_HUGEPAGE_SIZES_MAX)
        return hd_error_set(err, 0, "linux.resources.hugepageLimits: more than %d page sizes", HD_HUGEPAGE_SIZES_MAX);
    size_t i;
    json_t *entry;
    json_array_foreach(list, i, entry)
    {
        const char *size = json_string_value(json_object_get(entry, "pageSize"));
        if (size == NULL || strlen(size) >= sizeof(r->hugepage[i].size) || !hd_cgroup_hugepage_size_valid(size))
            return hd_error_set(err, 0,
                                "linux.resources.hugepageLimits[%zu].pageSize: \"%s\" is not a size like \"2MB\"", i,
                                size ? size : "(not a string)");
        char path[80];
        snprintf(path, sizeof(path), "linux.resources.hugepageLimits[%zu].limit", i);
        json_t *limit = json_object_get(entry, "limit");
        if (limit == NULL)
            return hd_error_set(err, 0, "%s: missing", path);
        if (hd_json_int(limit, path, 0, INT64_MAX, NULL, &r->hugepage[i].limit, err) < 0)
            return -1;
        snprintf(r->hugepage[i].size, sizeof(r->hugepage[i].size), "%s", size);
    }
    r->n_hugepage = (int)json_array_size(list);
    return 0;
}

int oci_resources_parse_cpuset_io(json_t *res, struct hd_resources *r, hd_error_t *err)
{
    json_t *cpu = json_object_get(res, "cpu");
    if (json_is_object(cpu) && parse_cpu_extras(cpu, r, err) < 0)
        return -1;
    if (parse_block_io(json_object_get(res, "blockIO"), &r->blkio, err) < 0 ||
        parse_hugepage_limits(json_object_get(res, "hugepageLimits"), r, err) < 0)
        return -1;
    return 0;
}
