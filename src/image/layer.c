/*
 * image_layer.c - apply image layers (tar, optionally gzip/zstd/xz) to a rootfs.
 *
 * Layers are applied in order, each with libarchive's disk writer, keeping
 * owners (numeric ids, never looked up in the host's passwd), modes, times,
 * hardlinks, symlinks, device nodes and xattrs (but not trusted.overlay.*,
 * which would act as overlayfs metadata). Whiteouts follow the OCI
 * image spec:
 *   dir/.wh.NAME       removes NAME (file or whole tree) of lower layers;
 *   dir/.wh..wh..opq   makes dir opaque: everything in it from lower layers
 *                      goes, what this layer itself put there stays (the
 *                      marker may come after its siblings in the tar, so the
 *                      paths unpacked by this layer are remembered, as
 *                      containerd does).
 * Whiteout files themselves never appear in the rootfs.
 *
 * Safety: an entry may not leave the rootfs. Absolute names and ".."
 * components are refused outright; every entry's parent directory (and a
 * hardlink's target's) is opened with openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS), so a path through a symlink placed by an earlier
 * entry is refused before anything is written; libarchive's
 * ARCHIVE_EXTRACT_SECURE_NODOTDOT | SECURE_SYMLINKS guard the write itself
 * as a second line. The rootfs path given to libarchive must contain no
 * symlinks (the caller passes a realpath), since SECURE_SYMLINKS checks it too.
 * Upper entries replace lower ones: with ARCHIVE_EXTRACT_UNLINK a file is
 * unlinked rather than truncated (a hardlinked sibling in a lower layer keeps
 * its content), and a lower directory replaced by a non-directory is removed
 * first.
 */
#include "image/archive_lazy.h"
#include "image/internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/util.h"

#define LAYER_BLOCK (128 * 1024)
#define WHITEOUT_PREFIX ".wh."
#define WHITEOUT_OPAQUE ".wh..wh..opq"

static const int layer_extract_flags = ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME |
    ARCHIVE_EXTRACT_XATTR | ARCHIVE_EXTRACT_ACL | ARCHIVE_EXTRACT_UNLINK | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
    ARCHIVE_EXTRACT_SECURE_SYMLINKS;
/* Not ARCHIVE_EXTRACT_FFLAGS: an immutable flag from an image would make its rootfs undeletable. */

/* ---- string set --------------------------------------------------------------------------- */

