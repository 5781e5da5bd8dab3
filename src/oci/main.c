/*
 * main.c - hedge-oci's command line: runc's global flags and verbs, one
 * table, one file per family of verbs (lifecycle.c: create/run/start/kill/
 * delete; query.c: state/list/spec/features; exec.c: exec/pause/resume/ps/
 * update/events).
 *
 * Engines (podman, containerd's runc shim, ctr --runc-binary, CRI-O) call a
 * runtime the way they call runc: `hedge-oci [--root DIR] [--log FILE]
 * [--log-format json] VERB [flags] ID`. Flags are spelled as urfave/cli
 * accepts them: -x, --name, --name=value, -name value. An error is one line on
 * stderr and, with --log, one line in the log file; with --log-format json it
 * is {"level":"error","msg":...,"time":...}, which containerd reads back.
 */
#include "oci/oci.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "config.h"
#include "base/util.h"

struct oci_globals oci_globals = {.root = OCI_DEFAULT_ROOT};

static void log_time(char *buf, size_t len)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%09ldZ", ts.tv_nsec);
}

static void log_vline(const char *level, const char *fmt, va_list ap)
{
    cleanup_free char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        return;
    bool is_error = strcmp(level, "error") == 0;
    if (is_error)
        fprintf(stderr, "%s: %s\n", oci_globals.vm ? "hedge-oci-vm" : "hedge-oci", msg);
    if (oci_globals.log_path == NULL || (!is_error && !oci_globals.debug && strcmp(level, "debug") == 0))
        return;
    FILE *f = fopen(oci_globals.log_path, "ae");
    if (f == NULL)
        return;
    char when[64];
    log_time(when, sizeof(when));
    if (oci_globals.log_json) {
        json_t *line = json_pack("{s:s, s:s, s:s}", "level", level, "msg", msg, "time", when);
        char *text = line ? json_dumps(line, JSON_COMPACT) : NULL;
        if (text)
            fprintf(f, "%s\n", text);
        free(text);
        json_decref(line);
    } else {
        json_t *quoted = json_string(msg);
        char *text = quoted ? json_dumps(quoted, JSON_ENCODE_ANY) : NULL;
        fprintf(f, "time=\"%s\" level=%s msg=%s\n", when, level, text ? text : "\"\"");
        free(text);
        json_decref(quoted);
    }
    fclose(f);
}

void oci_log(const char *level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vline(level, fmt, ap);
    va_end(ap);
}

int oci_fail(hd_error_t *err)
{
    oci_log("error", "%s", *err ? hd_error_text(*err) : "unknown error");
    hd_error_free(err);
    return OCI_EXIT_FAILURE;
}

static const struct oci_option *find_option(const struct oci_option *opts, const char *name, size_t len)
{
    for (const struct oci_option *o = opts; o && o->name; o++) {
        if (len == 1 && o->short_name == name[0])
            return o;
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0)
            return o;
    }
    return NULL;
}

int oci_parse_options(const char *verb, int argc, char **argv, const struct oci_option *opts)
{
    const char *sep = verb ? ": " : ""; /* errors start with the verb; the global flags' have none */
    verb = verb ? verb : "";
    int i = 0;
    while (i < argc) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0)
            return i + 1;
        if (a[0] != '-' || a[1] == '\0')
            return i;
        const char *name = a + (a[1] == '-' ? 2 : 1);
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const struct oci_option *o = find_option(opts, name, len);
        if (o == NULL && (strncmp(name, "help", len) == 0 || (len == 1 && name[0] == 'h'))) {
            printf("usage: hedge-oci %s [flags] ...\n(see docs/oci.md)\n", verb);
            exit(0);
        }
        if (o == NULL) {
            oci_log("error", "%s%sflag provided but not defined: -%.*s", verb, sep, (int)len, name);
            return -1;
        }
        if (o->has_arg) {
            if (eq) {
                *o->value = eq + 1;
            } else if (i + 1 < argc) {
                *o->value = argv[++i];
            } else {
                oci_log("error", "%s%sflag needs an argument: -%s", verb, sep, o->name);
                return -1;
            }
            if (o->values)
                hd_strv_push(o->values, *o->value);
        } else {
            /* boolean flags accept --flag=true|false as urfave/cli does */
            *o->flag = !(eq && strcmp(eq + 1, "false") == 0);
        }
        i++;
    }
    return i;
}

