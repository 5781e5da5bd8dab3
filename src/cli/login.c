/*
 * login.c - `hedge login HOST[:PORT]`: check credentials against a registry
 * and keep them for `hedge image pull` (docs/images.md).
 *
 *   hedge login HOST[:PORT] -u USER (--password-stdin | -p PASSWORD)
 *               [--insecure-registry HOST[:PORT]]... [--ca FILE] [--authfile FILE]
 *
 * The credentials go to <state>/auth.json (or --authfile) in docker's
 * config.json "auths" format, mode 0600. --password-stdin keeps the password
 * out of `ps` and shell history; -p is there for scripts that have no stdin.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "cli/cli.h"
#include "image/image.h"

static const char usage[] = "hedge login HOST[:PORT] -u USER (--password-stdin | -p PASSWORD)\n"
                            "                   [--insecure-registry HOST[:PORT]]... [--ca FILE] [--authfile FILE]";

int cmd_login(int argc, char **argv)
{
    static const struct option options[] = {
        {"username", required_argument, NULL, 'u'}, {"password", required_argument, NULL, 'p'},
        {"password-stdin", no_argument, NULL, 's'}, {"insecure-registry", required_argument, NULL, 'k'},
        {"ca", required_argument, NULL, 'c'},       {"authfile", required_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    const char *user = NULL, *password = NULL, *auth_file = NULL;
    bool from_stdin = false;
    cleanup_strv char **insecure = NULL;
    struct hd_image_pull_options opts = {0};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "u:p:h", options, NULL)) != -1) {
        switch (c) {
        case 'u': user = optarg; break;
        case 'p': password = optarg; break;
        case 's': from_stdin = true; break;
        case 'k': hd_strv_push(&insecure, optarg); break;
        case 'c': opts.ca_file = optarg; break;
        case 'a': auth_file = optarg; break;
        case 'h': return cli_help(usage);
        default: return cli_usage_error("login", usage, "bad option");
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error("login", usage, "name one registry HOST[:PORT]");
    if (user == NULL || *user == '\0' || strchr(user, ':'))
        return cli_usage_error("login", usage, "give a user name (-u USER, no ':')");
    if ((password != NULL) == from_stdin)
        return cli_usage_error("login", usage, "give the password with exactly one of -p or --password-stdin");
    cleanup_free char *line = NULL;
    if (from_stdin) {
        size_t cap = 0;
        ssize_t n = getline(&line, &cap, stdin);
        if (n <= 0)
            return cli_usage_error("login", usage, "no password on stdin");
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        password = line;
    }
    opts.insecure = insecure;
    cleanup_free char *default_file = auth_file ? NULL : hd_registry_auth_default_file(hd_state_dir());
    hd_error_t err = NULL;
    if (hd_registry_login(auth_file ? auth_file : default_file, argv[optind], user, password, &opts, &err) < 0)
        return cli_fail(&err);
    printf("Login Succeeded\n");
    return 0;
}
