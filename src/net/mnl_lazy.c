/*
 * mnl_lazy.c - libmnl, loaded with dlopen() the first time a netlink socket is
 * opened (issue 18 part 3).
 *
 * Every `hedge run` maps hedge, and each shared library it names costs the
 * dynamic loader an open, four mmaps, an mprotect and its relocations before
 * main(); `hedge run -i process` never touches the network. So hedge does not
 * link libmnl: this file defines the libmnl functions net.c calls, each a
 * trampoline to the real one, found with dlsym() in libmnl.so.0 on first use.
 * net.c stays written against <libmnl/libmnl.h>.
 *
 * The library is loaded by mnl_socket_open2(), which every netlink exchange
 * starts with: when it cannot be loaded, that call fails (NULL, errno
 * ELIBACC, the loader's reason on stderr) and the caller reports "open
 * rtnetlink socket". The other functions are reached only with a socket open,
 * so the library is there; should one be called first, it loads it too and
 * aborts if it cannot (a programming error, not a host condition).
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <libmnl/libmnl.h>

#include "base/dynlib.h"

static void *mnl_library(void)
{
    /* kept loaded for the life of the process once needed: no dlclose */
    static void *lib;
    if (lib == NULL) {
        char why[160];
        lib = hd_dlopen("libmnl.so.0", why, sizeof(why));
        if (lib == NULL)
            fprintf(stderr, "hedge: load libmnl.so.0: %s (install libmnl0)\n", why);
    }
    return lib;
}

static void *mnl_resolve(const char *name)
{
    void *lib = mnl_library();
    void *fn = lib ? dlsym(lib, name) : NULL;
    if (fn == NULL) {
        fprintf(stderr, "hedge: libmnl.so.0: no %s\n", name);
        abort();
    }
    return fn;
}

/* One trampoline: the real function is looked up once and kept. */
#define MNL_CALL(ret, name, params, args) \
    ret name params \
    { \
        static ret(*real) params; \
        if (real == NULL) \
            *(void **)&real = mnl_resolve(#name); \
        return real args; \
    }
#define MNL_CALL_VOID(name, params, args) \
    void name params \
    { \
        static void(*real) params; \
        if (real == NULL) \
            *(void **)&real = mnl_resolve(#name); \
        real args; \
    }

struct mnl_socket *mnl_socket_open2(int bus, int flags)
{
    static struct mnl_socket *(*real)(int bus, int flags);
    if (real == NULL) {
        void *lib = mnl_library();
        if (lib == NULL) {
            errno = ELIBACC;
            return NULL;
        }
        *(void **)&real = mnl_resolve("mnl_socket_open2");
    }
    return real(bus, flags);
}

/* clang-format off */
MNL_CALL(int, mnl_socket_bind, (struct mnl_socket *nl, unsigned int groups, pid_t pid), (nl, groups, pid))
MNL_CALL(int, mnl_socket_close, (struct mnl_socket *nl), (nl))
MNL_CALL(unsigned int, mnl_socket_get_portid, (const struct mnl_socket *nl), (nl))
MNL_CALL(ssize_t, mnl_socket_recvfrom, (const struct mnl_socket *nl, void *buf, size_t siz), (nl, buf, siz))
MNL_CALL(ssize_t, mnl_socket_sendto, (const struct mnl_socket *nl, const void *req, size_t siz), (nl, req, siz))
MNL_CALL(int, mnl_cb_run, (const void *buf, size_t numbytes, unsigned int seq, unsigned int portid,
                           mnl_cb_t cb_data, void *data), (buf, numbytes, seq, portid, cb_data, data))
MNL_CALL(struct nlmsghdr *, mnl_nlmsg_put_header, (void *buf), (buf))
MNL_CALL(void *, mnl_nlmsg_put_extra_header, (struct nlmsghdr *nlh, size_t size), (nlh, size))
MNL_CALL(void *, mnl_nlmsg_get_payload, (const struct nlmsghdr *nlh), (nlh))
MNL_CALL(void *, mnl_nlmsg_get_payload_tail, (const struct nlmsghdr *nlh), (nlh))
MNL_CALL_VOID(mnl_attr_put, (struct nlmsghdr *nlh, uint16_t type, size_t len, const void *data), (nlh, type, len, data))
MNL_CALL_VOID(mnl_attr_put_strz, (struct nlmsghdr *nlh, uint16_t type, const char *data), (nlh, type, data))
MNL_CALL_VOID(mnl_attr_put_u32, (struct nlmsghdr *nlh, uint16_t type, uint32_t data), (nlh, type, data))
MNL_CALL(struct nlattr *, mnl_attr_nest_start, (struct nlmsghdr *nlh, uint16_t type), (nlh, type))
MNL_CALL_VOID(mnl_attr_nest_end, (struct nlmsghdr *nlh, struct nlattr *start), (nlh, start))
MNL_CALL(uint16_t, mnl_attr_get_type, (const struct nlattr *attr), (attr))
MNL_CALL(const char *, mnl_attr_get_str, (const struct nlattr *attr), (attr))
MNL_CALL(int, mnl_attr_validate, (const struct nlattr *attr, enum mnl_attr_data_type type), (attr, type))
MNL_CALL(int, mnl_attr_parse, (const struct nlmsghdr *nlh, unsigned int offset, mnl_attr_cb_t cb, void *data),
         (nlh, offset, cb, data))
MNL_CALL(int, mnl_attr_parse_nested, (const struct nlattr *attr, mnl_attr_cb_t cb, void *data), (attr, cb, data))
/* clang-format on */
