/*
 * vm-assets.c - what a VM boots from: the guest kernel dir, the initramfs and
 * the rootfs image.
 *
 * - Kernel: a dir with vmlinuz, release and modules/NN-name.ko, written by
 *   `hedge vm kernel fetch` (scripts/fetch-guest-kernel, installed as
 *   hedge-fetch-kernel) from Debian's cloud kernel package (never installed
 *   as the host's kernel). One place: <state>/vm/kernel; $HEDGE_VM_KERNEL_DIR
 *   points elsewhere, e.g. at a custom kernel with the same layout (modules/
 *   may be empty).
 * - Initramfs: a newc cpio written here directly (the format is a header of
 *   hex fields per entry; no cpio tool needed) holding hedge-init as /init,
 *   the modules and the empty mount points. Cached in <state>/vm/ under the
 *   SHA-256 of its inputs' contents, so a rebuilt hedge-init or another kernel
 *   gets a new one and nothing stale is booted.
 * - Rootfs: an erofs image made by mkfs.erofs, cached in <state>/vm/rootfs/.
 *   Key: the image's content digest when the rootfs comes from the image
 *   store (its dirs are immutable); for a plain --rootfs dir a SHA-256 over
 *   every entry's path, type, mode, owner, size, mtime (ns) and link target.
 *   That catches any ordinary change; a write that keeps size and mtime
 *   (touch -d back-dating after editing) is missed - documented in docs/vm.md.
 * Cache files are written to a temp name and renamed, so a crashed build never
 * leaves a half image under the final name.
 *
 * The rootfs cache is bounded: each use of an image sets its mtime, and after
 * a new image is made the least recently used ones are deleted until the dir
 * holds at most $HEDGE_VM_ROOTFS_CACHE_MAX (a size, default 4G) on disk. An
 * image used in the last ROOTFS_CACHE_GRACE_S is never deleted (a VM that just
 * found it may not have opened it yet); one deleted while a VM runs from it
 * stays readable to that VM (Linux keeps an open file), and the next start
 * makes it again. Temp files of builds whose process is gone go too.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <time.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/digest.h"
#include "base/log.h"
#include "config.h"
#include "base/util.h"
#include "runtime/vm/vm.h"

static char *vm_dir(const char *state_dir)
{
    return hd_xasprintf("%s/vm", state_dir);
}

static int select_ko(const struct dirent *d)
{
    size_t n = strlen(d->d_name);
    return n > 3 && strcmp(d->d_name + n - 3, ".ko") == 0;
}

/* The .ko files of dir/sub in name order (the load order) into *out. */
static void list_modules(const char *dir, const char *sub, char ***out)
{
    cleanup_free char *mod_dir = hd_xasprintf("%s/%s", dir, sub);
    struct dirent **names = NULL;
    int n = scandir(mod_dir, &names, select_ko, alphasort);
    for (int i = 0; i < n; i++) {
        cleanup_free char *p = hd_xasprintf("%s/%s", mod_dir, names[i]->d_name);
        hd_strv_push(out, p);
        free(names[i]);
    }
    free(names);
}

char *hd_vm_kernel_dir(const char *state_dir)
{
    const char *env = getenv("HEDGE_VM_KERNEL_DIR");
    return env && *env ? hd_xstrdup(env) : hd_xasprintf("%s/vm/kernel", state_dir);
}

int hd_vm_kernel_find(const char *state_dir, struct hd_vm_kernel *k, hd_error_t *err)
{
    memset(k, 0, sizeof(*k));
    k->dir = hd_vm_kernel_dir(state_dir);
    k->vmlinuz = hd_xasprintf("%s/vmlinuz", k->dir);
    if (access(k->vmlinuz, R_OK) < 0) {
        int e = errno;
        hd_error_set(err, e,
                     "guest kernel %s: not found (get Debian's cloud kernel into %s with `hedge vm kernel "
                     "fetch`, or `make guest-kernel` in a source tree; or set HEDGE_VM_KERNEL_DIR to a dir "
                     "holding vmlinuz, release and modules/)",
                     k->vmlinuz, k->dir);
        hd_vm_kernel_free(k);
        return -1;
    }
    cleanup_free char *release_path = hd_xasprintf("%s/release", k->dir);
    char *release = NULL;
    size_t len;
    hd_error_t ignored = NULL;
    if (hd_read_file(release_path, &release, &len, &ignored) == 0) {
        release[strcspn(release, "\n")] = '\0';
        k->release = release;
    } else {
        k->release = hd_xstrdup("unknown");
        hd_error_free(&ignored);
    }
    list_modules(k->dir, "modules", &k->modules);
    list_modules(k->dir, "modules/net", &k->net_modules);
    list_modules(k->dir, "modules/fs", &k->fs_modules);
    return 0;
}

