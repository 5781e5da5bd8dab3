/*
 * cli.h - what every CLI verb file shares: the verb signature and the
 * dispatch table entry. A verb gets argv with argv[0] = the verb name and
 * returns the process exit code (0 ok, 2 usage, 125 hedge failure, or the
 * workload's code for `run`).
 */
#ifndef HEDGE_CLI_H
#define HEDGE_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "base/error.h"

struct hd_command {
    const char *name;
    int (*handler)(int argc, char **argv);
    const char *summary;
    /* Loads shared libraries (OpenSSL, SQLite, libcurl, libarchive): the static `hedge` hands the
     * command over to hedge-full at once (base/dynlib.h). run, the API clients and version do not. */
    bool dynamic;
};

int cmd_run(int argc, char **argv);
int cmd_image(int argc, char **argv);
int cmd_login(int argc, char **argv);
int cmd_secret(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_version(int argc, char **argv);
/* These reach SQLite (the spool) and OpenSSL (MQTT over TLS) only through dlopen. */
int cmd_uplink(int argc, char **argv);
int cmd_invoke(int argc, char **argv);
int cmd_fleet(int argc, char **argv);
int cmd_vm(int argc, char **argv);
int cmd_broker(int argc, char **argv);
/* `hedge vm template ...` (vm_template.c), dispatched by cmd_vm; argv[0] is "template". */
int cmd_vm_template(int argc, char **argv);
/* Verbs that talk to hedged (client.c does the HTTP). */
int cmd_deploy(int argc, char **argv);
int cmd_ps(int argc, char **argv);
int cmd_logs(int argc, char **argv);
int cmd_history(int argc, char **argv);
int cmd_rollback(int argc, char **argv);
int cmd_stop(int argc, char **argv);
int cmd_start(int argc, char **argv);
int cmd_rm(int argc, char **argv);
int cmd_move(int argc, char **argv);

/* common.c: */
/* Print an error, free it and return its exit code. */
int cli_fail(hd_error_t *err);
/* Print "hedge VERB: <message>" and the usage to stderr and return 2. */
int cli_usage_error(const char *verb, const char *usage, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Print "usage: <usage>" to stdout (the answer to --help) and return 0. */
int cli_help(const char *usage);
/*
 * The options of verbs that take only --json and --help, before the operands:
 * -1 to go on (*first: the first operand), else the exit code to return
 * (0 after --help, 2 after an unknown option).
 */
int cli_options(int argc, char **argv, const char *verb, const char *usage, bool *json, int *first);

#endif
