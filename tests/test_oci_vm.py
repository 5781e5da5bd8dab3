"""hedge-oci-vm: hedge-oci's command line, the bundle's process in a QEMU guest with its own kernel.

The same binary as hedge-oci under the name hedge-oci-vm (a symlink the build makes). create leaves a
holder process (the pid in --pid-file and in `state`) that holds the booted guest at READY until start;
the holder relays the guest's output to its own stdio (create's), forwards kill's signals to the guest,
runs exec'd processes in the guest (EXEC messages) and exits with the workload's status. Each boot takes a few seconds under TCG, so the tests are few and
each checks several things; they skip, as tests/test_vm.py does, when QEMU or the guest kernel is absent.
podman and containerd (the runc v2 shim) drive it as they drive runc.
"""
import fcntl
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import termios
import threading
import time

import pytest

from conftest import BUILD, CGROUP_PARENT, SANITIZER_ENV, Result, check_sanitizer
from test_oci import (console_socket, fetch_in_netns, make_bundle, podman, podman_in_netns,  # noqa: F401
                      read_terminal, reap, receive_master, subreaper)
from test_oci_containerd import IMAGE, containerd, wait_status as ctr_wait_status  # noqa: F401 (fixture)
from test_vm import guest_kernel, qemu_processes_for  # noqa: F401 (fixture)

HEDGE_OCI_VM = BUILD / "hedge-oci-vm"


@pytest.fixture
def ocivm(dirs, guest_kernel):  # noqa: F811
    """ocivm(*args, env=None, timeout=120) -> Result: hedge-oci-vm with a per-test --root (TCG)."""
    root = dirs["state"] / "oci-root"

    def run(*args, timeout=120, env=None, stdout_path=None, input=None, stdin_path=None):
        """stdout_path: create's stdout (the holder's, so the workload's) goes to that file. stdin: /dev/null,
        or input (bytes, through a pipe), or the file stdin_path."""
        e = dict(os.environ)
        e.update(SANITIZER_ENV)
        e.update({"HEDGE_STATE_DIR": str(dirs["state"]), "HEDGE_RUN_DIR": str(dirs["run"]),
                  "HEDGE_CGROUP_PARENT": CGROUP_PARENT, "HEDGE_VM_KERNEL_DIR": str(guest_kernel),
                  "HEDGE_OCI_VM_ACCEL": "tcg"})
        e.update(env or {})
        argv = [str(HEDGE_OCI_VM), "--root", str(root)] + [str(a) for a in args]
        # files, not pipes: create's holder keeps create's stdio (the workload's output goes there)
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            stdout = open(stdout_path, "w") if stdout_path else out
            stdin = open(stdin_path, "rb") if stdin_path else None if input is not None else subprocess.DEVNULL
            try:
                proc = subprocess.run(argv, stdin=stdin, input=input, stdout=stdout, stderr=err, timeout=timeout,
                                      env=e)
            finally:
                if stdout_path:
                    stdout.close()
                if stdin_path:
                    stdin.close()
            out.seek(0)
            err.seek(0)
            proc.stdout, proc.stderr = out.read(), err.read()
        check_sanitizer(proc.stderr)
        return Result(proc)

    run.root = root
    yield run
    left = sorted(p.name for p in root.iterdir()) if root.exists() else []
    for cid in left:
        run("delete", "--force", cid)
    assert left == [], f"containers left behind under --root: {left}"
    assert qemu_processes_for(dirs["run"]) == [], "QEMU left running"


@pytest.fixture
def bundle(tmp_path, busybox_rootfs):
    def make(*args, **changes):
        return make_bundle(tmp_path / "bundle", busybox_rootfs, args, **changes)
    return make


def state(ocivm, cid):
    r = ocivm("state", cid)
    assert r.code == 0, r
    return json.loads(r.out)


@pytest.mark.parametrize("code", [0, 3])
def test_run_prints_and_exits_with_the_status(ocivm, bundle, code):
    b = bundle("sh", "-c", f"echo out; echo err >&2; uname -r; exit {code}", **{"process.terminal": False})
    r = ocivm("run", "-b", b, f"r{code}")
    assert r.code == code, r
    out, release = r.out.splitlines()
    assert out == "out"
    assert release != os.uname().release  # the guest's own kernel
    assert r.err == "err\n"
    assert not ocivm.root.joinpath(f"r{code}").exists()


def test_a_pod_container_joining_its_sandbox_namespaces_runs(ocivm, bundle, tmp_path):
    """Kubernetes and podman pods: a container joins the sandbox's ipc, uts and pid namespaces by path. Each
    container here is a VM of its own: the guest takes the uts namespace's name as its hostname, the others are
    not shared (a warning in the log says so), and a user namespace path is refused naming the entry."""
    sandbox = subprocess.Popen(["unshare", "--ipc", "--uts", "--pid", "--fork", "--kill-child", "sh", "-c",
                                "hostname pod-sandbox && exec sleep 1000"])
    try:
        def sleeper():
            try:
                kids = pathlib.Path(f"/proc/{sandbox.pid}/task/{sandbox.pid}/children").read_text().split()
            except OSError:
                return None
            return int(kids[0]) if kids and pathlib.Path(f"/proc/{kids[0]}/exe").resolve().name == "sleep" else None
        deadline = time.monotonic() + 10
        while (pid := sleeper()) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pid, "the sandbox did not start"
        ns = [{"type": "pid", "path": f"/proc/{pid}/ns/pid"}, {"type": "mount"},
              {"type": "ipc", "path": f"/proc/{pid}/ns/ipc"}, {"type": "uts", "path": f"/proc/{pid}/ns/uts"}]
        b = bundle("hostname", **{"process.terminal": False, "linux.namespaces": ns})
        config = json.loads((b / "config.json").read_text())
        config.pop("hostname", None)
        (b / "config.json").write_text(json.dumps(config))
        log = tmp_path / "pod.log"
        r = ocivm("--log", log, "run", "-b", b, "pod1")
        assert (r.code, r.out) == (0, "pod-sandbox\n"), r
        text = log.read_text()
        assert f"linux.namespaces[0].path: /proc/{pid}/ns/pid is not shared with the guest" in text, text
        assert f"linux.namespaces[2].path: /proc/{pid}/ns/ipc is not shared with the guest" in text, text
        b = bundle("true", **{"process.terminal": False,
                              "linux.namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts")] +
                                                  [{"type": "user", "path": f"/proc/{pid}/ns/user"}]})
        r = ocivm("run", "-b", b, "pod2")
        assert r.code == 1 and "linux.namespaces[4].path: joining the user namespace" in r.err, r
        assert not ocivm.root.joinpath("pod2").exists()
    finally:
        sandbox.kill()
        sandbox.wait()


