/*
 * fuzz_image_archive.c - libFuzzer target for the image tarball reader
 * (image_archive_read): tar/compression framing, manifest.json, index.json,
 * OCI manifests and configs, link resolution inside the archive. The input is
 * the whole tarball; staged files go to a fresh temp dir that is removed after
 * each run. Build and run with scripts/fuzz-image.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "image/internal.h"
#include "base/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char dir[] = "/tmp/hedge-fuzz-archive-XXXXXX";
    if (mkdtemp(dir) == NULL)
        abort();
    char *tarball = hd_xasprintf("%s/in.tar", dir);
    char *stage = hd_xasprintf("%s/stage", dir);
    hd_error_t err = NULL;
    if (hd_write_file(tarball, (const char *)data, size, &err) < 0 || mkdir(stage, 0700) < 0)
        abort();
    struct image_source src = {0};
    if (image_archive_read(tarball, stage, &src, &err) == 0)
        image_source_free(&src);
    hd_error_free(&err);
    if (hd_rm_rf(dir, &err) < 0)
        abort();
    free(tarball);
    free(stage);
    return 0;
}
