"""hedged pulls the image a deployment names (docs/images.md, "Pulls on deploy"): against Debian's
docker-registry, as in test_pull.py. The resolved tag is pinned to its digest in the deployment's record, so
with the registry stopped the node still deploys, restarts, rolls back and survives a restart of hedged.
`hedge image prune` keeps what deployments, tags and running workloads use.
"""
import hashlib
import json
import socket
import sqlite3
import subprocess
import tarfile
import threading

from test_daemon import HEDGED, Daemon, wait_for  # noqa: F401 (the daemon fixture below builds on it)
from test_pull import Registry, crypt, need, registry  # noqa: F401 (a module fixture)

import pytest


@pytest.fixture
def daemon(tmp_path, hedge):
    made = []

    def make(config):
        d = Daemon(tmp_path, hedge, "d", config)
        made.append(d)
        return d.start()

    yield make
    for d in made:
        d.cleanup()


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory):
    """An htpasswd (Basic) registry holding nothing (user hedge, password s3cret): with the login, a pull gets
    as far as the manifest; test_pull.py pulls through auth for real."""
    need("docker-registry")
    root = tmp_path_factory.mktemp("auth-registry")
    (root / "htpasswd").write_text("hedge:" + crypt.crypt("s3cret", crypt.mksalt(crypt.METHOD_BLOWFISH)) + "\n")
    r = Registry(root, htpasswd=root / "htpasswd")
    yield r
    r.stop()


def box(name, image, text):
    return {"name": name, "isolation": "container", "image": image,
            "command": ["sh", "-c", f"echo {text}; exec sleep 1000"]}


def test_registries_config_is_checked(tmp_path):
    cfg = tmp_path / "c.json"
    for content, message in [({"registries": {"insecure": ["127.0.0.1:5000"], "ca": "/etc/ssl/ca.pem"}}, None),
                             ({"registries": {"insecure": "127.0.0.1:5000"}}, "registries.insecure: must be"),
                             ({"registries": {"ca": "ca.pem"}}, 'registries.ca: "ca.pem" must be an absolute path'),
                             ({"registries": {"mirror": "x"}}, "registries.mirror: unknown field")]:
        cfg.write_text(json.dumps(content))
        r = subprocess.run([str(HEDGED), "--check", str(cfg)], capture_output=True, text=True)
        assert (r.returncode == 0) == (message is None) and (message is None or message in r.stderr), (content, r)


def versions_images(d):
    db = sqlite3.connect(str(d.state / "hedged.db"))
    try:
        return [json.loads(s)["image"] for (s,) in db.execute("SELECT spec FROM versions ORDER BY name, version")]
    finally:
        db.close()


def test_pull_errors_and_pulling_state(daemon, registry, auth_registry, tmp_path):
    reg, areg = registry, auth_registry
    # a registry that accepts connections and never answers: the deploy stays "pulling" until removed
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    hole_host = f"127.0.0.1:{hole.getsockname()[1]}"
    d = daemon({"registries": {"insecure": [reg.host, areg.host, hole_host]}})
    try:
        r = d.deploy(box("nope", f"{reg.host}/busybox:nope", "x"))
        assert r.code != 0 and f"image {reg.host}/busybox:nope: pull failed: manifest nope: not found" in r.err, r
        r = d.deploy(box("priv", f"{areg.host}/private/busybox:latest", "x"))
        assert r.code != 0 and "pull failed" in r.err and "authentication required" in r.err, r

        spec_path = tmp_path / "slow.json"
        spec_path.write_text(json.dumps(box("slow", f"{hole_host}/busybox:latest", "x")))
        out = {}
        t = threading.Thread(target=lambda: out.update(r=d.cli("deploy", spec_path)))
        t.start()
        w = d.wait_state("slow", "pulling")
        assert w["pulling"] == f"{hole_host}/busybox:latest" and w["version"] == 0
        r = d.deploy(box("slow", f"{hole_host}/busybox:latest", "y"))
        assert r.code != 0 and "is being pulled" in r.err, r
        assert d.cli("rm", "slow").code == 0
        t.join(timeout=20)
        assert out["r"].code != 0 and "removed while its image" in out["r"].err, out
        assert d.ps("slow") is None

        # credentials from the file `hedge login` writes in hedged's state dir: past the auth, to the manifest
        r = d.cli("--state-dir", d.state, "login", "--insecure-registry", areg.host, areg.host, "-u", "hedge",
                  "--password-stdin", input="s3cret\n")
        assert r.code == 0, r
        r = d.deploy(box("priv", f"{areg.host}/private/busybox:latest", "x"))
        assert r.code != 0 and "pull failed: manifest latest: not found" in r.err, r

        # a first deploy pulls; an upgrade to an image not stored yet pulls, then upgrades (health-gated)
        digest = reg.manifest("busybox")[0]
        assert d.deploy(box("app", f"{reg.host}/busybox@{digest}", "by-digest")).code == 0
        r = d.deploy(box("app", f"{reg.host}/busybox:latest", "by-tag"))
        assert r.code == 0 and "version 2" in r.out, (r, d.errlog.read_text())
        code, info = d.api("GET", "/v1/workloads/app")
        assert info["spec"]["image"] == f"{reg.host}/busybox:latest@{digest}", info
        assert [e["type"] for e in d.events("app")].count("pulled") == 2
        wait_for(lambda: d.cli("logs", "app").out == "by-digest\nby-tag\n", what="both versions' output")
    finally:
        hole.close()


