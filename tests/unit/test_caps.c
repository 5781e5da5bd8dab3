/* test_caps.c - capability names and the cap_add/cap_drop arithmetic (Docker's rules). */
#include <sys/capability.h>

#include "runtime/container/caps.h"
#include "check.h"
#include "base/util.h"

static uint64_t bit(int cap)
{
    return 1ULL << cap;
}

static int compute(char **add, char **drop, uint64_t *out, char **message)
{
    struct hd_security sec = {.cap_add = add, .cap_drop = drop, .no_new_privs = true};
    hd_error_t err = NULL;
    int r = hd_caps_from_spec(&sec, out, &err);
    if (r < 0) {
        *message = hd_xstrdup(err->message);
        hd_error_free(&err);
    }
    return r;
}

int main(void)
{
    CHECK(hd_caps_default() == 0xa80425fbULL);
    CHECK(hd_cap_parse("NET_ADMIN") == CAP_NET_ADMIN);
    CHECK(hd_cap_parse("CAP_NET_ADMIN") == CAP_NET_ADMIN);
    CHECK(hd_cap_parse("cap_sys_admin") == CAP_SYS_ADMIN);
    CHECK(hd_cap_parse("Sys_Ptrace") == CAP_SYS_PTRACE);
    CHECK(hd_cap_parse("FLY") == -1);
    CHECK(hd_cap_parse("CAP_") == -1);
    CHECK(hd_cap_parse("") == -1);
    CHECK(hd_cap_parse("12") == -1);

    uint64_t caps = 0;
    char *msg = NULL;
    char *add_admin[] = {(char *)"SYS_ADMIN", NULL};
    char *drop_raw[] = {(char *)"CAP_NET_RAW", NULL};
    CHECK(compute(add_admin, drop_raw, &caps, &msg) == 0);
    CHECK(caps == ((hd_caps_default() | bit(CAP_SYS_ADMIN)) & ~bit(CAP_NET_RAW)));

    char *drop_all[] = {(char *)"all", NULL};
    char *add_kill[] = {(char *)"kill", NULL};
    CHECK(compute(add_kill, drop_all, &caps, &msg) == 0);
    CHECK(caps == bit(CAP_KILL));
    CHECK(compute(NULL, drop_all, &caps, &msg) == 0);
    CHECK(caps == 0);

    char *add_all[] = {(char *)"ALL", NULL};
    char *drop_admin[] = {(char *)"SYS_ADMIN", NULL};
    CHECK(compute(add_all, drop_admin, &caps, &msg) == 0);
    CHECK(!(caps & bit(CAP_SYS_ADMIN)) && (caps & bit(CAP_NET_ADMIN)) && (caps & bit(CAP_CHOWN)));

    char *add_bad[] = {(char *)"NET_ADMIN", (char *)"FLY", NULL};
    CHECK(compute(add_bad, NULL, &caps, &msg) < 0);
    CHECK_STR(msg, "security.cap_add[1]: \"FLY\" is not a capability");
    free(msg);
    msg = NULL;
    char *drop_bad[] = {(char *)"cap_nope", NULL};
    CHECK(compute(NULL, drop_bad, &caps, &msg) < 0);
    CHECK_STR(msg, "security.cap_drop[0]: \"cap_nope\" is not a capability");
    free(msg);
    CHECK_DONE();
}
