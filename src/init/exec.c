/*
 * exec.c - the processes EXEC messages start beside the workload (hedge-oci-vm exec, docs/vm.md): in the
 * workload's root and guest cgroup, each a session numbered by the host.
 *
 * A session's stdio is three pipes or a guest pty (exec_stdio, which the workload's own stdio uses too); its
 * output goes to the host as EXEC_STDOUT/EXEC_STDERR, its stdin comes as EXEC_STDIN within a window of
 * HD_VM_EXEC_STDIN_WINDOW bytes the guest buffers and acknowledges as the process takes them (so a process
 * that does not read holds up only its own session, never the port). EXEC_RESIZE and EXEC_SIGNAL reach its
 * terminal and process; once it is reaped and its output drained, EXEC_EXIT frees the slot. A process that
 * cannot start is reported as its stderr and exit status, like any other. The relay loop in hedge-init.c
 * polls the sessions' descriptors through exec_poll_fds and exec_poll_events.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/child.h"
#include "base/util.h"
#include "init/init.h"

struct exec_session {
    uint32_t id;
    pid_t pid;  /* -1 once reaped */
    int in_fd;  /* our end of its stdin (non-blocking), -1 once closed; a terminal's master */
    int out_fd; /* our end of its stdout, -1 at EOF; a terminal's master too (a dup), -1 once it gave EIO */
    int err_fd;
    int status; /* its wait status once reaped */
    int used;
    /* EXEC_STDIN bytes its stdin has not taken yet: in_buf[in_off..in_len), at most the window */
    unsigned char *in_buf;
    size_t in_off, in_len;
    int in_eof; /* EXEC_STDIN_EOF came: close stdin once the bytes are in */
    int tty;    /* on a pty: in_fd and out_fd are its master */
};

static struct exec_session execs[MAX_EXECS];

/* Send a message that starts with the session's number. */
static void send_exec_message(uint32_t type, uint32_t id, const void *data, size_t len)
{
    unsigned char buf[4 + 16384 + sizeof(struct hd_vm_exit_msg)];
    memcpy(buf, &id, 4);
    if (len)
        memcpy(buf + 4, data, len);
    int r = hd_vm_send(port_fd, type, buf, (uint32_t)(4 + len));
    if (r < 0)
        guest_fail(HD_EXIT_HEDGE, -r, "send exec message to host");
}

static void send_exec_exit(uint32_t id, int status_code, int signal)
{
    struct hd_vm_exit_msg m = {.status = status_code, .signal = signal};
    send_exec_message(HD_VM_MSG_EXEC_EXIT, id, &m, sizeof(m));
}

/*
 * The process's stdio: three pipes, or (tty) a pty of the guest's sized rows x cols: the slave its stdin,
 * stdout and stderr (in[0], out[1], errp[1]), the master ours for writing and reading (in[1], out[0]; errp[0]
 * stays -1: a terminal has one output stream). 0, or -1 with errno (nothing left open).
 */
