/*
 * test_vm_proto.c - the host↔guest message framing (vm-proto.h): valid
 * messages of every type (exec's stdin, its end and its acknowledgement
 * too) pass, malformed headers (unknown type, wrong direction, oversize or
 * ill-fitting length) are refused, and the incremental reader reassembles
 * messages split across reads and back-to-back in one read.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "runtime/vm/proto.h"

static void test_validity(void)
{
    CHECK(hd_vm_msg_valid(HD_VM_MSG_CONFIG, 10, 0));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_CONFIG, 0, 0));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_CONFIG, 10, 1)); /* wrong direction */
    CHECK(hd_vm_msg_valid(HD_VM_MSG_SIGNAL, 4, 0));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_SIGNAL, 3, 0));
    CHECK(hd_vm_msg_valid(HD_VM_MSG_STDIN_EOF, 0, 0));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_STDIN_EOF, 1, 0));
    CHECK(hd_vm_msg_valid(HD_VM_MSG_EXIT_ACK, 0, 0));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_EXIT_ACK, 1, 0));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_EXIT_ACK, 0, 1)); /* host → guest only */
    CHECK(hd_vm_msg_valid(HD_VM_MSG_EXIT, sizeof(struct hd_vm_exit_msg), 1));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_EXIT, sizeof(struct hd_vm_exit_msg) - 1, 1));
    CHECK(hd_vm_msg_valid(HD_VM_MSG_STARTED, 0, 1));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_STARTED, 1, 1));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_ERROR, 3, 1));
    CHECK(hd_vm_msg_valid(HD_VM_MSG_STDOUT, HD_VM_MSG_MAX, 1));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_STDOUT, HD_VM_MSG_MAX + 1, 1));
    CHECK(hd_vm_msg_valid(HD_VM_MSG_READY, 0, 1));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_READY, 1, 1));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_READY, 0, 0)); /* guest → host only */
    /* exec: a session number first; EXEC goes to the guest, its output and end come back */
    CHECK(hd_vm_msg_valid(HD_VM_MSG_EXEC, 6, 0));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_EXEC, 4, 0)); /* a session and no record */
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_EXEC, 6, 1));
    CHECK(hd_vm_msg_valid(HD_VM_MSG_EXEC_STDOUT, 4, 1));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_EXEC_STDERR, 3, 1));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_EXEC_STDOUT, 4, 0));
    CHECK(hd_vm_msg_valid(HD_VM_MSG_EXEC_EXIT, 4 + sizeof(struct hd_vm_exit_msg), 1));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_EXEC_EXIT, sizeof(struct hd_vm_exit_msg), 1));
    /* exec stdin: bytes and the end go to the guest, the acknowledgement (session, count) comes back */
    CHECK(hd_vm_msg_valid(HD_VM_MSG_EXEC_STDIN, 5, 0));
    CHECK(hd_vm_msg_valid(HD_VM_MSG_EXEC_STDIN, HD_VM_MSG_MAX, 0));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_EXEC_STDIN, 4, 0)); /* a session and no byte */
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_EXEC_STDIN, 3, 0));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_EXEC_STDIN, HD_VM_MSG_MAX + 1, 0));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_EXEC_STDIN, 5, 1)); /* host → guest only */
    CHECK(hd_vm_msg_valid(HD_VM_MSG_EXEC_STDIN_EOF, 4, 0));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_EXEC_STDIN_EOF, 0, 0));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_EXEC_STDIN_EOF, 5, 0));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_EXEC_STDIN_EOF, 4, 1));
    CHECK(hd_vm_msg_valid(HD_VM_MSG_EXEC_STDIN_ACK, 8, 1));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_EXEC_STDIN_ACK, 4, 1));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_EXEC_STDIN_ACK, 12, 1));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_EXEC_STDIN_ACK, 8, 0)); /* guest → host only */
    /* a terminal's size: the session, rows and columns */
    CHECK(hd_vm_msg_valid(HD_VM_MSG_EXEC_RESIZE, 8, 0));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_EXEC_RESIZE, 4, 0));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_EXEC_RESIZE, 12, 0));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_EXEC_RESIZE, 8, 1));
    /* the workload's terminal: RESIZE is a struct hd_vm_winsize; EXEC_SIGNAL a session and a signal */
    CHECK(hd_vm_msg_valid(HD_VM_MSG_RESIZE, 4, 0));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_RESIZE, 0, 0));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_RESIZE, 8, 0));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_RESIZE, 4, 1));
    CHECK(hd_vm_msg_valid(HD_VM_MSG_EXEC_SIGNAL, 8, 0));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_EXEC_SIGNAL, 4, 0));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_EXEC_SIGNAL, 12, 0));
    CHECK(!hd_vm_msg_valid(HD_VM_MSG_EXEC_SIGNAL, 8, 1));
    CHECK(!hd_vm_msg_valid(0, 0, 0));
    CHECK(!hd_vm_msg_valid(999, 0, 1));
}

