/*
 * exec.c - the verbs that act on a running container from outside: exec (one
 * more process inside), pause/resume (the cgroup freezer), ps (the pids of
 * the container's cgroup), update (its limits) and events (its stats).
 *
 * exec reads the bundle's config.json again for what the container's first
 * process had (capabilities, no_new_privs, the seccomp profile create saved
 * under --root), lets --process FILE or the flags replace the process part,
 * and hands the result to the container backend's hd_container_join
 * (runtime/container/join.h): the same namespaces, cgroup and security code
 * as the first process, no second copy here. In the foreground it forwards
 * signals and returns the process's exit status (128+N for a signal), as
 * runc does; with --detach it returns once the process has exec'd (the
 * engine's subreaper - conmon, the containerd shim - collects it).
 */
#include "oci/oci.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "base/util.h"
#include "cgroup/cgroup.h"
#include "runtime/container/join.h"

struct exec_flags {
    const char *process, *pid_file, *console_socket, *cwd, *user, *preserve_fds, *apparmor, *process_label;
    const char *cgroup, *env_last, *cap_last, *gids_last;
    bool detach, tty, no_new_privs, ignore_paused;
    char **env_add, **gids, **caps; /* every --env, --additional-gids, --cap (repeatable, as runc) */
};

static int check_exec_flags(const struct exec_flags *f, hd_error_t *err)
{
    if (f->apparmor && *f->apparmor)
        return hd_error_set(err, 0, "exec --apparmor: AppArmor profiles are not supported yet");
    if (f->process_label && *f->process_label)
        return hd_error_set(err, 0, "exec --process-label: SELinux labels are not supported yet");
    if (f->cgroup && *f->cgroup)
        return hd_error_set(err, 0, "exec --cgroup: a sub-cgroup for the process is not supported yet");
    return 0;
}

/* --additional-gids, -g: each value a gid or a comma list of them (runc 1.1 takes one per flag) */
static int add_groups(char **values, struct oci_config *cfg, hd_error_t *err)
{
    for (size_t i = 0; values && values[i]; i++) {
        for (const char *p = values[i];;) {
            char *end = NULL;
            errno = 0;
            unsigned long long gid = *p >= '0' && *p <= '9' ? strtoull(p, &end, 10) : 0;
            if (end == NULL || errno != 0 || gid > UINT32_MAX || (*end != ',' && *end != '\0'))
                return hd_error_set(err, 0, "exec --additional-gids: \"%s\" is not a gid or a comma list of gids",
                                    values[i]);
            oci_config_add_group(cfg, (gid_t)gid);
            if (*end == '\0')
                break;
            p = end + 1;
        }
    }
    return 0;
}

/*
 * --cap, -c: as runc, each capability joins the process's bounding, effective and permitted sets (the bounding
 * set is the exec'd process's own, so it may reach past the container's), and its ambient set when the process
 * has the capability inheritable; names this kernel does not have are dropped with runc's warning.
 */
static void add_caps(char **names, struct oci_config *cfg)
{
    cleanup_strv char **unknown = NULL;
    for (size_t i = 0; names && names[i]; i++) {
        int cap = oci_cap_parse(names[i]);
        if (cap < 0) {
            if (!hd_strv_contains(unknown, names[i]))
                hd_strv_push(&unknown, names[i]);
            continue;
        }
        if (!hd_strv_contains(cfg->spec->security.cap_add, names[i]))
            hd_strv_push(&cfg->spec->security.cap_add, names[i]);
        if (cfg->caps_inheritable & (1ULL << cap))
            cfg->caps_ambient |= 1ULL << cap;
    }
    oci_warn_unknown_caps(unknown);
}

static int write_pid(const char *path, pid_t pid, hd_error_t *err)
{
    char text[16];
    snprintf(text, sizeof(text), "%d", (int)pid);
    if (hd_write_file_atomic(path, text, strlen(text), err) < 0)
        return hd_error_prefix(err, "--pid-file");
    return 0;
}

struct exec_setup {
    struct oci_console *console; /* NULL: no terminal */
    const struct oci_config *cfg;
    char *state; /* the container's state document, for the seccomp listener's message */
};

