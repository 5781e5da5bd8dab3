"""SQLite failures are never silent, and never acknowledged.

Real faults, no fakes: a second SQLite connection holds the write lock of the
database (the broker's statement or COMMIT fails with SQLITE_BUSY), and a
tiny tmpfs in a private mount namespace runs full (SQLITE_FULL at COMMIT).
The same for the uplink's spool and the daemon's deploy store.

The broker must then roll the round back, log it, and withhold the round's
acknowledgements (the connection is closed without its PUBACK), so that the
client sends again; once the fault is gone the store is rewritten from
memory and everything acknowledged survives a kill -9.
"""
import os
import signal
import sqlite3
import subprocess
import time
import uuid

import pytest

from broker_util import HEDGE_BROKER, SANITIZER_ENV, Broker, Raw, ack, parse_publish, publish, subscribe
from mqtt_util import Collector, Mosquitto, Uplink, need_mqtt_tools, publish_many, wait_for
from test_daemon import SLEEP, daemon, spec  # noqa: F401 (daemon is a fixture)


def uid(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_log(path, text, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the log:\n{path.read_text()}")


def lock_db(path):
    """A second connection that holds the database's write lock until it is closed. It waits for a
    write of the program under test that is under way (its own short transactions) to end."""
    db = sqlite3.connect(path, isolation_level=None, timeout=10)
    db.execute("BEGIN EXCLUSIVE")
    return db


def drain(s, n):
    """Receive n messages on a persistent session (acknowledging them); their payloads."""
    got = []
    while len(got) < n:
        m = parse_publish(s.recv())
        got.append(m["payload"])
        s.send(ack("puback", m["pid"]))
    return got


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "b", args=["--state-dir", str(tmp_path / "state")]).start()
    yield b
    if b.proc:
        b.stop()


def test_broker_busy_store_withholds_acks_then_recovers(broker, tmp_path):
    sub_id, t = uid("sub"), uid("busy")
    s = Raw(broker.port)
    s.connect(sub_id, clean=False)
    s.send(subscribe(1, [(t, 1)])).recv()
    s.close()  # offline: what is published for it must be in the store

    p = Raw(broker.port)
    p.connect(uid("pub"))
    p.send(publish(t, "before", qos=1, pid=1)).expect(b"\x40\x02\x00\x01")

    lock = lock_db(tmp_path / "state" / "broker.db")
    p.send(publish(t, "during", qos=1, pid=2))
    p.send(publish(t + "/r", "kept", qos=1, pid=3, retain=True))
    before_close = p.expect_closed()
    assert not [x for x in before_close if x[0] == 0x40], f"acknowledged unstored: {before_close}"
    wait_log(broker.log, "database is locked")
    wait_log(broker.log, "acknowledgements are withheld")

    # the fault goes away; the client sends what it holds unacknowledged again
    lock.rollback()
    lock.close()
    p = Raw(broker.port)
    p.connect(uid("pub"))
    p.send(publish(t, "during", qos=1, pid=2, dup=True)).expect(b"\x40\x02\x00\x02")
    p.send(publish(t + "/r", "kept", qos=1, pid=3, retain=True, dup=True)).expect(b"\x40\x02\x00\x03")
    wait_log(broker.log, "in step again")

    broker.kill9()
    broker.restart()
    s = Raw(broker.port)
    assert s.connect(sub_id, clean=False) == b"\x20\x02\x01\x00"
    # "during" arrives twice: once from the rolled-back round (memory kept it), once resent
    got = drain(s, 3)
    assert got[0] == b"before" and sorted(got[1:]) == [b"during", b"during"]
    s.expect_nothing()
    r = Raw(broker.port)
    r.connect(uid())
    r.send(subscribe(1, [(t + "/r", 1)])).recv()
    m = parse_publish(r.recv())
    assert (m["payload"], m["retain"]) == (b"kept", True)
    with sqlite3.connect(tmp_path / "state" / "broker.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_broker_busy_subscribe_is_not_acknowledged(broker, tmp_path):
    """A SUBACK of a persistent session promises the subscription is stored."""
    cid, t = uid("sub"), uid("suback")
    s = Raw(broker.port)
    s.connect(cid, clean=False)
    lock = lock_db(tmp_path / "state" / "broker.db")
    s.send(subscribe(1, [(t, 1)]))
    assert not [x for x in s.expect_closed() if x[0] == 0x90]
    lock.rollback()
    lock.close()
    wait_log(broker.log, "in step again")
    broker.kill9()
    broker.restart()
    s = Raw(broker.port)
    s.connect(cid, clean=False)
    s.send(subscribe(1, [(t, 1)])).expect(b"\x90\x03\x00\x01\x01")
    s.close()


def test_broker_disk_full_commit_fails_loudly(tmp_path):
    """SQLITE_FULL at COMMIT: the broker runs in its own mount namespace on a 2 MiB tmpfs; the test
    fills it through /proc/PID/root (the namespace's view), never touching the host's mounts."""
    state = tmp_path / "tiny-state"
    state.mkdir()
    log = tmp_path / "broker.log"
    port_file = tmp_path / "port"
    script = (f"mount -t tmpfs -o size=2m hedge-test-full {state} && "
              f"exec {HEDGE_BROKER} --listen 127.0.0.1:0 --port-file {port_file} --state-dir {state}")
    logf = open(log, "w")
    proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                            stdout=logf, stderr=logf, env={**os.environ, **SANITIZER_ENV})
    try:
        deadline = time.time() + 10
        while not port_file.exists():
            assert proc.poll() is None, log.read_text()
            assert time.time() < deadline, "hedge-broker did not start"
            time.sleep(0.02)
        port = int(port_file.read_text())
        inside = f"/proc/{proc.pid}/root{state}"
        assert os.listdir(state) == [], "the tmpfs must not be visible outside the namespace"
        assert "broker.db" in os.listdir(inside)

        sub_id, t = uid("sub"), uid("full")
        s = Raw(port)
        s.connect(sub_id, clean=False)
        s.send(subscribe(1, [(t, 1)])).recv()
        s.close()
        p = Raw(port)
        p.connect(uid("pub"))
        p.send(publish(t, "small", qos=1, pid=1)).expect(b"\x40\x02\x00\x01")

        # fill the tmpfs, then publish more than what is left
        filler = f"{inside}/filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        os.close(fd)
        p.send(publish(t, b"x" * 100_000, qos=1, pid=2))
        assert not [x for x in p.expect_closed() if x[0] == 0x40]
        wait_log(log, "database or disk is full")
        wait_log(log, "acknowledgements are withheld")

        os.unlink(filler)
        p = Raw(port)
        p.connect(uid("pub"))
        p.send(publish(t, b"x" * 100_000, qos=1, pid=2, dup=True)).expect(b"\x40\x02\x00\x02")
        wait_log(log, "in step again")
        s = Raw(port)
        assert s.connect(sub_id, clean=False) == b"\x20\x02\x01\x00"
        got = drain(s, 3)
        assert got[0] == b"small" and got[1:] == [b"x" * 100_000] * 2
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=20)
        logf.close()
    text = log.read_text()
    for marker in ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:"):
        assert marker not in text, text
    assert rc == 0, text


