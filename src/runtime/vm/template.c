/*
 * template.c - VM templates (issue 16): a guest booted once to hedge-init's READY point, paused and
 * saved, so a workload starts by restoring it instead of booting a kernel (Kata's VM templating).
 *
 *   build    QEMU boots with its guest RAM in a file (memory-backend-file, share=on) and a
 *            placeholder disk of HD_VM_SLOT_BYTES (virtio-blk reads the disk's size once, at probe:
 *            every clone's rootfs image is made that size, so the slot fits); hedge-init says READY
 *            (modules loaded, port open, nothing mounted); the host does not answer: it stops the
 *            guest and migrates the device state to a file with x-ignore-shared (the RAM is the
 *            file already); then it writes the manifest (inputs, sha256 of the state file) and makes
 *            the three files read-only.
 *   restore  (vm.c) QEMU starts with the same machine, the RAM file mapped *privately* (share=off:
 *            copy-on-write; a clone with share=on would write into the template), the clone's own
 *            rootfs in the disk slot, `-incoming defer`; then migrate-incoming from the state file.
 *            The guest resumes waiting for CONFIG, and CONFIG brings what must differ per clone: a
 *            fresh entropy seed (credited and the CRNG reseeded), the wall clock, hostname and
 *            machine id.
 *
 * Layout: <state>/vm/templates/<key>/{manifest.json, ram, state}. The key is the SHA-256 of every
 * input that shapes the saved guest: the kernel (path, size, mtime), the initramfs (its name: the
 * digest of its content; path, size and mtime of a custom $HEDGE_VM_INITRD), guest RAM, vCPUs, accelerator, machine type, the extra kernel arguments,
 * the QEMU binary (path, size, mtime) and the slot size. A changed input gives another key: the
 * old template is no longer found (and `build` removes templates of the same shape it replaces).
 * A template is never trusted blindly: template_find checks the manifest against the key,
 * the state file's SHA-256 and the RAM file's size.
 */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/digest.h"
#include "base/log.h"
#include "base/util.h"
#include "runtime/vm/proto.h"
#include "runtime/vm/qmp.h"
#include "runtime/vm/vm.h"

#define TEMPLATE_FORMAT 1
#define BUILD_BOOT_TIMEOUT_MS 120000
#define QMP_TIMEOUT_MS 5000
#define MIGRATE_TIMEOUT_MS 60000

char *hd_vm_templates_dir(const char *state_dir)
{
    return hd_xasprintf("%s/vm/templates", state_dir);
}

char *hd_vm_extra_append(void)
{
    const char *append = getenv("HEDGE_VM_APPEND");
    return hd_xasprintf("%s%s%s", getenv("HEDGE_VM_DEBUG") ? "hedge.debug" : "",
                        getenv("HEDGE_VM_DEBUG") && append ? " " : "", append ? append : "");
}

const char *hd_vm_machine_type(enum hd_vm_accel accel)
{
    const char *env = getenv("HEDGE_VM_MACHINE");
    if (env && *env)
        return env;
    return accel == HD_VM_ACCEL_KVM ? "microvm,pcie=on,rtc=off" : "pc";
}

/* The QEMU binary PATH finds, or NULL. */
static char *qemu_path(void)
{
    const char *path = getenv("PATH");
    cleanup_free char *copy = hd_xstrdup(path && *path ? path : "/usr/bin:/bin");
    char *save = NULL;
    for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        char *candidate = hd_xasprintf("%s/qemu-system-x86_64", dir);
        if (access(candidate, X_OK) == 0)
            return candidate;
        free(candidate);
    }
    return NULL;
}

static void digest_field(struct hd_sha256 *ctx, const char *name, const char *value)
{
    hd_sha256_update(ctx, name, strlen(name) + 1);
    hd_sha256_update(ctx, value, strlen(value) + 1);
}

