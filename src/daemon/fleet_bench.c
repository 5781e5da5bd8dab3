/*
 * fleet_bench.c - the fleet's bench job (docs/fleet.md, Jobs): `hedge bench`
 * on a spec from the operator, run as a child of hedged, and its JSON report
 * as the job's result.
 *
 * The request's fields are checked here and turned into flags; the spec goes
 * to a file in a private directory under the state dir (STATE/fleet-bench.XXXXXX,
 * also bench's -o), and `hedge bench --json` runs in its own session with its
 * stdout and stderr in memfds. hedged's loop goes on meanwhile: the child's
 * exit comes through SIGCHLD (hd_fleet_bench_reaped), and a timer stops it at
 * the request's timeout (SIGTERM to its process group, SIGKILL 5 s later),
 * or when hedged stops. After a kill -9 of hedged, the next hedged stops
 * what is left (hd_fleet_bench_clean_stale, by the pid file in the directory).
 * Then the report (stdout) or the reason (stderr's last line) is handed to
 * the fleet, and the directory is removed.
 */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/log.h"
#include "base/loop.h"
#include "base/util.h"
#include "daemon/daemon.h"

#define BENCH_TIMEOUT_DEFAULT_S 300
#define BENCH_TIMEOUT_MAX_S 3600
#define BENCH_RUNS_MAX 20
#define BENCH_KILL_AFTER_S 5.0
#define BENCH_OUTPUT_MAX (4 << 20) /* the report read back, at most */

struct hd_fleet_bench {
    struct hd_loop *loop;
    pid_t pid;
    int out_fd, err_fd;
    char *dir;
    double timeout;
    bool timed_out;
    struct hd_timer *timer;
    hd_fleet_bench_done done;
    void *ctx;
    struct hd_fleet_bench *next;
};

/* The bench's directory goes, with whatever bench left in it; a failure is only logged. */
static void bench_remove_dir(const char *dir)
{
    hd_error_t err = NULL;
    if (hd_rm_rf(dir, &err) < 0) {
        hd_log(HD_LOG_WARN, "fleet", "bench: %s", hd_error_text(err));
        hd_error_free(&err);
    }
}

static void bench_free(struct hd_fleet_bench *b)
{
    if (b->timer)
        hd_loop_cancel(b->loop, b->timer);
    if (b->out_fd >= 0)
        close(b->out_fd);
    if (b->err_fd >= 0)
        close(b->err_fd);
    if (b->dir)
        bench_remove_dir(b->dir);
    free(b->dir);
    free(b);
}

/* A bench a killed hedged left (its PR_SET_PDEATHSIG SIGTERM does not end a workload that runs to
 * completion): its process group is stopped (SIGTERM, SIGKILL after 5 s) when its pid file names a
 * process whose command line holds its directory (the spec's path), and the directory is removed. */
void hd_fleet_bench_clean_stale(const char *state_dir)
{
    cleanup_free char *pattern = hd_xasprintf("%s/fleet-bench.*", state_dir);
    glob_t g;
    if (glob(pattern, GLOB_NOSORT, NULL, &g) != 0)
        return;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        const char *dir = g.gl_pathv[i];
        cleanup_free char *pid_path = hd_xasprintf("%s/pid", dir), *pid_text = NULL, *cmdline = NULL;
        size_t len = 0;
        hd_error_t err = NULL;
        long pid = hd_read_file(pid_path, &pid_text, &len, &err) == 0 ? strtol(pid_text, NULL, 10) : 0;
        hd_error_free(&err);
        cleanup_free char *proc = hd_xasprintf("/proc/%ld/cmdline", pid);
        if (pid > 1 && hd_read_file(proc, &cmdline, &len, &err) == 0 && memmem(cmdline, len, dir, strlen(dir))) {
            hd_log(HD_LOG_WARN, "fleet", "bench (pid %ld) left by an earlier hedged: stopping it", pid);
            kill(-(pid_t)pid, SIGTERM); /* its workload too: then bench cleans up (cgroups) and exits */
            for (int k = 0; k < 50 && kill((pid_t)pid, 0) == 0; k++)
                usleep(100000);
            if (kill((pid_t)pid, 0) == 0)
                kill(-(pid_t)pid, SIGKILL);
        }
        hd_error_free(&err);
        bench_remove_dir(dir);
    }
    globfree(&g);
}

