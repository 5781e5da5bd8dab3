/* test_loop.c - the event loop (src/base/loop.c): timers run in deadline order, fd callbacks
 * see their events, a watch removed inside its own callback (or another's, in the same batch)
 * is never called again, deferred work runs once at the end of the turn, signals arrive. */
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "base/loop.h"
#include "check.h"

static char order[32];
static size_t n_order;

static void mark(char c)
{
    if (n_order < sizeof(order) - 1)
        order[n_order++] = c;
    order[n_order] = '\0';
}

static void on_timer(struct hd_loop *loop, void *data)
{
    (void)loop;
    mark(*(const char *)data);
}

static void on_timer_quit(struct hd_loop *loop, void *data)
{
    on_timer(loop, data);
    hd_loop_quit(loop);
}

struct pipe_watch {
    int fds[2];
    struct hd_watch *w;
    int calls;
    struct pipe_watch *other; /* unwatched by this one's callback */
};

static void on_read_unwatch_self(struct hd_loop *loop, int fd, uint32_t events, void *data)
{
    struct pipe_watch *p = data;
    p->calls++;
    CHECK(fd == p->fds[0]);
    CHECK(events & EPOLLIN);
    hd_loop_unwatch(loop, p->w); /* removing itself: safe */
    if (p->other)
        hd_loop_unwatch(loop, p->other->w);
}

static void on_read_count(struct hd_loop *loop, int fd, uint32_t events, void *data)
{
    (void)loop;
    (void)fd;
    (void)events;
    struct pipe_watch *p = data;
    p->calls++;
}

static void on_defer(struct hd_loop *loop, void *data)
{
    (void)loop;
    mark(*(const char *)data);
}

static int defer_nested_runs;
static void on_defer_nested(struct hd_loop *loop, void *data)
{
    defer_nested_runs++;
    mark('N');
    hd_loop_defer(loop, on_defer, data); /* runs in the same turn, after this */
}

static void on_read_defer(struct hd_loop *loop, int fd, uint32_t events, void *data)
{
    (void)events;
    char c;
    CHECK(read(fd, &c, 1) == 1);
    mark('R');
    hd_loop_defer(loop, on_defer, data);
}

static int last_signal;
static void on_signal(struct hd_loop *loop, int signo, void *data)
{
    (void)data;
    last_signal = signo;
    hd_loop_quit(loop);
}

int main(void)
{
    hd_error_t err = NULL;
    struct hd_loop *loop = hd_loop_new(&err);
    CHECK(loop != NULL);

    /* timers: deadline order, equal deadlines in the order added, a cancelled one never runs */
    static const char a = 'a', b = 'b', c = 'c', d = 'd', x = 'x';
    hd_loop_timer(loop, 0.03, on_timer_quit, (void *)&d);
    hd_loop_timer(loop, 0.02, on_timer, (void *)&c);
    hd_loop_timer(loop, 0.0, on_timer, (void *)&a);
    hd_loop_timer(loop, 0.0, on_timer, (void *)&b);
    struct hd_timer *cancelled = hd_loop_timer(loop, 0.01, on_timer, (void *)&x);
    hd_loop_cancel(loop, cancelled);
    CHECK(hd_loop_run(loop, &err) == 0);
    CHECK_STR(order, "abcd");
    hd_loop_free(loop);

    /* fd callbacks; a watch removing itself and the other ready watch in the same batch */
    loop = hd_loop_new(&err);
    struct pipe_watch p1 = {0}, p2 = {0}, p3 = {0};
    CHECK(pipe(p1.fds) == 0 && pipe(p2.fds) == 0 && pipe(p3.fds) == 0);
    p1.w = hd_loop_watch(loop, p1.fds[0], EPOLLIN, on_read_unwatch_self, &p1, &err);
    p2.w = hd_loop_watch(loop, p2.fds[0], EPOLLIN, on_read_unwatch_self, &p2, &err);
    p3.w = hd_loop_watch(loop, p3.fds[0], EPOLLIN, on_read_count, &p3, &err);
    CHECK(p1.w && p2.w && p3.w);
    p1.other = &p2;
    p2.other = &p1;
    CHECK(write(p1.fds[1], "x", 1) == 1 && write(p2.fds[1], "x", 1) == 1 && write(p3.fds[1], "x", 1) == 1);
    for (int i = 0; i < 3; i++)
        CHECK(hd_loop_run_once(loop, 100, &err) == 0);
    /* level-triggered and never read: p3 fires every turn; of p1 and p2 only the first of the batch ran, once */
    CHECK(p1.calls + p2.calls == 1);
    CHECK(p3.calls == 3);
    CHECK(hd_loop_modify(loop, p3.w, EPOLLOUT) == 0); /* a pipe's read end is never writable */
    CHECK(hd_loop_run_once(loop, 20, &err) == 0);
    CHECK(p3.calls == 3);
    hd_loop_unwatch(loop, p3.w);
    hd_loop_unwatch(loop, NULL);

    /* deferred work: once, at the end of the turn, after the fd callbacks; nested work in the same turn */
    n_order = 0;
    order[0] = '\0';
    static const char e = 'e', f = 'f', g = 'g';
    struct pipe_watch p4 = {0};
    CHECK(pipe(p4.fds) == 0);
    p4.w = hd_loop_watch(loop, p4.fds[0], EPOLLIN, on_read_defer, (void *)&e, &err);
    hd_loop_defer(loop, on_defer_nested, (void *)&f); /* queued outside a turn: end of the next, first */
    struct hd_defer *gone = hd_loop_defer(loop, on_defer, (void *)&x);
    hd_loop_cancel_defer(loop, gone);
    CHECK(write(p4.fds[1], "y", 1) == 1);
    CHECK(hd_loop_run_once(loop, 100, &err) == 0);
    CHECK_STR(order, "RNef");
    CHECK(defer_nested_runs == 1);
    CHECK(hd_loop_run_once(loop, 10, &err) == 0); /* nothing more: deferred work ran once */
    CHECK_STR(order, "RNef");
    hd_loop_unwatch(loop, p4.w);

    /* signals through the loop */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    CHECK(hd_loop_signals(loop, &set, on_signal, NULL, &err) == 0);
    CHECK(hd_loop_signals(loop, &set, on_signal, NULL, &err) < 0);
    hd_error_free(&err);
    kill(getpid(), SIGUSR1);
    CHECK(hd_loop_run(loop, &err) == 0);
    CHECK(last_signal == SIGUSR1);
    hd_loop_defer(loop, on_defer, (void *)&g); /* pending at free: freed, not run */
    hd_loop_free(loop);
    CHECK_STR(order, "RNef");
    int all[] = {p1.fds[0], p1.fds[1], p2.fds[0], p2.fds[1], p3.fds[0], p3.fds[1], p4.fds[0], p4.fds[1]};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        close(all[i]);
    CHECK_DONE();
}
