/*
 * fast_run.c - `hedge run -i process -- COMMAND...` before the C library starts (the static hedge only).
 *
 * Why: on a virtual machine every cpuid instruction traps to the hypervisor (~7 us here), and glibc's
 * start-up probes the CPU and its caches with ~80 of them before main(): ~0.6 ms, most of what a bare
 * `hedge run -i process` cost beyond the workload's own start, which pays the same probe again in its
 * own loader (issue 18 part 3; docs/install.md, "The fast path of a bare process"). So the static `hedge` has its ELF entry
 * here: hd_fast_entry looks at the arguments and, for the plain case, does the whole run with raw
 * system calls and no C library at all; for anything else it jumps to glibc's _start and main() runs as
 * always.
 *
 * The plain case is `hedge run [-i process | --isolation process | --isolation=process] [--] COMMAND...`
 * with no other flag (without -i, the `--` is needed: it is what makes a bare process the default), on a
 * hybrid host (the group's directory in the unified hierarchy has cgroup.kill) or a v2 one
 * ($HEDGE_CGROUP_MODE may force either, as for the full path), with $HEDGE_CGROUP_PARENT's directory
 * already made (by the first full run) and, on v2, memory, cpu and pids enabled below it where the
 * hierarchy has them. It makes what the full path makes, in the same places and order (cgroup/cgroup.h,
 * runtime/run.c): the unified and v1 memory directories (hybrid) or the one v2 directory, the child born
 * in the cgroup with clone3(CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP) that enters the v1 memory
 * hierarchy itself, resets inherited ignored signals, unblocks all and execs (PATH search as
 * base/child.c), forwarding of SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2, the exit code (the
 * status, 128+N for signal N), the OOM line, and the removal of every directory (killing what the
 * workload left with cgroup.kill, removing sub-groups it made).
 *
 * Every failure before the workload has run is undone and then falls back to the full path, which does
 * it again and reports it with its usual message: a command that is not found, a missing cgroup parent,
 * a v1 host, a closed stdio descriptor, an old kernel (no clone3, no cgroup.kill). Nothing is ever done
 * twice: the workload's exec is the point of no return.
 *
 * Rules for this file, as nothing of libc is initialised when it runs (no TLS, no IRELATIVE relocations,
 * so neither errno nor memcpy nor the stack protector's canary exist): only the raw system calls below,
 * no library call, nothing that the compiler may turn into one (meson builds it with -ffreestanding
 * -fno-builtin -fno-stack-protector; tests/test_static_cli.py checks that the object needs no symbol).
 */
/* GCC turns zeroing and copying loops into memset and memcpy calls, which do not exist here. (A pragma, not a
 * flag in meson.build: clang, under the static analyzer, does not know the option.) */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-tree-loop-distribute-patterns")
#endif

#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>

#include "base/child.h"

#define FAST_CGROUP_ROOT "/sys/fs/cgroup"
#define FAST_PATH_MAX 4096
#define FAST_RMDIR_ROUNDS 200
#define FAST_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define FAST_CGROUP2_MAGIC 0x63677270
#define FAST_TMPFS_MAGIC 0x01021994
#define FAST_EXIT_HEDGE 125

/* The kernel's start: argc at the stack pointer. Back from hd_fast_run, glibc's _start gets that stack
 * as the kernel left it (rdx 0: no function for atexit, as for any static program). */
__asm__(".text\n"
        ".globl hd_fast_entry\n"
        ".type hd_fast_entry, @function\n"
        "hd_fast_entry:\n"
        "    mov %rsp, %rbx\n" /* callee-saved: survives hd_fast_run */
        "    mov %rsp, %rdi\n"
        "    and $-16, %rsp\n"
        "    call hd_fast_run\n"
        "    mov %rbx, %rsp\n"
        "    xor %edx, %edx\n"
        "    jmp _start\n"
        ".size hd_fast_entry, .-hd_fast_entry\n");

