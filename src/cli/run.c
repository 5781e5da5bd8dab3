/*
 * run.c - `hedge run`: run one workload in the foreground, like `docker run`.
 *
 * Flags map onto the same struct hd_spec as the JSON spec; `-f FILE` loads a
 * spec first and flags given on the command line override its fields.
 * Positional arguments: [IMAGE] [--] [COMMAND...]. For process isolation
 * there is no image, so every positional argument is the command.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "runtime/run.h"
#include "spec/spec.h"
#include "base/util.h"

static const char usage[] =
    "hedge run [OPTIONS] [IMAGE] [--] [COMMAND [ARG...]]\n"
    "  -f, --file FILE        workload spec (JSON); flags override its fields\n"
    "  -i, --isolation LEVEL  process | container | vm (default container, process without an image)\n"
    "      --name NAME        workload name\n"
    "      --rootfs DIR       root filesystem directory instead of an image\n"
    "  -e, --env KEY=VALUE    set an environment variable (repeatable)\n"
    "  -w, --workdir DIR      working directory\n"
    "  -u, --user UID[:GID]   user (and group) to run as\n"
    "      --hostname NAME    hostname (container, vm)\n"
    "  -m, --memory SIZE      memory limit (K, M, G suffixes)\n"
    "      --memory-swap SIZE memory plus swap limit (-1: unlimited swap)\n"
    "      --cpus N           CPU quota in CPUs (e.g. 0.5)\n"
    "      --cpu-weight N     relative CPU weight 1..10000\n"
    "      --pids N           maximum number of tasks\n"
    "      --network MODE     none | host | bridge\n"
    "  -v, --mount SRC:DST[:ro]  bind mount a host directory (repeatable)\n"
    "      --read-only        read-only root filesystem\n"
    "      --seccomp PROFILE  default | unconfined | /path/profile.json\n"
    "      --cap-add CAP      add a capability (repeatable)\n"
    "      --cap-drop CAP     drop a capability (repeatable, ALL for all)\n"
    "      --init             run a minimal reaper as PID 1 (container)\n"
    "      --userns UID:GID:SIZE  run in a user namespace with this id map (container)\n"
    "      --device HOST[:TARGET][:PERMS]  give a host device node (PERMS of r, w, m; default rwm)\n"
    "      --device-cgroup-rule 'TYPE MAJOR:MINOR ACCESS'  allow a class of devices (c 188:* rwm)\n"
    "      --entrypoint CMD   override the image entrypoint\n"
    "      --vm-accel ACCEL   auto | kvm | tcg (vm)\n"
    "      --vm-boot BOOT     auto | cold | snapshot: start from a template (hedge vm template) (vm)\n";

enum {
    OPT_NAME = 256,
    OPT_ROOTFS,
    OPT_HOSTNAME,
    OPT_MEMORY_SWAP,
    OPT_CPUS,
    OPT_CPU_WEIGHT,
    OPT_PIDS,
    OPT_NETWORK,
    OPT_READ_ONLY,
    OPT_SECCOMP,
    OPT_CAP_ADD,
    OPT_CAP_DROP,
    OPT_INIT,
    OPT_USERNS,
    OPT_ENTRYPOINT,
    OPT_VM_ACCEL,
    OPT_DEVICE,
    OPT_DEVICE_CGROUP_RULE,
    OPT_VM_BOOT,
    OPT_HELP,
};

static const struct option options[] = {
    {"file", required_argument, NULL, 'f'},
    {"isolation", required_argument, NULL, 'i'},
    {"name", required_argument, NULL, OPT_NAME},
    {"rootfs", required_argument, NULL, OPT_ROOTFS},
    {"env", required_argument, NULL, 'e'},
    {"workdir", required_argument, NULL, 'w'},
    {"user", required_argument, NULL, 'u'},
    {"hostname", required_argument, NULL, OPT_HOSTNAME},
    {"memory", required_argument, NULL, 'm'},
    {"memory-swap", required_argument, NULL, OPT_MEMORY_SWAP},
    {"cpus", required_argument, NULL, OPT_CPUS},
    {"cpu-weight", required_argument, NULL, OPT_CPU_WEIGHT},
    {"pids", required_argument, NULL, OPT_PIDS},
    {"network", required_argument, NULL, OPT_NETWORK},
    {"mount", required_argument, NULL, 'v'},
    {"read-only", no_argument, NULL, OPT_READ_ONLY},
    {"seccomp", required_argument, NULL, OPT_SECCOMP},
    {"cap-add", required_argument, NULL, OPT_CAP_ADD},
    {"cap-drop", required_argument, NULL, OPT_CAP_DROP},
    {"init", no_argument, NULL, OPT_INIT},
    {"userns", required_argument, NULL, OPT_USERNS},
    {"entrypoint", required_argument, NULL, OPT_ENTRYPOINT},
    {"vm-accel", required_argument, NULL, OPT_VM_ACCEL},
    {"device", required_argument, NULL, OPT_DEVICE},
    {"device-cgroup-rule", required_argument, NULL, OPT_DEVICE_CGROUP_RULE},
    {"vm-boot", required_argument, NULL, OPT_VM_BOOT},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

/* Say why the workload died: its own memory limit, or (no limit) the host running out. The static hedge's
 * fast path (fast_run.c) prints the no-limit line itself: keep the two the same. */
