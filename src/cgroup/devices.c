/*
 * devices.c - a workload's device allow-list (devices.h), on both cgroup
 * versions.
 *
 * v1 (and hybrid hosts, whose controllers are v1): the group gets one more
 * directory, in the devices hierarchy, recorded with its others so it is
 * entered with them (hd_cgroup_entry_*) and removed with them. "a" written to
 * devices.deny empties the kernel's exception list and makes the default
 * deny; each rule is then one write to devices.allow or devices.deny. The
 * kernel keeps a list of exceptions to the default, not an ordered list, so
 * the common shape (a reset, then allows) means the same on both sides.
 *
 * v2: there is no devices controller; the kernel asks a BPF_CGROUP_DEVICE
 * program attached to the task's cgroup (and every program on the way up:
 * BPF_F_ALLOW_MULTI, all must allow). The program is built here as a small
 * instruction array and loaded with raw bpf(2), as runc and crun do, so no
 * libbpf. Its layout, with r2 = device type, r3 = access bits, r4 = major,
 * r5 = minor, follows runc's devicefilter: one block per rule, last rule
 * first, each falling through to the next on a mismatch and returning the
 * rule's verdict on a match; after the blocks, the default. The attachment
 * holds the program, so its fd is closed at once; rmdir of the group drops it.
 */
#include "cgroup/devices.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/bpf.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cgroup/internal.h"
#include "spec/spec.h"
#include "base/util.h"

#define RULE(a, t, maj, min, acc) \
    { \
        .allow = (a), .type = (t), .major = (maj), .minor = (min), .access = (acc) \
    }

const struct hd_device_rule hd_device_rules_default[] = {
    RULE(false, 'a', HD_DEV_ANY, HD_DEV_ANY, HD_DEV_RWM),
    RULE(true, 'c', HD_DEV_ANY, HD_DEV_ANY, HD_DEV_MKNOD),
    RULE(true, 'b', HD_DEV_ANY, HD_DEV_ANY, HD_DEV_MKNOD),
    RULE(true, 'c', 1, 3, HD_DEV_RWM),            /* /dev/null */
    RULE(true, 'c', 1, 5, HD_DEV_RWM),            /* /dev/zero */
    RULE(true, 'c', 1, 7, HD_DEV_RWM),            /* /dev/full */
    RULE(true, 'c', 1, 8, HD_DEV_RWM),            /* /dev/random */
    RULE(true, 'c', 1, 9, HD_DEV_RWM),            /* /dev/urandom */
    RULE(true, 'c', 5, 0, HD_DEV_RWM),            /* /dev/tty */
    RULE(true, 'c', 5, 1, HD_DEV_RWM),            /* /dev/console */
    RULE(true, 'c', 5, 2, HD_DEV_RWM),            /* /dev/ptmx */
    RULE(true, 'c', 136, HD_DEV_ANY, HD_DEV_RWM), /* /dev/pts/N */
};
const size_t hd_device_rules_default_count = ARRAY_SIZE(hd_device_rules_default);

/* The program's size limit is the kernel's; this keeps jump offsets far inside int16. */
#define DEVICES_MAX_RULES 1024
#define DEVICE_NUMBER_MAX 0xfffff

/* ---- rules as text ---- */

/* "allow|deny CLASS": CLASS read by the spec's one parser of "TYPE MAJOR:MINOR ACCESS" (hd_device_class_parse). */
int hd_device_rule_parse(const char *text, struct hd_device_rule *out, hd_error_t *err)
{
    const char *space = strchr(text, ' ');
    size_t verdict_len = space ? (size_t)(space - text) : strlen(text);
    bool allow = verdict_len == 5 && strncmp(text, "allow", 5) == 0;
    if (!allow && !(verdict_len == 4 && strncmp(text, "deny", 4) == 0))
        return hd_error_set(err, 0, "device rule \"%s\": does not start with allow or deny", text);
    struct hd_device_class class;
    const char *why = "has no type";
    if (space == NULL || hd_device_class_parse(space + 1, &class, &why) < 0)
        return hd_error_set(err, 0, "device rule \"%s\": %s", text, why);
    struct hd_device_rule r = {.allow = allow, .type = class.type, .major = class.major, .minor = class.minor};
    for (const char *p = class.access; *p; p++)
        r.access |= *p == 'r' ? HD_DEV_READ : *p == 'w' ? HD_DEV_WRITE : HD_DEV_MKNOD;
    *out = r;
    return 0;
}

static void format_number(int64_t n, char *buf, size_t size)
{
    if (n == HD_DEV_ANY)
        snprintf(buf, size, "*");
    else
        snprintf(buf, size, "%" PRId64, n);
}

