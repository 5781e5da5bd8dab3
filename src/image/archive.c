/*
 * image_archive.c - read an image tarball and verify everything in it.
 *
 * Two layouts are accepted, told apart by what the tarball holds:
 *   docker save   manifest.json: [{Config, RepoTags, Layers}]. Layers are
 *                 "<id>/layer.tar" (often symlinks), "<hex>.tar" or, since
 *                 Docker 25, "blobs/sha256/<hex>". Layer digests are the
 *                 config's rootfs.diff_ids: sha256 of the *uncompressed* tar.
 *   OCI archive   oci-layout + index.json + blobs/sha256/<hex>. index.json
 *                 -> manifest (an image index / manifest list is followed to
 *                 the manifest for this host's platform) -> config + layers;
 *                 every descriptor's digest and size are checked.
 * When both manifest.json and index.json exist (Docker 25+), manifest.json
 * wins because it carries the image's RepoTags.
 *
 * libarchive streams, so the tarball is read once: every regular file is
 * copied into stage_dir while its sha256 is computed (libmd, digest.h). Names
 * from the archive are never used as host paths; staged files are numbered.
 * The JSON documents are then read from the stage and every referenced blob
 * is checked against its digest before anything is applied or stored.
 */
#include "base/digest.h"
#include "image/archive_lazy.h"
#include "image/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "base/util.h"

#define ARCHIVE_BLOCK (128 * 1024)
#define JSON_MAX_BYTES (16 * 1024 * 1024)
#define ALIAS_MAX_HOPS 8
#define INDEX_MAX_DEPTH 4

/* One entry of the tarball: a staged regular file, or a link to another entry. */
struct staged_entry {
    char *name;     /* cleaned archive path */
    char *alias_of; /* cleaned target path for symlinks and hardlinks, else NULL */
    struct image_blob blob;
};

struct stage {
    struct staged_entry *entries;
    size_t len, cap;
};

static void stage_free(struct stage *st)
{
    for (size_t i = 0; i < st->len; i++) {
        free(st->entries[i].name);
        free(st->entries[i].alias_of);
        free(st->entries[i].blob.stage_path);
    }
    free(st->entries);
    memset(st, 0, sizeof(*st));
}

