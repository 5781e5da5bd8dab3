"""hedge-oci: runc's command line over hedge's container runtime.

The runc lifecycle on a busybox bundle (create -> created -> start -> running ->
kill -> stopped -> delete), exit codes, the pid file, config.json fields and the
errors that name the fields hedge-oci does not support, and podman driving
hedge-oci as its OCI runtime. Every test runs the real binary as root and leaves
nothing behind (conftest's checks, plus the state dir under --root).
"""
import ctypes
import json
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import BUILD, CGROUP_PARENT, ROOT, SANITIZER_ENV, Result, check_sanitizer

HEDGE_OCI = BUILD / "hedge-oci"
PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture
def subreaper():
    """Make this process the subreaper of the containers whose creator exits (as conmon or a containerd
    shim is), so their exit status is ours to collect; reap and unset afterwards."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def reap(pid, timeout=10):
    """Collect the exit status of an orphaned container process we are the subreaper of."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return status
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} did not exit")


@pytest.fixture
def oci(dirs):
    """oci(*args, input=None, timeout=30, env=None) -> Result: hedge-oci with a per-test --root."""
    root = dirs["state"] / "oci-root"

    def run(*args, timeout=30, env=None, root_flag=True):
        e = dict(os.environ)
        e.update(SANITIZER_ENV)
        e["HEDGE_RUN_DIR"] = str(dirs["run"])
        e["HEDGE_CGROUP_PARENT"] = CGROUP_PARENT
        if env:
            e.update(env)
        argv = [str(HEDGE_OCI)] + (["--root", str(root)] if root_flag else []) + [str(a) for a in args]
        # files, not pipes: a created container inherits create's stdio and keeps a pipe open
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=timeout, env=e)
            out.seek(0)
            err.seek(0)
            proc.stdout, proc.stderr = out.read(), err.read()
        check_sanitizer(proc.stderr)
        return Result(proc)

    run.root = root
    yield run
    # a test that failed half-way must not leave a container running: delete it, then say so
    left = sorted(p.name for p in root.iterdir()) if root.exists() else []
    for cid in left:
        run("delete", "--force", cid)
    assert left == [], f"containers left behind under --root: {left}"