def test_bound_files_are_copied_into_the_guest(ocivm, bundle, tmp_path):
    """Binds of files (as the engines make for /etc/hosts, /etc/hostname, ...) are copies in the guest, bound at
    their destinations with the host file's mode and owner, read-only when the bind is."""
    hosts = tmp_path / "hosts"
    hosts.write_text("10.1.2.3 somewhere\n")
    secret = tmp_path / "secret"
    secret.write_bytes(bytes(range(256)) * 300)  # 76800 bytes: more than one message
    secret.chmod(0o640)
    os.chown(secret, 123, 45)
    empty = tmp_path / "empty"
    empty.write_text("")
    b = bundle("sh", "-c", "cat /etc/hosts; stat -c '%a %u %g %s' /run/secrets/token; md5sum /run/secrets/token; "
                           "stat -c %s /new/dir/empty; echo x >> /etc/hosts || echo read-only; "
                           "echo y >> /new/dir/empty && cat /new/dir/empty; grep -c ' /etc/hosts ' /proc/mounts",
               **{"process.terminal": False})
    config = json.loads((b / "config.json").read_text())
    config["mounts"] += [
        {"destination": "/etc/hosts", "type": "bind", "source": str(hosts), "options": ["rbind", "ro"]},
        {"destination": "/run/secrets/token", "type": "bind", "source": str(secret), "options": ["bind"]},
        {"destination": "/new/dir/empty", "type": "bind", "source": str(empty), "options": ["rbind", "rw"]},
    ]
    (b / "config.json").write_text(json.dumps(config))
    r = ocivm("run", "-b", b, "files")
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert lines[0] == "10.1.2.3 somewhere", r
    assert lines[1] == "640 123 45 76800", r
    assert lines[2].split()[0] == hashlib.md5(secret.read_bytes()).hexdigest(), r
    assert lines[3:] == ["0", "read-only", "y", "1"], r
    assert "Read-only file system" in r.err, r
    assert hosts.read_text() == "10.1.2.3 somewhere\n" and empty.read_text() == ""  # copies: the host's stay


def test_bound_directories_are_shared_with_the_guest(ocivm, bundle, tmp_path, dirs):
    """A bind of a host directory is shared through virtiofs (a virtiofsd per directory): the guest sees the
    host's files, its writes reach the host; a read-only bind cannot be written, also not by the guest's root."""
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "hello").write_text("from the host\n")
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "keep").write_text("keep\n")
    b = bundle("sh", "-c", "cat /data/sub/hello; echo from the guest > /data/written; mkdir /data/d; "
                           "cat /ro/keep; echo x > /ro/new || echo ro refused; "
                           "mount -o remount,rw /ro && echo y > /ro/new2 || echo still refused",
               **{"process.terminal": False})
    config = json.loads((b / "config.json").read_text())
    config["mounts"] += [
        {"destination": "/data", "type": "bind", "source": str(data), "options": ["rbind", "rw"]},
        {"destination": "/ro", "type": "bind", "source": str(ro), "options": ["rbind", "ro"]},
    ]
    (b / "config.json").write_text(json.dumps(config))
    r = ocivm("run", "-b", b, "dirs")
    assert r.code == 0, r
    assert r.out.splitlines() == ["from the host", "keep", "ro refused", "still refused"], r
    assert (data / "written").read_text() == "from the guest\n"
    assert (data / "d").is_dir()
    assert sorted(p.name for p in ro.iterdir()) == ["keep"]
    assert qemu_processes_for(dirs["run"]) == []
    assert subprocess.run(["pgrep", "-f", f"virtiofsd.*{tmp_path}"], capture_output=True).returncode == 1


def test_a_directory_bind_needs_the_guest_kernels_virtiofs(ocivm, bundle, tmp_path, guest_kernel, dirs):  # noqa: F811
    """A guest kernel dir fetched before modules/fs existed: the directory bind is refused naming the mount, and
    what to do."""
    old = tmp_path / "old-kernel"
    shutil.copytree(guest_kernel, old, ignore=lambda d, names: ["fs"] if d.endswith("modules") else [])
    b = bundle("true", **{"process.terminal": False,
                          "mounts": [{"destination": "/data", "type": "bind", "source": str(tmp_path),
                                      "options": ["rbind"]}]})
    r = ocivm("create", "-b", b, "old", env={"HEDGE_VM_KERNEL_DIR": str(old)})
    assert r.code == 1, r
    assert (f"mounts[0]: a bind of the directory {tmp_path} at /data: the guest kernel in {old} has no virtiofs "
            "modules (modules/fs): fetch it again with `hedge vm kernel fetch`") in r.err, r
    assert not (ocivm.root / "old").exists()
    assert qemu_processes_for(dirs["run"]) == []


def test_create_state_start_delete_with_the_pid_file(ocivm, bundle, tmp_path, subreaper, dirs):  # noqa: F811
    b = bundle("sh", "-c", "echo started; read line; echo done >&2; exit 5", **{"process.terminal": False})
    pid_file = tmp_path / "pid"
    r = ocivm("create", "-b", b, "--pid-file", pid_file, "c1")
    assert r.code == 0, r
    pid = int(pid_file.read_text())
    st = state(ocivm, "c1")
    assert (st["status"], st["pid"], st["bundle"]) == ("created", pid, str(b))
    # the holder outlived create (it is ours as the subreaper) and owns a booted QEMU
    assert os.waitpid(pid, os.WNOHANG) == (0, 0)
    assert len(qemu_processes_for(dirs["run"])) == 1
    assert ocivm("start", "c1").code == 0
    assert state(ocivm, "c1")["status"] in ("running", "stopped")
    status = reap(pid, timeout=60)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 5
    st = state(ocivm, "c1")
    assert (st["status"], st["pid"]) == ("stopped", 0)
    assert (ocivm.root / "c1" / "exit").read_text() == "5\n"
    assert ocivm("start", "c1").code == 1
    assert ocivm("delete", "c1").code == 0
    assert not (ocivm.root / "c1").exists()
    assert ocivm("state", "c1").code == 1


def test_kill_reaches_the_sleeping_process_in_the_guest(ocivm, bundle, tmp_path, subreaper, dirs):  # noqa: F811
    out = tmp_path / "out"
    b = bundle("sh", "-c", "trap 'echo got TERM; exit 7' TERM; echo sleeping; while :; do sleep 0.2; done",
               **{"process.terminal": False})
    # the holder's stdio is create's: the workload's output lands in create's stdout
    r = ocivm("create", "-b", b, "--pid-file", tmp_path / "pid", "k1", stdout_path=out)
    assert r.code == 0, r
    pid = int((tmp_path / "pid").read_text())
    assert ocivm("start", "k1").code == 0
    deadline = time.monotonic() + 30
    while "sleeping" not in out.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ocivm("kill", "k1", "SIGTERM").code == 0
    status = reap(pid, timeout=30)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 7
    assert out.read_text() == "sleeping\ngot TERM\n"
    assert ocivm("kill", "k1", "TERM").code == 1  # stopped: nothing to signal
    assert ocivm("delete", "k1").code == 0
    # a created container (the guest held, its command not sent) dies of the signal, as runc's held process does
    r = ocivm("create", "-b", b, "--pid-file", tmp_path / "pid", "k2")
    assert r.code == 0, r
    pid = int((tmp_path / "pid").read_text())
    assert state(ocivm, "k2")["status"] == "created"
    assert ocivm("kill", "k2", "TERM").code == 0
    status = reap(pid, timeout=30)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    assert state(ocivm, "k2")["status"] == "stopped"
    assert qemu_processes_for(dirs["run"]) == []
    assert ocivm("delete", "k2").code == 0


