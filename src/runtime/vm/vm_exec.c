/*
 * vm_exec.c - processes exec'd into a running guest beside its workload (hedge-oci-vm exec, hd_vm_exec).
 *
 * Each is a session: a number the host picks, and the caller's descriptors its stdin comes from and its
 * output and its end go to. hd_vm_exec (the caller's thread) takes a free slot and queues an EXEC message
 * (the session number, then CONFIG-style ARG/ENV/WORKDIR/USER records) for the relay thread (vm.c), which
 * sends it; hedge-init starts the process in the workload's root and guest cgroup. The relay hands this file
 * the guest's EXEC_STDOUT, EXEC_STDERR, EXEC_STDIN_ACK and EXEC_EXIT messages: the bytes are written to the
 * session's fds, the exit code (u32, docker's: 128+N for signal N) goes to its done fd, and the slot is free
 * again. A session whose guest ends first is closed without a code. The message layouts are in proto.h.
 *
 * stdin: the relay polls each session's stdin beside its other descriptors, never blocks on it, and reads
 * one chunk only when it has no message in flight and the session has room in its window
 * (HD_VM_EXEC_STDIN_WINDOW bytes sent and not acknowledged by hedge-init): so a process in the guest that
 * does not read its stdin stalls only its own session's input. The caller's descriptor is read as it is
 * (it is not made non-blocking: that flag would change the caller's own file description); a read follows
 * a poll that said it is readable, which for the pipes, ttys, sockets and files a caller gives does not
 * block. End of file (or an error) closes it here and goes to the guest as EXEC_STDIN_EOF.
 *
 * A terminal (the records hold HD_VM_CFG_TERMINAL): the guest runs the process on a pty of its own; the
 * caller's fds are the slave of a host pty in raw mode (hedge-oci-vm exec --tty made it and gave the master to
 * the console socket), so keys and output pass through unchanged. The caller writes the terminal's size
 * (struct hd_vm_exec_control, signal 0) on the done connection whenever it changes; the relay sends each as
 * EXEC_RESIZE.
 *
 * Signals: the caller (hedge-oci-vm exec's host process, the exec's pid) writes each signal it gets as a
 * struct hd_vm_exec_control on the done connection; the relay sends it as EXEC_SIGNAL. SIGKILL cannot be
 * caught: when the done connection ends before the process did (its caller died), the relay sends
 * EXEC_SIGNAL SIGKILL, so that the guest process ends with the host one.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "runtime/backend.h"
#include "base/util.h"
#include "runtime/vm/vm_internal.h"

void hd_vm_exec_init(struct vm *vm)
{
    for (size_t i = 0; i < MAX_EXECS; i++)
        vm->execs[i].in_fd = vm->execs[i].out_fd = vm->execs[i].err_fd = vm->execs[i].done_fd = -1;
}

/* The exec session a guest message names (its first 4 bytes), or NULL (already gone). */
static struct vm_exec *find_exec(struct vm *vm, const unsigned char *payload)
{
    uint32_t id;
    memcpy(&id, payload, 4);
    struct vm_exec *found = NULL;
    pthread_mutex_lock(&vm->lock);
    for (size_t i = 0; i < MAX_EXECS && found == NULL; i++)
        if (vm->execs[i].done_fd >= 0 && vm->execs[i].id == id)
            found = &vm->execs[i];
    pthread_mutex_unlock(&vm->lock);
    return found;
}

