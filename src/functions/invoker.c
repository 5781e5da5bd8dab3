/*
 * invoker.c - on-demand and pinned function instances (see invoker.h).
 *
 * Threads: a worker per concurrency slot (pinned: one) blocks on the
 * instance's pipes; the caller's thread only queues invocations and collects
 * results through an eventfd. The workload API (hd_workload_create/start/
 * signal/wait/destroy) is used from the workers; each worker owns its
 * instances outright, so no workload is touched by two threads.
 *
 * I/O with an instance never blocks without a deadline: stdin, stdout and a
 * pidfd of the workload are polled in slices of at most 100 ms, so a timeout
 * or a stop request is noticed, and a workload that exits while keeping its
 * stdout open elsewhere does not hang the slot.
 *
 * Instance states (struct instance): EMPTY -> CREATED (prepared, not
 * started: "warm") -> RUNNING -> EMPTY (waited and destroyed).
 */
#include "base/log.h"
#include "functions/invoker.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "runtime/backend.h"
#include "runtime/run.h"
#include "base/util.h"

#define INVOKER_LATENCY_RING 1024

enum instance_state { INSTANCE_EMPTY, INSTANCE_CREATED, INSTANCE_RUNNING };

struct instance {
    enum instance_state state;
    struct hd_workload *w;
    int in_fd, out_fd;       /* our ends: write requests, read results */
    int child_in, child_out; /* the workload's ends, closed once started */
    int pidfd;
    uint64_t created_ns, started_ns;
};

struct call_node {
    struct hd_invocation *call;
    struct call_node *next;
};

struct call_list {
    struct call_node *head, *tail;
    size_t len;
};

struct hd_invoker {
    const struct hd_spec *spec;
    char *state_dir;
    const char *name;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct call_list pending, done;
    int idle_workers;
    bool stopping;
    int event_fd;
    pthread_t *threads;
    int n_threads;
    struct hd_invoker_stats stats;
    int64_t timeout_ms, idle_timeout_ms; /* the spec's, or the defaults */
    uint64_t latency_ns[INVOKER_LATENCY_RING];
    size_t n_latency; /* results recorded (ring index = n % size) */
};

static void list_push(struct call_list *l, struct hd_invocation *call)
{
    struct call_node *n = hd_xcalloc(1, sizeof(*n));
    n->call = call;
    if (l->tail)
        l->tail->next = n;
    else
        l->head = n;
    l->tail = n;
    l->len++;
}

static struct hd_invocation *list_pop(struct call_list *l)
{
    struct call_node *n = l->head;
    if (!n)
        return NULL;
    l->head = n->next;
    if (!l->head)
        l->tail = NULL;
    l->len--;
    struct hd_invocation *call = n->call;
    free(n);
    return call;
}

void hd_invocation_free(struct hd_invocation *call)
{
    if (!call)
        return;
    free(call->reply_topic);
    free(call->payload);
    free(call->correlation);
    free(call->body);
    free(call);
}

/* ---- results ---- */

static void invoker_post(struct hd_invoker *inv, struct hd_invocation *call)
{
    call->done_ns = hd_now_ns();
    pthread_mutex_lock(&inv->lock);
    if (call->error)
        inv->stats.errors++;
    if (call->received_ns && call->done_ns >= call->received_ns)
        inv->latency_ns[inv->n_latency++ % INVOKER_LATENCY_RING] = call->done_ns - call->received_ns;
    list_push(&inv->done, call);
    pthread_mutex_unlock(&inv->lock);
    uint64_t one = 1;
    if (write(inv->event_fd, &one, sizeof(one)) < 0) {
        /* the counter cannot overflow in practice; nothing to do */
    }
}

