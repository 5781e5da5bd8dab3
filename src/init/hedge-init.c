/*
 * hedge-init.c - PID 1 of a hedge VM guest (static, no libc beyond glibc's
 * static archive). The initramfs holds it as /init plus the kernel modules
 * the guest needs in /modules, named NN-name.ko in load order.
 *
 * Boot to workload:
 *   1. mount /proc, /sys, /dev (devtmpfs); load /modules/NN-name.ko in name order
 *      with finit_module (Debian's cloud kernel builds virtio, erofs and
 *      overlay as modules; devices then appear asynchronously);
 *   2. find the virtio-serial port named HD_VM_PORT_NAME via
 *      /sys/class/virtio-ports/<dev>/name (no udev here), say READY and read
 *      the CONFIG message (vm-proto.h) the host answers with; credit the
 *      host's entropy seed and reseed the CRNG (no RDRAND in the guest CPU),
 *      set the wall clock from the host's;
 *   3. mount the erofs rootfs from /dev/vda read-only at /lower, a tmpfs for
 *      writes and an overlay of both at /newroot (or /lower as is when the
 *      rootfs is read-only), with /proc, /sys and /dev inside;
 *   3a. make the host's devices (CONFIG's device records) appear at their targets;
 *       bind the files hedge-oci-vm copied in (FILE records, their bytes in
 *       FILE_DATA messages right after CONFIG) at their destinations;
 *   3b. bring lo up; with a network (hedge's bridge, or an engine's network
 *      namespace the host redirects to the tap) load /modules/net, give eth0
 *      the address (and MTU) and a default route via the gateway, if any
 *      (plain ioctls);
 *   4. put the workload in a guest cgroup v2 group whose pids.max and
 *      memory.max come from the spec (so pids are enforced *inside* the guest,
 *      and an OOM kill shows in memory.events), fork, chroot, apply
 *      user/workdir/env and exec - child.c's hd_child_exec, shared with the
 *      process and container backends, so messages and 126/127 are the same;
 *   5. relay stdin/stdout/stderr and signals as messages (and start the
 *      processes EXEC messages ask for beside the workload, relaying theirs:
 *      their stdin through a window of buffered EXEC_STDIN bytes each),
 *      report the exit status (and OOM), wait for the host's EXIT_ACK (its
 *      output is then delivered on the host) and power off.
 *
 * Any failure before or after the workload runs goes to the host as an ERROR
 * message (and to the console), then the guest powers off: the host never
 * waits on a guest that gave up. A malformed message from the host is such a
 * failure.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <linux/random.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/child.h"
#include "base/util.h"
#include "runtime/vm/proto.h"

#define GUEST_CGROUP "/cg"
#define WORKLOAD_CGROUP GUEST_CGROUP "/workload"
#define DEVICE_WAIT_MS 20000
#define EXIT_ACK_WAIT_MS 10000 /* the host acknowledges EXIT at once; the bound is for a host gone wrong */

static int port_fd = -1;
static struct hd_vm_reader host_reader; /* messages from the host, after CONFIG */
static int debug;                       /* "hedge.debug" on the kernel command line: phase timestamps on the console */

struct guest_config {
    char **argv;
    char **env;
    char *workdir;
    char *user;
    char *hostname;
    char *pids;
    char *memory;
    int readonly;
    char *net_address; /* "10.89.0.2/24" with a bridge network, else NULL */
    char *net_gateway;
    char *machine_id; /* 32 hex digits for /etc/machine-id */
    unsigned char seed[HD_VM_SEED_BYTES];
    int have_seed;
    struct timespec clock; /* the host's wall clock when it sent CONFIG */
    int have_clock;
    char **devices;               /* HD_VM_CFG_DEVICE records: "KIND NAME MODE TARGET" */
    struct guest_secret *secrets; /* HD_VM_CFG_SECRET records, wiped once written */
    size_t n_secrets;
    struct guest_file *files; /* HD_VM_CFG_FILE records: their bytes in FILES_DIR/N */
    size_t n_files;
    char *net_mtu;
    char **shares; /* HD_VM_CFG_SHARE records: "RO TAG TARGET" */
    int tty;       /* HD_VM_CFG_TERMINAL: the workload runs on a guest pty of tty_rows x tty_cols */
    unsigned tty_rows, tty_cols;
};

/* A file bound into the guest (hedge-oci-vm's bind mounts of files): FILES_DIR/<index>, bound at target. */
struct guest_file {
    unsigned mode;
    unsigned uid, gid;
    int readonly;
    size_t len;
    char *target;
};

#define FILES_DIR "/hedge-files"

struct guest_secret {
    unsigned mode;
    long long uid, gid; /* -1: the workload user's */
    char *target;
    char *value;
    size_t len;
};

