/*
 * history.c - `hedge history NAME`: every version hedged recorded for a
 * workload, with its time, spec digest, status (active, superseded, failed,
 * pending) and the reason a version failed or the note of a rollback.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "base/util.h"

static const char usage[] = "hedge history [--json] NAME";

int cmd_history(int argc, char **argv)
{
    bool json;
    int i, done = cli_options(argc, argv, "history", usage, &json, &i);
    if (done >= 0)
        return done;
    if (i != argc - 1)
        return cli_usage_error("history", usage, "name one workload");
    cleanup_free char *name = hd_client_escape(argv[i]);
    cleanup_free char *path = hd_xasprintf("/v1/workloads/%s/history", name);
    int code = 0;
    json_t *o = hd_client_call("history", "GET", path, NULL, 0, &code);
    if (o == NULL)
        return code;
    if (json) {
        json_dumpf(o, stdout, JSON_INDENT(2));
        putchar('\n');
        json_decref(o);
        return 0;
    }
    printf("%-8s %-20s %-11s %-19s %s\n", "VERSION", "CREATED (UTC)", "STATUS", "DIGEST", "NOTE");
    size_t k;
    json_t *v;
    json_array_foreach(json_object_get(o, "versions"), k, v)
    {
        time_t t = (time_t)(json_integer_value(json_object_get(v, "created_at")) / 1000);
        char when[32];
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", gmtime(&t));
        const char *digest = json_string_value(json_object_get(v, "digest"));
        const char *reason = json_string_value(json_object_get(v, "reason"));
        const char *note = json_string_value(json_object_get(v, "note"));
        printf("%-8lld %-20s %-11s %-19.19s %s%s%s\n", (long long)json_integer_value(json_object_get(v, "version")),
               when, json_string_value(json_object_get(v, "status")), digest ? digest : "", note ? note : "",
               note && reason ? "; " : "", reason ? reason : "");
    }
    json_decref(o);
    return 0;
}
