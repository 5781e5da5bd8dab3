"""hedge-oci: runc's command line over hedge's container runtime.

The runc lifecycle on a busybox bundle (create -> created -> start -> running ->
kill -> stopped -> delete), exit codes, the pid file, config.json fields and the
errors that name the fields hedge-oci does not support, and podman driving
hedge-oci as its OCI runtime. Every test runs the real binary as root and leaves
nothing behind (conftest's checks, plus the state dir under --root).
"""
import contextlib
import ctypes
import json
import os
import pathlib
import shutil
import signal
import socket
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
    while True:  # the orphans that ended and were not collected: no zombie stays for the next test's waits
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break


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

    def run(*args, timeout=30, env=None, root_flag=True, fds=None):
        e = dict(os.environ)
        e.update(SANITIZER_ENV)
        e["HEDGE_RUN_DIR"] = str(dirs["run"])
        e["HEDGE_CGROUP_PARENT"] = CGROUP_PARENT
        if env:
            e.update(env)
        argv = [str(HEDGE_OCI)] + (["--root", str(root)] if root_flag else []) + [str(a) for a in args]
        # files, not pipes: a created container inherits create's stdio and keeps a pipe open
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            # fds: {number in hedge-oci: our fd} (--preserve-fds)
            extra = dict(preexec_fn=lambda: [os.dup2(src, dst) for dst, src in fds.items()],
                         pass_fds=tuple(fds)) if fds else {}
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=timeout, env=e,
                                  **extra)
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


@pytest.fixture
def runc(tmp_path):
    """runc(*args) -> Result: the reference runtime with its own --root; what a test leaves is deleted."""
    root = tmp_path / "runc-root"

    def run(*args, timeout=30):
        argv = ["runc", "--root", str(root)] + [str(a) for a in args]
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=timeout)
            out.seek(0)
            err.seek(0)
            proc.stdout, proc.stderr = out.read(), err.read()
        return Result(proc)

    yield run
    left = sorted(p.name for p in root.iterdir()) if root.exists() else []
    for cid in left:
        run("delete", "--force", cid)
    assert left == [], f"runc containers left behind: {left}"


GROUPS = "id -G; grep Groups /proc/self/status"


def test_supplementary_groups_as_runc(oci, runc, bundle, tmp_path):
    """process.user.additionalGids: exactly those supplementary groups, none without them (as runc)."""
    for user, expect in [({"uid": 0, "gid": 0, "additionalGids": [10, 20]}, ["0 10 20", "Groups:\t10 20"]),
                         ({"uid": 1000, "gid": 1001, "additionalGids": [10]}, ["1001 10", "Groups:\t10"]),
                         ({"uid": 0, "gid": 0}, ["0", "Groups:"])]:
        b = bundle("sh", "-c", GROUPS, **{"process.user": user})
        r = oci("run", "--bundle", b, "g")
        assert r.code == 0, r
        assert [line.rstrip() for line in r.out.splitlines()] == expect, (user, r)
        ref = runc("run", "--bundle", b, "g")
        assert ref.code == 0 and ref.out == r.out, (user, ref, r)


def test_exec_additional_gids_and_cap(oci, runc, bundle, tmp_path, subreaper):
    """exec --additional-gids (repeated or a comma list, added to the config's groups) and --cap (the
    capability in the process's bounding, effective and permitted sets), each compared with runc."""
    caps = ["CAP_CHOWN", "CAP_KILL"]
    b = bundle("sleep", "1000", **{"process.user": {"uid": 0, "gid": 0, "additionalGids": [5]},
                                   "process.capabilities": {"bounding": caps, "effective": caps,
                                                            "permitted": caps}})
    assert oci("run", "-d", "--bundle", b, "xg").code == 0
    assert runc("run", "-d", "--bundle", b, "rg").code == 0
    pids = [state(oci, "xg")["pid"], json.loads(runc("state", "rg").out)["pid"]]
    try:
        r = oci("exec", "--additional-gids", "10,20", "xg", "id", "-G")
        assert r.code == 0 and r.out == "0 5 10 20\n", r
        # runc 1.1 takes one gid per flag
        r = oci("exec", "-g", "10", "-g", "20", "xg", "sh", "-c", GROUPS)
        ref = runc("exec", "-g", "10", "-g", "20", "rg", "sh", "-c", GROUPS)
        assert r.code == 0 and ref.code == 0 and r.out == ref.out, (r, ref)
        assert r.out.split() == ["0", "5", "10", "20", "Groups:", "5", "10", "20"], r
        r = oci("exec", "xg", "id", "-G")
        assert r.code == 0 and r.out == "0 5\n", r
        # --cap: CAP_NET_ADMIN (bit 12) joins CapEff and the bounding set, as runc; also for another user's
        # bounding set (effective stays empty for a non-root user)
        cap_lines = "grep -E 'CapEff|CapPrm|CapBnd' /proc/self/status"
        for flags in [[], ["--cap", "CAP_NET_ADMIN"], ["-c", "CAP_NET_ADMIN", "-c", "CAP_SYS_MODULE"],
                      ["--user", "1000:1000", "--cap", "CAP_NET_ADMIN"]]:
            r = oci("exec", *flags, "xg", "sh", "-c", cap_lines)
            ref = runc("exec", *flags, "rg", "sh", "-c", cap_lines)
            assert r.code == 0 and ref.code == 0 and r.out == ref.out, (flags, r, ref)
            eff = int(dict(line.split(":\t") for line in r.out.splitlines())["CapEff"], 16)
            root_with_cap = "CAP_NET_ADMIN" in flags and "--user" not in flags
            assert bool(eff & (1 << 12)) == root_with_cap, (flags, r)
        # an unknown name is dropped with runc's warning, the rest applies
        log = tmp_path / "exec.log"
        r = oci("--log", log, "exec", "--cap", "CAP_BOGUS", "--cap", "CAP_NET_ADMIN", "xg", "grep", "CapEff",
                "/proc/self/status")
        assert r.code == 0 and int(r.out.split()[1], 16) & (1 << 12), r
        assert "ignoring unknown or unavailable capabilities: [CAP_BOGUS]" in log.read_text()
    finally:
        assert oci("delete", "--force", "xg").code == 0
        assert runc("delete", "--force", "rg").code == 0
        for pid in pids:
            reap(pid)


def test_ambient_caps_of_a_non_root_user_as_runc(oci, runc, bundle):
    """A non-root user with inheritable and ambient capabilities keeps the ambient ones over exec (runc keeps
    the permitted set over the user switch); compared with runc, with supplementary groups."""
    caps = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    b = bundle("sh", "-c", "grep -E 'Cap|Groups' /proc/self/status; id -u",
               **{"process.user": {"uid": 1000, "gid": 1001, "additionalGids": [5]},
                  "process.capabilities": {"bounding": caps, "effective": caps, "permitted": caps,
                                           "inheritable": caps, "ambient": caps[:2]}})
    r = oci("run", "--bundle", b, "na")
    ref = runc("run", "--bundle", b, "na")
    assert r.code == 0 and ref.code == 0 and r.out == ref.out, (r, ref)
    status = dict(line.split(":\t") for line in r.out.splitlines()[:-1])
    assert status["CapAmb"] == status["CapEff"] == "%016x" % ((1 << 0) | (1 << 5)), r
    assert status["Groups"].split() == ["5"] and r.out.splitlines()[-1] == "1000", r


def test_unknown_capability_dropped_with_runcs_warning(oci, runc, bundle, tmp_path):
    """An unknown capability name in config.json (OCI conformance process_capabilities_fail's CAP_TEST,
    or a name without CAP_) is left out with runc's warning; the others apply."""
    caps = ["CAP_CHOWN", "CAP_TEST", "CAP_KILL", "NET_ADMIN"]
    b = bundle("grep", "-E", "CapEff|CapBnd", "/proc/self/status",
               **{"process.capabilities": {"bounding": caps, "effective": caps[:3], "permitted": caps}})
    texts = []
    for run, cid in [(oci, "u"), (runc, "ru")]:
        log = tmp_path / f"{cid}.log"
        r = run("--log", log, "run", "--bundle", b, cid)
        assert r.code == 0, r
        texts.append(r.out)
        assert "ignoring unknown or unavailable capabilities: [CAP_TEST NET_ADMIN]" in log.read_text(), cid
    assert texts[0] == texts[1], texts
    assert texts[0].split() == ["CapEff:", "%016x" % ((1 << 0) | (1 << 5)), "CapBnd:", "%016x" % ((1 << 0) | (1 << 5))]


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
    for flags, name in [(["--l3-cache-schema", "L3:0=f"], "--l3-cache-schema"), (["--memory", "1x"], "--memory")]:
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
    for flags, name in [(["--additional-gids", "1,"], "--additional-gids"), (["-g", "x"], "--additional-gids"),
                        (["--preserve-fds", "2"], "--preserve-fds: fd 3 is not open")]:
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


