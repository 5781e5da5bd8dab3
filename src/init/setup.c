/*
 * setup.c - the guest the workload runs in, built from the host's CONFIG before the workload starts (the
 * steps 2-4 of hedge-init.c's boot, in the order main calls them).
 *
 * The host's entropy seed and wall clock; the erofs rootfs (with a tmpfs overlay unless read-only) and
 * /proc, /sys, /dev inside it; the host's devices made again at their targets; virtiofs shares; the files
 * hedge-oci-vm copied in, bound at their destinations; secrets on tmpfs; the guest's own machine id; the
 * workload's guest cgroup; lo and, with a network, eth0 with its address and default route (plain ioctls).
 *
 * Everything here runs once, as PID 1, with nothing to undo: a step that fails ends the guest through
 * guest_fail, which tells the host why. Records of CONFIG that are malformed fail the same way.
 */
#include <arpa/inet.h>
#include <stdbool.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <linux/fs.h>
#include <unistd.h>

#include "base/child.h"
#include "base/util.h"
#include "init/init.h"

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

/*
 * The host's seed goes into the input pool, credited at full weight (RNDADDENTROPY), and the CRNG is
 * reseeded from it (RNDRESEEDCRNG): the guest's CPU model has no RDRAND, so without this the first
 * getrandom() blocks ~1 s while the kernel gathers jitter, and a restored clone would share the
 * random state of the snapshot. Then the wall clock: a restored guest's is stale by the snapshot's age.
 */
void apply_host_state(struct guest_config *cfg)
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
void setup_network(const struct guest_config *cfg)
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

void setup_rootfs(const struct guest_config *cfg)
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
                read_sysfs_attr(dir, e->d_name, attr, value, sizeof(value)) < 0 || strcmp(value, want) != 0 ||
                read_sysfs_attr(dir, e->d_name, "dev", numbers, sizeof(numbers)) < 0 ||
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
void setup_devices(const struct guest_config *cfg)
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
void setup_shares(const struct guest_config *cfg)
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
void setup_files(const struct guest_config *cfg)
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
void setup_secrets(struct guest_config *cfg)
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
void setup_machine_id(const struct guest_config *cfg)
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
void setup_cgroup(const struct guest_config *cfg)
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

/*
 * A warm pool's clone (host: runtime/vm/pool.c) sends WARM before CONFIG: under TCG each code path of the
 * guest is translated the first time it runs in a QEMU process, and a restored clone has run none, so the
 * start's paths are rehearsed here, on nothing of a workload, before the clone waits: the rootfs disk
 * probed (the placeholder has no erofs: the mount fails, as meant; its page cache is dropped after), a
 * tmpfs with an overlay and proc in it, the guest cgroup with a child in it, lo, a fork and exec of
 * hedge-init itself (which exits at once) with the workload's pipes. Everything is undone; nothing of it
 * reaches the workload, whose CONFIG brings the clone's own entropy, clock and identity.
 */
void rehearse_start(void)
{
    int disk = open("/dev/vda", O_RDONLY | O_CLOEXEC);
    if (disk >= 0) {
        if (mount("/dev/vda", "/lower", "erofs", MS_RDONLY, NULL) == 0) /* not the placeholder: undo */
            umount("/lower");
        ioctl(disk, BLKFLSBUF, 0); /* nothing of the placeholder may stay cached for the workload's image */
        close(disk);
    }
    if (mount("warm", "/upper", "tmpfs", 0, "mode=0755") == 0) {
        mkdir("/upper/lower", 0755);
        mkdir("/upper/data", 0755);
        mkdir("/upper/work", 0755);
        if (mount("overlay", "/newroot", "overlay", 0,
                  "lowerdir=/upper/lower,upperdir=/upper/data,workdir=/upper/work") == 0) {
            mkdir("/newroot/proc", 0755);
            if (mount("proc", "/newroot/proc", "proc", MS_NOSUID | MS_NOEXEC, NULL) == 0)
                umount("/newroot/proc");
            umount("/newroot");
        }
        umount("/upper");
    }
    bool cgroup = mount("cgroup2", GUEST_CGROUP, "cgroup2", MS_NOSUID | MS_NOEXEC | MS_NODEV, NULL) == 0;
    if (cgroup) {
        hd_write_file(GUEST_CGROUP "/cgroup.subtree_control", "+memory +pids", 13, NULL);
        mkdir(GUEST_CGROUP "/warm", 0755);
        hd_write_file(GUEST_CGROUP "/warm/pids.max", "64", 2, NULL);
    }
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock >= 0) {
        interface_up(sock, "lo"); /* as the workload's start does */
        close(sock);
    }
    int out[2];
    if (pipe2(out, O_CLOEXEC) == 0) {
        pid_t pid = fork();
        if (pid == 0) {
            setsid();
            dup2(out[1], 1);
            if (cgroup)
                hd_write_file(GUEST_CGROUP "/warm/cgroup.procs", "0", 1, NULL);
            char *const argv[] = {(char *)HD_INIT_REHEARSAL_ARGV0, NULL};
            execv("/init", argv);
            _exit(127);
        }
        close(out[1]);
        char buf[64];
        while (pid > 0 && read(out[0], buf, sizeof(buf)) > 0)
            ;
        close(out[0]);
        if (pid > 0)
            waitpid(pid, NULL, 0);
    }
    if (cgroup) {
        rmdir(GUEST_CGROUP "/warm");
        umount(GUEST_CGROUP);
    }
}
