/*
 * run.c - spec → plan → backend, and the foreground run loop.
 *
 * The plan merges the spec with the image's config defaults the way docker
 * does: the spec's entrypoint/command override the image's Entrypoint/Cmd,
 * env is image Env overlaid with spec env, workdir and user fall back to the
 * image's. Each run owns a run dir (<runtime>/runs/<id>; made only for
 * container and VM runs, which keep files there) and a cgroup (hedge/<id>);
 * hd_workload_destroy removes both on every path.
 *
 * The foreground loop blocks the forwarded signals, reads them from a
 * signalfd and watches the workload through a pidfd, so no work happens in a
 * signal handler and no signal is lost between checks.
 */
#include "runtime/run.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cgroup/cgroup.h"
#include "cgroup/devices.h"
#include "image/image.h"
#include "base/dynlib.h"
#include "base/log.h"
#include "base/util.h"
#include "runtime/secrets.h"
#include "runtime/vm/vm.h"

const char *hd_runtime_dir(void)
{
    const char *d = getenv("HEDGE_RUN_DIR");
    return d && *d ? d : "/run/hedge";
}

const struct hd_backend *hd_backend_for(enum hd_isolation iso)
{
    switch (iso) {
    case HD_ISOLATION_PROCESS: return &hd_backend_process;
    case HD_ISOLATION_CONTAINER: return &hd_backend_container;
    case HD_ISOLATION_VM: return &hd_backend_vm;
    }
    return NULL;
}

void hd_exit_from_wait_status(int wstatus, struct hd_exit *exit)
{
    memset(exit, 0, sizeof(*exit));
    if (WIFEXITED(wstatus)) {
        exit->status = WEXITSTATUS(wstatus);
        exit->code = exit->status;
    } else if (WIFSIGNALED(wstatus)) {
        exit->status = -1;
        exit->signal = WTERMSIG(wstatus);
        exit->code = HD_EXIT_SIGNAL(exit->signal);
    } else {
        exit->status = -1;
        exit->code = HD_EXIT_HEDGE;
    }
}

int hd_backend_pid_signal(struct hd_workload *w, int sig, hd_error_t *err)
{
    if (w->pid <= 0)
        return hd_error_set(err, ESRCH, "signal: workload is not running");
    if (kill(w->pid, sig) < 0)
        return hd_error_sys(err, "kill %d", w->pid);
    return 0;
}

int hd_backend_pid_wait(struct hd_workload *w, struct hd_exit *exit, hd_error_t *err)
{
    int status;
    pid_t r;
    do
        r = waitpid(w->pid, &status, 0);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return hd_error_sys(err, "wait for pid %d", w->pid);
    w->pid = -1;
    hd_exit_from_wait_status(status, exit);
    return 0;
}

int hd_backend_cgroup_stats(struct hd_workload *w, struct hd_stats *stats, hd_error_t *err)
{
    return hd_cgroup_stats(w->cgroup, stats, err);
}

#define DEFAULT_PATH_ENV "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* Merge spec and image config into the plan fields of w. */
static int plan_from_spec(struct hd_workload *w, const struct hd_image_config *image, hd_error_t *err)
{
    const struct hd_spec *spec = w->spec;
    char **entry = spec->entrypoint ? spec->entrypoint : (image ? image->entrypoint : NULL);
    char **cmd = spec->command ? spec->command : NULL;
    /* docker: an explicit entrypoint resets the image's Cmd */
    if (cmd == NULL && spec->entrypoint == NULL && image)
        cmd = image->cmd;
    for (size_t i = 0; entry && entry[i]; i++)
        hd_strv_push(&w->argv, entry[i]);
    for (size_t i = 0; cmd && cmd[i]; i++)
        hd_strv_push(&w->argv, cmd[i]);
    if (w->argv == NULL || w->argv[0] == NULL)
        return hd_error_set(err, 0, "command: none given and the image has no Cmd or Entrypoint");

    if (spec->isolation == HD_ISOLATION_PROCESS) {
        /* a bare process inherits the caller's environment, like any command */
        extern char **environ;
        w->env = hd_strv_dup(environ);
    } else {
        hd_strv_push(&w->env, DEFAULT_PATH_ENV);
        if (spec->hostname) {
            cleanup_free char *h = hd_xasprintf("HOSTNAME=%s", spec->hostname);
            hd_env_set(&w->env, h);
        }
    }
    for (size_t i = 0; image && image->env && image->env[i]; i++)
        hd_env_set(&w->env, image->env[i]);
    for (size_t i = 0; spec->env && spec->env[i]; i++)
        hd_env_set(&w->env, spec->env[i]);

    w->workdir = hd_xstrdup(spec->workdir ? spec->workdir
                                          : (image && image->workdir && image->workdir[0] ? image->workdir : NULL));
    w->user = hd_xstrdup(spec->user ? spec->user : (image && image->user && image->user[0] ? image->user : NULL));
    return 0;
}

