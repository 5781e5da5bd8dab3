/* test_devices.c - the device allow-list (src/cgroup/devices.c): rule text, and the cgroup v2
 * BPF_CGROUP_DEVICE program. The program's verdicts are checked by running its instructions here
 * (the handful of opcodes the builder emits), and the kernel's verifier must accept it
 * (BPF_PROG_LOAD, not attached: loading needs root, no cgroup). Attaching and the kernel enforcing it
 * are tests/test_devices.py's (forced v2 on this hybrid host). */
#include <errno.h>
#include <linux/bpf.h>
#include <unistd.h>

#include "cgroup/devices.h"
#include "check.h"
#include "base/util.h"

static void test_parse_and_format(void)
{
    static const char *const lines[][2] = {
        {"allow c 1:3 rwm", "c 1:3 rwm"},  {"deny a", "a"},
        {"allow b *:* m", "b *:* m"},      {"allow c 136:* rw", "c 136:* rw"},
        {"deny c 10:200", "c 10:200 rwm"}, {"allow a *:* rwm", "a"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(lines); i++) {
        struct hd_device_rule r;
        hd_error_t err = NULL;
        CHECK(hd_device_rule_parse(lines[i][0], &r, &err) == 0);
        char buf[64];
        hd_device_rule_format(&r, buf, sizeof(buf));
        CHECK_STR(buf, lines[i][1]);
        hd_error_free(&err);
    }
    static const char *const bad[] = {"",
                                      "permit c 1:3 rwm",
                                      "allow x 1:3",
                                      "allow c 1-3 rwm",
                                      "allow c 1:3 rwx",
                                      "allow c 99999999:1",
                                      "allow c 1:3 rwm extra",
                                      "deny a 1:3"};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        struct hd_device_rule r;
        hd_error_t err = NULL;
        CHECK(hd_device_rule_parse(bad[i], &r, &err) < 0);
        CHECK(err && strstr(err->message, "device rule") != NULL);
        hd_error_free(&err);
    }
    /* the default list: deny all first, then only allows */
    CHECK(hd_device_rules_default_count == 12);
    CHECK(!hd_device_rules_default[0].allow && hd_device_rules_default[0].type == 'a');
    for (size_t i = 1; i < hd_device_rules_default_count; i++)
        CHECK(hd_device_rules_default[i].allow);
}

/* Run a program of the builder's opcodes on one access; -1 on an opcode it does not emit. */
static int run_program(const struct bpf_insn *p, size_t n, int type, unsigned access, uint32_t major, uint32_t minor)
{
    uint32_t ctx[3] = {(uint32_t)(access << 16) | (uint32_t)type, major, minor};
    uint64_t reg[11] = {0};
    for (size_t pc = 0; pc < n; pc++) {
        const struct bpf_insn *i = &p[pc];
        switch (i->code) {
        case BPF_LDX | BPF_MEM | BPF_W:
            if (i->src_reg != BPF_REG_1 || i->off < 0 || i->off > 8 || i->off % 4)
                return -1;
            reg[i->dst_reg] = ctx[i->off / 4];
            break;
        case BPF_ALU | BPF_AND | BPF_K: reg[i->dst_reg] = (uint32_t)(reg[i->dst_reg] & (uint32_t)i->imm); break;
        case BPF_ALU | BPF_RSH | BPF_K: reg[i->dst_reg] = (uint32_t)reg[i->dst_reg] >> i->imm; break;
        case BPF_ALU | BPF_MOV | BPF_K: reg[i->dst_reg] = (uint32_t)i->imm; break;
        case BPF_ALU | BPF_MOV | BPF_X: reg[i->dst_reg] = (uint32_t)reg[i->src_reg]; break;
        case BPF_JMP | BPF_JNE | BPF_K:
            if (reg[i->dst_reg] != (uint64_t)(int64_t)i->imm)
                pc += (size_t)i->off;
            break;
        case BPF_JMP | BPF_JNE | BPF_X:
            if (reg[i->dst_reg] != reg[i->src_reg])
                pc += (size_t)i->off;
            break;
        case BPF_JMP | BPF_EXIT: return (int)reg[0];
        default: return -1;
        }
    }
    return -1; /* fell off the end */
}

#define C BPF_DEVCG_DEV_CHAR
#define B BPF_DEVCG_DEV_BLOCK
#define R BPF_DEVCG_ACC_READ
#define W BPF_DEVCG_ACC_WRITE
#define M BPF_DEVCG_ACC_MKNOD