/* In the joining process: its terminal, the --preserve-fds fds open across exec, the personality. */
static int exec_setup(void *data, hd_error_t *err)
{
    struct exec_setup *s = data;
    if (s->console && oci_console_make(s->console, err) < 0)
        return -1;
    if (oci_pass_fds_before_exec(s->cfg, err) < 0 || oci_affinity_final(s->cfg, err) < 0)
        return -1;
    return oci_process_attrs_apply(s->cfg, err);
}

/* linux.seccomp.listenerPath: the exec'd process's listener goes to the agent too, as runc sends it. */
static int exec_listener(void *data, int fd, hd_error_t *err)
{
    struct exec_setup *s = data;
    return oci_listener_send_fd(s->cfg, s->state, fd, err);
}

/* "uid[:gid]" of --user (a name keeps the config's ids): the owner of the exec's terminal. */
static void console_owner(const char *user, struct oci_console *c)
{
    unsigned uid, gid;
    int n = user ? sscanf(user, "%u:%u", &uid, &gid) : 0;
    if (n >= 1)
        c->uid = uid;
    if (n == 2)
        c->gid = gid;
}

/*
 * exec's terminal (--tty, or the --process file's process.terminal): through --console-socket, or, in the
 * foreground without one, relayed by us (*relay_fd). --console-socket without a terminal is runc's error.
 */
static int exec_console(const struct exec_flags *f, const struct oci_config *cfg, struct oci_console *c, int *relay_fd,
                        hd_error_t *err)
{
    bool terminal = f->process ? cfg->terminal : f->tty;
    bool socket_given = f->console_socket && *f->console_socket;
    if (!terminal)
        return socket_given ? hd_error_set(err, 0, "exec --console-socket: needs --tty (or process.terminal)") : 0;
    *c = (struct oci_console){.rows = cfg->console_rows, .cols = cfg->console_cols, .uid = cfg->uid, .gid = cfg->gid};
    console_owner(f->user, c);
    if (socket_given)
        return (c->socket_fd = oci_console_connect(f->console_socket, err)) < 0 ? -1 : 1;
    if (f->detach)
        return hd_error_set(err, 0, "exec --tty: a detached process needs --console-socket for its terminal");
    return oci_console_pair(relay_fd, &c->socket_fd, err) < 0 ? -1 : 1;
}

