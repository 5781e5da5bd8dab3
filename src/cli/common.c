/*
 * common.c - what every verb shares to parse its options, print its help and
 * fail: the one place a verb's command line meets the user.
 *
 * Verbs with many options use getopt_long and call cli_help / cli_usage_error
 * from it; verbs whose only options are --json and --help take them with
 * cli_options. Usage errors go to stderr and exit 2, help goes to stdout and
 * exits 0, hedge's own failures exit with the error's code (125 by default).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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

int cli_help(const char *usage)
{
    printf("usage: %s\n", usage);
    return 0;
}

int cli_options(int argc, char **argv, const char *verb, const char *usage, bool *json, int *first)
{
    *json = false;
    *first = argc; /* set on every path (the analyzer cannot see that cli_usage_error returns >= 0) */
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--json") == 0)
            *json = true;
        else if (strcmp(argv[i], "--help") == 0)
            return cli_help(usage);
        else
            return cli_usage_error(verb, usage, "unknown option %s", argv[i]);
    }
    *first = i;
    return -1;
}
