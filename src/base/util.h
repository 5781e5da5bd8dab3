/*
 * util.h - small helpers every subsystem uses: scope-based cleanup
 * (crun's cleanup_free/cleanup_close habit), ownership hand-off, string
 * vectors, whole-file I/O, directory trees and size parsing.
 *
 * Before writing a helper in a subsystem file, look here first.
 */
#ifndef HEDGE_UTIL_H
#define HEDGE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/error.h"

void hd_cleanup_freep(void *p);
void hd_cleanup_closep(int *fd);
void hd_cleanup_fclosep(void *p);
void hd_cleanup_strvp(void *p);

#define cleanup_free __attribute__((cleanup(hd_cleanup_freep)))
#define cleanup_close __attribute__((cleanup(hd_cleanup_closep)))
#define cleanup_fclose __attribute__((cleanup(hd_cleanup_fclosep)))
#define cleanup_strv __attribute__((cleanup(hd_cleanup_strvp)))

/* Hand ownership out of a cleanup-managed pointer (it becomes NULL). */
#define get_and_reset(p) \
    ({ \
        __typeof__(*(p)) hd_tmp_ = *(p); \
        *(p) = NULL; \
        hd_tmp_; \
    })
/* Hand ownership out of a cleanup-managed fd (it becomes -1). */
#define steal_fd(p) \
    ({ \
        int hd_fd_ = *(p); \
        *(p) = -1; \
        hd_fd_; \
    })

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Allocation that never returns NULL (aborts on OOM, as the daemon can't recover anyway). */
void *hd_xmalloc(size_t n);
void *hd_xcalloc(size_t n, size_t m);
void *hd_xrealloc(void *p, size_t n);
char *hd_xstrdup(const char *s);
char *hd_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* NULL-terminated string vectors. */
size_t hd_strv_len(char *const *v);
void hd_strv_free(char **v);
char **hd_strv_dup(char *const *v);
/* Append a copy of s; *v may be NULL. */
void hd_strv_push(char ***v, const char *s);
/* Set KEY=VALUE in an env vector, replacing an existing KEY. */
void hd_env_set(char ***env, const char *key_value);
bool hd_strv_contains(char *const *v, const char *s);

/* Whole-file helpers. hd_read_file returns a NUL-terminated buffer. */
int hd_read_file(const char *path, char **out, size_t *len, hd_error_t *err);
int hd_write_file(const char *path, const char *data, size_t len, hd_error_t *err);
/* All of buf to fd, through short writes and EINTR: 0, or -1 with errno. */
int hd_write_all(int fd, const void *buf, size_t len);
/* Exactly len bytes from fd: 0, or -1 with errno (EPIPE at end of stream). */
int hd_read_exact(int fd, void *buf, size_t len);
int hd_write_file_at(int dirfd, const char *path, const char *data, size_t len, hd_error_t *err);
/* Write data to path atomically (tmp + fsync + rename). */
int hd_write_file_atomic(const char *path, const char *data, size_t len, hd_error_t *err);

int hd_mkdir_p(const char *path, mode_t mode, hd_error_t *err);

/* The executable file NAME (it may hold a slash: "src/init/hedge-init") in the directory of the running
 * program, or NULL. In a build tree every program sits there; an install puts its helpers elsewhere. */
char *hd_program_sibling(const char *name);
/* One of hedge's own programs (hedge-echo-server, hedge-full, hedge-monitor): its sibling (the build tree),
 * else the file of that name in HEDGE_LIBEXECDIR (an install); NULL with an error naming both. */
char *hd_find_program(const char *name, hd_error_t *err);
/* Remove a directory tree without following symlinks or crossing mounts. */
int hd_rm_rf(const char *path, hd_error_t *err);
/* Same for the entry name inside the directory dirfd (name is never followed if a symlink). */
int hd_rm_rf_at(int dirfd, const char *name, hd_error_t *err);

/*
 * Parse a size with an optional K/M/G/T suffix (binary: 1K = 1024),
 * optional trailing "B"/"iB". Returns 0 and sets *out, or -EINVAL.
 */
int hd_parse_size(const char *text, int64_t *out);

/* Start time of a process (clock ticks since boot, /proc/PID/stat field 22), 0 if it is gone:
 * with the pid, it names one process even after the pid is reused. */
uint64_t hd_proc_start_time(pid_t pid);

/* Monotonic clock in nanoseconds. */
uint64_t hd_now_ns(void);
/* Wall clock (CLOCK_REALTIME) in milliseconds since the epoch: timestamps stored or shown. */
int64_t hd_wall_ms(void);

/* Make a unique run id: 12 hex chars. buf must hold 13 bytes. */
void hd_random_id(char *buf, size_t len);

#endif