static unsigned device_access_bits(const char *letters)
{
    unsigned bits = 0;
    for (const char *c = letters; *c; c++)
        bits |= *c == 'r' ? HD_DEV_READ : *c == 'w' ? HD_DEV_WRITE : *c == 'm' ? HD_DEV_MKNOD : 0;
    return bits;
}

/*
 * spec->devices and device_rules into the plan: each host node must exist and
 * be a character or block device (its type and numbers are taken now, on the
 * host, for its rule); the device list is Docker's default plus one allow per device and
 * per rule (docs/spec.md#devices).
 */
static int plan_devices(struct hd_workload *w, hd_error_t *err)
{
    const struct hd_spec *spec = w->spec;
    if (spec->n_devices == 0 && spec->n_device_rules == 0)
        return 0;
    w->devices = hd_xcalloc((size_t)spec->n_devices + 1, sizeof(*w->devices));
    size_t n_rules = hd_device_rules_default_count;
    w->plan_device_rules =
        hd_xcalloc(n_rules + (size_t)spec->n_devices + 2 * (size_t)spec->n_device_rules, sizeof(*w->plan_device_rules));
    memcpy(w->plan_device_rules, hd_device_rules_default, n_rules * sizeof(*w->plan_device_rules));
    for (int i = 0; i < spec->n_devices; i++) {
        const struct hd_device *d = &spec->devices[i];
        struct stat st;
        if (stat(d->path, &st) < 0)
            return hd_error_sys(err, "devices[%d].path: %s", i, d->path);
        if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode))
            return hd_error_set(err, 0, "devices[%d].path: %s is not a character or block device", i, d->path);
        w->devices[w->n_devices++] = (struct hd_workload_device){
            .host_path = d->path,
            .target = d->target ? d->target : d->path,
        };
        w->plan_device_rules[n_rules++] = (struct hd_device_rule){
            .allow = true,
            .type = S_ISCHR(st.st_mode) ? 'c' : 'b',
            .major = major(st.st_rdev),
            .minor = minor(st.st_rdev),
            .access = device_access_bits(d->permissions[0] ? d->permissions : "rwm"),
        };
    }
    for (int i = 0; i < spec->n_device_rules; i++) {
        const struct hd_device_class *c = &spec->device_rules[i];
        unsigned access = device_access_bits(c->access);
        /* v1's "a" line has no access (it is every access): type a with less is c *:* and b *:* */
        bool split = c->type == 'a' && access != HD_DEV_RWM;
        for (int k = 0; k < (split ? 2 : 1); k++)
            w->plan_device_rules[n_rules++] = (struct hd_device_rule){
                .allow = true,
                .type = split ? "cb"[k] : c->type,
                .major = c->type == 'a' ? HD_DEV_ANY : c->major,
                .minor = c->type == 'a' ? HD_DEV_ANY : c->minor,
                .access = access,
            };
    }
    w->device_rules = w->plan_device_rules;
    w->n_device_rules = n_rules;
    return 0;
}

/*
 * The statically linked `hedge` cannot load shared libraries (base/dynlib.h): a workload that will need
 * one (libcrypto for its secrets, libmnl and libnftables for a bridge network) is handed over to
 * hedge-full here, before it has a run dir, a cgroup or anything else to undo. Past this point nothing is handed
 * over. A dynamically linked program passes straight through.
 */
