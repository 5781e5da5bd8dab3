/*
 * instance.c - hedged's side of a workload monitor (monitor.c): spawn one,
 * read its start report, re-adopt one after a daemon restart, signal it,
 * ask it for stats, and collect its exit record.
 *
 * An instance lives in <state>/instances/<id>/: monitor.json (what to run),
 * monitor.lock (flock held by a live monitor), state.json (pids, start time),
 * exit.json (written by the monitor as its last act), ctl.sock. Monitors
 * write their own messages (rare: failures to log or record) to
 * <state>/monitor.log.
 * Liveness is the lock, never a pid alone, so pid reuse cannot fool a
 * restarted hedged; the pidfd is opened before the lock is re-checked.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/log.h"
#include "daemon/daemon.h"
#include "daemon/monitor_proto.h"
#include "base/util.h"

static char *monitor_exe;
static struct hd_vm_pool *vm_pool;

void hd_instance_set_exe(const char *path)
{
    free(monitor_exe);
    monitor_exe = path ? hd_xstrdup(path) : NULL;
}

void hd_instance_set_pool(struct hd_vm_pool *pool)
{
    vm_pool = pool;
}

int hd_instance_exec_detached(const struct hd_daemon_config *cfg, const char *const argv[], int fd3, int fd4,
                              hd_error_t *err)
{
    cleanup_free char *mlog = hd_xasprintf("%s/monitor.log", cfg->state_dir);
    pid_t pid = fork();
    if (pid < 0)
        return hd_error_sys(err, "fork monitor");
    if (pid == 0) {
        /* Double fork: the monitor is nobody's child but init's (or a subreaper's),
         * in its own session, so neither hedged's death nor its signals reach it. */
        setsid();
        pid_t grandchild = fork();
        if (grandchild != 0)
            _exit(grandchild < 0 ? 1 : 0);
        /* The monitors' rare messages go to one file in the state dir: not to hedged's
         * stderr, which may be a pipe that a monitor must not hold open after hedged exits. */
        int devnull = open("/dev/null", O_RDWR);
        int logfd = open(mlog, O_WRONLY | O_CREAT | O_APPEND, 0600);
        /* move the two fds out of the way first, so that dup2 to 3 and 4 clobbers neither */
        int fd3_high = fcntl(fd3, F_DUPFD, 10);
        int fd4_high = fd4 >= 0 ? fcntl(fd4, F_DUPFD, 10) : -1;
        if (devnull < 0 || logfd < 0 || fd3_high < 0 || (fd4 >= 0 && fd4_high < 0) ||
            dup2(fd3_high, HD_MONITOR_REPORT_FD) < 0 || (fd4 >= 0 && dup2(fd4_high, HD_MONITOR_LOCK_FD) < 0) ||
            dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0 || dup2(logfd, 2) < 0)
            _exit(1);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        execv(monitor_exe, (char *const *)argv);
        _exit(HD_EXIT_NOT_FOUND);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return hd_error_set(err, 0, "fork monitor: the intermediate process failed");
    return 0;
}

static struct hd_instance *instance_new(const struct hd_daemon_config *cfg, const char *id)
{
    struct hd_instance *inst = hd_xcalloc(1, sizeof(*inst));
    snprintf(inst->id, sizeof(inst->id), "%s", id);
    inst->dir = hd_xasprintf("%s/instances/%s", cfg->state_dir, id);
    inst->report_fd = -1;
    inst->pidfd = -1;
    inst->monitor_pid = -1;
    inst->pid = -1;
    return inst;
}

void hd_instance_free(struct hd_instance *inst, bool remove_dir)
{
    if (inst == NULL)
        return;
    if (inst->report_fd >= 0)
        close(inst->report_fd);
    if (inst->pidfd >= 0)
        close(inst->pidfd);
    if (remove_dir) {
        hd_error_t err = NULL;
        if (hd_rm_rf(inst->dir, &err) < 0) {
            hd_log_error(HD_LOG_WARN, "instance", &err);
        }
    }
    free(inst->dir);
    free(inst->start_error);
    free(inst->run_dir);
    free(inst->secrets_dir);
    free(inst);
}

