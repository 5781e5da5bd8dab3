"""The image store: `hedge image import|ls|rm` with real OCI and docker-save tarballs.

Real images come from real tools: umoci builds an OCI layout layer by layer
(a file deleted in a later layer becomes a real whiteout), skopeo turns it
into a docker-save tarball. umoci never writes opaque whiteouts, so that one
layer is written by hand with Python's tarfile and appended with
`umoci raw add-layer`. Malicious and odd archives (path traversal, image
indexes, zstd layers, Docker 25 layout) are written by hand below.
"""
import gzip
import hashlib
import io
import json
import os
import pathlib
import platform
import shutil
import stat
import subprocess
import tarfile

import pytest

GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def need(tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (deps/image.txt)")


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def run(*args, **kw):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, **kw)


# ---- hand-written archives ------------------------------------------------------------------

def layer_tar(*entries):
    """An uncompressed layer tar. Entries: ("file", name, data[, mode[, xattrs]]), ("dir", name),
    ("symlink", name, target), ("hardlink", name, target)."""
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=tarfile.PAX_FORMAT) as t:
        for kind, name, *rest in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1700000000
            data = None
            if kind == "file":
                data = rest[0]
                ti.size = len(data)
                ti.mode = rest[1] if len(rest) > 1 else 0o644
                for key, value in (rest[2] if len(rest) > 2 else {}).items():
                    ti.pax_headers["SCHILY.xattr." + key] = value
            elif kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, rest[0]
            elif kind == "hardlink":
                ti.type, ti.linkname = tarfile.LNKTYPE, rest[0]
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return bio.getvalue()


def compress(data, how):
    if how == "gzip":
        return gzip.compress(data, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"
    if how == "zstd":
        need("zstd")
        out = subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout
        return out, "application/vnd.oci.image.layer.v1.tar+zstd"
    return data, "application/vnd.oci.image.layer.v1.tar"


def write_tar(path, files):
    """files: {archive name: bytes}, written in order."""
    with tarfile.open(path, "w") as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return path


def image_config(layers, arch=GOARCH, **defaults):
    return {"architecture": arch, "os": "linux", "config": defaults,
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha256(l) for l in layers]}}


class OciBuilder:
    """Blobs of an OCI layout, kept in memory."""

    def __init__(self):
        self.blobs = {}

    def blob(self, data, media_type):
        if isinstance(data, (dict, list)):
            data = json.dumps(data).encode()
        self.blobs[sha256(data)] = data
        return {"mediaType": media_type, "digest": "sha256:" + sha256(data), "size": len(data)}

    def manifest(self, layers, how="gzip", arch=GOARCH, **defaults):
        descs = []
        for l in layers:
            data, media_type = compress(l, how)
            descs.append(self.blob(data, media_type))
        config = self.blob(image_config(layers, arch, **defaults), "application/vnd.oci.image.config.v1+json")
        return self.blob({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "config": config, "layers": descs}, "application/vnd.oci.image.manifest.v1+json")

    def write(self, path, top, annotations=None):
        if annotations:
            top = {**top, "annotations": annotations}
        files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
                 "index.json": json.dumps({"schemaVersion": 2, "manifests": [top]}).encode()}
        for hex_, data in self.blobs.items():
            files[f"blobs/sha256/{hex_}"] = data
        return write_tar(path, files)


def oci_archive(path, layers, how="gzip", name=None, **defaults):
    b = OciBuilder()
    top = b.manifest(layers, how, **defaults)
    b.write(path, top, {"io.containerd.image.name": name} if name else None)
    return path, [compress(l, how)[0] for l in layers]


def store_files(state):
    """Every path in the state dir (the store), for before/after comparisons."""
    return sorted(str(p.relative_to(state)) for p in pathlib.Path(state).rglob("*"))


def images(hedge):
    r = hedge("image", "ls", "--json")
    assert r.code == 0, r
    return json.loads(r.out)


def only_image(hedge):
    found = images(hedge)
    assert len(found) == 1, found
    return found[0]


# ---- a real image built with umoci ----------------------------------------------------------

RICH_TAG = "v1"


