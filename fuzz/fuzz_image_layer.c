/*
 * fuzz_image_layer.c - libFuzzer target for layer application
 * (image_layers_apply): entry names, whiteouts, opaque dirs, links, and the
 * refusal of anything that would leave the rootfs. The input is one layer
 * tar (optionally compressed), applied onto a small rootfs holding files to
 * white out and a symlink to "/". The oracle for escapes: the scratch dir
 * around the rootfs holds a canary; after every run it must be the only
 * thing there besides the rootfs and the layer, unchanged. Run it as an
 * unprivileged user (scripts/fuzz-image does), so a bug cannot hurt the host.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image/internal.h"
#include "base/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void must(int ok)
{
    if (!ok)
        abort();
}

static void check_scratch(const char *dir)
{
    DIR *d = opendir(dir);
    must(d != NULL);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 || strcmp(de->d_name, "canary") == 0 ||
            strcmp(de->d_name, "rootfs") == 0 || strcmp(de->d_name, "layer") == 0)
            continue;
        fprintf(stderr, "layer escaped the rootfs: %s/%s\n", dir, de->d_name);
        abort();
    }
    closedir(d);
    char *canary = hd_xasprintf("%s/canary", dir), *text = NULL;
    hd_error_t err = NULL;
    must(hd_read_file(canary, &text, NULL, &err) == 0 && strcmp(text, "canary\n") == 0);
    free(text);
    free(canary);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char dir[] = "/tmp/hedge-fuzz-layer-XXXXXX";
    must(mkdtemp(dir) != NULL);
    char *rootfs = hd_xasprintf("%s/rootfs", dir);
    char *path = NULL;
    hd_error_t err = NULL;
    struct image_blob layer = {.stage_path = hd_xasprintf("%s/layer", dir)};
    must(hd_write_file(layer.stage_path, (const char *)data, size, &err) == 0);
    path = hd_xasprintf("%s/canary", dir);
    must(hd_write_file(path, "canary\n", 7, &err) == 0);
    free(path);
    must(mkdir(rootfs, 0755) == 0);
    static const char *const dirs[] = {"a", "a/b", "d", "etc"};
    for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
        path = hd_xasprintf("%s/%s", rootfs, dirs[i]);
        must(mkdir(path, 0755) == 0);
        free(path);
    }
    static const char *const files[] = {"a/b/c", "d/f", "etc/passwd"};
    for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
        path = hd_xasprintf("%s/%s", rootfs, files[i]);
        must(hd_write_file(path, "x\n", 2, &err) == 0);
        free(path);
    }
    path = hd_xasprintf("%s/s", rootfs);
    must(symlink("/", path) == 0);
    free(path);
    path = hd_xasprintf("%s/up", rootfs);
    must(symlink("..", path) == 0);
    free(path);

    memcpy(layer.hex, "fuzz", 5);
    image_layers_apply(rootfs, &layer, 1, &err);
    hd_error_free(&err);
    check_scratch(dir);
    must(hd_rm_rf(dir, &err) == 0);
    free(rootfs);
    free(layer.stage_path);
    return 0;
}
