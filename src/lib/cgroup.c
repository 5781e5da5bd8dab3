/* cgroup.c - STUB: to be replaced by the cgroup v1/v2 implementation. */
#include "cgroup.h"
#include "backend.h"
#include <errno.h>
#include <stdlib.h>

enum hd_cgroup_mode hd_cgroup_detect(void) { return HD_CGROUP_V2; }
const char *hd_cgroup_mode_name(enum hd_cgroup_mode m) { return m == HD_CGROUP_V1 ? "v1" : m == HD_CGROUP_HYBRID ? "hybrid" : "v2"; }
int hd_cgroup_create(const char *name, const struct hd_resources *res, struct hd_cgroup **out, hd_error_t *err)
{ (void)name; (void)res; *out = NULL; (void)err; return 0; }
int hd_cgroup_enter(struct hd_cgroup *cg, pid_t pid, hd_error_t *err) { (void)cg; (void)pid; (void)err; return 0; }
int hd_cgroup_fd(struct hd_cgroup *cg) { (void)cg; return -1; }
bool hd_cgroup_oom_killed(struct hd_cgroup *cg) { (void)cg; return false; }
int hd_cgroup_stats(struct hd_cgroup *cg, struct hd_stats *s, hd_error_t *err) { (void)cg; (void)s; return hd_error_set(err, ENOSYS, "cgroup stats"); }
int hd_cgroup_kill_all(struct hd_cgroup *cg, hd_error_t *err) { (void)cg; (void)err; return 0; }
int hd_cgroup_destroy(struct hd_cgroup *cg, hd_error_t *err) { (void)cg; (void)err; return 0; }
const char *hd_cgroup_path(struct hd_cgroup *cg) { (void)cg; return ""; }
