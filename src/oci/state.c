/*
 * state.c - what a container keeps between runtime calls: <root>/<id>/ holds
 * state.json (the pid and its start time, the bundle, the cgroup and run dir
 * to remove) and, from create until start, exec.fifo (the container's first
 * process waits in open(2) of it; see lifecycle.c).
 *
 * The status is not stored but read from the system each time, as runc does:
 * the pid with the recorded start time alive (not a zombie) is "created"
 * while the FIFO exists and "running" after; anything else is "stopped". So a
 * container that exits while nobody watches is "stopped" at the next call.
 */
#include "oci/oci.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "base/util.h"
#include "cgroup/cgroup.h"

int oci_id_check(const char *id, hd_error_t *err)
{
    if (id == NULL || *id == '\0')
        return hd_error_set(err, 0, "container id: missing");
    if (strcmp(id, ".") == 0 || strcmp(id, "..") == 0 || strlen(id) > 1024)
        return hd_error_set(err, 0, "container id \"%s\": invalid", id);
    for (const char *c = id; *c; c++) {
        bool ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_' ||
            *c == '-' || *c == '.' || *c == '+';
        if (!ok)
            return hd_error_set(err, 0, "container id \"%s\": only letters, digits and _ - . + are allowed", id);
    }
    return 0;
}

char *oci_state_dir(const char *id)
{
    return hd_xasprintf("%s/%s", oci_globals.root, id);
}

char *oci_fifo_path(const char *id)
{
    return hd_xasprintf("%s/%s/exec.fifo", oci_globals.root, id);
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

int oci_state_save(const struct oci_state *st, hd_error_t *err)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(st->id));
    json_object_set_new(o, "pid", json_integer(st->pid));
    json_object_set_new(o, "pid_start", json_integer((json_int_t)st->pid_start));
    json_object_set_new(o, "bundle", str_or_null(st->bundle));
    json_object_set_new(o, "rootfs", str_or_null(st->rootfs));
    json_object_set_new(o, "created", str_or_null(st->created));
    json_object_set_new(o, "cgroup_parent", str_or_null(st->cgroup_parent));
    json_object_set_new(o, "cgroup_name", str_or_null(st->cgroup_name));
    json_object_set_new(o, "cgroup_mode", str_or_null(st->cgroup_mode));
    json_object_set_new(o, "run_dir", str_or_null(st->run_dir));
    json_object_set_new(o, "annotations", str_or_null(st->annotations_json));
    cleanup_free char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    cleanup_free char *path = hd_xasprintf("%s/%s/state.json", oci_globals.root, st->id);
    return hd_write_file_atomic(path, text, strlen(text), err);
}

static char *get_str(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? hd_xstrdup(json_string_value(v)) : NULL;
}

int oci_state_load(const char *id, struct oci_state **out, hd_error_t *err)
{
    if (oci_id_check(id, err) < 0)
        return -1;
    cleanup_free char *path = hd_xasprintf("%s/%s/state.json", oci_globals.root, id);
    cleanup_free char *text = NULL;
    size_t len = 0;
    hd_error_t read_err = NULL;
    if (hd_read_file(path, &text, &len, &read_err) < 0) {
        int e = read_err->errnum;
        hd_error_free(&read_err);
        if (e == ENOENT)
            return hd_error_set(err, ENOENT, "container \"%s\" does not exist", id);
        return hd_error_set(err, e, "container \"%s\": read %s", id, path);
    }
    json_error_t jerr;
    json_t *o = json_loadb(text, len, 0, &jerr);
    if (!json_is_object(o)) {
        json_decref(o);
        return hd_error_set(err, 0, "container \"%s\": %s is damaged", id, path);
    }
    struct oci_state *st = hd_xcalloc(1, sizeof(*st));
    st->id = hd_xstrdup(id);
    st->pid = (pid_t)json_integer_value(json_object_get(o, "pid"));
    st->pid_start = (uint64_t)json_integer_value(json_object_get(o, "pid_start"));
    st->bundle = get_str(o, "bundle");
    st->rootfs = get_str(o, "rootfs");
    st->created = get_str(o, "created");
    st->cgroup_parent = get_str(o, "cgroup_parent");
    st->cgroup_name = get_str(o, "cgroup_name");
    st->cgroup_mode = get_str(o, "cgroup_mode");
    st->run_dir = get_str(o, "run_dir");
    st->annotations_json = get_str(o, "annotations");
    json_decref(o);
    /* the container's cgroup is found in the layout it was made in (a $HEDGE_CGROUP_MODE override at create) */
    if (st->cgroup_mode)
        setenv("HEDGE_CGROUP_MODE", st->cgroup_mode, 1);
    *out = st;
    return 0;
}

void oci_state_free(struct oci_state *st)
{
    if (st == NULL)
        return;
    free(st->id);
    free(st->bundle);
    free(st->rootfs);
    free(st->created);
    free(st->cgroup_parent);
    free(st->cgroup_name);
    free(st->cgroup_mode);
    free(st->run_dir);
    free(st->annotations_json);
    free(st);
}

/* Is the recorded process alive and not a zombie? */
static bool process_alive(const struct oci_state *st)
{
    if (st->pid <= 0 || hd_proc_start_time(st->pid) != st->pid_start)
        return false;
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)st->pid);
    cleanup_free char *text = NULL;
    hd_error_t err = NULL;
    if (hd_read_file(path, &text, NULL, &err) < 0) {
        hd_error_free(&err);
        return false;
    }
    const char *paren = strrchr(text, ')');
    return paren && paren[1] == ' ' && paren[2] != 'Z' && paren[2] != 'X';
}

