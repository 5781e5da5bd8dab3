/*
 * net.c - workload networking: the none, host and bridge modes of containers
 * and the tap of VMs (see net.h and docs/network.md).
 *
 * Links, addresses and routes are made over rtnetlink (libmnl), never by
 * spawning `ip`: container start speed matters, and one netlink message does
 * what `ip` needs a process for. The veth pair is created with its peer
 * directly inside the workload's namespace (IFLA_NET_NS_PID) and already named
 * eth0 there, the host end already enslaved to the bridge and up, so the host
 * side is one message. The inside (lo, address, default route) is configured
 * through a netlink socket opened inside the workload's namespace: the calling
 * thread enters it with setns(), opens the socket, configures, and returns.
 *
 * The masquerade rule lives in its own nftables table (ip hedge-<bridge>),
 * written with libnftables as one atomic transaction that replaces the whole
 * table, so it is idempotent and never touches anybody else's rules.
 * libnftables is loaded with dlopen() on the rare occasion the table is
 * missing: linked directly, it and its dependencies (libxml2, ICU, libstdc++,
 * ...) cost every `hedge` invocation ~20 ms of dynamic linking.
 *
 * Addresses come from a small allocator under <state>/net/<bridge>/: a lock
 * file (flock) and one lease file per address in leases/, named by the
 * address, holding the run id and the host link (veth host end or tap). A
 * lease is stale when its link no longer exists (the workload's namespace
 * died and took the veth with it, or the tap's last fd was closed): stale
 * leases are reclaimed at the next allocation. The lock is held from the
 * allocation until the link exists, so a fresh lease is never seen linkless.
 *
 * Policy: the bridge, its gateway address, the nftables table and
 * ip_forward=1 stay when the last workload goes (like docker0); teardown
 * removes only the workload's own link and lease.
 */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libmnl/libmnl.h>
#include <linux/if_link.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/if_tun.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <nftables/libnftables.h>

#include "net/net.h"
#include "base/dynlib.h"
#include "base/util.h"

#define NET_DEFAULT_BRIDGE "hedge0"
#define NET_DEFAULT_SUBNET "10.89.0.0/24"
#define NET_BUFFER_SIZE 8192 /* MNL_SOCKET_BUFFER_SIZE is a runtime expression (a VLA) */

struct hd_net {
    enum hd_net_mode mode;
    char link[IF_NAMESIZE]; /* host end of the veth, or the tap; "" for none */
    char *lease_path;       /* NULL when no address is leased */
    int tap_fd;             /* -1 unless a tap */
    char *address;          /* "10.89.0.2/24" */
    char *gateway;          /* "10.89.0.1" */
};

/* The bridge and its subnet, from the environment. Addresses in host byte order. */
struct net_config {
    char bridge[IF_NAMESIZE];
    uint32_t network;
    unsigned prefix;
    uint32_t gateway;
    uint32_t broadcast;
};

/* ---- configuration ---- */

static bool net_valid_ifname(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len >= IF_NAMESIZE)
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '_' || *p == '.'))
            return false;
    return true;
}

static int net_config_load(struct net_config *cfg, hd_error_t *err)
{
    const char *bridge = getenv("HEDGE_BRIDGE");
    if (bridge == NULL || *bridge == '\0')
        bridge = NET_DEFAULT_BRIDGE;
    if (!net_valid_ifname(bridge))
        return hd_error_set(err, EINVAL,
                            "HEDGE_BRIDGE \"%s\": not a valid interface name "
                            "(1-15 of [A-Za-z0-9_.-])",
                            bridge);
    snprintf(cfg->bridge, sizeof cfg->bridge, "%s", bridge);

    const char *subnet = getenv("HEDGE_BRIDGE_SUBNET");
    if (subnet == NULL || *subnet == '\0')
        subnet = NET_DEFAULT_SUBNET;
    char addr_text[INET_ADDRSTRLEN];
    const char *slash = strchr(subnet, '/');
    char *end = NULL;
    struct in_addr addr;
    unsigned long prefix = slash ? strtoul(slash + 1, &end, 10) : 0;
    if (slash == NULL || (size_t)(slash - subnet) >= sizeof addr_text || end == slash + 1 || *end != '\0')
        return hd_error_set(err, EINVAL, "HEDGE_BRIDGE_SUBNET \"%s\": expected an IPv4 CIDR like %s", subnet,
                            NET_DEFAULT_SUBNET);
    memcpy(addr_text, subnet, (size_t)(slash - subnet));
    addr_text[slash - subnet] = '\0';
    if (inet_pton(AF_INET, addr_text, &addr) != 1)
        return hd_error_set(err, EINVAL, "HEDGE_BRIDGE_SUBNET \"%s\": \"%s\" is not an IPv4 address", subnet,
                            addr_text);
    /* /16 bounds the allocator's bitmap; /30 leaves one address beside the gateway. */
    if (prefix < 16 || prefix > 30)
        return hd_error_set(err, EINVAL, "HEDGE_BRIDGE_SUBNET \"%s\": prefix must be 16 to 30", subnet);
    uint32_t mask = ~0u << (32 - prefix);
    uint32_t network = ntohl(addr.s_addr);
    if (network & ~mask)
        return hd_error_set(err, EINVAL,
                            "HEDGE_BRIDGE_SUBNET \"%s\": host bits are set "
                            "(give the network address)",
                            subnet);
    cfg->network = network;
    cfg->prefix = (unsigned)prefix;
    cfg->gateway = network + 1;
    cfg->broadcast = network | ~mask;
    return 0;
}

