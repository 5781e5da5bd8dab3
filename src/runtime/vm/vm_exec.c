/*
 * vm_exec.c - processes exec'd into a running guest beside its workload (hedge-oci-vm exec, hd_vm_exec).
 *
 * Each is a session: a number the host picks, and the caller's descriptors its output and its end go to.
 * hd_vm_exec (the caller's thread) takes a free slot and queues an EXEC message (the session number, then
 * CONFIG-style ARG/ENV/WORKDIR/USER records) for the relay thread (vm.c), which sends it; hedge-init starts
 * the process in the workload's root and guest cgroup. The relay hands this file the guest's EXEC_STDOUT,
 * EXEC_STDERR and EXEC_EXIT messages: the bytes are written to the session's fds, the exit code (u32,
 * docker's: 128+N for signal N) goes to its done fd, and the slot is free again. A session whose guest ends
 * first is closed without a code. The message layouts are in proto.h.
 */
#include <errno.h>
#include <pthread.h>
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
        vm->execs[i].out_fd = vm->execs[i].err_fd = vm->execs[i].done_fd = -1;
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
    int fds[3] = {e->out_fd, e->err_fd, e->done_fd};
    e->out_fd = e->err_fd = e->done_fd = -1;
    pthread_mutex_unlock(&vm->lock);
    for (int i = 0; i < 3; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

void hd_vm_exec_close_all(struct vm *vm)
{
    for (size_t i = 0; i < MAX_EXECS; i++)
        close_exec(vm, &vm->execs[i]);
}

int hd_vm_exec(struct hd_workload *w, const char *records, size_t len, int out_fd, int err_fd, int done_fd,
               hd_error_t *err)
{
    struct vm *vm = w->backend == &hd_backend_vm ? w->backend_data : NULL;
    int fds[3] = {out_fd, err_fd, done_fd};
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
            *slot = (struct vm_exec){.id = ++vm->next_exec_id, .out_fd = out_fd, .err_fd = err_fd, .done_fd = done_fd};
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
        for (int i = 0; i < 3; i++)
            if (fds[i] >= 0)
                close(fds[i]);
        return -1;
    }
    uint64_t one = 1;
    ssize_t n = write(vm->wake_fd, &one, sizeof(one));
    (void)n;
    return 0;
}

bool hd_vm_exec_handle(struct vm *vm, const struct hd_vm_msg_header *h, const unsigned char *payload)
{
    switch (h->type) {
    case HD_VM_MSG_EXEC_STDOUT:
    case HD_VM_MSG_EXEC_STDERR: {
        struct vm_exec *e = find_exec(vm, payload);
        if (e)
            hd_vm_write_out(vm, h->type == HD_VM_MSG_EXEC_STDOUT ? e->out_fd : e->err_fd, payload + 4, h->length - 4);
        return true;
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
        return true;
    }
    default: return false;
    }
}
