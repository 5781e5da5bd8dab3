/*
 * net-driver.c - test driver for src/lib/net.c, built by meson, not installed.
 * It stands in for the container and VM backends until they call hd_net_*:
 *
 *   net-driver STATE ID MODE [--keep] [--dead-pid] [--same-netns] -- CMD...
 *       fork a child in a new network namespace (unshare(CLONE_NEWNET)),
 *       hd_net_setup(STATE, ID, MODE, child), then the child runs CMD; the
 *       driver waits, tears down (unless --keep: the lease is then left to
 *       be reclaimed as stale) and exits with CMD's status. --dead-pid sets
 *       up for a child that has already exited (setup must fail cleanly).
 *       --same-netns skips the unshare (setup must refuse such a pid).
 *       $NET_DRIVER_PREPARE, if set, is run by sh in the child's namespace
 *       before the setup (to make the setup fail halfway).
 *   net-driver STATE ID tap -- CMD...
 *       hd_net_setup_tap, print "tap NAME CIDR GATEWAY", run CMD in the
 *       driver's own namespace with the tap as fd 3, tear down.
 *
 * Setup failures print "net-driver: <error>" and exit 125.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "net/net.h"
#include "base/util.h"

static int wait_status(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return 125;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int fail(hd_error_t *err)
{
    hd_error_print(*err, "net-driver");
    hd_error_free(err);
    return 125;
}

static int run_tap(const char *state, const char *id, char **cmd)
{
    hd_error_t err = NULL;
    struct hd_net *net = NULL;
    const char *name, *cidr, *gateway;
    if (hd_net_setup_tap(state, id, &net, &name, &cidr, &gateway, &err) < 0)
        return fail(&err);
    printf("tap %s %s %s fd=%d\n", name, cidr, gateway, hd_net_tap_fd(net));
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        /* CMD gets the tap as fd 3, as QEMU would (-netdev tap,fd=3). */
        if (dup2(hd_net_tap_fd(net), 3) < 0)
            _exit(125);
        execvp(cmd[0], cmd);
        _exit(127);
    }
    int code = wait_status(pid);
    if (hd_net_teardown(net, &err) < 0)
        return fail(&err);
    return code;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: net-driver STATE ID MODE|tap [--keep] [--dead-pid] [--same-netns] -- CMD...\n");
        return 2;
    }
    const char *state = argv[1], *id = argv[2], *mode_name = argv[3];
    bool keep = false, dead_pid = false, same_netns = false;
    int i = 4;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--keep") == 0)
            keep = true;
        else if (strcmp(argv[i], "--dead-pid") == 0)
            dead_pid = true;
        else if (strcmp(argv[i], "--same-netns") == 0)
            same_netns = true;
    }
    if (i + 1 >= argc) {
        fprintf(stderr, "net-driver: no command\n");
        return 2;
    }
    char **cmd = argv + i + 1;
    if (strcmp(mode_name, "tap") == 0)
        return run_tap(state, id, cmd);
    enum hd_net_mode mode;
    if (hd_net_mode_parse(mode_name, &mode) < 0) {
        fprintf(stderr, "net-driver: bad mode %s\n", mode_name);
        return 2;
    }

    int ready[2], go[2];
    if (pipe(ready) < 0 || pipe(go) < 0)
        return 125;
    pid_t pid = fork();
    if (pid < 0)
        return 125;
    if (pid == 0) {
        close(ready[0]);
        close(go[1]);
        if (!same_netns && unshare(CLONE_NEWNET) < 0) {
            perror("net-driver: unshare");
            _exit(125);
        }
        const char *prepare = getenv("NET_DRIVER_PREPARE");
        if (prepare && system(prepare) != 0)
            _exit(125);
        if (dead_pid)
            _exit(0);
        if (write(ready[1], "r", 1) != 1)
            _exit(125);
        char c;
        if (read(go[0], &c, 1) != 1 || c != 'g')
            _exit(125); /* setup failed */
        execvp(cmd[0], cmd);
        perror("net-driver: exec");
        _exit(127);
    }
    close(ready[1]);
    close(go[0]);
    char c;
    if (dead_pid)
        waitpid(pid, NULL, 0);
    else if (read(ready[0], &c, 1) != 1)
        return wait_status(pid);

    hd_error_t err = NULL;
    struct hd_net *net = NULL;
    uint64_t started = hd_now_ns();
    if (hd_net_setup(state, id, mode, pid, &net, &err) < 0) {
        close(go[1]);
        if (!dead_pid)
            wait_status(pid);
        return fail(&err);
    }
    uint64_t took_us = (hd_now_ns() - started) / 1000;
    if (hd_net_address(net))
        fprintf(stderr, "net-driver: %s via %s\n", hd_net_address(net), hd_net_gateway(net));
    if (getenv("NET_DRIVER_TIME"))
        fprintf(stderr, "net-driver: setup %s took %llu us\n", mode_name, (unsigned long long)took_us);
    if (write(go[1], "g", 1) != 1)
        return 125;
    close(go[1]);
    int code = wait_status(pid);
    if (keep)
        return code;
    if (hd_net_teardown(net, &err) < 0)
        return fail(&err);
    return code;
}
