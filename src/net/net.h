/*
 * net.h - workload networking: none (loopback only), host, and bridge (a veth
 * pair to the hedge0 bridge, an address from a small allocator, outbound
 * masquerade). VMs get a tap on the same bridge. docs/network.md has the
 * whole picture: modes, addressing, what stays and what is removed.
 *
 * Environment: $HEDGE_BRIDGE names the bridge (default hedge0),
 * $HEDGE_BRIDGE_SUBNET its IPv4 subnet (default 10.89.0.0/24, prefix 16..29);
 * the gateway is the subnet's first address, on the bridge.
 */
#ifndef HEDGE_NET_H
#define HEDGE_NET_H

#include <sys/types.h>

#include "base/error.h"
#include "spec/spec.h"

struct hd_net;

/*
 * Called by a backend once the workload's first process exists in its own
 * network namespace (pid), before the command runs. For HD_NET_NONE (and
 * HD_NET_DEFAULT, which means none for a workload with its own namespace) it
 * brings up lo inside; HD_NET_HOST does nothing (*out = NULL). For
 * HD_NET_BRIDGE it creates the bridge and masquerade rule if needed, the veth
 * pair (eth0 inside), the address and the default route. *out owns what was
 * created. On failure nothing is left behind.
 */
int hd_net_setup(const char *state_dir, const char *id, enum hd_net_mode mode, pid_t pid, struct hd_net **out,
                 hd_error_t *err);
/*
 * For VMs: a tap device attached to the bridge, with an address leased for
 * the guest. *tap_name, *guest_cidr ("10.89.0.2/24") and *gateway
 * ("10.89.0.1") are owned by *out. The tap is not persistent: it lives while
 * an fd to it is open; hd_net_tap_fd gives *out's fd (pass a dup to QEMU as
 * -netdev tap,fd=N; it has IFF_VNET_HDR set).
 */
int hd_net_setup_tap(const char *state_dir, const char *id, struct hd_net **out, const char **tap_name,
                     const char **guest_cidr, const char **gateway, hd_error_t *err);
/* The tap fd of a hd_net_setup_tap result (owned by n), else -1. */
int hd_net_tap_fd(const struct hd_net *n);
/* The workload's (or guest's) address as CIDR and the gateway, or NULL when none. */
const char *hd_net_address(const struct hd_net *n);
const char *hd_net_gateway(const struct hd_net *n);
/*
 * Remove what setup created (veth or tap) and release the address, then free
 * n. n may be NULL. The bridge and the masquerade rule stay. If the link
 * cannot be removed the lease is kept (the address may still be in use) and
 * is reclaimed once the link is gone.
 */
int hd_net_teardown(struct hd_net *n, hd_error_t *err);

#endif