@pytest.fixture
def engine_netns():
    """What an engine makes, in two network namespaces of the test's own: the container's ("inner", eth0 with
    10.123.46.6/24 and a default route via 10.123.46.1) and the far end of its veth ("outer", 10.123.46.1/24,
    where the engine's bridge would be). Removed after."""
    inner, outer = f"hedge-vmnet-in-{os.getpid()}", f"hedge-vmnet-out-{os.getpid()}"
    for name in (inner, outer):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in (["-n", outer, "link", "add", "v1", "type", "veth", "peer", "name", "eth0", "netns", inner],
                    ["-n", outer, "addr", "add", "10.123.46.1/24", "dev", "v1"],
                    ["-n", outer, "link", "set", "v1", "up"], ["-n", outer, "link", "set", "lo", "up"],
                    ["-n", inner, "addr", "add", "10.123.46.6/24", "dev", "eth0"],
                    ["-n", inner, "link", "set", "eth0", "up"],
                    ["-n", inner, "route", "add", "default", "via", "10.123.46.1"]):
            subprocess.run(["ip"] + cmd, check=True)
        yield inner, outer
    finally:
        for name in (inner, outer):
            subprocess.run(["ip", "netns", "delete", name], check=True)


def in_netns(name, *argv, **kw):
    return subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True, text=True, **kw)


def test_the_guest_nic_is_on_the_engines_network_namespace(ocivm, bundle, tmp_path, subreaper, dirs,  # noqa: F811
                                                         engine_netns):
    """linux.namespaces' network path (as podman and CNI give it): the guest's NIC has the veth's MAC, address and
    default route; a tap beside the veth and tc redirects carry the frames both ways; delete leaves the namespace
    as it was."""
    inner, outer = engine_netns
    mac = in_netns(inner, "cat", "/sys/class/net/eth0/address").stdout.strip()
    out = tmp_path / "out"
    b = bundle("sh", "-c", "ip -o -4 addr show eth0; cat /sys/class/net/eth0/address; ip route | grep default; "
                           "ping -c 1 -W 10 10.123.46.1 >/dev/null && echo reached; mkdir -p /tmp/www; "
                           "echo pong > /tmp/www/index.html; echo serving; exec httpd -f -p 8080 -h /tmp/www",
               **{"process.terminal": False,
                  "linux.namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts")] +
                                      [{"type": "network", "path": f"/run/netns/{inner}"}]})
    # a pod's sandbox (its pause container, as containerd's CRI marks it) leaves the pod's network to the
    # containers that serve on it: no tap, no redirect for its VM
    sandbox = tmp_path / "sandbox"
    make_bundle(sandbox, pathlib.Path(json.loads((b / "config.json").read_text())["root"]["path"]), ["sleep", "1000"],
                **{"process.terminal": False, "annotations": {"io.kubernetes.cri.container-type": "sandbox"},
                   "linux.namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts")] +
                                       [{"type": "network", "path": f"/run/netns/{inner}"}]})
    r = ocivm("create", "-b", sandbox, "--pid-file", tmp_path / "sandbox.pid", "pause1")
    assert r.code == 0, r
    sandbox_pid = int((tmp_path / "sandbox.pid").read_text())
    assert "hdtap0" not in in_netns(inner, "ip", "-o", "link").stdout
    r = ocivm("create", "-b", b, "--pid-file", tmp_path / "pid", "net1", stdout_path=out)
    assert r.code == 0, r
    pid = int((tmp_path / "pid").read_text())
    qdiscs = in_netns(inner, "tc", "qdisc", "show").stdout
    assert "ingress ffff: dev eth0" in qdiscs and "ingress ffff: dev hdtap0" in qdiscs, qdiscs
    assert ocivm("start", "net1").code == 0
    deadline = time.monotonic() + 60
    while "serving" not in out.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    lines = out.read_text().splitlines()
    assert "10.123.46.6/24" in lines[0], lines
    assert lines[1] == mac, lines
    assert "default via 10.123.46.1 dev eth0" in lines[2], lines
    assert lines[3:] == ["reached", "serving"], lines
    # from the far end of the veth (the engine's side) to the process in the guest
    got = in_netns(outer, "python3", "-c", "import urllib.request as u; "
                   "print(u.urlopen('http://10.123.46.6:8080/', timeout=20).read().decode(), end='')", timeout=60)
    assert got.returncode == 0 and got.stdout == "pong\n", got
    assert ocivm("kill", "net1", "KILL").code == 0
    reap(pid, timeout=30)
    assert ocivm("delete", "net1").code == 0
    assert ocivm("delete", "--force", "pause1").code == 0
    reap(sandbox_pid, timeout=30)
    assert qemu_processes_for(dirs["run"]) == []
    # as the engine left it: no tap, no qdisc of ours, the address on eth0
    assert in_netns(inner, "tc", "qdisc", "show", "dev", "eth0", "ingress").stdout == ""
    assert "hdtap0" not in in_netns(inner, "ip", "-o", "link").stdout
    assert "10.123.46.6/24" in in_netns(inner, "ip", "-o", "-4", "addr", "show", "eth0").stdout
    # an ingress qdisc the engine has on its interface is not ours to take (nor to remove)
    subprocess.run(["ip", "netns", "exec", inner, "tc", "qdisc", "add", "dev", "eth0", "ingress"], check=True)
    r = ocivm("create", "-b", b, "net2")
    assert r.code == 1, r
    assert (f"linux.namespaces[4].path: network namespace /run/netns/{inner}: an ingress qdisc on eth0 "
            "(has it one already?)") in r.err, r
    assert "ingress ffff:" in in_netns(inner, "tc", "qdisc", "show", "dev", "eth0", "ingress").stdout
    assert "hdtap0" not in in_netns(inner, "ip", "-o", "link").stdout
    assert not (ocivm.root / "net2").exists()