static void net_format_ip(uint32_t host_order, char buf[INET_ADDRSTRLEN])
{
    struct in_addr a = {.s_addr = htonl(host_order)};
    inet_ntop(AF_INET, &a, buf, INET_ADDRSTRLEN);
}

/* ---- rtnetlink ---- */

struct rtnl {
    struct mnl_socket *sock;
    unsigned portid;
    unsigned seq;
};

static int rtnl_open(struct rtnl *r, hd_error_t *err)
{
    r->sock = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
    if (r->sock == NULL)
        return hd_error_sys(err, "open rtnetlink socket");
    if (mnl_socket_bind(r->sock, 0, MNL_SOCKET_AUTOPID) < 0) {
        int e = errno;
        mnl_socket_close(r->sock);
        r->sock = NULL;
        return hd_error_set(err, e, "bind rtnetlink socket");
    }
    r->portid = mnl_socket_get_portid(r->sock);
    r->seq = (unsigned)time(NULL);
    return 0;
}

static void rtnl_close(struct rtnl *r)
{
    if (r->sock)
        mnl_socket_close(r->sock);
    r->sock = NULL;
}

/* Send one request and wait for its acknowledgement. Returns 0 or -errno. */
static int rtnl_talk(struct rtnl *r, struct nlmsghdr *nlh)
{
    nlh->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
    nlh->nlmsg_seq = ++r->seq;
    if (mnl_socket_sendto(r->sock, nlh, nlh->nlmsg_len) < 0)
        return -errno;
    char buf[NET_BUFFER_SIZE];
    for (;;) {
        ssize_t n = mnl_socket_recvfrom(r->sock, buf, sizeof buf);
        if (n < 0)
            return -errno;
        int ret = mnl_cb_run(buf, (size_t)n, nlh->nlmsg_seq, r->portid, NULL, NULL);
        if (ret < 0)
            return -errno;
        if (ret == MNL_CB_STOP)
            return 0;
    }
}

static struct nlmsghdr *rtnl_link_msg(char *buf, uint16_t type, uint16_t flags, int index, unsigned up_flags)
{
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = flags;
    struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof *ifi);
    ifi->ifi_family = AF_UNSPEC;
    ifi->ifi_index = index;
    ifi->ifi_flags = up_flags;
    ifi->ifi_change = up_flags;
    return nlh;
}

static int rtnl_link_set_up(struct rtnl *r, int index)
{
    char buf[NET_BUFFER_SIZE];
    return rtnl_talk(r, rtnl_link_msg(buf, RTM_NEWLINK, 0, index, IFF_UP));
}

static int rtnl_bridge_create(struct rtnl *r, const char *name)
{
    char buf[NET_BUFFER_SIZE];
    struct nlmsghdr *nlh = rtnl_link_msg(buf, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, 0, IFF_UP);
    mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
    struct nlattr *info = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
    mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "bridge");
    mnl_attr_nest_end(nlh, info);
    return rtnl_talk(r, nlh);
}

/*
 * A veth pair: host_name on the host, enslaved to master and up; the peer
 * named peer_name, directly in the network namespace of peer_pid (down: the
 * inside brings it up).
 */
static int rtnl_veth_create(struct rtnl *r, const char *host_name, int master, const char *peer_name, pid_t peer_pid)
{
    char buf[NET_BUFFER_SIZE];
    struct nlmsghdr *nlh = rtnl_link_msg(buf, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, 0, IFF_UP);
    mnl_attr_put_strz(nlh, IFLA_IFNAME, host_name);
    mnl_attr_put_u32(nlh, IFLA_MASTER, (uint32_t)master);
    struct nlattr *info = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
    mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "veth");
    struct nlattr *data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
    /* VETH_INFO_PEER carries an ifinfomsg before its attributes: not a plain
     * nest, so no NLA_F_NESTED flag (the kernel refuses it there). */
    struct nlattr *peer = mnl_nlmsg_get_payload_tail(nlh);
    mnl_attr_put(nlh, VETH_INFO_PEER, 0, NULL);
    struct ifinfomsg *peer_ifi = mnl_nlmsg_put_extra_header(nlh, sizeof *peer_ifi);
    peer_ifi->ifi_family = AF_UNSPEC; /* no IFF_UP: veth_open of a half-made pair fails ENOTCONN */
    mnl_attr_put_strz(nlh, IFLA_IFNAME, peer_name);
    mnl_attr_put_u32(nlh, IFLA_NET_NS_PID, (uint32_t)peer_pid);
    mnl_attr_nest_end(nlh, peer);
    mnl_attr_nest_end(nlh, data);
    mnl_attr_nest_end(nlh, info);
    return rtnl_talk(r, nlh);
}