static int verdict(const struct hd_device_rule *rules, size_t n, int type, unsigned access, uint32_t major,
                   uint32_t minor)
{
    struct bpf_insn *p = NULL;
    size_t len = 0;
    hd_error_t err = NULL;
    if (hd_devices_bpf_build(rules, n, &p, &len, &err) < 0) {
        hd_error_free(&err);
        return -2;
    }
    int v = run_program(p, len, type, access, major, minor);
    free(p);
    return v;
}

static void test_default_program(void)
{
    const struct hd_device_rule *d = hd_device_rules_default;
    size_t n = hd_device_rules_default_count;
    /* the nodes of the container's /dev */
    CHECK(verdict(d, n, C, R | W, 1, 3) == 1);
    CHECK(verdict(d, n, C, R, 1, 9) == 1);
    CHECK(verdict(d, n, C, R | W, 5, 2) == 1);
    CHECK(verdict(d, n, C, R | W, 136, 7) == 1);
    /* mknod of anything, opening it not */
    CHECK(verdict(d, n, C, M, 10, 200) == 1);
    CHECK(verdict(d, n, B, M, 7, 0) == 1);
    CHECK(verdict(d, n, C, R | W, 10, 200) == 0);
    CHECK(verdict(d, n, C, R, 1, 1) == 0);
    CHECK(verdict(d, n, B, R, 7, 0) == 0);
    CHECK(verdict(d, n, B, R | W, 1, 3) == 0); /* a block device with /dev/null's numbers */
    CHECK(verdict(d, n, C, R, 137, 0) == 0);
}

static void test_rule_order(void)
{
    /* the last matching rule wins; a rule covers an access only with every bit asked */
    struct hd_device_rule rules[4];
    hd_error_t err = NULL;
    CHECK(hd_device_rule_parse("allow a", &rules[0], &err) == 0);
    CHECK(hd_device_rule_parse("deny c 10:*", &rules[1], &err) == 0);
    CHECK(hd_device_rule_parse("allow c 10:200 r", &rules[2], &err) == 0);
    CHECK(hd_device_rule_parse("deny b *:* w", &rules[3], &err) == 0);
    CHECK(verdict(rules, 4, C, R, 10, 200) == 1);
    CHECK(verdict(rules, 4, C, R | W, 10, 200) == 0); /* rule 2 lacks w: rule 1 decides */
    CHECK(verdict(rules, 4, C, R, 10, 229) == 0);
    CHECK(verdict(rules, 4, C, R | W, 1, 3) == 1); /* default allow */
    CHECK(verdict(rules, 4, B, W, 8, 0) == 0);
    CHECK(verdict(rules, 4, B, R, 8, 0) == 1);
    /* a later reset makes everything before it moot */
    CHECK(hd_device_rule_parse("deny a", &rules[3], &err) == 0);
    CHECK(verdict(rules, 4, C, R, 10, 200) == 0);
    /* no rules: deny */
    CHECK(verdict(rules, 0, C, R, 1, 3) == 0);
    /* invalid rules are refused */
    struct hd_device_rule bad = {.allow = true, .type = 'x', .major = 1, .minor = 1, .access = R};
    struct bpf_insn *p = NULL;
    size_t len = 0;
    CHECK(hd_devices_bpf_build(&bad, 1, &p, &len, &err) < 0 && err != NULL);
    hd_error_free(&err);
}

static void test_kernel_accepts_the_program(void)
{
    hd_error_t err = NULL;
    int fd = hd_devices_bpf_load(hd_device_rules_default, hd_device_rules_default_count, &err);
    if (fd < 0)
        fprintf(stderr, "load: %s\n", hd_error_text(err));
    CHECK(fd >= 0);
    if (fd >= 0)
        close(fd);
    hd_error_free(&err);
    struct hd_device_rule one;
    CHECK(hd_device_rule_parse("allow c 136:* rw", &one, &err) == 0);
    fd = hd_devices_bpf_load(&one, 1, &err);
    CHECK(fd >= 0);
    if (fd >= 0)
        close(fd);
    fd = hd_devices_bpf_load(&one, 0, &err); /* deny everything */
    CHECK(fd >= 0);
    if (fd >= 0)
        close(fd);
    hd_error_free(&err);
}

int main(void)
{
    test_parse_and_format();
    test_default_program();
    test_rule_order();
    test_kernel_accepts_the_program();
    CHECK_DONE();
}
