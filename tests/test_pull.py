"""`hedge image pull` against a real registry: Debian's docker-registry (distribution 2.8), started here on a
free loopback port with its own config and storage dir, loaded with `skopeo copy` from archives these tests
build. Plain HTTP, so every pull names the registry with --insecure-registry.
"""
import base64
import json
import os
import pathlib
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import warnings

import pytest

from conftest import build_oci_layout

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # bcrypt hashes for docker-registry's htpasswd (Python 3.11's crypt(3) binding)


def need(tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (deps/image.txt)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    def __init__(self, root, htpasswd=None, token=None, tls=None):
        self.root = root
        self.storage = root / "storage"
        self.storage.mkdir()
        self.log_path = root / "registry.log"
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        (root / "config.yml").write_text(
            "version: 0.1\n"
            "log:\n  level: info\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n" +
            (f"  tls:\n    certificate: {tls[0]}\n    key: {tls[1]}\n" if tls else "") +
            (f"auth:\n  htpasswd:\n    realm: hedge-test\n    path: {htpasswd}\n" if htpasswd else "") +
            (f"auth:\n  token:\n    realm: {token.realm}\n    service: {token.service}\n"
             f"    issuer: {token.issuer}\n    rootcertbundle: {token.cert_path}\n" if token else ""))
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                if tls:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                else:
                    urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1).read()
                break
            except urllib.error.HTTPError:
                break  # an auth registry answers 401: it is up
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("docker-registry did not start:\n" + self.log_path.read_text())
                time.sleep(0.05)

    def push(self, oci_tar, repo, creds=None, cert_dir=None):
        subprocess.run(["skopeo", "--insecure-policy", "copy",
                        *([f"--dest-cert-dir={cert_dir}"] if cert_dir else ["--dest-tls-verify=false"]),
                        *(["--dest-creds", creds] if creds else []),
                        f"oci-archive:{oci_tar}:latest", f"docker://{self.host}/{repo}:latest"],
                       check=True, capture_output=True)

    def manifest(self, repo, tag="latest", creds=None):
        """(digest, manifest) as the registry serves them."""
        auth = {"Authorization": "Basic " + base64.b64encode(creds.encode()).decode()} if creds else {}
        req = urllib.request.Request(f"http://{self.host}/v2/{repo}/manifests/{tag}", headers={**auth,
            "Accept": "application/vnd.oci.image.manifest.v1+json, "
                      "application/vnd.docker.distribution.manifest.v2+json"})
        with urllib.request.urlopen(req) as resp:
            return resp.headers["Docker-Content-Digest"], json.loads(resp.read())

    def blob_gets(self, digest):
        """How many times the registry has served blob digest (its access log)."""
        self.log.flush()
        return sum(1 for line in self.log_path.read_text().splitlines()
                   if f"GET /v2/" in line and f"/blobs/{digest} " in line and '" 200 ' in line)

    def blob_file(self, digest):
        hex_ = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory, busybox_image_tar):
    need("docker-registry")
    need("skopeo")
    r = Registry(tmp_path_factory.mktemp("registry"))
    try:
        r.push(busybox_image_tar, "busybox")
        yield r
    finally:
        r.stop()


def pull(hedge, registry, ref, *args):
    return hedge("image", "pull", "--insecure-registry", registry.host, f"{registry.host}/{ref}", *args)


def store(dirs):
    return pathlib.Path(dirs["state"]) / "images"


