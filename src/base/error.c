/*
 * error.c - hd_error: errors that carry errno, an exit code and a message
 * that grows context on its way up (see error.h for the rule).
 */
#define HD_ERROR_DEFINITIONS /* the real functions, not error.h's hint to the analyzer */
#include "base/error.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int error_vset(hd_error_t *err, int exit_code, int errnum, const char *fmt, va_list ap)
{
    if (err == NULL || *err != NULL)
        return -1; /* the first error wins: it is the cause */
    struct hd_error *e = calloc(1, sizeof(*e));
    if (e == NULL)
        abort();
    e->errnum = errnum;
    e->exit_code = exit_code;
    if (vasprintf(&e->message, fmt, ap) < 0)
        abort();
    *err = e;
    return -1;
}

int hd_error_set(hd_error_t *err, int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_vset(err, HD_EXIT_HEDGE, errnum, fmt, ap);
    va_end(ap);
    return -1;
}

int hd_error_set_code(hd_error_t *err, int exit_code, int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_vset(err, exit_code, errnum, fmt, ap);
    va_end(ap);
    return -1;
}

int hd_error_prefix(hd_error_t *err, const char *fmt, ...)
{
    if (err == NULL || *err == NULL)
        return -1;
    char *prefix = NULL, *joined = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&prefix, fmt, ap) < 0)
        abort();
    va_end(ap);
    if (asprintf(&joined, "%s: %s", prefix, (*err)->message) < 0)
        abort();
    free(prefix);
    free((*err)->message);
    (*err)->message = joined;
    return -1;
}

const char *hd_error_text(hd_error_t err)
{
    static __thread char buf[4096];
    if (err == NULL)
        return "unknown error";
    if (err->errnum)
        snprintf(buf, sizeof(buf), "%s: %s", err->message, strerror(err->errnum));
    else
        snprintf(buf, sizeof(buf), "%s", err->message);
    return buf;
}

void hd_error_print(hd_error_t err, const char *program)
{
    fprintf(stderr, "%s: %s\n", program ? program : "hedge", hd_error_text(err));
}

int hd_error_exit_code(hd_error_t err)
{
    return err ? err->exit_code : 0;
}

void hd_error_free(hd_error_t *err)
{
    if (err == NULL || *err == NULL)
        return;
    free((*err)->message);
    free(*err);
    *err = NULL;
}