/* Make call an error event: {"error": KIND, "function": NAME, "detail": TEXT}. */
static void call_fail(struct hd_invoker *inv, struct hd_invocation *call, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void call_fail(struct hd_invoker *inv, struct hd_invocation *call, const char *kind, const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    json_t *o = json_pack("{s:s, s:s, s:s}", "error", kind, "function", inv->name, "detail", detail);
    free(call->body);
    call->body = json_dumps(o, JSON_COMPACT);
    call->body_len = strlen(call->body);
    call->error = true;
    json_decref(o);
}

/* ---- instances ---- */

static void instance_reset_fds(struct instance *ins)
{
    int *fds[] = {&ins->in_fd, &ins->out_fd, &ins->child_in, &ins->child_out, &ins->pidfd};
    for (size_t i = 0; i < ARRAY_SIZE(fds); i++) {
        if (*fds[i] >= 0)
            close(*fds[i]);
        *fds[i] = -1;
    }
}

static void instance_init(struct instance *ins)
{
    memset(ins, 0, sizeof(*ins));
    ins->in_fd = ins->out_fd = ins->child_in = ins->child_out = ins->pidfd = -1;
}

static void instance_destroy(struct instance *ins)
{
    instance_reset_fds(ins);
    hd_workload_destroy(ins->w);
    ins->w = NULL;
    ins->state = INSTANCE_EMPTY;
}

static int instance_create(struct hd_invoker *inv, struct instance *ins, hd_error_t *err)
{
    int in_pipe[2], out_pipe[2];
    if (pipe2(in_pipe, O_CLOEXEC) < 0)
        return hd_error_sys(err, "pipe");
    if (pipe2(out_pipe, O_CLOEXEC) < 0) {
        close(in_pipe[0]);
        close(in_pipe[1]);
        return hd_error_sys(err, "pipe");
    }
    ins->child_in = in_pipe[0];
    ins->in_fd = in_pipe[1];
    ins->out_fd = out_pipe[0];
    ins->child_out = out_pipe[1];
    struct hd_run_options opts = {
        .state_dir = inv->state_dir, .set_stdio = true, .stdio = {ins->child_in, ins->child_out, STDERR_FILENO}};
    if (hd_workload_create(inv->spec, &opts, &ins->w, err) < 0) {
        instance_reset_fds(ins);
        ins->w = NULL;
        return -1;
    }
    ins->state = INSTANCE_CREATED;
    ins->created_ns = hd_now_ns();
    return 0;
}

static int instance_start(struct instance *ins, hd_error_t *err)
{
    if (!ins->w)
        return hd_error_set(err, 0, "start: no prepared instance");
    if (hd_workload_start(ins->w, err) < 0)
        return -1;
    close(ins->child_in);
    close(ins->child_out);
    ins->child_in = ins->child_out = -1;
    ins->state = INSTANCE_RUNNING;
    ins->started_ns = hd_now_ns();
    ins->pidfd = (int)syscall(SYS_pidfd_open, ins->w->pid, 0);
    if (ins->pidfd < 0)
        return hd_error_sys(err, "pidfd_open %d", ins->w->pid);
    fcntl(ins->in_fd, F_SETFL, O_NONBLOCK);
    fcntl(ins->out_fd, F_SETFL, O_NONBLOCK);
    return 0;
}

/* Kill (if asked) and wait; the instance is left for instance_destroy. */
static struct hd_exit instance_reap(struct instance *ins, bool kill_it)
{
    struct hd_exit exit = {.code = -1, .status = -1};
    if (ins->state == INSTANCE_RUNNING) {
        if (kill_it)
            hd_workload_signal(ins->w, SIGKILL, NULL);
        hd_error_t err = NULL;
        if (hd_workload_wait(ins->w, &exit, &err) < 0)
            hd_error_free(&err);
        ins->state = INSTANCE_CREATED;
    }
    return exit;
}

/* Kill (if asked), wait and destroy; returns the exit. */
static struct hd_exit instance_end(struct instance *ins, bool kill_it)
{
    struct hd_exit exit = instance_reap(ins, kill_it);
    instance_destroy(ins);
    return exit;
}

static bool instance_exited(struct instance *ins)
{
    struct pollfd p = {.fd = ins->pidfd, .events = POLLIN};
    return ins->pidfd >= 0 && poll(&p, 1, 0) > 0;
}

static bool invoker_stopping(struct hd_invoker *inv)
{
    pthread_mutex_lock(&inv->lock);
    bool s = inv->stopping;
    pthread_mutex_unlock(&inv->lock);
    return s;
}

/*
 * Exchange bytes with a running instance until `done` says so, the deadline
 * passes or the instance exits: write out[0..out_len) to stdin, append stdout
 * to *in. Returns 0 when done, 1 on timeout, 2 when the instance exited (its
 * stdout drained), 3 on stop, 4 when the output limit was passed.
 */
static int instance_exchange(struct hd_invoker *inv, struct instance *ins, const uint8_t *out, size_t out_len,
                             bool close_stdin, uint8_t **in, size_t *in_len, size_t *in_cap,
                             bool (*done)(const uint8_t *, size_t, void *), void *ctx, uint64_t deadline_ns)
{
    size_t written = 0;
    bool out_eof = false;
    for (;;) {
        if (written == out_len && close_stdin && ins->in_fd >= 0) {
            close(ins->in_fd);
            ins->in_fd = -1;
        }
        if (done && done(*in, *in_len, ctx))
            return 0;
        if (*in_len > HD_INVOKER_MAX_OUTPUT + 4)
            return 4;
        uint64_t now = hd_now_ns();
        if (now >= deadline_ns)
            return 1;
        if (invoker_stopping(inv))
            return 3;
        struct pollfd fds[3] = {
            {.fd = written < out_len ? ins->in_fd : -1, .events = POLLOUT},
            {.fd = out_eof ? -1 : ins->out_fd, .events = POLLIN},
            {.fd = ins->pidfd, .events = POLLIN},
        };
        uint64_t slice = (deadline_ns - now) / 1000000 + 1;
        if (poll(fds, 3, slice > 100 ? 100 : (int)slice) < 0 && errno != EINTR)
            return 2;
        if (fds[0].revents) {
            ssize_t n = write(ins->in_fd, out + written, out_len - written);
            if (n > 0)
                written += (size_t)n;
            else if (n < 0 && errno != EAGAIN && errno != EINTR)
                written = out_len; /* EPIPE: the instance does not read; see what it says */
        }
        if (fds[1].revents || fds[2].revents) {
            for (;;) {
                if (*in_cap - *in_len < 65536) {
                    *in_cap = *in_cap ? *in_cap * 2 : 65536;
                    *in = hd_xrealloc(*in, *in_cap);
                }
                ssize_t n = read(ins->out_fd, *in + *in_len, *in_cap - *in_len);
                if (n > 0) {
                    *in_len += (size_t)n;
                    if (*in_len > HD_INVOKER_MAX_OUTPUT + 4)
                        break;
                    continue;
                }
                if (n == 0)
                    out_eof = true;
                break;
            }
        }
        if (done && done(*in, *in_len, ctx))
            return 0;
        if (fds[2].revents || (out_eof && !done)) {
            if (!done && !fds[2].revents) {
                /* stdout closed: give the process the rest of the deadline to exit */
                struct pollfd p = {.fd = ins->pidfd, .events = POLLIN};
                while (!invoker_stopping(inv) && hd_now_ns() < deadline_ns && poll(&p, 1, 100) == 0)
                    ;
                if (hd_now_ns() >= deadline_ns)
                    return 1;
            }
            return 2;
        }
        if (out_eof && done)
            return 2;
    }
}

/* ---- on-demand ---- */

static void ondemand_invoke(struct hd_invoker *inv, struct instance *ins, struct hd_invocation *call)
{
    hd_error_t err = NULL;
    if ((ins->state == INSTANCE_EMPTY && instance_create(inv, ins, &err) < 0) || instance_start(ins, &err) < 0) {
        call_fail(inv, call, "start", "%s", hd_error_text(err));
        hd_error_free(&err);
        instance_reap(ins, true);
        return;
    }
    uint8_t *in = NULL;
    size_t in_len = 0, in_cap = 0;
    uint64_t deadline = hd_now_ns() + (uint64_t)inv->timeout_ms * 1000000ull;
    int r = instance_exchange(inv, ins, call->payload, call->payload_len, true, &in, &in_len, &in_cap, NULL, NULL,
                              deadline);
    /* Reaped now, removed by the caller after the result is out. */
    struct hd_exit exit = instance_reap(ins, r != 2);
    if (r == 1) {
        pthread_mutex_lock(&inv->lock);
        inv->stats.timeouts++;
        pthread_mutex_unlock(&inv->lock);
        call_fail(inv, call, "timeout", "killed after %lld ms", (long long)inv->timeout_ms);
    } else if (r == 3) {
        call_fail(inv, call, "stopped", "the function is being stopped");
    } else if (r == 4 || in_len > HD_INVOKER_MAX_OUTPUT) {
        call_fail(inv, call, "bad output", "more than %u bytes on stdout", HD_INVOKER_MAX_OUTPUT);
    } else if (exit.code != 0) {
        call_fail(inv, call, "exit", "exited with code %d%s", exit.code, exit.oom_killed ? " (out of memory)" : "");
    } else {
        call->body = in;
        call->body_len = in_len;
        in = NULL;
    }
    free(in);
}

struct worker_arg {
    struct hd_invoker *inv;
};

static void *ondemand_worker(void *arg)
{
    struct hd_invoker *inv = arg;
    struct instance warm;
    instance_init(&warm);
    uint64_t idle_ns = (uint64_t)inv->idle_timeout_ms * 1000000ull;
    pthread_mutex_lock(&inv->lock);
    for (;;) {
        inv->idle_workers++;
        while (!inv->stopping && !inv->pending.len) {
            if (warm.state == INSTANCE_CREATED) {
                uint64_t expire = warm.created_ns + idle_ns;
                if (hd_now_ns() >= expire) {
                    pthread_mutex_unlock(&inv->lock);
                    instance_destroy(&warm);
                    pthread_mutex_lock(&inv->lock);
                    continue;
                }
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                uint64_t wait_ns = expire - hd_now_ns();
                ts.tv_sec += (time_t)(wait_ns / 1000000000ull);
                ts.tv_nsec += (long)(wait_ns % 1000000000ull);
                if (ts.tv_nsec >= 1000000000L) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&inv->wake, &inv->lock, &ts);
            } else {
                pthread_cond_wait(&inv->wake, &inv->lock);
            }
        }
        inv->idle_workers--;
        if (inv->stopping)
            break;
        struct hd_invocation *call = list_pop(&inv->pending);
        pthread_mutex_unlock(&inv->lock);
        ondemand_invoke(inv, &warm, call);
        invoker_post(inv, call);
        instance_destroy(&warm);
        /* Prepare the next instance now, off the next invocation's path. */
        if (!invoker_stopping(inv)) {
            hd_error_t err = NULL;
            if (instance_create(inv, &warm, &err) < 0) {
                hd_log(HD_LOG_WARN, "functions", "%s: prepare a warm instance: %s", inv->name, hd_error_text(err));
                hd_error_free(&err);
            }
        }
        pthread_mutex_lock(&inv->lock);
    }
    pthread_mutex_unlock(&inv->lock);
    instance_destroy(&warm);
    return NULL;
}

