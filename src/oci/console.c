/*
 * console.c - a terminal for the container's process (process.terminal, `exec --tty`), as runc makes one.
 *
 * The caller (create, run, exec) connects to the engine's --console-socket before the container's
 * process starts; that process inherits the connection. Inside the container, after its mounts (its own
 * devpts instance is at /dev/pts), oci_console_make opens /dev/ptmx, sizes the terminal
 * (process.consoleSize), gives the slave to the process's user (mode 0620, as runc), binds it over
 * /dev/console for the first process, sends the master to the engine (SCM_RIGHTS, the pty's name as the
 * message, as runc does: conmon and the containerd shim read it so) and makes the slave its controlling
 * terminal and stdio (setsid, TIOCSCTTY). The engine owns the master from there on.
 *
 * hedge-oci-vm's exec --tty (oci_console_host_pty) makes the pty on the host instead: its master goes to the
 * socket the same way, its slave (raw) is relayed to a pty in the guest, which is the process's terminal.
 *
 * Without --console-socket, a foreground `run` or `exec` is its own engine (runc does the same): the
 * connection is one end of a socketpair, hedge-oci receives the master and relays it to its own stdio
 * (raw mode when stdin is a terminal, the window size on SIGWINCH) until the process exits.
 */
#include "oci/oci.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include "base/fdpass.h"
#include "base/util.h"

int oci_console_connect(const char *path, hd_error_t *err)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(addr.sun_path))
        return hd_error_set(err, ENAMETOOLONG, "--console-socket %s: path too long", path);
    strcpy(addr.sun_path, path);
    cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return hd_error_sys(err, "--console-socket: socket");
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
        return hd_error_sys(err, "--console-socket %s: connect", path);
    return steal_fd(&fd);
}

int oci_console_pair(int *ours, int *theirs, hd_error_t *err)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return hd_error_sys(err, "terminal: socketpair");
    *ours = sv[0];
    *theirs = sv[1];
    return 0;
}

static int send_master(int socket_fd, int master, const char *name, hd_error_t *err)
{
    if (hd_send_fds(socket_fd, name, strlen(name), &master, 1) < 0)
        return hd_error_sys(err, "terminal: send the pty master to the console socket");
    return 0;
}

/* A new pty: its master and slave (CLOEXEC), sized as c asks. */
static int open_pty(const struct oci_console *c, int *master_out, int *slave_out, hd_error_t *err)
{
    cleanup_close int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0)
        return hd_error_sys(err, "terminal: open /dev/ptmx");
    int unlock = 0;
    if (ioctl(master, TIOCSPTLCK, &unlock) < 0)
        return hd_error_sys(err, "terminal: unlock the pty");
    /* the slave through the master (TIOCGPTPEER): no path lookup another process could race */
    cleanup_close int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (slave < 0)
        return hd_error_sys(err, "terminal: open the pty slave");
    if (c->rows > 0 || c->cols > 0) {
        struct winsize ws = {.ws_row = (unsigned short)c->rows, .ws_col = (unsigned short)c->cols};
        if (ioctl(master, TIOCSWINSZ, &ws) < 0)
            return hd_error_sys(err, "terminal: set its size (process.consoleSize)");
    }
    *master_out = steal_fd(&master);
    *slave_out = steal_fd(&slave);
    return 0;
}

int oci_console_make(const struct oci_console *c, hd_error_t *err)
{
    cleanup_close int master = -1;
    cleanup_close int slave = -1;
    if (open_pty(c, &master, &slave, err) < 0)
        return -1;
    int number = 0;
    if (ioctl(master, TIOCGPTN, &number) < 0)
        return hd_error_sys(err, "terminal: pty number");
    char slave_path[64];
    snprintf(slave_path, sizeof(slave_path), "/dev/pts/%d", number);
    if (fchown(slave, c->uid, c->gid) < 0 || fchmod(slave, 0620) < 0)
        return hd_error_sys(err, "terminal: give %s to %u:%u", slave_path, (unsigned)c->uid, (unsigned)c->gid);
    if (c->bind_dev_console) {
        int fd = open("/dev/console", O_CREAT | O_WRONLY | O_NOCTTY | O_CLOEXEC, 0600);
        if (fd < 0)
            return hd_error_sys(err, "terminal: create /dev/console");
        close(fd);
        if (mount(slave_path, "/dev/console", NULL, MS_BIND, NULL) < 0)
            return hd_error_sys(err, "terminal: bind %s on /dev/console", slave_path);
    }
    if (send_master(c->socket_fd, master, "/dev/ptmx", err) < 0)
        return -1;
    close(c->socket_fd);
    if (setsid() < 0)
        return hd_error_sys(err, "terminal: setsid");
    for (int fd = 0; fd < 3; fd++)
        if (dup3(slave, fd, 0) < 0)
            return hd_error_sys(err, "terminal: make it fd %d", fd);
    if (ioctl(0, TIOCSCTTY, 0) < 0)
        return hd_error_sys(err, "terminal: make it the controlling terminal");
    return 0;
}