static void console_print(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void console_print(const char *fmt, ...)
{
    char line[1200];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    int fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        fd = 2;
    dprintf(fd, "hedge-init: %s\n", line);
    if (fd != 2)
        close(fd);
}

static void debug_phase(const char *phase)
{
    if (!debug)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    console_print("%ld.%03ld %s", (long)ts.tv_sec, ts.tv_nsec / 1000000, phase);
}

__attribute__((noreturn)) static void power_off(void)
{
    sync();
    reboot(RB_POWER_OFF);
    /* reboot(2) only returns on failure; PID 1 must not exit (that panics, which -no-reboot also ends) */
    for (;;)
        pause();
}

static void wait_for_exit_ack(void);

/* Report a failure to the host (exit code + text) and the console, then power off. */
__attribute__((noreturn, format(printf, 3, 4))) static void guest_fail(int code, int errnum, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (n >= 0 && errnum && (size_t)n < sizeof(text))
        snprintf(text + n, sizeof(text) - (size_t)n, ": %s", strerror(errnum));
    console_print("%s", text);
    if (port_fd >= 0) {
        char msg[4 + sizeof(text)];
        uint32_t c = (uint32_t)code;
        size_t len = strlen(text);
        memcpy(msg, &c, 4);
        memcpy(msg + 4, text, len);
        /* As after EXIT: power off only once the host has the message (QEMU drops what its chardev has not
         * passed on yet when the guest goes down, which a loaded host shows) */
        if (hd_vm_send(port_fd, HD_VM_MSG_ERROR, msg, (uint32_t)(4 + len)) == 0)
            wait_for_exit_ack();
    }
    power_off();
}

static uint64_t now_ms(void)
{
    return hd_now_ns() / 1000000u;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void debug_phase(const char *phase);

static void mount_or_fail(const char *src, const char *target, const char *type, unsigned long flags, const char *data)
{
    mkdir(target, 0755);
    if (mount(src, target, type, flags, data) < 0)
        guest_fail(HD_EXIT_HEDGE, errno, "mount %s (%s) on %s", src, type, target);
}

static int select_ko(const struct dirent *d)
{
    size_t n = strlen(d->d_name);
    return n > 3 && strcmp(d->d_name + n - 3, ".ko") == 0;
}

/* Load the modules in dir in name order; a module already built in or loaded is fine. */
static void load_modules(const char *dir)
{
    struct dirent **names = NULL;
    int n = scandir(dir, &names, select_ko, alphasort);
    if (n < 0)
        return; /* a custom kernel with everything built in */
    for (int i = 0; i < n; i++) {
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            guest_fail(HD_EXIT_HEDGE, errno, "open module %s", path);
        if (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST)
            guest_fail(HD_EXIT_HEDGE, errno, "load module %s", path);
        close(fd);
        debug_phase(names[i]->d_name);
        free(names[i]);
    }
    free(names);
}

/* Find /dev/<port> whose /sys/class/virtio-ports/<port>/name is ours; wait for it to appear. */
static int open_host_port(void)
{
    uint64_t deadline = now_ms() + DEVICE_WAIT_MS;
    for (;;) {
        DIR *d = opendir("/sys/class/virtio-ports");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char path[300], name[64] = "";
            snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", e->d_name);
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                continue;
            ssize_t n = read(fd, name, sizeof(name) - 1);
            close(fd);
            if (n <= 0)
                continue;
            name[n] = '\0';
            name[strcspn(name, "\n")] = '\0';
            if (strcmp(name, HD_VM_PORT_NAME) != 0)
                continue;
            snprintf(path, sizeof(path), "/dev/%s", e->d_name);
            closedir(d);
            int port;
            while ((port = open(path, O_RDWR | O_CLOEXEC)) < 0 && errno == ENOENT && now_ms() < deadline)
                sleep_ms(1);
            if (port < 0)
                guest_fail(HD_EXIT_HEDGE, errno, "open host port %s", path);
            return port;
        }
        if (d)
            closedir(d);
        if (now_ms() >= deadline)
            guest_fail(HD_EXIT_HEDGE, 0, "virtio port %s did not appear within %d ms", HD_VM_PORT_NAME, DEVICE_WAIT_MS);
        sleep_ms(1);
    }
}

static void wait_for_device(const char *path)
{
    uint64_t deadline = now_ms() + DEVICE_WAIT_MS;
    struct stat st;
    while (stat(path, &st) < 0) {
        if (now_ms() >= deadline)
            guest_fail(HD_EXIT_HEDGE, 0, "device %s did not appear within %d ms", path, DEVICE_WAIT_MS);
        sleep_ms(1);
    }
}

/* Read and decode the CONFIG message; malformed → fail. */
/*
 * The FILE records' bytes follow CONFIG as FILE_DATA messages (proto.h): written to FILES_DIR/<index> in
 * the initramfs's root (memory), bound at their targets once the rootfs is mounted (setup_files).
 */
static void read_files(struct guest_config *cfg)
{
    if (cfg->n_files == 0)
        return;
    if (mkdir(FILES_DIR, 0700) < 0 && errno != EEXIST)
        guest_fail(HD_EXIT_HEDGE, errno, "mkdir %s", FILES_DIR);
    size_t have = 0; /* bytes left in the current FILE_DATA message */
    char *chunk = hd_xmalloc(HD_VM_MSG_MAX);
    for (size_t i = 0; i < cfg->n_files; i++) {
        char path[64];
        snprintf(path, sizeof(path), FILES_DIR "/%zu", i);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
            guest_fail(HD_EXIT_HEDGE, errno, "files: create %s", path);
        for (size_t left = cfg->files[i].len; left > 0;) {
            if (have == 0) {
                struct hd_vm_msg_header h;
                int r = hd_vm_read_all(port_fd, &h, sizeof(h));
                if (r < 0)
                    guest_fail(HD_EXIT_HEDGE, -r, "read files from host");
                if (h.type != HD_VM_MSG_FILE_DATA || !hd_vm_msg_valid(h.type, h.length, 0))
                    guest_fail(HD_EXIT_HEDGE, 0, "protocol: expected file data, got type %u length %u", h.type,
                               h.length);
                have = h.length;
            }
            size_t n = have < left ? have : left;
            int r = hd_vm_read_all(port_fd, chunk, n);
            if (r == 0)
                r = hd_vm_write_all(fd, chunk, n);
            if (r < 0)
                guest_fail(HD_EXIT_HEDGE, -r, "files: %s", cfg->files[i].target);
            have -= n;
            left -= n;
        }
        close(fd);
    }
    free(chunk);
    if (have != 0)
        guest_fail(HD_EXIT_HEDGE, 0, "protocol: %zu bytes of file data beyond the files", have);
}

static void read_config(struct guest_config *cfg)
{
    struct hd_vm_msg_header h;
    int r = hd_vm_read_all(port_fd, &h, sizeof(h));
    if (r < 0)
        guest_fail(HD_EXIT_HEDGE, -r, "read config from host");
    if (h.type != HD_VM_MSG_CONFIG || !hd_vm_msg_valid(h.type, h.length, 0))
        guest_fail(HD_EXIT_HEDGE, 0, "protocol: expected a config message, got type %u length %u", h.type, h.length);
    char *buf = hd_xmalloc(h.length);
    r = hd_vm_read_all(port_fd, buf, h.length);
    if (r < 0)
        guest_fail(HD_EXIT_HEDGE, -r, "read config from host");
    for (size_t off = 0; off < h.length;) {
        char tag = buf[off++];
        const char *value = buf + off;
        const char *nul = memchr(value, '\0', h.length - off);
        if (nul == NULL)
            guest_fail(HD_EXIT_HEDGE, 0, "protocol: config record '%c' is not NUL-terminated", tag);
        off += (size_t)(nul - value) + 1;
        switch (tag) {
        case HD_VM_CFG_ARG: hd_strv_push(&cfg->argv, value); break;
        case HD_VM_CFG_ENV: hd_strv_push(&cfg->env, value); break;
        case HD_VM_CFG_WORKDIR: cfg->workdir = hd_xstrdup(value); break;
        case HD_VM_CFG_USER: cfg->user = hd_xstrdup(value); break;
        case HD_VM_CFG_HOSTNAME: cfg->hostname = hd_xstrdup(value); break;
        case HD_VM_CFG_PIDS: cfg->pids = hd_xstrdup(value); break;
        case HD_VM_CFG_MEMORY: cfg->memory = hd_xstrdup(value); break;
        case HD_VM_CFG_READONLY: cfg->readonly = strcmp(value, "1") == 0; break;
        case HD_VM_CFG_NET_ADDRESS: cfg->net_address = hd_xstrdup(value); break;
        case HD_VM_CFG_NET_GATEWAY: cfg->net_gateway = hd_xstrdup(value); break;
        case HD_VM_CFG_DEVICE: hd_strv_push(&cfg->devices, value); break;
        case HD_VM_CFG_SECRET: {
            struct guest_secret sec = {0};
            size_t len = 0;
            int n = 0;
            if (sscanf(value, "%o %lld %lld %zu %n", &sec.mode, &sec.uid, &sec.gid, &len, &n) != 4 || n == 0 ||
                value[n] != '/' || sec.mode > 0777 || len > h.length - off)
                guest_fail(HD_EXIT_HEDGE, 0, "protocol: config secret \"%s\" is not MODE UID GID LEN TARGET", value);
            sec.target = hd_xstrdup(value + n);
            sec.value = hd_xmalloc(len ? len : 1);
            memcpy(sec.value, buf + off, len);
            sec.len = len;
            off += len;
            cfg->secrets = hd_xrealloc(cfg->secrets, (cfg->n_secrets + 1) * sizeof(*cfg->secrets));
            cfg->secrets[cfg->n_secrets++] = sec;
            break;
        }
        case HD_VM_CFG_NET_MTU: cfg->net_mtu = hd_xstrdup(value); break;
        case HD_VM_CFG_SHARE: hd_strv_push(&cfg->shares, value); break;
        case HD_VM_CFG_TERMINAL:
            if (sscanf(value, "%u %u", &cfg->tty_rows, &cfg->tty_cols) != 2 || cfg->tty_rows > 65535 ||
                cfg->tty_cols > 65535)
                guest_fail(HD_EXIT_HEDGE, 0, "protocol: config terminal size \"%s\" is not \"ROWS COLS\"", value);
            cfg->tty = 1;
            break;
        case HD_VM_CFG_FILE: {
            struct guest_file f = {0};
            int n = 0;
            if (sscanf(value, "%o %u %u %d %zu %n", &f.mode, &f.uid, &f.gid, &f.readonly, &f.len, &n) != 5 || n == 0 ||
                value[n] != '/' || f.mode > 07777)
                guest_fail(HD_EXIT_HEDGE, 0, "protocol: config file \"%s\" is not MODE UID GID RO LEN TARGET", value);
            f.target = hd_xstrdup(value + n);
            cfg->files = hd_xrealloc(cfg->files, (cfg->n_files + 1) * sizeof(*cfg->files));
            cfg->files[cfg->n_files++] = f;
            break;
        }
        case HD_VM_CFG_MACHINE_ID: {
            unsigned char id[16];
            if (hd_vm_hex_decode(value, id, sizeof(id)) < 0)
                guest_fail(HD_EXIT_HEDGE, 0, "protocol: config machine id is not 32 hex digits");
            cfg->machine_id = hd_xstrdup(value);
            break;
        }
        case HD_VM_CFG_SEED:
            if (hd_vm_hex_decode(value, cfg->seed, sizeof(cfg->seed)) < 0)
                guest_fail(HD_EXIT_HEDGE, 0, "protocol: config seed is not %d hex digits", 2 * HD_VM_SEED_BYTES);
            cfg->have_seed = 1;
            break;
        case HD_VM_CFG_CLOCK: {
            char *end;
            errno = 0;
            long long sec = strtoll(value, &end, 10);
            long nsec = *end == '.' ? strtol(end + 1, &end, 10) : -1;
            if (errno || *end || sec <= 0 || nsec < 0 || nsec > 999999999)
                guest_fail(HD_EXIT_HEDGE, 0, "protocol: config clock \"%s\" is not SEC.NSEC", value);
            cfg->clock.tv_sec = (time_t)sec;
            cfg->clock.tv_nsec = nsec;
            cfg->have_clock = 1;
            break;
        }
        default: guest_fail(HD_EXIT_HEDGE, 0, "protocol: unknown config tag 0x%02x", (unsigned char)tag);
        }
    }
    explicit_bzero(buf, h.length);
    free(buf);
    if (cfg->argv == NULL)
        guest_fail(HD_EXIT_HEDGE, 0, "protocol: config has no command");
    read_files(cfg);
}

/*
 * The host's seed goes into the input pool, credited at full weight (RNDADDENTROPY), and the CRNG is
 * reseeded from it (RNDRESEEDCRNG): the guest's CPU model has no RDRAND, so without this the first
 * getrandom() blocks ~1 s while the kernel gathers jitter, and a restored clone would share the
 * random state of the snapshot. Then the wall clock: a restored guest's is stale by the snapshot's age.
 */
static void apply_host_state(struct guest_config *cfg)
{
    if (cfg->have_seed) {
        struct {
            struct rand_pool_info info;
            unsigned char bytes[HD_VM_SEED_BYTES];
        } pool;
        pool.info.entropy_count = HD_VM_SEED_BYTES * 8; /* bits */
        pool.info.buf_size = HD_VM_SEED_BYTES;          /* bytes */
        memcpy(pool.bytes, cfg->seed, HD_VM_SEED_BYTES);
        explicit_bzero(cfg->seed, sizeof(cfg->seed));
        int fd = open("/dev/random", O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            guest_fail(HD_EXIT_HEDGE, errno, "entropy: open /dev/random");
        if (ioctl(fd, RNDADDENTROPY, &pool) < 0)
            guest_fail(HD_EXIT_HEDGE, errno, "entropy: RNDADDENTROPY");
        explicit_bzero(&pool, sizeof(pool));
        if (ioctl(fd, RNDRESEEDCRNG) < 0)
            guest_fail(HD_EXIT_HEDGE, errno, "entropy: RNDRESEEDCRNG");
        close(fd);
    }
    if (cfg->have_clock && clock_settime(CLOCK_REALTIME, &cfg->clock) < 0)
        guest_fail(HD_EXIT_HEDGE, errno, "clock_settime");
}

static void set_inet(struct sockaddr *sa, in_addr_t addr)
{
    struct sockaddr_in *in = (struct sockaddr_in *)(void *)sa;
    memset(in, 0, sizeof(*in));
    in->sin_family = AF_INET;
    in->sin_addr.s_addr = addr;
}

static void interface_up(int sock, const char *name)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
    if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0)
        guest_fail(HD_EXIT_HEDGE, errno, "network: %s flags", name);
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0)
        guest_fail(HD_EXIT_HEDGE, errno, "network: bring %s up", name);
}

