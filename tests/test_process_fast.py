"""The fast path of the static `hedge`: `hedge run -i process -- CMD` before glibc starts (src/cli/fast_run.c).

The plain run (no flag but the isolation, on a hybrid or v2 layout, its cgroup parent made) runs from the
ELF entry with raw system calls; everything else jumps to glibc's _start. strace tells the two apart:
glibc's start-up sets its thread pointer with arch_prctl(ARCH_SET_FS), the fast path never does. The
other test files drive the fast path too (tests/test_process.py: exit codes, signals, stdin, env; exec
failures fall back; tests/test_limits.py: leftover tasks on each layout); here are what only it has: the
choice between the two paths, concurrent runs, OOM seen through a limit above the group, sub-groups
made by the workload. The autouse fixture fails any test that leaves a cgroup or run dir behind."""
import os
import pathlib
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import BUILD, CGROUP_PARENT, HEDGE

CGROUP = pathlib.Path("/sys/fs/cgroup")
PYTHON = "/usr/bin/python3"


def is_static(path):
    out = subprocess.run(["readelf", "-l", str(path)], capture_output=True, text=True, check=True).stdout
    return "INTERP" not in out


needs_static = pytest.mark.skipif(
    not is_static(HEDGE) or os.uname().machine != "x86_64",
    reason="this build has no fast path: hedge is linked dynamically (sanitizer build or -Dstatic_libs=false) "
           "or the host is not x86-64 (the fast path's entry is x86-64 assembly)")


def host_mode():
    env = {k: v for k, v in os.environ.items() if k != "HEDGE_CGROUP_MODE"}
    out = subprocess.run([str(HEDGE), "version"], capture_output=True, text=True, env=env).stdout
    return re.search(r"^cgroups: (\S+)$", out, re.M).group(1)


MODE = host_mode()
# the layouts the fast path takes: the host's own (hybrid or v2) and v2 forced on a hybrid host
FAST_MODES = [m for m in (MODE, "v2") if m in ("hybrid", "v2")]
FAST_MODES = sorted(set(FAST_MODES), key=FAST_MODES.index)


def traced(hedge, *args, env=None, input=None):
    """Run hedge under strace; (result, whether hedge itself started glibc)."""
    log = pathlib.Path(hedge.env()["HEDGE_RUN_DIR"]) / "strace.log"
    e = hedge.env()
    e.update(env or {})
    p = subprocess.run(["strace", "-f", "-qq", "-o", str(log), "-e", "trace=execve,arch_prctl", str(HEDGE),
                        *map(str, args)], capture_output=True, text=True, env=e, timeout=60, input=input)
    lines = log.read_text().splitlines()
    log.unlink()
    hedge_pid = lines[0].split()[0]
    libc = any(line.split()[0] == hedge_pid and "arch_prctl(ARCH_SET_FS" in line for line in lines)
    return p, libc


def nested_parent(name):
    """A cgroup parent below the session's: made by the first (full) run, removed by remove_nested."""
    return f"{CGROUP_PARENT}/{name}"


def remove_nested(parent):
    for d in [CGROUP / parent] + list(CGROUP.glob("*/" + parent)):
        if d.is_dir() and not d.is_symlink():
            d.rmdir()


@needs_static
def test_plain_run_does_not_start_the_c_library(hedge):
    hedge("run", "-i", "process", "--", "true")  # the session's cgroup parent exists from here on
    for args in (["-i", "process", "--"], ["--isolation", "process"], ["--isolation=process", "--"], ["--"]):
        p, libc = traced(hedge, "run", *args, "sh", "-c", "echo hi; exit 3")
        assert (p.returncode, p.stdout) == (3, "hi\n"), (args, p)
        assert not libc, f"hedge run {' '.join(args)} started glibc: not the fast path"


@needs_static
def test_everything_else_takes_the_full_path(hedge):
    hedge("run", "-i", "process", "--", "true")
    cases = [
        (["run", "-i", "process", "-e", "X=1", "--", "sh", "-c", "echo $X"], {}, "1\n"),
        (["run", "-i", "process", "--", "sh", "-c", "echo v1"], {"HEDGE_CGROUP_MODE": "v1"}, "v1\n"),
        (["--state-dir", "/tmp", "run", "-i", "process", "--", "echo", "g"], {}, "g\n"),
    ]
    if MODE not in ("hybrid", "v2"):
        cases.append((["run", "-i", "process", "--", "echo", "own"], {}, "own\n"))
    for args, env, out in cases:
        p, libc = traced(hedge, *args, env=env)
        assert (p.returncode, p.stdout) == (0, out), (args, env, p)
        assert libc, f"{args} {env}: expected the full path"


@needs_static
def test_a_new_cgroup_parent_is_made_by_the_full_path_then_used(hedge):
    parent = nested_parent("fresh")
    try:
        p, libc = traced(hedge, "run", "-i", "process", "--", "true", env={"HEDGE_CGROUP_PARENT": parent})
        assert p.returncode == 0 and libc, p
        p, libc = traced(hedge, "run", "-i", "process", "--", "true", env={"HEDGE_CGROUP_PARENT": parent})
        assert p.returncode == 0 and not libc, p
    finally:
        remove_nested(parent)


