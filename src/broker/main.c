/*
 * main.c - `hedge-broker`: the broker library run on its own, for benchmarks,
 * tests and nodes that want only messaging. hedged embeds the same library.
 *
 *   hedge-broker [--listen HOST:PORT|ws://HOST:PORT/PATH|wss://...]... [--listen-tls HOST:PORT]...
 *                [--config FILE]
 *                [--state-dir DIR] [--password-file FILE] [--acl-file FILE]
 *                [--allow-anonymous true|false] [--port-file FILE] [--check]
 *   hedge-broker passwd FILE USER      (password read from stdin)
 *
 * Command-line flags override the config file. --port-file writes the bound
 * port of the first plain listener (useful with port 0). SIGINT/SIGTERM stop
 * the broker cleanly (stores flushed): they arrive through the loop's signalfd.
 * --log-level sets how much the broker logs (default info).
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "base/loop.h"
#include "base/privdrop.h"
#include "broker/broker.h"
#include "config.h"
#include "base/util.h"

static void on_signal(struct hd_loop *loop, int signo, void *data)
{
    hd_loop_quit(loop);
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: hedge-broker [--listen HOST:PORT|ws://HOST:PORT/PATH|wss://HOST:PORT/PATH]...\n"
            "                    [--listen-tls HOST:PORT]... [--config FILE]\n"
            "                    [--state-dir DIR] [--password-file FILE] [--acl-file FILE]\n"
            "                    [--allow-anonymous true|false] [--port-file FILE] [--check]\n"
            "                    [--log-level error|warn|info|debug] [--user NAME]\n"
            "       hedge-broker passwd FILE USER   (reads the password from stdin)\n"
            "       hedge-broker --version\n");
}

static int cmd_passwd(int argc, char **argv)
{
    if (argc != 4) {
        usage(stderr);
        return HD_EXIT_USAGE;
    }
    hd_error_t err = NULL;
    if (hd_broker_passwd_stdin(argv[2], argv[3], &err) < 0) {
        hd_error_print(err, "hedge-broker");
        int rc = hd_error_exit_code(err);
        hd_error_free(&err);
        return rc;
    }
    return 0;
}

/* --user: listeners bound, store open, files loaded as root; the rest of the life as user, the same
 * way as hedged's network child (base/privdrop.h, docs/security.md) minus its mount namespace. */
