/*
 * vm-proto.h - the messages between hedge (host) and hedge-init (guest PID 1).
 *
 * They travel over one virtio-serial port (this host has no vhost-vsock). A
 * message is a fixed 8-byte header {u32 type, u32 length} in the guest's and
 * host's byte order (both x86-64) followed by `length` payload bytes, at most
 * HD_VM_MSG_MAX. Either side drops the peer on any malformed message (unknown
 * type, oversize length, a payload that does not fit its type) - the guest
 * reports it and powers off, the host kills QEMU - so a bad byte stream ends
 * the VM with a clear error and never hangs it (OpenBSD imsg habit).
 *
 * Header-only (static inline) because the guest side is the static hedge-init,
 * which does not link libhedge.
 *
 *   host → guest   CONFIG (once, first, as the answer to READY), FILE_DATA (right after CONFIG), STDIN, STDIN_EOF, SIGNAL, EXIT_ACK, EXEC,
 *                  EXEC_STDIN, EXEC_STDIN_EOF, EXEC_RESIZE, RESIZE, EXEC_SIGNAL
 *   guest → host   READY (once, first), STARTED, STDOUT, STDERR, EXIT, ERROR, EXEC_STDOUT, EXEC_STDERR,
 *                  EXEC_EXIT, EXEC_STDIN_ACK
 *
 * EXEC (hedge-oci-vm exec) starts one more process beside the running workload: a u32 session number the host
 * picks, then CONFIG's ARG, ENV, WORKDIR and USER records. Its output comes back as EXEC_STDOUT/EXEC_STDERR
 * (the session, then the bytes) and its end as EXEC_EXIT (the session, then struct hd_vm_exit_msg); a command
 * that cannot be started is its message on EXEC_STDERR and an EXEC_EXIT with status 125/126/127. When the
 * workload ends, its exec'd processes end with the VM.
 *
 * An exec'd process's stdin is a pipe hedge-init fills from EXEC_STDIN messages (the session, then the bytes)
 * and closes at EXEC_STDIN_EOF (the session). The flow is credited per session, so that one process that does
 * not read its stdin never holds up the channel (signals, other sessions, EXIT_ACK): the host has at most
 * HD_VM_EXEC_STDIN_WINDOW bytes sent and not yet acknowledged, hedge-init buffers up to that much and sends
 * EXEC_STDIN_ACK (the session, then a u32 count) for the bytes the pipe took (or dropped, once the process
 * closed its stdin). More than the window is a protocol error; a message for a session that ended is
 * dropped (the host's and the guest's ends of a session do not end at the same moment).
 *
 * An EXEC with a HD_VM_CFG_TERMINAL record ("ROWS COLS", 0 0: unknown) runs the process on a pty of the guest's
 * (its stdin, stdout, stderr and controlling terminal): EXEC_STDIN goes to the pty's master, what the master
 * gives comes back as EXEC_STDOUT (there is no EXEC_STDERR), and EXEC_RESIZE (the session, then struct
 * hd_vm_winsize) sets its size (the process gets SIGWINCH). The guest's pty does the line discipline (echo,
 * ^C, \n → \r\n): the host end it is relayed to is raw.
 *
 * CONFIG with a HD_VM_CFG_TERMINAL record does the same for the workload: it runs on a guest pty of that size,
 * STDIN goes to the master, the master's output comes back as STDOUT (no STDERR), RESIZE (struct
 * hd_vm_winsize) sets its size. STDIN_EOF closes hedge-init's copy of the master for writing only.
 *
 * EXEC_SIGNAL (the session, then a u32 signal number) sends that signal to the exec'd process (its pid, as
 * kill(2)); one for a session that ended is dropped.
 *
 * READY says hedge-init is up and the port is open. The host answers with
 * CONFIG only then, so the wall clock and the entropy seed CONFIG carries are
 * taken when the guest reads them (not a boot's length earlier); a guest
 * restored from a snapshot taken at READY gets them fresh too.
 *
 * EXIT_ACK answers EXIT: the host sends it once it has delivered every
 * STDOUT/STDERR message before the EXIT to the workload's stdio fds, and the
 * guest powers off only then (or after a bound). So QEMU ends after the
 * output is out, as a host process ends after its writes: a caller that
 * watches QEMU's pid and then reads its pipes misses nothing.
 *
 * CONFIG's payload is a list of records {u8 tag, NUL-terminated string}; the
 * tags are HD_VM_CFG_*. A HD_VM_CFG_SECRET record's string is followed by the
 * LEN bytes of the secret's value it announces (raw: a value may hold NULs). The other payloads are described beside their types.
 *
 * HD_VM_CFG_FILE records (the files an engine binds into a container: /etc/hosts, /etc/resolv.conf, ...)
 * announce LEN bytes each; their bytes do not fit CONFIG, so they follow it as FILE_DATA messages: one stream,
 * the first record's bytes, then the next's, cut into messages of at most HD_VM_MSG_MAX bytes. The guest reads
 * exactly the sum of the LENs before anything else; a message of another type before that is a protocol error.
 */