/*
 * lo always comes up (like a container's own namespace). With a bridge network: load the
 * virtio-net modules, wait for eth0, give it the leased address and route via the gateway.
 */
static void setup_network(const struct guest_config *cfg)
{
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        guest_fail(HD_EXIT_HEDGE, errno, "network: socket");
    interface_up(sock, "lo");
    if (cfg->net_address == NULL) {
        close(sock);
        return;
    }
    char addr_text[32];
    snprintf(addr_text, sizeof(addr_text), "%s", cfg->net_address);
    char *slash = strchr(addr_text, '/');
    int prefix = slash ? atoi(slash + 1) : 32;
    if (slash)
        *slash = '\0';
    struct in_addr addr, gateway;
    if (inet_pton(AF_INET, addr_text, &addr) != 1 || prefix < 1 || prefix > 32)
        guest_fail(HD_EXIT_HEDGE, 0, "network: bad address \"%s\"", cfg->net_address);
    if (cfg->net_gateway && inet_pton(AF_INET, cfg->net_gateway, &gateway) != 1)
        guest_fail(HD_EXIT_HEDGE, 0, "network: bad gateway \"%s\"", cfg->net_gateway);
    load_modules("/modules/net");
    wait_for_device("/sys/class/net/eth0");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "eth0");
    set_inet(&ifr.ifr_addr, addr.s_addr);
    if (ioctl(sock, SIOCSIFADDR, &ifr) < 0)
        guest_fail(HD_EXIT_HEDGE, errno, "network: eth0 address %s", cfg->net_address);
    set_inet(&ifr.ifr_netmask, htonl(prefix == 32 ? 0xffffffffu : ~(0xffffffffu >> prefix)));
    if (ioctl(sock, SIOCSIFNETMASK, &ifr) < 0)
        guest_fail(HD_EXIT_HEDGE, errno, "network: eth0 netmask /%d", prefix);
    if (cfg->net_mtu) {
        ifr.ifr_mtu = atoi(cfg->net_mtu);
        if (ioctl(sock, SIOCSIFMTU, &ifr) < 0)
            guest_fail(HD_EXIT_HEDGE, errno, "network: eth0 MTU %s", cfg->net_mtu);
    }
    interface_up(sock, "eth0");
    if (cfg->net_gateway == NULL) { /* a network without a way out (podman --internal) */
        close(sock);
        return;
    }
    struct rtentry route;
    memset(&route, 0, sizeof(route));
    set_inet(&route.rt_dst, INADDR_ANY);
    set_inet(&route.rt_genmask, INADDR_ANY);
    set_inet(&route.rt_gateway, gateway.s_addr);
    route.rt_flags = RTF_UP | RTF_GATEWAY;
    route.rt_dev = (char *)"eth0";
    if (ioctl(sock, SIOCADDRT, &route) < 0)
        guest_fail(HD_EXIT_HEDGE, errno, "network: default route via %s", cfg->net_gateway);
    close(sock);
}

