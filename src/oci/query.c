/*
 * query.c - the verbs that only read or describe: state, list, spec, features.
 */
#include "oci/oci.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "base/util.h"

int oci_cmd_state(int argc, char **argv)
{
    struct oci_option opts[] = {{NULL, 0, false, NULL, NULL}};
    int first = oci_parse_options("state", argc, argv, opts);
    if (first < 0 || argc - first != 1) {
        oci_log("error", "state: expects exactly one container id");
        return OCI_EXIT_FAILURE;
    }
    hd_error_t err = NULL;
    struct oci_state *st = NULL;
    if (oci_state_load(argv[first], &st, &err) < 0)
        return oci_fail(&err);
    cleanup_free char *text = oci_state_json(st, true);
    printf("%s\n", text);
    oci_state_free(st);
    return 0;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int oci_cmd_list(int argc, char **argv)
{
    const char *format = "table";
    bool quiet = false;
    struct oci_option opts[] = {
        {"format", 'f', true, &format, NULL},
        {"quiet", 'q', false, NULL, &quiet},
        {NULL, 0, false, NULL, NULL},
    };
    int first = oci_parse_options("list", argc, argv, opts);
    if (first < 0)
        return OCI_EXIT_FAILURE;
    bool json = strcmp(format, "json") == 0;
    if (!json && strcmp(format, "table") != 0) {
        oci_log("error", "list: --format \"%s\" is not table or json", format);
        return OCI_EXIT_FAILURE;
    }
    cleanup_strv char **ids = NULL;
    DIR *d = opendir(oci_globals.root);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            hd_strv_push(&ids, e->d_name);
        }
        closedir(d);
    }
    size_t n = ids ? hd_strv_len(ids) : 0; /* no container: no list at all */
    if (n > 1)
        qsort(ids, n, sizeof(char *), compare_names);
    json_t *arr = json_array();
    if (!json && !quiet)
        printf("%-12s %-10s %-10s %-40s %-30s %s\n", "ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER");
    for (size_t i = 0; i < n; i++) {
        struct oci_state *st = NULL;
        hd_error_t err = NULL;
        if (oci_state_load(ids[i], &st, &err) < 0) {
            hd_error_free(&err);
            continue;
        }
        cleanup_free char *text = oci_state_json(st, false);
        json_t *o = json_loads(text, 0, NULL);
        if (json) {
            json_array_append(arr, o);
        } else if (quiet) {
            printf("%s\n", st->id);
        } else {
            printf("%-12s %-10lld %-10s %-40s %-30s %s\n", st->id,
                   (long long)json_integer_value(json_object_get(o, "pid")),
                   json_string_value(json_object_get(o, "status")), st->bundle ? st->bundle : "",
                   st->created ? st->created : "", "root");
        }
        json_decref(o);
        oci_state_free(st);
    }
    if (json) {
        char *text = json_dumps(arr, JSON_COMPACT);
        printf("%s\n", text ? text : "[]");
        free(text);
    }
    json_decref(arr);
    return 0;
}

