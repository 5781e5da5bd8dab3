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
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "base/loop.h"
#include "base/privdrop.h"
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
    fprintf(out, "usage: hedge-uplink --config FILE [--check] [--log-level error|warn|info|debug] [--user NAME]\n");
}

/* --user: the spool is open; the rest of the life as user, the same way as hedged's network child
 * (base/privdrop.h, docs/security.md) minus its mount namespace. The spool's files (and its directory,
 * when it holds nothing else) become the user's; TLS files are read at each connect, so the user
 * must be able to read them. */
static int uplink_drop_privileges(const struct hd_uplink_config *cfg, const char *user, hd_error_t *err)
{
    uid_t uid;
    gid_t gid;
    if (geteuid() != 0)
        return hd_error_set(err, 0, "--user %s: hedge-uplink is not running as root", user);
    if (hd_privdrop_resolve(user, &uid, &gid, err) < 0)
        return hd_error_prefix(err, "--user");
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < ARRAY_SIZE(suffixes); i++) {
        cleanup_free char *path = hd_xasprintf("%s%s", cfg->spool_path, suffixes[i]);
        if (lchown(path, uid, gid) < 0 && errno != ENOENT)
            return hd_error_sys(err, "--user: chown %s", path);
    }
    cleanup_free char *dir = hd_xstrdup(cfg->spool_path);
    char *slash = strrchr(dir, '/');
    const char *base = slash ? slash + 1 : cfg->spool_path;
    if (slash)
        *slash = '\0';
    DIR *d = opendir(slash ? (slash == dir ? "/" : dir) : ".");
    bool own = d != NULL && slash != dir;
    for (struct dirent *e; d && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strncmp(e->d_name, base, strlen(base)) != 0)
            own = false;
    if (d)
        closedir(d);
    if (own && chown(slash ? dir : ".", uid, gid) < 0)
        return hd_error_sys(err, "--user: chown %s", dir);
    if (hd_privdrop_user(uid, gid, false, err) < 0 || hd_privdrop_finish(err) < 0)
        return hd_error_prefix(err, "--user %s", user);
    hd_log(HD_LOG_INFO, "uplink", "running as user %s (uid %u), no capabilities, seccomp", user, (unsigned)uid);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check", no_argument, NULL, 'n'},
        {"log-level", required_argument, NULL, 'L'},
        {"user", required_argument, NULL, 'u'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    hd_log_init("hedge-uplink", "uplink");
    hd_error_t err = NULL;
    const char *config_path = NULL, *user = NULL;
    bool check = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "c:nhL:u:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': config_path = optarg; break;
        case 'n': check = true; break;
        case 'u': user = optarg; break;
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
        (u = hd_uplink_new(&cfg, &err)) != NULL && hd_uplink_attach(u, m.loop, on_fatal, &m, &err) == 0 &&
        (user == NULL || uplink_drop_privileges(&cfg, user, &err) == 0))
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
