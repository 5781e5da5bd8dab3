/*
 * image.c - `hedge image import|pull|ls|rm`: the CLI face of the image store.
 *
 *   hedge image import FILE.tar [--name NAME:TAG]   docker-save or OCI-archive tarball
 *   hedge image pull REF [--platform OS/ARCH] [--insecure-registry HOST:PORT]... [--ca FILE] [-q]
 *                                                   from an OCI distribution registry
 *   hedge image ls [--json]                         one line per name
 *   hedge image rm NAME[:TAG]|ID                    untag; the image goes with its last name
 *   hedge image inspect NAME[:TAG]|ID               what `hedge run` would use (hd_image_lookup)
 *   hedge image prune [-a|--all]                    remove images nothing uses (hd_image_prune)
 *
 * The store lives in hd_state_dir() (HEDGE_STATE_DIR, or the global
 * --state-dir flag, which sets it).
 */
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "image/image.h"
#include "base/util.h"

static const char usage[] =
    "hedge image import FILE.tar [--name NAME:TAG]\n"
    "       hedge image pull [HOST[:PORT]/]NAME[:TAG][@sha256:HEX] [--platform OS/ARCH[/VARIANT]]\n"
    "                        [--insecure-registry HOST[:PORT]]... [--ca FILE] [--authfile FILE] [-q|--quiet]\n"
    "       hedge image ls [--json]\n"
    "       hedge image rm NAME[:TAG]|ID\n"
    "       hedge image inspect NAME[:TAG]|ID\n"
    "       hedge image prune [-a|--all]";

