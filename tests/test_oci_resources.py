"""hedge-oci's linux.resources beyond memory/cpu quota/pids, on the host's real cgroups: the cpuset
(cpu.cpus / cpu.mems), the CFS period, the real-time period and runtime, blockIO and hugepageLimits;
`update --cpuset-cpus/--cpuset-mems` and `update --resources`. Bad values are refused with an error
naming the field, exit 1, and leave no cgroup directory or container behind."""
import json
import os
import pathlib

import pytest

from conftest import CGROUP_PARENT
from test_oci import bundle, cgroup_dirs, oci, reap, state, subreaper  # noqa: F401 (fixtures)

BASE = pathlib.Path("/sys/fs/cgroup")


def cpuset_dir(name):
    """The container's cpuset directory: v1's cpuset hierarchy, or the v2 group."""
    v1 = BASE / "cpuset" / CGROUP_PARENT / name
    return v1 if (BASE / "cpuset").is_dir() else BASE / CGROUP_PARENT / name


def host_cpus():
    return os.sched_getaffinity(0)


def test_cpuset_cpus_and_mems_then_update(oci, bundle, subreaper):
    b = bundle("sleep", "1000", **{"linux.resources": {"cpu": {"cpus": "0", "mems": "0", "shares": 1024,
                                                               "quota": 50000, "period": 500000}}})
    r = oci("create", "--bundle", b, "cs")
    assert r.code == 0, r
    pid = state(oci, "cs")["pid"]
    d = cpuset_dir("cs")
    assert (d / "cpuset.cpus").read_text().strip() == "0"
    assert (d / "cpuset.mems").read_text().strip() == "0"
    assert str(pid) in (d / "cgroup.procs").read_text()
    # the container's process runs only on CPU 0
    assert os.sched_getaffinity(pid) == {0}
    cpu = BASE / "cpu" / CGROUP_PARENT / "cs"
    if cpu.is_dir():  # v1: shares as given, the period as given
        assert (cpu / "cpu.shares").read_text().strip() == "1024"
        assert (cpu / "cpu.cfs_period_us").read_text().strip() == "500000"
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
    if len(host_cpus()) > 1:
        every = f"0-{max(host_cpus())}"
        r = oci("update", "--cpuset-cpus", every, "cs")
        assert r.code == 0, r
        assert (d / "cpuset.cpus").read_text().strip() == every
    r = oci("update", "--cpuset-mems", "0", "--cpu-period", "100000", "cs")
    assert r.code == 0, r
    assert (d / "cpuset.mems").read_text().strip() == "0"
    if cpu.is_dir():
        assert (cpu / "cpu.cfs_period_us").read_text().strip() == "100000"
    r = oci("update", "--cpuset-mems", "0-", "cs")
    assert r.code == 1 and "linux.resources.cpu.mems" in r.err, r
    r = oci("update", "--resources", "-", "cs")  # stdin is /dev/null: not a JSON object
    assert r.code == 1 and "--resources" in r.err, r
    assert oci("delete", "--force", "cs").code == 0
    reap(pid)
    assert cgroup_dirs("cs") == []
    assert not d.exists()


def test_update_resources_file_sets_cpuset(oci, bundle, subreaper, tmp_path):
    """A group made without a cpuset gets one on update (its task moved in), removed on delete."""
    b = bundle("sleep", "1000")
    assert oci("create", "--bundle", b, "csu").code == 0
    pid = state(oci, "csu")["pid"]
    res = tmp_path / "res.json"
    res.write_text(json.dumps({"cpu": {"cpus": "0", "mems": "0"}}))
    r = oci("update", "--resources", res, "csu")
    assert r.code == 0, r
    d = cpuset_dir("csu")
    assert (d / "cpuset.cpus").read_text().strip() == "0"
    assert str(pid) in (d / "cgroup.procs").read_text()
    assert os.sched_getaffinity(pid) == {0}
    r = oci("update", "--cpuset-cpus", "abc", "csu")
    assert r.code == 1 and "linux.resources.cpu.cpus" in r.err and "abc" in r.err, r
    assert oci("delete", "--force", "csu").code == 0
    reap(pid)
    assert cgroup_dirs("csu") == [] and not d.exists()


