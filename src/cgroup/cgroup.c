/*
 * cgroup.c - per-workload cgroups: mode detection, the group's lifecycle,
 * and the helpers both backends share.
 *
 * The host's layout picks the backend: a cgroup2 mount at /sys/fs/cgroup is
 * v2 (cgroup-v2.c); a tmpfs there is v1, or hybrid when a cgroup2 hierarchy
 * also sits at /sys/fs/cgroup/unified. v1 and hybrid both put the limits on
 * the v1 controller hierarchies (cgroup-v1.c); on hybrid the group also gets
 * a directory in the unified hierarchy, which tracks the tasks and gives
 * cgroup.kill.
 *
 * $HEDGE_CGROUP_MODE=v1|hybrid|v2 overrides the detection. It exists for
 * tests: forcing v2 on a hybrid host points the v2 backend at the unified
 * hierarchy at /sys/fs/cgroup/unified, so its create/enter/kill/destroy paths
 * run for real there (limits whose controller that hierarchy lacks are then
 * refused with a message saying so).
 *
 * Whatever happens, hd_cgroup_destroy kills what is left in the group and
 * removes every directory the group created; the parent ("hedge", or
 * $HEDGE_CGROUP_PARENT) stays, as other workloads share it.
 */
#include "cgroup/internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "base/util.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif
#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif

#define CGROUP_ROOT "/sys/fs/cgroup"
#define CGROUP_UNIFIED CGROUP_ROOT "/unified"

/* rmdir of a group whose last task just died can fail with EBUSY for a moment. */
#define CGROUP_RMDIR_ROUNDS 200

/* ---- pure helpers ---- */

uint64_t hd_cgroup_weight_to_shares(uint64_t weight)
{
    if (weight < 1)
        weight = 1;
    if (weight > 10000)
        weight = 10000;
    return 2 + ((weight - 1) * 262142) / 9999;
}

int64_t hd_cgroup_cpu_quota_us(double cpus, int64_t period_us)
{
    int64_t quota = (int64_t)(cpus * (double)period_us + 0.5);
    return quota < 1000 ? 1000 : quota;
}

int64_t hd_cgroup_cpu_period_us(const struct hd_resources *res)
{
    return res->cpu_period_us > 0 ? res->cpu_period_us : CGROUP_CPU_PERIOD_US;
}

bool hd_cgroup_cpuset_list_valid(const char *list)
{
    const char *p = list;
    if (*p == '\0')
        return false;
    for (;;) {
        if (*p < '0' || *p > '9')
            return false;
        char *end = NULL;
        unsigned long first = strtoul(p, &end, 10);
        p = end;
        if (*p == '-') {
            p++;
            if (*p < '0' || *p > '9')
                return false;
            unsigned long last = strtoul(p, &end, 10);
            p = end;
            if (last < first)
                return false;
        }
        if (*p == '\0')
            return true;
        if (*p++ != ',')
            return false;
    }
}

uint64_t hd_cgroup_blkio_weight_to_io_weight(uint64_t weight)
{
    if (weight < 10)
        weight = 10;
    if (weight > 1000)
        weight = 1000;
    return 1 + (weight - 10) * 9999 / 990;
}

bool hd_cgroup_hugepage_size_valid(const char *size)
{
    size_t digits = strspn(size, "0123456789");
    if (digits == 0 || size[0] == '0')
        return false;
    const char *unit = size + digits;
    return strcmp(unit, "KB") == 0 || strcmp(unit, "MB") == 0 || strcmp(unit, "GB") == 0;
}

int64_t hd_cgroup_v1_memsw_limit(const struct hd_resources *res)
{
    if (res->memory_swap < 0)
        return -1;
    if (res->memory_swap == 0)
        return res->memory;
    return res->memory_swap;
}

int64_t hd_cgroup_v2_swap_max(const struct hd_resources *res)
{
    if (res->memory_swap < 0)
        return -1;
    if (res->memory_swap == 0)
        return 0;
    return res->memory_swap - res->memory;
}

