"""hedge-oci with a new user namespace: linux.namespaces {"type": "user"} with linux.uidMappings/gidMappings
(docs/oci.md). Real parts only: hedge-oci runs busybox bundles whose rootfs is chowned into the mapped range, and
podman (rootful) drives it with --uidmap/--gidmap. Bad mappings fail create with an error naming the field and
leave nothing (state dir, cgroup, mount)."""
import contextlib
import json
import os
import shutil
import subprocess
import time

import pytest

from test_oci import HEDGE_OCI, bundle, cgroup_dirs, make_bundle, oci, podman, subreaper  # noqa: F401 (fixtures)

BASE = 100000
SIZE = 65536
MAP = [{"containerID": 0, "hostID": BASE, "size": SIZE}]


def with_userns(config_changes=None, uid_map=MAP, gid_map=MAP, user=True):
    """The changes make_bundle takes for a default config plus a new user namespace with these maps."""
    namespaces = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")]
    if user:
        namespaces.append({"type": "user"})
    changes = {"linux.namespaces": namespaces}
    if uid_map is not None:
        changes["linux.uidMappings"] = uid_map
    if gid_map is not None:
        changes["linux.gidMappings"] = gid_map
    changes.update(config_changes or {})
    return changes


@pytest.fixture
def mapped_rootfs(tmp_path, busybox_rootfs):
    """A copy of the busybox rootfs owned by the mapped root (host 100000), with /home/app owned by host 101000
    (1000 inside) and /root-owned owned by host root (outside the map: nobody inside)."""
    root = tmp_path / "mapped-rootfs"
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    (root / "home" / "app").mkdir(parents=True, exist_ok=True)
    (root / "root-owned").write_text("host root's\n")
    subprocess.run(["chown", "-R", "-h", f"{BASE}:{BASE}", str(root)], check=True)
    os.chown(root / "home" / "app", BASE + 1000, BASE + 1000)
    os.chown(root / "root-owned", 0, 0)
    return root


def test_run_in_a_user_namespace_sees_its_maps_and_owners(oci, tmp_path, mapped_rootfs):
    script = ("cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; "
              "stat -c '%u:%g %n' / /home/app /root-owned; touch /made-inside; "
              "cat /proc/self/status | grep CapEff")
    b = make_bundle(tmp_path / "b", mapped_rootfs, ["sh", "-c", script], **with_userns())
    r = oci("run", "--bundle", b, "uns1")
    assert r.code == 0, r
    lines = [" ".join(line.split()) for line in r.out.splitlines()]
    assert lines[:4] == [f"0 {BASE} {SIZE}", f"0 {BASE} {SIZE}", "0", "0"], r
    assert lines[4:7] == ["0:0 /", "1000:1000 /home/app", "65534:65534 /root-owned"], r
    assert lines[7] == "CapEff: 0000000020000420", r  # the config's set (runc spec: AUDIT_WRITE, KILL, NET_BIND_SERVICE)
    # what root made inside belongs to the mapped root on the host
    st = os.stat(mapped_rootfs / "made-inside")
    assert (st.st_uid, st.st_gid) == (BASE, BASE)
    assert not (oci.root / "uns1").exists() and cgroup_dirs("uns1") == []


def test_linux_devices_in_a_user_namespace_are_the_hosts_nodes_bound(oci, tmp_path, mapped_rootfs):
    # no mknod in a user namespace: the host's /dev/fuse (root's, 0600: nobody's inside) is bound, as runc does;
    # a fifo is made all the same
    b = make_bundle(tmp_path / "b", mapped_rootfs,
                    ["sh", "-c", "stat -c '%F %t:%T %a %u:%g' /dev/fuse /dev/fifo; grep -c ' /dev/fuse ' /proc/mounts"],
                    **with_userns({"linux.devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                                                      "fileMode": 438},
                                                     {"path": "/dev/fifo", "type": "p"}]}))
    r = oci("run", "--bundle", b, "unsdev")
    assert r.code == 0, r
    assert r.out.splitlines() == ["character special file a:e5 600 65534:65534", "fifo 0:0 666 0:0", "1"], r


