/*
 * pull.c - `hedge image pull`: an image from an OCI distribution registry
 * into the store, through the same import transaction as a tarball
 * (image_store_import in image.c): this file is only another reader.
 *
 * The reader resolves the reference to a manifest (following an image index
 * or docker manifest list to the requested platform), fetches the config and
 * the layers the store does not hold yet into the transaction's stage dir,
 * each verified against its descriptor's digest and size while it streams
 * (registry.c), and hands over an image_source like archive.c does. A layer
 * already in blobs/ is not fetched: its stored file is applied in place. An
 * image whose config (its id) is already stored costs the manifest and config
 * requests only. A failure anywhere leaves the store as it was: everything
 * fetched sits in the transaction's temp dir until the commit.
 *
 * A blob downloads into <store>/partial/<hex>, outside the transaction's temp
 * dir, so a pull cut short (link lost, registry stopped, hedge killed) leaves
 * its bytes for the next pull of the same blob to resume with an HTTP Range
 * request; a verified blob is renamed into the stage.
 *
 * The store lock is held for the whole pull, so a pull and an import or rm
 * never interleave (a slow registry delays them; acceptable for a first cut).
 *
 * References: [host[:port]/]repository[:tag][@sha256:<hex>]. The first path
 * component is a registry host when it has a '.' or ':' or is "localhost";
 * otherwise the registry is Docker Hub (registry-1.docker.io, "library/" for
 * one-component names), as docker does.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/util.h"
#include "image/image.h"
#include "image/internal.h"
#include "image/registry.h"

#define INDEX_MAX_DEPTH 4
#define CONFIG_MAX_BYTES (16 * 1024 * 1024)

void registry_ref_free(struct registry_ref *r)
{
    free(r->host);
    free(r->repository);
    free(r->reference);
    free(r->name);
    free(r->repo_name);
}

int registry_ref_parse(const char *ref, struct registry_ref *out, hd_error_t *err)
{
    memset(out, 0, sizeof(*out));
    cleanup_free char *digest = NULL, *tag = NULL;
    cleanup_free char *rest = hd_xstrdup(ref);
    char *at = strchr(rest, '@');
    if (at) {
        *at = '\0';
        digest = hd_xstrdup(at + 1);
        cleanup_free char *check = hd_xasprintf("x@%s", digest);
        cleanup_free char *valid = image_digest_ref_normalize(check);
        if (valid == NULL)
            return hd_error_set(err, 0, "image reference %s: the digest must be sha256:<64 hex digits>", ref);
    }
    char *slash = strrchr(rest, '/');
    char *colon = strrchr(rest, ':');
    if (colon && (slash == NULL || colon > slash)) {
        *colon = '\0';
        tag = hd_xstrdup(colon + 1);
    }
    char *first_slash = strchr(rest, '/');
    if (first_slash &&
        (memchr(rest, '.', (size_t)(first_slash - rest)) || memchr(rest, ':', (size_t)(first_slash - rest)) ||
         strncmp(rest, "localhost/", 10) == 0)) {
        out->host = hd_xasprintf("%.*s", (int)(first_slash - rest), rest);
        out->repository = hd_xstrdup(first_slash + 1);
    } else {
        out->host = hd_xstrdup("registry-1.docker.io");
        out->repository = first_slash ? hd_xstrdup(rest) : hd_xasprintf("library/%s", rest);
    }
    if (strcmp(out->host, "docker.io") == 0 || strcmp(out->host, "index.docker.io") == 0) {
        free(out->host);
        out->host = hd_xstrdup("registry-1.docker.io");
        if (strchr(out->repository, '/') == NULL) {
            char *full = hd_xasprintf("library/%s", out->repository);
            free(out->repository);
            out->repository = full;
        }
    }
    /* the store's names: what image_name_normalize makes of the reference */
    cleanup_free char *tagged = hd_xasprintf("%s:%s", rest, tag ? tag : "latest");
    cleanup_free char *normal = image_name_normalize(tagged);
    if (normal == NULL) {
        registry_ref_free(out);
        return hd_error_set(err, 0,
                            "invalid image reference \"%s\" (want [host[:port]/]name[:tag][@sha256:<hex>], "
                            "lower-case name)",
                            ref);
    }
    out->repo_name = hd_xasprintf("%.*s", (int)(strrchr(normal, ':') - normal), normal);
    if (tag || digest == NULL)
        out->name = get_and_reset(&normal);
    out->reference = digest ? get_and_reset(&digest) : hd_xstrdup(tag ? tag : "latest");
    return 0;
}

