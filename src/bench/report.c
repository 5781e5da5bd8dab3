/*
 * bench_report.c - what `hedge bench` hands back: per level and figure the
 * samples of every repetition, reduced to median and spread (min..max), as a
 * terminal table, report.json and report.html.
 *
 * The HTML carries one inline SVG bar chart per figure: levels side by side,
 * a whisker for the min..max spread, the median printed above each bar and
 * its ratio to `process` on the bar. The SVG is written by hand (a few
 * rect/line/text elements), so the report needs no script, no network and no
 * library to open; the same charts are also written as charts/<figure>.svg.
 *
 * The header names the host, kernel, CPU count, cgroup mode and VM
 * accelerator, so a result measured under TCG is never mistaken for KVM.
 */
#include "bench/bench.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "cgroup/cgroup.h"
#include "config.h"
#include "base/util.h"
#include "runtime/vm/vm.h"

const struct hd_bench_figure_info hd_bench_figures[HD_FIG_COUNT] = {
    [HD_FIG_START_MS] = {"start_to_ready_ms", "Start to ready", "ms", true},
    [HD_FIG_EXIT_MS] = {"start_to_exit_ms", "Start to exit", "ms", true},
    [HD_FIG_RR_P50_US] = {"rr_latency_p50_us", "RR latency p50", "\xc2\xb5s", true},
    [HD_FIG_RR_P90_US] = {"rr_latency_p90_us", "RR latency p90", "\xc2\xb5s", true},
    [HD_FIG_RR_P99_US] = {"rr_latency_p99_us", "RR latency p99", "\xc2\xb5s", true},
    [HD_FIG_RR_TPS] = {"rr_transactions_per_s", "RR transactions", "1/s", false},
    [HD_FIG_STREAM_MBIT] = {"stream_throughput_mbit_s", "Stream throughput", "Mbit/s", false},
    [HD_FIG_HOST_CPU_10K] = {"host_cpu_s_per_10k_transactions", "Host-side CPU per 10k transactions", "CPU s", true},
    [HD_FIG_WORKLOAD_CPU_10K] = {"workload_cpu_s_per_10k_transactions", "Workload CPU per 10k transactions", "CPU s",
                                 true},
    [HD_FIG_WORKLOAD_MEM_MIB] = {"workload_memory_mib", "Workload memory", "MiB", true},
    [HD_FIG_OVERHEAD_MEM_MIB] = {"runtime_overhead_memory_mib", "Runtime overhead memory", "MiB", true},
    [HD_FIG_NB_RR_P50_US] = {"neighbour_rr_latency_p50_us", "RR latency p50 beside a neighbour", "\xc2\xb5s", true},
    [HD_FIG_NB_RR_P99_US] = {"neighbour_rr_latency_p99_us", "RR latency p99 beside a neighbour", "\xc2\xb5s", true},
    [HD_FIG_NB_RR_TPS] = {"neighbour_rr_transactions_per_s", "RR transactions beside a neighbour", "1/s", false},
};

struct series {
    double *v;
    size_t n;
};

struct hd_bench_report {
    int n_levels;
    char *levels[HD_BENCH_MAX_LEVELS];
    struct series data[HD_BENCH_MAX_LEVELS][HD_FIG_COUNT];
    /* what was measured */
    char *workload;
    int port;
    char *protocol;
    size_t request_size, response_size;
    int runs;
    double duration_s, warmup_s;
    char *neighbour;
    char *netns;
    /* where */
    char *hostname, *kernel, *machine, *cgroup_mode, *vm_accel;
    long cpus;
    char *created;
    char **notes;
};

/*
 * The VM accelerator line, from the vm backend's own probe (a tiny guest loop
 * timed through the KVM API), so a TCG figure is never taken for KVM.
 */
static char *vm_accelerator(const struct hd_bench_options *o)
{
    bool vm = false;
    for (int i = 0; i < o->n_levels; i++)
        vm |= o->levels[i] == HD_ISOLATION_VM;
    if (!vm || o->connect)
        return hd_xstrdup("not used (no vm level)");
    const char *asked = o->spec && o->spec->vm_accel ? o->spec->vm_accel : "auto";
    struct hd_vm_accel_probe probe;
    hd_vm_accel_probe(&probe);
    if (probe.usable)
        return hd_xasprintf("kvm (requested %s; probe loop %.2f ms)", asked, probe.loop_ms);
    if (strcmp(asked, "kvm") == 0)
        return hd_xasprintf("kvm requested, but KVM is not usable here: %s", probe.reason);
    return hd_xasprintf("tcg, emulation (requested %s; KVM not usable: %s)", asked, probe.reason);
}

