/*
 * log.c - the one log (see log.h): level filter, program and component
 * prefix, stderr or a file, and the "last message repeated" rate limit.
 *
 * Each line is formatted into one buffer and written with one write(2), so
 * lines from hedged and the monitors it forks never interleave mid-line in a
 * shared stderr. The repeat check compares the formatted line with the last
 * one written: cheap, and a flood of one identical error (a peer that
 * reconnects in a tight loop, a failing commit) costs a counter, not a write.
 * One mutex guards the state: hedge-functions' invoker logs from its threads.
 */
#include "base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/util.h"

#define LOG_LINE_MAX 4096
#define LOG_REPEAT_NS (10ull * 1000000000ull) /* a repeat run is reported at least this often */

static struct {
    char program[64];
    char own_component[32];
    enum hd_log_level level;
    int fd; /* -1: stderr */
    bool fd_owned;
    bool timestamps;
    char last[LOG_LINE_MAX]; /* the last line written, without prefix and timestamp */
    size_t last_len;
    unsigned long repeats;
    uint64_t repeat_start_ns;
} log_state = {.level = HD_LOG_INFO, .fd = -1};
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void hd_log_init(const char *program, const char *own_component)
{
    snprintf(log_state.program, sizeof(log_state.program), "%s", program ? program : "");
    snprintf(log_state.own_component, sizeof(log_state.own_component), "%s", own_component ? own_component : "");
    static bool registered;
    if (!registered)
        atexit(hd_log_flush); /* a run of repeats still pending at exit is reported */
    registered = true;
}

void hd_log_set_level(enum hd_log_level level)
{
    log_state.level = level;
}

enum hd_log_level hd_log_get_level(void)
{
    return log_state.level;
}

bool hd_log_enabled(enum hd_log_level level)
{
    return level <= log_state.level;
}

int hd_log_parse_level(const char *name, enum hd_log_level *out, hd_error_t *err)
{
    static const struct {
        const char *name;
        enum hd_log_level level;
    } names[] = {{"error", HD_LOG_ERROR},
                 {"warn", HD_LOG_WARN},
                 {"warning", HD_LOG_WARN},
                 {"info", HD_LOG_INFO},
                 {"debug", HD_LOG_DEBUG}};
    for (size_t i = 0; name && i < ARRAY_SIZE(names); i++)
        if (strcmp(name, names[i].name) == 0) {
            *out = names[i].level;
            return 0;
        }
    return hd_error_set(err, EINVAL, "log level \"%s\": expected error, warn, info or debug", name ? name : "");
}

int hd_log_set_level_name(const char *name, hd_error_t *err)
{
    enum hd_log_level level;
    if (hd_log_parse_level(name, &level, err) < 0)
        return -1;
    hd_log_set_level(level);
    return 0;
}

static void log_close_fd(void)
{
    if (log_state.fd_owned && log_state.fd >= 0)
        close(log_state.fd);
    log_state.fd = -1;
    log_state.fd_owned = false;
    log_state.timestamps = false;
}

int hd_log_open(const char *path, hd_error_t *err)
{
    hd_log_flush();
    if (path == NULL) {
        log_close_fd();
        return 0;
    }
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return hd_error_sys(err, "log file %s", path);
    log_close_fd();
    log_state.fd = fd;
    log_state.fd_owned = true;
    log_state.timestamps = true;
    return 0;
}

void hd_log_set_fd(int fd)
{
    hd_log_flush();
    log_close_fd();
    log_state.fd = fd;
}

/* Write prefix + body as one line. */
static void log_write(const char *body, size_t body_len)
{
    char line[LOG_LINE_MAX + 160];
    size_t n = 0;
    if (log_state.timestamps) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        n += strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
        n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ ", ts.tv_nsec / 1000000);
    }
    if (log_state.program[0])
        n += (size_t)snprintf(line + n, sizeof(line) - n, "%s: ", log_state.program);
    if (body_len > sizeof(line) - n - 1)
        body_len = sizeof(line) - n - 1;
    memcpy(line + n, body, body_len);
    n += body_len;
    line[n++] = '\n';
    int fd = log_state.fd >= 0 ? log_state.fd : STDERR_FILENO;
    for (size_t off = 0; off < n;) {
        ssize_t w = write(fd, line + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        off += (size_t)w;
    }
}

static void log_report_repeats(void)
{
    if (log_state.repeats == 0)
        return;
    char body[64];
    int len = snprintf(body, sizeof(body), "last message repeated %lu time%s", log_state.repeats,
                       log_state.repeats == 1 ? "" : "s");
    log_state.repeats = 0;
    log_write(body, (size_t)len);
}

void hd_log_error(enum hd_log_level level, const char *component, hd_error_t *err)
{
    hd_log(level, component, "%s", hd_error_text(*err));
    hd_error_free(err);
}

void hd_log_flush(void)
{
    pthread_mutex_lock(&log_lock);
    log_report_repeats();
    pthread_mutex_unlock(&log_lock);
}

void hd_log(enum hd_log_level level, const char *component, const char *fmt, ...)
{
    if (level > log_state.level)
        return;
    char body[LOG_LINE_MAX];
    size_t n = 0;
    if (component && component[0] && strcmp(component, log_state.own_component) != 0)
        n = (size_t)snprintf(body, sizeof(body), "%s: ", component);
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(body + n, sizeof(body) - n, fmt, ap);
    va_end(ap);
    if (len < 0)
        return;
    n += (size_t)len;
    if (n >= sizeof(body))
        n = sizeof(body) - 1;
    /* the level is part of the identity of a line: an error never hides behind an equal warning */
    char tag = (char)('0' + level);
    uint64_t now = hd_now_ns();
    pthread_mutex_lock(&log_lock);
    if (n + 1 == log_state.last_len && log_state.last[0] == tag && memcmp(log_state.last + 1, body, n) == 0) {
        if (log_state.repeats == 0)
            log_state.repeat_start_ns = now;
        log_state.repeats++;
        if (now - log_state.repeat_start_ns < LOG_REPEAT_NS) {
            pthread_mutex_unlock(&log_lock);
            return;
        }
        log_report_repeats(); /* a long run: say so now and then, and show the line again */
    } else {
        log_report_repeats();
        log_state.last[0] = tag;
        memcpy(log_state.last + 1, body, n < sizeof(log_state.last) - 1 ? n : sizeof(log_state.last) - 1);
        log_state.last_len = n + 1 < sizeof(log_state.last) ? n + 1 : sizeof(log_state.last);
    }
    log_write(body, n);
    pthread_mutex_unlock(&log_lock);
}
