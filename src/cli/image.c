/*
 * image.c - `hedge image import|pull|ls|rm`: the CLI face of the image store.
 *
 *   hedge image import FILE.tar [--name NAME:TAG]   docker-save or OCI-archive tarball
 *   hedge image pull REF [--platform OS/ARCH] [--insecure-registry HOST:PORT]... [--ca FILE] [-q]
 *                                                   from an OCI distribution registry
 *   hedge image ls [--json]                         one line per name
 *   hedge image rm NAME[:TAG]|ID                    untag; the image goes with its last name
 *   hedge image inspect NAME[:TAG]|ID               what `hedge run` would use (hd_image_lookup)
 *
 * The store lives in hd_state_dir() (HEDGE_STATE_DIR, or the global
 * --state-dir flag, which sets it).
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "image/image.h"
#include "base/util.h"

static const char usage[] =
    "hedge image import FILE.tar [--name NAME:TAG]\n"
    "       hedge image pull [HOST[:PORT]/]NAME[:TAG][@sha256:HEX] [--platform OS/ARCH[/VARIANT]]\n"
    "                        [--insecure-registry HOST[:PORT]]... [--ca FILE] [--authfile FILE] [-q|--quiet]\n"
    "       hedge image ls [--json]\n"
    "       hedge image rm NAME[:TAG]|ID\n"
    "       hedge image inspect NAME[:TAG]|ID";

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
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0)
        return cli_help(usage);
    return cli_usage_error("image", usage, "unknown subcommand '%s'", sub);
}
