/*
 * auth.c - username/password authentication against a password file.
 *
 * The file uses mosquitto's format, so files made by mosquitto_passwd work and
 * ours work with mosquitto:  USER:$7$ITERATIONS$SALT_BASE64$HASH_BASE64
 * where $7$ is PBKDF2-HMAC-SHA512 with a 12-byte random salt and a 64-byte
 * hash. We write 10,000 iterations by default (mosquitto writes 101): slow
 * enough to make offline guessing costly, fast enough (a few ms) not to turn a
 * reconnect storm into a CPU storm on a small edge box.
 *
 * Writing the file (hd_broker_passwd) is passwd.c, so the CLI links only that.
 *
 * Secure by default: anonymous clients are refused as soon as one user
 * exists, unless allow_anonymous is set explicitly.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "broker/internal.h"
#include "mqtt/openssl_lazy.h"
#include "base/util.h"

#define RUNTIME_ITERATIONS 1000 /* run-time users get random 128-bit secrets, not human passwords */

struct auth_user {
    char *name;
    int iterations;
    unsigned char salt[64];
    int salt_len;
    unsigned char hash[HASH_LEN];
    bool internal; /* hedged's own (hd_broker_set_internal_user): not a reason to refuse anonymous clients */
};

struct broker_auth {
    struct auth_user *users;
    size_t n_users;
};

static int b64_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    if (len == 0 || len % 4 || len / 4 * 3 > cap + 2)
        return -1;
    unsigned char tmp[256];
    if (len / 4 * 3 > sizeof(tmp))
        return -1;
    int n = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)len);
    if (n < 0)
        return -1;
    for (size_t i = len; i > 0 && in[i - 1] == '='; i--)
        n--;
    if ((size_t)n > cap)
        return -1;
    memcpy(out, tmp, (size_t)n);
    return n;
}

/* Parse "$7$iter$salt$hash"; returns 0 or -1. */
static int parse_hash(const char *text, struct auth_user *u)
{
    if (strncmp(text, "$7$", 3) != 0)
        return -1;
    char *end;
    long iter = strtol(text + 3, &end, 10);
    if (*end != '$' || iter < 1 || iter > 100000000)
        return -1;
    const char *salt = end + 1;
    const char *dollar = strchr(salt, '$');
    if (!dollar)
        return -1;
    u->iterations = (int)iter;
    u->salt_len = b64_decode(salt, (size_t)(dollar - salt), u->salt, sizeof(u->salt));
    if (u->salt_len <= 0)
        return -1;
    if (b64_decode(dollar + 1, strlen(dollar + 1), u->hash, HASH_LEN) != HASH_LEN)
        return -1;
    return 0;
}

int broker_auth_load(struct hd_broker *b, hd_error_t *err)
{
    b->auth = hd_xcalloc(1, sizeof(*b->auth));
    if (!b->cfg.password_file)
        return 0;
    if (hd_openssl_load(err) < 0)
        return hd_error_prefix(err, "password file");
    cleanup_free char *text = NULL;
    if (hd_read_file(b->cfg.password_file, &text, NULL, err) < 0)
        return hd_error_prefix(err, "password file");
    int lineno = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        line[strcspn(line, "\r")] = '\0';
        if (!line[0] || line[0] == '#')
            continue;
        char *colon = strchr(line, ':');
        struct auth_user u = {0};
        if (!colon || colon == line || parse_hash(colon + 1, &u) < 0)
            return hd_error_set(err, 0, "password file %s line %d: expected USER:$7$ITER$SALT$HASH",
                                b->cfg.password_file, lineno);
        *colon = '\0';
        u.name = hd_xstrdup(line);
        b->auth->users = hd_xrealloc(b->auth->users, (b->auth->n_users + 1) * sizeof(u));
        b->auth->users[b->auth->n_users++] = u;
    }
    return 0;
}

bool broker_auth_has_users(struct hd_broker *b)
{
    for (size_t i = 0; b->auth && i < b->auth->n_users; i++)
        if (!b->auth->users[i].internal)
            return true;
    return false;
}

