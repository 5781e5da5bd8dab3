/*
 * config.c - the CONFIG message: what the host tells hedge-init about the workload (proto.h's records).
 *
 * At prepare, hd_vm_config_build encodes the spec (command, environment, user, limits, devices, machine id,
 * network) and, in a buffer of its own, the secrets, decrypted from the store only here. Until start,
 * hedge-oci-vm adds records to the prepared guest's CONFIG (bound files, a terminal, an engine's network
 * namespace: hd_vm_config_append). When the guest says READY, hd_vm_config_send adds what must be fresh (an
 * entropy seed, the wall clock), sends CONFIG once and the bound files' bytes right after it, and wipes the
 * buffers; cleanup wipes them (hd_vm_config_wipe) when CONFIG never went. Every addition checks the message's
 * bound (HD_VM_MSG_MAX) with room left for the fresh records, so a CONFIG that is built can be sent.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "runtime/backend.h"
#include "runtime/secrets.h"
#include "net/net.h"
#include "base/util.h"
#include "runtime/vm/proto.h"
#include "runtime/vm/vm.h"
#include "runtime/vm/vm_internal.h"

/* Put a record at buf + *len (the caller made room: 1 + strlen(value) + 1 bytes). */
static void config_put(char *buf, size_t *len, char tag, const char *value)
{
    size_t n = strlen(value) + 1;
    buf[*len] = tag;
    memcpy(buf + *len + 1, value, n);
    *len += 1 + n;
}

static void config_add(char **buf, size_t *len, char tag, const char *value)
{
    *buf = hd_xrealloc(*buf, *len + 1 + strlen(value) + 1);
    config_put(*buf, len, tag, value);
}

/* What hd_vm_config_send adds: the seed and clock records. */
#define CONFIG_FRESH_MAX (2 + 2 * HD_VM_SEED_BYTES + 2 + 48)

/* A secret's record header: "MODE UID GID LEN TARGET" (-1: the workload user's id, resolved in the guest). */
static char *secret_header(const struct hd_secret_ref *ref, size_t len)
{
    return hd_xasprintf("%o %lld %lld %zu %s", ref->mode ? ref->mode : 0400, ref->uid_set ? (long long)ref->uid : -1LL,
                        ref->gid_set ? (long long)ref->gid : -1LL, len, ref->target);
}

/*
 * The secrets' records, in one buffer of the exact size (no realloc leaves a copy of a value behind):
 * decrypted from the store only here, wiped by hd_vm_config_send once sent (or by cleanup).
 */
static int build_secrets(struct hd_workload *w, struct vm *vm, hd_error_t *err)
{
    const struct hd_spec *spec = w->spec;
    if (spec->n_secrets == 0)
        return 0;
    struct hd_secret_plain *o = NULL;
    if (hd_secrets_decrypt(w, &o, err) < 0)
        return -1;
    size_t total = 0;
    for (int i = 0; i < spec->n_secrets; i++) {
        cleanup_free char *head = secret_header(&spec->secrets[i], o[i].len);
        total += 1 + strlen(head) + 1 + o[i].len;
    }
    if (vm->config_len + total + CONFIG_FRESH_MAX > HD_VM_MSG_MAX) {
        hd_secrets_plain_free(o, spec->n_secrets);
        return hd_error_set(err, E2BIG,
                            "secrets: %zu bytes with the command and environment (%zu), more than %u, the limit of "
                            "the config message that carries a VM's secrets to the guest",
                            vm->config_len + total + CONFIG_FRESH_MAX, vm->config_len, HD_VM_MSG_MAX);
    }
    char *buf = hd_xmalloc(total);
    size_t len = 0;
    for (int i = 0; i < spec->n_secrets; i++) {
        cleanup_free char *head = secret_header(&spec->secrets[i], o[i].len);
        config_put(buf, &len, HD_VM_CFG_SECRET, head);
        if (o[i].len)
            memcpy(buf + len, o[i].value, o[i].len);
        len += o[i].len;
    }
    hd_secrets_plain_free(o, spec->n_secrets);
    vm->secrets = buf;
    vm->secrets_len = len;
    return 0;
}

