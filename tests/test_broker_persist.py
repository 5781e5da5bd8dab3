"""Broker persistence (SQLite, WAL): retained messages, persistent sessions with
their subscriptions, and queued or in-flight QoS 1/2 messages survive a clean
restart and a kill -9. A QoS 1/2 message is durable before its PUBACK/PUBREC:
the broker is killed right after the acknowledgement and must still deliver.
"""
import sqlite3
import uuid

import pytest

from broker_util import Broker, Raw, ack, p_u32, parse_publish, publish, subscribe


def uid(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "b", args=["--state-dir", str(tmp_path / "state")]).start()
    yield b
    if b.proc:
        b.stop()


def stop_or_kill(b, how):
    if how == "kill9":
        b.kill9()
    else:
        b.stop()
    b.restart()


@pytest.mark.parametrize("how", ["restart", "kill9"])
def test_retained_survives(broker, how):
    p = Raw(broker.port)
    p.connect(uid())
    p.send(publish("keep/a", "A", qos=1, pid=1, retain=True)).expect(b"\x40\x02\x00\x01")
    p.send(publish("keep/b", "B", qos=1, pid=2, retain=True)).expect(b"\x40\x02\x00\x02")
    p.send(publish("keep/b", b"", qos=1, pid=3, retain=True)).expect(b"\x40\x02\x00\x03")  # cleared
    stop_or_kill(broker, how)
    s = Raw(broker.port)
    s.connect(uid(), version=5)
    s.send(subscribe(1, [("keep/#", 1)], version=5)).recv()
    got = parse_publish(s.recv(), 5)
    assert (got["topic"], got["payload"], got["retain"]) == ("keep/a", b"A", True)
    s.send(ack("puback", got["pid"]))
    s.expect_nothing()


@pytest.mark.parametrize("how", ["restart", "kill9"])
@pytest.mark.parametrize("version", [4, 5])
def test_session_and_queue_survive(broker, how, version):
    cid, t = uid(), uid("q")
    kw = {"clean": False} if version == 4 else {"clean": False, "cprops": p_u32(0x11, 3600)}
    s = Raw(broker.port)
    s.connect(cid, version=version, **kw)
    s.send(subscribe(1, [(t + "/#", 2)], version=version)).recv()
    s.close()
    p = Raw(broker.port)
    p.connect(uid())
    for i in range(50):
        p.send(publish(f"{t}/{i}", f"m{i}", qos=1 + i % 2, pid=i + 1))
        a = p.recv()
        assert a == bytes([0x40 if i % 2 == 0 else 0x50, 2, 0, i + 1])
        if i % 2:
            p.send(ack("pubrel", i + 1)).expect(bytes([0x70, 2, 0, i + 1]))
    stop_or_kill(broker, how)  # right after the last acknowledgement
    s = Raw(broker.port)
    assert s.connect(cid, version=version, **kw)[2] == 1  # session present after restart
    got, pubrels = [], 0
    while len(got) < 50 or pubrels < 25:
        pkt = s.recv()
        if pkt[0] == 0x62:  # PUBREL for a QoS 2 message we acknowledged
            pubrels += 1
            s.send(ack("pubcomp", int.from_bytes(pkt[2:4], "big")))
            continue
        m = parse_publish(pkt, version)
        got.append(m["payload"])
        s.send(ack("puback" if m["qos"] == 1 else "pubrec", m["pid"]))
    assert got == [f"m{i}".encode() for i in range(50)]
    # the subscription itself was restored: a new message arrives
    p = Raw(broker.port)
    p.connect(uid())
    p.send(publish(f"{t}/new", "after", qos=1, pid=1)).recv()
    m = parse_publish(s.recv(), version)
    assert m["payload"] == b"after"
    s.send(ack("puback", m["pid"]))
    s.expect_nothing()


def test_inflight_qos2_redelivered_after_kill9(broker):
    cid, t = uid(), uid("q2")
    s = Raw(broker.port)
    s.connect(cid, clean=False)
    s.send(subscribe(1, [(t, 2)])).recv()
    p = Raw(broker.port)
    p.connect(uid())
    p.send(publish(t, "exactly once", qos=2, pid=9)).expect(b"\x50\x02\x00\x09")
    first = s.recv()
    m = parse_publish(first)
    s.send(ack("pubrec", m["pid"]))
    s.expect(b"\x62\x02" + m["pid"].to_bytes(2, "big"))
    broker.kill9()
    broker.restart()
    s = Raw(broker.port)
    assert s.connect(cid, clean=False) == b"\x20\x02\x01\x00"
    s.expect(b"\x62\x02" + m["pid"].to_bytes(2, "big"))  # PUBREL again, not the PUBLISH
    s.send(ack("pubcomp", m["pid"]))
    s.expect_nothing()


