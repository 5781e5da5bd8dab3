/*
 * loop.c - hedged's one event loop: epoll for fds, a sorted list for timers.
 *
 * Callbacks may add or remove watches and timers freely, including the one
 * being dispatched: a removed watch is only marked dead and freed after the
 * current batch of epoll events, so a later event in the same batch never
 * touches freed memory. Timers are few (one per workload at most), so a
 * sorted singly linked list is enough and needs no heap code.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "base/util.h"

struct hd_watch {
    int fd;
    hd_fd_fn fn;
    void *data;
    bool dead;
    struct hd_watch *next_dead;
};

struct hd_timer {
    uint64_t deadline_ns;
    hd_timer_fn fn;
    void *data;
    struct hd_timer *next;
};

struct hd_loop {
    int epfd;
    bool quit;
    struct hd_timer *timers;
    struct hd_watch *dead;
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
    loop_free_dead(loop);
    close(loop->epfd);
    free(loop);
}

struct hd_watch *hd_loop_watch(struct hd_loop *loop, int fd, uint32_t events, hd_fd_fn fn, void *data,
                               hd_error_t *err)
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

int hd_loop_run(struct hd_loop *loop, hd_error_t *err)
{
    struct epoll_event events[32];
    while (!loop->quit) {
        int timeout = -1;
        if (loop->timers) {
            uint64_t now = hd_now_ns();
            uint64_t d = loop->timers->deadline_ns;
            timeout = d <= now ? 0 : (int)((d - now + 999999) / 1000000);
        }
        int n = epoll_wait(loop->epfd, events, (int)ARRAY_SIZE(events), timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return hd_error_sys(err, "epoll_wait");
        }
        for (int i = 0; i < n && !loop->quit; i++) {
            struct hd_watch *w = events[i].data.ptr;
            if (!w->dead)
                w->fn(loop, w->fd, events[i].events, w->data);
        }
        loop_free_dead(loop);
        if (!loop->quit)
            loop_fire_timers(loop);
        loop_free_dead(loop);
    }
    return 0;
}
