/*
 * fdpass.h - descriptors over a unix socket (SCM_RIGHTS): one message of bytes with the descriptors
 * riding along. Used where a process hands another its terminal, its stdio or a lock: the engines'
 * console socket and seccomp listener (oci/), hedge-oci-vm's exec requests, hedged's warm pool.
 */
#ifndef HEDGE_FDPASS_H
#define HEDGE_FDPASS_H

#include <stddef.h>
#include <sys/types.h>

/* Send len bytes of buf with the n descriptors of fds (n <= HD_FDPASS_MAX) in one sendmsg, without
 * SIGPIPE, EINTR retried: the bytes sent, or -1 (errno). */
ssize_t hd_send_fds(int sock, const void *buf, size_t len, const int *fds, size_t n);

/* Receive one message: up to len bytes into buf and up to max descriptors into fds (CLOEXEC), *n saying
 * how many came; EINTR retried; flags are recvmsg's (MSG_WAITALL, MSG_DONTWAIT). Descriptors beyond max
 * are closed, never leaked. The bytes received (0: the end), or -1 (errno). */
ssize_t hd_recv_fds(int sock, void *buf, size_t len, int *fds, size_t max, size_t *n, int flags);

#define HD_FDPASS_MAX 8

#endif
