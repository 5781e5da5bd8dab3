/*
 * image.c - the content-addressed image store: import, lookup, list, remove.
 *
 * Layout under <state>/images (mode 0700: rootfs trees hold set-uid files):
 *   lock                      flock'ed by import and remove, so they never collide
 *   refs.json                 {"refs": {"name:tag": "sha256:<image id>"}}, replaced atomically; a
 *                             pull adds "name@sha256:<manifest digest>" refs too (see refs_use_by_tag)
 *   meta/<id>.json            per image: config defaults, size, import time, layers, blobs
 *   rootfs/<id>/              the flattened root filesystem (layers applied in order)
 *   blobs/sha256/<hex>        every verified blob (config, manifest, layers); sha256(file) == hex
 *   tmp/                      imports in progress; whatever is here when the lock is taken is
 *                             left over from a killed import and is removed
 *   partial/<hex>             blob downloads cut short, kept for a later pull to resume (pull.c)
 * The image id is the sha256 of the image's config blob, as in docker.
 *
 * Import is a transaction: the tarball is staged and verified and the layers
 * applied inside tmp/import-XXXXXX; only then are blobs, the rootfs and the
 * metadata renamed into place and refs.json replaced (the commit point). A
 * failure before that removes the temp dir and leaves the store as it was.
 * An image whose metadata already exists is not unpacked again: re-importing
 * costs one read of the tarball. After every change to the refs (import, rm)
 * a sweep removes what no name reaches: unnamed images, rootfs trees without
 * metadata, unlisted blobs; so a killed import heals at the next one. Readers (lookup, list) take no lock: every
 * file they read is replaced by rename, and meta/<id>.json is written only
 * after rootfs/<id> is complete.
 */
#include "image/image.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "image/internal.h"
#include "base/util.h"

#define ID_PREFIX_MIN 12

const char *hd_state_dir(void)
{
    const char *s = getenv("HEDGE_STATE_DIR");
    return s && *s ? s : "/var/lib/hedge";
}

void hd_image_config_free(struct hd_image_config *c)
{
    if (c == NULL)
        return;
    free(c->id);
    free(c->name);
    free(c->rootfs);
    hd_strv_free(c->cmd);
    hd_strv_free(c->entrypoint);
    hd_strv_free(c->env);
    free(c->workdir);
    free(c->user);
    free(c);
}

void hd_image_list_free(struct hd_image_config **list)
{
    for (size_t i = 0; list && list[i]; i++)
        hd_image_config_free(list[i]);
    free(list);
}

/* ---- names -------------------------------------------------------------------------------- */

static bool valid_repository(const char *s, size_t len)
{
    if (len == 0 || len > 255)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        /* lower case only; ':' allowed for a registry port (host:5000/name) */
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' || c == '/' ||
              c == ':'))
            return false;
    }
    return s[0] != '/' && s[len - 1] != '/';
}

static bool valid_tag(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > 128 || s[0] == '.' || s[0] == '-')
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

char *image_name_normalize(const char *ref)
{
    if (ref == NULL || strchr(ref, '@'))
        return NULL; /* digest references are not names */
    static const char *const implicit[] = {"docker.io/library/", "index.docker.io/library/", "docker.io/",
                                           "index.docker.io/"};
    for (size_t i = 0; i < ARRAY_SIZE(implicit); i++)
        if (strncmp(ref, implicit[i], strlen(implicit[i])) == 0) {
            ref += strlen(implicit[i]);
            break;
        }
    const char *slash = strrchr(ref, '/');
    const char *colon = strrchr(ref, ':');
    const char *tag = "latest";
    size_t repo_len = strlen(ref);
    if (colon && (slash == NULL || colon > slash)) {
        tag = colon + 1;
        repo_len = (size_t)(colon - ref);
    }
    if (!valid_repository(ref, repo_len) || !valid_tag(tag))
        return NULL;
    return hd_xasprintf("%.*s:%s", (int)repo_len, ref, tag);
}