def test_several_ranges_and_a_user_inside(oci, tmp_path, mapped_rootfs):
    """Two ranges per map; the process runs as 1000 with supplementary groups (setgroups stays allowed)."""
    uid_map = [{"containerID": 0, "hostID": BASE, "size": 1000}, {"containerID": 1000, "hostID": BASE + 1000,
                                                                   "size": 1000}]
    gid_map = [{"containerID": 0, "hostID": BASE, "size": 10}, {"containerID": 10, "hostID": BASE + 10,
                                                                 "size": 2000}]
    b = make_bundle(tmp_path / "b", mapped_rootfs,
                    ["sh", "-c", "cat /proc/self/uid_map; id -u; id -G; touch /home/app/mine && echo wrote"],
                    **with_userns({"process.user": {"uid": 1000, "gid": 1000, "additionalGids": [5, 20]}},
                                  uid_map=uid_map, gid_map=gid_map))
    r = oci("run", "--bundle", b, "uns2")
    assert r.code == 0, r
    lines = [" ".join(line.split()) for line in r.out.splitlines()]
    assert lines == [f"0 {BASE} 1000", f"1000 {BASE + 1000} 1000", "1000", "1000 5 20", "wrote"], r
    assert os.stat(mapped_rootfs / "home" / "app" / "mine").st_uid == BASE + 1000


def test_create_start_exec_delete_in_a_user_namespace(oci, tmp_path, mapped_rootfs, subreaper):
    """The create/start split, hooks on both sides, exec joining the namespace, delete."""
    hook_out = tmp_path / "prestart"
    hooks = {"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", f"cat > {hook_out}"]}],
             "createContainer": [{"path": "/bin/true"}],
             "startContainer": [{"path": "/bin/true"}]}
    b = make_bundle(tmp_path / "b", mapped_rootfs, ["sleep", "1000"], **with_userns({"hooks": hooks}))
    r = oci("create", "--bundle", b, "uns3")
    assert r.code == 0, r
    pid = json.loads(hook_out.read_text())["pid"]
    with open(f"/proc/{pid}/uid_map") as f:
        assert f.read().split() == ["0", str(BASE), str(SIZE)]
    assert os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user")
    r = oci("start", "uns3")
    assert r.code == 0, r
    r = oci("exec", "uns3", "sh", "-c", "id -u; cat /proc/self/uid_map")
    assert r.code == 0 and " ".join(r.out.split()) == f"0 0 {BASE} {SIZE}", r
    r = oci("delete", "--force", "uns3")
    assert r.code == 0, r
    reap(pid)
    assert not (oci.root / "uns3").exists() and cgroup_dirs("uns3") == []