void hd_vm_kernel_free(struct hd_vm_kernel *k)
{
    free(k->dir);
    free(k->vmlinuz);
    free(k->release);
    hd_strv_free(k->modules);
    hd_strv_free(k->net_modules);
    hd_strv_free(k->fs_modules);
    memset(k, 0, sizeof(*k));
}

int hd_vm_init_binary(char **out, hd_error_t *err)
{
    const char *env = getenv("HEDGE_INIT");
    if (env && *env) {
        if (access(env, R_OK) < 0)
            return hd_error_sys(err, "HEDGE_INIT %s", env);
        *out = hd_xstrdup(env);
        return 0;
    }
    /* the build tree keeps it in src/init/; an install puts it in libexecdir */
    *out = hd_program_sibling("src/init/hedge-init");
    if (*out)
        return 0;
    *out = hd_find_program("hedge-init", err);
    return *out ? 0 : hd_error_prefix(err, "the guest's init (set HEDGE_INIT to its path)");
}

/* ---- content digests ---------------------------------------------------- */

/* ---- newc cpio writer --------------------------------------------------- */

struct cpio_writer {
    FILE *f;
    unsigned ino;
};

static int cpio_entry(struct cpio_writer *c, const char *name, mode_t mode, unsigned rdev_major, unsigned rdev_minor,
                      const char *data, size_t size)
{
    size_t namesize = strlen(name) + 1;
    fprintf(c->f, "070701%08X%08X%08X%08X%08X%08X%08zX%08X%08X%08X%08X%08zX%08X", ++c->ino, (unsigned)mode, 0u, 0u,
            S_ISDIR(mode) ? 2u : 1u, 0u, size, 0u, 0u, rdev_major, rdev_minor, namesize, 0u);
    fwrite(name, 1, namesize, c->f);
    static const char zeros[4] = {0};
    fwrite(zeros, 1, (4 - (110 + namesize) % 4) % 4, c->f);
    if (size) {
        fwrite(data, 1, size, c->f);
        fwrite(zeros, 1, (4 - size % 4) % 4, c->f);
    }
    return ferror(c->f) ? -1 : 0;
}

static int cpio_file(struct cpio_writer *c, const char *name, const char *host_path, mode_t perm, hd_error_t *err)
{
    cleanup_free char *data = NULL;
    size_t len = 0;
    if (hd_read_file(host_path, &data, &len, err) < 0)
        return -1;
    return cpio_entry(c, name, S_IFREG | perm, 0, 0, data, len);
}

static int write_initramfs(const char *path, const char *init, const struct hd_vm_kernel *k, hd_error_t *err)
{
    cleanup_fclose FILE *f = fopen(path, "we");
    if (f == NULL)
        return hd_error_sys(err, "create %s", path);
    struct cpio_writer c = {.f = f};
    static const char *const dirs[] = {"dev",        "proc",  "sys",   "modules", "modules/net",
                                       "modules/fs", "lower", "upper", "newroot", "cg"};
    for (size_t i = 0; i < ARRAY_SIZE(dirs); i++)
        cpio_entry(&c, dirs[i], S_IFDIR | 0755, 0, 0, NULL, 0);
    /* the kernel opens /dev/console for init's stdio before devtmpfs is mounted */
    cpio_entry(&c, "dev/console", S_IFCHR | 0600, 5, 1, NULL, 0);
    if (cpio_file(&c, "init", init, 0755, err) < 0)
        return -1;
    for (size_t i = 0; k->modules && k->modules[i]; i++) {
        cleanup_free char *name = hd_xasprintf("modules/%s", strrchr(k->modules[i], '/') + 1);
        if (cpio_file(&c, name, k->modules[i], 0644, err) < 0)
            return -1;
    }
    for (size_t i = 0; k->net_modules && k->net_modules[i]; i++) {
        cleanup_free char *name = hd_xasprintf("modules/net/%s", strrchr(k->net_modules[i], '/') + 1);
        if (cpio_file(&c, name, k->net_modules[i], 0644, err) < 0)
            return -1;
    }
    for (size_t i = 0; k->fs_modules && k->fs_modules[i]; i++) {
        cleanup_free char *name = hd_xasprintf("modules/fs/%s", strrchr(k->fs_modules[i], '/') + 1);
        if (cpio_file(&c, name, k->fs_modules[i], 0644, err) < 0)
            return -1;
    }
    cpio_entry(&c, "TRAILER!!!", 0, 0, 0, NULL, 0);
    if (fflush(f) != 0 || ferror(f))
        return hd_error_sys(err, "write %s", path);
    return 0;
}

