"""hedge-oci driven by containerd (Debian's 1.6) through the io.containerd.runc.v2 shim.

A private containerd (its own root, state, socket and config under a tmp dir, no CRI plugin) imports an OCI
archive of a busybox rootfs; `ctr run --runc-binary build/hedge-oci` then runs tasks through the runc v2 shim,
which calls hedge-oci with runc's command line (create/start/state/kill/delete, --log-format json). Checked:
output and exit codes reach ctr, `ctr task kill` of a running task (TERM to a trap, then KILL), the state
lands under --runc-root in hedge-oci's own layout, and nothing is left behind (no task, shim, mount, cgroup);
and a task joining another's network, ipc and uts namespaces by path (`ctr run --with-ns`).
"""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import BUILD, SANITIZER_ENV

HEDGE_OCI = BUILD / "hedge-oci"
IMAGE = "localhost/hedge-busybox:latest"

CONFIG = """version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]
[grpc]
  address = "{base}/containerd.sock"
[ttrpc]
  address = "{base}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
"""


def mounts_below(path):
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path) + "/")]


def pids_mentioning(text):
    """Processes whose command line names text (our containerd and its shims: they carry our socket path)."""
    found = []
    for p in pathlib.Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if text.encode() in (p / "cmdline").read_bytes():
                    found.append(int(p.name))
            except OSError:
                pass
    return found


