/*
 * test_netchild_proto.c - the control messages between hedged and its network
 * child (daemon/netchild_proto.h): what one side writes the other reads back;
 * a datagram that lies about its length, its version, its direction, a field
 * that runs past the end or holds a NUL, the wrong field count, or one larger
 * than the limit is refused (hedged then drops the child).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "daemon/netchild_proto.h"

static int sv[2];
static struct hd_net_msg msg;

/* Send raw bytes as one datagram and read it back as hedged would (from the child): the result. */
static int recv_raw(const void *data, size_t len, bool from_child)
{
    if (send(sv[0], data, len, 0) != (ssize_t)len)
        return -99;
    hd_error_t err = NULL;
    int r = hd_net_recv(sv[1], from_child, &msg, &err);
    hd_error_free(&err);
    return r;
}

struct raw {
    struct hd_net_hdr hdr;
    unsigned char body[64];
};

static size_t raw_field(struct raw *m, size_t off, const char *s, uint32_t claimed)
{
    memcpy(m->body + off, &claimed, 4);
    memcpy(m->body + off + 4, s, strlen(s));
    return off + 4 + strlen(s);
}

static void test_round_trip(void)
{
    const char *f[] = {"workload:a", "pw", "0"};
    CHECK(hd_net_send(sv[0], HD_NET_SET_USER, 3, f) == 0);
    hd_error_t err = NULL;
    CHECK(hd_net_recv(sv[1], false, &msg, &err) == 1);
    CHECK(msg.type == HD_NET_SET_USER && msg.n_fields == 3);
    CHECK_STR(msg.field[0], "workload:a");
    CHECK_STR(msg.field[1], "pw");
    CHECK_STR(msg.field[2], "0");
    const char *port[] = {"1883"};
    CHECK(hd_net_send(sv[0], HD_NET_READY, 1, port) == 0);
    CHECK(hd_net_recv(sv[1], true, &msg, &err) == 1 && msg.type == HD_NET_READY);
    CHECK(hd_net_send(sv[0], HD_NET_SHUTDOWN, 0, NULL) == 0);
    CHECK(hd_net_recv(sv[1], false, &msg, &err) == 1 && msg.n_fields == 0);
    /* a batch of forwarded log lines: hedged's to send, with its two fields */
    const char *log[] = {"web", "{\"lines\":[\"a\"]}"};
    CHECK(hd_net_send(sv[0], HD_NET_FLEET_LOG, 2, log) == 0);
    CHECK(hd_net_recv(sv[1], false, &msg, &err) == 1 && msg.type == HD_NET_FLEET_LOG && msg.n_fields == 2);
    CHECK_STR(msg.field[0], "web");
    CHECK(hd_net_send(sv[0], HD_NET_FLEET_LOG, 2, log) == 0);
    CHECK(hd_net_recv(sv[1], true, &msg, &err) == -1); /* never the child's */
    hd_error_free(&err);
    CHECK(hd_net_send(sv[0], HD_NET_FLEET_LOG, 1, log) == 0);
    CHECK(hd_net_recv(sv[1], false, &msg, &err) == -1); /* one field short */
    hd_error_free(&err);
    /* nothing waiting: EAGAIN, not a message */
    CHECK(hd_net_recv(sv[1], false, &msg, &err) == -1 && err && err->errnum == EAGAIN);
    hd_error_free(&err);
}

static void test_refused(void)
{
    struct raw m = {.hdr = {.version = HD_NET_VERSION, .type = HD_NET_READY}};
    size_t n = raw_field(&m, 0, "80", 2);
    m.hdr.len = (uint32_t)(sizeof(m.hdr) + n);
    CHECK(recv_raw(&m, sizeof(m.hdr) + n, true) == 1);   /* the well-formed one */
    CHECK(recv_raw(&m, sizeof(m.hdr) + n, false) == -1); /* READY is the child's: wrong direction */
    CHECK(recv_raw(&m, 3, true) == -1);                  /* shorter than the header */
    m.hdr.len += 1;
    CHECK(recv_raw(&m, sizeof(m.hdr) + n, true) == -1); /* length says more than was sent */
    m.hdr.len -= 1;
    m.hdr.version = 2;
    CHECK(recv_raw(&m, sizeof(m.hdr) + n, true) == -1); /* another version */
    m.hdr.version = HD_NET_VERSION;
    m.hdr.type = 999;
    CHECK(recv_raw(&m, sizeof(m.hdr) + n, true) == -1); /* unknown type */
    m.hdr.type = HD_NET_READY;
    raw_field(&m, 0, "80", 200);
    CHECK(recv_raw(&m, sizeof(m.hdr) + n, true) == -1); /* field past the end */
    raw_field(&m, 0, "8\0", 2);
    m.body[5] = '\0';
    CHECK(recv_raw(&m, sizeof(m.hdr) + n, true) == -1); /* NUL inside a field */
    n = raw_field(&m, 0, "80", 2);
    n = raw_field(&m, n, "81", 2);
    m.hdr.len = (uint32_t)(sizeof(m.hdr) + n);
    CHECK(recv_raw(&m, sizeof(m.hdr) + n, true) == -1); /* two fields where READY has one */
    m.hdr.len = (uint32_t)(sizeof(m.hdr) + 2);
    CHECK(recv_raw(&m, sizeof(m.hdr) + 2, true) == -1); /* a field length cut in half */
    /* larger than the limit: truncated by the kernel, refused */
    char *big = calloc(1, HD_NET_MAX_MSG + 100);
    struct hd_net_hdr h = {.len = HD_NET_MAX_MSG + 100, .version = HD_NET_VERSION, .type = HD_NET_STATS};
    memcpy(big, &h, sizeof(h));
    CHECK(recv_raw(big, HD_NET_MAX_MSG + 100, true) == -1);
    free(big);
    /* and the sender refuses to build one */
    char *long_field = malloc(HD_NET_MAX_MSG + 1);
    memset(long_field, 'a', HD_NET_MAX_MSG);
    long_field[HD_NET_MAX_MSG] = '\0';
    const char *f[] = {long_field};
    CHECK(hd_net_send(sv[0], HD_NET_FAILED, 1, f) == -1 && errno == EMSGSIZE);
    free(long_field);
    /* a closed peer reads as 0 */
    close(sv[0]);
    hd_error_t err = NULL;
    CHECK(hd_net_recv(sv[1], true, &msg, &err) == 0);
    hd_error_free(&err);
}

int main(void)
{
    if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0)
        return 1;
    int size = 4 * HD_NET_MAX_MSG;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    test_round_trip();
    test_refused();
    close(sv[1]);
    CHECK_DONE();
    return 0;
}