struct pull {
    struct registry_ref ref;
    const struct hd_image_pull_options *opts;
    struct registry reg;
    char *platform_os, *platform_arch, *platform_variant;
    char top_hex[IMAGE_HEX_LEN + 1]; /* the digest the reference resolved to */
    int n_staged;
    /* the progress bar (progress stream on a terminal): bytes of the layer downloads */
    bool bar;
    pthread_mutex_t bar_lock;
    int64_t bar_done, bar_total;
    struct timespec bar_drawn;
};

/* Draw the bar line (caller holds the stream's lock): "\r" + erase + "Downloading  X MB / Y MB  N%". */
static void bar_draw(struct pull *p)
{
    if (p->bar_total <= 0)
        return;
    fprintf(p->opts->progress, "\r\033[KDownloading %.1f MB / %.1f MB %3d%%", (double)p->bar_done / 1e6,
            (double)p->bar_total / 1e6, (int)(p->bar_done * 100 / p->bar_total));
    fflush(p->opts->progress);
}

/*
 * A line about one blob. On a terminal the bar line is erased first and
 * redrawn under it, so the blob lines scroll and the bar stays last.
 */
static void progress(struct pull *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void progress(struct pull *p, const char *fmt, ...)
{
    if (p->opts->progress == NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    flockfile(p->opts->progress); /* download threads print too: one whole line at a time */
    if (p->bar)
        fputs("\r\033[K", p->opts->progress);
    vfprintf(p->opts->progress, fmt, ap);
    fputc('\n', p->opts->progress);
    if (p->bar)
        bar_draw(p);
    fflush(p->opts->progress);
    funlockfile(p->opts->progress);
    va_end(ap);
}

/* registry.c's byte counter for blob downloads (any thread): redraw at most every 100 ms. */
static void bar_bytes(void *arg, size_t n)
{
    struct pull *p = arg;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    pthread_mutex_lock(&p->bar_lock);
    p->bar_done += (int64_t)n;
    int64_t ms = (now.tv_sec - p->bar_drawn.tv_sec) * 1000 + (now.tv_nsec - p->bar_drawn.tv_nsec) / 1000000;
    bool draw = ms >= 100 || p->bar_done == p->bar_total;
    if (draw)
        p->bar_drawn = now;
    pthread_mutex_unlock(&p->bar_lock);
    if (draw) {
        flockfile(p->opts->progress);
        bar_draw(p);
        funlockfile(p->opts->progress);
    }
}

/* Keep a fetched manifest as a blob of the image (the OCI archive reader does the same). */
static int stage_bytes(struct pull *p, const char *stage_dir, const char *hex, const char *data, size_t len,
                       struct image_source *src, hd_error_t *err)
{
    struct image_blob blob = {.size = (int64_t)len};
    memcpy(blob.hex, hex, sizeof(blob.hex));
    cleanup_free char *path = hd_xasprintf("%s/%d", stage_dir, ++p->n_staged);
    if (hd_write_file(path, data, len, err) < 0)
        return -1;
    blob.stage_path = path;
    image_source_add_blob(src, &blob);
    return 0;
}

/* digest and size of a descriptor, named for errors by what */
static int descriptor_parse(json_t *d, const char *what, char hex[IMAGE_HEX_LEN + 1], int64_t *size, hd_error_t *err)
{
    if (!json_is_object(d))
        return hd_error_set(err, 0, "%s: descriptor missing", what);
    const char *digest = json_string_value(json_object_get(d, "digest"));
    cleanup_free char *check = digest ? hd_xasprintf("x@%s", digest) : NULL;
    cleanup_free char *valid = check ? image_digest_ref_normalize(check) : NULL;
    if (valid == NULL)
        return hd_error_set(err, 0, "%s: digest \"%s\" is not sha256:<64 hex digits>", what,
                            digest ? digest : "(missing)");
    memcpy(hex, digest + 7, IMAGE_HEX_LEN + 1);
    json_t *s = json_object_get(d, "size");
    if (!json_is_integer(s) || json_integer_value(s) < 0)
        return hd_error_set(err, 0, "%s %s: size missing", what, digest);
    *size = json_integer_value(s);
    return 0;
}

/* The store's own file of a blob, when it holds one of that size. */
static char *stored_blob(const char *store_dir, const char *hex, int64_t size)
{
    char *stored = hd_xasprintf("%s/blobs/sha256/%s", store_dir, hex);
    struct stat st;
    if (stat(stored, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == size)
        return stored;
    free(stored);
    return NULL;
}

/* Download one blob (resuming a partial one) into stage_path, verified. */
static int download_blob(struct pull *p, struct registry *reg, const char *store_dir, const char *stage_path,
                         const char *what, const char *hex, int64_t size, hd_error_t *err)
{
    cleanup_free char *partial = hd_xasprintf("%s/partial/%s", store_dir, hex);
    struct stat pst;
    if (stat(partial, &pst) == 0 && pst.st_size > 0 && pst.st_size < size)
        progress(p, "%s sha256:%.12s: resuming at byte %lld", what, hex, (long long)pst.st_size);
    if (registry_get_blob(reg, hex, size, partial, stage_path, err) < 0)
        return hd_error_prefix(err, "%s", what);
    progress(p, "%s sha256:%.12s: pulled (%lld bytes)", what, hex, (long long)size);
    return 0;
}

/* stage_path of a blob: the store's own file when it is there, else fetched into the stage. */
static int fetch_blob(struct pull *p, const char *store_dir, const char *stage_dir, const char *what, const char *hex,
                      int64_t size, struct image_blob *blob, hd_error_t *err)
{
    memset(blob, 0, sizeof(*blob));
    memcpy(blob->hex, hex, IMAGE_HEX_LEN + 1);
    blob->size = size;
    blob->stage_path = stored_blob(store_dir, hex, size);
    if (blob->stage_path) {
        progress(p, "%s sha256:%.12s: already present", what, hex);
        return 0;
    }
    blob->stage_path = hd_xasprintf("%s/%d", stage_dir, ++p->n_staged);
    if (download_blob(p, &p->reg, store_dir, blob->stage_path, what, hex, size, err) < 0) {
        free(blob->stage_path);
        blob->stage_path = NULL;
        return -1;
    }
    return 0;
}

/*
 * Layers download in parallel, at most PULL_PARALLEL at a time (docker's
 * default too), each worker with its own connection (a registry clone with
 * the same credentials and token). Layers are applied in manifest order
 * afterwards, so the order they arrive in does not matter; the first failing
 * layer (in manifest order) is the error reported.
 */
#define PULL_PARALLEL 3

struct layer_job {
    char hex[IMAGE_HEX_LEN + 1];
    int64_t size;
    char *what;
    struct image_blob blob; /* stage_path: the store's file, or where the download goes */
    bool download;          /* false: in the store already, or a repeat of an earlier layer */
    int ret;
    hd_error_t err;
};

struct layer_pool {
    struct pull *p;
    const char *store_dir;
    struct layer_job *jobs;
    size_t n_jobs, next;
    pthread_mutex_t lock;
};

struct layer_worker {
    struct layer_pool *pool;
    struct registry reg;
    pthread_t thread;
};

static void *layer_worker_run(void *arg)
{
    struct layer_worker *w = arg;
    struct layer_pool *pool = w->pool;
    for (;;) {
        pthread_mutex_lock(&pool->lock);
        size_t i = pool->next;
        while (i < pool->n_jobs && !pool->jobs[i].download)
            i++;
        pool->next = i + 1;
        pthread_mutex_unlock(&pool->lock);
        if (i >= pool->n_jobs)
            return NULL;
        struct layer_job *job = &pool->jobs[i];
        job->ret = download_blob(pool->p, &w->reg, pool->store_dir, job->blob.stage_path, job->what, job->hex,
                                 job->size, &job->err);
    }
}

static int fetch_layers(struct pull *p, const char *store_dir, struct layer_job *jobs, size_t n_jobs, hd_error_t *err)
{
    size_t n_downloads = 0;
    for (size_t i = 0; i < n_jobs; i++)
        n_downloads += jobs[i].download;
    size_t n_workers = n_downloads < PULL_PARALLEL ? n_downloads : PULL_PARALLEL;
    struct layer_pool pool = {.p = p, .store_dir = store_dir, .jobs = jobs, .n_jobs = n_jobs};
    struct layer_worker workers[PULL_PARALLEL];
    memset(workers, 0, sizeof(workers));
    pthread_mutex_init(&pool.lock, NULL);
    int ret = 0;
    size_t started = 0;
    for (size_t i = 0; i < n_workers && ret == 0; i++) {
        workers[i].pool = &pool;
        if (registry_clone(&p->reg, &workers[i].reg, err) < 0) {
            ret = -1;
            break;
        }
        int e = pthread_create(&workers[i].thread, NULL, layer_worker_run, &workers[i]);
        if (e != 0) {
            registry_close(&workers[i].reg);
            ret = hd_error_set(err, e, "start a download thread");
            break;
        }
        started++;
    }
    for (size_t i = 0; i < started; i++) {
        pthread_join(workers[i].thread, NULL);
        registry_close(&workers[i].reg);
    }
    pthread_mutex_destroy(&pool.lock);
    if (ret < 0 && started == 0)
        return -1;
    for (size_t i = 0; i < n_jobs; i++) {
        if (jobs[i].download && jobs[i].ret < 0) {
            if (err && *err == NULL)
                *err = get_and_reset(&jobs[i].err);
            return -1;
        }
    }
    return ret;
}

static int pull_read(void *ctx, const char *store_dir, const char *stage_dir, struct image_source *src, hd_error_t *err)
{
    struct pull *p = ctx;
    struct registry_manifest m = {0};
    json_t *doc = NULL, *config = NULL;
    cleanup_free char *meta = NULL, *rootfs = NULL; /* declared before the first goto out */
    struct layer_job *jobs = NULL;
    size_t n_jobs = 0;
    int ret = -1;
    src->format = "registry";
    if (registry_get_manifest(&p->reg, p->ref.reference, &m, err) < 0)
        goto out;
    memcpy(p->top_hex, m.hex, sizeof(p->top_hex));
    for (int depth = 0;; depth++) {
        json_error_t jerr;
        json_decref(doc);
        doc = json_loadb(m.body, m.len, 0, &jerr);
        if (!json_is_object(doc)) {
            hd_error_set(err, 0, "manifest sha256:%s: invalid JSON: %s", m.hex, jerr.text);
            goto out;
        }
        if (json_integer_value(json_object_get(doc, "schemaVersion")) != 2) {
            hd_error_set(err, 0, "manifest sha256:%s: schema version %lld is not supported (want 2)", m.hex,
                         (long long)json_integer_value(json_object_get(doc, "schemaVersion")));
            goto out;
        }
        if (stage_bytes(p, stage_dir, m.hex, m.body, m.len, src, err) < 0)
            goto out;
        const char *own_type = json_string_value(json_object_get(doc, "mediaType"));
        if (!image_is_index_media_type(m.media_type) && !image_is_index_media_type(own_type) &&
            json_object_get(doc, "config") != NULL)
            break;
        if (depth >= INDEX_MAX_DEPTH) {
            hd_error_set(err, 0, "manifest sha256:%s: image indexes nest too deeply", m.hex);
            goto out;
        }
        cleanup_free char *what = hd_xasprintf("image index sha256:%s", m.hex);
        json_t *chosen = NULL;
        if (image_pick_platform(json_object_get(doc, "manifests"), what, p->platform_os, p->platform_arch,
                                p->platform_variant, &chosen, err) < 0)
            goto out;
        char hex[IMAGE_HEX_LEN + 1];
        int64_t size;
        if (descriptor_parse(chosen, what, hex, &size, err) < 0)
            goto out;
        cleanup_free char *digest = hd_xasprintf("sha256:%s", hex);
        registry_manifest_free(&m);
        if (registry_get_manifest(&p->reg, digest, &m, err) < 0)
            goto out;
        if ((int64_t)m.len != size) {
            hd_error_set(err, 0, "manifest %s: size mismatch: expected %lld bytes, got %zu", digest, (long long)size,
                         m.len);
            goto out;
        }
    }

    /* the config: the image id, and the run defaults */
    char hex[IMAGE_HEX_LEN + 1];
    int64_t size;
    if (descriptor_parse(json_object_get(doc, "config"), "config", hex, &size, err) < 0)
        goto out;
    if (size > CONFIG_MAX_BYTES) {
        hd_error_set(err, 0, "config sha256:%s: %lld bytes is too large", hex, (long long)size);
        goto out;
    }
    struct image_blob config_blob;
    if (fetch_blob(p, store_dir, stage_dir, "config", hex, size, &config_blob, err) < 0)
        goto out;
    image_source_add_blob(src, &config_blob);
    memcpy(src->config_hex, hex, sizeof(src->config_hex));
    json_error_t jerr;
    config = json_load_file(config_blob.stage_path, 0, &jerr);
    free(config_blob.stage_path);
    if (config == NULL) {
        hd_error_set(err, 0, "config sha256:%s: invalid JSON: %s", hex, jerr.text);
        goto out;
    }
    if (image_config_parse(config, src, err) < 0) {
        hd_error_prefix(err, "config sha256:%s", hex);
        goto out;
    }

    /* an image already stored needs no layer: the store has its rootfs */
    meta = hd_xasprintf("%s/meta/%s.json", store_dir, hex);
    rootfs = hd_xasprintf("%s/rootfs/%s", store_dir, hex);
    bool have_image = access(meta, F_OK) == 0 && access(rootfs, F_OK) == 0;
    if (have_image)
        progress(p, "image sha256:%.12s: already present", hex);
    json_t *layers = json_object_get(doc, "layers");
    if (!json_is_array(layers)) {
        hd_error_set(err, 0, "manifest sha256:%s: layers missing", m.hex);
        goto out;
    }
    n_jobs = json_array_size(layers);
    jobs = hd_xcalloc(n_jobs + 1, sizeof(*jobs));
    size_t i;
    json_t *layer;
    json_array_foreach(layers, i, layer)
    {
        struct layer_job *job = &jobs[i];
        job->what = hd_xasprintf("layer %zu", i);
        if (descriptor_parse(layer, job->what, job->hex, &job->size, err) < 0)
            goto out;
        memcpy(job->blob.hex, job->hex, sizeof(job->hex));
        job->blob.size = job->size;
        if (have_image)
            continue;
        for (size_t k = 0; k < i && job->blob.stage_path == NULL; k++)
            if (strcmp(jobs[k].hex, job->hex) == 0)
                job->blob.stage_path = hd_xstrdup(jobs[k].blob.stage_path); /* a repeated layer */
        if (job->blob.stage_path == NULL && (job->blob.stage_path = stored_blob(store_dir, job->hex, job->size)))
            progress(p, "%s sha256:%.12s: already present", job->what, job->hex);
        if (job->blob.stage_path == NULL) {
            job->blob.stage_path = hd_xasprintf("%s/%d", stage_dir, ++p->n_staged);
            job->download = true;
        }
    }
    if (!have_image) {
        p->bar_done = 0; /* the bar counts the layers only */
        for (i = 0; i < n_jobs; i++)
            if (jobs[i].download) {
                cleanup_free char *partial = hd_xasprintf("%s/partial/%s", store_dir, jobs[i].hex);
                struct stat pst;
                p->bar_total += jobs[i].size;
                if (stat(partial, &pst) == 0 && pst.st_size < jobs[i].size)
                    p->bar_done += pst.st_size; /* a resume starts where the last pull stopped */
            }
        if (fetch_layers(p, store_dir, jobs, n_jobs, err) < 0)
            goto out;
        if (p->bar && p->bar_total > 0) {
            flockfile(p->opts->progress);
            fputs("\r\033[K", p->opts->progress); /* the blob lines above say what came */
            fflush(p->opts->progress);
            funlockfile(p->opts->progress);
        }
        for (i = 0; i < n_jobs; i++) {
            image_source_add_layer(src, &jobs[i].blob);
            image_source_add_blob(src, &jobs[i].blob);
        }
    }
    if (p->ref.name)
        src->digest_name = hd_xasprintf("%s@sha256:%s", p->ref.repo_name, p->top_hex);
    ret = 0;
out:
    for (size_t k = 0; k < n_jobs; k++) {
        free(jobs[k].what);
        free(jobs[k].blob.stage_path);
        hd_error_free(&jobs[k].err);
    }
    free(jobs);
    registry_manifest_free(&m);
    json_decref(doc);
    json_decref(config);
    return ret;
}

static bool listed(char *const *list, const char *host)
{
    for (size_t i = 0; list && list[i]; i++)
        if (strcmp(list[i], host) == 0)
            return true;
    return false;
}

int hd_image_pull(const char *state_dir, const char *ref, const struct hd_image_pull_options *opts,
                  struct hd_image_config **out, char **digest_out, hd_error_t *err)
{
    static const struct hd_image_pull_options defaults = {0};
    struct pull p = {.opts = opts ? opts : &defaults, .bar_lock = PTHREAD_MUTEX_INITIALIZER};
    cleanup_free char *digest_name = NULL, *auth_file = NULL; /* declared before the first goto out */
    int ret = -1;
    if (registry_ref_parse(ref, &p.ref, err) < 0)
        return -1;
    if (p.opts->platform) {
        cleanup_free char *copy = hd_xstrdup(p.opts->platform);
        char *save = NULL;
        char *os = strtok_r(copy, "/", &save), *arch = strtok_r(NULL, "/", &save);
        char *variant = strtok_r(NULL, "/", &save);
        if (os == NULL || arch == NULL || strtok_r(NULL, "/", &save)) {
            hd_error_set(err, 0, "--platform %s: want OS/ARCH[/VARIANT]", p.opts->platform);
            goto out;
        }
        p.platform_os = hd_xstrdup(os);
        p.platform_arch = hd_xstrdup(arch);
        p.platform_variant = variant ? hd_xstrdup(variant) : NULL;
    }
    if (registry_open(&p.reg, p.ref.host, p.ref.repository, listed(p.opts->insecure, p.ref.host), p.opts->ca_file,
                      err) < 0)
        goto out;
    p.bar = p.opts->progress && isatty(fileno(p.opts->progress));
    if (p.bar) {
        p.reg.on_bytes = bar_bytes;
        p.reg.on_bytes_arg = &p;
    }
    auth_file = p.opts->auth_file ? hd_xstrdup(p.opts->auth_file) : hd_registry_auth_default_file(state_dir);
    if (registry_auth_lookup(auth_file, p.ref.host, &p.reg.user, &p.reg.password, err) < 0)
        goto out;
    /* a digest-only reference is named by its digest: that is the ref the store keeps */
    digest_name = p.ref.name ? NULL : hd_xasprintf("%s@%s", p.ref.repo_name, p.ref.reference);
    if (image_store_import(state_dir, pull_read, &p, p.ref.name ? p.ref.name : digest_name, out, err) < 0)
        goto out;
    if (digest_out)
        *digest_out = hd_xasprintf("sha256:%s", p.top_hex);
    ret = 0;
out:
    if (ret < 0)
        hd_error_prefix(err, "image pull %s", ref);
    registry_close(&p.reg);
    registry_ref_free(&p.ref);
    free(p.platform_os);
    free(p.platform_arch);
    free(p.platform_variant);
    return ret;
}