static int rtnl_link_set_master_up(struct rtnl *r, int index, int master)
{
    char buf[NET_BUFFER_SIZE];
    struct nlmsghdr *nlh = rtnl_link_msg(buf, RTM_NEWLINK, 0, index, IFF_UP);
    mnl_attr_put_u32(nlh, IFLA_MASTER, (uint32_t)master);
    return rtnl_talk(r, nlh);
}

static int rtnl_link_delete(struct rtnl *r, const char *name)
{
    char buf[NET_BUFFER_SIZE];
    struct nlmsghdr *nlh = rtnl_link_msg(buf, RTM_DELLINK, 0, 0, 0);
    mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
    return rtnl_talk(r, nlh);
}

static int rtnl_addr_add(struct rtnl *r, int index, uint32_t addr, unsigned prefix, uint32_t broadcast)
{
    char buf[NET_BUFFER_SIZE];
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = RTM_NEWADDR;
    nlh->nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
    struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof *ifa);
    ifa->ifa_family = AF_INET;
    ifa->ifa_prefixlen = (unsigned char)prefix;
    ifa->ifa_scope = RT_SCOPE_UNIVERSE;
    ifa->ifa_index = (unsigned)index;
    mnl_attr_put_u32(nlh, IFA_LOCAL, htonl(addr));
    mnl_attr_put_u32(nlh, IFA_ADDRESS, htonl(addr));
    mnl_attr_put_u32(nlh, IFA_BROADCAST, htonl(broadcast));
    return rtnl_talk(r, nlh);
}

static int rtnl_default_route_add(struct rtnl *r, int index, uint32_t gateway)
{
    char buf[NET_BUFFER_SIZE];
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = RTM_NEWROUTE;
    nlh->nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
    struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof *rtm);
    rtm->rtm_family = AF_INET;
    rtm->rtm_dst_len = 0;
    rtm->rtm_table = RT_TABLE_MAIN;
    rtm->rtm_protocol = RTPROT_BOOT;
    rtm->rtm_scope = RT_SCOPE_UNIVERSE;
    rtm->rtm_type = RTN_UNICAST;
    mnl_attr_put_u32(nlh, RTA_GATEWAY, htonl(gateway));
    mnl_attr_put_u32(nlh, RTA_OIF, (uint32_t)index);
    return rtnl_talk(r, nlh);
}

/* ---- the workload's namespace ---- */

/*
 * Refuse a pid that shares our network namespace: bridge mode would put an
 * eth0 and a default route on the host itself.
 */
static int net_check_separate_namespace(pid_t pid, hd_error_t *err)
{
    char path[64];
    struct stat theirs, ours;
    snprintf(path, sizeof path, "/proc/%d/ns/net", (int)pid);
    if (stat(path, &theirs) < 0)
        return hd_error_sys(err, "workload pid %d: %s", (int)pid, path);
    if (stat("/proc/thread-self/ns/net", &ours) < 0)
        return hd_error_sys(err, "stat /proc/thread-self/ns/net");
    if (theirs.st_dev == ours.st_dev && theirs.st_ino == ours.st_ino)
        return hd_error_set(err, EINVAL, "workload pid %d shares the caller's network namespace", (int)pid);
    return 0;
}

/*
 * Run fn inside the network namespace of pid: enter it, call fn (a socket it
 * opens stays bound to that namespace), and come back. Only the calling
 * thread moves, and only for those few system calls.
 */
static int net_in_namespace_of(pid_t pid, int (*fn)(void *arg, hd_error_t *err), void *arg, hd_error_t *err)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/net", (int)pid);
    cleanup_close int target = open(path, O_RDONLY | O_CLOEXEC);
    if (target < 0)
        return hd_error_sys(err, "open %s", path);
    cleanup_close int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self < 0)
        return hd_error_sys(err, "open /proc/thread-self/ns/net");
    if (setns(target, CLONE_NEWNET) < 0)
        return hd_error_sys(err, "enter network namespace of pid %d", (int)pid);
    hd_error_t inner_err = NULL;
    int ret = fn(arg, &inner_err);
    if (setns(self, CLONE_NEWNET) < 0) {
        /* Carrying on in the workload's namespace would configure the wrong host. */
        perror("hedge: return to own network namespace");
        abort();
    }
    if (ret < 0) {
        hd_error_set(err, inner_err->errnum, "network namespace of pid %d: %s", (int)pid, inner_err->message);
        hd_error_free(&inner_err);
        return -1;
    }
    return 0;
}

static int rtnl_open_here(void *r, hd_error_t *err)
{
    return rtnl_open(r, err);
}

/* A netlink socket inside the network namespace of pid. */
static int rtnl_open_in(struct rtnl *r, pid_t pid, hd_error_t *err)
{
    return net_in_namespace_of(pid, rtnl_open_here, r, err);
}

/* lo up in the current namespace, with the interface ioctls (as ifconfig does): a workload without a
 * network of its own needs nothing more, and no netlink library is loaded for it. */
