/*
 * caps.c - capability sets for container workloads (libcap), see caps.h.
 *
 * Inheritable and ambient stay empty: an inheritable set lets a non-root
 * user regain capabilities through file capabilities (CVE-2022-24769), and
 * Docker dropped it for that reason. A capability that hedge itself does not
 * hold (this host runs root without CAP_SYS_RESOURCE) cannot be granted:
 * naming it in cap_add is an error, "ALL" quietly means "all we have".
 */
#include "runtime/container/caps.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "base/util.h"

static const cap_value_t docker_default_caps[] = {
    CAP_CHOWN,  CAP_DAC_OVERRIDE, CAP_FSETID,  CAP_FOWNER,           CAP_MKNOD,      CAP_NET_RAW, CAP_SETGID,
    CAP_SETUID, CAP_SETFCAP,      CAP_SETPCAP, CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT, CAP_KILL,    CAP_AUDIT_WRITE,
};

uint64_t hd_caps_default(void)
{
    uint64_t mask = 0;
    for (size_t i = 0; i < ARRAY_SIZE(docker_default_caps); i++)
        mask |= 1ULL << docker_default_caps[i];
    return mask;
}

static uint64_t caps_all_known(void)
{
    int bits = cap_max_bits();
    return bits >= 64 ? ~0ULL : (1ULL << bits) - 1;
}

/* The permitted set hedge runs with: nothing outside it can be granted. */
static uint64_t caps_own_permitted(void)
{
    uint64_t mask = 0;
    cap_t self = cap_get_proc();
    if (self == NULL)
        return 0;
    int bits = cap_max_bits();
    for (int c = 0; c < bits && c < 64; c++) {
        cap_flag_value_t v = CAP_CLEAR;
        if (cap_get_flag(self, (cap_value_t)c, CAP_PERMITTED, &v) == 0 && v == CAP_SET)
            mask |= 1ULL << c;
    }
    cap_free(self);
    return mask;
}

int hd_cap_parse(const char *name)
{
    char lower[64];
    size_t n = strlen(name);
    if (n == 0 || n + 5 > sizeof(lower))
        return -1;
    size_t off = 0;
    if (strncasecmp(name, "CAP_", 4) != 0) {
        memcpy(lower, "cap_", 4);
        off = 4;
    }
    for (size_t i = 0; i <= n; i++)
        lower[off + i] = (char)tolower((unsigned char)name[i]);
    cap_value_t v;
    if (cap_from_name(lower, &v) < 0 || v < 0 || v >= cap_max_bits() || v >= 64)
        return -1;
    /* cap_from_name also accepts numbers; a spec names capabilities */
    if (isdigit((unsigned char)name[0]))
        return -1;
    return (int)v;
}

static bool names_all(char *const *names)
{
    for (size_t i = 0; names && names[i]; i++)
        if (strcasecmp(names[i], "ALL") == 0)
            return true;
    return false;
}

int hd_caps_from_spec(const struct hd_security *sec, uint64_t *out, hd_error_t *err)
{
    bool add_all = names_all(sec->cap_add);
    bool drop_all = names_all(sec->cap_drop);
    uint64_t own = caps_own_permitted();
    uint64_t mask = add_all ? caps_all_known() & own : drop_all ? 0 : hd_caps_default();
    for (size_t i = 0; sec->cap_add && sec->cap_add[i]; i++) {
        if (strcasecmp(sec->cap_add[i], "ALL") == 0)
            continue;
        int c = hd_cap_parse(sec->cap_add[i]);
        if (c < 0)
            return hd_error_set(err, 0, "security.cap_add[%zu]: \"%s\" is not a capability", i, sec->cap_add[i]);
        if (!(own & (1ULL << c)))
            return hd_error_set(err, EPERM, "security.cap_add[%zu]: hedge itself does not hold %s", i, sec->cap_add[i]);
        mask |= 1ULL << c;
    }
    for (size_t i = 0; sec->cap_drop && sec->cap_drop[i]; i++) {
        if (strcasecmp(sec->cap_drop[i], "ALL") == 0)
            continue;
        int c = hd_cap_parse(sec->cap_drop[i]);
        if (c < 0)
            return hd_error_set(err, 0, "security.cap_drop[%zu]: \"%s\" is not a capability", i, sec->cap_drop[i]);
        mask &= ~(1ULL << c);
    }
    /* the default set may hold a capability hedge lacks; never ask for it */
    *out = mask & own;
    return 0;
}

int hd_caps_drop_bounding(uint64_t keep, hd_error_t *err)
{
    int bits = cap_max_bits();
    for (int c = 0; c < bits && c < 64; c++) {
        if (keep & (1ULL << c))
            continue;
        if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
            return hd_error_sys(err, "capabilities: drop capability %d from the bounding set", c);
    }
    return 0;
}

int hd_caps_apply(uint64_t keep, hd_error_t *err)
{
    if (geteuid() != 0)
        keep = 0; /* Docker: a non-root user runs without capabilities */
    return hd_caps_apply_any_user(keep, err);
}

int hd_caps_apply_any_user(uint64_t keep, hd_error_t *err)
{
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        return hd_error_sys(err, "capabilities: clear the ambient set");
    cap_t caps = cap_init(); /* all clear */
    if (caps == NULL)
        return hd_error_sys(err, "capabilities: cap_init");
    int bits = cap_max_bits();
    for (int c = 0; c < bits && c < 64; c++) {
        if (!(keep & (1ULL << c)))
            continue;
        cap_value_t v = c;
        cap_set_flag(caps, CAP_PERMITTED, 1, &v, CAP_SET);
        cap_set_flag(caps, CAP_EFFECTIVE, 1, &v, CAP_SET);
    }
    int r = cap_set_proc(caps);
    int e = errno;
    cap_free(caps);
    if (r < 0)
        return hd_error_set(err, e, "capabilities: set permitted/effective");
    return 0;
}

int hd_caps_set_inheritable_ambient(uint64_t inheritable, uint64_t ambient, hd_error_t *err)
{
    int bits = cap_max_bits();
    if (inheritable) {
        cap_t caps = cap_get_proc();
        if (caps == NULL)
            return hd_error_sys(err, "capabilities: read the process's sets");
        for (int c = 0; c < bits && c < 64; c++) {
            cap_value_t v = c;
            if ((inheritable & (1ULL << c)) && cap_set_flag(caps, CAP_INHERITABLE, 1, &v, CAP_SET) < 0) {
                cap_free(caps);
                return hd_error_sys(err, "capabilities: inheritable %d", c);
            }
        }
        int r = cap_set_proc(caps);
        int e = errno;
        cap_free(caps);
        if (r < 0)
            return hd_error_set(err, e, "capabilities: set the inheritable set");
    }
    for (int c = 0; c < bits && c < 64; c++)
        if ((ambient & (1ULL << c)) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0)
            return hd_error_sys(err, "capabilities: raise ambient capability %d", c);
    return 0;
}
