"""Secrets (issue 17 part 3, docs/security.md "Secrets"): `hedge secret set|ls|rm`, the store encrypted at rest
under the node key, delivery as files on a tmpfs to process and container workloads, hedged's rewrite of running
workloads' files on an update (or an upgrade with "secret_update": "restart"), and the value never showing in the
state dir, API answers, hedged's log or environment. Every run is checked for leftovers (no tmpfs, no dir)."""
import json
import os
import pathlib
import secrets as pysecrets
import signal
import stat
import subprocess
import tempfile

import pytest

from conftest import BUILD, hedge_cgroups, mounts_under
from test_daemon import daemon, wait_for  # noqa: F401 (daemon is a fixture)
from test_vm import guest_kernel, vm_rootfs  # noqa: F401 (fixtures)

VALUE = "hunter2-" + pysecrets.token_hex(8)


def run_spec(hedge, tmp_path, spec, env=None):
    path = tmp_path / f"{spec['name']}.json"
    path.write_text(json.dumps(spec))
    return hedge("run", "-f", path, env=env)


def secret_dirs(dirs):
    d = dirs["run"] / "secrets"
    return list(d.iterdir()) if d.exists() else []


def test_store_cli_and_bad_input(hedge, dirs, tmp_path):
    # libcrypto is loaded with dlopen when a secret is sealed or opened, never at start
    for program in ("hedge", "hedge-full", "hedged", "hedge-monitor"):
        out = subprocess.run(["readelf", "-d", str(BUILD / program)], capture_output=True, text=True, check=True).stdout
        assert "libcrypto" not in out and "libssl" not in out, program
    r = hedge("secret", "set", "db", input=VALUE)
    assert r.code == 0 and r.out.strip() == "db: version 1", r
    vf = tmp_path / "value"
    vf.write_text(VALUE + "-file")
    r = hedge("secret", "set", "db", "-f", vf)
    assert r.code == 0 and r.out.strip() == "db: version 2", r
    assert hedge("secret", "set", "api.token", input="x").code == 0
    r = hedge("secret", "ls", "--json")
    assert r.code == 0, r
    assert [(s["name"], s["version"]) for s in json.loads(r.out)] == [("api.token", 1), ("db", 2)]
    r = hedge("secret", "ls")
    assert "db" in r.out and VALUE not in r.out
    # at rest: sealed, the key root-only
    key = dirs["state"] / "secret.key"
    st = key.stat()
    assert stat.S_IMODE(st.st_mode) == 0o400 and st.st_size == 32 and st.st_uid == 0
    sealed = (dirs["state"] / "secrets" / "db").read_bytes()
    assert VALUE.encode() not in sealed and sealed.startswith(b"HDSECRT1")
    # bad input names the field
    r = hedge("secret", "set", "../etc", input="x")
    assert r.code == 125 and 'name: "../etc" is not a valid secret name' in r.err, r
    r = hedge("secret", "set", input="x")
    assert r.code == 2, r
    r = hedge("secret", "set", "db", "-f", tmp_path / "missing")
    assert r.code == 125 and "missing" in r.err, r
    r = hedge("secret", "rm", "nope")
    assert r.code == 125 and "secret nope: no such secret" in r.err, r
    assert hedge("secret", "rm", "api.token").code == 0
    assert [s["name"] for s in json.loads(hedge("secret", "ls", "--json").out)] == ["db"]
    # a key others can read is refused
    loose = tmp_path / "loose.key"
    loose.write_bytes(os.urandom(32))
    loose.chmod(0o644)
    r = hedge("secret", "set", "other", input="x", env={"HEDGE_SECRET_KEY": str(loose)})
    assert r.code == 125 and "must be readable by its owner (root) only" in r.err, r
    # spec errors name the field path
    base = {"name": "s", "isolation": "process", "command": ["true"]}
    for secrets, message in [
        ([{"target": "/run/secrets/x"}], "secrets[0].name: is required"),
        ([{"name": "a/b"}], 'secrets[0].name: "a/b" is not a secret name'),
        ([{"name": "db", "target": "relative"}], 'secrets[0].target: "relative" must be an absolute path'),
        ([{"name": "db", "target": "/db"}], 'secrets[0].target: "/db" must be in a directory'),
        ([{"name": "db", "mode": "0999"}], 'secrets[0].mode: "0999" is not a file mode'),
        ([{"name": "db", "uid": -1}], "secrets[0].uid"),
        ([{"name": "db", "env": "A-B"}], 'secrets[0].env: "A-B" is not a variable name'),
        ([{"name": "db", "colour": 1}], "secrets[0].colour: unknown field"),
        ([{"name": "db"}, {"name": "db"}], 'secrets[1].target: "/run/secrets/db" is also the target of secrets[0]'),
        ([{"name": "nope"}], "secrets[0]: secret nope: no such secret"),
    ]:
        r = run_spec(hedge, tmp_path, {**base, "secrets": secrets})
        assert r.code == 125 and message in r.err, (secrets, r)
    r = run_spec(hedge, tmp_path, {**base, "secret_update": "sometimes"})
    assert r.code == 125 and 'secret_update: "sometimes" is not a secret update policy' in r.err, r
    assert secret_dirs(dirs) == []


