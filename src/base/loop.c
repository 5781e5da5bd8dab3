/*
 * loop.c - the one event loop (see loop.h): epoll for fds, a sorted list for
 * timers, a FIFO of deferred work, signals through a signalfd.
 *
 * A removed watch is only marked dead and freed after the current batch of
 * epoll events, so a later event in the same batch never touches freed
 * memory. Timers are few (one per workload, the broker's tick, the uplink's
 * next deadline), so a sorted singly linked list is enough and needs no heap
 * code. Deferred work is the end-of-turn hook: the broker's group commit and
 * output flush, the uplink's spool commit and re-arming of its watches.
 */
#include "base/loop.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "base/util.h"

#define LOOP_BATCH 256 /* events per epoll_wait: a busy broker handles this many sockets per turn */

struct hd_watch {
    int fd;
    hd_fd_fn fn;
    void *data;
    bool dead;
    struct hd_watch *prev, *next; /* live watches (freed with the loop) */
    struct hd_watch *next_dead;
};

struct hd_timer {
    uint64_t deadline_ns;
    hd_timer_fn fn;
    void *data;
    struct hd_timer *next;
};

struct hd_defer {
    hd_defer_fn fn;
    void *data;
    struct hd_defer *next;
};

struct hd_loop {
    int epfd;
    bool quit;
    struct hd_timer *timers;
    struct hd_watch *live, *dead;
    struct hd_defer *defer_head, **defer_tail;
    int signal_fd;
    struct hd_watch *signal_watch;
    hd_signal_fn signal_fn;
    void *signal_data;
};

struct hd_loop *hd_loop_new(hd_error_t *err)
{
    int fd = epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0) {
        hd_error_sys(err, "epoll_create1");
        return NULL;
    }
    struct hd_loop *loop = hd_xcalloc(1, sizeof(*loop));
    loop->epfd = fd;
    loop->defer_tail = &loop->defer_head;
    loop->signal_fd = -1;
    return loop;
}

static void loop_free_dead(struct hd_loop *loop)
{
    while (loop->dead) {
        struct hd_watch *w = loop->dead;
        loop->dead = w->next_dead;
        free(w);
    }
}

void hd_loop_free(struct hd_loop *loop)
{
    if (loop == NULL)
        return;
    while (loop->timers) {
        struct hd_timer *t = loop->timers;
        loop->timers = t->next;
        free(t);
    }
    while (loop->defer_head) {
        struct hd_defer *d = loop->defer_head;
        loop->defer_head = d->next;
        free(d);
    }
    while (loop->live)
        hd_loop_unwatch(loop, loop->live);
    if (loop->signal_fd >= 0)
        close(loop->signal_fd);
    loop_free_dead(loop);
    close(loop->epfd);
    free(loop);
}

struct hd_watch *hd_loop_watch(struct hd_loop *loop, int fd, uint32_t events, hd_fd_fn fn, void *data, hd_error_t *err)
{
    struct hd_watch *w = hd_xcalloc(1, sizeof(*w));
    w->fd = fd;
    w->fn = fn;
    w->data = data;
    struct epoll_event ev = {.events = events, .data.ptr = w};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        hd_error_sys(err, "epoll_ctl add fd %d", fd);
        free(w);
        return NULL;
    }
    w->next = loop->live;
    if (loop->live)
        loop->live->prev = w;
    loop->live = w;
    return w;
}

int hd_loop_modify(struct hd_loop *loop, struct hd_watch *w, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};
    return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, w->fd, &ev);
}

void hd_loop_unwatch(struct hd_loop *loop, struct hd_watch *w)
{
    if (w == NULL || w->dead)
        return;
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    if (w->prev)
        w->prev->next = w->next;
    else
        loop->live = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->dead = true;
    w->next_dead = loop->dead;
    loop->dead = w;
}

struct hd_timer *hd_loop_timer(struct hd_loop *loop, double seconds, hd_timer_fn fn, void *data)
{
    struct hd_timer *t = hd_xcalloc(1, sizeof(*t));
    if (seconds < 0)
        seconds = 0;
    t->deadline_ns = hd_now_ns() + (uint64_t)(seconds * 1e9);
    t->fn = fn;
    t->data = data;
    struct hd_timer **p = &loop->timers;
    while (*p && (*p)->deadline_ns <= t->deadline_ns)
        p = &(*p)->next;
    t->next = *p;
    *p = t;
    return t;
}

