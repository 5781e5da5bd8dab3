/*
 * netchild_proto.h - the control protocol between hedged and its network
 * child (the broker and the uplink without privileges; docs/security.md).
 *
 * One message per SOCK_SEQPACKET datagram: a header {total length, version,
 * type} followed by up to HD_NET_MAX_FIELDS fields, each a 32-bit length and
 * that many bytes (no NUL inside; the reader adds one). Everything is host
 * byte order (both ends are the same binary on the same host). The reader
 * checks every length against the datagram it received, the version, the
 * type's direction and its field count, and drops the peer on any mismatch:
 * hedged treats the child as untrusted (it parses network input).
 */
#ifndef HEDGE_DAEMON_NETCHILD_PROTO_H
#define HEDGE_DAEMON_NETCHILD_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#define HD_NET_VERSION 1
#define HD_NET_MAX_MSG 65536
#define HD_NET_MAX_FIELDS 12

/* clang-format off */
enum hd_net_type {
    /* child -> hedged */
    HD_NET_READY = 1,       /* port (decimal): the child serves; its first plain listener's port (kept on restart) */
    HD_NET_FAILED = 2,      /* text: the child could not start (the error hedged reports) */
    HD_NET_STATS = 3,       /* 9 broker counters (decimal), uplink metrics text, uplink status JSON */
    HD_NET_PONG = 4,        /* sequence (decimal): everything sent before the PING is applied */
    HD_NET_FLEET_DESIRED = 5, /* document, signature, error: a desired document from the cloud (docs/fleet.md)
                                 with its Ed25519 signature (base64; "" unsigned), or "", "" and why the child
                                 could not read it */
    HD_NET_FLEET_JOB = 6,     /* job id, request (JSON compact, an object): a job from the cloud */
    /* hedged -> child */
    HD_NET_SET_USER = 16,   /* user, password, internal ("0"/"1") */
    HD_NET_REMOVE_USER = 17, /* user */
    HD_NET_ALLOW = 18,      /* user, access, filter */
    HD_NET_STATS_REQUEST = 19,
    HD_NET_PING = 20,       /* sequence */
    HD_NET_RELOAD = 21,     /* reload what can be reloaded (see netchild_main.c) */
    HD_NET_SHUTDOWN = 22,
    HD_NET_TEST_FAULT = 23, /* test hook: call a forbidden syscall (only with HEDGE_TEST_HOOKS=1) */
    HD_NET_FLEET_REPORT = 24, /* document: the node's reported state, to publish (retained) now and at each connect */
    HD_NET_FLEET_EVENT = 25,  /* event (JSON): to spool for the fleet's events topic */
    HD_NET_FLEET_RESULT = 26, /* job id, result (JSON): to publish on the job's result topic */
    HD_NET_SERVE = 27,        /* hedged's users and rules (sent after READY) are in: accept clients */
    HD_NET_FLEET_LOG = 28,    /* deployment, batch (JSON): forwarded log lines to spool for PREFIX/NODE/logs/NAME */
};
/* clang-format on */

struct hd_net_hdr {
    uint32_t len; /* the whole message, header included */
    uint16_t version;
    uint16_t type;
};

/* A received message: fields point into buf (each NUL-terminated). */
struct hd_net_msg {
    uint16_t type;
    int n_fields;
    const char *field[HD_NET_MAX_FIELDS];
    uint32_t field_len[HD_NET_MAX_FIELDS];
    char buf[HD_NET_MAX_MSG + HD_NET_MAX_FIELDS];
};

/* Send one message of n NUL-terminated fields: 0, or -1 with errno. */
int hd_net_send(int fd, enum hd_net_type type, int n, const char *const *fields);
/* Receive one message and check it (from_child: types a child may send, else those hedged may):
 * 1 a message, 0 the peer closed, -1 a malformed message or an error (err says which). */
int hd_net_recv(int fd, bool from_child, struct hd_net_msg *m, hd_error_t *err);

#endif
