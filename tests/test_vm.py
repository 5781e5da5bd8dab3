"""`hedge run --isolation vm`: the workload in a QEMU guest with its own kernel, started by hedge-init.

Each boot takes ~4-6 s under TCG here (KVM is PVM and cannot run ordinary guests at speed), so the tests
that boot are few and each checks several things. They use the real guest kernel (Debian's cloud kernel,
fetched once per build dir by scripts/fetch-guest-kernel), real QEMU and mkfs.erofs.
"""
import os
import pathlib
import platform
import shutil
import signal
import subprocess
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
    if not (KERNEL_DIR / "vmlinuz").exists():
        r = subprocess.run([str(ROOT / "scripts" / "fetch-guest-kernel"), str(KERNEL_DIR)],
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            pytest.skip(f"guest kernel not available: {r.stderr.strip()}")
    return KERNEL_DIR


@pytest.fixture(scope="session")
def vm_rootfs(busybox_rootfs, tmp_path_factory):
    """busybox_rootfs with its applet links made relative: conftest's point at the host path of busybox,
    which does not exist inside a guest (or any chroot)."""
    root = tmp_path_factory.mktemp("vm") / "rootfs"
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    for link in (root / "bin").iterdir():
        if link.is_symlink() and os.readlink(link).endswith("/busybox"):
            link.unlink()
            link.symlink_to("busybox")
    return root


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
    yield
    assert qemu_processes_for(dirs["run"]) == [], "QEMU left running"


def test_guest_kernel_exit_code_and_stdio(vm, dirs):
    r = vm("--", "sh", "-c", "uname -r; echo to-stderr >&2; exit 7")
    assert r.code == 7, r
    release = r.out.strip()
    assert release == (KERNEL_DIR / "release").read_text().strip()
    assert release != platform.release()
    assert r.err == "to-stderr\n"
    # the erofs image is cached by content; the run dir (console log, qemu log) is gone
    images = list((dirs["state"] / "vm" / "rootfs").glob("*.erofs"))
    assert len(images) == 1
    assert not (dirs["run"] / "runs").exists() or list((dirs["run"] / "runs").iterdir()) == []


def test_env_workdir_user_hostname_stdin(vm):
    r = vm("-e", "GREETING=hello vm", "-w", "/tmp/work", "-u", "app", "--hostname", "guest1", "--",
           "sh", "-c", 'echo "$GREETING"; pwd; id -u; id -g; hostname; tr a-z A-Z', input="from stdin\n")
    assert r.code == 0, r
    assert r.out == "hello vm\n/tmp/work\n1000\n1000\nguest1\nFROM STDIN\n"
    assert r.err == ""


def test_command_not_found_127(vm):
    r = vm("--", "no-such-command-xyz")
    assert r.code == 127, r
    assert r.err == "hedge: exec no-such-command-xyz: command not found in PATH\n"


def test_memory_hog_is_oom_killed_in_guest(vm):
    # 80M is below the guest's RAM (so the allocation itself succeeds) and above the 64M limit
    r = vm("--memory", "64M", "--", "dd", "if=/dev/zero", "of=/dev/null", "bs=80M", "count=1")
    assert r.code == 137, r
    assert "OOM-killed: the memory limit (67108864 bytes) was hit" in r.err


def test_pids_limit_inside_guest(vm):
    # pids.max 5 in the guest cgroup: the shell itself and 4 children, the 5th fork fails
    r = vm("--pids", "5", "--", "sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 2 & echo started $i; done")
    assert r.code == 2, r
    assert r.out == "started 1\nstarted 2\nstarted 3\nstarted 4\n"
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
    mtime = image.stat().st_mtime_ns
    r = vm("--", "true")
    assert image.stat().st_mtime_ns == mtime
    assert r.code == 125, r
    assert r.err.startswith("hedge: mount /dev/vda (erofs) on /lower: "), r.err


def test_missing_kernel_is_clear_error(hedge, vm_rootfs, tmp_path):
    r = hedge("run", "--isolation", "vm", "--vm-accel", "tcg", "--rootfs", vm_rootfs, "--", "true",
              env={"HEDGE_VM_KERNEL_DIR": str(tmp_path / "no-kernel")})
    assert r.code == 125
    assert r.err.startswith(f"hedge: guest kernel {tmp_path}/no-kernel/vmlinuz: not found (run "
                            f"scripts/fetch-guest-kernel {tmp_path}/no-kernel"), r.err


@pytest.mark.parametrize("args,message", [
    (["--network", "host"], "hedge: network.mode: not supported with vm isolation (a VM has its own kernel"),
    (["--network", "bridge"], "hedge: network.mode: not supported with vm isolation (bridge"),
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