static void setup_rootfs(const struct guest_config *cfg)
{
    wait_for_device("/dev/vda");
    if (cfg->readonly) {
        mount_or_fail("/dev/vda", "/newroot", "erofs", MS_RDONLY, NULL);
    } else {
        mount_or_fail("/dev/vda", "/lower", "erofs", MS_RDONLY, NULL);
        mount_or_fail("upper", "/upper", "tmpfs", 0, "mode=0755");
        mkdir("/upper/data", 0755);
        mkdir("/upper/work", 0755);
        mount_or_fail("overlay", "/newroot", "overlay", 0, "lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work");
    }
    /* A read-only root without these dirs cannot get them; the workload then runs without. */
    struct {
        const char *target, *type;
    } inside[] = {
        {"/newroot/proc", "proc"},
        {"/newroot/sys", "sysfs"},
        {"/newroot/dev", "devtmpfs"},
        {"/newroot/dev/pts", "devpts"}, /* the ptys of exec --tty (and of the workload's own use) */
    };
    for (size_t i = 0; i < ARRAY_SIZE(inside); i++) {
        mkdir(inside[i].target, 0755);
        struct stat st;
        const char *data = strcmp(inside[i].type, "devpts") == 0 ? "ptmxmode=0666,mode=0620,gid=5" : NULL;
        if (stat(inside[i].target, &st) == 0 &&
            mount(inside[i].type, inside[i].target, inside[i].type, MS_NOSUID | MS_NOEXEC, data) < 0)
            guest_fail(HD_EXIT_HEDGE, errno, "mount %s on %s", inside[i].type, inside[i].target);
    }
}

/* Read a one-line sysfs attribute dir/entry/attr into buf (newline dropped); 0, or -1 if absent. */
static int read_attr(const char *dir, const char *entry, const char *attr, char *buf, size_t size)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s/%s", dir, entry, attr);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    return 0;
}

/* The device number of the entry of dir (entries starting with prefix) whose attr is want; waits for it. */
static dev_t find_device(const char *dir, const char *prefix, const char *attr, const char *want)
{
    uint64_t deadline = now_ms() + DEVICE_WAIT_MS;
    for (;;) {
        DIR *d = opendir(dir);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            char value[64], numbers[32];
            unsigned maj, min;
            if (strncmp(e->d_name, prefix, strlen(prefix)) != 0 ||
                read_attr(dir, e->d_name, attr, value, sizeof(value)) < 0 || strcmp(value, want) != 0 ||
                read_attr(dir, e->d_name, "dev", numbers, sizeof(numbers)) < 0 ||
                sscanf(numbers, "%u:%u", &maj, &min) != 2)
                continue;
            closedir(d);
            return makedev(maj, min);
        }
        if (d)
            closedir(d);
        if (now_ms() >= deadline)
            guest_fail(HD_EXIT_HEDGE, 0, "device %s (%s/%s*/%s) did not appear within %d ms", want, dir, prefix, attr,
                       DEVICE_WAIT_MS);
        sleep_ms(1);
    }
}

/*
 * The host's devices (docs/vm.md#devices): each one's guest node - the virtio-serial port named NAME, or
 * the virtio-blk disk whose serial is NAME - is made again at TARGET in the new root with the mode the
 * spec's permissions give (mknod: the same device numbers, so it works outside /dev too).
 */
static void setup_devices(const struct guest_config *cfg)
{
    for (size_t i = 0; cfg->devices && cfg->devices[i]; i++) {
        char kind, name[48];
        unsigned mode;
        int off = 0;
        if (sscanf(cfg->devices[i], "%c %47s %o %n", &kind, name, &mode, &off) != 3 || off == 0 ||
            (kind != 'c' && kind != 'b') || cfg->devices[i][off] != '/' || mode > 0777)
            guest_fail(HD_EXIT_HEDGE, 0, "protocol: config device \"%s\" is not KIND NAME MODE TARGET",
                       cfg->devices[i]);
        const char *target = cfg->devices[i] + off;
        dev_t dev = kind == 'c' ? find_device("/sys/class/virtio-ports", "vport", "name", name)
                                : find_device("/sys/block", "vd", "serial", name);
        char path[4200];
        snprintf(path, sizeof(path), "/newroot%s", target);
        char *slash = strrchr(path, '/');
        *slash = '\0';
        hd_error_t err = NULL;
        if (hd_mkdir_p(path, 0755, &err) < 0)
            guest_fail(HD_EXIT_HEDGE, err->errnum, "device %s: %s", target, err->message);
        *slash = '/';
        struct stat st;
        if (lstat(path, &st) == 0 && !S_ISDIR(st.st_mode))
            unlink(path); /* a node of the guest's own /dev at that name gives way */
        if (mknod(path, (kind == 'c' ? S_IFCHR : S_IFBLK) | mode, dev) < 0)
            guest_fail(HD_EXIT_HEDGE, errno, "device %s: mknod", target);
        if (chmod(path, mode) < 0) /* the umask took some bits */
            guest_fail(HD_EXIT_HEDGE, errno, "device %s: chmod", target);
    }
}