struct hd_bench_report *hd_bench_report_new(const struct hd_bench_options *o)
{
    struct hd_bench_report *r = hd_xcalloc(1, sizeof(*r));
    if (o->connect) {
        r->n_levels = 1;
        r->levels[0] = hd_xstrdup("external");
        r->workload = hd_xasprintf("server at %s", o->connect);
    } else {
        r->n_levels = o->n_levels;
        for (int i = 0; i < o->n_levels; i++)
            r->levels[i] = hd_xstrdup(hd_isolation_name(o->levels[i]));
        r->workload = hd_xstrdup(o->builtin_echo                ? "built-in echo (hedge-echo-server)"
                                     : o->spec && o->spec->name ? o->spec->name
                                                                : "workload spec");
    }
    r->port = o->port;
    r->protocol = hd_xstrdup(hd_bench_protocol_name(o->client.protocol));
    r->request_size = o->client.request_size;
    r->response_size = o->client.response_size;
    r->runs = o->runs;
    r->duration_s = o->client.duration_s;
    r->warmup_s = o->client.warmup_s;
    r->neighbour = hd_xstrdup(hd_bench_neighbour_name(o->neighbour));
    struct utsname u;
    uname(&u);
    r->hostname = hd_xstrdup(u.nodename);
    r->kernel = hd_xasprintf("%s %s %s", u.sysname, u.release, u.version);
    r->machine = hd_xstrdup(u.machine);
    r->cpus = sysconf(_SC_NPROCESSORS_ONLN);
    r->cgroup_mode = hd_xstrdup(hd_cgroup_mode_name(hd_cgroup_detect()));
    r->vm_accel = vm_accelerator(o);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char buf[32];
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    r->created = hd_xstrdup(buf);
    return r;
}

void hd_bench_report_free(struct hd_bench_report *r)
{
    if (r == NULL)
        return;
    for (int i = 0; i < r->n_levels; i++) {
        free(r->levels[i]);
        for (int f = 0; f < HD_FIG_COUNT; f++)
            free(r->data[i][f].v);
    }
    free(r->workload);
    free(r->protocol);
    free(r->neighbour);
    free(r->netns);
    free(r->hostname);
    free(r->kernel);
    free(r->machine);
    free(r->cgroup_mode);
    free(r->vm_accel);
    free(r->created);
    hd_strv_free(r->notes);
    free(r);
}

void hd_bench_report_add(struct hd_bench_report *r, int level, enum hd_bench_figure f, double value)
{
    if (level < 0 || level >= r->n_levels || !isfinite(value))
        return;
    struct series *s = &r->data[level][f];
    s->v = hd_xrealloc(s->v, (s->n + 1) * sizeof(double));
    s->v[s->n++] = value;
}

void hd_bench_report_set_netns(struct hd_bench_report *r, const char *netns)
{
    free(r->netns);
    r->netns = hd_xstrdup(netns);
}

void hd_bench_report_add_note(struct hd_bench_report *r, const char *note)
{
    if (!hd_strv_contains(r->notes, note))
        hd_strv_push(&r->notes, note);
}

/* ---- statistics ---- */

struct summary {
    bool present;
    double median, min, max;
};

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static struct summary summarize(const struct series *s)
{
    struct summary out = {0};
    if (s->n == 0)
        return out;
    double *v = hd_xmalloc(s->n * sizeof(double));
    memcpy(v, s->v, s->n * sizeof(double));
    qsort(v, s->n, sizeof(double), compare_double);
    out.present = true;
    out.min = v[0];
    out.max = v[s->n - 1];
    out.median = s->n % 2 ? v[s->n / 2] : (v[s->n / 2 - 1] + v[s->n / 2]) / 2;
    free(v);
    return out;
}

static bool figure_present(const struct hd_bench_report *r, int f)
{
    for (int i = 0; i < r->n_levels; i++)
        if (r->data[i][f].n)
            return true;
    return false;
}

