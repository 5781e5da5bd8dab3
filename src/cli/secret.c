/*
 * secret.c - `hedge secret set|ls|rm`: the node's secret store (src/secret,
 * docs/security.md "Secrets").
 *
 *   hedge secret set NAME [-f FILE] [--key PATH]   value from FILE or stdin, byte for byte
 *   hedge secret ls [--json]                        names and versions, never values
 *   hedge secret rm NAME...
 *
 * The value is read from a file or stdin, never from the command line, so it
 * stays out of `ps` and shell history. After a set, hedged (when it runs) is
 * told through its API (POST /v1/secrets/NAME) and rewrites the files of the
 * running workloads that use the secret, or restarts them; the request carries
 * the name only.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/util.h"
#include "cli/cli.h"
#include "cli/client.h"
#include "image/image.h"
#include "secret/secret.h"

static const char usage[] = "hedge secret set NAME [-f FILE] [--key PATH] | ls [--json] | rm NAME...";

/* Read the whole value from fd, at most HD_SECRET_MAX_VALUE bytes. */
static int read_value(int fd, const char *what, char **out, size_t *len, hd_error_t *err)
{
    size_t cap = 4096, n = 0;
    char *buf = hd_xmalloc(cap);
    for (;;) {
        if (n == cap) {
            if (cap > HD_SECRET_MAX_VALUE) {
                hd_secret_value_free(buf, cap);
                return hd_error_set(err, 0, "%s: more than %d bytes, the limit of a secret", what, HD_SECRET_MAX_VALUE);
            }
            /* grow by copying, so no stale copy of the value is left in freed memory */
            char *bigger = hd_xmalloc(cap * 2);
            memcpy(bigger, buf, n);
            hd_secret_value_free(buf, cap);
            buf = bigger;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            hd_secret_value_free(buf, cap);
            return hd_error_set(err, e, "read %s", what);
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n > HD_SECRET_MAX_VALUE) {
        hd_secret_value_free(buf, cap);
        return hd_error_set(err, 0, "%s: more than %d bytes, the limit of a secret", what, HD_SECRET_MAX_VALUE);
    }
    *out = buf;
    *len = n;
    return 0;
}

/* Tell hedged that name changed; quiet when hedged does not run. 0, or the exit code of its refusal. */
static int notify_hedged(const char *name)
{
    cleanup_free char *escaped = hd_client_escape(name);
    cleanup_free char *path = hd_xasprintf("/v1/secrets/%s", escaped);
    struct hd_client_response resp = {0};
    hd_error_t err = NULL;
    if (hd_client_request("POST", path, "", 0, &resp, &err) < 0) {
        int e = err->errnum;
        if (e == ENOENT || e == ECONNREFUSED) {
            hd_error_free(&err);
            return 0; /* no hedged: no running workload to update */
        }
        return cli_fail(&err);
    }
    int code = resp.status >= 300 ? hd_client_fail("secret set", &resp) : 0;
    hd_client_response_free(&resp);
    return code;
}

static int secret_set(int argc, char **argv)
{
    static const struct option options[] = {
        {"file", required_argument, NULL, 'f'},
        {"key", required_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *file = NULL, *key = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "f:h", options, NULL)) != -1) {
        switch (c) {
        case 'f': file = optarg; break;
        case 'k': key = optarg; break;
        case 'h': return cli_help(usage);
        default: return cli_usage_error("secret set", usage, "bad option");
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error("secret set", usage, "name one secret");
    const char *name = argv[optind];
    hd_error_t err = NULL;
    if (!hd_secret_name_valid(name)) {
        hd_error_set(&err, 0,
                     "secret set: name: \"%s\" is not a valid secret name (1-63 letters, digits, '-', '_', '.', "
                     "starting with a letter or digit)",
                     name);
        return cli_fail(&err);
    }
    cleanup_close int fd = -1;
    if (file) {
        fd = open(file, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            hd_error_sys(&err, "secret set: -f %s", file);
            return cli_fail(&err);
        }
    }
    char *value = NULL;
    size_t len = 0;
    if (read_value(file ? fd : STDIN_FILENO, file ? file : "stdin", &value, &len, &err) < 0)
        return cli_fail(&err);
    uint64_t version = 0;
    int r = hd_secret_set(hd_state_dir(), key, name, value, len, &version, &err);
    hd_secret_value_free(value, len);
    if (r < 0)
        return cli_fail(&err);
    printf("%s: version %llu\n", name, (unsigned long long)version);
    fflush(stdout);
    return notify_hedged(name);
}

static int secret_ls(int argc, char **argv)
{
    bool json = false;
    int first;
    int r = cli_options(argc, argv, "secret ls", usage, &json, &first);
    if (r >= 0)
        return r;
    if (first != argc)
        return cli_usage_error("secret ls", usage, "ls takes no operands");
    struct hd_secret_info *list = NULL;
    size_t n = 0;
    hd_error_t err = NULL;
    if (hd_secret_list(hd_state_dir(), &list, &n, &err) < 0)
        return cli_fail(&err);
    if (json) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a,
                                  json_pack("{s:s,s:I,s:I}", "name", list[i].name, "version",
                                            (json_int_t)list[i].version, "updated", (json_int_t)list[i].updated));
        char *s = json_dumps(a, JSON_INDENT(2));
        printf("%s\n", s);
        free(s);
        json_decref(a);
    } else {
        printf("%-32s %-8s %s\n", "NAME", "VERSION", "UPDATED");
        for (size_t i = 0; i < n; i++) {
            char when[32];
            time_t t = (time_t)list[i].updated;
            strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", gmtime(&t));
            printf("%-32s %-8llu %s\n", list[i].name, (unsigned long long)list[i].version, when);
        }
    }
    free(list);
    return 0;
}

static int secret_rm(int argc, char **argv)
{
    bool json = false;
    int first;
    int r = cli_options(argc, argv, "secret rm", usage, &json, &first);
    if (r >= 0)
        return r;
    if (first == argc)
        return cli_usage_error("secret rm", usage, "name at least one secret");
    int code = 0;
    for (int i = first; i < argc; i++) {
        hd_error_t err = NULL;
        if (hd_secret_remove(hd_state_dir(), argv[i], &err) < 0)
            code = cli_fail(&err);
        else
            printf("%s: removed\n", argv[i]);
    }
    return code;
}

int cmd_secret(int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error("secret", usage, "name a subcommand (set, ls, rm)");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
        return cli_help(usage);
    if (strcmp(argv[1], "set") == 0)
        return secret_set(argc - 1, argv + 1);
    if (strcmp(argv[1], "ls") == 0)
        return secret_ls(argc - 1, argv + 1);
    if (strcmp(argv[1], "rm") == 0)
        return secret_rm(argc - 1, argv + 1);
    return cli_usage_error("secret", usage, "unknown subcommand '%s'", argv[1]);
}
