/*
 * dynlib.c - hd_dlopen() and the static CLI's hand-over to its dynamically
 * linked twin (see dynlib.h for why).
 *
 * A static program is told apart at run time, without a build flag: the
 * kernel passes AT_BASE, the address of the program interpreter, only to a
 * dynamically linked program. The hand-over is an execv() of hedge-full with
 * hedge's own argv and environment: the same command, run from the start by
 * a program that can load libraries. HEDGE_DYNLIB_HANDOVER=1 marks the
 * environment, so a twin that somehow is static itself cannot loop.
 */
#include "base/dynlib.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>

#include "base/util.h"

static char **handover_argv;

bool hd_dynlib_is_static(void)
{
    return getauxval(AT_BASE) == 0;
}

void hd_dynlib_allow_handover(char **argv)
{
    if (getenv("HEDGE_DYNLIB_HANDOVER") == NULL)
        handover_argv = argv;
}

void hd_dynlib_end_handover(void)
{
    handover_argv = NULL;
}

int hd_dynlib_handover(const char *why, hd_error_t *err)
{
    if (!hd_dynlib_is_static())
        return 0;
    if (handover_argv == NULL)
        return hd_error_set(err, ELIBACC, "%s: this hedge is linked statically and cannot load it at this point", why);
    cleanup_free char *twin = hd_find_program(HD_DYNLIB_TWIN, err);
    if (twin == NULL)
        return hd_error_prefix(err, "%s: this hedge is linked statically and hands such commands over", why);
    setenv("HEDGE_DYNLIB_HANDOVER", "1", 1);
    fflush(NULL);
    execv(twin, handover_argv);
    int e = errno;
    unsetenv("HEDGE_DYNLIB_HANDOVER");
    return hd_error_set(err, e, "%s: hand over to %s", why, twin);
}

void *hd_dlopen(const char *soname, char *why, size_t why_len)
{
    if (hd_dynlib_is_static()) {
        hd_error_t err = NULL;
        hd_dynlib_handover(soname, &err);
        snprintf(why, why_len, "%s", err ? hd_error_text(err) : soname);
        hd_error_free(&err);
        return NULL;
    }
    void *lib = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL)
        snprintf(why, why_len, "%s", dlerror());
    return lib;
}
