/*
 * loop.h - the one event loop every long-running hedge program uses: hedged
 * (API, supervisor, embedded broker and uplink), hedge-broker, hedge-uplink.
 *
 * A turn of the loop: wait in epoll for the watched fds (or the next timer),
 * run the callbacks of the ready fds, run the timers that are due, then run
 * the deferred work queued during the turn (hd_loop_defer). Deferred work is
 * how a subsystem batches: the broker commits its store once and writes
 * every socket's output once per turn, after all the input of the turn.
 *
 * Callbacks may add or remove watches, timers and deferred work freely,
 * including the one being dispatched (a removed watch is freed only after the
 * turn's batch of events). Everything runs on one thread.
 */
#ifndef HEDGE_BASE_LOOP_H
#define HEDGE_BASE_LOOP_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"

struct hd_loop;
struct hd_watch;
struct hd_timer;
struct hd_defer;
typedef void (*hd_fd_fn)(struct hd_loop *loop, int fd, uint32_t events, void *data);
typedef void (*hd_timer_fn)(struct hd_loop *loop, void *data);
typedef void (*hd_defer_fn)(struct hd_loop *loop, void *data);
typedef void (*hd_signal_fn)(struct hd_loop *loop, int signo, void *data);

struct hd_loop *hd_loop_new(hd_error_t *err);
/* Frees the loop and what is still registered (the fds are not closed, deferred work does not run). */
void hd_loop_free(struct hd_loop *loop);

/* Watch fd for epoll events (EPOLLIN, EPOLLOUT, ... level-triggered unless EPOLLET is given). */
struct hd_watch *hd_loop_watch(struct hd_loop *loop, int fd, uint32_t events, hd_fd_fn fn, void *data, hd_error_t *err);
/* Change the events of a watch; -1 with errno set when epoll refuses. */
int hd_loop_modify(struct hd_loop *loop, struct hd_watch *w, uint32_t events);
/* Stop watching (the fd is not closed). Safe inside any callback, its own included; NULL is ignored. */
void hd_loop_unwatch(struct hd_loop *loop, struct hd_watch *w);

/* Run fn once, seconds from now. Timers due at the same time run in the order they were added. */
struct hd_timer *hd_loop_timer(struct hd_loop *loop, double seconds, hd_timer_fn fn, void *data);
/* Cancel a timer that has not fired yet (a fired timer is already freed: forget its pointer). */
void hd_loop_cancel(struct hd_loop *loop, struct hd_timer *t);

/* Run fn once at the end of the current turn (after its fd callbacks and timers; work deferred by
 * deferred work runs in the same turn). Outside a turn: at the end of the next one. */
struct hd_defer *hd_loop_defer(struct hd_loop *loop, hd_defer_fn fn, void *data);
/* Cancel deferred work that has not run yet. */
void hd_loop_cancel_defer(struct hd_loop *loop, struct hd_defer *d);

/* Block the signals in set and deliver them through a signalfd watch: fn runs in the loop, once per
 * signal received (never in a signal handler). Only one signal watch per loop. */
int hd_loop_signals(struct hd_loop *loop, const sigset_t *set, hd_signal_fn fn, void *data, hd_error_t *err);

/* Run turns until hd_loop_quit(). */
int hd_loop_run(struct hd_loop *loop, hd_error_t *err);
/* One turn, waiting at most timeout_ms for an event (-1: until one comes or a timer is due). */
int hd_loop_run_once(struct hd_loop *loop, int timeout_ms, hd_error_t *err);
/* Make hd_loop_run return after the current turn (the remaining events of the batch are skipped,
 * the turn's deferred work still runs). */
void hd_loop_quit(struct hd_loop *loop);

#endif