char *image_digest_ref_normalize(const char *ref)
{
    const char *at = ref ? strchr(ref, '@') : NULL;
    if (at == NULL || strncmp(at + 1, "sha256:", 7) != 0 || strlen(at + 8) != IMAGE_HEX_LEN)
        return NULL;
    for (const char *p = at + 8; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return NULL;
    cleanup_free char *repo = hd_xasprintf("%.*s", (int)(at - ref), ref);
    const char *slash = strrchr(repo, '/'), *colon = strrchr(repo, ':');
    if (colon && (slash == NULL || colon > slash))
        return NULL; /* repository@digest: a tag in front of the digest is not accepted */
    cleanup_free char *name = image_name_normalize(repo); /* "<repository>:latest" */
    size_t len = name ? strlen(name) : 0;
    if (len <= 7 || strcmp(name + len - 7, ":latest") != 0)
        return NULL;
    return hd_xasprintf("%.*s%s", (int)(len - 7), name, at);
}

/* repository:tag@sha256:<hex> (a deployment's pinned reference) -> repository@sha256:<hex>, or NULL. */
static char *image_pinned_ref_normalize(const char *ref)
{
    const char *at = strchr(ref, '@');
    cleanup_free char *repo = hd_xasprintf("%.*s", (int)(at - ref), ref);
    char *slash = strrchr(repo, '/'), *colon = strrchr(repo, ':');
    if (colon == NULL || (slash && colon < slash))
        return NULL;
    cleanup_free char *stripped = hd_xasprintf("%.*s%s", (int)(colon - repo), repo, at);
    return image_digest_ref_normalize(stripped);
}

/* "sha256:<hex prefix>" or "<hex prefix>" of at least 12 hex digits -> the hex part. */
static const char *id_prefix(const char *ref)
{
    if (strncmp(ref, "sha256:", 7) == 0)
        ref += 7;
    size_t len = strlen(ref);
    if (len < ID_PREFIX_MIN || len > IMAGE_HEX_LEN)
        return NULL;
    for (size_t i = 0; i < len; i++)
        if (!((ref[i] >= '0' && ref[i] <= '9') || (ref[i] >= 'a' && ref[i] <= 'f')))
            return NULL;
    return ref;
}

/* ---- store files -------------------------------------------------------------------------- */

struct store {
    char *dir; /* <state>/images, a real path when the store exists */
    int lock_fd;
};

static void store_close(struct store *s)
{
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* releases the flock */
    free(s->dir);
    s->dir = NULL;
    s->lock_fd = -1;
}

/* Create the store if needed, take its lock and clear what killed imports left in tmp/. */
static int store_open_locked(const char *state_dir, struct store *s, hd_error_t *err)
{
    s->lock_fd = -1;
    cleanup_free char *dir = hd_xasprintf("%s/images", state_dir);
    cleanup_free char *lock = NULL, *tmp = NULL;
    if (hd_mkdir_p(dir, 0700, err) < 0)
        return -1;
    char real[PATH_MAX];
    if (realpath(dir, real) == NULL)
        return hd_error_sys(err, "realpath %s", dir);
    s->dir = hd_xstrdup(real);
    static const char *const subdirs[] = {"blobs/sha256", "rootfs", "meta", "tmp", "partial"};
    for (size_t i = 0; i < ARRAY_SIZE(subdirs); i++) {
        cleanup_free char *sub = hd_xasprintf("%s/%s", s->dir, subdirs[i]);
        if (hd_mkdir_p(sub, 0700, err) < 0)
            goto fail;
    }
    lock = hd_xasprintf("%s/lock", s->dir);
    s->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (s->lock_fd < 0) {
        hd_error_sys(err, "open %s", lock);
        goto fail;
    }
    while (flock(s->lock_fd, LOCK_EX) < 0) {
        if (errno != EINTR) {
            hd_error_sys(err, "lock %s", lock);
            goto fail;
        }
    }
    tmp = hd_xasprintf("%s/tmp", s->dir);
    DIR *d = opendir(tmp);
    if (d == NULL) {
        hd_error_sys(err, "open %s", tmp);
        goto fail;
    }
    struct dirent *de;
    int ret = 0;
    while (ret == 0 && (de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            ret = hd_rm_rf_at(dirfd(d), de->d_name, err);
    closedir(d);
    if (ret < 0)
        goto fail;
    return 0;
fail:
    store_close(s);
    return -1;
}

/* The store dir of an existing store, as a real path; NULL when there is none. */
static char *store_dir_readonly(const char *state_dir)
{
    cleanup_free char *dir = hd_xasprintf("%s/images", state_dir);
    char real[PATH_MAX];
    return realpath(dir, real) ? hd_xstrdup(real) : NULL;
}

static json_t *refs_load(const char *store_dir, hd_error_t *err)
{
    cleanup_free char *path = hd_xasprintf("%s/refs.json", store_dir);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (root == NULL) {
        if (access(path, F_OK) < 0 && errno == ENOENT)
            return json_object();
        hd_error_set(err, 0, "%s: line %d: %s", path, jerr.line, jerr.text);
        return NULL;
    }
    json_t *refs = json_object_get(root, "refs");
    if (!json_is_object(refs)) {
        json_decref(root);
        hd_error_set(err, 0, "%s: \"refs\" is not an object", path);
        return NULL;
    }
    json_incref(refs);
    json_decref(root);
    return refs;
}

static int write_json_atomic(const char *path, json_t *doc, hd_error_t *err)
{
    cleanup_free char *text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (text == NULL)
        return hd_error_set(err, ENOMEM, "encode %s", path);
    size_t len = strlen(text);
    text[len] = '\n';
    return hd_write_file_atomic(path, text, len + 1, err);
}

static int refs_save(const char *store_dir, json_t *refs, hd_error_t *err)
{
    cleanup_free char *path = hd_xasprintf("%s/refs.json", store_dir);
    json_t *root = json_pack("{sO}", "refs", refs);
    int ret = write_json_atomic(path, root, err);
    json_decref(root);
    return ret;
}

static json_t *meta_load(const char *store_dir, const char *hex, hd_error_t *err)
{
    cleanup_free char *path = hd_xasprintf("%s/meta/%s.json", store_dir, hex);
    json_error_t jerr;
    json_t *meta = json_load_file(path, 0, &jerr);
    if (meta == NULL)
        hd_error_set(err, 0, "%s: %s", path, jerr.text);
    return meta;
}

static char **json_strv_or_null(json_t *arr)
{
    if (!json_is_array(arr))
        return NULL;
    char **v = hd_xcalloc(json_array_size(arr) + 1, sizeof(char *));
    size_t n = 0, i;
    json_t *item;
    json_array_foreach(arr, i, item) if (json_is_string(item)) v[n++] = hd_xstrdup(json_string_value(item));
    return v;
}

static json_t *json_strv(char *const *v)
{
    if (v == NULL)
        return json_null();
    json_t *arr = json_array();
    for (size_t i = 0; v[i]; i++)
        json_array_append_new(arr, json_string(v[i]));
    return arr;
}

static struct hd_image_config *config_from_meta(const char *store_dir, const char *hex, json_t *meta, const char *name)
{
    struct hd_image_config *c = hd_xcalloc(1, sizeof(*c));
    json_t *defaults = json_object_get(meta, "config");
    c->id = hd_xasprintf("sha256:%s", hex);
    c->name = hd_xstrdup(name);
    c->rootfs = hd_xasprintf("%s/rootfs/%s", store_dir, hex);
    c->cmd = json_strv_or_null(json_object_get(defaults, "Cmd"));
    c->entrypoint = json_strv_or_null(json_object_get(defaults, "Entrypoint"));
    c->env = json_strv_or_null(json_object_get(defaults, "Env"));
    c->workdir = hd_xstrdup(json_string_value(json_object_get(defaults, "WorkingDir")));
    c->user = hd_xstrdup(json_string_value(json_object_get(defaults, "User")));
    c->size = json_integer_value(json_object_get(meta, "size"));
    c->created = json_integer_value(json_object_get(meta, "created"));
    return c;
}

static bool path_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* meta/<64 hex>.json; not the temp files of an atomic write */
static bool is_meta_name(const char *name)
{
    size_t len = strlen(name);
    return len == IMAGE_HEX_LEN + 5 && strcmp(name + IMAGE_HEX_LEN, ".json") == 0;
}

/* ---- size --------------------------------------------------------------------------------- */

/* Apparent bytes of files and symlinks below dirfd; a hardlinked file counts once. */
static int64_t tree_size(int dir_fd, struct image_string_set *inodes)
{
    int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return 0;
    }
    int64_t total = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            int child = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (child >= 0) {
                total += tree_size(child, inodes);
                close(child);
            }
        } else if (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)) {
            if (st.st_nlink > 1) {
                char key[64];
                snprintf(key, sizeof(key), "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
                if (!image_string_set_add(inodes, key))
                    continue;
            }
            total += st.st_size;
        }
    }
    closedir(d);
    return total;
}

