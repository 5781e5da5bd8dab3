/*
 * metrics.c - the workloads' part of GET /metrics (Prometheus text format
 * 0.0.4): hedged's own memory, one series per workload (up, restarts, CPU,
 * memory, version) and the function hosts' counters and latencies. api.c
 * appends the broker's and the uplink's parts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "daemon/supervisor_internal.h"
#include "base/util.h"

/* Prometheus label values escape \, " and newline. */
static void metrics_append_label(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            fputc('\\', f);
        if (*s == '\n') {
            fputs("\\n", f);
            continue;
        }
        fputc(*s, f);
    }
}

/* hedge_function_*{name=...}: the counters and latency the function hosts report (function_host.c). */
static void metrics_functions(struct hd_supervisor *sup, FILE *f)
{
    static const struct {
        const char *name, *type, *key, *help;
        double scale;
    } families[] = {
        {"hedge_function_invocations_total", "counter", "invocations", "Invocations received (MQTT and hedge invoke).",
         1},
        {"hedge_function_errors_total", "counter", "errors", "Invocations answered with an error event.", 1},
        {"hedge_function_timeouts_total", "counter", "timeouts", "Invocations that ran out of time.", 1},
        {"hedge_function_rejected_total", "counter", "rejected", "Invocations rejected: the queue was full.", 1},
        {"hedge_function_instance_restarts_total", "counter", "restarts", "Pinned instance restarts.", 1},
        {"hedge_function_latency_p50_seconds", "gauge", "p50_ms", "Median received-to-result latency.", 1e-3},
        {"hedge_function_latency_p99_seconds", "gauge", "p99_ms", "99th percentile received-to-result latency.", 1e-3},
    };
    size_t n = 0;
    for (struct workload *wl = sup->workloads; wl; wl = wl->next)
        n += hd_function_is(wl->spec);
    if (n == 0)
        return;
    cleanup_free json_t **stats = hd_xcalloc(n, sizeof(*stats));
    cleanup_free struct workload **fns = hd_xcalloc(n, sizeof(*fns));
    n = 0;
    for (struct workload *wl = sup->workloads; wl; wl = wl->next)
        if (hd_function_is(wl->spec)) {
            fns[n] = wl;
            stats[n++] = hd_function_json(sup->cfg, wl->name, wl->version, wl->spec, false);
        }
    for (size_t fam = 0; fam < ARRAY_SIZE(families); fam++) {
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", families[fam].name, families[fam].help, families[fam].name,
                families[fam].type);
        for (size_t i = 0; i < n; i++) {
            json_t *v = json_object_get(stats[i], families[fam].key);
            if (!json_is_number(v))
                continue;
            fprintf(f, "%s{name=\"", families[fam].name);
            metrics_append_label(f, fns[i]->name);
            if (families[fam].scale == 1)
                fprintf(f, "\"} %lld\n", (long long)json_integer_value(v));
            else
                fprintf(f, "\"} %.6f\n", json_number_value(v) * families[fam].scale);
        }
    }
    for (size_t i = 0; i < n; i++)
        json_decref(stats[i]);
}

static uint64_t metrics_self_rss_bytes(void)
{
    cleanup_free char *data = NULL;
    size_t len;
    hd_error_t err = NULL;
    unsigned long size = 0, resident = 0;
    if (hd_read_file("/proc/self/statm", &data, &len, &err) < 0) {
        hd_error_free(&err);
        return 0;
    }
    sscanf(data, "%lu %lu", &size, &resident);
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

char *hd_supervisor_metrics(struct hd_supervisor *sup)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        abort();
    int count = 0;
    for (struct workload *wl = sup->workloads; wl; wl = wl->next)
        count++;
    fprintf(f,
            "# HELP hedged_resident_memory_bytes Resident set size of the hedged process.\n"
            "# TYPE hedged_resident_memory_bytes gauge\nhedged_resident_memory_bytes %llu\n",
            (unsigned long long)metrics_self_rss_bytes());
    fprintf(f, "# HELP hedged_workloads Deployed workloads.\n# TYPE hedged_workloads gauge\nhedged_workloads %d\n",
            count);
    static const struct {
        const char *name, *type, *help;
    } families[] = {
        {"hedge_workload_up", "gauge", "1 when the workload is running."},
        {"hedge_workload_restarts_total", "counter", "Restarts since the last deploy or start."},
        {"hedge_workload_cpu_seconds_total", "counter", "CPU time used by the running workload."},
        {"hedge_workload_memory_bytes", "gauge", "Memory used by the running workload."},
        {"hedge_workload_version", "gauge", "Active version of the workload."},
    };
    for (size_t fam = 0; fam < ARRAY_SIZE(families); fam++) {
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", families[fam].name, families[fam].help, families[fam].name,
                families[fam].type);
        for (struct workload *wl = sup->workloads; wl; wl = wl->next) {
            struct run *run = wl->cur;
            bool running = run_is_up(run);
            struct hd_stats st = {0};
            if (fam == 2 || fam == 3) {
                hd_error_t err = NULL;
                int r = running ? hd_instance_stats(run->inst, &st, &err) : -1;
                hd_error_free(&err);
                if (r < 0)
                    continue;
            }
            fprintf(f, "%s{name=\"", families[fam].name);
            metrics_append_label(f, wl->name);
            fprintf(f, "\",isolation=\"%s\"} ", hd_isolation_name(wl->spec->isolation));
            switch (fam) {
            case 0: fprintf(f, "%d\n", running ? 1 : 0); break;
            case 1: fprintf(f, "%d\n", wl->restarts); break;
            case 2: fprintf(f, "%.6f\n", (double)st.cpu_usage_ns / 1e9); break;
            case 3: fprintf(f, "%llu\n", (unsigned long long)st.memory_bytes); break;
            default: fprintf(f, "%d\n", wl->version); break;
            }
        }
    }
    metrics_functions(sup, f);
    fclose(f);
    return buf;
}