static int net_lo_up_here(void *unused, hd_error_t *err)
{
    cleanup_close int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return hd_error_sys(err, "bring up lo: socket");
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
        return hd_error_sys(err, "bring up lo: get flags");
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
        return hd_error_sys(err, "bring up lo");
    return 0;
}

/* What RTM_GETLINK tells about one link. */
struct rtnl_link_info {
    int index;
    char kind[32]; /* IFLA_INFO_KIND ("bridge", "veth", "tun"), "" if none */
};

static int rtnl_link_kind_cb(const struct nlattr *attr, void *data)
{
    struct rtnl_link_info *info = data;
    if (mnl_attr_get_type(attr) == IFLA_INFO_KIND && mnl_attr_validate(attr, MNL_TYPE_STRING) == 0)
        snprintf(info->kind, sizeof info->kind, "%s", mnl_attr_get_str(attr));
    return MNL_CB_OK;
}

static int rtnl_link_attr_cb(const struct nlattr *attr, void *data)
{
    if (mnl_attr_get_type(attr) == IFLA_LINKINFO && mnl_attr_validate(attr, MNL_TYPE_NESTED) == 0)
        mnl_attr_parse_nested(attr, rtnl_link_kind_cb, data);
    return MNL_CB_OK;
}

static int rtnl_link_info_cb(const struct nlmsghdr *nlh, void *data)
{
    struct rtnl_link_info *info = data;
    const struct ifinfomsg *ifi = mnl_nlmsg_get_payload(nlh);
    info->index = ifi->ifi_index;
    mnl_attr_parse(nlh, sizeof *ifi, rtnl_link_attr_cb, info);
    return MNL_CB_OK;
}

/* Look up name in the namespace of r. Returns 0, -ENODEV if absent, or -errno. */
static int rtnl_link_query(struct rtnl *r, const char *name, struct rtnl_link_info *info)
{
    *info = (struct rtnl_link_info){0};
    char buf[NET_BUFFER_SIZE];
    struct nlmsghdr *nlh = rtnl_link_msg(buf, RTM_GETLINK, NLM_F_REQUEST, 0, 0);
    mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
    unsigned seq = nlh->nlmsg_seq = ++r->seq;
    if (mnl_socket_sendto(r->sock, nlh, nlh->nlmsg_len) < 0)
        return -errno;
    ssize_t n = mnl_socket_recvfrom(r->sock, buf, sizeof buf);
    if (n < 0)
        return -errno;
    if (mnl_cb_run(buf, (size_t)n, seq, r->portid, rtnl_link_info_cb, info) < 0)
        return -errno;
    return info->index > 0 ? 0 : -ENODEV;
}

static int rtnl_link_index(struct rtnl *r, const char *name, int *index)
{
    struct rtnl_link_info info;
    int ret = rtnl_link_query(r, name, &info);
    *index = info.index;
    return ret;
}

static int net_inside_lo_up(struct rtnl *inside, hd_error_t *err)
{
    int lo = 0, ret;
    if ((ret = rtnl_link_index(inside, "lo", &lo)) < 0 || (ret = rtnl_link_set_up(inside, lo)) < 0)
        return hd_error_set(err, -ret, "bring up lo");
    return 0;
}

/* ---- masquerade and forwarding ---- */

/* The part of libnftables hedge uses, resolved at run time (see the head of this file). */
struct nftables_api {
    struct nft_ctx *(*ctx_new)(uint32_t flags);
    int (*ctx_buffer_output)(struct nft_ctx *ctx);
    int (*ctx_buffer_error)(struct nft_ctx *ctx);
    int (*run_cmd_from_buffer)(struct nft_ctx *ctx, const char *buf);
    const char *(*ctx_get_error_buffer)(struct nft_ctx *ctx);
    void (*ctx_free)(struct nft_ctx *ctx);
};

static int net_nftables_load(struct nftables_api *api, hd_error_t *err)
{
    /* kept loaded for the life of the process once needed: no dlclose */
    char why[160];
    void *lib = hd_dlopen("libnftables.so.1", why, sizeof(why));
    if (lib == NULL)
        return hd_error_set(err, 0, "nftables: load libnftables.so.1: %s (install libnftables1)", why);
    struct {
        const char *name;
        void **slot;
    } symbols[] = {
        {"nft_ctx_new", (void **)&api->ctx_new},
        {"nft_ctx_buffer_output", (void **)&api->ctx_buffer_output},
        {"nft_ctx_buffer_error", (void **)&api->ctx_buffer_error},
        {"nft_run_cmd_from_buffer", (void **)&api->run_cmd_from_buffer},
        {"nft_ctx_get_error_buffer", (void **)&api->ctx_get_error_buffer},
        {"nft_ctx_free", (void **)&api->ctx_free},
    };
    for (size_t i = 0; i < ARRAY_SIZE(symbols); i++) {
        *symbols[i].slot = dlsym(lib, symbols[i].name);
        if (*symbols[i].slot == NULL)
            return hd_error_set(err, 0, "nftables: libnftables.so.1 has no %s", symbols[i].name);
    }
    return 0;
}

