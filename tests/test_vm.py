"""`hedge run --isolation vm`: the workload in a QEMU guest with its own kernel, started by hedge-init.

Each boot takes ~4-6 s under TCG here (KVM is PVM and cannot run ordinary guests at speed), so the tests
that boot are few and each checks several things. They use the real guest kernel (Debian's cloud kernel,
fetched once per build dir by `hedge vm kernel fetch`, which runs scripts/fetch-guest-kernel), real QEMU and mkfs.erofs.
"""
import os
import pathlib
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import BUILD, ROOT

KERNEL_DIR = BUILD / "guest-kernel"


def _missing_tools():
    return [t for t in ("qemu-system-x86_64", "mkfs.erofs") if shutil.which(t) is None]


@pytest.fixture(scope="session")
def guest_kernel():
    """The guest kernel dir (fetched into the build dir once); skips when it cannot be had."""
    missing = _missing_tools()
    if missing:
        pytest.skip(f"vm tests need {', '.join(missing)} (deps/vm.txt)")
    # idempotent: returns at once when the dir is complete
    r = subprocess.run([str(BUILD / "hedge"), "vm", "kernel", "fetch", str(KERNEL_DIR)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.skip(f"guest kernel not available: {r.stderr.strip()}")
    return KERNEL_DIR


@pytest.fixture(scope="session")
def vm_rootfs(busybox_rootfs):
    return busybox_rootfs


@pytest.fixture
def vm(hedge, guest_kernel, vm_rootfs, dirs):
    """vm(*run_args, env=..., input=...) runs `hedge run --isolation vm --vm-accel tcg --rootfs R ARGS`."""

    def run(*args, env=None, input=None, timeout=180, accel="tcg"):
        e = {"HEDGE_VM_KERNEL_DIR": str(guest_kernel)}
        e.update(env or {})
        return hedge("run", "--isolation", "vm", "--vm-accel", accel, "--rootfs", vm_rootfs, *args,
                     env=e, input=input, timeout=timeout)

    run.env = lambda: {**hedge.env(), "HEDGE_VM_KERNEL_DIR": str(guest_kernel)}
    run.argv = lambda *args: [hedge.binary, "run", "--isolation", "vm", "--vm-accel", "tcg", "--rootfs",
                              str(vm_rootfs), *map(str, args)]
    return run


def qemu_processes_for(run_dir):
    """QEMU processes whose command line names this test's run dir."""
    found = []
    for p in pathlib.Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "qemu-system" in cmd and str(run_dir) in cmd:
            found.append(int(p.name))
    return found


@pytest.fixture(autouse=True)
def no_qemu_left(dirs):
    """Beside conftest's checks: no QEMU of this test still running, no half-written cache file."""
    yield
    assert qemu_processes_for(dirs["run"]) == [], "QEMU left running"
    vm_state = dirs["state"] / "vm"
    if vm_state.exists():
        assert [p for p in vm_state.rglob("*") if ".tmp." in p.name] == []


def test_guest_kernel_exit_code_and_stdio(vm, dirs):
    r = vm("--memory", "100M", "--", "sh", "-c",
           "uname -r; echo to-stderr >&2; grep MemTotal /proc/meminfo; exit 7")
    assert r.code == 7, r
    release, memtotal = r.out.splitlines()
    # guest RAM is memory + 64 MiB; the guest kernel keeps some of it
    assert 100 * 1024 < int(memtotal.split()[1]) < 164 * 1024, memtotal
    assert release == (KERNEL_DIR / "release").read_text().strip()
    assert release != platform.release()
    assert r.err == "to-stderr\n"
    # the erofs image is cached by content; the run dir (console log, qemu log) is gone
    images = list((dirs["state"] / "vm" / "rootfs").glob("*.erofs"))
    assert len(images) == 1
    assert not (dirs["run"] / "runs").exists() or list((dirs["run"] / "runs").iterdir()) == []


def test_env_workdir_user_hostname_stdin(vm):
    r = vm("-e", "GREETING=hello vm", "-w", "/tmp/work", "-u", "app", "--hostname", "guest1", "--cpus", "1.5",
           "--", "sh", "-c", 'echo "$GREETING"; pwd; id -u; id -g; hostname; nproc; tr a-z A-Z',
           input="from stdin\n")
    assert r.code == 0, r
    # --cpus 1.5 → 2 vCPUs (and a 1.5 CPU quota on QEMU's cgroup)
    assert r.out == "hello vm\n/tmp/work\n1000\n1000\nguest1\n2\nFROM STDIN\n"
    assert r.err == ""


def test_large_stdin_and_stdout_stream_through(vm):
    # more than the socket and virtqueue buffers in both directions at once: backpressure, no deadlock
    data = os.urandom(3 * 1024 * 1024)
    proc = subprocess.run(vm.argv("--", "cat"), input=data, capture_output=True, env=vm.env(), timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == data
    assert proc.stderr == b""


def test_image_from_store_and_command_not_found_127(hedge, guest_kernel, imported_busybox, dirs):
    r = hedge("run", "--isolation", "vm", "--vm-accel", "tcg", "busybox:latest", "--", "no-such-command-xyz",
              env={"HEDGE_VM_KERNEL_DIR": str(guest_kernel)}, timeout=180)
    assert r.code == 127, r
    assert r.err == "hedge: exec no-such-command-xyz: command not found in PATH\n"
    # an image's erofs is cached under its content digest
    digest = imported_busybox.split(":")[-1]
    assert [p.name for p in (dirs["state"] / "vm" / "rootfs").iterdir()] == [f"image-{digest}.erofs"]


def test_memory_hog_is_oom_killed_in_guest(vm):
    # 80M is below the guest's RAM (so the allocation itself succeeds) and above the 64M limit
    r = vm("--memory", "64M", "--", "dd", "if=/dev/zero", "of=/dev/null", "bs=80M", "count=1")
    assert r.code == 137, r
    assert r.err == "hedge: OOM-killed: the workload hit its memory limit of 64 MiB (67108864 bytes)\n"


def test_pids_limit_inside_guest_and_read_only_root(vm):
    # pids.max 5 in the guest cgroup: the shell itself and 4 children, the 5th fork fails.
    # --read-only: the erofs image is the root as is, no overlay.
    r = vm("--pids", "5", "--read-only", "--", "sh", "-c",
           "touch /x 2>/dev/null || echo read-only; for i in 1 2 3 4 5 6 7 8; do sleep 2 & echo started $i; done")
    assert r.code == 2, r
    assert r.out == "read-only\nstarted 1\nstarted 2\nstarted 3\nstarted 4\n"
    assert r.err == "sh: can't fork: Resource temporarily unavailable\n"


def _start_and_wait_ready(vm):
    proc = subprocess.Popen(vm.argv("--", "sh", "-c",
                                    'trap "echo got-term; exit 3" TERM; echo ready; '
                                    'while true; do sleep 0.1; done'),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=vm.env())
    line = proc.stdout.readline()
    return proc, line


def test_sigterm_reaches_workload(vm):
    proc, line = _start_and_wait_ready(vm)
    try:
        assert line == "ready\n"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, err
    assert out == "got-term\n"


def test_guest_ignoring_sigterm_is_killed_after_grace(vm):
    env = {**vm.env(), "HEDGE_VM_STOP_GRACE_MS": "1500"}
    proc = subprocess.Popen(vm.argv("--", "sh", "-c", 'trap "" TERM; echo ready; while true; do sleep 0.1; done'),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline() == "ready\n"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 137, err
    assert "the guest did not stop within 1500 ms of SIGTERM; the VM was killed" in err
    assert 1.4 < elapsed < 15


def test_guest_kernel_panic_is_125_with_cause(vm):
    r = vm("--", "sh", "-c", "echo c > /proc/sysrq-trigger; sleep 30")
    assert r.code == 125, r
    assert r.err == "hedge: vm: guest kernel panic: sysrq triggered crash\n"


def test_cached_image_reused_and_corruption_reported(vm, dirs):
    r = vm("--", "true")
    assert r.code == 0, r
    (image,) = (dirs["state"] / "vm" / "rootfs").glob("*.erofs")
    # second run: same rootfs, same cached image (not rebuilt) - so a corrupted cache reaches the guest
    with open(image, "r+b") as f:
        f.seek(1024)  # the erofs superblock
        f.write(b"\0" * 128)
    inode = image.stat().st_ino
    r = vm("--", "true")
    assert image.stat().st_ino == inode  # the same file (a rebuild renames a new one in); its mtime marks the use
    assert r.code == 125, r
    assert r.err.startswith("hedge: mount /dev/vda (erofs) on /lower: "), r.err


def test_missing_kernel_is_clear_error(hedge, vm_rootfs, tmp_path):
    r = hedge("run", "--isolation", "vm", "--vm-accel", "tcg", "--rootfs", vm_rootfs, "--", "true",
              env={"HEDGE_VM_KERNEL_DIR": str(tmp_path / "no-kernel")})
    assert r.code == 125
    # it says how to get one: the verb (which fills the dir hedge reads) and the make target
    assert r.err.startswith(f"hedge: guest kernel {tmp_path}/no-kernel/vmlinuz: not found (get Debian's cloud "
                            f"kernel into {tmp_path}/no-kernel with `hedge vm kernel fetch`, or `make "
                            f"guest-kernel` in a source tree;"), r.err


def test_kernel_one_place_found_without_env(hedge, guest_kernel, tmp_path):
    """Without HEDGE_VM_KERNEL_DIR the kernel lives in <state>/vm/kernel: `hedge vm kernel fetch` fills that
    dir (here already complete: it says so and leaves it alone) and `hedge vm kernel` reads it."""
    state = tmp_path / "state"
    place = state / "vm" / "kernel"
    env = {k: v for k, v in hedge.env().items() if k != "HEDGE_VM_KERNEL_DIR"}
    env["HEDGE_STATE_DIR"] = str(state)
    r = subprocess.run([hedge.binary, "vm", "kernel"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 125
    assert f"guest kernel {place}/vmlinuz: not found" in r.stderr and "hedge vm kernel fetch" in r.stderr
    shutil.copytree(guest_kernel, place)
    release = (guest_kernel / "release").read_text().strip()
    r = subprocess.run([hedge.binary, "vm", "kernel", "fetch"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"fetch-guest-kernel: {release} already in {place}"
    r = subprocess.run([hedge.binary, "vm", "kernel"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(":", 1) for line in r.stdout.splitlines())
    assert lines["kernel"].strip() == f"{place}/vmlinuz"
    assert lines["release"].strip() == release


@pytest.mark.parametrize("args,message", [
    (["--network", "host"], "hedge: network.mode: not supported with vm isolation (a VM has its own kernel"),
    (["-v", "/tmp:/data"], "hedge: mounts[0]: /tmp → /data: not supported with vm isolation (the guest cannot "
                           "share host directories"),
    (["--cap-add", "CAP_NET_ADMIN"], "hedge: security.cap_add: not supported with vm isolation"),
    (["--vm-accel", "fast"], "hedge: vm.accel: \"fast\" is not an accelerator (auto, kvm or tcg)"),
])
def test_bad_spec_refused_before_boot(hedge, vm_rootfs, args, message):
    r = hedge("run", "--isolation", "vm", "--rootfs", vm_rootfs, *args, "--", "true")
    assert r.code == 125, r
    assert r.err.startswith(message), r.err


def test_vm_kernel_verb_and_kvm_probe(hedge, guest_kernel, vm_rootfs, dirs):
    t0 = time.monotonic()
    r = hedge("vm", "kernel", env={"HEDGE_VM_KERNEL_DIR": str(guest_kernel)})
    elapsed = time.monotonic() - t0
    assert r.code == 0, r
    lines = dict(line.split(":", 1) for line in r.out.splitlines())
    assert lines["kernel"].strip() == f"{guest_kernel}/vmlinuz"
    assert lines["release"].strip() == (guest_kernel / "release").read_text().strip()
    initramfs = pathlib.Path(lines["initramfs"].strip())
    assert initramfs.parent == dirs["state"] / "vm" and initramfs.stat().st_size > 100_000
    accel = lines["accel"].strip()
    assert accel.startswith(("kvm (auto; KVM usable: a 1000000-iteration guest loop ran in ",
                             "tcg (auto; KVM not usable: "))
    assert elapsed < 5  # the probe is bounded to milliseconds even where KVM is emulated
    if accel.startswith("tcg"):
        # asking for KVM where it cannot run guests at speed is an error naming the probe, not a hang
        r = hedge("run", "--isolation", "vm", "--vm-accel", "kvm", "--rootfs", vm_rootfs, "--", "true", env={"HEDGE_VM_KERNEL_DIR": str(guest_kernel)})
        assert r.code == 125
        assert r.err.startswith("hedge: vm.accel kvm: KVM cannot run guests at speed here: "), r.err


def _newc(entries):
    """A newc cpio archive of (name, mode, data) entries."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], 1):
        nb = name.encode() + b"\0"
        out += b"070701" + b"".join(b"%08X" % v for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0))
        out += nb + b"\0" * ((4 - (110 + len(nb)) % 4) % 4)
        out += data + b"\0" * ((4 - len(data) % 4) % 4)
    return bytes(out)


# A rogue guest: a busybox shell as /init that loads the same modules, sends STARTED and then a message
# of a type no guest may send, and would then hang forever.
ROGUE_INIT = r"""#!/bin/busybox sh
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
for m in /modules/*.ko; do /bin/busybox insmod $m; done
while [ ! -e /dev/vport1p1 ]; do /bin/busybox usleep 10000; done
printf '\020\000\000\000\000\000\000\000\143\000\000\000\000\000\000\000' > /dev/vport1p1
/bin/busybox sleep 1000
"""


ENTROPY_PROBE = ("dmesg | grep -c 'crng init done'; cat /proc/sys/kernel/random/entropy_avail; "
                 "head -c 16 /dev/random | od -An -tx1 | tr -d ' \\n'; echo; date +%s")


def test_guest_seeded_from_host_before_workload_and_clock_set(vm):
    """hedge-init credits the host's seed and reseeds the CRNG before the workload: the CRNG is ready
    when it starts (without the seed it is not, and the first getrandom() blocks ~1 s under TCG), two
    guests read different bytes, and the guest's wall clock is the host's."""
    results = []
    for _ in range(2):
        before = time.time()
        r = vm("--", "sh", "-c", ENTROPY_PROBE)
        after = time.time()
        assert r.code == 0, r
        crng_done, entropy, random_hex, guest_now = r.out.split()
        assert crng_done == "1", r  # "random: crng init done" is in the log when the workload starts
        assert int(entropy) >= 256, r
        assert len(random_hex) == 32, r
        assert before - 2 <= int(guest_now) <= after + 2, (before, guest_now, after)
        results.append(random_hex)
    assert results[0] != results[1]


def test_malformed_guest_message_ends_vm(vm, guest_kernel, tmp_path):
    entries = [("bin", 0o40755, b""), ("dev", 0o40755, b""), ("sys", 0o40755, b""), ("modules", 0o40755, b""),
               ("bin/busybox", 0o100755, pathlib.Path("/bin/busybox").read_bytes()),
               ("init", 0o100755, ROGUE_INIT.encode())]
    for ko in sorted((guest_kernel / "modules").glob("*.ko")):
        entries.append((f"modules/{ko.name}", 0o100644, ko.read_bytes()))
    initrd = tmp_path / "rogue.cpio"
    initrd.write_bytes(_newc(entries))
    t0 = time.monotonic()
    r = vm("--", "true", env={"HEDGE_VM_INITRD": str(initrd)})
    assert r.code == 125, r
    assert r.err == "hedge: vm: protocol: malformed message from the guest (type 99, length 0)\n"
    assert time.monotonic() - t0 < 90


def test_bridge_network_reaches_gateway(vm, dirs):
    """A tap on the hedge bridge, inside a network namespace this test made (nsenter --net only: `ip netns
    exec` would remount /sys and hide the cgroups). The guest gets the leased address and the default
    route; its ping reaches the bridge's gateway address in that namespace. Tap and lease go at the end."""
    import secrets
    name = f"hedge-test-{secrets.token_hex(4)}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot create a network namespace (ip netns add): {r.stderr.strip()}")
    try:
        proc = subprocess.run(["nsenter", f"--net=/run/netns/{name}", *vm.argv(
            "--network", "bridge", "--", "sh", "-c", "ip -o -4 addr show eth0; ip route; ping -c1 -W5 10.89.0.1")],
            capture_output=True, text=True, env=vm.env(), timeout=180)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "eth0    inet 10.89.0.2/24" in proc.stdout
        assert "default via 10.89.0.1 dev eth0" in proc.stdout
        assert "1 packets received" in proc.stdout
        links = subprocess.run(["ip", "netns", "exec", name, "ip", "-o", "link"], capture_output=True,
                               text=True, check=True).stdout
        assert [l for l in links.splitlines() if " ht" in l] == [], links
        leases = dirs["state"] / "net" / "hedge0" / "leases"
        assert not leases.exists() or list(leases.iterdir()) == []
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


QMP_DRIVER = BUILD / "tests" / "helpers" / "qmp-driver"


def test_qmp_client_against_real_qemu(tmp_path):
    """runtime/vm/qmp.c against a real QEMU (no guest: -machine none, stopped): handshake, typed status,
    commands, events, QEMU's errors named with their class, a clean quit; a peer that never greets costs
    the timeout, not a hang."""
    missing = _missing_tools()
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    sock_dir = pathlib.Path(tempfile.mkdtemp(prefix="hedge-qmp-", dir="/tmp"))  # sun_path is short
    sock = sock_dir / "qmp.sock"
    qemu = subprocess.Popen(["qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none",
                             "-machine", "none", "-S", "-qmp", f"unix:{sock},server=on,wait=off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        r = subprocess.run([str(QMP_DRIVER), str(sock), "10000", "version", "status", "cmd", "cont", "status",
                            "cmd", "stop", "event", "STOP", "status", "cmd", "query-name"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r
        version, *rest = r.stdout.splitlines()
        assert version.split(".")[0].isdigit() and version.count(".") == 2, version
        assert rest == ["prelaunch stopped", "{}", "running running", "{}", "event STOP", "paused stopped", "{}"]
        r = subprocess.run([str(QMP_DRIVER), str(sock), "10000", "cmd", "no-such-command"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1
        assert r.stdout.startswith("error: qmp no-such-command: CommandNotFound: "), r.stdout
        r = subprocess.run([str(QMP_DRIVER), str(sock), "10000", "status", "quit"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stdout == "paused stopped\nquit\n", r
        assert qemu.wait(timeout=30) == 0
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()
    # a peer that accepts and never sends QMP's greeting
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute_path = sock_dir / "mute.sock"
    mute.bind(str(mute_path))
    mute.listen(1)
    try:
        t0 = time.monotonic()
        r = subprocess.run([str(QMP_DRIVER), str(mute_path), "300", "status"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 1
        assert r.stdout == "error: qmp greeting: no answer from QEMU: Connection timed out\n", r.stdout
        assert time.monotonic() - t0 < 10
    finally:
        mute.close()
        shutil.rmtree(sock_dir)


def test_boot_timeout_reports_qemu_status_over_qmp(vm):
    """The backend holds QEMU's QMP monitor on a socketpair: a guest that does not start in time is
    reported with QEMU's run state, and QEMU is asked to quit (then killed if it does not)."""
    t0 = time.monotonic()
    r = vm("--", "true", env={"HEDGE_VM_BOOT_TIMEOUT_MS": "1500"})
    assert r.code == 125, r
    assert r.err.startswith("hedge: vm: the guest did not start the workload within 1500 ms (QEMU: running; "), r
    assert time.monotonic() - t0 < 30


def test_rootfs_image_cache_drops_the_least_recently_used_over_its_budget(vm, dirs):
    # HEDGE_VM_ROOTFS_CACHE_MAX bounds <state>/vm/rootfs: a new image makes the least recently used go until
    # the rest fit, but never one used in the last 10 minutes (a VM may be about to open it); temp files of a
    # build whose process is gone go too
    cache = dirs["state"] / "vm" / "rootfs"
    cache.mkdir(parents=True)
    now = time.time()
    for name, age in (("tree-old.erofs", 3 * 86400), ("tree-older.erofs", 4 * 86400), ("tree-recent.erofs", 60)):
        (cache / name).write_bytes(os.urandom(2 << 20))
        os.utime(cache / name, (now - age, now - age))
    dead = subprocess.Popen(["true"])
    dead.wait()
    (cache / f"tree-crashed.erofs.tmp.{dead.pid}").write_bytes(b"half")
    r = vm("--", "true", env={"HEDGE_VM_ROOTFS_CACHE_MAX": "3M"})
    assert r.code == 0, r
    left = sorted(p.name for p in cache.iterdir())
    new = [n for n in left if n not in ("tree-recent.erofs",)]
    assert "tree-recent.erofs" in left and len(new) == 1 and new[0].endswith(".erofs"), left
    assert "removed tree-older.erofs" in r.err and "removed tree-old.erofs" in r.err, r.err
    assert r.err.index("tree-older.erofs") < r.err.index("tree-old.erofs")  # the least recently used first
    # a cached image is marked used each time it is found
    os.utime(cache / new[0], (now - 86400, now - 86400))
    r = vm("--", "true")
    assert r.code == 0, r
    assert (cache / new[0]).stat().st_mtime > now - 60