def test_delivery_to_a_process_and_a_container(hedge, dirs, tmp_path, busybox_rootfs):
    assert hedge("secret", "set", "db", input=VALUE).code == 0
    assert hedge("secret", "set", "cert", input="CERT").code == 0
    script = ('d="$HEDGE_SECRETS_DIR"; cat "$d/run/secrets/db"; echo; stat -c "%a %u %g" "$d/run/secrets/db"; '
              'cat "$d/etc/app/cert"; echo; stat -c "%a %u %g" "$d"; echo "env=$DB_PASSWORD"; echo "cert=$CERT"; '
              'grep " $d " /proc/mounts | cut -d" " -f1,3')
    r = run_spec(hedge, tmp_path, {"name": "p", "isolation": "process", "command": ["sh", "-c", script],
                                   "secrets": [{"name": "db", "env": "DB_PASSWORD", "uid": 1000, "gid": 1001},
                                               {"name": "cert", "target": "/etc/app/cert", "mode": "0440"}]})
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert lines[0] == VALUE
    assert lines[1] == "400 1000 1001"
    assert lines[2] == "CERT"
    assert lines[3] == "700 0 0"
    assert lines[4] == f"env={VALUE}"  # asked for: exported
    assert lines[5] == "cert="         # not asked for: file only
    assert lines[6] == "hedge-secrets tmpfs"
    assert secret_dirs(dirs) == []     # unmounted and removed (conftest checks no mount is left)

    # a process of another user reaches its private tmpfs (mode 0700, owned by it) through a 0700 runtime dir
    outer = pathlib.Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        outer.chmod(0o755)
        run_dir = outer / "run"
        run_dir.mkdir(mode=0o700)
        r = run_spec(hedge, tmp_path, {"name": "u", "isolation": "process", "user": "1000:1000",
                                       "command": ["sh", "-c", 'id -u; cat "$HEDGE_SECRETS_DIR/run/secrets/db"; echo; '
                                                   'stat -c "%a %u" "$HEDGE_SECRETS_DIR"'],
                                       "secrets": [{"name": "db"}]}, env={"HEDGE_RUN_DIR": str(run_dir)})
        assert r.code == 0 and r.out.splitlines() == ["1000", VALUE, "700 1000"], r
        assert mounts_under(run_dir) == [] and list((run_dir / "secrets").iterdir()) == []
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(outer)], check=True)

    script = ('id -u; cat /run/secrets/db; echo; stat -c "%a %u" /run/secrets/db; echo "env=$DB_PASSWORD"; '
              'grep " /run/secrets " /proc/mounts | cut -d" " -f1,3,4 | cut -d, -f1; '
              'echo x > /run/secrets/new 2>/dev/null || echo read-only')
    r = run_spec(hedge, tmp_path, {"name": "c", "isolation": "container", "rootfs": str(busybox_rootfs),
                                   "user": "1000:1000", "command": ["sh", "-c", script],
                                   "secrets": [{"name": "db"}]})
    assert r.code == 0, r
    assert r.out.splitlines() == ["1000", VALUE, "400 1000", "env=", "hedge-secrets tmpfs ro", "read-only"]
    assert secret_dirs(dirs) == []


