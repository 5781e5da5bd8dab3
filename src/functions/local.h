/*
 * local.h - what hedge-functions offers on the node besides MQTT, when
 * hedged runs it as a function deployment (src/daemon/function_host.c):
 *
 *   - a unix socket, DIR/invoke.sock, for `hedge invoke NAME`: the client
 *     sends one frame (4-byte big-endian length, then the payload); the
 *     answer is one byte, 'R' (result) or 'E' (error event, JSON), then a
 *     frame with the body; then the connection closes. Invocations go
 *     through the same invoker (queue bound, timeout, stats) as MQTT ones.
 *   - DIR/stats.json, the invoker's counters and latency percentiles,
 *     rewritten atomically at most 4 times a second and on exit; hedged
 *     reads it for `hedge ps`, GET /v1/workloads and /metrics.
 */
#ifndef HEDGE_FUNCTIONS_LOCAL_H
#define HEDGE_FUNCTIONS_LOCAL_H

#include <stdbool.h>

#include "base/error.h"
#include "functions/invoker.h"

#define HD_LOCAL_MAX_REQUEST HD_INVOKER_MAX_OUTPUT

struct hd_local;

/* Bind DIR/invoke.sock (mode 0600) and prepare DIR/stats.json. */
struct hd_local *hd_local_new(const char *dir, hd_error_t *err);
/* Remove the socket (the stats file stays: the last figures of the run). */
void hd_local_free(struct hd_local *l);
int hd_local_fd(const struct hd_local *l);
/* The listening socket is readable: take one request and submit it to inv. */
void hd_local_accept(struct hd_local *l, struct hd_invoker *inv);
/* A finished invocation: when it came from the socket, answer and free it and return true. */
bool hd_local_complete(struct hd_local *l, struct hd_invocation *call);
/* Rewrite stats.json when 250 ms have passed since the last write (force: now). */
void hd_local_write_stats(struct hd_local *l, struct hd_invoker *inv, bool force);

#endif