int exec_stdio(int tty, unsigned rows, unsigned cols, int in[2], int out[2], int errp[2])
{
    if (!tty) {
        if (pipe2(in, O_CLOEXEC) == 0 && pipe2(out, O_CLOEXEC) == 0 && pipe2(errp, O_CLOEXEC) == 0)
            return 0;
    } else {
        in[1] = open("/newroot/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
        int unlock = 0;
        struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
        if (in[1] >= 0 && ioctl(in[1], TIOCSPTLCK, &unlock) == 0 && (rows == 0 || ioctl(in[1], TIOCSWINSZ, &ws) == 0) &&
            (in[0] = ioctl(in[1], TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC)) >= 0 &&
            (out[0] = fcntl(in[1], F_DUPFD_CLOEXEC, 3)) >= 0 && (out[1] = fcntl(in[0], F_DUPFD_CLOEXEC, 3)) >= 0 &&
            (errp[1] = fcntl(in[0], F_DUPFD_CLOEXEC, 3)) >= 0)
            return 0;
    }
    int e = errno;
    int *all[] = {in, out, errp};
    for (size_t i = 0; i < 3; i++)
        for (int k = 0; k < 2; k++) {
            if (all[i][k] >= 0)
                close(all[i][k]);
            all[i][k] = -1;
        }
    errno = e;
    return -1;
}

/* EXEC: decode the records and start the process; a failure is its stderr and exit status. */
void start_exec(const unsigned char *payload, uint32_t length)
{
    uint32_t id;
    memcpy(&id, payload, 4);
    char **argv = NULL, **env = NULL;
    const char *workdir = "/", *user = NULL;
    int tty = 0;
    unsigned rows = 0, cols = 0;
    for (size_t off = 4; off < length;) {
        char tag = (char)payload[off++];
        const char *value = (const char *)payload + off;
        const char *nul = memchr(value, '\0', length - off);
        if (nul == NULL)
            guest_fail(HD_EXIT_HEDGE, 0, "protocol: exec record '%c' is not NUL-terminated", tag);
        off += (size_t)(nul - value) + 1;
        switch (tag) {
        case HD_VM_CFG_ARG: hd_strv_push(&argv, value); break;
        case HD_VM_CFG_ENV: hd_strv_push(&env, value); break;
        case HD_VM_CFG_WORKDIR: workdir = value; break;
        case HD_VM_CFG_USER: user = value; break;
        case HD_VM_CFG_TERMINAL:
            if (sscanf(value, "%u %u", &rows, &cols) != 2 || rows > 65535 || cols > 65535)
                guest_fail(HD_EXIT_HEDGE, 0, "protocol: exec terminal size \"%s\" is not \"ROWS COLS\"", value);
            tty = 1;
            break;
        default:
            guest_fail(HD_EXIT_HEDGE, 0, "protocol: exec record '%c' is not ARG, ENV, WORKDIR, USER or TERMINAL", tag);
        }
    }
    if (env == NULL)
        hd_strv_push(&env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    struct exec_session *s = NULL;
    for (size_t i = 0; i < MAX_EXECS && s == NULL; i++)
        if (!execs[i].used)
            s = &execs[i];
    hd_error_t err = NULL;
    int in[2] = {-1, -1}, out[2] = {-1, -1}, errp[2] = {-1, -1}, report[2] = {-1, -1};
    if (argv == NULL) {
        hd_error_set_code(&err, HD_EXIT_HEDGE, 0, "exec: no command");
    } else if (s == NULL) {
        hd_error_set_code(&err, HD_EXIT_HEDGE, 0, "exec: %d processes are exec'd already", MAX_EXECS);
    } else if (exec_stdio(tty, rows, cols, in, out, errp) < 0) {
        hd_error_set_code(&err, HD_EXIT_HEDGE, errno, tty ? "exec: a terminal (/dev/pts/ptmx)" : "exec: pipe");
    } else if (pipe2(report, O_CLOEXEC) < 0) {
        hd_error_set_code(&err, HD_EXIT_HEDGE, errno, "exec: pipe");
        int fds[] = {in[0], in[1], out[0], out[1], errp[0], errp[1]};
        for (size_t i = 0; i < ARRAY_SIZE(fds); i++)
            if (fds[i] >= 0)
                close(fds[i]);
        in[1] = out[0] = errp[0] = -1;
    } else {
        pid_t pid = fork();
        if (pid == 0) {
            setsid();
            if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0 || dup2(errp[1], 2) < 0)
                hd_child_fail(report[1], HD_EXIT_HEDGE, errno, "stdio: dup2");
            if (tty && ioctl(0, TIOCSCTTY, 0) < 0)
                hd_child_fail(report[1], HD_EXIT_HEDGE, errno, "exec: make the terminal the controlling one");
            if (hd_write_file("/proc/self/oom_score_adj", "0", 1, &err) < 0 ||
                hd_write_file(WORKLOAD_CGROUP "/cgroup.procs", "0", 1, &err) < 0)
                hd_child_fail(report[1], HD_EXIT_HEDGE, err->errnum, "%s", err->message);
            if (chroot("/newroot") < 0 || chdir("/") < 0)
                hd_child_fail(report[1], HD_EXIT_HEDGE, errno, "chroot /newroot");
            struct hd_exec_plan plan = {.argv = argv, .env = env, .workdir = workdir, .user = user};
            hd_child_exec(report[1], &plan);
        }
        close(in[0]);
        close(out[1]);
        close(errp[1]);
        close(report[1]);
        if (pid < 0) {
            hd_error_set_code(&err, HD_EXIT_HEDGE, errno, "exec: fork");
        } else if (hd_child_read_report(report[0], &err) < 0) {
            waitpid(pid, NULL, 0);
        } else {
            fcntl(in[1], F_SETFL, O_NONBLOCK); /* a terminal's: also out[0], the same open file */
            *s = (struct exec_session){
                .id = id, .pid = pid, .in_fd = in[1], .out_fd = out[0], .err_fd = errp[0], .used = 1, .tty = tty};
            in[1] = out[0] = errp[0] = -1;
        }
        close(report[0]);
    }
    if (in[1] >= 0)
        close(in[1]);
    if (out[0] >= 0)
        close(out[0]);
    if (errp[0] >= 0)
        close(errp[0]);
    if (err) {
        cleanup_free char *text = hd_xasprintf("hedge: %s\n", hd_error_text(err));
        send_exec_message(HD_VM_MSG_EXEC_STDERR, id, text, strlen(text));
        send_exec_exit(id, hd_error_exit_code(err), 0);
        hd_error_free(&err);
    }
    hd_strv_free(argv);
    hd_strv_free(env);
}

/* What a pipe has now (0: nothing yet); at its end (or an error) it is closed and *fd set to -1. */
ssize_t read_pipe(int *fd, char *buf, size_t cap)
{
    ssize_t n = read(*fd, buf, cap);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return 0;
    if (n <= 0) {
        close(*fd);
        *fd = -1;
        return 0;
    }
    return n;
}

/* An exec'd process's pipe: its bytes to the host, the pipe closed at EOF. */
static void forward_exec_output(struct exec_session *s, int *fd, uint32_t type)
{
    char buf[16384];
    ssize_t n = read_pipe(fd, buf, sizeof(buf));
    if (n > 0)
        send_exec_message(type, s->id, buf, (size_t)n);
}

/* The session id names, or NULL (it ended, or never started: its messages are dropped). */
static struct exec_session *find_exec_session(const unsigned char *payload)
{
    uint32_t id;
    memcpy(&id, payload, 4);
    for (size_t i = 0; i < MAX_EXECS; i++)
        if (execs[i].used && execs[i].id == id)
            return &execs[i];
    return NULL;
}

static void close_exec_stdin(struct exec_session *s)
{
    if (s->in_fd >= 0)
        close(s->in_fd);
    s->in_fd = -1;
    free(s->in_buf);
    s->in_buf = NULL;
    s->in_off = s->in_len = 0;
}

/*
 * Write what a session's stdin takes now; the bytes taken (or dropped: the process closed its stdin) are
 * acknowledged to the host, which then may send that many more. At EXEC_STDIN_EOF with nothing left: close.
 */
static void flush_exec_stdin(struct exec_session *s)
{
    uint32_t done = 0;
    while (s->in_off < s->in_len) {
        ssize_t n = s->in_fd >= 0 ? write(s->in_fd, s->in_buf + s->in_off, s->in_len - s->in_off) : -1;
        if (n < 0 && s->in_fd >= 0 && errno == EINTR)
            continue;
        if (n < 0 && s->in_fd >= 0 && errno == EAGAIN)
            break;
        if (n < 0) /* EPIPE (or already closed): drop the rest */
            n = (ssize_t)(s->in_len - s->in_off);
        s->in_off += (size_t)n;
        done += (uint32_t)n;
    }
    if (s->in_off == s->in_len)
        s->in_off = s->in_len = 0;
    if (done)
        send_exec_message(HD_VM_MSG_EXEC_STDIN_ACK, s->id, &done, sizeof(done));
    if (s->in_eof && s->in_len == 0)
        close_exec_stdin(s);
}

/* EXEC_STDIN: buffer the bytes (within the session's window) and write what the pipe takes. */
void exec_stdin(const unsigned char *payload, uint32_t length)
{
    struct exec_session *s = find_exec_session(payload);
    if (s == NULL || s->in_eof)
        return;
    size_t n = length - 4;
    if (s->in_len - s->in_off + n > HD_VM_EXEC_STDIN_WINDOW)
        guest_fail(HD_EXIT_HEDGE, 0, "protocol: exec session %u: %zu stdin bytes unacknowledged, more than %u", s->id,
                   s->in_len - s->in_off + n, HD_VM_EXEC_STDIN_WINDOW);
    if (s->in_buf == NULL)
        s->in_buf = hd_xmalloc(HD_VM_EXEC_STDIN_WINDOW);
    if (s->in_off) {
        memmove(s->in_buf, s->in_buf + s->in_off, s->in_len - s->in_off);
        s->in_len -= s->in_off;
        s->in_off = 0;
    }
    memcpy(s->in_buf + s->in_len, payload + 4, n);
    s->in_len += n;
    flush_exec_stdin(s);
}

/* EXEC_RESIZE: the terminal's new size (its foreground process group gets SIGWINCH). */
void exec_resize(const unsigned char *payload)
{
    struct exec_session *s = find_exec_session(payload);
    struct hd_vm_winsize size;
    memcpy(&size, payload + 4, sizeof(size));
    int master = s == NULL || !s->tty ? -1 : s->out_fd >= 0 ? s->out_fd : s->in_fd;
    struct winsize ws = {.ws_row = size.rows, .ws_col = size.cols};
    if (master >= 0)
        ioctl(master, TIOCSWINSZ, &ws);
}

/* EXEC_SIGNAL: the signal for the session's process (one that ended is not signalled). */
void exec_signal(const unsigned char *payload)
{
    struct exec_session *s = find_exec_session(payload);
    uint32_t sig;
    memcpy(&sig, payload + 4, 4);
    if (sig == 0 || sig >= 65)
        guest_fail(HD_EXIT_HEDGE, 0, "protocol: exec signal %u out of range", sig);
    if (s && s->pid > 0)
        kill(s->pid, (int)sig);
}

void exec_stdin_eof(const unsigned char *payload)
{
    struct exec_session *s = find_exec_session(payload);
    if (s == NULL)
        return;
    s->in_eof = 1;
    flush_exec_stdin(s);
}

/* Sessions whose process is reaped and whose output is drained: EXEC_EXIT, and the slot is free. */
void finish_execs(void)
{
    for (size_t i = 0; i < MAX_EXECS; i++) {
        struct exec_session *s = &execs[i];
        if (!s->used || s->pid > 0 || s->out_fd >= 0 || s->err_fd >= 0)
            continue;
        close_exec_stdin(s);
        if (WIFSIGNALED(s->status))
            send_exec_exit(s->id, -1, WTERMSIG(s->status));
        else
            send_exec_exit(s->id, WEXITSTATUS(s->status), 0);
        s->used = 0;
    }
}

/* The sessions' descriptors for the relay's poll: stdout and stderr, then the stdin that has bytes waiting. */
void exec_poll_fds(struct pollfd fds[EXEC_POLL_FDS])
{
    for (size_t i = 0; i < MAX_EXECS; i++) {
        fds[2 * i] = (struct pollfd){.fd = execs[i].used ? execs[i].out_fd : -1, .events = POLLIN};
        fds[2 * i + 1] = (struct pollfd){.fd = execs[i].used ? execs[i].err_fd : -1, .events = POLLIN};
        int waiting = execs[i].used && execs[i].in_len > execs[i].in_off;
        fds[2 * MAX_EXECS + i] = (struct pollfd){.fd = waiting ? execs[i].in_fd : -1, .events = POLLOUT};
    }
}

void exec_poll_events(const struct pollfd fds[EXEC_POLL_FDS])
{
    for (size_t i = 0; i < MAX_EXECS; i++) {
        if (fds[2 * i].revents & (POLLIN | POLLHUP | POLLERR))
            forward_exec_output(&execs[i], &execs[i].out_fd, HD_VM_MSG_EXEC_STDOUT);
        if (fds[2 * i + 1].revents & (POLLIN | POLLHUP | POLLERR))
            forward_exec_output(&execs[i], &execs[i].err_fd, HD_VM_MSG_EXEC_STDERR);
        if (fds[2 * MAX_EXECS + i].revents & (POLLOUT | POLLERR | POLLHUP))
            flush_exec_stdin(&execs[i]);
    }
}

/* A child the relay reaped: if it is a session's process, its status waits for finish_execs. */
void exec_reaped(pid_t pid, int status)
{
    for (size_t i = 0; i < MAX_EXECS; i++)
        if (execs[i].used && execs[i].pid == pid) {
            execs[i].status = status;
            execs[i].pid = -1;
        }
}