@needs_static
def test_exec_failure_is_undone_and_reported_by_the_full_path(hedge):
    hedge("run", "-i", "process", "--", "true")
    p, libc = traced(hedge, "run", "-i", "process", "--", "no-such-command-xyz")
    assert p.returncode == 127 and libc, p
    assert p.stderr == "hedge: exec no-such-command-xyz: command not found in PATH\n"


@pytest.mark.parametrize("mode", FAST_MODES)
def test_concurrent_runs_get_their_own_groups(hedge, mode):
    hedge("run", "-i", "process", "--", "true", env={"HEDGE_CGROUP_MODE": mode})

    def one(i):
        return hedge("run", "-i", "process", "--", "sh", "-c", f"cat /proc/self/cgroup; exit {i % 7}",
                     env={"HEDGE_CGROUP_MODE": mode})

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(24)))
    groups = set()
    for i, r in enumerate(results):
        assert r.code == i % 7, r
        unified = [line.split(":", 2)[2] for line in r.out.splitlines() if line.startswith("0::")]
        assert len(unified) == 1 and unified[0].startswith(f"/{CGROUP_PARENT}/"), r.out
        groups.add(unified[0])
    assert len(groups) == 24


def memory_dir_of(out):
    """The workload's v1 memory group (hybrid) from its /proc/self/cgroup."""
    for line in out.splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
    return None


@pytest.mark.skipif(MODE != "hybrid", reason="OOM in a parent's v1 memory limit: a hybrid host's layout")
def test_oom_through_a_limit_above_the_group_is_reported(hedge):
    """No memory flag, so the fast path runs it; a limit on its cgroup parent makes the kernel OOM-kill it,
    and hedge reports it as the full path does for a group without a limit of its own."""
    parent = nested_parent("oom")
    env = {"HEDGE_CGROUP_PARENT": parent}
    try:
        r = hedge("run", "-i", "process", "--", "cat", "/proc/self/cgroup", env=env)
        assert r.code == 0, r
        memory = CGROUP / "memory" / parent
        (memory / "memory.limit_in_bytes").write_text(str(32 << 20))
        if (memory / "memory.memsw.limit_in_bytes").exists():
            (memory / "memory.memsw.limit_in_bytes").write_text(str(32 << 20))
        r = hedge("run", "-i", "process", "--", PYTHON, "-c", "b = bytearray(b'x') * (200 << 20); print('survived')",
                  env=env)
        assert r.code == 137, r
        assert "survived" not in r.out
        assert r.err == ("hedge: OOM-killed: the kernel killed the workload because the host ran out of "
                         "memory\n"), r.err
        r = hedge("run", "-i", "process", "--", "sh", "-c", "kill -KILL $$", env=env)
        assert r.code == 137 and "OOM" not in r.err, r
    finally:
        remove_nested(parent)


SUB_GROUPS = r"""
import os, sys
for line in open("/proc/self/cgroup"):
    _, controllers, path = line.rstrip("\n").split(":", 2)
    if controllers == "":
        root = "/sys/fs/cgroup" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "/sys/fs/cgroup/unified"
    elif "memory" in controllers.split(","):
        root = "/sys/fs/cgroup/memory"
    else:
        continue
    if not path.startswith(sys.argv[1]):
        continue  # not hedge's group (the memory hierarchy when v2 is forced on a hybrid host)
    os.makedirs(root + path + "/made/deeper")
    print(root + path + "/made/deeper")
"""


@pytest.mark.parametrize("mode", FAST_MODES)
def test_sub_groups_the_workload_made_are_removed(hedge, mode):
    hedge("run", "-i", "process", "--", "true", env={"HEDGE_CGROUP_MODE": mode})
    r = hedge("run", "-i", "process", "--", PYTHON, "-c", SUB_GROUPS, f"/{CGROUP_PARENT}/", env={"HEDGE_CGROUP_MODE": mode})
    assert r.code == 0, r
    made = r.out.split()
    assert made, r
    for d in made:
        assert not os.path.exists(d), d
        assert not os.path.exists(os.path.dirname(os.path.dirname(d))), d


@pytest.mark.parametrize("mode", FAST_MODES)
def test_stopped_and_continued_workload_is_waited_for(hedge, mode):
    """SIGCHLD also comes for a stop and a continue: hedge goes on waiting for the exit."""
    hedge("run", "-i", "process", "--", "true", env={"HEDGE_CGROUP_MODE": mode})
    r = hedge("run", "-i", "process", "--", "sh", "-c",
              "(sleep 0.1; kill -STOP $$; sleep 0.2; kill -CONT $$) & wait; exit 5",
              env={"HEDGE_CGROUP_MODE": mode}, timeout=30)
    assert r.code == 5, r


def test_fast_path_object_calls_nothing():
    """Nothing of libc is initialised when it runs: its object may need no symbol but glibc's _start."""
    archive = BUILD / "libhedge-fast-run.a"
    if not archive.exists():
        pytest.skip("this build has no fast path (sanitizer build or -Dstatic_libs=false)")
    out = subprocess.run(["nm", "-u", str(archive)], capture_output=True, text=True, check=True).stdout
    undefined = [line.split()[-1] for line in out.splitlines() if line.strip().startswith("U ")]
    assert undefined == ["_start"], undefined