int hd_cgroup_mode_parse(const char *text, enum hd_cgroup_mode *out)
{
    if (text == NULL)
        return -1;
    if (strcmp(text, "v1") == 0)
        *out = HD_CGROUP_V1;
    else if (strcmp(text, "hybrid") == 0)
        *out = HD_CGROUP_HYBRID;
    else if (strcmp(text, "v2") == 0)
        *out = HD_CGROUP_V2;
    else
        return -1;
    return 0;
}

enum hd_cgroup_mode hd_cgroup_mode_from_fs(unsigned long root_magic, bool unified_is_cgroup2)
{
    if (root_magic == CGROUP2_SUPER_MAGIC)
        return HD_CGROUP_V2;
    if (root_magic == TMPFS_MAGIC && unified_is_cgroup2)
        return HD_CGROUP_HYBRID;
    return HD_CGROUP_V1;
}

/* Is `word` one of the comma-separated items of list[0..len)? */
static bool list_has_item(const char *list, size_t len, const char *word)
{
    size_t wlen = strlen(word);
    const char *end = list + len;
    for (const char *p = list; p < end;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        size_t n = comma ? (size_t)(comma - p) : (size_t)(end - p);
        if (n == wlen && memcmp(p, word, n) == 0)
            return true;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return false;
}

char *hd_cgroup_v1_mount_point(const char *mountinfo, const char *controller)
{
    /* "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS"
     * Only the cgroup (v1) lines are copied and split: this runs once per controller at every start. */
    for (const char *next = mountinfo; *next;) {
        const char *end = strchr(next, '\n');
        size_t len = end ? (size_t)(end - next) : strlen(next);
        const char *start = next;
        next += len + (end ? 1 : 0);
        if (!memmem(start, len, " - cgroup ", 10))
            continue;
        cleanup_free char *line = hd_xmalloc(len + 1);
        memcpy(line, start, len);
        line[len] = '\0';
        char *save = NULL, *field[5] = {0};
        char *tok = strtok_r(line, " ", &save);
        for (int i = 0; i < 5 && tok; i++) {
            field[i] = tok;
            tok = strtok_r(NULL, " ", &save);
        }
        if (field[4] == NULL)
            continue;
        while (tok && strcmp(tok, "-") != 0)
            tok = strtok_r(NULL, " ", &save);
        const char *fstype = tok ? strtok_r(NULL, " ", &save) : NULL;
        const char *source = fstype ? strtok_r(NULL, " ", &save) : NULL;
        const char *options = source ? strtok_r(NULL, " ", &save) : NULL;
        if (options == NULL || strcmp(fstype, "cgroup") != 0)
            continue;
        if (list_has_item(options, strlen(options), controller))
            return hd_xstrdup(field[4]);
    }
    return NULL;
}

bool hd_cgroup_parent_valid(const char *parent)
{
    if (parent == NULL || *parent == '\0' || *parent == '/')
        return false;
    const char *p = parent;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        if (slash == NULL)
            break;
        p = slash + 1;
        if (*p == '\0')
            return false;
    }
    return true;
}

/* ---- file helpers ---- */

int cgroup_write(const char *dir, const char *file, const char *value, hd_error_t *err)
{
    cleanup_free char *path = hd_xasprintf("%s/%s", dir, file);
    cleanup_close int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return hd_error_sys(err, "open %s", path);
    size_t len = strlen(value);
    ssize_t n = write(fd, value, len);
    if (n < 0)
        return hd_error_sys(err, "write \"%s\" to %s", value, path);
    if ((size_t)n != len)
        return hd_error_set(err, EIO, "write \"%s\" to %s: short write", value, path);
    return 0;
}

bool cgroup_file_exists(const char *dir, const char *file)
{
    cleanup_free char *path = hd_xasprintf("%s/%s", dir, file);
    return access(path, F_OK) == 0;
}

int cgroup_read(const char *dir, const char *file, char **out, hd_error_t *err)
{
    cleanup_free char *path = hd_xasprintf("%s/%s", dir, file);
    return hd_read_file(path, out, NULL, err);
}

int cgroup_read_u64(const char *dir, const char *file, uint64_t *out, hd_error_t *err)
{
    cleanup_free char *text = NULL;
    if (cgroup_read(dir, file, &text, err) < 0)
        return -1;
    if (strncmp(text, "max", 3) == 0) {
        *out = UINT64_MAX;
        return 0;
    }
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || (*end != '\n' && *end != '\0'))
        return hd_error_set(err, 0, "%s/%s: \"%.40s\" is not a number", dir, file, text);
    *out = v;
    return 0;
}