/* Is the container's cgroup frozen (pause)? */
static bool container_frozen(const struct oci_state *st)
{
    if (st->cgroup_name == NULL)
        return false;
    oci_use_cgroup_parent(st->cgroup_parent);
    struct hd_cgroup *cg = NULL;
    hd_error_t err = NULL;
    if (hd_cgroup_open(st->cgroup_name, &cg, &err) < 0) {
        hd_error_free(&err);
        return false;
    }
    bool frozen = hd_cgroup_frozen(cg);
    hd_cgroup_forget(cg);
    return frozen;
}

enum oci_status oci_state_status(const struct oci_state *st)
{
    if (!process_alive(st))
        return OCI_STOPPED;
    if (container_frozen(st))
        return OCI_PAUSED;
    cleanup_free char *fifo = oci_fifo_path(st->id);
    return access(fifo, F_OK) == 0 ? OCI_CREATED : OCI_RUNNING;
}

const char *oci_status_name(enum oci_status s)
{
    switch (s) {
    case OCI_CREATED: return "created";
    case OCI_RUNNING: return "running";
    case OCI_PAUSED: return "paused";
    case OCI_STOPPED: return "stopped";
    }
    return "unknown";
}

char *oci_state_json(const struct oci_state *st, bool pretty)
{
    enum oci_status status = oci_state_status(st);
    return oci_state_document(st, oci_status_name(status), status == OCI_STOPPED ? 0 : st->pid, pretty);
}

char *oci_state_document(const struct oci_state *st, const char *status, pid_t pid, bool pretty)
{
    json_t *o = json_object();
    json_object_set_new(o, "ociVersion", json_string(OCI_VERSION));
    json_object_set_new(o, "id", json_string(st->id));
    json_object_set_new(o, "pid", json_integer(pid));
    json_object_set_new(o, "status", json_string(status));
    json_object_set_new(o, "bundle", str_or_null(st->bundle));
    json_object_set_new(o, "rootfs", str_or_null(st->rootfs));
    json_object_set_new(o, "created", str_or_null(st->created));
    json_object_set_new(o, "owner", json_string(""));
    json_t *ann = st->annotations_json ? json_loads(st->annotations_json, 0, NULL) : NULL;
    json_object_set_new(o, "annotations", json_is_object(ann) ? ann : json_object());
    if (ann && !json_is_object(ann))
        json_decref(ann);
    char *text = json_dumps(o, pretty ? JSON_INDENT(2) : JSON_COMPACT);
    json_decref(o);
    return text;
}

void oci_use_cgroup_parent(const char *parent)
{
    if (parent)
        setenv("HEDGE_CGROUP_PARENT", parent, 1);
}

/* Wait (up to about 5 s) until the killed process is gone or a zombie. */
static void wait_for_exit(const struct oci_state *st)
{
    for (int i = 0; i < 500 && process_alive(st); i++)
        usleep(10000);
}

int oci_state_destroy(const struct oci_state *st, hd_error_t *err)
{
    int rc = 0;
    if (process_alive(st) && container_frozen(st)) {
        /* a frozen process dies only once thawed */
        oci_use_cgroup_parent(st->cgroup_parent);
        struct hd_cgroup *cg = NULL;
        hd_error_t thaw_err = NULL;
        if (hd_cgroup_open(st->cgroup_name, &cg, &thaw_err) < 0 || hd_cgroup_freeze(cg, false, &thaw_err) < 0)
            oci_log("error", "delete %s: thaw: %s", st->id, hd_error_text(thaw_err));
        hd_error_free(&thaw_err);
        hd_cgroup_forget(cg);
    }
    if (process_alive(st)) {
        kill(st->pid, SIGKILL);
        wait_for_exit(st);
    }
    if (oci_globals.vm)
        oci_vm_delete_net(st->id);
    if (st->cgroup_name) {
        oci_use_cgroup_parent(st->cgroup_parent);
        struct hd_cgroup *cg = NULL;
        hd_error_t cg_err = NULL;
        if (hd_cgroup_open(st->cgroup_name, &cg, &cg_err) < 0 || hd_cgroup_destroy(cg, &cg_err) < 0) {
            oci_log("error", "delete %s: %s", st->id, hd_error_text(cg_err));
            hd_error_free(&cg_err);
            rc = hd_error_set(err, 0, "delete %s: the cgroup could not be removed", st->id);
        }
    }
    if (st->run_dir) {
        hd_error_t rm_err = NULL;
        if (hd_rm_rf(st->run_dir, &rm_err) < 0 && rm_err->errnum != ENOENT) {
            oci_log("error", "delete %s: %s", st->id, hd_error_text(rm_err));
            rc = -1;
        }
        hd_error_free(&rm_err);
    }
    cleanup_free char *dir = oci_state_dir(st->id);
    hd_error_t rm_err = NULL;
    if (hd_rm_rf(dir, &rm_err) < 0 && rm_err->errnum != ENOENT) {
        if (rc == 0)
            rc = hd_error_set(err, rm_err->errnum, "delete %s: remove %s", st->id, dir);
    }
    hd_error_free(&rm_err);
    if (rc < 0 && *err == NULL)
        hd_error_set(err, 0, "delete %s: clean-up failed", st->id);
    return rc;
}