static int64_t rootfs_size(const char *rootfs)
{
    cleanup_close int fd = open(rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    struct image_string_set inodes = {0};
    int64_t size = tree_size(fd, &inodes);
    image_string_set_clear(&inodes);
    return size;
}

/* ---- garbage collection ------------------------------------------------------------------- */

static bool refs_use(json_t *refs, const char *id)
{
    const char *key;
    json_t *value;
    json_object_foreach(refs, key,
                        value) if (json_is_string(value) && strcmp(json_string_value(value), id) == 0) return true;
    return false;
}

/*
 * Digest refs (repository@sha256:<manifest>, written by a pull) are a second
 * name of a tagged image: not listed while a tag names the image, and dropped
 * with its last tag, as in docker. An image pulled by digest alone keeps its
 * digest ref as its name.
 */
static bool refs_use_by_tag(json_t *refs, const char *id)
{
    const char *key;
    json_t *value;
    json_object_foreach(refs, key, value) if (!strchr(key, '@') && json_is_string(value) &&
                                              strcmp(json_string_value(value), id) == 0) return true;
    return false;
}

static void refs_drop_digests(json_t *refs, const char *id, char ***untagged)
{
    const char *key;
    json_t *value;
    void *tmp;
    json_object_foreach_safe(refs, tmp, key, value)
    {
        if (strchr(key, '@') && json_is_string(value) && strcmp(json_string_value(value), id) == 0) {
            if (untagged)
                hd_strv_push(untagged, key);
            json_object_del(refs, key);
        }
    }
}

/* Remove blobs that no image's metadata lists. Runs under the lock. */
static int gc_blobs(const char *store_dir, hd_error_t *err)
{
    struct image_string_set used = {0};
    cleanup_free char *meta_dir = hd_xasprintf("%s/meta", store_dir);
    cleanup_free char *blob_dir = hd_xasprintf("%s/blobs/sha256", store_dir);
    int ret = 0;
    DIR *d = opendir(meta_dir);
    if (d == NULL)
        return hd_error_sys(err, "open %s", meta_dir);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!is_meta_name(de->d_name))
            continue;
        cleanup_free char *hex = hd_xasprintf("%.*s", IMAGE_HEX_LEN, de->d_name);
        hd_error_t ignored = NULL;
        json_t *meta = meta_load(store_dir, hex, &ignored);
        if (meta == NULL) {
            /* unreadable metadata: keep every blob rather than guess */
            hd_error_free(&ignored);
            closedir(d);
            image_string_set_clear(&used);
            return 0;
        }
        size_t i;
        json_t *blob;
        json_array_foreach(json_object_get(meta, "blobs"), i,
                           blob) if (json_is_string(blob) && strncmp(json_string_value(blob), "sha256:", 7) == 0)
            image_string_set_add(&used, json_string_value(blob) + 7);
        json_decref(meta);
    }
    closedir(d);
    d = opendir(blob_dir);
    if (d == NULL) {
        image_string_set_clear(&used);
        return hd_error_sys(err, "open %s", blob_dir);
    }
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || image_string_set_has(&used, de->d_name))
            continue;
        if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT) {
            ret = hd_error_sys(err, "remove blob %s", de->d_name);
            break;
        }
    }
    closedir(d);
    image_string_set_clear(&used);
    return ret;
}

