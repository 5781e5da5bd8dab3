/*
 * pull.c - a deploy whose image is not stored yet: pulled first, then
 * deployed, with the tag pinned to its digest (docs/images.md).
 *
 * pull_prepare runs in every deploy: a reference the store knows is pinned
 * (repository:tag -> repository:tag@sha256:<manifest digest>, when a pull
 * stored that digest), so the version recorded in SQLite names exactly the
 * image it runs, and restarts, recovery and rollbacks never ask a registry.
 * A reference the store does not know and that names a registry host or a
 * digest is pulled: `hedge image pull -q` (the same code as the CLI, the
 * credentials of <state>/auth.json) runs as a child of hedged, its output in
 * a memfd, reaped through SIGCHLD like the health probes, so the loop never
 * waits for a registry. While it runs, the deployment shows as "pulling";
 * when it ends, the deploy request runs again (now finding the image) or is
 * answered with the pull's error, naming the reference.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"
#include "daemon/supervisor_internal.h"
#include "image/image.h"

/* Names a registry: a first component with '.' or ':' or "localhost" (as docker reads it), or a digest. */
static bool pull_is_registry_ref(const char *image)
{
    if (strstr(image, "@sha256:"))
        return true;
    const char *slash = strchr(image, '/');
    if (slash == NULL)
        return false;
    size_t n = (size_t)(slash - image);
    return memchr(image, '.', n) || memchr(image, ':', n) || (n == 9 && strncmp(image, "localhost", 9) == 0);
}

int pull_prepare(struct hd_supervisor *sup, struct hd_spec *spec, bool pulled)
{
    if (spec->image == NULL)
        return 0;
    char *pinned = NULL;
    hd_error_t err = NULL;
    if (hd_image_pin(sup->cfg->state_dir, spec->image, &pinned, &err) == 0) {
        if (pinned && strcmp(pinned, spec->image) != 0) {
            free(spec->image);
            spec->image = pinned;
        } else
            free(pinned);
        return 0;
    }
    hd_error_free(&err);
    return !pulled && pull_is_registry_ref(spec->image) ? 1 : 0;
}

struct pull *pull_find(struct hd_supervisor *sup, const char *name)
{
    for (struct pull *p = sup->pulls; p; p = p->next)
        if (strcmp(p->name, name) == 0)
            return p;
    return NULL;
}

static void pull_unlink(struct pull *p)
{
    for (struct pull **q = &p->sup->pulls; *q; q = &(*q)->next)
        if (*q == p) {
            *q = p->next;
            break;
        }
}

static void pull_free(struct pull *p)
{
    if (p->out_fd >= 0)
        close(p->out_fd);
    free(p->name);
    free(p->image);
    free(p->isolation);
    free(p->body);
    free(p->origin);
    free(p);
}

void pull_start(struct hd_supervisor *sup, const struct hd_spec *spec, const char *body, size_t len, const char *origin,
                double health_wait, hd_reply_fn reply, void *ctx)
{
    cleanup_free char *hedge = hd_daemon_hedge_path();
    cleanup_strv char **argv = NULL;
    hd_strv_push(&argv, "hedge");
    hd_strv_push(&argv, "image");
    hd_strv_push(&argv, "pull");
    hd_strv_push(&argv, "-q");
    for (size_t i = 0; sup->cfg->insecure_registries && sup->cfg->insecure_registries[i]; i++) {
        hd_strv_push(&argv, "--insecure-registry");
        hd_strv_push(&argv, sup->cfg->insecure_registries[i]);
    }
    if (sup->cfg->registry_ca) {
        hd_strv_push(&argv, "--ca");
        hd_strv_push(&argv, sup->cfg->registry_ca);
    }
    hd_strv_push(&argv, "--");
    hd_strv_push(&argv, spec->image);

    int out_fd = memfd_create("hedge-pull", MFD_CLOEXEC);
    if (out_fd < 0) {
        supervisor_reply_error(reply, ctx, HD_SUP_INTERNAL, NULL, "image %s: pull: memfd: %s", spec->image,
                               strerror(errno));
        return;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(out_fd);
        supervisor_reply_error(reply, ctx, HD_SUP_INTERNAL, NULL, "image %s: pull: fork: %s", spec->image, strerror(e));
        return;
    }
    if (pid == 0) {
        hd_daemon_child_begin(out_fd, out_fd);
        hd_daemon_exec_hedge(hedge, argv);
    }
    struct pull *p = hd_xcalloc(1, sizeof(*p));
    p->sup = sup;
    p->name = hd_xstrdup(spec->name);
    p->image = hd_xstrdup(spec->image);
    p->isolation = hd_xstrdup(hd_isolation_name(spec->isolation));
    p->body = hd_xmalloc(len + 1);
    memcpy(p->body, body, len);
    p->body[len] = '\0';
    p->len = len;
    p->origin = hd_xstrdup(origin);
    p->health_wait = health_wait;
    p->reply = reply;
    p->ctx = ctx;
    p->pid = pid;
    p->out_fd = out_fd;
    p->started_at = supervisor_unix_ms();
    p->next = sup->pulls;
    sup->pulls = p;
    hd_log(HD_LOG_INFO, "supervisor", "%s: pulling image %s (pid %d)", p->name, p->image, (int)pid);
    hd_store_event(sup->store, p->name, "pulling", "pulling image %s", p->image);
}

