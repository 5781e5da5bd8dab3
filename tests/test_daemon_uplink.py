"""The store-and-forward cloud uplink inside hedged (the "uplink" section of its config).

The local side is hedged's own embedded broker (on a free loopback port), the "cloud" is
Debian's mosquitto on another loopback port, stopped to cut the link and restarted on the same
port to restore it (mqtt_util.Mosquitto, shared with test_uplink.py, which tests the same
library as the standalone hedge-uplink). Publishers and subscribers are real paho clients;
the status comes from /metrics, GET /v1/uplink and `hedge uplink status`, which asks hedged
and, when no hedged answers, reads hedged's spool file.
"""
import json
import signal
import sqlite3
import subprocess

import pytest

from mqtt_util import (Collector, Mosquitto, dedup_in_order, free_port, make_pki, need_mqtt_tools, publish_many,
                       restore_cloud, wait_port)
from test_daemon import HEDGED, wait_for
from test_daemon_broker import BrokerDaemon


class UplinkDaemon(BrokerDaemon):
    """A hedged whose embedded broker listens on a free port and whose uplink goes to `cloud`."""

    def __init__(self, tmp, hedge, cloud_port, name="u", uplink=None, spool=None, broker=None):
        self.uplink_config = {
            "node_id": "n1",
            "cloud": {"host": "127.0.0.1", "port": cloud_port},
            "up": [{"local": "sensors/#", "cloud": "nodes/{node_id}/sensors/#"}],
            "down": [{"cloud": "nodes/{node_id}/cmd/#", "local": "cmd/#"}],
            "reconnect_min_ms": 50,
            "reconnect_max_ms": 500,
            **({"spool": spool} if spool else {}),
            **(uplink or {}),
        }
        # Unlimited queues for offline sessions: the tests count every message.
        super().__init__(tmp, hedge, name=name, broker={"max_queued_messages": 0, **(broker or {})})
        config = json.loads(self.config.read_text())
        config["uplink"] = self.uplink_config
        self.config.write_text(json.dumps(config))

    def status(self):
        code, body = self.api("GET", "/v1/uplink")
        assert code == 200, body
        return body

    def metrics(self):
        code, text = self.api("GET", "/metrics")
        assert code == 200
        return dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("hedge_uplink_"))

    def cli_status(self, *args):
        r = self.cli("uplink", "status", *args, env={"HEDGE_STATE_DIR": str(self.state)})
        assert r.code == 0, r
        return r.out

    def wait_connected(self):
        wait_for(lambda: self.status()["connected"] and self.status()["local_connected"], timeout=15,
                 what="the uplink's cloud and local links")


@pytest.fixture
def cloud(tmp_path):
    need_mqtt_tools()
    c = Mosquitto(tmp_path, "cloud").start()
    yield c
    c.stop()


@pytest.fixture
def daemons(tmp_path, hedge):
    started = []

    def make(cloud_port, **kw):
        d = UplinkDaemon(tmp_path, hedge, cloud_port, name=f"u{len(started)}", **kw)
        started.append(d)
        return d
    yield make
    for d in started:
        if d.proc and d.proc.poll() is None:
            d.proc.send_signal(signal.SIGCONT)
            d.proc.send_signal(signal.SIGTERM)
            d.proc.wait(timeout=10)


def committed_drained(d):
    """The drained counter as committed in hedged's spool file (read-only; WAL lets it read beside hedged)."""
    db = sqlite3.connect(f"file:{d.state / 'uplink' / 'spool.db'}?mode=ro", uri=True, timeout=5)
    try:
        row = db.execute("SELECT value FROM counters WHERE name = 'drained'").fetchone()
        return row[0] if row else 0
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        db.close()


def cut(d, cloud):
    cloud.stop()
    wait_for(lambda: d.status()["connected"] is False, timeout=10, what="the uplink to notice the cut")


