/*
 * fuzz_registry.c - libFuzzer target for what a registry (or a user) hands the
 * pull client as text: WWW-Authenticate challenges (registry_challenge_param)
 * and image references (registry_ref_parse, image_digest_ref_normalize).
 * Build and run with scripts/fuzz-image.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "image/internal.h"
#include "image/registry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    static const char *const keys[] = {"realm", "service", "scope", "error"};
    for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
        free(registry_challenge_param(text, keys[i]));
    struct registry_ref ref;
    hd_error_t err = NULL;
    if (registry_ref_parse(text, &ref, &err) == 0)
        registry_ref_free(&ref);
    hd_error_free(&err);
    free(image_digest_ref_normalize(text));
    free(text);
    return 0;
}
