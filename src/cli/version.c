/* version.c - `hedge version`: the version and what this host offers. */
#include <stdio.h>

#include "cgroup/cgroup.h"
#include "cli/cli.h"
#include "config.h"

int cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("hedge %s\ncgroups: %s\n", HEDGE_VERSION, hd_cgroup_mode_name(hd_cgroup_detect()));
    return 0;
}