static json_t *instance_read_json(struct hd_instance *inst, const char *name)
{
    cleanup_free char *path = hd_xasprintf("%s/%s", inst->dir, name);
    return json_load_file(path, 0, NULL);
}

int hd_instance_spawn(const struct hd_daemon_config *cfg, const char *name, const char *spec_json, const char *id,
                      struct hd_instance **out, hd_error_t *err)
{
    struct hd_instance *inst = instance_new(cfg, id);
    int report[2] = {-1, -1};
    cleanup_free char *log = hd_xasprintf("%s/%s.log", cfg->log_dir, name);
    cleanup_free char *path = hd_xasprintf("%s/" HD_MONITOR_SPEC_FILE, inst->dir);
    cleanup_free char *lock_path = hd_xasprintf("%s/" HD_MONITOR_LOCK_FILE, inst->dir);
    cleanup_close int lock = -1;
    if (hd_mkdir_p(inst->dir, 0700, err) < 0 || hd_mkdir_p(cfg->log_dir, 0750, err) < 0)
        goto fail;
    json_t *spec = json_loads(spec_json, 0, NULL);
    json_t *m = json_pack("{s:s,s:o,s:s,s:I}", "name", name, "spec", spec ? spec : json_object(), "log", log,
                          "log_max_bytes", (json_int_t)cfg->log_max_bytes);
    char *text = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    int r = hd_write_file_atomic(path, text, strlen(text), err);
    free(text);
    if (r < 0)
        goto fail;
    if (pipe2(report, O_CLOEXEC) < 0) {
        hd_error_sys(err, "pipe");
        goto fail;
    }
    /* The lock is taken here, before the fork, and handed to the monitor as fd 4: so from
     * now until the monitor exits there is no moment in which a restarted hedged could
     * take a starting monitor for a dead one. */
    lock = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock < 0 || flock(lock, LOCK_EX | LOCK_NB) < 0) {
        hd_error_sys(err, "%s", lock_path);
        goto fail;
    }
    const char *argv[] = {"hedge-monitor", inst->dir, NULL};
    if (!hd_vm_pool_take(vm_pool, spec_json, inst->dir, report[1], lock) &&
        hd_instance_exec_detached(cfg, argv, report[1], lock, err) < 0)
        goto fail;
    close(report[1]);
    report[1] = -1;
    inst->report_fd = report[0];
    fcntl(inst->report_fd, F_SETFL, O_NONBLOCK);
    *out = inst;
    return 0;
fail:
    if (report[0] >= 0)
        close(report[0]);
    if (report[1] >= 0)
        close(report[1]);
    hd_instance_free(inst, true);
    return hd_error_prefix(err, "start monitor for %s", name);
}

/* state.json: pids and start time, written by the monitor before it reports. */
static int instance_read_state(struct hd_instance *inst, hd_error_t *err)
{
    json_t *s = instance_read_json(inst, HD_MONITOR_STATE_FILE);
    if (s == NULL)
        return hd_error_set(err, 0, "instance %s: no state.json", inst->id);
    inst->monitor_pid = (pid_t)json_integer_value(json_object_get(s, "monitor_pid"));
    inst->pid = (pid_t)json_integer_value(json_object_get(s, "pid"));
    inst->started_at = json_integer_value(json_object_get(s, "started_at"));
    inst->pid_start = (uint64_t)json_integer_value(json_object_get(s, "pid_start"));
    const char *vm_boot = json_string_value(json_object_get(s, "vm_boot"));
    snprintf(inst->vm_boot, sizeof(inst->vm_boot), "%s", vm_boot ? vm_boot : "");
    const char *run_dir = json_string_value(json_object_get(s, "run_dir"));
    free(inst->run_dir);
    inst->run_dir = run_dir && strstr(run_dir, "/runs/") ? hd_xstrdup(run_dir) : NULL;
    const char *secrets_dir = json_string_value(json_object_get(s, "secrets_dir"));
    free(inst->secrets_dir);
    inst->secrets_dir = secrets_dir && strstr(secrets_dir, "/secrets/") ? hd_xstrdup(secrets_dir) : NULL;
    json_decref(s);
    if (inst->monitor_pid <= 0)
        return hd_error_set(err, 0, "instance %s: bad state.json", inst->id);
    return 0;
}

