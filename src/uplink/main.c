/*
 * main.c - `hedge-uplink`: the store-and-forward uplink run on its own, beside
 * any local broker (hedged runs the same library in its loop:
 * src/daemon/embed_uplink.c).
 *
 *   hedge-uplink --config FILE [--check]
 *
 * --check validates the configuration and exits (0, or 2 with the field at
 * fault). SIGINT/SIGTERM set a flag the poll loop sees within a second (poll
 * is interrupted by the signal in the common case); the spool is committed
 * and closed on the way out. kill -9 loses nothing either: every message the
 * local broker saw acknowledged is already committed. `hedge uplink status
 * --config FILE` reads the link status and counters from the spool file.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>

#include "uplink/uplink.h"
#include "base/util.h"

static volatile int stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: hedge-uplink --config FILE [--check]\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check", no_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    bool check = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "c:nh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': config_path = optarg; break;
        case 'n': check = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return HD_EXIT_USAGE;
        }
    }
    if (!config_path || optind != argc) {
        usage(stderr);
        return HD_EXIT_USAGE;
    }
    hd_error_t err = NULL;
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
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct hd_uplink *u = hd_uplink_new(&cfg, &err);
    int rc = u ? hd_uplink_run(u, &stop_requested, &err) : -1;
    hd_uplink_free(u);
    hd_uplink_config_free(&cfg);
    if (rc < 0) {
        int code = hd_error_exit_code(err);
        hd_error_print(err, "hedge-uplink");
        hd_error_free(&err);
        return code ? code : HD_EXIT_HEDGE;
    }
    return 0;
}