def test_memory_reservation_swappiness_and_oom_killer(oci, bundle, subreaper, tmp_path):
    """linux.resources.memory beyond the limit: reservation (v1 soft limit), swappiness, disableOOMKiller;
    kernel and kernelTCP are ignored with runc's warning; on cgroup v2 swappiness is refused by name."""
    memory = {"limit": 64 << 20, "reservation": 32 << 20, "swappiness": 10, "disableOOMKiller": True,
              "kernel": 64 << 20}
    b = bundle("sleep", "1000", **{"linux.resources": {"memory": memory}})
    log = tmp_path / "log"
    r = oci("--log", log, "create", "--bundle", b, "memx")
    assert r.code == 0, r
    pid = state(oci, "memx")["pid"]
    mem = pathlib.Path("/sys/fs/cgroup/memory") / CGROUP_PARENT / "memx"
    if mem.is_dir():  # v1/hybrid
        assert int((mem / "memory.soft_limit_in_bytes").read_text()) == 32 << 20
        assert (mem / "memory.swappiness").read_text().strip() == "10"
        assert "oom_kill_disable 1" in (mem / "memory.oom_control").read_text()
        assert oci("update", "--memory-reservation", "16m", "memx").code == 0
        assert int((mem / "memory.soft_limit_in_bytes").read_text()) == 16 << 20
    assert "linux.resources.memory.kernel: kernel memory limits are ignored" in log.read_text()
    assert oci("delete", "--force", "memx").code == 0
    reap(pid)
    b = bundle("true", **{"linux.resources": {"memory": {"swappiness": 10}}})
    r = oci("create", "--bundle", b, "memv2", env={"HEDGE_CGROUP_MODE": "v2"})
    assert r.code == 1 and "resources.swappiness: cgroup v2 has no per-group swappiness" in r.err, r
    assert cgroup_dirs("memv2") == []


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


def test_linux_devices_are_made_inside(oci, bundle):
    # linux.devices: the node made in the container's /dev with the config's numbers, mode and owner (the host's
    # /dev/fuse is 0600); it opens because linux.resources.devices allows it (runc adds no rule for the node)
    b = bundle("sh", "-c", "stat -c '%F %t:%T %a %u:%g' /dev/fuse /dev/sub/fifo; (exec 3<>/dev/fuse) && echo fuse-open",
               **{"linux.devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438,
                                     "uid": 1000, "gid": 1001},
                                    {"path": "/dev/sub/fifo", "type": "p", "fileMode": 0o640}],
                  "linux.resources": {"devices": [{"allow": False, "access": "rwm"},
                                                  {"allow": True, "type": "c", "major": 10, "minor": 229,
                                                   "access": "rwm"}]}})
    r = oci("run", "--bundle", b, "devs")
    assert r.code == 0, r
    assert r.out.splitlines() == ["character special file a:e5 666 1000:1001", "fifo 0:0 640 0:0", "fuse-open"], r


def test_linux_devices_need_their_allow_rule(oci, bundle):
    # without a rule of linux.resources.devices the node is there but cannot be opened (as with runc)
    b = bundle("sh", "-c", "ls /dev/fuse && (exec 3<>/dev/fuse) || echo refused",
               **{"linux.devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438}],
                  "linux.resources": {"devices": [{"allow": False, "access": "rwm"}]}})
    r = oci("run", "--bundle", b, "devs")
    assert r.code == 0, r
    assert r.out.splitlines() == ["/dev/fuse", "refused"] and "Operation not permitted" in r.err, r


def read_all(fd):
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    os.close(fd)
    return data.decode()


def test_preserve_fds_pass_a_pipe_to_the_process(oci, bundle, subreaper):
    # --preserve-fds 1: hedge-oci's fd 3 (a pipe here) is the process's fd 3, with run and with create + start;
    # with LISTEN_FDS=1 (socket activation, as runc) fd 3 is the listening one, the preserved ones follow it
    b = bundle("sh", "-c", "echo to-fd3 >&3; echo to-fd4 >&4 || echo no-fd4; echo ${LISTEN_FDS-none} ${LISTEN_PID-}")
    r_end, w_end = os.pipe()
    r = oci("run", "--preserve-fds", "1", "--bundle", b, "pfd", fds={3: w_end})
    os.close(w_end)
    assert r.code == 0, r
    assert read_all(r_end) == "to-fd3\n" and r.out.splitlines()[-2:] == ["no-fd4", "none"], r
    r_end, w_end = os.pipe()
    assert oci("create", "--preserve-fds", "1", "--bundle", b, "pfd", fds={3: w_end}).code == 0
    os.close(w_end)
    pid = state(oci, "pfd")["pid"]
    assert oci("start", "pfd").code == 0
    assert read_all(r_end) == "to-fd3\n"
    reap(pid)
    assert oci("delete", "pfd").code == 0
    r3, w3 = os.pipe()
    r4, w4 = os.pipe()
    r = oci("run", "--preserve-fds", "1", "--bundle", b, "pfd", fds={3: w3, 4: w4}, env={"LISTEN_FDS": "1"})
    os.close(w3)
    os.close(w4)
    assert r.code == 0, r
    assert (read_all(r3), read_all(r4)) == ("to-fd3\n", "to-fd4\n") and r.out.splitlines()[-1] == "1 1", r
    # a fd that is not open names the flag, and nothing is left
    r = oci("run", "--preserve-fds", "2", "--bundle", b, "pfd")
    assert r.code == 1 and "--preserve-fds: fd 3 is not open" in r.err, r
    r = oci("run", "--preserve-fds", "x", "--bundle", b, "pfd")
    assert r.code == 1 and "--preserve-fds" in r.err, r
    # exec passes them too
    b = bundle("sleep", "30")
    assert oci("run", "--detach", "--bundle", b, "pfe").code == 0
    pid = state(oci, "pfe")["pid"]
    r_end, w_end = os.pipe()
    r = oci("exec", "--preserve-fds", "1", "pfe", "sh", "-c", "echo exec-fd3 >&3", fds={3: w_end})
    os.close(w_end)
    assert r.code == 0 and read_all(r_end) == "exec-fd3\n", r
    assert oci("delete", "--force", "pfe").code == 0
    reap(pid)


def unified_dir(name):
    for base in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]:
        if os.path.exists(f"{base}/cgroup.procs"):
            return pathlib.Path(base) / CGROUP_PARENT / name
    pytest.fail("no cgroup v2 hierarchy here")


def test_resources_unified_are_written_to_the_v2_group(oci, bundle, subreaper, tmp_path):
    # cgroup.max.descendants exists in every v2 group, the unified one of this hybrid host too
    b = bundle("true", **{"linux.resources": {"unified": {"cgroup.max.descendants": "7", "cgroup.max.depth": "3"}}})
    assert oci("create", "--bundle", b, "uni").code == 0
    try:
        d = unified_dir("uni")
        assert (d / "cgroup.max.descendants").read_text() == "7\n"
        assert (d / "cgroup.max.depth").read_text() == "3\n"
        # update writes them too; a bad key names itself there as well
        res = tmp_path / "res.json"
        res.write_text(json.dumps({"unified": {"cgroup.max.descendants": "9"}}))
        r = oci("update", "--resources", res, "uni")
        assert r.code == 0 and (d / "cgroup.max.descendants").read_text() == "9\n", r
        res.write_text(json.dumps({"unified": {"no.such.file": "1"}}))
        r = oci("update", "--resources", res, "uni")
        assert r.code == 1 and "linux.resources.unified.no.such.file: the container's cgroup has no such" in r.err, r
    finally:
        pid = state(oci, "uni")["pid"]
        assert oci("delete", "--force", "uni").code == 0
        reap(pid)
    # a file the group does not have, or a bad key, names the key; nothing is left (the fixtures check)
    for unified, message in [({"cgroup.max.descendants": "7", "no.such.file": "1"},
                              "linux.resources.unified.no.such.file: the container's cgroup has no such file"),
                             ({"../cgroup.procs": "1"}, "linux.resources.unified.../cgroup.procs"),
                             ({"cgroup.procs": "1"}, "linux.resources.unified.cgroup.procs"),
                             ({"cgroup.max.depth": "lots"}, "linux.resources.unified.cgroup.max.depth: write")]:
        b = bundle("true", **{"linux.resources": {"unified": unified}})
        r = oci("create", "--bundle", b, "uni")
        assert r.code == 1 and message in r.err, (message, r)
        assert not unified_dir("uni").exists()
    r = oci("create", "--bundle", b, "uni", env={"HEDGE_CGROUP_MODE": "v1"})
    assert r.code == 1 and "linux.resources.unified: needs a cgroup v2 hierarchy" in r.err, r


SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100  # _IOWR('!', 0, struct seccomp_notif): 80 bytes
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101  # _IOWR('!', 1, struct seccomp_notif_resp): 24 bytes


