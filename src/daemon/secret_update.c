/*
 * secret_update.c - hedged's side of the secret store (docs/security.md,
 * "Secrets"): a deploy pins each secret's current version into the spec, so
 * the spec digest (and the history) covers the secret's name and version and
 * never its value; an update of a secret (`hedge secret set`, which then calls
 * POST /v1/secrets/NAME) reaches the running workloads that use it.
 *
 * hedged itself never decrypts: it reads the clear version headers. The
 * workload's monitor, which delivered the files, rewrites them (ctl.sock
 * "secrets NAME"), each by rename(2). A deployment with "secret_update":
 * "restart" is upgraded instead to its spec with the new version pinned: the
 * health-gated upgrade of upgrade.c starts the new run and retires the old.
 * So is a VM workload's, whatever its policy: its files are in the guest.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"
#include "daemon/supervisor_internal.h"
#include "secret/secret.h"

int hd_supervisor_pin_secrets(const struct hd_daemon_config *cfg, struct hd_spec *spec, hd_error_t *err)
{
    for (int i = 0; i < spec->n_secrets; i++)
        if (hd_secret_version(cfg->state_dir, spec->secrets[i].name, &spec->secrets[i].version, err) < 0)
            return hd_error_prefix(err, "secrets[%d].name", i);
    return 0;
}

static bool spec_uses(const struct hd_spec *spec, const char *name)
{
    for (int i = 0; spec && i < spec->n_secrets; i++)
        if (strcmp(spec->secrets[i].name, name) == 0)
            return true;
    return false;
}

/* An upgrade started here has no client waiting for it: its answer is dropped (its events stay). */
static void reply_dropped(void *ctx, enum hd_sup_result result, json_t *body, hd_error_t err)
{
    json_decref(body);
}

/* The workload's spec again, with the store's versions: an upgrade when they changed. */
static int secret_restart(struct workload *wl, const char *name, uint64_t version, hd_error_t *err)
{
    struct hd_supervisor *sup = wl->sup;
    if (wl->up)
        return hd_error_set(err, 0, "an upgrade to version %d is in progress", wl->up->version);
    cleanup_free char *current = hd_spec_to_json(wl->spec);
    struct hd_spec *spec = supervisor_parse_spec(current, strlen(current), "stored spec", err);
    if (spec == NULL)
        return -1;
    if (hd_supervisor_pin_secrets(sup->cfg, spec, err) < 0) {
        hd_spec_free(spec);
        return -1;
    }
    char *spec_json = hd_spec_to_json(spec);
    char *digest = hd_digest(spec_json, strlen(spec_json));
    if (strcmp(digest, wl->digest) == 0) { /* already runs this version */
        hd_spec_free(spec);
        free(spec_json);
        free(digest);
        return 0;
    }
    cleanup_free char *note = hd_xasprintf("secret %s version %llu", name, (unsigned long long)version);
    upgrade_begin(wl, spec, spec_json, digest, note, 0, reply_dropped, NULL);
    return 1;
}

void hd_supervisor_secret_updated(struct hd_supervisor *sup, const char *name, hd_reply_fn reply, void *ctx)
{
    if (!hd_secret_name_valid(name))
        return supervisor_reply_error(reply, ctx, HD_SUP_INVALID, NULL, "secret \"%s\": not a valid secret name", name);
    hd_error_t err = NULL;
    uint64_t version = 0;
    if (hd_secret_version(sup->cfg->state_dir, name, &version, &err) < 0) {
        supervisor_reply_error(reply, ctx, HD_SUP_NOT_FOUND, NULL, "%s", hd_error_text(err));
        hd_error_free(&err);
        return;
    }
    json_t *rewritten = json_array(), *restarted = json_array(), *errors = json_object();
    for (struct workload *wl = sup->workloads; wl; wl = wl->next) {
        if (wl->removing || !spec_uses(wl->spec, name))
            continue;
        /* a VM's files are in its guest, out of the monitor's reach: it gets the new value by a restart */
        if (wl->spec->secret_update == HD_SECRET_UPDATE_RESTART || wl->spec->isolation == HD_ISOLATION_VM) {
            if (!wl->desired_running)
                continue; /* its next start reads the new value */
            int r = secret_restart(wl, name, version, &err);
            if (r > 0)
                json_array_append_new(restarted, json_string(wl->name));
            if (r < 0) {
                json_object_set_new(errors, wl->name, json_string(hd_error_text(err)));
                hd_error_free(&err);
            }
            continue;
        }
        /* the current run and an upgrade's candidate both have files of their own */
        struct run *runs[2] = {wl->cur, wl->up && spec_uses(wl->up->spec, name) ? wl->up->run : NULL};
        bool done = false;
        for (int i = 0; i < 2; i++) {
            if (runs[i] == NULL || !run_is_up(runs[i]))
                continue;
            if (hd_instance_refresh_secrets(runs[i]->inst, name, &err) < 0) {
                json_object_set_new(errors, wl->name, json_string(hd_error_text(err)));
                hd_error_free(&err);
            } else
                done = true;
        }
        if (done) {
            json_array_append_new(rewritten, json_string(wl->name));
            hd_store_event(sup->store, wl->name, "secret", "secret %s version %llu: files rewritten", name,
                           (unsigned long long)version);
        }
    }
    if (json_object_size(errors))
        hd_log(HD_LOG_WARN, "secrets", "secret %s version %llu: %zu workloads not updated", name,
               (unsigned long long)version, json_object_size(errors));
    reply(ctx, HD_SUP_OK,
          json_pack("{s:s,s:I,s:o,s:o,s:o}", "name", name, "version", (json_int_t)version, "rewritten", rewritten,
                    "restarted", restarted, "errors", errors),
          NULL);
}