void hd_device_rule_format(const struct hd_device_rule *rule, char *buf, size_t size)
{
    if (rule->type == 'a') {
        snprintf(buf, size, "a");
        return;
    }
    char major[16], minor[16], access[4];
    format_number(rule->major, major, sizeof(major));
    format_number(rule->minor, minor, sizeof(minor));
    size_t n = 0;
    if (rule->access & HD_DEV_READ)
        access[n++] = 'r';
    if (rule->access & HD_DEV_WRITE)
        access[n++] = 'w';
    if (rule->access & HD_DEV_MKNOD)
        access[n++] = 'm';
    access[n] = '\0';
    snprintf(buf, size, "%c %s:%s %s", rule->type, major, minor, access);
}

static int check_rules(const struct hd_device_rule *rules, size_t n, hd_error_t *err)
{
    if (n > DEVICES_MAX_RULES)
        return hd_error_set(err, 0, "devices: %zu rules (at most %d)", n, DEVICES_MAX_RULES);
    for (size_t i = 0; i < n; i++) {
        const struct hd_device_rule *r = &rules[i];
        if (strchr("abc", r->type) == NULL || r->type == '\0' || r->access == 0 || (r->access & ~7u) ||
            r->major < HD_DEV_ANY || r->major > DEVICE_NUMBER_MAX || r->minor < HD_DEV_ANY ||
            r->minor > DEVICE_NUMBER_MAX)
            return hd_error_set(err, 0, "devices: rule %zu is not a valid device rule", i);
    }
    return 0;
}

/* A rule that matches every access of every device: it resets the list. */
static bool rule_is_reset(const struct hd_device_rule *r)
{
    return r->type == 'a' && r->access == HD_DEV_RWM;
}

/* ---- v2: the BPF_CGROUP_DEVICE program ---- */

#define INSN(c, d, s, o, i) ((struct bpf_insn){.code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i)})
#define LDX_W(dst, src, off) INSN(BPF_LDX | BPF_MEM | BPF_W, dst, src, off, 0)
#define ALU32_K(op, dst, imm) INSN(BPF_ALU | (op) | BPF_K, dst, 0, 0, imm)
#define MOV32_X(dst, src) INSN(BPF_ALU | BPF_MOV | BPF_X, dst, src, 0, 0)
#define JNE_K(dst, imm) INSN(BPF_JMP | BPF_JNE | BPF_K, dst, 0, 0, imm) /* offset patched */
#define JNE_X(dst, src) INSN(BPF_JMP | BPF_JNE | BPF_X, dst, src, 0, 0)
#define EXIT() INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)

int hd_devices_bpf_build(const struct hd_device_rule *rules, size_t n, struct bpf_insn **out, size_t *n_insns,
                         hd_error_t *err)
{
    if (check_rules(rules, n, err) < 0)
        return -1;
    /* Only the rules after the last reset count; the reset (or deny, with none) is the default. */
    size_t first = 0;
    bool default_allow = false;
    for (size_t i = 0; i < n; i++) {
        if (rule_is_reset(&rules[i])) {
            first = i + 1;
            default_allow = rules[i].allow;
        }
    }
    /* prologue 6 + at most 8 per rule + epilogue 2 */
    struct bpf_insn *p = hd_xcalloc(6 + 8 * (n - first) + 2, sizeof(*p));
    size_t k = 0;
    /* struct bpf_cgroup_dev_ctx: access_type = access << 16 | type; major; minor */
    p[k++] = LDX_W(BPF_REG_2, BPF_REG_1, 0);
    p[k++] = ALU32_K(BPF_AND, BPF_REG_2, 0xffff);
    p[k++] = LDX_W(BPF_REG_3, BPF_REG_1, 0);
    p[k++] = ALU32_K(BPF_RSH, BPF_REG_3, 16);
    p[k++] = LDX_W(BPF_REG_4, BPF_REG_1, 4);
    p[k++] = LDX_W(BPF_REG_5, BPF_REG_1, 8);
    for (size_t i = n; i > first; i--) {
        const struct hd_device_rule *r = &rules[i - 1];
        size_t jumps[4], n_jumps = 0;
        if (r->type != 'a') {
            jumps[n_jumps++] = k;
            p[k++] = JNE_K(BPF_REG_2, r->type == 'b' ? BPF_DEVCG_DEV_BLOCK : BPF_DEVCG_DEV_CHAR);
        }
        if (r->access != HD_DEV_RWM) { /* every asked bit must be in the rule: (asked & rule) == asked */
            p[k++] = MOV32_X(BPF_REG_1, BPF_REG_3);
            p[k++] = ALU32_K(BPF_AND, BPF_REG_1, (int32_t)r->access);
            jumps[n_jumps++] = k;
            p[k++] = JNE_X(BPF_REG_1, BPF_REG_3);
        }
        if (r->major != HD_DEV_ANY) {
            jumps[n_jumps++] = k;
            p[k++] = JNE_K(BPF_REG_4, (int32_t)r->major);
        }
        if (r->minor != HD_DEV_ANY) {
            jumps[n_jumps++] = k;
            p[k++] = JNE_K(BPF_REG_5, (int32_t)r->minor);
        }
        p[k++] = ALU32_K(BPF_MOV, BPF_REG_0, r->allow ? 1 : 0);
        p[k++] = EXIT();
        for (size_t j = 0; j < n_jumps; j++) /* a mismatch goes to the next block */
            p[jumps[j]].off = (int16_t)(k - jumps[j] - 1);
    }
    p[k++] = ALU32_K(BPF_MOV, BPF_REG_0, default_allow ? 1 : 0);
    p[k++] = EXIT();
    *out = p;
    *n_insns = k;
    return 0;
}

