/*
 * devices.h - the device allow-list of a workload's cgroup.
 *
 * A rule list in the order of OCI's linux.resources.devices (and of the v1
 * devices.allow / devices.deny files): the last rule that matches an access
 * decides it; a rule "a *:* rwm" resets the list (everything before it is
 * moot) and sets the default. hd_cgroup_devices_apply puts a list on a
 * workload's cgroup: on v1 and hybrid hosts through the devices controller
 * ("a" to devices.deny, then one line per rule), on v2 through a
 * BPF_CGROUP_DEVICE program attached to the group's directory. docs/cgroups.md
 * says how each side applies it; docs/container.md gives the default list.
 */
#ifndef HEDGE_CGROUP_DEVICES_H
#define HEDGE_CGROUP_DEVICES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

struct hd_cgroup;
struct bpf_insn;

/* Access bits; the same values as the kernel's BPF_DEVCG_ACC_* (the program compares them directly). */
enum {
    HD_DEV_MKNOD = 1,
    HD_DEV_READ = 2,
    HD_DEV_WRITE = 4,
    HD_DEV_RWM = 7,
};
#define HD_DEV_ANY (-1) /* major or minor "*" */

struct hd_device_rule {
    bool allow;
    char type;     /* 'a' any, 'b' block, 'c' char */
    int64_t major; /* HD_DEV_ANY or 0..0xfffff */
    int64_t minor;
    unsigned access; /* HD_DEV_* bits, not 0 */
};

/*
 * Docker's default list for a non-privileged container (moby's default spec
 * plus runc's allowed devices): deny everything; mknod of any node (opening it
 * still needs a rule); /dev/null, zero, full, random, urandom, tty, console,
 * ptmx and the devpts ptys 136:*. No tun/tap (10:200): runc 1.2 dropped it.
 */
extern const struct hd_device_rule hd_device_rules_default[];
extern const size_t hd_device_rules_default_count;

/* "allow c 1:3 rwm", "deny a", "allow b *:* m": one rule, errors say which part is wrong. */
int hd_device_rule_parse(const char *text, struct hd_device_rule *out, hd_error_t *err);
/* The v1 devices.allow/deny line of a rule ("c 1:3 rwm", "a"), NUL-terminated in buf. */
void hd_device_rule_format(const struct hd_device_rule *rule, char *buf, size_t size);

/*
 * The cgroup v2 program for rules: instructions for BPF_PROG_TYPE_CGROUP_DEVICE
 * returning 1 (allow) or 0 (deny). *out is malloc'd. Pure (unit-tested).
 */
int hd_devices_bpf_build(const struct hd_device_rule *rules, size_t n, struct bpf_insn **out, size_t *n_insns,
                         hd_error_t *err);
/* Build and load the program with bpf(BPF_PROG_LOAD), not attached: its fd, or -1. */
int hd_devices_bpf_load(const struct hd_device_rule *rules, size_t n, hd_error_t *err);

/*
 * Put the list on cg before any task enters it (the entry files opened after
 * this include the v1 devices group). v1/hybrid: the group gets a directory in
 * the devices hierarchy (removed with the group), "a" written to devices.deny,
 * then each rule; no devices hierarchy is an error. v2: the program is loaded
 * and attached to the group's directory (it goes with the directory).
 */
int hd_cgroup_devices_apply(struct hd_cgroup *cg, const struct hd_device_rule *rules, size_t n, hd_error_t *err);

#endif