/* Wipe what CONFIG held: the secrets' values and (in the environment) the variables that expose them. */
void hd_vm_config_wipe(struct vm *vm)
{
    if (vm->secrets) {
        explicit_bzero(vm->secrets, vm->secrets_len);
        free(vm->secrets);
        vm->secrets = NULL;
        vm->secrets_len = 0;
    }
    if (vm->config) {
        explicit_bzero(vm->config, vm->config_len);
        free(vm->config);
        vm->config = NULL;
        vm->config_len = 0;
    }
}

/* The spec's records (and the secrets'), at prepare. */
int hd_vm_config_build(struct hd_workload *w, struct vm *vm, hd_error_t *err)
{
    const struct hd_spec *spec = w->spec;
    char *buf = NULL;
    size_t len = 0;
    for (size_t i = 0; w->argv[i]; i++)
        config_add(&buf, &len, HD_VM_CFG_ARG, w->argv[i]);
    for (size_t i = 0; w->env && w->env[i]; i++)
        config_add(&buf, &len, HD_VM_CFG_ENV, w->env[i]);
    if (w->workdir)
        config_add(&buf, &len, HD_VM_CFG_WORKDIR, w->workdir);
    if (w->user)
        config_add(&buf, &len, HD_VM_CFG_USER, w->user);
    config_add(&buf, &len, HD_VM_CFG_HOSTNAME, spec->hostname ? spec->hostname : w->id);
    char num[32];
    if (spec->resources.pids > 0) {
        snprintf(num, sizeof(num), "%lld", (long long)spec->resources.pids);
        config_add(&buf, &len, HD_VM_CFG_PIDS, num);
    }
    if (spec->resources.memory > 0) {
        snprintf(num, sizeof(num), "%lld", (long long)spec->resources.memory);
        config_add(&buf, &len, HD_VM_CFG_MEMORY, num);
    }
    if (spec->readonly_rootfs)
        config_add(&buf, &len, HD_VM_CFG_READONLY, "1");
    for (size_t i = 0; i < vm->n_devices; i++) {
        const struct hd_vm_device *d = &vm->devices[i];
        cleanup_free char *record = hd_xasprintf("%c %s %o %s", d->kind, d->name, d->mode, d->target);
        config_add(&buf, &len, HD_VM_CFG_DEVICE, record);
    }
    config_add(&buf, &len, HD_VM_CFG_MACHINE_ID, vm->machine_id);
    if (vm->net) {
        config_add(&buf, &len, HD_VM_CFG_NET_ADDRESS, hd_net_address(vm->net));
        config_add(&buf, &len, HD_VM_CFG_NET_GATEWAY, hd_net_gateway(vm->net));
    }
    if (len > HD_VM_MSG_MAX) {
        free(buf);
        return hd_error_set(err, E2BIG, "vm config: command and environment take %zu bytes, more than %u", len,
                            HD_VM_MSG_MAX);
    }
    vm->config = buf;
    vm->config_len = len;
    return build_secrets(w, vm, err);
}

/* Add a record to a prepared guest's CONFIG (hedge-oci-vm's additions), within the message's bound. */
int hd_vm_config_append(struct vm *vm, char tag, const char *value, hd_error_t *err)
{
    if (vm->config_len + vm->secrets_len + 2 + strlen(value) + CONFIG_FRESH_MAX > HD_VM_MSG_MAX)
        return hd_error_set(err, E2BIG, "vm config: more than %u bytes", HD_VM_MSG_MAX);
    config_add(&vm->config, &vm->config_len, tag, value);
    return 0;
}

int hd_vm_add_files(struct hd_workload *w, const struct hd_vm_file *files, size_t n, hd_error_t *err)
{
    struct vm *vm = w->backend == &hd_backend_vm ? w->backend_data : NULL;
    if (vm == NULL || vm->state != VM_PREPARED)
        return hd_error_set(err, EINVAL, "files: not a prepared VM");
    for (size_t i = 0; i < n; i++) {
        const struct hd_vm_file *f = &files[i];
        if (f->target[0] != '/')
            return hd_error_set(err, EINVAL, "files: %s is not an absolute path", f->target);
        if (vm->files_len + f->len > HD_VM_FILES_MAX)
            return hd_error_set(err, E2BIG, "files: %s: more than %u bytes of files in all", f->target,
                                HD_VM_FILES_MAX);
        cleanup_free char *record = hd_xasprintf("%o %u %u %d %zu %s", f->mode & 07777, (unsigned)f->uid,
                                                 (unsigned)f->gid, f->readonly ? 1 : 0, f->len, f->target);
        if (hd_vm_config_append(vm, HD_VM_CFG_FILE, record, err) < 0)
            return hd_error_prefix(err, "files: %s", f->target);
        vm->files = hd_xrealloc(vm->files, vm->files_len + f->len + 1);
        if (f->len)
            memcpy(vm->files + vm->files_len, f->data, f->len);
        vm->files_len += f->len;
    }
    return 0;
}

