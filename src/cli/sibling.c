/*
 * sibling.c - verbs served by a sibling binary: `hedge uplink status ...`
 * runs `hedge-uplink status ...`, `hedge invoke ...` runs `hedge-functions
 * invoke ...`. They need SQLite and OpenSSL; keeping them out of `hedge`
 * keeps every `hedge run` from mapping those libraries. The sibling is
 * looked up next to this binary (/proc/self/exe: the build dir, or the
 * install's bindir), then in PATH.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "base/util.h"

static int exec_sibling(const char *binary, const char *first, int argc, char **argv)
{
    char **args = hd_xcalloc((size_t)argc + 3, sizeof(char *));
    int n = 0;
    args[n++] = (char *)binary;
    if (first)
        args[n++] = (char *)first;
    for (int i = 1; i < argc; i++)
        args[n++] = argv[i];
    char self[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (len > 0) {
        self[len] = '\0';
        cleanup_free char *path = hd_xasprintf("%s/%s", dirname(self), binary);
        execv(path, args);
    }
    execvp(binary, args);
    int saved = errno;
    free(args);
    hd_error_t err = NULL;
    hd_error_set_code(&err, HD_EXIT_HEDGE, saved, "%s (installed beside hedge) cannot be run", binary);
    return cli_fail(&err);
}

int cmd_uplink_exec(int argc, char **argv)
{
    return exec_sibling("hedge-uplink", NULL, argc, argv);
}

int cmd_invoke_exec(int argc, char **argv)
{
    return exec_sibling("hedge-functions", "invoke", argc, argv);
}