def test_outage_10000_messages_arrive_in_order_while_local_traffic_goes_on(daemons, cloud):
    d = daemons(cloud.port).start()
    d.wait_connected()
    cut(d, cloud)
    # Local publish/subscribe is not affected by the cut.
    local = Collector(d.port, "sensors/#")
    n = 10000
    payloads = [str(i).encode() for i in range(n)]
    publish_many(d.port, "sensors/seq", payloads)
    wait_for(lambda: len(local.payloads()) == n, timeout=60, what="every message at the local subscriber")
    assert local.payloads() == payloads
    local.close()
    wait_for(lambda: d.status()["depth"] == n, timeout=60, what=f"{n} messages in the spool")
    st = d.status()
    assert st["connected"] is False and st["received"] == n and st["bytes"] > 0 and st["oldest_age_s"] >= 0
    assert st["last_error"], st
    m = d.metrics()
    assert m["hedge_uplink_connected"] == "0" and m["hedge_uplink_spool_messages"] == str(n)
    assert int(m["hedge_uplink_spool_bytes"]) == st["bytes"]
    sub = restore_cloud(d.proc, cloud, "nodes/n1/sensors/#")
    wait_for(lambda: d.status()["drained"] == n, timeout=60, what="the drain")
    wait_for(lambda: len(dedup_in_order(sub.payloads())) == n, timeout=30, what="every message at the cloud")
    assert dedup_in_order(sub.payloads()) == payloads
    assert all(t == "nodes/n1/sensors/seq" for t, _ in sub.messages)
    sub.close()
    m = d.metrics()
    assert m["hedge_uplink_connected"] == "1" and m["hedge_uplink_spool_messages"] == "0"
    assert m["hedge_uplink_forwarded_total"] == str(n) and int(m["hedge_uplink_reconnects_total"]) >= 1
    assert float(m["hedge_uplink_spool_oldest_age_seconds"]) == 0
    broker = d.api("GET", "/metrics")[1]
    assert "hedge_broker_messages_dropped_total 0\n" in broker
    d.stop()


def test_kill_9_hedged_during_drain_loses_nothing(daemons, cloud):
    d = daemons(cloud.port).start()
    d.wait_connected()
    cut(d, cloud)
    n = 10000
    payloads = [str(i).encode() for i in range(n)]
    publish_many(d.port, "sensors/seq", payloads)
    wait_for(lambda: d.status()["depth"] == n, timeout=60, what=f"{n} messages in the spool")
    sub = restore_cloud(d.proc, cloud, "nodes/n1/sensors/#")
    # Kill once some acknowledged rows are committed as deleted (the uplink groups those deletes
    # into one commit per 50 ms), so the spool file is caught halfway.
    wait_for(lambda: committed_drained(d) > 0, timeout=30, interval=0.002, what="the drain to start")
    d.kill9()
    # No hedged answers: `hedge uplink status` reads hedged's spool file.
    text = d.cli_status("--json")
    left = json.loads(text)
    assert left["running"] is False and left["connected"] is False
    assert 0 < left["depth"] < n, f"the kill did not land mid-drain: {left}"
    assert "uplink:    not running" in d.cli_status()
    d.start()
    wait_for(lambda: d.status()["depth"] == 0, timeout=60, what="the drain to finish after the restart")
    wait_for(lambda: len(dedup_in_order(sub.payloads())) == n, timeout=30, what="every message at the cloud")
    assert dedup_in_order(sub.payloads()) == payloads
    sub.close()
    d.stop()


