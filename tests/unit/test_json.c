/* test_json.c - base/json's typed readers: every error names the field path. */
#include <jansson.h>

#include "check.h"
#include "base/json.h"
#include "base/util.h"

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (v == NULL)
        fprintf(stderr, "bad fixture %s: %s\n", text, jerr.text);
    return v;
}

/* Run one reader on text; return its error text ("" on success). */
#define TRY(text, call) \
    ({ \
        static char buf_[256]; \
        json_t *v = parse(text); \
        hd_error_t err = NULL; \
        buf_[0] = '\0'; \
        if ((call) < 0) \
            snprintf(buf_, sizeof(buf_), "%s", hd_error_text(err)); \
        hd_error_free(&err); \
        json_decref(v); \
        buf_; \
    })

static void test_readers(void)
{
    char *s = NULL;
    bool b = false;
    int64_t i = 0;
    double d = 0;
    char **strv = NULL;

    CHECK_STR(TRY("\"x\"", hd_json_string(v, "a.b", NULL, false, &s, &err)), "");
    CHECK_STR(s, "x");
    CHECK_STR(TRY("3", hd_json_string(v, "a.b", NULL, false, &s, &err)), "a.b: must be a string, not an integer");
    CHECK_STR(TRY("\"\"", hd_json_string(v, "name", NULL, true, &s, &err)), "name: must not be empty");
    CHECK_STR(TRY("\"\"", hd_json_string(v, "name", "a group name", true, &s, &err)), "name: must be a group name");
    CHECK_STR(s, "x"); /* untouched on failure */
    free(s);

    CHECK_STR(TRY("true", hd_json_bool(v, "f", NULL, &b, &err)), "");
    CHECK(b);
    CHECK_STR(TRY("\"yes\"", hd_json_bool(v, "f", NULL, &b, &err)), "f: must be a boolean, not a string");
    CHECK_STR(TRY("\"yes\"", hd_json_bool(v, "f", "true or false", &b, &err)), "f: must be true or false");

    CHECK_STR(TRY("7", hd_json_int(v, "n", 1, 10, NULL, &i, &err)), "");
    CHECK(i == 7);
    CHECK_STR(TRY("0", hd_json_int(v, "r.pids", 1, 10, NULL, &i, &err)), "r.pids: 0 is out of range (1..10)");
    CHECK_STR(TRY("1.5", hd_json_int(v, "n", 1, 10, NULL, &i, &err)), "n: must be an integer, not a number");
    CHECK_STR(TRY("70000", hd_json_int(v, "port", 1, 65535, "an integer in 1..65535", &i, &err)),
              "port: must be an integer in 1..65535");
    CHECK(i == 7);

    CHECK_STR(TRY("2.5", hd_json_number(v, "t", 0, 3, NULL, &d, &err)), "");
    CHECK(d == 2.5);
    CHECK_STR(TRY("4", hd_json_number(v, "t", 0, 3, NULL, &d, &err)), "t: 4 is out of range (0..3)");

    CHECK_STR(TRY("\"64M\"", hd_json_size(v, "resources.memory", 0, NULL, &i, &err)), "");
    CHECK(i == 64 << 20);
    CHECK_STR(TRY("4096", hd_json_size(v, "m", 0, NULL, &i, &err)), "");
    CHECK(i == 4096);
    CHECK_STR(TRY("\"64Q\"", hd_json_size(v, "resources.memory", 0, NULL, &i, &err)),
              "resources.memory: \"64Q\" is not a size (use K, M or G)");
    CHECK_STR(TRY("-1", hd_json_size(v, "m", 0, NULL, &i, &err)), "m: -1 is negative");
    CHECK_STR(TRY("\"1K\"", hd_json_size(v, "log", 4096, NULL, &i, &err)), "log: 1024 is less than 4096");
    CHECK_STR(TRY("true", hd_json_size(v, "m", 0, NULL, &i, &err)),
              "m: must be a size (\"64M\") or an integer of bytes, not a boolean");

    CHECK_STR(TRY("[\"a\",\"b\"]", hd_json_strv(v, "cmd", NULL, &strv, &err)), "");
    CHECK(strv && strv[0] && strcmp(strv[1], "b") == 0 && strv[2] == NULL);
    CHECK_STR(TRY("[\"a\",1]", hd_json_strv(v, "cmd", NULL, &strv, &err)), "cmd[1]: must be a string, not an integer");
    CHECK_STR(TRY("\"a\"", hd_json_strv(v, "cmd", NULL, &strv, &err)),
              "cmd: must be an array of strings, not a string");
    CHECK(strv && strv[0] && strcmp(strv[0], "a") == 0);
    hd_strv_free(strv);

    CHECK_STR(TRY("[]", hd_json_object(v, "uplink", NULL, &err)), "uplink: must be an object, not an array");
}

static void test_keys(void)
{
    static const char *const known[] = {"memory", "cpus", NULL};
    CHECK_STR(TRY("{\"memory\":1,\"cpus\":2}", hd_json_check_keys(v, "resources", known, &err)), "");
    CHECK_STR(TRY("{\"memory\":1,\"cpu\":2}", hd_json_check_keys(v, "resources", known, &err)),
              "resources.cpu: unknown field");
    CHECK_STR(TRY("{\"memroy\":1}", hd_json_check_keys(v, NULL, known, &err)), "memroy: unknown field");
    char *p = hd_json_path("a", "b");
    CHECK_STR(p, "a.b");
    free(p);
    p = hd_json_path("", "b");
    CHECK_STR(p, "b");
    free(p);
}

int main(void)
{
    test_readers();
    test_keys();
    CHECK_DONE();
}