static int digest_file_identity(struct hd_sha256 *ctx, const char *name, const char *path, hd_error_t *err)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return hd_error_sys(err, "template: %s %s", name, path);
    char text[PATH_MAX + 96];
    snprintf(text, sizeof(text), "%s %lld %lld.%09ld", path, (long long)st.st_size, (long long)st.st_mtim.tv_sec,
             st.st_mtim.tv_nsec);
    digest_field(ctx, name, text);
    return 0;
}

int hd_vm_template_key(const struct hd_vm_template_inputs *in, char key[65], hd_error_t *err)
{
    struct hd_sha256 ctx;
    hd_sha256_init(&ctx);
    char num[64];
    snprintf(num, sizeof(num), "%d", TEMPLATE_FORMAT);
    digest_field(&ctx, "format", num);
    if (digest_file_identity(&ctx, "kernel", in->vmlinuz, err) < 0)
        return -1;
    const char *custom_initrd = getenv("HEDGE_VM_INITRD");
    if (custom_initrd && *custom_initrd) {
        if (digest_file_identity(&ctx, "initramfs", in->initramfs, err) < 0)
            return -1;
    } else { /* hedge's own initramfs is named by the digest of its content: the name is the identity */
        digest_field(&ctx, "initramfs", strrchr(in->initramfs, '/') ? strrchr(in->initramfs, '/') + 1 : in->initramfs);
    }
    cleanup_free char *qemu = qemu_path();
    if (qemu == NULL)
        return hd_error_set(err, ENOENT, "template: qemu-system-x86_64 is not on PATH (package qemu-system-x86)");
    if (digest_file_identity(&ctx, "qemu", qemu, err) < 0)
        return -1;
    snprintf(num, sizeof(num), "%lld", (long long)in->ram_bytes);
    digest_field(&ctx, "ram", num);
    snprintf(num, sizeof(num), "%d", in->vcpus);
    digest_field(&ctx, "vcpus", num);
    digest_field(&ctx, "accel", hd_vm_accel_name(in->accel));
    digest_field(&ctx, "machine", hd_vm_machine_type(in->accel));
    digest_field(&ctx, "append", in->append ? in->append : "");
    snprintf(num, sizeof(num), "%lld", (long long)HD_VM_SLOT_BYTES);
    digest_field(&ctx, "slot", num);
    hd_sha256_final_hex(&ctx, key);
    return 0;
}

void hd_vm_template_free(struct hd_vm_template *t)
{
    free(t->dir);
    free(t->ram_path);
    free(t->state_path);
    free(t->manifest_path);
    memset(t, 0, sizeof(*t));
}

static void template_paths(struct hd_vm_template *t, const char *dir)
{
    t->dir = hd_xstrdup(dir);
    t->ram_path = hd_xasprintf("%s/ram", dir);
    t->state_path = hd_xasprintf("%s/state", dir);
    t->manifest_path = hd_xasprintf("%s/manifest.json", dir);
}

