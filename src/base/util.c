/*
 * util.c - the shared helpers declared in util.h.
 */
#include "base/util.h"

#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void hd_cleanup_freep(void *p)
{
    free(*(void **)p);
}

void hd_cleanup_closep(int *fd)
{
    if (*fd >= 0)
        close(*fd);
}

void hd_cleanup_fclosep(void *p)
{
    FILE *f = *(FILE **)p;
    if (f)
        fclose(f);
}

void hd_cleanup_strvp(void *p)
{
    hd_strv_free(*(char ***)p);
}

void *hd_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

void *hd_xcalloc(size_t n, size_t m)
{
    void *p = calloc(n ? n : 1, m ? m : 1);
    if (!p)
        abort();
    return p;
}

void *hd_xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        abort();
    return p;
}

char *hd_xstrdup(const char *s)
{
    if (s == NULL)
        return NULL;
    char *d = strdup(s);
    if (!d)
        abort();
    return d;
}

char *hd_xasprintf(const char *fmt, ...)
{
    char *s;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        abort();
    va_end(ap);
    return s;
}

size_t hd_strv_len(char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    return n;
}

void hd_strv_free(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

char **hd_strv_dup(char *const *v)
{
    if (v == NULL)
        return NULL;
    size_t n = hd_strv_len(v);
    char **d = hd_xcalloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        d[i] = hd_xstrdup(v[i]);
    return d;
}

void hd_strv_push(char ***v, const char *s)
{
    size_t n = hd_strv_len(*v);
    *v = hd_xrealloc(*v, (n + 2) * sizeof(char *));
    (*v)[n] = hd_xstrdup(s);
    (*v)[n + 1] = NULL;
}

void hd_env_set(char ***env, const char *key_value)
{
    const char *eq = strchr(key_value, '=');
    size_t klen = eq ? (size_t)(eq - key_value) : strlen(key_value);
    for (size_t i = 0; *env && (*env)[i]; i++) {
        if (strncmp((*env)[i], key_value, klen) == 0 && (*env)[i][klen] == '=') {
            free((*env)[i]);
            (*env)[i] = hd_xstrdup(key_value);
            return;
        }
    }
    hd_strv_push(env, key_value);
}

bool hd_strv_contains(char *const *v, const char *s)
{
    for (size_t i = 0; v && v[i]; i++)
        if (strcmp(v[i], s) == 0)
            return true;
    return false;
}

int hd_read_file(const char *path, char **out, size_t *len, hd_error_t *err)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return hd_error_sys(err, "open %s", path);
    size_t cap = 4096, used = 0;
    char *buf = hd_xmalloc(cap);
    for (;;) {
        if (used + 1 >= cap) {
            cap *= 2;
            buf = hd_xrealloc(buf, cap);
        }
        ssize_t r = read(fd, buf + used, cap - used - 1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            free(buf);
            return hd_error_sys(err, "read %s", path);
        }
        if (r == 0)
            break;
        used += (size_t)r;
    }
    buf[used] = '\0';
    *out = buf;
    if (len)
        *len = used;
    return 0;
}

int hd_write_all(int fd, const void *buf, size_t len)
{
    const char *data = buf;
    while (len > 0) {
        ssize_t w = write(fd, data, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += w;
        len -= (size_t)w;
    }
    return 0;
}

int hd_read_exact(int fd, void *buf, size_t len)
{
    char *data = buf;
    while (len > 0) {
        ssize_t r = read(fd, data, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0)
                errno = EPIPE;
            return -1;
        }
        data += r;
        len -= (size_t)r;
    }
    return 0;
}

int hd_write_file_at(int dirfd, const char *path, const char *data, size_t len, hd_error_t *err)
{
    cleanup_close int fd = openat(dirfd, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return hd_error_sys(err, "open %s", path);
    if (hd_write_all(fd, data, len) < 0)
        return hd_error_sys(err, "write %s", path);
    return 0;
}

int hd_write_file(const char *path, const char *data, size_t len, hd_error_t *err)
{
    return hd_write_file_at(AT_FDCWD, path, data, len, err);
}

int hd_write_file_atomic(const char *path, const char *data, size_t len, hd_error_t *err)
{
    cleanup_free char *tmp = hd_xasprintf("%s.tmp.%d", path, getpid());
    cleanup_close int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return hd_error_sys(err, "open %s", tmp);
    if (hd_write_all(fd, data, len) < 0 || fsync(fd) < 0) {
        int saved = errno;
        unlink(tmp);
        return hd_error_set(err, saved, "write %s", tmp);
    }
    if (rename(tmp, path) < 0) {
        int saved = errno;
        unlink(tmp);
        return hd_error_set(err, saved, "rename %s to %s", tmp, path);
    }
    return 0;
}

int hd_mkdir_p(const char *path, mode_t mode, hd_error_t *err)
{
    cleanup_free char *copy = hd_xstrdup(path);
    for (char *p = copy + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(copy, mode) < 0 && errno != EEXIST)
            return hd_error_sys(err, "mkdir %s", copy);
        *p = '/';
    }
    if (mkdir(copy, mode) < 0 && errno != EEXIST)
        return hd_error_sys(err, "mkdir %s", copy);
#ifdef __clang_analyzer__
    free(get_and_reset(&copy)); /* clang 14's analyzer does not run cleanup functions: it saw copy leak */
#endif
    return 0;
}