static bool is_hex64(const char *s, size_t len)
{
    if (len != IMAGE_HEX_LEN)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* "./a//b/" -> "a/b"; "" for the root. Archive names are only compared, never opened. */
static char *clean_archive_name(const char *name)
{
    char *out = hd_xcalloc(1, strlen(name) + 1);
    size_t n = 0;
    const char *p = name;
    while (*p) {
        while (*p == '/')
            p++;
        const char *end = strchrnul(p, '/');
        size_t len = (size_t)(end - p);
        if (len == 0 || (len == 1 && p[0] == '.')) {
            p = end;
            continue;
        }
        if (n)
            out[n++] = '/';
        memcpy(out + n, p, len);
        n += len;
        p = end;
    }
    out[n] = '\0';
    return out;
}

/* Resolve a link target relative to the directory of the link's own name. */
static char *resolve_link_target(const char *link_name, const char *target)
{
    if (target[0] == '/')
        return clean_archive_name(target);
    const char *slash = strrchr(link_name, '/');
    cleanup_free char *joined =
        slash ? hd_xasprintf("%.*s/%s", (int)(slash - link_name), link_name, target) : hd_xstrdup(target);
    /* fold ".." components */
    cleanup_free char *clean = clean_archive_name(joined);
    char *out = hd_xcalloc(1, strlen(clean) + 1);
    size_t n = 0;
    for (char *save = NULL, *c = strtok_r(clean, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
        if (strcmp(c, "..") == 0) {
            char *last = n ? memrchr(out, '/', n) : NULL;
            n = last ? (size_t)(last - out) : 0;
            out[n] = '\0';
            continue;
        }
        n += (size_t)sprintf(out + n, "%s%s", n ? "/" : "", c);
    }
    return out;
}

/* Turn a libarchive failure into a message a person can act on. */
static int archive_failure(struct archive *a, hd_error_t *err)
{
    const char *msg = archive_error_string(a);
    if (msg == NULL)
        msg = "unknown libarchive error";
    if (strcasestr(msg, "truncated") || strcasestr(msg, "premature end"))
        return hd_error_set(err, 0, "the archive is truncated");
    if (strcasestr(msg, "unrecognized archive format"))
        return hd_error_set(err, 0, "not a tar archive");
    return hd_error_set(err, 0, "corrupt archive: %s", msg);
}

static int stage_copy_data(struct archive *a, const char *path, struct image_blob *blob, hd_error_t *err)
{
    cleanup_close int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return hd_error_sys(err, "create %s", path);
    struct hd_sha256 md;
    hd_sha256_init(&md);
    cleanup_free char *buf = hd_xmalloc(ARCHIVE_BLOCK);
    int ret = 0;
    int64_t total = 0;
    for (;;) {
        la_ssize_t r = archive_read_data(a, buf, ARCHIVE_BLOCK);
        if (r == 0)
            break;
        if (r < 0) {
            ret = archive_failure(a, err);
            break;
        }
        hd_sha256_update(&md, buf, (size_t)r);
        total += r;
        for (la_ssize_t off = 0; off < r;) {
            ssize_t w = write(fd, buf + off, (size_t)(r - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                ret = hd_error_sys(err, "write %s", path);
                break;
            }
            off += w;
        }
        if (ret < 0)
            break;
    }
    hd_sha256_final_hex(&md, blob->hex);
    if (ret < 0)
        return ret;
    blob->size = total;
    return 0;
}

static struct staged_entry *stage_push(struct stage *st)
{
    if (st->len == st->cap) {
        st->cap = st->cap ? st->cap * 2 : 16;
        st->entries = hd_xrealloc(st->entries, st->cap * sizeof(*st->entries));
    }
    struct staged_entry *e = &st->entries[st->len++];
    memset(e, 0, sizeof(*e));
    return e;
}

/* Read the whole tarball once, staging regular files and recording links. */
static int stage_archive(const char *tarball, const char *stage_dir, struct stage *st, hd_error_t *err)
{
    struct archive *a = archive_read_new();
    archive_read_support_filter_all(a);
    archive_read_support_format_tar(a);
    int ret = 0;
    if (archive_read_open_filename(a, tarball, ARCHIVE_BLOCK) != ARCHIVE_OK) {
        int e = archive_errno(a); /* EILSEQ is libarchive's ARCHIVE_ERRNO_FILE_FORMAT */
        ret = e > 0 && e != EILSEQ ? hd_error_set(err, e, "open %s", tarball) : archive_failure(a, err);
        goto out;
    }
    size_t n_entries = 0;
    for (;;) {
        struct archive_entry *entry;
        int r = archive_read_next_header(a, &entry);
        if (r == ARCHIVE_EOF)
            break;
        if (r < ARCHIVE_WARN) {
            ret = archive_failure(a, err);
            goto out;
        }
        n_entries++;
        const char *raw_name = archive_entry_pathname(entry);
        if (raw_name == NULL)
            continue;
        cleanup_free char *name = clean_archive_name(raw_name);
        mode_t type = archive_entry_filetype(entry);
        const char *hardlink = archive_entry_hardlink(entry);
        if (hardlink) {
            struct staged_entry *e = stage_push(st);
            e->name = get_and_reset(&name);
            e->alias_of = clean_archive_name(hardlink);
        } else if (type == AE_IFLNK) {
            const char *target = archive_entry_symlink(entry);
            if (target == NULL)
                continue;
            struct staged_entry *e = stage_push(st);
            e->alias_of = resolve_link_target(name, target);
            e->name = get_and_reset(&name);
        } else if (type == AE_IFREG) {
            struct staged_entry *e = stage_push(st);
            e->name = get_and_reset(&name);
            e->blob.stage_path = hd_xasprintf("%s/%zu", stage_dir, st->len);
            if (stage_copy_data(a, e->blob.stage_path, &e->blob, err) < 0) {
                ret = -1;
                goto out;
            }
        }
    }
    if (n_entries == 0)
        ret = hd_error_set(err, 0, "not a tar archive (it holds no entries)");
out:
    archive_read_free(a);
    return ret;
}

/* Find a staged file by its archive name, following links. */
static const struct staged_entry *stage_find(const struct stage *st, const char *name)
{
    cleanup_free char *want = clean_archive_name(name);
    for (int hop = 0; hop < ALIAS_MAX_HOPS; hop++) {
        const struct staged_entry *found = NULL;
        /* the last entry of a name wins, as when a tar is extracted */
        for (size_t i = st->len; i-- > 0;)
            if (strcmp(st->entries[i].name, want) == 0) {
                found = &st->entries[i];
                break;
            }
        if (found == NULL || found->alias_of == NULL)
            return found;
        free(want);
        want = hd_xstrdup(found->alias_of);
    }
    return NULL;
}

static int read_staged_json(const struct staged_entry *e, const char *what, json_t **out, hd_error_t *err)
{
    if (e->blob.size > JSON_MAX_BYTES)
        return hd_error_set(err, 0, "%s: %lld bytes is too large for a JSON document", what, (long long)e->blob.size);
    cleanup_free char *text = NULL;
    size_t len = 0;
    if (hd_read_file(e->blob.stage_path, &text, &len, err) < 0)
        return hd_error_prefix(err, "%s", what);
    json_error_t jerr;
    *out = json_loadb(text, len, 0, &jerr);
    if (*out == NULL)
        return hd_error_set(err, 0, "%s: invalid JSON: line %d: %s", what, jerr.line, jerr.text);
    return 0;
}

static char **json_strv(json_t *arr)
{
    if (!json_is_array(arr))
        return NULL;
    char **v = hd_xcalloc(json_array_size(arr) + 1, sizeof(char *));
    size_t n = 0, i;
    json_t *item;
    json_array_foreach(arr, i, item)
    {
        if (json_is_string(item))
            v[n++] = hd_xstrdup(json_string_value(item));
    }
    return v;
}

static char *json_str(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? hd_xstrdup(json_string_value(v)) : NULL;
}

/* Split "sha256:<hex>" into hex; anything else is an error naming the field. */
static int parse_digest(json_t *value, const char *what, char hex[IMAGE_HEX_LEN + 1], hd_error_t *err)
{
    const char *s = json_string_value(value);
    if (s == NULL)
        return hd_error_set(err, 0, "%s: digest missing", what);
    if (strncmp(s, "sha256:", 7) != 0)
        return hd_error_set(err, 0, "%s: unsupported digest \"%s\" (only sha256 is supported)", what, s);
    if (!is_hex64(s + 7, strlen(s + 7)))
        return hd_error_set(err, 0, "%s: malformed digest \"%s\"", what, s);
    memcpy(hex, s + 7, IMAGE_HEX_LEN + 1);
    return 0;
}

static int digest_mismatch(const char *what, const char *expected, const char *got, hd_error_t *err)
{
    return hd_error_set(err, 0, "%s: digest mismatch: expected sha256:%s, got sha256:%s", what, expected, got);
}

/* sha256 of the decompressed bytes of a (possibly gzip/zstd/xz/bzip2) layer file. */
static int digest_uncompressed(const struct image_blob *blob, const char *what, char hex[IMAGE_HEX_LEN + 1],
                               hd_error_t *err)
{
    unsigned char magic[6] = {0};
    {
        cleanup_close int fd = open(blob->stage_path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return hd_error_sys(err, "open %s", blob->stage_path);
        if (read(fd, magic, sizeof(magic)) < 0)
            return hd_error_sys(err, "read %s", blob->stage_path);
    }
    bool compressed = (magic[0] == 0x1f && magic[1] == 0x8b) ||                           /* gzip */
        (magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd) || /* zstd */
        (magic[0] == 0xfd && magic[1] == '7' && magic[2] == 'z' && magic[3] == 'X') ||    /* xz */
        (magic[0] == 'B' && magic[1] == 'Z' && magic[2] == 'h');                          /* bzip2 */
    if (!compressed) {
        memcpy(hex, blob->hex, IMAGE_HEX_LEN + 1);
        return 0;
    }
    struct archive *a = archive_read_new();
    archive_read_support_filter_all(a);
    archive_read_support_format_raw(a);
    struct hd_sha256 md;
    hd_sha256_init(&md);
    int ret = 0;
    struct archive_entry *entry;
    cleanup_free char *buf = hd_xmalloc(ARCHIVE_BLOCK);
    if (archive_read_open_filename(a, blob->stage_path, ARCHIVE_BLOCK) != ARCHIVE_OK ||
        archive_read_next_header(a, &entry) != ARCHIVE_OK) {
        ret = hd_error_set(err, 0, "%s: cannot decompress: %s", what, archive_error_string(a));
        goto out;
    }
    for (;;) {
        la_ssize_t r = archive_read_data(a, buf, ARCHIVE_BLOCK);
        if (r == 0)
            break;
        if (r < 0) {
            ret = hd_error_set(err, 0, "%s: cannot decompress: %s", what, archive_error_string(a));
            goto out;
        }
        hd_sha256_update(&md, buf, (size_t)r);
    }
    hd_sha256_final_hex(&md, hex);
out:
    archive_read_free(a);
    return ret;
}

const char *image_host_architecture(void)
{
    static const struct {
        const char *machine, *goarch;
    } map[] = {
        {"x86_64", "amd64"}, {"aarch64", "arm64"},   {"armv7l", "arm"},  {"armv6l", "arm"},      {"i686", "386"},
        {"i386", "386"},     {"ppc64le", "ppc64le"}, {"s390x", "s390x"}, {"riscv64", "riscv64"},
    };
    static struct utsname u;
    if (uname(&u) < 0)
        return "amd64";
    for (size_t i = 0; i < ARRAY_SIZE(map); i++)
        if (strcmp(u.machine, map[i].machine) == 0)
            return map[i].goarch;
    return u.machine;
}

void image_source_add_blob(struct image_source *src, const struct image_blob *blob)
{
    for (size_t i = 0; i < src->n_blobs; i++)
        if (strcmp(src->blobs[i].hex, blob->hex) == 0)
            return;
    src->blobs = hd_xrealloc(src->blobs, (src->n_blobs + 1) * sizeof(*src->blobs));
    src->blobs[src->n_blobs] = *blob;
    src->blobs[src->n_blobs].stage_path = hd_xstrdup(blob->stage_path);
    src->n_blobs++;
}

void image_source_add_layer(struct image_source *src, const struct image_blob *blob)
{
    src->layers = hd_xrealloc(src->layers, (src->n_layers + 1) * sizeof(*src->layers));
    src->layers[src->n_layers] = *blob;
    src->layers[src->n_layers].stage_path = hd_xstrdup(blob->stage_path);
    src->n_layers++;
}

/* Record the config defaults and check that the image is for this host. */
int image_config_parse(json_t *config, struct image_source *src, hd_error_t *err)
{
    if (!json_is_object(config))
        return hd_error_set(err, 0, "config: not a JSON object");
    const char *os = json_string_value(json_object_get(config, "os"));
    src->architecture = json_str(config, "architecture");
    if ((os && strcmp(os, "linux") != 0) ||
        (src->architecture && strcmp(src->architecture, image_host_architecture()) != 0))
        return hd_error_set(err, 0, "the image is built for %s/%s; this host runs linux/%s", os ? os : "?",
                            src->architecture ? src->architecture : "?", image_host_architecture());
    src->image_created = json_str(config, "created");
    json_t *c = json_object_get(config, "config");
    if (json_is_object(c)) {
        src->cmd = json_strv(json_object_get(c, "Cmd"));
        src->entrypoint = json_strv(json_object_get(c, "Entrypoint"));
        src->env = json_strv(json_object_get(c, "Env"));
        src->workdir = json_str(c, "WorkingDir");
        src->user = json_str(c, "User");
    }
    return 0;
}

/* ---- docker save ---------------------------------------------------------------------------- */

/* If an archive name carries its own digest (<hex>.json, blobs/sha256/<hex>), return that hex. */
static bool name_digest(const char *name, char hex[IMAGE_HEX_LEN + 1])
{
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    size_t len = strlen(base);
    if (len >= 5 && strcmp(base + len - 5, ".json") == 0)
        len -= 5;
    if (!is_hex64(base, len))
        return false;
    memcpy(hex, base, IMAGE_HEX_LEN);
    hex[IMAGE_HEX_LEN] = '\0';
    return true;
}

static int read_docker(const struct stage *st, const struct staged_entry *manifest_entry, struct image_source *src,
                       hd_error_t *err)
{
    json_t *manifest = NULL, *config = NULL;
    int ret = -1;
    src->format = "docker";
    if (read_staged_json(manifest_entry, "manifest.json", &manifest, err) < 0)
        goto out;
    json_t *image = json_array_get(manifest, 0);
    if (!json_is_object(image)) {
        hd_error_set(err, 0, "manifest.json: no image in it");
        goto out;
    }
    const char *config_name = json_string_value(json_object_get(image, "Config"));
    json_t *layer_names = json_object_get(image, "Layers");
    if (config_name == NULL || !json_is_array(layer_names)) {
        hd_error_set(err, 0, "manifest.json: Config or Layers missing");
        goto out;
    }
    const char *tag = json_string_value(json_array_get(json_object_get(image, "RepoTags"), 0));
    if (tag)
        src->name = image_name_normalize(tag);

    const struct staged_entry *config_entry = stage_find(st, config_name);
    if (config_entry == NULL) {
        hd_error_set(err, 0, "config %s: missing from the archive", config_name);
        goto out;
    }
    char expected[IMAGE_HEX_LEN + 1];
    if (name_digest(config_name, expected) && strcmp(expected, config_entry->blob.hex) != 0) {
        cleanup_free char *what = hd_xasprintf("config %s", config_name);
        digest_mismatch(what, expected, config_entry->blob.hex, err);
        goto out;
    }
    memcpy(src->config_hex, config_entry->blob.hex, sizeof(src->config_hex));
    if (read_staged_json(config_entry, config_name, &config, err) < 0)
        goto out;
    if (image_config_parse(config, src, err) < 0)
        goto out;
    image_source_add_blob(src, &config_entry->blob);

    json_t *diff_ids = json_object_get(json_object_get(config, "rootfs"), "diff_ids");
    if (json_array_size(diff_ids) != json_array_size(layer_names)) {
        hd_error_set(err, 0, "config %s: rootfs.diff_ids lists %zu layers, manifest.json %zu", config_name,
                     json_array_size(diff_ids), json_array_size(layer_names));
        goto out;
    }
    size_t i;
    json_t *layer_name;
    json_array_foreach(layer_names, i, layer_name)
    {
        const char *name = json_string_value(layer_name);
        if (name == NULL) {
            hd_error_set(err, 0, "manifest.json: Layers[%zu] is not a string", i);
            goto out;
        }
        cleanup_free char *what = hd_xasprintf("layer %s", name);
        const struct staged_entry *layer = stage_find(st, name);
        if (layer == NULL) {
            hd_error_set(err, 0, "%s: missing from the archive", what);
            goto out;
        }
        char want[IMAGE_HEX_LEN + 1], got[IMAGE_HEX_LEN + 1];
        if (strncmp(name, "blobs/", 6) == 0 && name_digest(name, want) && strcmp(want, layer->blob.hex) != 0) {
            digest_mismatch(what, want, layer->blob.hex, err);
            goto out;
        }
        cleanup_free char *field = hd_xasprintf("config rootfs.diff_ids[%zu]", i);
        if (parse_digest(json_array_get(diff_ids, i), field, want, err) < 0)
            goto out;
        if (digest_uncompressed(&layer->blob, what, got, err) < 0)
            goto out;
        if (strcmp(want, got) != 0) {
            digest_mismatch(what, want, got, err);
            goto out;
        }
        image_source_add_layer(src, &layer->blob);
        image_source_add_blob(src, &layer->blob);
    }
    ret = 0;
out:
    json_decref(manifest);
    json_decref(config);
    return ret;
}

/* ---- OCI archive ---------------------------------------------------------------------------- */

/* Find and verify the blob a descriptor points to. */
static int oci_blob(const struct stage *st, json_t *descriptor, const char *what, const struct staged_entry **out,
                    hd_error_t *err)
{
    char hex[IMAGE_HEX_LEN + 1];
    *out = NULL;
    if (!json_is_object(descriptor))
        return hd_error_set(err, 0, "%s: descriptor is not an object", what);
    if (parse_digest(json_object_get(descriptor, "digest"), what, hex, err) < 0)
        return -1;
    cleanup_free char *path = hd_xasprintf("blobs/sha256/%s", hex);
    const struct staged_entry *e = stage_find(st, path);
    if (e == NULL)
        return hd_error_set(err, 0, "%s sha256:%s: blob missing from the archive", what, hex);
    cleanup_free char *label = hd_xasprintf("%s sha256:%s", what, hex);
    if (strcmp(e->blob.hex, hex) != 0)
        return digest_mismatch(label, hex, e->blob.hex, err);
    json_t *size = json_object_get(descriptor, "size");
    if (json_is_integer(size) && json_integer_value(size) != e->blob.size)
        return hd_error_set(err, 0, "%s: size mismatch: expected %lld bytes, got %lld", label,
                            (long long)json_integer_value(size), (long long)e->blob.size);
    *out = e;
    return 0;
}

bool image_is_index_media_type(const char *type)
{
    return type &&
        (strcmp(type, "application/vnd.oci.image.index.v1+json") == 0 ||
         strcmp(type, "application/vnd.docker.distribution.manifest.list.v2+json") == 0);
}

/* Pick the manifest for linux/<host arch> from an index's manifests array. */
int image_pick_platform(json_t *manifests, const char *what, const char *want_os, const char *arch, const char *variant,
                        json_t **out, hd_error_t *err)
{
    if (!json_is_array(manifests) || json_array_size(manifests) == 0)
        return hd_error_set(err, 0, "%s: no manifests in it", what);
    if (want_os == NULL)
        want_os = "linux";
    if (arch == NULL)
        arch = image_host_architecture();
    size_t i;
    json_t *m, *unlabelled = NULL;
    size_t n_unlabelled = 0;
    cleanup_free char *seen = hd_xstrdup("");
    json_array_foreach(manifests, i, m)
    {
        json_t *platform = json_object_get(m, "platform");
        if (!json_is_object(platform)) {
            unlabelled = unlabelled ? unlabelled : m;
            n_unlabelled++;
            continue;
        }
        const char *os = json_string_value(json_object_get(platform, "os"));
        const char *a = json_string_value(json_object_get(platform, "architecture"));
        const char *v = json_string_value(json_object_get(platform, "variant"));
        if (os && a && strcmp(os, want_os) == 0 && strcmp(a, arch) == 0 &&
            (variant == NULL || (v && strcmp(v, variant) == 0))) {
            *out = m;
            return 0;
        }
        char *more = hd_xasprintf("%s%s%s/%s", seen, *seen ? ", " : "", os ? os : "?", a ? a : "?");
        free(seen);
        seen = more;
    }
    if (unlabelled && n_unlabelled == json_array_size(manifests)) {
        *out = unlabelled; /* a plain layout with no platform data: its first image */
        return 0;
    }
    return hd_error_set(err, 0, "%s: no %s/%s%s%s image in it (it has: %s)", what, want_os, arch, variant ? "/" : "",
                        variant ? variant : "", seen);
}

static int read_oci(const struct stage *st, const struct staged_entry *index_entry, struct image_source *src,
                    hd_error_t *err)
{
    json_t *index = NULL, *doc = NULL, *config = NULL;
    int ret = -1;
    src->format = "oci";
    if (read_staged_json(index_entry, "index.json", &index, err) < 0)
        goto out;
    json_t *descriptor = NULL;
    if (image_pick_platform(json_object_get(index, "manifests"), "index.json", NULL, NULL, NULL, &descriptor, err) < 0)
        goto out;
    json_t *annotations = json_object_get(descriptor, "annotations");
    const char *full_name = json_string_value(json_object_get(annotations, "io.containerd.image.name"));
    const char *ref_name = json_string_value(json_object_get(annotations, "org.opencontainers.image.ref.name"));
    if (full_name)
        src->name = image_name_normalize(full_name);
    else if (ref_name && (strchr(ref_name, ':') || strchr(ref_name, '/')))
        src->name = image_name_normalize(ref_name); /* a full reference, not just a tag */

    /* Follow image indexes (manifest lists) down to one image manifest. */
    for (int depth = 0;; depth++) {
        const struct staged_entry *blob;
        if (oci_blob(st, descriptor, "manifest", &blob, err) < 0)
            goto out;
        json_decref(doc);
        doc = NULL;
        if (read_staged_json(blob, "manifest", &doc, err) < 0)
            goto out;
        image_source_add_blob(src, &blob->blob);
        const char *type = json_string_value(json_object_get(descriptor, "mediaType"));
        const char *own_type = json_string_value(json_object_get(doc, "mediaType"));
        if (!image_is_index_media_type(type) && !image_is_index_media_type(own_type) &&
            json_object_get(doc, "config") != NULL)
            break;
        if (depth >= INDEX_MAX_DEPTH) {
            hd_error_set(err, 0, "manifest sha256:%s: image indexes nest too deeply", blob->blob.hex);
            goto out;
        }
        cleanup_free char *what = hd_xasprintf("image index sha256:%s", blob->blob.hex);
        if (image_pick_platform(json_object_get(doc, "manifests"), what, NULL, NULL, NULL, &descriptor, err) < 0)
            goto out;
    }

    const struct staged_entry *config_blob;
    if (oci_blob(st, json_object_get(doc, "config"), "config", &config_blob, err) < 0 || config_blob == NULL)
        goto out;
    memcpy(src->config_hex, config_blob->blob.hex, sizeof(src->config_hex));
    if (read_staged_json(config_blob, "config", &config, err) < 0)
        goto out;
    if (image_config_parse(config, src, err) < 0)
        goto out;
    image_source_add_blob(src, &config_blob->blob);

    json_t *layers = json_object_get(doc, "layers");
    if (!json_is_array(layers)) {
        hd_error_set(err, 0, "manifest: layers missing");
        goto out;
    }
    size_t i;
    json_t *layer;
    json_array_foreach(layers, i, layer)
    {
        const struct staged_entry *blob;
        if (oci_blob(st, layer, "layer", &blob, err) < 0)
            goto out;
        image_source_add_layer(src, &blob->blob);
        image_source_add_blob(src, &blob->blob);
    }
    ret = 0;
out:
    json_decref(index);
    json_decref(doc);
    json_decref(config);
    return ret;
}

void image_source_free(struct image_source *s)
{
    if (s == NULL)
        return;
    free(s->name);
    free(s->digest_name);
    free(s->architecture);
    free(s->image_created);
    hd_strv_free(s->cmd);
    hd_strv_free(s->entrypoint);
    hd_strv_free(s->env);
    free(s->workdir);
    free(s->user);
    for (size_t i = 0; i < s->n_layers; i++)
        free(s->layers[i].stage_path);
    free(s->layers);
    for (size_t i = 0; i < s->n_blobs; i++)
        free(s->blobs[i].stage_path);
    free(s->blobs);
    memset(s, 0, sizeof(*s));
}

int image_archive_read(const char *tarball, const char *stage_dir, struct image_source *out, hd_error_t *err)
{
    if (hd_archive_load(err) < 0)
        return -1;
    struct stage st = {0};
    int ret = stage_archive(tarball, stage_dir, &st, err);
    if (ret == 0) {
        const struct staged_entry *manifest = stage_find(&st, "manifest.json");
        const struct staged_entry *index = stage_find(&st, "index.json");
        if (manifest)
            ret = read_docker(&st, manifest, out, err);
        else if (index)
            ret = read_oci(&st, index, out, err);
        else
            ret = hd_error_set(err, 0,
                               "not an image archive: neither manifest.json (docker save) nor "
                               "index.json (OCI) in it");
    }
    stage_free(&st);
    if (ret < 0)
        image_source_free(out);
    return ret;
}
