"""The warm pool (issue 16): hedged keeps restored clones of each VM template waiting, and a vm deployment
of that shape takes one (docs/vm.md#the-warm-pool).

Guests under TCG are slow, so the file restores few: the template is built once (test_vm_template's
module fixture) and copied into each daemon's state dir; every clone is a restore, never a cold boot.
"""
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import BUILD, CGROUP_PARENT, hedge_cgroups
from test_daemon import Daemon, pids_mentioning, wait_for
from test_vm import guest_kernel, vm_rootfs  # noqa: F401 (fixtures)
from test_vm_template import template  # noqa: F401 (fixture: one template, 64M workload = 128 MiB guest, TCG)

RESTORE_WAIT = 120  # a clone's restore under TCG, ASan and a loaded host


def metrics(d):
    code, text = d.api("GET", "/metrics")
    assert code == 200
    values = {}
    for line in text.splitlines():
        m = re.match(r'(hedge_vm_pool_\w+(?:\{state="\w+"\})?) (\d+)$', line)
        if m:
            values[m.group(1)] = int(m.group(2))
    return values


def ready(d):
    return metrics(d).get('hedge_vm_pool_clones{state="ready"}', 0)


def pool_cgroups():
    """The pool's groups by name (each is in every hierarchy hedge uses)."""
    return sorted({pathlib.Path(g).name for g in hedge_cgroups() if pathlib.Path(g).name.startswith("vm-pool-")})


@pytest.fixture
def pooled_daemon(tmp_path, hedge, template, monkeypatch, dirs):  # noqa: F811
    """A hedged whose state dir holds the template (copied), with HEDGE_VM_KERNEL_DIR set."""
    monkeypatch.setenv("HEDGE_VM_KERNEL_DIR", str(template["kernel"]))
    made = []

    def make(config=None, name="d"):
        d = Daemon(tmp_path, hedge, name, config)
        dst = d.state / "vm" / "templates" / template["dir"].name
        dst.parent.mkdir(parents=True)
        shutil.copytree(template["dir"], dst)
        made.append(d)
        return d.start()

    yield make
    for d in made:
        d.cleanup()
    # the waiting clones went with hedged: no QEMU, cgroup or dir of the pool is left
    assert not pids_mentioning(str(dirs["run"] / "vm-pool")), "pool QEMUs left behind"
    assert pool_cgroups() == []
    assert not (dirs["run"] / "vm-pool").exists() or list((dirs["run"] / "vm-pool").iterdir()) == []


def vm_spec(name, command, **extra):
    return {"name": name, "isolation": "vm", "rootfs": None, "command": command,
            "resources": {"memory": "64M"}, "vm": {"accel": "tcg"}, "restart": {"policy": "never"}, **extra}


CLONE = ["/bin/sh", "-c", "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s; hostname; "
         "cat /etc/machine-id; exit 3"]


def test_deployments_take_waiting_clones_each_its_own_and_the_pool_refills(pooled_daemon, vm_rootfs):  # noqa: F811
    d = pooled_daemon()
    wait_for(lambda: ready(d) == 1, timeout=RESTORE_WAIT, what="a clone ready in the pool")
    outputs = []
    for n in (1, 2):  # the second takes the clone the pool made after the first
        if n == 2:
            wait_for(lambda: ready(d) == 1, timeout=RESTORE_WAIT, what="the pool refilled")
        spec = vm_spec(f"c{n}", CLONE)
        spec["rootfs"] = str(vm_rootfs)
        t0 = time.time()
        r = d.deploy(spec)
        assert r.code == 0, r
        w = d.wait_state(f"c{n}", "exited", "failed", timeout=60)
        assert w["last_error"] == "exited with code 3", w
        logs = d.cli("logs", f"c{n}")
        assert logs.code == 0, logs
        lines = logs.out.split()
        assert len(lines) == 4, logs
        outputs.append(lines)
        assert abs(int(lines[1]) - t0) <= 5, f"guest clock {lines[1]} vs host {t0}"  # the host's clock, not the template's
        assert re.fullmatch(r"[0-9a-f]{12}", lines[2]), lines  # its own hostname: the run id (no spec hostname)
    monitor_log = (d.state / "monitor.log").read_text()
    assert monitor_log.count("boot: pool (template ") == 2, monitor_log
    assert "restored in" not in monitor_log  # no restore of its own: both came from the pool
    (a, _, _, id_a), (b, _, _, id_b) = outputs
    assert re.fullmatch(r"[0-9a-f]{64}", a) and a != b, "two clones from the pool gave the same random bytes"
    assert id_a != id_b and outputs[0][2] != outputs[1][2]  # machine ids, hostnames
    assert metrics(d)["hedge_vm_pool_taken_total"] == 2
    wait_for(lambda: ready(d) == 1, timeout=RESTORE_WAIT, what="the pool refilled")
    assert metrics(d)["hedge_vm_pool_rss_bytes"] > 16 << 20  # a waiting QEMU, counted


