/*
 * seccomp.c - hedge's default syscall filter and Docker/OCI JSON profiles,
 * compiled to BPF with libseccomp (see seccomp_filter.h; the header is not called seccomp.h so that
 * it cannot shadow libseccomp's <seccomp.h>).
 *
 * The default profile follows Docker's in what it refuses, but is written as
 * a deny list over a default of "allow": it names the syscalls that reach
 * kernel state shared with the host (modules, kexec, reboot, swap, clock,
 * keyrings, bpf, perf, io_uring, mount and namespace creation, ptrace and
 * cross-process memory access, raw I/O ports) and makes them fail with
 * EPERM. A call whose capability the workload was given back through
 * cap_add is allowed again, as Docker does: CAP_SYS_ADMIN re-enables mount
 * and namespaces, CAP_SYS_PTRACE ptrace, CAP_SYS_TIME the clock, and so on.
 * personality() is limited to the values Docker allows (Linux and
 * Linux32, optionally UNAME26, and the 0xffffffff query), so a workload
 * cannot switch address space randomisation off. clone3 answers ENOSYS
 * (its flags sit in memory a filter cannot read), so libc falls back to
 * clone, whose namespace flags the filter can see.
 *
 * The filter covers the x86_64 and i386 ABIs, so the deny list cannot be
 * side-stepped through int 0x80; x32 and other ABIs are killed.
 *
 * Compiling costs libseccomp about 2 ms (mostly the personality rules, once per
 * ABI), more than the rest of a container start, so compiled programs are
 * cached in <runtime dir>/seccomp-cache, keyed by everything that shapes
 * them: a format tag (bump SECCOMP_CACHE_TAG when the rule logic
 * changes), hedge's and libseccomp's versions, the deny table, the
 * capability mask and, for a JSON profile, the file's bytes.
 */
#include "runtime/container/seccomp_filter.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "config.h"
#include "runtime/run.h"
#include "runtime/container/caps.h"
#include "base/util.h"

#define SECCOMP_CACHE_TAG "hedge-seccomp-cache-4"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif

struct hd_seccomp {
    struct sock_fprog prog;
};

#define NO_CAP (-1)

/* One denied syscall, and the capability that allows it again (NO_CAP: never). */
struct denied_syscall {
    const char *name;
    int unless_cap;
};

static const struct denied_syscall default_denied[] = {
    /* kernel modules and kexec: code into the shared kernel */
    {"init_module", 16 /* CAP_SYS_MODULE */},
    {"finit_module", 16},
    {"delete_module", 16},
    {"create_module", NO_CAP},
    {"get_kernel_syms", NO_CAP},
    {"query_module", NO_CAP},
    {"kexec_load", 22 /* CAP_SYS_BOOT */},
    {"kexec_file_load", 22},
    {"reboot", 22},
    /* host-wide state */
    {"swapon", 21 /* CAP_SYS_ADMIN */},
    {"swapoff", 21},
    {"acct", 20 /* CAP_SYS_PACCT */},
    {"settimeofday", 25 /* CAP_SYS_TIME */},
    {"clock_settime", 25},
    {"clock_adjtime", 25},
    {"stime", 25},
    {"syslog", 34 /* CAP_SYSLOG */},
    {"quotactl", 21},
    {"quotactl_fd", 21},
    {"nfsservctl", NO_CAP},
    {"_sysctl", NO_CAP},
    {"sysfs", NO_CAP},
    {"uselib", NO_CAP},
    {"ustat", NO_CAP},
    {"vm86", NO_CAP},
    {"vm86old", NO_CAP},
    {"lookup_dcookie", 21},
    {"vhangup", 26 /* CAP_SYS_TTY_CONFIG */},
    {"iopl", 17 /* CAP_SYS_RAWIO */},
    {"ioperm", 17},
    /* keyrings are not namespaced */
    {"add_key", NO_CAP},
    {"keyctl", NO_CAP},
    {"request_key", NO_CAP},
    /* large kernel attack surface */
    {"bpf", 21},
    {"perf_event_open", 21},
    {"userfaultfd", 21},
    {"fanotify_init", 21},
    {"io_uring_setup", NO_CAP},
    {"io_uring_enter", NO_CAP},
    {"io_uring_register", NO_CAP},
    {"open_by_handle_at", 2 /* CAP_DAC_READ_SEARCH */},
    /* mounts and namespaces */
    {"mount", 21},
    {"umount", 21},
    {"umount2", 21},
    {"pivot_root", 21},
    {"move_mount", 21},
    {"open_tree", 21},
    {"fsopen", 21},
    {"fsconfig", 21},
    {"fsmount", 21},
    {"fspick", 21},
    {"mount_setattr", 21},
    {"setns", 21},
    {"sethostname", 21},
    {"setdomainname", 21},
    /* other processes' memory */
    {"ptrace", 19 /* CAP_SYS_PTRACE */},
    {"process_vm_readv", 19},
    {"process_vm_writev", 19},
    {"process_madvise", 19},
    {"kcmp", 19},
    {"pidfd_getfd", 19},
};

