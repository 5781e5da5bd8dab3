/*
 * child.h - what a workload's first process does between fork and exec, shared
 * by the process and container backends (and hedge-init's logic mirrors it).
 *
 * The parent and child share a CLOEXEC "report" pipe. If exec succeeds the
 * pipe closes with nothing written and the parent reads EOF; if any set-up
 * step or the exec itself fails, the child writes one report (exit code,
 * errno, message) and exits. So "command not found" is an error with exit
 * code 127 that the parent prints, not a mystery status.
 */
#ifndef HEDGE_CHILD_H
#define HEDGE_CHILD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/error.h"

struct hd_exec_plan {
    char **argv;
    char **env;
    const char *workdir; /* NULL: stay where we are */
    const char *user;    /* "uid[:gid]" or "name[:group]"; NULL: keep ids */
    /* Supplementary groups: when groups is not NULL, exactly groups[0..n_groups) (none when n_groups is 0,
     * as runc without process.user.additionalGids); NULL: the primary gid alone (hedge's own behaviour). */
    const gid_t *groups;
    size_t n_groups;
    bool keep_caps; /* the permitted set outlives the user switch (PR_SET_KEEPCAPS; exec clears it) */
    bool no_new_privs;
    /* Called last, after user, workdir and no_new_privs, right before exec (the
     * container backend sets capabilities and loads seccomp here). A failure is
     * reported with exit code 125. */
    int (*before_exec)(void *data, hd_error_t *err);
    void *before_exec_data;
};

/* Child side: report a failure on report_fd and _exit(exit_code). */
__attribute__((noreturn, format(printf, 4, 5))) void hd_child_fail(int report_fd, int exit_code, int errnum,
                                                                   const char *fmt, ...);
/* Child side: make fds 0,1,2 the workload's stdio (they may be any fds). */
void hd_child_setup_stdio(const int stdio[3], int report_fd);
/* Child side: reset signals, apply user/workdir/no_new_privs and exec; never returns. */
__attribute__((noreturn)) void hd_child_exec(int report_fd, const struct hd_exec_plan *plan);
/* Child side: apply only the user (name lookups read /etc/passwd and /etc/group of the current root) and the
 * supplementary groups (groups, n_groups as in hd_exec_plan; user NULL: keep the ids, set only the groups). */
int hd_child_set_user(const char *user, const gid_t *groups, size_t n_groups, hd_error_t *err);
/* Child side: restore default dispositions and an empty signal mask. */
void hd_child_reset_signals(void);
/* The 16-digit hex mask of the "<key>:" line of /proc/<pid>/status text; false when absent or malformed.
 * Inline and without a libc call: the static hedge's fast path (cli/fast_run.c) runs it before libc starts. */
static inline bool hd_status_hex_mask(const char *status, const char *key, uint64_t *out)
{
    for (const char *line = status; *line;) {
        size_t k = 0;
        while (key[k] && line[k] == key[k])
            k++;
        if (key[k] == '\0' && line[k] == ':') {
            const char *p = line + k + 1;
            while (*p == ' ' || *p == '\t')
                p++;
            uint64_t mask = 0;
            int digits = 0;
            for (; digits < 16; p++, digits++) {
                int v = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : -1;
                if (v < 0)
                    break;
                mask = mask << 4 | (uint64_t)v;
            }
            if (digits != 16 || *p != '\n') /* 64 signals; a line cut short is no answer */
                return false;
            *out = mask;
            return true;
        }
        while (*line && *line != '\n')
            line++;
        if (*line)
            line++;
    }
    return false;
}
/* From /proc/<pid>/status text: the signals whose disposition is not the default (SigIgn | SigCgt,
 * bit n-1 for signal n). False when either line is missing or malformed. */
static inline bool hd_child_parse_signal_masks(const char *status, uint64_t *touched)
{
    uint64_t ignored, caught;
    if (!hd_status_hex_mask(status, "SigIgn", &ignored) || !hd_status_hex_mask(status, "SigCgt", &caught))
        return false;
    *touched = ignored | caught;
    return true;
}
/* Parent side: 0 when the child exec'd (EOF), else -1 with the child's report in err. */
int hd_child_read_report(int report_fd, hd_error_t *err);
/* Resolve a "user" string to ids using the passwd/group files under root ("/" for the host). */
int hd_resolve_user(const char *root, const char *user, uid_t *uid, gid_t *gid, hd_error_t *err);

#endif
