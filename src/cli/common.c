/*
 * common.c - what every verb uses to fail: shared by `hedge` and the
 * standalone binaries that serve some verbs (hedge-uplink serves `uplink
 * status`, hedge-functions serves `invoke`; see sibling.c).
 */
#include <stdarg.h>
#include <stdio.h>

#include "cli/cli.h"

int cli_fail(hd_error_t *err)
{
    int code = hd_error_exit_code(*err);
    hd_error_print(*err, "hedge");
    hd_error_free(err);
    return code ? code : HD_EXIT_HEDGE;
}

int cli_usage_error(const char *verb, const char *usage, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "hedge %s: ", verb);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nusage: %s\n", usage);
    return HD_EXIT_USAGE;
}
