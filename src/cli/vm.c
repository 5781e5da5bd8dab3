/*
 * vm.c - `hedge vm kernel`: what `--isolation vm` would boot here - the guest
 * kernel (path, release, modules), the initramfs (built and cached if needed)
 * and the accelerator `--vm-accel auto` picks, with the probe's figure.
 * `hedge vm kernel fetch [DIR]` puts Debian's cloud kernel in the one place
 * hedge reads it (hd_vm_kernel_dir) by running hedge-fetch-kernel (the
 * source tree's scripts/fetch-guest-kernel: apt-get download, dpkg-deb -x),
 * found next to this binary (the build dir) or in libexecdir.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "image/image.h"
#include "base/util.h"
#include "config.h"
#include "runtime/vm/vm.h"

static const char usage[] = "hedge vm kernel [fetch [DIR]] | hedge vm template build|ls|rm";

static int vm_kernel(void)
{
    hd_error_t err = NULL;
    const char *state = hd_state_dir();
    struct hd_vm_kernel k;
    if (hd_vm_kernel_find(state, &k, &err) < 0)
        return cli_fail(&err);
    cleanup_free char *initramfs = NULL;
    if (hd_vm_initramfs(state, &k, &initramfs, &err) < 0) {
        hd_vm_kernel_free(&k);
        return cli_fail(&err);
    }
    printf("kernel:     %s\nrelease:    %s\nmodules:   ", k.vmlinuz, k.release);
    for (size_t i = 0; k.modules && k.modules[i]; i++)
        printf(" %s", strrchr(k.modules[i], '/') + 1);
    printf("%s\nnet modules:", k.modules && k.modules[0] ? "" : " (none)");
    for (size_t i = 0; k.net_modules && k.net_modules[i]; i++)
        printf(" %s", strrchr(k.net_modules[i], '/') + 1);
    printf("%s\ninitramfs:  %s\n", k.net_modules && k.net_modules[0] ? "" : " (none)", initramfs);
    struct hd_vm_accel_probe probe;
    hd_vm_accel_probe(&probe);
    printf("accel:      %s (auto; KVM %s: %s)\n", probe.usable ? "kvm" : "tcg", probe.usable ? "usable" : "not usable",
           probe.reason);
    hd_vm_kernel_free(&k);
    return 0;
}

/* Runs hedge-fetch-kernel DIR; it replaces this process. */
static int vm_kernel_fetch(const char *dir_arg)
{
    cleanup_free char *dir = dir_arg ? hd_xstrdup(dir_arg) : hd_vm_kernel_dir(hd_state_dir());
    hd_error_t err = NULL;
    cleanup_free char *script = hd_find_program("hedge-fetch-kernel", &err);
    if (!script)
        return cli_fail(&err);
    char *args[] = {script, dir, NULL};
    execv(script, args);
    hd_error_sys(&err, "%s (installed with hedge) cannot be run", script);
    return cli_fail(&err);
}

int cmd_vm(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "kernel") == 0)
        return vm_kernel();
    if (argc >= 2 && strcmp(argv[1], "template") == 0)
        return cmd_vm_template(argc - 1, argv + 1);
    if ((argc == 3 || argc == 4) && strcmp(argv[1], "kernel") == 0 && strcmp(argv[2], "fetch") == 0)
        return vm_kernel_fetch(argc == 4 ? argv[3] : NULL);
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf(
            "usage: %s\n  kernel        shows the guest kernel, initramfs and accelerator --isolation vm uses\n"
            "  kernel fetch  downloads Debian's cloud kernel (apt) into the dir hedge reads, or DIR\n"
            "  template      builds, lists and removes the templates --vm-boot restores (hedge vm template --help)\n",
            usage);
        return 0;
    }
    return cli_usage_error("vm", usage, "%s", argc < 2 ? "missing subcommand" : "unknown subcommand");
}
