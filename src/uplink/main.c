/*
 * main.c - `hedge-uplink`: the store-and-forward uplink run on its own, beside
 * any local broker (hedged runs the same library in its loop:
 * src/daemon/embed_uplink.c).
 *
 *   hedge-uplink --config FILE [--check]
 *
 * --check validates the configuration and exits (0, or 2 with the field at
 * fault). The uplink runs in an hd_loop of its own; SIGINT/SIGTERM arrive
 * through the loop's signalfd and end it; both links are disconnected
 * cleanly and the spool is committed and closed on the way out. kill -9 loses nothing either: every message the
 * local broker saw acknowledged is already committed.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>

#include "base/log.h"
#include "base/loop.h"
#include "uplink/uplink.h"
#include "base/util.h"

static void on_signal(struct hd_loop *loop, int signo, void *data)
{
    hd_loop_quit(loop);
}

struct uplink_main {
    struct hd_loop *loop;
    hd_error_t fatal;
};

static void on_fatal(void *ctx, hd_error_t *err)
{
    struct uplink_main *m = ctx;
    m->fatal = get_and_reset(err);
    hd_loop_quit(m->loop);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: hedge-uplink --config FILE [--check] [--log-level error|warn|info|debug]\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check", no_argument, NULL, 'n'},
        {"log-level", required_argument, NULL, 'L'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    hd_log_init("hedge-uplink", "uplink");
    hd_error_t err = NULL;
    const char *config_path = NULL;
    bool check = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "c:nhL:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': config_path = optarg; break;
        case 'n': check = true; break;
        case 'L':
            if (hd_log_set_level_name(optarg, &err) < 0) {
                hd_error_print(err, "hedge-uplink: --log-level");
                hd_error_free(&err);
                return HD_EXIT_USAGE;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return HD_EXIT_USAGE;
        }
    }
    if (!config_path || optind != argc) {
        usage(stderr);
        return HD_EXIT_USAGE;
    }
    struct hd_uplink_config cfg;
    if (hd_uplink_config_load(config_path, &cfg, &err) < 0) {
        int code = hd_error_exit_code(err);
        hd_error_print(err, "hedge-uplink");
        hd_error_free(&err);
        return code;
    }
    if (check) {
        printf("%s: ok (node %s, %zu up, %zu down mappings)\n", config_path, cfg.node_id, cfg.n_up, cfg.n_down);
        hd_uplink_config_free(&cfg);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    struct uplink_main m = {.loop = hd_loop_new(&err)};
    struct hd_uplink *u = NULL;
    int rc = -1;
    if (m.loop && hd_loop_signals(m.loop, &stop_signals, on_signal, NULL, &err) == 0 &&
        (u = hd_uplink_new(&cfg, &err)) != NULL && hd_uplink_attach(u, m.loop, on_fatal, &m, &err) == 0)
        rc = hd_loop_run(m.loop, &err);
    if (rc == 0 && m.fatal) {
        err = get_and_reset(&m.fatal);
        rc = -1;
    }
    if (u && rc == 0)
        hd_uplink_close(u);
    hd_uplink_free(u);
    hd_loop_free(m.loop);
    hd_uplink_config_free(&cfg);
    if (rc < 0) {
        int code = hd_error_exit_code(err);
        hd_error_print(err, "hedge-uplink");
        hd_error_free(&err);
        return code ? code : HD_EXIT_HEDGE;
    }
    return 0;
}