static void test_reader_split_and_batched(void)
{
    int p[2];
    CHECK(pipe(p) == 0);
    /* two messages, written in pieces: header split, then payload, then a whole second one */
    CHECK(hd_vm_send(p[1], HD_VM_MSG_STDOUT, "hello", 5) == 0);
    CHECK(hd_vm_send(p[1], HD_VM_MSG_STARTED, NULL, 0) == 0);
    struct hd_vm_reader *r = calloc(1, sizeof(*r));
    struct hd_vm_msg_header h = {0, 0};
    const unsigned char *payload = NULL;
    size_t used = 0;
    int got = 0;
    while (got < 2) {
        int n = hd_vm_reader_next(r, 1, &h, &payload, &used);
        CHECK(n >= 0);
        if (n == 0) {
            CHECK(hd_vm_reader_fill(r, p[0]) > 0);
            continue;
        }
        if (got == 0) {
            CHECK(h.type == HD_VM_MSG_STDOUT && h.length == 5 && payload && memcmp(payload, "hello", 5) == 0);
        } else {
            CHECK(h.type == HD_VM_MSG_STARTED && h.length == 0);
        }
        hd_vm_reader_consume(r, used);
        got++;
    }
    CHECK(r->have == 0);
    /* a malformed header is reported as soon as the header is in, without waiting for a payload */
    struct hd_vm_msg_header bad = {HD_VM_MSG_STDOUT, HD_VM_MSG_MAX + 1};
    CHECK(write(p[1], &bad, sizeof(bad)) == (ssize_t)sizeof(bad));
    CHECK(hd_vm_reader_fill(r, p[0]) == (ssize_t)sizeof(bad));
    CHECK(hd_vm_reader_next(r, 1, &h, &payload, &used) == -EBADMSG);
    CHECK(hd_vm_reader_fill(r, p[0]) == 1); /* the bad header stays; no read past it */
    /* end of stream */
    close(p[1]);
    r->have = 0;
    CHECK(hd_vm_reader_fill(r, p[0]) == 0);
    close(p[0]);
    free(r);
    CHECK(hd_vm_send(-1, HD_VM_MSG_STDOUT, "x", HD_VM_MSG_MAX + 1) == -EMSGSIZE);
}

/* The entropy seed's hex record: exactly 2n digits of either case, nothing else. */
static void test_hex_decode(void)
{
    unsigned char out[4];
    CHECK(hd_vm_hex_decode("00ff7Aa5", out, 4) == 0);
    CHECK(out[0] == 0x00 && out[1] == 0xff && out[2] == 0x7a && out[3] == 0xa5);
    CHECK(hd_vm_hex_decode("00ff7a", out, 4) == -1);    /* short */
    CHECK(hd_vm_hex_decode("00ff7aa5b", out, 4) == -1); /* long */
    CHECK(hd_vm_hex_decode("00fg7aa5", out, 4) == -1);  /* not hex */
    CHECK(hd_vm_hex_decode("", out, 0) == 0);
}

int main(void)
{
    test_validity();
    test_hex_decode();
    test_reader_split_and_batched();
    CHECK_DONE();
    return 0;
}