/* Remove one image's tree: renamed into tmp/ first, so a half-deleted tree never looks like an image. */
static int remove_rootfs(const char *store_dir, const char *hex, hd_error_t *err)
{
    cleanup_free char *rootfs = hd_xasprintf("%s/rootfs/%s", store_dir, hex);
    cleanup_free char *doomed = hd_xasprintf("%s/tmp/remove-%s", store_dir, hex);
    if (rename(rootfs, doomed) < 0 && errno != ENOENT)
        return hd_error_sys(err, "move %s aside", rootfs);
    return hd_rm_rf(doomed, err);
}

/*
 * Drop everything no name reaches: images no ref uses (metadata first, so the
 * image stops being "present", then its tree), rootfs trees without metadata
 * (a crash between the two renames of an import), then unlisted blobs. Runs
 * under the lock after every change to the refs, so the store heals itself.
 */
static int store_gc(const char *store_dir, hd_error_t *err)
{
    json_t *refs = refs_load(store_dir, err);
    if (refs == NULL)
        return -1;
    cleanup_free char *meta_dir = hd_xasprintf("%s/meta", store_dir);
    cleanup_free char *rootfs_dir = hd_xasprintf("%s/rootfs", store_dir);
    cleanup_strv char **doomed = NULL;
    DIR *d = opendir(meta_dir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (!is_meta_name(de->d_name))
            continue;
        cleanup_free char *id = hd_xasprintf("sha256:%.*s", IMAGE_HEX_LEN, de->d_name);
        if (!refs_use(refs, id))
            hd_strv_push(&doomed, de->d_name);
    }
    if (d)
        closedir(d);
    json_decref(refs);
    int ret = 0;
    for (size_t i = 0; ret == 0 && doomed && doomed[i]; i++) {
        cleanup_free char *meta = hd_xasprintf("%s/%s", meta_dir, doomed[i]);
        if (unlink(meta) < 0 && errno != ENOENT)
            ret = hd_error_sys(err, "remove %s", meta);
    }
    d = opendir(rootfs_dir);
    while (ret == 0 && d && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        cleanup_free char *meta = hd_xasprintf("%s/%s.json", meta_dir, de->d_name);
        if (!path_exists(meta))
            ret = remove_rootfs(store_dir, de->d_name, err);
    }
    if (d)
        closedir(d);
    return ret < 0 ? -1 : gc_blobs(store_dir, err);
}

/* ---- import ------------------------------------------------------------------------------- */

static json_t *meta_build(const struct image_source *src, int64_t size)
{
    json_t *layers = json_array(), *blobs = json_array();
    for (size_t i = 0; i < src->n_layers; i++)
        json_array_append_new(layers, json_sprintf("sha256:%s", src->layers[i].hex));
    for (size_t i = 0; i < src->n_blobs; i++)
        json_array_append_new(blobs, json_sprintf("sha256:%s", src->blobs[i].hex));
    json_t *defaults = json_object();
    json_object_set_new(defaults, "Cmd", json_strv(src->cmd));
    json_object_set_new(defaults, "Entrypoint", json_strv(src->entrypoint));
    json_object_set_new(defaults, "Env", json_strv(src->env));
    json_object_set_new(defaults, "WorkingDir", src->workdir ? json_string(src->workdir) : json_null());
    json_object_set_new(defaults, "User", src->user ? json_string(src->user) : json_null());
    json_t *meta = json_object();
    json_object_set_new(meta, "id", json_sprintf("sha256:%s", src->config_hex));
    json_object_set_new(meta, "format", json_string(src->format));
    json_object_set_new(meta, "created", json_integer((json_int_t)time(NULL)));
    json_object_set_new(meta, "image_created", src->image_created ? json_string(src->image_created) : json_null());
    json_object_set_new(meta, "architecture", src->architecture ? json_string(src->architecture) : json_null());
    json_object_set_new(meta, "size", json_integer(size));
    json_object_set_new(meta, "config", defaults);
    json_object_set_new(meta, "layers", layers);
    json_object_set_new(meta, "blobs", blobs);
    return meta;
}

/*
 * Move the verified import into the store. Everything before the refs.json
 * write can be undone by gc; the refs.json rename is the commit point.
 */
