/*
 * dynlib.h - loading a shared library on first use, in both of hedge's links.
 *
 * hedge keeps OpenSSL, SQLite, libcurl, libarchive, libmnl and libnftables out
 * of its start path: each *_lazy.c file loads its library with hd_dlopen() the
 * first time it is needed. The `hedge` CLI is linked statically (a bare
 * process starts without a dynamic loader, issue 18 part 3), and a static
 * program cannot load a shared library safely: the library would bring a
 * second C library of another version. So in a static program hd_dlopen()
 * does not load: it hands the whole command over to `hedge-full`, the same
 * CLI linked dynamically, by exec with the original arguments, as long as the
 * command has done nothing yet (hd_dynlib_allow_handover). Once it has
 * (hd_dynlib_end_handover: a workload's cgroup exists), a library that was
 * not asked for in time is an error that names it, never a half-done command
 * run twice. Dynamically linked programs (hedged, hedge-full, the ASan build's
 * hedge) just call dlopen().
 */
#ifndef HEDGE_DYNLIB_H
#define HEDGE_DYNLIB_H

#include <stdbool.h>
#include <stddef.h>

#include "base/error.h"

/* The dynamically linked twin of the static CLI: beside it in the build tree, in libexecdir installed. */
#define HD_DYNLIB_TWIN "hedge-full"

/* True when this program was linked statically (it has no program interpreter). */
bool hd_dynlib_is_static(void);

/* dlopen(soname, RTLD_NOW | RTLD_LOCAL); in a static program, the hand-over to hedge-full (which does
 * not return) or, past the point of no return, NULL with the reason. On NULL, why holds the reason. */
void *hd_dlopen(const char *soname, char *why, size_t why_len);

/* The static CLI's main() keeps its arguments for a hand-over; the caller's argv must live on. */
void hd_dynlib_allow_handover(char **argv);
/* From here on the command has effects: no more hand-overs. */
void hd_dynlib_end_handover(void);
/* Hand the command over to hedge-full now (static program, hand-over still allowed); returns -1 with the
 * reason in err when it cannot, 0 in a dynamic program (nothing to do). */
int hd_dynlib_handover(const char *why, hd_error_t *err);

#endif