@pytest.mark.parametrize("change,env,message", [
    ({"mounts": [{"destination": "/data", "type": "bind", "source": "/tmp", "options": ["rbind"]}]},
     {"HEDGE_VIRTIOFSD": "/nonexistent/virtiofsd"},
     "mounts[0]: a bind of the directory /tmp at /data: no virtiofsd to share a host directory"),
    # a bound file is copied into the guest: up to 1 MiB each
    ({"mounts": [{"destination": "/x", "type": "bind", "source": "BIG", "options": ["rbind"]}]}, {},
     "mounts[0]: BIG is 1048577 bytes: hedge-oci-vm copies a bound file into the guest, up to 1048576 bytes"),
    ({"mounts": [{"destination": "/x", "type": "bind", "source": "/dev/null", "options": ["rbind"]}]}, {},
     "mounts[0]: a bind of /dev/null (neither a regular file nor a directory) is not supported by "
     "hedge-oci-vm"),
    ({"mounts": [{"destination": "/x", "type": "bind", "source": "/nonexistent", "options": ["rbind"]}]}, {},
     "mounts[0]: the source /nonexistent: No such file or directory"),
    # runc's rules for a terminal: create needs the console socket for it, and the socket needs a terminal
    ({"process.terminal": True}, {}, "process.terminal: a detached container needs --console-socket for its terminal"),
    ({}, {"HEDGE_VM_KERNEL_DIR": "/nonexistent"}, "guest kernel /nonexistent/vmlinuz: not found"),
    # QEMU itself starts and fails: the holder reports it, nothing of it is left
    ({}, {"HEDGE_VM_MACHINE": "no-such-machine"}, "vm: QEMU exited with status 1"),
    # a failing createRuntime hook (run once the guest is held at READY) fails create: holder and QEMU go
    ({"hooks": {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo no network >&2; exit 3"]}]}}, {},
     "hooks.createRuntime[0]: /bin/sh exited with status 3: no network"),
    # the hooks that run in the container's namespaces: a VM has none on the host
    ({"hooks": {"createContainer": [{"path": "/bin/true"}]}}, {},
     "hooks.createContainer: not supported by hedge-oci-vm (it runs in the container's namespaces"),
    ({"hooks": {"startContainer": [{"path": "/bin/true"}]}}, {},
     "hooks.startContainer: not supported by hedge-oci-vm"),
])
def test_a_bad_bundle_fails_create_and_leaves_nothing(ocivm, bundle, tmp_path, dirs, change, env, message):
    big = tmp_path / "big"
    big.write_bytes(b"x" * (1 << 20 | 1))
    change = json.loads(json.dumps(change).replace('"BIG"', json.dumps(str(big))))
    message = message.replace("BIG", str(big))
    b = bundle("true", **{"process.terminal": False, **change})
    r = ocivm("create", "-b", b, "--pid-file", tmp_path / "pid", "bad", env=env)
    assert r.code == 1, r
    assert r.err.startswith("hedge-oci-vm: create bad: "), r.err
    assert message in r.err, r.err
    assert not (ocivm.root / "bad").exists()
    assert not (tmp_path / "pid").exists()
    assert qemu_processes_for(dirs["run"]) == []
    assert not (dirs["run"] / "runs").exists() or list((dirs["run"] / "runs").iterdir()) == []


def host_hooks(tmp_path, phases):
    """Hooks that append "NAME STATE" to tmp_path/hook-log (the state from stdin); returns (hooks, entries())."""
    script = tmp_path / "hook.sh"
    script.write_text('#!/bin/sh\necho "$1 $(cat)" >> "$2"\n')
    script.chmod(0o755)
    log = tmp_path / "hook-log"
    hooks = {p: [{"path": str(script), "args": ["hook.sh", p, str(log)]}] for p in phases}

    def entries():
        if not log.exists():
            return []
        return [(line.split(" ", 1)[0], json.loads(line.split(" ", 1)[1])) for line in log.read_text().splitlines()]
    return hooks, entries


WANT_HOOK_STATUS = {"prestart": "created", "createRuntime": "creating", "poststart": "running", "poststop": "stopped"}


def test_host_hooks_run_once_with_the_state(ocivm, bundle, tmp_path, subreaper, dirs):  # noqa: F811
    """prestart and createRuntime at create (the guest held at READY, the holder's pid), poststart after
    start, poststop after delete: in hedge-oci-vm, each once, with the state of that moment on stdin."""
    hooks, entries = host_hooks(tmp_path, WANT_HOOK_STATUS)
    b = bundle("true", hooks=hooks, **{"process.terminal": False})
    r = ocivm("create", "-b", b, "hk")
    assert r.code == 0, r
    pid = state(ocivm, "hk")["pid"]
    assert [n for n, _ in entries()] == ["prestart", "createRuntime"]
    assert len(qemu_processes_for(dirs["run"])) == 1
    assert ocivm("start", "hk").code == 0
    status = reap(pid, timeout=60)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert ocivm("delete", "hk").code == 0
    got = entries()
    assert [n for n, _ in got] == ["prestart", "createRuntime", "poststart", "poststop"], got
    for name, doc in got:
        assert doc["id"] == "hk" and doc["bundle"] == str(b), (name, doc)
        assert doc["status"] == WANT_HOOK_STATUS[name], (name, doc)
        assert doc["pid"] == (0 if name == "poststop" else pid), (name, doc)


def test_host_hooks_of_a_foreground_run(ocivm, bundle, tmp_path):
    """run in the foreground: the same four hooks, the pid the run's own (the state's), poststop at the end."""
    hooks, entries = host_hooks(tmp_path, WANT_HOOK_STATUS)
    b = bundle("sh", "-c", "echo hi", hooks=hooks, **{"process.terminal": False})
    r = ocivm("run", "-b", b, "fg")
    assert (r.code, r.out) == (0, "hi\n"), r
    got = entries()
    assert [n for n, _ in got] == ["prestart", "createRuntime", "poststart", "poststop"], got
    pid = got[0][1]["pid"]
    assert pid > 0
    for name, doc in got:
        assert doc["id"] == "fg" and doc["status"] == WANT_HOOK_STATUS[name], (name, doc)
        assert doc["pid"] == (0 if name == "poststop" else pid), (name, doc)


def test_a_failing_create_hook_fails_a_foreground_run(ocivm, bundle, tmp_path):
    """run in the foreground: a failing createRuntime hook ends it before the command, naming the hook; the VM,
    cgroup and state go, and poststop does not run (nothing was created)."""
    hooks, entries = host_hooks(tmp_path, ["poststop"])
    hooks["createRuntime"] = [{"path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 4"]}]
    b = bundle("sh", "-c", "echo ran", hooks=hooks, **{"process.terminal": False})
    r = ocivm("run", "-b", b, "fgbad")
    assert r.code == 1, r
    assert "run fgbad: hooks.createRuntime[0]: /bin/sh exited with status 4: nope" in r.err, r
    assert "ran" not in r.out
    assert entries() == []
    assert not (ocivm.root / "fgbad").exists()


def test_exec_runs_more_processes_in_the_guest(ocivm, bundle, tmp_path, subreaper):  # noqa: F811
    assert os.readlink(HEDGE_OCI_VM) == "hedge-oci"
    r = ocivm("--version")
    assert r.code == 0 and r.out.startswith("hedge-oci-vm version "), r
    b = bundle("sleep", "1000", **{"process.terminal": False})
    assert ocivm("exec", "e1", "true").code == 1  # no such container
    r = ocivm("create", "-b", b, "--pid-file", tmp_path / "pid", "e1")
    assert r.code == 0, r
    pid = int((tmp_path / "pid").read_text())
    r = ocivm("exec", "e1", "true")
    assert r.code == 1 and "exec e1: " in r.err, r  # created, not running: the holder serves exec once started
    assert ocivm("start", "e1").code == 0
    # its streams, its status, and the guest's kernel (not the host's)
    r = ocivm("exec", "e1", "sh", "-c", "echo out; echo err >&2; uname -r; exit 3")
    assert r.code == 3, r
    assert r.out.splitlines()[0] == "out" and r.out.splitlines()[1] != os.uname().release
    assert r.err == "err\n"
    r = ocivm("exec", "--env", "A=b", "--cwd", "/tmp", "--user", "1000:1000", "e1", "sh", "-c", "echo $A; pwd; id -u")
    assert (r.code, r.out) == (0, "b\n/tmp\n1000\n"), r
    # more output than a message holds
    r = ocivm("exec", "e1", "sh", "-c", "head -c 300000 /dev/zero | wc -c")
    assert (r.code, r.out.strip()) == (0, "300000"), r
    r = ocivm("exec", "e1", "no-such-command")
    assert r.code == 127 and "no-such-command: command not found" in r.err, r
    # --detach: the pid file names a host process that ends with the guest's process
    r = ocivm("exec", "--detach", "--pid-file", tmp_path / "exec-pid", "e1", "sh", "-c", "exit 5")
    assert r.code == 0, r
    status = reap(int((tmp_path / "exec-pid").read_text()), timeout=30)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 5
    assert ocivm("delete", "--force", "e1").code == 0
    reap(pid)


def test_exec_gives_the_guest_process_its_stdin(ocivm, bundle, tmp_path, subreaper):  # noqa: F811
    b = bundle("sleep", "1000", **{"process.terminal": False})
    r = ocivm("create", "-b", b, "--pid-file", tmp_path / "pid", "i1")
    assert r.code == 0, r
    pid = int((tmp_path / "pid").read_text())
    assert ocivm("start", "i1").code == 0
    # `echo hello | hedge-oci-vm exec ID cat`
    r = ocivm("exec", "i1", "cat", input=b"hello\n")
    assert (r.code, r.out, r.err) == (0, "hello\n", ""), r
    # the end of stdin reaches the process (read returns 0), without input too
    r = ocivm("exec", "i1", "sh", "-c", "wc -c; echo done")
    assert (r.code, r.out.split()) == (0, ["0", "done"]), r
    # 1 MiB, many windows of EXEC_STDIN, arrives whole: through a pipe and from a file
    data = os.urandom(1 << 20)
    digest = hashlib.sha256(data).hexdigest()
    check = ["sh", "-c", "cat > /tmp/in; wc -c < /tmp/in; sha256sum /tmp/in; rm /tmp/in"]
    r = ocivm("exec", "i1", *check, input=data)
    assert r.code == 0 and r.out.split()[:2] == [str(len(data)), digest], r
    (tmp_path / "in").write_bytes(data)
    r = ocivm("exec", "i1", *check, stdin_path=tmp_path / "in")
    assert r.code == 0 and r.out.split()[:2] == [str(len(data)), digest], r
    # a process that does not read its stdin holds up only its own: another exec runs meanwhile, and a
    # process that closes its stdin early ends with its status
    slow = {}
    t = threading.Thread(target=lambda: slow.update(r=ocivm("exec", "i1", "sleep", "6", input=data)))
    t.start()
    time.sleep(1)
    started = time.monotonic()
    r = ocivm("exec", "i1", "echo", "beside")
    assert (r.code, r.out) == (0, "beside\n"), r
    assert time.monotonic() - started < 5 and t.is_alive()
    t.join(timeout=60)
    assert slow["r"].code == 0, slow["r"]
    r = ocivm("exec", "i1", "sh", "-c", "head -c 10 >/dev/null; exec <&-; exit 4", input=data)
    assert r.code == 4, r
    assert ocivm("delete", "--force", "i1").code == 0
    reap(pid)


def test_exec_with_a_terminal_in_the_guest(ocivm, bundle, tmp_path, subreaper):  # noqa: F811
    b = bundle("sleep", "1000", **{"process.terminal": False})
    r = ocivm("create", "-b", b, "--pid-file", tmp_path / "pid", "t1")
    assert r.code == 0, r
    pid = int((tmp_path / "pid").read_text())
    assert ocivm("start", "t1").code == 0
    # conmon's way: the master reaches the console socket; the process runs on a pty of the guest's (its
    # stdio and controlling terminal), which does the echo and \n -> \r\n; a new size set on the master
    # reaches it
    srv = console_socket(tmp_path / "exec.sock")
    r = ocivm("exec", "--tty", "--console-socket", tmp_path / "exec.sock", "--detach", "--pid-file",
              tmp_path / "exec.pid", "t1", "sh", "-c",
              "tty; [ -t 0 ] && echo ready; read line; stty size; echo \"got $line\"; exit 6")
    assert r.code == 0, r
    master, name = receive_master(srv)
    assert name == b"/dev/ptmx"
    out = b""
    deadline = time.monotonic() + 30
    while not out.endswith(b"ready\r\n") and time.monotonic() < deadline:
        out += os.read(master, 4096)
    assert out == b"/dev/pts/0\r\nready\r\n", out
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    time.sleep(2)  # the size goes through the exec's host process, the keys through the holder's relay
    os.write(master, b"hello\n")
    assert read_terminal(master) == "hello\n33 111\ngot hello\n"
    status = reap(int((tmp_path / "exec.pid").read_text()), timeout=30)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 6
    # in the foreground without a console socket, exec relays the terminal to its own stdio, as runc does
    r = ocivm("exec", "-t", "t1", "sh", "-c", "tty; exit 5")
    assert r.code == 5 and r.out.replace("\r", "") == "/dev/pts/0\n", r
    r = ocivm("exec", "--console-socket", tmp_path / "exec.sock", "t1", "true")
    assert r.code == 1 and "needs --tty" in r.err, r
    r = ocivm("exec", "-t", "--detach", "t1", "true")
    assert r.code == 1 and "a detached process needs --console-socket" in r.err, r
    assert ocivm("delete", "--force", "t1").code == 0
    reap(pid)


def test_the_workload_on_a_terminal(ocivm, bundle, tmp_path, dirs, guest_kernel, subreaper):  # noqa: F811
    """process.terminal with --console-socket (conmon's way): the master of a host pty reaches the socket, the
    workload runs on a pty of the guest's (stdio, controlling terminal) sized by process.consoleSize; keys and
    new sizes reach it, its exit code is the holder's."""
    b = bundle("sh", "-c", "tty; stty size; [ -t 0 ] && echo ready; read line; stty size; echo \"got $line\"; exit 3",
               **{"process.terminal": True, "process.consoleSize": {"height": 33, "width": 111}})
    srv = console_socket(tmp_path / "console.sock")
    r = ocivm("create", "-b", b, "--console-socket", tmp_path / "console.sock", "--pid-file", tmp_path / "pid", "w1")
    assert r.code == 0, r
    master, name = receive_master(srv)
    assert name == b"/dev/ptmx"
    pid = int((tmp_path / "pid").read_text())
    assert ocivm("start", "w1").code == 0
    out = b""
    deadline = time.monotonic() + 30
    while not out.endswith(b"ready\r\n") and time.monotonic() < deadline:
        out += os.read(master, 4096)
    assert out == b"/dev/pts/0\r\n33 111\r\nready\r\n", out
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    time.sleep(2)  # the size goes as SIGWINCH to the holder, then RESIZE; the keys through the relay
    os.write(master, b"hello\n")
    assert read_terminal(master) == "hello\n40 120\ngot hello\n"
    status = reap(pid, timeout=30)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3
    assert state(ocivm, "w1")["status"] == "stopped"
    assert ocivm("delete", "w1").code == 0
    # in the foreground without a socket: run relays its own stdio (pipes here) to the guest's pty
    b = bundle("sh", "-c", "tty; read line; echo \"got $line\"; exit 5", **{"process.terminal": True})
    r = ocivm("run", "-b", b, "w2", input=b"typed\n")
    assert r.code == 5, r
    lines = r.out.replace("\r", "").splitlines()  # the guest's pty echoes the input whenever it comes
    assert sorted(lines) == ["/dev/pts/0", "got typed", "typed"] and lines[-1] == "got typed", r
    # in the foreground on a terminal of its own: that terminal goes raw while the guest's pty does the line
    # discipline, its size is the guest pty's, and its modes come back at the end
    b = bundle("sh", "-c", "tty; stty size; exit 6", **{"process.terminal": True})
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 25, 90, 0, 0))
    modes = termios.tcgetattr(slave)
    env = {**os.environ, **SANITIZER_ENV, "HEDGE_STATE_DIR": str(dirs["state"]), "HEDGE_RUN_DIR": str(dirs["run"]),
           "HEDGE_CGROUP_PARENT": CGROUP_PARENT, "HEDGE_VM_KERNEL_DIR": str(guest_kernel),
           "HEDGE_OCI_VM_ACCEL": "tcg"}
    p = subprocess.Popen([str(HEDGE_OCI_VM), "--root", str(ocivm.root), "run", "-b", str(b), "w4"], stdin=slave,
                         stdout=slave, stderr=slave, env=env)
    assert p.wait(timeout=120) == 6
    assert termios.tcgetattr(slave) == modes
    os.close(slave)
    out = read_terminal(master)
    assert out.replace("\r", "") == "/dev/pts/0\n25 90\n", out
    # --console-socket needs process.terminal
    srv2 = console_socket(tmp_path / "c2.sock")
    b = bundle("true", **{"process.terminal": False})
    r = ocivm("create", "-b", b, "--console-socket", tmp_path / "c2.sock", "w3")
    assert r.code == 1 and "--console-socket: the config has no terminal (process.terminal is false)" in r.err, r
    srv2.close()
    assert not (ocivm.root / "w3").exists()