/* Close a session's descriptors: its caller sees the end (without a code: the VM ended first). */
static void close_exec(struct vm *vm, struct vm_exec *e)
{
    pthread_mutex_lock(&vm->lock);
    int fds[4] = {e->in_fd, e->out_fd, e->err_fd, e->done_fd};
    e->in_fd = e->out_fd = e->err_fd = e->done_fd = -1;
    pthread_mutex_unlock(&vm->lock);
    for (int i = 0; i < 4; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

void hd_vm_exec_close_all(struct vm *vm)
{
    for (size_t i = 0; i < MAX_EXECS; i++)
        close_exec(vm, &vm->execs[i]);
}

/* Do the records ask for a terminal (HD_VM_CFG_TERMINAL)? */
static bool records_have_terminal(const char *records, size_t len)
{
    for (size_t off = 0; off < len;) {
        char tag = records[off++];
        if (tag == HD_VM_CFG_TERMINAL)
            return true;
        off += strnlen(records + off, len - off) + 1;
    }
    return false;
}

int hd_vm_exec(struct hd_workload *w, const char *records, size_t len, int in_fd, int out_fd, int err_fd, int done_fd,
               hd_error_t *err)
{
    struct vm *vm = w->backend == &hd_backend_vm ? w->backend_data : NULL;
    int fds[4] = {in_fd, out_fd, err_fd, done_fd};
    int rc = 0;
    if (vm == NULL || vm->state != VM_RUNNING || !vm->relay_started)
        rc = hd_error_set(err, ESRCH, "exec: the VM is not running");
    else if (len + 4 > HD_VM_MSG_MAX)
        rc = hd_error_set(err, E2BIG, "exec: command and environment take %zu bytes, more than %u", len,
                          HD_VM_MSG_MAX - 4);
    struct vm_exec *slot = NULL;
    if (rc == 0) {
        pthread_mutex_lock(&vm->lock);
        for (size_t i = 0; i < MAX_EXECS && slot == NULL; i++)
            if (vm->execs[i].done_fd < 0)
                slot = &vm->execs[i];
        if (slot && !vm->got_exit) {
            *slot = (struct vm_exec){.id = ++vm->next_exec_id,
                                     .in_fd = in_fd,
                                     .out_fd = out_fd,
                                     .err_fd = err_fd,
                                     .done_fd = done_fd,
                                     .tty = records_have_terminal(records, len),
                                     .caller_open = true};
            struct vm_pending *m = hd_xcalloc(1, sizeof(*m));
            m->type = HD_VM_MSG_EXEC;
            m->length = (uint32_t)(len + 4);
            m->payload = hd_xmalloc(len + 4);
            memcpy(m->payload, &slot->id, 4);
            memcpy(m->payload + 4, records, len);
            struct vm_pending **tail = &vm->pending;
            while (*tail)
                tail = &(*tail)->next;
            *tail = m;
        }
        pthread_mutex_unlock(&vm->lock);
        if (slot == NULL)
            rc = hd_error_set(err, EBUSY, "exec: %d processes are exec'd already", MAX_EXECS);
    }
    if (rc < 0) {
        for (int i = 0; i < 4; i++)
            if (fds[i] >= 0)
                close(fds[i]);
        return -1;
    }
    uint64_t one = 1;
    ssize_t n = write(vm->wake_fd, &one, sizeof(one));
    (void)n;
    return 0;
}

int hd_vm_exec_handle(struct vm *vm, const struct hd_vm_msg_header *h, const unsigned char *payload)
{
    switch (h->type) {
    case HD_VM_MSG_EXEC_STDOUT:
    case HD_VM_MSG_EXEC_STDERR: {
        struct vm_exec *e = find_exec(vm, payload);
        if (e)
            hd_vm_write_out(vm, h->type == HD_VM_MSG_EXEC_STDOUT ? e->out_fd : e->err_fd, payload + 4, h->length - 4);
        return 1;
    }
    case HD_VM_MSG_EXEC_STDIN_ACK: {
        struct vm_exec *e = find_exec(vm, payload);
        uint32_t count;
        memcpy(&count, payload + 4, 4);
        if (e && count > e->unacked) {
            snprintf(vm->relay_problem, sizeof(vm->relay_problem),
                     "protocol: the guest acknowledged %u stdin bytes of exec session %u, %u were sent", count, e->id,
                     e->unacked);
            return -1;
        }
        if (e)
            e->unacked -= count;
        return 1;
    }
    case HD_VM_MSG_EXEC_EXIT: {
        struct vm_exec *e = find_exec(vm, payload);
        if (e) {
            struct hd_vm_exit_msg m;
            memcpy(&m, payload + 4, sizeof(m));
            uint32_t code = m.signal ? (uint32_t)HD_EXIT_SIGNAL(m.signal) : m.status >= 0 ? (uint32_t)m.status : 125u;
            ssize_t n = send(e->done_fd, &code, sizeof(code), MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)n; /* a caller that went away learns nothing */
            close_exec(vm, e);
        }
        return 1;
    }
    default: return 0;
    }
}

void hd_vm_exec_input_poll(struct vm *vm, bool may_send, struct pollfd *fds)
{
    pthread_mutex_lock(&vm->lock);
    may_send = may_send && vm->pending == NULL; /* a session's EXEC goes out before its first stdin bytes */
    for (size_t i = 0; i < MAX_EXECS; i++) {
        const struct vm_exec *e = &vm->execs[i];
        bool room = e->done_fd >= 0 && e->unacked < HD_VM_EXEC_STDIN_WINDOW;
        fds[i] = (struct pollfd){.fd = may_send && room ? e->in_fd : -1, .events = POLLIN};
        bool control = may_send && e->done_fd >= 0 && e->caller_open;
        fds[MAX_EXECS + i] = (struct pollfd){.fd = control ? e->done_fd : -1, .events = POLLIN};
    }
    pthread_mutex_unlock(&vm->lock);
}

/*
 * What the caller wrote on the done connection (struct hd_vm_exec_control): a terminal's new size
 * (EXEC_RESIZE) or a signal (EXEC_SIGNAL); its end before the process's: EXEC_SIGNAL SIGKILL.
 */
static bool read_control(struct vm_exec *e, struct outgoing *out)
{
    struct hd_vm_exec_control c;
    unsigned char msg[8];
    ssize_t n = recv(e->done_fd, &c, sizeof(c), MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return false;
    memcpy(msg, &e->id, 4);
    if (n <= 0) {
        e->caller_open = false; /* the caller died (SIGKILL): so does its process */
        uint32_t sig = SIGKILL;
        memcpy(msg + 4, &sig, 4);
        hd_vm_outgoing_set(out, HD_VM_MSG_EXEC_SIGNAL, msg, 8);
        return true;
    }
    if (n != (ssize_t)sizeof(c))
        return false; /* the caller writes each whole; a torn one is dropped */
    if (c.signal != 0) {
        if (c.signal >= 65)
            return false;
        memcpy(msg + 4, &c.signal, 4);
        hd_vm_outgoing_set(out, HD_VM_MSG_EXEC_SIGNAL, msg, 8);
        return true;
    }
    if (!e->tty)
        return false;
    struct hd_vm_winsize size = {.rows = c.rows, .cols = c.cols};
    memcpy(msg + 4, &size, sizeof(size));
    hd_vm_outgoing_set(out, HD_VM_MSG_EXEC_RESIZE, msg, 4 + sizeof(size));
    return true;
}

void hd_vm_exec_input_read(struct vm *vm, const struct pollfd *fds, struct outgoing *out)
{
    for (size_t i = 0; i < MAX_EXECS; i++)
        if (fds[MAX_EXECS + i].fd >= 0 && (fds[MAX_EXECS + i].revents & (POLLIN | POLLHUP | POLLERR)) &&
            read_control(&vm->execs[i], out))
            return;
    /* stdin, round robin: each turn starts after the session read last, so none starves the others */
    size_t start = vm->next_stdin_session;
    for (size_t k = 0; k < MAX_EXECS; k++) {
        size_t i = (start + k) % MAX_EXECS;
        struct vm_exec *e = &vm->execs[i];
        if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)))
            continue;
        vm->next_stdin_session = (i + 1) % MAX_EXECS;
        unsigned char buf[4 + 16384];
        uint32_t room = HD_VM_EXEC_STDIN_WINDOW - e->unacked;
        size_t want = room < sizeof(buf) - 4 ? room : sizeof(buf) - 4;
        memcpy(buf, &e->id, 4);
        ssize_t n = read(e->in_fd, buf + 4, want);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            return;
        if (n > 0) {
            e->unacked += (uint32_t)n;
            hd_vm_outgoing_set(out, HD_VM_MSG_EXEC_STDIN, buf, (uint32_t)(4 + n));
            return;
        }
        /* the end of the caller's stdin (or an error reading it): the guest closes the process's stdin */
        pthread_mutex_lock(&vm->lock);
        int fd = e->in_fd;
        e->in_fd = -1;
        pthread_mutex_unlock(&vm->lock);
        close(fd);
        hd_vm_outgoing_set(out, HD_VM_MSG_EXEC_STDIN_EOF, &e->id, 4);
        return;
    }
}