/* runc's `spec`, but without a terminal: `create` of that config then needs no --console-socket. */
static const char default_config[] =
    "{\n"
    "  \"ociVersion\": \"" OCI_VERSION "\",\n"
    "  \"process\": {\n"
    "    \"terminal\": false,\n"
    "    \"user\": {\"uid\": 0, \"gid\": 0},\n"
    "    \"args\": [\"sh\"],\n"
    "    \"env\": [\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\", \"TERM=xterm\"],\n"
    "    \"cwd\": \"/\",\n"
    "    \"capabilities\": {\n"
    "      \"bounding\": [\"CAP_AUDIT_WRITE\", \"CAP_KILL\", \"CAP_NET_BIND_SERVICE\"],\n"
    "      \"effective\": [\"CAP_AUDIT_WRITE\", \"CAP_KILL\", \"CAP_NET_BIND_SERVICE\"],\n"
    "      \"permitted\": [\"CAP_AUDIT_WRITE\", \"CAP_KILL\", \"CAP_NET_BIND_SERVICE\"]\n"
    "    },\n"
    "    \"rlimits\": [{\"type\": \"RLIMIT_NOFILE\", \"hard\": 1024, \"soft\": 1024}],\n"
    "    \"noNewPrivileges\": true\n"
    "  },\n"
    "  \"root\": {\"path\": \"rootfs\", \"readonly\": true},\n"
    "  \"hostname\": \"hedge\",\n"
    "  \"mounts\": [\n"
    "    {\"destination\": \"/proc\", \"type\": \"proc\", \"source\": \"proc\"},\n"
    "    {\"destination\": \"/dev\", \"type\": \"tmpfs\", \"source\": \"tmpfs\",\n"
    "     \"options\": [\"nosuid\", \"strictatime\", \"mode=755\", \"size=65536k\"]},\n"
    "    {\"destination\": \"/dev/pts\", \"type\": \"devpts\", \"source\": \"devpts\",\n"
    "     \"options\": [\"nosuid\", \"noexec\", \"newinstance\", \"ptmxmode=0666\", \"mode=0620\", \"gid=5\"]},\n"
    "    {\"destination\": \"/dev/shm\", \"type\": \"tmpfs\", \"source\": \"shm\",\n"
    "     \"options\": [\"nosuid\", \"noexec\", \"nodev\", \"mode=1777\", \"size=65536k\"]},\n"
    "    {\"destination\": \"/dev/mqueue\", \"type\": \"mqueue\", \"source\": \"mqueue\",\n"
    "     \"options\": [\"nosuid\", \"noexec\", \"nodev\"]},\n"
    "    {\"destination\": \"/sys\", \"type\": \"sysfs\", \"source\": \"sysfs\",\n"
    "     \"options\": [\"nosuid\", \"noexec\", \"nodev\", \"ro\"]}\n"
    "  ],\n"
    "  \"linux\": {\n"
    "    \"resources\": {\"devices\": [{\"allow\": false, \"access\": \"rwm\"}]},\n"
    "    \"namespaces\": [{\"type\": \"pid\"}, {\"type\": \"network\"}, {\"type\": \"ipc\"}, {\"type\": \"uts\"},\n"
    "                   {\"type\": \"mount\"}, {\"type\": \"cgroup\"}],\n"
    "    \"maskedPaths\": [\"/proc/acpi\", \"/proc/asound\", \"/proc/kcore\", \"/proc/keys\", "
    "\"/proc/latency_stats\",\n"
    "                    \"/proc/timer_list\", \"/proc/timer_stats\", \"/proc/sched_debug\", \"/sys/firmware\",\n"
    "                    \"/proc/scsi\"],\n"
    "    \"readonlyPaths\": [\"/proc/bus\", \"/proc/fs\", \"/proc/irq\", \"/proc/sys\", \"/proc/sysrq-trigger\"]\n"
    "  }\n"
    "}\n";

char *oci_default_config(void)
{
    return hd_xstrdup(default_config);
}

int oci_cmd_spec(int argc, char **argv)
{
    const char *bundle = ".";
    bool rootless = false;
    struct oci_option opts[] = {
        {"bundle", 'b', true, &bundle, NULL},
        {"rootless", 0, false, NULL, &rootless},
        {NULL, 0, false, NULL, NULL},
    };
    int first = oci_parse_options("spec", argc, argv, opts);
    if (first < 0)
        return OCI_EXIT_FAILURE;
    hd_error_t err = NULL;
    if (rootless) {
        hd_error_set(&err, 0, "spec --rootless: rootless containers are not supported yet");
        return oci_fail(&err);
    }
    cleanup_free char *path = hd_xasprintf("%s/config.json", bundle);
    cleanup_close int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        if (errno == EEXIST)
            hd_error_set(&err, EEXIST, "spec: %s exists; remove it first", path);
        else
            hd_error_sys(&err, "spec: create %s", path);
        return oci_fail(&err);
    }
    cleanup_free char *text = oci_default_config();
    if (hd_write_all(fd, text, strlen(text)) < 0) {
        hd_error_sys(&err, "spec: write %s", path);
        return oci_fail(&err);
    }
    return 0;
}

