/* start.c - `hedge start NAME...`: start stopped workloads again (resets the restart count) (hedged API: POST /v1/workloads/NAME/start). */
#include "cli/cli.h"
#include "cli/client.h"

int cmd_start(int argc, char **argv)
{
    return hd_client_workload_verb(argc, argv, "POST", "/start", "hedge start [--json] NAME...");
}
