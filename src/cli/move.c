/*
 * move.c - `hedge move NAME --out BUNDLE.tar`: workload motion. Stops the
 * workload (so that its volume data is at rest), then writes its active spec
 * and the data of its writable mounts to a bundle that
 * `hedge deploy --bundle BUNDLE.tar` starts on another node. The workload
 * stays deployed (stopped) here until `hedge rm NAME`.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/bundle.h"
#include "cli/cli.h"
#include "cli/client.h"
#include "base/util.h"

static const char usage[] = "hedge move NAME --out BUNDLE.tar";

int cmd_move(int argc, char **argv)
{
    static const struct option options[] = {
        {"out", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *out = NULL;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "o:", options, NULL)) != -1) {
        switch (opt) {
        case 'o': out = optarg; break;
        case 'h': return cli_help(usage);
        default: return cli_usage_error("move", usage, "unknown option");
        }
    }
    if (optind != argc - 1 || out == NULL)
        return cli_usage_error("move", usage, "name one workload and --out");
    const char *name = argv[optind];
    cleanup_free char *escaped = hd_client_escape(name);
    cleanup_free char *path = hd_xasprintf("/v1/workloads/%s", escaped);
    cleanup_free char *stop = hd_xasprintf("/v1/workloads/%s/stop", escaped);
    int code = 0;
    json_t *info = hd_client_call("move", "GET", path, NULL, 0, &code);
    if (info == NULL)
        return code;
    json_t *stopped = hd_client_call("move", "POST", stop, NULL, 0, &code);
    if (stopped == NULL) {
        json_decref(info);
        return code;
    }
    json_decref(stopped);
    hd_error_t err = NULL;
    json_t *spec = json_object_get(info, "spec");
    int r = hd_bundle_write(out, spec, &err);
    if (r == 0) {
        size_t volumes = 0, i;
        json_t *m;
        json_array_foreach(json_object_get(spec, "mounts"), i, m) volumes +=
            !json_is_true(json_object_get(m, "readonly"));
        printf("%s: stopped; version %lld and %zu volume%s written to %s\n"
               "start it elsewhere with `hedge deploy --bundle %s`, then `hedge rm %s` here\n",
               name, (long long)json_integer_value(json_object_get(info, "version")), volumes, volumes == 1 ? "" : "s",
               out, out, name);
    }
    json_decref(info);
    return r < 0 ? cli_fail(&err) : 0;
}