# ---- the uplink's spool ----

def test_uplink_locked_spool_fails_loudly_and_loses_nothing(tmp_path):
    """The spool cannot take a write: hedge-uplink stops with the SQLite error, without acknowledging the
    local message; restarted on a writable spool it forwards that message (the local broker kept it)."""
    need_mqtt_tools()
    local = Mosquitto(tmp_path, "local").start()
    cloud = Mosquitto(tmp_path, "cloud").start()
    u = Uplink(tmp_path, "n1", local.port, cloud.port)
    try:
        sub = Collector(cloud.port, "nodes/n1/sensors/#")
        u.start()
        wait_for(lambda: u.status().get("connected"), 10, "the cloud link")
        lock = lock_db(u.config["spool"]["path"])
        publish_many(local.port, "sensors/a", [b"held"])
        # BEGIN IMMEDIATE waits out the 5 s busy timeout, then the uplink stops (its last status
        # writes wait as long again); the lock is held until then so every write fails for real
        code = u.proc.wait(timeout=60)
        lock.rollback()
        lock.close()
        text = u.log.read_text()
        assert code != 0, text
        assert "spool" in text and "database is locked" in text, text
        assert sub.payloads() == []
        u.start()
        wait_for(lambda: sub.payloads() == [b"held"], 20, "the held message at the cloud")
        # the counter is written with the spool's next commit, which may follow the cloud's PUBACK by a moment
        wait_for(lambda: u.status()["drained"] == 1, 10, "the drained counter")
        sub.close()
        u.stop()
    finally:
        u.kill()
        local.stop()
        cloud.stop()


# ---- hedged's deploy store ----

def test_daemon_locked_store_fails_the_deploy_loudly(daemon):
    """hedged's state db cannot take a write: the deploy fails with the SQLite error (nothing runs, nothing
    is half stored); once the lock is gone the same deploy succeeds and survives a kill -9."""
    d = daemon()
    lock = lock_db(d.state / "hedged.db")
    try:
        r = d.deploy(spec("locked", SLEEP))
        assert r.code != 0, r
        assert "state db" in r.err and "database is locked" in r.err, r
        assert d.ps("locked") is None
    finally:
        lock.rollback()
        lock.close()
    with sqlite3.connect(d.state / "hedged.db") as db:
        assert db.execute("SELECT count(*) FROM versions WHERE name='locked'").fetchone()[0] == 0
    r = d.deploy(spec("locked", SLEEP))
    assert r.code == 0, r
    d.wait_state("locked", "running")
    d.kill9()
    d.start()
    assert d.wait_state("locked", "running")["version"] == 1