/* The request's fields as `hedge bench` flags; -1 with err naming the field. */
static int bench_args(const json_t *request, char ***argv, double *timeout, hd_error_t *err)
{
    json_t *spec = json_object_get(request, "spec"), *runs = json_object_get(request, "runs");
    json_t *port = json_object_get(request, "port"), *isolation = json_object_get(request, "isolation");
    json_t *duration = json_object_get(request, "duration"), *t = json_object_get(request, "timeout");
    if (!json_is_object(spec) || !json_is_string(json_object_get(spec, "name")))
        return hd_error_set(err, 0, "spec: must be a workload spec with a \"name\" (docs/spec.md)");
    if (runs && (!json_is_integer(runs) || json_integer_value(runs) < 1 || json_integer_value(runs) > BENCH_RUNS_MAX))
        return hd_error_set(err, 0, "runs: must be an integer 1..%d", BENCH_RUNS_MAX);
    if (port && (!json_is_integer(port) || json_integer_value(port) < 1 || json_integer_value(port) > 65535))
        return hd_error_set(err, 0, "port: must be a TCP port 1..65535 (left out: the spec runs to completion)");
    if (isolation && (!json_is_string(isolation) || !*json_string_value(isolation)))
        return hd_error_set(err, 0, "isolation: must be a string such as \"process,container\"");
    if (duration &&
        (!json_is_number(duration) || json_number_value(duration) <= 0 ||
         json_number_value(duration) > BENCH_TIMEOUT_MAX_S))
        return hd_error_set(err, 0, "duration: must be a number of seconds, above 0 and at most %d",
                            BENCH_TIMEOUT_MAX_S);
    if (t && (!json_is_number(t) || json_number_value(t) <= 0 || json_number_value(t) > BENCH_TIMEOUT_MAX_S))
        return hd_error_set(err, 0, "timeout: must be a number of seconds, above 0 and at most %d",
                            BENCH_TIMEOUT_MAX_S);
    *timeout = t ? json_number_value(t) : BENCH_TIMEOUT_DEFAULT_S;
    char text[32];
    hd_strv_push(argv, "hedge");
    hd_strv_push(argv, "bench");
    if (port) {
        snprintf(text, sizeof(text), "%lld", (long long)json_integer_value(port));
        hd_strv_push(argv, "--port");
        hd_strv_push(argv, text);
    } else {
        hd_strv_push(argv, "--run-to-completion");
    }
    snprintf(text, sizeof(text), "%lld", runs ? (long long)json_integer_value(runs) : 3LL);
    hd_strv_push(argv, "--runs");
    hd_strv_push(argv, text);
    hd_strv_push(argv, "--isolation");
    hd_strv_push(argv, isolation ? json_string_value(isolation) : "process");
    if (duration) {
        snprintf(text, sizeof(text), "%g", json_number_value(duration));
        hd_strv_push(argv, "--duration");
        hd_strv_push(argv, text);
    }
    hd_strv_push(argv, "--json");
    return 0;
}

static char *bench_read(int fd)
{
    off_t size = lseek(fd, 0, SEEK_END);
    if (size < 0)
        size = 0;
    if (size > BENCH_OUTPUT_MAX)
        size = BENCH_OUTPUT_MAX;
    char *buf = hd_xmalloc((size_t)size + 1);
    ssize_t n = pread(fd, buf, (size_t)size, 0);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

/* Why the bench failed: stderr's last line, without the CLI's "hedge bench: " or "hedge: ". */
static char *bench_reason(struct hd_fleet_bench *b, int status)
{
    if (b->timed_out)
        return hd_xasprintf("bench: no report within the timeout of %gs (stopped)", b->timeout);
    cleanup_free char *text = bench_read(b->err_fd);
    char *end = text + strlen(text);
    while (end > text && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' '))
        *--end = '\0';
    char *line = strrchr(text, '\n');
    line = line ? line + 1 : text;
    static const char *const prefixes[] = {"hedge bench: ", "hedge: ", "error: ", "bench: "};
    for (size_t i = 0; i < ARRAY_SIZE(prefixes); i++)
        if (strncmp(line, prefixes[i], strlen(prefixes[i])) == 0)
            line += strlen(prefixes[i]);
    if (*line)
        return hd_xasprintf("bench: %s", line);
    if (WIFSIGNALED(status))
        return hd_xasprintf("bench: hedge bench was killed by signal %d", WTERMSIG(status));
    return hd_xasprintf("bench: hedge bench exited with code %d and no report", WEXITSTATUS(status));
}

static void bench_kill(struct hd_loop *loop, void *data)
{
    struct hd_fleet_bench *b = data;
    b->timer = NULL;
    hd_log(HD_LOG_WARN, "fleet", "bench (pid %d): still running 5 s after SIGTERM: SIGKILL", (int)b->pid);
    kill(-b->pid, SIGKILL);
}

static void bench_timeout(struct hd_loop *loop, void *data)
{
    struct hd_fleet_bench *b = data;
    hd_log(HD_LOG_WARN, "fleet", "bench (pid %d): no report after %gs: stopping it", (int)b->pid, b->timeout);
    b->timed_out = true;
    kill(-b->pid, SIGTERM);
    b->timer = hd_loop_timer(loop, BENCH_KILL_AFTER_S, bench_kill, b);
}

