"""Shared fixtures for the black-box tests: they drive the real `hedge` binary as root.

HEDGE_BUILD points at the meson build dir (make sets it); HEDGE_SANITIZED=1
marks an ASan+UBSan build, whose reports fail the test that triggered them.
Every test gets its own state and runtime dirs, and an autouse fixture checks
that nothing of a run is left behind: no cgroup, mount, run dir or process.
"""
import os
import shutil
import subprocess
import pathlib
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUILD = pathlib.Path(os.environ.get("HEDGE_BUILD", ROOT / "build"))
HEDGE = BUILD / "hedge"
SANITIZED = os.environ.get("HEDGE_SANITIZED") == "1"

# Each test session uses its own cgroup parent (hedge-test-<pid> instead of
# hedge), so parallel sessions never see each other's groups.
CGROUP_PARENT = f"hedge-test-{os.getpid()}"

SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=99",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=99",
    "LSAN_OPTIONS": "exitcode=99",
}


class Result:
    def __init__(self, proc):
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def __repr__(self):
        return f"<Result code={self.code} out={self.out!r} err={self.err!r}>"


def check_sanitizer(text):
    for marker in ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:"):
        assert marker not in text, "sanitizer report:\n" + text


@pytest.fixture
def dirs(tmp_path):
    """Per-test state and runtime dirs."""
    state = tmp_path / "state"
    run = tmp_path / "run"
    state.mkdir()
    run.mkdir()
    return {"state": state, "run": run}


@pytest.fixture
def hedge(dirs):
    """hedge(*args, input=None, timeout=60, env=None) -> Result; runs the real binary."""

    def run(*args, input=None, timeout=60, env=None, check_leftovers=True):
        e = dict(os.environ)
        e.update(SANITIZER_ENV)
        e["HEDGE_STATE_DIR"] = str(dirs["state"])
        e["HEDGE_RUN_DIR"] = str(dirs["run"])
        e["HEDGE_CGROUP_PARENT"] = CGROUP_PARENT
        if env:
            e.update(env)
        proc = subprocess.run([str(HEDGE), *map(str, args)], input=input, capture_output=True,
                              text=True, timeout=timeout, env=e)
        check_sanitizer(proc.stderr)
        return Result(proc)

    run.env = lambda: {**os.environ, **SANITIZER_ENV, "HEDGE_STATE_DIR": str(dirs["state"]),
                       "HEDGE_RUN_DIR": str(dirs["run"]), "HEDGE_CGROUP_PARENT": CGROUP_PARENT}
    run.binary = str(HEDGE)
    return run


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory):
    """A minimal root filesystem: Debian's static busybox with its applet links."""
    root = tmp_path_factory.mktemp("busybox") / "rootfs"
    subprocess.run([str(ROOT / "scripts" / "mk-busybox-rootfs"), str(root)], check=True)
    return root


def hedge_cgroups():
    """Every <parent>/<id> cgroup directory of this test session, in any hierarchy."""
    found = []
    base = pathlib.Path("/sys/fs/cgroup")
    for parent in [base / CGROUP_PARENT] + list(base.glob("*/" + CGROUP_PARENT)):
        if parent.is_dir():
            found += [str(p) for p in parent.iterdir() if p.is_dir()]
    return sorted(found)


def mounts_under(path):
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path))]


@pytest.fixture(autouse=True)
def nothing_left_behind(request, dirs):
    """After each test: no new hedge cgroup, no mount or run dir below the test's dirs."""
    before = set(hedge_cgroups())
    yield
    if request.node.get_closest_marker("leaves_state"):
        return
    after = set(hedge_cgroups())
    assert after - before == set(), f"cgroups left behind: {sorted(after - before)}"
    for d in dirs.values():
        assert mounts_under(d) == [], f"mounts left behind under {d}"
    runs = dirs["run"] / "runs"
    if runs.exists():
        assert list(runs.iterdir()) == [], f"run dirs left behind: {list(runs.iterdir())}"


@pytest.fixture(scope="session", autouse=True)
def remove_session_cgroup_parent():
    """The session's cgroup parent is created by hedge on first use; remove it (empty) at the end."""
    yield
    base = pathlib.Path("/sys/fs/cgroup")
    for parent in [base / CGROUP_PARENT] + list(base.glob("*/" + CGROUP_PARENT)):
        if parent.is_dir():
            try:
                parent.rmdir()
            except OSError as e:
                pytest.fail(f"cgroup parent {parent} not empty at session end: {e}")


# ---- images (tests/test_image.py; other tests run containers from them) ----

def build_oci_layout(layout, rootfs_dir, tag="latest", cmd=None):
    """Make an OCI image layout with umoci whose one layer is the tree rootfs_dir; returns the layout dir."""
    if shutil.which("umoci") is None:
        pytest.skip("umoci is not installed (deps/image.txt)")
    layout = pathlib.Path(layout)
    bundle = layout.parent / (layout.name + "-bundle")
    ref = f"{layout}:{tag}"
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True, capture_output=True)
    subprocess.run(["umoci", "new", "--image", ref], check=True, capture_output=True)
    subprocess.run(["umoci", "unpack", "--image", ref, str(bundle)], check=True, capture_output=True)
    subprocess.run(["cp", "-a", f"{rootfs_dir}/.", str(bundle / "rootfs")], check=True)
    subprocess.run(["umoci", "repack", "--image", ref, str(bundle)], check=True, capture_output=True)
    if cmd is not None:
        args = ["umoci", "config", "--image", ref]
        for word in cmd:
            args += ["--config.cmd", word]
        subprocess.run(args, check=True, capture_output=True)
    shutil.rmtree(bundle)
    return layout


@pytest.fixture(scope="session")
def busybox_image_tar(tmp_path_factory):
    """An OCI archive (tar of an OCI layout) of a busybox rootfs, config Cmd ["sh"]; tag "latest", no name.
    Built from a rootfs of its own: busybox_rootfs is written in place by container runs."""
    work = tmp_path_factory.mktemp("busybox-image")
    rootfs = work / "rootfs"
    subprocess.run([str(ROOT / "scripts" / "mk-busybox-rootfs"), str(rootfs)], check=True)
    layout = build_oci_layout(work / "layout", rootfs, cmd=["sh"])
    tarball = work / "busybox.tar"
    subprocess.run(["tar", "-C", str(layout), "-cf", str(tarball), "."], check=True)
    return tarball


@pytest.fixture
def imported_busybox(hedge, busybox_image_tar):
    """busybox_image_tar imported as busybox:latest into this test's state dir; returns its image id."""
    r = hedge("image", "import", busybox_image_tar, "--name", "busybox:latest")
    assert r.code == 0, r
    return r.out.split()[-1]


def pytest_configure(config):
    config.addinivalue_line("markers", "leaves_state: skip the nothing_left_behind check (the test cleans up itself)")