/* Build the process of exec from the bundle's config, --process and the flags, and start it. */
static int exec_process(const struct oci_state *st, const struct exec_flags *f, char **args, pid_t *pid_out,
                        int *relay_fd, hd_error_t *err)
{
    enum oci_status status = oci_state_status(st);
    if (status == OCI_STOPPED)
        return hd_error_set(err, 0, "exec %s: the container is not running", st->id);
    if (status == OCI_PAUSED && !f->ignore_paused)
        return hd_error_set(err, 0, "exec %s: the container is paused (resume it, or use --ignore-paused)", st->id);
    struct oci_config *cfg = NULL;
    if (oci_config_load(st->bundle, st->id, &cfg, err) < 0)
        return hd_error_prefix(err, "exec %s: the bundle's config.json", st->id);
    struct hd_spec *spec = cfg->spec;
    int rc = -1;
    struct hd_cgroup *cg = NULL;
    cleanup_free char *dir = oci_state_dir(st->id);
    cleanup_free char *seccomp_path = hd_xasprintf("%s/seccomp.json", dir);
    cleanup_free char *state_doc = NULL; /* for the seccomp listener's message */
    if (f->process && oci_process_load(f->process, cfg, err) < 0)
        goto out;
    if (oci_pass_fds_setup(cfg, f->preserve_fds, false, err) < 0)
        goto out;
    if (oci_globals.vm && cfg->n_pass_fds > 0) {
        hd_error_set(err, 0, "exec --preserve-fds: passing file descriptors into a VM is not supported");
        goto out;
    }
    if (!f->process) {
        if (args == NULL || args[0] == NULL) {
            hd_error_set(err, 0, "exec: give the command after the container id, or --process FILE");
            goto out;
        }
        hd_strv_free(spec->command);
        spec->command = hd_strv_dup(args);
    }
    for (size_t i = 0; f->env_add && f->env_add[i]; i++)
        hd_env_set(&spec->env, f->env_add[i]);
    if (add_groups(f->gids, cfg, err) < 0)
        goto out;
    add_caps(f->caps, cfg);
    if (f->cwd) {
        free(spec->workdir);
        spec->workdir = hd_xstrdup(f->cwd);
    }
    if (f->user) {
        free(spec->user);
        spec->user = hd_xstrdup(f->user);
    }
    if (f->no_new_privs)
        spec->security.no_new_privs = true;
    if (oci_globals.vm) { /* in the guest: the holder runs it (vm.c) */
        struct oci_console console = {.socket_fd = -1};
        int with_console = 0;
        if (status == OCI_CREATED) /* the guest is held before its command: nothing runs there yet */
            rc = hd_error_set(err, 0, "the container is created, not started: start it first");
        else if ((with_console = exec_console(f, cfg, &console, relay_fd, err)) >= 0)
            rc = oci_vm_exec(st, spec, with_console ? &console : NULL, pid_out, err);
        if (console.socket_fd >= 0)
            close(console.socket_fd); /* the master went through it */
        if (rc < 0)
            hd_error_prefix(err, "exec %s", st->id);
        goto out;
    }
    /* the filter the first process got: create saved the config's profile under --root */
    free(spec->security.seccomp);
    spec->security.seccomp =
        hd_xstrdup(cfg->seccomp_json && access(seccomp_path, F_OK) == 0 ? seccomp_path : "unconfined");
    for (int i = 0; i < cfg->n_rlimits; i++)
        if (setrlimit(cfg->rlimits[i].resource, &cfg->rlimits[i].limit) < 0) {
            hd_error_sys(err, "%s: setrlimit", cfg->rlimits[i].name);
            goto out;
        }
    umask(cfg->umask >= 0 ? (mode_t)cfg->umask : 022); /* process.user.umask, else hedge's */
    oci_use_cgroup_parent(st->cgroup_parent);
    if (st->cgroup_name && hd_cgroup_open(st->cgroup_name, &cg, err) < 0)
        goto out;
    if (oci_listener_connect(cfg, err) < 0)
        goto out;
    struct oci_console console = {.socket_fd = -1};
    int with_console = exec_console(f, cfg, &console, relay_fd, err);
    if (with_console < 0)
        goto out;
    state_doc = oci_state_document(st, "running", st->pid, false);
    struct exec_setup setup = {.console = with_console ? &console : NULL, .cfg = cfg, .state = state_doc};
    struct hd_container_join j = {
        .setup = exec_setup,
        .setup_data = &setup,
        .init_pid = st->pid,
        .security = &spec->security,
        .caps_inheritable = cfg->caps_inheritable,
        .caps_ambient = cfg->caps_ambient,
        .cgroup = cg,
        .argv = spec->command,
        .env = spec->env,
        .workdir = spec->workdir,
        .user = spec->user,
        .groups = cfg->groups,
        .n_groups = cfg->n_groups,
        .seccomp_listener = cfg->listener_fd >= 0 ? exec_listener : NULL,
        .seccomp_listener_data = &setup,
    };
    rc = oci_affinity_initial(cfg, err) < 0 ? -1 : hd_container_join(&j, pid_out, err);
    if (console.socket_fd >= 0)
        close(console.socket_fd); /* the process has its copy */
    if (rc < 0 && *err && (*err)->exit_code == HD_EXIT_NOT_FOUND) {
        /* runc's words, which engines map to 127 (podman: "executable file not found in") */
        cleanup_free char *msg = hd_xstrdup((*err)->message);
        hd_error_free(err);
        hd_error_set_code(err, HD_EXIT_NOT_FOUND, ENOENT, "%s: executable file not found in $PATH", msg);
    }
    if (rc < 0)
        hd_error_prefix(err, "exec %s", st->id);
out:
    hd_cgroup_forget(cg);
    oci_config_free(cfg);
    return rc;
}