static int hand_over_if_libraries_needed(const struct hd_spec *spec, hd_error_t *err)
{
    const char *needs = NULL;
    if (spec->n_secrets > 0)
        needs = "secrets (libcrypto)";
    else if (spec->isolation != HD_ISOLATION_PROCESS && spec->network == HD_NET_BRIDGE)
        needs = "a bridge network (libmnl, libnftables)";
    if (needs && hd_dynlib_handover(needs, err) < 0)
        return -1;
    hd_dynlib_end_handover();
    return 0;
}

int hd_workload_create(const struct hd_spec *spec, const struct hd_run_options *opts, struct hd_workload **out,
                       hd_error_t *err)
{
    if (hd_spec_validate(spec, err) < 0 || hand_over_if_libraries_needed(spec, err) < 0) {
        hd_vm_pooled_destroy(opts ? opts->vm_pooled : NULL);
        return -1;
    }
    struct hd_workload *w = hd_xcalloc(1, sizeof(*w));
    w->spec = spec;
    w->vm_pooled = opts ? opts->vm_pooled : NULL;
    w->pid = -1;
    w->backend = hd_backend_for(spec->isolation);
    w->state_dir = opts && opts->state_dir ? opts->state_dir : hd_state_dir();
    for (int i = 0; i < 3; i++)
        w->stdio[i] = opts && opts->set_stdio ? opts->stdio[i] : i;
    hd_random_id(w->id, sizeof(w->id));

    struct hd_image_config *image = NULL;
    if (spec->image) {
        if (hd_image_lookup(w->state_dir, spec->image, &image, err) < 0)
            goto fail;
        w->rootfs = hd_xstrdup(image->rootfs);
        w->rootfs_from_image = true;
        w->image_digest = hd_xstrdup(image->id);
    } else if (spec->rootfs) {
        if (access(spec->rootfs, F_OK) < 0) {
            hd_error_sys(err, "rootfs: %s", spec->rootfs);
            goto fail;
        }
        w->rootfs = hd_xstrdup(spec->rootfs);
    }
    if (plan_from_spec(w, image, err) < 0 || plan_devices(w, err) < 0)
        goto fail;
    hd_image_config_free(image);
    image = NULL;

    /* A bare process keeps nothing there (the containers' overlay and /etc files, a VM's logs), so its
     * run dir is named but not made (only <runtime>/runs, one mkdir once it exists): an rm -rf off the
     * process start path. */
    w->run_dir = hd_xasprintf("%s/runs/%s", hd_runtime_dir(), w->id);
    if (spec->isolation == HD_ISOLATION_PROCESS) {
        cleanup_free char *runs = hd_xasprintf("%s/runs", hd_runtime_dir());
        if (mkdir(runs, 0700) < 0 && errno != EEXIST && hd_mkdir_p(runs, 0700, err) < 0) {
            free(w->run_dir);
            w->run_dir = NULL;
            goto fail;
        }
    } else if (hd_mkdir_p(w->run_dir, 0700, err) < 0) {
        free(w->run_dir);
        w->run_dir = NULL;
        goto fail;
    }
    /* A VM's cgroup holds QEMU: guest RAM plus QEMU's own memory; the spec's pids apply inside the guest. */
    struct hd_resources cgroup_limits = spec->resources;
    if (spec->isolation == HD_ISOLATION_VM)
        hd_vm_host_resources(&spec->resources, &cgroup_limits);
    const char *cgroup_name = opts && opts->cgroup_name ? opts->cgroup_name : w->id;
    if (hd_cgroup_create(cgroup_name, &cgroup_limits, &w->cgroup, err) < 0)
        goto fail;
    if (hd_secrets_prepare(w, err) < 0)
        goto fail;
    if (w->backend->prepare(w, err) < 0)
        goto fail;
    *out = w;
    return 0;

fail:
    hd_image_config_free(image);
    hd_workload_destroy(w);
    if (spec->name)
        hd_error_prefix(err, "run %s", spec->name);
    return -1;
}

int hd_workload_start(struct hd_workload *w, hd_error_t *err)
{
    if (w->backend->start(w, err) < 0) {
        if (w->spec->name)
            hd_error_prefix(err, "run %s", w->spec->name);
        return -1;
    }
    return 0;
}