/* ---- pinned ---- */

struct frame_want {
    uint32_t len;
    bool have_len;
};

static bool frame_complete(const uint8_t *buf, size_t len, void *ctx)
{
    struct frame_want *f = ctx;
    if (len < 4)
        return false;
    f->len = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 | buf[3];
    f->have_len = true;
    return f->len > HD_INVOKER_MAX_OUTPUT || len >= 4 + (size_t)f->len;
}

/* Whether the restart policy allows another start after `exit`. */
static bool pinned_may_restart(struct hd_invoker *inv, const struct hd_exit *exit, bool killed_by_us, int *retries)
{
    const struct hd_restart *r = &inv->spec->restart;
    if (killed_by_us || r->policy == HD_RESTART_ALWAYS)
        return true;
    if (r->policy == HD_RESTART_ON_FAILURE && exit->code != 0)
        return r->max_retries == 0 || (*retries)++ < r->max_retries;
    return false;
}

static void *pinned_worker(void *arg)
{
    struct hd_invoker *inv = arg;
    struct instance ins;
    instance_init(&ins);
    int retries = 0;
    bool dead = false;
    char dead_reason[256] = "";
    uint8_t *in = NULL;
    size_t in_len = 0, in_cap = 0;
    while (!invoker_stopping(inv)) {
        if (ins.state == INSTANCE_EMPTY && !dead) {
            hd_error_t err = NULL;
            if (instance_create(inv, &ins, &err) < 0 || instance_start(&ins, &err) < 0) {
                hd_log(HD_LOG_ERROR, "functions", "%s: start: %s", inv->name, hd_error_text(err));
                snprintf(dead_reason, sizeof(dead_reason), "start failed: %s", hd_error_text(err));
                hd_error_free(&err);
                instance_end(&ins, true);
                dead = true;
                continue;
            }
        }
        pthread_mutex_lock(&inv->lock);
        if (!inv->pending.len && !inv->stopping) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += 100000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&inv->wake, &inv->lock, &ts);
        }
        struct hd_invocation *call = inv->stopping ? NULL : list_pop(&inv->pending);
        pthread_mutex_unlock(&inv->lock);
        if (!call) {
            if (ins.state == INSTANCE_RUNNING && instance_exited(&ins)) {
                /* Exited between invocations: restart per policy. */
                struct hd_exit exit = instance_end(&ins, false);
                hd_log(HD_LOG_WARN, "functions", "%s: instance exited with code %d", inv->name, exit.code);
                if (pinned_may_restart(inv, &exit, false, &retries)) {
                    pthread_mutex_lock(&inv->lock);
                    inv->stats.restarts++;
                    pthread_mutex_unlock(&inv->lock);
                } else {
                    dead = true;
                    snprintf(dead_reason, sizeof(dead_reason), "instance exited with code %d (restart policy %s)",
                             exit.code, inv->spec->restart.policy == HD_RESTART_NEVER ? "never" : "exhausted");
                }
            }
            continue;
        }
        if (dead) {
            call_fail(inv, call, "not running", "%s", dead_reason);
            invoker_post(inv, call);
            continue;
        }
        uint8_t *frame = hd_xmalloc(call->payload_len + 4);
        uint32_t n = (uint32_t)call->payload_len;
        frame[0] = (uint8_t)(n >> 24), frame[1] = (uint8_t)(n >> 16), frame[2] = (uint8_t)(n >> 8),
        frame[3] = (uint8_t)n;
        memcpy(frame + 4, call->payload, call->payload_len);
        struct frame_want want = {0};
        in_len = 0;
        uint64_t deadline = hd_now_ns() + (uint64_t)inv->timeout_ms * 1000000ull;
        int r = instance_exchange(inv, &ins, frame, call->payload_len + 4, false, &in, &in_len, &in_cap, frame_complete,
                                  &want, deadline);
        free(frame);
        bool killed = false;
        if (r == 0 && want.len <= HD_INVOKER_MAX_OUTPUT) {
            call->body = hd_xmalloc(want.len + 1);
            memcpy(call->body, in + 4, want.len);
            call->body_len = want.len;
            /* Anything past the frame is a protocol error of the function: drop it with the instance. */
            if (in_len != 4 + (size_t)want.len) {
                killed = true;
                hd_log(HD_LOG_WARN, "functions", "%s: bytes after a reply frame; restarting the instance", inv->name);
            }
        } else if (r == 1) {
            pthread_mutex_lock(&inv->lock);
            inv->stats.timeouts++;
            pthread_mutex_unlock(&inv->lock);
            call_fail(inv, call, "timeout", "killed after %lld ms; the instance is restarted",
                      (long long)inv->timeout_ms);
            killed = true;
        } else if (r == 3) {
            call_fail(inv, call, "stopped", "the function is being stopped");
        } else if (r == 0 || r == 4) {
            call_fail(inv, call, "bad output", "reply frame of %u bytes (limit %u); the instance is restarted",
                      want.len, HD_INVOKER_MAX_OUTPUT);
            killed = true;
        } else {
            call_fail(inv, call, "crashed", "the instance exited during the invocation");
        }
        invoker_post(inv, call);
        if (killed || r == 2) {
            struct hd_exit exit = instance_end(&ins, killed);
            if (!pinned_may_restart(inv, &exit, killed, &retries)) {
                dead = true;
                snprintf(dead_reason, sizeof(dead_reason), "instance exited with code %d (restart policy %s)",
                         exit.code, inv->spec->restart.policy == HD_RESTART_NEVER ? "never" : "exhausted");
            } else {
                pthread_mutex_lock(&inv->lock);
                inv->stats.restarts++;
                pthread_mutex_unlock(&inv->lock);
            }
        }
    }
    free(in);
    instance_end(&ins, true);
    return NULL;
}