static const unsigned long namespace_flags[] = {
    CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET,
};

static bool has_cap(uint64_t caps, int cap)
{
    return cap >= 0 && (caps & (1ULL << cap));
}

static int add_rule(scmp_filter_ctx ctx, uint32_t action, const char *name, unsigned n, const struct scmp_arg_cmp *cmp,
                    hd_error_t *err)
{
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR)
        return 0; /* not a syscall of this libseccomp: nothing to filter */
    int r = seccomp_rule_add_array(ctx, action, nr, n, cmp);
    if (r < 0)
        return hd_error_set(err, -r, "seccomp: rule for %s", name);
    return 0;
}

static int default_profile(scmp_filter_ctx ctx, uint64_t caps, hd_error_t *err)
{
    const uint32_t deny = SCMP_ACT_ERRNO(EPERM);
    for (size_t i = 0; i < ARRAY_SIZE(default_denied); i++)
        if (!has_cap(caps, default_denied[i].unless_cap) &&
            add_rule(ctx, deny, default_denied[i].name, 0, NULL, err) < 0)
            return -1;
    if (!has_cap(caps, 21 /* CAP_SYS_ADMIN */)) {
        /* clone/unshare creating a namespace: one rule per flag (rules are OR'ed) */
        for (size_t i = 0; i < ARRAY_SIZE(namespace_flags); i++) {
            struct scmp_arg_cmp c = SCMP_A0(SCMP_CMP_MASKED_EQ, namespace_flags[i], namespace_flags[i]);
            if (add_rule(ctx, deny, "clone", 1, &c, err) < 0 || add_rule(ctx, deny, "unshare", 1, &c, err) < 0)
                return -1;
        }
        struct scmp_arg_cmp t = SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWTIME, CLONE_NEWTIME);
        if (add_rule(ctx, deny, "unshare", 1, &t, err) < 0)
            return -1;
        if (add_rule(ctx, SCMP_ACT_ERRNO(ENOSYS), "clone3", 0, NULL, err) < 0)
            return -1;
    }
    /*
     * personality: allow 0 (PER_LINUX), 8 (PER_LINUX32), 0x20000 (UNAME26), their
     * combination, and the 0xffffffff query. libseccomp cannot compare one argument
     * twice in a rule, so each rule tests one bit against bit 31: a value below
     * 0x80000000 is refused if it has a bit outside {3, 17}; a value with bit 31 set
     * is refused unless all 31 low bits are set too.
     */
    for (int b = 0; b < 31; b++) {
        unsigned long bit = 1UL << b;
        struct scmp_arg_cmp c;
        if (b != 3 && b != 17) {
            c = SCMP_A0(SCMP_CMP_MASKED_EQ, 0x80000000UL | bit, bit);
            if (add_rule(ctx, deny, "personality", 1, &c, err) < 0)
                return -1;
        }
        c = SCMP_A0(SCMP_CMP_MASKED_EQ, 0x80000000UL | bit, 0x80000000UL);
        if (add_rule(ctx, deny, "personality", 1, &c, err) < 0)
            return -1;
    }
    return 0;
}

/* ---- Docker/OCI JSON profiles ------------------------------------------ */

