/*
 * invoker.h - runs a function (a workload spec with a `function` block) once
 * per invocation, independent of how invocations arrive (MQTT messages and
 * `hedge invoke` requests, both through hedge-functions, which hedged runs as
 * a function deployment's host).
 *
 * on-demand: each invocation is one run to completion: the payload is
 * written to the workload's stdin, its stdout (at most 1 MiB, exit status 0)
 * is the result. Up to max_concurrency invocations run at once, one worker
 * thread per slot; after an invocation a slot prepares its next instance
 * (hd_workload_create: cgroup, rootfs, backend prepare) so the next one only
 * starts it ("warm"); a warm instance unused for idle_timeout is destroyed.
 *
 * pinned: one long-lived instance, started with the invoker. Invocations are
 * frames on its stdin and results frames on its stdout, one at a time and in
 * order; a frame is a 4-byte big-endian length then that many bytes. If the
 * instance exits it is restarted per the spec's restart policy (an instance
 * hedge killed for a timeout or bad output is always restarted).
 *
 * Either way: waiting invocations are bounded by max_queue (overflow gets an
 * error result at once), a timeout kills the invocation (on-demand) or the
 * instance (pinned) and yields an error result. Results come back through a
 * queue whose eventfd (hd_invoker_fd) the caller polls.
 */
#ifndef HEDGE_INVOKER_H
#define HEDGE_INVOKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "spec/spec.h"

#define HD_INVOKER_MAX_OUTPUT (1u << 20)

struct hd_invocation {
    char *reply_topic;
    void *payload;
    size_t payload_len;
    void *correlation; /* MQTT 5 correlation data, copied to the reply */
    size_t correlation_len;
    uint64_t received_ns;
    /* filled when done */
    bool error; /* body is an error event (JSON) */
    void *body;
    size_t body_len;
    uint64_t done_ns;
};

struct hd_invoker_stats {
    uint64_t invocations, errors, timeouts, rejected, restarts;
    uint64_t p50_ns, p99_ns; /* received -> result ready, over the last 1024 results */
};

struct hd_invoker;

/* spec must outlive the invoker. Pinned: starts the instance now. */
struct hd_invoker *hd_invoker_new(const struct hd_spec *spec, const char *state_dir, hd_error_t *err);
void hd_invoker_free(struct hd_invoker *inv);

/* Hand over an invocation (ownership passes). Rejections come back as results too. */
void hd_invoker_submit(struct hd_invoker *inv, struct hd_invocation *call);
/* Readable when results are waiting. */
int hd_invoker_fd(const struct hd_invoker *inv);
/* Next finished invocation or NULL (drains the eventfd). */
struct hd_invocation *hd_invoker_next_result(struct hd_invoker *inv);
void hd_invocation_free(struct hd_invocation *call);
void hd_invoker_get_stats(struct hd_invoker *inv, struct hd_invoker_stats *out);

#endif