int hd_vm_template_verify(const char *dir, const char *want_key, json_t **manifest_out, hd_error_t *err)
{
    cleanup_free char *manifest_path = hd_xasprintf("%s/manifest.json", dir);
    json_error_t jerr;
    json_t *m = json_load_file(manifest_path, 0, &jerr);
    if (m == NULL)
        return hd_error_set(err, 0, "template %.12s: manifest: %s", strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir,
                            jerr.text);
    const char *key = json_string_value(json_object_get(m, "key"));
    const char *state_sha = json_string_value(json_object_get(m, "state_sha256"));
    json_int_t ram = json_integer_value(json_object_get(m, "ram_bytes"));
    const char *base = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir;
    int r = 0;
    if (key == NULL || state_sha == NULL || ram <= 0 ||
        json_integer_value(json_object_get(m, "format")) != TEMPLATE_FORMAT)
        r = hd_error_set(err, 0, "template %.12s: the manifest lacks fields or has another format", base);
    else if (strcmp(key, base) != 0 || (want_key && strcmp(key, want_key) != 0))
        r = hd_error_set(err, 0, "template %.12s: the manifest's key %.12s does not match", base, key);
    if (r == 0) {
        cleanup_free char *ram_path = hd_xasprintf("%s/ram", dir);
        struct stat st;
        if (stat(ram_path, &st) < 0)
            r = hd_error_sys(err, "template %.12s: RAM file", base);
        else if (st.st_size != ram)
            r = hd_error_set(err, 0, "template %.12s: the RAM file has %lld bytes, the manifest says %lld", base,
                             (long long)st.st_size, (long long)ram);
    }
    if (r == 0) {
        cleanup_free char *state_path = hd_xasprintf("%s/state", dir);
        struct hd_sha256 ctx;
        hd_sha256_init(&ctx);
        char hex[HD_SHA256_HEX_LEN + 1];
        if (hd_sha256_update_file(&ctx, state_path, err) < 0) {
            hd_error_prefix(err, "template %.12s", base);
            r = -1;
        } else {
            hd_sha256_final_hex(&ctx, hex);
            if (strcmp(hex, state_sha) != 0)
                r = hd_error_set(err, 0, "template %.12s: the state file's sha256 %.12s is not the manifest's %.12s",
                                 base, hex, state_sha);
        }
    }
    if (r < 0 || manifest_out == NULL)
        json_decref(m);
    else
        *manifest_out = m;
    return r;
}

/* The verified template for in: -1 with errnum ENOENT when there is none, another error when it is corrupt
 * (manifest, state file's sha256, RAM file's size). */
static int template_find(const struct hd_vm_template_inputs *in, struct hd_vm_template *t, hd_error_t *err)
{
    memset(t, 0, sizeof(*t));
    if (hd_vm_template_key(in, t->key, err) < 0)
        return -1;
    cleanup_free char *root = hd_vm_templates_dir(in->state_dir);
    cleanup_free char *dir = hd_xasprintf("%s/%s", root, t->key);
    struct stat st;
    if (stat(dir, &st) < 0)
        return hd_error_set(err, ENOENT, "no template for this guest (key %.12s; hedge vm template build)", t->key);
    if (hd_vm_template_verify(dir, t->key, NULL, err) < 0)
        return -1;
    template_paths(t, dir);
    return 0;
}

/* ---- build ----------------------------------------------------------- */

struct builder {
    pid_t pid;
    int port_fd, qemu_port, qmp_fd, qmp_end;
    struct hd_qmp *qmp;
};