def test_kill_9_hedged_during_intake_loses_nothing(daemons, cloud):
    """Every message hedged's broker acknowledged survives `kill -9 hedged` at once after the last
    PUBACK, while the uplink is still taking the burst into its spool: the rest waits in the broker's
    persisted session for the uplink and is spooled after the restart (at least once: what was spooled
    but not yet acknowledged to the broker when it died comes a second time, in order)."""
    from conftest import BUILD
    d = daemons(cloud.port).start()
    d.wait_connected()
    cut(d, cloud)
    n = 20000
    r = subprocess.run([str(BUILD / "mqtt-burst"), "--port", str(d.port), "--topic", "sensors/seq", "--count",
                        str(n), "--size", "8"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and f"published={n}" in r.stdout, r
    d.kill9()
    spooled = json.loads(d.cli_status("--json"))["depth"]  # read from the spool file: hedged is gone
    print(f"spooled at the kill: {spooled} of {n}")
    assert spooled <= n
    d.start()
    # At least n: rows spooled before the kill whose PUBACK the broker had not committed come again.
    wait_for(lambda: d.status()["depth"] >= n, timeout=60, what="every acknowledged message in the spool")
    sub = restore_cloud(d.proc, cloud, "nodes/n1/sensors/#")
    wait_for(lambda: len(dedup_in_order(sub.payloads())) == n, timeout=60, what="every message at the cloud")
    assert dedup_in_order(sub.payloads()) == [b"%08d" % i for i in range(n)]
    sub.close()
    d.stop()


def test_downlink_reaches_local_subscribers(daemons, cloud):
    d = daemons(cloud.port).start()
    d.wait_connected()
    local = Collector(d.port, "cmd/#")
    publish_many(cloud.port, "nodes/n1/cmd/reboot", [b"now", b"later"])
    publish_many(cloud.port, "nodes/other/cmd/reboot", [b"not-for-us"])
    wait_for(lambda: len(local.messages) >= 2, timeout=10, what="the downlink messages")
    wait_for(lambda: d.metrics()["hedge_uplink_downlink_messages_total"] == "2", what="the downlink counter")
    assert local.messages == [("cmd/reboot", b"now"), ("cmd/reboot", b"later")]
    local.close()
    d.stop()


# topic "nodes/n1/sensors/x" (18 bytes) + a 12-byte payload = 30 bytes a row: 300 bytes hold 10.
@pytest.mark.parametrize("policy", ["drop-oldest", "reject-new"])
def test_spool_full_policy_in_metrics_and_status(daemons, cloud, policy):
    d = daemons(cloud.port, spool={"max_bytes": 300, "full_policy": policy}).start()
    d.wait_connected()
    cut(d, cloud)
    payloads = [f"reading-{i:04d}".encode() for i in range(100)]
    publish_many(d.port, "sensors/x", payloads)
    wait_for(lambda: d.status()["received"] == 100, timeout=30, what="100 messages offered to the spool")
    st = d.status()
    assert st["depth"] == 10 and st["bytes"] == 300
    m = d.metrics()
    dropped = {"drop-oldest": m['hedge_uplink_dropped_total{policy="drop-oldest"}'],
               "reject-new": m['hedge_uplink_dropped_total{policy="reject-new"}']}
    if policy == "drop-oldest":
        assert dropped == {"drop-oldest": "90", "reject-new": "0"} and st["dropped_oldest"] == 90
        expected = payloads[90:]
    else:
        assert dropped == {"drop-oldest": "0", "reject-new": "90"} and st["rejected_new"] == 90
        expected = payloads[:10]
    text = d.cli_status()
    assert "spool:     10 messages, 300 bytes" in text
    assert f"dropped:   90 (drop-oldest {90 if policy == 'drop-oldest' else 0}, " \
           f"reject-new {90 if policy == 'reject-new' else 0}, expired 0)" in text
    assert text.startswith("cloud:     disconnected for ")
    sub = restore_cloud(d.proc, cloud, "nodes/n1/sensors/#")
    wait_for(lambda: d.status()["depth"] == 0, timeout=30, what="the drain")
    wait_for(lambda: len(dedup_in_order(sub.payloads())) == 10, timeout=10, what="10 messages at the cloud")
    assert dedup_in_order(sub.payloads()) == expected
    sub.close()
    d.stop()
    # The same status, from the spool file, once hedged is gone.
    text = d.cli_status()
    assert text.startswith("uplink:    not running\n") and "spool:     0 messages, 0 bytes" in text
    assert "drained:   10\n" in text


def test_ttl_expires_old_messages(daemons, cloud):
    d = daemons(cloud.port, spool={"ttl": 1}).start()
    d.wait_connected()
    cut(d, cloud)
    publish_many(d.port, "sensors/x", [b"old1", b"old2", b"old3"])
    wait_for(lambda: d.status()["received"] == 3, timeout=10, what="3 messages spooled")
    wait_for(lambda: d.status()["expired"] == 3, timeout=10, what="the TTL to expire them")
    assert d.status()["depth"] == 0
    assert d.metrics()["hedge_uplink_expired_total"] == "3"
    sub = restore_cloud(d.proc, cloud, "nodes/n1/sensors/#")
    wait_for(lambda: d.status()["connected"], timeout=10, what="the cloud link")
    publish_many(d.port, "sensors/x", [b"fresh"])
    wait_for(lambda: sub.payloads(), timeout=10, what="the fresh message")
    assert sub.payloads() == [b"fresh"]
    sub.close()
    d.stop()


def test_uplink_authenticates_to_a_broker_that_requires_it(daemons, cloud, hedge, tmp_path):
    pw = tmp_path / "passwd"
    assert hedge("broker", "passwd", pw, "admin", input="adminpw\n").code == 0
    d = daemons(cloud.port, broker={"password_file": str(pw)}).start()
    d.wait_connected()
    # Anonymous clients are refused by this broker; the uplink got its own user.
    r = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(d.port), "-t", "sensors/x", "-m", "anon"],
                       capture_output=True, text=True, timeout=15)
    assert r.returncode != 0
    sub = Collector(cloud.port, "nodes/n1/sensors/#")
    r = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(d.port), "-u", "admin", "-P", "adminpw",
                        "-q", "1", "-t", "sensors/room/temp", "-m", "21.5"], capture_output=True, text=True,
                       timeout=15)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: sub.messages, timeout=10, what="the message at the cloud")
    assert sub.messages == [("nodes/n1/sensors/room/temp", b"21.5")]
    sub.close()
    # Down: the internal user may write the down topics.
    local = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(d.port), "-u", "admin", "-P", "adminpw",
                              "-t", "cmd/#", "-q", "1", "-C", "1", "-W", "10", "-v"], stdout=subprocess.PIPE, text=True)
    wait_for(lambda: "hedge_broker_subscriptions 2\n" in d.api("GET", "/metrics")[1], what="the admin subscription")
    publish_many(cloud.port, "nodes/n1/cmd/blink", [b"3"])
    out, _ = local.communicate(timeout=20)
    assert out == "cmd/blink 3\n"
    assert "adminpw" not in d.errlog.read_text()
    d.stop()