def make_bundle(path, rootfs, args, **changes):
    """A bundle at path: `hedge-oci spec`'s config.json with root.path = rootfs and process.args = args."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").unlink(missing_ok=True)
    r = subprocess.run([str(HEDGE_OCI), "spec", "--bundle", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    config = json.loads((path / "config.json").read_text())
    config["root"] = {"path": str(rootfs), "readonly": False}
    config["process"]["args"] = list(args)
    for key, value in changes.items():
        node = config
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture
def bundle(tmp_path, busybox_rootfs):
    def make(*args, **changes):
        return make_bundle(tmp_path / "bundle", busybox_rootfs, args, **changes)
    return make


def state(oci, cid):
    r = oci("state", cid)
    assert r.code == 0, r
    return json.loads(r.out)


def cgroup_dirs(name):
    base = pathlib.Path("/sys/fs/cgroup")
    return [p for p in [base / CGROUP_PARENT / name] + list(base.glob(f"*/{CGROUP_PARENT}/{name}")) if p.is_dir()]


def test_lifecycle(oci, bundle, tmp_path, subreaper):
    b = bundle("sleep", "1000")
    pid_file = tmp_path / "pid"
    r = oci("create", "--bundle", b, "--pid-file", pid_file, "c1")
    assert r.code == 0, r
    st = state(oci, "c1")
    assert st["status"] == "created" and st["id"] == "c1" and st["bundle"] == str(b)
    assert st["ociVersion"].startswith("1.")
    pid = st["pid"]
    assert int(pid_file.read_text()) == pid
    # held before exec: still hedge-oci's code, not sleep
    assert b"sleep" not in pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    assert cgroup_dirs("c1"), "the container's cgroup exists from create on"
    assert (oci.root / "c1" / "exec.fifo").exists()

    r = oci("start", "c1")
    assert r.code == 0, r
    assert state(oci, "c1")["status"] == "running"
    assert pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"sleep"
    assert not (oci.root / "c1" / "exec.fifo").exists()
    assert oci("start", "c1").code == 1, "a running container cannot be started again"
    r = oci("delete", "c1")
    assert r.code == 1 and "running" in r.err, r

    r = oci("kill", "c1", "KILL")
    assert r.code == 0, r
    status = reap(pid)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    st = state(oci, "c1")
    assert st["status"] == "stopped" and st["pid"] == 0
    r = oci("kill", "c1", "TERM")
    assert r.code == 1 and "not running" in r.err, r

    r = oci("delete", "c1")
    assert r.code == 0, r
    assert not (oci.root / "c1").exists()
    assert cgroup_dirs("c1") == []
    r = oci("state", "c1")
    assert r.code == 1 and "does not exist" in r.err, r
    assert oci("delete", "--force", "c1").code == 0, "delete --force of a missing container is no error"


def test_exit_status_reaches_the_subreaper(oci, bundle, subreaper):
    b = bundle("sh", "-c", "exit 7")
    assert oci("create", "--bundle", b, "c2").code == 0
    pid = state(oci, "c2")["pid"]
    assert oci("start", "c2").code == 0
    status = reap(pid)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 7
    assert state(oci, "c2")["status"] == "stopped"
    assert oci("delete", "c2").code == 0


def test_kill_signal_names_and_numbers(oci, bundle, subreaper):
    b = bundle("sleep", "1000")
    for sig in ["9", "SIGKILL", "kill"]:
        assert oci("create", "--bundle", b, "k").code == 0
        pid = state(oci, "k")["pid"]
        r = oci("kill", "k", sig)
        assert r.code == 0, r
        assert os.WTERMSIG(reap(pid)) == signal.SIGKILL
        assert oci("delete", "k").code == 0
    assert oci("create", "--bundle", b, "k").code == 0
    r = oci("kill", "k", "NOSUCH")
    assert r.code == 1 and "not a signal" in r.err, r
    pid = state(oci, "k")["pid"]
    r = oci("kill", "--all", "k", "SIGKILL")
    assert r.code == 0, r
    reap(pid)
    # a created container can be deleted without --force (as runc)
    assert oci("create", "--bundle", b, "k2").code == 0
    pid2 = state(oci, "k2")["pid"]
    assert oci("delete", "k2").code == 0
    reap(pid2)
    assert oci("delete", "k").code == 0


def test_run_foreground_and_detached(oci, bundle, subreaper):
    b = bundle("sh", "-c", "echo out; echo err >&2; exit 3")
    r = oci("run", "--bundle", b, "fg")
    assert r.code == 3, r
    assert r.out == "out\n" and "err\n" in r.err
    assert not (oci.root / "fg").exists()
    b = bundle("sleep", "1000")
    r = oci("run", "-d", "--bundle", b, "bg")
    assert r.code == 0, r
    st = state(oci, "bg")
    assert st["status"] == "running"
    r = oci("list", "--format", "json")
    assert r.code == 0, r
    assert [(c["id"], c["status"]) for c in json.loads(r.out)] == [("bg", "running")]
    assert "bg" in oci("list").out
    assert oci("delete", "--force", "bg").code == 0
    reap(st["pid"])
    assert json.loads(oci("list", "--format", "json").out) == []


def test_process_fields(oci, bundle, tmp_path):
    caps = ["CAP_CHOWN", "CAP_KILL"]
    b = bundle("sh", "-c", "id -u; id -g; pwd; echo $FOO; ulimit -n; hostname; umask; grep -E 'CapEff|NoNewPrivs' "
               "/proc/self/status",
               **{"process.user": {"uid": 1000, "gid": 1001, "umask": 0o027}, "process.cwd": "/tmp",
                  "process.env": ["PATH=/bin:/sbin", "FOO=bar"], "hostname": "oci-host",
                  "process.rlimits": [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 512}],
                  "process.noNewPrivileges": True,
                  "process.capabilities": {"bounding": caps, "effective": caps, "permitted": caps}})
    r = oci("run", "--bundle", b, "p")
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert lines[:7] == ["1000", "1001", "/tmp", "bar", "512", "oci-host", "0027"], r
    # a non-root user keeps no capabilities (as runc without ambient caps)
    assert lines[7].split() == ["CapEff:", "0000000000000000"]
    assert lines[8].split() == ["NoNewPrivs:", "1"]
    b = bundle("sh", "-c", "grep CapEff /proc/self/status",
               **{"process.capabilities": {"bounding": caps, "effective": caps, "permitted": caps}})
    r = oci("run", "--bundle", b, "p")
    assert r.code == 0, r
    assert r.out.split() == ["CapEff:", "%016x" % ((1 << 0) | (1 << 5))]


def test_runc_spec_config_and_ambient_caps_as_runc(oci, tmp_path, busybox_rootfs):
    """`runc spec`'s config (ambient caps, no inheritable ones) runs; ambient caps that are not
    inheritable are left out with runc's warning (runc's own bats test: CapAmb 0x20)."""
    b = tmp_path / "runc-bundle"
    b.mkdir()
    r = subprocess.run(["runc", "spec", "--bundle", str(b)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    config = json.loads((b / "config.json").read_text())
    assert config["process"]["capabilities"]["ambient"] and not config["process"]["capabilities"].get("inheritable")
    config["root"] = {"path": str(busybox_rootfs)}
    config["process"]["terminal"] = False
    config["process"]["args"] = ["grep", "CapAmb", "/proc/self/status"]
    (b / "config.json").write_text(json.dumps(config))
    log = tmp_path / "log"
    r = oci("--log", log, "run", "--bundle", b, "rs")
    assert r.code == 0, r
    assert r.out.split() == ["CapAmb:", "0000000000000000"], r
    assert "can't raise ambient capability CAP_AUDIT_WRITE: operation not permitted" in log.read_text()
    caps = config["process"]["capabilities"]
    caps["inheritable"] = ["CAP_KILL"]
    caps["ambient"] = ["CAP_KILL", "CAP_CHOWN"]
    caps["bounding"] = caps["effective"] = caps["permitted"] = ["CAP_KILL", "CAP_CHOWN"]
    (b / "config.json").write_text(json.dumps(config))
    log.unlink()
    r = oci("--log", log, "run", "--bundle", b, "rs")
    assert r.code == 0, r
    assert r.out.split() == ["CapAmb:", "0000000000000020"], r
    text = log.read_text()
    assert "can't raise ambient capability CAP_CHOWN" in text and "capability CAP_KILL" not in text, text


def proc_status(pid):
    return dict(line.split(":\t", 1) for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
                if ":\t" in line)


def test_exec_joins_the_container(oci, bundle, tmp_path, subreaper):
    caps = ["CAP_CHOWN", "CAP_KILL", "CAP_SETUID", "CAP_SETGID"]
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
    b = bundle("sleep", "1000", hostname="oci-exec", **{
        "process.noNewPrivileges": True, "process.env": ["PATH=/bin:/sbin", "FROM=config"],
        "process.capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "linux.seccomp": seccomp})
    assert oci("run", "-d", "--bundle", b, "ex").code == 0
    init = state(oci, "ex")["pid"]
    # foreground: the command's output and exit status; the config's env, seccomp and no_new_privs
    r = oci("exec", "ex", "sh", "-c", "hostname; echo $FROM; echo $$; mkdir /x || echo denied; exit 5")
    assert r.code == 5, r
    assert r.out.splitlines()[:3] == ["oci-exec", "config", "2"], r
    assert "denied" in r.out and "Operation not permitted" in r.err, r
    # flags: --env (repeated), --cwd, --user
    r = oci("exec", "--env", "A=1", "-e", "B=2", "--cwd", "/tmp", "--user", "1000:1001", "ex",
            "sh", "-c", "echo $A$B; pwd; id -u; id -g")
    assert r.code == 0 and r.out.splitlines() == ["12", "/tmp", "1000", "1001"], r
    # --process FILE replaces the process; --detach --pid-file: the same namespaces, cgroup and security
    (tmp_path / "umask.json").write_text(json.dumps({"args": ["sh", "-c", "umask"], "cwd": "/",
                                                      "user": {"uid": 0, "gid": 0, "umask": 0o077}}))
    r = oci("exec", "--process", tmp_path / "umask.json", "ex")
    assert r.code == 0 and r.out == "0077\n", r
    r = oci("exec", "ex", "sh", "-c", "umask")
    assert r.code == 0 and r.out == "0022\n", r
    proc = {"args": ["sleep", "1000"], "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0},
            "noNewPrivileges": True,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps}}
    (tmp_path / "proc.json").write_text(json.dumps(proc))
    r = oci("exec", "--process", tmp_path / "proc.json", "--detach", "--pid-file", tmp_path / "pid", "ex")
    assert r.code == 0, r
    pid = int((tmp_path / "pid").read_text())
    for ns in ["pid", "mnt", "uts", "ipc", "net", "cgroup"]:
        assert os.readlink(f"/proc/{pid}/ns/{ns}") == os.readlink(f"/proc/{init}/ns/{ns}"), ns
    assert pathlib.Path(f"/proc/{pid}/cgroup").read_text() == pathlib.Path(f"/proc/{init}/cgroup").read_text()
    mine, theirs = proc_status(pid), proc_status(init)
    for key in ["CapBnd", "CapEff", "CapPrm", "NoNewPrivs", "Seccomp"]:
        assert mine[key] == theirs[key], key
    assert mine["Seccomp"].strip() == "2"
    # ps: both pids, as runc prints them (json) and as a ps table
    r = oci("ps", "--format", "json", "ex")
    assert r.code == 0 and sorted(json.loads(r.out)) == sorted([init, pid]), r
    r = oci("ps", "ex")
    assert r.code == 0 and r.out.splitlines()[0].split()[1] == "PID", r
    assert sorted(int(line.split()[1]) for line in r.out.splitlines()[1:]) == sorted([init, pid]), r
    # events --stats: one stats event of the container's cgroup
    r = oci("events", "--stats", "ex")
    assert r.code == 0, r
    ev = json.loads(r.out)
    assert ev["type"] == "stats" and ev["id"] == "ex" and ev["data"]["pids"]["current"] == 2, r
    assert ev["data"]["memory"]["usage"]["usage"] > 0 and ev["data"]["cpu"]["usage"]["total"] > 0, r
    r = oci("events", "--interval", "5x", "ex")
    assert r.code == 1 and "--interval" in r.err, r
    # update: runc's single-value flags and --resources FILE change the running container's cgroup
    def limit(v1_file, v2_file):
        for d in cgroup_dirs("ex"):
            for f in (v1_file, v2_file):
                if (d / f).exists():
                    return (d / f).read_text().split()[0]
        raise AssertionError(f"no {v1_file} or {v2_file}")
    r = oci("update", "--memory", "64m", "--pids-limit", "50", "ex")
    assert r.code == 0, r
    assert limit("memory.limit_in_bytes", "memory.max") == str(64 << 20)
    assert limit("pids.max", "pids.max") == "50"
    (tmp_path / "res.json").write_text(json.dumps({"memory": {"limit": 32 << 20}, "pids": {"limit": 20}}))
    r = oci("update", "--resources", tmp_path / "res.json", "ex")
    assert r.code == 0, r
    assert limit("memory.limit_in_bytes", "memory.max") == str(32 << 20)
    assert limit("pids.max", "pids.max") == "20"
    for flags, name in [(["--cpuset-cpus", "0"], "--cpuset-cpus"), (["--memory", "1x"], "--memory")]:
        r = oci("update", *flags, "ex")
        assert r.code == 1 and name in r.err, r
    # pause / resume: the freezer; a paused container refuses exec
    assert oci("pause", "ex").code == 0
    assert state(oci, "ex")["status"] == "paused"
    assert proc_status(init)["State"].startswith(("D", "S"))
    r = oci("exec", "ex", "true")
    assert r.code == 1 and "paused" in r.err, r
    r = oci("pause", "ex")
    assert r.code == 1 and "paused" in r.err, r
    assert oci("resume", "ex").code == 0
    assert state(oci, "ex")["status"] == "running"
    r = oci("resume", "ex")
    assert r.code == 1 and "not paused" in r.err, r
    # flags hedge-oci does not support name themselves
    for flags, name in [(["--tty"], "--tty"), (["--cap", "CAP_SYS_ADMIN"], "--cap"),
                        (["--console-socket", "/tmp/s"], "--console-socket"),
                        (["--preserve-fds", "2"], "--preserve-fds")]:
        r = oci("exec", *flags, "ex", "true")
        assert r.code == 1 and name in r.err, r
    r = oci("exec", "ex")
    assert r.code == 1 and "--process" in r.err, r
    r = oci("exec", "ex", "nonexistent")
    assert r.code == 1 and "executable file not found in $PATH" in r.err, r
    # a paused container is deleted with --force (thawed first)
    assert oci("pause", "ex").code == 0
    assert oci("delete", "--force", "ex").code == 0
    reap(pid)  # first: the namespace's init exits only when every process of it is reaped
    reap(init)
    assert cgroup_dirs("ex") == []
    r = oci("exec", "ex", "true")
    assert r.code == 1 and "does not exist" in r.err, r


def test_exec_and_pause_on_cgroup_v2(oci, bundle, subreaper):
    # v2 forced on this hybrid host (the unified hierarchy): the exec'd process is born in the group
    # (CLONE_INTO_CGROUP), pause writes cgroup.freeze and waits for cgroup.events
    if not os.path.exists("/sys/fs/cgroup/unified/cgroup.procs") \
            and not os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        pytest.fail("no cgroup2 hierarchy here: the v2 path cannot run")
    v2 = {"HEDGE_CGROUP_MODE": "v2"}
    assert oci("run", "-d", "--bundle", bundle("sleep", "1000"), "v2", env=v2).code == 0
    init = state(oci, "v2")["pid"]
    r = oci("exec", "v2", "sh", "-c", "tail -n1 /proc/self/cgroup; echo $$", env=v2)
    assert r.code == 0 and r.out.splitlines() == ["0::/", "2"], r
    group = [d for d in cgroup_dirs("v2") if (d / "cgroup.freeze").exists()]
    assert len(group) == 1, cgroup_dirs("v2")
    assert oci("pause", "v2", env=v2).code == 0
    assert (group[0] / "cgroup.freeze").read_text() == "1\n"
    assert "frozen 1" in (group[0] / "cgroup.events").read_text()
    assert state(oci, "v2")["status"] == "paused"
    assert oci("resume", "v2", env=v2).code == 0
    assert (group[0] / "cgroup.freeze").read_text() == "0\n"
    assert oci("delete", "--force", "v2", env=v2).code == 0
    reap(init)


def test_resources_and_cgroups_path(oci, bundle, subreaper):
    b = bundle("sleep", "1000", **{
        "linux.cgroupsPath": f"/{CGROUP_PARENT}/oci-cg",
        "linux.resources": {"memory": {"limit": 64 << 20}, "pids": {"limit": 50},
                            "cpu": {"quota": 50000, "period": 100000}}})
    assert oci("create", "--bundle", b, "res").code == 0
    pid = state(oci, "res")["pid"]
    base = pathlib.Path("/sys/fs/cgroup")
    mem = base / "memory" / CGROUP_PARENT / "oci-cg"
    if mem.is_dir():  # v1/hybrid
        assert int((mem / "memory.limit_in_bytes").read_text()) == 64 << 20
        assert (base / "pids" / CGROUP_PARENT / "oci-cg" / "pids.max").read_text().strip() == "50"
        assert (base / "cpu" / CGROUP_PARENT / "oci-cg" / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert str(pid) in (mem / "cgroup.procs").read_text()
    else:
        v2 = base / CGROUP_PARENT / "oci-cg"
        assert (v2 / "memory.max").read_text().strip() == str(64 << 20)
        assert (v2 / "pids.max").read_text().strip() == "50"
    assert oci("delete", "--force", "res").code == 0
    reap(pid)
    assert cgroup_dirs("oci-cg") == []


def test_cgroups_path_of_one_component(oci, bundle, subreaper):
    name = f"hedge-oci-top-{os.getpid()}"
    b = bundle("sleep", "1000", **{"linux.cgroupsPath": f"/{name}", "linux.resources": {"pids": {"limit": 40}}})
    base = pathlib.Path("/sys/fs/cgroup")
    try:
        r = oci("create", "--bundle", b, "top")
        assert r.code == 0, r
        pid = state(oci, "top")["pid"]
        groups = [p for p in base.glob(f"*/{name}") if p.is_dir()] + [p for p in [base / name] if p.is_dir()]
        assert groups, "the group sits at the top of the hierarchies"
        pids = base / "pids" / name
        if pids.is_dir():
            assert pids.joinpath("pids.max").read_text().strip() == "40"
        assert oci("delete", "--force", "top").code == 0
        reap(pid)
        assert [p for p in base.glob(f"*/{name}") if p.is_dir()] == [] and not (base / name).is_dir()
    finally:
        for p in list(base.glob(f"*/{name}")) + [base / name]:
            if p.is_dir():
                p.rmdir()


def test_mounts_masks_and_devices(oci, bundle, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "f").write_text("host file\n")
    b = bundle("sh", "-c", "cat /data/f; echo x > /data/g; echo rc=$?; grep -E ' /(data|scratch) ' /proc/mounts; "
               "cat /proc/cpuinfo | wc -c; mknod /dev/tun c 10 200; (exec 3<>/dev/tun); echo open=$?; "
               "echo y > /dev/null && echo null-ok",
               mounts=[{"destination": "/proc", "type": "proc", "source": "proc"},
                       {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]},
                       {"destination": "/data", "type": "bind", "source": str(shared),
                        "options": ["rbind", "ro", "nosuid", "nodev"]},
                       {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                        "options": ["nosuid", "noexec", "size=1m"]}],
               **{"linux.maskedPaths": ["/proc/cpuinfo"],
                  "process.capabilities": {"bounding": ["CAP_MKNOD"], "effective": ["CAP_MKNOD"],
                                           "permitted": ["CAP_MKNOD"]}})
    r = oci("run", "--bundle", b, "m")
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert lines[0] == "host file"
    assert lines[1] == "rc=1" and "Read-only file system" in r.err
    data = next(l for l in lines if " /data " in l).split()
    assert {"ro", "nosuid", "nodev"} <= set(data[3].split(",")), data
    scratch = next(l for l in lines if " /scratch " in l).split()
    assert scratch[2] == "tmpfs" and {"nosuid", "noexec", "size=1024k"} <= set(scratch[3].split(",")), scratch
    assert "0" in lines, "the masked /proc/cpuinfo reads empty"
    # the deny-all device rule of `spec` holds even with CAP_MKNOD: the node (/dev/net/tun's numbers, which
    # the runtime's /dev does not have) is made but cannot be opened
    assert "open=1" in lines and "Operation not permitted" in r.err, r
    assert lines[-1] == "null-ok"
    assert not (shared / "g").exists()


@pytest.mark.parametrize("mode", ["detected", "v2"])
def test_device_rules_go_through_the_runtime_device_list(oci, bundle, mode):
    # linux.resources.devices goes through cgroup/devices.c like every container's list: a rule allowing
    # c 10:200 makes that node openable (after deny-all), a block node stays refused. v2 forced on this hybrid
    # host: the BPF_CGROUP_DEVICE program on the unified hierarchy's group (docs/cgroups.md)
    if mode == "v2" and not os.path.exists("/sys/fs/cgroup/unified/cgroup.procs") \
            and not os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        pytest.fail("no cgroup2 hierarchy here: the v2 path cannot run")
    b = bundle("sh", "-c", "mknod /dev/tun c 10 200; (exec 3<>/dev/tun) && echo tun-open; "
               "mknod /dev/l b 7 0; (exec 3</dev/l) || echo loop-refused; echo y > /dev/null && echo null-ok",
               mounts=[{"destination": "/proc", "type": "proc", "source": "proc"},
                       {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]}],
               **{"linux.resources": {"devices": [{"allow": False, "access": "rwm"},
                                                  {"allow": True, "type": "c", "major": 10, "minor": 200,
                                                   "access": "rwm"}]},
                  "process.capabilities": {"bounding": ["CAP_MKNOD"], "effective": ["CAP_MKNOD"],
                                           "permitted": ["CAP_MKNOD"]}})
    r = oci("run", "--bundle", b, "d", env={} if mode == "detected" else {"HEDGE_CGROUP_MODE": mode})
    assert r.code == 0, r
    assert r.out.splitlines() == ["tun-open", "loop-refused", "null-ok"], r
    assert "Operation not permitted" in r.err, r


@pytest.mark.parametrize("change,field", [
    ({"process.terminal": True}, "process.terminal"),
    ({"hooks": {"prestart": [{"path": "/bin/true"}]}}, "hooks.prestart"),
    ({"mounts": [{"destination": "/x", "type": "nfs", "source": "srv:/x"}]}, "mounts[0].type"),
    ({"linux.namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"},
                           {"type": "network", "path": "/proc/1/ns/net"}]}, "linux.namespaces[4].path"),
    ({"linux.resources": {"blockIO": {"weight": 10}}}, "linux.resources.blockIO"),
    ({"linux.uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}, "linux.uidMappings"),
    ({"process.rlimits": [{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]}, "process.rlimits[0].type"),
    ({"linux.sysctl": {"kernel.hostname": "x"}}, "linux.sysctl.kernel.hostname"),
    ({"domainname": "example.org"}, "domainname"),
])
def test_config_error_names_the_field(oci, bundle, tmp_path, change, field):
    b = bundle("true", **change)
    log = tmp_path / "log.json"
    r = oci("--log", log, "--log-format", "json", "create", "--bundle", b, "bad")
    assert r.code == 1, r
    assert field in r.err, r
    lines = [json.loads(l) for l in log.read_text().splitlines()]
    errors = [l for l in lines if l["level"] == "error"]
    assert errors and field in errors[-1]["msg"] and errors[-1]["time"].endswith("Z"), lines
    assert not (oci.root / "bad").exists()


def test_cli_surface(oci, tmp_path):
    r = oci("--version")
    assert r.code == 0 and "hedge-oci version" in r.out and "spec: 1." in r.out, r
    features = json.loads(oci("features").out)
    assert "pid" in features["linux"]["namespaces"] and features["ociVersionMax"].startswith("1.")
    for verb in ["checkpoint", "restore"]:
        r = oci(verb, "x")
        assert r.code == 1 and f"{verb}: not supported yet" in r.err, r
    for verb in ["exec", "pause", "resume", "ps", "update", "events"]:
        r = oci(verb, "x", *(["true"] if verb == "exec" else []))
        assert r.code == 1 and 'container "x" does not exist' in r.err, r
    r = oci("--systemd-cgroup", "list")
    assert r.code == 1 and "systemd" in r.err, r
    r = oci("create", "--console-socket", "/tmp/sock", "--bundle", tmp_path, "x")
    assert r.code == 1 and "--console-socket" in r.err, r
    r = oci("--log-format", "xml", "list")
    assert r.code == 1 and "--log-format" in r.err, r
    r = oci("spec", "--bundle", tmp_path)
    assert r.code == 0, r
    assert json.loads((tmp_path / "config.json").read_text())["process"]["terminal"] is False
    r = oci("spec", "--bundle", tmp_path)
    assert r.code == 1 and "exists" in r.err, r
    r = oci("--log", tmp_path / "text.log", "state", "nope")
    assert r.code == 1
    assert 'level=error msg="container \\"nope\\" does not exist' in (tmp_path / "text.log").read_text()


# ---- podman drives hedge-oci ----

def cgroups_named(pattern):
    return sorted(str(p) for p in pathlib.Path("/sys/fs/cgroup").glob(f"*/libpod_parent/{pattern}"))


@pytest.fixture
def podman(tmp_path, busybox_rootfs):
    """podman with test-owned storage, run root and containers.conf, and a busybox image imported offline."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (deps/oci.txt)")
    conf = tmp_path / "containers.conf"
    # this host's root lacks CAP_SYS_RESOURCE: podman's default ulimits exceed the hard limits
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=1024:1024"]\n')
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    runroot = tempfile.mkdtemp(prefix="hedge-oci-podman-", dir="/tmp")  # podman: at most 50 characters
    base = ["podman", "--root", str(tmp_path / "storage"), "--runroot", runroot,
            "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"]
    tar = tmp_path / "busybox.tar"
    subprocess.run(["tar", "-C", str(busybox_rootfs), "-cf", str(tar), "."], check=True)
    r = subprocess.run(base + ["import", str(tar), "localhost/hedge-busybox:test"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr

    def run(*args, timeout=60):
        proc = subprocess.run(base + [str(a) for a in args], capture_output=True, text=True, env=env,
                              timeout=timeout)
        return Result(proc)

    yield run
    run("rm", "--all", "--force")
    # podman's run root may hold its own mounts (none with vfs and --rm); remove it when empty of them
    subprocess.run(["umount", "-R", runroot], capture_output=True)
    shutil.rmtree(runroot, ignore_errors=True)


def test_podman_runs_hedge_oci(podman, tmp_path):
    before = cgroups_named("libpod-*")
    cid = tmp_path / "cid"
    r = podman("--runtime", HEDGE_OCI, "run", "--rm", "--network", "none", "--cidfile", cid,
               "localhost/hedge-busybox:test", "echo", "hi")
    assert r.code == 0, r
    assert r.out == "hi\n", r
    # podman passes no --root to a runtime it does not know: the state was in hedge-oci's default root
    assert not os.path.exists(f"/run/hedge-oci/{cid.read_text().strip()}")
    cid.unlink()
    r = podman("--runtime", HEDGE_OCI, "run", "--rm", "--network", "none", "--cidfile", cid,
               "localhost/hedge-busybox:test",
               "sh", "-c", "ulimit -n; cat /etc/hostname >/dev/null && echo hostname-ok; exit 4")
    assert r.code == 4, r
    assert r.out == "20000\nhostname-ok\n", r
    container = cid.read_text().strip()
    assert not os.path.exists(f"/run/hedge-oci/{container}")
    assert cgroups_named(f"libpod-{container}") == [], "podman's container cgroups are gone"
    assert not [d for d in cgroups_named("libpod-*") if d not in before]
    # a detached container: exec (status and output), pause/unpause, top; one container for all
    r = podman("--runtime", HEDGE_OCI, "run", "-d", "--name", "long", "--network", "none",
               "localhost/hedge-busybox:test", "sleep", "1000")
    assert r.code == 0, r
    r = podman("--runtime", HEDGE_OCI, "exec", "-e", "A=b", "-w", "/tmp", "long", "sh", "-c", "echo $A; pwd; exit 3")
    assert r.code == 3 and r.out == "b\n/tmp\n", r
    r = podman("--runtime", HEDGE_OCI, "exec", "-u", "1000", "long", "id", "-u")
    assert r.code == 0 and r.out == "1000\n", r
    r = podman("--runtime", HEDGE_OCI, "pause", "long")
    assert r.code == 0, r
    r = podman("--runtime", HEDGE_OCI, "inspect", "--format", "{{.State.Status}}", "long")
    assert r.out == "paused\n", r
    r = podman("--runtime", HEDGE_OCI, "unpause", "long")
    assert r.code == 0, r
    r = podman("--runtime", HEDGE_OCI, "top", "long")
    assert r.code == 0 and "sleep 1000" in r.out, r
    r = podman("--runtime", HEDGE_OCI, "update", "--memory", "64m", "long")
    assert r.code == 0, r
    r = podman("--runtime", HEDGE_OCI, "exec", "long", "sh", "-c",
               "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
    assert r.code == 0 and r.out == f"{64 << 20}\n", r
    r = podman("--runtime", HEDGE_OCI, "exec", "long", "nonexistent")
    assert r.code == 127, r
    r = podman("--runtime", HEDGE_OCI, "exec", "-t", "long", "true")
    assert r.code != 0 and "--tty" in r.err, r
    r = podman("--runtime", HEDGE_OCI, "rm", "-f", "-t", "0", "long")
    assert r.code == 0, r
