/* test_image.c - image name normalization and the string set of the image store. */
#include <stdio.h>

#include "check.h"
#include "image/internal.h"
#include "base/util.h"

static void check_name(const char *in, const char *want)
{
    char *got = image_name_normalize(in);
    if (want == NULL) {
        if (got != NULL) {
            fprintf(stderr, "\"%s\" should be refused, got \"%s\"\n", in, got);
            check_failures++;
        }
    } else {
        CHECK_STR(got, want);
    }
    free(got);
}

static void test_names(void)
{
    check_name("busybox", "busybox:latest");
    check_name("busybox:1.36", "busybox:1.36");
    check_name("docker.io/library/busybox:1.36", "busybox:1.36");
    check_name("docker.io/team/app", "team/app:latest");
    check_name("index.docker.io/library/alpine:3", "alpine:3");
    check_name("registry.local:5000/team/app", "registry.local:5000/team/app:latest");
    check_name("registry.local:5000/team/app:v2.1_rc-1", "registry.local:5000/team/app:v2.1_rc-1");
    check_name("Busybox", NULL);      /* upper case repository */
    check_name("busybox:", NULL);     /* empty tag */
    check_name("busybox:-x", NULL);
    check_name("busy box", NULL);
    check_name("busybox@sha256:0123", NULL);
    check_name("/busybox", NULL);
    check_name("", NULL);
}

static void test_string_set(void)
{
    struct image_string_set set = {0};
    CHECK(!image_string_set_has(&set, "a"));
    char key[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "path/%d", i);
        CHECK(image_string_set_add(&set, key));
    }
    CHECK(!image_string_set_add(&set, "path/7"));
    CHECK(set.len == 1000);
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "path/%d", i);
        CHECK(image_string_set_has(&set, key));
    }
    CHECK(!image_string_set_has(&set, "path/1000"));
    image_string_set_clear(&set);
    CHECK(set.len == 0 && !image_string_set_has(&set, "path/1"));
}

int main(void)
{
    test_names();
    test_string_set();
    CHECK_DONE();
}
