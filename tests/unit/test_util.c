/* test_util.c - size parsing, string vectors, env merging. */
#include "check.h"
#include "base/util.h"

static void test_sizes(void)
{
    int64_t v;
    CHECK(hd_parse_size("64M", &v) == 0 && v == 64LL << 20);
    CHECK(hd_parse_size("1G", &v) == 0 && v == 1LL << 30);
    CHECK(hd_parse_size("512k", &v) == 0 && v == 512LL << 10);
    CHECK(hd_parse_size("1.5G", &v) == 0 && v == (3LL << 30) / 2);
    CHECK(hd_parse_size("100", &v) == 0 && v == 100);
    CHECK(hd_parse_size("64MiB", &v) == 0 && v == 64LL << 20);
    CHECK(hd_parse_size("64MB", &v) == 0 && v == 64LL << 20);
    CHECK(hd_parse_size("64Q", &v) < 0);
    CHECK(hd_parse_size("", &v) < 0);
    CHECK(hd_parse_size("-5M", &v) < 0);
    CHECK(hd_parse_size("M", &v) < 0);
    CHECK(hd_parse_size("1.5", &v) < 0);
    CHECK(hd_parse_size("64M ", &v) < 0);
    CHECK(hd_parse_size("99999999999T", &v) < 0);
}

static void test_env(void)
{
    char **env = NULL;
    hd_env_set(&env, "A=1");
    hd_env_set(&env, "B=2");
    hd_env_set(&env, "A=3");
    CHECK(hd_strv_len(env) == 2);
    CHECK_STR(env[0], "A=3");
    CHECK_STR(env[1], "B=2");
    hd_env_set(&env, "AB=4");
    CHECK(hd_strv_len(env) == 3);
    CHECK(hd_strv_contains(env, "AB=4"));
    hd_strv_free(env);
}

static void test_errors(void)
{
    hd_error_t err = NULL;
    CHECK(hd_error_set(&err, 2, "open %s", "x") == -1);
    hd_error_prefix(&err, "run %s", "filter");
    CHECK_STR(hd_error_text(err), "run filter: open x: No such file or directory");
    CHECK(hd_error_exit_code(err) == 125);
    /* the first error wins */
    hd_error_set(&err, 0, "second");
    CHECK_STR(err->message, "run filter: open x");
    hd_error_free(&err);
    CHECK(err == NULL);
    hd_error_set_code(&err, 127, 0, "not found");
    CHECK(hd_error_exit_code(err) == 127);
    hd_error_free(&err);
}

int main(void)
{
    test_sizes();
    test_env();
    test_errors();
    CHECK_DONE();
}
