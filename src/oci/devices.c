/*
 * devices.c - linux.resources.devices on a v1 devices hierarchy.
 *
 * The runtime's cgroup module has no devices controller, so hedge-oci makes
 * the group itself: <devices mount>/<cgroup parent>/<name>, with the config's
 * rules in order followed by runc's defaults for the nodes the runtime puts in
 * /dev (null, zero, full, random, urandom, tty, ptmx, pts) and mknod of any
 * node (opening one still needs a rule). The create process opens the group's
 * "tasks" file; the container's first process writes "0" to it before it
 * does anything else of its own (config.c, oci_container_setup), so the rules
 * hold from its first exec on. delete removes the group (state.json names it).
 * A cgroup v2-only host needs an eBPF program instead: refused for now.
 */
#include "oci/oci.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "base/util.h"

#define DEVICES_MOUNT "/sys/fs/cgroup/devices"
#ifndef CGROUP_SUPER_MAGIC
#define CGROUP_SUPER_MAGIC 0x27e0eb
#endif

static const char *const default_rules[] = {
    "allow c *:* m", "allow b *:* m",   "allow c 1:3 rwm", "allow c 1:5 rwm",  "allow c 1:7 rwm",
    "allow c 1:8 rwm", "allow c 1:9 rwm", "allow c 5:0 rwm", "allow c 5:1 rwm", "allow c 5:2 rwm",
    "allow c 136:* rwm",
};

static int write_rule(const char *dir, const char *rule, hd_error_t *err)
{
    bool allow = strncmp(rule, "allow ", 6) == 0;
    const char *value = rule + (allow ? 6 : 5);
    cleanup_free char *path = hd_xasprintf("%s/%s", dir, allow ? "devices.allow" : "devices.deny");
    if (hd_write_file(path, value, strlen(value), err) < 0)
        return hd_error_prefix(err, "linux.resources.devices: \"%s\"", rule);
    return 0;
}

int oci_devices_create(struct oci_config *cfg, hd_error_t *err)
{
    if (cfg->device_rules == NULL)
        return 0;
    struct statfs fs;
    if (statfs(DEVICES_MOUNT, &fs) < 0 || fs.f_type != CGROUP_SUPER_MAGIC)
        return hd_error_set(err, 0, "linux.resources.devices: no cgroup v1 devices hierarchy at %s (the cgroup v2 "
                                    "device filter, an eBPF program, is not supported yet)", DEVICES_MOUNT);
    const char *parent = getenv("HEDGE_CGROUP_PARENT");
    if (parent == NULL || *parent == '\0')
        parent = "hedge";
    cfg->devices_dir = strcmp(parent, "/") == 0 ? hd_xasprintf("%s/%s", DEVICES_MOUNT, cfg->cgroup_name)
                                                : hd_xasprintf("%s/%s/%s", DEVICES_MOUNT, parent, cfg->cgroup_name);
    if (hd_mkdir_p(cfg->devices_dir, 0755, err) < 0)
        return hd_error_prefix(err, "linux.resources.devices");
    for (size_t i = 0; cfg->device_rules[i]; i++)
        if (write_rule(cfg->devices_dir, cfg->device_rules[i], err) < 0)
            return -1;
    for (size_t i = 0; i < ARRAY_SIZE(default_rules); i++)
        if (write_rule(cfg->devices_dir, default_rules[i], err) < 0)
            return -1;
    cleanup_free char *tasks = hd_xasprintf("%s/tasks", cfg->devices_dir);
    cfg->devices_tasks_fd = open(tasks, O_WRONLY | O_CLOEXEC);
    if (cfg->devices_tasks_fd < 0)
        return hd_error_sys(err, "linux.resources.devices: open %s", tasks);
    return 0;
}

int oci_devices_remove(const char *dir, hd_error_t *err)
{
    if (dir == NULL)
        return 0;
    /* a group whose last task just died can be busy for a moment */
    for (int round = 0; rmdir(dir) < 0; round++) {
        if (errno == ENOENT)
            return 0;
        if (errno != EBUSY || round >= 200)
            return hd_error_sys(err, "remove the devices cgroup %s", dir);
        usleep(5000);
    }
    return 0;
}