def test_uplink_user_is_its_own_and_leaves_anonymous_clients_alone(daemons, cloud):
    """The uplink always connects to the embedded broker as the internal user hedged:uplink: that user
    alone does not turn anonymous devices away, its name cannot be used without its password, nobody
    can take over its session by client id, and it keeps forwarding after workload users appear."""
    d = daemons(cloud.port).start()
    d.wait_connected()
    sub = Collector(cloud.port, "nodes/n1/sensors/#")

    def pub(*args):
        return subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(d.port), "-q", "1", *args],
                              capture_output=True, text=True, timeout=15)
    r = pub("-t", "sensors/anon", "-m", "1")  # anonymous devices are still welcome
    assert r.returncode == 0, r.stderr
    assert pub("-u", "hedged:uplink", "-P", "guess", "-t", "sensors/x", "-m", "x").returncode != 0
    assert pub("-i", "hedge-uplink-n1", "-t", "sensors/x", "-m", "x").returncode != 0  # its session is its own
    assert d.status()["local_connected"]
    # a workload's credentials turn anonymous clients away; the uplink carries on
    r = d.deploy({"name": "sensor", "isolation": "process", "command": ["/bin/sleep", "60"],
                  "mqtt": {"publish": ["sensors/#"]}})
    assert r.code == 0, r
    assert pub("-t", "sensors/anon", "-m", "refused").returncode != 0
    password = (d.state / "mqtt-credentials" / "sensor").read_text().strip()
    r = pub("-u", "workload:sensor", "-P", password, "-t", "sensors/after", "-m", "2")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: len(sub.messages) == 2, timeout=15, what="both messages at the cloud")
    assert sub.messages == [("nodes/n1/sensors/anon", b"1"), ("nodes/n1/sensors/after", b"2")]
    sub.close()
    assert d.cli("rm", "sensor").code == 0
    d.stop()


def test_tls_cloud_with_client_certificate(daemons, tmp_path):
    """TLS to the cloud: OpenSSL is loaded by hedged only for it (the plain tests never map it)."""
    need_mqtt_tools()
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    plain_port = free_port()
    cloud = Mosquitto(tmp_path, "tls-cloud", extra=(
        f"cafile {pki}/ca.crt\ncertfile {pki}/server.crt\nkeyfile {pki}/server.key\nrequire_certificate true\n"
        f"listener {plain_port} 127.0.0.1\n")).start()
    try:
        wait_port(plain_port)
        sub = Collector(plain_port, "nodes/n1/sensors/#")
        d = daemons(cloud.port, uplink={"cloud": {"host": "127.0.0.1", "port": cloud.port, "tls": {
            "ca_file": str(pki / "ca.crt"), "cert_file": str(pki / "client.crt"),
            "key_file": str(pki / "client.key")}}}).start()
        d.wait_connected()
        publish_many(d.port, "sensors/secure", [b"s1", b"s2"])
        wait_for(lambda: len(sub.messages) >= 2, timeout=10, what="messages over TLS")
        assert sub.payloads() == [b"s1", b"s2"]
        sub.close()
        d.stop()
    finally:
        cloud.stop()