def test_prune_keeps_running_workloads_and_removes_partial(hedge, dirs, registry, tmp_path):
    """Without hedged: prune keeps an image a `hedge run` container has mounted, drops dangling ones."""
    reg = registry
    r = hedge("image", "pull", "--insecure-registry", reg.host, f"{reg.host}/busybox:latest")
    assert r.code == 0, r
    images = dirs["state"] / "images"
    (images / "partial" / ("0" * 64)).write_bytes(b"x" * 1000)
    env = hedge.env()
    signal_dir = tmp_path / "signal"
    signal_dir.mkdir()
    proc = subprocess.Popen([hedge.binary, "run", "-i", "container", "-v", f"{signal_dir}:/signal",
                             f"{reg.host}/busybox:latest", "--", "sh", "-c",
                             "echo up; while [ ! -e /signal/stop ]; do sleep 0.05; done"],
                            env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "up\n"
        r = hedge("image", "prune", "--all")
        assert r.code == 0 and "Deleted:" not in r.out and "1 partial downloads" in r.out, r
        assert list((images / "partial").iterdir()) == []
    finally:
        (signal_dir / "stop").touch()
        proc.wait(timeout=20)
    # the tag untagged by hand leaves a digest ref only: dangling, pruned without --all
    digest, manifest = reg.manifest("busybox")
    refs = json.loads((images / "refs.json").read_text())
    del refs["refs"][f"{reg.host}/busybox:latest"]
    (images / "refs.json").write_text(json.dumps(refs))
    r = hedge("image", "prune")
    assert r.code == 0 and f"Untagged: {reg.host}/busybox@{digest}" in r.out, r
    assert f"Deleted: {manifest['config']['digest']}" in r.out, r
    assert hedge("image", "ls", "--json").out.strip() == "[]"


def add_blob(layout, data, media_type, **extra):
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs/sha256" / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data), **extra}


def test_image_index_resolves_the_platform(hedge, registry, busybox_image_tar, tmp_path):
    """An image index with linux/amd64 and linux/arm64 manifests (pushed with skopeo --all): the pull takes this
    host's, --platform another's (whose config is then refused: not this host), an absent platform is named."""
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(busybox_image_tar) as t:
        t.extractall(layout)
    top = json.loads((layout / "index.json").read_text())
    amd = top["manifests"][0]
    manifest = json.loads((layout / "blobs/sha256" / amd["digest"].split(":")[1]).read_bytes())
    config = json.loads((layout / "blobs/sha256" / manifest["config"]["digest"].split(":")[1]).read_bytes())
    config["architecture"] = "arm64"
    manifest["config"] = add_blob(layout, json.dumps(config).encode(), manifest["config"]["mediaType"])
    arm = add_blob(layout, json.dumps(manifest).encode(), amd["mediaType"],
                   platform={"os": "linux", "architecture": "arm64"})
    amd = {k: v for k, v in amd.items() if k != "annotations"}
    amd["platform"] = {"os": "linux", "architecture": "amd64"}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [arm, amd]}
    desc = add_blob(layout, json.dumps(index).encode(), "application/vnd.oci.image.index.v1+json",
                    annotations={"org.opencontainers.image.ref.name": "latest"})
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--all", "--dest-tls-verify=false",
                    f"oci:{layout}:latest", f"docker://{registry.host}/multi:latest"], check=True,
                   capture_output=True)
    ref = f"{registry.host}/multi:latest"
    r = hedge("image", "pull", "--insecure-registry", registry.host, ref)
    assert r.code == 0 and r.out.split()[-1] == json.loads((layout / "blobs/sha256" / amd["digest"].split(":")[1])
                                                            .read_bytes())["config"]["digest"], r
    r = hedge("image", "pull", "--insecure-registry", registry.host, "--platform", "linux/arm64", ref)
    assert r.code != 0 and "arm64" in r.err, r
    r = hedge("image", "pull", "--insecure-registry", registry.host, "--platform", "linux/s390x", ref)
    assert r.code != 0 and "no linux/s390x image in it" in r.err, r