/* Index of the `process` level, the reference of every ratio, or -1. */
static int reference_level(const struct hd_bench_report *r)
{
    for (int i = 0; i < r->n_levels; i++)
        if (strcmp(r->levels[i], "process") == 0)
            return i;
    return -1;
}

static double ratio_to_reference(const struct hd_bench_report *r, int level, int f)
{
    int ref = reference_level(r);
    if (ref < 0)
        return NAN;
    struct summary a = summarize(&r->data[level][f]), b = summarize(&r->data[ref][f]);
    if (!a.present || !b.present || b.median == 0)
        return NAN;
    return a.median / b.median;
}

/* A number with about three significant digits. */
static void format_value(char *buf, size_t len, double v)
{
    double a = fabs(v);
    if (v == 0)
        snprintf(buf, len, "0");
    else if (a >= 100)
        snprintf(buf, len, "%.0f", v);
    else if (a >= 10)
        snprintf(buf, len, "%.1f", v);
    else if (a >= 0.1 || a == 0)
        snprintf(buf, len, "%.2f", v);
    else
        snprintf(buf, len, "%.3g", v);
}

/* ---- terminal table ---- */

void hd_bench_report_print_table(const struct hd_bench_report *r, FILE *out)
{
    fprintf(out, "hedge bench: %s", r->workload);
    if (r->port)
        fprintf(out, ", port %d, %s protocol, %zu B request / %zu B response", r->port, r->protocol, r->request_size,
                r->response_size);
    if (r->port)
        fprintf(out, "\n%d run%s per level, interleaved, %.1f s measured after %.1f s warm-up%s%s\n", r->runs,
                r->runs == 1 ? "" : "s", r->duration_s, r->warmup_s,
                strcmp(r->neighbour, "none") ? ", neighbour: " : "", strcmp(r->neighbour, "none") ? r->neighbour : "");
    else
        fprintf(out, ", run to completion\n%d run%s per level, interleaved\n", r->runs, r->runs == 1 ? "" : "s");
    fprintf(out, "host %s (%s, %ld CPUs), kernel %s\ncgroup mode %s; vm accelerator: %s\n\n", r->hostname, r->machine,
            r->cpus, r->kernel, r->cgroup_mode, r->vm_accel);
    fprintf(out, "%-36s %-7s", "figure (median [min-max])", "unit");
    for (int i = 0; i < r->n_levels; i++)
        fprintf(out, " %-30s", r->levels[i]);
    fputc('\n', out);
    for (int f = 0; f < HD_FIG_COUNT; f++) {
        if (!figure_present(r, f))
            continue;
        const struct hd_bench_figure_info *fi = &hd_bench_figures[f];
        /* the unit may be multi-byte (µs): pad by hand */
        fprintf(out, "%-36s %s%*s", fi->title, fi->unit,
                (int)(7 - (strcmp(fi->unit, "\xc2\xb5s") ? strlen(fi->unit) : 2)), "");
        for (int i = 0; i < r->n_levels; i++) {
            struct summary s = summarize(&r->data[i][f]);
            char cell[128] = "-";
            if (s.present) {
                char med[24], lo[24], hi[24], ratio[24] = "";
                format_value(med, sizeof(med), s.median);
                format_value(lo, sizeof(lo), s.min);
                format_value(hi, sizeof(hi), s.max);
                double q = ratio_to_reference(r, i, f);
                if (isfinite(q) && strcmp(r->levels[i], "process") != 0)
                    snprintf(ratio, sizeof(ratio), " %.2fx", q);
                snprintf(cell, sizeof(cell), "%s [%s-%s]%s", med, lo, hi, ratio);
            }
            fprintf(out, " %-30s", cell);
        }
        fputc('\n', out);
    }
    for (size_t i = 0; r->notes && r->notes[i]; i++)
        fprintf(out, "note: %s\n", r->notes[i]);
}

/* ---- JSON ---- */