def test_wrong_key_and_tampered_file(hedge, dirs, tmp_path):
    assert hedge("secret", "set", "db", input=VALUE).code == 0
    sealed = dirs["state"] / "secrets" / "db"
    before = sealed.read_bytes()
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(32))
    other.chmod(0o400)
    env = {"HEDGE_SECRET_KEY": str(other)}
    out = tmp_path / "out"
    spec = {"name": "p", "isolation": "process", "command": ["sh", "-c", f'cat "$HEDGE_SECRETS_DIR"/run/secrets/db > {out}'],
            "secrets": [{"name": "db"}]}
    r = run_spec(hedge, tmp_path, spec, env=env)
    assert r.code == 125 and "secrets[0]: secret db: cannot decrypt: the node key" in r.err, r
    assert str(other) in r.err and VALUE not in r.err
    assert not out.exists() and secret_dirs(dirs) == []
    # a set under the wrong key is refused too: the store is never split between two keys
    r = hedge("secret", "set", "db", input="new", env=env)
    assert r.code == 125 and "cannot decrypt" in r.err, r
    assert sealed.read_bytes() == before
    assert sorted(p.name for p in sealed.parent.iterdir()) == [".lock", "db"]  # no temporary file left
    # one flipped bit of the ciphertext, or of the clear version number
    for offset in (len(before) - 1, 15):
        damaged = bytearray(before)
        damaged[offset] ^= 1
        sealed.write_bytes(bytes(damaged))
        r = run_spec(hedge, tmp_path, spec)
        assert r.code == 125 and "tampered" in r.err, r
        assert not out.exists() and secret_dirs(dirs) == []
    sealed.write_bytes(before)
    r = run_spec(hedge, tmp_path, spec)
    assert r.code == 0 and out.read_text() == VALUE, r


def grep_tree(root, needle):
    found = []
    for p in pathlib.Path(root).rglob("*"):
        try:
            if p.is_file() and not p.is_socket() and needle in p.read_bytes():
                found.append(str(p))
        except OSError:
            pass
    return found


def test_delivery_into_a_vm_guest(hedge, dirs, tmp_path, guest_kernel, vm_rootfs):
    """One TCG boot: the files on the guest's tmpfs with their modes and owners, the env variable asked for;
    the value never on the host's disk. A CONFIG too big for the secrets is refused before boot."""
    assert hedge("secret", "set", "db", input=VALUE).code == 0
    assert hedge("secret", "set", "cert", input="CERT").code == 0
    env = {"HEDGE_VM_KERNEL_DIR": str(guest_kernel)}
    script = ('id -u; cat /run/secrets/db; echo; stat -c "%a %u %g" /run/secrets/db; cat /etc/app/cert; echo; '
              'stat -c "%a %u %g" /etc/app/cert; echo "env=$DB_PASSWORD"; echo "cert=$CERT"; '
              'grep -E " /(run/secrets|etc/app) " /proc/mounts | cut -d" " -f1,2,3; ls /run/secrets')
    spec = {"name": "v", "isolation": "vm", "vm": {"accel": "tcg"}, "rootfs": str(vm_rootfs), "user": "1000:1000",
            "command": ["sh", "-c", script],
            "secrets": [{"name": "db", "env": "DB_PASSWORD"},
                        {"name": "cert", "target": "/etc/app/cert", "mode": "0440", "uid": 0, "gid": 1000}]}
    r = run_spec(hedge, tmp_path, spec, env=env)
    assert r.code == 0, r
    assert r.out.splitlines() == ["1000", VALUE, "400 1000 1000", "CERT", "440 0 1000", f"env={VALUE}", "cert=",
                                  "hedge-secrets /etc/app tmpfs", "hedge-secrets /run/secrets tmpfs", "db"], r
    assert secret_dirs(dirs) == []  # no host tmpfs for a VM: the values went in memory to the guest
    assert grep_tree(dirs["state"], VALUE.encode()) == []
    assert grep_tree(dirs["run"], VALUE.encode()) == []

    assert hedge("secret", "set", "big", input="x" * 70000).code == 0
    r = run_spec(hedge, tmp_path, {**spec, "secrets": [{"name": "big"}]}, env=env)
    assert r.code == 125 and "secrets: " in r.err and "more than 65536" in r.err, r


