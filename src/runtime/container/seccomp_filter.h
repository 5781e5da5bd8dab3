/*
 * seccomp_filter.h - the syscall filter of a container workload (libseccomp).
 *
 * The filter is built and compiled to BPF once, in the parent, before the
 * workload's process exists (hd_seccomp_build); the child only hands the
 * ready program to the kernel as the last step before exec
 * (hd_seccomp_load), so no libseccomp work sits on the start path of the
 * child.
 */
#ifndef HEDGE_SECCOMP_FILTER_H
#define HEDGE_SECCOMP_FILTER_H

#include <stdint.h>

#include "base/error.h"
#include "spec/spec.h"

struct hd_seccomp;

/*
 * Build the filter for sec->seccomp: NULL or "default" = hedge's default
 * profile (relaxed by the capabilities in caps, as Docker's is), "unconfined"
 * = no filter (*out = NULL), an absolute path = a Docker/OCI JSON profile.
 */
int hd_seccomp_build(const struct hd_security *sec, uint64_t caps, struct hd_seccomp **out, hd_error_t *err);
/* Child side: install the filter. Needs no_new_privs or CAP_SYS_ADMIN. */
int hd_seccomp_load(const struct hd_seccomp *filter, hd_error_t *err);
/* The same with SECCOMP_FILTER_FLAG_NEW_LISTENER: the listener fd (close-on-exec), or -1. */
int hd_seccomp_load_listener(const struct hd_seccomp *filter, hd_error_t *err);
/* Number of BPF instructions (for tests and messages). */
unsigned hd_seccomp_length(const struct hd_seccomp *filter);
void hd_seccomp_free(struct hd_seccomp *filter);

#endif