static int import_commit(const char *store_dir, const char *tmp, const struct image_source *src, bool reuse,
                         const char *name, hd_error_t *err)
{
    const char *hex = src->config_hex;
    bool adds_data = !reuse;
    for (size_t i = 0; i < src->n_blobs && !adds_data; i++) {
        cleanup_free char *target = hd_xasprintf("%s/blobs/sha256/%s", store_dir, src->blobs[i].hex);
        adds_data = !path_exists(target);
    }
    if (adds_data) {
        /* what is renamed into the store must be on disk before the refs say it is there */
        cleanup_close int fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || syncfs(fd) < 0)
            return hd_error_sys(err, "sync %s", tmp);
    }
    for (size_t i = 0; i < src->n_blobs; i++) {
        cleanup_free char *target = hd_xasprintf("%s/blobs/sha256/%s", store_dir, src->blobs[i].hex);
        if (path_exists(target))
            continue;
        if (rename(src->blobs[i].stage_path, target) < 0)
            return hd_error_sys(err, "store blob sha256:%s", src->blobs[i].hex);
    }
    if (reuse) {
        /* the same image from another archive format may bring more blobs: list them too */
        cleanup_free char *meta_path = hd_xasprintf("%s/meta/%s.json", store_dir, hex);
        json_t *meta = meta_load(store_dir, hex, err);
        if (meta == NULL)
            return -1;
        json_t *listed = json_object_get(meta, "blobs");
        size_t before = json_array_size(listed);
        for (size_t i = 0; json_is_array(listed) && i < src->n_blobs; i++) {
            cleanup_free char *digest = hd_xasprintf("sha256:%s", src->blobs[i].hex);
            bool known = false;
            size_t k;
            json_t *item;
            json_array_foreach(listed, k, item) known =
                known || (json_is_string(item) && strcmp(json_string_value(item), digest) == 0);
            if (!known)
                json_array_append_new(listed, json_string(digest));
        }
        int ret = json_array_size(listed) != before ? write_json_atomic(meta_path, meta, err) : 0;
        json_decref(meta);
        if (ret < 0)
            return -1;
    } else {
        cleanup_free char *from = hd_xasprintf("%s/rootfs", tmp);
        cleanup_free char *to = hd_xasprintf("%s/rootfs/%s", store_dir, hex);
        if (rename(from, to) < 0)
            return hd_error_sys(err, "store rootfs %s", to);
        cleanup_free char *meta_path = hd_xasprintf("%s/meta/%s.json", store_dir, hex);
        json_t *meta = meta_build(src, rootfs_size(to));
        int ret = write_json_atomic(meta_path, meta, err);
        json_decref(meta);
        if (ret < 0)
            return -1;
    }
    json_t *refs = refs_load(store_dir, err);
    if (refs == NULL)
        return -1;
    json_object_set_new(refs, name, json_sprintf("sha256:%s", hex));
    if (src->digest_name)
        json_object_set_new(refs, src->digest_name, json_sprintf("sha256:%s", hex));
    int ret = refs_save(store_dir, refs, err);
    json_decref(refs);
    return ret;
}

/* The archive reader of the import transaction: the tarball is the whole source. */
static int import_read_archive(void *ctx, const char *store_dir, const char *stage_dir, struct image_source *out,
                               hd_error_t *err)
{
    (void)store_dir;
    return image_archive_read(ctx, stage_dir, out, err);
}

int hd_image_import(const char *state_dir, const char *tarball, const char *name, struct hd_image_config **out,
                    hd_error_t *err)
{
    cleanup_free char *wanted = NULL;
    if (name && (wanted = image_name_normalize(name)) == NULL)
        return hd_error_set(err, 0, "invalid image name \"%s\" (want name[:tag], lower-case name)", name);
    struct stat st;
    if (stat(tarball, &st) < 0)
        return hd_error_sys(err, "image import %s", tarball);
    if (!S_ISREG(st.st_mode))
        return hd_error_set(err, 0, "image import %s: not a regular file", tarball);
    if (st.st_size == 0)
        return hd_error_set(err, 0, "image import %s: the file is empty", tarball);
    if (image_store_import(state_dir, import_read_archive, (void *)tarball, wanted, out, err) < 0)
        return hd_error_prefix(err, "image import %s", tarball);
    return 0;
}

int image_store_import(const char *state_dir, image_read_fn read, void *ctx, const char *wanted,
                       struct hd_image_config **out, hd_error_t *err)
{
    struct store store = {.lock_fd = -1};
    if (store_open_locked(state_dir, &store, err) < 0)
        return -1;
    struct image_source src = {0};
    cleanup_free char *tmp = hd_xasprintf("%s/tmp/import-XXXXXX", store.dir);
    cleanup_free char *stage = NULL, *rootfs = NULL, *meta_path = NULL, *stored_rootfs = NULL;
    int ret = -1;
    if (mkdtemp(tmp) == NULL) {
        hd_error_sys(err, "create %s", tmp);
        free(tmp);
        tmp = NULL;
        goto out;
    }
    stage = hd_xasprintf("%s/stage", tmp);
    rootfs = hd_xasprintf("%s/rootfs", tmp);
    if (mkdir(stage, 0700) < 0 || mkdir(rootfs, 0755) < 0) {
        hd_error_sys(err, "create %s", stage);
        goto out;
    }
    if (read(ctx, store.dir, stage, &src, err) < 0)
        goto out;
    const char *final_name = wanted ? wanted : src.name;
    if (final_name == NULL) {
        hd_error_set(err, 0, "the archive does not name the image; give one with --name NAME:TAG");
        goto out;
    }
    meta_path = hd_xasprintf("%s/meta/%s.json", store.dir, src.config_hex);
    stored_rootfs = hd_xasprintf("%s/rootfs/%s", store.dir, src.config_hex);
    bool reuse = path_exists(meta_path) && path_exists(stored_rootfs);
    if (!reuse) {
        /* a rootfs without metadata is the remains of a crash between the two renames */
        if (hd_rm_rf(stored_rootfs, err) < 0)
            goto out;
        if (image_layers_apply(rootfs, src.layers, src.n_layers, err) < 0)
            goto out;
    }
    int committed = import_commit(store.dir, tmp, &src, reuse, final_name, err);
    /*
     * Failed: drop what was moved in (the new image has no name). Done: the
     * name may have moved off another image, which may have lost its last
     * name. The import stands even if this sweep fails; the next one retries.
     */
    hd_error_t gc_err = NULL;
    store_gc(store.dir, &gc_err);
    hd_error_free(&gc_err);
    if (committed < 0)
        goto out;
    if (out) {
        json_t *meta = meta_load(store.dir, src.config_hex, err);
        if (meta == NULL)
            goto out;
        *out = config_from_meta(store.dir, src.config_hex, meta, final_name);
        json_decref(meta);
    }
    ret = 0;
out:
    if (tmp) {
        hd_error_t ignored = NULL;
        hd_rm_rf(tmp, &ignored);
        hd_error_free(&ignored);
    }
    image_source_free(&src);
    store_close(&store);
    return ret;
}

