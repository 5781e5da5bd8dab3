/*
 * hooks.c - config.json's hooks: read them, and run one list of them with the
 * container's state on stdin.
 *
 * Where each list runs (runtime-spec config.md, "POSIX-platform Hooks"; as runc):
 *   prestart, createRuntime  in hedge-oci (the runtime namespace), at create, while the container's first
 *                            process waits right before pivot_root (backend.h: before_pivot_parent);
 *   createContainer          in that process (the container's namespaces, the host's root still visible),
 *                            right before pivot_root (HD_SETUP_BEFORE_PIVOT);
 *   startContainer           in that process after `start` opened the exec FIFO, right before it execs
 *                            the container's command (HD_SETUP_BEFORE_EXEC), and before the FIFO's byte
 *                            that lets `start` return: a failure fails `start`;
 *   poststart                in hedge-oci after `start`;  poststop  in hedge-oci after `delete`.
 * The state document is the one `state` prints, with the status of that moment: "creating" for
 * createRuntime and createContainer, "created" for prestart (as runtime-tools checks) and startContainer,
 * "running" for poststart, "stopped" for poststop. A failure of a prestart, createRuntime, createContainer or startContainer hook
 * fails the container; poststart and poststop failures are logged as warnings and the lifecycle goes on
 * (the spec's rule).
 *
 * A hook runs as runc runs it: path, args (args[0] is its argv[0]; without args, the path), env (without
 * it, hedge-oci's environment), the state on stdin (a socket, so a hook that never reads it cannot make
 * the runtime die of SIGPIPE), its stdout and stderr collected and named in the error when it fails, and
 * `timeout` seconds after which it is killed. The poststart and poststop lists are kept in
 * <root>/<id>/hooks.json between the verbs.
 */
#include "oci/oci.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "base/json.h"
#include "base/util.h"

static const char *const phase_names[OCI_HOOK_PHASES] = {
    [OCI_HOOK_PRESTART] = "prestart",
    [OCI_HOOK_CREATE_RUNTIME] = "createRuntime",
    [OCI_HOOK_CREATE_CONTAINER] = "createContainer",
    [OCI_HOOK_START_CONTAINER] = "startContainer",
    [OCI_HOOK_POSTSTART] = "poststart",
    [OCI_HOOK_POSTSTOP] = "poststop",
};

const char *oci_hook_phase_name(enum oci_hook_phase phase)
{
    return phase_names[phase];
}

static void hook_free(struct oci_hook *h)
{
    free(h->path);
    hd_strv_free(h->args);
    hd_strv_free(h->env);
}

void oci_hooks_free(struct oci_hooks *hooks)
{
    for (int p = 0; p < OCI_HOOK_PHASES; p++) {
        for (size_t i = 0; i < hooks->n[p]; i++)
            hook_free(&hooks->list[p][i]);
        free(hooks->list[p]);
    }
    free(hooks->json);
    memset(hooks, 0, sizeof(*hooks));
}

static int parse_hook(json_t *v, const char *path, struct oci_hook *h, hd_error_t *err)
{
    static const char *const known[] = {"path", "args", "env", "timeout", NULL};
    if (hd_json_object(v, path, "an object", err) < 0 || hd_json_check_keys(v, path, known, err) < 0)
        return -1;
    cleanup_free char *field = hd_xasprintf("%s.path", path);
    if (hd_json_string(json_object_get(v, "path"), field, "an absolute path", true, &h->path, err) < 0)
        return -1;
    if (h->path == NULL)
        return hd_error_set(err, 0, "%s: is required", field);
    if (h->path[0] != '/')
        return hd_error_set(err, 0, "%s: \"%s\" must be an absolute path", field, h->path);
    free(field);
    field = hd_xasprintf("%s.args", path);
    json_t *args = json_object_get(v, "args");
    if (args && !json_is_null(args) && hd_json_strv(args, field, "an array of strings", &h->args, err) < 0)
        return -1;
    free(field);
    field = hd_xasprintf("%s.env", path);
    json_t *env = json_object_get(v, "env");
    if (env && !json_is_null(env) && hd_json_strv(env, field, "an array of strings", &h->env, err) < 0)
        return -1;
    free(field);
    field = hd_xasprintf("%s.timeout", path);
    int64_t timeout = 0;
    json_t *t = json_object_get(v, "timeout");
    if (t && !json_is_null(t) && hd_json_int(t, field, 1, 86400, "seconds, greater than zero", &timeout, err) < 0)
        return -1;
    h->timeout = (int)timeout;
    return 0;
}