def seccomp_agent(path, answer_errno, connections=1):
    """A listener agent at path (runtime-spec "Seccomp listener"): takes `connections` connections, receives each
    one's state and listener fd, and answers the first notification of each with -answer_errno (a thread per
    listener). Returns (thread, results: a list of dicts, one per connection)."""
    import array
    import fcntl
    import struct
    import threading
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(connections)
    srv.settimeout(20)
    results = []

    def answer(fd, result):
        try:
            notif = bytearray(80)
            fcntl.ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, notif)
            notif_id, _ = struct.unpack_from("QI", notif)
            result["nr"] = struct.unpack_from("i", notif, 16)[0]
            fcntl.ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, struct.pack("QqiI", notif_id, 0, -answer_errno, 0))
        except OSError as e:  # the process ended without a notification
            result["answer_error"] = repr(e)
        finally:
            os.close(fd)

    def serve():
        try:
            for _ in range(connections):
                conn, _ = srv.accept()
                result = {}
                results.append(result)
                fds = array.array("i")
                msg, anc, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(4 * fds.itemsize))
                for level, kind, data in anc:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
                result["state"] = json.loads(msg)
                result["fd_kind"] = os.readlink(f"/proc/self/fd/{fds[0]}")
                conn.close()
                threading.Thread(target=answer, args=(fds[0], result), daemon=True).start()
        except Exception as e:  # the test's asserts say what went wrong
            results.append({"error": repr(e)})
        finally:
            srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t, results


def test_seccomp_listener_gets_the_fd_and_the_state(oci, bundle, tmp_path, subreaper):
    # SCMP_ACT_NOTIFY on mkdir: the agent gets the listener and answers ELOOP, which the container's mkdir reports
    sock = tmp_path / "agent.sock"
    agent, results = seccomp_agent(sock, 40)
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": str(sock), "listenerMetadata": "from-the-test",
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]}
    b = bundle("sh", "-c", "mkdir /made; echo rc=$?", **{"linux.seccomp": seccomp})
    r = oci("run", "--bundle", b, "lis")
    agent.join(20)
    assert r.code == 0 and r.out.splitlines() == ["rc=1"] and "Too many levels of symbolic links" in r.err, (r, results)
    result = results[0]
    assert "error" not in result, result
    st = result["state"]
    assert st["ociVersion"] == "1.1.0" and st["fds"] == ["seccompFd"] and st["metadata"] == "from-the-test", st
    assert st["state"]["id"] == "lis" and st["state"]["pid"] == st["pid"] > 0 and st["state"]["bundle"] == str(b), st
    assert st["state"]["status"] == "creating", st
    assert result["fd_kind"] == "anon_inode:seccomp notify", result
    assert result["nr"] in (83, 258), result  # mkdir / mkdirat on x86_64
    # an exec'd process's listener goes to the agent too, with the running container's state
    sock.unlink()
    agent, results = seccomp_agent(sock, 40, connections=2)
    b = bundle("sleep", "30", **{"linux.seccomp": seccomp})
    assert oci("run", "--detach", "--bundle", b, "lis").code == 0
    pid = state(oci, "lis")["pid"]
    try:
        r = oci("exec", "lis", "sh", "-c", "mkdir /made; echo rc=$?")
        agent.join(20)
        assert r.code == 0 and r.out.splitlines() == ["rc=1"] and "Too many levels" in r.err, (r, results)
        assert [x["state"]["state"]["status"] for x in results] == ["creating", "running"], results
        assert results[1]["state"]["pid"] == pid and results[1]["nr"] in (83, 258), results
    finally:
        assert oci("delete", "--force", "lis").code == 0
        reap(pid)
    # a socket nobody listens at fails create, naming the field
    sock.unlink(missing_ok=True)
    r = oci("create", "--bundle", b, "lis")
    assert r.code == 1 and "linux.seccomp.listenerPath: connect to" in r.err, r


def host_uptime():
    return float(open("/proc/uptime").read().split()[0])