/*
 * Host directories (hedge-oci-vm's directory binds): virtiofs, one tag per directory (the host runs a
 * virtiofsd for each); the modules in /modules/fs are loaded only for a guest that has one. A read-only
 * share is mounted read-only (the host's daemon sees it read-only as well).
 */
static void setup_shares(const struct guest_config *cfg)
{
    if (cfg->shares == NULL)
        return;
    load_modules("/modules/fs");
    for (size_t i = 0; cfg->shares[i]; i++) {
        int ro = 0, n = 0;
        char tag[32];
        if (sscanf(cfg->shares[i], "%d %31s %n", &ro, tag, &n) != 2 || n == 0 || cfg->shares[i][n] != '/')
            guest_fail(HD_EXIT_HEDGE, 0, "protocol: config share \"%s\" is not RO TAG TARGET", cfg->shares[i]);
        const char *target = cfg->shares[i] + n;
        char path[4200];
        snprintf(path, sizeof(path), "/newroot%s", target);
        hd_error_t err = NULL;
        if (hd_mkdir_p(path, 0755, &err) < 0)
            guest_fail(HD_EXIT_HEDGE, err->errnum, "mounts: %s: %s", target, err->message);
        /* the device may still be probing after the modules load: a few tries */
        int tries = 0;
        while (mount(tag, path, "virtiofs", ro ? MS_RDONLY : 0, NULL) < 0) {
            if (++tries > 200 || (errno != ENOENT && errno != ENODEV && errno != EINVAL))
                guest_fail(HD_EXIT_HEDGE, errno, "mounts: virtiofs %s at %s", tag, target);
            sleep_ms(10);
        }
    }
}

/*
 * The files an engine binds into a container (hedge-oci-vm): each copy in FILES_DIR gets the host file's
 * owner and mode and is bound at its target in the new root (made empty in the overlay if missing; a
 * read-only root must have it), read-only when the bind was. Writes inside stay in the guest.
 */
static void setup_files(const struct guest_config *cfg)
{
    for (size_t i = 0; i < cfg->n_files; i++) {
        const struct guest_file *f = &cfg->files[i];
        char src[64], path[4200];
        snprintf(src, sizeof(src), FILES_DIR "/%zu", i);
        snprintf(path, sizeof(path), "/newroot%s", f->target);
        if (chown(src, f->uid, f->gid) < 0 || chmod(src, f->mode) < 0)
            guest_fail(HD_EXIT_HEDGE, errno, "mounts: owner and mode of %s", f->target);
        struct stat st;
        int exists = lstat(path, &st) == 0;
        if (!exists || !S_ISREG(st.st_mode)) {
            char *dir = hd_xstrdup(path);
            *strrchr(dir, '/') = '\0';
            hd_error_t err = NULL;
            if (hd_mkdir_p(dir, 0755, &err) < 0)
                guest_fail(HD_EXIT_HEDGE, err->errnum, "mounts: %s: %s", f->target, err->message);
            free(dir);
            if (exists && !S_ISLNK(st.st_mode))
                guest_fail(HD_EXIT_HEDGE, 0, "mounts: %s is not a file in the rootfs", f->target);
            if (exists && unlink(path) < 0) /* a symlink (e.g. to systemd's resolv.conf): the file replaces it */
                guest_fail(HD_EXIT_HEDGE, errno, "mounts: replace the symlink %s", f->target);
            int fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
            if (fd < 0)
                guest_fail(HD_EXIT_HEDGE, errno, "mounts: create %s in the rootfs", f->target);
            close(fd);
        }
        if (mount(src, path, NULL, MS_BIND, NULL) < 0)
            guest_fail(HD_EXIT_HEDGE, errno, "mounts: bind %s", f->target);
        if (f->readonly && mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0)
            guest_fail(HD_EXIT_HEDGE, errno, "mounts: %s read-only", f->target);
    }
}

static int dir_len_cmp(const void *a, const void *b)
{
    size_t la = strlen(*(char *const *)a), lb = strlen(*(char *const *)b);
    return la < lb ? -1 : la > lb ? 1 : strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * The secrets, as a container gets them (docs/security.md, "Secrets"): each target's directory is a
 * tmpfs of its own (parents mounted before children), holding only the secrets' files, with the
 * spec's mode and owner (default: the workload user's ids). The values are wiped from memory here.
 */