static json_t *report_to_json(const struct hd_bench_report *r)
{
    json_t *levels = json_array();
    for (int i = 0; i < r->n_levels; i++)
        json_array_append_new(levels, json_string(r->levels[i]));
    json_t *figures = json_array();
    json_t *results = json_object();
    for (int i = 0; i < r->n_levels; i++)
        json_object_set_new(results, r->levels[i], json_object());
    for (int f = 0; f < HD_FIG_COUNT; f++) {
        if (!figure_present(r, f))
            continue;
        const struct hd_bench_figure_info *fi = &hd_bench_figures[f];
        json_array_append_new(figures,
                              json_pack("{s:s,s:s,s:s,s:b}", "key", fi->key, "title", fi->title, "unit", fi->unit,
                                        "lower_is_better", fi->lower_is_better));
        for (int i = 0; i < r->n_levels; i++) {
            struct summary s = summarize(&r->data[i][f]);
            if (!s.present)
                continue;
            json_t *samples = json_array();
            for (size_t k = 0; k < r->data[i][f].n; k++)
                json_array_append_new(samples, json_real(r->data[i][f].v[k]));
            double q = ratio_to_reference(r, i, f);
            json_object_set_new(json_object_get(results, r->levels[i]), fi->key,
                                json_pack("{s:f,s:f,s:f,s:f,s:o,s:o}", "median", s.median, "min", s.min, "max", s.max,
                                          "spread_pct", s.median ? (s.max - s.min) / s.median * 100 : 0.0, "samples",
                                          samples, "ratio_to_process", isfinite(q) ? json_real(q) : json_null()));
        }
    }
    json_t *notes = json_array();
    for (size_t i = 0; r->notes && r->notes[i]; i++)
        json_array_append_new(notes, json_string(r->notes[i]));
    return json_pack("{s:s,s:s,s:{s:s,s:s,s:s,s:I,s:s,s:s},s:{s:s,s:i,s:s,s:I,s:I},"
                     "s:{s:o,s:i,s:f,s:f,s:b,s:s},s:o,s:o,s:o,s:o}",
                     "hedge_version", HEDGE_VERSION, "created", r->created, "host", "hostname", r->hostname, "kernel",
                     r->kernel, "machine", r->machine, "cpus", (json_int_t)r->cpus, "cgroup_mode", r->cgroup_mode,
                     "vm_accelerator", r->vm_accel, "workload", "name", r->workload, "port", r->port, "protocol",
                     r->protocol, "request_bytes", (json_int_t)r->request_size, "response_bytes",
                     (json_int_t)r->response_size, "settings", "levels", levels, "runs", r->runs, "duration_s",
                     r->duration_s, "warmup_s", r->warmup_s, "interleaved", 1, "neighbour", r->neighbour, "netns",
                     r->netns ? json_string(r->netns) : json_null(), "figures", figures, "results", results, "notes",
                     notes);
}

char *hd_bench_report_json(const struct hd_bench_report *r)
{
    json_t *j = report_to_json(r);
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(j);
    return text;
}

/* ---- SVG and HTML ---- */

/* A growable string buffer. */
struct text {
    char *s;
    size_t len, cap;
};

static void __attribute__((format(printf, 2, 3))) text_printf(struct text *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (t->len + (size_t)n + 1 > t->cap) {
        t->cap = (t->len + (size_t)n + 1) * 2;
        t->s = hd_xrealloc(t->s, t->cap);
    }
    va_start(ap, fmt);
    vsnprintf(t->s + t->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
}

static void text_escaped(struct text *t, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': text_printf(t, "&lt;"); break;
        case '>': text_printf(t, "&gt;"); break;
        case '&': text_printf(t, "&amp;"); break;
        case '"': text_printf(t, "&quot;"); break;
        default: text_printf(t, "%c", *s);
        }
    }
}

static const char *level_colour(const char *level)
{
    if (strcmp(level, "process") == 0)
        return "#4c78a8";
    if (strcmp(level, "container") == 0)
        return "#f58518";
    if (strcmp(level, "vm") == 0)
        return "#54a24b";
    return "#7f7f7f";
}

#define CHART_W 440
#define CHART_H 270
#define PLOT_LEFT 64
#define PLOT_RIGHT 16
#define PLOT_TOP 44
#define PLOT_BOTTOM 40

/* A "nice" axis maximum: 1, 2 or 5 times a power of ten, at least v. */
static double nice_ceiling(double v)
{
    if (!isfinite(v))
        return v;
    if (v <= 0)
        return 1;
    /* the power of ten at or below v, by steps: no libm (every `hedge run` would map it) */
    double p = 1;
    while (p * 10 <= v)
        p *= 10;
    while (p > v)
        p /= 10;
    for (int i = 0; i < 3; i++) {
        double m = (double[]){1, 2, 5}[i] * p;
        if (m >= v)
            return m;
    }
    return 10 * p;
}