def test_pull_and_run(hedge, dirs, registry):
    """A pulled image lands in the store like an imported one: `hedge run -i container` runs busybox from it."""
    r = pull(hedge, registry, "busybox:latest")
    assert r.code == 0, r
    digest, manifest = registry.manifest("busybox")
    assert f"Digest: {digest}\n" in r.out
    assert f"Pulled image: {registry.host}/busybox:latest sha256:" in r.out
    image_id = r.out.split()[-1]
    assert image_id == manifest["config"]["digest"]
    r = hedge("run", "-i", "container", f"{registry.host}/busybox:latest", "--", "sh", "-c", "echo hello from $(busybox | head -1 | cut -c1-7)")
    assert (r.code, r.out) == (0, "hello from BusyBox\n"), r
    # every blob is stored under its digest
    blobs = store(dirs) / "blobs/sha256"
    for d in [manifest["config"]["digest"]] + [l["digest"] for l in manifest["layers"]]:
        assert (blobs / d.split(":")[1]).is_file(), d
    assert list((store(dirs) / "tmp").iterdir()) == []


def test_second_pull_fetches_no_layer(hedge, registry):
    """Layers already in the store are not fetched again."""
    _, manifest = registry.manifest("busybox")
    layer = manifest["layers"][0]["digest"]
    assert pull(hedge, registry, "busybox").code == 0
    before = registry.blob_gets(layer)
    assert before >= 1
    r = pull(hedge, registry, "busybox:latest")
    assert r.code == 0, r
    assert "already present" in r.out
    assert registry.blob_gets(layer) == before


def test_layer_in_store_is_reused(hedge, registry, busybox_image_tar):
    """A layer another image brought is applied from the store, not fetched: here the OCI archive that was
    pushed has the same layer blob, imported under another name first."""
    _, manifest = registry.manifest("busybox")
    layer = manifest["layers"][0]["digest"]
    assert hedge("image", "import", busybox_image_tar, "--name", "local:v1").code == 0
    before = registry.blob_gets(layer)
    r = pull(hedge, registry, "busybox:latest")
    assert r.code == 0, r
    assert registry.blob_gets(layer) == before


def test_tag_resolves_to_digest(hedge, dirs, registry):
    """The tag resolves to the manifest digest; the image can be named, pulled and run by that digest."""
    digest, _ = registry.manifest("busybox")
    r = pull(hedge, registry, "busybox:latest", "-q")
    assert r.code == 0, r
    assert r.out.splitlines()[0] == f"Digest: {digest}"
    by_digest = f"{registry.host}/busybox@{digest}"
    r = hedge("image", "inspect", by_digest)
    assert r.code == 0, r
    # a fresh store pulls by digest alone
    shutil.rmtree(store(dirs))
    r = pull(hedge, registry, f"busybox@{digest}")
    assert r.code == 0, r
    assert f"Pulled image: {by_digest} " in r.out
    r = hedge("run", "-i", "container", by_digest, "--", "echo", "pinned")
    assert (r.code, r.out) == (0, "pinned\n"), r
    # a digest the registry does not have
    r = pull(hedge, registry, "busybox@sha256:" + "0" * 64)
    assert r.code != 0 and "not found" in r.err, r


def test_digest_ref_follows_the_tag(hedge, registry):
    """ls shows a pulled image once, by its tag; removing the last tag removes the digest ref and the image with
    it (as in docker); an image pulled by digest alone is listed and removed by its digest ref."""
    digest, _ = registry.manifest("busybox")
    tag, by_digest = f"{registry.host}/busybox:latest", f"{registry.host}/busybox@{digest}"
    assert pull(hedge, registry, "busybox", "-q").code == 0
    assert [i["name"] for i in json.loads(hedge("image", "ls", "--json").out)] == [tag]
    r = hedge("image", "rm", tag)
    assert r.code == 0, r
    assert r.out.splitlines()[:2] == [f"Untagged: {tag}", f"Untagged: {by_digest}"], r.out
    assert r.out.splitlines()[2].startswith("Deleted: sha256:"), r.out
    assert json.loads(hedge("image", "ls", "--json").out) == []
    assert pull(hedge, registry, f"busybox@{digest}", "-q").code == 0
    assert [i["name"] for i in json.loads(hedge("image", "ls", "--json").out)] == [by_digest]
    r = hedge("image", "rm", by_digest)
    assert r.code == 0 and f"Untagged: {by_digest}\n" in r.out and "Deleted: " in r.out, r
    assert json.loads(hedge("image", "ls", "--json").out) == []