/*
 * Replace the table ip hedge-<bridge> with one postrouting rule that
 * masquerades what leaves the subnet through any other interface. The three
 * commands run as one transaction: the rule never goes missing for others.
 */
static int net_masquerade_ensure(const struct net_config *cfg, hd_error_t *err)
{
    char net_text[INET_ADDRSTRLEN];
    net_format_ip(cfg->network, net_text);
    cleanup_free char *rules = hd_xasprintf("add table ip hedge-%1$s\n"
                                            "delete table ip hedge-%1$s\n"
                                            "table ip hedge-%1$s {\n"
                                            "  chain postrouting {\n"
                                            "    type nat hook postrouting priority srcnat; policy accept;\n"
                                            "    ip saddr %2$s/%3$u oifname != \"%1$s\" masquerade\n"
                                            "  }\n"
                                            "}\n",
                                            cfg->bridge, net_text, cfg->prefix);
    struct nftables_api nft_api;
    if (net_nftables_load(&nft_api, err) < 0)
        return -1;
    struct nft_ctx *nft = nft_api.ctx_new(NFT_CTX_DEFAULT);
    if (nft == NULL)
        return hd_error_set(err, ENOMEM, "nftables: create context");
    nft_api.ctx_buffer_output(nft);
    nft_api.ctx_buffer_error(nft);
    int ret = 0;
    if (nft_api.run_cmd_from_buffer(nft, rules) != 0) {
        cleanup_free char *msg = hd_xstrdup(nft_api.ctx_get_error_buffer(nft));
        size_t len = strlen(msg);
        while (len > 0 && msg[len - 1] == '\n')
            msg[--len] = '\0';
        ret = hd_error_set(err, 0, "nftables: masquerade rule for %s: %s", cfg->bridge, msg);
    }
    nft_api.ctx_free(nft);
    return ret;
}

/*
 * Whether the chain postrouting of table ip hedge-<bridge> exists: one
 * NFT_MSG_GETCHAIN over nfnetlink (tens of microseconds), so that the costly
 * libnftables transaction (about 10 ms: it parses and loads a cache) runs
 * only when the rule is missing, not at every workload start.
 */
static bool net_masquerade_present(const struct net_config *cfg)
{
    struct mnl_socket *sock = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
    if (sock == NULL)
        return false;
    bool present = false;
    if (mnl_socket_bind(sock, 0, MNL_SOCKET_AUTOPID) == 0) {
        char buf[NET_BUFFER_SIZE];
        cleanup_free char *table = hd_xasprintf("hedge-%s", cfg->bridge);
        struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
        nlh->nlmsg_type = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETCHAIN;
        nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
        nlh->nlmsg_seq = 1;
        struct nfgenmsg *nfg = mnl_nlmsg_put_extra_header(nlh, sizeof *nfg);
        nfg->nfgen_family = NFPROTO_IPV4;
        nfg->version = NFNETLINK_V0;
        mnl_attr_put_strz(nlh, NFTA_CHAIN_TABLE, table);
        mnl_attr_put_strz(nlh, NFTA_CHAIN_NAME, "postrouting");
        unsigned portid = mnl_socket_get_portid(sock);
        if (mnl_socket_sendto(sock, nlh, nlh->nlmsg_len) >= 0) {
            /* The answer is the chain (then an ack), or an error: ENOENT when missing. */
            ssize_t n;
            int ret = MNL_CB_OK;
            while (ret == MNL_CB_OK && (n = mnl_socket_recvfrom(sock, buf, sizeof buf)) > 0) {
                const struct nlmsghdr *reply = (const struct nlmsghdr *)buf;
                if (reply->nlmsg_type == ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWCHAIN))
                    present = true;
                ret = mnl_cb_run(buf, (size_t)n, 1, portid, NULL, NULL);
            }
        }
    }
    mnl_socket_close(sock);
    return present;
}

/* Routing between the bridge and the uplink needs ip_forward in this namespace. */
static int net_forwarding_ensure(hd_error_t *err)
{
    static const char path[] = "/proc/sys/net/ipv4/ip_forward";
    cleanup_free char *value = NULL;
    if (hd_read_file(path, &value, NULL, err) < 0)
        return -1;
    if (value[0] == '1')
        return 0;
    return hd_write_file(path, "1\n", 2, err);
}