/* One bar chart: the figure's median per level, min..max whisker, ratio to process. */
static void chart_svg(const struct hd_bench_report *r, int f, struct text *t)
{
    const struct hd_bench_figure_info *fi = &hd_bench_figures[f];
    double top = 0;
    for (int i = 0; i < r->n_levels; i++) {
        struct summary s = summarize(&r->data[i][f]);
        if (s.present && s.max > top)
            top = s.max;
    }
    top = nice_ceiling(top * 1.15);
    int plot_w = CHART_W - PLOT_LEFT - PLOT_RIGHT, plot_h = CHART_H - PLOT_TOP - PLOT_BOTTOM;
    text_printf(t,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                "font-family=\"DejaVu Sans, Arial, sans-serif\" font-size=\"12\" role=\"img\" "
                "data-figure=\"%s\">\n",
                CHART_W, CHART_H, CHART_W, CHART_H, fi->key);
    text_printf(t, "<title>%s (%s)</title>\n", fi->title, fi->unit);
    text_printf(t, "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n", CHART_W, CHART_H);
    text_printf(t, "<text x=\"%d\" y=\"20\" font-size=\"14\" font-weight=\"bold\">%s</text>\n", PLOT_LEFT - 50,
                fi->title);
    text_printf(t,
                "<text x=\"%d\" y=\"36\" fill=\"#555555\">%s, %s is better; bars: median, whisker: "
                "min-max</text>\n",
                PLOT_LEFT - 50, fi->unit, fi->lower_is_better ? "lower" : "higher");
    for (int g = 0; g <= 4; g++) {
        double v = top * g / 4;
        double y = PLOT_TOP + plot_h - plot_h * g / 4.0;
        char label[24];
        format_value(label, sizeof(label), v);
        text_printf(t, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"1\"/>\n",
                    PLOT_LEFT, y, CHART_W - PLOT_RIGHT, y, g ? "#e0e0e0" : "#333333");
        text_printf(t, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\" fill=\"#555555\">%s</text>\n", PLOT_LEFT - 6,
                    y + 4, label);
    }
    double slot = (double)plot_w / r->n_levels;
    double bar_w = slot * 0.56;
    for (int i = 0; i < r->n_levels; i++) {
        double cx = PLOT_LEFT + slot * (i + 0.5);
        text_printf(t, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", cx, CHART_H - PLOT_BOTTOM + 18,
                    r->levels[i]);
        struct summary s = summarize(&r->data[i][f]);
        if (!s.present) {
            text_printf(t,
                        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#999999\">not measured"
                        "</text>\n",
                        cx, PLOT_TOP + plot_h - 8.0);
            continue;
        }
        double h = plot_h * s.median / top, y = PLOT_TOP + plot_h - h;
        text_printf(t, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>\n", cx - bar_w / 2, y,
                    bar_w, h, level_colour(r->levels[i]));
        double ylo = PLOT_TOP + plot_h - plot_h * s.min / top, yhi = PLOT_TOP + plot_h - plot_h * s.max / top;
        text_printf(t,
                    "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#222222\" "
                    "stroke-width=\"1.5\"/>\n",
                    cx, ylo, cx, yhi);
        text_printf(t, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#222222\"/>\n", cx - 6, yhi,
                    cx + 6, yhi);
        text_printf(t, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#222222\"/>\n", cx - 6, ylo,
                    cx + 6, ylo);
        char med[24];
        format_value(med, sizeof(med), s.median);
        text_printf(t, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-weight=\"bold\">%s</text>\n", cx,
                    (y < yhi ? y : yhi) - 6, med);
        double q = ratio_to_reference(r, i, f);
        if (isfinite(q)) {
            bool inside = h > 22;
            text_printf(t, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"%s\">%.2f\xc3\x97</text>\n", cx,
                        inside ? PLOT_TOP + plot_h - 8.0 : (y < yhi ? y : yhi) - 20, inside ? "#ffffff" : "#333333", q);
        }
    }
    text_printf(t, "</svg>\n");
}