def test_host_network_in_a_user_namespace_gets_the_hosts_sys(oci, tmp_path, mapped_rootfs):
    """Without a network namespace of its own, sysfs cannot be mounted in the user namespace: the host's /sys
    is bound read-only; the cgroup mount works in the container's cgroup namespace."""
    changes = with_userns()
    changes["linux.namespaces"] = [n for n in changes["linux.namespaces"] if n["type"] != "network"]
    b = make_bundle(tmp_path / "b", mapped_rootfs,
                    ["sh", "-c", "ls /sys/class/net | grep -qx lo && echo sys; ls /sys/fs/cgroup | grep -q . && "
                                 "echo cgroup; touch /sys/x 2>/dev/null || echo ro"], **changes)
    config = json.loads((b / "config.json").read_text())
    config["mounts"] += [{"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                                   "options": ["nosuid", "noexec", "nodev", "ro"]}]
    (b / "config.json").write_text(json.dumps(config))
    r = oci("run", "--bundle", b, "uns4")
    assert r.code == 0 and r.out == "sys\ncgroup\nro\n", r


def test_joined_network_namespace_with_a_new_user_namespace(oci, tmp_path, mapped_rootfs, subreaper):
    """A network namespace by path (podman's bridge networks) with a new user namespace: hedge-oci enters it for
    the clone, so the process is born there; /sys is the host's, bound read-only; exec joins both."""
    keep = tmp_path / "netns"
    keep.touch()
    subprocess.run(["unshare", f"--net={keep}", "true"], check=True)
    try:
        ino = os.stat(keep).st_ino
        changes = with_userns()
        changes["linux.namespaces"] = [n for n in changes["linux.namespaces"] if n["type"] != "network"] + [
            {"type": "network", "path": str(keep)}]
        b = make_bundle(tmp_path / "b", mapped_rootfs, ["sleep", "1000"], **changes)
        r = oci("create", "--bundle", b, "uns5")
        assert r.code == 0, r
        pid = json.loads(oci("state", "uns5").out)["pid"]
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == ino
        assert os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user")
        assert oci("start", "uns5").code == 0
        r = oci("exec", "uns5", "sh", "-c", "id -u; readlink /proc/self/ns/net; grep -c : /proc/net/dev; "
                                          "grep -q ' /sys sysfs ro' /proc/mounts && echo sys-ro")
        assert r.code == 0 and r.out.split() == ["0", f"net:[{ino}]", "1", "sys-ro"], r
        assert oci("delete", "--force", "uns5").code == 0
        reap(pid)
    finally:
        subprocess.run(["umount", str(keep)], check=True)


BAD = [
    ("overlap inside", {"uid_map": MAP + [{"containerID": 1000, "hostID": 300000, "size": 10}]},
     "linux.uidMappings[1]: its containerID range overlaps that of linux.uidMappings[0]"),
    ("overlap on the host", {"gid_map": [{"containerID": 0, "hostID": BASE, "size": 10},
                                         {"containerID": 10, "hostID": BASE + 5, "size": 10}]},
     "linux.gidMappings[1]: its hostID range overlaps that of linux.gidMappings[0]"),
    ("size 0", {"uid_map": [{"containerID": 0, "hostID": BASE, "size": 0}]},
     "linux.uidMappings[0].size: must be a number of ids from 1 to 4294967295"),
    ("past the last id", {"uid_map": [{"containerID": 0, "hostID": 4294967000, "size": 1000}]},
     "linux.uidMappings[0].size: the range goes past the last id"),
    ("no gidMappings", {"gid_map": None}, "linux.gidMappings: a new user namespace needs them (none given)"),
    ("not a number", {"uid_map": [{"containerID": "0", "hostID": BASE, "size": 1}]},
     "linux.uidMappings[0].containerID: must be an id"),
    ("mappings without a user namespace", {"user": False},
     "linux.uidMappings: mappings need a new user namespace"),
    ("the process's uid unmapped", {"config_changes": {"process.user": {"uid": 70000, "gid": 0}}},
     "process.user.uid: 70000 is not mapped by linux.uidMappings"),
    ("a joined mount namespace too", {"config_changes": {"linux.namespaces": [
        {"type": t} for t in ("pid", "ipc", "uts", "network", "user")] + [{"type": "mount",
                                                                           "path": "/proc/self/ns/mnt"}]}},
     "linux.namespaces[5].path: joining an existing mount namespace together with a new user namespace"),
]


@pytest.mark.parametrize("case,args,message", BAD, ids=[b[0] for b in BAD])
def test_a_bad_mapping_fails_create_and_leaves_nothing(oci, tmp_path, mapped_rootfs, case, args, message):
    b = make_bundle(tmp_path / "b", mapped_rootfs, ["true"], **with_userns(**args))
    r = oci("create", "--bundle", b, "unsbad")
    assert r.code == 1 and message in r.err, r
    assert not (oci.root / "unsbad").exists()
    assert cgroup_dirs("unsbad") == []


def test_podman_uidmap_runs_hedge_oci(podman):
    """podman (rootful) --uidmap/--gidmap: it chowns its copy of the image into the range and passes the maps."""
    r = podman("--runtime", HEDGE_OCI, "run", "--rm", "--network", "none", "--uidmap", f"0:{BASE}:{SIZE}",
               "--gidmap", f"0:{BASE}:{SIZE}", "localhost/hedge-busybox:test",
               "sh", "-c", "id; cat /proc/self/uid_map; stat -c %u:%g /bin")
    assert r.code == 0, r
    lines = [" ".join(line.split()) for line in r.out.splitlines()]
    assert lines[0].startswith("uid=0(root) gid=0(root)"), r
    assert lines[1:] == [f"0 {BASE} {SIZE}", "0:0"], r


def reap(pid, timeout=10):
    from test_oci import reap as reap_orphan
    return reap_orphan(pid, timeout)


# ---- joining an existing user namespace (linux.namespaces {"type": "user", "path": ...}) ----

@contextlib.contextmanager
def user_namespace(base):
    """A user namespace with 0 -> base (65536 ids) for uids and gids, held by a `unshare --user sleep`; the maps
    are written from here as root, as newuidmap would. Yields the sleep's pid."""
    holder = subprocess.Popen(["unshare", "--user", "sleep", "1000"])
    try:
        path = f"/proc/{holder.pid}/ns/user"
        for _ in range(500):  # until unshare has exec'd sleep in its new namespace
            if os.readlink(path) != os.readlink("/proc/self/ns/user"):
                break
            time.sleep(0.01)
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{holder.pid}/{name}", "w") as f:
                f.write(f"0 {base} {SIZE}\n")
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture
def userns_holder():
    with user_namespace(BASE) as pid:
        yield pid


def joined_userns(path, config_changes=None):
    changes = {"linux.namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")] +
               [{"type": "user", "path": str(path)}]}
    changes.update(config_changes or {})
    return changes


