/*
 * main.c - hedged, the node daemon: flags, config, start-up, the loop, exit.
 *
 * Runs in the foreground (systemd style, contrib/hedged.service.in) with
 * embedded defaults; a JSON config (--config) overrides them and the
 * --state-dir/--socket flags override both, so tests and several daemons on
 * one host never collide. `hedged --check FILE` validates a config and
 * exits 0 or 1. One state dir belongs to one daemon (an flock says so).
 *
 * The MQTT broker and the cloud uplink (when the config has an "uplink"
 * section; not with --broker-only) run in hedged's network child, without
 * privileges (netchild.c; docs/security.md): hedged started again with
 * HEDGE_NET_CHILD set, which parses the same flags and config and then runs
 * netchild_main.c instead of the daemon. SIGHUP starts a fresh child (it reads
 * the config again). --mqtt-listen replaces the broker's listeners (tests use
 * a free port) and --broker-only runs the broker alone with the daemon's
 * config (no supervisor, no API socket), for benchmarks. hedged ignores
 * SIGPIPE: a client that hangs up must never kill it.
 *
 * On SIGTERM/SIGINT hedged closes its socket and exits; the workloads keep
 * running under their monitors, and the next hedged re-adopts them.
 * hedged is a child subreaper, so the monitors it double-forked are reaped
 * here while it lives (and by init after).
 *
 * The per-workload monitors are the hedge-monitor binary (monitor.c), found
 * next to hedged (a build dir) or in the libexec dir (an install).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "base/log.h"
#include "daemon/daemon.h"
#include "base/util.h"

static const char usage[] =
    "usage: hedged [OPTIONS]\n"
    "  -c, --config FILE     JSON config (overrides the embedded defaults)\n"
    "      --state-dir DIR   state: database, instances, logs (default /var/lib/hedge)\n"
    "      --socket PATH     API socket (default /run/hedge/hedged.sock)\n"
    "      --mqtt-listen HOST:PORT  the broker's plain MQTT listener (replaces broker.listen)\n"
    "      --broker-only     run only the MQTT broker (no workloads, no API socket)\n"
    "      --log-level LEVEL error, warn, info (the default) or debug (overrides log_level)\n"
    "      --check FILE      validate a config file and exit (0 valid, 1 not)\n"
    "      --foreground      run in the foreground (the default; for init systems that pass it)\n"
    "      --version         print the version\n";

struct daemon_parts {
    struct hd_supervisor *sup; /* NULL with --broker-only */
    struct hd_netchild *net;   /* NULL when neither broker nor uplink runs */
    struct hd_fleet *fleet;    /* NULL without a fleet section */
};

static void on_signal(struct hd_loop *loop, int signo, void *data)
{
    struct daemon_parts *parts = data;
    if (signo == SIGCHLD) {
        /* the network child, monitors (we are their subreaper), health probes, orphans of workloads */
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
            if (!hd_netchild_reaped(parts->net, pid, status) && !hd_fleet_child_exited(parts->fleet, pid, status) &&
                parts->sup)
                hd_supervisor_child_exited(parts->sup, pid, status);
    } else if (signo == SIGTERM || signo == SIGINT) {
        hd_log(HD_LOG_INFO, NULL, "signal %d: exiting; workloads keep running", signo);
        hd_loop_quit(loop);
    } else if (signo == SIGUSR2 && parts->net) { /* only in the mask with HEDGE_TEST_HOOKS=1 */
        hd_log(HD_LOG_WARN, NULL, "SIGUSR2 (test hook): asking the network child for a forbidden syscall");
        hd_netchild_test_fault(parts->net);
    } else if (signo == SIGCONT && parts->net) {
        hd_netchild_continued(parts->net);
    } else if (signo == SIGHUP && parts->net) {
        hd_log(HD_LOG_INFO, NULL, "SIGHUP: starting a fresh network child (broker, uplink)");
        hd_netchild_reload(parts->net);
    }
}

static int check_config(const char *path)
{
    struct hd_daemon_config cfg;
    hd_config_defaults(&cfg);
    hd_error_t err = NULL;
    int r = hd_config_load(&cfg, path, &err) < 0;
    if (!r && (hd_config_finish(&cfg, &err) < 0 || hd_config_check_broker(&cfg, &err) < 0)) {
        hd_error_prefix(&err, "%s", path);
        r = 1;
    }
    if (r) {
        hd_error_print(err, "hedged");
        hd_error_free(&err);
    } else
        printf("hedged: %s: ok\n", path);
    hd_config_free(&cfg);
    return r;
}

