"""The static `hedge` and its dynamic twin `hedge-full` (issue 18 part 3, src/base/dynlib.h).

`hedge` is linked statically so that `hedge run -i process` starts without a dynamic loader. A command that
needs a shared library (OpenSSL, SQLite, libcurl, libarchive, libmnl, libnftables) is handed over to
hedge-full, the same CLI linked dynamically, before it has done anything; without hedge-full the command
fails with a clear error that names it, and leaves nothing behind (the autouse fixture checks cgroups and
run dirs). The ASan build links hedge dynamically: there the static checks are skipped, and why is said."""
import json
import shutil
import subprocess

import pytest

from conftest import BUILD, HEDGE


def is_static(path):
    out = subprocess.run(["readelf", "-l", str(path)], capture_output=True, text=True, check=True).stdout
    return "INTERP" not in out


needs_static = pytest.mark.skipif(not is_static(HEDGE), reason="this build links hedge dynamically "
                                  "(sanitizer build or -Dstatic_libs=false): there is no hand-over")


@pytest.fixture
def alone(tmp_path):
    """A copy of hedge with no hedge-full beside it (and none installed in libexecdir on this machine)."""
    d = tmp_path / "alone"
    d.mkdir()
    shutil.copy2(HEDGE, d / "hedge")
    return d / "hedge"


def run(binary, hedge, *args, **kw):
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, env=hedge.env(),
                          timeout=60, **kw)


def test_twin_is_dynamic_and_links_no_heavy_library():
    out = subprocess.run(["readelf", "-d", str(BUILD / "hedge-full")], capture_output=True, text=True,
                         check=True).stdout
    needed = [line for line in out.splitlines() if "(NEEDED)" in line]
    assert needed, out
    for lib in ("libsqlite3", "libssl", "libcrypto", "libcurl", "libarchive", "libmnl", "libnftables"):
        assert not any(lib in line for line in needed), needed


@needs_static
def test_run_and_api_verbs_need_no_twin(hedge, alone, busybox_rootfs):
    """A bare process, a container without a network of its own (lo is brought up without libmnl) and the
    version verb run in the static hedge itself."""
    r = run(alone, hedge, "run", "-i", "process", "--", "/bin/sh", "-c", "echo static; exit 3")
    assert r.returncode == 3 and r.stdout == "static\n", r
    r = run(alone, hedge, "run", "-i", "container", "--rootfs", busybox_rootfs, "--", "/bin/sh", "-c",
            "cat /sys/class/net/lo/flags")
    assert r.returncode == 0, r
    assert int(r.stdout.strip(), 16) & 0x1, r.stdout  # IFF_UP
    r = run(alone, hedge, "version")
    assert r.returncode == 0 and r.stdout.startswith("hedge "), r


@needs_static
def test_library_verbs_are_handed_over(hedge):
    """`hedge image ls` (libarchive, libcurl) runs through hedge-full, with the same arguments and exit code."""
    r = run(HEDGE, hedge, "image", "ls")
    assert r.returncode == 0 and r.stdout.startswith("NAME:TAG"), r
    r = run(HEDGE, hedge, "image", "rm", "no-such-image:1")
    assert r.returncode != 0 and "no-such-image" in r.stderr, r
    assert "hedge-full" not in r.stderr, r


@needs_static
def test_without_twin_a_library_verb_fails_clearly(hedge, alone):
    r = run(alone, hedge, "image", "ls")
    assert r.returncode == 125, r
    assert "image: this hedge is linked statically" in r.stderr and "hedge-full: not next to" in r.stderr, r


@needs_static
def test_a_workload_with_secrets_is_handed_over_before_it_starts(hedge, alone, tmp_path):
    """Secrets need libcrypto: the run goes to hedge-full before a cgroup exists; without hedge-full it fails
    naming why, and nothing of the workload is left (checked by the autouse fixture)."""
    assert hedge("secret", "set", "db", input="s3cret").code == 0
    spec = tmp_path / "p.json"
    spec.write_text(json.dumps({"name": "p", "isolation": "process", "command": ["sh", "-c", "echo \"$DB\""],
                                "secrets": [{"name": "db", "env": "DB"}]}))
    r = run(alone, hedge, "run", "-f", spec)
    assert r.returncode == 125, r
    assert "secrets (libcrypto)" in r.stderr and "hedge-full" in r.stderr, r
    r = run(HEDGE, hedge, "run", "-f", spec)
    assert r.returncode == 0 and r.stdout == "s3cret\n", r
