/*
 * lifecycle.c - the verbs that change a container: create, start, run, kill,
 * delete.
 *
 * create turns the bundle into a hedge spec (config.c), lets the runtime
 * create the workload (cgroup, run dir, mounts prepared) and start it in the
 * hold mode of backend.h: the container's first process does all its set-up,
 * reports ready, and waits in open(2) of <root>/<id>/exec.fifo. create then
 * writes state.json and the pid file and exits, releasing the workload (its
 * processes, cgroup and run dir stay; the engine's subreaper - conmon, the
 * containerd shim - inherits the process and collects its exit status).
 * start opens the FIFO for reading, which lets the process exec, and removes
 * the FIFO. delete kills what is left and removes the cgroup, the run dir and
 * the state dir (state.c). run is create + start, then in the foreground it
 * forwards signals, waits and deletes.
 */
#include "oci/oci.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/util.h"
#include "cgroup/cgroup.h"
#include "runtime/backend.h"
#include "runtime/run.h"

struct create_flags {
    const char *bundle;
    const char *pid_file;
    const char *console_socket;
    const char *preserve_fds;
    bool no_pivot, no_new_keyring, detach, keep, no_subreaper;
};

char *oci_now_rfc3339(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char buf[64];
    size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, sizeof(buf) - n, ".%09ldZ", ts.tv_nsec);
    return hd_xstrdup(buf);
}

static int check_create_flags(const struct create_flags *f, hd_error_t *err)
{
    /* --no-pivot: hedge always uses pivot_root; --no-new-keyring: hedge never makes a session
     * keyring (its seccomp filter refuses keyctl), which is what the flag asks for. */
    return 0;
}

/* Apply the config's rlimits and oomScoreAdj to ourselves: the container's process inherits them. */
static int apply_inherited_limits(const struct oci_config *cfg, hd_error_t *err)
{
    for (int i = 0; i < cfg->n_rlimits; i++)
        if (setrlimit(cfg->rlimits[i].resource, &cfg->rlimits[i].limit) < 0)
            return hd_error_sys(err, "%s: setrlimit %llu:%llu", cfg->rlimits[i].name,
                                (unsigned long long)cfg->rlimits[i].limit.rlim_cur,
                                (unsigned long long)cfg->rlimits[i].limit.rlim_max);
    if (cfg->have_oom_score_adj) {
        char value[16];
        snprintf(value, sizeof(value), "%d", cfg->oom_score_adj);
        if (hd_write_file("/proc/self/oom_score_adj", value, strlen(value), err) < 0)
            return hd_error_prefix(err, "process.oomScoreAdj");
    }
    return 0;
}

int oci_write_pid_file(const char *path, pid_t pid, hd_error_t *err)
{
    char text[16];
    snprintf(text, sizeof(text), "%d", (int)pid);
    if (hd_write_file_atomic(path, text, strlen(text), err) < 0)
        return hd_error_prefix(err, "--pid-file");
    return 0;
}

/*
 * Create the container id from the bundle, its process held before exec.
 * On success *w_out is the started workload and the state is saved.
 */
/*
 * process.terminal: the console connection the container's process inherits (cfg->console_fd). With
 * --console-socket, that socket (runc's rules: it needs a terminal, and a terminal that nobody in the
 * foreground relays needs it); without, a foreground run relays the terminal itself (*relay_fd).
 */
static int open_console(struct oci_config *cfg, const struct create_flags *f, bool foreground, int *relay_fd,
                        hd_error_t *err)
{
    bool socket_given = f->console_socket && *f->console_socket;
    if (!cfg->terminal) {
        if (socket_given)
            return hd_error_set(err, 0, "--console-socket: the config has no terminal (process.terminal is false)");
        return 0;
    }
    if (socket_given)
        return (cfg->console_fd = oci_console_connect(f->console_socket, err)) < 0 ? -1 : 0;
    if (!foreground)
        return hd_error_set(err, 0, "process.terminal: a detached container needs --console-socket for its terminal");
    return oci_console_pair(relay_fd, &cfg->console_fd, err);
}

