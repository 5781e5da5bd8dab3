"""A workload's own devices: the spec's `devices[]` and `device_rules[]`, `hedge run --device` and
`--device-cgroup-rule` (docs/spec.md#devices).

The devices are made by the tests and removed after: a pty pair (the slave /dev/pts/N, major 136), a loop
device on a small file (block 7:N, outside Docker's default list: the one that shows a grant), and a
/dev/null twin made with mknod in the test's directory (c 1:3). A container sees each listed node at its
target and may open it with the listed permissions; a node the workload makes itself for a device that is
not listed (tun, c 10:200) cannot be opened (EPERM). A process gets the device cgroup only when its spec
lists devices or rules. Each run goes through the v1 devices controller (this host is hybrid) and through
the v2 BPF_CGROUP_DEVICE program (forced v2 puts the group in the unified hierarchy, where the kernel asks
the program for real); where a host has no cgroup2 the v2 run is skipped and says why.
"""
import json
import os
import pathlib
import select
import stat
import subprocess
import time

import pytest

from test_vm import guest_kernel  # noqa: F401  (the shared session fixture: the guest kernel in the build dir)

MODES = ["v1", "v2"]
LOOP_DATA = b"LOOPDATA-devices-spec"


def _mode_env(mode):
    if mode == "v2" and not (os.path.exists("/sys/fs/cgroup/cgroup.controllers")
                             or os.path.exists("/sys/fs/cgroup/unified/cgroup.procs")):
        pytest.skip("no cgroup2 hierarchy on this host: the BPF_CGROUP_DEVICE path cannot run")
    if mode == "v1" and not os.path.isdir("/sys/fs/cgroup/devices"):
        pytest.skip("no v1 devices hierarchy on this host (a pure cgroup2 host): the v1 path cannot run")
    return {"HEDGE_CGROUP_MODE": mode}