void hd_loop_cancel(struct hd_loop *loop, struct hd_timer *t)
{
    for (struct hd_timer **p = &loop->timers; *p; p = &(*p)->next)
        if (*p == t) {
            *p = t->next;
            free(t);
            return;
        }
}

struct hd_defer *hd_loop_defer(struct hd_loop *loop, hd_defer_fn fn, void *data)
{
    struct hd_defer *d = hd_xcalloc(1, sizeof(*d));
    d->fn = fn;
    d->data = data;
    *loop->defer_tail = d;
    loop->defer_tail = &d->next;
    return d;
}

void hd_loop_cancel_defer(struct hd_loop *loop, struct hd_defer *d)
{
    for (struct hd_defer **p = &loop->defer_head; *p; p = &(*p)->next)
        if (*p == d) {
            *p = d->next;
            if (loop->defer_tail == &d->next)
                loop->defer_tail = p;
            free(d);
            return;
        }
}

static void on_signalfd(struct hd_loop *loop, int fd, uint32_t events, void *data)
{
    (void)events;
    (void)data;
    struct signalfd_siginfo si;
    while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
        loop->signal_fn(loop, (int)si.ssi_signo, loop->signal_data);
}

int hd_loop_signals(struct hd_loop *loop, const sigset_t *set, hd_signal_fn fn, void *data, hd_error_t *err)
{
    if (loop->signal_fd >= 0)
        return hd_error_set(err, EBUSY, "loop: signals are watched already");
    sigprocmask(SIG_BLOCK, set, NULL);
    int fd = signalfd(-1, set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (fd < 0)
        return hd_error_sys(err, "signalfd");
    loop->signal_fn = fn;
    loop->signal_data = data;
    loop->signal_watch = hd_loop_watch(loop, fd, EPOLLIN, on_signalfd, NULL, err);
    if (loop->signal_watch == NULL) {
        close(fd);
        return -1;
    }
    loop->signal_fd = fd;
    return 0;
}

void hd_loop_quit(struct hd_loop *loop)
{
    loop->quit = true;
}

/* Run the timers that are due; each is unlinked before its callback runs. */
static void loop_fire_timers(struct hd_loop *loop)
{
    uint64_t now = hd_now_ns();
    while (loop->timers && loop->timers->deadline_ns <= now) {
        struct hd_timer *t = loop->timers;
        loop->timers = t->next;
        hd_timer_fn fn = t->fn;
        void *data = t->data;
        free(t);
        fn(loop, data);
    }
}

/* Run the deferred work in the order it was queued, including work queued meanwhile. */
static void loop_run_deferred(struct hd_loop *loop)
{
    while (loop->defer_head) {
        struct hd_defer *d = loop->defer_head;
        loop->defer_head = d->next;
        if (loop->defer_head == NULL)
            loop->defer_tail = &loop->defer_head;
        hd_defer_fn fn = d->fn;
        void *data = d->data;
        free(d);
        fn(loop, data);
    }
}

int hd_loop_run_once(struct hd_loop *loop, int timeout_ms, hd_error_t *err)
{
    struct epoll_event events[LOOP_BATCH];
    int timeout = timeout_ms;
    if (loop->defer_head) {
        timeout = 0; /* work queued outside a turn runs at the end of this one, without waiting */
    } else if (loop->timers) {
        uint64_t now = hd_now_ns();
        uint64_t d = loop->timers->deadline_ns;
        int until = d <= now ? 0 : (int)((d - now + 999999) / 1000000);
        if (timeout < 0 || until < timeout)
            timeout = until;
    }
    int n = epoll_wait(loop->epfd, events, (int)ARRAY_SIZE(events), timeout);
    if (n < 0) {
        if (errno != EINTR)
            return hd_error_sys(err, "epoll_wait");
        n = 0;
    }
    for (int i = 0; i < n && !loop->quit; i++) {
        struct hd_watch *w = events[i].data.ptr;
        if (!w->dead)
            w->fn(loop, w->fd, events[i].events, w->data);
    }
    loop_free_dead(loop);
    if (!loop->quit)
        loop_fire_timers(loop);
    loop_run_deferred(loop);
    loop_free_dead(loop);
    return 0;
}

int hd_loop_run(struct hd_loop *loop, hd_error_t *err)
{
    while (!loop->quit)
        if (hd_loop_run_once(loop, -1, err) < 0)
            return -1;
    return 0;
}
