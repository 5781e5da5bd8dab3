/*
 * test_spawn.c - base/spawn: a child's set-up failure comes back as the
 * parent's error with the child's message and exit code; an exec is EOF; a
 * parent step that fails after the child already failed reports the child.
 * base/child: the signal masks read from /proc/self/status, and a workload
 * that starts with default dispositions and an empty mask although hedge
 * ignored, caught and blocked signals when it spawned it.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "base/child.h"
#include "base/spawn.h"

__attribute__((noreturn)) static void child_fails(void *data, int go_fd, int report_fd)
{
    (void)data;
    hd_spawn_child_wait_go(go_fd);
    hd_child_fail(report_fd, HD_EXIT_NOT_FOUND, ENOENT, "exec %s", "nothing-here");
}

__attribute__((noreturn)) static void child_fails_at_once(void *data, int go_fd, int report_fd)
{
    (void)data;
    (void)go_fd;
    hd_child_fail(report_fd, HD_EXIT_HEDGE, 0, "set-up: %s", "broken");
}

__attribute__((noreturn)) static void child_execs(void *data, int go_fd, int report_fd)
{
    (void)data;
    if (go_fd >= 0)
        hd_spawn_child_wait_go(go_fd);
    char cmd[] = "true", path[] = "PATH=/usr/bin:/bin";
    char *argv[] = {cmd, NULL};
    char *env[] = {path, NULL};
    struct hd_exec_plan plan = {.argv = argv, .env = env};
    hd_child_exec(report_fd, &plan);
}

static void test_failure_report(void)
{
    struct hd_spawn_options o = {.what = "test", .cgroup_fd = -1, .go = true, .child = child_fails};
    struct hd_spawn s;
    hd_error_t err = NULL;
    CHECK(hd_spawn_start(&o, &s, &err) == 0);
    CHECK(s.pid > 0);
    CHECK(hd_spawn_finish(&s, &err) < 0);
    CHECK(err != NULL);
    if (err) {
        CHECK_STR(hd_error_text(err), "exec nothing-here: No such file or directory");
        CHECK(hd_error_exit_code(err) == HD_EXIT_NOT_FOUND);
    }
    CHECK(s.pid == -1); /* reaped */
    CHECK(s.report_fd == -1 && s.go_fd == -1);
    hd_error_free(&err);
}

__attribute__((noreturn)) static void child_checks_signals(void *data, int go_fd, int report_fd)
{
    (void)data;
    (void)go_fd;
    /* no signal ignored or blocked in the new program: awk reads its own status (one process, no shell
     * in between that could block or ignore something of its own) */
    char awk[] = "/usr/bin/awk", program[] = "/^Sig(Ign|Blk):/ && $2 !~ /^0+$/ { bad = 1 } END { exit bad }",
         status[] = "/proc/self/status", path[] = "PATH=/usr/bin:/bin";
    char *argv[] = {awk, program, status, NULL};
    char *env[] = {path, NULL};
    struct hd_exec_plan plan = {.argv = argv, .env = env};
    hd_child_exec(report_fd, &plan);
}

static void on_usr2(int sig)
{
    (void)sig;
}

static void test_exec_resets_signals(void)
{
    signal(SIGUSR1, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGRTMIN + 3, SIG_IGN);
    signal(SIGUSR2, on_usr2);
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGHUP);
    sigprocmask(SIG_BLOCK, &block, &old);
    struct hd_spawn_options o = {.what = "test", .cgroup_fd = -1, .child = child_checks_signals};
    struct hd_spawn s;
    hd_error_t err = NULL;
    CHECK(hd_spawn_start(&o, &s, &err) == 0);
    pid_t pid = s.pid;
    CHECK(hd_spawn_finish(&s, &err) == 0);
    int status = -1;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    sigprocmask(SIG_SETMASK, &old, NULL);
    signal(SIGUSR1, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGRTMIN + 3, SIG_DFL);
    signal(SIGUSR2, SIG_DFL);
    hd_error_free(&err);
}

static void test_parse_signal_masks(void)
{
    uint64_t touched = 0;
    const char *status = "Name:\tsh\nSigQ:\t0/95263\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n"
                         "SigBlk:\t0000000000010000\nSigIgn:\t0000000000001004\nSigCgt:\t0000000180000002\n"
                         "CapInh:\t0000000000000000\n";
    CHECK(hd_child_parse_signal_masks(status, &touched));
    CHECK(touched == 0x0000000180001006ULL);
    /* a line missing, cut short (a truncated read), or not hex: no answer, so the caller resets all */
    CHECK(!hd_child_parse_signal_masks("SigIgn:\t0000000000000000\n", &touched));
    CHECK(!hd_child_parse_signal_masks("SigIgn:\t0000000000000000\nSigCgt:\t00000000", &touched));
    CHECK(!hd_child_parse_signal_masks("SigIgn:\t00000000000000zz\nSigCgt:\t0000000000000000\n", &touched));
    CHECK(!hd_child_parse_signal_masks("", &touched));
}

static void test_exec(bool go)
{
    struct hd_spawn_options o = {.what = "test", .cgroup_fd = -1, .go = go, .child = child_execs};
    struct hd_spawn s;
    hd_error_t err = NULL;
    CHECK(hd_spawn_start(&o, &s, &err) == 0);
    pid_t pid = s.pid;
    CHECK(hd_spawn_finish(&s, &err) == 0);
    CHECK(err == NULL);
    CHECK(s.pid == pid); /* the caller owns and reaps it */
    int status = -1;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_abort_reports_child(void)
{
    struct hd_spawn_options o = {.what = "test", .cgroup_fd = -1, .go = true, .child = child_fails_at_once};
    struct hd_spawn s;
    hd_error_t err = NULL;
    CHECK(hd_spawn_start(&o, &s, &err) == 0);
    /* let the child fail first, then fail the parent's own step */
    while (waitid(P_PID, (id_t)s.pid, NULL, WEXITED | WNOWAIT) < 0 && errno == EINTR)
        ;
    hd_error_set(&err, 0, "parent step");
    CHECK(hd_spawn_abort(&s, &err) == -1);
    CHECK(err != NULL);
    if (err)
        CHECK_STR(hd_error_text(err), "set-up: broken");
    CHECK(s.pid == -1);
    hd_error_free(&err);
}

int main(void)
{
    signal(SIGPIPE, SIG_DFL);
    test_failure_report();
    test_exec(true);
    test_exec(false);
    test_abort_reports_child();
    test_parse_signal_masks();
    test_exec_resets_signals();
    CHECK_DONE();
}
