/* rm.c - `hedge rm NAME...`: stop and remove workloads with their history and logs (hedged API: DELETE /v1/workloads/NAME). */
#include "cli/cli.h"
#include "cli/client.h"

int cmd_rm(int argc, char **argv)
{
    return hd_client_workload_verb(argc, argv, "DELETE", "", "hedge rm [--json] NAME...");
}
