"""Black-box tests of hedge-uplink, the store-and-forward cloud uplink.

Two real mosquitto brokers on loopback: the local one and the "cloud" one,
which is stopped to cut the link and restarted on the same port to restore
it. Publishers and subscribers are paho clients. Nothing is mocked: the spool
is the real SQLite file and `hedge uplink status` reads it.
"""
import json
import shutil
import subprocess
import time

import pytest

from mqtt_util import (BUILD, ROOT, hedge_env, wait_port, Collector, HedgeBroker, Mosquitto, Uplink, dedup_in_order, make_pki,
                       need_mqtt_tools, publish_many, wait_for)


@pytest.fixture
def brokers(request, tmp_path):
    """(local, cloud): the local broker is mosquitto, or hedge-broker when parametrized so."""
    need_mqtt_tools()
    kind = getattr(request, "param", "mosquitto")
    local = (HedgeBroker if kind == "hedge-broker" else Mosquitto)(tmp_path, "local").start()
    cloud = Mosquitto(tmp_path, "cloud")
    try:
        cloud.start()
        yield local, cloud
    finally:
        local.stop()
        cloud.stop()


@pytest.fixture
def uplinks():
    started = []
    yield started
    for u in started:
        u.kill()


def make_uplink(tmp_path, uplinks, local, cloud, node="n1", **kw):
    u = Uplink(tmp_path, node, local.port, cloud.port, **kw)
    uplinks.append(u)
    return u.start()


@pytest.mark.parametrize("brokers", ["mosquitto", "hedge-broker"], indirect=True)
def test_forwards_up_with_topic_remapping(tmp_path, brokers, uplinks):
    local, cloud = brokers
    sub = Collector(cloud.port, "nodes/#")
    u = make_uplink(tmp_path, uplinks, local, cloud)
    wait_for(lambda: u.status().get("connected"), 10, "the cloud link")
    publish_many(local.port, lambda p: "sensors/room1/temp" if p.startswith(b"t") else "other/x",
                 [b"t1", b"o1", b"t2"])
    wait_for(lambda: len(sub.messages) >= 2, 10, "2 messages at the cloud")
    time.sleep(0.3)
    assert sub.messages == [("nodes/n1/sensors/room1/temp", b"t1"), ("nodes/n1/sensors/room1/temp", b"t2")]
    st = u.status()
    assert st["drained"] == 2 and st["depth"] == 0 and st["received"] == 2
    sub.close()
    u.stop()


@pytest.mark.parametrize("brokers", ["mosquitto", "hedge-broker"], indirect=True)
def test_downlink_reaches_local_subscribers(tmp_path, brokers, uplinks):
    local, cloud = brokers
    sub = Collector(local.port, "cmd/#")
    u = make_uplink(tmp_path, uplinks, local, cloud)
    wait_for(lambda: u.status().get("connected"), 10, "the cloud link")
    publish_many(cloud.port, "nodes/n1/cmd/reboot", [b"now", b"later"])
    publish_many(cloud.port, "nodes/other/cmd/reboot", [b"not-for-us"])
    wait_for(lambda: len(sub.messages) >= 2, 10, "the downlink messages")
    time.sleep(0.3)
    assert sub.messages == [("cmd/reboot", b"now"), ("cmd/reboot", b"later")]
    sub.close()
    u.stop()


@pytest.mark.parametrize("brokers", ["mosquitto", "hedge-broker"], indirect=True)
def test_outage_10000_messages_all_arrive_in_order(tmp_path, brokers, uplinks):
    local, cloud = brokers
    u = make_uplink(tmp_path, uplinks, local, cloud)
    wait_for(lambda: u.status().get("connected"), 10, "the cloud link")
    cloud.stop()
    wait_for(lambda: u.status().get("connected") is False, 10, "the uplink to notice the cut")
    n = 10000
    payloads = [str(i).encode() for i in range(n)]
    publish_many(local.port, "sensors/seq", payloads)
    wait_for(lambda: u.status().get("depth") == n, 60, f"{n} messages in the spool")
    st = u.status()
    assert st["connected"] is False and st["oldest_age_s"] >= 0 and st["bytes"] > 0
    sub = u.restore_cloud(cloud, "nodes/n1/sensors/#")
    wait_for(lambda: u.status().get("drained") == n, 60, "the spool to drain")
    wait_for(lambda: len(dedup_in_order(sub.payloads())) == n, 30, "every message at the cloud")
    assert dedup_in_order(sub.payloads()) == payloads
    assert u.status()["depth"] == 0
    sub.close()
    u.stop()