#ifndef HEDGE_VM_PROTO_H
#define HEDGE_VM_PROTO_H

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define HD_VM_MSG_MAX 65536u
#define HD_VM_PORT_NAME "org.hedge.0"

enum hd_vm_msg_type {
    HD_VM_MSG_CONFIG = 1,         /* host → guest: records, see HD_VM_CFG_* */
    HD_VM_MSG_STDIN = 2,          /* host → guest: bytes for the workload's stdin */
    HD_VM_MSG_STDIN_EOF = 3,      /* host → guest: empty; close the workload's stdin */
    HD_VM_MSG_SIGNAL = 4,         /* host → guest: u32 signal number for the workload */
    HD_VM_MSG_EXIT_ACK = 5,       /* host → guest: empty; what came before EXIT or ERROR is delivered, power off */
    HD_VM_MSG_EXEC = 6,           /* host → guest: u32 session, then ARG/ENV/WORKDIR/USER records */
    HD_VM_MSG_EXEC_STDIN = 7,     /* host → guest: u32 session, then bytes for the exec'd process's stdin */
    HD_VM_MSG_EXEC_STDIN_EOF = 8, /* host → guest: u32 session; close its stdin once the bytes are in */
    HD_VM_MSG_EXEC_RESIZE = 9,    /* host → guest: u32 session, then struct hd_vm_winsize (a terminal's) */
    HD_VM_MSG_FILE_DATA = 10,     /* host → guest: right after CONFIG, the bytes of CONFIG's FILE records */
    HD_VM_MSG_RESIZE = 11,        /* host → guest: struct hd_vm_winsize, the workload's terminal's new size */
    HD_VM_MSG_EXEC_SIGNAL = 12,   /* host → guest: u32 session, then u32 signal number for its process */
    HD_VM_MSG_WARM = 13,    /* host → guest: empty, before CONFIG; rehearse a start's code paths (a pool's clone) */
    HD_VM_MSG_STARTED = 16, /* guest → host: empty; the command was exec'd */
    HD_VM_MSG_STDOUT = 17,  /* guest → host: bytes the workload wrote to fd 1 */
    HD_VM_MSG_STDERR = 18,  /* guest → host: bytes the workload wrote to fd 2 */
    HD_VM_MSG_EXIT = 19,    /* guest → host: struct hd_vm_exit_msg */
    HD_VM_MSG_ERROR = 20,   /* guest → host: u32 exit code (125/126/127), then text (no NUL) */
    HD_VM_MSG_READY = 21,   /* guest → host: empty; hedge-init runs and waits for CONFIG */
    HD_VM_MSG_EXEC_STDOUT = 22,    /* guest → host: u32 session, then bytes an exec'd process wrote to fd 1 */
    HD_VM_MSG_EXEC_STDERR = 23,    /* guest → host: u32 session, then bytes it wrote to fd 2 */
    HD_VM_MSG_EXEC_EXIT = 24,      /* guest → host: u32 session, then struct hd_vm_exit_msg */
    HD_VM_MSG_EXEC_STDIN_ACK = 25, /* guest → host: u32 session, then u32 count of EXEC_STDIN bytes taken */
    HD_VM_MSG_WARM_DONE = 26,      /* guest → host: empty; the rehearsal is over, CONFIG may come */
};