def test_signals_reach_an_exec_d_process(ocivm, bundle, tmp_path, dirs, subreaper):  # noqa: F811
    b = bundle("sleep", "1000", **{"process.terminal": False})
    r = ocivm("create", "-b", b, "--pid-file", tmp_path / "pid", "s1")
    assert r.code == 0, r
    pid = int((tmp_path / "pid").read_text())
    assert ocivm("start", "s1").code == 0
    # SIGTERM to the exec's pid (what podman kill / ctr task kill --exec-id do) reaches the guest process:
    # its trap runs, its output and its status come back
    out = tmp_path / "exec.out"
    r = ocivm("exec", "--detach", "--pid-file", tmp_path / "exec.pid", "s1", "sh", "-c",
              "trap 'echo got-term; exit 9' TERM; echo armed; while :; do sleep 0.2; done", stdout_path=out)
    assert r.code == 0, r
    deadline = time.monotonic() + 30
    while "armed" not in out.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert out.read_text() == "armed\n"
    exec_pid = int((tmp_path / "exec.pid").read_text())
    os.kill(exec_pid, signal.SIGTERM)
    status = reap(exec_pid, timeout=30)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 9, status
    assert out.read_text() == "armed\ngot-term\n"
    # SIGUSR1 without a trap ends it as the signal would: 128+10
    r = ocivm("exec", "--detach", "--pid-file", tmp_path / "exec.pid", "s1", "sleep", "1000")
    assert r.code == 0, r
    exec_pid = int((tmp_path / "exec.pid").read_text())
    time.sleep(3)
    os.kill(exec_pid, signal.SIGUSR1)
    status = reap(exec_pid, timeout=30)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 128 + signal.SIGUSR1, status
    # SIGKILL cannot be relayed: the holder sees the host process's connection end and kills the guest one
    r = ocivm("exec", "--detach", "--pid-file", tmp_path / "exec.pid", "s1", "sh", "-c",
              "echo $$ > /tmp/victim; exec sleep 1000")
    assert r.code == 0, r
    exec_pid = int((tmp_path / "exec.pid").read_text())
    r = ocivm("exec", "s1", "sh", "-c",
              "while [ ! -s /tmp/victim ]; do sleep 0.2; done; kill -0 $(cat /tmp/victim) && echo alive")
    assert (r.code, r.out) == (0, "alive\n"), r
    os.kill(exec_pid, signal.SIGKILL)
    status = reap(exec_pid, timeout=30)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    r = ocivm("exec", "s1", "sh", "-c", "for i in $(seq 50); do kill -0 $(cat /tmp/victim) 2>/dev/null || "
              "{ echo gone; exit 0; }; sleep 0.2; done; exit 1")
    assert (r.code, r.out) == (0, "gone\n"), r
    # the foreground exec forwards what it gets to its host process, which relays it
    p = subprocess.Popen([str(HEDGE_OCI_VM), "--root", str(ocivm.root), "exec", "s1", "sh", "-c",
                          "trap 'echo got-int; exit 7' INT; echo armed; while :; do sleep 0.2; done"],
                         stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                         env={**os.environ, **SANITIZER_ENV, "HEDGE_STATE_DIR": str(dirs["state"]),
                              "HEDGE_RUN_DIR": str(dirs["run"]), "HEDGE_CGROUP_PARENT": CGROUP_PARENT})
    assert p.stdout.readline() == "armed\n"
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=30) == 7 and p.stdout.read() == "got-int\n"
    assert ocivm("delete", "--force", "s1").code == 0
    reap(pid)