int oci_hooks_parse(json_t *hooks, struct oci_hooks *out, hd_error_t *err)
{
    memset(out, 0, sizeof(*out));
    if (hooks == NULL || json_is_null(hooks))
        return 0;
    if (hd_json_object(hooks, "hooks", "an object", err) < 0)
        return -1;
    static const char *const known[] = {
        "prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop", NULL};
    if (hd_json_check_keys(hooks, "hooks", known, err) < 0)
        return -1;
    for (int p = 0; p < OCI_HOOK_PHASES; p++) {
        json_t *list = json_object_get(hooks, phase_names[p]);
        if (list == NULL || json_is_null(list))
            continue;
        if (!json_is_array(list)) {
            cleanup_free char *field = hd_xasprintf("hooks.%s", phase_names[p]);
            oci_hooks_free(out);
            return hd_json_type_error(list, field, "an array of hooks", err);
        }
        out->list[p] = hd_xcalloc(json_array_size(list) + 1, sizeof(struct oci_hook));
        size_t i;
        json_t *v;
        json_array_foreach(list, i, v)
        {
            cleanup_free char *field = hd_xasprintf("hooks.%s[%zu]", phase_names[p], i);
            out->n[p] = i + 1;
            if (parse_hook(v, field, &out->list[p][i], err) < 0) {
                oci_hooks_free(out);
                return -1;
            }
        }
    }
    out->json = json_dumps(hooks, JSON_COMPACT);
    return 0;
}

bool oci_hooks_any(const struct oci_hooks *hooks, enum oci_hook_phase first, enum oci_hook_phase last)
{
    for (int p = first; p <= (int)last; p++)
        if (hooks->n[p] > 0)
            return true;
    return false;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Keep the last bytes a hook printed (its error message is usually there). */
struct hook_output {
    char text[2048];
    size_t len;
};

static void output_add(struct hook_output *o, const char *buf, size_t n)
{
    if (n >= sizeof(o->text) - 1) {
        buf += n - (sizeof(o->text) - 1);
        n = sizeof(o->text) - 1;
    }
    if (o->len + n > sizeof(o->text) - 1) {
        size_t drop = o->len + n - (sizeof(o->text) - 1);
        memmove(o->text, o->text + drop, o->len - drop);
        o->len -= drop;
    }
    memcpy(o->text + o->len, buf, n);
    o->len += n;
    o->text[o->len] = '\0';
    while (o->len > 0 && (o->text[o->len - 1] == '\n' || o->text[o->len - 1] == ' '))
        o->text[--o->len] = '\0';
}

/* Reads what the hook wrote so far (its end is non-blocking); false once the pipe is at its end. Reads at
 * most a few buffers' worth per call, so a grandchild that keeps writing cannot hold the runtime. */
static bool output_drain(int fd, struct hook_output *o)
{
    char buf[1024];
    for (int i = 0; i < 64; i++) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n > 0)
            output_add(o, buf, (size_t)n);
        else
            return n < 0 && (errno == EAGAIN || errno == EINTR);
    }
    return true;
}

__attribute__((noreturn)) static void hook_exec(const struct oci_hook *h, int in, int out)
{
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
        _exit(127);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    char *default_args[] = {h->path, NULL};
    extern char **environ;
    execve(h->path, h->args && h->args[0] ? h->args : default_args, h->env ? h->env : environ);
    dprintf(1, "exec %s: %s", h->path, strerror(errno));
    _exit(127);
}

/* Run one hook; 0 when it exited 0 in time. */
static int hook_run(const struct oci_hook *h, const char *name, const char *state, hd_error_t *err)
{
    int in[2], out[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in) < 0)
        return hd_error_sys(err, "%s: socketpair", name);
    if (pipe2(out, O_CLOEXEC) < 0) {
        close(in[0]);
        close(in[1]);
        return hd_error_sys(err, "%s: pipe", name);
    }
    pid_t pid = fork();
    if (pid == 0)
        hook_exec(h, in[1], out[1]);
    close(in[1]);
    close(out[1]);
    cleanup_close int to_hook = in[0];
    cleanup_close int from_hook = out[0];
    fcntl(from_hook, F_SETFL, O_NONBLOCK); /* read between polls: see output_drain */
    if (pid < 0)
        return hd_error_sys(err, "%s: fork", name);
    cleanup_close int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    /* the state is small: it fits the socket's buffer whether or not the hook reads it */
    size_t len = strlen(state), done = 0;
    while (done < len) {
        ssize_t n = send(to_hook, state + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n <= 0)
            break;
        done += (size_t)n;
    }
    shutdown(to_hook, SHUT_WR);
    struct hook_output output = {.len = 0};
    int64_t deadline = h->timeout > 0 ? now_ms() + (int64_t)h->timeout * 1000 : -1;
    bool timed_out = false, output_open = true;
    while (pidfd >= 0) {
        struct pollfd fds[2] = {{.fd = output_open ? from_hook : -1, .events = POLLIN},
                                {.fd = pidfd, .events = POLLIN}};
        int wait_ms = deadline < 0 ? -1 : (int)(deadline - now_ms());
        if (deadline >= 0 && wait_ms <= 0) {
            timed_out = true;
            break;
        }
        int r = poll(fds, 2, wait_ms);
        if (r < 0 && errno != EINTR)
            break;
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR))
            output_open = output_drain(from_hook, &output);
        if (fds[1].revents & POLLIN) {
            /* exited: what it wrote is in the pipe; a grandchild keeping the pipe open does not hold us */
            if (output_open)
                output_drain(from_hook, &output);
            break;
        }
    }
    if (timed_out)
        kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    const char *sep = output.len ? ": " : "";
    if (timed_out)
        return hd_error_set(err, 0, "%s: %s did not finish within its timeout of %d s%s%s", name, h->path, h->timeout,
                            sep, output.text);
    if (WIFSIGNALED(status))
        return hd_error_set(err, 0, "%s: %s was killed by signal %d%s%s", name, h->path, WTERMSIG(status), sep,
                            output.text);
    if (WEXITSTATUS(status) != 0)
        return hd_error_set(err, 0, "%s: %s exited with status %d%s%s", name, h->path, WEXITSTATUS(status), sep,
                            output.text);
    return 0;
}