int cgroup_read_key(const char *dir, const char *file, const char *key, uint64_t *out, hd_error_t *err)
{
    cleanup_free char *text = NULL;
    if (cgroup_read(dir, file, &text, err) < 0)
        return -1;
    size_t klen = strlen(key);
    for (char *line = text; line && *line;) {
        char *eol = strchr(line, '\n');
        if (eol)
            *eol = '\0';
        if (strncmp(line, key, klen) == 0 && line[klen] == ' ') {
            char *end = NULL;
            errno = 0;
            unsigned long long v = strtoull(line + klen + 1, &end, 10);
            if (errno || end == line + klen + 1)
                return hd_error_set(err, 0, "%s/%s: bad value for %s", dir, file, key);
            *out = v;
            return 0;
        }
        line = eol ? eol + 1 : NULL;
    }
    return hd_error_set(err, ENOENT, "%s/%s: no \"%s\" line", dir, file, key);
}

int cgroup_mkdir(const char *path, bool may_exist, hd_error_t *err)
{
    if (mkdir(path, 0755) == 0 || (may_exist && errno == EEXIST))
        return 0;
    return hd_error_sys(err, "mkdir %s", path);
}

int cgroup_mkdir_under(const char *parent, const char *path, bool may_exist, hd_error_t *err)
{
    /* The parent exists on every start but the first: one mkdir, not one per path component. */
    if (mkdir(path, 0755) == 0 || (may_exist && errno == EEXIST))
        return 0;
    if (errno != ENOENT)
        return hd_error_sys(err, "mkdir %s", path);
    if (hd_mkdir_p(parent, 0755, err) < 0)
        return -1;
    return cgroup_mkdir(path, may_exist, err);
}

const char *cgroup_add_dir(struct hd_cgroup *cg, const char *path)
{
    if (cg->n_dirs >= CGROUP_MAX_DIRS)
        abort(); /* a backend bug: it knows how many hierarchies it uses */
    cg->dirs[cg->n_dirs] = hd_xstrdup(path);
    return cg->dirs[cg->n_dirs++];
}

/* Call fn(path) for dir and every group directory below it (workload-made sub-groups). */
static int for_each_group(const char *dir, int (*fn)(const char *path, void *data), void *data)
{
    int rc = fn(dir, data);
    DIR *d = opendir(dir);
    if (d == NULL)
        return rc;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_type != DT_DIR || strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        cleanup_free char *sub = hd_xasprintf("%s/%s", dir, e->d_name);
        if (for_each_group(sub, fn, data) < 0)
            rc = -1;
    }
    closedir(d);
    return rc;
}

struct signal_walk {
    int sig;
    int n_tasks;
    int errnum;
    long failed_pid;
};

static int signal_one_group(const char *dir, void *data)
{
    struct signal_walk *walk = data;
    cleanup_free char *text = NULL;
    hd_error_t read_err = NULL;
    if (cgroup_read(dir, "cgroup.procs", &text, &read_err) < 0) {
        hd_error_free(&read_err); /* the group is gone: nothing to signal */
        return 0;
    }
    for (char *p = text; *p;) {
        char *end = NULL;
        long pid = strtol(p, &end, 10);
        if (end == p)
            break;
        if (pid > 0) {
            walk->n_tasks++;
            if (kill((pid_t)pid, walk->sig) < 0 && errno != ESRCH && walk->errnum == 0) {
                walk->errnum = errno;
                walk->failed_pid = pid;
            }
        }
        p = end;
        while (*p == '\n')
            p++;
    }
    return 0;
}

int cgroup_signal_tasks(const char *dir, int sig, int *n_tasks, hd_error_t *err)
{
    struct signal_walk walk = {.sig = sig};
    for_each_group(dir, signal_one_group, &walk);
    *n_tasks = walk.n_tasks;
    if (walk.errnum)
        return hd_error_set(err, walk.errnum, "kill task %ld of %s", walk.failed_pid, dir);
    return 0;
}

