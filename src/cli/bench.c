/*
 * bench.c - `hedge bench`: measure a workload under process, container and
 * vm isolation and write the answer as a table, report.json and report.html
 * (issue 7). The experiment itself is the library's (src/bench/bench*.c);
 * this file turns flags into struct hd_bench_options.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "cli/cli.h"
#include "spec/spec.h"
#include "base/util.h"

static const char usage[] =
    "hedge bench (-f SPEC.json (--port PORT | --run-to-completion) | --builtin echo | --connect HOST:PORT)\n"
    "                   [OPTIONS]\n"
    "  -f, --file FILE          the workload under test (JSON spec)\n"
    "      --builtin echo       the built-in request/response echo server (netperf TCP_RR analog)\n"
    "  -p, --port PORT          the TCP port the workload serves (ready = it accepts a connection)\n"
    "      --run-to-completion  the workload is a command: measure exec to exit, no network figures\n"
    "      --connect HOST:PORT  measure a server that is already running (client figures only)\n"
    "  -i, --isolation LIST     levels to compare, comma-separated (default process,container,vm)\n"
    "  -o, --out DIR            write report.json, report.html and charts/ there (default hedge-bench-report)\n"
    "      --runs N             repetitions per level, interleaved (default 3)\n"
    "      --duration S         measured seconds per test, after the warm-up (default 5)\n"
    "      --warmup S           warm-up seconds, excluded from every figure (default 1)\n"
    "      --count N            measure N transactions instead of a duration\n"
    "      --request-size B     request bytes (default 64)\n"
    "      --response-size B    response bytes (default: the request size)\n"
    "      --protocol P         message (hedge-echo-server, sockperf server) | echo | connect\n"
    "                           (default message with --builtin, connect with -f)\n"
    "      --no-stream          skip the stream throughput test (done by default with --builtin echo)\n"
    "      --stream             run it for -f or --connect too (the server must count a stream as\n"
    "                           hedge-echo-server does)\n"
    "      --ready-timeout S    how long the port may take to open (default 30, 180 with vm)\n"
    "      --neighbour KIND     repeat RR beside a hostile workload: cpu | memory | fork\n"
    "      --json               print report.json on stdout; no progress, no table\n";

enum {
    OPT_BUILTIN = 256,
    OPT_RUN_TO_COMPLETION,
    OPT_CONNECT,
    OPT_RUNS,
    OPT_DURATION,
    OPT_WARMUP,
    OPT_COUNT,
    OPT_REQUEST_SIZE,
    OPT_RESPONSE_SIZE,
    OPT_PROTOCOL,
    OPT_NO_STREAM,
    OPT_STREAM,
    OPT_READY_TIMEOUT,
    OPT_NEIGHBOUR,
    OPT_JSON,
    OPT_ECHO_SERVER,
    OPT_HELP,
};

static const struct option options[] = {
    {"file", required_argument, NULL, 'f'},
    {"builtin", required_argument, NULL, OPT_BUILTIN},
    {"port", required_argument, NULL, 'p'},
    {"run-to-completion", no_argument, NULL, OPT_RUN_TO_COMPLETION},
    {"connect", required_argument, NULL, OPT_CONNECT},
    {"isolation", required_argument, NULL, 'i'},
    {"out", required_argument, NULL, 'o'},
    {"runs", required_argument, NULL, OPT_RUNS},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"warmup", required_argument, NULL, OPT_WARMUP},
    {"count", required_argument, NULL, OPT_COUNT},
    {"request-size", required_argument, NULL, OPT_REQUEST_SIZE},
    {"response-size", required_argument, NULL, OPT_RESPONSE_SIZE},
    {"protocol", required_argument, NULL, OPT_PROTOCOL},
    {"no-stream", no_argument, NULL, OPT_NO_STREAM},
    {"stream", no_argument, NULL, OPT_STREAM},
    {"ready-timeout", required_argument, NULL, OPT_READY_TIMEOUT},
    {"neighbour", required_argument, NULL, OPT_NEIGHBOUR},
    {"json", no_argument, NULL, OPT_JSON},
    {"echo-server", required_argument, NULL, OPT_ECHO_SERVER},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static const char bench_usage_line[] =
    "hedge bench (-f SPEC.json --port PORT | --builtin echo | --connect HOST:PORT) [OPTIONS]; "
    "hedge bench --help lists them";

static int __attribute__((format(printf, 1, 2))) bad(const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return cli_usage_error("bench", bench_usage_line, "%s", msg);
}

static int parse_number(const char *text, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !isfinite(v) || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_levels(const char *text, struct hd_bench_options *o)
{
    cleanup_free char *copy = hd_xstrdup(text);
    o->n_levels = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        enum hd_isolation level;
        if (hd_isolation_parse(tok, &level) < 0)
            return bad("%s: \"%s\" is not an isolation level (process, container or vm)", "--isolation", tok);
        for (int i = 0; i < o->n_levels; i++)
            if (o->levels[i] == level)
                return bad("%s: \"%s\" is listed twice", "--isolation", tok);
        o->levels[o->n_levels++] = level;
    }
    if (o->n_levels == 0)
        return bad("%s: \"%s\" names no isolation level", "--isolation", text);
    return 0;
}

int cmd_bench(int argc, char **argv)
{
    struct hd_bench_options o = {
        .runs = 3,
        .n_levels = 3,
        .levels = {HD_ISOLATION_PROCESS, HD_ISOLATION_CONTAINER, HD_ISOLATION_VM},
        .client = {.request_size = 64, .duration_s = 5, .warmup_s = 1},
    };
    cleanup_spec struct hd_spec *spec = NULL;
    const char *out_dir = NULL, *file = NULL;
    bool json = false, run_to_completion = false, protocol_set = false, timeout_set = false;
    double response_size = -1;
    int no_stream = -1; /* -1: the default, stream only for the built-in echo */
    hd_error_t err = NULL;
    int opt;
    double v;
    optind = 1;
    opterr = 1;
    while ((opt = getopt_long(argc, argv, "+f:p:i:o:", options, NULL)) != -1) {
        switch (opt) {
        case 'f': file = optarg; break;
        case OPT_BUILTIN:
            if (strcmp(optarg, "echo") != 0)
                return bad("%s: \"%s\" is not a built-in workload (echo)", "--builtin", optarg);
            o.builtin_echo = true;
            break;
        case 'p':
            if (parse_number(optarg, 1, 65535, &v) < 0 || v != floor(v))
                return bad("%s: \"%s\" is not a TCP port (1..65535)", "--port", optarg);
            o.port = (int)v;
            break;
        case OPT_RUN_TO_COMPLETION: run_to_completion = true; break;
        case OPT_CONNECT: o.connect = optarg; break;
        case 'i': {
            int r = parse_levels(optarg, &o);
            if (r)
                return r;
            break;
        }
        case 'o': out_dir = optarg; break;
        case OPT_RUNS:
            if (parse_number(optarg, 1, 1000, &v) < 0 || v != floor(v))
                return bad("%s: \"%s\" is not a repetition count (1..1000)", "--runs", optarg);
            o.runs = (int)v;
            break;
        case OPT_DURATION:
            if (parse_number(optarg, 0.01, 86400, &o.client.duration_s) < 0)
                return bad("%s: \"%s\" is not a duration in seconds (0.01..86400)", "--duration", optarg);
            break;
        case OPT_WARMUP:
            if (parse_number(optarg, 0, 3600, &o.client.warmup_s) < 0)
                return bad("%s: \"%s\" is not a duration in seconds (0..3600)", "--warmup", optarg);
            break;
        case OPT_COUNT:
            if (parse_number(optarg, 1, 1e12, &v) < 0 || v != floor(v))
                return bad("%s: \"%s\" is not a transaction count", "--count", optarg);
            o.client.count = (uint64_t)v;
            break;
        case OPT_REQUEST_SIZE:
            if (parse_number(optarg, 1, 1 << 20, &v) < 0 || v != floor(v))
                return bad("%s: \"%s\" is not a size in bytes (1..1048576)", "--request-size", optarg);
            o.client.request_size = (size_t)v;
            break;
        case OPT_RESPONSE_SIZE:
            if (parse_number(optarg, 1, 1 << 20, &response_size) < 0 || response_size != floor(response_size))
                return bad("%s: \"%s\" is not a size in bytes (1..1048576)", "--response-size", optarg);
            break;
        case OPT_PROTOCOL:
            if (hd_bench_protocol_parse(optarg, &o.client.protocol) < 0)
                return bad("%s: \"%s\" is not a protocol (message, echo or connect)", "--protocol", optarg);
            protocol_set = true;
            break;
        case OPT_NO_STREAM: no_stream = 1; break;
        case OPT_STREAM: no_stream = 0; break;
        case OPT_READY_TIMEOUT:
            if (parse_number(optarg, 0.1, 3600, &o.ready_timeout_s) < 0)
                return bad("%s: \"%s\" is not a duration in seconds (0.1..3600)", "--ready-timeout", optarg);
            timeout_set = true;
            break;
        case OPT_NEIGHBOUR:
            if (hd_bench_neighbour_parse(optarg, &o.neighbour) < 0)
                return bad("%s: \"%s\" is not a neighbour (cpu, memory or fork)", "--neighbour", optarg);
            break;
        case OPT_JSON: json = true; break;
        case OPT_ECHO_SERVER: o.echo_server = optarg; break;
        case OPT_HELP:
            fputs("usage: ", stdout);
            fputs(usage, stdout);
            return 0;
        default: fprintf(stderr, "usage: %s", usage); return HD_EXIT_USAGE;
        }
    }
    if (optind < argc)
        return bad("%s \"%s\": unexpected argument", "argument", argv[optind]);
    int sources = (file != NULL) + o.builtin_echo + (o.connect != NULL);
    if (sources != 1)
        return cli_usage_error("bench", bench_usage_line,
                               sources ? "give one of -f SPEC, --builtin echo and --connect, not several"
                                       : "nothing to measure: give -f SPEC --port PORT, --builtin echo or "
                                         "--connect HOST:PORT");
    if (file) {
        if (!o.port && !run_to_completion)
            return cli_usage_error("bench", bench_usage_line,
                                   "-f %s: no port; give --port PORT for a server (ready = the port accepts) "
                                   "or --run-to-completion for a command (measured exec to exit)",
                                   file);
        if (o.port && run_to_completion)
            return cli_usage_error("bench", bench_usage_line, "--port and --run-to-completion exclude each other");
        spec = hd_spec_new();
        if (hd_spec_load_file(spec, file, &err) < 0)
            return cli_fail(&err);
        o.spec = spec;
        if (!protocol_set)
            o.client.protocol = HD_BENCH_CONNECT;
    } else if (run_to_completion) {
        return cli_usage_error("bench", bench_usage_line, "--run-to-completion needs -f SPEC");
    }
    if (o.builtin_echo && !o.port)
        o.port = 7777;
    if (o.connect && o.neighbour)
        return cli_usage_error("bench", bench_usage_line, "--neighbour needs a workload, not --connect");
    o.client.response_size = response_size > 0 ? (size_t)response_size : o.client.request_size;
    if (o.client.protocol == HD_BENCH_ECHO && o.client.response_size != o.client.request_size)
        return cli_usage_error("bench", bench_usage_line,
                               "--protocol echo: the response is the request echoed; "
                               "--response-size must equal --request-size");
    if (o.client.protocol == HD_BENCH_MESSAGE && (o.client.request_size < 18 || o.client.response_size < 14))
        return cli_usage_error("bench", bench_usage_line,
                               "--protocol message: requests need at least 18 bytes "
                               "and responses 14 (the message header)");
    o.no_stream = no_stream == -1 ? !o.builtin_echo : no_stream;
    if (!o.no_stream && o.client.protocol != HD_BENCH_MESSAGE)
        return cli_usage_error("bench", bench_usage_line,
                               "--stream needs --protocol message (a server that "
                               "counts what it reads, like hedge-echo-server)");
    if (!timeout_set) {
        o.ready_timeout_s = 30;
        for (int i = 0; i < o.n_levels; i++)
            if (o.levels[i] == HD_ISOLATION_VM)
                o.ready_timeout_s = 180;
    }
    o.quiet = json;

    struct hd_bench_report *report = NULL;
    if (hd_bench_run(&o, &report, &err) < 0)
        return cli_fail(&err);
    int ret = 0;
    if (out_dir || !json) {
        const char *dir = out_dir ? out_dir : "hedge-bench-report";
        if (hd_bench_report_write(report, dir, &err) < 0) {
            ret = cli_fail(&err);
        } else if (!json) {
            fprintf(stderr, "hedge bench: report written to %s/report.html and %s/report.json\n", dir, dir);
        }
    }
    if (json) {
        cleanup_free char *text = hd_bench_report_json(report);
        puts(text);
    } else {
        hd_bench_report_print_table(report, stdout);
    }
    hd_bench_report_free(report);
    return ret;
}