static int json_action(const char *name, json_t *errno_ret, uint32_t *out)
{
    if (strcmp(name, "SCMP_ACT_ALLOW") == 0)
        *out = SCMP_ACT_ALLOW;
    else if (strcmp(name, "SCMP_ACT_ERRNO") == 0)
        *out = SCMP_ACT_ERRNO(json_is_integer(errno_ret) ? (uint16_t)json_integer_value(errno_ret) : EPERM);
    else if (strcmp(name, "SCMP_ACT_KILL") == 0 || strcmp(name, "SCMP_ACT_KILL_THREAD") == 0)
        *out = SCMP_ACT_KILL_THREAD;
    else if (strcmp(name, "SCMP_ACT_KILL_PROCESS") == 0)
        *out = SCMP_ACT_KILL_PROCESS;
    else if (strcmp(name, "SCMP_ACT_TRAP") == 0)
        *out = SCMP_ACT_TRAP;
    else if (strcmp(name, "SCMP_ACT_LOG") == 0)
        *out = SCMP_ACT_LOG;
    else if (strcmp(name, "SCMP_ACT_NOTIFY") == 0)
        *out = SCMP_ACT_NOTIFY; /* for a listener (hedge-oci's linux.seccomp.listenerPath); ENOSYS without one */
    else
        return -1;
    return 0;
}