static void builder_close(struct builder *b)
{
    if (b->qmp) {
        hd_error_t ignored = NULL;
        hd_qmp_quit(b->qmp, 1000, &ignored);
        hd_error_free(&ignored);
    }
    if (b->pid > 0) {
        kill(b->pid, SIGKILL);
        while (waitpid(b->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    hd_qmp_close(b->qmp);
    int *fds[] = {&b->port_fd, &b->qemu_port, &b->qmp_fd, &b->qmp_end};
    for (size_t i = 0; i < ARRAY_SIZE(fds); i++)
        if (*fds[i] >= 0)
            close(*fds[i]);
}

/* Wait for hedge-init's READY (a whole header, nothing else), bounded. */
static int wait_ready(struct builder *b, const char *console, hd_error_t *err)
{
    uint64_t deadline = hd_now_ns() / 1000000u + BUILD_BOOT_TIMEOUT_MS;
    struct hd_vm_msg_header h;
    size_t have = 0;
    while (have < sizeof(h)) {
        uint64_t now = hd_now_ns() / 1000000u;
        if (now >= deadline)
            return hd_error_set(err, ETIMEDOUT, "template: the guest did not say READY within %d ms (console: %s)",
                                BUILD_BOOT_TIMEOUT_MS, console);
        struct pollfd p = {.fd = b->port_fd, .events = POLLIN};
        int pr = poll(&p, 1, 100);
        if (pr < 0 && errno != EINTR)
            return hd_error_sys(err, "poll");
        if (pr > 0) {
            ssize_t n = read(b->port_fd, (char *)&h + have, sizeof(h) - have);
            if (n == 0)
                return hd_error_set(err, EPIPE, "template: QEMU ended before the guest was ready (console: %s)",
                                    console);
            if (n < 0 && errno != EINTR && errno != EAGAIN)
                return hd_error_sys(err, "template: read the guest's port");
            if (n > 0)
                have += (size_t)n;
        }
        int status;
        if (waitpid(b->pid, &status, WNOHANG) == b->pid) {
            b->pid = -1;
            return hd_error_set(err, 0, "template: QEMU ended before the guest was ready (console: %s)", console);
        }
    }
    if (h.type != HD_VM_MSG_READY || h.length != 0)
        return hd_error_set(err, EBADMSG, "template: the guest sent message type %u instead of READY", h.type);
    return 0;
}

static int set_ignore_shared(struct hd_qmp *q, hd_error_t *err)
{
    json_t *args = json_pack("{s:[{s:s,s:b}]}", "capabilities", "capability", "x-ignore-shared", "state", 1);
    int r = hd_qmp_command(q, "migrate-set-capabilities", args, QMP_TIMEOUT_MS, NULL, err);
    json_decref(args);
    return r;
}

int hd_vm_template_restore(struct hd_qmp *q, int timeout_ms, hd_error_t *err)
{
    bool debug = getenv("HEDGE_VM_DEBUG") != NULL;
    uint64_t t0 = hd_now_ns();
    if (debug)
        hd_log(HD_LOG_INFO, "vm", "restore: QMP greeting (QEMU up)");
    if (set_ignore_shared(q, err) < 0)
        return -1;
    json_t *args = json_pack("{s:s}", "uri", "fd:6"); /* the state file QEMU holds since its start */
    int r = hd_qmp_command(q, "migrate-incoming", args, QMP_TIMEOUT_MS, NULL, err);
    json_decref(args);
    if (r < 0)
        return -1;
    uint64_t deadline = hd_now_ns() / 1000000u + (uint64_t)timeout_ms;
    for (;;) {
        cleanup_free char *status = NULL;
        bool running = false;
        if (hd_qmp_query_status(q, QMP_TIMEOUT_MS, &status, &running, err) < 0)
            return -1;
        if (running)
            return 0;
        /* the template was saved paused: the loaded clone stays paused until told to go on */
        if (strcmp(status, "paused") == 0) {
            if (debug)
                hd_log(HD_LOG_INFO, "vm", "restore: state loaded in %.3f s", (double)(hd_now_ns() - t0) / 1e9);
            return hd_qmp_command(q, "cont", NULL, QMP_TIMEOUT_MS, NULL, err);
        }
        if (strcmp(status, "inmigrate") != 0 && strcmp(status, "prelaunch") != 0 &&
            strcmp(status, "finish-migrate") != 0 && strcmp(status, "restore-vm") != 0)
            return hd_error_set(err, 0, "QEMU is %s after loading the template", status);
        if (hd_now_ns() / 1000000u >= deadline)
            return hd_error_set(err, 0, "QEMU still %s after %d ms", status, timeout_ms);
        usleep(2000);
    }
}

/* migrate to the state file and wait until QEMU says completed (or failed). */
static int save_state(struct hd_qmp *q, const char *state_path, hd_error_t *err)
{
    if (strchr(state_path, '\'') != NULL)
        return hd_error_set(err, 0, "template: the path %s has a quote", state_path);
    if (hd_qmp_command(q, "stop", NULL, QMP_TIMEOUT_MS, NULL, err) < 0 || set_ignore_shared(q, err) < 0)
        return -1;
    cleanup_free char *uri = hd_xasprintf("exec:cat > '%s'", state_path);
    json_t *args = json_pack("{s:s}", "uri", uri);
    int r = hd_qmp_command(q, "migrate", args, QMP_TIMEOUT_MS, NULL, err);
    json_decref(args);
    if (r < 0)
        return -1;
    uint64_t deadline = hd_now_ns() / 1000000u + MIGRATE_TIMEOUT_MS;
    for (;;) {
        json_t *ret = NULL;
        if (hd_qmp_command(q, "query-migrate", NULL, QMP_TIMEOUT_MS, &ret, err) < 0)
            return -1;
        const char *status = json_string_value(json_object_get(ret, "status"));
        cleanup_free char *st = hd_xstrdup(status ? status : "none");
        const char *desc = json_string_value(json_object_get(ret, "error-desc"));
        cleanup_free char *why = hd_xstrdup(desc ? desc : "no description");
        json_decref(ret);
        if (strcmp(st, "completed") == 0)
            return 0;
        if (strcmp(st, "failed") == 0 || strcmp(st, "cancelled") == 0)
            return hd_error_set(err, EIO, "template: saving the guest %s: %s", st, why);
        if (hd_now_ns() / 1000000u >= deadline)
            return hd_error_set(err, ETIMEDOUT, "template: saving the guest took over %d ms (%s)", MIGRATE_TIMEOUT_MS,
                                st);
        usleep(5000);
    }
}

static json_t *file_identity(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return json_pack("{s:s}", "path", path);
    return json_pack("{s:s,s:I,s:I}", "path", path, "size", (json_int_t)st.st_size, "mtime",
                     (json_int_t)st.st_mtim.tv_sec);
}

static int write_manifest(const struct hd_vm_template_inputs *in, const char *key, const char *dir,
                          const char *qemu_version, hd_error_t *err)
{
    cleanup_free char *state_path = hd_xasprintf("%s/state", dir);
    struct hd_sha256 ctx;
    hd_sha256_init(&ctx);
    char hex[HD_SHA256_HEX_LEN + 1];
    if (hd_sha256_update_file(&ctx, state_path, err) < 0)
        return -1;
    hd_sha256_final_hex(&ctx, hex);
    struct stat st;
    if (stat(state_path, &st) < 0)
        return hd_error_sys(err, "stat %s", state_path);
    cleanup_free char *qemu = qemu_path();
    json_t *m = json_pack("{s:i,s:s,s:o,s:o,s:o,s:s,s:I,s:i,s:s,s:s,s:s,s:I,s:s,s:I,s:I}", "format", TEMPLATE_FORMAT,
                          "key", key, "kernel", file_identity(in->vmlinuz), "initramfs", file_identity(in->initramfs),
                          "qemu", file_identity(qemu ? qemu : "?"), "qemu_version", qemu_version ? qemu_version : "?",
                          "ram_bytes", (json_int_t)in->ram_bytes, "vcpus", in->vcpus, "accel",
                          hd_vm_accel_name(in->accel), "machine", hd_vm_machine_type(in->accel), "append",
                          in->append ? in->append : "", "slot_bytes", (json_int_t)HD_VM_SLOT_BYTES, "state_sha256", hex,
                          "state_bytes", (json_int_t)st.st_size, "created", (json_int_t)time(NULL));
    if (m == NULL)
        return hd_error_set(err, ENOMEM, "template: manifest");
    char *text = json_dumps(m, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(m);
    cleanup_free char *path = hd_xasprintf("%s/manifest.json", dir);
    int r = hd_write_file(path, text, strlen(text), err);
    free(text);
    return r;
}

/* Is the template dir root/name of the same shape as in (RAM, vCPUs, accelerator, machine, kernel arguments)? */
static bool same_shape(const char *root, const char *name, const struct hd_vm_template_inputs *in)
{
    cleanup_free char *path = hd_xasprintf("%s/%s/manifest.json", root, name);
    json_t *m = json_load_file(path, 0, NULL);
    const char *accel = json_string_value(json_object_get(m, "accel"));
    const char *machine = json_string_value(json_object_get(m, "machine"));
    const char *append = json_string_value(json_object_get(m, "append"));
    bool same = m && json_integer_value(json_object_get(m, "ram_bytes")) == in->ram_bytes &&
        json_integer_value(json_object_get(m, "vcpus")) == in->vcpus && accel &&
        strcmp(accel, hd_vm_accel_name(in->accel)) == 0 && machine &&
        strcmp(machine, hd_vm_machine_type(in->accel)) == 0 && append &&
        strcmp(append, in->append ? in->append : "") == 0;
    json_decref(m);
    return same;
}

/* A template of the same shape as in (RAM, vCPUs, accelerator, machine, kernel arguments) under another key
 * than key: built from another kernel, initramfs or QEMU. 1 with its key in stale, else 0. */
static int template_find_stale(const struct hd_vm_template_inputs *in, const char *key, char stale[65])
{
    cleanup_free char *root = hd_vm_templates_dir(in->state_dir);
    DIR *d = opendir(root);
    struct dirent *e;
    int found = 0;
    while (d && !found && (e = readdir(d))) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, key) == 0 || strlen(e->d_name) != 64)
            continue;
        if (same_shape(root, e->d_name, in)) {
            memcpy(stale, e->d_name, 64); /* 64 characters: checked above */
            stale[64] = '\0';
            found = 1;
        }
    }
    if (d)
        closedir(d);
    return found;
}

int hd_vm_template_lookup(const char *state_dir, const char *vmlinuz, const char *initramfs, int64_t ram_bytes,
                          int vcpus, enum hd_vm_accel accel, struct hd_vm_template *t, char stale[65], hd_error_t *err)
{
    cleanup_free char *append = hd_vm_extra_append();
    struct hd_vm_template_inputs in = {
        .state_dir = state_dir,
        .vmlinuz = vmlinuz,
        .initramfs = initramfs,
        .ram_bytes = ram_bytes,
        .vcpus = vcpus,
        .accel = accel,
        .append = append,
    };
    stale[0] = '\0';
    if (template_find(&in, t, err) == 0)
        return 0;
    if ((*err)->errnum == ENOENT && !template_find_stale(&in, t->key, stale))
        stale[0] = '\0';
    return -1;
}

/* Templates of the same shape under another key: the kernel, initramfs or QEMU changed. */
static void remove_replaced(const char *root, const struct hd_vm_template_inputs *in, const char *key)
{
    DIR *d = opendir(root);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, key) == 0 || strlen(e->d_name) != 64)
            continue;
        if (!same_shape(root, e->d_name, in))
            continue;
        cleanup_free char *dir = hd_xasprintf("%s/%s", root, e->d_name);
        hd_error_t err = NULL;
        if (hd_rm_rf(dir, &err) < 0) {
            hd_log_error(HD_LOG_WARN, "vm", &err);
        } else {
            hd_log(HD_LOG_INFO, "vm", "template %.12s: replaced by %.12s (an input changed)", e->d_name, key);
        }
    }
    if (d)
        closedir(d);
}