enum hd_vm_config_tag {
    HD_VM_CFG_ARG = 'a', /* argv element, in order */
    HD_VM_CFG_ENV = 'e', /* KEY=VALUE */
    HD_VM_CFG_WORKDIR = 'w',
    HD_VM_CFG_USER = 'u', /* "uid[:gid]" or a name from the rootfs's /etc/passwd */
    HD_VM_CFG_HOSTNAME = 'h',
    HD_VM_CFG_PIDS = 'p',        /* decimal pids.max for the workload's guest cgroup */
    HD_VM_CFG_MEMORY = 'm',      /* decimal memory.max in bytes for the workload's guest cgroup */
    HD_VM_CFG_READONLY = 'r',    /* "1": no overlay, the erofs rootfs is the root as is */
    HD_VM_CFG_NET_ADDRESS = 'n', /* "10.89.0.2/24": eth0's address (bridge network) */
    HD_VM_CFG_NET_GATEWAY = 'g', /* "10.89.0.1": the default route (none without this record) */
    HD_VM_CFG_SEED = 's',        /* 2*HD_VM_SEED_BYTES hex digits from the host's getrandom(): credited to
                                 the guest's input pool (RNDADDENTROPY), then the CRNG is reseeded */
    HD_VM_CFG_CLOCK = 't',       /* "SEC.NSEC": the host's CLOCK_REALTIME when it sent CONFIG */
    HD_VM_CFG_DEVICE = 'd',      /* "KIND NAME MODE TARGET": a host device (KIND c: the virtio-serial port
                                 named NAME; b: the virtio-blk disk whose serial is NAME) to appear at
                                 TARGET (the rest of the record) with octal permission bits MODE */
    HD_VM_CFG_MACHINE_ID = 'i',  /* 32 hex digits: the guest's /etc/machine-id (its own, also for a clone) */
    HD_VM_CFG_SECRET = 'S',      /* "MODE UID GID LEN TARGET" (octal MODE; UID/GID -1: the workload user's),
                                 then LEN value bytes: a file at TARGET on a tmpfs mounted at its directory */
    HD_VM_CFG_FILE = 'F',        /* "MODE UID GID RO LEN TARGET" (octal MODE, RO 0/1): a file bound at TARGET
                                 (hedge-oci-vm's bind mounts of files); its LEN bytes follow CONFIG in
                                 FILE_DATA messages, the files' bytes one after the other, in record order */
    HD_VM_CFG_SHARE = 'D',       /* "RO TAG TARGET": mount the virtiofs TAG (a host directory) at TARGET */
    HD_VM_CFG_NET_MTU = 'U',     /* decimal: eth0's MTU (the engine's interface's) */
    HD_VM_CFG_TERMINAL = 'T',    /* CONFIG or EXEC: "ROWS COLS", the process runs on a pty of that size (0 0:
                                 unknown) */
};

#define HD_VM_SEED_BYTES 64

/* EXEC_STDIN bytes a session may have in flight (sent, not acknowledged): what hedge-init buffers for it. */
#define HD_VM_EXEC_STDIN_WINDOW 65536u

struct hd_vm_msg_header {
    uint32_t type;
    uint32_t length;
};

struct hd_vm_winsize {
    uint16_t rows;
    uint16_t cols;
};

struct hd_vm_exit_msg {
    int32_t status;      /* exit status if the workload exited, else -1 */
    int32_t signal;      /* terminating signal, else 0 */
    uint32_t oom_killed; /* 1: the guest kernel's OOM killer killed a workload task */
};

/* True when type is one a peer may send and length fits it. */
static inline int hd_vm_msg_valid(uint32_t type, uint32_t length, int from_guest)
{
    if (length > HD_VM_MSG_MAX)
        return 0;
    if (from_guest) {
        switch (type) {
        case HD_VM_MSG_STARTED: return length == 0;
        case HD_VM_MSG_STDOUT:
        case HD_VM_MSG_STDERR: return 1;
        case HD_VM_MSG_EXIT: return length == sizeof(struct hd_vm_exit_msg);
        case HD_VM_MSG_ERROR: return length >= 4;
        case HD_VM_MSG_READY: return length == 0;
        case HD_VM_MSG_EXEC_STDOUT:
        case HD_VM_MSG_EXEC_STDERR: return length >= 4;
        case HD_VM_MSG_EXEC_EXIT: return length == 4 + sizeof(struct hd_vm_exit_msg);
        case HD_VM_MSG_EXEC_STDIN_ACK: return length == 8;
        case HD_VM_MSG_WARM_DONE: return length == 0;
        default: return 0;
        }
    }
    switch (type) {
    case HD_VM_MSG_CONFIG: return length > 0;
    case HD_VM_MSG_STDIN: return 1;
    case HD_VM_MSG_STDIN_EOF: return length == 0;
    case HD_VM_MSG_SIGNAL: return length == 4;
    case HD_VM_MSG_EXIT_ACK: return length == 0;
    case HD_VM_MSG_EXEC: return length > 4;
    case HD_VM_MSG_EXEC_STDIN: return length > 4 && length - 4 <= HD_VM_EXEC_STDIN_WINDOW;
    case HD_VM_MSG_EXEC_STDIN_EOF: return length == 4;
    case HD_VM_MSG_EXEC_RESIZE: return length == 4 + sizeof(struct hd_vm_winsize);
    case HD_VM_MSG_FILE_DATA: return length > 0;
    case HD_VM_MSG_RESIZE: return length == sizeof(struct hd_vm_winsize);
    case HD_VM_MSG_EXEC_SIGNAL: return length == 8;
    case HD_VM_MSG_WARM: return length == 0;
    default: return 0;
    }
}

