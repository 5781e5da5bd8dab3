/*
 * rollback.c - `hedge rollback NAME`: deploy the previous good version's spec
 * again (as a new version whose note says so), with the same health wait
 * and keep-the-old-one-on-failure rule as an upgrade.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "base/util.h"

static const char usage[] = "hedge rollback [--json] [--health-wait SECONDS] NAME";

int cmd_rollback(int argc, char **argv)
{
    bool json = false;
    const char *health = NULL;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (strcmp(argv[i], "--health-wait") == 0 && i + 1 < argc)
            health = argv[++i];
        else if (strcmp(argv[i], "--help") == 0)
            return cli_help(usage);
        else
            return cli_usage_error("rollback", usage, "unknown option %s", argv[i]);
    }
    if (i != argc - 1)
        return cli_usage_error("rollback", usage, "name one workload");
    cleanup_free char *name = hd_client_escape(argv[i]);
    cleanup_free char *wait = health ? hd_client_escape(health) : NULL;
    cleanup_free char *path =
        hd_xasprintf("/v1/workloads/%s/rollback%s%s", name, wait ? "?health_wait=" : "", wait ? wait : "");
    int code = 0;
    json_t *o = hd_client_call("rollback", "POST", path, NULL, 0, &code);
    if (o == NULL)
        return code;
    if (json) {
        json_dumpf(o, stdout, JSON_INDENT(2));
        putchar('\n');
    } else
        printf("%s: version %d (rolled back from version %d)\n", argv[i],
               (int)json_integer_value(json_object_get(o, "version")),
               (int)json_integer_value(json_object_get(o, "previous")));
    json_decref(o);
    return 0;
}