static int create_container(const char *id, const struct create_flags *f, bool foreground, int *relay_fd,
                            struct hd_workload **w_out, struct oci_config **cfg_out, hd_error_t *err)
{
    if (oci_id_check(id, err) < 0 || check_create_flags(f, err) < 0)
        return -1;
    struct oci_config *cfg = NULL;
    if (oci_config_load(f->bundle ? f->bundle : ".", id, &cfg, err) < 0)
        return -1;
    if (oci_namespaces_open(cfg, err) < 0 || oci_time_ns_open(cfg, err) < 0) { /* first, as runc opens them */
        oci_config_free(cfg);
        return -1;
    }
    cfg->id = id;
    if (oci_pass_fds_setup(cfg, f->preserve_fds, true, err) < 0) {
        oci_config_free(cfg);
        return -1;
    }
    if (cfg->n_mounts_skipped > 0)
        oci_log("warning",
                "mounts: the config's %zu mounts are not made: linux.namespaces has no mount entry, so the "
                "container shares the host's mount namespace and only chroots into root.path (runc would mount "
                "them on the host's mount table)",
                cfg->n_mounts_skipped);
    if (open_console(cfg, f, foreground, relay_fd, err) < 0 || oci_listener_connect(cfg, err) < 0) {
        oci_config_free(cfg);
        return hd_error_prefix(err, "create %s", id);
    }
    cleanup_free char *dir = oci_state_dir(id);
    cleanup_free char *fifo_path = oci_fifo_path(id);
    struct hd_workload *w = NULL;
    cleanup_close int fifo = -1;
    cleanup_free char *created = NULL; /* declared before the first goto: its cleanup runs at fail too */
    bool made_dir = false;
    if (hd_mkdir_p(oci_globals.root, 0711, err) < 0)
        goto fail;
    if (mkdir(dir, 0711) < 0) {
        if (errno == EEXIST)
            hd_error_set(err, EEXIST, "container \"%s\" already exists", id);
        else
            hd_error_sys(err, "mkdir %s", dir);
        goto fail;
    }
    made_dir = true;
    if (mkfifo(fifo_path, 0622) < 0 || chmod(fifo_path, 0622) < 0) {
        hd_error_sys(err, "mkfifo %s", fifo_path);
        goto fail;
    }
    fifo = open(fifo_path, O_PATH | O_CLOEXEC);
    if (fifo < 0) {
        hd_error_sys(err, "open %s", fifo_path);
        goto fail;
    }
    if (cfg->seccomp_json) {
        cleanup_free char *path = hd_xasprintf("%s/seccomp.json", dir);
        if (hd_write_file(path, cfg->seccomp_json, strlen(cfg->seccomp_json), err) < 0)
            goto fail;
        free(cfg->spec->security.seccomp);
        cfg->spec->security.seccomp = get_and_reset(&path);
    }
    oci_use_cgroup_parent(cfg->cgroup_parent);
    if (apply_inherited_limits(cfg, err) < 0)
        goto fail;
    if (cfg->cgroup_name == NULL)
        cfg->cgroup_name = hd_xstrdup(id);
    struct hd_run_options opts = {.cgroup_name = cfg->cgroup_name};
    if (hd_workload_create(cfg->spec, &opts, &w, err) < 0)
        goto fail;
    w->container_setup = oci_container_setup;
    w->container_setup_data = cfg;
    w->hold_before_exec = true;
    w->caps_inheritable = cfg->caps_inheritable;
    w->caps_ambient = cfg->caps_ambient;
    w->groups = cfg->groups;
    w->n_groups = cfg->n_groups;
    w->device_rules = cfg->device_rules;
    w->n_device_rules = cfg->n_device_rules;
    w->join_ns_fds = cfg->ns_fds;
    w->share_mount_ns = cfg->host_mount_ns;
    w->exec_fifo_fd = fifo;
    /* a joined user namespace has its maps: the config's, when given, are only checked against them */
    w->uid_map = cfg->ns_paths[HD_JOIN_USER] ? NULL : cfg->uid_map;
    w->gid_map = cfg->ns_paths[HD_JOIN_USER] ? NULL : cfg->gid_map;
    /* the state documents reach the process for its hooks and its seccomp listener's message */
    if (oci_hooks_any(&cfg->hooks, OCI_HOOK_PRESTART, OCI_HOOK_START_CONTAINER) || cfg->listener_path)
        w->before_pivot_parent = oci_hooks_before_pivot_parent;
    if (cfg->listener_path)
        w->seccomp_listener = oci_listener_send;
    w->time_offsets = cfg->time_offsets;
    w->time_ns_fd = cfg->time_ns_fd >= 0 ? &cfg->time_ns_fd : NULL;
    if (hd_workload_start(w, err) < 0 || oci_unified_apply(cfg->unified, cfg->n_unified, w->cgroup, err) < 0)
        goto fail;
    if (cfg->console_fd >= 0) { /* the container's process has its copy */
        close(cfg->console_fd);
        cfg->console_fd = -1;
    }
    if (cfg->listener_fd >= 0) { /* likewise */
        close(cfg->listener_fd);
        cfg->listener_fd = -1;
    }
    const char *parent = getenv("HEDGE_CGROUP_PARENT");
    created = oci_now_rfc3339();
    struct oci_state st = {
        .id = (char *)id,
        .pid = w->pid,
        .pid_start = hd_proc_start_time(w->pid),
        .bundle = cfg->bundle,
        .rootfs = cfg->rootfs,
        .created = created,
        .cgroup_parent = (char *)(parent && *parent ? parent : "hedge"),
        .cgroup_name = (char *)opts.cgroup_name,
        .cgroup_mode = (char *)hd_cgroup_mode_name(hd_cgroup_detect()),
        .run_dir = w->run_dir,
        .annotations_json = cfg->annotations_json,
    };
    if (oci_state_save(&st, err) < 0 || oci_hooks_save(&cfg->hooks, id, err) < 0 ||
        (f->pid_file && oci_write_pid_file(f->pid_file, w->pid, err) < 0))
        goto fail;
    oci_log("debug", "created %s: pid %d", id, (int)w->pid);
    *w_out = w;
    *cfg_out = cfg;
    return 0;
fail:
    hd_workload_destroy(w);
    if (made_dir) {
        hd_error_t ignored = NULL;
        hd_rm_rf(dir, &ignored);
        hd_error_free(&ignored);
    }
    oci_config_free(cfg);
    return hd_error_prefix(err, "create %s", id);
}