def test_hedged_delivers_updates_and_never_shows_the_value(daemon, dirs, tmp_path, busybox_rootfs):
    d = daemon()
    env = {"HEDGE_STATE_DIR": str(d.state)}
    r = d.cli("secret", "set", "db", input=VALUE, env=env)  # hedged runs: it is told, nothing uses it yet
    assert r.code == 0, r
    r = d.deploy({"name": "missing", "isolation": "process", "command": ["true"], "secrets": [{"name": "nope"}]})
    assert r.code != 0 and "secrets[0].name: secret nope: no such secret" in r.err, r
    spec = {"name": "rw", "isolation": "process", "command": ["/bin/sleep", "1000"], "secrets": [{"name": "db"}]}
    assert d.deploy(spec).code == 0
    spec2 = {"name": "rs", "isolation": "process", "command": ["/bin/sleep", "1000"],
             "secrets": [{"name": "db", "target": "/s/db"}], "secret_update": "restart"}
    assert d.deploy(spec2).code == 0
    ct = {"name": "ct", "isolation": "container", "rootfs": str(busybox_rootfs), "command": ["sleep", "1000"],
          "secrets": [{"name": "db"}]}
    assert d.deploy(ct).code == 0
    d.wait_state("rw", "running")
    d.wait_state("rs", "running")
    ct_file = pathlib.Path(f"/proc/{d.wait_state('ct', 'running')['pid']}/root/run/secrets/db")  # seen from inside
    assert ct_file.read_text() == VALUE

    def files(target):
        return [p for p in (dirs["run"] / "secrets").glob("*" + target)]
    rw_file = wait_for(lambda: files("/run/secrets/db"), what="rw's secret file")[0]
    assert rw_file.read_text() == VALUE
    code, body = d.api("GET", "/v1/workloads/rw")
    assert code == 200 and body["spec"]["secrets"][0]["version"] == 1, body
    digest1 = body["digest"]

    new_value = VALUE + "-v2"
    inode = rw_file.stat().st_ino
    r = d.cli("secret", "set", "db", input=new_value, env=env)
    assert r.code == 0 and r.out.strip() == "db: version 2", r
    assert rw_file.read_text() == new_value and rw_file.stat().st_ino != inode  # replaced by rename, in place
    assert ct_file.read_text() == new_value  # the container's bound tmpfs dir shows the new file
    assert d.ps("rw")["version"] == 1
    wait_for(lambda: d.ps("rs")["version"] == 2 and d.ps("rs")["state"] == "running", what="rs upgraded")
    wait_for(lambda: [p.read_text() for p in files("/s/db")] == [new_value], what="rs's new file only")
    code, body = d.api("GET", "/v1/workloads/rs")
    assert body["spec"]["secrets"][0]["version"] == 2
    # a redeploy of rw pins version 2: a new digest
    r = d.deploy(spec)
    assert r.code == 0, r
    wait_for(lambda: d.ps("rw")["version"] == 2, what="rw upgraded")
    assert d.api("GET", "/v1/workloads/rw")[1]["digest"] != digest1

    code, answer = d.api("POST", "/v1/secrets/db")
    assert code == 200 and answer["version"] == 2 and sorted(answer["rewritten"]) == ["ct", "rw"], answer
    assert d.api("POST", "/v1/secrets/nope")[0] == 404
    assert d.api("POST", "/v1/secrets/a%2Fb")[0] == 400
    assert d.api("GET", "/v1/secrets/db")[0] == 405

    # the value is nowhere hedged shows or keeps
    shown = [d.cli("ps").out, d.cli("ps", "--json").out, d.cli("history", "rw").out, d.cli("history", "rs").out,
             json.dumps(d.api("GET", "/v1/workloads")[1]), json.dumps(d.api("GET", "/v1/workloads/rw")[1]),
             json.dumps(d.api("GET", "/v1/workloads/rs/history")[1]), json.dumps(answer),
             d.api("GET", "/metrics")[1], d.errlog.read_text()]
    for text in shown:
        assert VALUE not in text
    environ = pathlib.Path(f"/proc/{d.proc.pid}/environ").read_bytes()
    assert VALUE.encode() not in environ
    assert grep_tree(d.state, VALUE.encode()) == []
    assert grep_tree(d.state, new_value.encode()) == []