static const struct {
    const char *name;
    enum scmp_compare op;
} json_ops[] = {
    {"SCMP_CMP_NE", SCMP_CMP_NE},
    {"SCMP_CMP_LT", SCMP_CMP_LT},
    {"SCMP_CMP_LE", SCMP_CMP_LE},
    {"SCMP_CMP_EQ", SCMP_CMP_EQ},
    {"SCMP_CMP_GE", SCMP_CMP_GE},
    {"SCMP_CMP_GT", SCMP_CMP_GT},
    {"SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ},
};

/* syscalls[i].args: up to six {index, value, valueTwo, op} comparisons. */
static int json_args(const json_t *args, const char *where, struct scmp_arg_cmp *cmp, unsigned *n, hd_error_t *err)
{
    *n = 0;
    if (args == NULL || json_is_null(args))
        return 0;
    if (!json_is_array(args) || json_array_size(args) > 6)
        return hd_error_set(err, 0, "%s.args: not an array of at most 6 comparisons", where);
    size_t k;
    json_t *arg;
    json_array_foreach(args, k, arg)
    {
        json_t *index = json_object_get(arg, "index");
        json_t *value = json_object_get(arg, "value");
        json_t *value2 = json_object_get(arg, "valueTwo");
        json_t *op = json_object_get(arg, "op");
        if (!json_is_integer(index) || json_integer_value(index) < 0 || json_integer_value(index) > 5)
            return hd_error_set(err, 0, "%s.args[%zu].index: not 0..5", where, k);
        if (!json_is_integer(value) || (value2 && !json_is_null(value2) && !json_is_integer(value2)))
            return hd_error_set(err, 0, "%s.args[%zu].value: not an integer", where, k);
        size_t o = 0;
        const char *op_name = json_is_string(op) ? json_string_value(op) : "";
        while (o < ARRAY_SIZE(json_ops) && strcmp(op_name, json_ops[o].name) != 0)
            o++;
        if (o == ARRAY_SIZE(json_ops))
            return hd_error_set(err, 0, "%s.args[%zu].op: not a known comparison", where, k);
        for (unsigned prev = 0; prev < *n; prev++)
            if (cmp[prev].arg == (unsigned)json_integer_value(index))
                return hd_error_set(err, 0,
                                    "%s.args[%zu]: a second comparison of argument %lld in one rule "
                                    "(libseccomp allows one; use two rules)",
                                    where, k, json_integer_value(index));
        cmp[*n] = (struct scmp_arg_cmp){
            .arg = (unsigned)json_integer_value(index),
            .op = json_ops[o].op,
            .datum_a = (scmp_datum_t)json_integer_value(value),
            .datum_b = json_is_integer(value2) ? (scmp_datum_t)json_integer_value(value2) : 0,
        };
        (*n)++;
    }
    return 0;
}

static bool json_names_arch(const json_t *arches)
{
    size_t k;
    json_t *a;
    json_array_foreach(arches, k, a)
    {
        const char *s = json_string_value(a);
        if (s &&
            (strcmp(s, "amd64") == 0 || strcmp(s, "SCMP_ARCH_X86_64") == 0 || strcmp(s, "386") == 0 ||
             strcmp(s, "SCMP_ARCH_X86") == 0))
            return true;
    }
    return false;
}

/* All of caps[] held (want_all) / any of them held (!want_all). Unknown names are errors. */
static int json_caps_match(const json_t *caps, uint64_t held, bool want_all, const char *where, bool *out,
                           hd_error_t *err)
{
    size_t k;
    json_t *c;
    *out = want_all;
    json_array_foreach(caps, k, c)
    {
        int cap = json_is_string(c) ? hd_cap_parse(json_string_value(c)) : -1;
        if (cap < 0)
            return hd_error_set(err, 0, "%s[%zu]: not a capability", where, k);
        bool has = held & (1ULL << cap);
        if (want_all && !has)
            *out = false;
        if (!want_all && has)
            *out = true;
    }
    return 0;
}

/* Docker's includes/excludes: does the rule apply to this workload (caps, x86 arches)? */
static int json_rule_applies(const json_t *rule, uint64_t caps, const char *where, bool *out, hd_error_t *err)
{
    json_t *inc = json_object_get(rule, "includes");
    json_t *exc = json_object_get(rule, "excludes");
    cleanup_free char *inc_where = hd_xasprintf("%s.includes.caps", where);
    cleanup_free char *exc_where = hd_xasprintf("%s.excludes.caps", where);
    bool match;
    *out = false;
    if (json_is_array(json_object_get(inc, "arches")) && !json_names_arch(json_object_get(inc, "arches")))
        return 0;
    if (json_is_array(json_object_get(exc, "arches")) && json_names_arch(json_object_get(exc, "arches")))
        return 0;
    if (json_is_array(json_object_get(inc, "caps"))) {
        if (json_caps_match(json_object_get(inc, "caps"), caps, true, inc_where, &match, err) < 0)
            return -1;
        if (!match)
            return 0;
    }
    if (json_is_array(json_object_get(exc, "caps"))) {
        if (json_caps_match(json_object_get(exc, "caps"), caps, false, exc_where, &match, err) < 0)
            return -1;
        if (match)
            return 0;
    }
    *out = true;
    return 0;
}

static int json_profile(const char *path, const char *bytes, size_t len, uint64_t caps, scmp_filter_ctx *out,
                        hd_error_t *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(bytes, len, 0, &jerr);
    if (root == NULL)
        return hd_error_set(err, 0, "security.seccomp: %s: line %d: %s", path, jerr.line, jerr.text);
    int ret = -1;
    scmp_filter_ctx ctx = NULL;
    json_t *def = json_object_get(root, "defaultAction");
    uint32_t def_action;
    if (!json_is_string(def) ||
        json_action(json_string_value(def), json_object_get(root, "defaultErrnoRet"), &def_action) < 0) {
        hd_error_set(err, 0, "security.seccomp: %s: defaultAction: missing or not a known action", path);
        goto out;
    }
    ctx = seccomp_init(def_action);
    if (ctx == NULL) {
        hd_error_set(err, ENOMEM, "security.seccomp: seccomp_init");
        goto out;
    }
    json_t *calls = json_object_get(root, "syscalls");
    if (calls && !json_is_array(calls)) {
        hd_error_set(err, 0, "security.seccomp: %s: syscalls: not an array", path);
        goto out;
    }
    size_t i;
    json_t *rule;
    json_array_foreach(calls, i, rule)
    {
        json_t *names = json_object_get(rule, "names");
        json_t *action = json_object_get(rule, "action");
        json_t *args = json_object_get(rule, "args");
        uint32_t act;
        if (!json_is_array(names)) {
            hd_error_set(err, 0, "security.seccomp: %s: syscalls[%zu].names: missing or not an array", path, i);
            goto out;
        }
        if (!json_is_string(action) ||
            json_action(json_string_value(action), json_object_get(rule, "errnoRet"), &act) < 0) {
            hd_error_set(err, 0, "security.seccomp: %s: syscalls[%zu].action: missing or not a known action", path, i);
            goto out;
        }
        char where[64];
        snprintf(where, sizeof(where), "syscalls[%zu]", i);
        struct scmp_arg_cmp cmp[6];
        unsigned n_cmp;
        bool applies;
        if (json_args(args, where, cmp, &n_cmp, err) < 0 || json_rule_applies(rule, caps, where, &applies, err) < 0) {
            hd_error_prefix(err, "security.seccomp: %s", path);
            goto out;
        }
        if (!applies || act == def_action)
            continue; /* libseccomp refuses rules that repeat the default */
        size_t j;
        json_t *name;
        json_array_foreach(names, j, name)
        {
            if (!json_is_string(name)) {
                hd_error_set(err, 0, "security.seccomp: %s: syscalls[%zu].names[%zu]: not a string", path, i, j);
                goto out;
            }
            /* unknown names are skipped, as runc does: profiles list syscalls of many kernels */
            if (add_rule(ctx, act, json_string_value(name), n_cmp, cmp, err) < 0) {
                hd_error_prefix(err, "security.seccomp: %s: %s", path, where);
                goto out;
            }
        }
    }
    *out = get_and_reset(&ctx);
    ret = 0;
out:
    if (ctx)
        seccomp_release(ctx);
    json_decref(root);
    return ret;
}

/* Compile ctx to a BPF program in memory (libseccomp 2.5 only exports to an fd). */
static int export_program(scmp_filter_ctx ctx, struct hd_seccomp *f, hd_error_t *err)
{
    cleanup_close int fd = memfd_create("hedge-seccomp", MFD_CLOEXEC);
    if (fd < 0)
        return hd_error_sys(err, "seccomp: memfd_create");
    int r = seccomp_export_bpf(ctx, fd);
    if (r < 0)
        return hd_error_set(err, -r, "seccomp: compile the filter");
    off_t size = lseek(fd, 0, SEEK_END);
    if (size <= 0 || size % sizeof(struct sock_filter) != 0 || size / sizeof(struct sock_filter) > BPF_MAXINSNS)
        return hd_error_set(err, EINVAL, "seccomp: compiled filter has a bad size (%lld bytes)", (long long)size);
    f->prog.filter = hd_xmalloc((size_t)size);
    if (pread(fd, f->prog.filter, (size_t)size, 0) != size)
        return hd_error_sys(err, "seccomp: read the compiled filter");
    f->prog.len = (unsigned short)(size / sizeof(struct sock_filter));
    return 0;
}

/* ---- cache of compiled programs ---------------------------------------- */

/*
 * The cache key is everything that shapes the program, spelled out ("key
 * material"); the file is named by a 64-bit FNV-1a hash of it and starts with
 * the material itself, which a reader compares in full, so a hash collision
 * is a cache miss, never a wrong filter. (No OpenSSL here: initialising it
 * costs more than the compile we are saving.)
 */
struct cache_key {
    char *material;
    size_t len;
    char name[17];
};

static void material_add(struct cache_key *k, const void *data, size_t len)
{
    k->material = hd_xrealloc(k->material, k->len + len);
    memcpy(k->material + k->len, data, len);
    k->len += len;
}

static void cache_key_make(struct cache_key *k, const char *profile, uint64_t caps, const char *bytes, size_t len)
{
    const struct scmp_version *v = seccomp_version();
    char head[256];
    int n = snprintf(head, sizeof(head), "%s|%s|%u.%u.%u|%s|%llx|", SECCOMP_CACHE_TAG, HEDGE_VERSION, v->major,
                     v->minor, v->micro, profile, (unsigned long long)caps);
    material_add(k, head, (size_t)n);
    for (size_t i = 0; i < ARRAY_SIZE(default_denied); i++) {
        material_add(k, default_denied[i].name, strlen(default_denied[i].name) + 1);
        material_add(k, &default_denied[i].unless_cap, sizeof(int));
    }
    material_add(k, namespace_flags, sizeof(namespace_flags));
    if (bytes)
        material_add(k, bytes, len);
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < k->len; i++)
        h = (h ^ (unsigned char)k->material[i]) * 0x100000001b3ULL;
    snprintf(k->name, sizeof(k->name), "%016llx", (unsigned long long)h);
}

