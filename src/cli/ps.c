/*
 * ps.c - `hedge ps`: the workloads hedged supervises, one line each: name,
 * version, isolation, state (crash-loop when it keeps failing), pid, uptime,
 * restarts, cpu, memory. --json prints GET /v1/workloads as it is.
 * Function deployments get a second table: mode, invocations, errors (all
 * error events: timeouts and rejections included), timeouts, rejected, and
 * the p50/p99 received-to-result latency, as their function host reports
 * them (counts since the host of the active version started).
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/client.h"

static const char usage[] = "hedge ps [--json]";

int cmd_ps(int argc, char **argv)
{
    bool json;
    int first, done = cli_options(argc, argv, "ps", usage, &json, &first);
    if (done >= 0)
        return done;
    if (first < argc)
        return cli_usage_error("ps", usage, "unexpected argument %s", argv[first]);
    int code = 0;
    json_t *list = hd_client_call("ps", "GET", "/v1/workloads", NULL, 0, &code);
    if (list == NULL)
        return code;
    if (json) {
        json_dumpf(list, stdout, JSON_INDENT(2));
        putchar('\n');
        json_decref(list);
        return 0;
    }
    printf("%-20s %-7s %-11s %-11s %-8s %-8s %-8s %-8s %s\n", "NAME", "VERSION", "ISOLATION", "STATE", "PID", "UPTIME",
           "RESTARTS", "CPU", "MEMORY");
    size_t i;
    json_t *w;
    json_array_foreach(list, i, w)
    {
        char pid[16] = "-", uptime[16] = "-", cpu[16] = "-", mem[16] = "-", isolation[32];
        json_t *v;
        /* a vm's start path: vm/cold, vm/snapshot (a template), vm/pool (a warm pool's clone) */
        const char *boot = json_string_value(json_object_get(w, "vm_boot"));
        snprintf(isolation, sizeof(isolation), "%s%s%s", json_string_value(json_object_get(w, "isolation")),
                 boot ? "/" : "", boot ? boot : "");
        if (json_is_integer(v = json_object_get(w, "pid")))
            snprintf(pid, sizeof(pid), "%lld", (long long)json_integer_value(v));
        if (json_is_number(v = json_object_get(w, "uptime_seconds")))
            hd_client_duration(json_number_value(v), uptime, sizeof(uptime));
        if (json_is_number(v = json_object_get(w, "cpu_seconds")))
            snprintf(cpu, sizeof(cpu), "%.2fs", json_number_value(v));
        if (json_is_number(v = json_object_get(w, "memory_bytes")))
            hd_client_size(json_number_value(v), mem, sizeof(mem));
        printf("%-20s %-7lld %-11s %-11s %-8s %-8s %-8lld %-8s %s\n", json_string_value(json_object_get(w, "name")),
               (long long)json_integer_value(json_object_get(w, "version")), isolation,
               json_string_value(json_object_get(w, "state")), pid, uptime,
               (long long)json_integer_value(json_object_get(w, "restarts")), cpu, mem);
    }
    bool header = false;
    json_array_foreach(list, i, w)
    {
        json_t *fn = json_object_get(w, "function");
        if (!json_is_object(fn))
            continue;
        if (!header) {
            printf("\n%-20s %-9s %-11s %-8s %-8s %-8s %-9s %s\n", "FUNCTION", "MODE", "INVOCATIONS", "ERRORS",
                   "TIMEOUTS", "REJECTED", "P50", "P99");
            header = true;
        }
        char p50[24] = "-", p99[24] = "-";
        json_t *v;
        if (json_is_number(v = json_object_get(fn, "p50_ms")))
            snprintf(p50, sizeof(p50), "%.2fms", json_number_value(v));
        if (json_is_number(v = json_object_get(fn, "p99_ms")))
            snprintf(p99, sizeof(p99), "%.2fms", json_number_value(v));
        printf("%-20s %-9s %-11lld %-8lld %-8lld %-8lld %-9s %s\n", json_string_value(json_object_get(w, "name")),
               json_string_value(json_object_get(fn, "mode")),
               (long long)json_integer_value(json_object_get(fn, "invocations")),
               (long long)json_integer_value(json_object_get(fn, "errors")),
               (long long)json_integer_value(json_object_get(fn, "timeouts")),
               (long long)json_integer_value(json_object_get(fn, "rejected")), p50, p99);
    }
    json_decref(list);
    return 0;
}
