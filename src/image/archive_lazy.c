/*
 * archive_lazy.c - fills the libarchive call table of archive_lazy.h with
 * dlopen()/dlsym() on first use (see the header for why).
 */
#define HD_ARCHIVE_NO_MACROS
#include "image/archive_lazy.h"

#include <dlfcn.h>
#include <pthread.h>

#include "base/dynlib.h"
#include "base/util.h"

struct hd_archive_api hd_archive;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_error[512];

static void archive_load_once(void)
{
    char why[160];
    void *lib = hd_dlopen("libarchive.so.13", why, sizeof(why));
    if (lib == NULL) {
        snprintf(load_error, sizeof(load_error), "load libarchive.so.13: %s (install libarchive13)", why);
        return;
    }
#define HD_ARCHIVE_RESOLVE(name) \
    *(void **)&hd_archive.name = dlsym(lib, #name); \
    if (*(void **)&hd_archive.name == NULL) { \
        snprintf(load_error, sizeof(load_error), "libarchive.so.13 has no %s", #name); \
        return; \
    }
    HD_ARCHIVE_FUNCTIONS(HD_ARCHIVE_RESOLVE)
#undef HD_ARCHIVE_RESOLVE
}

int hd_archive_load(hd_error_t *err)
{
    pthread_once(&load_once, archive_load_once);
    if (load_error[0])
        return hd_error_set(err, 0, "%s", load_error);
    return 0;
}