def test_deploy_pulls_pins_and_runs_offline(daemon, registry):
    """Last in the file: it stops the module's registry."""
    offline(daemon, registry)


def offline(daemon, reg):
    d = daemon({"registries": {"insecure": [reg.host]}})
    ref = f"{reg.host}/busybox:latest"
    digest, manifest = reg.manifest("busybox")
    pinned = f"{ref}@{digest}"

    r = d.deploy(box("web", ref, "v1"))
    assert r.code == 0, (r, d.errlog.read_text())
    w = d.wait_state("web", "running")
    code, info = d.api("GET", "/v1/workloads/web")
    assert info["spec"]["image"] == pinned and info["pulling"] is None
    kinds = [e["type"] for e in d.events("web")]
    assert "pulling" in kinds and "pulled" in kinds, kinds
    assert versions_images(d) == [pinned]
    wait_for(lambda: d.cli("logs", "web").out == "v1\n", what="v1's output")

    # the tag is pinned: a deploy of the same spec is unchanged, without asking the registry
    reg.stop()
    reg.stop = lambda: None  # the fixture's teardown
    r = d.deploy(box("web", ref, "v1"))
    assert r.code == 0 and "unchanged" in r.out, r
    # offline: another deployment of the stored tag, an upgrade, a rollback, stop/start, a restart of hedged
    r = d.deploy(box("web2", ref, "other"))
    assert r.code == 0, r
    r = d.deploy(box("web", ref, "v2"))
    assert r.code == 0 and "version 2" in r.out, r
    r = d.cli("rollback", "web")
    assert r.code == 0 and "version 3" in r.out, r
    assert versions_images(d) == [pinned] * 4
    assert d.cli("stop", "web").code == 0
    assert d.cli("start", "web").code == 0
    d.wait_state("web", "running")
    d.stop()
    d.start()
    w = d.wait_state("web", "running")
    assert w["version"] == 3
    wait_for(lambda: d.cli("logs", "web").out == "v1\nv2\nv1\nv1\n", what="every run's output")

    # a reference the store lacks, with the registry down: an error naming it and the reason
    r = d.deploy(box("web3", f"{reg.host}/busybox:v9", "x"))
    assert r.code != 0 and f"image {reg.host}/busybox:v9: pull failed:" in r.err, r
    assert "onnect" in r.err, r  # curl's "Couldn't connect to server"
    assert d.ps("web3") is None

    # prune keeps what deployments use, even untagged; removes the rest
    r = d.cli("--state-dir", d.state, "image", "prune", "--all")
    assert r.code == 0 and "Deleted:" not in r.out, r
    assert d.cli("rm", "web", "web2").code == 0
    r = d.cli("--state-dir", d.state, "image", "prune")
    assert r.code == 0 and "Deleted:" not in r.out, r  # tagged: kept without --all
    r = d.cli("--state-dir", d.state, "image", "prune", "--all")
    assert r.code == 0, r
    assert f"Untagged: {ref}" in r.out and f"Deleted: {manifest['config']['digest']}" in r.out, r
    assert "Total reclaimed space:" in r.out and "0 blobs" not in r.out, r
    assert list((d.state / "images/blobs/sha256").iterdir()) == []
    assert list((d.state / "images/rootfs").iterdir()) == []