/* The flags hedge-oci-vm's create and run take (vm.c). */
static struct oci_vm_flags vm_flags(const struct create_flags *f)
{
    return (struct oci_vm_flags){
        .bundle = f->bundle,
        .pid_file = f->pid_file,
        .console_socket = f->console_socket,
        .preserve_fds = f->preserve_fds,
    };
}

/* create's flags; run has the same and --detach, --keep, --no-subreaper. */
static void create_options(struct create_flags *f, bool run, struct oci_option out[12])
{
    struct oci_option common[] = {
        {"bundle", 'b', true, &f->bundle, NULL},
        {"pid-file", 0, true, &f->pid_file, NULL},
        {"console-socket", 0, true, &f->console_socket, NULL},
        {"preserve-fds", 0, true, &f->preserve_fds, NULL},
        {"no-pivot", 0, false, NULL, &f->no_pivot},
        {"no-new-keyring", 0, false, NULL, &f->no_new_keyring},
    };
    struct oci_option run_only[] = {
        {"detach", 'd', false, NULL, &f->detach},
        {"keep", 0, false, NULL, &f->keep},                 /* accepted; run in the foreground always deletes */
        {"no-subreaper", 0, false, NULL, &f->no_subreaper}, /* hedge-oci never becomes a subreaper */
    };
    size_t n = 0;
    for (size_t i = 0; i < ARRAY_SIZE(common); i++)
        out[n++] = common[i];
    for (size_t i = 0; run && i < ARRAY_SIZE(run_only); i++)
        out[n++] = run_only[i];
    out[n] = (struct oci_option){NULL, 0, false, NULL, NULL};
}

static const char *one_id(const char *verb, int argc, char **argv, int first)
{
    if (first < 0)
        return NULL;
    if (argc - first != 1) {
        oci_log("error", "%s: expects exactly one container id (got %d arguments)", verb, argc - first);
        return NULL;
    }
    return argv[first];
}