int broker_auth_check(struct hd_broker *b, const struct mqtt_bytes *user, const struct mqtt_bytes *password,
                      bool has_user, bool has_password)
{
    bool has_users = broker_auth_has_users(b);
    bool anonymous_ok = b->cfg.allow_anonymous >= 0 ? b->cfg.allow_anonymous : !has_users;
    if (!has_user)
        return anonymous_ok ? 0 : RC_NOT_AUTHORIZED;
    /* A known name is always checked (an internal user's too, even while anonymous clients are welcome). */
    for (size_t i = 0; b->auth && i < b->auth->n_users; i++) {
        struct auth_user *u = &b->auth->users[i];
        if (strlen(u->name) != user->len || memcmp(u->name, user->data, user->len) != 0)
            continue;
        if (!has_password)
            return RC_BAD_USER_OR_PASSWORD;
        unsigned char hash[HASH_LEN];
        if (!PKCS5_PBKDF2_HMAC((const char *)password->data, (int)password->len, u->salt, u->salt_len, u->iterations,
                               EVP_sha512(), HASH_LEN, hash))
            return RC_BAD_USER_OR_PASSWORD;
        return CRYPTO_memcmp(hash, u->hash, HASH_LEN) == 0 ? 0 : RC_BAD_USER_OR_PASSWORD;
    }
    /* An unknown name: as anonymous while there are no users to check it against. */
    if (!has_users)
        return anonymous_ok ? 0 : RC_NOT_AUTHORIZED;
    return RC_BAD_USER_OR_PASSWORD;
}

bool hd_broker_anonymous_allowed(struct hd_broker *b)
{
    return b->cfg.allow_anonymous >= 0 ? b->cfg.allow_anonymous : !broker_auth_has_users(b);
}

static int auth_set_user(struct hd_broker *b, const char *user, const char *password, bool internal, hd_error_t *err)
{
    /* ':' is allowed here (unlike in a password file): hedged's "workload:<name>" users
     * thus never collide with a password file's users. */
    if (!user[0])
        return hd_error_set(err, 0, "broker user: must be non-empty");
    if (hd_openssl_load(err) < 0)
        return hd_error_prefix(err, "broker user %s", user);
    struct auth_user u = {
        .name = hd_xstrdup(user), .iterations = RUNTIME_ITERATIONS, .salt_len = SALT_LEN, .internal = internal};
    if (RAND_bytes(u.salt, SALT_LEN) != 1 ||
        !PKCS5_PBKDF2_HMAC(password, (int)strlen(password), u.salt, SALT_LEN, u.iterations, EVP_sha512(), HASH_LEN,
                           u.hash)) {
        free(u.name);
        return hd_error_set(err, 0, "broker user %s: cannot hash the password", user);
    }
    for (size_t i = 0; i < b->auth->n_users; i++) { /* replace the password, keep the rules */
        if (strcmp(b->auth->users[i].name, user) == 0) {
            free(b->auth->users[i].name);
            b->auth->users[i] = b->auth->users[--b->auth->n_users];
            break;
        }
    }
    b->auth->users = hd_xrealloc(b->auth->users, (b->auth->n_users + 1) * sizeof(u));
    b->auth->users[b->auth->n_users++] = u;
    return 0;
}

int hd_broker_set_user(struct hd_broker *b, const char *user, const char *password, hd_error_t *err)
{
    return auth_set_user(b, user, password, false, err);
}

int hd_broker_set_internal_user(struct hd_broker *b, const char *user, const char *password, hd_error_t *err)
{
    return auth_set_user(b, user, password, true, err);
}

void hd_broker_remove_user(struct hd_broker *b, const char *user)
{
    broker_acl_forget_user(b, user);
    for (size_t i = 0; i < b->auth->n_users; i++) {
        if (strcmp(b->auth->users[i].name, user) == 0) {
            free(b->auth->users[i].name);
            b->auth->users[i] = b->auth->users[--b->auth->n_users];
            return;
        }
    }
}

void broker_auth_free(struct hd_broker *b)
{
    if (!b->auth)
        return;
    for (size_t i = 0; i < b->auth->n_users; i++)
        free(b->auth->users[i].name);
    free(b->auth->users);
    free(b->auth);
    b->auth = NULL;
}