int hd_vm_initramfs(const char *state_dir, const struct hd_vm_kernel *k, char **path, hd_error_t *err)
{
    const char *custom = getenv("HEDGE_VM_INITRD");
    if (custom && *custom) {
        if (access(custom, R_OK) < 0)
            return hd_error_sys(err, "HEDGE_VM_INITRD %s", custom);
        *path = hd_xstrdup(custom);
        return 0;
    }
    cleanup_free char *init = NULL;
    if (hd_vm_init_binary(&init, err) < 0)
        return -1;
    struct hd_sha256 ctx;
    hd_sha256_init(&ctx);
    int r = hd_sha256_update_file(&ctx, init, err);
    for (size_t i = 0; r == 0 && k->modules && k->modules[i]; i++) {
        hd_sha256_update(&ctx, k->modules[i], strlen(k->modules[i]) + 1);
        r = hd_sha256_update_file(&ctx, k->modules[i], err);
    }
    for (size_t i = 0; r == 0 && k->net_modules && k->net_modules[i]; i++) {
        hd_sha256_update(&ctx, k->net_modules[i], strlen(k->net_modules[i]) + 1);
        r = hd_sha256_update_file(&ctx, k->net_modules[i], err);
    }
    for (size_t i = 0; r == 0 && k->fs_modules && k->fs_modules[i]; i++) {
        hd_sha256_update(&ctx, k->fs_modules[i], strlen(k->fs_modules[i]) + 1);
        r = hd_sha256_update_file(&ctx, k->fs_modules[i], err);
    }
    char hex[HD_SHA256_HEX_LEN + 1];
    hd_sha256_final_hex(&ctx, hex);
    if (r < 0)
        return hd_error_prefix(err, "initramfs");
    cleanup_free char *dir = vm_dir(state_dir);
    char *final = hd_xasprintf("%s/initramfs-%.16s.cpio", dir, hex);
    if (access(final, R_OK) == 0) {
        *path = final;
        return 0;
    }
    if (hd_mkdir_p(dir, 0700, err) < 0) {
        free(final);
        return -1;
    }
    cleanup_free char *tmp = hd_xasprintf("%s.tmp.%d", final, (int)getpid());
    if (write_initramfs(tmp, init, k, err) < 0 || rename(tmp, final) < 0) {
        if (err && *err == NULL)
            hd_error_sys(err, "rename %s", tmp);
        unlink(tmp);
        free(final);
        return hd_error_prefix(err, "initramfs");
    }
    *path = final;
    return 0;
}

/* ---- rootfs images ------------------------------------------------------ */

static struct hd_sha256 tree_ctx; /* nftw has no user pointer */
static size_t tree_prefix;

static int digest_tree_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    char buf[PATH_MAX + 256];
    int n = snprintf(buf, sizeof(buf), "%s|%o|%u|%u|%lld|%lld.%09ld|", path + tree_prefix, st->st_mode, st->st_uid,
                     st->st_gid, (long long)st->st_size, (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
    hd_sha256_update(&tree_ctx, buf, (size_t)(n < (int)sizeof(buf) ? n : (int)sizeof(buf) - 1));
    if (type == FTW_SL) {
        ssize_t l = readlink(path, buf, sizeof(buf));
        if (l > 0)
            hd_sha256_update(&tree_ctx, buf, (size_t)l);
    }
    return 0;
}

static int tree_digest(const char *root, char hex[65], hd_error_t *err)
{
    hd_sha256_init(&tree_ctx);
    tree_prefix = strlen(root);
    int r = nftw(root, digest_tree_entry, 32, FTW_PHYS | FTW_MOUNT);
    hd_sha256_final_hex(&tree_ctx, hex);
    if (r != 0)
        return hd_error_sys(err, "walk %s", root);
    return 0;
}

/* Run mkfs.erofs; its output goes to log so a failure can quote it. */
static int run_mkfs_erofs(const char *image, const char *root, const char *log, hd_error_t *err)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    char *argv[] = {(char *)"mkfs.erofs", (char *)"--quiet", (char *)image, (char *)root, NULL};
    extern char **environ;
    pid_t pid;
    int r = posix_spawnp(&pid, "mkfs.erofs", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (r != 0)
        return hd_error_set(err, r, "mkfs.erofs (package erofs-utils)");
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return hd_error_sys(err, "wait for mkfs.erofs");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        cleanup_free char *out = NULL;
        size_t len = 0;
        hd_error_t ignored = NULL;
        hd_read_file(log, &out, &len, &ignored);
        hd_error_free(&ignored);
        if (out)
            out[strcspn(out, "\n")] = '\0';
        return hd_error_set(err, 0, "mkfs.erofs %s failed: %s", root, out && *out ? out : "no output");
    }
    return 0;
}

#define ROOTFS_CACHE_MAX_DEFAULT (4LL << 30)
#define ROOTFS_CACHE_GRACE_S 600

