/*
 * privdrop.h - how a network-facing hedge process gives up root: hedged's
 * network child (broker + uplink), `hedge-broker --user` and
 * `hedge-uplink --user` (docs/security.md, "Privilege separation").
 *
 * The steps, in order:
 *   hd_privdrop_resolve    the unprivileged user: a named one (default
 *                          "hedge-broker", made by the Debian package) or,
 *                          when it does not exist, a fixed unused id;
 *   hd_privdrop_user       setgroups/setresgid/setresuid, every capability
 *                          gone from the bounding set; keep_bind keeps
 *                          CAP_NET_BIND_SERVICE effective until ...
 *   hd_privdrop_finish     ... no capabilities at all, no_new_privs, and the
 *                          seccomp allow-list (anything else kills the process).
 */
#ifndef HEDGE_BASE_PRIVDROP_H
#define HEDGE_BASE_PRIVDROP_H

#include <stdbool.h>
#include <sys/types.h>

#include "base/error.h"

/* The user network parts run as when nothing else is named. */
#define HD_PRIVDROP_DEFAULT_USER "hedge-broker"
/* When that user does not exist: the first id from here up that no user or group holds. */
#define HD_PRIVDROP_FALLBACK_ID 61874

/* name NULL: the default user, else the fallback id. A named user that does not exist is an error. */
int hd_privdrop_resolve(const char *name, uid_t *uid, gid_t *gid, hd_error_t *err);
/* Become uid/gid (no supplementary groups) with an empty capability bounding set; with keep_bind,
 * CAP_NET_BIND_SERVICE stays effective (bind ports below 1024) until hd_privdrop_finish. */
int hd_privdrop_user(uid_t uid, gid_t gid, bool keep_bind, hd_error_t *err);
/* Give a directory tree (not following symlinks, not crossing mounts) to uid/gid: a part's own
 * state dir, before it drops root. */
void hd_privdrop_chown_tree(const char *path, uid_t uid, gid_t gid);
/* Drop every capability, set no_new_privs and load the network allow-list (default: kill the process). */
int hd_privdrop_finish(hd_error_t *err);
/* Call a syscall outside the allow-list (the test hook of docs/security.md): does not return
 * under the filter. */
void hd_privdrop_forbidden_syscall(void);

#endif