def test_podman_runs_hedge_oci_vm(podman, guest_kernel, dirs, tmp_path):  # noqa: F811
    # podman hands a runtime a clean environment: a wrapper named for the runtime gives ours the test's dirs
    wrapper = tmp_path / "hedge-oci-vm-test"
    wrapper.write_text("#!/bin/bash\n"
                       f"export HEDGE_VM_KERNEL_DIR={guest_kernel} HEDGE_STATE_DIR={dirs['state']} "
                       f"HEDGE_RUN_DIR={dirs['run']} HEDGE_OCI_VM_ACCEL=tcg\n"
                       f'exec -a hedge-oci-vm {BUILD / "hedge-oci"} "$@"\n')
    wrapper.chmod(0o755)
    cid = tmp_path / "cid"
    r = podman("--runtime", wrapper, "run", "--rm", "--network", "none", "--cidfile", cid,
               "localhost/hedge-busybox:test", "echo", "hi", timeout=180)
    assert (r.code, r.out) == (0, "hi\n"), r
    # podman passes no --root: hedge-oci-vm's own default root, empty again
    assert not os.path.exists(f"/run/hedge-oci-vm/{cid.read_text().strip()}")
    cid.unlink()
    r = podman("--runtime", wrapper, "run", "--rm", "--network", "none", "localhost/hedge-busybox:test",
               "sh", "-c", "uname -r; exit 4", timeout=180)
    assert r.code == 4, r
    assert r.out.strip() == (guest_kernel / "release").read_text().strip()
    # detached: logs, exec refused, stop (SIGTERM forwarded to the guest), the exit code, rm
    r = podman("--runtime", wrapper, "run", "-d", "--name", "long", "--network", "none",
               "localhost/hedge-busybox:test", "sh", "-c",
               "trap 'echo bye; exit 9' TERM; echo up; while :; do sleep 0.2; done", timeout=180)
    assert r.code == 0, r
    deadline = time.monotonic() + 60
    while "up" not in podman("--runtime", wrapper, "logs", "long").out and time.monotonic() < deadline:
        time.sleep(0.2)
    r = podman("--runtime", wrapper, "exec", "-e", "A=b", "-w", "/tmp", "long", "sh", "-c", "echo $A; pwd; exit 3")
    assert (r.code, r.out) == (3, "b\n/tmp\n"), r
    r = podman("--runtime", wrapper, "exec", "long", "nonexistent")
    assert r.code == 127, r
    r = podman("--runtime", wrapper, "exec", "-i", "long", "cat", input="hello\n")
    assert (r.code, r.out) == (0, "hello\n"), r
    r = podman("--runtime", wrapper, "exec", "-t", "long", "sh", "-c", "tty; exit 2")
    assert r.code == 2 and r.out.replace("\r", "") == "/dev/pts/0\n", r
    # pause freezes the whole VM (QEMU's cgroup), unpause thaws it
    r = podman("--runtime", wrapper, "pause", "long")
    assert r.code == 0, r
    assert podman("--runtime", wrapper, "inspect", "--format", "{{.State.Status}}", "long").out == "paused\n"
    r = podman("--runtime", wrapper, "unpause", "long")
    assert r.code == 0, r
    assert podman("--runtime", wrapper, "inspect", "--format", "{{.State.Status}}", "long").out == "running\n"
    r = podman("--runtime", wrapper, "exec", "long", "echo", "thawed")
    assert (r.code, r.out) == (0, "thawed\n"), r
    # update: QEMU's cgroup, raised past its memory+swap limit (the v1 kernel wants memsw first then)
    r = podman("--runtime", wrapper, "update", "--memory", "512m", "long")
    assert r.code == 0, r.err
    r = podman("--runtime", wrapper, "stop", "-t", "20", "long")
    assert r.code == 0, r
    assert podman("--runtime", wrapper, "logs", "long").out == "up\nbye\n"
    assert podman("--runtime", wrapper, "inspect", "--format", "{{.State.ExitCode}}", "long").out == "9\n"
    assert podman("--runtime", wrapper, "rm", "long").code == 0
    # a terminal (podman -t): conmon's console socket gets the host pty's master, the process runs on a guest pty
    r = podman("--runtime", wrapper, "run", "--rm", "-t", "--network", "none", "localhost/hedge-busybox:test",
               "sh", "-c", "tty; exit 5", timeout=180)
    assert r.code == 5 and r.out.replace("\r", "") == "/dev/pts/0\n", r
    # -it: what podman's stdin gives reaches the shell through the terminal (echoed by the guest's pty)
    r = podman("--runtime", wrapper, "run", "--rm", "-i", "-t", "--network", "none", "localhost/hedge-busybox:test",
               "sh", "-c", "read line; echo \"got $line\"; exit 4", input="hello\n", timeout=180)
    assert r.code == 4 and "got hello" in r.out.replace("\r", ""), r
    assert qemu_processes_for(dirs["run"]) == []