int oci_cmd_create(int argc, char **argv)
{
    struct create_flags f = {0};
    struct oci_option opts[12];
    create_options(&f, false, opts);
    const char *id = one_id("create", argc, argv, oci_parse_options("create", argc, argv, opts));
    if (id == NULL)
        return OCI_EXIT_FAILURE;
    hd_error_t err = NULL;
    if (oci_globals.vm) {
        struct oci_vm_flags vf = vm_flags(&f);
        return oci_vm_create(id, &vf, &err) < 0 ? oci_fail(&err) : 0;
    }
    struct hd_workload *w = NULL;
    struct oci_config *cfg = NULL;
    if (create_container(id, &f, false, NULL, &w, &cfg, &err) < 0)
        return oci_fail(&err);
    hd_workload_release(w);
    oci_config_free(cfg);
    return 0;
}

/* poststart, poststop: kept in <root>/<id>/hooks.json at create; a failure is a warning in the log. */
static void run_hooks_after(const struct oci_state *st, enum oci_hook_phase phase, const char *status, pid_t pid)
{
    struct oci_hooks hooks;
    hd_error_t err = NULL;
    if (oci_hooks_load(st->id, &hooks, &err) < 0) {
        oci_log("warning", "%s hooks of %s: %s", oci_hook_phase_name(phase), st->id, hd_error_text(err));
        hd_error_free(&err);
        return;
    }
    if (hooks.n[phase] > 0) {
        cleanup_free char *state = oci_state_document(st, status, pid, false);
        oci_hooks_run_warn(&hooks, phase, state);
    }
    oci_hooks_free(&hooks);
}

/* Let the held process exec: open the FIFO for reading and take its byte. */
static int start_container(const struct oci_state *st, hd_error_t *err)
{
    enum oci_status status = oci_state_status(st);
    if (status != OCI_CREATED)
        return hd_error_set(err, 0, "start %s: the container is %s, not created", st->id, oci_status_name(status));
    cleanup_free char *fifo_path = oci_fifo_path(st->id);
    cleanup_close int fd = open(fifo_path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return hd_error_sys(err, "start %s: open %s", st->id, fifo_path);
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, 50);
        if (r < 0 && errno != EINTR)
            return hd_error_sys(err, "start %s: poll", st->id);
        char byte;
        if (r > 0 && read(fd, &byte, 1) == 1)
            break;
        if (oci_state_status(st) == OCI_STOPPED)
            return hd_error_set(err, 0,
                                "start %s: the container's process ended before its command (a failed "
                                "startContainer hook, or it was killed; its stderr says which)",
                                st->id);
    }
    if (unlink(fifo_path) < 0)
        return hd_error_sys(err, "start %s: remove %s", st->id, fifo_path);
    oci_log("debug", "started %s", st->id);
    run_hooks_after(st, OCI_HOOK_POSTSTART, "running", st->pid);
    return 0;
}

int oci_cmd_start(int argc, char **argv)
{
    struct oci_option opts[] = {{NULL, 0, false, NULL, NULL}};
    const char *id = one_id("start", argc, argv, oci_parse_options("start", argc, argv, opts));
    if (id == NULL)
        return OCI_EXIT_FAILURE;
    hd_error_t err = NULL;
    struct oci_state *st = NULL;
    if (oci_state_load(id, &st, &err) < 0)
        return oci_fail(&err);
    int rc = start_container(st, &err);
    oci_state_free(st);
    return rc < 0 ? oci_fail(&err) : 0;
}

static const int forwarded_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