def test_progress_bar_on_a_terminal(hedge, registry):
    """On a terminal the pull draws a bar line (redrawn with \\r) that ends at 100%; piped, there is none."""
    import pty
    main, sub = pty.openpty()
    proc = subprocess.Popen([hedge.binary, "image", "pull", "--insecure-registry", registry.host,
                             f"{registry.host}/busybox"], stdout=sub, stderr=subprocess.DEVNULL, env=hedge.env())
    os.close(sub)
    out = b""
    while True:  # read while it runs: a full pty would block it
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        out += chunk
    os.close(main)
    assert proc.wait(timeout=60) == 0, out
    text = out.decode()
    _, manifest = registry.manifest("busybox")
    total = sum(l["size"] for l in manifest["layers"]) / 1e6
    assert f"\r\033[KDownloading {total:.1f} MB / {total:.1f} MB 100%" in text, repr(text)
    assert "Pulled image: " in text
    # piped: blob lines only (the image removed first, so the layer is downloaded again)
    assert hedge("image", "rm", f"{registry.host}/busybox").code == 0
    piped = hedge("image", "pull", "--insecure-registry", registry.host, f"{registry.host}/busybox")
    assert piped.code == 0 and "pulled (" in piped.out and "Downloading" not in piped.out and "\r" not in piped.out, piped


def test_unknown_tag_and_plain_http_refused(hedge, registry):
    r = pull(hedge, registry, "busybox:nope")
    assert r.code != 0 and "manifest nope: not found" in r.err, r
    # without --insecure-registry the registry is spoken to over TLS, which it does not serve
    r = hedge("image", "pull", f"{registry.host}/busybox")
    assert r.code != 0 and "https://" in r.err, r


def test_corrupt_blob_is_caught(hedge, dirs, registry, tmp_path):
    """A registry serving a wrong blob: the pull fails naming the digest and the store holds nothing of it."""
    rootfs = tmp_path / "rootfs"
    (rootfs / "data").mkdir(parents=True)
    (rootfs / "data" / "file").write_bytes(os.urandom(4096))
    layout = build_oci_layout(tmp_path / "layout", rootfs)
    tar = tmp_path / "broken.tar"
    subprocess.run(["tar", "-C", str(layout), "-cf", str(tar), "."], check=True)
    registry.push(tar, "broken")
    _, manifest = registry.manifest("broken")
    layer = manifest["layers"][0]["digest"]
    path = registry.blob_file(layer)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(data))
    r = pull(hedge, registry, "broken:latest")
    assert r.code != 0, r
    assert f"blob {layer}: digest mismatch" in r.err, r
    # nothing half-written: no ref, no blob of this image, no temp dir
    assert hedge("image", "ls", "--json").out.strip() == "[]"
    blobs = store(dirs) / "blobs/sha256"
    assert not (blobs / layer.split(":")[1]).exists()
    assert not (blobs / manifest["config"]["digest"].split(":")[1]).exists()
    assert list((store(dirs) / "tmp").iterdir()) == []
    assert list((store(dirs) / "partial").iterdir()) == []  # known-wrong bytes are not kept for a resume


def test_hedge_does_not_map_libcurl(hedge):
    """libcurl is loaded only by a pull: the binary does not link it."""
    out = subprocess.run(["readelf", "-d", hedge.binary], check=True, capture_output=True, text=True).stdout
    assert "libcurl" not in out


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory, busybox_image_tar):
    """A registry with htpasswd (Basic) auth: user hedge, password s3cret."""
    need("docker-registry")
    need("skopeo")
    root = tmp_path_factory.mktemp("auth-registry")
    (root / "htpasswd").write_text("hedge:" + crypt.crypt("s3cret", crypt.mksalt(crypt.METHOD_BLOWFISH)) + "\n")
    r = Registry(root, htpasswd=root / "htpasswd")
    try:
        r.push(busybox_image_tar, "private/busybox", creds="hedge:s3cret")
        yield r
    finally:
        r.stop()


