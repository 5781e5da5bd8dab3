/*
 * curl_lazy.h - libcurl, loaded on first use.
 *
 * Only `hedge image pull` (and, later, hedged's pull on deploy) speaks HTTP to
 * registries; libcurl and its TLS, IDN, SSH and LDAP libraries must not load in
 * every `hedge run`. pull.c and registry.c call libcurl through this table,
 * filled by hd_curl_load() with dlopen() (the archive_lazy.h pattern): the
 * table's types come from curl.h itself, so the compiler still checks calls.
 * curl.h's type-checking macros are turned off (CURL_DISABLE_TYPECHECK): they
 * wrap curl_easy_setopt in a macro that would hide the table.
 */
#ifndef HEDGE_CURL_LAZY_H
#define HEDGE_CURL_LAZY_H

#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>

#include "base/error.h"

#define HD_CURL_FUNCTIONS(X) \
    X(curl_easy_cleanup) \
    X(curl_easy_escape) \
    X(curl_easy_getinfo) \
    X(curl_easy_init) \
    X(curl_easy_perform) \
    X(curl_easy_setopt) \
    X(curl_easy_strerror) \
    X(curl_free) \
    X(curl_global_init) \
    X(curl_slist_append) \
    X(curl_slist_free_all)

struct hd_curl_api {
#define HD_CURL_MEMBER(name) __typeof__(&name) name;
    HD_CURL_FUNCTIONS(HD_CURL_MEMBER)
#undef HD_CURL_MEMBER
};

/* Load libcurl.so.4 (once per process) and initialise it. 0, or -1 with err naming what is missing. */
int hd_curl_load(hd_error_t *err);
/* The loaded table; hd_curl_load() must have succeeded before. */
extern struct hd_curl_api hd_curl;

#ifndef HD_CURL_NO_MACROS /* curl_lazy.c sees the real names */
#undef curl_easy_getinfo  /* curl.h's three-argument checks */
#undef curl_easy_setopt
#define curl_easy_cleanup (hd_curl.curl_easy_cleanup)
#define curl_easy_escape (hd_curl.curl_easy_escape)
#define curl_free (hd_curl.curl_free)
#define curl_easy_getinfo (hd_curl.curl_easy_getinfo)
#define curl_easy_init (hd_curl.curl_easy_init)
#define curl_easy_perform (hd_curl.curl_easy_perform)
#define curl_easy_setopt (hd_curl.curl_easy_setopt)
#define curl_easy_strerror (hd_curl.curl_easy_strerror)
#define curl_global_init (hd_curl.curl_global_init)
#define curl_slist_append (hd_curl.curl_slist_append)
#define curl_slist_free_all (hd_curl.curl_slist_free_all)
#endif

#endif