/* Decode exactly 2*n hex digits (and nothing more) of text into out. 0, or -1 when malformed. */
static inline int hd_vm_hex_decode(const char *text, unsigned char *out, size_t n)
{
    if (strlen(text) != 2 * n)
        return -1;
    for (size_t i = 0; i < 2 * n; i++) {
        char c = text[i];
        int v = c >= '0' && c <= '9' ? c - '0'
            : c >= 'a' && c <= 'f'   ? c - 'a' + 10
            : c >= 'A' && c <= 'F'   ? c - 'A' + 10
                                     : -1;
        if (v < 0)
            return -1;
        if (i % 2 == 0)
            out[i / 2] = (unsigned char)(v << 4);
        else
            out[i / 2] |= (unsigned char)v;
    }
    return 0;
}

/* Write all of buf; retries short writes and EINTR. 0 or -errno. */
static inline int hd_vm_write_all(int fd, const void *buf, size_t len)
{
    const char *p = (const char *)buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Read exactly len bytes. 0, -errno, or -EPIPE at end of stream. */
static inline int hd_vm_read_all(int fd, void *buf, size_t len)
{
    char *p = (char *)buf;
    while (len) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EPIPE;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Send one message (header and payload in one write when it fits a page). 0 or -errno. */
static inline int hd_vm_send(int fd, uint32_t type, const void *payload, uint32_t length)
{
    if (length > HD_VM_MSG_MAX)
        return -EMSGSIZE;
    struct hd_vm_msg_header h = {type, length};
    char small[4096];
    if (length <= sizeof(small) - sizeof(h)) {
        memcpy(small, &h, sizeof(h));
        if (length)
            memcpy(small + sizeof(h), payload, length);
        return hd_vm_write_all(fd, small, sizeof(h) + length);
    }
    int r = hd_vm_write_all(fd, &h, sizeof(h));
    return r < 0 ? r : hd_vm_write_all(fd, payload, length);
}

/*
 * Incremental receiver for a non-blocking stream: feed bytes in, take whole
 * messages out. buf holds one header plus the largest payload.
 */
struct hd_vm_reader {
    unsigned char buf[sizeof(struct hd_vm_msg_header) + HD_VM_MSG_MAX];
    size_t have;
};

/*
 * Read what fd has into r. Returns bytes read (>0), 0 at end of stream,
 * -EAGAIN when nothing is ready, or -errno.
 */
static inline ssize_t hd_vm_reader_fill(struct hd_vm_reader *r, int fd)
{
    size_t want = sizeof(struct hd_vm_msg_header);
    if (r->have >= want) {
        struct hd_vm_msg_header h;
        memcpy(&h, r->buf, sizeof(h));
        want += h.length <= HD_VM_MSG_MAX ? h.length : 0;
    }
    if (r->have >= want)
        return 1; /* a whole message is waiting: take it first */
    ssize_t n;
    do
        n = read(fd, r->buf + r->have, want - r->have);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    r->have += (size_t)n;
    return n;
}

/*
 * Take the next whole message: 1 with *h and *payload (valid until the next
 * call) set, 0 when incomplete, -EBADMSG when the header is malformed.
 */
static inline int hd_vm_reader_next(struct hd_vm_reader *r, int from_guest, struct hd_vm_msg_header *h,
                                    const unsigned char **payload, size_t *consumed)
{
    if (r->have < sizeof(*h))
        return 0;
    memcpy(h, r->buf, sizeof(*h));
    if (!hd_vm_msg_valid(h->type, h->length, from_guest))
        return -EBADMSG;
    if (r->have < sizeof(*h) + h->length)
        return 0;
    *payload = r->buf + sizeof(*h);
    *consumed = sizeof(*h) + h->length;
    return 1;
}

/* Drop a message hd_vm_reader_next returned (after its payload was used). */
static inline void hd_vm_reader_consume(struct hd_vm_reader *r, size_t consumed)
{
    memmove(r->buf, r->buf + consumed, r->have - consumed);
    r->have -= consumed;
}

#endif