static int count_one_group(const char *dir, void *data)
{
    cleanup_free char *text = NULL;
    hd_error_t err = NULL;
    if (cgroup_read(dir, "cgroup.procs", &text, &err) < 0) {
        hd_error_free(&err); /* gone */
        return 0;
    }
    if (text[0] != '\0')
        (*(int *)data)++;
    return 0;
}

bool cgroup_is_empty(const char *dir)
{
    int busy = 0;
    for_each_group(dir, count_one_group, &busy);
    return busy == 0;
}

/* rmdir sub-groups a workload made below its group (deepest first); cgroupfs files go with their dir. */
static void remove_sub_groups(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_type != DT_DIR || strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        cleanup_free char *sub = hd_xasprintf("%s/%s", dir, e->d_name);
        remove_sub_groups(sub);
        rmdir(sub);
    }
    closedir(d);
}

void cgroup_poll_sleep(int round)
{
    long ms = round < 5 ? 1 : round < 20 ? 5 : 20;
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- mode ---- */

static bool is_cgroup2(const char *path)
{
    struct statfs fs;
    return statfs(path, &fs) == 0 && (unsigned long)fs.f_type == CGROUP2_SUPER_MAGIC;
}

static enum hd_cgroup_mode detect_from_host(void)
{
    struct statfs fs;
    if (statfs(CGROUP_ROOT, &fs) < 0)
        return HD_CGROUP_V1;
    return hd_cgroup_mode_from_fs((unsigned long)fs.f_type, is_cgroup2(CGROUP_UNIFIED));
}

enum hd_cgroup_mode hd_cgroup_detect(void)
{
    enum hd_cgroup_mode mode;
    if (hd_cgroup_mode_parse(getenv("HEDGE_CGROUP_MODE"), &mode) == 0)
        return mode;
    return detect_from_host();
}

const char *hd_cgroup_mode_name(enum hd_cgroup_mode mode)
{
    switch (mode) {
    case HD_CGROUP_V1: return "v1";
    case HD_CGROUP_HYBRID: return "hybrid";
    case HD_CGROUP_V2: return "v2";
    }
    return "unknown";
}

static int choose_mode(enum hd_cgroup_mode *mode, hd_error_t *err)
{
    const char *forced = getenv("HEDGE_CGROUP_MODE");
    if (forced && *forced) {
        if (hd_cgroup_mode_parse(forced, mode) < 0)
            return hd_error_set(err, 0, "HEDGE_CGROUP_MODE: \"%s\" is not v1, hybrid or v2", forced);
        return 0;
    }
    *mode = detect_from_host();
    return 0;
}

const char *cgroup_v2_root(void)
{
    if (is_cgroup2(CGROUP_ROOT))
        return CGROUP_ROOT;
    if (is_cgroup2(CGROUP_UNIFIED))
        return CGROUP_UNIFIED;
    return NULL;
}

/* ---- lifecycle ---- */

static int remove_dirs(struct hd_cgroup *cg, hd_error_t *err)
{
    int rc = 0;
    for (int i = cg->n_dirs - 1; i >= 0; i--) {
        int round = 0;
        bool swept = false;
        while (rmdir(cg->dirs[i]) < 0) {
            if (errno == ENOENT)
                break;
            if (errno == EBUSY && !swept) {
                /* sub-groups (made by the workload) are looked for only when the plain rmdir is refused */
                remove_sub_groups(cg->dirs[i]);
                swept = true;
                continue;
            }
            if (errno != EBUSY || ++round >= CGROUP_RMDIR_ROUNDS) {
                rc = hd_error_sys(err, "remove cgroup %s", cg->dirs[i]);
                break;
            }
            cgroup_poll_sleep(round);
        }
        free(cg->dirs[i]);
        cg->dirs[i] = NULL;
    }
    cg->n_dirs = 0;
    return rc;
}

static int cgroup_make(const char *name, const struct hd_resources *res, bool adopt, struct hd_cgroup **out,
                       hd_error_t *err);

int hd_cgroup_create(const char *name, const struct hd_resources *res, struct hd_cgroup **out, hd_error_t *err)
{
    return cgroup_make(name, res, false, out, err);
}

int hd_cgroup_open(const char *name, struct hd_cgroup **out, hd_error_t *err)
{
    struct hd_resources none = {0};
    return cgroup_make(name, &none, true, out, err);
}

void hd_cgroup_forget(struct hd_cgroup *cg)
{
    if (cg == NULL)
        return;
    for (int i = 0; i < cg->n_dirs; i++)
        free(cg->dirs[i]);
    if (cg->v2_fd >= 0)
        close(cg->v2_fd);
    free(cg->v1_devices_mount);
    free(cg->name);
    free(cg->parent);
    free(cg);
}

static int cgroup_make_in(const char *parent, const char *name, const struct hd_resources *res, bool adopt,
                          struct hd_cgroup **out, hd_error_t *err);

static const char *cgroup_parent(void)
{
    const char *parent = getenv("HEDGE_CGROUP_PARENT");
    return parent && *parent ? parent : "hedge";
}

static int cgroup_make(const char *name, const struct hd_resources *res, bool adopt, struct hd_cgroup **out,
                       hd_error_t *err)
{
    return cgroup_make_in(cgroup_parent(), name, res, adopt, out, err);
}

int hd_cgroup_sweep(const char *parent, hd_error_t *err)
{
    if (strcmp(parent, "/") == 0 || !hd_cgroup_parent_valid(parent))
        return hd_error_set(err, 0, "sweep cgroup \"%s\": not a relative cgroup path below the top", parent);
    /* The parent is opened as a group of its own parent ("a/b/c": group c under a/b) and destroyed:
     * its kill reaches every sub-group, its removal takes the sub-groups first. */
    cleanup_free char *above = hd_xstrdup(parent);
    char *slash = strrchr(above, '/');
    const char *name = slash ? slash + 1 : above;
    if (slash)
        *slash = '\0';
    struct hd_resources none = {0};
    struct hd_cgroup *cg;
    if (cgroup_make_in(slash ? above : "/", name, &none, true, &cg, err) < 0)
        return -1;
    return hd_cgroup_destroy(cg, err);
}

static int cgroup_make_in(const char *parent, const char *name, const struct hd_resources *res, bool adopt,
                          struct hd_cgroup **out, hd_error_t *err)
{
    enum hd_cgroup_mode mode = HD_CGROUP_V2;
    *out = NULL;
    if (choose_mode(&mode, err) < 0)
        return -1;
    /* "/": the group sits at the top of each hierarchy (hedge-oci: a one-component cgroupsPath) */
    bool top = strcmp(parent, "/") == 0;
    if (!top && !hd_cgroup_parent_valid(parent))
        return hd_error_set(err, 0,
                            "HEDGE_CGROUP_PARENT: \"%s\" is not a relative cgroup path "
                            "(no leading '/', no empty, '.' or '..' parts)",
                            parent);
    if (strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0 || !*name)
        return hd_error_set(err, 0, "cgroup name \"%s\" is not a single path component", name);

    struct hd_cgroup *cg = hd_xcalloc(1, sizeof(*cg));
    cg->mode = mode;
    cg->backend = mode == HD_CGROUP_V2 ? &cgroup_backend_v2 : &cgroup_backend_v1;
    cg->parent = hd_xstrdup(top ? "" : parent);
    cg->name = top ? hd_xstrdup(name) : hd_xasprintf("%s/%s", parent, name);
    cg->v2_fd = -1;
    cg->adopt = adopt;
    if (cg->backend->create(cg, res, err) < 0) {
        hd_error_prefix(err, "cgroup %s (%s)", cg->name, hd_cgroup_mode_name(mode));
        hd_cgroup_destroy(cg, err);
        return -1;
    }
    *out = cg;
    return 0;
}

int hd_cgroup_enter(struct hd_cgroup *cg, pid_t pid, hd_error_t *err)
{
    if (cg->backend->enter(cg, pid, err) < 0)
        return hd_error_prefix(err, "move pid %d into cgroup %s", (int)pid, cg->name);
    return 0;
}

int hd_cgroup_fd(struct hd_cgroup *cg)
{
    return cg ? cg->v2_fd : -1;
}

_Static_assert(CGROUP_MAX_DIRS <= HD_CGROUP_ENTRY_MAX, "an entry holds every directory of a group");

int hd_cgroup_entry_open(struct hd_cgroup *cg, struct hd_cgroup_entry *e, hd_error_t *err)
{
    memset(e, 0, sizeof(*e));
    e->clone_fd = -1;
    if (cg == NULL)
        return 0;
    if (cg->mode == HD_CGROUP_V2) {
        e->clone_fd = fcntl(cg->v2_fd, F_DUPFD_CLOEXEC, 3);
        if (e->clone_fd < 0)
            return hd_error_sys(err, "cgroup %s: dup its directory fd", cg->name);
        return 0;
    }
    for (int i = 0; i < cg->n_dirs; i++) {
        const char *dir = cg->dirs[i];
        if (dir == cg->unified_dir) {
            e->clone_fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
            if (e->clone_fd < 0) {
                hd_error_sys(err, "cgroup: open %s", dir);
                hd_cgroup_entry_close(e);
                return -1;
            }
            continue;
        }
        cleanup_free char *path = hd_xasprintf("%s/tasks", dir);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0) {
            hd_error_sys(err, "cgroup: open %s", path);
            hd_cgroup_entry_close(e);
            return -1;
        }
        e->tasks_dir[e->n_tasks] = dir;
        e->tasks_fd[e->n_tasks++] = fd;
    }
    return 0;
}