/* ---- lookup, list, remove ----------------------------------------------------------------- */

/* Find the image id (hex) for a name or id prefix; *name_out gets the ref name when found by name. */
static int resolve_ref(const char *store_dir, json_t *refs, const char *ref, char **hex_out, char **name_out,
                       hd_error_t *err)
{
    cleanup_free char *name = strchr(ref, '@') ? image_digest_ref_normalize(ref) : image_name_normalize(ref);
    if (name == NULL && strchr(ref, '@'))
        name = image_pinned_ref_normalize(ref); /* repository:tag@sha256:<hex>: the digest decides */
    const char *id = name ? json_string_value(json_object_get(refs, name)) : NULL;
    if (id && strncmp(id, "sha256:", 7) == 0) {
        *hex_out = hd_xstrdup(id + 7);
        *name_out = get_and_reset(&name);
        return 0;
    }
    const char *prefix = id_prefix(ref);
    if (prefix) {
        cleanup_free char *meta_dir = hd_xasprintf("%s/meta", store_dir);
        DIR *d = opendir(meta_dir);
        char *found = NULL;
        int matches = 0;
        struct dirent *de;
        while (d && (de = readdir(d)) != NULL) {
            if (!is_meta_name(de->d_name) || strncmp(de->d_name, prefix, strlen(prefix)) != 0)
                continue;
            if (matches++ == 0)
                found = hd_xasprintf("%.*s", IMAGE_HEX_LEN, de->d_name);
        }
        if (d)
            closedir(d);
        if (matches > 1) {
            free(found);
            return hd_error_set(err, 0, "image %s: the id prefix matches %d images", ref, matches);
        }
        if (found) {
            *hex_out = found;
            *name_out = NULL;
            return 0;
        }
    }
    return hd_error_set(err, 0, "image %s: not found", ref);
}

/* The first name (sorted) that refers to id, or NULL. */
static char *first_name_of(json_t *refs, const char *id)
{
    const char *key, *best = NULL;
    json_t *value;
    json_object_foreach(refs, key, value) if (json_is_string(value) && strcmp(json_string_value(value), id) == 0 &&
                                              (!best || strcmp(key, best) < 0)) best = key;
    return hd_xstrdup(best);
}

int hd_image_lookup(const char *state_dir, const char *ref, struct hd_image_config **out, hd_error_t *err)
{
    cleanup_free char *store_dir = store_dir_readonly(state_dir);
    if (store_dir == NULL)
        return hd_error_set(err, 0, "image %s: not found", ref);
    json_t *refs = refs_load(store_dir, err);
    if (refs == NULL)
        return -1;
    cleanup_free char *hex = NULL, *name = NULL;
    int ret = resolve_ref(store_dir, refs, ref, &hex, &name, err);
    if (ret == 0) {
        if (name == NULL) {
            cleanup_free char *id = hd_xasprintf("sha256:%s", hex);
            name = first_name_of(refs, id);
        }
        json_t *meta = meta_load(store_dir, hex, err);
        if (meta == NULL) {
            hd_error_free(err);
            ret = hd_error_set(err, 0, "image %s: not found", ref);
        } else {
            *out = config_from_meta(store_dir, hex, meta, name);
            json_decref(meta);
        }
    }
    json_decref(refs);
    return ret;
}

int hd_image_pin(const char *state_dir, const char *ref, char **pinned, hd_error_t *err)
{
    *pinned = NULL;
    cleanup_free char *store_dir = store_dir_readonly(state_dir);
    if (store_dir == NULL)
        return hd_error_set(err, 0, "image %s: not found", ref);
    json_t *refs = refs_load(store_dir, err);
    if (refs == NULL)
        return -1;
    cleanup_free char *hex = NULL, *name = NULL;
    int ret = resolve_ref(store_dir, refs, ref, &hex, &name, err);
    if (ret == 0 && strchr(ref, '@'))
        *pinned = hd_xstrdup(ref);
    else if (ret == 0 && name) {
        /* name is repository:tag; a pull stored repository@sha256:<manifest> for the same image */
        cleanup_free char *id = hd_xasprintf("sha256:%s", hex);
        size_t repo_len = (size_t)(strrchr(name, ':') - name);
        const char *key, *best = NULL;
        json_t *value;
        json_object_foreach(refs, key, value)
        {
            const char *at = strchr(key, '@');
            if (at && (size_t)(at - key) == repo_len && strncmp(key, name, repo_len) == 0 && json_is_string(value) &&
                strcmp(json_string_value(value), id) == 0 && (best == NULL || strcmp(key, best) < 0))
                best = key;
        }
        if (best)
            *pinned = hd_xasprintf("%s%s", name, strchr(best, '@'));
    }
    json_decref(refs);
    return ret;
}