int hd_fleet_bench_start(struct hd_fleet_bench **list, struct hd_loop *loop, const char *state_dir,
                         const json_t *request, hd_fleet_bench_done done, void *ctx, hd_error_t *err)
{
    cleanup_strv char **argv = NULL;
    double timeout = 0;
    if (bench_args(request, &argv, &timeout, err) < 0)
        return -1;
    struct hd_fleet_bench *b = hd_xcalloc(1, sizeof(*b));
    b->loop = loop;
    b->out_fd = b->err_fd = -1;
    b->timeout = timeout;
    b->done = done;
    b->ctx = ctx;
    b->dir = hd_xasprintf("%s/fleet-bench.XXXXXX", state_dir);
    if (!mkdtemp(b->dir)) {
        hd_error_sys(err, "bench: %s", b->dir);
        free(b->dir);
        b->dir = NULL;
        bench_free(b);
        return -1;
    }
    cleanup_free char *spec_path = hd_xasprintf("%s/spec.json", b->dir);
    cleanup_free char *out_dir = hd_xasprintf("%s/report", b->dir);
    cleanup_free char *text = json_dumps(json_object_get(request, "spec"), JSON_COMPACT);
    if (hd_write_file_atomic(spec_path, text, strlen(text), err) < 0) {
        bench_free(b);
        return -1;
    }
    hd_strv_push(&argv, "-f");
    hd_strv_push(&argv, spec_path);
    hd_strv_push(&argv, "-o");
    hd_strv_push(&argv, out_dir);
    b->out_fd = memfd_create("hedge-bench-out", MFD_CLOEXEC);
    b->err_fd = memfd_create("hedge-bench-err", MFD_CLOEXEC);
    if (b->out_fd < 0 || b->err_fd < 0) {
        hd_error_sys(err, "bench: memfd");
        bench_free(b);
        return -1;
    }
    cleanup_free char *hedge = hd_daemon_hedge_path();
    pid_t pid = fork();
    if (pid < 0) {
        hd_error_sys(err, "bench: fork");
        bench_free(b);
        return -1;
    }
    if (pid == 0) {
        hd_daemon_child_begin(b->out_fd, b->err_fd); /* a session of its own: the timeout stops bench and all */
        prctl(PR_SET_PDEATHSIG, SIGTERM);            /* it started; and so does hedged's end, kill -9 included */
        syscall(SYS_close_range, 3, ~0U, 0);         /* hedged's sockets stay hedged's, also if bench outlives it */
        hd_daemon_exec_hedge(hedge, argv);
    }
    b->pid = pid;
    cleanup_free char *pid_path = hd_xasprintf("%s/pid", b->dir), *pid_text = hd_xasprintf("%d\n", (int)pid);
    hd_error_t pid_err = NULL;
    if (hd_write_file_atomic(pid_path, pid_text, strlen(pid_text), &pid_err) < 0) { /* only for a later cleanup */
        hd_log(HD_LOG_WARN, "fleet", "bench: %s", hd_error_text(pid_err));
        hd_error_free(&pid_err);
    }
    b->timer = hd_loop_timer(loop, timeout, bench_timeout, b);
    b->next = *list;
    *list = b;
    hd_log(HD_LOG_INFO, "fleet", "bench of %s (pid %d), at most %gs",
           json_string_value(json_object_get(json_object_get(request, "spec"), "name")), (int)pid, timeout);
    return 0;
}

bool hd_fleet_bench_reaped(struct hd_fleet_bench **list, pid_t pid, int status)
{
    struct hd_fleet_bench **p = list;
    while (*p && (*p)->pid != pid)
        p = &(*p)->next;
    struct hd_fleet_bench *b = *p;
    if (!b)
        return false;
    *p = b->next;
    cleanup_free char *out = bench_read(b->out_fd);
    json_t *report = WIFEXITED(status) && WEXITSTATUS(status) == 0 && !b->timed_out ? json_loads(out, 0, NULL) : NULL;
    json_t *result;
    if (json_is_object(report)) {
        result = json_pack("{s:b,s:s,s:o}", "ok", 1, "type", "bench", "report", report);
    } else {
        json_decref(report);
        cleanup_free char *why = bench_reason(b, status);
        result = json_pack("{s:b,s:s}", "ok", 0, "error", why);
    }
    b->done(b->ctx, result);
    bench_free(b);
    return true;
}

/* hedged stops: each bench is stopped and reaped here (its directory goes too); no answer is given, the
 * restarted hedged answers the job as interrupted. */
void hd_fleet_bench_stop_all(struct hd_fleet_bench **list)
{
    while (*list) {
        struct hd_fleet_bench *b = *list;
        *list = b->next;
        kill(-b->pid, SIGTERM);
        int status;
        pid_t r = 0;
        for (int i = 0; i < 50 && (r = waitpid(b->pid, &status, WNOHANG)) == 0; i++)
            usleep(100000);
        if (r == 0) {
            kill(-b->pid, SIGKILL);
            waitpid(b->pid, &status, 0);
        }
        bench_free(b);
    }
}