static void setup_secrets(struct guest_config *cfg)
{
    if (cfg->n_secrets == 0)
        return;
    uid_t wuid = 0;
    gid_t wgid = 0;
    hd_error_t err = NULL;
    if (cfg->user && hd_resolve_user("/newroot", cfg->user, &wuid, &wgid, &err) < 0)
        hd_error_free(&err); /* start_workload reports an unknown user */
    char **dirs = NULL;
    for (size_t i = 0; i < cfg->n_secrets; i++) {
        char *d = hd_xstrdup(cfg->secrets[i].target);
        *strrchr(d, '/') = '\0';
        if (d[0] != '\0' && !hd_strv_contains(dirs, d))
            hd_strv_push(&dirs, d);
        free(d);
    }
    size_t n = 0;
    while (dirs && dirs[n])
        n++;
    if (n > 1)
        qsort(dirs, n, sizeof(*dirs), dir_len_cmp);
    for (size_t i = 0; i < n; i++) {
        char path[4200];
        snprintf(path, sizeof(path), "/newroot%s", dirs[i]);
        if (hd_mkdir_p(path, 0755, &err) < 0)
            guest_fail(HD_EXIT_HEDGE, err->errnum, "secrets: %s: %s", dirs[i], err->message);
        mount_or_fail("hedge-secrets", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,nr_inodes=1024");
    }
    hd_strv_free(dirs);
    for (size_t i = 0; i < cfg->n_secrets; i++) {
        struct guest_secret *sec = &cfg->secrets[i];
        char path[4200];
        snprintf(path, sizeof(path), "/newroot%s", sec->target);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
            guest_fail(HD_EXIT_HEDGE, errno, "secrets: create %s", sec->target);
        int r = hd_vm_write_all(fd, sec->value, sec->len);
        if (r < 0)
            guest_fail(HD_EXIT_HEDGE, -r, "secrets: write %s", sec->target);
        uid_t uid = sec->uid >= 0 ? (uid_t)sec->uid : wuid;
        gid_t gid = sec->gid >= 0 ? (gid_t)sec->gid : wgid;
        if (fchown(fd, uid, gid) < 0 || fchmod(fd, sec->mode) < 0)
            guest_fail(HD_EXIT_HEDGE, errno, "secrets: owner and mode of %s", sec->target);
        close(fd);
        explicit_bzero(sec->value, sec->len);
        free(sec->value);
        free(sec->target);
    }
    free(cfg->secrets);
    cfg->secrets = NULL;
    cfg->n_secrets = 0;
}

/*
 * The guest's own /etc/machine-id (a clone of a template must not share one): written into the
 * overlay, or over an existing file of a read-only root by a bind mount of a file on /run's tmpfs.
 */
static void setup_machine_id(const struct guest_config *cfg)
{
    if (cfg->machine_id == NULL)
        return;
    char line[40];
    int n = snprintf(line, sizeof(line), "%s\n", cfg->machine_id);
    hd_error_t err = NULL;
    if (!cfg->readonly) {
        mkdir("/newroot/etc", 0755);
        if (hd_write_file("/newroot/etc/machine-id", line, (size_t)n, &err) < 0)
            guest_fail(HD_EXIT_HEDGE, err->errnum, "%s", err->message);
        return;
    }
    struct stat st;
    if (stat("/newroot/etc/machine-id", &st) < 0)
        return; /* a read-only root without the file cannot get one */
    if (hd_write_file("/machine-id", line, (size_t)n, &err) < 0)
        guest_fail(HD_EXIT_HEDGE, err->errnum, "%s", err->message);
    if (mount("/machine-id", "/newroot/etc/machine-id", NULL, MS_BIND, NULL) < 0)
        guest_fail(HD_EXIT_HEDGE, errno, "bind /etc/machine-id");
}

static void write_control(const char *path, const char *value)
{
    hd_error_t err = NULL;
    if (hd_write_file(path, value, strlen(value), &err) < 0)
        guest_fail(HD_EXIT_HEDGE, err->errnum, "%s", err->message);
}

/* The workload's guest cgroup: pids.max and memory.max as the spec says. */
static void setup_cgroup(const struct guest_config *cfg)
{
    mount_or_fail("cgroup2", GUEST_CGROUP, "cgroup2", MS_NOSUID | MS_NOEXEC | MS_NODEV, NULL);
    write_control(GUEST_CGROUP "/cgroup.subtree_control", "+memory +pids");
    if (mkdir(WORKLOAD_CGROUP, 0755) < 0 && errno != EEXIST)
        guest_fail(HD_EXIT_HEDGE, errno, "mkdir %s", WORKLOAD_CGROUP);
    if (cfg->pids)
        write_control(WORKLOAD_CGROUP "/pids.max", cfg->pids);
    if (cfg->memory)
        write_control(WORKLOAD_CGROUP "/memory.max", cfg->memory);
}

static int oom_kills(void)
{
    char *text = NULL;
    size_t len;
    hd_error_t err = NULL;
    if (hd_read_file(WORKLOAD_CGROUP "/memory.events", &text, &len, &err) < 0) {
        hd_error_free(&err);
        return 0;
    }
    const char *p = strstr(text, "oom_kill ");
    int n = p ? atoi(p + 9) : 0;
    free(text);
    return n;
}

struct workload {
    pid_t pid;
    int in_fd;  /* our end of its stdin, -1 once closed; a terminal's master */
    int out_fd; /* our end of its stdout, -1 at EOF; a terminal's master too (a dup) */
    int err_fd; /* -1 from the start on a terminal: it has one output stream */
    int tty;
};

static int exec_stdio(int tty, unsigned rows, unsigned cols, int in[2], int out[2], int errp[2]);

/* The workload: its stdio three pipes, or (CONFIG's TERMINAL) a guest pty, its controlling terminal. */
static void start_workload(const struct guest_config *cfg, struct workload *wl)
{
    int in[2] = {-1, -1}, out[2] = {-1, -1}, errp[2] = {-1, -1}, report[2];
    if (exec_stdio(cfg->tty, cfg->tty_rows, cfg->tty_cols, in, out, errp) < 0)
        guest_fail(HD_EXIT_HEDGE, errno, cfg->tty ? "a terminal (/dev/pts/ptmx)" : "pipe");
    if (pipe2(report, O_CLOEXEC) < 0)
        guest_fail(HD_EXIT_HEDGE, errno, "pipe");
    pid_t pid = fork();
    if (pid < 0)
        guest_fail(HD_EXIT_HEDGE, errno, "fork");
    if (pid == 0) {
        setsid();
        if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0 || dup2(errp[1], 2) < 0)
            hd_child_fail(report[1], HD_EXIT_HEDGE, errno, "stdio: dup2");
        if (cfg->tty && ioctl(0, TIOCSCTTY, 0) < 0)
            hd_child_fail(report[1], HD_EXIT_HEDGE, errno, "make the terminal the controlling one");
        hd_error_t err = NULL;
        /* hedge-init is exempt from the OOM killer; the workload must not inherit that */
        if (hd_write_file("/proc/self/oom_score_adj", "0", 1, &err) < 0 ||
            hd_write_file(WORKLOAD_CGROUP "/cgroup.procs", "0", 1, &err) < 0)
            hd_child_fail(report[1], HD_EXIT_HEDGE, err->errnum, "%s", err->message);
        if (chroot("/newroot") < 0 || chdir("/") < 0)
            hd_child_fail(report[1], HD_EXIT_HEDGE, errno, "chroot /newroot");
        if (cfg->hostname && sethostname(cfg->hostname, strlen(cfg->hostname)) < 0)
            hd_child_fail(report[1], HD_EXIT_HEDGE, errno, "sethostname %s", cfg->hostname);
        if (cfg->workdir && !cfg->readonly)
            hd_mkdir_p(cfg->workdir, 0755, &err); /* docker creates a missing workdir; chdir reports failure */
        hd_error_free(&err);
        struct hd_exec_plan plan = {
            .argv = cfg->argv,
            .env = cfg->env,
            .workdir = cfg->workdir ? cfg->workdir : "/",
            .user = cfg->user,
            .no_new_privs = false, /* root in the guest: the guest kernel is the boundary */
        };
        hd_child_exec(report[1], &plan);
    }
    close(in[0]);
    close(out[1]);
    close(errp[1]);
    close(report[1]);
    hd_error_t err = NULL;
    if (hd_child_read_report(report[0], &err) < 0) {
        waitpid(pid, NULL, 0);
        guest_fail(hd_error_exit_code(err), 0, "%s", hd_error_text(err));
    }
    close(report[0]);
    wl->pid = pid;
    wl->in_fd = in[1];
    wl->out_fd = out[0];
    wl->err_fd = errp[0];
    wl->tty = cfg->tty;
    fcntl(wl->in_fd, F_SETFL, O_NONBLOCK); /* a terminal's: also out_fd, the same open file */
    int r = hd_vm_send(port_fd, HD_VM_MSG_STARTED, NULL, 0);
    if (r < 0)
        guest_fail(HD_EXIT_HEDGE, -r, "send started");
}