int hd_instance_read_report(struct hd_instance *inst, hd_error_t *err)
{
    char buf[4096];
    ssize_t n;
    do
        n = read(inst->report_fd, buf, sizeof(buf) - 1);
    while (n < 0 && errno == EINTR);
    close(inst->report_fd);
    inst->report_fd = -1;
    if (n <= 0) {
        hd_instance_collect(inst);
        return hd_error_set(err, 0, "%s", inst->start_error ? inst->start_error : "monitor died before it reported");
    }
    buf[n] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    int code = HD_EXIT_HEDGE, pos = 0;
    if (strncmp(buf, "ok ", 3) == 0) {
        if (instance_read_state(inst, err) < 0)
            return -1;
        inst->pidfd = (int)syscall(SYS_pidfd_open, inst->monitor_pid, 0);
        if (inst->pidfd < 0)
            return hd_error_sys(err, "pidfd_open monitor %d", inst->monitor_pid);
        return 0;
    }
    if (sscanf(buf, "err %d %n", &code, &pos) >= 1 && pos > 0) {
        inst->exited = true;
        inst->exit.code = code;
        inst->start_error = hd_xstrdup(buf + pos);
        return hd_error_set_code(err, code, 0, "%s", buf + pos);
    }
    return hd_error_set(err, 0, "monitor: bad report \"%s\"", buf);
}

/* True when a live monitor holds the instance lock. */
static bool instance_locked(struct hd_instance *inst)
{
    cleanup_free char *path = hd_xasprintf("%s/" HD_MONITOR_LOCK_FILE, inst->dir);
    cleanup_close int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return false;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0)
        return errno == EWOULDBLOCK;
    flock(fd, LOCK_UN);
    return false;
}

void hd_instance_collect(struct hd_instance *inst)
{
    inst->exited = true;
    json_t *e = instance_read_json(inst, HD_MONITOR_EXIT_FILE);
    if (e == NULL) {
        inst->lost = true;
        /* The monitor died without its exit record (SIGKILL, OOM): its workload may still run,
         * supervised by nobody. Kill it if the pid still names the process it started. */
        if (inst->pid > 0 && inst->pid_start && hd_proc_start_time(inst->pid) == inst->pid_start)
            kill(inst->pid, SIGKILL);
        /* Its run dir goes too; its cgroup stays: only the dead monitor held it. */
        hd_error_t err = NULL;
        /* and its secrets' tmpfs: detached, so the values go even if the workload still holds a file */
        if (inst->secrets_dir && (umount2(inst->secrets_dir, MNT_DETACH) == 0 || errno == EINVAL))
            rmdir(inst->secrets_dir);
        if (inst->run_dir && hd_rm_rf(inst->run_dir, &err) < 0)
            hd_error_free(&err);
        inst->exit = (struct hd_exit){.code = HD_EXIT_HEDGE, .status = -1};
        if (!inst->start_error)
            inst->start_error = hd_xstrdup("the monitor exited without recording the workload's exit");
        return;
    }
    inst->exit.code = (int)json_integer_value(json_object_get(e, "code"));
    inst->exit.status = (int)json_integer_value(json_object_get(e, "status"));
    inst->exit.signal = (int)json_integer_value(json_object_get(e, "signal"));
    inst->exit.oom_killed = json_is_true(json_object_get(e, "oom_killed"));
    inst->finished_at = json_integer_value(json_object_get(e, "finished_at"));
    const char *se = json_string_value(json_object_get(e, "start_error"));
    if (se && !inst->start_error)
        inst->start_error = hd_xstrdup(se);
    json_decref(e);
}

