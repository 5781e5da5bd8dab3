/* stop.c - `hedge stop NAME...`: stop workloads: SIGTERM, a grace period, then SIGKILL; they stay deployed (hedged API: POST /v1/workloads/NAME/stop). */
#include "cli/cli.h"
#include "cli/client.h"

int cmd_stop(int argc, char **argv)
{
    return hd_client_workload_verb(argc, argv, "POST", "/stop", "hedge stop [--json] NAME...");
}
