/* test_bench.c - the bench report's pure logic: medians and spread, ratios to process, the JSON
 * shape, figure keys with their units, and the flag parsers. */
#include <jansson.h>
#include <math.h>

#include "bench/bench.h"
#include "check.h"
#include "base/util.h"

static double figure(json_t *results, const char *level, const char *key, const char *field)
{
    json_t *v = json_object_get(json_object_get(json_object_get(results, level), key), field);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

int main(void)
{
    struct hd_bench_options o = {
        .n_levels = 2,
        .levels = {HD_ISOLATION_PROCESS, HD_ISOLATION_CONTAINER},
        .runs = 3,
        .port = 7777,
        .builtin_echo = true,
        .client = {.request_size = 64, .response_size = 64, .duration_s = 5, .warmup_s = 1},
    };
    struct hd_bench_report *r = hd_bench_report_new(&o);
    double process[] = {10, 30, 20}, container[] = {22, 26, 24, 40};
    for (size_t i = 0; i < ARRAY_SIZE(process); i++)
        hd_bench_report_add(r, 0, HD_FIG_RR_P50_US, process[i]);
    for (size_t i = 0; i < ARRAY_SIZE(container); i++)
        hd_bench_report_add(r, 1, HD_FIG_RR_P50_US, container[i]);
    hd_bench_report_add(r, 1, HD_FIG_RR_P50_US, NAN); /* not finite: dropped */
    hd_bench_report_add(r, 5, HD_FIG_RR_P50_US, 1);   /* no such level: dropped */
    hd_bench_report_add(r, 0, HD_FIG_OVERHEAD_MEM_MIB, 0);
    hd_bench_report_add(r, 1, HD_FIG_OVERHEAD_MEM_MIB, 3);
    hd_bench_report_add_note(r, "a note");
    hd_bench_report_add_note(r, "a note"); /* kept once */

    char *text = hd_bench_report_json(r);
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    CHECK(j != NULL);
    json_t *res = json_object_get(j, "results");
    CHECK(figure(res, "process", "rr_latency_p50_us", "median") == 20);
    CHECK(figure(res, "process", "rr_latency_p50_us", "min") == 10);
    CHECK(figure(res, "process", "rr_latency_p50_us", "max") == 30);
    CHECK(figure(res, "process", "rr_latency_p50_us", "spread_pct") == 100);
    CHECK(figure(res, "process", "rr_latency_p50_us", "ratio_to_process") == 1);
    CHECK(figure(res, "container", "rr_latency_p50_us", "median") == 25); /* even count: mean of middle two */
    CHECK(figure(res, "container", "rr_latency_p50_us", "ratio_to_process") == 1.25);
    CHECK(json_array_size(json_object_get(json_object_get(json_object_get(res, "container"), "rr_latency_p50_us"),
                                          "samples")) == 4);
    /* a ratio to a zero is no ratio */
    CHECK(json_is_null(json_object_get(
        json_object_get(json_object_get(res, "container"), "runtime_overhead_memory_mib"), "ratio_to_process")));
    /* only figures with samples are listed, with their units */
    json_t *figs = json_object_get(j, "figures");
    CHECK(json_array_size(figs) == 2);
    CHECK_STR(json_string_value(json_object_get(json_array_get(figs, 0), "key")), "rr_latency_p50_us");
    CHECK_STR(json_string_value(json_object_get(json_array_get(figs, 0), "unit")), "\xc2\xb5s");
    CHECK_STR(json_string_value(json_object_get(json_array_get(figs, 1), "unit")), "MiB");
    CHECK(json_array_size(json_object_get(j, "notes")) == 1);
    CHECK_STR(json_string_value(json_object_get(json_object_get(j, "settings"), "neighbour")), "none");
    CHECK_STR(json_string_value(json_object_get(json_object_get(j, "host"), "vm_accelerator")),
              "not used (no vm level)");
    json_decref(j);
    free(text);
    hd_bench_report_free(r);

    /* every figure key names its unit */
    for (int f = 0; f < HD_FIG_COUNT; f++) {
        const char *key = hd_bench_figures[f].key;
        size_t n = strlen(key);
        CHECK(n > 3 &&
              (strcmp(key + n - 3, "_ms") == 0 || strcmp(key + n - 3, "_us") == 0 ||
               strcmp(key + n - 6, "_per_s") == 0 || strcmp(key + n - 7, "_mbit_s") == 0 ||
               strcmp(key + n - 17, "_10k_transactions") == 0 || strcmp(key + n - 4, "_mib") == 0));
    }

    enum hd_bench_protocol p;
    CHECK(hd_bench_protocol_parse("echo", &p) == 0 && p == HD_BENCH_ECHO);
    CHECK(hd_bench_protocol_parse("udp", &p) < 0);
    enum hd_bench_neighbour n;
    CHECK(hd_bench_neighbour_parse("fork", &n) == 0 && n == HD_BENCH_NEIGHBOUR_FORK);
    CHECK(hd_bench_neighbour_parse("none", &n) < 0);

    struct hd_bench_target t;
    hd_error_t err = NULL;
    CHECK(hd_bench_target_set(&t, "10.89.0.2", 8080, &err) == 0);
    CHECK_STR(t.text, "10.89.0.2:8080");
    CHECK(hd_bench_target_set(&t, "::1", 80, &err) == 0);
    CHECK_STR(t.text, "[::1]:80");
    CHECK(hd_bench_target_set(&t, "example.com", 80, &err) < 0);
    CHECK_STR(hd_error_text(err), "address \"example.com\": not an IPv4 or IPv6 address");
    hd_error_free(&err);
    CHECK(hd_bench_target_set(&t, "127.0.0.1", 0, &err) < 0);
    hd_error_free(&err);
    CHECK_DONE();
}