/* long fast_clone3(struct clone_args *args, size_t size, void (*fn)(void *), void *arg): as spawn.c's
 * spawn_clone3_call (a vfork child on its own stack calls fn(arg) and never returns). */
__asm__(".text\n"
        ".type fast_clone3, @function\n"
        "fast_clone3:\n"
        "    mov %rdx, %r8\n"
        "    mov %rcx, %r9\n"
        "    mov $435, %eax\n"
        "    syscall\n"
        "    test %rax, %rax\n"
        "    jnz 1f\n"
        "    xor %ebp, %ebp\n"
        "    mov %r9, %rdi\n"
        "    call *%r8\n"
        "    mov $60, %eax\n"
        "    mov $127, %edi\n"
        "    syscall\n"
        "1:  ret\n"
        ".size fast_clone3, .-fast_clone3\n");

long fast_clone3(struct clone_args *args, size_t size, void (*fn)(void *), void *arg);
void hd_fast_run(long *sp);

/* ---- system calls and the few string helpers, all without libc ---- */

static long sc(long n, long a, long b, long c, long d, long e)
{
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
                     : "rcx", "r11", "memory");
    return ret;
}

#define SC1(n, a) sc(n, (long)(a), 0, 0, 0, 0)
#define SC2(n, a, b) sc(n, (long)(a), (long)(b), 0, 0, 0)
#define SC3(n, a, b, c) sc(n, (long)(a), (long)(b), (long)(c), 0, 0)
#define SC4(n, a, b, c, d) sc(n, (long)(a), (long)(b), (long)(c), (long)(d), 0)

static size_t fast_strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

