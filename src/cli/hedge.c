/*
 * hedge.c - the CLI entry point: a table of verbs, one file each (crun's
 * commands[] habit). Global options come before the verb.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dynlib.h"
#include "base/log.h"
#include "cli/cli.h"

static const struct hd_command commands[] = {
    {"run", cmd_run, "run a workload in the foreground under an isolation level"},
    {"bench", cmd_bench, "measure a workload under process, container and vm and draw the answer", true},
    {"image", cmd_image, "import, pull, list, remove and prune images (image import|pull|ls|rm|prune)", true},
    {"login", cmd_login, "keep credentials for a registry (login HOST -u USER --password-stdin)", true},
    {"secret", cmd_secret, "keep secrets for workloads, encrypted at rest (secret set|ls|rm)", true},
    {"vm", cmd_vm, "show or fetch the VM guest kernel (vm kernel, vm kernel fetch)", true},
    {"deploy", cmd_deploy, "deploy a workload spec to hedged (create or upgrade)"},
    {"ps", cmd_ps, "list the workloads hedged supervises"},
    {"logs", cmd_logs, "print (or follow) a workload's output"},
    {"history", cmd_history, "list a workload's versions"},
    {"rollback", cmd_rollback, "return a workload to its previous version"},
    {"stop", cmd_stop, "stop workloads (they stay deployed)"},
    {"start", cmd_start, "start stopped workloads"},
    {"rm", cmd_rm, "stop and remove workloads"},
    {"broker", cmd_broker, "manage the MQTT broker's password file (broker passwd FILE USER)", true},
    {"move", cmd_move, "stop a workload and bundle its spec and volumes for another node", true},
    {"invoke", cmd_invoke, "call a function by its trigger topic and print the result", true},
    {"uplink", cmd_uplink, "show the store-and-forward cloud uplink (uplink status)", true},
    {"fleet", cmd_fleet, "drive a fleet of nodes through the cloud broker (fleet ls|status|deploy|rm|wait)", true},
    {"version", cmd_version, "print the version"},
};

static void print_help(FILE *out)
{
    fprintf(out,
            "usage: hedge [--state-dir DIR] [--socket PATH] COMMAND [ARGS...]\n\n"
            "hedge runs edge workloads as a process, a container or a VM.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out,
            "\nglobal options:\n"
            "  --state-dir DIR  state directory (default $HEDGE_STATE_DIR or /var/lib/hedge)\n"
            "  --socket PATH    hedged's API socket (default $HEDGE_SOCKET or /run/hedge/hedged.sock)\n"
            "\n'hedge COMMAND --help' describes a command.\n");
}

int main(int argc, char **argv)
{
    hd_log_init("hedge", NULL);
    hd_dynlib_allow_handover(argv);
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_help(stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            return cmd_version(0, NULL);
        } else if (strcmp(argv[i], "--state-dir") == 0 && i + 1 < argc) {
            setenv("HEDGE_STATE_DIR", argv[++i], 1);
        } else if (strncmp(argv[i], "--state-dir=", 12) == 0) {
            setenv("HEDGE_STATE_DIR", argv[i] + 12, 1);
        } else if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc) {
            setenv("HEDGE_SOCKET", argv[++i], 1);
        } else if (strncmp(argv[i], "--socket=", 9) == 0) {
            setenv("HEDGE_SOCKET", argv[i] + 9, 1);
        } else {
            fprintf(stderr, "hedge: unknown option %s\n", argv[i]);
            print_help(stderr);
            return HD_EXIT_USAGE;
        }
    }
    if (i >= argc) {
        print_help(stderr);
        return HD_EXIT_USAGE;
    }
    for (size_t c = 0; c < sizeof(commands) / sizeof(commands[0]); c++) {
        if (strcmp(argv[i], commands[c].name) != 0)
            continue;
        if (commands[c].dynamic) {
            hd_error_t err = NULL;
            if (hd_dynlib_handover(commands[c].name, &err) < 0)
                return cli_fail(&err);
        }
        return commands[c].handler(argc - i, argv + i);
    }
    fprintf(stderr, "hedge: unknown command '%s'\n", argv[i]);
    print_help(stderr);
    return HD_EXIT_USAGE;
}
