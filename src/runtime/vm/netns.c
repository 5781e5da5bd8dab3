/*
 * netns.c - a VM guest's NIC on an engine's network (hedge-oci-vm, Kata's "tc redirect" model).
 *
 * podman, CNI and containerd make a network namespace for a container, put one end of a veth in it (eth0)
 * with an address and a default route, and name the namespace in config.json. A VM cannot join it: QEMU
 * runs in the host's namespace and the guest has its own kernel. So, inside the engine's namespace (the
 * calling thread setns()es there and back): read the interface's MAC, IPv4 address, MTU and default
 * gateway; make a tap there (opened in the namespace, the tap lives there; its fd goes to QEMU, which runs
 * in the host's namespace); and with tc, an ingress qdisc on each of the two and a u32 match-all filter
 * whose mirred action redirects every frame the veth receives out of the tap and every frame the guest
 * sends (the tap receives it) out of the veth. The guest's NIC gets the veth's MAC and address: for the
 * rest of the network (the bridge, the port forwards the engine set up on the host) the container's
 * address answers as before, now from the guest.
 *
 * The tap is not persistent: it goes with its last fd (QEMU's and ours). Undoing removes the veth's ingress
 * qdisc (its filter with it); the namespace is otherwise left as the engine made it (its address stays on
 * the veth: nothing reaches the namespace's own stack any more, every frame is redirected before it).
 *
 * The tc filters are set with iproute2's tc (no netlink code for tc classifiers in hedge): `tc -batch -`
 * run in the namespace.
 */
#include "runtime/vm/vm.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/util.h"

#define TAP_NAME "hdtap0"

/* Run `tc -batch -` in the current network namespace with commands on its stdin; its stderr into err. */
static int run_tc(const char *commands, bool quiet_fail, hd_error_t *err)
{
    int in[2], errp[2];
    if (pipe2(in, O_CLOEXEC) < 0)
        return hd_error_sys(err, "pipe");
    if (pipe2(errp, O_CLOEXEC) < 0) {
        close(in[0]);
        close(in[1]);
        return hd_error_sys(err, "pipe");
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(in[0]);
        close(in[1]);
        close(errp[0]);
        close(errp[1]);
        return hd_error_set(err, e, "fork");
    }
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (dup2(in[0], 0) < 0 || dup2(null >= 0 ? null : errp[1], 1) < 0 || dup2(errp[1], 2) < 0)
            _exit(127);
        static const char *const paths[] = {"/usr/sbin/tc", "/sbin/tc", "/usr/bin/tc"};
        for (size_t i = 0; i < ARRAY_SIZE(paths); i++)
            execl(paths[i], "tc", "-batch", "-", (char *)NULL);
        execlp("tc", "tc", "-batch", "-", (char *)NULL);
        fprintf(stderr, "tc (iproute2) is not installed\n");
        _exit(127);
    }
    close(in[0]);
    close(errp[1]);
    (void)hd_write_all(in[1], commands, strlen(commands));
    close(in[1]);
    char text[512];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(errp[0], text + len, sizeof(text) - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len == sizeof(text) - 1)
            break;
    }
    text[len] = '\0';
    close(errp[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (quiet_fail)
        return -1;
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == ' '))
        text[--len] = '\0';
    for (char *p = text; *p; p++)
        if (*p == '\n')
            *p = ' ';
    return hd_error_set(err, 0, "tc: %s", len ? text : "failed");
}

/* Enter the namespace at path (the calling thread); *back is the thread's own to return to. */
static int enter_netns(const char *path, int *back, hd_error_t *err)
{
    *back = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (*back < 0)
        return hd_error_sys(err, "open /proc/thread-self/ns/net");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) < 0) {
        hd_error_sys(err, "enter the network namespace %s", path);
        if (fd >= 0)
            close(fd);
        close(*back);
        *back = -1;
        return -1;
    }
    close(fd);
    return 0;
}