struct verb {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static int not_yet(const char *verb)
{
    oci_log("error",
            "%s: not supported yet by hedge-oci (supported: create, start, run, state, kill, delete, "
            "list, spec, features, exec, pause, resume, ps, update, events)",
            verb);
    return OCI_EXIT_FAILURE;
}

static const struct verb verbs[] = {
    {"create", oci_cmd_create, "create a container from a bundle; its process waits for start"},
    {"start", oci_cmd_start, "start the process of a created container"},
    {"run", oci_cmd_run, "create and start a container"},
    {"state", oci_cmd_state, "print the OCI state of a container"},
    {"kill", oci_cmd_kill, "send a signal to the container's process (--all: every process)"},
    {"delete", oci_cmd_delete, "remove a stopped (or, with --force, any) container"},
    {"list", oci_cmd_list, "list containers (--format json)"},
    {"spec", oci_cmd_spec, "write a default config.json"},
    {"features", oci_cmd_features, "print what this runtime supports (JSON)"},
    {"exec", oci_cmd_exec, "run one more process in a running container"},
    {"pause", oci_cmd_pause, "freeze every process of the container (cgroup freezer)"},
    {"resume", oci_cmd_resume, "thaw a paused container"},
    {"ps", oci_cmd_ps, "list the container's processes (--format table|json)"},
    {"events", oci_cmd_events, "the container's cgroup stats as JSON events (--stats: once; else every --interval)"},
    {"update", oci_cmd_update, "change the container's cgroup limits (--resources FILE|-, --memory, ...)"},
};

static const char *const later_verbs[] = {"checkpoint", "restore"};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: hedge-oci [--root DIR] [--log FILE] [--log-format text|json] [--debug] "
            "[--systemd-cgroup] VERB [flags] [ID]\n\nverbs:\n");
    for (size_t i = 0; i < ARRAY_SIZE(verbs); i++)
        fprintf(f, "  %-9s %s\n", verbs[i].name, verbs[i].summary);
    fprintf(f, "\nnot supported yet:");
    for (size_t i = 0; i < ARRAY_SIZE(later_verbs); i++)
        fprintf(f, " %s", later_verbs[i]);
    fprintf(f, "\n");
}

int main(int argc, char **argv)
{
    const char *log_format = NULL;
    bool version = false, help = false, systemd = false, debug = false;
    const char *criu_ignored = NULL, *rootless = NULL;
    struct oci_option globals[] = {
        {"root", 0, true, &oci_globals.root, NULL},
        {"log", 0, true, &oci_globals.log_path, NULL},
        {"log-format", 0, true, &log_format, NULL},
        {"debug", 0, false, NULL, &debug},
        {"systemd-cgroup", 0, false, NULL, &systemd},
        {"version", 'v', false, NULL, &version},
        {"help", 'h', false, NULL, &help},
        {"criu", 0, true, &criu_ignored, NULL}, /* checkpointing is not supported; the path is unused */
        {"rootless", 0, true, &rootless, NULL},
        {NULL, 0, false, NULL, NULL},
    };
    /* the same binary under the name hedge-oci-vm (a symlink): the VM handler (vm.c) */
    const char *base = strrchr(argv[0], '/');
    oci_globals.vm = strcmp(base ? base + 1 : argv[0], "hedge-oci-vm") == 0;
    if (oci_globals.vm) /* its own default root, as each runtime has: list and state see only VMs */
        oci_globals.root = OCI_VM_DEFAULT_ROOT;
    int first = oci_parse_options(NULL, argc - 1, argv + 1, globals);
    if (first < 0)
        return OCI_EXIT_FAILURE;
    first += 1;
    oci_globals.debug = debug;
    oci_globals.systemd_cgroup = systemd;
    if (oci_globals.log_path && *oci_globals.log_path == '\0')
        oci_globals.log_path = NULL;
    if (log_format && strcmp(log_format, "json") == 0) {
        oci_globals.log_json = true;
    } else if (log_format && strcmp(log_format, "text") != 0) {
        oci_log("error", "--log-format: \"%s\" is not text or json", log_format);
        return OCI_EXIT_FAILURE;
    }
    if (version) {
        printf("%s version %s\nspec: %s\n", oci_globals.vm ? "hedge-oci-vm" : "hedge-oci", HEDGE_VERSION, OCI_VERSION);
        return 0;
    }
    if (help || first >= argc) {
        usage(help ? stdout : stderr);
        return help ? 0 : OCI_EXIT_FAILURE;
    }
    if (rootless && strcmp(rootless, "false") != 0 && strcmp(rootless, "auto") != 0) {
        oci_log("error", "--rootless: rootless containers are not supported yet");
        return OCI_EXIT_FAILURE;
    }
    if (systemd) {
        /* systemd manages cgroups only where it runs as init */
        if (access("/run/systemd/system", F_OK) < 0) {
            oci_log("error",
                    "--systemd-cgroup: systemd is not running on this host (no /run/systemd/system); "
                    "use cgroupfs paths");
            return OCI_EXIT_FAILURE;
        }
        oci_log("error", "--systemd-cgroup: systemd cgroup management is not supported yet; use cgroupfs paths");
        return OCI_EXIT_FAILURE;
    }
    const char *verb = argv[first];
    oci_log("debug", "%s called", verb);
    for (size_t i = 0; i < ARRAY_SIZE(verbs); i++)
        if (strcmp(verbs[i].name, verb) == 0)
            return verbs[i].run(argc - first - 1, argv + first + 1);
    for (size_t i = 0; i < ARRAY_SIZE(later_verbs); i++)
        if (strcmp(later_verbs[i], verb) == 0)
            return not_yet(verb);
    oci_log("error", "no such verb: %s", verb);
    usage(stderr);
    return OCI_EXIT_FAILURE;
}