def test_basic_auth_login_and_pull(hedge, dirs, auth_registry):
    """hedge login checks and keeps credentials (docker config.json "auths"); a pull answers the Basic challenge."""
    reg = auth_registry
    r = pull(hedge, reg, "private/busybox")
    assert r.code != 0 and "authentication required" in r.err and "hedge login" in r.err, r
    r = hedge("login", "--insecure-registry", reg.host, reg.host, "-u", "hedge", "--password-stdin", input="wrong\n")
    assert r.code != 0 and "unauthorized" in r.err, r
    auth_file = pathlib.Path(dirs["state"]) / "auth.json"
    assert not auth_file.exists()
    r = hedge("login", "--insecure-registry", reg.host, reg.host, "-u", "hedge", "--password-stdin", input="s3cret\n")
    assert (r.code, r.out) == (0, "Login Succeeded\n"), r
    assert auth_file.stat().st_mode & 0o777 == 0o600
    doc = json.loads(auth_file.read_text())
    assert doc == {"auths": {reg.host: {"auth": base64.b64encode(b"hedge:s3cret").decode()}}}
    r = pull(hedge, reg, "private/busybox")
    assert r.code == 0, r
    digest, _ = reg.manifest("private/busybox", creds="hedge:s3cret")
    assert f"Digest: {digest}" in r.out
    r = hedge("run", "-i", "container", f"{reg.host}/private/busybox", "--", "echo", "authed")
    assert (r.code, r.out) == (0, "authed\n"), r
    # a docker-style auth file given with --authfile; a wrong password there is refused
    other = pathlib.Path(dirs["state"]) / "docker-config.json"
    other.write_text(json.dumps({"auths": {reg.host: {"auth": base64.b64encode(b"hedge:nope").decode()}}}))
    r = pull(hedge, reg, "private/busybox", "--authfile", other)
    assert r.code != 0 and "refused the credentials" in r.err, r


# ---- Bearer tokens: docker-registry's token auth, with a token server written here -----------------------------

class TokenServer:
    """The token endpoint of the distribution token spec: Basic-authenticated GET /token?service=&scope=, answered
    with a JWT (ES256, the signing certificate in x5c) that docker-registry verifies against rootcertbundle."""

    def __init__(self, root, user, password):
        import datetime
        import http.server
        import threading
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hedge-test-token")])
        now = datetime.datetime.utcnow()
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(self.key, hashes.SHA256()))
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.cert_path = root / "token-cert.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.service, self.issuer = "hedge-registry", "hedge-test-issuer"
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                if self.headers.get("Authorization") != server.expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"token": server.token(self.path)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def token(self, path):
        import urllib.parse
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
        query = urllib.parse.parse_qs(urllib.parse.urlparse(path).query)
        access = []
        for scope in query.get("scope", []):
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": "hedge", "aud": query.get("service", [""])[0], "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
        signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return signing_input + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory, busybox_image_tar):
    need("docker-registry")
    need("skopeo")
    pytest.importorskip("cryptography")
    root = tmp_path_factory.mktemp("token-registry")
    tokens = TokenServer(root, "hedge", "t0ken-pass")
    r = Registry(root, token=tokens)
    r.tokens = tokens
    try:
        r.push(busybox_image_tar, "team/busybox", creds="hedge:t0ken-pass")
        yield r
    finally:
        r.stop()
        tokens.stop()