static int compare_config_names(const void *a, const void *b)
{
    const struct hd_image_config *x = *(struct hd_image_config *const *)a;
    const struct hd_image_config *y = *(struct hd_image_config *const *)b;
    return strcmp(x->name, y->name);
}

int hd_image_list(const char *state_dir, struct hd_image_config ***out, hd_error_t *err)
{
    cleanup_free char *store_dir = store_dir_readonly(state_dir);
    *out = hd_xcalloc(1, sizeof(struct hd_image_config *));
    if (store_dir == NULL)
        return 0;
    json_t *refs = refs_load(store_dir, err);
    if (refs == NULL)
        return -1;
    size_t n = 0;
    const char *key;
    json_t *value;
    json_object_foreach(refs, key, value)
    {
        const char *id = json_string_value(value);
        if (id == NULL || strncmp(id, "sha256:", 7) != 0)
            continue;
        if (strchr(key, '@') && refs_use_by_tag(refs, id))
            continue; /* a pull's digest ref of a tagged image: the tag stands for it */
        hd_error_t ignored = NULL;
        json_t *meta = meta_load(store_dir, id + 7, &ignored);
        hd_error_free(&ignored);
        if (meta == NULL)
            continue; /* a ref whose import was interrupted after the refs write cannot exist; be lenient */
        *out = hd_xrealloc(*out, (n + 2) * sizeof(struct hd_image_config *));
        (*out)[n++] = config_from_meta(store_dir, id + 7, meta, key);
        (*out)[n] = NULL;
        json_decref(meta);
    }
    json_decref(refs);
    qsort(*out, n, sizeof(**out), compare_config_names);
    return 0;
}

int hd_image_remove(const char *state_dir, const char *ref, char ***untagged, char **deleted, hd_error_t *err)
{
    if (untagged)
        *untagged = NULL;
    if (deleted)
        *deleted = NULL;
    cleanup_free char *existing = store_dir_readonly(state_dir);
    if (existing == NULL)
        return hd_error_set(err, 0, "image %s: not found", ref);
    struct store store = {.lock_fd = -1};
    if (store_open_locked(state_dir, &store, err) < 0)
        return -1;
    int ret = -1;
    json_t *refs = refs_load(store.dir, err);
    cleanup_free char *hex = NULL, *name = NULL, *id = NULL;
    if (refs == NULL || resolve_ref(store.dir, refs, ref, &hex, &name, err) < 0)
        goto out;
    id = hd_xasprintf("sha256:%s", hex);
    if (name) {
        json_object_del(refs, name);
        if (untagged)
            hd_strv_push(untagged, name);
        if (!strchr(name, '@') && !refs_use_by_tag(refs, id))
            refs_drop_digests(refs, id, untagged); /* the last tag takes the pull's digest refs along */
    } else {
        /* by id: every name of the image goes */
        const char *key;
        json_t *value;
        void *tmp;
        json_object_foreach_safe(refs, tmp, key, value)
        {
            if (json_is_string(value) && strcmp(json_string_value(value), id) == 0) {
                if (untagged)
                    hd_strv_push(untagged, key);
                json_object_del(refs, key);
            }
        }
    }
    if (refs_save(store.dir, refs, err) < 0)
        goto out;
    if (!refs_use(refs, id) && deleted)
        *deleted = hd_xstrdup(id);
    if (store_gc(store.dir, err) < 0)
        goto out;
    ret = 0;
out:
    if (ret < 0 && untagged) {
        hd_strv_free(*untagged);
        *untagged = NULL;
    }
    json_decref(refs);
    store_close(&store);
    return ret;
}

/* ---- prune -------------------------------------------------------------------------------- */

/*
 * The image ids whose rootfs a running workload has mounted: any mount
 * namespace's mountinfo naming <...>/rootfs/<hex> (an overlay's lowerdir, or
 * the root of a bind mount of the tree). Each namespace is read once.
 */