int oci_forward_signals_until_exit(pid_t pid, hd_error_t *err)
{
    sigset_t mask;
    sigemptyset(&mask);
    for (size_t i = 0; i < ARRAY_SIZE(forwarded_signals); i++)
        sigaddset(&mask, forwarded_signals[i]);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
        return hd_error_sys(err, "sigprocmask");
    cleanup_close int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    cleanup_close int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (sfd < 0 || pidfd < 0)
        return hd_error_sys(err, "watch pid %d", (int)pid);
    for (;;) {
        struct pollfd fds[2] = {{.fd = pidfd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
        if (poll(fds, 2, -1) < 0 && errno != EINTR)
            return hd_error_sys(err, "poll");
        struct signalfd_siginfo si;
        while ((fds[1].revents & POLLIN) && read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
            kill(pid, (int)si.ssi_signo);
        if (fds[0].revents & POLLIN)
            return 0;
    }
}

/* run in the foreground: forward signals to the container until it exits; its status is ours. */
static int run_foreground(struct hd_workload *w, int *code, hd_error_t *err)
{
    if (oci_forward_signals_until_exit(w->pid, err) < 0)
        return -1;
    struct hd_exit exit;
    if (hd_workload_wait(w, &exit, err) < 0)
        return -1;
    *code = exit.code;
    return 0;
}

/* hedge-oci-vm run: detached, create (the holder) + start; else the VM in the foreground. A command the
 * guest cannot run exits 126/127 with its message, as a process would. */
static int run_vm(const char *id, const struct create_flags *f)
{
    hd_error_t err = NULL;
    int code = 0;
    struct oci_vm_flags vf = vm_flags(f);
    if (!f->detach) {
        if (oci_vm_run_foreground(id, &vf, &code, &err) == 0)
            return code;
        code = hd_error_exit_code(err);
        if (code == HD_EXIT_CANNOT_INVOKE || code == HD_EXIT_NOT_FOUND) {
            oci_log("error", "%s", hd_error_text(err));
            hd_error_free(&err);
            return code;
        }
        return oci_fail(&err);
    }
    if (oci_vm_create(id, &vf, &err) < 0)
        return oci_fail(&err);
    struct oci_state *st = NULL;
    int rc = oci_state_load(id, &st, &err);
    if (rc == 0)
        rc = start_container(st, &err);
    oci_state_free(st);
    return rc < 0 ? oci_fail(&err) : 0;
}

int oci_cmd_run(int argc, char **argv)
{
    struct create_flags f = {0};
    struct oci_option opts[12];
    create_options(&f, true, opts);
    const char *id = one_id("run", argc, argv, oci_parse_options("run", argc, argv, opts));
    if (id == NULL)
        return OCI_EXIT_FAILURE;
    hd_error_t err = NULL;
    if (oci_globals.vm)
        return run_vm(id, &f);
    struct hd_workload *w = NULL;
    struct oci_config *cfg = NULL;
    cleanup_close int relay = -1; /* a terminal without --console-socket: ours to relay */
    if (create_container(id, &f, !f.detach, &relay, &w, &cfg, &err) < 0)
        return oci_fail(&err);
    struct oci_state *st = NULL;
    int code = 0;
    cleanup_close int master = -1;
    int rc = oci_state_load(id, &st, &err);
    if (rc == 0 && relay >= 0 && (master = oci_console_receive(relay, &err)) < 0)
        rc = -1;
    if (rc == 0)
        rc = start_container(st, &err);
    if (rc == 0 && f.detach) {
        hd_workload_release(w);
        w = NULL;
    } else if (rc == 0) {
        if (master >= 0)
            rc = oci_console_relay(master, w->pid, &err);
        if (rc == 0)
            rc = run_foreground(w, &code, &err);
    }
    if (w) {
        /* foreground (or a failed start): the container ends with this call */
        hd_workload_destroy(w);
        cleanup_free char *dir = oci_state_dir(id);
        hd_error_t ignored = NULL;
        hd_rm_rf(dir, &ignored);
        hd_error_free(&ignored);
        if (st && cfg->hooks.n[OCI_HOOK_POSTSTOP] > 0) {
            cleanup_free char *state = oci_state_document(st, "stopped", 0, false);
            oci_hooks_run_warn(&cfg->hooks, OCI_HOOK_POSTSTOP, state);
        }
    }
    oci_state_free(st);
    oci_config_free(cfg);
    if (rc < 0)
        return oci_fail(&err);
    return code;
}

static int parse_signal(const char *text, int *out)
{
    char *end = NULL;
    long n = strtol(text, &end, 10);
    if (end != text && *end == '\0') {
        if (n <= 0 || n >= NSIG)
            return -1;
        *out = (int)n;
        return 0;
    }
    const char *name = strncasecmp(text, "SIG", 3) == 0 ? text + 3 : text;
    for (int sig = 1; sig < NSIG; sig++) {
        const char *abbrev = sigabbrev_np(sig);
        if (abbrev && strcasecmp(abbrev, name) == 0) {
            *out = sig;
            return 0;
        }
    }
    return -1;
}

/* kill --all: every process of the container's cgroup. */
static int signal_all(const struct oci_state *st, int sig, hd_error_t *err)
{
    oci_use_cgroup_parent(st->cgroup_parent);
    struct hd_cgroup *cg = NULL;
    if (hd_cgroup_open(st->cgroup_name, &cg, err) < 0)
        return -1;
    int rc = 0;
    if (sig == SIGKILL) {
        rc = hd_cgroup_kill_all(cg, err);
    } else {
        cleanup_free char *procs = hd_xasprintf("%s/cgroup.procs", hd_cgroup_path(cg));
        cleanup_free char *text = NULL;
        rc = hd_read_file(procs, &text, NULL, err);
        for (char *p = text; rc == 0 && p && *p;) {
            char *end = NULL;
            long pid = strtol(p, &end, 10);
            if (end == p)
                break;
            if (pid > 0 && kill((pid_t)pid, sig) < 0 && errno != ESRCH)
                rc = hd_error_sys(err, "kill %ld", pid);
            p = end;
            while (*p == '\n')
                p++;
        }
    }
    hd_cgroup_forget(cg);
    return rc;
}

int oci_cmd_kill(int argc, char **argv)
{
    bool all = false;
    struct oci_option opts[] = {{"all", 'a', false, NULL, &all}, {NULL, 0, false, NULL, NULL}};
    int first = oci_parse_options("kill", argc, argv, opts);
    if (first < 0)
        return OCI_EXIT_FAILURE;
    if (argc - first < 1 || argc - first > 2) {
        oci_log("error", "kill: usage: hedge-oci kill [--all] ID [SIGNAL]");
        return OCI_EXIT_FAILURE;
    }
    const char *id = argv[first];
    int sig = SIGTERM;
    if (argc - first == 2 && parse_signal(argv[first + 1], &sig) < 0) {
        oci_log("error", "kill: \"%s\" is not a signal", argv[first + 1]);
        return OCI_EXIT_FAILURE;
    }
    hd_error_t err = NULL;
    struct oci_state *st = NULL;
    if (oci_state_load(id, &st, &err) < 0)
        return oci_fail(&err);
    int rc = 0;
    if (oci_state_status(st) == OCI_STOPPED)
        rc = hd_error_set(&err, ESRCH, "kill %s: the container is not running", id);
    else if (all && !oci_globals.vm) /* a VM's cgroup holds QEMU: its holder forwards to the guest */
        rc = signal_all(st, sig, &err);
    else if (kill(st->pid, sig) < 0)
        rc = hd_error_sys(&err, "kill %s: pid %d", id, (int)st->pid);
    oci_state_free(st);
    return rc < 0 ? oci_fail(&err) : 0;
}

int oci_cmd_delete(int argc, char **argv)
{
    bool force = false;
    struct oci_option opts[] = {{"force", 'f', false, NULL, &force}, {NULL, 0, false, NULL, NULL}};
    const char *id = one_id("delete", argc, argv, oci_parse_options("delete", argc, argv, opts));
    if (id == NULL)
        return OCI_EXIT_FAILURE;
    hd_error_t err = NULL;
    struct oci_state *st = NULL;
    if (oci_state_load(id, &st, &err) < 0) {
        /* as runc: --force on a container that is gone is not an error */
        if (force && err->errnum == ENOENT) {
            hd_error_free(&err);
            return 0;
        }
        return oci_fail(&err);
    }
    int rc = 0;
    enum oci_status status = oci_state_status(st);
    if (status == OCI_RUNNING && !force) {
        rc = hd_error_set(&err, 0, "delete %s: the container is running (stop it, or use --force)", id);
    } else {
        struct oci_hooks hooks;
        hd_error_t hooks_err = NULL;
        if (oci_hooks_load(id, &hooks, &hooks_err) < 0) {
            oci_log("warning", "poststop hooks of %s: %s", id, hd_error_text(hooks_err));
            hd_error_free(&hooks_err);
        }
        rc = oci_state_destroy(st, &err);
        if (hooks.n[OCI_HOOK_POSTSTOP] > 0) {
            cleanup_free char *state = oci_state_document(st, "stopped", 0, false);
            oci_hooks_run_warn(&hooks, OCI_HOOK_POSTSTOP, state);
        }
        oci_hooks_free(&hooks);
    }
    oci_state_free(st);
    return rc < 0 ? oci_fail(&err) : 0;
}