int hd_vm_set_terminal(struct hd_workload *w, unsigned rows, unsigned cols, hd_error_t *err)
{
    struct vm *vm = w->backend == &hd_backend_vm ? w->backend_data : NULL;
    if (vm == NULL || vm->state != VM_PREPARED)
        return hd_error_set(err, EINVAL, "terminal: not a prepared VM");
    char size[32];
    snprintf(size, sizeof(size), "%u %u", rows > 65535 ? 65535 : rows, cols > 65535 ? 65535 : cols);
    return hd_vm_config_append(vm, HD_VM_CFG_TERMINAL, size, err);
}

/*
 * Answer READY with CONFIG: the spec's records plus what must be fresh when the guest reads it -
 * a seed from the host's getrandom() and the host's wall clock. CONFIG fits the socket buffer.
 */
int hd_vm_config_send(struct vm *vm, hd_error_t *err)
{
    unsigned char seed[HD_VM_SEED_BYTES];
    size_t got = 0;
    while (got < sizeof(seed)) {
        ssize_t n = getrandom(seed + got, sizeof(seed) - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return hd_error_sys(err, "vm: getrandom for the guest's entropy seed");
        got += (size_t)n;
    }
    char hex[2 * HD_VM_SEED_BYTES + 1];
    for (size_t i = 0; i < sizeof(seed); i++)
        snprintf(hex + 2 * i, 3, "%02x", seed[i]);
    explicit_bzero(seed, sizeof(seed));
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    char clock[48];
    snprintf(clock, sizeof(clock), "%lld.%09ld", (long long)now.tv_sec, now.tv_nsec);
    size_t len = vm->config_len + vm->secrets_len;
    cleanup_free char *buf = hd_xmalloc(len + 1 + strlen(hex) + 1 + 1 + strlen(clock) + 1);
    memcpy(buf, vm->config, vm->config_len);
    if (vm->secrets_len)
        memcpy(buf + vm->config_len, vm->secrets, vm->secrets_len);
    hd_vm_config_wipe(vm); /* CONFIG goes once: the values live on only in buf, wiped below */
    config_put(buf, &len, HD_VM_CFG_SEED, hex);
    config_put(buf, &len, HD_VM_CFG_CLOCK, clock);
    explicit_bzero(hex, sizeof(hex));
    if (len > HD_VM_MSG_MAX) {
        explicit_bzero(buf, len);
        return hd_error_set(err, E2BIG, "vm config: %zu bytes, more than %u", len, HD_VM_MSG_MAX);
    }
    struct hd_vm_msg_header h = {HD_VM_MSG_CONFIG, (uint32_t)len};
    int r = hd_vm_socket_send_all(vm->port_fd, &h, sizeof(h));
    if (r == 0)
        r = hd_vm_socket_send_all(vm->port_fd, buf, len);
    explicit_bzero(buf, len);
    /* the bound files' bytes, right after: the guest reads them before anything else */
    for (size_t off = 0; r == 0 && off < vm->files_len;) {
        size_t n = vm->files_len - off < HD_VM_MSG_MAX ? vm->files_len - off : HD_VM_MSG_MAX;
        struct hd_vm_msg_header fh = {HD_VM_MSG_FILE_DATA, (uint32_t)n};
        r = hd_vm_socket_send_all(vm->port_fd, &fh, sizeof(fh));
        if (r == 0)
            r = hd_vm_socket_send_all(vm->port_fd, vm->files + off, n);
        off += n;
    }
    free(vm->files);
    vm->files = NULL;
    vm->files_len = 0;
    if (r < 0)
        return hd_error_set(err, -r, "vm: send config to the guest");
    return 0;
}
