/*
 * syscall_probe.c - a tiny static program the container tests copy into a
 * rootfs: for each name on the command line it makes that raw system call
 * with harmless arguments and prints "name=0" or "name=ERRNONAME", so a test
 * can tell a seccomp refusal (EPERM/ENOSYS) from the kernel's own answer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/sched.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long probe(const char *name)
{
    if (!strcmp(name, "finit_module"))
        return syscall(SYS_finit_module, -1, "", 0);
    if (!strcmp(name, "init_module"))
        return syscall(SYS_init_module, NULL, 0, "");
    if (!strcmp(name, "delete_module"))
        return syscall(SYS_delete_module, "hedge_no_such_module", 0);
    if (!strcmp(name, "kexec_load"))
        return syscall(SYS_kexec_load, 0, 0, NULL, 0);
    if (!strcmp(name, "keyctl"))
        return syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 0);
    if (!strcmp(name, "io_uring_setup"))
        return syscall(SYS_io_uring_setup, 1, NULL);
    if (!strcmp(name, "personality_norandom"))
        return syscall(SYS_personality, ADDR_NO_RANDOMIZE);
    if (!strcmp(name, "personality_query"))
        return syscall(SYS_personality, 0xffffffff);
    if (!strcmp(name, "personality_linux32"))
        return syscall(SYS_personality, PER_LINUX32);
    if (!strcmp(name, "clone3")) {
        struct clone_args args = {.exit_signal = 0};
        return syscall(SYS_clone3, &args, 0); /* never reached with a 0 size: EINVAL */
    }
    if (!strcmp(name, "unshare_user"))
        return syscall(SYS_unshare, CLONE_NEWUSER);
    if (!strcmp(name, "unshare_files"))
        return syscall(SYS_unshare, CLONE_FILES);
    if (!strcmp(name, "ptrace"))
        return syscall(SYS_ptrace, PTRACE_PEEKDATA, 1, NULL, NULL);
    if (!strcmp(name, "clock_settime")) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return syscall(SYS_clock_settime, CLOCK_REALTIME, &ts);
    }
    if (!strcmp(name, "swapoff"))
        return syscall(SYS_swapoff, "/hedge-no-such-swap");
    if (!strcmp(name, "bpf"))
        return syscall(SYS_bpf, -1, NULL, 0);
    if (!strcmp(name, "mount"))
        return syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, NULL);
    if (!strcmp(name, "reboot"))
        return syscall(SYS_reboot, 0, 0, 0, NULL); /* bad magic: EINVAL if it gets through */
    if (!strcmp(name, "getpid"))
        return syscall(SYS_getpid) > 0 ? 0 : -1;
    errno = EINVAL;
    fprintf(stderr, "unknown probe %s\n", name);
    return -2;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        errno = 0;
        long r = probe(argv[i]);
        if (r == -2)
            return 2;
        printf("%s=%s\n", argv[i], r < 0 ? strerrorname_np(errno) : "0");
    }
    return 0;
}