int hd_cgroup_entry_enter(struct hd_cgroup_entry *e, const char **failed_dir)
{
    int r = 0;
    for (int i = 0; i < e->n_tasks && r == 0; i++) {
        if (write(e->tasks_fd[i], "0", 1) != 1) {
            r = -errno;
            *failed_dir = e->tasks_dir[i];
        }
    }
    hd_cgroup_entry_close(e);
    return r;
}

void hd_cgroup_entry_close(struct hd_cgroup_entry *e)
{
    for (int i = 0; i < e->n_tasks; i++)
        close(e->tasks_fd[i]);
    e->n_tasks = 0;
    if (e->clone_fd >= 0)
        close(e->clone_fd);
    e->clone_fd = -1;
}

bool hd_cgroup_oom_killed(struct hd_cgroup *cg)
{
    return cg && cg->backend->oom_killed(cg);
}

int hd_cgroup_stats(struct hd_cgroup *cg, struct hd_stats *stats, hd_error_t *err)
{
    memset(stats, 0, sizeof(*stats));
    if (cg == NULL)
        return 0;
    if (cg->backend->stats(cg, stats, err) < 0)
        return hd_error_prefix(err, "stats of cgroup %s", cg->name);
    return 0;
}

int hd_cgroup_kill_all(struct hd_cgroup *cg, hd_error_t *err)
{
    if (cg == NULL || cg->n_dirs == 0)
        return 0;
    if (cg->backend->kill_all(cg, err) < 0)
        return hd_error_prefix(err, "kill the tasks of cgroup %s", cg->name);
    return 0;
}