static void leave_netns(int *back)
{
    if (*back >= 0 && setns(*back, CLONE_NEWNET) < 0)
        abort(); /* the thread would go on in the engine's namespace: nothing sane is left to do */
    if (*back >= 0)
        close(*back);
    *back = -1;
}

/* The default route's gateway via ifname from /proc/thread-self/net/route (this thread's namespace). */
static void read_gateway(const char *ifname, char gateway[INET_ADDRSTRLEN])
{
    gateway[0] = '\0';
    FILE *f = fopen("/proc/thread-self/net/route", "re");
    if (f == NULL)
        return;
    char line[256];
    while (fgets(line, sizeof(line), f)) {
        char name[IF_NAMESIZE + 1];
        unsigned dest, gw, flags;
        if (sscanf(line, "%16s %x %x %x", name, &dest, &gw, &flags) == 4 && strcmp(name, ifname) == 0 && dest == 0 &&
            gw != 0) {
            struct in_addr a = {.s_addr = gw}; /* the kernel prints it in network order, as hex */
            inet_ntop(AF_INET, &a, gateway, INET_ADDRSTRLEN);
            break;
        }
    }
    fclose(f);
}

/* The engine's interface: eth0 if it exists, else the first one other than lo with an IPv4 address. */
static int find_interface(int sock, struct hd_vm_netns_link *l, hd_error_t *err)
{
    struct if_nameindex *names = if_nameindex();
    if (names == NULL)
        return hd_error_sys(err, "list the interfaces");
    const char *pick = NULL;
    for (struct if_nameindex *n = names; n->if_index; n++) {
        if (strcmp(n->if_name, "lo") == 0 || strcmp(n->if_name, TAP_NAME) == 0)
            continue;
        struct ifreq ifr = {0};
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", n->if_name);
        if (ioctl(sock, SIOCGIFADDR, &ifr) < 0)
            continue;
        if (pick == NULL || strcmp(n->if_name, "eth0") == 0)
            pick = n->if_name;
    }
    if (pick)
        snprintf(l->ifname, sizeof(l->ifname), "%s", pick);
    if_freenameindex(names);
    if (pick == NULL)
        return hd_error_set(err, 0, "no interface with an IPv4 address in it (the engine's network is not set up)");
    return 0;
}

static int read_interface(int sock, struct hd_vm_netns_link *l, hd_error_t *err)
{
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", l->ifname);
    if (ioctl(sock, SIOCGIFHWADDR, &ifr) < 0)
        return hd_error_sys(err, "%s: MAC address", l->ifname);
    const unsigned char *m = (const unsigned char *)ifr.ifr_hwaddr.sa_data;
    snprintf(l->mac, sizeof(l->mac), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
    if (ioctl(sock, SIOCGIFADDR, &ifr) < 0)
        return hd_error_sys(err, "%s: address", l->ifname);
    struct in_addr addr = ((struct sockaddr_in *)(void *)&ifr.ifr_addr)->sin_addr;
    if (ioctl(sock, SIOCGIFNETMASK, &ifr) < 0)
        return hd_error_sys(err, "%s: netmask", l->ifname);
    uint32_t mask = ntohl(((struct sockaddr_in *)(void *)&ifr.ifr_netmask)->sin_addr.s_addr);
    int prefix = 0;
    while (prefix < 32 && (mask & (0x80000000u >> prefix)))
        prefix++;
    char text[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &addr, text, sizeof(text));
    snprintf(l->address, sizeof(l->address), "%s/%d", text, prefix);
    if (ioctl(sock, SIOCGIFMTU, &ifr) < 0)
        return hd_error_sys(err, "%s: MTU", l->ifname);
    l->mtu = ifr.ifr_mtu;
    read_gateway(l->ifname, l->gateway);
    return 0;
}

/* The tap, opened here (so it lives in this namespace), with the veth's MTU, up. */
static int make_tap(int sock, struct hd_vm_netns_link *l, hd_error_t *err)
{
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return hd_error_sys(err, "open /dev/net/tun");
    struct ifreq ifr = {0};
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", TAP_NAME);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        hd_error_sys(err, "create the tap %s (another VM on this network namespace?)", TAP_NAME);
        close(fd);
        return -1;
    }
    snprintf(l->tap, sizeof(l->tap), "%s", ifr.ifr_name);
    struct ifreq req = {0};
    snprintf(req.ifr_name, sizeof(req.ifr_name), "%s", l->tap);
    req.ifr_mtu = l->mtu;
    if (ioctl(sock, SIOCSIFMTU, &req) < 0 || ioctl(sock, SIOCGIFFLAGS, &req) < 0) {
        hd_error_sys(err, "tap %s: MTU %d", l->tap, l->mtu);
        close(fd);
        return -1;
    }
    req.ifr_flags |= IFF_UP;
    if (ioctl(sock, SIOCSIFFLAGS, &req) < 0) {
        hd_error_sys(err, "tap %s: up", l->tap);
        close(fd);
        return -1;
    }
    l->tap_fd = fd;
    return 0;
}