static size_t string_hash(const char *s)
{
    size_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static size_t string_set_slot(char *const *slots, size_t cap, const char *s)
{
    size_t i = string_hash(s) & (cap - 1);
    while (slots[i] && strcmp(slots[i], s) != 0)
        i = (i + 1) & (cap - 1);
    return i;
}

bool image_string_set_has(const struct image_string_set *set, const char *s)
{
    return set->cap && set->slots[string_set_slot(set->slots, set->cap, s)] != NULL;
}

bool image_string_set_add(struct image_string_set *set, const char *s)
{
    if ((set->len + 1) * 2 > set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 64;
        char **slots = hd_xcalloc(cap, sizeof(char *));
        for (size_t i = 0; i < set->cap; i++)
            if (set->slots[i])
                slots[string_set_slot(slots, cap, set->slots[i])] = set->slots[i];
        free(set->slots);
        set->slots = slots;
        set->cap = cap;
    }
    size_t i = string_set_slot(set->slots, set->cap, s);
    if (set->slots[i])
        return false;
    set->slots[i] = hd_xstrdup(s);
    set->len++;
    return true;
}

void image_string_set_clear(struct image_string_set *set)
{
    for (size_t i = 0; i < set->cap; i++)
        free(set->slots[i]);
    free(set->slots);
    memset(set, 0, sizeof(*set));
}

/* ---- paths -------------------------------------------------------------------------------- */

/*
 * Clean an entry name to a relative path ("" for the root itself): "./" and
 * empty components are dropped; an absolute name or a ".." component is an error.
 */
static int layer_clean_path(const char *name, char **out, hd_error_t *err)
{
    *out = NULL;
    if (name[0] == '/') {
        hd_error_set(err, 0, "entry %s: absolute path", name);
        return -1;
    }
    char *clean = hd_xcalloc(1, strlen(name) + 1);
    size_t n = 0;
    for (const char *p = name; *p;) {
        const char *end = strchrnul(p, '/');
        size_t len = (size_t)(end - p);
        if (len == 2 && p[0] == '.' && p[1] == '.') {
            free(clean);
            hd_error_set(err, 0, "entry %s: path escapes the rootfs", name);
            return -1;
        }
        if (len > 0 && !(len == 1 && p[0] == '.')) {
            if (n)
                clean[n++] = '/';
            memcpy(clean + n, p, len);
            n += len;
        }
        p = *end ? end + 1 : end;
    }
    *out = clean;
    return 0;
}

/*
 * Open directory rel of the rootfs, refusing symlinks and mount crossings on
 * the way. Returns the fd or -errno (ENOENT/ENOTDIR: not there as a directory;
 * ELOOP/EXDEV: the path goes through a symlink or leaves the rootfs).
 */
static int open_dir_beneath(int rootfd, const char *rel)
{
    struct open_how how = {
        .flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
    };
    long fd = syscall(SYS_openat2, rootfd, *rel ? rel : ".", &how, sizeof(how));
    return fd < 0 ? -errno : (int)fd;
}

/* The directory part of "a/b/c" ("a/b", "" for a top-level name), newly allocated; *base points at "c". */
static char *split_dir(const char *path, const char **base)
{
    const char *slash = strrchr(path, '/');
    *base = slash ? slash + 1 : path;
    return slash ? hd_xasprintf("%.*s", (int)(slash - path), path) : hd_xstrdup("");
}

/*
 * Open the parent directory of an entry. *dirfd is -1 when it does not exist
 * yet (libarchive will create it); a symlink on the way is an error.
 */
static int open_parent(int rootfd, const char *entry, const char *dir, int *dirfd, hd_error_t *err)
{
    int fd = open_dir_beneath(rootfd, dir);
    if (fd == -ELOOP || fd == -EXDEV)
        return hd_error_set(err, 0, "entry %s: path goes through a symlink or leaves the rootfs", entry);
    if (fd < 0 && fd != -ENOENT && fd != -ENOTDIR)
        return hd_error_set(err, -fd, "entry %s: open %s", entry, *dir ? dir : "/");
    *dirfd = fd < 0 ? -1 : fd;
    return 0;
}

static void set_add_with_parents(struct image_string_set *set, const char *path)
{
    cleanup_free char *copy = hd_xstrdup(path);
    for (;;) {
        if (!image_string_set_add(set, copy))
            return; /* its parents are in already */
        char *slash = strrchr(copy, '/');
        if (slash == NULL)
            return;
        *slash = '\0';
    }
}

/* ---- whiteouts ---------------------------------------------------------------------------- */

static int layer_whiteout(int rootfd, const char *entry, const char *dir, const char *name, hd_error_t *err)
{
    if (name[0] == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return hd_error_set(err, 0, "entry %s: malformed whiteout", entry);
    cleanup_close int dirfd = -1;
    if (open_parent(rootfd, entry, dir, &dirfd, err) < 0)
        return -1;
    if (dirfd < 0)
        return 0; /* nothing below to hide */
    if (hd_rm_rf_at(dirfd, name, err) < 0)
        return hd_error_prefix(err, "whiteout %s", entry);
    return 0;
}

/* Remove what lower layers put below dir (rel), keeping what this layer unpacked. */
static int opaque_clear(int dirfd, const char *rel, const struct image_string_set *unpacked, hd_error_t *err)
{
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return hd_error_sys(err, "open %s", *rel ? rel : "/");
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return hd_error_sys(err, "opendir %s", *rel ? rel : "/");
    }
    cleanup_strv char **names = NULL;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            hd_strv_push(&names, de->d_name);
    closedir(d);
    for (size_t i = 0; names && names[i]; i++) {
        cleanup_free char *child = *rel ? hd_xasprintf("%s/%s", rel, names[i]) : hd_xstrdup(names[i]);
        if (!image_string_set_has(unpacked, child)) {
            if (hd_rm_rf_at(dirfd, names[i], err) < 0)
                return -1;
            continue;
        }
        struct stat st;
        if (fstatat(dirfd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
            continue;
        cleanup_close int childfd = openat(dirfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (childfd < 0)
            return hd_error_sys(err, "open %s", child);
        if (opaque_clear(childfd, child, unpacked, err) < 0)
            return -1;
    }
    return 0;
}

static int layer_make_opaque(int rootfd, const char *entry, const char *dir, const struct image_string_set *unpacked,
                             hd_error_t *err)
{
    cleanup_close int dirfd = -1;
    if (open_parent(rootfd, entry, dir, &dirfd, err) < 0)
        return -1;
    if (dirfd < 0)
        return 0;
    if (opaque_clear(dirfd, dir, unpacked, err) < 0)
        return hd_error_prefix(err, "opaque whiteout %s", entry);
    return 0;
}

/* ---- entries ------------------------------------------------------------------------------ */

static int layer_copy_data(struct archive *in, struct archive *out, const char *entry, hd_error_t *err)
{
    for (;;) {
        const void *buf;
        size_t size;
        la_int64_t offset;
        int r = archive_read_data_block(in, &buf, &size, &offset);
        if (r == ARCHIVE_EOF)
            return 0;
        if (r < ARCHIVE_WARN)
            return hd_error_set(err, 0, "entry %s: read: %s", entry, archive_error_string(in));
        if (archive_write_data_block(out, buf, size, offset) < ARCHIVE_WARN)
            return hd_error_set(err, 0, "entry %s: write: %s", entry, archive_error_string(out));
    }
}

/*
 * Drop trusted.overlay.* xattrs: the rootfs may become an overlayfs lower
 * layer, where they would act as overlay metadata (opaque dirs, redirects)
 * that the image has no business setting. Other xattrs are kept.
 */
static void layer_filter_xattrs(struct archive_entry *e)
{
    static const char overlay_prefix[] = "trusted.overlay.";
    if (archive_entry_xattr_reset(e) == 0)
        return;
    struct kept {
        char *name;
        void *value;
        size_t size;
    } *kept = NULL;
    size_t n = 0;
    bool dropped = false;
    const char *name;
    const void *value;
    size_t size;
    while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
        if (strncmp(name, overlay_prefix, sizeof(overlay_prefix) - 1) == 0) {
            dropped = true;
            continue;
        }
        kept = hd_xrealloc(kept, (n + 1) * sizeof(*kept));
        kept[n].name = hd_xstrdup(name);
        kept[n].value = hd_xmalloc(size);
        memcpy(kept[n].value, value, size);
        kept[n].size = size;
        n++;
    }
    if (dropped) {
        archive_entry_xattr_clear(e);
        for (size_t i = 0; i < n; i++)
            archive_entry_xattr_add_entry(e, kept[i].name, kept[i].value, kept[i].size);
    }
    for (size_t i = 0; i < n; i++) {
        free(kept[i].name);
        free(kept[i].value);
    }
    free(kept);
}

/* Write one ordinary (non-whiteout) entry below rootfs. */
static int layer_write_entry(int rootfd, const char *rootfs, struct archive *in, struct archive *out,
                             struct archive_entry *e, const char *path, hd_error_t *err)
{
    const char *base;
    cleanup_free char *dir = split_dir(path, &base);
    cleanup_close int dirfd = -1;
    if (open_parent(rootfd, path, dir, &dirfd, err) < 0)
        return -1;

    cleanup_free char *link_abs = NULL;
    const char *hardlink = archive_entry_hardlink(e);
    if (hardlink) {
        cleanup_free char *target = NULL;
        if (layer_clean_path(hardlink, &target, err) < 0)
            return hd_error_prefix(err, "hardlink %s", path);
        const char *target_base;
        cleanup_free char *target_dir = split_dir(target, &target_base);
        cleanup_close int target_dirfd = -1;
        if (open_parent(rootfd, target, target_dir, &target_dirfd, err) < 0)
            return hd_error_prefix(err, "hardlink %s", path);
        link_abs = hd_xasprintf("%s/%s", rootfs, target);
    }

    /* A lower directory replaced by anything else goes first (libarchive only rmdirs empty ones). */
    struct stat st;
    if (dirfd >= 0 && fstatat(dirfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode) &&
        (hardlink || archive_entry_filetype(e) != AE_IFDIR)) {
        if (hd_rm_rf_at(dirfd, base, err) < 0)
            return hd_error_prefix(err, "entry %s", path);
    }

    layer_filter_xattrs(e);
    cleanup_free char *abs = hd_xasprintf("%s/%s", rootfs, path);
    archive_entry_set_pathname(e, abs);
    if (link_abs)
        archive_entry_set_hardlink(e, link_abs);
    if (archive_write_header(out, e) < ARCHIVE_WARN)
        return hd_error_set(err, 0, "entry %s: %s", path, archive_error_string(out));
    if (archive_entry_size(e) > 0 && layer_copy_data(in, out, path, err) < 0)
        return -1;
    if (archive_write_finish_entry(out) < ARCHIVE_WARN)
        return hd_error_set(err, 0, "entry %s: %s", path, archive_error_string(out));
    return 0;
}

static int layer_apply_one(int rootfd, const char *rootfs, const struct image_blob *layer, hd_error_t *err)
{
    struct archive *in = archive_read_new();
    archive_read_support_filter_all(in);
    archive_read_support_format_tar(in);
    struct archive *out = archive_write_disk_new();
    archive_write_disk_set_options(out, layer_extract_flags);
    struct image_string_set unpacked = {0};
    int ret = 0;
    if (archive_read_open_filename(in, layer->stage_path, LAYER_BLOCK) != ARCHIVE_OK) {
        ret = hd_error_set(err, 0, "open: %s", archive_error_string(in));
        goto out;
    }
    for (;;) {
        struct archive_entry *e;
        int r = archive_read_next_header(in, &e);
        if (r == ARCHIVE_EOF)
            break;
        if (r < ARCHIVE_WARN) {
            ret = hd_error_set(err, 0, "not a valid layer tar: %s", archive_error_string(in));
            goto out;
        }
        const char *name = archive_entry_pathname(e);
        if (name == NULL) {
            ret = hd_error_set(err, 0, "an entry has a name that cannot be decoded");
            goto out;
        }
        char *path = NULL;
        if (layer_clean_path(name, &path, err) < 0) {
            ret = -1;
            goto out;
        }
        cleanup_free char *path_owned = path;
        if (*path == '\0')
            continue; /* the root directory itself: keep the store's */
        const char *base;
        cleanup_free char *dir = split_dir(path, &base);
        if (strcmp(base, WHITEOUT_OPAQUE) == 0) {
            ret = layer_make_opaque(rootfd, path, dir, &unpacked, err);
        } else if (strncmp(base, WHITEOUT_PREFIX WHITEOUT_PREFIX, 8) == 0) {
            ret = 0; /* other aufs metadata (.wh..wh.plnk, ...): not part of the filesystem */
        } else if (strncmp(base, WHITEOUT_PREFIX, 4) == 0) {
            ret = layer_whiteout(rootfd, path, dir, base + 4, err);
        } else {
            ret = layer_write_entry(rootfd, rootfs, in, out, e, path, err);
            set_add_with_parents(&unpacked, path);
        }
        if (ret < 0)
            goto out;
    }
    if (archive_write_close(out) < ARCHIVE_WARN)
        ret = hd_error_set(err, 0, "finish: %s", archive_error_string(out));
out:
    image_string_set_clear(&unpacked);
    archive_read_free(in);
    archive_write_free(out);
    return ret;
}

int image_layers_apply(const char *rootfs, const struct image_blob *layers, size_t n_layers, hd_error_t *err)
{
    if (hd_archive_load(err) < 0)
        return -1;
    cleanup_close int rootfd = open(rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0)
        return hd_error_sys(err, "open %s", rootfs);
    for (size_t i = 0; i < n_layers; i++)
        if (layer_apply_one(rootfd, rootfs, &layers[i], err) < 0)
            return hd_error_prefix(err, "layer sha256:%s", layers[i].hex);
    return 0;
}