def test_a_taken_clone_runs_in_the_workloads_cgroup_and_stops_like_any_vm(pooled_daemon, vm_rootfs):  # noqa: F811
    d = pooled_daemon()
    wait_for(lambda: ready(d) == 1, timeout=RESTORE_WAIT, what="a clone ready in the pool")
    spec = vm_spec("long", ["/bin/sh", "-c", "echo up; exec sleep 1000"])
    spec["rootfs"] = str(vm_rootfs)
    assert d.deploy(spec).code == 0
    w = d.wait_state("long", "running", timeout=60)
    wait_for(lambda: "up" in d.cli("logs", "long").out, timeout=60, what="the workload's output")
    qemu = w["pid"]
    assert "qemu-system" in pathlib.Path(f"/proc/{qemu}/cmdline").read_text()
    cgroups = pathlib.Path(f"/proc/{qemu}/cgroup").read_text()
    assert f"/{CGROUP_PARENT}/" in cgroups and "vm-pool-" not in cgroups, cgroups  # moved out of the pool's group
    assert "boot: pool (template " in (d.state / "monitor.log").read_text()
    assert d.ps("long")["vm_boot"] == "pool"  # which path the start took: the API and hedge ps say it
    row = next(line for line in d.cli("ps").out.splitlines() if line.startswith("long "))
    assert row.split()[2] == "vm/pool", row
    assert d.cli("stop", "long").code == 0
    d.wait_state("long", "stopped", "exited", timeout=30)
    wait_for(lambda: not os.path.exists(f"/proc/{qemu}"), timeout=10, what="QEMU to end")


def test_kill9_of_hedged_ends_the_waiting_clones(pooled_daemon, dirs):
    d = pooled_daemon(config={"vm_pool": 2})
    wait_for(lambda: ready(d) == 2, timeout=RESTORE_WAIT, what="two clones ready")
    qemus = pids_mentioning(str(dirs["run"] / "vm-pool"))
    assert len(qemus) == 2, qemus
    assert len(pool_cgroups()) == 2
    d.kill9()
    # each member sees its socket end, kills its QEMU, removes its cgroup and dir
    wait_for(lambda: not pids_mentioning(str(dirs["run"] / "vm-pool")), timeout=15, what="pool QEMUs to end")
    wait_for(lambda: pool_cgroups() == [], timeout=15, what="pool cgroups removed")
    d.start()  # cleanup stops it; a new pool starts meanwhile and goes with it


def test_a_corrupt_template_is_logged_and_never_pooled(pooled_daemon, template):  # noqa: F811
    d = pooled_daemon(config={"vm_pool": 1})
    d.stop()
    state = d.state / "vm" / "templates" / template["dir"].name / "state"
    os.chmod(state, 0o644)
    data = bytearray(state.read_bytes())
    data[100] ^= 0xFF
    state.write_bytes(bytes(data))
    d.start()
    wait_for(lambda: "vm-pool: template " in d.errlog.read_text(), timeout=30, what="the pool's log line")
    log = d.errlog.read_text()
    assert "sha256" in log.lower() or "corrupt" in log.lower() or "state" in log, log
    assert ready(d) == 0
    assert pool_cgroups() == []


def test_vm_pool_config_is_checked(tmp_path, hedge):
    for bad in (-1, 17, "two"):
        cfg = tmp_path / "bad.json"
        cfg.write_text(json.dumps({"vm_pool": bad}))
        p = subprocess.run([str(BUILD / "hedged"), "--check", str(cfg)], capture_output=True, text=True,
                           env=hedge.env(), timeout=30)
        assert p.returncode != 0
        assert "vm_pool" in p.stderr and "0..16" in p.stderr, p.stderr


def test_a_stale_template_is_logged_and_never_pooled(pooled_daemon, template):  # noqa: F811
    """A template of this guest's shape built from another kernel, initramfs or QEMU (here: under another key)
    is refused by the member before any QEMU starts, and hedged says why once."""
    d = pooled_daemon(config={"vm_pool": 1})
    d.stop()
    tdir = d.state / "vm" / "templates"
    (tdir / template["dir"].name).rename(tdir / ("0" * 64))
    d.start()
    wait_for(lambda: "stale" in d.errlog.read_text(), timeout=30, what="the pool's log line")
    assert f"vm-pool: template {'0' * 12}: stale: built from another kernel, initramfs or QEMU" in d.errlog.read_text()
    assert ready(d) == 0
    assert pool_cgroups() == []


def test_a_member_killed_while_waiting_leaves_nothing_and_is_replaced(pooled_daemon, dirs):
    """SIGTERM: the member removes its clone itself. SIGKILL: QEMU dies with it (PDEATHSIG) and hedged removes
    the clone's cgroup and dir. Either way the pool refills."""
    d = pooled_daemon(config={"vm_pool": 1})
    pool_dir = dirs["run"] / "vm-pool"
    gone = set()
    for sig, swept in ((signal.SIGTERM, False), (signal.SIGKILL, True)):
        # After a SIGTERM the member removes its clone before hedged reads its socket's end, so the count can
        # still say ready for a moment: wait for a clone that is not one killed before.
        wait_for(lambda: ready(d) == 1 and set(os.listdir(pool_dir) if pool_dir.exists() else ()) - gone,
                 timeout=RESTORE_WAIT, what="a new clone ready in the pool")
        (qemu,) = pids_mentioning(str(pool_dir))
        member = int(pathlib.Path(f"/proc/{qemu}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert "--vm-pool" in pathlib.Path(f"/proc/{member}/cmdline").read_text()
        (clone,) = list(pool_dir.iterdir())
        gone.add(clone.name)
        os.kill(member, sig)
        wait_for(lambda: not (pool_dir / clone.name).exists(), timeout=15, what="the clone's dir removed")
        wait_for(lambda: f"vm-pool-{clone.name}" not in pool_cgroups(), timeout=15, what="its cgroup removed")
        assert not os.path.exists(f"/proc/{qemu}/cmdline") or "qemu" not in open(f"/proc/{qemu}/cmdline").read()
        assert (f"removed what the pool member of clone {clone.name} left" in d.errlog.read_text()) == swept
    wait_for(lambda: ready(d) == 1, timeout=RESTORE_WAIT, what="the pool refilled")
