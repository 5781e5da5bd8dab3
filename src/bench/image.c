/*
 * bench_image.c - the image of the built-in echo workload, built into the
 * image store at first use.
 *
 * The image holds one file, the static /hedge-echo-server, plus the empty
 * directories a container or guest mounts over. It is written as a
 * docker-save archive (manifest.json, config, one uncompressed layer tar:
 * the simplest format hd_image_import reads) and imported under the name
 * hedge-bench/echo:<first 12 hex of the binary's sha256>, so a rebuilt
 * server gets a new image and an unchanged one is imported once.
 */
#include "base/digest.h"
#include "image/archive_lazy.h"
#include "bench/bench.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "image/image.h"
#include "base/util.h"

/* An in-memory tar archive. */
struct tar_buffer {
    struct archive *a;
    char *data;
    size_t cap, used;
};

static int tar_open(struct tar_buffer *t, hd_error_t *err)
{
    if (hd_archive_load(err) < 0)
        return -1;
    t->cap = 16u << 20;
    t->data = hd_xmalloc(t->cap);
    t->used = 0;
    t->a = archive_write_new();
    archive_write_set_format_pax_restricted(t->a);
    archive_write_set_bytes_in_last_block(t->a, 1);
    if (archive_write_open_memory(t->a, t->data, t->cap, &t->used) != ARCHIVE_OK)
        return hd_error_set(err, 0, "tar: %s", archive_error_string(t->a));
    return 0;
}

static int tar_add(struct tar_buffer *t, const char *name, mode_t type, mode_t mode, const void *data, size_t len,
                   hd_error_t *err)
{
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, mode);
    archive_entry_set_size(e, type == AE_IFREG ? (la_int64_t)len : 0);
    archive_entry_set_mtime(e, 0, 0);
    int r = archive_write_header(t->a, e);
    archive_entry_free(e);
    if (r != ARCHIVE_OK)
        return hd_error_set(err, 0, "tar %s: %s", name, archive_error_string(t->a));
    if (type == AE_IFREG && len && archive_write_data(t->a, data, len) != (la_ssize_t)len)
        return hd_error_set(err, 0, "tar %s: %s", name, archive_error_string(t->a));
    return 0;
}

static int tar_close(struct tar_buffer *t, hd_error_t *err)
{
    int r = archive_write_close(t->a);
    archive_write_free(t->a);
    t->a = NULL;
    if (r != ARCHIVE_OK)
        return hd_error_set(err, 0, "tar: cannot finish the archive");
    return 0;
}

static void tar_free(struct tar_buffer *t)
{
    if (t->a)
        archive_write_free(t->a);
    free(t->data);
}

static const char *image_architecture(void)
{
    struct utsname u;
    uname(&u);
    if (strcmp(u.machine, "x86_64") == 0)
        return "amd64";
    if (strcmp(u.machine, "aarch64") == 0)
        return "arm64";
    return "unknown";
}

/* The docker-save archive of the echo image, written to path. */
static int write_echo_archive(const char *path, const char *tag, const char *server, size_t server_len, hd_error_t *err)
{
    struct tar_buffer layer = {0}, outer = {0};
    int ret = -1;
    char *config = NULL, *manifest = NULL;
    /* declared before any goto: their cleanup runs at out too */
    cleanup_free char *diff_id = NULL, *config_name = NULL, *layer_name = NULL;
    if (tar_open(&layer, err) < 0)
        goto out;
    static const char *dirs[] = {"proc", "sys", "dev", "tmp", "etc"};
    for (size_t i = 0; i < ARRAY_SIZE(dirs); i++)
        if (tar_add(&layer, dirs[i], AE_IFDIR, dirs[i][0] == 't' ? 01777 : 0755, NULL, 0, err) < 0)
            goto out;
    static const char passwd[] = "root:x:0:0:root:/:/hedge-echo-server\n";
    if (tar_add(&layer, "etc/passwd", AE_IFREG, 0644, passwd, sizeof(passwd) - 1, err) < 0 ||
        tar_add(&layer, "hedge-echo-server", AE_IFREG, 0755, server, server_len, err) < 0 || tar_close(&layer, err) < 0)
        goto out;
    char layer_hex[65], config_hex[65];
    hd_sha256_hex(layer.data, layer.used, layer_hex);
    diff_id = hd_xasprintf("sha256:%s", layer_hex);
    json_t *cj = json_pack("{s:s,s:s,s:{s:[s],s:[s]},s:{s:s,s:[s]}}", "architecture", image_architecture(), "os",
                           "linux", "config", "Entrypoint", "/hedge-echo-server", "Env",
                           "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "rootfs", "type",
                           "layers", "diff_ids", diff_id);
    config = json_dumps(cj, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(cj);
    hd_sha256_hex(config, strlen(config), config_hex);
    config_name = hd_xasprintf("%s.json", config_hex);
    layer_name = hd_xasprintf("%s/layer.tar", layer_hex);
    json_t *mj = json_pack("[{s:s,s:[s],s:[s]}]", "Config", config_name, "RepoTags", tag, "Layers", layer_name);
    manifest = json_dumps(mj, JSON_COMPACT);
    json_decref(mj);

    if (tar_open(&outer, err) < 0 ||
        tar_add(&outer, "manifest.json", AE_IFREG, 0644, manifest, strlen(manifest), err) < 0 ||
        tar_add(&outer, config_name, AE_IFREG, 0644, config, strlen(config), err) < 0 ||
        tar_add(&outer, layer_name, AE_IFREG, 0644, layer.data, layer.used, err) < 0 || tar_close(&outer, err) < 0)
        goto out;
    ret = hd_write_file(path, outer.data, outer.used, err);
out:
    free(config);
    free(manifest);
    tar_free(&layer);
    tar_free(&outer);
    return ret;
}

char *hd_bench_echo_image(const char *state_dir, const char *server_path, const char *tmp_dir, hd_error_t *err)
{
    cleanup_free char *server = NULL;
    size_t len;
    if (hd_read_file(server_path, &server, &len, err) < 0)
        return NULL;
    char hex[65];
    hd_sha256_hex(server, len, hex);
    char *ref = hd_xasprintf("hedge-bench/echo:%.12s", hex);
    struct hd_image_config *found = NULL;
    hd_error_t missing = NULL;
    if (hd_image_lookup(state_dir, ref, &found, &missing) == 0) {
        hd_image_config_free(found);
        return ref;
    }
    hd_error_free(&missing);
    cleanup_free char *archive = hd_xasprintf("%s/echo-image.tar", tmp_dir);
    if (write_echo_archive(archive, ref, server, len, err) < 0 ||
        hd_image_import(state_dir, archive, ref, NULL, err) < 0) {
        unlink(archive);
        hd_error_prefix(err, "build the image %s", ref);
        free(ref);
        return NULL;
    }
    unlink(archive);
    return ref;
}
