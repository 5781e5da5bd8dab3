/*
 * bundle.c - write and read workload bundles (bundle.h) with libarchive.
 *
 * Layout (pax tar): "hedge-bundle.json" first, {"hedge_bundle": 1, "spec":
 * {...}, "volumes": [{"mount": I, "target": "/data"}]}, then the tree of each
 * writable mount under "volumes/I/". Read-only mounts are not carried: they
 * are host inputs the other node must provide. Extraction refuses absolute
 * paths, ".." and writes through symlinks (libarchive's SECURE_* flags), and
 * never writes into an existing directory.
 */
#include "image/archive_lazy.h"
#include "cli/bundle.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/util.h"

#define BUNDLE_META "hedge-bundle.json"

static int archive_fail(struct archive *a, hd_error_t *err, const char *what)
{
    return hd_error_set(err, archive_errno(a) > 0 ? archive_errno(a) : 0, "%s: %s", what,
                        archive_error_string(a) ? archive_error_string(a) : "archive error");
}

/* Add the tree under dir as volumes/<index>/... */
static int bundle_add_tree(struct archive *out, const char *dir, int index, hd_error_t *err)
{
    struct archive *disk = archive_read_disk_new();
    archive_read_disk_set_behavior(disk, ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS);
    archive_read_disk_set_standard_lookup(disk);
    int r = -1;
    if (archive_read_disk_open(disk, dir) != ARCHIVE_OK) {
        archive_fail(disk, err, dir);
        goto out;
    }
    size_t dir_len = strlen(dir);
    for (;;) {
        struct archive_entry *entry = archive_entry_new();
        int st = archive_read_next_header2(disk, entry);
        if (st == ARCHIVE_EOF) {
            archive_entry_free(entry);
            break;
        }
        if (st != ARCHIVE_OK) {
            archive_entry_free(entry);
            archive_fail(disk, err, dir);
            goto out;
        }
        archive_read_disk_descend(disk);
        const char *src = archive_entry_sourcepath(entry);
        const char *rel = strlen(src) > dir_len ? src + dir_len + 1 : "";
        cleanup_free char *name = hd_xasprintf("volumes/%d/%s", index, rel);
        archive_entry_set_pathname(entry, name);
        if (archive_write_header(out, entry) != ARCHIVE_OK) {
            archive_entry_free(entry);
            archive_fail(out, err, name);
            goto out;
        }
        if (archive_entry_filetype(entry) == AE_IFREG && archive_entry_size(entry) > 0) {
            cleanup_close int fd = open(src, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
            if (fd < 0) {
                archive_entry_free(entry);
                hd_error_sys(err, "%s", src);
                goto out;
            }
            char buf[65536];
            ssize_t n;
            while ((n = read(fd, buf, sizeof(buf))) > 0)
                if (archive_write_data(out, buf, (size_t)n) < 0) {
                    archive_entry_free(entry);
                    archive_fail(out, err, name);
                    goto out;
                }
        }
        archive_entry_free(entry);
    }
    r = 0;
out:
    archive_read_free(disk);
    return r;
}

int hd_bundle_write(const char *path, json_t *spec, hd_error_t *err)
{
    if (hd_archive_load(err) < 0)
        return -1;
    json_t *volumes = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(spec, "mounts"), i, m) if (!json_is_true(json_object_get(m, "readonly")))
        json_array_append_new(volumes, json_pack("{s:i,s:O}", "mount", (int)i, "target", json_object_get(m, "target")));
    json_t *meta = json_pack("{s:i,s:O,s:o}", "hedge_bundle", 1, "spec", spec, "volumes", volumes);
    char *text = json_dumps(meta, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(meta);

    struct archive *out = archive_write_new();
    archive_write_set_format_pax_restricted(out);
    cleanup_free char *tmp = hd_xasprintf("%s.tmp", path);
    int r = -1;
    if (archive_write_open_filename(out, tmp) != ARCHIVE_OK) {
        archive_fail(out, err, tmp);
        goto out;
    }
    struct archive_entry *entry = archive_entry_new();
    archive_entry_set_pathname(entry, BUNDLE_META);
    archive_entry_set_filetype(entry, AE_IFREG);
    archive_entry_set_perm(entry, 0644);
    archive_entry_set_size(entry, (la_int64_t)strlen(text));
    archive_entry_set_mtime(entry, time(NULL), 0);
    int ok = archive_write_header(out, entry) == ARCHIVE_OK &&
        archive_write_data(out, text, strlen(text)) == (la_ssize_t)strlen(text);
    archive_entry_free(entry);
    if (!ok) {
        archive_fail(out, err, path);
        goto out;
    }
    json_array_foreach(json_object_get(spec, "mounts"), i,
                       m) if (!json_is_true(json_object_get(m, "readonly")) &&
                              bundle_add_tree(out, json_string_value(json_object_get(m, "source")), (int)i, err) <
                                  0) goto out;
    if (archive_write_close(out) != ARCHIVE_OK) {
        archive_fail(out, err, path);
        goto out;
    }
    if (rename(tmp, path) < 0) {
        hd_error_sys(err, "rename %s", path);
        goto out;
    }
    r = 0;
out:
    archive_write_free(out);
    if (r < 0)
        unlink(tmp);
    free(text);
    return r < 0 ? hd_error_prefix(err, "bundle %s", path) : 0;
}

void hd_bundle_remove_volumes(char **dirs)
{
    for (size_t i = 0; dirs && dirs[i]; i++) {
        hd_error_t err = NULL;
        if (hd_rm_rf(dirs[i], &err) < 0) {
            hd_error_print(err, "hedge");
            hd_error_free(&err);
        }
    }
    hd_strv_free(dirs);
}

/* "volumes/I/rest" -> I and rest; false for anything else. */
static bool volume_path(const char *name, int *index, const char **rest)
{
    if (strncmp(name, "volumes/", 8) != 0)
        return false;
    char *end;
    long i = strtol(name + 8, &end, 10);
    if (end == name + 8 || i < 0 || i > 1000 || (*end != '/' && *end != '\0'))
        return false;
    *index = (int)i;
    *rest = *end == '/' ? end + 1 : end;
    return (*rest)[0] != '/';
}

int hd_bundle_read(const char *path, const char *volumes_base, json_t **spec_out, char ***created, hd_error_t *err)
{
    if (hd_archive_load(err) < 0)
        return -1;
    *created = NULL;
    struct archive *in = archive_read_new();
    archive_read_support_format_tar(in);
    archive_read_support_filter_all(in);
    struct archive *disk = archive_write_disk_new();
    /* Entry names are rewritten to absolute paths below the volume dir by us, so the
     * absolute-path check is ours (volume_path); libarchive refuses ".." and symlinks. */
    archive_write_disk_set_options(disk,
                                   ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                                       ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_OWNER);
    archive_write_disk_set_standard_lookup(disk);
    json_t *meta = NULL, *spec = NULL;
    char *base = NULL;
    int r = -1;
    if (archive_read_open_filename(in, path, 65536) != ARCHIVE_OK) {
        archive_fail(in, err, path);
        goto out;
    }
    struct archive_entry *entry;
    int st;
    while ((st = archive_read_next_header(in, &entry)) == ARCHIVE_OK) {
        cleanup_free char *name = hd_xstrdup(archive_entry_pathname(entry) ? archive_entry_pathname(entry) : "");
        if (meta == NULL) {
            if (strcmp(name, BUNDLE_META) != 0 || archive_entry_size(entry) > (1 << 20)) {
                hd_error_set(err, 0, "not a hedge bundle (%s is not its first entry)", BUNDLE_META);
                goto out;
            }
            size_t size = (size_t)archive_entry_size(entry);
            cleanup_free char *text = hd_xmalloc(size + 1);
            if (archive_read_data(in, text, size) != (la_ssize_t)size) {
                archive_fail(in, err, BUNDLE_META);
                goto out;
            }
            json_error_t jerr;
            meta = json_loadb(text, size, 0, &jerr);
            spec = meta ? json_object_get(meta, "spec") : NULL;
            const char *wl = json_string_value(json_object_get(spec, "name"));
            if (!json_is_object(spec) || json_integer_value(json_object_get(meta, "hedge_bundle")) != 1 || wl == NULL ||
                strchr(wl, '/') || wl[0] == '.') {
                hd_error_set(err, 0, "%s: not a version 1 bundle with a named spec", BUNDLE_META);
                goto out;
            }
            base = hd_xasprintf("%s/%s", volumes_base, wl);
            json_t *v;
            size_t k;
            json_array_foreach(json_object_get(meta, "volumes"), k, v)
            {
                int i = (int)json_integer_value(json_object_get(v, "mount"));
                json_t *mount = json_array_get(json_object_get(spec, "mounts"), (size_t)i);
                if (mount == NULL) {
                    hd_error_set(err, 0, "%s: volume of mount %d which the spec does not have", BUNDLE_META, i);
                    goto out;
                }
                cleanup_free char *dest = hd_xasprintf("%s/%d", base, i);
                if (access(dest, F_OK) == 0) {
                    hd_error_set(err, EEXIST, "volume %s", dest);
                    goto out;
                }
                if (hd_mkdir_p(dest, 0755, err) < 0)
                    goto out;
                hd_strv_push(created, dest);
                json_object_set_new(mount, "source", json_string(dest));
            }
            continue;
        }
        int index;
        const char *rest;
        if (!volume_path(name, &index, &rest)) {
            hd_error_set(err, 0, "unexpected entry %s", name);
            goto out;
        }
        cleanup_free char *dest = hd_xasprintf("%s/%d", base, index);
        if (access(dest, F_OK) < 0) { /* only volumes the metadata announced were created */
            hd_error_set(err, 0, "entry %s: no such volume in %s", name, BUNDLE_META);
            goto out;
        }
        cleanup_free char *target = hd_xasprintf("%s%s%s", dest, *rest ? "/" : "", rest);
        archive_entry_set_pathname(entry, target);
        const char *hardlink = archive_entry_hardlink(entry);
        cleanup_free char *link_target = NULL;
        if (hardlink) {
            const char *link_rest;
            int link_index;
            if (!volume_path(hardlink, &link_index, &link_rest) || link_index != index) {
                hd_error_set(err, 0, "entry %s: hard link outside its volume", name);
                goto out;
            }
            link_target = hd_xasprintf("%s/%s", dest, link_rest);
            archive_entry_set_hardlink(entry, link_target);
        }
        if (archive_write_header(disk, entry) != ARCHIVE_OK) {
            archive_fail(disk, err, name);
            goto out;
        }
        const void *buf;
        size_t size;
        la_int64_t offset;
        while ((st = archive_read_data_block(in, &buf, &size, &offset)) == ARCHIVE_OK)
            if (archive_write_data_block(disk, buf, size, offset) != ARCHIVE_OK) {
                archive_fail(disk, err, name);
                goto out;
            }
        if (st != ARCHIVE_EOF) {
            archive_fail(in, err, name);
            goto out;
        }
        archive_write_finish_entry(disk);
    }
    if (st != ARCHIVE_EOF) {
        archive_fail(in, err, path);
        goto out;
    }
    if (meta == NULL) {
        hd_error_set(err, 0, "empty bundle");
        goto out;
    }
    archive_write_close(disk);
    *spec_out = json_incref(spec);
    r = 0;
out:
    json_decref(meta);
    free(base);
    archive_read_free(in);
    archive_write_free(disk);
    if (r < 0) {
        hd_bundle_remove_volumes(*created);
        *created = NULL;
        return hd_error_prefix(err, "bundle %s", path);
    }
    return 0;
}