def vm_wrapper(path, guest_kernel, dirs):  # noqa: F811
    """podman hands a runtime a clean environment: a wrapper named for the runtime gives ours the test's dirs."""
    path.write_text("#!/bin/bash\n"
                    f"export HEDGE_VM_KERNEL_DIR={guest_kernel} HEDGE_STATE_DIR={dirs['state']} "
                    f"HEDGE_RUN_DIR={dirs['run']} HEDGE_OCI_VM_ACCEL=tcg\n"
                    f'exec -a hedge-oci-vm {BUILD / "hedge-oci"} "$@"\n')
    path.chmod(0o755)
    return path


def test_podman_files_reach_the_guest(podman, guest_kernel, dirs, tmp_path):  # noqa: F811
    """The files podman writes per container and binds in (/etc/hosts, /etc/hostname, /run/.containerenv) are
    the guest's; -v HOSTDIR:/data is shared (virtiofs) both ways; without a virtiofsd the error names the
    mount."""
    wrapper = vm_wrapper(tmp_path / "hedge-oci-vm-test", guest_kernel, dirs)
    r = podman("--runtime", wrapper, "run", "--rm", "--network", "none", "--hostname", "vmhost",
               "--add-host", "db.example:10.9.8.7", "localhost/hedge-busybox:test", "sh", "-c",
               "echo \"$(cat /etc/hostname)\"; hostname; grep db.example /etc/hosts; "
               "test -f /run/.containerenv && echo env",
               timeout=180)
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert lines[:2] == ["vmhost", "vmhost"], r
    assert lines[2].split() == ["10.9.8.7", "db.example"], r
    assert lines[3] == "env", r
    # -v: a host directory through virtiofs, both ways
    data = tmp_path / "data"
    data.mkdir()
    (data / "in").write_text("host file\n")
    r = podman("--runtime", wrapper, "run", "--rm", "--network", "none", "-v", f"{data}:/data",
               "localhost/hedge-busybox:test", "sh", "-c", "cat /data/in; echo guest file > /data/out",
               timeout=180)
    assert (r.code, r.out) == (0, "host file\n"), r
    assert (data / "out").read_text() == "guest file\n"
    # without a virtiofsd the error names the mount
    wrapper.write_text(wrapper.read_text().replace("export ", "export HEDGE_VIRTIOFSD=/nonexistent "))
    r = podman("--runtime", wrapper, "run", "--rm", "--network", "none", "-v", f"{data}:/data",
               "localhost/hedge-busybox:test", "true", timeout=180)
    assert r.code != 0, r
    assert re.search(r"mounts\[\d+\]: a bind of the directory .* at /data: no virtiofsd", r.err), r
    assert qemu_processes_for(dirs["run"]) == []