@pytest.fixture
def containerd(dirs, busybox_image_tar):
    """A private containerd with the busybox archive imported; yields ctr(*args) -> CompletedProcess."""
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd is not installed (deps/oci.txt)")
    base = pathlib.Path(tempfile.mkdtemp(prefix="hedge-ctrd-", dir="/tmp"))  # socket paths: keep it short
    namespace = f"hedge-oci-{os.getpid()}"
    (base / "config.toml").write_text(CONFIG.format(base=base))
    env = dict(os.environ)
    env.update(SANITIZER_ENV)
    env["HEDGE_RUN_DIR"] = str(dirs["run"])  # reaches hedge-oci through the shim's environment
    log = open(base / "containerd.log", "w")
    daemon = subprocess.Popen(["containerd", "--config", str(base / "config.toml")], stdin=subprocess.DEVNULL,
                              stdout=log, stderr=log, env=env)
    address = str(base / "containerd.sock")

    def ctr(*args, timeout=20):
        return subprocess.run(["ctr", "--address", address, "--namespace", namespace] + [str(a) for a in args],
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    ctr.base, ctr.namespace, ctr.address = base, namespace, address
    try:
        deadline = time.monotonic() + 10
        while ctr("version").returncode != 0:
            assert daemon.poll() is None, (base / "containerd.log").read_text()
            assert time.monotonic() < deadline, "containerd did not come up"
            time.sleep(0.05)
        r = ctr("image", "import", "--base-name", "localhost/hedge-busybox", busybox_image_tar, timeout=60)
        assert r.returncode == 0, r.stderr
        yield ctr
    finally:
        # delete what a failed test left, then stop containerd; its shims exit with their tasks
        for line in ctr("task", "ls", "-q").stdout.split():
            ctr("task", "kill", "-s", "KILL", line)
            ctr("task", "delete", "--force", line)
        for line in ctr("container", "ls", "-q").stdout.split():
            ctr("container", "delete", line)
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        left_pids = [p for p in pids_mentioning(address) if p != os.getpid()]
        for pid in left_pids:
            os.kill(pid, signal.SIGKILL)
        left_mounts = mounts_below(base)
        for m in reversed(left_mounts):
            subprocess.run(["umount", "-l", m], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
        left_cgroups = sorted(str(p) for p in pathlib.Path("/sys/fs/cgroup").glob(f"*/{namespace}/*") if p.is_dir())
        for d in [pathlib.Path("/sys/fs/cgroup") / namespace] + list(pathlib.Path("/sys/fs/cgroup").glob(
                f"*/{namespace}")):
            if d.is_dir():
                d.rmdir()  # the namespace's parent cgroup, empty once its containers are gone
        assert left_pids == [], f"containerd or shims left running: {left_pids}"
        assert left_mounts == [], f"mounts left under containerd's root: {left_mounts}"
        assert left_cgroups == [], f"container cgroups left behind: {left_cgroups}"


def wait_status(ctr, task, status, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in ctr("task", "ls").stdout.splitlines()[1:]:
            words = line.split()
            if words and words[0] == task and words[2] == status:
                return int(words[1])
        time.sleep(0.02)
    raise AssertionError(f"task {task} not {status}: {ctr('task', 'ls').stdout}")


def test_ctr_runs_hedge_oci(containerd, dirs):
    ctr = containerd
    runc_root = ctr.base / "hedge-oci-root"
    via = ["--runc-binary", HEDGE_OCI, "--runc-root", runc_root]

    r = ctr("run", "--rm", *via, IMAGE, "t-echo", "echo", "hi")
    assert (r.returncode, r.stdout) == (0, "hi\n"), r
    r = ctr("run", "--rm", *via, IMAGE, "t-exit", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (r.returncode, r.stdout) == (3, "out\n"), r
    assert "err" in r.stderr, r

    # a running task: TERM to a shell that traps it (exit 5), seen by the foreground `ctr run`
    fg = subprocess.Popen(["ctr", "--address", ctr.address, "--namespace", ctr.namespace, "run", "--rm",
                           *map(str, via), IMAGE, "t-term", "sh", "-c",
                           "trap 'exit 5' TERM; echo ready; while :; do sleep 0.05; done"],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pid = wait_status(ctr, "t-term", "RUNNING")
        # the shim called hedge-oci: its state is under --runc-root/<namespace>, and hedge's run dir (the
        # HEDGE_RUN_DIR containerd passed down through the shim) holds the container's run
        r = subprocess.run([HEDGE_OCI, "--root", runc_root / ctr.namespace, "state", "t-term"], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        state = json.loads(r.stdout)
        assert (state["pid"], state["status"]) == (pid, "running"), state
        assert list((dirs["run"] / "runs").iterdir()), "hedge's run dir of the container"
        assert pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sh\0")
        r = ctr("task", "kill", "t-term")
        assert r.returncode == 0, r
        out, err = fg.communicate(timeout=10)
        assert fg.returncode == 5 and out.startswith("ready"), (fg.returncode, out, err)
    finally:
        if fg.poll() is None:
            fg.kill()
            fg.wait()

    # detached: KILL, then the exit status, task delete and container delete
    r = ctr("run", "-d", *via, IMAGE, "t-kill", "sleep", "1000")
    assert r.returncode == 0, r
    wait_status(ctr, "t-kill", "RUNNING")
    r = ctr("task", "delete", "t-kill")
    assert r.returncode != 0 and "must be stopped" in r.stderr, r
    r = ctr("task", "kill", "-s", "KILL", "t-kill")
    assert r.returncode == 0, r
    wait_status(ctr, "t-kill", "STOPPED")
    r = ctr("task", "delete", "t-kill")
    assert r.returncode == 0 and "137" in r.stderr, r
    r = ctr("container", "delete", "t-kill")
    assert r.returncode == 0, r
    assert ctr("task", "ls", "-q").stdout == "" and ctr("container", "ls", "-q").stdout == ""
    assert list((runc_root / ctr.namespace).iterdir()) == [], "hedge-oci's state is gone after delete"


def test_ctr_joins_namespaces_by_path(containerd):
    """Pod style through the shim: task B joins task A's network, ipc and uts namespaces (`ctr run --with-ns`, the
    paths containerd's CRI gives a pod's containers) and reaches A's httpd on 127.0.0.1."""
    ctr = containerd
    via = ["--runc-binary", HEDGE_OCI, "--runc-root", ctr.base / "hedge-oci-root"]
    r = ctr("run", "-d", *via, IMAGE, "t-pod-a", "sh", "-c",
            "hostname pod-a; mkdir -p /tmp/www && echo pong > /tmp/www/index.html && "
            "exec httpd -f -p 127.0.0.1:8080 -h /tmp/www")
    assert r.returncode == 0, r
    try:
        pid = wait_status(ctr, "t-pod-a", "RUNNING")
        joins = [a for t, f in [("network", "net"), ("ipc", "ipc"), ("uts", "uts")]
                 for a in ["--with-ns", f"{t}:/proc/{pid}/ns/{f}"]]
        r = ctr("run", "--rm", *via, *joins, IMAGE, "t-pod-b", "sh", "-c",
                "for i in $(seq 50); do wget -qO- http://127.0.0.1:8080/ && break; sleep 0.1; done; "
                "readlink /proc/self/ns/net")
        assert r.returncode == 0, r
        lines = r.stdout.splitlines()
        assert lines == ["pong", os.readlink(f"/proc/{pid}/ns/net")], r
    finally:
        ctr("task", "kill", "-s", "KILL", "t-pod-a")
        wait_status(ctr, "t-pod-a", "STOPPED")
        ctr("task", "delete", "t-pod-a")
        ctr("container", "delete", "t-pod-a")