def test_join_an_existing_user_namespace(oci, tmp_path, mapped_rootfs, userns_holder, subreaper):
    """The container's process is in the joined user namespace (its maps, root inside, owners as mapped) with new
    pid, mount, ipc, uts, network and cgroup namespaces that namespace owns; hedge-oci is its parent (an
    intermediate process joins and clones it with CLONE_PARENT); exec joins it too; nothing is left."""
    userns = f"/proc/{userns_holder}/ns/user"
    script = ("{ cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; readlink /proc/self/ns/user; "
              "stat -c '%u:%g %n' / /root-owned; touch /made-inside; echo $$; "
              "grep -q ' /sys sysfs ro' /proc/mounts && echo sys-ro; echo end; } > /out 2>&1; sleep 1000")
    b = make_bundle(tmp_path / "b", mapped_rootfs, ["sh", "-c", script], **joined_userns(userns))
    r = oci("create", "--bundle", b, "unsj")
    assert r.code == 0, r
    pid = json.loads(oci("state", "unsj").out)["pid"]
    assert os.readlink(f"/proc/{pid}/ns/user") == os.readlink(userns)
    # the namespaces it made belong to the joined user namespace
    out = subprocess.run(["python3", "-c", f"""
import fcntl, os
NS_GET_USERNS = 0xb701
for n in ["pid", "mnt", "ipc", "uts", "net", "cgroup"]:
    fd = os.open("/proc/{pid}/ns/" + n, os.O_RDONLY)
    owner = fcntl.ioctl(fd, NS_GET_USERNS)
    print(n, os.fstat(owner).st_ino)
"""], capture_output=True, text=True, check=True).stdout.split("\n")
    userns_ino = str(os.stat(userns).st_ino)
    assert [line.split()[1] for line in out if line] == [userns_ino] * 6, out
    r = oci("exec", "unsj", "sh", "-c", "id -u; readlink /proc/self/ns/user")
    assert r.code == 0 and r.out.split() == ["0", os.readlink(userns)], r
    assert oci("start", "unsj").code == 0
    out = mapped_rootfs / "out"
    for _ in range(500):
        if out.exists() and out.read_text().endswith("end\n"):
            break
        time.sleep(0.01)
    lines = [" ".join(line.split()) for line in out.read_text().splitlines()]
    assert lines == [f"0 {BASE} {SIZE}", f"0 {BASE} {SIZE}", "0", "0", os.readlink(userns), "0:0 /",
                     "65534:65534 /root-owned", "1", "sys-ro", "end"], lines
    assert oci("kill", "unsj", "KILL").code == 0
    reap(pid)
    assert oci("delete", "unsj").code == 0
    st = os.stat(mapped_rootfs / "made-inside")
    assert (st.st_uid, st.st_gid) == (BASE, BASE)
    assert cgroup_dirs("unsj") == []