/* The bridge exists, carries the gateway address, is up, and the rule exists. */
static int net_bridge_ensure(struct rtnl *host, const struct net_config *cfg, int *index, hd_error_t *err)
{
    struct rtnl_link_info link = {0};
    int ret = rtnl_link_query(host, cfg->bridge, &link);
    if (ret == -ENODEV) {
        if ((ret = rtnl_bridge_create(host, cfg->bridge)) < 0 && ret != -EEXIST)
            return hd_error_set(err, -ret, "create bridge %s", cfg->bridge);
        ret = rtnl_link_query(host, cfg->bridge, &link);
    }
    if (ret < 0)
        return hd_error_set(err, -ret, "bridge %s", cfg->bridge);
    /* Never put the gateway address on someone else's interface. */
    if (strcmp(link.kind, "bridge") != 0)
        return hd_error_set(err, EEXIST, "bridge %s: the interface exists and is not a bridge (%s)", cfg->bridge,
                            link.kind[0] ? link.kind : "no link kind");
    *index = link.index;
    ret = rtnl_addr_add(host, *index, cfg->gateway, cfg->prefix, cfg->broadcast);
    if (ret < 0 && ret != -EEXIST) {
        char gw[INET_ADDRSTRLEN];
        net_format_ip(cfg->gateway, gw);
        return hd_error_set(err, -ret, "bridge %s: add address %s/%u", cfg->bridge, gw, cfg->prefix);
    }
    if ((ret = rtnl_link_set_up(host, *index)) < 0)
        return hd_error_set(err, -ret, "bridge %s: set up", cfg->bridge);
    if (net_forwarding_ensure(err) < 0)
        return hd_error_prefix(err, "bridge %s", cfg->bridge);
    if (!net_masquerade_present(cfg) && net_masquerade_ensure(cfg, err) < 0)
        return -1;
    return 0;
}

/* ---- address allocator ---- */

struct net_leases {
    char *dir;   /* <state>/net/<bridge>/leases */
    int lock_fd; /* flock'ed <state>/net/<bridge>/lock */
};

static void net_leases_close(struct net_leases *l)
{
    free(l->dir);
    l->dir = NULL;
    if (l->lock_fd >= 0)
        close(l->lock_fd); /* drops the flock */
    l->lock_fd = -1;
}

static int net_leases_lock(const char *state_dir, const struct net_config *cfg, struct net_leases *l, hd_error_t *err)
{
    cleanup_free char *base = hd_xasprintf("%s/net/%s", state_dir, cfg->bridge);
    l->dir = hd_xasprintf("%s/leases", base);
    l->lock_fd = -1;
    if (hd_mkdir_p(l->dir, 0700, err) < 0)
        return -1;
    cleanup_free char *lock = hd_xasprintf("%s/lock", base);
    l->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (l->lock_fd < 0)
        return hd_error_sys(err, "open %s", lock);
    while (flock(l->lock_fd, LOCK_EX) < 0)
        if (errno != EINTR)
            return hd_error_sys(err, "lock %s", lock);
    return 0;
}

/* The link named in a lease file ("<id> <link>\n"); false if unreadable. */
static bool net_lease_link(int dirfd, const char *name, char link[IF_NAMESIZE])
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    char buf[128];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    char id[64];
    return sscanf(buf, "%63s %15s", id, link) == 2;
}

/*
 * Lease the lowest free address of the subnet for (id, link) while holding
 * the lock; reclaim leases whose link is gone. Fills *addr and *path.
 */
static int net_lease_take(struct net_leases *l, const struct net_config *cfg, const char *id, const char *link,
                          uint32_t *addr, char **path, hd_error_t *err)
{
    uint32_t size = cfg->broadcast - cfg->network + 1;
    cleanup_free unsigned char *used = hd_xcalloc(size / 8 + 1, 1);
    DIR *d = opendir(l->dir);
    if (d == NULL)
        return hd_error_sys(err, "open %s", l->dir);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct in_addr a;
        if (e->d_name[0] == '.')
            continue;
        if (inet_pton(AF_INET, e->d_name, &a) != 1)
            continue; /* not a lease; leave it alone */
        uint32_t host = ntohl(a.s_addr);
        char owner[IF_NAMESIZE];
        bool live = net_lease_link(dirfd(d), e->d_name, owner) && if_nametoindex(owner) != 0;
        if (!live) {
            unlinkat(dirfd(d), e->d_name, 0); /* stale: its workload is gone */
            continue;
        }
        if (host >= cfg->network && host <= cfg->broadcast)
            used[(host - cfg->network) / 8] |= (unsigned char)(1u << ((host - cfg->network) % 8));
    }
    closedir(d);
    for (uint32_t host = cfg->gateway + 1; host < cfg->broadcast; host++) {
        uint32_t bit = host - cfg->network;
        if (used[bit / 8] & (1u << (bit % 8)))
            continue;
        char text[INET_ADDRSTRLEN];
        net_format_ip(host, text);
        cleanup_free char *lease = hd_xasprintf("%s/%s", l->dir, text);
        cleanup_free char *content = hd_xasprintf("%s %s\n", id, link);
        cleanup_close int fd = open(lease, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
            return hd_error_sys(err, "create lease %s", lease);
        if (write(fd, content, strlen(content)) != (ssize_t)strlen(content)) {
            int saved = errno;
            unlink(lease);
            return hd_error_set(err, saved, "write lease %s", lease);
        }
        *addr = host;
        *path = get_and_reset(&lease);
        return 0;
    }
    char net_text[INET_ADDRSTRLEN];
    net_format_ip(cfg->network, net_text);
    return hd_error_set(err, ENOSPC, "no free address in %s/%u", net_text, cfg->prefix);
}

