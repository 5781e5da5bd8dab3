/*
 * bundle.h - workload motion: a bundle is one tar holding a workload's spec
 * and the data of its writable mounts, written by `hedge move` on one node
 * and started by `hedge deploy --bundle` on another.
 */
#ifndef HEDGE_BUNDLE_H
#define HEDGE_BUNDLE_H

#include <jansson.h>

#include "base/error.h"

/* Write spec (a workload spec object) and its writable mounts' source dirs to path. */
int hd_bundle_write(const char *path, json_t *spec, hd_error_t *err);
/*
 * Read a bundle: extract each volume to volumes_base/<name>/<mount index> (which must
 * not exist yet) and return the spec with those mounts' sources pointing there, and
 * the list of directories made (for hd_bundle_remove_volumes if the deploy fails).
 */
int hd_bundle_read(const char *path, const char *volumes_base, json_t **spec, char ***created, hd_error_t *err);
/* Remove the volume directories hd_bundle_read made, and free the list. */
void hd_bundle_remove_volumes(char **dirs);

#endif
