"""The device allow-list of `hedge run --isolation container` (src/cgroup/devices.c).

A container keeps CAP_MKNOD (Docker's default set), so without a device cgroup it could make a node for
any host device and open it. Every container gets Docker's default list: mknod of any node is allowed,
opening one only for /dev/null, zero, full, random, urandom, tty, console, ptmx and the ptys.

Each test runs in three cgroup modes: as detected (this host: hybrid, so the v1 devices controller), v1
forced, and v2 forced. Forcing v2 on a hybrid host puts the group in the unified hierarchy at
/sys/fs/cgroup/unified, and the kernel asks BPF_CGROUP_DEVICE programs of a task's cgroup in that
hierarchy whatever the v1 controllers say, so the eBPF path is enforced for real here. What a hybrid host
cannot show is a pure v2 host (cgroup2 at /sys/fs/cgroup itself); hedge's code differs there only in the
root directory it works under.
"""
import os
import pathlib
import stat
import subprocess
import time

import pytest

from conftest import CGROUP_PARENT

MODES = ["detected", "v1", "v2"]


def _have_v2():
    return os.path.exists("/sys/fs/cgroup/cgroup.controllers") or os.path.exists("/sys/fs/cgroup/unified/cgroup.procs")


def _mode_env(mode):
    if mode == "v2" and not _have_v2():
        pytest.fail("no cgroup2 hierarchy on this host: the v2 path cannot run")
    if mode == "v1" and not os.path.isdir("/sys/fs/cgroup/devices"):
        pytest.fail("no v1 devices hierarchy on this host: the v1 path cannot run")
    return {} if mode == "detected" else {"HEDGE_CGROUP_MODE": mode}


def _host_block_device():
    """(major, minor) of a loop device of this host: a block device root on the host can open (the
    sandbox this suite runs in may keep even root from opening its disk)."""
    for dev in sorted(pathlib.Path("/sys/block").glob("loop*/dev")):
        major, minor = dev.read_text().strip().split(":")
        return int(major), int(minor)
    pytest.fail("no loop block device on this host (modprobe loop)")


def _host_can_open(tmp_path, kind, major, minor):
    """The test's premise: the host (no device cgroup) opens a node with these numbers."""
    node = tmp_path / f"host-{kind}-{major}-{minor}"
    os.mknod(node, 0o600 | (stat.S_IFCHR if kind == "c" else stat.S_IFBLK), os.makedev(major, minor))
    try:
        os.close(os.open(node, os.O_RDONLY))
        return True
    except OSError:
        return False
    finally:
        node.unlink()


@pytest.fixture
def ctr(hedge, busybox_rootfs, tmp_path):
    def run(script, mode="detected", env=None):
        e = _mode_env(mode)
        e.update(env or {})
        return hedge("run", "--isolation", "container", "--rootfs", busybox_rootfs, "--", "sh", "-c", script,
                     env=e)
    return run


# A node made inside, then opened: "NAME: mknod=RC <open result>".
PROBE = ('probe() { mknod /dev/$1 $2 $3 $4; m=$?; echo "$1: mknod=$m $( (exec 3</dev/$1 && echo opened) 2>&1 )"; '
         'rm -f /dev/$1; }; ')


@pytest.mark.parametrize("mode", MODES)
def test_host_device_node_made_inside_cannot_be_opened(ctr, tmp_path, mode):
    disk = _host_block_device()
    assert _host_can_open(tmp_path, "c", 10, 200), "the host opens /dev/net/tun's numbers"
    assert _host_can_open(tmp_path, "b", *disk), "the host opens a loop device's numbers"
    r = ctr(PROBE + f"probe tun c 10 200; probe mem c 1 1; probe loop b {disk[0]} {disk[1]}; "
            "probe kmsg c 1 11", mode)
    assert r.code == 0, r
    lines = dict(l.split(": ", 1) for l in r.out.splitlines())
    assert set(lines) == {"tun", "mem", "loop", "kmsg"}, r
    # /dev/mem (1:1) may be absent on the host (ENXIO there): the cgroup refuses before the driver is asked
    for name, result in lines.items():
        # mknod is allowed (Docker's "c *:* m", "b *:* m"); the open is refused by the device cgroup
        assert result.startswith("mknod=0 "), (name, r)
        assert "opened" not in result and "Operation not permitted" in result, (name, r)


@pytest.mark.parametrize("mode", MODES)
def test_default_nodes_still_work(ctr, mode):
    r = ctr("head -c 4 /dev/zero | wc -c; head -c 8 /dev/urandom | wc -c; head -c 2 /dev/random | wc -c; "
            "echo x > /dev/null && echo null-ok; (echo x > /dev/full) 2>&1; "
            "(exec 3<>/dev/ptmx && echo ptmx-ok) 2>&1; "
            + PROBE + "probe null2 c 1 3", mode)
    assert r.code == 0, r
    assert r.out.splitlines() == ["4", "8", "2", "null-ok", "sh: write error: No space left on device",
                                  "ptmx-ok", "null2: mknod=0 opened"], r


def test_v1_group_holds_the_default_list_and_goes_with_the_workload(hedge, busybox_rootfs):
    """The v1 devices group exists while the container runs, holds exactly Docker's list, and is removed."""
    env = dict(hedge.env())
    env["HEDGE_CGROUP_MODE"] = "v1"
    p = subprocess.Popen([hedge.binary, "run", "--isolation", "container", "--rootfs", str(busybox_rootfs), "--init", "--",
                          "sh", "-c", "echo ready; exec sleep 100"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "ready\n"
        parent = pathlib.Path("/sys/fs/cgroup/devices") / CGROUP_PARENT
        groups = [g for g in parent.iterdir() if g.is_dir()]
        assert len(groups) == 1, groups
        listed = (groups[0] / "devices.list").read_text().split("\n")
        assert sorted(filter(None, listed)) == sorted([
            "c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm",
            "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm"]), listed
        # the container's first process is in it (it entered it with its other v1 groups)
        assert (groups[0] / "tasks").read_text().split(), "the container's tasks are in the devices group"
    finally:
        p.terminate()
        p.wait(timeout=10)
    deadline = time.monotonic() + 5
    while groups[0].exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not groups[0].exists()


def test_process_isolation_keeps_host_devices(hedge, tmp_path):
    """The process level is unchanged: a process has the host's devices by design."""
    r = hedge("run", "--", "sh", "-c", "(exec 3<>/dev/net/tun && echo opened) 2>&1")
    assert r.code == 0, r
    assert r.out == "opened\n", r