/* ---- setup and teardown ---- */

static struct hd_net *net_new(enum hd_net_mode mode)
{
    struct hd_net *n = hd_xcalloc(1, sizeof *n);
    n->mode = mode;
    n->tap_fd = -1;
    return n;
}

static void net_free(struct hd_net *n)
{
    if (n == NULL)
        return;
    if (n->tap_fd >= 0)
        close(n->tap_fd);
    free(n->lease_path);
    free(n->address);
    free(n->gateway);
    free(n);
}

/* "hd" or "ht" + the run id, as a host interface name. */
static int net_link_name(const char *kind, const char *id, char name[IF_NAMESIZE], hd_error_t *err)
{
    snprintf(name, IF_NAMESIZE, "%s%.12s", kind, id);
    if (!net_valid_ifname(name) || strlen(id) > 12)
        return hd_error_set(err, EINVAL, "run id \"%s\" cannot name a network interface", id);
    return 0;
}

/* Fill n->address / n->gateway from a leased address. */
static void net_record_address(struct hd_net *n, const struct net_config *cfg, uint32_t addr)
{
    char a[INET_ADDRSTRLEN], gw[INET_ADDRSTRLEN];
    net_format_ip(addr, a);
    net_format_ip(cfg->gateway, gw);
    n->address = hd_xasprintf("%s/%u", a, cfg->prefix);
    n->gateway = hd_xstrdup(gw);
}

static int net_setup_none(pid_t pid, hd_error_t *err)
{
    if (net_check_separate_namespace(pid, err) < 0)
        return -1;
    return net_in_namespace_of(pid, net_lo_up_here, NULL, err);
}

/* Inside the workload: lo and eth0 up, the address on eth0, the default route. */
static int net_configure_inside(pid_t pid, const struct net_config *cfg, uint32_t addr, hd_error_t *err)
{
    struct rtnl inside = {0};
    if (rtnl_open_in(&inside, pid, err) < 0)
        return -1;
    int eth0 = 0, ret = -1;
    if (net_inside_lo_up(&inside, err) < 0)
        goto out;
    if ((ret = rtnl_link_index(&inside, "eth0", &eth0)) < 0) {
        ret = hd_error_set(err, -ret, "find eth0");
        goto out;
    }
    if ((ret = rtnl_addr_add(&inside, eth0, addr, cfg->prefix, cfg->broadcast)) < 0) {
        ret = hd_error_set(err, -ret, "eth0: add address");
        goto out;
    }
    if ((ret = rtnl_link_set_up(&inside, eth0)) < 0) {
        ret = hd_error_set(err, -ret, "eth0: set up");
        goto out;
    }
    if ((ret = rtnl_default_route_add(&inside, eth0, cfg->gateway)) < 0) {
        char gw[INET_ADDRSTRLEN];
        net_format_ip(cfg->gateway, gw);
        ret = hd_error_set(err, -ret, "add default route via %s", gw);
        goto out;
    }
    ret = 0;
out:
    rtnl_close(&inside);
    return ret;
}

/*
 * The first half of attaching a workload to the bridge, shared by veth
 * (containers) and tap (VMs): the config, a link name "<prefix><id>", the
 * rtnetlink socket, the bridge, and an address lease taken under the lease
 * lock. The caller then creates its link, closes the lease lock once the link
 * exists (the lease is live from then on), and ends with net_attach_done or,
 * on failure, net_attach_abort (which also releases the lease).
 */
struct net_attach {
    struct net_config cfg;
    struct hd_net *net;
    struct rtnl host;
    struct net_leases leases;
    uint32_t addr;
    int bridge;
};

static void net_attach_abort(struct net_attach *a)
{
    if (a->net->lease_path)
        unlink(a->net->lease_path);
    net_leases_close(&a->leases);
    rtnl_close(&a->host);
    net_free(a->net);
    a->net = NULL;
}

static int net_attach_begin(const char *state_dir, const char *prefix, const char *id, struct net_attach *a,
                            hd_error_t *err)
{
    *a = (struct net_attach){.leases = {.lock_fd = -1}};
    if (net_config_load(&a->cfg, err) < 0)
        return -1;
    a->net = net_new(HD_NET_BRIDGE);
    if (net_link_name(prefix, id, a->net->link, err) < 0 || rtnl_open(&a->host, err) < 0 ||
        net_leases_lock(state_dir, &a->cfg, &a->leases, err) < 0 ||
        net_bridge_ensure(&a->host, &a->cfg, &a->bridge, err) < 0 ||
        net_lease_take(&a->leases, &a->cfg, id, a->net->link, &a->addr, &a->net->lease_path, err) < 0) {
        net_attach_abort(a);
        return -1;
    }
    return 0;
}

static void net_attach_done(struct net_attach *a, struct hd_net **out)
{
    net_leases_close(&a->leases);
    rtnl_close(&a->host);
    net_record_address(a->net, &a->cfg, a->addr);
    *out = a->net;
}