def test_run_in_a_joined_user_namespace_reports_the_exit_status(oci, tmp_path, mapped_rootfs, userns_holder):
    """run in the foreground waits for the container's process: hedge-oci is its parent although an intermediate
    process cloned it (CLONE_PARENT)."""
    b = make_bundle(tmp_path / "b", mapped_rootfs, ["sh", "-c", "id -u; exit 7"],
                    **joined_userns(f"/proc/{userns_holder}/ns/user"))
    r = oci("run", "--bundle", b, "unsjrun")
    assert r.code == 7 and r.out == "0\n", r


JOIN_BAD = [
    ("the process's uid unmapped", {"process.user": {"uid": 70000, "gid": 0}},
     "process.user.uid: 70000 is not mapped by the joined user namespace"),
    ("a joined mount namespace too", {"linux.namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "network")] +
                                      [{"type": "mount", "path": "/proc/self/ns/mnt"}, {"type": "user", "path": "U"}]},
     "linux.namespaces[4].path: joining an existing mount namespace together with a joined user namespace"),
    ("the host's ipc namespace", {"linux.namespaces": [{"type": t} for t in ("pid", "uts", "network", "mount")] +
                                  [{"type": "user", "path": "U"}]},
     "linux.namespaces: sharing the host's ipc namespace together with a joined user namespace"),
    ("not a user namespace", {"linux.namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "network", "mount")] +
                              [{"type": "user", "path": "/proc/self/ns/net"}]},
     "linux.namespaces[5].path: /proc/self/ns/net is a namespace of type network, not user"),
]


@pytest.mark.parametrize("case,changes,message", JOIN_BAD, ids=[b[0] for b in JOIN_BAD])
def test_a_bad_joined_user_namespace_fails_create_and_leaves_nothing(oci, tmp_path, mapped_rootfs, userns_holder,
                                                                     case, changes, message):
    userns = f"/proc/{userns_holder}/ns/user"
    changes = json.loads(json.dumps(changes).replace('"U"', json.dumps(userns)))
    b = make_bundle(tmp_path / "b", mapped_rootfs, ["true"], **joined_userns(userns, changes))
    r = oci("create", "--bundle", b, "unsjbad")
    assert r.code == 1 and message in r.err, r
    assert not (oci.root / "unsjbad").exists()
    assert cgroup_dirs("unsjbad") == []


def test_podman_userns_ns_path_runs_hedge_oci(podman):
    """podman --userns=ns:PATH passes the path as linux.namespaces' user entry (with placeholder maps, "0 0 1",
    ignored with a warning as runc 1.1 ignores them); the container is in it. podman cannot chown its copy of the
    image for a namespace it only has the path of: this one maps root to the host's root, which owns the image."""
    with user_namespace(0) as holder:
        userns = f"/proc/{holder}/ns/user"
        r = podman("--runtime", HEDGE_OCI, "run", "--rm", "--network", "none", "--userns", f"ns:{userns}",
                   "localhost/hedge-busybox:test", "sh", "-c",
                   "cat /proc/self/uid_map; readlink /proc/self/ns/user; id -u")
        assert r.code == 0, r
        lines = [" ".join(line.split()) for line in r.out.splitlines()]
        assert lines == [f"0 0 {SIZE}", os.readlink(userns), "0"], r