int oci_cmd_exec(int argc, char **argv)
{
    struct exec_flags f = {0};
    cleanup_strv char **env_add = NULL, **gids = NULL, **caps = NULL;
    struct oci_option opts[] = {
        {"process", 'p', true, &f.process, NULL},
        {"pid-file", 0, true, &f.pid_file, NULL},
        {"console-socket", 0, true, &f.console_socket, NULL},
        {"cwd", 0, true, &f.cwd, NULL},
        {"env", 'e', true, &f.env_last, NULL, &env_add},
        {"user", 'u', true, &f.user, NULL},
        {"additional-gids", 'g', true, &f.gids_last, NULL, &gids},
        {"cap", 'c', true, &f.cap_last, NULL, &caps},
        {"apparmor", 0, true, &f.apparmor, NULL},
        {"process-label", 0, true, &f.process_label, NULL},
        {"preserve-fds", 0, true, &f.preserve_fds, NULL},
        {"cgroup", 0, true, &f.cgroup, NULL},
        {"detach", 'd', false, NULL, &f.detach},
        {"tty", 't', false, NULL, &f.tty},
        {"no-new-privs", 0, false, NULL, &f.no_new_privs},
        {"ignore-paused", 0, false, NULL, &f.ignore_paused},
        {NULL, 0, false, NULL, NULL},
    };
    int first = oci_parse_options("exec", argc, argv, opts);
    if (first < 0)
        return OCI_EXIT_FAILURE;
    if (first >= argc) {
        oci_log("error", "exec: usage: hedge-oci exec [flags] ID [COMMAND [ARG...]]");
        return OCI_EXIT_FAILURE;
    }
    f.env_add = env_add, f.gids = gids, f.caps = caps;
    const char *id = argv[first];
    hd_error_t err = NULL;
    if (check_exec_flags(&f, &err) < 0)
        return oci_fail(&err);
    struct oci_state *st = NULL;
    if (oci_state_load(id, &st, &err) < 0)
        return oci_fail(&err);
    cleanup_strv char **args = NULL;
    for (int i = first + 1; i < argc; i++)
        hd_strv_push(&args, argv[i]);
    pid_t pid = -1;
    cleanup_close int relay = -1; /* --tty without --console-socket: ours to relay */
    cleanup_close int master = -1;
    int rc = exec_process(st, &f, args, &pid, &relay, &err);
    if (rc == 0 && relay >= 0 && (master = oci_console_receive(relay, &err)) < 0)
        rc = -1;
    oci_state_free(st);
    if (rc == 0 && f.pid_file)
        rc = write_pid(f.pid_file, pid, &err);
    if (rc < 0) {
        if (pid > 0 && f.pid_file) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        return oci_fail(&err);
    }
    if (f.detach)
        return 0;
    if (master >= 0 && oci_console_relay(master, pid, &err) < 0)
        return oci_fail(&err);
    if (oci_forward_signals_until_exit(pid, &err) < 0)
        return oci_fail(&err);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return oci_fail((hd_error_sys(&err, "exec: wait for pid %d", (int)pid), &err));
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ---- pause / resume ---- */

static int freeze_verb(const char *verb, bool freeze, int argc, char **argv)
{
    struct oci_option opts[] = {{NULL, 0, false, NULL, NULL}};
    int first = oci_parse_options(verb, argc, argv, opts);
    if (first < 0)
        return OCI_EXIT_FAILURE;
    if (argc - first != 1) {
        oci_log("error", "%s: expects exactly one container id", verb);
        return OCI_EXIT_FAILURE;
    }
    hd_error_t err = NULL;
    struct oci_state *st = NULL;
    if (oci_state_load(argv[first], &st, &err) < 0)
        return oci_fail(&err);
    int rc = 0;
    enum oci_status status = oci_state_status(st);
    struct hd_cgroup *cg = NULL;
    if (freeze && status != OCI_RUNNING && status != OCI_CREATED)
        rc = hd_error_set(&err, 0, "pause %s: the container is %s, not running", st->id, oci_status_name(status));
    else if (!freeze && status != OCI_PAUSED)
        rc = hd_error_set(&err, 0, "resume %s: the container is %s, not paused", st->id, oci_status_name(status));
    if (rc == 0) {
        oci_use_cgroup_parent(st->cgroup_parent);
        rc = hd_cgroup_open(st->cgroup_name, &cg, &err);
    }
    if (rc == 0)
        rc = hd_cgroup_freeze(cg, freeze, &err);
    if (rc < 0)
        hd_error_prefix(&err, "%s %s", verb, st->id);
    hd_cgroup_forget(cg);
    oci_state_free(st);
    return rc < 0 ? oci_fail(&err) : 0;
}

int oci_cmd_pause(int argc, char **argv)
{
    return freeze_verb("pause", true, argc, argv);
}

int oci_cmd_resume(int argc, char **argv)
{
    return freeze_verb("resume", false, argc, argv);
}

/* ---- ps ---- */

/* The pids in the container's cgroup, in the order of cgroup.procs. */
static int container_pids(const struct oci_state *st, pid_t **out, size_t *n, hd_error_t *err)
{
    oci_use_cgroup_parent(st->cgroup_parent);
    struct hd_cgroup *cg = NULL;
    if (hd_cgroup_open(st->cgroup_name, &cg, err) < 0)
        return -1;
    cleanup_free char *procs = hd_xasprintf("%s/cgroup.procs", hd_cgroup_path(cg));
    hd_cgroup_forget(cg);
    cleanup_free char *text = NULL;
    if (hd_read_file(procs, &text, NULL, err) < 0)
        return -1;
    *out = NULL;
    *n = 0;
    for (char *p = text; p && *p;) {
        char *end = NULL;
        long pid = strtol(p, &end, 10);
        if (end == p)
            break;
        *out = hd_xrealloc(*out, (*n + 1) * sizeof(**out));
        (*out)[(*n)++] = (pid_t)pid;
        p = end + strspn(end, "\n");
    }
    return 0;
}

static bool has_pid(const pid_t *pids, size_t n, long pid)
{
    for (size_t i = 0; i < n; i++)
        if (pids[i] == pid)
            return true;
    return false;
}

/* runc's table: `ps -ef` (or the ps arguments given after the id), the header and the container's lines. */
static int ps_table(const pid_t *pids, size_t n, char **ps_args, hd_error_t *err)
{
    cleanup_free char *cmd = hd_xstrdup("ps");
    if (ps_args == NULL || ps_args[0] == NULL) {
        free(cmd);
        cmd = hd_xstrdup("ps -ef");
    }
    for (size_t i = 0; ps_args && ps_args[i]; i++) {
        if (strspn(ps_args[i], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-,=_:%") !=
            strlen(ps_args[i]))
            return hd_error_set(err, 0, "ps: argument \"%s\" is not a ps option", ps_args[i]);
        char *next = hd_xasprintf("%s %s", cmd, ps_args[i]);
        free(cmd);
        cmd = next;
    }
    FILE *p = popen(cmd, "re");
    if (p == NULL)
        return hd_error_sys(err, "ps: run %s", cmd);
    char *line = NULL;
    size_t cap = 0;
    int pid_col = -1;
    while (getline(&line, &cap, p) > 0) {
        if (pid_col < 0) {
            /* the header names the PID column */
            int col = 0;
            cleanup_free char *copy = hd_xstrdup(line);
            char *save = NULL;
            for (char *t = strtok_r(copy, " \t\n", &save); t; t = strtok_r(NULL, " \t\n", &save), col++)
                if (strcmp(t, "PID") == 0 && pid_col < 0)
                    pid_col = col;
            fputs(line, stdout);
            if (pid_col < 0)
                break;
            continue;
        }
        cleanup_free char *copy = hd_xstrdup(line);
        char *save = NULL;
        char *t = strtok_r(copy, " \t\n", &save);
        for (int col = 0; t && col < pid_col; col++)
            t = strtok_r(NULL, " \t\n", &save);
        if (t && has_pid(pids, n, strtol(t, NULL, 10)))
            fputs(line, stdout);
    }
    free(line);
    int status = pclose(p);
    if (pid_col < 0)
        return hd_error_set(err, 0, "ps: %s printed no PID column", cmd);
    if (status != 0)
        return hd_error_set(err, 0, "ps: %s failed (status %d)", cmd, status);
    return 0;
}

int oci_cmd_ps(int argc, char **argv)
{
    const char *format = "table";
    struct oci_option opts[] = {{"format", 'f', true, &format, NULL}, {NULL, 0, false, NULL, NULL}};
    int first = oci_parse_options("ps", argc, argv, opts);
    if (first < 0)
        return OCI_EXIT_FAILURE;
    if (first >= argc) {
        oci_log("error", "ps: usage: hedge-oci ps [--format table|json] ID [PS_ARGS...]");
        return OCI_EXIT_FAILURE;
    }
    if (strcmp(format, "table") != 0 && strcmp(format, "json") != 0) {
        oci_log("error", "ps --format: \"%s\" is not table or json", format);
        return OCI_EXIT_FAILURE;
    }
    hd_error_t err = NULL;
    struct oci_state *st = NULL;
    if (oci_state_load(argv[first], &st, &err) < 0)
        return oci_fail(&err);
    pid_t *pids = NULL;
    size_t n = 0;
    int rc = 0;
    if (oci_state_status(st) == OCI_STOPPED)
        rc = hd_error_set(&err, 0, "ps %s: the container is not running", st->id);
    else
        rc = container_pids(st, &pids, &n, &err);
    if (rc == 0 && strcmp(format, "json") == 0) {
        if (first + 1 < argc) {
            rc = hd_error_set(&err, 0, "ps: ps arguments cannot be used with --format json");
        } else {
            json_t *arr = json_array();
            for (size_t i = 0; i < n; i++)
                json_array_append_new(arr, json_integer(pids[i]));
            char *text = json_dumps(arr, JSON_COMPACT);
            printf("%s\n", text);
            free(text);
            json_decref(arr);
        }
    } else if (rc == 0) {
        cleanup_strv char **ps_args = NULL;
        for (int i = first + 1; i < argc; i++)
            hd_strv_push(&ps_args, argv[i]);
        fflush(stdout);
        rc = ps_table(pids, n, ps_args, &err);
    }
    free(pids);
    oci_state_free(st);
    return rc < 0 ? oci_fail(&err) : 0;
}

/* ---- update ---- */

/* runc's sizes: a number with an optional k, m, g (powers of 1024; "b" allowed after them). */
static int parse_size(const char *flag, const char *text, long long *out, hd_error_t *err)
{
    char *end = NULL;
    errno = 0;
    long long n = strtoll(text, &end, 10);
    if (end == text || errno != 0 || n < -1)
        return hd_error_set(err, 0, "update --%s: \"%s\" is not a size", flag, text);
    switch (*end | 0x20) {
    case 'k': n <<= 10, end++; break;
    case 'm': n <<= 20, end++; break;
    case 'g': n <<= 30, end++; break;
    default: break;
    }
    if ((*end | 0x20) == 'b')
        end++;
    if (*end != '\0')
        return hd_error_set(err, 0, "update --%s: \"%s\" is not a size", flag, text);
    *out = n;
    return 0;
}

/* The single-value flags as a linux.resources object. */
static char *resources_from_flags(const char *const values[], const char *const names[], size_t n, hd_error_t *err)
{
    json_t *res = json_object(), *mem = json_object(), *cpu = json_object(), *pids = json_object();
    int rc = 0;
    json_t *bio = json_object();
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (values[i] == NULL)
            continue;
        if (strcmp(names[i], "cpuset-cpus") == 0 || strcmp(names[i], "cpuset-mems") == 0) {
            json_object_set_new(cpu, names[i][7] == 'c' ? "cpus" : "mems", json_string(values[i]));
            continue;
        }
        long long v = 0;
        rc = parse_size(names[i], values[i], &v, err);
        if (rc < 0)
            break;
        if (strcmp(names[i], "memory") == 0)
            json_object_set_new(mem, "limit", json_integer(v));
        else if (strcmp(names[i], "memory-reservation") == 0)
            json_object_set_new(mem, "reservation", json_integer(v));
        else if (strcmp(names[i], "memory-swap") == 0)
            json_object_set_new(mem, "swap", json_integer(v));
        else if (strcmp(names[i], "cpu-quota") == 0)
            json_object_set_new(cpu, "quota", json_integer(v));
        else if (strcmp(names[i], "cpu-period") == 0)
            json_object_set_new(cpu, "period", json_integer(v));
        else if (strcmp(names[i], "cpu-shares") == 0)
            json_object_set_new(cpu, "shares", json_integer(v));
        else if (strcmp(names[i], "pids-limit") == 0)
            json_object_set_new(pids, "limit", json_integer(v));
        else if (strcmp(names[i], "cpu-rt-period") == 0)
            json_object_set_new(cpu, "realtimePeriod", json_integer(v));
        else if (strcmp(names[i], "cpu-rt-runtime") == 0)
            json_object_set_new(cpu, "realtimeRuntime", json_integer(v));
        else if (strcmp(names[i], "blkio-weight") == 0)
            json_object_set_new(bio, "weight", json_integer(v));
    }
    json_object_set_new(res, "blockIO", bio);
    json_object_set_new(res, "memory", mem);
    json_object_set_new(res, "cpu", cpu);
    json_object_set_new(res, "pids", pids);
    char *text = rc == 0 ? json_dumps(res, JSON_COMPACT) : NULL;
    json_decref(res);
    return text;
}

int oci_cmd_update(int argc, char **argv)
{
    static const char *const names[] = {
        "memory",     "memory-swap", "memory-reservation", "cpu-quota",     "cpu-period",     "cpu-shares",
        "pids-limit", "cpuset-cpus", "cpuset-mems",        "cpu-rt-period", "cpu-rt-runtime", "blkio-weight",
    };
    static const char *const refused[] = {"kernel-memory", "kernel-memory-tcp", "l3-cache-schema", "mem-bw-schema",
                                          "cpu-idle"};
    const char *values[ARRAY_SIZE(names)] = {0}, *refused_values[ARRAY_SIZE(refused)] = {0};
    const char *resources = NULL;
    struct oci_option opts[ARRAY_SIZE(names) + ARRAY_SIZE(refused) + 3];
    size_t k = 0;
    opts[k++] = (struct oci_option){"resources", 'r', true, &resources, NULL};
    for (size_t i = 0; i < ARRAY_SIZE(names); i++)
        opts[k++] = (struct oci_option){names[i], 0, true, &values[i], NULL};
    for (size_t i = 0; i < ARRAY_SIZE(refused); i++)
        opts[k++] = (struct oci_option){refused[i], 0, true, &refused_values[i], NULL};
    opts[k] = (struct oci_option){NULL, 0, false, NULL, NULL};
    int first = oci_parse_options("update", argc, argv, opts);
    if (first < 0)
        return OCI_EXIT_FAILURE;
    if (argc - first != 1) {
        oci_log("error", "update: usage: hedge-oci update [--resources FILE|-] [--memory N ...] ID");
        return OCI_EXIT_FAILURE;
    }
    hd_error_t err = NULL;
    for (size_t i = 0; i < ARRAY_SIZE(refused); i++)
        if (refused_values[i]) {
            hd_error_set(&err, 0, "update --%s: not supported yet by hedge-oci", refused[i]);
            return oci_fail(&err);
        }
    cleanup_free char *text = NULL;
    size_t len = 0;
    if (resources && strcmp(resources, "-") == 0) {
        if (hd_read_file("/dev/stdin", &text, &len, &err) < 0)
            return oci_fail(&err);
    } else if (resources) {
        if (hd_read_file(resources, &text, &len, &err) < 0)
            return oci_fail((hd_error_prefix(&err, "update --resources"), &err));
    } else {
        text = resources_from_flags(values, names, ARRAY_SIZE(names), &err);
        if (text == NULL)
            return oci_fail(&err);
        len = strlen(text);
    }
    struct hd_resources res = {0};
    struct oci_sysctl *unified = NULL;
    size_t n_unified = 0;
    if (oci_resources_load(text, len, &res, &unified, &n_unified, &err) < 0)
        return oci_fail(&err);
    struct oci_state *st = NULL;
    if (oci_state_load(argv[first], &st, &err) < 0) {
        oci_unified_free(unified, n_unified);
        return oci_fail(&err);
    }
    int rc = 0;
    struct hd_cgroup *cg = NULL;
    if (oci_state_status(st) == OCI_STOPPED)
        rc = hd_error_set(&err, 0, "update %s: the container is not running", st->id);
    if (rc == 0) {
        oci_use_cgroup_parent(st->cgroup_parent);
        rc = hd_cgroup_open(st->cgroup_name, &cg, &err);
    }
    if (rc == 0)
        rc = hd_cgroup_update(cg, &res, &err);
    if (rc == 0)
        rc = oci_unified_apply(unified, n_unified, cg, &err);
    if (rc < 0)
        hd_error_prefix(&err, "update %s", st->id);
    oci_unified_free(unified, n_unified);
    hd_cgroup_forget(cg);
    oci_state_free(st);
    return rc < 0 ? oci_fail(&err) : 0;
}

/* ---- events ---- */

/* runc's event: {"type":"stats","id":ID,"data":{cpu, memory, pids}} from the container's cgroup. */
static int stats_event(const struct oci_state *st, struct hd_cgroup *cg, hd_error_t *err)
{
    struct hd_stats stats = {0};
    if (hd_cgroup_stats(cg, &stats, err) < 0)
        return -1;
    json_t *data = json_pack("{s:{s:{s:I}}, s:{s:{s:I, s:I}}, s:{s:I}}", "cpu", "usage", "total",
                             (json_int_t)stats.cpu_usage_ns, "memory", "usage", "usage", (json_int_t)stats.memory_bytes,
                             "max", (json_int_t)stats.memory_peak_bytes, "pids", "current", (json_int_t)stats.pids);
    json_t *ev = json_pack("{s:s, s:s, s:o}", "type", "stats", "id", st->id, "data", data);
    char *text = json_dumps(ev, JSON_COMPACT);
    printf("%s\n", text);
    fflush(stdout);
    free(text);
    json_decref(ev);
    return 0;
}

/* "5s", "250ms", "1m", or plain seconds */
static int parse_interval(const char *text, uint64_t *ms)
{
    char *end = NULL;
    double v = strtod(text, &end);
    if (end == text || v <= 0)
        return -1;
    if (strcmp(end, "ms") == 0)
        *ms = (uint64_t)v;
    else if (strcmp(end, "s") == 0 || *end == '\0')
        *ms = (uint64_t)(v * 1000);
    else if (strcmp(end, "m") == 0)
        *ms = (uint64_t)(v * 60000);
    else
        return -1;
    return *ms > 0 ? 0 : -1;
}

int oci_cmd_events(int argc, char **argv)
{
    bool stats_once = false;
    const char *interval = "5s";
    struct oci_option opts[] = {
        {"stats", 0, false, NULL, &stats_once},
        {"interval", 0, true, &interval, NULL},
        {NULL, 0, false, NULL, NULL},
    };
    int first = oci_parse_options("events", argc, argv, opts);
    if (first < 0)
        return OCI_EXIT_FAILURE;
    if (argc - first != 1) {
        oci_log("error", "events: usage: hedge-oci events [--stats] [--interval 5s] ID");
        return OCI_EXIT_FAILURE;
    }
    uint64_t ms = 0;
    if (parse_interval(interval, &ms) < 0) {
        oci_log("error", "events --interval: \"%s\" is not a duration (5s, 250ms, 1m)", interval);
        return OCI_EXIT_FAILURE;
    }
    hd_error_t err = NULL;
    struct oci_state *st = NULL;
    if (oci_state_load(argv[first], &st, &err) < 0)
        return oci_fail(&err);
    int rc = 0;
    struct hd_cgroup *cg = NULL;
    if (oci_state_status(st) == OCI_STOPPED)
        rc = hd_error_set(&err, 0, "events %s: the container is not running", st->id);
    if (rc == 0) {
        oci_use_cgroup_parent(st->cgroup_parent);
        rc = hd_cgroup_open(st->cgroup_name, &cg, &err);
    }
    /* --stats: one stats event; else one every interval (and "oom" once) until the container stops */
    bool oom_told = false;
    while (rc == 0) {
        rc = stats_event(st, cg, &err);
        if (rc < 0 || stats_once)
            break;
        if (!oom_told && hd_cgroup_oom_killed(cg)) {
            printf("{\"type\":\"oom\",\"id\":\"%s\"}\n", st->id);
            fflush(stdout);
            oom_told = true;
        }
        for (uint64_t waited = 0; waited < ms && oci_state_status(st) != OCI_STOPPED; waited += 50)
            usleep(50000);
        if (oci_state_status(st) == OCI_STOPPED)
            break;
    }
    if (rc < 0)
        hd_error_prefix(&err, "events %s", st->id);
    hd_cgroup_forget(cg);
    oci_state_free(st);
    return rc < 0 ? oci_fail(&err) : 0;
}