/* ---- public ---- */

struct hd_invoker *hd_invoker_new(const struct hd_spec *spec, const char *state_dir, hd_error_t *err)
{
    if (spec->function.mode == HD_FUNCTION_NONE)
        return hd_error_set(err, 0, "function: the spec has no function block"), NULL;
    if (hd_spec_validate(spec, err) < 0)
        return NULL;
    struct hd_invoker *inv = hd_xcalloc(1, sizeof(*inv));
    inv->spec = spec;
    inv->state_dir = state_dir ? hd_xstrdup(state_dir) : NULL;
    inv->name = spec->name ? spec->name : "function";
    inv->timeout_ms = spec->function.timeout_ms ? spec->function.timeout_ms : 10000;
    inv->idle_timeout_ms = spec->function.idle_timeout_ms ? spec->function.idle_timeout_ms : 60000;
    inv->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (inv->event_fd < 0) {
        hd_error_sys(err, "eventfd");
        free(inv->state_dir);
        free(inv);
        return NULL;
    }
    pthread_mutex_init(&inv->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&inv->wake, &ca);
    pthread_condattr_destroy(&ca);
    bool pinned = spec->function.mode == HD_FUNCTION_PINNED;
    inv->n_threads = pinned ? 1 : (spec->function.max_concurrency ? spec->function.max_concurrency : 1);
    inv->threads = hd_xcalloc((size_t)inv->n_threads, sizeof(pthread_t));
    for (int i = 0; i < inv->n_threads; i++)
        pthread_create(&inv->threads[i], NULL, pinned ? pinned_worker : ondemand_worker, inv);
    return inv;
}