def test_status_from_hedged_without_uplink(daemons, cloud):
    d = daemons(cloud.port)
    config = json.loads(d.config.read_text())
    del config["uplink"]
    d.config.write_text(json.dumps(config))
    d.start()
    code, body = d.api("GET", "/v1/uplink")
    assert code == 404 and "no uplink" in body["error"]
    assert "hedge_uplink_" not in d.api("GET", "/metrics")[1]
    r = d.cli("uplink", "status")
    assert r.code == 125 and "no uplink" in r.err
    d.stop()


BAD_UPLINK = [
    ({"cloud": {"port": 70000}}, "uplink.cloud.port: must be an integer in 1..65535"),
    ({"cloud": {"tls": {"ca_fle": "/k"}}}, "uplink.cloud.tls.ca_fle: unknown field"),
    ({"up": [{"local": "sensors/#", "cloud": "nodes/+/x"}]},
     "uplink.up[0].cloud: \"nodes/+/x\" must have the same wildcards"),
    ({"spool": {"full_policy": "drop-newest"}}, "uplink.spool.full_policy: \"drop-newest\""),
    ({"node_id": None}, "uplink.node_id: is required"),
    ({"colud": {}}, "uplink.colud: unknown field"),
    ({"local": {"tls": {}}}, "uplink.local.tls: the local broker is reached in plain TCP"),
    ({"cloud": {"tls": {"ca_file": "/nonexistent/ca.pem"}}},
     "uplink.cloud.tls.ca_file: /nonexistent/ca.pem: No such file or directory"),
]


@pytest.mark.parametrize("change,message", BAD_UPLINK, ids=[m.split(":")[0] for _, m in BAD_UPLINK])
def test_check_names_the_bad_uplink_field(tmp_path, hedge, change, message):
    uplink = {"node_id": "n1", "cloud": {"port": 8883},
              "up": [{"local": "sensors/#", "cloud": "nodes/{node_id}/sensors/#"}]}
    for key, value in change.items():
        if value is None:
            del uplink[key]
        elif isinstance(value, dict) and isinstance(uplink.get(key), dict):
            uplink[key] = {**uplink[key], **value}
        else:
            uplink[key] = value
    path = tmp_path / "hedged.json"
    path.write_text(json.dumps({"uplink": uplink}))
    r = subprocess.run([str(HEDGED), "--check", str(path)], capture_output=True, text=True, env=hedge.env())
    assert r.returncode == 1, r
    assert message in r.stderr, r.stderr
    assert str(path) in r.stderr


def test_check_uplink_config(tmp_path, hedge):
    path = tmp_path / "hedged.json"
    good = {"node_id": "n1", "cloud": {"host": "127.0.0.1", "port": 8883, "tls": {}},
            "up": [{"local": "sensors/#", "cloud": "nodes/{node_id}/sensors/#"}],
            "spool": {"max_bytes": "64M", "ttl": 86400, "full_policy": "reject-new"}}
    path.write_text(json.dumps({"uplink": good}))
    r = subprocess.run([str(HEDGED), "--check", str(path)], capture_output=True, text=True, env=hedge.env())
    assert r.returncode == 0 and "ok" in r.stdout, r
    # Without the embedded broker the local side must be named.
    path.write_text(json.dumps({"broker": {"enabled": False}, "uplink": good}))
    r = subprocess.run([str(HEDGED), "--check", str(path)], capture_output=True, text=True, env=hedge.env())
    assert r.returncode == 1 and "uplink.local.host: is required when the embedded broker is disabled" in r.stderr
    path.write_text(json.dumps({"uplink": [good]}))
    r = subprocess.run([str(HEDGED), "--check", str(path)], capture_output=True, text=True, env=hedge.env())
    assert r.returncode == 1 and "uplink: must be a JSON object" in r.stderr, r
