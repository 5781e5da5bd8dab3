/*
 * crypto_lazy.c - fills the libcrypto call table of crypto_lazy.h with
 * dlopen()/dlsym() on first use (see the header for why).
 */
#include "secret/crypto_lazy.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#include "base/dynlib.h"

struct hd_crypto_api hd_crypto;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_error[512];

static void crypto_load_once(void)
{
    char why[160];
    void *lib = hd_dlopen("libcrypto.so.3", why, sizeof(why));
    if (lib == NULL) {
        snprintf(load_error, sizeof(load_error), "load libcrypto.so.3: %s (install libssl3)", why);
        return;
    }
#define HD_CRYPTO_RESOLVE(name) \
    *(void **)&hd_crypto.name = dlsym(lib, #name); \
    if (*(void **)&hd_crypto.name == NULL) { \
        snprintf(load_error, sizeof(load_error), "libcrypto.so.3 has no %s", #name); \
        return; \
    }
    HD_CRYPTO_FUNCTIONS(HD_CRYPTO_RESOLVE)
#undef HD_CRYPTO_RESOLVE
}

int hd_crypto_load(hd_error_t *err)
{
    pthread_once(&load_once, crypto_load_once);
    if (load_error[0])
        return hd_error_set(err, 0, "%s", load_error);
    return 0;
}