@pytest.mark.parametrize("brokers", ["mosquitto", "hedge-broker"], indirect=True)
def test_kill_9_during_drain_loses_nothing(tmp_path, brokers, uplinks):
    local, cloud = brokers
    u = make_uplink(tmp_path, uplinks, local, cloud)
    wait_for(lambda: u.status().get("connected"), 10, "the cloud link")
    cloud.stop()
    n = 20000
    payloads = [str(i).encode() for i in range(n)]
    publish_many(local.port, "sensors/seq", payloads)
    wait_for(lambda: u.status().get("depth") == n, 90, f"{n} messages in the spool")
    # Subscribe at the cloud before the uplink can reach it again.
    sub = u.restore_cloud(cloud, "nodes/n1/sensors/#")
    wait_for(lambda: u.status().get("drained", 0) > 0, 30, "the drain to start")
    u.kill()
    left = u.status()
    assert left["running"] is False
    assert 0 < left["depth"] < n, f"the kill did not land mid-drain: {left}"
    u.start()
    wait_for(lambda: u.status().get("depth") == 0, 60, "the drain to finish after the restart")
    wait_for(lambda: len(dedup_in_order(sub.payloads())) == n, 30, "every message at the cloud")
    assert dedup_in_order(sub.payloads()) == payloads
    sub.close()
    u.stop()


@pytest.mark.parametrize("brokers", ["mosquitto", "hedge-broker"], indirect=True)
def test_kill_9_while_spooling_loses_nothing_acknowledged(tmp_path, brokers, uplinks):
    local, cloud = brokers
    u = make_uplink(tmp_path, uplinks, local, cloud)
    cloud.stop()
    n = 3000
    payloads = [str(i).encode() for i in range(n)]
    publisher = subprocess.Popen(["/usr/bin/python3", "-c", f"""
import sys; sys.path.insert(0, {str(ROOT / "tests")!r})
from mqtt_util import publish_many
publish_many({local.port}, "sensors/seq", [str(i).encode() for i in range({n})])
"""])
    wait_for(lambda: u.status().get("depth", 0) > 100, 30, "messages in the spool")
    u.kill()
    u.start()
    assert publisher.wait(timeout=120) == 0
    wait_for(lambda: u.status().get("depth", 0) >= n, 60, "all messages spooled")
    sub = u.restore_cloud(cloud, "nodes/n1/sensors/#")
    wait_for(lambda: u.status().get("depth") == 0, 60, "the drain")
    wait_for(lambda: len(dedup_in_order(sub.payloads())) == n, 30, "every message at the cloud")
    assert dedup_in_order(sub.payloads()) == payloads
    sub.close()
    u.stop()


# topic "nodes/n1/sensors/x" (18 bytes) + a 12-byte payload = 30 bytes a row: 300 bytes hold 10.
@pytest.mark.parametrize("policy", ["drop-oldest", "reject-new"])
def test_spool_full_policy(tmp_path, brokers, uplinks, policy):
    local, cloud = brokers
    u = make_uplink(tmp_path, uplinks, local, cloud, spool={"max_bytes": 300, "full_policy": policy})
    cloud.stop()
    payloads = [f"reading-{i:04d}".encode() for i in range(100)]
    publish_many(local.port, "sensors/x", payloads)
    wait_for(lambda: u.status().get("received") == 100, 30, "100 messages offered to the spool")
    st = u.status()
    assert st["depth"] == 10 and st["bytes"] == 300
    if policy == "drop-oldest":
        assert st["dropped_oldest"] == 90 and st["rejected_new"] == 0
        expected = payloads[90:]
    else:
        assert st["rejected_new"] == 90 and st["dropped_oldest"] == 0
        expected = payloads[:10]
    text = subprocess.run([str(BUILD / "hedge"), "uplink", "status", "--config", str(u.config_path)],
                          capture_output=True, text=True, env=hedge_env()).stdout
    assert "dropped:   90" in text and "spool:     10 messages, 300 bytes" in text
    sub = u.restore_cloud(cloud, "nodes/n1/sensors/#")
    wait_for(lambda: u.status().get("depth") == 0, 30, "the drain")
    wait_for(lambda: len(dedup_in_order(sub.payloads())) == 10, 10, "10 messages at the cloud")
    time.sleep(0.3)
    assert dedup_in_order(sub.payloads()) == expected
    sub.close()
    u.stop()