/* Forget dirs[i] (removed already) and every alias of it. */
static void forget_dir(struct hd_cgroup *cg, int i)
{
    const char *dir = cg->dirs[i];
    for (int c = 0; c < CGROUP_N_CONTROLLERS; c++)
        if (cg->controller_dir[c] == dir)
            cg->controller_dir[c] = NULL;
    if (cg->unified_dir == dir)
        cg->unified_dir = NULL;
    if (cg->v2_dir == dir)
        cg->v2_dir = NULL;
    free(cg->dirs[i]);
    cg->dirs[i] = NULL;
}

/*
 * The common end of a run: its group is empty. The kernel refuses to rmdir a group that holds a
 * task or a sub-group, so removing the directories (in the usual reverse order) before looking
 * for tasks proves the emptiness in one syscall per hierarchy instead of a read of cgroup.procs
 * and a directory walk per hierarchy. At the first refusal the rest stays for the kill-and-remove
 * path, which then works on the directories that remain (each still lists its own tasks).
 */
static void remove_while_empty(struct hd_cgroup *cg)
{
    while (cg->n_dirs > 0) {
        int i = cg->n_dirs - 1;
        if (rmdir(cg->dirs[i]) < 0 && errno != ENOENT)
            return;
        forget_dir(cg, i);
        cg->n_dirs = i;
    }
}

