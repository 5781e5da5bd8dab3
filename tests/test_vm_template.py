"""VM templates (issue 16): `hedge vm template build|ls|rm` and `hedge run -i vm --vm-boot cold|snapshot|auto`.

Guest starts under TCG are slow, so the whole file boots four times: the template (once, a module
fixture shared by every test), two clones restored from it, and one cold boot (the fallback from a
corrupt template). The rest (errors, listing, removal) starts no guest.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import BUILD
from test_vm import guest_kernel, vm_rootfs  # noqa: F401 (fixtures: the guest kernel, the busybox rootfs)

HEX32 = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def template(guest_kernel, tmp_path_factory):  # noqa: F811
    """A state dir holding one template: 64M workload memory = a 128 MiB guest, 1 vCPU, TCG."""
    state = tmp_path_factory.mktemp("vm-template") / "state"
    state.mkdir()
    env = {**os.environ, "HEDGE_STATE_DIR": str(state), "HEDGE_VM_KERNEL_DIR": str(guest_kernel)}
    r = subprocess.run([str(BUILD / "hedge"), "vm", "template", "build", "--memory", "64M", "--vm-accel", "tcg"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert re.match(r"template [0-9a-f]{12}: built \(128 MiB guest, 1 vCPU, tcg\)\n", r.stdout), r.stdout
    (tdir,) = list((state / "vm" / "templates").iterdir())
    # read-only files: the RAM (exactly guest RAM), the device state, the manifest
    assert sorted(p.name for p in tdir.iterdir()) == ["manifest.json", "ram", "state"]
    for p in tdir.iterdir():
        assert p.stat().st_mode & 0o777 == 0o444, p
    assert (tdir / "ram").stat().st_size == 128 << 20
    # a second build finds it up to date and boots nothing
    r = subprocess.run([str(BUILD / "hedge"), "vm", "template", "build", "--memory", "64M", "--vm-accel", "tcg"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0 and ": up to date (" in r.stdout, r
    return {"state": state, "dir": tdir, "kernel": guest_kernel}


def run_vm(hedge, template, rootfs, *args, boot="snapshot", memory="64M", state=None, **kw):
    env = {"HEDGE_VM_KERNEL_DIR": str(template["kernel"]), "HEDGE_STATE_DIR": str(state or template["state"])}
    return hedge("run", "-i", "vm", "--vm-accel", "tcg", "--memory", memory, "--vm-boot", boot, "--rootfs", rootfs,
                 *args, env=env, timeout=180, **kw)


CLONE_SCRIPT = ("head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s; hostname; "
                "cat /etc/machine-id; cat; echo to-stderr >&2; exit 5")


def test_two_clones_differ_in_entropy_and_identity_and_keep_time_and_stdio(hedge, template, vm_rootfs):  # noqa: F811
    outs = []
    for _ in range(2):
        r = run_vm(hedge, template, vm_rootfs, "--", "sh", "-c", CLONE_SCRIPT, input="line from stdin\n")
        host_now = time.time()
        assert r.code == 5, r
        # the start path is said, and the workload's stderr comes through after it
        assert re.search(r"hedge: vm: boot: snapshot \(template [0-9a-f]{12}\), restored in [0-9.]+ s\n", r.err), r.err
        assert r.err.endswith("to-stderr\n"), r.err
        random_hex, guest_time, hostname, machine_id, stdin_line = r.out.splitlines()
        assert re.match(r"^[0-9a-f]{64}$", random_hex), r.out
        # the wall clock comes from the host at restore, not from the snapshot
        assert abs(int(guest_time) - host_now) <= 5, (guest_time, host_now)
        assert HEX32.match(machine_id), machine_id
        assert stdin_line == "line from stdin"
        outs.append((random_hex, hostname, machine_id))
    (rand_a, host_a, id_a), (rand_b, host_b, id_b) = outs
    assert rand_a != rand_b, "two clones read the same random bytes"
    assert host_a != host_b and id_a != id_b
    # the template is untouched by its clones (private mapping of the RAM file)
    r = hedge("vm", "template", "ls", env={"HEDGE_STATE_DIR": str(template["state"])})
    assert r.code == 0 and r.out.splitlines()[1].endswith("  ok"), r.out


def test_snapshot_without_a_matching_template_is_a_clear_error(hedge, template, vm_rootfs, dirs):  # noqa: F811
    # nothing in this test's own state dir
    r = run_vm(hedge, template, vm_rootfs, "--", "true", state=dirs["state"])
    assert r.code == 125, r
    assert "--vm-boot snapshot: no template for this guest (128 MiB RAM, 1 vCPU, tcg)" in r.err, r.err
    assert "hedge vm template build" in r.err
    # a template exists, but for another guest size: no boot either
    r = run_vm(hedge, template, vm_rootfs, "--", "true", memory="100M")
    assert r.code == 125 and "no template for this guest (164 MiB RAM" in r.err, r
    # a bridge network cannot use a template
    r = run_vm(hedge, template, vm_rootfs, "--network", "bridge", "--", "true")
    assert r.code == 125 and "a template has no network device" in r.err, r
    r = run_vm(hedge, template, vm_rootfs, "--", "true", boot="warm")
    assert r.code != 0 and 'vm.boot: "warm" is not a boot path (auto, cold or snapshot)' in r.err, r
    r = hedge("run", "-i", "container", "--rootfs", vm_rootfs, "--vm-boot", "cold", "--", "true")
    assert r.code == 125 and "vm.boot: not supported with container isolation" in r.err, r
    # the spec field (hedged deployments take the same): vm.boot
    spec = dirs["state"].parent / "spec.json"
    spec.write_text(json.dumps({"isolation": "vm", "rootfs": str(vm_rootfs), "command": ["true"],
                                "resources": {"memory": "64M"}, "vm": {"boot": "snapshot", "accel": "tcg"}}))
    r = hedge("run", "-f", spec, env={"HEDGE_VM_KERNEL_DIR": str(template["kernel"])})
    assert r.code == 125 and "--vm-boot snapshot: no template for this guest (128 MiB RAM" in r.err, r
    r = hedge("vm", "template", "ls")
    assert r.code == 0 and len(r.out.splitlines()) == 1, r.out
    # a template of this guest's shape from another kernel, initramfs or QEMU (another key) is stale
    stale = dirs["state"] / "vm" / "templates" / ("1" * 64)
    stale.mkdir(parents=True)
    (stale / "manifest.json").write_text(json.dumps({"ram_bytes": 128 << 20, "vcpus": 1, "accel": "tcg",
                                                     "machine": "pc", "append": ""}))
    r = run_vm(hedge, template, vm_rootfs, "--", "true", state=dirs["state"])
    assert r.code == 125 and f"template {'1' * 12} is stale" in r.err, r
    r = hedge("vm", "template", "rm", "--all")
    assert r.code == 0 and r.out == f"removed {'1' * 12}\n" and not stale.exists(), r
    r = hedge("vm", "template", "rm", "abcd")
    assert r.code == 1 and "no template abcd" in r.err, r


def test_corrupt_template_falls_back_to_a_cold_boot(hedge, template, vm_rootfs, tmp_path):  # noqa: F811
    state_file = template["dir"] / "state"
    backup = tmp_path / "state.orig"
    shutil.copy2(state_file, backup)
    try:
        os.chmod(state_file, 0o644)
        data = bytearray(state_file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        state_file.write_bytes(data)
        os.chmod(state_file, 0o444)
        r = hedge("vm", "template", "ls", env={"HEDGE_STATE_DIR": str(template["state"])})
        assert "the state file's sha256" in r.out, r.out
        # snapshot insists: an error, no boot
        r = run_vm(hedge, template, vm_rootfs, "--", "true")
        assert r.code == 125 and "the state file's sha256" in r.err, r
        # auto: a log line, a cold boot, and the workload runs as always
        r = run_vm(hedge, template, vm_rootfs, "--", "sh", "-c", "echo cold; exit 3", boot="auto")
        assert r.code == 3 and r.out == "cold\n", r
        assert re.search(r"hedge: vm: template [0-9a-f]{12}: the state file's sha256 .*; cold boot\n", r.err), r.err
        assert "boot: snapshot" not in r.err
        # a state file that passes the checks (its sha256 forged into the manifest) but QEMU cannot load:
        # the restore fails fast with QEMU's reason, no hang (auto would boot cold as above)
        os.chmod(state_file, 0o644)
        state_file.write_bytes(backup.read_bytes()[:100000])
        manifest_file = template["dir"] / "manifest.json"
        manifest = json.loads(manifest_file.read_text())
        manifest_backup = manifest_file.read_text()
        manifest["state_sha256"] = hashlib.sha256(state_file.read_bytes()).hexdigest()
        os.chmod(manifest_file, 0o644)
        manifest_file.write_text(json.dumps(manifest))
        try:
            r = run_vm(hedge, template, vm_rootfs, "--", "true")
            assert r.code == 125 and "restore from template" in r.err and "load of migration failed" in r.err, r
        finally:
            manifest_file.write_text(manifest_backup)
            os.chmod(manifest_file, 0o444)
    finally:
        os.chmod(state_file, 0o644)
        shutil.copy2(backup, state_file)
        os.chmod(state_file, 0o444)
    # rm by key prefix
    key = template["dir"].name
    copy = template["dir"].parent / ("0" * 64)
    copy.mkdir()
    (copy / "manifest.json").write_text("{}")
    r = hedge("vm", "template", "rm", "0000", env={"HEDGE_STATE_DIR": str(template["state"])})
    assert r.code == 0 and r.out == f"removed {'0' * 12}\n", r
    assert not copy.exists() and template["dir"].exists() and key != "0" * 64
