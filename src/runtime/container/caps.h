/*
 * caps.h - the capability set of a container workload.
 *
 * A workload starts from Docker's default set (so images written for Docker
 * behave the same), adjusted by security.cap_add / cap_drop. The set is a
 * 64-bit mask computed once in the parent (hd_caps_from_spec, which is where
 * bad names are reported); the child applies it in two steps: the bounding
 * set is trimmed while it still has CAP_SETPCAP, and permitted/effective are
 * set last, after the user switch (hd_caps_apply).
 */
#ifndef HEDGE_CAPS_H
#define HEDGE_CAPS_H

#include <stdint.h>

#include "base/error.h"
#include "spec/spec.h"

/* Docker's default capability set as a mask (bit N = capability N). */
uint64_t hd_caps_default(void);
/* Compute the workload's set from the spec; errors name security.cap_add[i] / cap_drop[i]. */
int hd_caps_from_spec(const struct hd_security *sec, uint64_t *out, hd_error_t *err);
/* Parse one name ("NET_ADMIN", "CAP_NET_ADMIN", any case); -1 if unknown. */
int hd_cap_parse(const char *name);
/* Child side: drop every capability not in keep from the bounding set. */
int hd_caps_drop_bounding(uint64_t keep, hd_error_t *err);
/* Child side, after the user switch: permitted = effective = keep for root, nothing for
 * other users (as Docker); inheritable and ambient empty. */
int hd_caps_apply(uint64_t keep, hd_error_t *err);
/* The same for any user (runc's way, with PR_SET_KEEPCAPS held over the user switch): a non-root user keeps
 * them until exec, which leaves it only what is ambient. */
int hd_caps_apply_any_user(uint64_t keep, hd_error_t *err);

/* Child side, after hd_caps_apply(_any_user): set the inheritable set and raise ambient capabilities
 * (hedge-oci's process.capabilities; both must lie within the permitted set). */
int hd_caps_set_inheritable_ambient(uint64_t inheritable, uint64_t ambient, hd_error_t *err);

#endif
