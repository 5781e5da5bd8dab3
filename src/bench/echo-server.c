/*
 * echo-server.c - hedge-echo-server, the workload of `hedge bench --builtin
 * echo` and its hostile neighbours.
 *
 * It is linked statically so that the same binary runs as a bare process, in
 * any container rootfs and in a VM guest. It speaks the sockperf message
 * framing (a 14-byte big-endian header: u64 sequence, u16 flags, u32 total
 * length), so `sockperf ping-pong` can measure it and hedge's RR client can
 * measure `sockperf server`; that is how the two clients are cross-checked.
 *
 *   request flags 0x0001 (client) | 0x0002 (wants a reply): answered with the
 *     same message, client bit cleared (what sockperf server does)
 *   hedge extension 0x0100: a u32 at offset 14 gives the response length; the
 *     reply is a header plus zero padding of that total length (TCP_RR with
 *     different request and response sizes)
 *   hedge extension 0x0200: stream; after this header the client sends raw
 *     bytes until it shuts down its side; the server counts them and answers
 *     with the u64 count (TCP_STREAM)
 *
 * One thread per connection: the CPU time of every thread shows in the
 * process's own accounting (and its cgroup's), which the bench reads.
 *
 * --hog cpu|memory|fork turns it into a noisy neighbour: spin on every CPU,
 * keep touching a growing heap, or keep forking. Each hog also bounds itself
 * (HOG_MEMORY_CAP, HOG_FORK_CAP) so that a run without cgroup limits cannot
 * take down a shared host.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define HEADER_SIZE 14
#define FLAG_CLIENT 0x0001
#define FLAG_RESPONSE_LENGTH 0x0100
#define FLAG_STREAM 0x0200
#define MAX_MESSAGE (1u << 20)
#define HOG_MEMORY_CAP (384ull << 20)
#define HOG_FORK_CAP 512

static int read_full(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static uint32_t get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void serve_stream(int fd)
{
    static char sink[1 << 16];
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read(fd, sink, sizeof(sink));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return;
        if (n == 0)
            break;
        total += (uint64_t)n;
    }
    unsigned char answer[8];
    for (int i = 0; i < 8; i++)
        answer[i] = (unsigned char)(total >> (56 - 8 * i));
    write_full(fd, answer, sizeof(answer));
}

static void *serve_connection(void *arg)
{
    int fd = (int)(intptr_t)arg;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    unsigned char *msg = malloc(MAX_MESSAGE);
    unsigned char *reply = calloc(1, MAX_MESSAGE);
    if (msg == NULL || reply == NULL)
        goto out;
    for (;;) {
        if (read_full(fd, msg, HEADER_SIZE) < 0)
            break;
        uint16_t flags = (uint16_t)(msg[8] << 8 | msg[9]);
        uint32_t len = get_be32(msg + 10);
        if (flags & FLAG_STREAM) {
            serve_stream(fd);
            break;
        }
        if (len < HEADER_SIZE || len > MAX_MESSAGE)
            break; /* not our framing: drop the peer */
        if (read_full(fd, msg + HEADER_SIZE, len - HEADER_SIZE) < 0)
            break;
        if ((flags & FLAG_RESPONSE_LENGTH) && len >= HEADER_SIZE + 4) {
            uint32_t response_len = get_be32(msg + HEADER_SIZE);
            if (response_len < HEADER_SIZE || response_len > MAX_MESSAGE)
                break;
            memcpy(reply, msg, 8);
            flags &= (uint16_t)~FLAG_CLIENT;
            reply[8] = (unsigned char)(flags >> 8);
            reply[9] = (unsigned char)flags;
            put_be32(reply + 10, response_len);
            if (write_full(fd, reply, response_len) < 0)
                break;
        } else {
            flags &= (uint16_t)~FLAG_CLIENT;
            msg[8] = (unsigned char)(flags >> 8);
            msg[9] = (unsigned char)flags;
            if (write_full(fd, msg, len) < 0)
                break;
        }
    }
out:
    free(msg);
    free(reply);
    close(fd);
    return NULL;
}

static int serve(const char *address, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("hedge-echo-server: socket");
        return 1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, address, &sa.sin_addr) != 1) {
        fprintf(stderr, "hedge-echo-server: --address %s: not an IPv4 address\n", address);
        return 2;
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 128) < 0) {
        fprintf(stderr, "hedge-echo-server: listen on %s:%d: %s\n", address, port, strerror(errno));
        return 1;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 << 10);
    for (;;) {
        int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE)
                continue;
            perror("hedge-echo-server: accept");
            return 1;
        }
        pthread_t t;
        if (pthread_create(&t, &attr, serve_connection, (void *)(intptr_t)c) != 0)
            close(c);
    }
}

static void *spin(void *arg)
{
    volatile uint64_t x = 0;
    for (;;)
        x++;
    return arg;
}

/* Keep every CPU busy: one spinning thread per online CPU. */
static int hog_cpu(void)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    for (long i = 1; i < cpus; i++) {
        pthread_t t;
        pthread_create(&t, NULL, spin, NULL);
    }
    spin(NULL);
    return 0;
}

/* Grow the heap in 16 MiB steps up to HOG_MEMORY_CAP and keep touching all of it. */
static int hog_memory(void)
{
    const size_t step = 16u << 20;
    size_t n = 0;
    char *chunks[HOG_MEMORY_CAP / (16u << 20)];
    for (;;) {
        if (n < sizeof(chunks) / sizeof(chunks[0])) {
            char *p = mmap(NULL, step, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p != MAP_FAILED)
                chunks[n++] = p;
        }
        for (size_t i = 0; i < n; i++)
            for (size_t off = 0; off < step; off += 4096)
                chunks[i][off]++;
    }
    return 0;
}

/*
 * Keep up to HOG_FORK_CAP children alive and keep trying to fork more. The
 * children die with the hog (PR_SET_PDEATHSIG), so killing the hog's first
 * process ends the storm even where no cgroup collects them.
 */
static int hog_fork(void)
{
    signal(SIGCHLD, SIG_IGN);
    pid_t hog = getpid();
    int alive = 0;
    for (;;) {
        if (alive >= HOG_FORK_CAP) {
            /* still hammer the fork path: a child that exits at once */
            pid_t p = fork();
            if (p == 0)
                _exit(0);
            continue;
        }
        pid_t p = fork();
        if (p == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != hog)
                _exit(0);
            for (;;)
                pause();
        }
        if (p > 0)
            alive++;
    }
    return 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: hedge-echo-server [--port PORT] [--address ADDR]\n"
            "       hedge-echo-server --hog cpu|memory|fork\n");
}

int main(int argc, char **argv)
{
    int port = 7777;
    const char *address = "0.0.0.0";
    const char *hog = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 65535) {
                fprintf(stderr, "hedge-echo-server: --port %s: not a port (1..65535)\n", argv[i]);
                return 2;
            }
            port = (int)v;
        } else if (strcmp(argv[i], "--address") == 0 && i + 1 < argc) {
            address = argv[++i];
        } else if (strcmp(argv[i], "--hog") == 0 && i + 1 < argc) {
            hog = argv[++i];
        } else {
            usage();
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    if (hog == NULL)
        return serve(address, port);
    if (strcmp(hog, "cpu") == 0)
        return hog_cpu();
    if (strcmp(hog, "memory") == 0)
        return hog_memory();
    if (strcmp(hog, "fork") == 0)
        return hog_fork();
    fprintf(stderr, "hedge-echo-server: --hog %s: not cpu, memory or fork\n", hog);
    return 2;
}