static int daemon_run(struct hd_daemon_config *cfg, char **argv, bool broker_only)
{
    hd_error_t err = NULL;
    struct hd_loop *loop = NULL;
    struct hd_store *store = NULL;
    struct hd_supervisor *sup = NULL;
    struct hd_vm_pool *vm_pool = NULL;
    struct hd_api *api = NULL;
    struct hd_fleet *fleet = NULL;
    struct daemon_parts parts = {0};
    cleanup_close int lock = -1;
    cleanup_free char *instances = hd_xasprintf("%s/instances", cfg->state_dir);
    cleanup_free char *lock_path = hd_xasprintf("%s/hedged.lock", cfg->state_dir);
    cleanup_free char *db = hd_xasprintf("%s/hedged.db", cfg->state_dir);
    cleanup_free char *monitor = NULL;
    int ret = 1;

    monitor = hd_find_program("hedge-monitor", &err);
    if (!monitor)
        goto out;
    hd_instance_set_exe(monitor);
    /* Monitors and the image store use the same state dir as the daemon. */
    setenv("HEDGE_STATE_DIR", cfg->state_dir, 1);
    /* the key's path (never the key): the monitors open the secret store with it */
    if (cfg->secret_key)
        setenv("HEDGE_SECRET_KEY", cfg->secret_key, 1);

    if (hd_mkdir_p(cfg->state_dir, 0700, &err) < 0 || hd_mkdir_p(instances, 0700, &err) < 0 ||
        hd_mkdir_p(cfg->log_dir, 0750, &err) < 0)
        goto out;
    lock = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock < 0 || flock(lock, LOCK_EX | LOCK_NB) < 0) {
        hd_error_sys(&err, "state dir %s: another hedged uses it", cfg->state_dir);
        goto out;
    }

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGCONT); /* hedged continues even so; the signalfd tells it to continue its child */
    const char *hooks = getenv("HEDGE_TEST_HOOKS");
    if (hooks && strcmp(hooks, "1") == 0) /* tests/test_privsep.py: SIGUSR2 crashes the network child */
        sigaddset(&mask, SIGUSR2);
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_CHILD_SUBREAPER, 1);

    if ((loop = hd_loop_new(&err)) == NULL)
        goto out;
    if (broker_only) {
        if (!cfg->broker_enabled) {
            hd_error_set(&err, 0, "--broker-only: the broker is disabled in the config");
            goto out;
        }
        if (hd_loop_signals(loop, &mask, on_signal, &parts, &err) < 0 ||
            hd_netchild_start(loop, cfg, argv, true, &parts.net, &err) < 0)
            goto out;
        hd_netchild_serve(parts.net);
        hd_log(HD_LOG_INFO, NULL, "version %s, broker only, state in %s", HEDGE_VERSION, cfg->broker.state_dir);
    } else {
        if (hd_store_open(db, &store, &err) < 0)
            goto out;
        sup = hd_supervisor_new(loop, store, cfg, &err);
        parts.sup = sup;
        if (hd_loop_signals(loop, &mask, on_signal, &parts, &err) < 0)
            goto out;
        if (hd_netchild_start(loop, cfg, argv, false, &parts.net, &err) < 0)
            goto out;
        hd_supervisor_set_broker(sup, cfg->broker_enabled ? parts.net : NULL);
        hd_fleet_bench_clean_stale(cfg->state_dir);             /* a bench a killed hedged left, fleet on or not */
        fleet = hd_fleet_new(loop, sup, store, parts.net, cfg); /* before recover: its events go up too */
        parts.fleet = fleet;
        if (hd_supervisor_recover(sup, &err) < 0 || hd_api_start(loop, sup, cfg, &api, &err) < 0)
            goto out;
        hd_netchild_serve(parts.net); /* the re-adopted workloads' users are in: clients may come */
        hd_api_set_netchild(api, parts.net);
        vm_pool = hd_vm_pool_new(loop, cfg); /* after recover: the re-adopted workloads come first */
        hd_instance_set_pool(vm_pool);
        hd_api_set_vm_pool(api, vm_pool);
        hd_log(HD_LOG_INFO, NULL, "version %s, listening on %s, state in %s", HEDGE_VERSION, cfg->socket_path,
               cfg->state_dir);
    }
    if (hd_loop_run(loop, &err) < 0)
        goto out;
    ret = 0;