/* File layout: u64 material length, material, BPF program. */
static struct hd_seccomp *cache_read(const char *path, const struct cache_key *k)
{
    cleanup_free char *data = NULL;
    size_t len = 0;
    hd_error_t ignored = NULL;
    if (hd_read_file(path, &data, &len, &ignored) < 0) {
        hd_error_free(&ignored);
        return NULL;
    }
    uint64_t mlen;
    if (len < sizeof(mlen))
        return NULL;
    memcpy(&mlen, data, sizeof(mlen));
    if (mlen != k->len || len - sizeof(mlen) < mlen || memcmp(data + sizeof(mlen), k->material, k->len) != 0)
        return NULL;
    size_t prog_len = len - sizeof(mlen) - k->len;
    if (prog_len == 0 || prog_len % sizeof(struct sock_filter) != 0 ||
        prog_len / sizeof(struct sock_filter) > BPF_MAXINSNS)
        return NULL;
    struct hd_seccomp *f = hd_xcalloc(1, sizeof(*f));
    f->prog.filter = hd_xmalloc(prog_len);
    memcpy(f->prog.filter, data + sizeof(mlen) + k->len, prog_len);
    f->prog.len = (unsigned short)(prog_len / sizeof(struct sock_filter));
    return f;
}

/* Best effort: a cache that cannot be written only costs the next start time. */
static void cache_write(const char *dir, const char *path, const struct cache_key *k, const struct hd_seccomp *f)
{
    size_t prog_len = f->prog.len * sizeof(struct sock_filter);
    uint64_t mlen = k->len;
    cleanup_free char *data = hd_xmalloc(sizeof(mlen) + k->len + prog_len);
    memcpy(data, &mlen, sizeof(mlen));
    memcpy(data + sizeof(mlen), k->material, k->len);
    memcpy(data + sizeof(mlen) + k->len, f->prog.filter, prog_len);
    hd_error_t ignored = NULL;
    if (hd_mkdir_p(dir, 0700, &ignored) < 0 ||
        hd_write_file_atomic(path, data, sizeof(mlen) + k->len + prog_len, &ignored) < 0)
        hd_error_free(&ignored);
}

