/*
 * error.h - the one error convention of hedge.
 *
 * THE RULE (crun's libcrun_error_t):
 *   A fallible function takes `hd_error_t *err` as its last parameter, returns
 *   a negative value on failure and fills *err with {errno, exit code,
 *   message}. Callers add context as the error travels up with
 *   hd_error_prefix(), so a person reads "run filter: mount /proc: Permission
 *   denied", never "error -1". Whoever finally handles the error prints it
 *   (hd_error_print) and frees it; nothing below that level prints.
 *   The first error set wins (a later hd_error_set on a filled err is a no-op),
 *   so a clean-up step cannot hide the cause.
 *
 * The only other shapes allowed, each for a reason:
 *   - Predicates return bool (hd_cgroup_oom_killed, broker_topic_filter_valid).
 *   - Tiny syscall wrappers documented as "0 or -1 with errno" (hd_write_all,
 *     hd_read_exact) and static helpers that return 0 or -errno to their one
 *     caller, which turns the errno into an hd_error.
 *   - Text-to-value parsers that a caller names (hd_parse_size,
 *     hd_isolation_parse, hd_cap_parse) return 0 or a negative value and no
 *     message: only the caller knows the field path the message must name.
 *   - Code between fork and exec, which must not allocate, reports through
 *     base/child.h (hd_child_fail) or returns -errno (hd_cgroup_entry_enter);
 *     the parent turns the report into an hd_error (base/spawn.h).
 *   - Protocol handlers return the protocol's own reason codes (MQTT).
 *
 * Exit codes are docker's, named here (never write the numbers): the exit
 * code rides with the error so the CLI exits with HD_EXIT_HEDGE (125, the
 * default) for hedge's own failures, HD_EXIT_CANNOT_INVOKE (126) when the
 * command cannot be invoked, HD_EXIT_NOT_FOUND (127) when it is not found,
 * HD_EXIT_USAGE (2) for usage errors, and HD_EXIT_SIGNAL(n) (128+n) for a
 * workload killed by signal n.
 */
#ifndef HEDGE_ERROR_H
#define HEDGE_ERROR_H

#include <stdarg.h>
#include <stdio.h>

enum {
    HD_EXIT_OK = 0,
    HD_EXIT_USAGE = 2,
    HD_EXIT_HEDGE = 125,
    HD_EXIT_CANNOT_INVOKE = 126,
    HD_EXIT_NOT_FOUND = 127,
    HD_EXIT_SIGNAL_BASE = 128,
};
/* Docker's code for a workload killed by signal sig: 128+N (137 for SIGKILL). */
#define HD_EXIT_SIGNAL(sig) (HD_EXIT_SIGNAL_BASE + (sig))

struct hd_error {
    int errnum;    /* errno value or 0 */
    int exit_code; /* exit code the CLI should use, HD_EXIT_HEDGE by default */
    char *message; /* full human message, without the strerror suffix */
};
typedef struct hd_error *hd_error_t;

/* Fill *err (if it is empty) and return -1. errnum 0 means "no errno". */
int hd_error_set(hd_error_t *err, int errnum, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Same, with an explicit exit code (126, 127, 2, ...). */
int hd_error_set_code(hd_error_t *err, int exit_code, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Shorthand for hd_error_set(err, errno, ...): for failed system calls. */
#define hd_error_sys(err, ...) hd_error_set((err), errno, __VA_ARGS__)
/* Add "context: " in front of the message. Returns -1 for tail calls. */
int hd_error_prefix(hd_error_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The text a person reads: "message: strerror(errnum)". Static until next call per thread. */
const char *hd_error_text(hd_error_t err);
/* Print "hedge: <text>" to stderr. */
void hd_error_print(hd_error_t err, const char *program);
int hd_error_exit_code(hd_error_t err);
void hd_error_free(hd_error_t *err);

#if defined(__clang_analyzer__) && !defined(HD_ERROR_DEFINITIONS)
/* The static analyzer (make analyze) sees one file at a time, so it cannot know that these always return -1
 * and follows impossible paths where `return hd_error_set(...)` succeeds. Tell it; error.c is exempt. */
#define hd_error_set(...) (hd_error_set(__VA_ARGS__), -1)
#define hd_error_set_code(...) (hd_error_set_code(__VA_ARGS__), -1)
#define hd_error_prefix(...) (hd_error_prefix(__VA_ARGS__), -1)
#endif

#endif
