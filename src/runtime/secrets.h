/*
 * secrets.h - a workload's secrets as files on a tmpfs (docs/security.md,
 * "Secrets"): what run.c and the container's rootfs need of secrets.c.
 */
#ifndef HEDGE_RUNTIME_SECRETS_H
#define HEDGE_RUNTIME_SECRETS_H

#include "runtime/backend.h"

/*
 * Decrypt every secret the spec names (all of them before anything is made,
 * so a wrong key or a missing secret leaves nothing behind), mount this run's
 * tmpfs <runtime>/secrets/<id> and write the files there, each at its target
 * path under it; add the env variables the spec asks for and, for a process,
 * HEDGE_SECRETS_DIR. Nothing to do without secrets.
 */
int hd_secrets_prepare(struct hd_workload *w, hd_error_t *err);
/*
 * A VM's secrets: hedge-init writes them on tmpfs mounts in the guest, so the
 * host makes no tmpfs (hd_secrets_prepare only sets the env variables) and the
 * VM backend sends each value in its CONFIG message. hd_secrets_decrypt gives
 * every secret of the spec decrypted, in spec order; hd_secrets_plain_free
 * wipes and frees them.
 */
struct hd_secret_plain {
    char *value;
    size_t len;
};
int hd_secrets_decrypt(const struct hd_workload *w, struct hd_secret_plain **out, hd_error_t *err);
void hd_secrets_plain_free(struct hd_secret_plain *o, int n);
/* Unmount and remove the tmpfs; safe when nothing was made. */
void hd_secrets_cleanup(struct hd_workload *w);
/*
 * The container's secret directories: each distinct parent directory of a
 * target (absolute, inside the container), parents before children; the host
 * side of dirs[i] is w->secrets_dir + dirs[i]. NULL-terminated, caller frees.
 */
char **hd_secrets_container_dirs(const struct hd_workload *w);

#endif