static void prune_running(struct image_string_set *running)
{
    struct image_string_set seen_ns = {0};
    DIR *proc = opendir("/proc");
    struct dirent *de;
    while (proc && (de = readdir(proc)) != NULL) {
        if (de->d_name[0] < '1' || de->d_name[0] > '9')
            continue;
        char path[300];
        struct stat st;
        snprintf(path, sizeof(path), "/proc/%s/ns/mnt", de->d_name);
        if (stat(path, &st) < 0)
            continue;
        char ns[48];
        snprintf(ns, sizeof(ns), "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
        if (!image_string_set_add(&seen_ns, ns))
            continue;
        snprintf(path, sizeof(path), "/proc/%s/mountinfo", de->d_name);
        FILE *f = fopen(path, "re");
        if (f == NULL)
            continue;
        char *line = NULL;
        size_t cap = 0;
        while (getline(&line, &cap, f) > 0) {
            for (const char *p = line; (p = strstr(p, "/rootfs/")) != NULL; p++) {
                const char *hex = p + 8;
                size_t n = strspn(hex, "0123456789abcdef");
                if (n == IMAGE_HEX_LEN) {
                    char id[IMAGE_HEX_LEN + 1];
                    memcpy(id, hex, IMAGE_HEX_LEN);
                    id[IMAGE_HEX_LEN] = '\0';
                    image_string_set_add(running, id);
                }
            }
        }
        free(line);
        fclose(f);
    }
    if (proc)
        closedir(proc);
    image_string_set_clear(&seen_ns);
}

/* name -> size of every file in dir (blobs/sha256 or partial). */
static json_t *prune_dir_sizes(const char *dir)
{
    json_t *sizes = json_object();
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        struct stat st;
        if (de->d_name[0] != '.' && fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
            json_object_set_new(sizes, de->d_name, json_integer(st.st_size));
    }
    if (d)
        closedir(d);
    return sizes;
}

void hd_image_prune_result_free(struct hd_image_prune_result *r)
{
    hd_strv_free(r->untagged);
    hd_strv_free(r->deleted);
    memset(r, 0, sizeof(*r));
}

int hd_image_prune(const char *state_dir, char *const *keep, bool all, struct hd_image_prune_result *out,
                   hd_error_t *err)
{
    memset(out, 0, sizeof(*out));
    cleanup_free char *existing = store_dir_readonly(state_dir);
    if (existing == NULL)
        return 0; /* no store: nothing to free */
    struct store store = {.lock_fd = -1};
    if (store_open_locked(state_dir, &store, err) < 0)
        return -1;
    int ret = -1;
    struct image_string_set kept = {0}, running = {0};
    json_t *blobs_before = NULL, *blobs_after = NULL;
    cleanup_free char *blob_dir = hd_xasprintf("%s/blobs/sha256", store.dir);
    cleanup_free char *partial_dir = hd_xasprintf("%s/partial", store.dir);
    cleanup_strv char **doomed = NULL;
    cleanup_free char *meta_dir = hd_xasprintf("%s/meta", store.dir);
    json_t *refs = refs_load(store.dir, err);
    if (refs == NULL)
        goto out;
    for (size_t i = 0; keep && keep[i]; i++) {
        cleanup_free char *hex = NULL, *name = NULL;
        hd_error_t ignored = NULL;
        if (resolve_ref(store.dir, refs, keep[i], &hex, &name, &ignored) == 0)
            image_string_set_add(&kept, hex);
        hd_error_free(&ignored);
    }
    prune_running(&running);

    /* the images to drop: unreferenced, and (without all) untagged */
    DIR *d = opendir(meta_dir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (!is_meta_name(de->d_name))
            continue;
        cleanup_free char *hex = hd_xasprintf("%.*s", IMAGE_HEX_LEN, de->d_name);
        cleanup_free char *id = hd_xasprintf("sha256:%s", hex);
        if (image_string_set_has(&kept, hex) || image_string_set_has(&running, hex))
            continue;
        if (!all && refs_use_by_tag(refs, id))
            continue;
        hd_strv_push(&doomed, hex);
    }
    if (d)
        closedir(d);
    for (size_t i = 0; doomed && doomed[i]; i++) {
        cleanup_free char *id = hd_xasprintf("sha256:%s", doomed[i]);
        const char *key;
        json_t *value;
        void *tmp;
        json_object_foreach_safe(refs, tmp, key, value)
        {
            if (json_is_string(value) && strcmp(json_string_value(value), id) == 0) {
                hd_strv_push(&out->untagged, key);
                json_object_del(refs, key);
            }
        }
        hd_error_t ignored = NULL;
        json_t *meta = meta_load(store.dir, doomed[i], &ignored);
        hd_error_free(&ignored);
        out->bytes += json_integer_value(json_object_get(meta, "size"));
        json_decref(meta);
        hd_strv_push(&out->deleted, id);
    }
    if (doomed && refs_save(store.dir, refs, err) < 0)
        goto out;

    /* the blobs and trees nothing reaches now (store_gc), and every download cut short */
    blobs_before = prune_dir_sizes(blob_dir);
    if (store_gc(store.dir, err) < 0)
        goto out;
    blobs_after = prune_dir_sizes(blob_dir);
    const char *key;
    json_t *value;
    json_object_foreach(blobs_before, key, value)
    {
        if (json_object_get(blobs_after, key) == NULL) {
            out->blobs++;
            out->bytes += json_integer_value(value);
        }
    }
    json_t *partial = prune_dir_sizes(partial_dir);
    json_object_foreach(partial, key, value)
    {
        cleanup_free char *path = hd_xasprintf("%s/%s", partial_dir, key);
        if (unlink(path) == 0) {
            out->partial++;
            out->bytes += json_integer_value(value);
        }
    }
    json_decref(partial);
    ret = 0;
out:
    if (ret < 0)
        hd_image_prune_result_free(out);
    json_decref(blobs_before);
    json_decref(blobs_after);
    json_decref(refs);
    image_string_set_clear(&kept);
    image_string_set_clear(&running);
    store_close(&store);
    return ret;
}