out:
    if (err) {
        hd_error_print(err, "hedged");
        hd_error_free(&err);
    }
    hd_instance_set_pool(NULL);
    hd_vm_pool_free(vm_pool);
    hd_api_stop(api);
    parts.fleet = NULL;
    hd_fleet_free(fleet);
    hd_netchild_stop(parts.net);
    hd_supervisor_free(sup);
    hd_store_close(store);
    hd_loop_free(loop);
    hd_instance_set_exe(NULL);
    return ret;
}

int main(int argc, char **argv)
{
    enum {
        OPT_STATE_DIR = 256,
        OPT_SOCKET,
        OPT_CHECK,
        OPT_FOREGROUND,
        OPT_VERSION,
        OPT_HELP,
        OPT_MQTT_LISTEN,
        OPT_BROKER_ONLY,
        OPT_LOG_LEVEL
    };
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"state-dir", required_argument, NULL, OPT_STATE_DIR},
        {"socket", required_argument, NULL, OPT_SOCKET},
        {"check", required_argument, NULL, OPT_CHECK},
        {"mqtt-listen", required_argument, NULL, OPT_MQTT_LISTEN},
        {"broker-only", no_argument, NULL, OPT_BROKER_ONLY},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"foreground", no_argument, NULL, OPT_FOREGROUND},
        {"version", no_argument, NULL, OPT_VERSION},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *state_dir = NULL, *socket_path = NULL, *mqtt_listen = NULL, *log_level = NULL;
    bool broker_only = false;
    hd_log_init("hedged", NULL);
    int opt;
    while ((opt = getopt_long(argc, argv, "c:", options, NULL)) != -1) {
        switch (opt) {
        case 'c': config = optarg; break;
        case OPT_STATE_DIR: state_dir = optarg; break;
        case OPT_SOCKET: socket_path = optarg; break;
        case OPT_CHECK: return check_config(optarg);
        case OPT_MQTT_LISTEN: mqtt_listen = optarg; break;
        case OPT_BROKER_ONLY: broker_only = true; break;
        case OPT_LOG_LEVEL: log_level = optarg; break;
        case OPT_FOREGROUND: break;
        case OPT_VERSION: printf("hedged %s\n", HEDGE_VERSION); return 0;
        case OPT_HELP: fputs(usage, stdout); return 0;
        default: fputs(usage, stderr); return HD_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "hedged: unexpected argument %s\n%s", argv[optind], usage);
        return HD_EXIT_USAGE;
    }
    struct hd_daemon_config cfg;
    hd_config_defaults(&cfg);
    hd_error_t err = NULL;
    if (config && hd_config_load(&cfg, config, &err) < 0)
        goto fail;
    if (state_dir) {
        if (state_dir[0] != '/') {
            hd_error_set(&err, 0, "--state-dir: \"%s\" must be an absolute path", state_dir);
            goto fail;
        }
        free(cfg.state_dir);
        cfg.state_dir = hd_xstrdup(state_dir);
    }
    if (socket_path) {
        free(cfg.socket_path);
        cfg.socket_path = hd_xstrdup(socket_path);
    }
    if (mqtt_listen) {
        if (strrchr(mqtt_listen, ':') == NULL) {
            hd_error_set(&err, 0, "--mqtt-listen: \"%s\" must be HOST:PORT", mqtt_listen);
            goto fail;
        }
        hd_strv_free(cfg.broker.listen);
        cfg.broker.listen = NULL;
        hd_strv_push(&cfg.broker.listen, mqtt_listen);
    }
    if (log_level) {
        enum hd_log_level level;
        if (hd_log_parse_level(log_level, &level, &err) < 0) {
            hd_error_prefix(&err, "--log-level");
            goto fail;
        }
        cfg.log_level = (int)level;
    }
    hd_log_set_level((enum hd_log_level)cfg.log_level);
    if (hd_config_finish(&cfg, &err) < 0 || hd_config_check_broker_listen(&cfg, &err) < 0)
        goto fail;
    const char *net_child = getenv("HEDGE_NET_CHILD");
    int r;
    if (net_child) { /* hedged's network child (netchild.c started it with its control socket) */
        int fd = atoi(net_child);
        unsetenv("HEDGE_NET_CHILD");
        r = hd_netchild_main(&cfg, fd, broker_only);
    } else
        r = daemon_run(&cfg, argv, broker_only);
    hd_config_free(&cfg);
    return r;
fail:
    hd_error_print(err, "hedged");
    hd_error_free(&err);
    hd_config_free(&cfg);
    return 1;
}