def test_time_namespace_with_offsets(oci, bundle, subreaper):
    # a new time namespace: /proc/uptime (boottime) inside is the host's plus the offset, for the first process and
    # for an exec'd one (it joins the namespace); hedge-oci's own later children stay in the host's
    namespaces = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "time")]
    b = bundle("sh", "-c", "cut -d' ' -f1 /proc/uptime; sleep 30",
               **{"linux.namespaces": namespaces,
                  "linux.timeOffsets": {"boottime": {"secs": 86400 * 10, "nanosecs": 0},
                                        "monotonic": {"secs": 3600, "nanosecs": 500}}})
    before = host_uptime()
    assert oci("create", "--bundle", b, "tns").code == 0
    pid = state(oci, "tns")["pid"]
    try:
        assert os.readlink(f"/proc/{pid}/ns/time") != os.readlink("/proc/self/ns/time")
        offsets = open(f"/proc/{pid}/timens_offsets").read().split()
        assert offsets == ["monotonic", "3600", "500", "boottime", "864000", "0"], offsets
        r = oci("exec", "tns", "cut", "-d ", "-f1", "/proc/uptime")
        after = host_uptime()
        assert r.code == 0, r
        assert before + 864000 - 1 <= float(r.out) <= after + 864000 + 1, (before, r.out, after)
    finally:
        assert oci("delete", "--force", "tns").code == 0
        reap(pid)
    before = host_uptime()
    r = oci("run", "--bundle", bundle("cut", "-d ", "-f1", "/proc/uptime", **{
        "linux.namespaces": namespaces, "linux.timeOffsets": {"boottime": {"secs": -int(before) // 2}}}), "tns")
    after = host_uptime()
    assert r.code == 0 and before - int(before) // 2 - 1 <= float(r.out) <= after - int(before) // 2 + 1, (before, r)
    # a second container joins the first one's time namespace by path
    b = bundle("sh", "-c", "sleep 30", **{"linux.namespaces": namespaces,
                                          "linux.timeOffsets": {"boottime": {"secs": 864000}}})
    assert oci("run", "--detach", "--bundle", b, "tns").code == 0
    pid = state(oci, "tns")["pid"]
    try:
        joined = namespaces[:-1] + [{"type": "time", "path": f"/proc/{pid}/ns/time"}]
        before = host_uptime()
        r = oci("run", "--bundle", bundle("cut", "-d ", "-f1", "/proc/uptime", **{"linux.namespaces": joined}), "tj")
        after = host_uptime()
        assert r.code == 0 and before + 864000 - 1 <= float(r.out) <= after + 864000 + 1, (before, r)
        r = oci("run", "--bundle", bundle("true", **{"linux.namespaces": joined,
                                                     "linux.timeOffsets": {"boottime": {"secs": 5}}}), "tj")
        assert r.code == 1 and "linux.timeOffsets: needs a new time namespace (linux.namespaces joins one" in r.err, r
    finally:
        assert oci("delete", "--force", "tns").code == 0
        reap(pid)
    r = oci("run", "--bundle", bundle("cut", "-d ", "-f1", "/proc/uptime", **{"linux.timeOffsets": {
        "boottime": {"secs": 5}}}), "tns")
    assert r.code == 1 and "linux.timeOffsets: needs a new time namespace" in r.err, r
    b = bundle("true", **{"linux.namespaces": namespaces, "linux.timeOffsets": {"realtime": {"secs": 5}}})
    r = oci("run", "--bundle", b, "tns")
    assert r.code == 1 and "linux.timeOffsets.realtime" in r.err, r


@pytest.mark.parametrize("change,field", [
    ({"domainname": "example.org"}, "domainname"),
    ({"linux.devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]}, "linux.devices"),
    ({"linux.personality": {"domain": "LINUX32"}}, "linux.personality"),
    ({"process.scheduler": {"policy": "SCHED_BATCH"}}, "process.scheduler"),
    ({"process.ioPriority": {"class": "IOPRIO_CLASS_BE"}}, "process.ioPriority"),
    ({"process.execCPUAffinity": {"final": "0"}}, "process.execCPUAffinity"),
    ({"linux.memoryPolicy": {"mode": "MPOL_LOCAL"}}, "linux.memoryPolicy"),
    ({"linux.timeOffsets": {"boottime": {"secs": 5}}}, "linux.timeOffsets"),
    ({"linux.resources": {"unified": {"cgroup.max.depth": "3"}}}, "linux.resources.unified"),
    ({"linux.seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/x.sock"}},
     "linux.seccomp.listenerPath"),
])
def test_what_the_guest_cannot_do_is_refused_under_hedge_oci_vm(bundle, tmp_path, change, field):
    # refused at config load, before anything exists (no guest kernel needed)
    r = subprocess.run([str(BUILD / "hedge-oci-vm"), "--root", str(tmp_path / "vmroot"), "create", "--bundle",
                        str(bundle("true", **change)), "v"], capture_output=True, text=True, timeout=30,
                       env={**os.environ, **SANITIZER_ENV})
    check_sanitizer(r.stderr)
    assert r.returncode == 1 and f"{field}: not supported under hedge-oci-vm" in r.stderr, r
    assert not (tmp_path / "vmroot" / "v").exists()


def test_io_priority_and_scheduler(oci, bundle, subreaper, tmp_path):
    # set in the container's process before exec (seen from the host while it is held), and in an exec'd one
    libc = ctypes.CDLL(None, use_errno=True)
    b = bundle("sleep", "30", **{"process.ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 6},
                                 "process.scheduler": {"policy": "SCHED_BATCH", "nice": 7}})
    assert oci("create", "--bundle", b, "sch").code == 0
    pid = state(oci, "sch")["pid"]
    try:
        assert libc.syscall(252, 1, pid) == (2 << 13) | 6  # ioprio_get(IOPRIO_WHO_PROCESS, pid)
        assert os.sched_getscheduler(pid) == os.SCHED_BATCH and os.getpriority(os.PRIO_PROCESS, pid) == 7
        assert oci("start", "sch").code == 0
        r = oci("exec", "sch", "cut", "-d ", "-f19,41", "/proc/self/stat")
        assert r.code == 0 and r.out == "7 3\n", r
        # process.execCPUAffinity (exec'd processes only): final after the cgroup, or the cgroup's CPUs
        if os.cpu_count() < 2:
            pytest.fail("execCPUAffinity needs two CPUs to show")
        allowed = "0-%d" % (len(os.sched_getaffinity(0)) - 1)
        process = tmp_path / "process.json"
        for aff, want in [({"initial": "0", "final": "1"}, "1"), ({"initial": "1"}, allowed)]:
            process.write_text(json.dumps({"args": ["grep", "Cpus_allowed_list", "/proc/self/status"], "cwd": "/",
                                           "user": {"uid": 0, "gid": 0}, "execCPUAffinity": aff}))
            r = oci("exec", "--process", process, "sch")
            assert r.code == 0 and r.out.split() == ["Cpus_allowed_list:", want], (aff, r)
        process.write_text(json.dumps({"args": ["true"], "cwd": "/", "execCPUAffinity": {"initial": "3-1"}}))
        r = oci("exec", "--process", process, "sch")
        assert r.code == 1 and "process.execCPUAffinity.initial" in r.err, r
    finally:
        assert oci("delete", "--force", "sch").code == 0
        reap(pid)


def test_memory_policy(oci, bundle, subreaper):
    # linux.memoryPolicy: set_mempolicy in the process (numa_maps shows the policy of its mappings), exec'd too
    b = bundle("sh", "-c", "grep -c ' interleave:0 ' /proc/self/numa_maps; sleep 30",
               **{"linux.memoryPolicy": {"mode": "MPOL_INTERLEAVE", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"]}})
    assert oci("run", "--detach", "--bundle", b, "mpol").code == 0
    pid = state(oci, "mpol")["pid"]
    try:
        r = oci("exec", "mpol", "grep", "-c", "interleave=static:0", "/proc/self/numa_maps")
        assert r.code == 0 and int(r.out) > 0, r
    finally:
        assert oci("delete", "--force", "mpol").code == 0
        reap(pid)


def test_domainname_and_personality(oci, bundle, subreaper):
    b = bundle("sh", "-c", "cat /proc/sys/kernel/domainname; uname -m; cat /proc/self/personality",
               domainname="example.org", **{"linux.personality": {"domain": "LINUX32", "flags": ["ADDR_NO_RANDOMIZE"]}})
    r = oci("run", "--bundle", b, "pers")
    assert r.code == 0, r
    assert r.out.splitlines() == ["example.org", "i686", "00040008"], r
    assert open("/proc/sys/kernel/domainname").read() != "example.org\n"
    # an exec'd process gets the personality too (as runc)
    b = bundle("sleep", "30", **{"linux.personality": {"domain": "LINUX32"}})
    assert oci("run", "--detach", "--bundle", b, "pers").code == 0
    pid = state(oci, "pers")["pid"]
    try:
        r = oci("exec", "pers", "uname", "-m")
        assert r.code == 0 and r.out == "i686\n", r
    finally:
        assert oci("delete", "--force", "pers").code == 0
        reap(pid)


@pytest.mark.parametrize("change,field", [
    ({"process.terminal": True, "process.consoleSize": {"height": -1, "width": 80}}, "process.consoleSize.height"),
    ({"hooks": {"prestart": [{"path": "bin/true"}]}}, "hooks.prestart[0].path"),
    ({"hooks": {"poststop": [{"path": "/bin/true", "timeout": 0}]}}, "hooks.poststop[0].timeout"),
    ({"hooks": {"prestop": []}}, "hooks.prestop"),
    ({"mounts": [{"destination": "/x", "type": "nfs", "source": "srv:/x"}]}, "mounts[0].type"),
    ({"linux.namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"},
                           {"type": "network"}, {"type": "time", "path": "/proc/self/ns/net"}]},
     "linux.namespaces[5].path: /proc/self/ns/net is not a time namespace"),
    ({"linux.resources": {"rdma": {"mlx5_0": {"hcaHandles": 1}}}}, "linux.resources.rdma"),
    ({"linux.resources": {"blockIO": {"weight": 5}}}, "linux.resources.blockIO.weight"),
    ({"linux.uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}, "linux.uidMappings"),
    ({"process.rlimits": [{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]}, "process.rlimits[0].type"),
    ({"linux.sysctl": {"kernel.hostname": "x"}}, "linux.sysctl.kernel.hostname"),
    ({"domainname": "example.org", "linux.namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}]},
     "domainname: needs a uts namespace of the container's own"),
    ({"linux.devices": [{"path": "/dev/fuse", "type": "x", "major": 10, "minor": 229}]},
     "linux.devices[0].type: \"x\" is not c, b, u or p"),
    ({"linux.devices": [{"path": "dev/fuse", "type": "c", "major": 10, "minor": 229}]}, "linux.devices[0].path"),
    ({"linux.devices": [{"path": "/dev/fuse", "type": "c", "minor": 229}]}, "linux.devices[0].major: missing"),
    ({"linux.personality": {"domain": "PDP11"}}, "linux.personality.domain"),
    ({"process.ioPriority": {"class": "IOPRIO_CLASS_FAST", "priority": 1}}, "process.ioPriority.class"),
    ({"process.ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 8}}, "process.ioPriority.priority"),
    ({"process.scheduler": {"policy": "SCHED_FAST"}}, "process.scheduler.policy"),
    ({"linux.memoryPolicy": {"mode": "MPOL_FAST"}}, "linux.memoryPolicy.mode"),
    ({"linux.memoryPolicy": {"mode": "MPOL_BIND"}}, "linux.memoryPolicy.nodes: MPOL_BIND needs a node list"),
    ({"linux.memoryPolicy": {"mode": "MPOL_BIND", "nodes": "5000"}}, "linux.memoryPolicy.nodes: node numbers"),
    ({"linux.memoryPolicy": {"mode": "MPOL_LOCAL", "flags": ["X"]}}, "linux.memoryPolicy.flags[0]"),
    ({"process.scheduler": {"policy": "SCHED_FIFO"}}, "process.scheduler.priority: SCHED_FIFO needs a priority"),
    ({"process.scheduler": {"policy": "SCHED_OTHER", "flags": ["X"]}}, "process.scheduler.flags[0]"),
    ({"linux.personality": {"domain": "LINUX", "flags": ["NO_SUCH"]}}, "linux.personality.flags[0]"),
    ({"linux.personality": {"domain": "LINUX", "flags": "ADDR_NO_RANDOMIZE"}}, "linux.personality.flags: not an array"),
    ({"process.scheduler": {"policy": "SCHED_OTHER", "flags": "SCHED_FLAG_RESET_ON_FORK"}},
     "process.scheduler.flags: not an array"),
    ({"linux.memoryPolicy": {"mode": "MPOL_LOCAL", "flags": {"MPOL_F_STATIC_NODES": True}}},
     "linux.memoryPolicy.flags: not an array"),
    ({"linux.rootfsPropagation": "sideways"}, "linux.rootfsPropagation"),
    ({"process.user": {"uid": 0, "gid": 0, "additionalGids": ["x"]}}, "process.user.additionalGids[0]"),
    ({"process.user": {"uid": 0, "gid": 0, "additionalGids": [-1]}}, "process.user.additionalGids[0]"),
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


def test_mount_propagation(oci, bundle, tmp_path):
    """mounts[i].options shared/slave/private/unbindable (r-forms too) and linux.rootfsPropagation, as the
    container's mountinfo shows them."""
    src = tmp_path / "src"
    src.mkdir()
    b = bundle("sh", "-c", "grep -E ' /(mnt/[a-z]+|tmp/t|) ' /proc/self/mountinfo",
               **{"linux.rootfsPropagation": "shared"})
    config = json.loads((b / "config.json").read_text())
    config["mounts"] += [
        {"destination": "/mnt/shared", "source": str(src), "options": ["rbind", "nosuid", "strictatime", "rshared"]},
        {"destination": "/mnt/unbindable", "source": str(src), "options": ["bind", "unbindable"]},
        {"destination": "/tmp/t", "type": "tmpfs", "source": "tmpfs", "options": ["shared", "size=1k"]},
    ]
    (b / "config.json").write_text(json.dumps(config))
    r = oci("run", "--bundle", b, "prop")
    assert r.code == 0, r
    lines = {l.split()[4]: l for l in r.out.splitlines()}
    assert "shared:" in lines["/mnt/shared"] and "nosuid" in lines["/mnt/shared"], lines
    assert "unbindable" in lines["/mnt/unbindable"], lines
    assert "shared:" in lines["/tmp/t"], lines
    assert "shared:" in lines["/"], lines


def test_mounts_are_made_in_config_order(oci, bundle, tmp_path):
    """The config's mounts are made in its order, binds and new filesystems alike: mountinfo lists them so
    (the runtime-tools `mounts` program checks it), and a bind below a tmpfs that comes before it in the config
    is not hidden by that tmpfs."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("bound\n")
    b = bundle("sh", "-c", "cat /scratch/data/f; touch /scratch/data/x 2>/dev/null || echo ro-kept; grep -oE ' /(scratch|scratch/data|early|late) ' /proc/self/mountinfo",
               mounts=[{"destination": "/proc", "type": "proc", "source": "proc"},
                       {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]},
                       {"destination": "/early", "source": str(src), "options": ["bind", "ro"]},
                       {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
                       {"destination": "/scratch/data", "source": str(src), "options": ["rbind", "ro"]},
                       {"destination": "/late", "source": str(src), "options": ["bind", "shared"]}])
    r = oci("run", "--bundle", b, "order")
    assert r.code == 0, r
    assert r.out.split() == ["bound", "ro-kept", "/early", "/scratch", "/scratch/data", "/late"], r


def hook_bundle(bundle, tmp_path, args, hooks):
    """A bundle whose hooks are /bin/sh scripts; tmp_path/hk is bound at /hk inside (startContainer's path
    resolves in the container)."""
    hk = tmp_path / "hk"
    hk.mkdir(exist_ok=True)
    (hk / "hook.sh").write_text('#!/bin/sh\necho "$1 $(cat)" >> "$2"\n')
    (hk / "hook.sh").chmod(0o755)
    mounts = [{"destination": "/hk", "type": "bind", "source": str(hk), "options": ["rbind"]}]
    b = bundle(*args, hooks=hooks)
    config = json.loads((b / "config.json").read_text())
    config["mounts"] += mounts
    (b / "config.json").write_text(json.dumps(config))
    return hk


def test_hooks_run_in_their_places_with_the_state(oci, bundle, tmp_path, subreaper):
    """prestart, createRuntime (hedge-oci, at create), createContainer (inside, before pivot_root: a host
    path), startContainer (inside, at start: a container path), poststart, poststop (hedge-oci), each with
    the state document of that moment on stdin."""
    log = tmp_path / "hk" / "log"

    def hook(name, inside=False):
        script = "/hk/hook.sh" if inside else str(tmp_path / "hk" / "hook.sh")
        return [{"path": script, "args": ["hook.sh", name, "/hk/log" if inside else str(log)]}]
    hooks = {p: hook(p, inside=(p == "startContainer")) for p in
             ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")}
    hook_bundle(bundle, tmp_path, ("sh", "-c", "cat /hk/log > /hk/seen-by-workload"), hooks)
    r = oci("create", "--bundle", tmp_path / "bundle", "hk")
    assert r.code == 0, r
    pid = state(oci, "hk")["pid"]

    def entries():
        out = []
        for line in log.read_text().splitlines():
            name, doc = line.split(" ", 1)
            out.append((name, json.loads(doc)))
        return out
    assert [n for n, _ in entries()] == ["prestart", "createRuntime", "createContainer"]
    assert oci("start", "hk").code == 0
    status = reap(pid)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    # the workload ran after startContainer: it saw that hook's line
    assert "startContainer" in (tmp_path / "hk" / "seen-by-workload").read_text()
    assert oci("delete", "hk").code == 0
    got = entries()
    assert [n for n, _ in got] == ["prestart", "createRuntime", "createContainer", "startContainer", "poststart",
                                  "poststop"], got
    want_status = {"prestart": "created", "createRuntime": "creating", "createContainer": "creating",
                   "startContainer": "created", "poststart": "running", "poststop": "stopped"}
    for name, doc in got:
        assert doc["id"] == "hk" and doc["bundle"] == str(tmp_path / "bundle"), (name, doc)
        assert doc["status"] == want_status[name], (name, doc)
        assert doc["pid"] == (0 if name == "poststop" else pid), (name, doc)


@pytest.mark.parametrize("phase,hook,message", [
    ("createRuntime", {"path": "/bin/sh", "args": ["sh", "-c", "echo no network for you >&2; exit 3"]},
     "hooks.createRuntime[0]: /bin/sh exited with status 3: no network for you"),
    ("createContainer", {"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1},
     "hooks.createContainer[0]: /bin/sleep did not finish within its timeout of 1 s"),
    ("prestart", {"path": "/nonexistent/hook"}, "hooks.prestart[0]: /nonexistent/hook exited with status 127"),
])
def test_a_failing_create_hook_fails_create_and_leaves_nothing(oci, bundle, tmp_path, phase, hook, message):
    b = bundle("true", hooks={phase: [hook]})
    r = oci("create", "--bundle", b, "hkfail")
    assert r.code == 1 and message in r.err, r
    assert not (oci.root / "hkfail").exists()
    assert cgroup_dirs("hkfail") == []


def test_a_hook_whose_child_keeps_its_output_open_does_not_hold_create(oci, bundle, tmp_path):
    """A hook that leaves a background process holding its stdout: the runtime takes what the hook wrote
    when the hook exits and goes on, instead of waiting for the pipe's end (the sleep's 60 s)."""
    pid_file = tmp_path / "bg.pid"
    hook = {"path": "/bin/sh", "args": ["sh", "-c", f"sleep 60 & echo $! > {pid_file}; echo bad; exit 3"]}
    b = bundle("true", hooks={"createRuntime": [hook]})
    try:
        r = oci("create", "--bundle", b, "hkbg", timeout=30)
        assert r.code == 1 and "hooks.createRuntime[0]: /bin/sh exited with status 3: bad" in r.err, r
        assert not (oci.root / "hkbg").exists()
    finally:
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_failing_start_container_hook_fails_start(oci, bundle, subreaper):
    b = bundle("sleep", "1000", hooks={"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 9"]}]})
    assert oci("create", "--bundle", b, "hkstart").code == 0
    pid = state(oci, "hkstart")["pid"]
    r = oci("start", "hkstart")
    assert r.code == 1 and "ended before its command" in r.err, r
    status = reap(pid)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 125
    assert oci("delete", "hkstart").code == 0


def test_poststart_and_poststop_failures_are_warnings(oci, bundle, tmp_path, subreaper):
    fail = [{"path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 1"]}]
    b = bundle("sleep", "1000", hooks={"poststart": fail, "poststop": fail})
    log = tmp_path / "oci.log"
    assert oci("--log", log, "create", "--bundle", b, "hkwarn").code == 0
    pid = state(oci, "hkwarn")["pid"]
    r = oci("--log", log, "start", "hkwarn")
    assert r.code == 0, r
    assert state(oci, "hkwarn")["status"] == "running"
    assert oci("kill", "hkwarn", "KILL").code == 0
    reap(pid)
    r = oci("--log", log, "delete", "hkwarn")
    assert r.code == 0, r
    text = log.read_text()
    assert "hooks.poststart[0]: /bin/sh exited with status 1: nope" in text, text
    assert "hooks.poststop[0]: /bin/sh exited with status 1: nope" in text, text


def console_socket(path):
    """An engine's console socket (what conmon and the containerd shim listen on)."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    srv.settimeout(30)
    return srv


def receive_master(srv):
    conn, _ = srv.accept()
    with conn:
        msg, fds, _, _ = socket.recv_fds(conn, 256, 1)
    assert len(fds) == 1, msg
    return fds[0], msg


def read_terminal(master, timeout=20):
    """Everything the terminal printed until every slave closed (EIO)."""
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return out.decode().replace("\r\n", "\n")


TTY_SCRIPT = "tty; stty size; stat -c '%u %g %a' $(tty); [ /dev/console -ef $(tty) ] && echo console-is-tty; exit 3"


def test_terminal_through_the_console_socket(oci, bundle, tmp_path, subreaper):
    """process.terminal with --console-socket: the master reaches the engine (runc's message, the pty's
    name), the process has the slave as stdio, controlling terminal and /dev/console, sized by consoleSize
    and owned by its user."""
    b = bundle("sh", "-c", TTY_SCRIPT, **{"process.terminal": True,
                                          "process.consoleSize": {"height": 33, "width": 111},
                                          "process.user": {"uid": 1000, "gid": 1000}})
    srv = console_socket(tmp_path / "console.sock")
    r = oci("create", "--bundle", b, "--console-socket", tmp_path / "console.sock", "tty1")
    assert r.code == 0, r
    master, name = receive_master(srv)
    assert name == b"/dev/ptmx"
    pid = state(oci, "tty1")["pid"]
    assert oci("start", "tty1").code == 0
    out = read_terminal(master)
    assert out == "/dev/pts/0\n33 111\n1000 1000 620\nconsole-is-tty\n", out
    status = reap(pid)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3
    assert oci("delete", "tty1").code == 0


def test_terminal_in_a_foreground_run_is_relayed(oci, bundle, tmp_path):
    b = bundle("sh", "-c", TTY_SCRIPT, **{"process.terminal": True})
    r = oci("run", "--bundle", b, "tty2")
    assert r.code == 3, r
    assert "/dev/pts/0" in r.out and "console-is-tty" in r.out, r


@pytest.mark.parametrize("terminal,flags,message", [
    (True, [], "a detached container needs --console-socket"),
    (False, ["--console-socket", "/tmp/nowhere.sock"], "the config has no terminal (process.terminal is false)"),
    (True, ["--console-socket", "/nonexistent/console.sock"], "--console-socket /nonexistent/console.sock: connect"),
])
def test_terminal_errors(oci, bundle, terminal, flags, message):
    b = bundle("true", **{"process.terminal": terminal})
    r = oci("create", "--bundle", b, *flags, "ttybad")
    assert r.code == 1 and message in r.err, r
    assert not (oci.root / "ttybad").exists()


def test_exec_with_a_terminal(oci, bundle, tmp_path, subreaper):
    b = bundle("sleep", "1000")
    assert oci("create", "--bundle", b, "ttyx").code == 0
    pid = state(oci, "ttyx")["pid"]
    assert oci("start", "ttyx").code == 0
    srv = console_socket(tmp_path / "exec.sock")
    r = oci("exec", "--tty", "--console-socket", tmp_path / "exec.sock", "--detach", "--user", "1000:1000",
            "--pid-file", tmp_path / "exec.pid", "ttyx", "sh", "-c", "tty; stat -c '%u %g' $(tty)")
    assert r.code == 0, r
    master, _ = receive_master(srv)
    assert read_terminal(master) == "/dev/pts/0\n1000 1000\n"
    # the detached process is ours to reap, as it is conmon's (until it is, the container's init cannot
    # finish exiting: the pid namespace waits for every process of it); by its pid: other tests' orphans
    # may be waiting for this subreaper too
    os.waitpid(int((tmp_path / "exec.pid").read_text()), 0)
    r = oci("exec", "-t", "ttyx", "sh", "-c", "tty; exit 5")
    assert r.code == 5 and "/dev/pts/" in r.out, r
    r = oci("exec", "--console-socket", tmp_path / "exec.sock", "ttyx", "true")
    assert r.code == 1 and "needs --tty" in r.err, r
    assert oci("kill", "ttyx", "KILL").code == 0
    reap(pid)
    assert oci("delete", "ttyx").code == 0


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
    r = oci("--log-format", "xml", "list")
    assert r.code == 1 and "--log-format" in r.err, r
    # runc's words for a flag it does not know, naming the verb when it is a verb's
    r = oci("--frob", "list")
    assert r.code == 1 and r.err.strip() == "hedge-oci: flag provided but not defined: -frob", r
    r = oci("list", "--frob")
    assert r.code == 1 and r.err.strip() == "hedge-oci: list: flag provided but not defined: -frob", r
    r = oci("--log")
    assert r.code == 1 and r.err.strip() == "hedge-oci: flag needs an argument: -log", r
    r = oci("spec", "--bundle", tmp_path)
    assert r.code == 0, r
    assert json.loads((tmp_path / "config.json").read_text())["process"]["terminal"] is False
    r = oci("spec", "--bundle", tmp_path)
    assert r.code == 1 and "exists" in r.err, r
    r = oci("--log", tmp_path / "text.log", "state", "nope")
    assert r.code == 1
    assert 'level=error msg="container \\"nope\\" does not exist' in (tmp_path / "text.log").read_text()


# ---- joining existing namespaces by path (linux.namespaces[].path) ----

def namespaces(**paths):
    """The five namespaces hedge-oci needs (and cgroup when given), each new or joined by the path given
    (network=..., ipc=...)."""
    return [{"type": t, **({"path": str(paths[t])} if t in paths else {})}
            for t in ["pid", "mount", "ipc", "uts", "network"] + (["cgroup"] if "cgroup" in paths else [])]


@pytest.fixture
def netns():
    """A network namespace made with `ip netns add` holding a veth pair, v0 with 10.123.45.6/24; removed after."""
    name = f"hedge-oci-test-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1"], check=True)
        subprocess.run(["ip", "-n", name, "addr", "add", "10.123.45.6/24", "dev", "v0"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)


def test_join_a_network_namespace_by_path(oci, bundle, netns):
    b = bundle("sh", "-c", "ip -o addr show v0; cat /sys/class/net/lo/operstate; readlink /proc/self/ns/net",
               **{"linux.namespaces": namespaces(network=f"/run/netns/{netns}")})
    r = oci("run", "--bundle", b, "nsnet")
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert "10.123.45.6/24" in lines[0], r
    # hedge configured nothing in it: lo is as `ip netns add` left it, down
    assert lines[1] == "down", r
    assert lines[2] == f"net:[{os.stat(f'/run/netns/{netns}').st_ino}]", r
    # the namespace is not ours to remove
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert netns in listed.split(), listed
    r = subprocess.run(["ip", "-n", netns, "-o", "addr", "show", "v0"], capture_output=True, text=True)
    assert r.returncode == 0 and "10.123.45.6/24" in r.stdout, r


def test_pod_containers_share_network_ipc_uts_pid_and_cgroup(oci, bundle, tmp_path, busybox_rootfs, subreaper):
    """Kubernetes-style: B joins A's network, ipc, uts, pid (and cgroup) namespaces by /proc/PID/ns paths."""
    a = make_bundle(tmp_path / "a", busybox_rootfs,
                    ["sh", "-c", "mkdir -p /tmp/www && echo pong > /tmp/www/index.html && "
                                 "exec httpd -f -p 127.0.0.1:8080 -h /tmp/www"], hostname="pod-a")
    assert oci("create", "--bundle", a, "poda").code == 0
    pid_a = state(oci, "poda")["pid"]
    try:
        assert oci("start", "poda").code == 0
        ns = {t: f"/proc/{pid_a}/ns/{f}" for t, f in [("network", "net"), ("ipc", "ipc"), ("uts", "uts"),
                                                       ("pid", "pid"), ("cgroup", "cgroup")]}
        b = make_bundle(tmp_path / "b", busybox_rootfs,
                        ["sh", "-c", "hostname; cat /etc/hostname; echo $HOSTNAME; for i in $(seq 50); do wget -qO- http://127.0.0.1:8080/ && break; "
                                     "sleep 0.1; done; for n in net ipc uts pid cgroup; do readlink /proc/self/ns/$n; "
                                     "done; cat /proc/1/cmdline | tr '\\0' ' '; echo"],
                        **{"linux.namespaces": namespaces(**ns)})
        config = json.loads((b / "config.json").read_text())
        config.pop("hostname", None)
        (b / "config.json").write_text(json.dumps(config))
        r = oci("run", "--bundle", b, "podb")
        assert r.code == 0, r
        lines = r.out.splitlines()
        # A's hostname (B's config names none, so hedge-oci set none), also in /etc/hostname and $HOSTNAME
        assert lines[0:3] == ["pod-a"] * 3, r
        assert lines[3] == "pong", r    # A's httpd on 127.0.0.1: the same network namespace
        assert lines[4:9] == [os.readlink(f"/proc/{pid_a}/ns/{f}") for f in ["net", "ipc", "uts", "pid", "cgroup"]], r
        assert lines[9].startswith("httpd -f"), r  # A's first process is pid 1 of B's /proc too
        assert os.readlink(f"/proc/{pid_a}/ns/uts") != os.readlink("/proc/self/ns/uts")
    finally:
        assert oci("kill", "poda", "KILL").code == 0
        reap(pid_a)
        assert oci("delete", "poda").code == 0


def test_namespaces_the_config_leaves_out_are_the_hosts(oci, bundle, subreaper):
    """runtime-spec: a type linux.namespaces does not list is the runtime's own (podman --pid=host, --ipc=host,
    --uts=host). The container sees the host's processes; a process it leaves behind dies with it."""
    host = {n: os.readlink(f"/proc/self/ns/{n}") for n in ["pid", "ipc", "uts", "mnt"]}
    b = bundle("sh", "-c", "for n in pid ipc uts mnt; do readlink /proc/self/ns/$n; done; hostname; "
               f"test -d /proc/{os.getpid()} && echo sees-the-host; sleep 1000 >/dev/null & echo $!",
               **{"linux.namespaces": [{"type": t} for t in ["mount", "network"]]})
    config = json.loads((b / "config.json").read_text())
    config.pop("hostname", None)
    (b / "config.json").write_text(json.dumps(config))
    r = oci("run", "--bundle", b, "hostns")
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert lines[0:3] == [host["pid"], host["ipc"], host["uts"]], lines
    assert lines[3] != host["mnt"], lines          # always a mount namespace of its own
    assert lines[4] == socket.gethostname(), lines  # the host's name, unchanged
    assert lines[5] == "sees-the-host", lines
    left = int(lines[6])                          # a host pid: no pid namespace of its own to take it along
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if os.waitpid(left, os.WNOHANG)[0] == left:  # reparented to this subreaper, then killed
                break
        except ChildProcessError:
            if not pathlib.Path(f"/proc/{left}").exists():
                break
        time.sleep(0.05)
    assert not pathlib.Path(f"/proc/{left}").exists(), "the container's background process outlived it"
    assert not (oci.root / "hostns").exists()
    assert cgroup_dirs("hostns") == []


@pytest.mark.parametrize("change,message", [
    ({"hostname": "mine"}, "hostname: needs a uts namespace of the container's own"),
    ({"linux.sysctl": {"kernel.shmmax": "1000"}}, "linux.sysctl.kernel.shmmax: not a sysctl of the container's own"),
])
def test_what_would_change_a_shared_host_namespace_is_refused(oci, bundle, change, message):
    ns = {"linux.namespaces": [{"type": t} for t in ["mount", "network"]]}
    b = bundle("true", **{**ns, **change})
    r = oci("create", "--bundle", b, "hostbad")
    assert r.code == 1 and message in r.err, r
    assert not (oci.root / "hostbad").exists()
    assert cgroup_dirs("hostbad") == []


def all_mountinfo():
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split()[4] for line in f)


def test_a_config_without_namespaces_shares_every_one_of_the_hosts(oci, bundle, tmp_path, busybox_rootfs, subreaper):
    """No linux.namespaces entry at all (the conformance suite's linux_ns_itype): the container is in every one of
    the runtime's namespaces, mount and cgroup too. Without a mount namespace of its own the process only
    chroots into root.path, as runc does; the config's mounts (proc, /dev, sysfs, ...) are left out with a
    warning instead of landing on the host's mount table, and the user, cwd and hooks are as usual."""
    marker = f"hedge-oci-nomnt-{os.getpid()}"
    out = busybox_rootfs / "tmp" / f"{marker}.out"
    (busybox_rootfs / marker).write_text("")
    hook_out = tmp_path / "hooks.txt"
    hook = ["/bin/sh", "-c", f"pwd >> {hook_out}"]
    try:
        b = bundle("sh", "-c", f"{{ test -e /{marker} && echo chrooted; pwd; id -u; id -g; ls /proc | wc -l; "
                                f"echo end; }} > /tmp/{marker}.out 2>&1",
                   **{"linux.namespaces": [], "linux.maskedPaths": [], "linux.readonlyPaths": [],
                      "process.cwd": "/tmp", "process.user": {"uid": 1000, "gid": 1000},
                      "hooks": {"createRuntime": [{"path": hook[0], "args": hook}],
                                "createContainer": [{"path": hook[0], "args": hook}]}})
        config = json.loads((b / "config.json").read_text())
        config.pop("hostname", None)
        (b / "config.json").write_text(json.dumps(config))
        before = all_mountinfo()
        log = tmp_path / "oci.log"
        r = oci("--log", log, "create", "--bundle", b, "nomnt")
        assert r.code == 0, r
        assert "level=warning msg=\"mounts: the config's 6 mounts are not made: linux.namespaces has no mount " \
               "entry" in log.read_text()
        pid = state(oci, "nomnt")["pid"]
        for n in ["pid", "ipc", "uts", "net", "cgroup", "mnt", "user"]:
            assert os.readlink(f"/proc/{pid}/ns/{n}") == os.readlink(f"/proc/self/ns/{n}"), n
        assert os.readlink(f"/proc/{pid}/root") == str(busybox_rootfs)
        assert all_mountinfo() == before, "nothing of the container is mounted on the host"
        # the hooks ran at their points: createRuntime (in the runtime's directory), then createContainer in
        # the rootfs directory, before the chroot
        lines = hook_out.read_text().splitlines()
        assert len(lines) == 2 and lines[1] == str(busybox_rootfs), lines
        # exec enters the same root
        r = oci("exec", "nomnt", "sh", "-c", f"test -e /{marker} && echo chrooted; pwd")
        assert r.code == 0 and r.out == "chrooted\n/tmp\n", r  # process.cwd, as the first process
        assert oci("start", "nomnt").code == 0
        assert os.WEXITSTATUS(reap(pid)) == 0
        # no /proc mounted: the rootfs's empty directory, as it is
        assert out.read_text().splitlines() == ["chrooted", "/tmp", "1000", "1000", "0", "end"]
        assert all_mountinfo() == before
        assert oci("delete", "nomnt").code == 0
        assert all_mountinfo() == before
        assert not (oci.root / "nomnt").exists()
        assert cgroup_dirs("nomnt") == []
    finally:
        (busybox_rootfs / marker).unlink()
        out.unlink(missing_ok=True)


@pytest.mark.parametrize("change,message", [
    ({"mounts": [{"destination": "/data", "type": "bind", "source": "/tmp", "options": ["rbind"]}]},
     "mounts[0]: a bind mount needs a mount namespace of the container's own"),
    ({"linux.maskedPaths": ["/proc/kcore"]}, "linux.maskedPaths: needs a mount namespace of the container's own"),
    ({"linux.readonlyPaths": ["/proc/sys"]}, "linux.readonlyPaths: needs a mount namespace of the container's own"),
    ({"root.readonly": True}, "root.readonly: needs a mount namespace of the container's own"),
    ({"process.terminal": True}, "process.terminal: needs a mount namespace of the container's own"),
    ({"linux.namespaces": [{"type": "mount", "path": "/proc/self/ns/mnt"}]},
     "linux.namespaces[0].path: /proc/self/ns/mnt is the runtime's own mount namespace: leave the mount entry out"),
    ({"linux.namespaces": [{"type": t} for t in ["pid", "ipc", "uts", "user"]],
      "linux.uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
      "linux.gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]},
     "linux.namespaces: sharing the host's mount namespace together with a new user namespace is not supported"),
])
def test_what_would_mount_on_the_hosts_mount_table_is_refused(oci, bundle, busybox_rootfs, change, message):
    """Without a mount namespace of its own, what would need a mount on the host's mount table, and cannot be
    left out without changing what the process reads or writes, is refused, naming the field."""
    b = bundle("true", **{"linux.namespaces": [], "linux.maskedPaths": [], "linux.readonlyPaths": [], **change})
    config = json.loads((b / "config.json").read_text())
    config.pop("hostname", None)
    (b / "config.json").write_text(json.dumps(config))
    before = all_mountinfo()
    r = oci("create", "--bundle", b, "nomntbad")
    assert r.code == 1 and message in r.err, r
    assert all_mountinfo() == before
    assert not (oci.root / "nomntbad").exists()
    assert cgroup_dirs("nomntbad") == []


def test_the_hosts_cgroup_namespace_shows_the_containers_own_cgroup(oci, bundle):
    """No cgroup entry: the host's cgroup namespace (podman's default on cgroup v1, --cgroupns=host), so
    /proc/self/cgroup shows the host's paths; a cgroup mount shows the container's own cgroup there, as runc
    binds it, not the host's whole tree."""
    b = bundle("sh", "-c", "readlink /proc/self/ns/cgroup; grep -q '/hostcg$' /proc/self/cgroup && echo host-paths; "
                           "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max",
               **{"linux.resources": {"pids": {"limit": 40}}, "linux.namespaces": namespaces()})
    config = json.loads((b / "config.json").read_text())
    config["mounts"].append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                             "options": ["nosuid", "noexec", "nodev", "ro"]})
    (b / "config.json").write_text(json.dumps(config))
    r = oci("run", "--bundle", b, "hostcg")
    assert r.code == 0, r
    assert r.out.splitlines() == [os.readlink("/proc/self/ns/cgroup"), "host-paths", "40"], r


@pytest.mark.parametrize("ns_type,path,message", [
    ("network", "/etc/hostname", "linux.namespaces[4].path: /etc/hostname is not a namespace file"),
    ("network", "/proc/self/ns/mnt", "linux.namespaces[4].path: /proc/self/ns/mnt is a namespace of type mount, "
                                     "not network"),
    ("ipc", "/proc/self/ns/uts", "linux.namespaces[2].path: /proc/self/ns/uts is a namespace of type uts, not ipc"),
    ("uts", "/nonexistent/ns", "linux.namespaces[3].path: open /nonexistent/ns: No such file or directory"),
    ("pid", "proc/1/ns/pid", "linux.namespaces[0].path: not an absolute path"),
])
def test_a_bad_namespace_path_fails_create_and_leaves_nothing(oci, bundle, ns_type, path, message):
    b = bundle("true", **{"linux.namespaces": namespaces(**{ns_type: path})})
    r = oci("create", "--bundle", b, "nsbad")
    assert r.code == 1 and message in r.err, r
    assert not (oci.root / "nsbad").exists()
    assert cgroup_dirs("nsbad") == []


def test_joining_a_pid_namespace_without_init_fails_create(oci, bundle, tmp_path):
    """A pid namespace kept alive by a bind mount after its init exited takes no new process: create says so."""
    keep = tmp_path / "pidns"
    keep.touch()
    subprocess.run(["unshare", f"--pid={keep}", "--fork", "true"], check=True)
    try:
        b = bundle("true", **{"linux.namespaces": namespaces(pid=keep)})
        r = oci("create", "--bundle", b, "nsdead")
        assert r.code == 1 and "joined pid namespace (its init process has exited)" in r.err, r
        assert not (oci.root / "nsdead").exists()
        assert cgroup_dirs("nsdead") == []
    finally:
        subprocess.run(["umount", str(keep)], check=True)


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

    def run(*args, timeout=60, input=None):
        proc = subprocess.run(base + [str(a) for a in args], capture_output=True, text=True, env=env,
                              timeout=timeout, input=input)
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
    # a terminal (podman -t): conmon's console socket gets the pty
    r = podman("--runtime", HEDGE_OCI, "run", "--rm", "-t", "--network", "none", "localhost/hedge-busybox:test",
               "sh", "-c", "tty; exit 5")
    assert r.code == 5 and r.out.replace("\r", "") == "/dev/pts/0\n", r
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
    # podman leaves the cgroup namespace out on cgroup v1 (--cgroupns=host): the host's, and the cgroup mount
    # above showed the container's own group in it
    if not os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        r = podman("--runtime", HEDGE_OCI, "exec", "long", "readlink", "/proc/self/ns/cgroup")
        assert r.code == 0 and r.out == os.readlink("/proc/self/ns/cgroup") + "\n", r
    r = podman("--runtime", HEDGE_OCI, "exec", "long", "nonexistent")
    assert r.code == 127, r
    r = podman("--runtime", HEDGE_OCI, "exec", "-t", "long", "sh", "-c", "tty; exit 7")
    assert r.code == 7 and r.out.replace("\r", "") == "/dev/pts/0\n", r
    r = podman("--runtime", HEDGE_OCI, "rm", "-f", "-t", "0", "long")
    assert r.code == 0, r
    # the host's pid, ipc and uts namespaces (the config lists none of them)
    r = podman("--runtime", HEDGE_OCI, "run", "--rm", "--network", "none", "--pid", "host", "--ipc", "host",
               "--uts", "host", "localhost/hedge-busybox:test",
               "sh", "-c", f"for n in pid ipc uts; do readlink /proc/self/ns/$n; done; hostname; "
                           f"test -d /proc/{os.getpid()} && echo sees-the-host")
    assert r.code == 0, r
    assert r.out.splitlines() == [os.readlink(f"/proc/self/ns/{n}") for n in ["pid", "ipc", "uts"]] + \
        [socket.gethostname(), "sees-the-host"], r


def fetch_in_netns(netns, url, tries=100):
    """GET url from inside the network namespace netns, trying again while nothing answers (0.3 s apart)."""
    fetch = ("import sys, time, urllib.request as u\n"
             f"for i in range({tries}):\n"
             "    try:\n"
             "        print(u.urlopen(sys.argv[1], timeout=5).read().decode(), end=''); break\n"
             "    except OSError: time.sleep(0.3)\n")
    return subprocess.run(["ip", "netns", "exec", netns, "python3", "-c", fetch, url], capture_output=True,
                          text=True, timeout=tries * 6)


@contextlib.contextmanager
def podman_in_netns(tmp_path, busybox_rootfs, prefix, network, runtime):
    """podman on a CNI network of its own, inside a network namespace made here (its bridge, addresses and
    firewall rules stay there; its network configs live in tmp_path), with the busybox image imported. Yields
    (podman, netns name); afterwards every container (removed through runtime), the network, podman's runroot
    and the namespace are gone."""
    if shutil.which("podman") is None or shutil.which("nsenter") is None:
        pytest.skip("podman or nsenter is not installed (deps/oci.txt)")
    if not pathlib.Path("/usr/lib/cni/bridge").exists():
        pytest.skip("podman's CNI network backend needs the bridge plugin (containernetworking-plugins)")
    netdir = tmp_path / "cni"
    netdir.mkdir()
    conf = tmp_path / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=1024:1024"]\n'
                    f'[network]\nnetwork_backend = "cni"\nnetwork_config_dir = "{netdir}"\n')
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    host = f"{prefix}-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", host], check=True)
    runroot = tempfile.mkdtemp(prefix=f"{prefix}-", dir="/tmp")
    base = ["nsenter", f"--net=/run/netns/{host}", "podman", "--root", str(tmp_path / "storage"), "--runroot",
            runroot, "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"]

    def podman(*args, timeout=60):
        return Result(subprocess.run(base + [str(a) for a in args], capture_output=True, text=True, env=env,
                                     timeout=timeout))
    try:
        subprocess.run(["ip", "-n", host, "link", "set", "lo", "up"], check=True)
        tar = tmp_path / "busybox.tar"
        subprocess.run(["tar", "-C", str(busybox_rootfs), "-cf", str(tar), "."], check=True)
        r = podman("import", tar, "localhost/hedge-busybox:test", timeout=120)
        assert r.code == 0, r
        yield podman, host
    finally:
        podman("--runtime", runtime, "rm", "--all", "--force", "-t", "0")
        podman("network", "rm", "-f", network)
        subprocess.run(["umount", "-R", runroot], capture_output=True)
        shutil.rmtree(runroot, ignore_errors=True)
        subprocess.run(["ip", "netns", "delete", host], check=True)
    assert not (netdir / f"{network}.conflist").exists()


@pytest.mark.parametrize("uidmap", [[], ["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"]],
                         ids=["", "userns"])
def test_podman_network_with_hedge_oci(tmp_path, busybox_rootfs, uidmap):
    """Two containers on a real podman network (CNI bridge), joined by the namespace path podman passes. podman
    runs inside a network namespace this test makes, so its bridge, addresses and firewall rules stay there; its
    network configs live in the test's own directory. With --uidmap the containers have a new user namespace
    too, and hedge-oci enters podman's network namespace for their clone."""
    with podman_in_netns(tmp_path, busybox_rootfs, "hedge-oci-podnet", "hedgenet", HEDGE_OCI) as (podman, host):
        r = podman("network", "create", "hedgenet")
        assert r.code == 0, r
        r = podman("--runtime", HEDGE_OCI, "run", "-d", "--name", "srv", "--network", "hedgenet", *uidmap,
                   "-p", "127.0.0.1:18081:8080", "localhost/hedge-busybox:test", "sh", "-c",
                   "mkdir -p /tmp/www && echo pong > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www")
        assert r.code == 0, r
        r = podman("inspect", "--format", "{{.NetworkSettings.Networks.hedgenet.IPAddress}}", "srv")
        ip = r.out.strip()
        assert r.code == 0 and ip.count(".") == 3, r
        r = podman("--runtime", HEDGE_OCI, "run", "--rm", "--network", "hedgenet", *uidmap,
                   "localhost/hedge-busybox:test",
                   "sh", "-c", f"ip -o -4 addr show eth0; cat /proc/self/uid_map; for i in $(seq 50); do wget -qO- http://{ip}:8080/ && "
                               "exit 0; sleep 0.1; done; exit 1")
        assert r.code == 0, r
        assert "eth0" in r.out and "pong" in r.out.splitlines()[-1], r
        assert r.out.splitlines()[1].split() == (["0", "100000", "65536"] if uidmap else ["0", "0", "4294967295"]), r
        # -p: the published port on the (namespace's) host loopback reaches the container's httpd
        got = fetch_in_netns(host, "http://127.0.0.1:18081/")
        assert got.stdout == "pong\n", got
