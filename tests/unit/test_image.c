/* test_image.c - image name normalization and the string set of the image store. */
#include <stdio.h>

#include "check.h"
#include "image/internal.h"
#include "image/registry.h"
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
    check_name("Busybox", NULL);  /* upper case repository */
    check_name("busybox:", NULL); /* empty tag */
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

static void check_digest_ref(const char *in, const char *want)
{
    char *got = image_digest_ref_normalize(in);
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

#define HEX64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void test_digest_refs(void)
{
    check_digest_ref("busybox@sha256:" HEX64, "busybox@sha256:" HEX64);
    check_digest_ref("docker.io/library/busybox@sha256:" HEX64, "busybox@sha256:" HEX64);
    check_digest_ref("127.0.0.1:5000/team/app@sha256:" HEX64, "127.0.0.1:5000/team/app@sha256:" HEX64);
    check_digest_ref("busybox:latest@sha256:" HEX64, NULL); /* a tag in front of the digest */
    check_digest_ref("__p:v1@sha256:" HEX64, NULL);         /* found by fuzz_registry: a short tagged name */
    check_digest_ref("busybox@sha256:0123", NULL);
    check_digest_ref("busybox@sha512:" HEX64, NULL);
    check_digest_ref("busybox@sha256:"
                     "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
                     NULL);
    check_digest_ref("busybox", NULL);
}

static void check_ref(const char *in, const char *host, const char *repository, const char *reference, const char *name,
                      const char *repo_name)
{
    struct registry_ref r;
    hd_error_t err = NULL;
    if (registry_ref_parse(in, &r, &err) < 0) {
        fprintf(stderr, "%s: %s\n", in, hd_error_text(err));
        hd_error_free(&err);
        check_failures++;
        return;
    }
    CHECK_STR(r.host, host);
    CHECK_STR(r.repository, repository);
    CHECK_STR(r.reference, reference);
    if (name)
        CHECK_STR(r.name, name);
    else
        CHECK(r.name == NULL);
    CHECK_STR(r.repo_name, repo_name);
    registry_ref_free(&r);
}

static void test_refs(void)
{
    check_ref("busybox", "registry-1.docker.io", "library/busybox", "latest", "busybox:latest", "busybox");
    check_ref("docker.io/team/app:v1", "registry-1.docker.io", "team/app", "v1", "team/app:v1", "team/app");
    check_ref("team/app", "registry-1.docker.io", "team/app", "latest", "team/app:latest", "team/app");
    check_ref("127.0.0.1:5000/busybox", "127.0.0.1:5000", "busybox", "latest", "127.0.0.1:5000/busybox:latest",
              "127.0.0.1:5000/busybox");
    check_ref("ghcr.io/org/tool:1.2@sha256:" HEX64, "ghcr.io", "org/tool", "sha256:" HEX64, "ghcr.io/org/tool:1.2",
              "ghcr.io/org/tool");
    check_ref("localhost/app@sha256:" HEX64, "localhost", "app", "sha256:" HEX64, NULL, "localhost/app");
    struct registry_ref r;
    hd_error_t err = NULL;
    CHECK(registry_ref_parse("Busybox", &r, &err) < 0);
    hd_error_free(&err);
    CHECK(registry_ref_parse("busybox@sha256:12", &r, &err) < 0);
    hd_error_free(&err);
}

static void check_param(const char *challenge, const char *key, const char *want)
{
    char *got = registry_challenge_param(challenge, key);
    if (want == NULL)
        CHECK(got == NULL);
    else
        CHECK_STR(got, want);
    free(got);
}

static void test_challenges(void)
{
    const char *bearer = "Bearer realm=\"https://auth.example/token\",service=\"registry.example\","
                         "scope=\"repository:team/app:pull,push\"";
    check_param(bearer, "realm", "https://auth.example/token");
    check_param(bearer, "service", "registry.example");
    check_param(bearer, "scope", "repository:team/app:pull,push"); /* a comma inside quotes */
    check_param(bearer, "error", NULL);
    check_param("Basic realm=\"Registry Realm\"", "realm", "Registry Realm");
    check_param("Bearer realm=https://a/token, service=x", "service", "x"); /* unquoted, spaces */
    check_param("Bearer realm=\"unterminated", "realm", NULL);
    check_param("Basic", "realm", NULL);
}

int main(void)
{
    test_names();
    test_digest_refs();
    test_refs();
    test_challenges();
    test_string_set();
    CHECK_DONE();
}