int hd_workload_signal(struct hd_workload *w, int sig, hd_error_t *err)
{
    return w->backend->signal(w, sig, err);
}

int hd_workload_wait(struct hd_workload *w, struct hd_exit *exit, hd_error_t *err)
{
    if (w->backend->wait(w, exit, err) < 0)
        return -1;
    if (!exit->oom_killed && w->cgroup && hd_cgroup_oom_killed(w->cgroup)) {
        exit->oom_killed = true;
    }
    if (exit->oom_killed && exit->signal == SIGKILL)
        exit->code = 137;
    return 0;
}

void hd_workload_destroy(struct hd_workload *w)
{
    if (w == NULL)
        return;
    hd_error_t err = NULL;
    if (w->backend && w->backend->cleanup)
        w->backend->cleanup(w);
    hd_vm_pooled_destroy(w->vm_pooled); /* not taken by the vm backend */
    hd_secrets_cleanup(w);
    if (w->cgroup && hd_cgroup_destroy(w->cgroup, &err) < 0) {
        hd_log_error(HD_LOG_WARN, "cleanup", &err);
    }
    w->cgroup = NULL;
    if (w->run_dir && hd_rm_rf(w->run_dir, &err) < 0) {
        hd_log_error(HD_LOG_WARN, "cleanup", &err);
    }
    free(w->run_dir);
    free(w->rootfs);
    free(w->image_digest);
    hd_strv_free(w->argv);
    hd_strv_free(w->env);
    free(w->workdir);
    free(w->user);
    free(w->devices);
    free(w->plan_device_rules);
    free(w);
}

void hd_workload_release(struct hd_workload *w)
{
    if (w == NULL)
        return;
    w->pid = -1; /* so that the backend's cleanup does not kill it */
    if (w->backend && w->backend->cleanup)
        w->backend->cleanup(w);
    hd_cgroup_forget(w->cgroup);
    free(w->run_dir);
    free(w->secrets_dir); /* hedge-oci's specs name no secrets: nothing was mounted */
    free(w->rootfs);
    free(w->image_digest);
    hd_strv_free(w->argv);
    hd_strv_free(w->env);
    free(w->workdir);
    free(w->user);
    free(w->devices);
    free(w->plan_device_rules);
    free(w);
}

/* The same set is forwarded by the static hedge's fast path (cli/fast_run.c): keep the two the same. */
static const int forwarded_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

int hd_run(const struct hd_spec *spec, const struct hd_run_options *opts, struct hd_exit *exit, hd_error_t *err)
{
    sigset_t mask, old_mask;
    sigemptyset(&mask);
    for (size_t i = 0; i < ARRAY_SIZE(forwarded_signals); i++)
        sigaddset(&mask, forwarded_signals[i]);
    sigaddset(&mask, SIGCHLD);
    /* Blocked from before the fork, so a signal that arrives early is queued, not lost. */
    if (sigprocmask(SIG_BLOCK, &mask, &old_mask) < 0)
        return hd_error_sys(err, "sigprocmask");

    struct hd_workload *w = NULL;
    int ret = -1;
    cleanup_close int sfd = -1;
    cleanup_close int pidfd = -1;
    if (hd_workload_create(spec, opts, &w, err) < 0)
        goto out;
    sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        hd_error_sys(err, "signalfd");
        goto out;
    }
    if (hd_workload_start(w, err) < 0)
        goto out;
    pidfd = (int)syscall(SYS_pidfd_open, w->pid, 0);
    if (pidfd < 0) {
        hd_error_sys(err, "pidfd_open %d", w->pid);
        goto out;
    }
    for (;;) {
        struct pollfd fds[2] = {{.fd = pidfd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            hd_error_sys(err, "poll");
            goto out;
        }
        if (fds[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                if (si.ssi_signo == SIGCHLD)
                    continue;
                hd_error_t ignored = NULL;
                hd_workload_signal(w, (int)si.ssi_signo, &ignored);
                hd_error_free(&ignored);
            }
        }
        if (fds[0].revents & POLLIN)
            break;
    }
    ret = hd_workload_wait(w, exit, err);
out:
    hd_workload_destroy(w);
    sigprocmask(SIG_SETMASK, &old_mask, NULL);
    return ret;
}