static int rm_rf_at(int parent, const char *name, dev_t dev, hd_error_t *err)
{
    struct stat st;
    if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : hd_error_sys(err, "stat %s", name);
    if (!S_ISDIR(st.st_mode)) {
        if (unlinkat(parent, name, 0) < 0 && errno != ENOENT)
            return hd_error_sys(err, "unlink %s", name);
        return 0;
    }
    if (st.st_dev != dev)
        return hd_error_set(err, EBUSY, "refusing to remove %s: it is a mount point", name);
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return hd_error_sys(err, "open %s", name);
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return hd_error_sys(err, "opendir %s", name);
    }
    int ret = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (rm_rf_at(dirfd(d), de->d_name, dev, err) < 0) {
            hd_error_prefix(err, "%s", name);
            ret = -1;
            break;
        }
    }
    closedir(d);
    if (ret == 0 && unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        return hd_error_sys(err, "rmdir %s", name);
    return ret;
}

int hd_rm_rf(const char *path, hd_error_t *err)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : hd_error_sys(err, "stat %s", path);
    return rm_rf_at(AT_FDCWD, path, st.st_dev, err);
}

int hd_rm_rf_at(int dirfd, const char *name, hd_error_t *err)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : hd_error_sys(err, "stat %s", name);
    return rm_rf_at(dirfd, name, st.st_dev, err);
}

int hd_parse_size(const char *text, int64_t *out)
{
    if (text == NULL || *text == '\0')
        return -EINVAL;
    const char *p = text;
    if (*p < '0' || *p > '9')
        return -EINVAL;
    errno = 0;
    char *end;
    double value = strtod(p, &end);
    if (errno || end == p || value < 0)
        return -EINVAL;
    int64_t mult = 1;
    switch (*end) {
    case '\0': break;
    case 'b':
    case 'B': end++; break;
    case 'k':
    case 'K':
        mult = 1LL << 10;
        end++;
        break;
    case 'm':
    case 'M':
        mult = 1LL << 20;
        end++;
        break;
    case 'g':
    case 'G':
        mult = 1LL << 30;
        end++;
        break;
    case 't':
    case 'T':
        mult = 1LL << 40;
        end++;
        break;
    default: return -EINVAL;
    }
    if (mult > 1) {
        if (*end == 'i')
            end++;
        if (*end == 'B' || *end == 'b')
            end++;
    }
    if (*end != '\0')
        return -EINVAL;
    double bytes = value * (double)mult;
    if (bytes > (double)INT64_MAX / 2)
        return -ERANGE;
    if (mult == 1 && value != (double)(int64_t)value)
        return -EINVAL; /* fractional bytes */
    *out = (int64_t)bytes;
    return 0;
}

uint64_t hd_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int64_t hd_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void hd_random_id(char *buf, size_t len)
{
    unsigned char raw[6];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
        uint64_t t = hd_now_ns() ^ (uint64_t)getpid();
        memcpy(raw, &t, sizeof(raw));
    }
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    for (size_t i = 0; i < sizeof(raw) && n + 2 < len; i++) {
        buf[n++] = hex[raw[i] >> 4];
        buf[n++] = hex[raw[i] & 15];
    }
    buf[n] = '\0';
}

uint64_t hd_proc_start_time(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (p == NULL)
        return 0;
    unsigned long long start = 0;
    /* after ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
     * cutime cstime priority nice num_threads itrealvalue starttime(22) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu", &start) != 1)
        return 0;
    return start;
}

char *hd_program_sibling(const char *name)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return NULL;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (!slash)
        return NULL;
    char *p = hd_xasprintf("%.*s/%s", (int)(slash - self), self, name);
    if (access(p, X_OK) == 0)
        return p;
    free(p);
    return NULL;
}

char *hd_find_program(const char *name, hd_error_t *err)
{
    char *p = hd_program_sibling(name);
    if (p)
        return p;
    p = hd_xasprintf("%s/%s", HEDGE_LIBEXECDIR, name);
    if (access(p, X_OK) == 0)
        return p;
    free(p);
    hd_error_set(err, ENOENT, "%s: not next to this program nor in %s", name, HEDGE_LIBEXECDIR);
    return NULL;
}