static int net_setup_bridge(const char *state_dir, const char *id, pid_t pid, struct hd_net **out, hd_error_t *err)
{
    struct net_attach a;
    int ret;
    if (net_check_separate_namespace(pid, err) < 0 || net_attach_begin(state_dir, "hd", id, &a, err) < 0)
        return -1;
    if ((ret = rtnl_veth_create(&a.host, a.net->link, a.bridge, "eth0", pid)) < 0) {
        hd_error_set(err, -ret, "create veth %s (eth0 in pid %d)", a.net->link, (int)pid);
        goto fail;
    }
    net_leases_close(&a.leases); /* the link exists: the lease is live */
    if (net_configure_inside(pid, &a.cfg, a.addr, err) < 0) {
        rtnl_link_delete(&a.host, a.net->link);
        goto fail;
    }
    net_attach_done(&a, out);
    return 0;
fail:
    net_attach_abort(&a);
    return -1;
}

int hd_net_setup(const char *state_dir, const char *id, enum hd_net_mode mode, pid_t pid, struct hd_net **out,
                 hd_error_t *err)
{
    *out = NULL;
    switch (mode) {
    case HD_NET_HOST: return 0;
    case HD_NET_DEFAULT:
    case HD_NET_NONE:
        if (net_setup_none(pid, err) < 0)
            return hd_error_prefix(err, "network none");
        *out = net_new(HD_NET_NONE);
        return 0;
    case HD_NET_BRIDGE:
        if (state_dir == NULL)
            return hd_error_set(err, EINVAL, "network bridge: no state dir for the address leases");
        if (net_setup_bridge(state_dir, id, pid, out, err) < 0)
            return hd_error_prefix(err, "network bridge");
        return 0;
    }
    return hd_error_set(err, EINVAL, "network mode %d", (int)mode);
}

/* A tap named name with IFF_VNET_HDR, alive while the returned fd is open. */
static int net_tap_open(const char *name, hd_error_t *err)
{
    cleanup_close int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return hd_error_sys(err, "open /dev/net/tun");
    struct ifreq ifr = {0};
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", name);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0)
        return hd_error_sys(err, "create tap %s", name);
    return steal_fd(&fd);
}

static int net_setup_tap(const char *state_dir, const char *id, struct hd_net **out, hd_error_t *err)
{
    struct net_attach a;
    int ret;
    if (net_attach_begin(state_dir, "ht", id, &a, err) < 0)
        return -1;
    if ((a.net->tap_fd = net_tap_open(a.net->link, err)) < 0)
        goto fail;
    net_leases_close(&a.leases);
    if ((ret = rtnl_link_set_master_up(&a.host, (int)if_nametoindex(a.net->link), a.bridge)) < 0) {
        hd_error_set(err, -ret, "attach tap %s to bridge %s", a.net->link, a.cfg.bridge);
        close(a.net->tap_fd); /* the last fd of a non-persistent tap: the tap goes */
        a.net->tap_fd = -1;
        goto fail;
    }
    net_attach_done(&a, out);
    return 0;
fail:
    net_attach_abort(&a);
    return -1;
}

int hd_net_setup_tap(const char *state_dir, const char *id, struct hd_net **out, const char **tap_name,
                     const char **guest_cidr, const char **gateway, hd_error_t *err)
{
    *out = NULL;
    if (state_dir == NULL)
        return hd_error_set(err, EINVAL, "network tap: no state dir for the address leases");
    if (net_setup_tap(state_dir, id, out, err) < 0)
        return hd_error_prefix(err, "network tap");
    *tap_name = (*out)->link;
    *guest_cidr = (*out)->address;
    *gateway = (*out)->gateway;
    return 0;
}

int hd_net_tap_fd(const struct hd_net *n)
{
    return n ? n->tap_fd : -1;
}

const char *hd_net_address(const struct hd_net *n)
{
    return n ? n->address : NULL;
}

const char *hd_net_gateway(const struct hd_net *n)
{
    return n ? n->gateway : NULL;
}

int hd_net_teardown(struct hd_net *n, hd_error_t *err)
{
    if (n == NULL)
        return 0;
    int ret = 0;
    if (n->tap_fd >= 0) {
        close(n->tap_fd); /* removes the tap unless another process (QEMU) still holds it */
        n->tap_fd = -1;
    }
    if (n->link[0] != '\0') {
        struct rtnl host = {0};
        int del = -1;
        if (rtnl_open(&host, err) == 0) {
            del = rtnl_link_delete(&host, n->link);
            rtnl_close(&host);
            /* ENODEV: already gone with the workload's namespace or the tap's last fd. */
            if (del < 0 && del != -ENODEV)
                hd_error_set(err, -del, "network: delete %s", n->link);
            else
                del = 0;
        } else {
            hd_error_prefix(err, "network: delete %s", n->link);
        }
        if (del < 0)
            ret = -1; /* keep the lease: the address may still be in use */
        else if (n->lease_path && unlink(n->lease_path) < 0 && errno != ENOENT)
            ret = hd_error_sys(err, "network: release lease %s", n->lease_path);
    }
    net_free(n);
    return ret;
}