def test_bearer_token_flow(hedge, token_registry):
    """A registry with token auth: the pull follows the challenge to the realm, authenticates there with the stored
    credentials, and uses the token it gets; without credentials the token server refuses."""
    reg = token_registry
    r = pull(hedge, reg, "team/busybox")
    assert r.code != 0 and "token server" in r.err and "refused an anonymous pull" in r.err, r
    r = hedge("login", "--insecure-registry", reg.host, reg.host, "-u", "hedge", "-p", "t0ken-pass")
    assert (r.code, r.out) == (0, "Login Succeeded\n"), r
    before = len(reg.tokens.requests)
    r = pull(hedge, reg, "team/busybox")
    assert r.code == 0, r
    # one token for the whole pull, asked for the repository's pull scope
    asked = reg.tokens.requests[before:]
    assert len(asked) == 1 and "scope=repository%3Ateam%2Fbusybox%3Apull" in asked[0], asked
    r = hedge("run", "-i", "container", f"{reg.host}/team/busybox", "--", "echo", "token")
    assert (r.code, r.out) == (0, "token\n"), r


# ---- resume: the link is cut mid-blob ------------------------------------------------------------------------------

class CuttingProxy:
    """A TCP relay to the registry standing in for the network link: the first connection that carries more than
    `cut_after` bytes from the registry to the client is cut there (both sockets closed); after that one cut,
    connections pass untouched."""

    def __init__(self, target_port, cut_after):
        import threading
        self.target_port, self.cut_after = target_port, cut_after
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.host = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self.cuts = 0
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        import threading
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.relay, args=(client,), daemon=True).start()

    def relay(self, client):
        import select
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        sent = 0
        try:
            while True:
                ready, _, _ = select.select([client, upstream], [], [], 30)
                if not ready:
                    return
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is upstream:
                        if self.cuts == 0 and sent + len(data) > self.cut_after:
                            client.sendall(data[:self.cut_after - sent])
                            self.cuts += 1
                            return  # the link goes down mid-transfer
                        sent += len(data)
                        client.sendall(data)
                    else:
                        upstream.sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()

    def stop(self):
        self.listener.close()


def test_cut_download_resumes(hedge, dirs, registry):
    """The link breaks in the middle of the layer: the pull fails keeping the bytes it got, and the next pull asks
    for the rest only (HTTP Range, a 206 from the registry) and ends with a verified image."""
    _, manifest = registry.manifest("busybox")
    layer = manifest["layers"][0]
    assert layer["size"] > 600_000  # busybox's layer is ~1 MB: cut after ~400 kB of it
    proxy = CuttingProxy(registry.port, cut_after=400_000)
    try:
        ref = f"{proxy.host}/busybox:latest"
        r = hedge("image", "pull", "--insecure-registry", proxy.host, ref)
        assert r.code != 0 and f"blob {layer['digest']}" in r.err and "pull again to resume" in r.err, r
        assert proxy.cuts == 1
        partial = store(dirs) / "partial" / layer["digest"].split(":")[1]
        kept = partial.stat().st_size
        assert 0 < kept < layer["size"]
        assert hedge("image", "ls", "--json").out.strip() == "[]"
        r = hedge("image", "pull", "--insecure-registry", proxy.host, ref)
        assert r.code == 0, r
        assert f"resuming at byte {kept}" in r.out, r
        # the registry served the rest of the blob as a partial response
        registry.log.flush()
        served = [line for line in registry.log_path.read_text().splitlines()
                  if f"/blobs/{layer['digest']} " in line and '" 206 ' in line]
        assert any(f'" 206 {layer["size"] - kept} ' in line for line in served), served[-3:]
        assert not partial.exists()
        r = hedge("run", "-i", "container", ref, "--", "echo", "resumed")
        assert (r.code, r.out) == (0, "resumed\n"), r
    finally:
        proxy.stop()