def test_podman_publishes_a_port_of_the_guest(guest_kernel, dirs, tmp_path, busybox_rootfs):  # noqa: F811
    """podman's network (CNI bridge) with -p: the host port reaches httpd in the VM; the guest reaches the
    network's gateway; nothing of ours is left after rm -f. podman runs inside a network namespace this test
    makes (its bridge, addresses and firewall rules stay there), as test_oci.py's network test does; the host
    port is fetched on that namespace's loopback."""
    wrapper = vm_wrapper(tmp_path / "hedge-oci-vm-test", guest_kernel, dirs)
    with podman_in_netns(tmp_path, busybox_rootfs, "hedge-ocivm-podnet", "hedgevmnet", wrapper) as (podman, host):
        r = podman("network", "create", "--subnet", "10.89.77.0/24", "hedgevmnet")
        assert r.code == 0, r
        r = podman("--runtime", wrapper, "run", "-d", "--name", "web", "--network", "hedgevmnet",
                   "-p", "127.0.0.1:18080:8080", "localhost/hedge-busybox:test", "sh", "-c",
                   "mkdir -p /tmp/www && echo pong > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
                   timeout=180)
        assert r.code == 0, r
        r = podman("inspect", "--format", "{{.NetworkSettings.Networks.hedgevmnet.IPAddress}}", "web")
        ip = r.out.strip()
        assert r.code == 0 and ip.startswith("10.89.77."), r
        got = fetch_in_netns(host, "http://127.0.0.1:18080/")
        assert got.stdout == "pong\n", got
        r = podman("--runtime", wrapper, "exec", "web", "sh", "-c",
                   "ip -o -4 addr show eth0; ping -c 1 -W 10 10.89.77.1 >/dev/null && echo reached")
        assert r.code == 0 and f"{ip}/24" in r.out and r.out.endswith("reached\n"), r
        cid = podman("inspect", "--format", "{{.Id}}", "web").out.strip()
        assert podman("--runtime", wrapper, "rm", "-f", "-t", "0", "web").code == 0
        assert qemu_processes_for(dirs["run"]) == []
        assert cid and not os.path.exists(f"/run/hedge-oci-vm/{cid}")


@pytest.fixture
def vm_env(monkeypatch, guest_kernel, dirs):  # noqa: F811
    """containerd hands its environment down to the shim and the runtime: the test's dirs and TCG."""
    for key, value in {"HEDGE_VM_KERNEL_DIR": guest_kernel, "HEDGE_STATE_DIR": dirs["state"],
                       "HEDGE_RUN_DIR": dirs["run"], "HEDGE_OCI_VM_ACCEL": "tcg"}.items():
        monkeypatch.setenv(key, str(value))


def test_ctr_runs_hedge_oci_vm(vm_env, containerd, dirs):  # noqa: F811
    ctr = containerd
    via = ["--runc-binary", HEDGE_OCI_VM, "--runc-root", ctr.base / "hedge-oci-vm-root"]
    r = ctr("run", "--rm", *via, IMAGE, "v-exit", "sh", "-c", "echo out; echo err >&2; uname -r; exit 3",
            timeout=180)
    assert r.returncode == 3, r
    out, release = r.stdout.splitlines()
    assert out == "out" and "err" in r.stderr, r
    assert release != os.uname().release
    # detached, then `ctr task kill` (SIGTERM through the holder into the guest) and the exit status
    r = ctr("run", "-d", *via, IMAGE, "v-kill", "sh", "-c", "trap 'exit 6' TERM; while :; do sleep 0.2; done",
            timeout=180)
    assert r.returncode == 0, r
    ctr_wait_status(ctr, "v-kill", "RUNNING", timeout=60)
    r = ctr("task", "exec", "--exec-id", "x1", "v-kill", "sh", "-c", "echo in the guest; exit 4", timeout=60)
    assert (r.returncode, r.stdout) == (4, "in the guest\n"), r
    # `ctr task kill --exec-id`: the signal to the exec's host process reaches the guest process's trap
    p = subprocess.Popen(["ctr", "--address", ctr.address, "--namespace", ctr.namespace, "task", "exec", "--exec-id",
                          "x2", "v-kill", "sh", "-c", "trap 'echo got-term; exit 8' TERM; echo armed; "
                          "while :; do sleep 0.2; done"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    assert p.stdout.readline() == "armed\n"
    r = ctr("task", "kill", "--exec-id", "x2", "v-kill")
    assert r.returncode == 0, r
    assert p.wait(timeout=60) == 8 and p.stdout.read() == "got-term\n"
    time.sleep(1)  # the trap is set once the shell runs in the guest
    assert ctr("task", "kill", "v-kill").returncode == 0
    ctr_wait_status(ctr, "v-kill", "STOPPED", timeout=60)
    r = ctr("task", "delete", "v-kill")
    assert r.returncode == 0 and "non-zero exit code 6\"" in r.stderr, r
    assert ctr("container", "delete", "v-kill").returncode == 0
    # `ctr run -t` on a terminal of the test's: the shim's console socket gets the host pty's master, the process
    # runs on the guest's pty, its exit code is ctr's
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    p = subprocess.Popen(["ctr", "--address", ctr.address, "--namespace", ctr.namespace, "run", "--rm", "-t",
                          *map(str, via), IMAGE, "v-tty", "sh", "-c", "tty; stty size; exit 5"],
                         stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    assert p.wait(timeout=180) == 5
    out = read_terminal(master).replace("\r", "")  # the guest's pty's \r\n, then the test's pty's
    assert "/dev/pts/0\n30 100\n" in out, out
    assert qemu_processes_for(dirs["run"]) == []