/* The child's last line, without "hedge: " / "error: ": the reason the pull failed. */
static char *pull_reason(struct pull *p, int status)
{
    char buf[8192];
    ssize_t n = pread(p->out_fd, buf, sizeof(buf) - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    char *end = buf + strlen(buf);
    while (end > buf && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' '))
        *--end = '\0';
    char *line = strrchr(buf, '\n');
    line = line ? line + 1 : buf;
    for (const char *prefix = "hedge: "; prefix; prefix = strcmp(prefix, "hedge: ") == 0 ? "error: " : NULL)
        if (strncmp(line, prefix, strlen(prefix)) == 0)
            line += strlen(prefix);
    cleanup_free char *own = hd_xasprintf("image pull %s: ", p->image); /* the CLI's prefix: said already */
    if (strncmp(line, own, strlen(own)) == 0)
        line += strlen(own);
    if (*line)
        return hd_xstrdup(line);
    if (WIFSIGNALED(status))
        return hd_xasprintf("hedge image pull was killed by signal %d", WTERMSIG(status));
    return hd_xasprintf("hedge image pull exited with code %d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

/* A deploy whose client went away goes on; its answer goes nowhere. */
static void pull_reply_dropped(void *ctx, enum hd_sup_result result, json_t *body, hd_error_t err)
{
    (void)ctx;
    (void)result;
    (void)err;
    json_decref(body);
}

bool pull_child_exited(struct hd_supervisor *sup, pid_t pid, int status)
{
    struct pull *p = sup->pulls;
    while (p && p->pid != pid)
        p = p->next;
    if (p == NULL)
        return false;
    pull_unlink(p);
    hd_reply_fn reply = p->reply ? p->reply : pull_reply_dropped;
    double secs = (double)(supervisor_unix_ms() - p->started_at) / 1000.0;
    if (p->cancelled) {
        hd_store_event(sup->store, p->name, "pull-failed", "pull of image %s cancelled: removed", p->image);
        supervisor_reply_error(reply, p->ctx, HD_SUP_CONFLICT, NULL,
                               "workload \"%s\": removed while its image %s was being pulled", p->name, p->image);
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        hd_log(HD_LOG_INFO, "supervisor", "%s: pulled image %s in %.1fs", p->name, p->image, secs);
        hd_store_event(sup->store, p->name, "pulled", "pulled image %s in %.1fs", p->image, secs);
        supervisor_deploy(sup, p->body, p->len, p->origin, p->health_wait, true, reply, p->ctx);
    } else {
        cleanup_free char *why = pull_reason(p, status);
        hd_log(HD_LOG_ERROR, "supervisor", "%s: pull of image %s failed: %s", p->name, p->image, why);
        hd_store_event(sup->store, p->name, "pull-failed", "image %s: %s", p->image, why);
        supervisor_reply_error(reply, p->ctx, HD_SUP_PULL_FAILED, NULL, "image %s: pull failed: %s", p->image, why);
    }
    pull_free(p);
    return true;
}

void pull_cancel(struct pull *p)
{
    if (!p->cancelled)
        kill(p->pid, SIGKILL); /* reaped by pull_child_exited, which answers the deploy */
    p->cancelled = true;
}

void pull_forget(struct hd_supervisor *sup, void *ctx)
{
    for (struct pull *p = sup->pulls; p; p = p->next)
        if (p->ctx == ctx)
            p->reply = NULL;
}

void pull_free_all(struct hd_supervisor *sup)
{
    while (sup->pulls) {
        struct pull *p = sup->pulls;
        sup->pulls = p->next;
        kill(p->pid, SIGTERM); /* its deploy was never recorded: nothing would finish it */
        pull_free(p);
    }
}

json_t *pull_json(const struct pull *p)
{
    json_t *o = json_pack("{s:s,s:i,s:s,s:s,s:s,s:i,s:s}", "name", p->name, "version", 0, "isolation", p->isolation,
                          "state", "pulling", "desired", "running", "restarts", 0, "digest", "");
    json_object_set_new(o, "pid", json_null());
    json_object_set_new(o, "monitor_pid", json_null());
    json_object_set_new(o, "started_at", json_null());
    json_object_set_new(o, "uptime_seconds", json_null());
    json_object_set_new(o, "last_error", json_null());
    json_object_set_new(o, "upgrading_to", json_null());
    json_object_set_new(o, "pulling", json_string(p->image));
    return o;
}