def test_update_raises_a_memory_limit_past_its_memory_plus_swap(oci, bundle, subreaper):
    """cgroup v1 keeps limit <= memory+swap: raising both (podman update --memory) must write memsw first."""
    mem = BASE / "memory" / CGROUP_PARENT / "memup"
    b = bundle("sleep", "1000", **{"linux.resources": {"memory": {"limit": 64 << 20, "swap": 64 << 20}}})
    assert oci("create", "--bundle", b, "memup").code == 0
    pid = state(oci, "memup")["pid"]
    r = oci("update", "--memory", "512m", "--memory-swap", "1g", "memup")
    assert r.code == 0, r
    if (mem / "memory.limit_in_bytes").exists():  # v1 (this hybrid host); v2 has no such order
        assert (mem / "memory.limit_in_bytes").read_text().strip() == str(512 << 20)
        if (mem / "memory.memsw.limit_in_bytes").exists():
            assert (mem / "memory.memsw.limit_in_bytes").read_text().strip() == str(1 << 30)
    r = oci("update", "--memory", "32m", "--memory-swap", "32m", "memup")  # and down again: limit first
    assert r.code == 0, r
    assert oci("delete", "--force", "memup").code == 0
    reap(pid)
    assert cgroup_dirs("memup") == []


@pytest.mark.parametrize("cpu, field", [
    ({"cpus": "abc"}, "linux.resources.cpu.cpus"),
    ({"mems": "0-"}, "linux.resources.cpu.mems"),
    ({"cpus": "4095"}, "resources.cpuset_cpus"),
    ({"period": 10}, "linux.resources.cpu.period"),
])
def test_bad_cpu_values_are_refused_by_name(oci, bundle, subreaper, cpu, field):
    b = bundle("true", **{"linux.resources": {"cpu": cpu}})
    r = oci("create", "--bundle", b, "bad")
    assert r.code == 1 and field in r.err, r
    assert oci("state", "bad").code == 1
    assert cgroup_dirs("bad") == []


def test_cpu_the_host_lacks_names_the_parent_list(oci, bundle, subreaper):
    missing = max(host_cpus()) + 1
    b = bundle("true", **{"linux.resources": {"cpu": {"cpus": str(missing)}}})
    r = oci("create", "--bundle", b, "nocpu")
    assert r.code == 1 and "resources.cpuset_cpus" in r.err and str(missing) in r.err, r
    assert cgroup_dirs("nocpu") == []


def block_device():
    """(major, minor) of a block device the host has, for the throttles."""
    for dev in sorted(pathlib.Path("/sys/dev/block").iterdir()):
        if not (dev / "partition").exists():
            major, minor = dev.name.split(":")
            return int(major), int(minor)
    pytest.skip("no block device")