def test_hedged_restarts_a_vm_workload_for_a_new_value(daemon, guest_kernel, vm_rootfs, monkeypatch):
    """A VM's files are in its guest: an update restarts it (health-gated upgrade) even under `rewrite`."""
    monkeypatch.setenv("HEDGE_VM_KERNEL_DIR", str(guest_kernel))
    d = daemon()
    assert d.cli("secret", "set", "db", input=VALUE, env={"HEDGE_STATE_DIR": str(d.state)}).code == 0
    assert d.deploy({"name": "v", "isolation": "vm", "vm": {"accel": "tcg"}, "rootfs": str(vm_rootfs),
                     "command": ["sleep", "1000"], "secrets": [{"name": "db"}]}).code == 0
    d.wait_state("v", "running")
    r = d.cli("secret", "set", "db", input=VALUE + "-v2", env={"HEDGE_STATE_DIR": str(d.state)})
    assert r.code == 0, r
    wait_for(lambda: d.ps("v")["version"] == 2 and d.ps("v")["state"] == "running", what="v restarted", timeout=120)
    code, body = d.api("GET", "/v1/workloads/v")
    assert code == 200 and body["spec"]["secrets"][0]["version"] == 2, body
    assert d.cli("rm", "v").code == 0


@pytest.mark.leaves_state
def test_killed_monitor_leaves_no_secrets(daemon, dirs):
    """A monitor killed with SIGKILL: hedged unmounts its workload's tmpfs when it collects the lost run."""
    cgroups_before = set(hedge_cgroups())
    d = daemon()
    assert d.cli("secret", "set", "db", input=VALUE, env={"HEDGE_STATE_DIR": str(d.state)}).code == 0
    assert d.deploy({"name": "k", "isolation": "process", "command": ["/bin/sleep", "1000"],
                     "secrets": [{"name": "db"}]}).code == 0
    w = d.wait_state("k", "running")
    tmpfs = wait_for(lambda: list((dirs["run"] / "secrets").glob("*")), what="the tmpfs")
    assert len(tmpfs) == 1 and str(tmpfs[0]) in mounts_under(dirs["run"])
    os.kill(w["monitor_pid"], signal.SIGKILL)
    wait_for(lambda: not tmpfs[0].exists(), what="the lost run's tmpfs removed")
    assert mounts_under(dirs["run"]) == []
    assert d.cli("rm", "k").code == 0
    # Known limit (test_daemon.py): the killed run's cgroup stays; remove it here.
    for cg in sorted(set(hedge_cgroups()) - cgroups_before):
        os.rmdir(cg)
