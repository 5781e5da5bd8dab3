/*
 * netchild_proto.c - writing and (defensively) reading the messages of
 * netchild_proto.h. The reader never trusts a length: each one is checked
 * against the bytes actually received before it is used.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "daemon/netchild_proto.h"

int hd_net_send(int fd, enum hd_net_type type, int n, const char *const *fields)
{
    if (n < 0 || n > HD_NET_MAX_FIELDS) {
        errno = EINVAL;
        return -1;
    }
    struct hd_net_hdr hdr = {.len = sizeof(hdr), .version = HD_NET_VERSION, .type = (uint16_t)type};
    uint32_t lens[HD_NET_MAX_FIELDS];
    struct iovec iov[1 + 2 * HD_NET_MAX_FIELDS];
    int k = 0;
    iov[k++] = (struct iovec){&hdr, sizeof(hdr)};
    for (int i = 0; i < n; i++) {
        lens[i] = (uint32_t)strlen(fields[i]);
        hdr.len += (uint32_t)sizeof(uint32_t) + lens[i];
        iov[k++] = (struct iovec){&lens[i], sizeof(uint32_t)};
        iov[k++] = (struct iovec){(void *)fields[i], lens[i]};
    }
    if (hdr.len > HD_NET_MAX_MSG) {
        errno = EMSGSIZE;
        return -1;
    }
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)k};
    ssize_t w;
    do
        w = sendmsg(fd, &mh, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    if (w < 0)
        return -1;
    return 0;
}

static bool net_type_from_child(uint16_t t)
{
    return t == HD_NET_READY || t == HD_NET_FAILED || t == HD_NET_STATS || t == HD_NET_PONG ||
        t == HD_NET_FLEET_DESIRED || t == HD_NET_FLEET_JOB;
}

static bool net_type_to_child(uint16_t t)
{
    return t >= HD_NET_SET_USER && t <= HD_NET_FLEET_LOG;
}

/* The field count each type must have. */
static int net_fields_of(uint16_t t)
{
    switch (t) {
    case HD_NET_READY: return 1;
    case HD_NET_FAILED: return 1;
    case HD_NET_STATS: return 11;
    case HD_NET_PONG: return 1;
    case HD_NET_SET_USER: return 3;
    case HD_NET_REMOVE_USER: return 1;
    case HD_NET_ALLOW: return 3;
    case HD_NET_PING: return 1;
    case HD_NET_FLEET_DESIRED: return 3;
    case HD_NET_FLEET_REPORT: return 1;
    case HD_NET_FLEET_EVENT: return 1;
    case HD_NET_FLEET_JOB: return 2;
    case HD_NET_FLEET_RESULT: return 2;
    case HD_NET_FLEET_LOG: return 2;
    default: return 0;
    }
}

int hd_net_recv(int fd, bool from_child, struct hd_net_msg *m, hd_error_t *err)
{
    char raw[HD_NET_MAX_MSG];
    struct iovec iov = {raw, sizeof(raw)};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    ssize_t n;
    do
        n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return hd_error_sys(err, "control socket: recvmsg");
    if (n == 0)
        return 0;
    if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
        return hd_error_set(err, 0, "control message: longer than %d bytes", HD_NET_MAX_MSG);
    struct hd_net_hdr hdr;
    if ((size_t)n < sizeof(hdr))
        return hd_error_set(err, 0, "control message: %zd bytes, shorter than its header", n);
    memcpy(&hdr, raw, sizeof(hdr));
    if (hdr.len != (uint32_t)n)
        return hd_error_set(err, 0, "control message: length %u, received %zd bytes", hdr.len, n);
    if (hdr.version != HD_NET_VERSION)
        return hd_error_set(err, 0, "control message: version %u, expected %d", hdr.version, HD_NET_VERSION);
    if (from_child ? !net_type_from_child(hdr.type) : !net_type_to_child(hdr.type))
        return hd_error_set(err, 0, "control message: unexpected type %u", hdr.type);
    m->type = hdr.type;
    m->n_fields = 0;
    size_t off = sizeof(hdr), out = 0;
    while (off < (size_t)n) {
        uint32_t len;
        if (m->n_fields == HD_NET_MAX_FIELDS || (size_t)n - off < sizeof(len))
            return hd_error_set(err, 0, "control message type %u: malformed field %d", hdr.type, m->n_fields);
        memcpy(&len, raw + off, sizeof(len));
        off += sizeof(len);
        if (len > (size_t)n - off)
            return hd_error_set(err, 0, "control message type %u: field %d of %u bytes past the end", hdr.type,
                                m->n_fields, len);
        if (memchr(raw + off, '\0', len))
            return hd_error_set(err, 0, "control message type %u: field %d holds a NUL", hdr.type, m->n_fields);
        memcpy(m->buf + out, raw + off, len);
        m->buf[out + len] = '\0';
        m->field[m->n_fields] = m->buf + out;
        m->field_len[m->n_fields++] = len;
        out += len + 1;
        off += len;
    }
    if (m->n_fields != net_fields_of(hdr.type))
        return hd_error_set(err, 0, "control message type %u: %d fields, expected %d", hdr.type, m->n_fields,
                            net_fields_of(hdr.type));
    return 1;
}
