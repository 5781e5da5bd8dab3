/*
 * secrets.c - deliver a workload's secrets (spec `secrets`) as files on a
 * tmpfs, keep them current, remove them (docs/security.md, "Secrets").
 *
 * Each run with secrets gets its own tmpfs at <runtime>/secrets/<id> (the
 * parent is 0711: reachable, not listable), mode 0700, owned by the workload's
 * user for a process, by root for a container. A target /run/secrets/db is the
 * file run/secrets/db under it. A process is told the directory in
 * $HEDGE_SECRETS_DIR; a container gets each target's directory bound read-only
 * at that path (rootfs.c), so its /run/secrets is a tmpfs holding only its
 * secrets, and a file replaced on the host side by rename is replaced inside.
 * The values never touch a disk: they go from the sealed store through memory
 * to the tmpfs, and the memory is wiped.
 */
#include "runtime/secrets.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/child.h"
#include "base/log.h"
#include "base/util.h"
#include "runtime/run.h"
#include "secret/secret.h"

void hd_secrets_plain_free(struct hd_secret_plain *o, int n)
{
    for (int i = 0; o && i < n; i++)
        hd_secret_value_free(o[i].value, o[i].len);
    free(o);
}

/* Decrypt every secret of the spec (only those named `only`, when given). */
static int secrets_open(const struct hd_workload *w, const char *only, struct hd_secret_plain **out, hd_error_t *err)
{
    const struct hd_spec *spec = w->spec;
    struct hd_secret_plain *o = hd_xcalloc((size_t)spec->n_secrets, sizeof(*o));
    for (int i = 0; i < spec->n_secrets; i++) {
        if (only && strcmp(spec->secrets[i].name, only) != 0)
            continue;
        if (hd_secret_get(w->state_dir, NULL, spec->secrets[i].name, &o[i].value, &o[i].len, NULL, err) < 0) {
            hd_secrets_plain_free(o, spec->n_secrets);
            return hd_error_prefix(err, "secrets[%d]", i);
        }
    }
    *out = o;
    return 0;
}

/* The ids of the workload's user, as the files' default owner (host view: a user namespace shifts them). */
static void workload_ids(const struct hd_workload *w, uid_t *uid, gid_t *gid)
{
    *uid = 0;
    *gid = 0;
    if (w->user) {
        hd_error_t ignored = NULL;
        const char *root = w->spec->isolation == HD_ISOLATION_PROCESS ? "/" : w->rootfs;
        if (hd_resolve_user(root, w->user, uid, gid, &ignored) < 0) {
            *uid = 0;
            *gid = 0;
        }
        hd_error_free(&ignored);
    }
}

static void file_owner(const struct hd_workload *w, const struct hd_secret_ref *ref, uid_t *uid, gid_t *gid)
{
    workload_ids(w, uid, gid);
    if (ref->uid_set)
        *uid = ref->uid;
    if (ref->gid_set)
        *gid = ref->gid;
    const struct hd_user_namespace *ns = &w->spec->userns;
    if (ns->enabled && w->spec->isolation == HD_ISOLATION_CONTAINER) {
        *uid = *uid < ns->size ? ns->uid_base + *uid : 65534;
        *gid = *gid < ns->size ? ns->gid_base + *gid : 65534;
    }
}

/* Write one secret's file under the tmpfs, making its directories (0755: the tmpfs root guards them). */
static int secret_write(const struct hd_workload *w, const struct hd_secret_ref *ref, const struct hd_secret_plain *o,
                        hd_error_t *err)
{
    cleanup_free char *path = hd_xasprintf("%s%s", w->secrets_dir, ref->target);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    if (hd_mkdir_p(path, 0755, err) < 0)
        return -1;
    cleanup_close int dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (dirfd < 0)
        return hd_error_sys(err, "open %s", path);
    uid_t uid;
    gid_t gid;
    file_owner(w, ref, &uid, &gid);
    return hd_secret_write_file_at(dirfd, slash + 1, o->value, o->len, ref->mode ? ref->mode : 0400, uid, gid, err);
}

/* The variables the spec asks for (only then: the environment is readable in /proc by the same user). */
static void secrets_env(struct hd_workload *w, const struct hd_secret_plain *o)
{
    const struct hd_spec *spec = w->spec;
    for (int i = 0; i < spec->n_secrets; i++) {
        if (spec->secrets[i].env == NULL)
            continue;
        size_t n = strlen(spec->secrets[i].env) + 1 + o[i].len + 1;
        char *kv = hd_xmalloc(n);
        snprintf(kv, n, "%s=%.*s", spec->secrets[i].env, (int)o[i].len, o[i].value);
        hd_env_set(&w->env, kv);
        explicit_bzero(kv, n);
        free(kv);
    }
}