@pytest.fixture(scope="module")
def rich_layout(tmp_path_factory):
    """An OCI layout with three layers made by umoci (plus one hand-made opaque layer):
    1. busybox, a symlink, a hardlink, a device node, an xattr, owned and set-uid files, trees to delete;
    2. deletes etc/gone and the olddir tree (real whiteouts), turns directory `replaced` into a file;
    3. (by hand) makes opq/ opaque, with the marker after opq/new in the tar."""
    need("umoci")
    work = tmp_path_factory.mktemp("rich")
    layout, bundle = work / "layout", work / "bundle"
    ref = f"{layout}:{RICH_TAG}"
    run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", ref)
    run("umoci", "unpack", "--image", ref, bundle)
    root = bundle / "rootfs"
    for d in ("bin", "etc", "olddir/a", "opq/sub", "replaced", "home/app", "dev"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    os.symlink("busybox", root / "bin" / "sh")
    os.link(root / "bin" / "busybox", root / "bin" / "hardlinked")
    os.mknod(root / "dev" / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (root / "etc" / "gone").write_text("deleted in layer 2\n")
    (root / "etc" / "keep").write_text("kept\n")
    os.setxattr(root / "etc" / "keep", "user.hedge", b"yes")
    (root / "olddir" / "a" / "deep").write_text("x\n")
    (root / "opq" / "old").write_text("lower\n")
    (root / "opq" / "sub" / "old2").write_text("lower\n")
    (root / "replaced" / "inner").write_text("lower\n")
    secret = root / "home" / "app" / "secret"
    secret.write_text("app's\n")
    os.chown(secret, 1000, 1000)
    os.chmod(secret, 0o640)
    shutil.copy("/bin/true", root / "bin" / "suid")
    os.chmod(root / "bin" / "suid", 0o4755)
    run("umoci", "repack", "--refresh-bundle", "--image", ref, bundle)

    (root / "etc" / "gone").unlink()
    shutil.rmtree(root / "olddir")
    shutil.rmtree(root / "replaced")
    (root / "replaced").write_text("now a file\n")
    run("umoci", "repack", "--refresh-bundle", "--image", ref, bundle)

    opaque = work / "opaque.tar"
    opaque.write_bytes(layer_tar(("dir", "opq"), ("file", "opq/new", b"upper\n"),
                                 ("file", "opq/.wh..wh..opq", b"")))
    run("umoci", "raw", "add-layer", "--image", ref, opaque)
    run("umoci", "config", "--image", ref, "--config.entrypoint", "/bin/sh", "--config.entrypoint", "-c",
        "--config.cmd", "echo hi", "--config.env", "A=1", "--config.env", "B=two words",
        "--config.workingdir", "/home/app", "--config.user", "1000:1000")
    shutil.rmtree(bundle)
    return layout


@pytest.fixture(scope="module")
def rich_oci_tar(rich_layout):
    tarball = rich_layout.parent / "rich-oci.tar"
    run("tar", "-C", rich_layout, "-cf", tarball, ".")
    return tarball


@pytest.fixture(scope="module")
def rich_docker_tar(rich_layout):
    need("skopeo")
    tarball = rich_layout.parent / "rich-docker.tar"
    run("skopeo", "--insecure-policy", "copy", f"oci:{rich_layout}:{RICH_TAG}",
        f"docker-archive:{tarball}:rich:{RICH_TAG}")
    return tarball


def check_rich_rootfs(root):
    root = pathlib.Path(root)
    assert os.access(root / "bin" / "busybox", os.X_OK)
    assert os.readlink(root / "bin" / "sh") == "busybox"
    assert os.stat(root / "bin" / "hardlinked").st_ino == os.stat(root / "bin" / "busybox").st_ino
    dev = os.lstat(root / "dev" / "null")
    assert stat.S_ISCHR(dev.st_mode) and os.major(dev.st_rdev) == 1 and os.minor(dev.st_rdev) == 3
    assert os.getxattr(root / "etc" / "keep", "user.hedge") == b"yes"
    secret = os.lstat(root / "home" / "app" / "secret")
    assert (secret.st_uid, secret.st_gid, stat.S_IMODE(secret.st_mode)) == (1000, 1000, 0o640)
    assert stat.S_IMODE(os.lstat(root / "bin" / "suid").st_mode) == 0o4755
    # whiteouts of layer 2
    assert not (root / "etc" / "gone").exists()
    assert (root / "etc" / "keep").read_text() == "kept\n"
    assert not (root / "olddir").exists()
    assert (root / "replaced").read_text() == "now a file\n"
    # the opaque layer: the lower contents of opq/ went, this layer's file stayed
    assert sorted(os.listdir(root / "opq")) == ["new"]
    assert (root / "opq" / "new").read_text() == "upper\n"
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            assert not name.startswith(".wh."), f"whiteout file left in the rootfs: {dirpath}/{name}"


def test_import_oci_archive(hedge, rich_oci_tar):
    r = hedge("image", "import", rich_oci_tar, "--name", "rich:v1")
    assert r.code == 0, r
    image = only_image(hedge)
    assert r.out == f"Loaded image: rich:v1 {image['id']}\n"
    assert image["name"] == "rich:v1"
    check_rich_rootfs(image["rootfs"])


def test_import_docker_archive(hedge, rich_docker_tar):
    names = [m.name for m in tarfile.open(rich_docker_tar)]
    assert "manifest.json" in names and "index.json" not in names  # really the docker-save format
    r = hedge("image", "import", rich_docker_tar)  # the name comes from RepoTags (docker.io/library/ dropped)
    assert r.code == 0, r
    image = only_image(hedge)
    assert image["name"] == "rich:v1"
    check_rich_rootfs(image["rootfs"])


def test_import_skopeo_oci_archive(hedge, rich_layout, tmp_path):
    """skopeo's oci-archive: transport writes the name into the ref.name annotation."""
    need("skopeo")
    tarball = tmp_path / "skopeo-oci.tar"
    run("skopeo", "--insecure-policy", "copy", f"oci:{rich_layout}:{RICH_TAG}", f"oci-archive:{tarball}:rich:sk")
    r = hedge("image", "import", tarball)
    assert r.code == 0, r
    image = only_image(hedge)
    assert image["name"] == "rich:sk"
    check_rich_rootfs(image["rootfs"])


def test_both_formats_are_one_image(hedge, rich_oci_tar, rich_docker_tar):
    assert hedge("image", "import", rich_oci_tar, "--name", "rich:oci").code == 0
    assert hedge("image", "import", rich_docker_tar).code == 0
    found = images(hedge)
    assert [i["name"] for i in found] == ["rich:oci", "rich:v1"]
    assert found[0]["id"] == found[1]["id"] and found[0]["rootfs"] == found[1]["rootfs"]


def test_config_defaults_recorded(hedge, rich_oci_tar, dirs):
    assert hedge("image", "import", rich_oci_tar, "--name", "rich").code == 0
    image = only_image(hedge)
    assert image["name"] == "rich:latest"
    assert image["entrypoint"] == ["/bin/sh", "-c"]
    assert image["cmd"] == ["echo hi"]
    assert image["env"][-2:] == ["A=1", "B=two words"]
    assert image["workdir"] == "/home/app"
    assert image["user"] == "1000:1000"
    hex_ = image["id"].removeprefix("sha256:")
    assert image["rootfs"] == str(pathlib.Path(dirs["state"]).resolve() / "images" / "rootfs" / hex_)
    assert image["size"] > os.path.getsize("/bin/busybox")
    # every stored blob is named by its own sha256
    blobs = pathlib.Path(dirs["state"]) / "images" / "blobs" / "sha256"
    stored = sorted(blobs.iterdir())
    assert stored
    for blob in stored:
        assert sha256(blob.read_bytes()) == blob.name
    assert (blobs / hex_).exists()  # the config blob: the image id is its digest


def test_ls_table(hedge, rich_oci_tar):
    r = hedge("image", "ls")
    assert (r.code, r.out) == (0, "NAME:TAG                         ID           SIZE       CREATED\n")
    assert hedge("image", "import", rich_oci_tar, "--name", "rich:v1").code == 0
    image = only_image(hedge)
    lines = hedge("image", "ls").out.splitlines()
    assert len(lines) == 2
    fields = lines[1].split()
    assert fields[0] == "rich:v1"
    assert fields[1] == image["id"][7:19]
    assert fields[2].endswith("MB")


def test_reimport_reuses_rootfs(hedge, rich_oci_tar, dirs):
    assert hedge("image", "import", rich_oci_tar, "--name", "rich:v1").code == 0
    image = only_image(hedge)
    marker = pathlib.Path(image["rootfs"]) / "marker"
    marker.write_text("still here\n")  # a second unpack would not keep this
    before = store_files(dirs["state"])
    r = hedge("image", "import", rich_oci_tar, "--name", "rich:v1")
    assert r.code == 0, r
    assert only_image(hedge) == image
    assert marker.read_text() == "still here\n"
    assert store_files(dirs["state"]) == before


def test_rm(hedge, rich_oci_tar, dirs):
    assert hedge("image", "import", rich_oci_tar, "--name", "rich:v1").code == 0
    assert hedge("image", "import", rich_oci_tar, "--name", "other").code == 0
    image = images(hedge)[0]
    r = hedge("image", "rm", "other")
    assert (r.code, r.out) == (0, "Untagged: other:latest\n")
    assert os.path.isdir(image["rootfs"])
    r = hedge("image", "rm", "rich:v1")
    assert (r.code, r.out) == (0, f"Untagged: rich:v1\nDeleted: {image['id']}\n")
    assert images(hedge) == []
    assert not os.path.exists(image["rootfs"])
    store = pathlib.Path(dirs["state"]) / "images"
    for sub in ("blobs/sha256", "rootfs", "meta", "tmp"):
        assert list((store / sub).iterdir()) == [], sub


@pytest.mark.parametrize("form", ["short", "sha256"])
def test_rm_by_id_prefix(hedge, rich_oci_tar, form):
    assert hedge("image", "import", rich_oci_tar, "--name", "rich:v1").code == 0
    assert hedge("image", "import", rich_oci_tar, "--name", "rich:v2").code == 0
    image_id = images(hedge)[0]["id"]
    ref = image_id[7:19] if form == "short" else image_id[:25]
    r = hedge("image", "rm", ref)
    assert (r.code, r.out) == (0, f"Untagged: rich:v1\nUntagged: rich:v2\nDeleted: {image_id}\n")
    assert images(hedge) == []


def test_rm_unknown(hedge, rich_oci_tar):
    r = hedge("image", "rm", "nosuch")
    assert (r.code, r.err) == (125, "hedge: image nosuch: not found\n")
    assert hedge("image", "import", rich_oci_tar, "--name", "rich:v1").code == 0
    for ref in ("rich:v2", "nosuch", "0123456789ab"):
        r = hedge("image", "rm", ref)
        assert (r.code, r.err) == (125, f"hedge: image {ref}: not found\n")
    assert len(images(hedge)) == 1


def test_inspect_lookup(hedge, tmp_path):
    """`image inspect` is hd_image_lookup, the path `hedge run IMAGE` takes."""
    tarball, _ = oci_archive(tmp_path / "a.tar", [layer_tar(("file", "f", b"f"))], Cmd=["sh"])
    assert hedge("image", "import", tarball, "--name", "docker.io/library/app").code == 0
    image = only_image(hedge)
    assert image["name"] == "app:latest"
    hex_ = image["id"][7:]
    for ref in ("app", "app:latest", "docker.io/library/app:latest", hex_[:12], "sha256:" + hex_, hex_):
        r = hedge("image", "inspect", ref)
        assert r.code == 0, (ref, r)
        assert json.loads(r.out) == image, ref
    for ref in ("app:1", "App", hex_[:11], "sha256:" + "0" * 64, "nosuch"):
        r = hedge("image", "inspect", ref)
        assert (r.code, r.err) == (125, f"hedge: image {ref}: not found\n"), ref


def test_name_moves_to_new_image(hedge, rich_oci_tar, tmp_path):
    assert hedge("image", "import", rich_oci_tar, "--name", "app:1").code == 0
    old = only_image(hedge)
    other, _ = oci_archive(tmp_path / "other.tar", [layer_tar(("file", "hello", b"hi\n"))])
    r = hedge("image", "import", other, "--name", "app:1")
    assert r.code == 0, r
    new = only_image(hedge)
    assert new["id"] != old["id"]
    assert not os.path.exists(old["rootfs"])  # its last name went, so did it
    assert (pathlib.Path(new["rootfs"]) / "hello").read_text() == "hi\n"


def test_store_heals_after_a_killed_import(hedge, dirs, tmp_path):
    """What a killed import can leave (a temp dir, a rootfs without metadata, an unlisted blob) goes next time."""
    tarball, _ = oci_archive(tmp_path / "a.tar", [layer_tar(("file", "f", b"f"))])
    assert hedge("image", "import", tarball, "--name", "a").code == 0
    before = store_files(dirs["state"])
    store = pathlib.Path(dirs["state"]) / "images"
    (store / "tmp" / "import-dead" / "stage").mkdir(parents=True)
    (store / "tmp" / "import-dead" / "stage" / "1").write_text("partial")
    (store / "rootfs" / ("0" * 64) / "etc").mkdir(parents=True)
    (store / "blobs" / "sha256" / sha256(b"junk")).write_bytes(b"junk")
    r = hedge("image", "import", tarball, "--name", "a")
    assert r.code == 0, r
    assert store_files(dirs["state"]) == before


def test_state_dir_flag(hedge, dirs, tmp_path):
    """--state-dir (a global flag) wins over $HEDGE_STATE_DIR."""
    other = tmp_path / "other-state"
    tarball, _ = oci_archive(tmp_path / "a.tar", [layer_tar(("file", "f", b"f"))])
    assert hedge("--state-dir", other, "image", "import", tarball, "--name", "a").code == 0
    assert (other / "images" / "refs.json").exists()
    assert images(hedge) == []
    r = hedge("--state-dir", other, "image", "ls", "--json")
    assert [i["name"] for i in json.loads(r.out)] == ["a:latest"]


def test_concurrent_imports(hedge, tmp_path):
    procs = []
    for n in range(4):
        tarball, _ = oci_archive(tmp_path / f"img{n}.tar", [layer_tar(("file", "n", f"{n}\n".encode()))])
        procs.append(subprocess.Popen([hedge.binary, "image", "import", str(tarball), "--name", f"img:{n}"],
                                      env=hedge.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    found = images(hedge)
    assert [i["name"] for i in found] == [f"img:{n}" for n in range(4)]
    for n, image in enumerate(found):
        assert (pathlib.Path(image["rootfs"]) / "n").read_text() == f"{n}\n"


# ---- formats written by hand ----------------------------------------------------------------

@pytest.mark.parametrize("how", ["gzip", "zstd", "none"])
def test_layer_compressions(hedge, tmp_path, how):
    layers = [layer_tar(("dir", "d"), ("file", "d/f", b"one\n"), ("file", "d/g", b"gone\n")),
              layer_tar(("file", "d/.wh.g", b""), ("file", "d/h", b"two\n"))]
    tarball, _ = oci_archive(tmp_path / "img.tar", layers, how, name="docker.io/library/comp:" + how, Cmd=["sh"])
    r = hedge("image", "import", tarball)
    assert r.code == 0, r
    image = only_image(hedge)
    assert (image["name"], image["cmd"]) == (f"comp:{how}", ["sh"])
    assert sorted(os.listdir(pathlib.Path(image["rootfs"]) / "d")) == ["f", "h"]


def test_compressed_tarball(hedge, rich_oci_tar, tmp_path):
    """`docker save | gzip` and friends: the outer tarball may be compressed too."""
    gz = tmp_path / "rich.tar.gz"
    gz.write_bytes(gzip.compress(rich_oci_tar.read_bytes()))
    r = hedge("image", "import", gz, "--name", "rich:gz")
    assert r.code == 0, r
    check_rich_rootfs(only_image(hedge)["rootfs"])


def test_overlay_xattrs_dropped(hedge, tmp_path):
    """trusted.overlay.* xattrs would be overlayfs metadata once the rootfs is a lower layer: not restored."""
    layer = layer_tar(("file", "f", b"f", 0o644, {"trusted.overlay.opaque": "y", "user.keep": "1"}))
    tarball, _ = oci_archive(tmp_path / "x.tar", [layer], name="xattr:1")
    assert hedge("image", "import", tarball).code == 0
    f = pathlib.Path(only_image(hedge)["rootfs"]) / "f"
    assert os.listxattr(f) == ["user.keep"]
    assert os.getxattr(f, "user.keep") == b"1"


def test_image_index_picks_host_platform(hedge, tmp_path):
    b = OciBuilder()
    other_arch = "arm64" if GOARCH != "arm64" else "amd64"
    mine = b.manifest([layer_tar(("file", "arch", GOARCH.encode()))])
    other = b.manifest([layer_tar(("file", "arch", other_arch.encode()))], arch=other_arch)
    index = b.blob({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": [{**other, "platform": {"os": "linux", "architecture": other_arch}},
                                  {**mine, "platform": {"os": "linux", "architecture": GOARCH}}]},
                   "application/vnd.oci.image.index.v1+json")
    tarball = b.write(tmp_path / "multi.tar", index, {"io.containerd.image.name": "multi:1"})
    r = hedge("image", "import", tarball)
    assert r.code == 0, r
    assert (pathlib.Path(only_image(hedge)["rootfs"]) / "arch").read_text() == GOARCH


def test_image_index_without_host_platform(hedge, tmp_path):
    b = OciBuilder()
    other = b.manifest([layer_tar(("file", "x", b"x"))], arch="s390x")
    index = b.blob({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": [{**other, "platform": {"os": "linux", "architecture": "s390x"}}]},
                   "application/vnd.oci.image.index.v1+json")
    tarball = b.write(tmp_path / "multi.tar", index)
    r = hedge("image", "import", tarball, "--name", "m")
    assert r.code == 125
    assert r.err == (f"hedge: image import {tarball}: image index {index['digest']}: "
                     f"no linux/{GOARCH} image in it (it has: linux/s390x)\n")


def test_docker25_layout(hedge, tmp_path):
    """Docker 25+ `docker save`: manifest.json pointing into blobs/sha256, plus an OCI index."""
    layers = [layer_tar(("file", "a", b"1\n"), ("dir", "d"), ("file", "d/x", b"x\n")),
              layer_tar(("file", ".wh.a", b""), ("file", "d/.wh..wh..opq", b""), ("file", "d/y", b"y\n"))]
    config = json.dumps(image_config(layers, Cmd=["/bin/sh"], WorkingDir="/d")).encode()
    files = {f"blobs/sha256/{sha256(l)}": l for l in layers}
    files[f"blobs/sha256/{sha256(config)}"] = config
    files["manifest.json"] = json.dumps([{"Config": f"blobs/sha256/{sha256(config)}", "RepoTags": ["new:25"],
                                          "Layers": [f"blobs/sha256/{sha256(l)}" for l in layers]}]).encode()
    files["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
    files["index.json"] = b'{"schemaVersion":2,"manifests":[]}'
    tarball = write_tar(tmp_path / "d25.tar", files)
    r = hedge("image", "import", tarball)
    assert r.code == 0, r
    image = only_image(hedge)
    assert (image["name"], image["id"], image["workdir"]) == ("new:25", "sha256:" + sha256(config), "/d")
    root = pathlib.Path(image["rootfs"])
    assert sorted(os.listdir(root)) == ["d"]
    assert os.listdir(root / "d") == ["y"]


def legacy_docker_archive(path, layers, config=None, repo_tags=("old:1",)):
    """Pre-25 `docker save`: <id>/layer.tar per layer, a repeated layer as a symlink to the first copy."""
    config = config or json.dumps(image_config(layers, Cmd=["true"])).encode()
    members, names, first_dir = [], [], {}
    for n, layer in enumerate(layers):
        layer_dir = f"{n:064x}"
        names.append(f"{layer_dir}/layer.tar")
        if sha256(layer) in first_dir:
            members.append(("symlink", f"{layer_dir}/layer.tar", f"../{first_dir[sha256(layer)]}/layer.tar"))
        else:
            first_dir[sha256(layer)] = layer_dir
            members.append(("file", f"{layer_dir}/layer.tar", layer))
    members.append(("file", f"{sha256(config)}.json", config))
    members.append(("file", "manifest.json", json.dumps([{"Config": f"{sha256(config)}.json",
                                                          "RepoTags": list(repo_tags), "Layers": names}]).encode()))
    path.write_bytes(layer_tar(*members))
    return path


def test_legacy_docker_layout(hedge, tmp_path):
    base = layer_tar(("file", "f", b"base\n"))
    layers = [base, layer_tar(("file", ".wh.f", b"")), base]  # the third is a symlink to the first
    r = hedge("image", "import", legacy_docker_archive(tmp_path / "old.tar", layers))
    assert r.code == 0, r
    image = only_image(hedge)
    assert (image["name"], image["cmd"]) == ("old:1", ["true"])
    assert os.listdir(image["rootfs"]) == ["f"]


def test_docker_compressed_layer(hedge, dirs, tmp_path):
    """A gzip-compressed layer in a docker-save tarball: its diff id is the digest of the decompressed tar."""
    layer = layer_tar(("file", "f", b"compressed\n"))
    config = json.dumps(image_config([layer])).encode()
    tarball = write_tar(tmp_path / "gz.tar", {
        "l/layer.tar": gzip.compress(layer, mtime=0),
        f"{sha256(config)}.json": config,
        "manifest.json": json.dumps([{"Config": f"{sha256(config)}.json", "RepoTags": ["gz:1"],
                                      "Layers": ["l/layer.tar"]}]).encode()})
    r = hedge("image", "import", tarball)
    assert r.code == 0, r
    assert (pathlib.Path(only_image(hedge)["rootfs"]) / "f").read_text() == "compressed\n"
    # and a compressed layer that does not decompress to its diff id is refused
    bad_layer = layer_tar(("file", "f", b"other\n"))
    bad = write_tar(tmp_path / "bad.tar", {
        "l/layer.tar": gzip.compress(bad_layer, mtime=0),
        f"{sha256(config)}.json": config,
        "manifest.json": json.dumps([{"Config": f"{sha256(config)}.json", "RepoTags": ["gz:2"],
                                      "Layers": ["l/layer.tar"]}]).encode()})
    r = hedge("image", "import", bad)
    assert (r.code, r.err) == (125, f"hedge: image import {bad}: layer l/layer.tar: digest mismatch: "
                                    f"expected sha256:{sha256(layer)}, got sha256:{sha256(bad_layer)}\n")


def test_oci_ref_name_annotation(hedge, tmp_path):
    b = OciBuilder()
    top = b.manifest([layer_tar(("file", "f", b"f"))])
    tarball = b.write(tmp_path / "ref.tar", top,
                      {"org.opencontainers.image.ref.name": "registry.local:5000/team/app:2"})
    assert hedge("image", "import", tarball).code == 0
    assert only_image(hedge)["name"] == "registry.local:5000/team/app:2"
    r = hedge("image", "rm", "registry.local:5000/team/app:2")
    assert (r.code, r.out.splitlines()[0]) == (0, "Untagged: registry.local:5000/team/app:2")


# ---- bad input: exact message, exit 125, nothing left in the store --------------------------

@pytest.fixture
def seeded_store(hedge, tmp_path, dirs):
    """A store holding one image, and its file list, so a failed import can be shown to change nothing."""
    tarball, _ = oci_archive(tmp_path / "seed.tar", [layer_tar(("file", "seed", b"seed\n"))])
    assert hedge("image", "import", tarball, "--name", "seed:1").code == 0
    return store_files(dirs["state"])


def expect_failure(hedge, dirs, before, tarball, message, *extra):
    r = hedge("image", "import", tarball, *extra)
    assert r.code == 125, r
    assert r.err == f"hedge: image import {tarball}: {message}\n"
    assert store_files(dirs["state"]) == before
    assert [i["name"] for i in images(hedge)] == ["seed:1"]


def flip_byte_in_member(src, dst, member_name):
    """Copy tarball src to dst with one byte flipped inside member_name's data; return the member's new bytes."""
    data = bytearray(pathlib.Path(src).read_bytes())
    with tarfile.open(src) as t:
        member = t.getmember(member_name)
    data[member.offset_data + member.size // 2] ^= 0xFF
    pathlib.Path(dst).write_bytes(data)
    return bytes(data[member.offset_data:member.offset_data + member.size])


def biggest_member(tarball):
    with tarfile.open(tarball) as t:
        return max(t.getmembers(), key=lambda m: m.size).name


def test_corrupt_oci_layer(hedge, dirs, seeded_store, rich_oci_tar, tmp_path):
    member = biggest_member(rich_oci_tar)  # ./blobs/sha256/<the busybox layer>
    expected = member.rsplit("/", 1)[1]
    bad = tmp_path / "corrupt.tar"
    got = sha256(flip_byte_in_member(rich_oci_tar, bad, member))
    expect_failure(hedge, dirs, seeded_store, bad,
                   f"layer sha256:{expected}: digest mismatch: expected sha256:{expected}, got sha256:{got}",
                   "--name", "x")


def test_corrupt_docker_layer(hedge, dirs, seeded_store, rich_docker_tar, tmp_path):
    member = biggest_member(rich_docker_tar)  # <diff id>.tar, uncompressed
    expected = member.removesuffix(".tar")
    bad = tmp_path / "corrupt.tar"
    got = sha256(flip_byte_in_member(rich_docker_tar, bad, member))
    expect_failure(hedge, dirs, seeded_store, bad,
                   f"layer {member}: digest mismatch: expected sha256:{expected}, got sha256:{got}")


def test_corrupt_manifest_digest(hedge, dirs, seeded_store, tmp_path):
    b = OciBuilder()
    top = b.manifest([layer_tar(("file", "f", b"f"))])
    hex_ = top["digest"][7:]
    b.blobs[hex_] = b.blobs[hex_].replace(b'"schemaVersion": 2', b'"schemaVersion": 3')
    tarball = b.write(tmp_path / "m.tar", top)
    expect_failure(hedge, dirs, seeded_store, tarball,
                   f"manifest sha256:{hex_}: digest mismatch: expected sha256:{hex_}, "
                   f"got sha256:{sha256(b.blobs[hex_])}", "--name", "x")


def test_docker_config_digest_mismatch(hedge, dirs, seeded_store, tmp_path):
    """docker save names the config file by its digest: a config that does not match its name is refused."""
    layer = layer_tar(("file", "f", b"f"))
    config = json.dumps(image_config([layer])).encode()
    fake = "f" * 64
    tarball = write_tar(tmp_path / "old.tar", {
        "0" * 64 + "/layer.tar": layer,
        f"{fake}.json": config,
        "manifest.json": json.dumps([{"Config": f"{fake}.json", "RepoTags": ["old:1"],
                                      "Layers": ["0" * 64 + "/layer.tar"]}]).encode()})
    expect_failure(hedge, dirs, seeded_store, tarball,
                   f"config {fake}.json: digest mismatch: expected sha256:{fake}, got sha256:{sha256(config)}")


def test_docker_diff_id_count_mismatch(hedge, dirs, seeded_store, tmp_path):
    layers = [layer_tar(("file", "f", b"f")), layer_tar(("file", "g", b"g"))]
    config = json.dumps(image_config(layers[:1])).encode()
    tarball = legacy_docker_archive(tmp_path / "old.tar", layers, config)
    expect_failure(hedge, dirs, seeded_store, tarball,
                   f"config {sha256(config)}.json: rootfs.diff_ids lists 1 layers, manifest.json 2")


def test_size_mismatch(hedge, dirs, seeded_store, tmp_path):
    b = OciBuilder()
    top = b.manifest([layer_tar(("file", "f", b"f"))])
    top = {**top, "size": top["size"] + 1}
    tarball = b.write(tmp_path / "m.tar", top)
    expect_failure(hedge, dirs, seeded_store, tarball,
                   f"manifest {top['digest']}: size mismatch: expected {top['size']} bytes, got {top['size'] - 1}",
                   "--name", "x")


def test_other_architecture(hedge, dirs, seeded_store, tmp_path):
    b = OciBuilder()
    top = b.manifest([layer_tar(("file", "f", b"f"))], arch="s390x")
    tarball = b.write(tmp_path / "m.tar", top)
    expect_failure(hedge, dirs, seeded_store, tarball,
                   f"the image is built for linux/s390x; this host runs linux/{GOARCH}", "--name", "x")


def test_truncated_tarball(hedge, dirs, seeded_store, rich_oci_tar, tmp_path):
    bad = tmp_path / "truncated.tar"
    data = rich_oci_tar.read_bytes()
    bad.write_bytes(data[:len(data) // 2])
    expect_failure(hedge, dirs, seeded_store, bad, "the archive is truncated", "--name", "x")


def test_not_a_tarball(hedge, dirs, seeded_store, tmp_path):
    bad = tmp_path / "text.tar"
    bad.write_text("this is not a tar archive, just text\n" * 40)
    expect_failure(hedge, dirs, seeded_store, bad, "not a tar archive", "--name", "x")
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    expect_failure(hedge, dirs, seeded_store, empty, "the file is empty", "--name", "x")


def test_missing_manifest(hedge, dirs, seeded_store, tmp_path):
    bad = write_tar(tmp_path / "nomanifest.tar", {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
                                                  "blobs/sha256/abc": b"x"})
    expect_failure(hedge, dirs, seeded_store, bad,
                   "not an image archive: neither manifest.json (docker save) nor index.json (OCI) in it",
                   "--name", "x")


def test_missing_blob(hedge, dirs, seeded_store, tmp_path):
    b = OciBuilder()
    top = b.manifest([layer_tar(("file", "f", b"f"))])
    layer_hex = json.loads(b.blobs[top["digest"][7:]])["layers"][0]["digest"][7:]
    del b.blobs[layer_hex]
    tarball = b.write(tmp_path / "m.tar", top)
    expect_failure(hedge, dirs, seeded_store, tarball, f"layer sha256:{layer_hex}: blob missing from the archive",
                   "--name", "x")


def test_archive_without_a_name(hedge, dirs, seeded_store, tmp_path):
    tarball, _ = oci_archive(tmp_path / "anon.tar", [layer_tar(("file", "f", b"f"))])
    expect_failure(hedge, dirs, seeded_store, tarball,
                   "the archive does not name the image; give one with --name NAME:TAG")


def test_bad_name(hedge, tmp_path):
    tarball, _ = oci_archive(tmp_path / "x.tar", [layer_tar(("file", "f", b"f"))])
    r = hedge("image", "import", tarball, "--name", "Bad:Name")
    assert (r.code, r.err) == (125, 'hedge: invalid image name "Bad:Name" (want name[:tag], lower-case name)\n')


def test_usage_errors(hedge):
    for args, message in [((), "missing subcommand"), (("bogus",), "unknown subcommand 'bogus'"),
                          (("import",), "give exactly one tarball"), (("rm",), "name an image"),
                          (("ls", "extra"), "unexpected argument extra"), (("inspect",), "name one image")]:
        r = hedge("image", *args)
        assert r.code == 2, (args, r)
        assert r.err.startswith(f"hedge image{' ' + args[0] if args and args[0] != 'bogus' else ''}: {message}\n"), r


def test_missing_file(hedge, tmp_path):
    r = hedge("image", "import", tmp_path / "none.tar")
    assert (r.code, r.err) == (125, f"hedge: image import {tmp_path}/none.tar: No such file or directory\n")


@pytest.mark.parametrize("case", ["dotdot", "absolute", "hardlink", "symlink-same-layer", "symlink-lower-layer",
                                  "whiteout-through-symlink"])
def test_path_traversal_rejected(hedge, dirs, seeded_store, tmp_path, case):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("host file\n")
    layers = {
        "dotdot": [layer_tar(("file", "ok", b"ok"), ("file", "../escape", b"x"))],
        "absolute": [layer_tar(("file", f"{outside}/escape", b"x"))],
        "hardlink": [layer_tar(("hardlink", "hl", "../../../../../../etc/passwd"))],
        "symlink-same-layer": [layer_tar(("symlink", "link", str(outside)), ("file", "link/escape", b"x"))],
        "symlink-lower-layer": [layer_tar(("symlink", "link", str(outside))),
                                layer_tar(("file", "link/escape", b"x"))],
        "whiteout-through-symlink": [layer_tar(("symlink", "link", str(outside))),
                                     layer_tar(("file", "link/.wh.victim", b""))],
    }[case]
    tarball, blobs = oci_archive(tmp_path / "evil.tar", layers)
    bad_layer = sha256(blobs[-1])
    message = {
        "dotdot": "entry ../escape: path escapes the rootfs",
        "absolute": f"entry {outside}/escape: absolute path",
        "hardlink": "hardlink hl: entry ../../../../../../etc/passwd: path escapes the rootfs",
        "symlink-same-layer": "entry link/escape: path goes through a symlink or leaves the rootfs",
        "symlink-lower-layer": "entry link/escape: path goes through a symlink or leaves the rootfs",
        "whiteout-through-symlink": "entry link/.wh.victim: path goes through a symlink or leaves the rootfs",
    }[case]
    expect_failure(hedge, dirs, seeded_store, tarball, f"layer sha256:{bad_layer}: {message}", "--name", "x")
    assert sorted(os.listdir(outside)) == ["victim"]
    assert (outside / "victim").read_text() == "host file\n"
    assert not (tmp_path / "escape").exists()


# ---- the shared fixtures other tests use -----------------------------------------------------

def test_busybox_fixtures(hedge, imported_busybox, busybox_image_tar):
    image = only_image(hedge)
    assert (image["name"], image["id"], image["cmd"]) == ("busybox:latest", imported_busybox, ["sh"])
    root = pathlib.Path(image["rootfs"])
    assert os.access(root / "bin" / "busybox", os.X_OK)
    # the applet links resolve inside the image
    target = os.readlink(root / "bin" / "sh")
    assert os.path.isfile(root / target.lstrip("/") if target.startswith("/") else root / "bin" / target)


# ---- images run as containers (the container backend) --------------------------------------

def test_run_uses_image_defaults(hedge, rich_oci_tar):
    """hedge run IMAGE: the image's Entrypoint, Cmd, Env, WorkingDir and User apply, the docker way."""
    assert hedge("image", "import", rich_oci_tar, "--name", "rich:v1").code == 0
    r = hedge("run", "rich:v1")  # Entrypoint ["/bin/sh", "-c"] + Cmd ["echo hi"]
    assert (r.code, r.out) == (0, "hi\n"), r
    r = hedge("run", "rich:v1", "--", 'echo "$A|$B|$(pwd)|$(busybox id -u):$(busybox id -g)"')
    assert (r.code, r.out) == (0, "1|two words|/home/app|1000:1000\n"), r
    r = hedge("run", "-e", "A=override", "-w", "/", "-u", "0", "rich:v1", "--", 'echo "$A|$(pwd)|$(busybox id -u)"')
    assert (r.code, r.out) == (0, "override|/|0\n"), r


def test_container_writes_do_not_reach_the_image(hedge, imported_busybox):
    image = only_image(hedge)
    before = store_files(pathlib.Path(image["rootfs"]))
    r = hedge("run", "busybox", "--", "sh", "-c", "echo x > /etc/written && rm /bin/ls && cat /etc/written")
    assert (r.code, r.out) == (0, "x\n"), r
    assert store_files(pathlib.Path(image["rootfs"])) == before
    r = hedge("run", "busybox", "--", "ls", "/etc/written")
    assert r.code == 1, r


def test_run_unknown_image(hedge):
    r = hedge("run", "nosuch:1", "--", "true")
    assert (r.code, r.err) == (125, "hedge: image nosuch:1: not found\n")
