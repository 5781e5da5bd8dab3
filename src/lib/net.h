/*
 * net.h - workload networking: none (loopback only), host, and bridge (a veth
 * pair to the hedge0 bridge, an address from a small allocator, outbound
 * masquerade). VMs get a tap on the same bridge.
 */
#ifndef HEDGE_NET_H
#define HEDGE_NET_H

#include <sys/types.h>

#include "error.h"
#include "spec.h"

struct hd_net;

/*
 * Called by a backend once the workload's first process exists in its own
 * network namespace (pid), before the command runs. For HD_NET_NONE it brings
 * up lo inside; for HD_NET_BRIDGE it creates the bridge if needed, the veth
 * pair, the address and the default route. *out owns what was created.
 */
int hd_net_setup(const char *state_dir, const char *id, enum hd_net_mode mode, pid_t pid,
                 struct hd_net **out, hd_error_t *err);
/* For VMs: a tap device attached to the bridge. *tap_name is owned by *out. */
int hd_net_setup_tap(const char *state_dir, const char *id, struct hd_net **out,
                     const char **tap_name, const char **guest_cidr, const char **gateway,
                     hd_error_t *err);
/* Remove what setup created and release the address. n may be NULL. */
int hd_net_teardown(struct hd_net *n, hd_error_t *err);

#endif
