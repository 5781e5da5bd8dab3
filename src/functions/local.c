/*
 * local.c - hedge-functions' node-local side: the invoke socket for `hedge
 * invoke NAME` and the stats file hedged reads (protocol in local.h).
 *
 * The socket is bound through /proc/self/fd/<dirfd>/ so that a long state dir
 * still fits sun_path (as hedge-monitor's ctl.sock does). A request is read
 * with a 2 s receive timeout right after accept: the only peers are local
 * root clients sending one small frame, so the loop is never held longer.
 * Connections wait, open, until their invocation's result comes back from the
 * invoker; the invocation pointer identifies them (it is unique while in
 * flight). A peer that malformed its frame is dropped without an answer.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/log.h"
#include "functions/local.h"
#include "base/util.h"

struct local_pending {
    struct hd_invocation *call;
    int fd;
    struct local_pending *next;
};

struct hd_local {
    char *dir;
    int dirfd;
    int listen_fd;
    struct local_pending *pending;
    uint64_t stats_written_ns;
    struct hd_invoker_stats stats_written; /* what the file holds, to skip writes that change nothing */
    bool stats_ever;
};

struct hd_local *hd_local_new(const char *dir, hd_error_t *err)
{
    struct hd_local *l = hd_xcalloc(1, sizeof(*l));
    l->listen_fd = -1;
    l->dirfd = -1;
    l->dir = hd_xstrdup(dir);
    if (hd_mkdir_p(dir, 0700, err) < 0)
        goto fail;
    l->dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (l->dirfd < 0) {
        hd_error_sys(err, "%s", dir);
        goto fail;
    }
    l->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof(addr.sun_path), "/proc/self/fd/%d/invoke.sock", l->dirfd);
    unlinkat(l->dirfd, "invoke.sock", 0);
    /* A dir hedged shared with the API socket's group (0710, function_host.c): the socket is that
     * group's too, so its members can `hedge invoke`; otherwise root's alone. */
    struct stat dir_st;
    bool shared = fstat(l->dirfd, &dir_st) == 0 && dir_st.st_gid != 0 && (dir_st.st_mode & S_IXGRP);
    if (l->listen_fd < 0 || bind(l->listen_fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        (shared && fchownat(l->dirfd, "invoke.sock", (uid_t)-1, dir_st.st_gid, 0) < 0) ||
        fchmodat(l->dirfd, "invoke.sock", shared ? 0660 : 0600, 0) < 0 || listen(l->listen_fd, 64) < 0) {
        hd_error_sys(err, "%s/invoke.sock", dir);
        goto fail;
    }
    return l;
fail:
    hd_local_free(l);
    return NULL;
}

void hd_local_free(struct hd_local *l)
{
    if (l == NULL)
        return;
    while (l->pending) {
        struct local_pending *p = l->pending;
        l->pending = p->next;
        close(p->fd); /* the client sees EOF: no answer */
        free(p);
    }
    if (l->listen_fd >= 0) {
        unlinkat(l->dirfd, "invoke.sock", 0);
        close(l->listen_fd);
    }
    if (l->dirfd >= 0)
        close(l->dirfd);
    free(l->dir);
    free(l);
}

int hd_local_fd(const struct hd_local *l)
{
    return l->listen_fd;
}

void hd_local_accept(struct hd_local *l, struct hd_invoker *inv)
{
    int fd = accept4(l->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return;
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    uint8_t head[4];
    if (hd_read_exact(fd, head, sizeof(head)) < 0) {
        close(fd);
        return;
    }
    size_t len = (size_t)head[0] << 24 | (size_t)head[1] << 16 | (size_t)head[2] << 8 | head[3];
    if (len > HD_LOCAL_MAX_REQUEST) {
        close(fd);
        return;
    }
    struct hd_invocation *call = hd_xcalloc(1, sizeof(*call));
    call->received_ns = hd_now_ns();
    call->payload = hd_xmalloc(len + 1);
    call->payload_len = len;
    if (hd_read_exact(fd, call->payload, len) < 0) {
        hd_invocation_free(call);
        close(fd);
        return;
    }
    struct local_pending *p = hd_xcalloc(1, sizeof(*p));
    p->call = call;
    p->fd = fd;
    p->next = l->pending;
    l->pending = p;
    hd_invoker_submit(inv, call);
}

bool hd_local_complete(struct hd_local *l, struct hd_invocation *call)
{
    for (struct local_pending **pp = &l->pending; *pp; pp = &(*pp)->next) {
        struct local_pending *p = *pp;
        if (p->call != call)
            continue;
        *pp = p->next;
        uint8_t head[5] = {call->error ? 'E' : 'R', (uint8_t)(call->body_len >> 24), (uint8_t)(call->body_len >> 16),
                           (uint8_t)(call->body_len >> 8), (uint8_t)call->body_len};
        if (hd_write_all(p->fd, head, sizeof(head)) < 0 || hd_write_all(p->fd, call->body, call->body_len) < 0)
            hd_log(HD_LOG_WARN, "functions", "a local invocation's client went away before its result");
        close(p->fd);
        free(p);
        hd_invocation_free(call);
        return true;
    }
    return false;
}

void hd_local_write_stats(struct hd_local *l, struct hd_invoker *inv, bool force)
{
    uint64_t now = hd_now_ns();
    if (!force && now - l->stats_written_ns < 250000000ull)
        return;
    struct hd_invoker_stats st;
    hd_invoker_get_stats(inv, &st);
    if (l->stats_ever && !force && memcmp(&st, &l->stats_written, sizeof(st)) == 0)
        return;
    json_t *o = json_pack("{s:I,s:I,s:I,s:I,s:I,s:f,s:f}", "invocations", (json_int_t)st.invocations, "errors",
                          (json_int_t)st.errors, "timeouts", (json_int_t)st.timeouts, "rejected",
                          (json_int_t)st.rejected, "restarts", (json_int_t)st.restarts, "p50_ms",
                          (double)st.p50_ns / 1e6, "p99_ms", (double)st.p99_ns / 1e6);
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    cleanup_free char *path = hd_xasprintf("%s/stats.json", l->dir);
    hd_error_t err = NULL;
    if (text == NULL || hd_write_file_atomic(path, text, strlen(text), &err) < 0) {
        hd_log_error(HD_LOG_ERROR, "functions", &err);
    }
    free(text);
    l->stats_written_ns = now;
    l->stats_written = st;
    l->stats_ever = true;
}