struct cached_image {
    char *name;
    int64_t bytes; /* on disk: images padded to a template's slot are sparse */
    time_t used;
};

static int cached_image_older(const void *a, const void *b)
{
    const struct cached_image *x = a, *y = b;
    return x->used < y->used ? -1 : x->used > y->used;
}

/* A build's temp file ("KEY.erofs.tmp.PID", "....log") whose process is gone. */
static bool stale_temp(const char *name)
{
    const char *tmp = strstr(name, ".tmp.");
    if (tmp == NULL)
        return false;
    char *end;
    long pid = strtol(tmp + 5, &end, 10);
    return pid > 0 && end != tmp + 5 && (*end == '\0' || strcmp(end, ".log") == 0) && kill((pid_t)pid, 0) < 0 &&
        errno == ESRCH;
}

/* Delete least recently used images of dir (never keep, nor one used in the grace period) until the
 * rest fit the budget. Best effort: a cache that cannot be pruned still serves. */
static void rootfs_cache_prune(const char *dir, const char *keep)
{
    int64_t budget = ROOTFS_CACHE_MAX_DEFAULT;
    const char *env = getenv("HEDGE_VM_ROOTFS_CACHE_MAX");
    if (env && (hd_parse_size(env, &budget) < 0 || budget < 0)) {
        hd_log(HD_LOG_WARN, "vm", "HEDGE_VM_ROOTFS_CACHE_MAX=%s: not a size; the rootfs cache is not pruned", env);
        return;
    }
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct cached_image *images = NULL;
    size_t n = 0;
    int64_t total = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (stale_temp(de->d_name)) {
            unlinkat(dirfd(d), de->d_name, 0);
            continue;
        }
        size_t len = strlen(de->d_name);
        if (len < 7 || strcmp(de->d_name + len - 6, ".erofs") != 0)
            continue;
        images = hd_xrealloc(images, (n + 1) * sizeof(*images));
        images[n++] = (struct cached_image){hd_xstrdup(de->d_name), (int64_t)st.st_blocks * 512, st.st_mtime};
        total += (int64_t)st.st_blocks * 512;
    }
    if (n > 1)
        qsort(images, n, sizeof(*images), cached_image_older);
    time_t now = time(NULL);
    const char *keep_name = strrchr(keep, '/') ? strrchr(keep, '/') + 1 : keep;
    for (size_t i = 0; i < n; i++) {
        if (total > budget && strcmp(images[i].name, keep_name) != 0 && now - images[i].used >= ROOTFS_CACHE_GRACE_S &&
            unlinkat(dirfd(d), images[i].name, 0) == 0) {
            total -= images[i].bytes;
            hd_log(HD_LOG_INFO, "vm", "rootfs cache: removed %s (least recently used; the cache is over %lld bytes)",
                   images[i].name, (long long)budget);
        }
        free(images[i].name);
    }
    free(images);
    closedir(d);
}

int hd_vm_rootfs_image(const char *state_dir, const char *rootfs, const char *image_digest, char **path,
                       hd_error_t *err)
{
    struct stat st;
    if (stat(rootfs, &st) < 0)
        return hd_error_sys(err, "rootfs %s", rootfs);
    if (!S_ISDIR(st.st_mode))
        return hd_error_set(err, ENOTDIR, "rootfs %s", rootfs);
    char key[80];
    if (image_digest) {
        const char *d = strchr(image_digest, ':') ? strchr(image_digest, ':') + 1 : image_digest;
        snprintf(key, sizeof(key), "image-%.64s", d);
    } else {
        char hex[65] = "";
        if (tree_digest(rootfs, hex, err) < 0)
            return -1;
        snprintf(key, sizeof(key), "tree-%.64s", hex);
    }
    cleanup_free char *dir = hd_xasprintf("%s/vm/rootfs", state_dir);
    char *final = hd_xasprintf("%s/%s.erofs", dir, key);
    if (access(final, R_OK) == 0) {
        utimensat(AT_FDCWD, final, NULL, 0); /* used now: the last to go when the cache is pruned */
        *path = final;
        return 0;
    }
    if (hd_mkdir_p(dir, 0700, err) < 0) {
        free(final);
        return -1;
    }
    cleanup_free char *tmp = hd_xasprintf("%s.tmp.%d", final, (int)getpid());
    cleanup_free char *log = hd_xasprintf("%s.log", tmp);
    int r = run_mkfs_erofs(tmp, rootfs, log, err);
    unlink(log);
    if (r == 0 && rename(tmp, final) < 0)
        r = hd_error_sys(err, "rename %s", tmp);
    if (r < 0) {
        unlink(tmp);
        free(final);
        return hd_error_prefix(err, "rootfs image");
    }
    rootfs_cache_prune(dir, final);
    *path = final;
    return 0;
}