void hd_invoker_free(struct hd_invoker *inv)
{
    if (!inv)
        return;
    pthread_mutex_lock(&inv->lock);
    inv->stopping = true;
    pthread_cond_broadcast(&inv->wake);
    pthread_mutex_unlock(&inv->lock);
    for (int i = 0; i < inv->n_threads; i++)
        pthread_join(inv->threads[i], NULL);
    struct hd_invocation *c;
    while ((c = list_pop(&inv->pending)))
        hd_invocation_free(c);
    while ((c = list_pop(&inv->done)))
        hd_invocation_free(c);
    pthread_cond_destroy(&inv->wake);
    pthread_mutex_destroy(&inv->lock);
    close(inv->event_fd);
    free(inv->threads);
    free(inv->state_dir);
    free(inv);
}

void hd_invoker_submit(struct hd_invoker *inv, struct hd_invocation *call)
{
    int max_queue = inv->spec->function.max_queue ? inv->spec->function.max_queue : 100;
    pthread_mutex_lock(&inv->lock);
    inv->stats.invocations++;
    bool full = (int)inv->pending.len - inv->idle_workers >= max_queue;
    if (full) {
        inv->stats.rejected++;
    } else {
        list_push(&inv->pending, call);
        pthread_cond_signal(&inv->wake);
    }
    pthread_mutex_unlock(&inv->lock);
    if (full) {
        call_fail(inv, call, "queue full", "%d invocations already wait (function.max_queue)", max_queue);
        invoker_post(inv, call);
    }
}

