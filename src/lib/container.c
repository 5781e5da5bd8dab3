/* container.c - STUB: to be replaced by the container backend. */
#include "backend.h"
#include <errno.h>
static int stub_prepare(struct hd_workload *w, hd_error_t *err) { (void)w; return hd_error_set(err, ENOSYS, "container isolation is not built yet"); }
const struct hd_backend hd_backend_container = { .name = "container", .prepare = stub_prepare };
