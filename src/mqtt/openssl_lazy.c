/*
 * openssl_lazy.c - fills the OpenSSL call table of openssl_lazy.h with
 * dlopen()/dlsym() on first use (see the header for why).
 */
#define HD_OPENSSL_NO_MACROS
#include "mqtt/openssl_lazy.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#include "base/dynlib.h"

struct hd_openssl_api hd_openssl;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_error[512];

static void openssl_load_once(void)
{
    /* libssl.so.3 brings libcrypto.so.3 in as its dependency; symbols come from either. */
    char why[160];
    void *lib = hd_dlopen("libssl.so.3", why, sizeof(why));
    if (lib == NULL) {
        snprintf(load_error, sizeof(load_error), "load libssl.so.3: %s (install libssl3)", why);
        return;
    }
#define HD_OPENSSL_RESOLVE(name) \
    *(void **)&hd_openssl.name = dlsym(lib, #name); \
    if (*(void **)&hd_openssl.name == NULL) { \
        snprintf(load_error, sizeof(load_error), "libssl.so.3 has no %s", #name); \
        return; \
    }
    HD_OPENSSL_FUNCTIONS(HD_OPENSSL_RESOLVE)
#undef HD_OPENSSL_RESOLVE
}

int hd_openssl_load(hd_error_t *err)
{
    pthread_once(&load_once, openssl_load_once);
    if (load_error[0])
        return hd_error_set(err, 0, "%s", load_error);
    return 0;
}