int oci_cmd_features(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    /* runc's `features` document, saying what hedge-oci honours today (docs/oci.md). */
    printf("{\n"
           "  \"ociVersionMin\": \"1.0.0\",\n"
           "  \"ociVersionMax\": \"" OCI_VERSION "\",\n"
           "  \"hooks\": [\"prestart\", \"createRuntime\", \"createContainer\", \"startContainer\", "
           "\"poststart\", \"poststop\"],\n"
           "  \"mountOptions\": [\"bind\", \"rbind\", \"ro\", \"rw\", \"nosuid\", \"suid\", \"nodev\", \"dev\", "
           "\"noexec\", \"exec\", \"noatime\", \"nodiratime\", \"relatime\", \"strictatime\", \"atime\", "
           "\"private\", \"rprivate\"],\n"
           "  \"linux\": {\n"
           "    \"namespaces\": [\"cgroup\", \"ipc\", \"mount\", \"network\", \"pid\", \"time\", \"uts\"],\n"
           "    \"capabilities\": [\"CAP_CHOWN\", \"CAP_DAC_OVERRIDE\", \"CAP_DAC_READ_SEARCH\", \"CAP_FOWNER\", "
           "\"CAP_FSETID\", \"CAP_KILL\", \"CAP_SETGID\", \"CAP_SETUID\", \"CAP_SETPCAP\", \"CAP_LINUX_IMMUTABLE\", "
           "\"CAP_NET_BIND_SERVICE\", \"CAP_NET_BROADCAST\", \"CAP_NET_ADMIN\", \"CAP_NET_RAW\", \"CAP_IPC_LOCK\", "
           "\"CAP_IPC_OWNER\", \"CAP_SYS_MODULE\", \"CAP_SYS_RAWIO\", \"CAP_SYS_CHROOT\", \"CAP_SYS_PTRACE\", "
           "\"CAP_SYS_PACCT\", \"CAP_SYS_ADMIN\", \"CAP_SYS_BOOT\", \"CAP_SYS_NICE\", \"CAP_SYS_RESOURCE\", "
           "\"CAP_SYS_TIME\", \"CAP_SYS_TTY_CONFIG\", \"CAP_MKNOD\", \"CAP_LEASE\", \"CAP_AUDIT_WRITE\", "
           "\"CAP_AUDIT_CONTROL\", \"CAP_SETFCAP\", \"CAP_MAC_OVERRIDE\", \"CAP_MAC_ADMIN\", \"CAP_SYSLOG\", "
           "\"CAP_WAKE_ALARM\", \"CAP_BLOCK_SUSPEND\", \"CAP_AUDIT_READ\"],\n"
           "    \"cgroup\": {\"v1\": true, \"v2\": true, \"systemd\": false, \"systemdUser\": false},\n"
           "    \"seccomp\": {\"enabled\": true, \"actions\": [\"SCMP_ACT_ALLOW\", \"SCMP_ACT_ERRNO\", "
           "\"SCMP_ACT_KILL\", \"SCMP_ACT_KILL_PROCESS\", \"SCMP_ACT_KILL_THREAD\", \"SCMP_ACT_TRAP\", "
           "\"SCMP_ACT_LOG\", \"SCMP_ACT_NOTIFY\"], \"operators\": [\"SCMP_CMP_EQ\", \"SCMP_CMP_NE\", "
           "\"SCMP_CMP_LT\", \"SCMP_CMP_LE\", \"SCMP_CMP_GT\", \"SCMP_CMP_GE\", \"SCMP_CMP_MASKED_EQ\"], "
           "\"archs\": [\"SCMP_ARCH_X86_64\", \"SCMP_ARCH_X86\"]},\n"
           "    \"apparmor\": {\"enabled\": false},\n"
           "    \"selinux\": {\"enabled\": false}\n"
           "  },\n"
           "  \"annotations\": {\"org.hedge.oci.version\": \"" OCI_VERSION "\"}\n"
           "}\n");
    return 0;
}