/* ---- exec'd processes (EXEC, hedge-oci-vm exec): beside the workload, in its root and cgroup ---- */

#define MAX_EXECS 16

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
static int exec_stdio(int tty, unsigned rows, unsigned cols, int in[2], int out[2], int errp[2])
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
static void start_exec(const unsigned char *payload, uint32_t length)
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
static ssize_t read_pipe(int *fd, char *buf, size_t cap)
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
static void exec_stdin(const unsigned char *payload, uint32_t length)
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
static void exec_resize(const unsigned char *payload)
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
static void exec_signal(const unsigned char *payload)
{
    struct exec_session *s = find_exec_session(payload);
    uint32_t sig;
    memcpy(&sig, payload + 4, 4);
    if (sig == 0 || sig >= 65)
        guest_fail(HD_EXIT_HEDGE, 0, "protocol: exec signal %u out of range", sig);
    if (s && s->pid > 0)
        kill(s->pid, (int)sig);
}

static void exec_stdin_eof(const unsigned char *payload)
{
    struct exec_session *s = find_exec_session(payload);
    if (s == NULL)
        return;
    s->in_eof = 1;
    flush_exec_stdin(s);
}

/* Sessions whose process is reaped and whose output is drained: EXEC_EXIT, and the slot is free. */
static void finish_execs(void)
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

/* Forward what a workload pipe has to the host; close it at EOF. */
static void forward_output(int *fd, uint32_t type)
{
    char buf[16384];
    ssize_t n = read_pipe(fd, buf, sizeof(buf));
    if (n == 0)
        return;
    int r = hd_vm_send(port_fd, type, buf, (uint32_t)n);
    if (r < 0)
        guest_fail(HD_EXIT_HEDGE, -r, "send output to host");
}

/* Stdin bytes the workload has not taken yet; while some wait, the port is not read (backpressure). */
struct pending_input {
    unsigned char *data;
    size_t len, off;
    int eof; /* close stdin once the pending bytes are written */
};

/* The end of the workload's stdin: a pipe is closed; a terminal gets ^D (the end of input, as a terminal says
 * it) and our writing copy of its master is closed. */
static void close_workload_stdin(struct workload *wl)
{
    if (wl->tty) {
        char eof = 4;
        ssize_t n = write(wl->in_fd, &eof, 1);
        (void)n;
    }
    close(wl->in_fd);
    wl->in_fd = -1;
}

static void flush_input(struct workload *wl, struct pending_input *in)
{
    while (wl->in_fd >= 0 && in->off < in->len) {
        ssize_t n = write(wl->in_fd, in->data + in->off, in->len - in->off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n < 0) { /* EPIPE: the workload closed its stdin; drop the rest */
            in->off = in->len;
            break;
        }
        in->off += (size_t)n;
    }
    if (in->off >= in->len) {
        free(in->data);
        in->data = NULL;
        in->len = in->off = 0;
        if (in->eof && wl->in_fd >= 0)
            close_workload_stdin(wl);
    }
}

static void handle_host_message(struct workload *wl, struct pending_input *in, const struct hd_vm_msg_header *h,
                                const unsigned char *payload)
{
    switch (h->type) {
    case HD_VM_MSG_STDIN:
        if (wl->in_fd >= 0 && h->length) {
            in->data = hd_xmalloc(h->length);
            memcpy(in->data, payload, h->length);
            in->len = h->length;
            in->off = 0;
        }
        break;
    case HD_VM_MSG_STDIN_EOF: in->eof = 1; break;
    case HD_VM_MSG_SIGNAL: {
        uint32_t sig;
        memcpy(&sig, payload, 4);
        if (sig == 0 || sig >= 65)
            guest_fail(HD_EXIT_HEDGE, 0, "protocol: signal %u out of range", sig);
        if (wl->pid > 0)
            kill(wl->pid, (int)sig);
        break;
    }
    case HD_VM_MSG_EXEC: start_exec(payload, h->length); break;
    case HD_VM_MSG_EXEC_STDIN: exec_stdin(payload, h->length); break;
    case HD_VM_MSG_EXEC_STDIN_EOF: exec_stdin_eof(payload); break;
    case HD_VM_MSG_EXEC_RESIZE: exec_resize(payload); break;
    case HD_VM_MSG_EXEC_SIGNAL: exec_signal(payload); break;
    case HD_VM_MSG_RESIZE: {
        struct hd_vm_winsize size;
        memcpy(&size, payload, sizeof(size));
        struct winsize ws = {.ws_row = size.rows, .ws_col = size.cols};
        int master = !wl->tty ? -1 : wl->out_fd >= 0 ? wl->out_fd : wl->in_fd;
        if (master >= 0)
            ioctl(master, TIOCSWINSZ, &ws);
        break;
    }
    default: guest_fail(HD_EXIT_HEDGE, 0, "protocol: unexpected message type %u from host", h->type);
    }
    flush_input(wl, in);
}