static int image_import(int argc, char **argv)
{
    static const struct option options[] = {
        {"name", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *name = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "n:h", options, NULL)) != -1) {
        switch (c) {
        case 'n': name = optarg; break;
        case 'h': return cli_help(usage);
        default: return cli_usage_error("image import", usage, "bad option");
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error("image import", usage, "give exactly one tarball");
    hd_error_t err = NULL;
    struct hd_image_config *image = NULL;
    if (hd_image_import(hd_state_dir(), argv[optind], name, &image, &err) < 0)
        return cli_fail(&err);
    printf("Loaded image: %s %s\n", image->name, image->id);
    hd_image_config_free(image);
    return 0;
}

static int image_pull(int argc, char **argv)
{
    static const struct option options[] = {
        {"platform", required_argument, NULL, 'p'},
        {"insecure-registry", required_argument, NULL, 'k'},
        {"ca", required_argument, NULL, 'c'},
        {"authfile", required_argument, NULL, 'a'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct hd_image_pull_options opts = {.progress = stdout};
    cleanup_strv char **insecure = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "p:c:qh", options, NULL)) != -1) {
        switch (c) {
        case 'p': opts.platform = optarg; break;
        case 'k': hd_strv_push(&insecure, optarg); break;
        case 'c': opts.ca_file = optarg; break;
        case 'a': opts.auth_file = optarg; break;
        case 'q': opts.progress = NULL; break;
        case 'h': return cli_help(usage);
        default: return cli_usage_error("image pull", usage, "bad option");
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error("image pull", usage, "give exactly one image reference");
    opts.insecure = insecure;
    hd_error_t err = NULL;
    struct hd_image_config *image = NULL;
    cleanup_free char *digest = NULL;
    if (hd_image_pull(hd_state_dir(), argv[optind], &opts, &image, &digest, &err) < 0)
        return cli_fail(&err);
    printf("Digest: %s\nPulled image: %s %s\n", digest, image->name, image->id);
    hd_image_config_free(image);
    return 0;
}

/* docker's human sizes: decimal units. */
static void format_size(int64_t bytes, char *buf, size_t len)
{
    static const char *const units[] = {"B", "kB", "MB", "GB", "TB"};
    double v = (double)bytes;
    size_t u = 0;
    while (v >= 1000 && u + 1 < ARRAY_SIZE(units)) {
        v /= 1000;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%lldB", (long long)bytes);
    else
        snprintf(buf, len, "%.3g%s", v, units[u]);
}

static json_t *strv_json(char *const *v)
{
    if (v == NULL)
        return json_null();
    json_t *arr = json_array();
    for (size_t i = 0; v[i]; i++)
        json_array_append_new(arr, json_string(v[i]));
    return arr;
}

static json_t *string_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *image_json(const struct hd_image_config *c)
{
    json_t *o = json_object();
    json_object_set_new(o, "name", string_or_null(c->name));
    json_object_set_new(o, "id", json_string(c->id));
    json_object_set_new(o, "size", json_integer(c->size));
    json_object_set_new(o, "created", json_integer(c->created));
    json_object_set_new(o, "rootfs", json_string(c->rootfs));
    json_object_set_new(o, "cmd", strv_json(c->cmd));
    json_object_set_new(o, "entrypoint", strv_json(c->entrypoint));
    json_object_set_new(o, "env", strv_json(c->env));
    json_object_set_new(o, "workdir", string_or_null(c->workdir));
    json_object_set_new(o, "user", string_or_null(c->user));
    return o;
}

static void print_json(json_t *doc)
{
    char *text = json_dumps(doc, JSON_INDENT(2));
    printf("%s\n", text);
    free(text);
    json_decref(doc);
}

static int image_inspect(int argc, char **argv)
{
    if (argc != 2)
        return cli_usage_error("image inspect", usage, "name one image");
    hd_error_t err = NULL;
    struct hd_image_config *image = NULL;
    if (hd_image_lookup(hd_state_dir(), argv[1], &image, &err) < 0)
        return cli_fail(&err);
    print_json(image_json(image));
    hd_image_config_free(image);
    return 0;
}

static int image_ls(int argc, char **argv)
{
    bool as_json;
    int first, done = cli_options(argc, argv, "image ls", usage, &as_json, &first);
    if (done >= 0)
        return done;
    if (first < argc)
        return cli_usage_error("image ls", usage, "unexpected argument %s", argv[first]);
    hd_error_t err = NULL;
    struct hd_image_config **list = NULL;
    if (hd_image_list(hd_state_dir(), &list, &err) < 0)
        return cli_fail(&err);
    if (as_json) {
        json_t *arr = json_array();
        for (size_t i = 0; list[i]; i++)
            json_array_append_new(arr, image_json(list[i]));
        print_json(arr);
    } else {
        printf("%-32s %-12s %-10s %s\n", "NAME:TAG", "ID", "SIZE", "CREATED");
        for (size_t i = 0; list[i]; i++) {
            struct hd_image_config *c = list[i];
            char size[32], created[32];
            format_size(c->size, size, sizeof(size));
            time_t t = (time_t)c->created;
            struct tm tm;
            strftime(created, sizeof(created), "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
            const char *hex = strncmp(c->id, "sha256:", 7) == 0 ? c->id + 7 : c->id;
            printf("%-32s %-12.12s %-10s %s\n", c->name, hex, size, created);
        }
    }
    hd_image_list_free(list);
    return 0;
}

static int image_rm(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--help") == 0)
        return cli_help(usage);
    if (argc < 2)
        return cli_usage_error("image rm", usage, "name an image");
    int status = 0;
    for (int i = 1; i < argc; i++) {
        hd_error_t err = NULL;
        cleanup_strv char **untagged = NULL;
        cleanup_free char *deleted = NULL;
        if (hd_image_remove(hd_state_dir(), argv[i], &untagged, &deleted, &err) < 0) {
            status = cli_fail(&err);
            continue;
        }
        for (size_t n = 0; untagged && untagged[n]; n++)
            printf("Untagged: %s\n", untagged[n]);
        if (deleted)
            printf("Deleted: %s\n", deleted);
    }
    return status;
}

/*
 * The images hedged's deployments record (every version: a rollback needs its
 * image too), asked of the hedged whose state dir this is. No hedged.db: no
 * deployments. A hedged.db but no answer: refuse, rather than guess.
 */
static int prune_keep(char ***keep, hd_error_t *err)
{
    const char *state = hd_state_dir();
    cleanup_free char *db = hd_xasprintf("%s/hedged.db", state);
    if (access(db, F_OK) < 0)
        return 0;
    struct hd_client_response resp = {0};
    if (hd_client_request("GET", "/v1/images/in-use", NULL, 0, &resp, err) < 0)
        return hd_error_prefix(err,
                               "%s holds deployments, but hedged does not answer (start it: prune must keep "
                               "their images)",
                               db);
    int ret = -1;
    json_t *doc = resp.status == 200 ? hd_client_json(&resp, err) : NULL;
    const char *their_state = json_string_value(json_object_get(doc, "state_dir"));
    char a[PATH_MAX], b[PATH_MAX];
    if (resp.status != 200)
        hd_error_set(err, 0, "hedged at %s: GET /v1/images/in-use: status %d", hd_client_socket(), resp.status);
    else if (doc == NULL)
        ;
    else if (their_state == NULL || realpath(their_state, a) == NULL || realpath(state, b) == NULL || strcmp(a, b) != 0)
        hd_error_set(err, 0, "the hedged at %s keeps its state in %s, not %s (give --socket)", hd_client_socket(),
                     their_state ? their_state : "?", state);
    else {
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(doc, "images"), i, v) if (json_is_string(v))
            hd_strv_push(keep, json_string_value(v));
        ret = 0;
    }
    json_decref(doc);
    hd_client_response_free(&resp);
    return ret;
}

static int image_prune(int argc, char **argv)
{
    static const struct option options[] = {
        {"all", no_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool all = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "ah", options, NULL)) != -1) {
        switch (c) {
        case 'a': all = true; break;
        case 'h': return cli_help(usage);
        default: return cli_usage_error("image prune", usage, "bad option");
        }
    }
    if (optind != argc)
        return cli_usage_error("image prune", usage, "takes no arguments");
    hd_error_t err = NULL;
    cleanup_strv char **keep = NULL;
    if (prune_keep(&keep, &err) < 0)
        return cli_fail(&err);
    struct hd_image_prune_result res;
    if (hd_image_prune(hd_state_dir(), keep, all, &res, &err) < 0)
        return cli_fail(&err);
    for (size_t i = 0; res.untagged && res.untagged[i]; i++)
        printf("Untagged: %s\n", res.untagged[i]);
    for (size_t i = 0; res.deleted && res.deleted[i]; i++)
        printf("Deleted: %s\n", res.deleted[i]);
    char size[32];
    format_size(res.bytes, size, sizeof(size));
    printf("Total reclaimed space: %s (%lld images, %lld blobs, %lld partial downloads)\n", size,
           (long long)hd_strv_len(res.deleted), (long long)res.blobs, (long long)res.partial);
    hd_image_prune_result_free(&res);
    return 0;
}

int cmd_image(int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error("image", usage, "missing subcommand");
    const char *sub = argv[1];
    if (strcmp(sub, "import") == 0 || strcmp(sub, "load") == 0)
        return image_import(argc - 1, argv + 1);
    if (strcmp(sub, "pull") == 0)
        return image_pull(argc - 1, argv + 1);
    if (strcmp(sub, "ls") == 0 || strcmp(sub, "list") == 0)
        return image_ls(argc - 1, argv + 1);
    if (strcmp(sub, "rm") == 0 || strcmp(sub, "remove") == 0)
        return image_rm(argc - 1, argv + 1);
    if (strcmp(sub, "inspect") == 0)
        return image_inspect(argc - 1, argv + 1);
    if (strcmp(sub, "prune") == 0)
        return image_prune(argc - 1, argv + 1);
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0)
        return cli_help(usage);
    return cli_usage_error("image", usage, "unknown subcommand '%s'", sub);
}