static int build_uncached(const char *profile, const char *bytes, size_t len, uint64_t caps, struct hd_seccomp **out,
                          hd_error_t *err);

int hd_seccomp_build(const struct hd_security *sec, uint64_t caps, struct hd_seccomp **out, hd_error_t *err)
{
    *out = NULL;
    const char *profile = sec->seccomp ? sec->seccomp : "default";
    if (strcmp(profile, "unconfined") == 0)
        return 0;
    cleanup_free char *bytes = NULL;
    size_t len = 0;
    if (strcmp(profile, "default") != 0) {
        if (hd_read_file(profile, &bytes, &len, NULL) < 0)
            return hd_error_sys(err, "security.seccomp: %s", profile);
    }
    struct cache_key key = {0};
    cache_key_make(&key, profile, caps, bytes, len);
    cleanup_free char *material = key.material;
    cleanup_free char *dir = hd_xasprintf("%s/seccomp-cache", hd_runtime_dir());
    cleanup_free char *path = hd_xasprintf("%s/%s.bpf", dir, key.name);
    *out = cache_read(path, &key);
    if (*out)
        return 0;
    if (build_uncached(profile, bytes, len, caps, out, err) < 0)
        return -1;
    if (*out)
        cache_write(dir, path, &key, *out);
    return 0;
}

static int build_uncached(const char *profile, const char *bytes, size_t len, uint64_t caps, struct hd_seccomp **out,
                          hd_error_t *err)
{
    scmp_filter_ctx ctx = NULL;
    if (strcmp(profile, "default") == 0) {
        ctx = seccomp_init(SCMP_ACT_ALLOW);
        if (ctx == NULL)
            return hd_error_set(err, ENOMEM, "seccomp: seccomp_init");
    } else if (json_profile(profile, bytes, len, caps, &ctx, err) < 0) {
        return -1;
    }
    int ret = -1;
    struct hd_seccomp *f = hd_xcalloc(1, sizeof(*f));
#ifdef __x86_64__
    /* x32 needs no rules of its own: an x86_64 filter kills x32 calls (nr >= 0x40000000) */
    int r = seccomp_arch_add(ctx, SCMP_ARCH_X86);
    if (r < 0 && r != -EEXIST) {
        hd_error_set(err, -r, "seccomp: add the i386 ABI");
        goto out;
    }
#endif
    if (strcmp(profile, "default") == 0 && default_profile(ctx, caps, err) < 0)
        goto out;
    if (export_program(ctx, f, err) < 0)
        goto out;
    *out = get_and_reset(&f);
    ret = 0;
out:
    hd_seccomp_free(f);
    seccomp_release(ctx);
    return ret;
}

int hd_seccomp_load_listener(const struct hd_seccomp *filter, hd_error_t *err)
{
    if (filter == NULL)
        return hd_error_set(err, 0, "seccomp: a listener needs a filter");
    long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &filter->prog);
    if (fd < 0)
        return hd_error_sys(err, "seccomp: load the filter with a listener");
    return (int)fd;
}

int hd_seccomp_load(const struct hd_seccomp *filter, hd_error_t *err)
{
    if (filter == NULL)
        return 0;
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &filter->prog) < 0)
        return hd_error_sys(err, "seccomp: load the filter");
    return 0;
}

unsigned hd_seccomp_length(const struct hd_seccomp *filter)
{
    return filter ? filter->prog.len : 0;
}

void hd_seccomp_free(struct hd_seccomp *filter)
{
    if (filter == NULL)
        return;
    free(filter->prog.filter);
    free(filter);
}
