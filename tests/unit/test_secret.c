/* test_secret.c - the secret store: AES-256-GCM round trips, versions, the name and header bound by the tag,
 * the node key made 0400, listing and removal; the spec's secrets field through JSON and back. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "base/util.h"
#include "secret/secret.h"
#include "spec/spec.h"

static char *file_of(const char *dir, const char *name)
{
    return hd_xasprintf("%s/secrets/%s", dir, name);
}

static void test_store(const char *dir)
{
    hd_error_t err = NULL;
    uint64_t version = 0;
    const char binary[] = {'a', 0, 'b', '\n', (char)0xff};
    CHECK(hd_secret_set(dir, NULL, "db", binary, sizeof(binary), &version, &err) == 0 && version == 1);
    CHECK(err == NULL);
    char *value = NULL;
    size_t len = 0;
    CHECK(hd_secret_get(dir, NULL, "db", &value, &len, &version, &err) == 0);
    CHECK(len == sizeof(binary) && value && memcmp(value, binary, len) == 0 && version == 1);
    hd_secret_value_free(value, len);
    CHECK(hd_secret_set(dir, NULL, "db", "", 0, &version, &err) == 0 && version == 2);
    CHECK(hd_secret_get(dir, NULL, "db", &value, &len, &version, &err) == 0 && len == 0 && version == 2);
    hd_secret_value_free(value, len);
    CHECK(hd_secret_version(dir, "db", &version, &err) == 0 && version == 2);

    /* the key: 32 bytes, 0400 */
    char *key = hd_xasprintf("%s/secret.key", dir);
    struct stat st;
    CHECK(stat(key, &st) == 0 && (st.st_mode & 07777) == 0400 && st.st_size == HD_SECRET_KEY_LEN);
    free(key);

    /* a sealed file copied to another name does not open: the name is authenticated */
    char *a = file_of(dir, "db"), *b = file_of(dir, "copy");
    char *data = NULL;
    size_t n = 0;
    CHECK(hd_read_file(a, &data, &n, &err) == 0);
    CHECK(hd_write_file(b, data, n, &err) == 0);
    CHECK(hd_secret_get(dir, NULL, "copy", &value, &len, NULL, &err) < 0);
    CHECK(err && strstr(err->message, "cannot decrypt"));
    hd_error_free(&err);
    /* nor one whose clear version number was changed */
    data[15] ^= 1;
    CHECK(hd_write_file(b, data, n, &err) == 0);
    CHECK(hd_secret_get(dir, NULL, "copy", &value, &len, NULL, &err) < 0);
    hd_error_free(&err);
    free(data);
    free(a);
    free(b);

    /* limits and names */
    char *big = hd_xmalloc(HD_SECRET_MAX_VALUE + 1);
    memset(big, 'x', HD_SECRET_MAX_VALUE + 1);
    CHECK(hd_secret_set(dir, NULL, "big", big, HD_SECRET_MAX_VALUE + 1, NULL, &err) < 0);
    hd_error_free(&err);
    free(big);
    CHECK(hd_secret_set(dir, NULL, "../x", "v", 1, NULL, &err) < 0);
    CHECK(err && strstr(err->message, "name: \"../x\""));
    hd_error_free(&err);
    CHECK(hd_secret_name_valid("api.token_2-b"));
    CHECK(!hd_secret_name_valid(".hidden") && !hd_secret_name_valid("") && !hd_secret_name_valid("a b"));
    CHECK(hd_secret_get(dir, NULL, "missing", &value, &len, NULL, &err) < 0);
    CHECK(err && strstr(err->message, "no such secret"));
    hd_error_free(&err);

    /* list: sorted, valid names only (the lock file and temporaries are not secrets) */
    CHECK(hd_secret_set(dir, NULL, "alpha", "1", 1, NULL, &err) == 0);
    struct hd_secret_info *list = NULL;
    CHECK(hd_secret_list(dir, &list, &n, &err) == 0);
    CHECK(n == 3 && strcmp(list[0].name, "alpha") == 0 && strcmp(list[1].name, "copy") == 0 &&
          strcmp(list[2].name, "db") == 0 && list[2].version == 2);
    free(list);
    CHECK(hd_secret_remove(dir, "copy", &err) == 0);
    CHECK(hd_secret_remove(dir, "copy", &err) < 0);
    hd_error_free(&err);
}

static void test_spec_field(void)
{
    const char *json = "{\"name\":\"w\",\"isolation\":\"process\",\"command\":[\"true\"],\"secret_update\":\"restart\","
                       "\"secrets\":[{\"name\":\"db\",\"mode\":\"0440\",\"uid\":5,\"env\":\"DB\"},"
                       "{\"name\":\"c\",\"target\":\"/etc/app/c\",\"gid\":0,\"version\":7}]}";
    hd_error_t err = NULL;
    struct hd_spec *spec = hd_spec_new();
    CHECK(hd_spec_parse_json(spec, json, strlen(json), "t", &err) == 0 && hd_spec_validate(spec, &err) == 0);
    CHECK(spec->n_secrets == 2 && spec->secret_update == HD_SECRET_UPDATE_RESTART);
    CHECK_STR(spec->secrets[0].target, "/run/secrets/db");
    CHECK(spec->secrets[0].mode == 0440 && spec->secrets[0].uid_set && spec->secrets[0].uid == 5);
    CHECK(!spec->secrets[0].gid_set && spec->secrets[1].gid_set && spec->secrets[1].version == 7);
    char *out = hd_spec_to_json(spec);
    CHECK(strstr(out,
                 "\"secrets\":[{\"env\":\"DB\",\"mode\":\"0440\",\"name\":\"db\",\"target\":\"/run/secrets/db\","
                 "\"uid\":5},{\"gid\":0,\"mode\":\"0400\",\"name\":\"c\",\"target\":\"/etc/app/c\","
                 "\"version\":7}]") != NULL);
    struct hd_spec *again = hd_spec_new();
    CHECK(hd_spec_parse_json(again, out, strlen(out), "again", &err) == 0);
    char *out2 = hd_spec_to_json(again);
    CHECK_STR(out, out2);
    free(out);
    free(out2);
    hd_spec_free(again);
    hd_spec_free(spec);
    CHECK(err == NULL);
}

int main(void)
{
    char dir[] = "/tmp/hedge-test-secret-XXXXXX";
    if (mkdtemp(dir) == NULL)
        return 1;
    unsetenv("HEDGE_SECRET_KEY");
    test_store(dir);
    test_spec_field();
    hd_error_t err = NULL;
    hd_rm_rf(dir, &err);
    hd_error_free(&err);
    CHECK_DONE();
}
