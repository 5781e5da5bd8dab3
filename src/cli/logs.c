/*
 * logs.c - `hedge logs [-f] [--tail N] NAME`: the workload's stdout and
 * stderr as its monitor captured them (rotated file first). -f keeps the
 * connection open and prints new output as hedged streams it.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "base/util.h"

static const char usage[] = "hedge logs [-f|--follow] [-n|--tail N] NAME";

int cmd_logs(int argc, char **argv)
{
    static const struct option options[] = {
        {"follow", no_argument, NULL, 'f'},
        {"tail", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool follow = false;
    const char *tail = NULL;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "+fn:", options, NULL)) != -1) {
        switch (opt) {
        case 'f': follow = true; break;
        case 'n': {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (end == optarg || *end || n < 0)
                return cli_usage_error("logs", usage, "--tail: \"%s\" is not a number of lines", optarg);
            tail = optarg;
            break;
        }
        case 'h': return cli_help(usage);
        default: return cli_usage_error("logs", usage, "unknown option");
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("logs", usage, "name one workload");
    cleanup_free char *name = hd_client_escape(argv[optind]);
    cleanup_free char *path = hd_xasprintf("/v1/workloads/%s/logs?follow=%d%s%s", name, follow ? 1 : 0,
                                           tail ? "&tail=" : "", tail ? tail : "");
    hd_error_t err = NULL;
    if (hd_client_stream(path, STDOUT_FILENO, &err) < 0)
        return cli_fail(&err);
    return 0;
}