def test_route_priorities_keep_important_messages_in_a_full_spool(tmp_path, brokers, uplinks):
    """Routes with priority classes and their own ttl: with the cloud away and the spool full, low-priority
    logs make room for events and telemetry, never the reverse; after the outage the most important class
    drains first, each class in order, and a route's own ttl expires only its messages."""
    local, cloud = brokers
    # rows: "nodes/n1/logs/x" (15) + 12 = 27 bytes, "nodes/n1/events/x" (17) + 12 = 29, "nodes/n1/sensors/x" 30
    up = [{"local": "events/#", "cloud": "nodes/{node_id}/events/#", "priority": 0},
          {"local": "sensors/#", "cloud": "nodes/{node_id}/sensors/#"},
          {"local": "logs/#", "cloud": "nodes/{node_id}/logs/#", "priority": 9},
          {"local": "debug/#", "cloud": "nodes/{node_id}/debug/#", "priority": 9, "ttl": 1}]
    u = make_uplink(tmp_path, uplinks, local, cloud, spool={"max_bytes": 600}, extra={"up": up})
    cloud.stop()
    logs = [f"logline-{i:04d}".encode() for i in range(30)]
    sensors = [f"reading-{i:04d}".encode() for i in range(10)]
    events = [f"eventno-{i:04d}".encode() for i in range(6)]
    publish_many(local.port, "logs/x", logs)
    wait_for(lambda: u.status().get("received") == 30, 30, "30 log lines offered")
    publish_many(local.port, "sensors/x", sensors)
    publish_many(local.port, "events/x", events)
    publish_many(local.port, "debug/x", [b"debug-line-1"])
    wait_for(lambda: u.status().get("received") == 47, 30, "all 47 messages offered")
    st = u.status()
    # 10 sensors (300) + 6 events (174) + the debug line (28) leave room for 3 log lines (81): 583 bytes.
    # On a loaded machine the debug line's 1 s ttl may already have run out by now: it counts as expired then.
    gone = st.get("expired", 0)
    assert gone in (0, 1), st
    assert st["depth"] == 20 - gone and st["bytes"] == 583 - 28 * gone, st
    assert st["dropped_oldest"] == 27 and st["rejected_new"] == 0, st
    wait_for(lambda: u.status().get("expired") == 1, 10, "the debug route's own 1 s ttl")
    assert u.status()["depth"] == 19
    sub = u.restore_cloud(cloud, "nodes/n1/#")
    wait_for(lambda: u.status().get("depth") == 0, 30, "the drain")
    wait_for(lambda: len(dedup_in_order(sub.payloads())) == 19, 10, "19 messages at the cloud")
    time.sleep(0.3)
    got = dedup_in_order(sub.payloads())
    assert got[:6] == events, got          # the most important class first
    assert got[6:16] == sensors, got       # then the default class, in order
    assert got[16:] == logs[27:], got      # the newest log lines: the oldest made room
    sub.close()
    u.stop()


def test_ttl_expires_old_messages(tmp_path, brokers, uplinks):
    local, cloud = brokers
    u = make_uplink(tmp_path, uplinks, local, cloud, spool={"ttl": 1})
    cloud.stop()
    publish_many(local.port, "sensors/x", [b"old1", b"old2", b"old3"])
    wait_for(lambda: u.status().get("received") == 3, 10, "3 messages spooled")
    wait_for(lambda: u.status().get("expired") == 3, 10, "the TTL to expire them")
    assert u.status()["depth"] == 0
    cloud.start()
    sub = Collector(cloud.port, "nodes/n1/sensors/#")
    wait_for(lambda: u.status().get("connected"), 10, "the cloud link")
    publish_many(local.port, "sensors/x", [b"fresh"])
    wait_for(lambda: sub.payloads(), 10, "the fresh message")
    time.sleep(0.3)
    assert sub.payloads() == [b"fresh"]
    sub.close()
    u.stop()


def test_status_without_uplink_running(tmp_path, brokers, uplinks):
    local, cloud = brokers
    u = make_uplink(tmp_path, uplinks, local, cloud)
    u.stop()
    r = subprocess.run([str(BUILD / "hedge"), "uplink", "status", "--config", str(u.config_path)],
                       capture_output=True, text=True, env=hedge_env())
    assert r.returncode == 0 and "uplink:    not running" in r.stdout
    r = subprocess.run([str(BUILD / "hedge"), "uplink", "status", "--spool", str(tmp_path / "nope.db")],
                       capture_output=True, text=True, env=hedge_env())
    assert r.returncode == 125 and "nope.db" in r.stderr



