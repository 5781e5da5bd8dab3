/*
 * vm.c - `hedge vm kernel`: what `--isolation vm` would boot here - the guest
 * kernel (path, release, modules), the initramfs (built and cached if needed)
 * and the accelerator `--vm-accel auto` picks, with the probe's figure.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "image/image.h"
#include "base/util.h"
#include "runtime/vm/vm.h"

static const char usage[] = "hedge vm kernel";

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
    printf("accel:      %s (auto; KVM %s: %s)\n", probe.usable ? "kvm" : "tcg",
           probe.usable ? "usable" : "not usable", probe.reason);
    hd_vm_kernel_free(&k);
    return 0;
}

int cmd_vm(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "kernel") == 0)
        return vm_kernel();
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: %s\n  shows the guest kernel, initramfs and accelerator --isolation vm uses\n", usage);
        return 0;
    }
    return cli_usage_error("vm", usage, "%s", argc < 2 ? "missing subcommand" : "unknown subcommand");
}
