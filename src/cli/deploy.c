/*
 * deploy.c - `hedge deploy FILE`: create or upgrade a workload on hedged.
 *
 * The spec is sent as it is (POST /v1/workloads?origin=FILE), so hedged's
 * messages name the file exactly as `hedge run -f FILE` would. A first
 * deploy answers once the workload started; an upgrade once the new version
 * was healthy for --health-wait seconds (or failed, keeping the old one).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/bundle.h"
#include "cli/cli.h"
#include "cli/client.h"
#include "base/util.h"

static const char usage[] = "hedge deploy [--json] [--health-wait SECONDS] FILE|-\n"
                            "       hedge deploy [--json] --bundle BUNDLE.tar   (from `hedge move`)";

/* Extract a bundle's volumes under hedged's state dir; the spec (with new mount sources) to *data. */
static int deploy_unbundle(const char *bundle, char **data, size_t *len, char ***volumes, int *code)
{
    json_t *info = hd_client_call("deploy", "GET", "/v1/info", NULL, 0, code);
    if (info == NULL)
        return -1;
    cleanup_free char *base = hd_xasprintf("%s/volumes", json_string_value(json_object_get(info, "state_dir")));
    json_decref(info);
    json_t *spec = NULL;
    hd_error_t err = NULL;
    if (hd_bundle_read(bundle, base, &spec, volumes, &err) < 0) {
        *code = cli_fail(&err);
        return -1;
    }
    *data = json_dumps(spec, JSON_COMPACT);
    *len = strlen(*data);
    json_decref(spec);
    return 0;
}

int cmd_deploy(int argc, char **argv)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"health-wait", required_argument, NULL, 'w'},
        {"bundle", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool json = false;
    const char *health = NULL, *bundle = NULL;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "+", options, NULL)) != -1) {
        switch (opt) {
        case 'j': json = true; break;
        case 'w': health = optarg; break;
        case 'b': bundle = optarg; break;
        case 'h': return cli_help(usage);
        default: return cli_usage_error("deploy", usage, "unknown option");
        }
    }
    if (optind != argc - (bundle ? 0 : 1))
        return cli_usage_error("deploy", usage, bundle ? "--bundle replaces the spec file" : "give one spec file");
    const char *file = bundle ? bundle : argv[optind];
    cleanup_free char *data = NULL;
    size_t len = 0;
    hd_error_t err = NULL;
    char **volumes = NULL;
    if (bundle) {
        int code = 0;
        if (deploy_unbundle(bundle, &data, &len, &volumes, &code) < 0)
            return code;
    } else if (strcmp(file, "-") == 0) {
        FILE *mem = open_memstream(&data, &len);
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), stdin)) > 0)
            fwrite(buf, 1, n, mem);
        fclose(mem);
    } else if (hd_read_file(file, &data, &len, &err) < 0) {
        hd_error_prefix(&err, "spec");
        return cli_fail(&err);
    }
    cleanup_free char *origin = hd_client_escape(strcmp(file, "-") == 0 ? "stdin" : file);
    cleanup_free char *wait = health ? hd_client_escape(health) : NULL;
    cleanup_free char *path =
        hd_xasprintf("/v1/workloads?origin=%s%s%s", origin, wait ? "&health_wait=" : "", wait ? wait : "");
    int code = 0;
    json_t *o = hd_client_call("deploy", "POST", path, data, len, &code);
    if (o == NULL) {
        hd_bundle_remove_volumes(volumes); /* made for this deploy only */
        return code;
    }
    hd_strv_free(volumes);
    if (json) {
        json_dumpf(o, stdout, JSON_INDENT(2));
        putchar('\n');
    } else {
        const char *name = json_string_value(json_object_get(o, "name"));
        const char *status = json_string_value(json_object_get(o, "status"));
        int version = (int)json_integer_value(json_object_get(o, "version"));
        if (status && strcmp(status, "upgraded") == 0)
            printf("%s: version %d (upgraded from version %d)\n", name, version,
                   (int)json_integer_value(json_object_get(o, "previous")));
        else
            printf("%s: version %d (%s)\n", name, version, status ? status : "?");
    }
    json_decref(o);
    return 0;
}
