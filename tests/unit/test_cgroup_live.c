/*
 * test_cgroup_live.c - the cgroup API against the real cgroup filesystem, for
 * what the CLI does not show: hd_cgroup_stats, hd_cgroup_fd with
 * clone3(CLONE_INTO_CGROUP), hd_cgroup_oom_killed, hd_cgroup_kill_all.
 *
 * Runs every backend this host offers (the detected mode; plain v1 on a
 * hybrid host; v2 wherever a cgroup2 hierarchy is mounted, without limits if
 * it lacks the controllers) under its own parent hedge-unit-<pid>, removed at
 * the end. Needs root: skipped (exit 77) otherwise.
 */
#include <errno.h>
#include <glob.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "runtime/backend.h"
#include "cgroup/internal.h"
#include "check.h"
#include "base/util.h"

static char parent[64];

static void spin_ms(long ms)
{
    struct timespec start, now;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &start);
    do
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    while ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 < ms);
}

/* Child: wait for "go", burn 30 ms of CPU, touch `touch_mb` MiB, then sleep until killed. */
static pid_t start_child(int go_fd, int touch_mb)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    char c;
    if (read(go_fd, &c, 1) != 1)
        _exit(1);
    spin_ms(30);
    size_t len = (size_t)touch_mb << 20;
    char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem != MAP_FAILED)
        memset(mem, 1, len);
    for (;;)
        pause();
}

/* waitpid, bounded: a child the code under test failed to kill is a failure, not a hang. */
static int reap(pid_t pid)
{
    int status = 0;
    for (int i = 0; i < 500; i++) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        usleep(10000);
    }
    fprintf(stderr, "pid %d still running 5 s after the kill\n", (int)pid);
    CHECK(0);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return 0;
}

