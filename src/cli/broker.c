/*
 * broker.c - `hedge broker`: manage the embedded MQTT broker's files.
 *
 *   hedge broker passwd FILE USER    add or replace USER (password on stdin)
 *
 * The password-file code is the broker library's (hd_broker_passwd_stdin, a
 * salted PBKDF2-SHA512 hash, the file written atomically with mode 0600), the
 * same that `hedge-broker passwd` runs, so the two never disagree on format.
 * Point hedged's `broker.password_file` at the file; once it names a user,
 * anonymous clients are refused.
 */
#include <stdio.h>
#include <string.h>

#include "broker/broker.h"
#include "cli/cli.h"

static const char broker_usage[] = "hedge broker passwd FILE USER   (reads the password from stdin)";

int cmd_broker(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        return cli_help(broker_usage);
    }
    if (argc < 2)
        return cli_usage_error("broker", broker_usage, "missing subcommand");
    if (strcmp(argv[1], "passwd") != 0)
        return cli_usage_error("broker", broker_usage, "unknown subcommand '%s'", argv[1]);
    if (argc != 4)
        return cli_usage_error("broker", broker_usage, "passwd takes FILE and USER");
    hd_error_t err = NULL;
    if (hd_broker_passwd_stdin(argv[2], argv[3], &err) < 0)
        return cli_fail(&err);
    return 0;
}