/* The redirects, once the veth's ingress qdisc is ours (tc prints "Exclusivity flag on" when the engine has
 * one already: then nothing is touched). */
static char *redirect_commands(const struct hd_vm_netns_link *l)
{
    return hd_xasprintf("filter add dev %s parent ffff: protocol all u32 match u32 0 0 action mirred egress "
                        "redirect dev %s\n"
                        "qdisc add dev %s ingress\n"
                        "filter add dev %s parent ffff: protocol all u32 match u32 0 0 action mirred egress "
                        "redirect dev %s\n",
                        l->ifname, l->tap, l->tap, l->tap, l->ifname);
}

int hd_vm_netns_attach(const char *netns_path, struct hd_vm_netns_link *l, hd_error_t *err)
{
    *l = (struct hd_vm_netns_link){.tap_fd = -1};
    int back = -1;
    if (enter_netns(netns_path, &back, err) < 0)
        return -1;
    int rc = -1;
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) {
        hd_error_sys(err, "socket");
        goto out;
    }
    if (find_interface(sock, l, err) < 0 || read_interface(sock, l, err) < 0 || make_tap(sock, l, err) < 0)
        goto out;
    char *first = hd_xasprintf("qdisc add dev %s ingress\n", l->ifname);
    int tc = run_tc(first, false, err);
    free(first);
    if (tc < 0) {
        close(l->tap_fd);
        l->tap_fd = -1;
        hd_error_prefix(err, "an ingress qdisc on %s (has it one already?)", l->ifname);
        goto out;
    }
    char *commands = redirect_commands(l);
    tc = run_tc(commands, false, err);
    free(commands);
    if (tc < 0) {
        hd_error_t ignored = NULL;
        cleanup_free char *undo = hd_xasprintf("qdisc del dev %s ingress\n", l->ifname);
        run_tc(undo, true, &ignored); /* the tap's own goes with the tap */
        hd_error_free(&ignored);
        close(l->tap_fd);
        l->tap_fd = -1;
        hd_error_prefix(err, "redirect %s and %s", l->ifname, l->tap);
        goto out;
    }
    rc = 0;
out:
    if (sock >= 0)
        close(sock);
    leave_netns(&back);
    return rc < 0 ? hd_error_prefix(err, "network namespace %s", netns_path) : 0;
}

int hd_vm_netns_detach(const char *netns_path, const char *ifname, hd_error_t *err)
{
    int back = -1;
    if (access(netns_path, F_OK) < 0)
        return 0; /* the engine removed its namespace, the veth with it */
    if (enter_netns(netns_path, &back, err) < 0)
        return -1;
    if (if_nametoindex(ifname) != 0) {
        cleanup_free char *commands = hd_xasprintf("qdisc del dev %s ingress\n", ifname);
        hd_error_t ignored = NULL;
        run_tc(commands, true, &ignored); /* none: already removed (the holder did it) */
        hd_error_free(&ignored);
    }
    leave_netns(&back);
    return 0;
}