int hd_invoker_fd(const struct hd_invoker *inv)
{
    return inv->event_fd;
}

struct hd_invocation *hd_invoker_next_result(struct hd_invoker *inv)
{
    uint64_t count;
    if (read(inv->event_fd, &count, sizeof(count)) < 0) {
        /* EAGAIN: nothing new, the list may still hold earlier results */
    }
    pthread_mutex_lock(&inv->lock);
    struct hd_invocation *call = list_pop(&inv->done);
    pthread_mutex_unlock(&inv->lock);
    return call;
}

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

void hd_invoker_get_stats(struct hd_invoker *inv, struct hd_invoker_stats *out)
{
    uint64_t sorted[INVOKER_LATENCY_RING];
    pthread_mutex_lock(&inv->lock);
    *out = inv->stats;
    size_t n = inv->n_latency < INVOKER_LATENCY_RING ? inv->n_latency : INVOKER_LATENCY_RING;
    memcpy(sorted, inv->latency_ns, n * sizeof(*sorted));
    pthread_mutex_unlock(&inv->lock);
    if (n) {
        qsort(sorted, n, sizeof(*sorted), compare_u64);
        out->p50_ns = sorted[(n - 1) / 2];
        out->p99_ns = sorted[(n - 1) * 99 / 100];
    }
}