/* clone3 into the group's directory fd; the child checks /proc/self/cgroup names the group. */
static void check_clone_into_cgroup(struct hd_cgroup *cg, const char *name)
{
    struct clone_args args = {.flags = CLONE_INTO_CGROUP, .exit_signal = SIGCHLD, .cgroup = (uint64_t)hd_cgroup_fd(cg)};
    long pid = syscall(SYS_clone3, &args, sizeof(args));
    if (pid == 0) {
        char *text = NULL, *want = hd_xasprintf("0::/%s\n", name);
        hd_error_t err = NULL;
        if (hd_read_file("/proc/self/cgroup", &text, NULL, &err) < 0)
            _exit(2);
        _exit(strstr(text, want) ? 0 : 3);
    }
    CHECK(pid > 0);
    int status = 0;
    CHECK(waitpid((pid_t)pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void run_backend(const char *mode, bool limits)
{
    setenv("HEDGE_CGROUP_MODE", mode, 1);
    char id[16];
    hd_random_id(id, sizeof(id));
    cleanup_free char *name = hd_xasprintf("%s/%s", parent, id);
    struct hd_resources res = {0};
    if (limits) {
        res.memory = 64 << 20;
        res.pids = 32;
        res.cpus = 1;
    }
    struct hd_cgroup *cg = NULL;
    hd_error_t err = NULL;
    if (hd_cgroup_create(id, &res, &cg, &err) < 0) {
        fprintf(stderr, "%s: create: %s\n", mode, hd_error_text(err));
        hd_error_free(&err);
        CHECK(0);
        return;
    }
    cleanup_free char *path = hd_xstrdup(hd_cgroup_path(cg));
    CHECK(strstr(path, name) != NULL);
    CHECK(access(path, F_OK) == 0);
    bool v2 = strcmp(mode, "v2") == 0;
    CHECK(v2 ? hd_cgroup_fd(cg) >= 0 : hd_cgroup_fd(cg) == -1);

    int go[2];
    CHECK(pipe(go) == 0);
    pid_t pid = start_child(go[0], 8);
    CHECK(hd_cgroup_enter(cg, pid, &err) == 0);
    CHECK(write(go[1], "g", 1) == 1);
    close(go[0]);
    close(go[1]);
    /* Wait (bounded) until the child has burnt its CPU and touched its memory. */
    struct hd_stats stats = {0};
    for (int i = 0; i < 200; i++) {
        CHECK(hd_cgroup_stats(cg, &stats, &err) == 0);
        if (stats.cpu_usage_ns >= 30000000ULL && (!limits || stats.memory_bytes >= (8u << 20)))
            break;
        usleep(10000);
    }
    CHECK(stats.cpu_usage_ns >= 30000000ULL);
    if (limits) {
        CHECK(stats.memory_bytes >= (8u << 20));
        CHECK(stats.memory_peak_bytes >= stats.memory_bytes);
    }
    /* v1 and hybrid count tasks with or without a pids limit (a lean hybrid group: cgroup.threads) */
    if (limits || !v2)
        CHECK(stats.pids == 1);
    if (v2)
        check_clone_into_cgroup(cg, name);

    CHECK(hd_cgroup_kill_all(cg, &err) == 0);
    int status = reap(pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    CHECK(!hd_cgroup_oom_killed(cg));
    CHECK(hd_cgroup_destroy(cg, &err) == 0);
    if (err) {
        fprintf(stderr, "%s: %s\n", mode, hd_error_text(err));
        hd_error_free(&err);
    }
    CHECK(access(path, F_OK) < 0 && errno == ENOENT);
}

/*
 * A cpuset of CPU 0: the new directory (and the parent made for it) is filled from above, a
 * child enters it by itself (the entry's tasks file), runs on CPU 0 only, and destroy removes
 * the cpuset directory with the others. An update to the parent's CPUs is written too.
 */
static void run_cpuset(const char *mode)
{
    setenv("HEDGE_CGROUP_MODE", mode, 1);
    char id[16];
    hd_random_id(id, sizeof(id));
    struct hd_resources res = {0};
    snprintf(res.cpuset_cpus, sizeof(res.cpuset_cpus), "0");
    struct hd_cgroup *cg = NULL;
    hd_error_t err = NULL;
    if (hd_cgroup_create(id, &res, &cg, &err) < 0) {
        fprintf(stderr, "%s: cpuset create: %s\n", mode, hd_error_text(err));
        hd_error_free(&err);
        CHECK(0);
        return;
    }
    cleanup_free char *dir = hd_xasprintf("/sys/fs/cgroup/cpuset/%s/%s", parent, id);
    cleanup_free char *cpus = NULL, *mems = NULL;
    CHECK(cgroup_read(dir, "cpuset.cpus", &cpus, &err) == 0 && strcmp(cpus, "0\n") == 0);
    CHECK(cgroup_read(dir, "cpuset.mems", &mems, &err) == 0 && mems[0] != '\n');
    struct hd_cgroup_entry entry;
    CHECK(hd_cgroup_entry_open(cg, &entry, &err) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        const char *failed = NULL;
        cpu_set_t set;
        if (hd_cgroup_entry_enter(&entry, &failed) < 0 || sched_getaffinity(0, sizeof(set), &set) < 0)
            _exit(2);
        _exit(CPU_COUNT(&set) == 1 && CPU_ISSET(0, &set) ? 0 : 3);
    }
    hd_cgroup_entry_close(&entry);
    int status = reap(pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    struct hd_resources wider = {0};
    snprintf(wider.cpuset_cpus, sizeof(wider.cpuset_cpus), "0-%ld", sysconf(_SC_NPROCESSORS_ONLN) - 1);
    CHECK(hd_cgroup_update(cg, &wider, &err) == 0);
    cleanup_free char *after = NULL;
    CHECK(cgroup_read(dir, "cpuset.cpus", &after, &err) == 0 &&
          strncmp(after, wider.cpuset_cpus, strlen(after) - 1) == 0);
    CHECK(hd_cgroup_destroy(cg, &err) == 0);
    if (err) {
        fprintf(stderr, "%s: %s\n", mode, hd_error_text(err));
        hd_error_free(&err);
    }
    CHECK(access(dir, F_OK) < 0 && errno == ENOENT);
}

/* A child that allocates past a 16M limit is OOM-killed, and the group says so. */
static void run_oom(const char *mode)
{
    setenv("HEDGE_CGROUP_MODE", mode, 1);
    char id[16];
    hd_random_id(id, sizeof(id));
    struct hd_resources res = {.memory = 16 << 20};
    struct hd_cgroup *cg = NULL;
    hd_error_t err = NULL;
    if (hd_cgroup_create(id, &res, &cg, &err) < 0) {
        fprintf(stderr, "%s: create: %s\n", mode, hd_error_text(err));
        hd_error_free(&err);
        CHECK(0);
        return;
    }
    int go[2];
    CHECK(pipe(go) == 0);
    pid_t pid = start_child(go[0], 64);
    CHECK(hd_cgroup_enter(cg, pid, &err) == 0);
    CHECK(write(go[1], "g", 1) == 1);
    close(go[0]);
    close(go[1]);
    int status = reap(pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    CHECK(hd_cgroup_oom_killed(cg));
    CHECK(hd_cgroup_destroy(cg, &err) == 0);
    hd_error_free(&err);
}

/*
 * The v2 kill path for kernels without cgroup.kill (this one has it, so call the
 * fallback directly): a child and three grandchildren that keep forking
 * short-lived tasks; freeze, SIGKILL, thaw must leave the group empty.
 */
static void run_v2_freeze_kill(void)
{
    setenv("HEDGE_CGROUP_MODE", "v2", 1);
    char id[16];
    hd_random_id(id, sizeof(id));
    struct hd_resources res = {0};
    struct hd_cgroup *cg = NULL;
    hd_error_t err = NULL;
    if (hd_cgroup_create(id, &res, &cg, &err) < 0) {
        fprintf(stderr, "v2: create: %s\n", hd_error_text(err));
        hd_error_free(&err);
        CHECK(0);
        return;
    }
    int go[2];
    CHECK(pipe(go) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        char c;
        if (read(go[0], &c, 1) != 1)
            _exit(1);
        for (int i = 0; i < 3; i++) {
            if (fork() == 0) {
                for (;;) {
                    pid_t p = fork();
                    if (p == 0)
                        _exit(0);
                    if (p > 0)
                        waitpid(p, NULL, 0);
                }
            }
        }
        for (;;)
            pause();
    }
    CHECK(hd_cgroup_enter(cg, pid, &err) == 0);
    CHECK(write(go[1], "g", 1) == 1);
    close(go[0]);
    close(go[1]);
    usleep(50000);
    const char *dir = hd_cgroup_path(cg);
    CHECK(!cgroup_is_empty(dir));
    CHECK(cgroup_v2_freeze_and_kill(dir, &err) == 0);
    int status = reap(pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    bool empty = false;
    for (int i = 0; i < 500 && !(empty = cgroup_is_empty(dir)); i++)
        usleep(10000);
    CHECK(empty);
    uint64_t frozen = 1;
    CHECK(cgroup_read_key(dir, "cgroup.events", "frozen", &frozen, &err) == 0 && frozen == 0);
    if (err) {
        fprintf(stderr, "v2 freeze kill: %s\n", hd_error_text(err));
        hd_error_free(&err);
    }
    CHECK(hd_cgroup_destroy(cg, &err) == 0);
    hd_error_free(&err);
}

int main(void)
{
    if (getuid() != 0) {
        fprintf(stderr, "skipped: needs root to make cgroups\n");
        return 77;
    }
    snprintf(parent, sizeof(parent), "hedge-unit-%d", (int)getpid());
    setenv("HEDGE_CGROUP_PARENT", parent, 1);
    unsetenv("HEDGE_CGROUP_MODE");
    enum hd_cgroup_mode host = hd_cgroup_detect();
    const char *root2 = cgroup_v2_root();

    if (host != HD_CGROUP_V2) {
        run_backend(hd_cgroup_mode_name(host), true);
        run_oom(hd_cgroup_mode_name(host));
        /* no limits: on hybrid the lean group (memory and unified only; CPU time from cgroup2) */
        run_backend(hd_cgroup_mode_name(host), false);
        if (access("/sys/fs/cgroup/cpuset/cpuset.cpus", F_OK) == 0) {
            run_cpuset(hd_cgroup_mode_name(host));
            if (host == HD_CGROUP_HYBRID)
                run_cpuset("v1"); /* every hierarchy made, not a lean group */
        }
        if (host == HD_CGROUP_HYBRID)
            run_backend("v1", true);
    }
    if (root2) {
        /* On a hybrid host the unified hierarchy may carry no controller: then no limits. */
        cleanup_free char *controllers = NULL;
        hd_error_t err = NULL;
        bool has_all = cgroup_read(root2, "cgroup.controllers", &controllers, &err) == 0 &&
            strstr(controllers, "memory") && strstr(controllers, "pids") && strstr(controllers, "cpu");
        hd_error_free(&err);
        run_backend("v2", has_all);
        if (has_all)
            run_oom("v2");
        run_v2_freeze_kill();
    }

    /* Remove this test's parent in every hierarchy; each must be empty by now. */
    glob_t found = {0};
    cleanup_free char *pattern = hd_xasprintf("/sys/fs/cgroup/*/%s", parent);
    glob(pattern, GLOB_ONLYDIR, NULL, &found);
    cleanup_free char *top = hd_xasprintf("/sys/fs/cgroup/%s", parent);
    for (size_t i = 0; i < found.gl_pathc; i++)
        CHECK(rmdir(found.gl_pathv[i]) == 0);
    if (access(top, F_OK) == 0)
        CHECK(rmdir(top) == 0);
    globfree(&found);
    CHECK_DONE();
}