@pytest.fixture
def devs(tmp_path):
    """The test's devices; everything is removed after (loop detached, pty closed, node unlinked)."""
    master, slave = os.openpty()
    img = tmp_path / "loop.img"
    img.write_bytes(LOOP_DATA + b"\0" * (1 << 20))
    loop = subprocess.run(["losetup", "--find", "--show", str(img)], capture_output=True, text=True)
    assert loop.returncode == 0, loop.stderr
    loop_dev = loop.stdout.strip()
    mynull = tmp_path / "x" / "mynull"
    mynull.parent.mkdir()
    os.mknod(mynull, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.chmod(mynull, 0o666)
    try:
        yield {"pty_master": master, "pty": os.ttyname(slave), "loop": loop_dev, "mynull": str(mynull),
               "img": str(img)}
    finally:
        os.close(slave)
        os.close(master)
        subprocess.run(["losetup", "-d", loop_dev], check=True)
        mynull.unlink()
        img.unlink()
    assert loop_dev not in subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout


def _read_pty(master, want):
    got = b""
    while want not in got:
        chunk = os.read(master, 256)
        assert chunk, got
        got += chunk
    return got


@pytest.mark.parametrize("mode", MODES)
def test_container_sees_listed_devices_and_nothing_else(hedge, busybox_rootfs, devs, tmp_path, mode):
    env = _mode_env(mode)
    spec = {
        "isolation": "container",
        "rootfs": str(busybox_rootfs),
        "devices": [
            {"path": devs["pty"], "target": "/dev/ttyX"},
            {"path": devs["loop"], "target": "/dev/disk0", "permissions": "r"},
            {"path": devs["mynull"], "target": "/dev/sub/mynull", "permissions": "rw"},
        ],
        "command": ["sh", "-c",
                    "stat -c '%n %F %t:%T %a' /dev/ttyX /dev/disk0 /dev/sub/mynull; "
                    "echo from-container > /dev/ttyX && echo pty-ok; "
                    "head -c 8 /dev/disk0; echo; "
                    "(exec 3>/dev/disk0 && echo disk-write-opened) 2>&1; "
                    "echo x > /dev/sub/mynull && echo mynull-ok; "
                    "mknod /dev/tun c 10 200 && echo mknod-ok; (exec 3<>/dev/tun && echo tun-opened) 2>&1; true"],
    }
    f = tmp_path / "spec.json"
    f.write_text(json.dumps(spec))
    r = hedge("run", "-f", f, env=env)
    assert r.code == 0, r
    loop_rdev = os.stat(devs["loop"]).st_rdev
    pty_rdev = os.stat(devs["pty"]).st_rdev
    lines = r.out.splitlines()
    assert lines[:3] == [
        f"/dev/ttyX character special file {os.major(pty_rdev):x}:{os.minor(pty_rdev):x} "
        f"{stat.S_IMODE(os.stat(devs['pty']).st_mode):o}",
        f"/dev/disk0 block special file {os.major(loop_rdev):x}:{os.minor(loop_rdev):x} "
        f"{stat.S_IMODE(os.stat(devs['loop']).st_mode):o}",
        "/dev/sub/mynull character special file 1:3 666",
    ], r
    assert lines[3:] == [
        "pty-ok",
        LOOP_DATA[:8].decode(),                                     # listed "r": read granted
        "sh: can't create /dev/disk0: Operation not permitted",     # ... write refused
        "mynull-ok",
        "mknod-ok",                                                 # mknod of anything (Docker's "c *:* m")
        "sh: can't create /dev/tun: Operation not permitted",       # not listed: EPERM on open
    ], r
    assert b"from-container" in _read_pty(devs["pty_master"], b"from-container")


@pytest.mark.parametrize("mode", MODES)
def test_flags_and_a_device_class_rule(hedge, busybox_rootfs, devs, mode):
    """--device HOST (target = path) and --device-cgroup-rule: the class rule opens what it names."""
    env = _mode_env(mode)
    r = hedge("run", "--rootfs", busybox_rootfs, "--device", f"{devs['loop']}:rw",
              "--device-cgroup-rule", "c 10:200 rw", "--",
              "sh", "-c", f"head -c 8 {devs['loop']}; echo; (exec 3>{devs['loop']} && echo loop-write-opened) 2>&1; "
              "mknod /dev/tun c 10 200; (exec 3<>/dev/tun && echo tun-opened) 2>&1; "
              "mknod /dev/kmsg2 c 1 11; (exec 3</dev/kmsg2 && echo kmsg-opened) 2>&1; true", env=env)
    assert r.code == 0, r
    assert r.out.splitlines() == [LOOP_DATA[:8].decode(), "loop-write-opened", "tun-opened",
                                  "sh: can't open /dev/kmsg2: Operation not permitted"], r


@pytest.mark.parametrize("mode", MODES)
def test_process_gets_the_device_cgroup_only_when_it_lists_devices(hedge, devs, mode):
    env = _mode_env(mode)
    loop = devs["loop"]
    script = (f"head -c 8 {loop}; echo; (exec 3>{loop} && echo loop-write-opened) 2>&1; "
              f"echo x > {devs['mynull']} && echo mynull-ok; (exec 3<>/dev/net/tun && echo tun-opened) 2>&1; true")
    r = hedge("run", "--device-cgroup-rule", "b 7:* r", "--device", devs["mynull"], "--",
              "sh", "-c", script, env=env)
    assert r.code == 0, r
    out = r.out.splitlines()
    assert out[0] == LOOP_DATA[:8].decode(), r                 # the rule: every loop device, read
    assert "Operation not permitted" in out[1], r              # ... not write
    assert out[2] == "mynull-ok", r                            # the listed node
    assert "Operation not permitted" in out[3], r              # the rest of the host's /dev: denied
    # no devices, no rules: the host's devices, as before
    r = hedge("run", "--", "sh", "-c", f"(exec 3>{loop} && echo loop-write-opened) 2>&1", env=env)
    assert r.code == 0 and r.out == "loop-write-opened\n", r


def test_v1_group_holds_default_list_plus_listed(hedge, busybox_rootfs, devs):
    """The v1 devices group of a container with devices holds exactly Docker's list plus the listed."""
    _mode_env("v1")
    rdev = os.stat(devs["loop"]).st_rdev
    env = dict(hedge.env())
    env["HEDGE_CGROUP_MODE"] = "v1"
    p = subprocess.Popen([hedge.binary, "run", "--init", "--rootfs", str(busybox_rootfs), "--device",
                          f"{devs['loop']}:/dev/d:rm", "--device-cgroup-rule", "c 188:* rwm",
                          "--device-cgroup-rule", "a *:* r", "--", "sh", "-c", "echo ready; exec sleep 100"],
                         env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "ready\n"
        pid = p.pid
        children = pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        assert children, "hedge's container process"
        line = [l for l in pathlib.Path(f"/proc/{children[0]}/cgroup").read_text().splitlines()
                if ":devices:" in l][0]
        listed = pathlib.Path("/sys/fs/cgroup/devices" + line.split(":", 2)[2], "devices.list").read_text()
        # the kernel merges rules of the same device: Docker's "c *:* m" and "b *:* m" took the "r" of
        # "a *:* r" (given as c *:* r and b *:* r: v1's "a" line would mean every access)
        assert sorted(filter(None, listed.split("\n"))) == sorted([
            "c *:* rm", "b *:* rm", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm",
            "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm",
            f"b {os.major(rdev)}:{os.minor(rdev)} rm", "c 188:* rwm"]), listed
    finally:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_bad_device_input_is_refused_before_anything_starts(hedge, busybox_rootfs, devs, tmp_path):
    def run(*args):
        return hedge("run", "--rootfs", busybox_rootfs, *args, "--", "sh", "-c", "echo started")

    cases = [
        (["--device", devs["img"]], f"devices[0].path: {devs['img']} is not a character or block device"),
        (["--device", str(tmp_path / "nope")], f"devices[0].path: {tmp_path / 'nope'}: No such file or directory"),
        (["--device", f"{devs['mynull']}:/dev/m:rx"],
         f"--device: \"{devs['mynull']}:/dev/m:rx\" has permissions that are not made of r, w and m"),
        (["--device", "dev/x"], "devices[0].path: \"dev/x\" must be an absolute path"),
        (["--device-cgroup-rule", "c 188 rwm"], "--device-cgroup-rule: \"c 188 rwm\" is not TYPE MAJOR:MINOR"),
        (["--device-cgroup-rule", "c 1:1 rq"], "has an access that is not made of r, w and m"),
        (["-i", "vm", "--device", devs["mynull"]], f"devices[0]: {devs['mynull']}: not supported with vm isolation"),
    ]
    for args, message in cases:
        r = run(*args)
        assert r.code == 125, (args, r)
        assert message in r.err, (args, r)
        assert "started" not in r.out, (args, r)
    spec = tmp_path / "bad.json"
    spec.write_text(json.dumps({"rootfs": str(busybox_rootfs), "command": ["true"],
                                "devices": [{"path": devs["mynull"], "permissions": "rwx"}]}))
    r = hedge("run", "-f", spec)
    assert r.code == 125 and 'devices[0].permissions: "rwx" is not made of r, w and m' in r.err, r
    spec.write_text(json.dumps({"isolation": "process", "command": ["true"],
                                "devices": [{"path": devs["mynull"], "target": "/dev/other"}]}))
    r = hedge("run", "-f", spec)
    assert r.code == 125 and "devices[0].target: not supported with process isolation" in r.err, r


def test_help_names_the_flags(hedge):
    r = hedge("run", "--help")
    assert r.code == 0 and "--device HOST[:TARGET][:PERMS]" in r.out and "--device-cgroup-rule" in r.out, r


# ---- vm isolation (docs/vm.md#devices): one guest boot ----

def _read_until(fd, want, deadline):
    got = b""
    while want not in got:
        left = deadline - time.monotonic()
        assert left > 0, got
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 256)
            assert chunk, got
            got += chunk
    return got


def test_vm_gets_a_serial_port_and_a_read_only_disk(hedge, guest_kernel, busybox_rootfs, devs, tmp_path):
    """A pty slave reaches the guest as a virtio-serial port and a loop device as a read-only virtio-blk
    disk; hedge-init makes each node at its target. The host writes a line to the pty master, the workload
    reads it at /dev/ttyX and answers through it; it reads the disk's pattern and cannot write it."""
    spec = {
        "isolation": "vm",
        "vm": {"accel": "tcg"},
        "rootfs": str(busybox_rootfs),
        "devices": [
            {"path": devs["pty"], "target": "/dev/ttyX"},
            {"path": devs["loop"], "target": "/data/disk0", "permissions": "r"},
        ],
        "command": ["sh", "-c",
                    "stat -c '%n %F %a' /dev/ttyX /data/disk0; head -c 8 /data/disk0; echo; "
                    "if dd if=/dev/zero of=/data/disk0 bs=512 count=1 2>/tmp/dd.err; then echo disk-written; "
                    "else head -n 1 /tmp/dd.err; fi; "
                    "echo ready; read line < /dev/ttyX; echo \"got:$line\" > /dev/ttyX; echo done"],
    }
    f = tmp_path / "spec.json"
    f.write_text(json.dumps(spec))
    env = {**hedge.env(), "HEDGE_VM_KERNEL_DIR": str(guest_kernel)}
    p = subprocess.Popen([hedge.binary, "run", "-f", str(f)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 150
        out = _read_until(p.stdout.fileno(), b"ready\n", deadline)
        os.write(devs["pty_master"], b"hello-guest\n")
        assert b"got:hello-guest" in _read_until(devs["pty_master"], b"got:hello-guest", deadline)
        rest, err = p.communicate(timeout=max(1, deadline - time.monotonic()))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, (out, rest, err)
    lines = (out + rest).decode().splitlines()
    assert lines[:3] == ["/dev/ttyX character special file 666", "/data/disk0 block special file 444",
                         LOOP_DATA[:8].decode()], lines
    assert "disk-written" not in lines and ("Operation not permitted" in lines[3]
                                            or "Permission denied" in lines[3]), lines
    assert lines[4:] == ["ready", "done"], lines
    # the disk is as it was
    assert pathlib.Path(devs["img"]).read_bytes()[:len(LOOP_DATA)] == LOOP_DATA


def test_vm_refuses_what_cannot_reach_a_guest(hedge, busybox_rootfs, devs, tmp_path):
    """No boot: each is refused before anything is built or started, naming the device (exit 125)."""
    cases = [
        ([devs["mynull"]], f"devices[0]: {devs['mynull']}: not supported with vm isolation (a guest gets only "
                           "serial devices (ttys, as virtio-serial ports) and block devices (as virtio-blk); "
                           "this is a character device that is not a tty)"),
        ([devs["loop"] + ":r", devs["pty"] + ":/dev/ttyX:r"],
         f"devices[1]: {devs['pty']}: a serial device reaches a vm only read-write"),
        (["/dev/tty"], "devices[0]: /dev/tty: not supported with vm isolation"),
        ([devs["loop"] + ":/dev/d:w"], f"devices[0]: {devs['loop']}: not supported with vm isolation without \"r\""),
    ]
    for devices, message in cases:
        args = [a for d in devices for a in ("--device", d)]
        r = hedge("run", "-i", "vm", "--rootfs", busybox_rootfs, *args, "--", "sh", "-c", "echo started")
        assert r.code == 125, (devices, r)
        assert message in r.err, (devices, r)
        assert r.out == "", (devices, r)
    # device_rules: the guest has its own kernel, QEMU no device cgroup
    r = hedge("run", "-i", "vm", "--rootfs", busybox_rootfs, "--device-cgroup-rule", "c 188:* rwm", "--", "true")
    assert r.code == 125 and "device_rules: not supported with vm isolation" in r.err, r