static int broker_drop_privileges(const struct hd_broker_config *cfg, const char *user, hd_error_t *err)
{
    uid_t uid;
    gid_t gid;
    if (geteuid() != 0)
        return hd_error_set(err, 0, "--user %s: hedge-broker is not running as root", user);
    if (hd_privdrop_resolve(user, &uid, &gid, err) < 0)
        return hd_error_prefix(err, "--user");
    if (cfg->state_dir)
        hd_privdrop_chown_tree(cfg->state_dir, uid, gid);
    if (hd_privdrop_user(uid, gid, false, err) < 0 || hd_privdrop_finish(err) < 0)
        return hd_error_prefix(err, "--user %s", user);
    hd_log(HD_LOG_INFO, "broker", "running as user %s (uid %u), no capabilities, seccomp", user, (unsigned)uid);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "passwd") == 0)
        return cmd_passwd(argc, argv);
    hd_log_init("hedge-broker", "broker");
    hd_error_t err = NULL;
    enum {
        OPT_LISTEN_TLS = 256,
        OPT_STATE_DIR,
        OPT_PASSWORD_FILE,
        OPT_ACL_FILE,
        OPT_ANON,
        OPT_PORT_FILE,
        OPT_CHECK,
        OPT_VERSION,
        OPT_LOG_LEVEL,
        OPT_USER
    };
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"listen-tls", required_argument, NULL, OPT_LISTEN_TLS},
        {"config", required_argument, NULL, 'c'},
        {"state-dir", required_argument, NULL, OPT_STATE_DIR},
        {"password-file", required_argument, NULL, OPT_PASSWORD_FILE},
        {"acl-file", required_argument, NULL, OPT_ACL_FILE},
        {"allow-anonymous", required_argument, NULL, OPT_ANON},
        {"port-file", required_argument, NULL, OPT_PORT_FILE},
        {"check", no_argument, NULL, OPT_CHECK},
        {"version", no_argument, NULL, OPT_VERSION},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"user", required_argument, NULL, OPT_USER},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct hd_broker_config cfg;
    hd_broker_config_init(&cfg);
    cleanup_strv char **listen = NULL, **listen_tls = NULL;
    const char *config_file = NULL, *state_dir = NULL, *password_file = NULL, *acl_file = NULL, *port_file = NULL,
               *user = NULL;
    int anonymous = -2;
    bool check = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "l:c:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'l': hd_strv_push(&listen, optarg); break;
        case OPT_LISTEN_TLS: hd_strv_push(&listen_tls, optarg); break;
        case 'c': config_file = optarg; break;
        case OPT_STATE_DIR: state_dir = optarg; break;
        case OPT_PASSWORD_FILE: password_file = optarg; break;
        case OPT_ACL_FILE: acl_file = optarg; break;
        case OPT_ANON: anonymous = strcmp(optarg, "true") == 0 ? 1 : 0; break;
        case OPT_PORT_FILE: port_file = optarg; break;
        case OPT_CHECK: check = true; break;
        case OPT_USER: user = optarg; break;
        case OPT_VERSION: printf("hedge-broker %s\n", HEDGE_VERSION); return 0;
        case OPT_LOG_LEVEL:
            if (hd_log_set_level_name(optarg, &err) < 0) {
                hd_error_print(err, "hedge-broker: --log-level");
                hd_error_free(&err);
                return HD_EXIT_USAGE;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return HD_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return HD_EXIT_USAGE;
    }
    if (config_file && hd_broker_config_load(&cfg, config_file, &err) < 0)
        goto fail;
    if (listen) {
        hd_strv_free(cfg.listen);
        cfg.listen = get_and_reset(&listen);
    }
    if (listen_tls) {
        hd_strv_free(cfg.listen_tls);
        cfg.listen_tls = get_and_reset(&listen_tls);
    }
    if (state_dir) {
        free(cfg.state_dir);
        cfg.state_dir = hd_xstrdup(state_dir);
    }
    if (password_file) {
        free(cfg.password_file);
        cfg.password_file = hd_xstrdup(password_file);
    }
    if (acl_file) {
        free(cfg.acl_file);
        cfg.acl_file = hd_xstrdup(acl_file);
    }
    if (anonymous != -2)
        cfg.allow_anonymous = anonymous;

    if (check) { /* validate everything but bind nothing the real broker would need */
        char **given = get_and_reset(&cfg.listen);
        for (char **l = given; l && *l; l++) /* each kind of listener still checked (wss loads certificates) */
            hd_strv_push(&cfg.listen,
                         strncmp(*l, "wss://", 6) == 0      ? "wss://127.0.0.1:0"
                             : strncmp(*l, "ws://", 5) == 0 ? "ws://127.0.0.1:0"
                                                            : "127.0.0.1:0");
        if (!given || !given[0])
            hd_strv_push(&cfg.listen, "127.0.0.1:0");
        hd_strv_free(given);
        for (char **l = cfg.listen_tls; l && *l; l++) { /* still load the certificates */
            free(*l);
            *l = hd_xstrdup("127.0.0.1:0");
        }
    }
    struct hd_broker *b = NULL;
    if (hd_broker_new(&cfg, &b, &err) < 0)
        goto fail;
    if (check) {
        hd_broker_free(b);
        hd_broker_config_free(&cfg);
        printf("configuration ok\n");
        return 0;
    }
    if (port_file) {
        char text[16];
        int len = snprintf(text, sizeof(text), "%d\n", hd_broker_port(b, 0));
        if (hd_write_file_atomic(port_file, text, (size_t)len, &err) < 0) {
            hd_broker_free(b);
            goto fail;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    struct hd_loop *loop = hd_loop_new(&err);
    int rc = -1;
    if (loop && hd_loop_signals(loop, &stop_signals, on_signal, NULL, &err) == 0 &&
        hd_broker_attach(b, loop, &err) == 0 && (user == NULL || broker_drop_privileges(&cfg, user, &err) == 0))
        rc = hd_loop_run(loop, &err);
    hd_broker_free(b);
    hd_loop_free(loop);
    hd_broker_config_free(&cfg);
    if (rc < 0) {
        hd_error_print(err, "hedge-broker");
        hd_error_free(&err);
        return HD_EXIT_HEDGE;
    }
    return 0;
fail:
    hd_error_print(err, "hedge-broker");
    rc = hd_error_exit_code(err);
    hd_error_free(&err);
    hd_broker_config_free(&cfg);
    return rc;
}