static int build_in(const struct hd_vm_template_inputs *in, const char *tmp, struct builder *b, char **qemu_version,
                    hd_error_t *err)
{
    cleanup_free char *slot = hd_xasprintf("%s/slot.img", tmp);
    cleanup_free char *ram = hd_xasprintf("%s/ram", tmp);
    cleanup_free char *state = hd_xasprintf("%s/state", tmp);
    cleanup_free char *console = hd_xasprintf("%s/console.log", tmp);
    cleanup_free char *qemu_log = hd_xasprintf("%s/qemu.log", tmp);
    cleanup_close int slot_fd = open(slot, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (slot_fd < 0 || ftruncate(slot_fd, HD_VM_SLOT_BYTES) < 0)
        return hd_error_sys(err, "template: placeholder disk %s", slot);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return hd_error_sys(err, "socketpair");
    b->port_fd = sv[0];
    b->qemu_port = sv[1];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return hd_error_sys(err, "socketpair");
    b->qmp_fd = sv[0];
    b->qmp_end = sv[1];
    struct hd_vm_launch launch = {
        .vmlinuz = in->vmlinuz,
        .initramfs = in->initramfs,
        .rootfs_image = slot,
        .console_log = console,
        .qemu_log = qemu_log,
        .port_fd = b->qemu_port,
        .accel = in->accel,
        .ram_bytes = in->ram_bytes,
        .vcpus = in->vcpus,
        .extra_append = in->append,
        .tap_fd = -1,
        .qmp_fd = b->qmp_end,
        .mem_path = ram,
        .mem_share = true,
    };
    if (hd_vm_qemu_spawn(&launch, NULL, &b->pid, err) < 0)
        return -1;
    close(b->qemu_port);
    close(b->qmp_end);
    b->qemu_port = b->qmp_end = -1;
    if (wait_ready(b, console, err) < 0)
        return -1;
    int fd = b->qmp_fd;
    b->qmp_fd = -1;
    if (hd_qmp_attach(fd, QMP_TIMEOUT_MS, &b->qmp, err) < 0)
        return -1;
    *qemu_version = hd_xstrdup(hd_qmp_version(b->qmp) ? hd_qmp_version(b->qmp) : "?");
    if (save_state(b->qmp, state, err) < 0)
        return -1;
    hd_error_t ignored = NULL;
    hd_qmp_quit(b->qmp, QMP_TIMEOUT_MS, &ignored);
    hd_error_free(&ignored);
    hd_qmp_close(b->qmp);
    b->qmp = NULL;
    while (waitpid(b->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    b->pid = -1;
    unlink(slot);
    unlink(console);
    unlink(qemu_log);
    return 0;
}

int hd_vm_template_build(const struct hd_vm_template_inputs *in, bool force, struct hd_vm_template *t, bool *built,
                         hd_error_t *err)
{
    memset(t, 0, sizeof(*t));
    *built = false;
    if (hd_vm_template_key(in, t->key, err) < 0)
        return -1;
    cleanup_free char *root = hd_vm_templates_dir(in->state_dir);
    cleanup_free char *dir = hd_xasprintf("%s/%s", root, t->key);
    if (hd_mkdir_p(root, 0700, err) < 0)
        return -1;
    struct stat st;
    if (stat(dir, &st) == 0) {
        hd_error_t why = NULL;
        if (!force && hd_vm_template_verify(dir, t->key, NULL, &why) == 0) {
            template_paths(t, dir);
            return 0; /* up to date */
        }
        if (why)
            hd_log(HD_LOG_WARN, "vm", "%s; rebuilding it", hd_error_text(why));
        hd_error_free(&why);
        if (hd_rm_rf(dir, err) < 0)
            return -1;
    }
    cleanup_free char *tmp = hd_xasprintf("%s/.%s.tmp.%d", root, t->key, (int)getpid());
    hd_rm_rf(tmp, NULL);
    if (mkdir(tmp, 0700) < 0)
        return hd_error_sys(err, "mkdir %s", tmp);
    struct builder b = {.pid = -1, .port_fd = -1, .qemu_port = -1, .qmp_fd = -1, .qmp_end = -1};
    cleanup_free char *version = NULL;
    int r = build_in(in, tmp, &b, &version, err);
    builder_close(&b);
    if (r == 0)
        r = write_manifest(in, t->key, tmp, version, err);
    const char *files[] = {"ram", "state", "manifest.json"};
    for (size_t i = 0; r == 0 && i < ARRAY_SIZE(files); i++) {
        cleanup_free char *path = hd_xasprintf("%s/%s", tmp, files[i]);
        if (chmod(path, 0444) < 0)
            r = hd_error_sys(err, "chmod %s", path);
    }
    if (r == 0 && rename(tmp, dir) < 0) {
        if (errno == EEXIST || errno == ENOTEMPTY) /* another build of the same key won */
            r = hd_vm_template_verify(dir, t->key, NULL, err);
        else
            r = hd_error_sys(err, "rename %s", tmp);
    }
    if (r < 0 || stat(tmp, &st) == 0)
        hd_rm_rf(tmp, NULL);
    if (r < 0)
        return -1;
    remove_replaced(root, in, t->key);
    template_paths(t, dir);
    *built = true;
    return 0;
}
