/* image.c - STUB: to be replaced by the image store. */
#include "image.h"
#include "util.h"
#include <errno.h>
#include <stdlib.h>

void hd_image_config_free(struct hd_image_config *c) { (void)c; }
const char *hd_state_dir(void) { const char *s = getenv("HEDGE_STATE_DIR"); return s && *s ? s : "/var/lib/hedge"; }
int hd_image_import(const char *s, const char *t, const char *n, struct hd_image_config **o, hd_error_t *err)
{ (void)s; (void)t; (void)n; (void)o; return hd_error_set(err, ENOSYS, "image import"); }
int hd_image_lookup(const char *s, const char *r, struct hd_image_config **o, hd_error_t *err)
{ (void)s; (void)o; return hd_error_set(err, 0, "image %s: not found", r); }
int hd_image_list(const char *s, struct hd_image_config ***o, hd_error_t *err) { (void)s; *o = hd_xcalloc(1, sizeof(void *)); (void)err; return 0; }
void hd_image_list_free(struct hd_image_config **l) { free(l); }
int hd_image_remove(const char *s, const char *r, hd_error_t *err) { (void)s; return hd_error_set(err, 0, "image %s: not found", r); }