/* Relay until the workload exited and its output is drained; returns its wait status. */
static int relay(struct workload *wl, int sigchld_fd)
{
    struct hd_vm_reader *reader = &host_reader;
    struct pending_input in = {0};
    int status = -1;
    int port_open = 1;
    /* The port stays blocking: reads only follow POLLIN (one read returns what is there), and
     * writes must wait while the host drains the virtqueue rather than fail with EAGAIN. */
    while (wl->pid > 0 || wl->out_fd >= 0 || wl->err_fd >= 0) {
        struct pollfd fds[5 + 3 * MAX_EXECS] = {
            {.fd = sigchld_fd, .events = POLLIN},
            {.fd = port_open && in.len == 0 ? port_fd : -1, .events = POLLIN},
            {.fd = wl->out_fd, .events = POLLIN},
            {.fd = wl->err_fd, .events = POLLIN},
            {.fd = in.len ? wl->in_fd : -1, .events = POLLOUT},
        };
        for (size_t i = 0; i < MAX_EXECS; i++) {
            fds[5 + 2 * i] = (struct pollfd){.fd = execs[i].used ? execs[i].out_fd : -1, .events = POLLIN};
            fds[6 + 2 * i] = (struct pollfd){.fd = execs[i].used ? execs[i].err_fd : -1, .events = POLLIN};
            int waiting = execs[i].used && execs[i].in_len > execs[i].in_off;
            fds[5 + 2 * MAX_EXECS + i] = (struct pollfd){.fd = waiting ? execs[i].in_fd : -1, .events = POLLOUT};
        }
        if (poll(fds, 5 + 3 * MAX_EXECS, -1) < 0) {
            if (errno == EINTR)
                continue;
            guest_fail(HD_EXIT_HEDGE, errno, "poll");
        }
        if (fds[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sigchld_fd, &si, sizeof(si)) > 0)
                ;
            int st;
            pid_t p;
            while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
                for (size_t i = 0; i < MAX_EXECS; i++)
                    if (execs[i].used && execs[i].pid == p) {
                        execs[i].status = st;
                        execs[i].pid = -1;
                    }
                if (p == wl->pid) {
                    status = st;
                    wl->pid = -1;
                    /* background tasks of the workload would keep its pipes open forever */
                    int fd = open(WORKLOAD_CGROUP "/cgroup.kill", O_WRONLY | O_CLOEXEC);
                    if (fd >= 0) {
                        ssize_t w = write(fd, "1", 1);
                        (void)w;
                        close(fd);
                    }
                }
            }
        }
        if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = hd_vm_reader_fill(reader, port_fd);
            if (n == 0 || (n < 0 && n != -EAGAIN)) {
                port_open = 0; /* host went away; finish the workload anyway */
            }
        }
        if (fds[2].revents & (POLLIN | POLLHUP | POLLERR))
            forward_output(&wl->out_fd, HD_VM_MSG_STDOUT);
        if (fds[3].revents & (POLLIN | POLLHUP | POLLERR))
            forward_output(&wl->err_fd, HD_VM_MSG_STDERR);
        if (fds[4].revents & (POLLOUT | POLLERR | POLLHUP))
            flush_input(wl, &in);
        for (size_t i = 0; i < MAX_EXECS; i++) {
            if (fds[5 + 2 * i].revents & (POLLIN | POLLHUP | POLLERR))
                forward_exec_output(&execs[i], &execs[i].out_fd, HD_VM_MSG_EXEC_STDOUT);
            if (fds[6 + 2 * i].revents & (POLLIN | POLLHUP | POLLERR))
                forward_exec_output(&execs[i], &execs[i].err_fd, HD_VM_MSG_EXEC_STDERR);
            if (fds[5 + 2 * MAX_EXECS + i].revents & (POLLOUT | POLLERR | POLLHUP))
                flush_exec_stdin(&execs[i]);
        }
        finish_execs();
        /* whole messages already buffered, also those held back while stdin was full */
        struct hd_vm_msg_header h;
        const unsigned char *payload;
        size_t used;
        int r;
        while (in.len == 0 && (r = hd_vm_reader_next(reader, 0, &h, &payload, &used)) != 0) {
            if (r < 0)
                guest_fail(HD_EXIT_HEDGE, 0, "protocol: malformed message from host (type %u, length %u)", h.type,
                           h.length);
            handle_host_message(wl, &in, &h, payload);
            hd_vm_reader_consume(reader, used);
        }
        if (in.len == 0 && in.eof && wl->in_fd >= 0)
            close_workload_stdin(wl);
    }
    free(in.data);
    return status;
}

/*
 * After EXIT (or ERROR): wait until the host says it delivered the output (EXIT_ACK), so
 * QEMU ends only after that. Input the host still sends (stdin, signals for a
 * workload that is gone) is dropped. Bounded: a host that went away or never
 * answers does not keep the guest up.
 */
static void wait_for_exit_ack(void)
{
    uint64_t deadline = now_ms() + EXIT_ACK_WAIT_MS;
    for (;;) {
        struct hd_vm_msg_header h;
        const unsigned char *payload;
        size_t used;
        int r;
        while ((r = hd_vm_reader_next(&host_reader, 0, &h, &payload, &used)) != 0) {
            if (r < 0)
                return; /* malformed: nothing more to learn from this host */
            hd_vm_reader_consume(&host_reader, used);
            if (h.type == HD_VM_MSG_EXIT_ACK)
                return;
        }
        uint64_t now = now_ms();
        if (now >= deadline)
            return;
        struct pollfd p = {.fd = port_fd, .events = POLLIN};
        int pr = poll(&p, 1, (int)(deadline - now));
        if (pr < 0 && errno != EINTR)
            return;
        if (pr > 0) {
            ssize_t n = hd_vm_reader_fill(&host_reader, port_fd);
            if (n == 0 || (n < 0 && n != -EAGAIN))
                return; /* the host closed the port */
        }
    }
}

int main(void)
{
    /* SIGCHLD through a signalfd; the rest default (PID 1 ignores signals it has no handler for anyway). */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sigchld_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);

    mount_or_fail("proc", "/proc", "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV, NULL);
    mount_or_fail("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NOEXEC | MS_NODEV, NULL);
    mount_or_fail("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, NULL);
    hd_write_file("/proc/self/oom_score_adj", "-1000", 5, NULL);
    char *cmdline = NULL;
    size_t cmdline_len;
    if (hd_read_file("/proc/cmdline", &cmdline, &cmdline_len, NULL) == 0)
        debug = strstr(cmdline, "hedge.debug") != NULL;
    free(cmdline);
    debug_phase("init");
    load_modules("/modules");
    debug_phase("modules loaded");
    port_fd = open_host_port();
    debug_phase("port open");

    /* say READY: the host answers with CONFIG (a snapshot taken here sees fresh state on restore) */
    int r = hd_vm_send(port_fd, HD_VM_MSG_READY, NULL, 0);
    if (r < 0)
        guest_fail(HD_EXIT_HEDGE, -r, "send ready");
    struct guest_config cfg = {0};
    read_config(&cfg);
    apply_host_state(&cfg);
    debug_phase("entropy and clock from host");
    if (sigchld_fd < 0)
        guest_fail(HD_EXIT_HEDGE, errno, "signalfd");
    setup_rootfs(&cfg);
    setup_devices(&cfg);
    setup_shares(&cfg);
    setup_files(&cfg);
    setup_secrets(&cfg);
    setup_machine_id(&cfg);
    debug_phase("rootfs mounted");
    setup_cgroup(&cfg);
    setup_network(&cfg);
    debug_phase("network up");

    struct workload wl = {.pid = -1, .in_fd = -1, .out_fd = -1, .err_fd = -1};
    start_workload(&cfg, &wl);
    debug_phase("workload started");
    int status = relay(&wl, sigchld_fd);
    debug_phase("workload exited");

    struct hd_vm_exit_msg exit_msg = {.status = -1};
    if (WIFEXITED(status)) {
        exit_msg.status = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        exit_msg.signal = WTERMSIG(status);
    }
    exit_msg.oom_killed = oom_kills() > 0;
    if (hd_vm_send(port_fd, HD_VM_MSG_EXIT, &exit_msg, sizeof(exit_msg)) == 0)
        wait_for_exit_ack();
    power_off();
}