def test_status_is_served_by_hedge_alone(tmp_path, brokers, uplinks):
    """`hedge uplink status` is hedge's own verb: a copy of hedge with no other binary beside it
    (none in PATH either) reads the spool, through SQLite it loads itself."""
    local, cloud = brokers
    u = make_uplink(tmp_path, uplinks, local, cloud)
    publish_many(local.port, "sensors/x", [b"one", b"two"])
    wait_for(lambda: u.status().get("received") == 2, 10, "2 messages offered to the spool")
    u.stop()
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy2(BUILD / "hedge", alone / "hedge")
    shutil.copy2(BUILD / "hedge-full", alone / "hedge-full")  # the static hedge hands SQLite work over to it
    env = hedge_env({"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    r = subprocess.run([str(alone / "hedge"), "uplink", "status", "--config", str(u.config_path), "--json"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r
    st = json.loads(r.stdout)
    assert st["running"] is False and st["received"] == 2, st
    r = subprocess.run([str(alone / "hedge"), "uplink", "status", "--config", str(u.config_path)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "uplink:    not running" in r.stdout and "received:  2" in r.stdout, r


def test_hedge_links_neither_sqlite_nor_openssl():
    """hedge starts for every `hedge run`: the spool's SQLite and MQTT's OpenSSL are loaded
    on first use, never at start."""
    for program in ("hedge", "hedge-full"):  # hedge may be static (no NEEDED at all); hedge-full is not
        r = subprocess.run(["readelf", "-d", str(BUILD / program)], capture_output=True, text=True, check=True)
        needed = [line for line in r.stdout.splitlines() if "(NEEDED)" in line]
        assert needed or program == "hedge", r.stdout
        for lib in ("libsqlite3", "libssl", "libcrypto"):
            assert not any(lib in line for line in needed), needed


BAD_CONFIGS = [
    ({"node_id": None}, "node_id: is required"),
    ({"node_id": "a/b"}, "node_id: \"a/b\" must not contain"),
    ({"cloud": {"port": "x"}}, "cloud.port: must be an integer"),
    ({"cloud": {"port": 70000}}, "cloud.port: must be an integer in 1..65535"),
    ({"cloud": {"tls": {"key_file": "/k"}}}, "cloud.tls.key_file: needs cert_file"),
    ({"cloud": {"tls": {"ca_fle": "/k"}}}, "cloud.tls.ca_fle: unknown field"),
    ({"up": [{"local": "sensors/#", "cloud": "nodes/+/x"}]}, "up[0].cloud: \"nodes/+/x\" must have the same wildcards"),
    ({"up": [{"local": "sensors/#/x", "cloud": "a/#"}]}, "up[0].local: \"sensors/#/x\" is not a valid topic filter"),
    ({"down": [{"cloud": "x/#"}]}, "down[0].local: is required"),
    ({"up": [{"local": "a/#", "cloud": "b/#", "priority": 10}]}, "up[0].priority: must be an integer in 0..9"),
    ({"up": [{"local": "a/#", "cloud": "b/#", "ttl": -1}]}, "up[0].ttl: must be an integer in 0.."),
    ({"down": [{"cloud": "x/#", "local": "y/#", "priority": 1}]}, "down[0].priority: unknown field"),
    ({"spool": {"path": "/tmp/x.db", "full_policy": "drop-newest"}}, "spool.full_policy: \"drop-newest\""),
    ({"spool": {"path": "/tmp/x.db", "max_bytes": "lots"}}, "spool.max_bytes: must be a size"),
    ({"spool": None}, "spool: is required"),
    ({"window": 0}, "window: must be an integer in 1..65535"),
    ({"colud": {}}, "colud: unknown field"),
]


@pytest.mark.parametrize("change,message", BAD_CONFIGS, ids=[m.split(":")[0] for _, m in BAD_CONFIGS])
def test_bad_config_names_the_field(tmp_path, change, message):
    cfg = {"node_id": "n1", "local": {"port": 1883}, "cloud": {"port": 8883},
           "up": [{"local": "sensors/#", "cloud": "nodes/{node_id}/sensors/#"}],
           "spool": {"path": str(tmp_path / "s.db")}}
    for key, value in change.items():
        if value is None:
            del cfg[key]
        elif isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    r = subprocess.run([str(BUILD / "hedge-uplink"), "--config", str(path), "--check"], capture_output=True, text=True, env=hedge_env())
    assert r.returncode == 2, r
    assert message in r.stderr, r.stderr
    assert not (tmp_path / "s.db").exists()


def test_good_config_check(tmp_path):
    cfg = {"node_id": "n1", "local": {}, "cloud": {"host": "cloud.example", "tls": {}},
           "up": [{"local": "a/+/b/#", "cloud": "nodes/{node_id}/+/b/#"}], "spool": {"path": str(tmp_path / "s.db"),
           "max_bytes": "64M", "ttl": 86400, "full_policy": "reject-new", "sync": "normal"}}
    path = tmp_path / "good.json"
    path.write_text(json.dumps(cfg))
    r = subprocess.run([str(BUILD / "hedge-uplink"), "--config", str(path), "--check"], capture_output=True, text=True, env=hedge_env())
    assert r.returncode == 0 and "ok (node n1, 1 up, 0 down mappings)" in r.stdout, r


@pytest.fixture
def tls_cloud(tmp_path):
    need_mqtt_tools()
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    local = Mosquitto(tmp_path, "local").start()
    cloud = Mosquitto(tmp_path, "cloud", extra=(
        f"cafile {pki}/ca.crt\ncertfile {pki}/server.crt\nkeyfile {pki}/server.key\nrequire_certificate true\n"))
    # The TLS listener needs a plain one beside it for the test's collector.
    cloud.plain_port = __import__("mqtt_util").free_port()
    cloud.conf.write_text(cloud.conf.read_text() + f"listener {cloud.plain_port} 127.0.0.1\n")
    try:
        cloud.start()
        wait_port(cloud.plain_port)
        yield local, cloud, pki
    finally:
        local.stop()
        cloud.stop()


def test_tls_with_client_certificate(tmp_path, tls_cloud, uplinks):
    local, cloud, pki = tls_cloud
    sub = Collector(cloud.plain_port, "nodes/#")
    u = make_uplink(tmp_path, uplinks, local, cloud, cloud_options={
        "tls": {"ca_file": str(pki / "ca.crt"), "cert_file": str(pki / "client.crt"),
                "key_file": str(pki / "client.key")}})
    wait_for(lambda: u.status().get("connected"), 10, "the TLS cloud link")
    publish_many(local.port, "sensors/secure", [b"s1", b"s2"])
    wait_for(lambda: len(sub.messages) >= 2, 10, "messages over TLS")
    assert sub.payloads() == [b"s1", b"s2"]
    sub.close()
    u.stop()


def test_tls_untrusted_server_is_refused(tmp_path, tls_cloud, uplinks):
    local, cloud, pki = tls_cloud
    u = make_uplink(tmp_path, uplinks, local, cloud, cloud_options={
        "tls": {"ca_file": str(pki / "other.crt"), "cert_file": str(pki / "client.crt"),
                "key_file": str(pki / "client.key")}})
    wait_for(lambda: "certificate" in u.status().get("last_error", ""), 10, "the TLS failure in the status")
    st = u.status()
    assert st["connected"] is False and "verify failed" in st["last_error"], st
    publish_many(local.port, "sensors/x", [b"kept"])
    wait_for(lambda: u.status().get("depth") == 1, 10, "the message to wait in the spool")
    u.stop()


def test_cloud_user_password(tmp_path, uplinks):
    need_mqtt_tools()
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "node1", "s3cret"], check=True)
    local = Mosquitto(tmp_path, "local").start()
    cloud = Mosquitto(tmp_path, "cloud", extra=f"password_file {passwd}\n")
    cloud.conf.write_text(cloud.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    cloud.start()
    try:
        bad = make_uplink(tmp_path, uplinks, local, cloud, node="bad", cloud_options={"username": "node1", "password": "nope"})
        wait_for(lambda: "refused" in bad.status().get("last_error", ""), 10, "the refusal in the status")
        bad.stop()
        u = make_uplink(tmp_path, uplinks, local, cloud, cloud_options={"username": "node1", "password": "s3cret"})
        wait_for(lambda: u.status().get("connected"), 10, "the authenticated cloud link")
        publish_many(local.port, "sensors/x", [b"auth"])
        wait_for(lambda: u.status().get("drained") == 1, 10, "the message to be drained")
        u.stop()
    finally:
        local.stop()
        cloud.stop()
