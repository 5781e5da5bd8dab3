/*
 * log.h - the one log of every hedge program and library.
 *
 * A line reads "PROGRAM: COMPONENT: message": main() names the program once
 * (hd_log_init), the caller of hd_log names its component ("broker",
 * "uplink", "functions", "supervisor", ...). A library never prints a program
 * name of its own, so the same broker code says "hedge-broker: ..." when run
 * alone and "hedged: broker: ..." inside hedged. The program's own component
 * (the broker in hedge-broker) is left out of its lines, which keeps the
 * standalone programs' messages as short as they always were.
 *
 * Lines go to stderr (systemd and the tests read it) or to a file, where each
 * line starts with a UTC timestamp. A line identical to the one before it
 * (same level, component and text) is counted, not written; the next
 * different line, or the same one once 10 s passed since the first
 * suppressed copy, is preceded by "PROGRAM: last message repeated N times".
 * Not thread-safe: hedge programs log from one thread.
 */
#ifndef HEDGE_BASE_LOG_H
#define HEDGE_BASE_LOG_H

#include <stdbool.h>

#include "base/error.h"

enum hd_log_level {
    HD_LOG_ERROR,
    HD_LOG_WARN,
    HD_LOG_INFO, /* the default: start-up, link changes, stops */
    HD_LOG_DEBUG,
};

/* Name the program (its lines start "program: ") and its own component (left out of its lines; NULL: none). */
void hd_log_init(const char *program, const char *own_component);
/* Lines above level are dropped. */
void hd_log_set_level(enum hd_log_level level);
enum hd_log_level hd_log_get_level(void);
/* "error", "warn" (or "warning"), "info", "debug"; -1 with err naming the value otherwise. */
int hd_log_parse_level(const char *name, enum hd_log_level *out, hd_error_t *err);
/* hd_log_parse_level + hd_log_set_level: what --log-level does. */
int hd_log_set_level_name(const char *name, hd_error_t *err);
/* Append to path instead of stderr (NULL: back to stderr). */
int hd_log_open(const char *path, hd_error_t *err);
/* Write to fd (not owned; -1: back to stderr). For tests and programs that redirect. */
void hd_log_set_fd(int fd);
bool hd_log_enabled(enum hd_log_level level);

/* Log one line; component may be NULL. No trailing newline in fmt. */
void hd_log(enum hd_log_level level, const char *component, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Log *err's text as one line and free it (*err becomes NULL): what a clean-up does with a failure it can only
 * report. */
void hd_log_error(enum hd_log_level level, const char *component, hd_error_t *err);
/* Write the pending "last message repeated" line, if any (at exit). */
void hd_log_flush(void);

#endif