static void html_report(const struct hd_bench_report *r, struct text *t)
{
    text_printf(t,
                "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                "<title>hedge bench: ");
    text_escaped(t, r->workload);
    text_printf(t,
                "</title>\n<style>\nbody{font-family:'DejaVu Sans',Arial,sans-serif;margin:24px;color:#222}\n"
                "table{border-collapse:collapse;margin:12px 0}td,th{border:1px solid #ccc;padding:4px 8px;"
                "text-align:right}th:first-child,td:first-child{text-align:left}\n"
                ".charts{display:flex;flex-wrap:wrap;gap:16px}.charts svg{border:1px solid #ddd}\n"
                "</style>\n</head>\n<body>\n<h1>hedge bench: ");
    text_escaped(t, r->workload);
    text_printf(t, "</h1>\n<ul>\n<li>host: ");
    text_escaped(t, r->hostname);
    text_printf(t, " (%s, %ld CPUs)</li>\n<li>kernel: ", r->machine, r->cpus);
    text_escaped(t, r->kernel);
    text_printf(t, "</li>\n<li>cgroup mode: %s</li>\n<li>vm accelerator: ", r->cgroup_mode);
    text_escaped(t, r->vm_accel);
    text_printf(t,
                "</li>\n<li>%d run%s per level, levels interleaved; %.1f s measured after %.1f s warm-up; "
                "protocol %s, %zu B request / %zu B response; neighbour: %s</li>\n<li>created %s</li>\n</ul>\n",
                r->runs, r->runs == 1 ? "" : "s", r->duration_s, r->warmup_s, r->protocol, r->request_size,
                r->response_size, r->neighbour, r->created);
    text_printf(t, "<table>\n<tr><th>figure</th><th>unit</th>");
    for (int i = 0; i < r->n_levels; i++)
        text_printf(t, "<th>%s</th>", r->levels[i]);
    text_printf(t, "</tr>\n");
    for (int f = 0; f < HD_FIG_COUNT; f++) {
        if (!figure_present(r, f))
            continue;
        text_printf(t, "<tr><td>%s</td><td>%s</td>", hd_bench_figures[f].title, hd_bench_figures[f].unit);
        for (int i = 0; i < r->n_levels; i++) {
            struct summary s = summarize(&r->data[i][f]);
            if (!s.present) {
                text_printf(t, "<td>-</td>");
                continue;
            }
            char med[24], lo[24], hi[24];
            format_value(med, sizeof(med), s.median);
            format_value(lo, sizeof(lo), s.min);
            format_value(hi, sizeof(hi), s.max);
            text_printf(t, "<td>%s <small>[%s&#8211;%s]</small></td>", med, lo, hi);
        }
        text_printf(t, "</tr>\n");
    }
    text_printf(t, "</table>\n<div class=\"charts\">\n");
    for (int f = 0; f < HD_FIG_COUNT; f++)
        if (figure_present(r, f))
            chart_svg(r, f, t);
    text_printf(t, "</div>\n");
    for (size_t i = 0; r->notes && r->notes[i]; i++) {
        text_printf(t, "<p>note: ");
        text_escaped(t, r->notes[i]);
        text_printf(t, "</p>\n");
    }
    text_printf(t, "</body>\n</html>\n");
}

int hd_bench_report_write(const struct hd_bench_report *r, const char *dir, hd_error_t *err)
{
    cleanup_free char *charts = hd_xasprintf("%s/charts", dir);
    if (hd_mkdir_p(charts, 0755, err) < 0)
        return hd_error_prefix(err, "report");
    cleanup_free char *json = hd_bench_report_json(r);
    cleanup_free char *json_path = hd_xasprintf("%s/report.json", dir);
    if (hd_write_file_atomic(json_path, json, strlen(json), err) < 0)
        return hd_error_prefix(err, "report");
    struct text html = {0};
    html_report(r, &html);
    cleanup_free char *html_path = hd_xasprintf("%s/report.html", dir);
    int ret = hd_write_file_atomic(html_path, html.s, html.len, err);
    free(html.s);
    if (ret < 0)
        return hd_error_prefix(err, "report");
    for (int f = 0; f < HD_FIG_COUNT; f++) {
        if (!figure_present(r, f))
            continue;
        struct text svg = {0};
        text_printf(&svg, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        chart_svg(r, f, &svg);
        cleanup_free char *path = hd_xasprintf("%s/%s.svg", charts, hd_bench_figures[f].key);
        ret = hd_write_file_atomic(path, svg.s, svg.len, err);
        free(svg.s);
        if (ret < 0)
            return hd_error_prefix(err, "report");
    }
    return 0;
}