static bool fast_streq(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

/* The value of KEY in envp, or NULL. */
static const char *fast_getenv(char **envp, const char *key)
{
    size_t klen = fast_strlen(key);
    for (; *envp; envp++) {
        const char *e = *envp;
        size_t i = 0;
        while (i < klen && e[i] == key[i])
            i++;
        if (i == klen && e[i] == '=')
            return e + klen + 1;
    }
    return NULL;
}

/* A bounded string builder: ok turns false when the text does not fit. */
struct fast_buf {
    char *p;
    size_t len, cap;
    bool ok;
};

static void fb_init(struct fast_buf *b, char *mem, size_t cap)
{
    b->p = mem;
    b->len = 0;
    b->cap = cap;
    b->ok = true;
    mem[0] = '\0';
}

static void fb_add_n(struct fast_buf *b, const char *s, size_t n)
{
    if (!b->ok || b->len + n + 1 > b->cap) {
        b->ok = false;
        return;
    }
    for (size_t i = 0; i < n; i++)
        b->p[b->len++] = s[i];
    b->p[b->len] = '\0';
}

static void fb_add(struct fast_buf *b, const char *s)
{
    fb_add_n(b, s, fast_strlen(s));
}

/* dst = a "/" b [ "/" c ], false when it does not fit. */
static bool fast_join(char *dst, const char *a, const char *b, const char *c)
{
    struct fast_buf f;
    fb_init(&f, dst, FAST_PATH_MAX);
    fb_add(&f, a);
    fb_add(&f, "/");
    fb_add(&f, b);
    if (c) {
        fb_add(&f, "/");
        fb_add(&f, c);
    }
    return f.ok;
}

static void fast_write_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        long w = SC3(SYS_write, fd, s, n);
        if (w == -EINTR)
            continue;
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/* Read a whole small file (cgroup.controllers, /proc/self/status) into buf; its length, or -1. */
static long fast_read_file(const char *path, char *buf, size_t cap)
{
    long fd = SC3(SYS_open, path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    size_t len = 0;
    long n;
    while (len < cap - 1 && (n = SC3(SYS_read, fd, buf + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    SC1(SYS_close, fd);
    return (long)len;
}

/* Is word one of the space-separated words of text (a cgroup.controllers line)? */
static bool fast_word_listed(const char *text, const char *word)
{
    size_t n = fast_strlen(word);
    for (const char *p = text; *p;) {
        while (*p == ' ' || *p == '\n')
            p++;
        size_t i = 0;
        while (p[i] && p[i] != ' ' && p[i] != '\n')
            i++;
        if (i == n) {
            size_t k = 0;
            while (k < n && p[k] == word[k])
                k++;
            if (k == n)
                return true;
        }
        p += i;
    }
    return false;
}

/* The number after "key " in a cgroup key-value file (memory.events, memory.oom_control); 0 if absent. */
static uint64_t fast_key_value(const char *text, const char *key)
{
    size_t klen = fast_strlen(key);
    for (const char *line = text; *line;) {
        size_t i = 0;
        while (i < klen && line[i] == key[i])
            i++;
        if (i == klen && line[i] == ' ') {
            uint64_t v = 0;
            for (const char *p = line + klen + 1; *p >= '0' && *p <= '9'; p++)
                v = v * 10 + (uint64_t)(*p - '0');
            return v;
        }
        while (*line && *line != '\n')
            line++;
        if (*line)
            line++;
    }
    return 0;
}

/* A relative cgroup path below the top: no leading '/', no empty, "." or ".." part (cgroup.c's rule). */
static bool fast_parent_valid(const char *p)
{
    if (*p == '\0' || *p == '/')
        return false;
    while (*p) {
        size_t n = 0;
        while (p[n] && p[n] != '/')
            n++;
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        p += n;
        if (*p == '/' && *++p == '\0')
            return false;
    }
    return true;
}

static bool fast_is_cgroup2(const char *path, bool *tmpfs)
{
    /* struct statfs: f_type is the first field; 120 bytes on x86-64 */
    long fs[16];
    for (int i = 0; i < 16; i++) /* the kernel fills it; a loop, as no memset exists here */
        fs[i] = 0;
    if (SC2(SYS_statfs, path, fs) < 0)
        return false;
    if (tmpfs)
        *tmpfs = fs[0] == FAST_TMPFS_MAGIC;
    return fs[0] == FAST_CGROUP2_MAGIC;
}

static void fast_sleep_ms(long ms)
{
    struct {
        long sec, nsec;
    } ts = {0, ms * 1000000L};
    SC2(SYS_nanosleep, &ts, NULL);
}

/* ---- the run ---- */

struct fast_run {
    char **argv; /* the command */
    char **envp;
    bool v2;                     /* one directory (v2), or unified + v1 memory (hybrid) */
    char dirs[2][FAST_PATH_MAX]; /* made in this order, removed in the reverse one */
    int n_dirs;
    char *kill_dir;        /* the directory with cgroup.kill */
    int tasks_fd;          /* hybrid: the v1 memory group's tasks, written by the child */
    int oom_fd;            /* memory.oom_control (v1) or memory.events (v2), or -1 */
    volatile int exec_err; /* set by the child when it cannot exec (it shares our memory: posix_spawn's way) */
};

static char fast_child_stack[64 * 1024] __attribute__((aligned(16)));

/* The signals hedge forwards (runtime/run.c), plus SIGCHLD: blocked and taken with rt_sigtimedwait. */
static uint64_t fast_forwarded_mask(void)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD};
    uint64_t m = 0;
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        m |= 1ULL << (sigs[i] - 1);
    return m;
}

__attribute__((noreturn)) static void fast_child_fail(struct fast_run *r, long err)
{
    r->exec_err = err < 0 ? (int)-err : EIO;
    for (;;)
        SC1(SYS_exit, 127);
}

/* The vfork child, on fast_child_stack in our memory: enter the v1 memory group, reset signals, exec. */
static void fast_child(void *data)
{
    struct fast_run *r = data;
    if (r->tasks_fd >= 0) {
        long w = SC3(SYS_write, r->tasks_fd, "0", 1);
        if (w != 1)
            fast_child_fail(r, w < 0 ? w : -EIO);
    }
    /* exec keeps SIG_IGN: what the caller ignored goes back to the default (base/child.c) */
    char status[8192];
    uint64_t touched = ~(uint64_t)0; /* unreadable: every signal goes back to the default */
    if (fast_read_file("/proc/self/status", status, sizeof(status)) <= 0 ||
        !hd_child_parse_signal_masks(status, &touched))
        touched = ~(uint64_t)0;
    for (int sig = 1; sig <= 64; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP || !(touched >> (sig - 1) & 1))
            continue;
        struct {
            void *handler;
            unsigned long flags;
            void *restorer;
            uint64_t mask;
        } dfl = {NULL, 0, NULL, 0};
        SC4(SYS_rt_sigaction, sig, &dfl, NULL, 8);
    }
    uint64_t none = 0;
    SC4(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, 8);

    const char *cmd = r->argv[0];
    bool has_slash = false;
    for (const char *c = cmd; *c; c++)
        has_slash |= *c == '/';
    if (has_slash)
        fast_child_fail(r, SC3(SYS_execve, cmd, r->argv, r->envp));
    const char *path = fast_getenv(r->envp, "PATH");
    if (path == NULL)
        path = FAST_DEFAULT_PATH;
    char candidate[FAST_PATH_MAX];
    long err = -ENOENT;
    for (const char *p = path;;) {
        size_t n = 0;
        while (p[n] && p[n] != ':')
            n++;
        struct fast_buf b;
        fb_init(&b, candidate, sizeof(candidate));
        if (n > 0) {
            fb_add_n(&b, p, n);
            fb_add(&b, "/");
        }
        fb_add(&b, cmd);
        if (b.ok)
            err = SC3(SYS_execve, candidate, r->argv, r->envp);
        p += n;
        if (*p == '\0')
            break;
        p++;
    }
    fast_child_fail(r, err);
}

/* rmdir the sub-groups a workload made below dir, deepest first (cgroup.c's remove_sub_groups). */
static void fast_remove_sub_groups(const char *dir, int depth)
{
    if (depth > 32)
        return;
    long fd = SC3(SYS_open, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0)
        return;
    char buf[2048] __attribute__((aligned(8)));
    long n;
    for (;;) {
        for (size_t i = 0; i < sizeof(buf); i++)
            buf[i] = 0;
        n = SC3(SYS_getdents64, fd, buf, sizeof(buf));
        if (n <= 0)
            break;
        for (long off = 0; off < n;) {
            /* struct linux_dirent64: ino 8, off 8, reclen 2, type 1, name */
            unsigned short reclen = *(unsigned short *)(buf + off + 16);
            unsigned char type = *(unsigned char *)(buf + off + 18);
            const char *name = buf + off + 19;
            off += reclen;
            if (type != 4 /* DT_DIR */ || fast_streq(name, ".") || fast_streq(name, ".."))
                continue;
            char sub[FAST_PATH_MAX];
            if (!fast_join(sub, dir, name, NULL))
                continue;
            fast_remove_sub_groups(sub, depth + 1);
            SC1(SYS_rmdir, sub);
        }
    }
    SC1(SYS_close, fd);
}

/* Remove the directories, newest first. A refusal (tasks the workload left, sub-groups it made) kills
 * the group through cgroup.kill and retries for a few seconds, as hd_cgroup_destroy does. */
static void fast_remove_dirs(struct fast_run *r)
{
    bool killed = false;
    for (int i = r->n_dirs - 1; i >= 0; i--) {
        bool swept = false;
        for (int round = 0;; round++) {
            long e = SC1(SYS_rmdir, r->dirs[i]);
            if (e == 0 || e == -ENOENT)
                break;
            if (e == -EBUSY && !killed && r->kill_dir) {
                char kill[FAST_PATH_MAX];
                if (fast_join(kill, r->kill_dir, "cgroup.kill", NULL)) {
                    long fd = SC3(SYS_open, kill, O_WRONLY | O_CLOEXEC, 0);
                    if (fd >= 0) {
                        SC3(SYS_write, fd, "1", 1);
                        SC1(SYS_close, fd);
                    }
                }
                killed = true;
                continue;
            }
            if (e == -EBUSY && !swept) {
                fast_remove_sub_groups(r->dirs[i], 0);
                swept = true;
                continue;
            }
            if (e != -EBUSY || round >= FAST_RMDIR_ROUNDS) {
                struct fast_buf b;
                char line[FAST_PATH_MAX + 64];
                fb_init(&b, line, sizeof(line));
                fb_add(&b, "hedge: cleanup: remove cgroup ");
                fb_add(&b, r->dirs[i]);
                fb_add(&b, e == -EBUSY ? ": Device or resource busy\n" : ": failed\n");
                fast_write_all(2, line, b.len);
                break;
            }
            fast_sleep_ms(round < 5 ? 1 : round < 20 ? 5 : 20);
        }
    }
    r->n_dirs = 0;
}

static void fast_close(int *fd)
{
    if (*fd >= 0)
        SC1(SYS_close, *fd);
    *fd = -1;
}

/* Undo everything of a run that has not started its workload. */
static void fast_undo(struct fast_run *r)
{
    fast_close(&r->tasks_fd);
    fast_close(&r->oom_fd);
    fast_remove_dirs(r);
}

/* Which command does argv ask for? The index of its first word, or 0 when this is not the plain case. */
static int fast_parse(int argc, char **argv)
{
    if (argc < 3 || !fast_streq(argv[1], "run"))
        return 0;
    int i = 2;
    bool isolation = false;
    if (fast_streq(argv[i], "-iprocess") || fast_streq(argv[i], "--isolation=process")) {
        isolation = true;
        i++;
    } else if ((fast_streq(argv[i], "-i") || fast_streq(argv[i], "--isolation")) && i + 1 < argc &&
               fast_streq(argv[i + 1], "process")) {
        isolation = true;
        i += 2;
    }
    if (i < argc && fast_streq(argv[i], "--"))
        i++;
    else if (!isolation || i >= argc || argv[i][0] == '-')
        return 0; /* without -i, only `--` makes it a bare process; a flag is the full path's */
    if (i >= argc || argv[i][0] == '\0')
        return 0; /* no command, or an empty one: the full path says why */
    return i;
}

/* The controllers every v2 group gets where the hierarchy has them (cgroup/v2.c). No table of pointers:
 * nothing here may depend on a relocation. */
static const char *fast_v2_controller(int c)
{
    return c == 0 ? "memory" : c == 1 ? "cpu" : "pids";
}

/* Make the group's directories; false (with everything undone) for the full path to do it. */
static bool fast_make_cgroup(struct fast_run *r, const char *id)
{
    const char *mode = fast_getenv(r->envp, "HEDGE_CGROUP_MODE");
    const char *parent = fast_getenv(r->envp, "HEDGE_CGROUP_PARENT");
    if (parent == NULL || *parent == '\0')
        parent = "hedge";
    if (!fast_parent_valid(parent))
        return false;
    bool root_tmpfs = false;
    bool root_v2 = fast_is_cgroup2(FAST_CGROUP_ROOT, &root_tmpfs);
    const char *v2_root = root_v2 ? FAST_CGROUP_ROOT : NULL;
    if (v2_root == NULL && fast_is_cgroup2(FAST_CGROUP_ROOT "/unified", NULL))
        v2_root = FAST_CGROUP_ROOT "/unified";
    if (mode == NULL || *mode == '\0')
        r->v2 = root_v2;
    else if (fast_streq(mode, "v2"))
        r->v2 = true;
    else if (fast_streq(mode, "hybrid"))
        r->v2 = false;
    else
        return false; /* v1, or a bad value the full path names */
    if (v2_root == NULL || (!r->v2 && !(root_tmpfs || (mode && *mode))))
        return false;
    if (!r->v2 && root_v2)
        return false; /* hybrid forced on a v2 host: no v1 memory hierarchy */

    char path[FAST_PATH_MAX], text[1024];
    if (r->v2) {
        /* memory, cpu and pids are enabled below the parent wherever the hierarchy has them; if one is
         * not, the full path enables it */
        if (!fast_join(path, v2_root, "cgroup.controllers", NULL) || fast_read_file(path, text, sizeof(text)) < 0)
            return false;
        bool want[3];
        for (int c = 0; c < 3; c++)
            want[c] = fast_word_listed(text, fast_v2_controller(c));
        if (!fast_join(path, v2_root, parent, "cgroup.subtree_control") || fast_read_file(path, text, sizeof(text)) < 0)
            return false;
        for (int c = 0; c < 3; c++)
            if (want[c] && !fast_word_listed(text, fast_v2_controller(c)))
                return false;
        if (!fast_join(r->dirs[0], v2_root, parent, id) || SC2(SYS_mkdir, r->dirs[0], 0755) < 0)
            return false;
        r->n_dirs = 1;
        r->kill_dir = r->dirs[0];
        if (!fast_join(path, r->dirs[0], "cgroup.kill", NULL) || SC2(SYS_access, path, F_OK) < 0)
            return false;
        if (want[0] && fast_join(path, r->dirs[0], "memory.events", NULL))
            r->oom_fd = (int)SC3(SYS_open, path, O_RDONLY | O_CLOEXEC, 0);
        return true;
    }
    /* hybrid: the unified directory (it tracks and kills the tasks), then the v1 memory one */
    if (!fast_join(r->dirs[0], v2_root, parent, id) || SC2(SYS_mkdir, r->dirs[0], 0755) < 0)
        return false;
    r->n_dirs = 1;
    r->kill_dir = r->dirs[0];
    if (!fast_join(path, r->dirs[0], "cgroup.kill", NULL) || SC2(SYS_access, path, F_OK) < 0)
        return false; /* no cgroup.kill: the group needs every v1 hierarchy (cgroup/v1.c) */
    if (!fast_join(r->dirs[1], FAST_CGROUP_ROOT "/memory", parent, id) || SC2(SYS_mkdir, r->dirs[1], 0755) < 0)
        return false;
    r->n_dirs = 2;
    if (!fast_join(path, r->dirs[1], "memory.oom_control", NULL))
        return false;
    r->oom_fd = (int)SC3(SYS_open, path, O_RDONLY | O_CLOEXEC, 0);
    if (r->oom_fd < 0) /* not the memory hierarchy after all */
        return false;
    if (!fast_join(path, r->dirs[1], "tasks", NULL))
        return false;
    r->tasks_fd = (int)SC3(SYS_open, path, O_WRONLY | O_CLOEXEC, 0);
    return r->tasks_fd >= 0;
}

/* The whole plain run; returns only to fall back to the full path, with nothing left of its own. */
void hd_fast_run(long *sp)
{
    int argc = (int)sp[0];
    char **argv = (char **)(sp + 1);
    char **envp = argv + argc + 1;
    int cmd = fast_parse(argc, argv);
    if (cmd == 0)
        return;
    /* field by field: an initializer would zero the path buffers with a call to memset */
    struct fast_run r;
    r.argv = argv + cmd;
    r.envp = envp;
    r.v2 = false;
    r.n_dirs = 0;
    r.kill_dir = NULL;
    r.tasks_fd = r.oom_fd = -1;
    r.exec_err = 0;
    /* a closed stdio descriptor is the full path's error (base/child.c) */
    for (int fd = 0; fd < 3; fd++)
        if (SC2(SYS_fcntl, fd, F_GETFD) < 0)
            return;
    /* <runtime>/runs, as runtime/run.c makes it for a process (its run dir is named, not made) */
    const char *rundir = fast_getenv(envp, "HEDGE_RUN_DIR");
    if (rundir == NULL || *rundir == '\0')
        rundir = "/run/hedge";
    char runs[FAST_PATH_MAX];
    if (!fast_join(runs, rundir, "runs", NULL))
        return;
    long e = SC2(SYS_mkdir, runs, 0700);
    if (e < 0 && e != -EEXIST)
        return;
    /* the run's id: 12 hex digits, as hd_random_id */
    unsigned char raw[6] = {0, 0, 0, 0, 0, 0};
    if (SC3(SYS_getrandom, raw, sizeof(raw), 0) != (long)sizeof(raw))
        return;
    char id[13];
    for (int i = 0; i < 6; i++) {
        id[2 * i] = "0123456789abcdef"[raw[i] >> 4];
        id[2 * i + 1] = "0123456789abcdef"[raw[i] & 15];
    }
    id[12] = '\0';

    uint64_t mask = fast_forwarded_mask(), old_mask = 0;
    if (SC4(SYS_rt_sigprocmask, SIG_BLOCK, &mask, &old_mask, 8) < 0)
        return;
    long cgfd = -1;
    if (!fast_make_cgroup(&r, id))
        goto undo;
    cgfd = SC3(SYS_open, r.dirs[0], O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
    if (cgfd < 0)
        goto undo;
    struct clone_args args = {
        .flags = CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP,
        .exit_signal = SIGCHLD,
        .stack = (uint64_t)(uintptr_t)fast_child_stack,
        .stack_size = sizeof(fast_child_stack),
        .cgroup = (uint64_t)cgfd,
    };
    long pid = fast_clone3(&args, sizeof(args), fast_child, &r);
    /* the vfork child has exec'd or exited: exec_err says which */
    fast_close(&r.tasks_fd);
    SC1(SYS_close, cgfd);
    cgfd = -1;
    if (pid < 0)
        goto undo;
    if (r.exec_err) {
        /* the workload never ran: undo, and let the full path say why */
        sc(SYS_wait4, pid, 0, 0, 0, 0);
        goto undo;
    }

    /* Point of no return. Forward signals until the workload exits (runtime/run.c, hd_run); the
     * blocked signals are taken one by one (rt_sigtimedwait: no signalfd to make). */
    int status = 0;
    for (;;) {
        char info[128]; /* siginfo_t */
        long sig = SC4(SYS_rt_sigtimedwait, &mask, info, NULL, 8);
        if (sig > 0 && sig != SIGCHLD)
            SC2(SYS_kill, pid, sig);
        if (sig < 0 && sig != -EINTR && sig != -EAGAIN) {
            while (sc(SYS_wait4, pid, (long)&status, 0, 0, 0) == -EINTR) /* cannot happen; reap anyway */
                ;
            break;
        }
        if (sc(SYS_wait4, pid, (long)&status, 1 /* WNOHANG */, 0, 0) == pid)
            break;
    }
    int code, termsig = status & 0x7f;
    if (termsig == 0)
        code = (status >> 8) & 0xff;
    else if (termsig != 0x7f)
        code = 128 + termsig;
    else
        code = FAST_EXIT_HEDGE;
    bool oom = false;
    if (r.oom_fd >= 0) {
        char text[512];
        long len = sc(SYS_pread64, r.oom_fd, (long)text, sizeof(text) - 1, 0, 0);
        if (len > 0) {
            text[len] = '\0';
            oom = fast_key_value(text, "oom_kill") > 0;
        }
    }
    fast_close(&r.oom_fd);
    fast_remove_dirs(&r);
    if (oom) {
        static const char line[] =
            "hedge: OOM-killed: the kernel killed the workload because the host ran out of memory\n";
        fast_write_all(2, line, sizeof(line) - 1);
    }
    for (;;)
        SC1(SYS_exit_group, code);

undo:
    if (cgfd >= 0)
        SC1(SYS_close, cgfd);
    fast_undo(&r);
    SC4(SYS_rt_sigprocmask, SIG_SETMASK, &old_mask, NULL, 8);
}