int hd_cgroup_destroy(struct hd_cgroup *cg, hd_error_t *err)
{
    if (cg == NULL)
        return 0;
    remove_while_empty(cg);
    /* Both steps run whatever the first one says: leave no directory behind. */
    int rc = hd_cgroup_kill_all(cg, err);
    if (remove_dirs(cg, err) < 0)
        rc = -1;
    if (cg->v2_fd >= 0)
        close(cg->v2_fd);
    free(cg->v1_devices_mount);
    free(cg->name);
    free(cg->parent);
    free(cg);
    return rc;
}

const char *hd_cgroup_unified_dir(struct hd_cgroup *cg)
{
    if (cg == NULL)
        return NULL;
    return cg->v2_dir ? cg->v2_dir : cg->unified_dir;
}

const char *hd_cgroup_path(struct hd_cgroup *cg)
{
    if (cg == NULL || cg->n_dirs == 0)
        return "";
    if (cg->v2_dir)
        return cg->v2_dir;
    if (cg->controller_dir[CGROUP_MEMORY])
        return cg->controller_dir[CGROUP_MEMORY];
    return cg->dirs[0];
}

/* The freezer file of the group: v2 cgroup.freeze, v1 freezer.state; NULL when there is none. A hybrid
 * host's lean group (no v1 freezer directory, cgroups.md) freezes through its unified directory. */
static const char *freezer_dir(struct hd_cgroup *cg, bool *v2)
{
    *v2 = cg != NULL && cg->v2_dir != NULL;
    if (cg == NULL)
        return NULL;
    if (*v2)
        return cg->v2_dir;
    if (cg->controller_dir[CGROUP_FREEZER] == NULL && cg->unified_dir &&
        cgroup_file_exists(cg->unified_dir, "cgroup.freeze")) {
        *v2 = true;
        return cg->unified_dir;
    }
    return cg->controller_dir[CGROUP_FREEZER];
}

bool hd_cgroup_frozen(struct hd_cgroup *cg)
{
    bool v2;
    const char *dir = freezer_dir(cg, &v2);
    cleanup_free char *state = NULL;
    hd_error_t err = NULL;
    if (dir == NULL || cgroup_read(dir, v2 ? "cgroup.freeze" : "freezer.state", &state, &err) < 0) {
        hd_error_free(&err);
        return false;
    }
    return v2 ? state[0] == '1' : strncmp(state, "THAWED", 6) != 0;
}

int hd_cgroup_freeze(struct hd_cgroup *cg, bool freeze, hd_error_t *err)
{
    bool v2;
    const char *dir = freezer_dir(cg, &v2);
    if (dir == NULL)
        return hd_error_set(err, ENOTSUP, "cgroup %s: no freezer (v1 freezer hierarchy or v2 cgroup.freeze)",
                            cg ? cg->name : "?");
    if (cgroup_write(dir, v2 ? "cgroup.freeze" : "freezer.state",
                     v2 ? (freeze ? "1" : "0") : (freeze ? "FROZEN" : "THAWED"), err) < 0)
        return -1;
    /* wait (bounded) until the kernel says the group is frozen / thawed */
    uint64_t deadline = hd_now_ns() + 2000000000ULL;
    for (int round = 0; hd_now_ns() < deadline; round++) {
        cleanup_free char *state = NULL;
        if (cgroup_read(dir, v2 ? "cgroup.events" : "freezer.state", &state, err) < 0)
            return -1;
        bool done = v2 ? (strstr(state, freeze ? "frozen 1" : "frozen 0") != NULL)
                       : strncmp(state, freeze ? "FROZEN" : "THAWED", 6) == 0;
        if (done)
            return 0;
        cgroup_poll_sleep(round);
    }
    return hd_error_set(err, ETIMEDOUT, "cgroup %s: still not %s after 2 s", cg->name, freeze ? "frozen" : "thawed");
}

int hd_cgroup_update(struct hd_cgroup *cg, const struct hd_resources *res, hd_error_t *err)
{
    if (cg == NULL || cg->n_dirs == 0)
        return hd_error_set(err, 0, "cgroup: no group to update");
    if (cg->backend->update(cg, res, err) < 0)
        return hd_error_prefix(err, "update cgroup %s", cg->name);
    return 0;
}