int oci_hooks_run(const struct oci_hooks *hooks, enum oci_hook_phase phase, const char *state, hd_error_t *err)
{
    for (size_t i = 0; i < hooks->n[phase]; i++) {
        char name[64];
        snprintf(name, sizeof(name), "hooks.%s[%zu]", phase_names[phase], i);
        if (hook_run(&hooks->list[phase][i], name, state, err) < 0)
            return -1;
    }
    return 0;
}

void oci_hooks_run_warn(const struct oci_hooks *hooks, enum oci_hook_phase phase, const char *state)
{
    for (size_t i = 0; i < hooks->n[phase]; i++) {
        char name[64];
        snprintf(name, sizeof(name), "hooks.%s[%zu]", phase_names[phase], i);
        hd_error_t err = NULL;
        if (hook_run(&hooks->list[phase][i], name, state, &err) < 0)
            oci_log("warning", "%s", hd_error_text(err));
        hd_error_free(&err);
    }
}

int oci_hooks_save(const struct oci_hooks *hooks, const char *id, hd_error_t *err)
{
    if (!oci_hooks_any(hooks, OCI_HOOK_POSTSTART, OCI_HOOK_POSTSTOP))
        return 0;
    cleanup_free char *dir = oci_state_dir(id);
    cleanup_free char *path = hd_xasprintf("%s/hooks.json", dir);
    return hd_write_file(path, hooks->json, strlen(hooks->json), err);
}

int oci_hooks_load(const char *id, struct oci_hooks *out, hd_error_t *err)
{
    memset(out, 0, sizeof(*out));
    cleanup_free char *dir = oci_state_dir(id);
    cleanup_free char *path = hd_xasprintf("%s/hooks.json", dir);
    cleanup_free char *text = NULL;
    size_t len = 0;
    if (hd_read_file(path, &text, &len, err) < 0) {
        if ((*err)->errnum != ENOENT)
            return -1;
        hd_error_free(err);
        return 0; /* no poststart or poststop hooks */
    }
    json_t *root = json_loadb(text, len, 0, NULL);
    int r = oci_hooks_parse(root, out, err);
    json_decref(root);
    if (r < 0)
        return hd_error_prefix(err, "%s", path);
    return 0;
}

int oci_hooks_before_pivot_parent(const struct hd_workload *w, pid_t pid, void *data, char **message, hd_error_t *err)
{
    (void)w;
    const struct oci_config *cfg = data;
    struct oci_state st = {
        .id = (char *)cfg->id,
        .bundle = cfg->bundle,
        .rootfs = cfg->rootfs,
        .annotations_json = cfg->annotations_json,
    };
    /* prestart, the older list, sees "created" (runtime-tools' hooks_stdin check); createRuntime "creating" */
    cleanup_free char *creating = oci_state_document(&st, "creating", pid, false);
    cleanup_free char *created = oci_state_document(&st, "created", pid, false);
    if (oci_hooks_run(&cfg->hooks, OCI_HOOK_PRESTART, created, err) < 0 ||
        oci_hooks_run(&cfg->hooks, OCI_HOOK_CREATE_RUNTIME, creating, err) < 0)
        return -1;
    *message = hd_xasprintf("%s\n%s", creating, created); /* compact JSON has no newline of its own */
    return 0;
}

const char *oci_hook_state(const struct hd_workload *w, const char *status)
{
    static char *creating;
    const char *m = w->before_pivot_message;
    if (m == NULL)
        return "{}";
    const char *newline = strchr(m, '\n');
    if (newline == NULL)
        return m;
    if (strcmp(status, "creating") != 0)
        return newline + 1;
    if (creating == NULL)
        creating = hd_xasprintf("%.*s", (int)(newline - m), m);
    return creating;
}