int oci_console_host_pty(const struct oci_console *c, hd_error_t *err)
{
    cleanup_close int master = -1;
    cleanup_close int slave = -1;
    if (open_pty(c, &master, &slave, err) < 0)
        return -1;
    struct termios raw;
    if (tcgetattr(slave, &raw) < 0)
        return hd_error_sys(err, "terminal: tcgetattr");
    cfmakeraw(&raw);
    if (tcsetattr(slave, TCSANOW, &raw) < 0)
        return hd_error_sys(err, "terminal: raw mode");
    if (send_master(c->socket_fd, master, "/dev/ptmx", err) < 0)
        return -1;
    return steal_fd(&slave);
}

int oci_console_receive(int socket_fd, hd_error_t *err)
{
    char name[256];
    int fd = -1;
    size_t n_fds = 0;
    ssize_t n = hd_recv_fds(socket_fd, name, sizeof(name), &fd, 1, &n_fds, 0);
    if (n < 0)
        return hd_error_sys(err, "terminal: receive the pty master");
    if (n == 0 || n_fds == 0)
        return hd_error_set(err, EPROTO, "terminal: the container's process sent no pty");
    return fd;
}

static void copy_window_size(int from, int to)
{
    struct winsize ws;
    if (ioctl(from, TIOCGWINSZ, &ws) == 0)
        ioctl(to, TIOCSWINSZ, &ws);
}

/* Write all of buf; false when the other side is gone. */
static bool write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        buf += n;
        len -= (size_t)n;
    }
    return true;
}

int oci_console_relay(int master, pid_t pid, hd_error_t *err)
{
    bool tty = isatty(0);
    struct termios saved;
    if (tty && tcgetattr(0, &saved) == 0) {
        struct termios raw = saved;
        cfmakeraw(&raw);
        tcsetattr(0, TCSANOW, &raw);
        copy_window_size(0, master);
    } else {
        tty = false;
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGWINCH);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    cleanup_close int winch = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    cleanup_close int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    int rc = 0;
    bool stdin_open = true;
    char buf[8192];
    for (;;) {
        struct pollfd fds[4] = {{.fd = master, .events = POLLIN},
                                {.fd = stdin_open ? 0 : -1, .events = POLLIN},
                                {.fd = winch, .events = POLLIN},
                                {.fd = pidfd, .events = POLLIN}};
        if (poll(fds, 4, -1) < 0) {
            if (errno == EINTR)
                continue;
            rc = hd_error_sys(err, "terminal: poll");
            break;
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(master, buf, sizeof(buf));
            if (n <= 0)
                break; /* EIO: every slave is closed, the process is gone */
            if (!write_all(1, buf, (size_t)n))
                break;
            continue; /* drain the master before looking at the exit */
        }
        if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(0, buf, sizeof(buf));
            if (n <= 0) {
                stdin_open = false;
                char eof = 4; /* ^D: the end of input, as a terminal says it */
                if (write(master, &eof, 1) < 0)
                    break;
            } else if (!write_all(master, buf, (size_t)n)) {
                break;
            }
        }
        if (fds[2].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(winch, &si, sizeof(si)) == (ssize_t)sizeof(si))
                if (tty)
                    copy_window_size(0, master);
        }
        if (fds[3].revents & POLLIN) {
            /* exited: what it printed last is still in the master */
            ssize_t n;
            struct pollfd last = {.fd = master, .events = POLLIN};
            while (poll(&last, 1, 0) > 0 && (last.revents & POLLIN) && (n = read(master, buf, sizeof(buf))) > 0)
                write_all(1, buf, (size_t)n);
            break;
        }
    }
    if (tty)
        tcsetattr(0, TCSANOW, &saved);
    return rc;
}