static int bpf_call(int cmd, union bpf_attr *attr)
{
    return (int)syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

int hd_devices_bpf_load(const struct hd_device_rule *rules, size_t n, hd_error_t *err)
{
    cleanup_free struct bpf_insn *insns = NULL;
    size_t n_insns = 0;
    if (hd_devices_bpf_build(rules, n, &insns, &n_insns, err) < 0)
        return -1;
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
    attr.insns = (uint64_t)(uintptr_t)insns;
    attr.insn_cnt = (uint32_t)n_insns;
    attr.license = (uint64_t)(uintptr_t) "GPL";
    int fd = bpf_call(BPF_PROG_LOAD, &attr);
    if (fd >= 0)
        return fd;
    int saved = errno;
    /* only on failure: load again with the verifier's log for the message */
    char log[2048] = "";
    attr.log_buf = (uint64_t)(uintptr_t)log;
    attr.log_size = sizeof(log);
    attr.log_level = 1;
    fd = bpf_call(BPF_PROG_LOAD, &attr);
    if (fd >= 0)
        close(fd);
    log[sizeof(log) - 1] = '\0';
    return hd_error_set(err, saved, "devices: load the BPF_CGROUP_DEVICE program (%zu instructions): %s%s%s", n_insns,
                        strerror(saved), *log ? "; verifier: " : "", log);
}

static int v2_devices_apply(struct hd_cgroup *cg, const struct hd_device_rule *rules, size_t n, hd_error_t *err)
{
    cleanup_close int prog = hd_devices_bpf_load(rules, n, err);
    if (prog < 0)
        return -1;
    cleanup_close int dir = open(cg->v2_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return hd_error_sys(err, "devices: open %s", cg->v2_dir);
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.target_fd = (uint32_t)dir;
    attr.attach_bpf_fd = (uint32_t)prog;
    attr.attach_type = BPF_CGROUP_DEVICE;
    attr.attach_flags = BPF_F_ALLOW_MULTI;
    if (bpf_call(BPF_PROG_ATTACH, &attr) < 0)
        return hd_error_sys(err, "devices: attach the BPF_CGROUP_DEVICE program to %s", cg->v2_dir);
    return 0;
}

/* ---- v1: the devices controller ---- */

static int v1_devices_dir(struct hd_cgroup *cg, hd_error_t *err)
{
    if (cg->controller_dir[CGROUP_DEVICES])
        return 0;
    const char *mount = cg->v1_devices_mount; /* found with the other hierarchies (v1.c) */
    if (mount == NULL)
        return hd_error_set(err, 0,
                            "devices: no cgroup v1 hierarchy carries the devices controller, so the "
                            "device allow-list cannot be applied");
    cleanup_free char *parent = hd_xasprintf("%s/%s", mount, cg->parent);
    cleanup_free char *group = hd_xasprintf("%s/%s", mount, cg->name);
    if (hd_mkdir_p(parent, 0755, err) < 0 || cgroup_mkdir(group, cg->adopt, err) < 0)
        return hd_error_prefix(err, "devices");
    cg->controller_dir[CGROUP_DEVICES] = cgroup_add_dir(cg, group);
    return 0;
}

static int v1_devices_apply(struct hd_cgroup *cg, const struct hd_device_rule *rules, size_t n, hd_error_t *err)
{
    if (v1_devices_dir(cg, err) < 0)
        return -1;
    const char *dir = cg->controller_dir[CGROUP_DEVICES];
    if (cgroup_write(dir, "devices.deny", "a", err) < 0)
        return hd_error_prefix(err, "devices: deny all");
    for (size_t i = 0; i < n; i++) {
        char line[64];
        hd_device_rule_format(&rules[i], line, sizeof(line));
        if (cgroup_write(dir, rules[i].allow ? "devices.allow" : "devices.deny", line, err) < 0)
            return hd_error_prefix(err, "devices: rule %zu (%s %s)", i, rules[i].allow ? "allow" : "deny", line);
    }
    return 0;
}

int hd_cgroup_devices_apply(struct hd_cgroup *cg, const struct hd_device_rule *rules, size_t n, hd_error_t *err)
{
    if (check_rules(rules, n, err) < 0)
        return -1;
    int rc = cg->mode == HD_CGROUP_V2 ? v2_devices_apply(cg, rules, n, err) : v1_devices_apply(cg, rules, n, err);
    if (rc < 0)
        return hd_error_prefix(err, "cgroup %s (%s)", cg->name, hd_cgroup_mode_name(cg->mode));
    return 0;
}