int hd_instance_adopt(const struct hd_daemon_config *cfg, const char *id, struct hd_instance **out, hd_error_t *err)
{
    struct hd_instance *inst = instance_new(cfg, id);
    *out = inst;
    /* A monitor still starting its workload holds the lock but has no workload pid yet:
     * wait for it to report in its state.json (or to give up). */
    for (int i = 0; i < 600 && instance_locked(inst); i++) {
        if (instance_read_state(inst, err) == 0 && inst->pid > 0)
            break;
        hd_error_free(err);
        usleep(50 * 1000);
    }
    hd_error_free(err);
    if (instance_locked(inst) && instance_read_state(inst, err) == 0) {
        inst->pidfd = (int)syscall(SYS_pidfd_open, inst->monitor_pid, 0);
        /* the pid named the monitor if the lock is still held now that we hold a pidfd */
        if (inst->pidfd >= 0 && instance_locked(inst))
            return 1;
    }
    hd_error_free(err);
    if (inst->pidfd >= 0) {
        close(inst->pidfd);
        inst->pidfd = -1;
    }
    instance_read_state(inst, err);
    hd_error_free(err);
    hd_instance_collect(inst);
    return 0;
}

/* One request to the monitor's control socket; the reply line goes to reply. */
static int instance_request(struct hd_instance *inst, const char *req, char *reply, size_t size, hd_error_t *err)
{
    cleanup_close int dirfd = open(inst->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (dirfd < 0 || fd < 0)
        return hd_error_sys(err, "instance %s", inst->id);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof(addr.sun_path), "/proc/self/fd/%d/" HD_MONITOR_CTL_SOCKET, dirfd);
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
        return hd_error_sys(err, "monitor of instance %s", inst->id);
    if (write(fd, req, strlen(req)) < 0)
        return hd_error_sys(err, "monitor of instance %s: send", inst->id);
    ssize_t n = read(fd, reply, size - 1);
    if (n <= 0)
        return hd_error_set(err, n < 0 ? errno : 0, "monitor of instance %s: no reply", inst->id);
    reply[n] = '\0';
    reply[strcspn(reply, "\n")] = '\0';
    if (strncmp(reply, "ok", 2) != 0)
        return hd_error_set(err, 0, "monitor of instance %s: %s", inst->id, reply);
    return 0;
}

int hd_instance_signal(struct hd_instance *inst, int sig, hd_error_t *err)
{
    char req[32], reply[256];
    snprintf(req, sizeof(req), "signal %d\n", sig);
    return instance_request(inst, req, reply, sizeof(reply), err);
}

int hd_instance_stats(struct hd_instance *inst, struct hd_stats *stats, hd_error_t *err)
{
    char reply[256];
    if (instance_request(inst, "stats\n", reply, sizeof(reply), err) < 0)
        return -1;
    unsigned long long cpu = 0, mem = 0, pids = 0;
    if (sscanf(reply, "ok %llu %llu %llu", &cpu, &mem, &pids) != 3)
        return hd_error_set(err, 0, "monitor of instance %s: bad stats \"%s\"", inst->id, reply);
    stats->cpu_usage_ns = cpu;
    stats->memory_bytes = mem;
    stats->pids = pids;
    return 0;
}

int hd_instance_refresh_secrets(struct hd_instance *inst, const char *name, hd_error_t *err)
{
    char req[128], reply[512];
    snprintf(req, sizeof(req), "secrets %s\n", name);
    return instance_request(inst, req, reply, sizeof(reply), err);
}

void hd_instance_reap_orphan(const struct hd_daemon_config *cfg, const char *id)
{
    struct hd_instance *inst = NULL;
    hd_error_t err = NULL;
    if (hd_instance_adopt(cfg, id, &inst, &err) == 1) {
        hd_instance_signal(inst, SIGKILL, &err);
        hd_error_free(&err);
        /* The monitor cleans up the workload's run dir and cgroup as it exits. */
        struct pollfd p = {.fd = inst->pidfd, .events = POLLIN};
        poll(&p, 1, 5000);
    }
    hd_error_free(&err);
    hd_instance_free(inst, true);
}