def test_clean_sessions_are_not_stored(broker, tmp_path):
    s = Raw(broker.port)
    s.connect("clean-one")
    s.send(subscribe(1, [("x", 1)])).recv()
    p = Raw(broker.port)
    p.connect("persistent-one", clean=False)
    broker.stop()
    db = sqlite3.connect(tmp_path / "state" / "broker.db")
    assert [r[0] for r in db.execute("SELECT client_id FROM sessions")] == ["persistent-one"]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    broker.restart()


def test_unwritable_state_dir_is_an_error(tmp_path):
    (tmp_path / "file").write_text("")
    b = Broker(tmp_path / "b", args=["--state-dir", str(tmp_path / "file" / "sub")])
    with pytest.raises(RuntimeError, match="store"):
        b.start()


def test_incoming_qos2_exactly_once_across_kill9(broker):
    """A publisher that did not see the PUBREC resends the PUBLISH (DUP) after the broker
    restarted: it is acknowledged again, but not delivered a second time."""
    pub_id, sub_id, t = uid(), uid(), uid("x1")
    s = Raw(broker.port)
    s.connect(sub_id, clean=False)
    s.send(subscribe(1, [(t, 1)])).recv()
    s.close()
    p = Raw(broker.port)
    p.connect(pub_id, clean=False)
    p.send(publish(t, "one", qos=2, pid=77)).expect(b"\x50\x02\x00\x4d")
    broker.kill9()
    broker.restart()
    p = Raw(broker.port)
    assert p.connect(pub_id, clean=False) == b"\x20\x02\x01\x00"
    p.send(publish(t, "one", qos=2, pid=77, dup=True)).expect(b"\x50\x02\x00\x4d")
    p.send(ack("pubrel", 77)).expect(b"\x70\x02\x00\x4d")
    s = Raw(broker.port)
    s.connect(sub_id, clean=False)
    m = parse_publish(s.recv())
    assert m["payload"] == b"one"
    s.send(ack("puback", m["pid"]))
    s.expect_nothing()


def test_corrupt_store_is_an_error(tmp_path):
    state = tmp_path / "corrupt-state"
    state.mkdir()
    (state / "broker.db").write_bytes(b"\x00garbage" * 600)
    b = Broker(tmp_path / "b", args=["--state-dir", str(state)])
    with pytest.raises(RuntimeError, match="exited 125.*broker.db: file is not a database"):
        b.start()


@pytest.mark.parametrize("how", ["restart", "kill9"])
def test_queued_message_keeps_all_subscription_identifiers(broker, how):
    """A message queued for overlapping subscriptions carries all their identifiers (MQTT-3.3.4-3/4), also
    after a restart: the store keeps every identifier, not only the first."""
    cid, t = uid(), uid("ids")
    s = Raw(broker.port)
    s.connect(cid, version=5, clean=False, cprops=p_u32(0x11, 3600))
    s.send(subscribe(1, [(t + "/+", 1)], version=5, sprops=b"\x0b\x05")).recv()
    s.send(subscribe(2, [(t + "/#", 1)], version=5, sprops=b"\x0b\xc8\x01")).recv()  # 200
    s.send(subscribe(3, [(t + "/a", 0)], version=5)).recv()  # no identifier
    s.close()
    p = Raw(broker.port)
    p.connect(uid())
    p.send(publish(t + "/a", "kept", qos=1, pid=1)).expect(b"\x40\x02\x00\x01")
    stop_or_kill(broker, how)
    s = Raw(broker.port)
    assert s.connect(cid, version=5, clean=False, cprops=p_u32(0x11, 3600))[2] == 1
    m = parse_publish(s.recv(), 5)
    assert (m["topic"], m["payload"], m["qos"]) == (t + "/a", b"kept", 1)
    assert m["props"] in (b"\x0b\x05\x0b\xc8\x01", b"\x0b\xc8\x01\x0b\x05"), m["props"].hex()
    s.send(ack("puback", m["pid"]))
    s.expect_nothing()
