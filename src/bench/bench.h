/*
 * bench.h - `hedge bench`: measure one workload under several isolation
 * levels and draw the answer (issue 7).
 *
 * Three parts, one file each:
 *   bench_client.c  the load generators: readiness probe, request/response
 *                   (netperf TCP_RR semantics) and stream (TCP_STREAM)
 *   bench_runner.c  the experiment: its own network namespace, the lock, the
 *                   workloads started through the runtime library (run.h),
 *                   levels interleaved, CPU and memory accounting
 *   bench_report.c  medians and spread, the terminal table, report.json and
 *                   report.html with inline SVG bar charts
 *   bench_image.c   the built-in echo workload's image in the image store
 * The isolation level is only a field of the spec handed to
 * hd_workload_create, so every level is measured by the same code.
 */
#ifndef HEDGE_BENCH_H
#define HEDGE_BENCH_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "base/error.h"
#include "spec/spec.h"

/* ---- clients (bench_client.c) ---- */

enum hd_bench_protocol {
    HD_BENCH_MESSAGE = 0, /* sockperf framing: hedge-echo-server or `sockperf server` */
    HD_BENCH_ECHO,        /* raw bytes echoed back byte for byte (any echo server) */
    HD_BENCH_CONNECT,     /* a transaction is connect + close (any TCP server) */
};

const char *hd_bench_protocol_name(enum hd_bench_protocol p);
int hd_bench_protocol_parse(const char *text, enum hd_bench_protocol *out);

struct hd_bench_target {
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char text[80]; /* "10.89.0.2:8080" */
};

/* Fill a target from an IPv4/IPv6 literal and a port. */
int hd_bench_target_set(struct hd_bench_target *t, const char *host, int port, hd_error_t *err);

struct hd_bench_client_options {
    enum hd_bench_protocol protocol;
    size_t request_size;  /* bytes per request (message: total, header included) */
    size_t response_size; /* bytes per response */
    double duration_s;    /* measured time, after the warm-up */
    double warmup_s;      /* excluded from every figure */
    uint64_t count;       /* >0: stop after this many measured transactions instead */
    size_t stream_chunk;  /* bytes per write in the stream test */
    /* Called once when the warm-up ends and once when measuring ends. */
    void (*on_measure)(void *ctx, bool start);
    void *ctx;
    volatile sig_atomic_t *stop; /* set from a signal handler: end early */
};

struct hd_bench_rr_result {
    uint64_t transactions; /* measured (after the warm-up) */
    double elapsed_s;
    double tps;
    double p50_us, p90_us, p99_us, mean_us;
};

struct hd_bench_stream_result {
    uint64_t bytes; /* received by the server after the warm-up */
    double elapsed_s;
    double mbit_s;
};

/*
 * Wait until target accepts a TCP connection. pidfd (or -1) is the
 * workload's: if it exits first, that is an error naming its status. Returns
 * 0 with *elapsed_ns, or -1 (timeout, workload gone).
 */
int hd_bench_wait_ready(const struct hd_bench_target *t, int pidfd, double timeout_s, volatile sig_atomic_t *stop,
                        hd_error_t *err);
int hd_bench_rr(const struct hd_bench_target *t, const struct hd_bench_client_options *o,
                struct hd_bench_rr_result *out, hd_error_t *err);
int hd_bench_stream(const struct hd_bench_target *t, const struct hd_bench_client_options *o,
                    struct hd_bench_stream_result *out, hd_error_t *err);

/* ---- the experiment (bench_runner.c) ---- */

enum hd_bench_neighbour {
    HD_BENCH_NEIGHBOUR_NONE = 0,
    HD_BENCH_NEIGHBOUR_CPU,
    HD_BENCH_NEIGHBOUR_MEMORY,
    HD_BENCH_NEIGHBOUR_FORK,
};

const char *hd_bench_neighbour_name(enum hd_bench_neighbour n);
int hd_bench_neighbour_parse(const char *text, enum hd_bench_neighbour *out);

#define HD_BENCH_MAX_LEVELS 3

struct hd_bench_options {
    const struct hd_spec *spec; /* the workload; NULL with builtin_echo */
    bool builtin_echo;
    int port;            /* 0: run-to-completion command (start = exec to exit) */
    const char *connect; /* "HOST:PORT": measure a server already running; no workload */
    enum hd_isolation levels[HD_BENCH_MAX_LEVELS];
    int n_levels;
    int runs; /* repetitions per level */
    double ready_timeout_s;
    bool no_stream;
    enum hd_bench_neighbour neighbour;
    bool quiet; /* no progress on stderr */
    struct hd_bench_client_options client;
    const char *echo_server; /* path of hedge-echo-server; NULL: find it */
};

struct hd_bench_report;

/* Run the whole experiment. *out is freed with hd_bench_report_free. */
int hd_bench_run(const struct hd_bench_options *o, struct hd_bench_report **out, hd_error_t *err);

/*
 * The image of the built-in echo workload (bench_image.c): imported into the
 * store under state_dir at first use from the static server binary, named
 * hedge-bench/echo:<digest prefix of the binary>. Returns the name (caller
 * frees). tmp_dir holds the archive while it is imported.
 */
char *hd_bench_echo_image(const char *state_dir, const char *server_path, const char *tmp_dir, hd_error_t *err);

/* ---- the report (bench_report.c) ---- */

enum hd_bench_figure {
    HD_FIG_START_MS = 0,
    HD_FIG_EXIT_MS, /* run-to-completion: create to exit */
    HD_FIG_RR_P50_US,
    HD_FIG_RR_P90_US,
    HD_FIG_RR_P99_US,
    HD_FIG_RR_TPS,
    HD_FIG_STREAM_MBIT,
    HD_FIG_HOST_CPU_10K,
    HD_FIG_WORKLOAD_CPU_10K,
    HD_FIG_WORKLOAD_MEM_MIB,
    HD_FIG_OVERHEAD_MEM_MIB,
    HD_FIG_NB_RR_P50_US,
    HD_FIG_NB_RR_P99_US,
    HD_FIG_NB_RR_TPS,
    HD_FIG_COUNT,
};

struct hd_bench_figure_info {
    const char *key; /* report.json key, unit in the name */
    const char *title;
    const char *unit;
    bool lower_is_better;
};

extern const struct hd_bench_figure_info hd_bench_figures[HD_FIG_COUNT];

struct hd_bench_report *hd_bench_report_new(const struct hd_bench_options *o);
void hd_bench_report_free(struct hd_bench_report *r);
/* One sample of one figure for the level at index `level` of the options. */
void hd_bench_report_add(struct hd_bench_report *r, int level, enum hd_bench_figure f, double value);
void hd_bench_report_set_netns(struct hd_bench_report *r, const char *netns);
void hd_bench_report_add_note(struct hd_bench_report *r, const char *note);

void hd_bench_report_print_table(const struct hd_bench_report *r, FILE *out);
char *hd_bench_report_json(const struct hd_bench_report *r);
/* Write report.json, report.html and charts/<figure>.svg into dir. */
int hd_bench_report_write(const struct hd_bench_report *r, const char *dir, hd_error_t *err);

#endif