def test_layers_download_in_parallel_and_apply_in_order(hedge, registry, tmp_path, busybox_rootfs):
    """A 3-layer image (busybox; + /layered/one; + /layered/two and /layered/one deleted): the layers arrive on several
    connections, each blob once, and are applied in manifest order (the whiteout of the last layer holds)."""
    need("umoci")
    layout, ref = tmp_path / "layout", f"{tmp_path / 'layout'}:latest"
    umoci = lambda *a: subprocess.run(["umoci", *map(str, a)], check=True, capture_output=True)
    umoci("init", "--layout", layout)
    umoci("new", "--image", ref)
    steps = [lambda root: subprocess.run(["cp", "-a", f"{busybox_rootfs}/.", str(root)], check=True),
             # a directory of the test's own: the shared busybox rootfs may hold a /data another test made
             lambda root: ((root / "layered").mkdir(), (root / "layered" / "one").write_bytes(os.urandom(300_000))),
             lambda root: ((root / "layered" / "two").write_bytes(os.urandom(300_000)),
                           (root / "layered" / "one").unlink())]
    for n, step in enumerate(steps):
        bundle = tmp_path / f"bundle{n}"
        umoci("unpack", "--image", ref, bundle)
        step(bundle / "rootfs")
        umoci("repack", "--image", ref, bundle)
        shutil.rmtree(bundle)
    umoci("config", "--image", ref, "--config.cmd", "sh")
    tar = tmp_path / "layers.tar"
    subprocess.run(["tar", "-C", str(layout), "-cf", str(tar), "."], check=True)
    registry.push(tar, "layered")
    _, manifest = registry.manifest("layered")
    layers = [l["digest"] for l in manifest["layers"]]
    assert len(layers) == 3
    before = {d: registry.blob_gets(d) for d in layers}
    relay = CuttingProxy(registry.port, cut_after=1 << 40)  # never cuts: it only counts connections
    try:
        r = hedge("image", "pull", "--insecure-registry", relay.host, f"{relay.host}/layered:latest")
    finally:
        relay.stop()
    assert r.code == 0, r
    # manifest and config on one connection, the three layers on three more (PULL_PARALLEL)
    assert relay.connections == 4, relay.connections
    assert sorted(line.split(" sha256:")[0] for line in r.out.splitlines() if "pulled (" in line and
                  line.startswith("layer")) == ["layer 0", "layer 1", "layer 2"], r.out
    assert all(registry.blob_gets(d) == before[d] + 1 for d in layers)
    r = hedge("run", "-i", "container", f"{relay.host}/layered", "--", "sh", "-c", "ls /layered; wc -c < /layered/two")
    assert (r.code, r.out) == (0, "two\n300000\n"), r


def make_tls(root):
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key)."""
    import datetime
    import ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    now = datetime.datetime.utcnow()
    validity = dict(not_valid_before=now - datetime.timedelta(days=1), not_valid_after=now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hedge test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(validity["not_valid_before"])
          .not_valid_after(validity["not_valid_after"])
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(validity["not_valid_before"]).not_valid_after(validity["not_valid_after"])
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (root / "ca.pem").write_bytes(ca.public_bytes(pem))
    (root / "server.pem").write_bytes(cert.public_bytes(pem))
    (root / "server.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL,
                                                        serialization.NoEncryption()))
    return root / "ca.pem", root / "server.pem", root / "server.key"


def test_tls_registry_with_given_ca(hedge, tmp_path, busybox_image_tar):
    """A TLS registry whose certificate the system does not trust: refused, unless --ca names its CA."""
    need("docker-registry")
    need("skopeo")
    pytest.importorskip("cryptography")
    ca, cert, key = make_tls(tmp_path)
    cert_dir = tmp_path / "skopeo-certs"
    cert_dir.mkdir()
    shutil.copy(ca, cert_dir / "ca.crt")
    root = tmp_path / "registry"
    root.mkdir()
    reg = Registry(root, tls=(cert, key))
    try:
        reg.push(busybox_image_tar, "busybox", cert_dir=cert_dir)
        r = hedge("image", "pull", f"{reg.host}/busybox")
        assert r.code != 0 and "certificate" in r.err.lower(), r
        r = hedge("image", "pull", "--ca", ca, f"{reg.host}/busybox")
        assert r.code == 0, r
        r = hedge("run", "-i", "container", f"{reg.host}/busybox", "--", "echo", "over tls")
        assert (r.code, r.out) == (0, "over tls\n"), r
    finally:
        reg.stop()