def test_blkio_throttle_is_written_and_a_missing_device_is_refused(oci, bundle, subreaper):
    major, minor = block_device()
    bio = {"throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1 << 20}],
           "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 100}]}
    b = bundle("sleep", "1000", **{"linux.resources": {"blockIO": bio}})
    r = oci("create", "--bundle", b, "bio")
    if (BASE / "blkio").is_dir():
        assert r.code == 0, r
        pid = state(oci, "bio")["pid"]
        d = BASE / "blkio" / CGROUP_PARENT / "bio"
        assert f"{major}:{minor} {1 << 20}" in (d / "blkio.throttle.read_bps_device").read_text()
        assert f"{major}:{minor} 100" in (d / "blkio.throttle.write_iops_device").read_text()
        assert str(pid) in (d / "cgroup.procs").read_text()
        assert oci("delete", "--force", "bio").code == 0
        reap(pid)
    else:
        assert r.code == 1 and "resources.blkio" in r.err, r
    assert cgroup_dirs("bio") == []
    # a device the host does not have
    bio = {"throttleReadBpsDevice": [{"major": 250, "minor": 4000, "rate": 1 << 20}]}
    b = bundle("true", **{"linux.resources": {"blockIO": bio}})
    r = oci("create", "--bundle", b, "bio2")
    assert r.code == 1 and "throttle_read_bps_device[0]" in r.err and "250:4000" in r.err, r
    assert cgroup_dirs("bio2") == []


def test_blkio_weight_without_a_weight_file_and_bad_values(oci, bundle, subreaper):
    blkio = BASE / "blkio"
    if blkio.is_dir() and not ((blkio / "blkio.weight").exists() or (blkio / "blkio.bfq.weight").exists()):
        b = bundle("true", **{"linux.resources": {"blockIO": {"weight": 500}}})
        r = oci("create", "--bundle", b, "bw")
        assert r.code == 1 and "resources.blkio.weight" in r.err, r
        assert cgroup_dirs("bw") == []
    b = bundle("true", **{"linux.resources": {"blockIO": {"weight": 5}}})
    r = oci("create", "--bundle", b, "bw")
    assert r.code == 1 and "linux.resources.blockIO.weight" in r.err, r
    b = bundle("true", **{"linux.resources": {"blockIO": {"weightDevice": [{"major": 8, "weight": 500}]}}})
    r = oci("create", "--bundle", b, "bw")
    assert r.code == 1 and "linux.resources.blockIO.weightDevice[0].minor" in r.err, r
    assert cgroup_dirs("bw") == []


def test_hugepage_limits(oci, bundle, subreaper):
    limits = [{"pageSize": "2MB", "limit": 4 << 20}]
    b = bundle("sleep", "1000", **{"linux.resources": {"hugepageLimits": limits}})
    r = oci("create", "--bundle", b, "huge")
    v1 = BASE / "hugetlb"
    if v1.is_dir() and (v1 / "hugetlb.2MB.limit_in_bytes").exists():
        assert r.code == 0, r
        pid = state(oci, "huge")["pid"]
        assert int((v1 / CGROUP_PARENT / "huge" / "hugetlb.2MB.limit_in_bytes").read_text()) == 4 << 20
        assert oci("delete", "--force", "huge").code == 0
        reap(pid)
    elif not v1.is_dir() and (BASE / "memory").is_dir():  # v1/hybrid without a hugetlb hierarchy
        assert r.code == 1 and "resources.hugepage_limits" in r.err and "hugetlb" in r.err, r
    assert cgroup_dirs("huge") == []
    b = bundle("true", **{"linux.resources": {"hugepageLimits": [{"pageSize": "2XB", "limit": 1}]}})
    r = oci("create", "--bundle", b, "huge2")
    assert r.code == 1 and "linux.resources.hugepageLimits[0].pageSize" in r.err, r
    assert cgroup_dirs("huge2") == []


def test_realtime_period_and_runtime_as_runc(oci, bundle, subreaper):
    """runc writes cpu.rt_period_us and cpu.rt_runtime_us (v1, CONFIG_RT_GROUP_SCHED): so does hedge-oci."""
    cpu_root = BASE / "cpu"
    if not (cpu_root / "cpu.rt_runtime_us").exists():
        pytest.skip("no v1 cpu.rt_runtime_us (no CONFIG_RT_GROUP_SCHED or not v1)")
    # the parent hedge makes has no RT budget of its own: a group at the top (one-component path) gets it
    name = f"hedge-oci-rt-{os.getpid()}"
    b = bundle("sleep", "1000", **{"linux.cgroupsPath": f"/{name}",
                                   "linux.resources": {"cpu": {"realtimePeriod": 1000000,
                                                               "realtimeRuntime": 10000}}})
    try:
        r = oci("create", "--bundle", b, "rt")
        assert r.code == 0, r
        pid = state(oci, "rt")["pid"]
        assert (cpu_root / name / "cpu.rt_period_us").read_text().strip() == "1000000"
        assert (cpu_root / name / "cpu.rt_runtime_us").read_text().strip() == "10000"
        r = oci("update", "--cpu-rt-runtime", "5000", "rt")
        assert r.code == 0, r
        assert (cpu_root / name / "cpu.rt_runtime_us").read_text().strip() == "5000"
        assert oci("delete", "--force", "rt").code == 0
        reap(pid)
        assert not (cpu_root / name).exists()
    finally:
        for p in list(BASE.glob(f"*/{name}")) + [BASE / name]:
            if p.is_dir():
                p.rmdir()


def test_cpuset_on_cgroup_v2_needs_the_controller(oci, bundle, subreaper):
    """HEDGE_CGROUP_MODE=v2: the cpuset lists go to the group's cpuset.cpus/mems with +cpuset enabled above
    it; a unified hierarchy without the cpuset controller (a hybrid host's) is an error naming the field."""
    unified = BASE / "unified" if (BASE / "unified" / "cgroup.controllers").exists() else BASE
    if not (unified / "cgroup.controllers").exists():
        pytest.skip("no cgroup2 hierarchy")
    b = bundle("sleep", "1000", **{"linux.resources": {"cpu": {"cpus": "0"}}})
    r = oci("create", "--bundle", b, "cs2", env={"HEDGE_CGROUP_MODE": "v2"})
    if "cpuset" not in (unified / "cgroup.controllers").read_text().split():
        assert r.code == 1 and "resources.cpuset_cpus: the cpuset controller is not available" in r.err, r
    else:
        assert r.code == 0, r
        pid = state(oci, "cs2")["pid"]
        assert (unified / CGROUP_PARENT / "cs2" / "cpuset.cpus").read_text().strip() == "0"
        assert oci("delete", "--force", "cs2", env={"HEDGE_CGROUP_MODE": "v2"}).code == 0
        reap(pid)
    assert not (unified / CGROUP_PARENT / "cs2").exists()
