/*
 * vm_template.c - `hedge vm template build|ls|rm`: the VM templates `hedge run -i vm --vm-boot
 * auto|snapshot` restores instead of booting (runtime/vm/template.c; docs/vm.md).
 *
 *   build [--memory SIZE] [--cpus N] [--vm-accel A] [--force]
 *         the template for a workload with these resources (the same guest RAM and vCPUs `hedge run`
 *         gives it); nothing to do when a verified one exists
 *   ls    every template: key, RAM, vCPUs, accelerator, QEMU version, state size, verified or why not
 *   rm KEY...|--all
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/util.h"
#include "cli/cli.h"
#include "image/image.h"
#include "runtime/vm/vm.h"
#include "spec/spec.h"

static const char usage[] = "hedge vm template build [--memory SIZE] [--cpus N] [--vm-accel ACCEL] [--force]\n"
                            "       hedge vm template ls\n"
                            "       hedge vm template rm KEY...|--all";

static int template_build(int argc, char **argv)
{
    struct hd_resources res = {0};
    const char *accel_want = NULL;
    bool force = false;
    static const struct option opts[] = {
        {"memory", required_argument, NULL, 'm'},   {"cpus", required_argument, NULL, 'c'},
        {"vm-accel", required_argument, NULL, 'a'}, {"force", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            if (hd_parse_size(optarg, &res.memory) < 0 || res.memory <= 0)
                return cli_usage_error("vm template build", usage, "--memory: \"%s\" is not a size", optarg);
            break;
        case 'c': {
            char *end;
            res.cpus = strtod(optarg, &end);
            if (*end || !(res.cpus > 0) || res.cpus > 64)
                return cli_usage_error("vm template build", usage, "--cpus: \"%s\" is not a CPU count", optarg);
            break;
        }
        case 'a': accel_want = optarg; break;
        case 'f': force = true; break;
        case 'h': return cli_help(usage);
        default: return cli_usage_error("vm template build", usage, "unknown option");
        }
    }
    if (optind != argc)
        return cli_usage_error("vm template build", usage, "unexpected argument \"%s\"", argv[optind]);
    hd_error_t err = NULL;
    const char *state = hd_state_dir();
    struct hd_vm_kernel k;
    enum hd_vm_accel accel;
    if (hd_vm_accel_choose(accel_want, false, &accel, &err) < 0 || hd_vm_kernel_find(state, &k, &err) < 0)
        return cli_fail(&err);
    cleanup_free char *initramfs = NULL;
    cleanup_free char *append = hd_vm_extra_append();
    int r = hd_vm_initramfs(state, &k, &initramfs, &err);
    struct hd_vm_template_inputs in = {
        .state_dir = state,
        .vmlinuz = k.vmlinuz,
        .initramfs = initramfs,
        .ram_bytes = hd_spec_vm_ram(&res),
        .vcpus = hd_spec_vm_vcpus(&res),
        .accel = accel,
        .append = append,
    };
    struct hd_vm_template t = {0};
    bool built = false;
    uint64_t t0 = hd_now_ns();
    if (r == 0)
        r = hd_vm_template_build(&in, force, &t, &built, &err);
    hd_vm_kernel_free(&k);
    if (r < 0)
        return cli_fail(&err);
    printf("template %.12s: %s (%lld MiB guest, %d vCPU, %s)\n", t.key, built ? "built" : "up to date",
           (long long)(in.ram_bytes >> 20), in.vcpus, hd_vm_accel_name(accel));
    if (built)
        printf("took %.2f s; %s\n", (double)(hd_now_ns() - t0) / 1e9, t.dir);
    hd_vm_template_free(&t);
    return 0;
}

static int select_key(const struct dirent *d)
{
    return strlen(d->d_name) == 64 && d->d_name[0] != '.';
}

static int template_ls(void)
{
    cleanup_free char *root = hd_vm_templates_dir(hd_state_dir());
    struct dirent **names = NULL;
    int n = scandir(root, &names, select_key, alphasort);
    printf("%-12s  %8s  %4s  %-5s  %-8s  %8s  %-19s  %s\n", "KEY", "RAM", "VCPU", "ACCEL", "QEMU", "STATE", "CREATED",
           "STATUS");
    for (int i = 0; i < n; i++) {
        cleanup_free char *dir = hd_xasprintf("%s/%s", root, names[i]->d_name);
        json_t *m = NULL;
        hd_error_t err = NULL;
        int ok = hd_vm_template_verify(dir, NULL, &m, &err);
        if (m == NULL) {
            char path[PATH_MAX];
            snprintf(path, sizeof(path), "%s/manifest.json", dir);
            m = json_load_file(path, 0, NULL);
        }
        time_t created = (time_t)json_integer_value(json_object_get(m, "created"));
        char when[32] = "?";
        struct tm tm;
        if (created > 0 && gmtime_r(&created, &tm))
            strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
        const char *accel = json_string_value(json_object_get(m, "accel"));
        const char *qemu = json_string_value(json_object_get(m, "qemu_version"));
        printf("%.12s  %5lldMiB  %4lld  %-5s  %-8s  %5lldKiB  %-19s  %s\n", names[i]->d_name,
               (long long)(json_integer_value(json_object_get(m, "ram_bytes")) >> 20),
               (long long)json_integer_value(json_object_get(m, "vcpus")), accel ? accel : "?", qemu ? qemu : "?",
               (long long)(json_integer_value(json_object_get(m, "state_bytes")) >> 10), when,
               ok == 0 ? "ok" : hd_error_text(err));
        json_decref(m);
        hd_error_free(&err);
        free(names[i]);
    }
    free(names);
    return 0;
}

static int template_rm(int argc, char **argv)
{
    if (argc < 3)
        return cli_usage_error("vm template rm", usage, "missing KEY or --all");
    bool all = argc == 3 && strcmp(argv[2], "--all") == 0;
    cleanup_free char *root = hd_vm_templates_dir(hd_state_dir());
    struct dirent **names = NULL;
    int n = scandir(root, &names, select_key, alphasort);
    int rc = 0;
    for (int a = 2; a < argc; a++) {
        const char *want = argv[a];
        if (!all && (strlen(want) < 4 || strspn(want, "0123456789abcdef") != strlen(want))) {
            fprintf(stderr, "hedge: vm template rm: \"%s\" is not a template key (4 or more hex digits)\n", want);
            rc = 1;
            continue;
        }
        int matched = 0;
        for (int i = 0; i < n; i++) {
            if (!all && strncmp(names[i]->d_name, want, strlen(want)) != 0)
                continue;
            matched++;
            cleanup_free char *dir = hd_xasprintf("%s/%s", root, names[i]->d_name);
            hd_error_t err = NULL;
            if (hd_rm_rf(dir, &err) < 0) {
                rc = cli_fail(&err);
                continue;
            }
            printf("removed %.12s\n", names[i]->d_name);
        }
        if (matched == 0 && !all) {
            fprintf(stderr, "hedge: vm template rm: no template %s\n", want);
            rc = 1;
        }
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

int cmd_vm_template(int argc, char **argv)
{
    /* argv[0] is "template" */
    if (argc >= 2 && strcmp(argv[1], "build") == 0)
        return template_build(argc - 1, argv + 1);
    if (argc == 2 && strcmp(argv[1], "ls") == 0)
        return template_ls();
    if (argc >= 2 && strcmp(argv[1], "rm") == 0)
        return template_rm(argc, argv);
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0))
        return cli_help(usage);
    return cli_usage_error("vm template", usage, "%s", argc < 2 ? "missing subcommand" : "unknown subcommand");
}
