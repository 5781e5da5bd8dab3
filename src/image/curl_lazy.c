/*
 * curl_lazy.c - fills the libcurl call table of curl_lazy.h with
 * dlopen()/dlsym() on first use (see the header for why).
 */
#define HD_CURL_NO_MACROS
#include "image/curl_lazy.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#include "base/dynlib.h"
#include "base/util.h"

struct hd_curl_api hd_curl;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_error[512];

static void curl_load_once(void)
{
    char why[160], why_gnutls[160];
    void *lib = hd_dlopen("libcurl.so.4", why, sizeof(why));
    if (lib == NULL && !hd_dynlib_is_static())
        lib = hd_dlopen("libcurl-gnutls.so.4", why_gnutls, sizeof(why_gnutls));
    if (lib == NULL) {
        snprintf(load_error, sizeof(load_error), "load libcurl.so.4: %s (install libcurl4)", why);
        return;
    }
#define HD_CURL_RESOLVE(name) \
    *(void **)&hd_curl.name = dlsym(lib, #name); \
    if (*(void **)&hd_curl.name == NULL) { \
        snprintf(load_error, sizeof(load_error), "libcurl.so.4 has no %s", #name); \
        return; \
    }
    HD_CURL_FUNCTIONS(HD_CURL_RESOLVE)
#undef HD_CURL_RESOLVE
    CURLcode rc = hd_curl.curl_global_init(CURL_GLOBAL_DEFAULT);
    if (rc != CURLE_OK)
        snprintf(load_error, sizeof(load_error), "curl_global_init: %s", hd_curl.curl_easy_strerror(rc));
}

int hd_curl_load(hd_error_t *err)
{
    pthread_once(&load_once, curl_load_once);
    if (load_error[0])
        return hd_error_set(err, 0, "%s", load_error);
    return 0;
}