/* Mount this run's tmpfs and fill it from the opened values. */
static int secrets_fill(struct hd_workload *w, const struct hd_secret_plain *o, hd_error_t *err)
{
    const struct hd_spec *spec = w->spec;
    cleanup_free char *parent = hd_xasprintf("%s/secrets", hd_runtime_dir());
    if (hd_mkdir_p(parent, 0711, err) < 0)
        return -1;
    chmod(parent, 0711);
    char *dir = hd_xasprintf("%s/%s", parent, w->id);
    if (mkdir(dir, 0700) < 0) {
        hd_error_sys(err, "secrets: mkdir %s", dir);
        free(dir);
        return -1;
    }
    uid_t uid = 0;
    gid_t gid = 0;
    if (spec->isolation == HD_ISOLATION_PROCESS)
        workload_ids(w, &uid, &gid);
    struct stat st;
    if (uid != 0 && stat(hd_runtime_dir(), &st) == 0 && st.st_uid == 0 && (st.st_mode & 0011) != 0011)
        /* a process of another user must reach its tmpfs: search (not read) permission on the runtime dir,
         * whose entries keep their own modes (runs/ 0700, the API socket 0600 or 0660) */
        chmod(hd_runtime_dir(), (st.st_mode & 07777) | 0011);
    cleanup_free char *opts = hd_xasprintf("mode=0700,uid=%u,gid=%u,size=%dk,nr_inodes=1024", (unsigned)uid,
                                           (unsigned)gid, 4 * 1024 + spec->n_secrets * (HD_SECRET_MAX_VALUE / 1024));
    if (mount("hedge-secrets", dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts) < 0) {
        hd_error_sys(err, "secrets: mount a tmpfs on %s", dir);
        rmdir(dir);
        free(dir);
        return -1;
    }
    w->secrets_dir = dir; /* from here on hd_secrets_cleanup removes it */
    for (int i = 0; i < spec->n_secrets; i++) {
        if (secret_write(w, &spec->secrets[i], &o[i], err) < 0)
            return hd_error_prefix(err, "secrets[%d]: %s", i, spec->secrets[i].target);
    }
    secrets_env(w, o);
    if (spec->isolation == HD_ISOLATION_PROCESS) {
        cleanup_free char *kv = hd_xasprintf("HEDGE_SECRETS_DIR=%s", w->secrets_dir);
        hd_env_set(&w->env, kv);
    }
    return 0;
}

int hd_secrets_prepare(struct hd_workload *w, hd_error_t *err)
{
    if (w->spec->n_secrets == 0)
        return 0;
    struct hd_secret_plain *o = NULL;
    if (secrets_open(w, NULL, &o, err) < 0)
        return -1;
    if (w->spec->isolation == HD_ISOLATION_VM) {
        /* no host tmpfs: the VM backend sends the files in its CONFIG message (hd_secrets_decrypt) */
        secrets_env(w, o);
        hd_secrets_plain_free(o, w->spec->n_secrets);
        return 0;
    }
    int ret = secrets_fill(w, o, err); /* on failure hd_workload_destroy calls hd_secrets_cleanup */
    hd_secrets_plain_free(o, w->spec->n_secrets);
    return ret;
}

int hd_secrets_decrypt(const struct hd_workload *w, struct hd_secret_plain **out, hd_error_t *err)
{
    return secrets_open(w, NULL, out, err);
}

int hd_workload_refresh_secrets(struct hd_workload *w, const char *name, hd_error_t *err)
{
    if (w->secrets_dir == NULL)
        return 0;
    struct hd_secret_plain *o = NULL;
    if (secrets_open(w, name, &o, err) < 0)
        return -1;
    int ret = 0;
    for (int i = 0; i < w->spec->n_secrets && ret == 0; i++)
        if (o[i].value && secret_write(w, &w->spec->secrets[i], &o[i], err) < 0)
            ret = hd_error_prefix(err, "secrets[%d]: %s", i, w->spec->secrets[i].target);
    hd_secrets_plain_free(o, w->spec->n_secrets);
    return ret;
}

void hd_secrets_cleanup(struct hd_workload *w)
{
    if (w->secrets_dir == NULL)
        return;
    /* detach: the values go with the tmpfs, even if something still holds a file open */
    if (umount2(w->secrets_dir, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
        hd_log(HD_LOG_WARN, "cleanup", "unmount %s: %s", w->secrets_dir, strerror(errno));
    if (rmdir(w->secrets_dir) < 0 && errno != ENOENT)
        hd_log(HD_LOG_WARN, "cleanup", "remove %s: %s", w->secrets_dir, strerror(errno));
    free(w->secrets_dir);
    w->secrets_dir = NULL;
}

static int dir_cmp(const void *a, const void *b)
{
    size_t la = strlen(*(char *const *)a), lb = strlen(*(char *const *)b);
    return la < lb ? -1 : la > lb ? 1 : strcmp(*(char *const *)a, *(char *const *)b);
}

char **hd_secrets_container_dirs(const struct hd_workload *w)
{
    char **dirs = NULL;
    for (int i = 0; i < w->spec->n_secrets; i++) {
        cleanup_free char *d = hd_xstrdup(w->spec->secrets[i].target);
        char *slash = strrchr(d, '/');
        if (slash == d)
            slash[1] = '\0'; /* a target right under / binds the tmpfs's root on / : refused by validation */
        else
            *slash = '\0';
        if (!hd_strv_contains(dirs, d))
            hd_strv_push(&dirs, d);
    }
    size_t n = 0;
    while (dirs && dirs[n])
        n++;
    if (n > 1)
        qsort(dirs, n, sizeof(*dirs), dir_cmp);
    return dirs;
}