static void print_oom_line(const struct hd_spec *spec)
{
    const char *name = spec->name ? spec->name : "";
    const char *sep = spec->name ? ": " : "";
    long long limit = (long long)spec->resources.memory;
    if (limit <= 0) {
        fprintf(stderr, "hedge: %s%sOOM-killed: the kernel killed the workload because the host ran out of memory\n",
                name, sep);
        return;
    }
    const char *unit = "KiB";
    long long scaled = limit >> 10;
    if (limit % (1LL << 30) == 0) {
        unit = "GiB";
        scaled = limit >> 30;
    } else if (limit % (1LL << 20) == 0) {
        unit = "MiB";
        scaled = limit >> 20;
    }
    fprintf(stderr, "hedge: %s%sOOM-killed: the workload hit its memory limit of %lld %s (%lld bytes)\n", name, sep,
            scaled, unit, limit);
}

static int flag_error(const char *flag, const char *value, const char *why)
{
    fprintf(stderr, "hedge run: %s: \"%s\" %s\n", flag, value, why);
    return HD_EXIT_HEDGE;
}

static int parse_long(const char *text, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Apply one flag to the spec. Returns 0, or an exit code (125 bad value). */
static int apply_flag(struct hd_spec *spec, int opt, const char *arg)
{
    long long n;
    switch (opt) {
    case 'f': return 0; /* loaded before the flags */
    case 'i':
        if (hd_isolation_parse(arg, &spec->isolation) < 0)
            return flag_error("--isolation", arg, "is not an isolation level (process, container or vm)");
        spec->isolation_set = true;
        return 0;
    case OPT_NAME:
        free(spec->name);
        spec->name = hd_xstrdup(arg);
        return 0;
    case OPT_ROOTFS:
        free(spec->rootfs);
        spec->rootfs = hd_xstrdup(arg);
        return 0;
    case 'e':
        if (strchr(arg, '=') == NULL) {
            const char *v = getenv(arg); /* docker: -e NAME passes the caller's value */
            if (v == NULL)
                return 0;
            cleanup_free char *kv = hd_xasprintf("%s=%s", arg, v);
            hd_env_set(&spec->env, kv);
            return 0;
        }
        if (arg[0] == '=')
            return flag_error("--env", arg, "has no variable name");
        hd_env_set(&spec->env, arg);
        return 0;
    case 'w':
        free(spec->workdir);
        spec->workdir = hd_xstrdup(arg);
        return 0;
    case 'u':
        free(spec->user);
        spec->user = hd_xstrdup(arg);
        return 0;
    case OPT_HOSTNAME:
        free(spec->hostname);
        spec->hostname = hd_xstrdup(arg);
        return 0;
    case 'm':
        if (hd_parse_size(arg, &spec->resources.memory) < 0)
            return flag_error("--memory", arg, "is not a size (use K, M or G)");
        return 0;
    case OPT_MEMORY_SWAP:
        if (strcmp(arg, "-1") == 0)
            spec->resources.memory_swap = -1;
        else if (hd_parse_size(arg, &spec->resources.memory_swap) < 0)
            return flag_error("--memory-swap", arg, "is not a size (use K, M or G, or -1)");
        return 0;
    case OPT_CPUS: {
        char *end;
        double v = strtod(arg, &end);
        if (end == arg || *end || !(v > 0 && v <= 1024))
            return flag_error("--cpus", arg, "is not a CPU count (greater than 0, at most 1024)");
        spec->resources.cpus = v;
        return 0;
    }
    case OPT_CPU_WEIGHT:
        if (parse_long(arg, 1, 10000, &n) < 0)
            return flag_error("--cpu-weight", arg, "is not a weight (1..10000)");
        spec->resources.cpu_weight = n;
        return 0;
    case OPT_PIDS:
        if (parse_long(arg, 1, 4194304, &n) < 0)
            return flag_error("--pids", arg, "is not a task count (1..4194304)");
        spec->resources.pids = n;
        return 0;
    case OPT_NETWORK:
        if (hd_net_mode_parse(arg, &spec->network) < 0)
            return flag_error("--network", arg, "is not a network mode (none, host or bridge)");
        return 0;
    case 'v': {
        cleanup_free char *copy = hd_xstrdup(arg);
        char *target = strchr(copy, ':');
        if (target == NULL)
            return flag_error("--mount", arg, "is not SOURCE:TARGET[:ro]");
        *target++ = '\0';
        bool readonly = false;
        char *mode = strchr(target, ':');
        if (mode) {
            *mode++ = '\0';
            if (strcmp(mode, "ro") == 0)
                readonly = true;
            else if (strcmp(mode, "rw") != 0)
                return flag_error("--mount", arg, "has an unknown mode (ro or rw)");
        }
        spec->mounts = hd_xrealloc(spec->mounts, (size_t)(spec->n_mounts + 1) * sizeof(*spec->mounts));
        spec->mounts[spec->n_mounts++] = (struct hd_mount){hd_xstrdup(copy), hd_xstrdup(target), readonly};
        return 0;
    }
    case OPT_READ_ONLY: spec->readonly_rootfs = true; return 0;
    case OPT_SECCOMP:
        free(spec->security.seccomp);
        spec->security.seccomp = hd_xstrdup(arg);
        return 0;
    case OPT_CAP_ADD: hd_strv_push(&spec->security.cap_add, arg); return 0;
    case OPT_CAP_DROP: hd_strv_push(&spec->security.cap_drop, arg); return 0;
    case OPT_INIT: spec->init = true; return 0;
    case OPT_USERNS: {
        unsigned uid, gid, size;
        char tail;
        if (sscanf(arg, "%u:%u:%u%c", &uid, &gid, &size, &tail) != 3 || size == 0)
            return flag_error("--userns", arg, "is not UID:GID:SIZE");
        spec->userns = (struct hd_user_namespace){true, uid, gid, size};
        return 0;
    }
    case OPT_ENTRYPOINT:
        hd_strv_free(spec->entrypoint);
        spec->entrypoint = NULL;
        if (arg[0])
            hd_strv_push(&spec->entrypoint, arg);
        else
            spec->entrypoint = hd_xcalloc(1, sizeof(char *)); /* "" clears the image's */
        return 0;
    case OPT_VM_ACCEL:
        free(spec->vm_accel);
        spec->vm_accel = hd_xstrdup(arg);
        return 0;
    case OPT_DEVICE: {
        struct hd_device d;
        const char *why = NULL;
        if (hd_device_flag_parse(arg, &d, &why) < 0)
            return flag_error("--device", arg, why);
        spec->devices = hd_xrealloc(spec->devices, (size_t)(spec->n_devices + 1) * sizeof(*spec->devices));
        spec->devices[spec->n_devices++] = d;
        return 0;
    }
    case OPT_DEVICE_CGROUP_RULE: {
        struct hd_device_class c;
        const char *why = NULL;
        if (hd_device_class_parse(arg, &c, &why) < 0)
            return flag_error("--device-cgroup-rule", arg, why);
        spec->device_rules =
            hd_xrealloc(spec->device_rules, (size_t)(spec->n_device_rules + 1) * sizeof(*spec->device_rules));
        spec->device_rules[spec->n_device_rules++] = c;
        return 0;
    }
    case OPT_VM_BOOT:
        free(spec->vm_boot);
        spec->vm_boot = hd_xstrdup(arg);
        return 0;
    }
    return HD_EXIT_USAGE;
}

int cmd_run(int argc, char **argv)
{
    cleanup_spec struct hd_spec *spec = hd_spec_new();
    hd_error_t err = NULL;

    /* Pass 1: the spec file, so that flags override it whatever their order. */
    optind = 1;
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "+f:i:e:w:u:m:v:", options, NULL)) != -1) {
        if (opt == 'f' && hd_spec_load_file(spec, optarg, &err) < 0)
            return cli_fail(&err);
        if (opt == OPT_HELP) {
            fputs("usage: ", stdout);
            fputs(usage, stdout);
            return 0;
        }
    }
    /* Pass 2: the flags. */
    optind = 1;
    opterr = 1;
    while ((opt = getopt_long(argc, argv, "+f:i:e:w:u:m:v:", options, NULL)) != -1) {
        if (opt == '?' || opt == ':') {
            fprintf(stderr, "usage: %s", usage);
            return HD_EXIT_USAGE;
        }
        int r = apply_flag(spec, opt, optarg);
        if (r)
            return r;
    }

    /* Positional arguments: [IMAGE] [--] [COMMAND...] */
    int i = optind;
    bool dashdash_seen = i > 1 && strcmp(argv[i - 1], "--") == 0;
    if (!spec->isolation_set)
        spec->isolation = (spec->image || spec->rootfs || (i < argc && !dashdash_seen && strcmp(argv[i], "--")))
            ? HD_ISOLATION_CONTAINER
            : HD_ISOLATION_PROCESS;
    bool wants_image = spec->isolation != HD_ISOLATION_PROCESS && !spec->image && !spec->rootfs;
    if (wants_image && i < argc && !dashdash_seen && strcmp(argv[i], "--") != 0)
        spec->image = hd_xstrdup(argv[i++]);
    if (i < argc && strcmp(argv[i], "--") == 0)
        i++;
    if (i < argc) {
        hd_strv_free(spec->command);
        spec->command = NULL;
        for (; i < argc; i++)
            hd_strv_push(&spec->command, argv[i]);
    }

    struct hd_exit exit_info;
    if (hd_run(spec, NULL, &exit_info, &err) < 0)
        return cli_fail(&err);
    if (exit_info.oom_killed)
        print_oom_line(spec);
    return exit_info.code;
}
