/* net.c - STUB: to be replaced by workload networking. */
#include "net.h"
#include <errno.h>
int hd_net_setup(const char *s, const char *id, enum hd_net_mode m, pid_t p, struct hd_net **o, hd_error_t *err)
{ (void)s; (void)id; (void)m; (void)p; *o = NULL; (void)err; return 0; }
int hd_net_setup_tap(const char *s, const char *id, struct hd_net **o, const char **t, const char **c, const char **g, hd_error_t *err)
{ (void)s; (void)id; (void)o; (void)t; (void)c; (void)g; return hd_error_set(err, ENOSYS, "tap networking"); }
int hd_net_teardown(struct hd_net *n, hd_error_t *err) { (void)n; (void)err; return 0; }
