"""The MQTT broker embedded in hedged, driven with the real mosquitto_pub/mosquitto_sub clients.

Every test starts its own hedged (own state dir and socket, the broker on a free loopback
port, never 1883) and stops it at the end; the broker's own protocol is tested against
hedge-broker in test_broker*.py, so here: that hedged runs it (round trip, QoS 1, retained and
persistent-session persistence across a restart and a kill -9), its config section and
`--check`, `hedge broker passwd`, the /metrics counters, `--broker-only`, and `enabled: false`.
"""
import json
import os
import shutil
import signal
import socket
import stat
import subprocess

import pytest

from conftest import check_sanitizer
from test_daemon import FAST, HEDGED, Daemon, pids_mentioning, wait_for

pytestmark = pytest.mark.skipif(not shutil.which("mosquitto_pub") or not shutil.which("mosquitto_sub"),
                                reason="mosquitto-clients is not installed (deps/broker.txt)")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def port_open(port):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def pub(port, topic, message, *args):
    r = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-m", message, *args],
                       capture_output=True, text=True, timeout=15)
    return r


def sub(port, topic, count, *args, wait=5):
    """Messages as 'topic payload' lines; -W makes mosquitto_sub give up after `wait` seconds."""
    return subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-C", str(count),
                           "-W", str(wait), "-v", *args], capture_output=True, text=True, timeout=wait + 10)


class BrokerDaemon(Daemon):
    """A hedged with its broker on a free port (stderr checked for sanitizer reports at stop)."""

    def __init__(self, tmp, hedge, name="b", broker=None):
        self.port = free_port()
        super().__init__(tmp, hedge, name, config={"broker": {"listen": [f"127.0.0.1:{self.port}"],
                                                              **(broker or {})}})

    def start(self):
        super().start()
        if json.loads(self.config.read_text())["broker"].get("enabled", True):
            wait_for(lambda: port_open(self.port), what="broker port")
        return self

    def stop(self):
        super().stop()
        assert pids_mentioning(str(self.state)) == [], "a hedged of this test is still running"


@pytest.fixture
def daemons(tmp_path, hedge):
    started = []

    def make(**kw):
        d = BrokerDaemon(tmp_path, hedge, name=f"b{len(started)}", **kw)
        started.append(d)
        return d
    yield make
    for d in started:
        if d.proc and d.proc.poll() is None:
            d.proc.send_signal(signal.SIGTERM)
            d.proc.wait(timeout=10)


def test_round_trip_qos1_and_metrics(daemons):
    d = daemons().start()
    waiting = subprocess.Popen(["mosquitto_sub", "-p", str(d.port), "-t", "sensors/+/temp", "-q", "1", "-C", "1",
                                "-W", "10", "-v"], stdout=subprocess.PIPE, text=True)
    wait_for(lambda: "hedge_broker_subscriptions 1\n" in d.api("GET", "/metrics")[1], what="subscription")
    r = pub(d.port, "sensors/kitchen/temp", "21.5", "-q", "1")
    assert r.returncode == 0, r.stderr
    out, _ = waiting.communicate(timeout=15)
    assert waiting.returncode == 0
    assert out == "sensors/kitchen/temp 21.5\n"
    status, text = d.api("GET", "/metrics")
    assert status == 200
    metrics = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("hedge_broker_"))
    assert metrics["hedge_broker_clients_connected"] == "0"
    assert metrics["hedge_broker_clients_total"] == "2"
    assert metrics["hedge_broker_messages_received_total"] == "1"
    assert metrics["hedge_broker_messages_sent_total"] == "1"
    assert int(metrics["hedge_broker_bytes_received_total"]) > len("sensors/kitchen/temp21.5")
    assert int(metrics["hedge_broker_bytes_sent_total"]) > len("sensors/kitchen/temp21.5")
    assert metrics["hedge_broker_subscriptions"] == "0"
    assert "hedge_broker_retained_messages" in metrics
    assert "# TYPE hedge_broker_messages_received_total counter" in text
    # a client hanging up mid-write must never kill hedged: SIGPIPE is ignored
    sigign = next(line for line in open(f"/proc/{d.proc.pid}/status") if line.startswith("SigIgn:"))
    assert int(sigign.split()[1], 16) & (1 << (signal.SIGPIPE - 1))
    d.stop()


def test_retained_survives_restart(daemons):
    d = daemons().start()
    assert pub(d.port, "config/mode", "eco", "-r", "-q", "1").returncode == 0
    d.stop()
    assert (d.state / "broker" / "broker.db").is_file()
    d.start()
    r = sub(d.port, "config/mode", 1)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "config/mode eco\n"
    d.stop()


def test_kill9_keeps_acked_qos1_for_persistent_session(daemons):
    d = daemons().start()
    # a persistent session subscribes at QoS 1 and goes away
    r = subprocess.run(["mosquitto_sub", "-p", str(d.port), "-i", "dev-1", "-c", "-q", "1", "-t", "cmd/dev-1", "-E"],
                       capture_output=True, text=True, timeout=15)
    assert r.returncode == 0, r.stderr
    # acknowledged (PUBACK) before the kill: it must be durable
    assert pub(d.port, "cmd/dev-1", "reboot", "-q", "1").returncode == 0
    d.kill9()
    d.start()
    r = sub(d.port, "cmd/dev-1", 1, "-i", "dev-1", "-c", "-q", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "cmd/dev-1 reboot\n"
    d.stop()


@pytest.mark.parametrize("section,message", [
    ({"bogus": 1}, "broker.bogus: unknown field"),
    ({"listen": ["localhost"]}, "broker.listen[0]: must be \"HOST:PORT\""),
    ({"listen": "127.0.0.1:1883"}, "broker.listen: must be an array"),
    ({"allow_anonymous": "yes"}, "broker.allow_anonymous: must be true or false"),
    ({"max_inflight_messages": 0}, "broker.max_inflight_messages: must be an integer 1..65535"),
    ({"queue_full_policy": "drop-all"}, "broker.queue_full_policy: must be \"drop-new\" or \"drop-oldest\""),
    ({"password_file": "relative"}, "broker.password_file: must be an absolute path"),
    ({"password_file": "/nonexistent/hedge-passwd"}, "/nonexistent/hedge-passwd"),
    ({"listen_tls": ["127.0.0.1:8883"]}, "broker.listen_tls: needs broker.tls_cert and broker.tls_key"),
    ({"enabled": "no"}, "broker.enabled: must be true or false"),
    # no plain TCP listener: workloads (HEDGE_MQTT_PORT) and the uplink would have no port to reach
    ({"listen": ["ws://127.0.0.1:9001/mqtt", "ws://127.0.0.1:9002"]}, "broker.listen: needs a plain TCP listener"),
])
def test_check_rejects_bad_broker_fields(tmp_path, section, message):
    cfg = tmp_path / "hedged.json"
    cfg.write_text(json.dumps({"broker": section}))
    r = subprocess.run([str(HEDGED), "--check", str(cfg)], capture_output=True, text=True, timeout=30)
    check_sanitizer(r.stderr)
    assert r.returncode == 1
    assert message in r.stderr
    assert r.stderr.startswith(f"hedged: {cfg}: ")


def test_check_accepts_a_full_broker_section(tmp_path, hedge):
    pw = tmp_path / "passwd"
    assert hedge("broker", "passwd", pw, "alice", input="pw\n").code == 0
    acl = tmp_path / "acl"
    acl.write_text("user alice\ntopic readwrite sensors/#\n")
    cfg = tmp_path / "hedged.json"
    cfg.write_text(json.dumps({"broker": {
        "enabled": True, "listen": ["127.0.0.1:1883", "[::1]:1883"], "password_file": str(pw), "acl_file": str(acl),
        "allow_anonymous": False, "max_packet_size": "256K", "max_inflight_messages": 10, "max_queued_messages": 100,
        "max_queued_bytes": "1M", "queue_full_policy": "drop-oldest", "max_connections": 1000,
        "connection_rate": 100, "client_connection_rate": 10, "topic_alias_maximum": 5, "max_keepalive": 600,
        "connect_timeout": 5, "sys_interval": 0, "persistence_sync": "full", "state_dir": str(tmp_path / "mq")}}))
    r = subprocess.run([str(HEDGED), "--check", str(cfg)], capture_output=True, text=True, timeout=30)
    check_sanitizer(r.stderr)
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout
    assert not (tmp_path / "mq").exists(), "--check must not create the broker's state"


def test_passwd_file_refuses_anonymous_and_accepts_the_user(tmp_path, hedge, daemons):
    pw = tmp_path / "mqtt-passwd"
    r = hedge("broker", "passwd", pw, "alice", input="wonderland\n")
    assert r.code == 0, r.err
    assert stat.S_IMODE(os.stat(pw).st_mode) == 0o600
    line = pw.read_text()
    assert line.startswith("alice:$7$") and line.count("\n") == 1
    assert "wonderland" not in line
    assert hedge("broker", "passwd", pw, "a:b", input="x\n").code == 2
    assert hedge("broker", "frobnicate").code == 2

    d = daemons(broker={"password_file": str(pw)}).start()
    anon = pub(d.port, "t", "x")
    assert anon.returncode != 0
    assert "not authorised" in anon.stderr.lower() or "not authorized" in anon.stderr.lower(), anon.stderr
    wrong = pub(d.port, "t", "x", "-u", "alice", "-P", "rabbit")
    assert wrong.returncode != 0
    ok = pub(d.port, "t", "x", "-u", "alice", "-P", "wonderland", "-q", "1")
    assert ok.returncode == 0, ok.stderr
    d.stop()


def test_broker_only(tmp_path, hedge):
    port = free_port()
    state = tmp_path / "state"
    sock = tmp_path / "never.sock"
    err = tmp_path / "stderr"
    proc = subprocess.Popen([str(HEDGED), "--broker-only", "--state-dir", str(state), "--socket", str(sock),
                             "--mqtt-listen", f"127.0.0.1:{port}"], env=hedge.env(), stderr=open(err, "w"))
    try:
        wait_for(lambda: proc.poll() is None and port_open(port), what="broker port")
        assert pub(port, "a/b", "hello", "-r", "-q", "1").returncode == 0
        r = sub(port, "a/b", 1)
        assert r.stdout == "a/b hello\n"
        assert not sock.exists(), "--broker-only must not open the API socket"
        assert not (state / "hedged.db").exists()
        assert (state / "broker" / "broker.db").is_file()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    check_sanitizer(err.read_text())
    assert not port_open(port)


def test_broker_only_refuses_a_disabled_broker(tmp_path):
    cfg = tmp_path / "hedged.json"
    cfg.write_text(json.dumps({"broker": {"enabled": False}}))
    r = subprocess.run([str(HEDGED), "--broker-only", "--config", str(cfg), "--state-dir", str(tmp_path / "s")],
                       capture_output=True, text=True, timeout=30)
    check_sanitizer(r.stderr)
    assert r.returncode == 1
    assert "--broker-only: the broker is disabled" in r.stderr


def test_hedged_refuses_a_broker_without_a_tcp_listener(tmp_path):
    # --check says so, and so does a start (before binding anything); a TCP listener next to it is fine
    cfg = tmp_path / "hedged.json"
    cfg.write_text(json.dumps({"broker": {"listen": ["ws://127.0.0.1:0/mqtt"]}}))
    r = subprocess.run([str(HEDGED), "--check", str(cfg)], capture_output=True, text=True, timeout=30)
    check_sanitizer(r.stderr)
    assert r.returncode == 1 and "broker.listen: needs a plain TCP listener" in r.stderr, r.stderr
    assert "workloads and the uplink" in r.stderr
    r = subprocess.run([str(HEDGED), "--config", str(cfg), "--state-dir", str(tmp_path / "s"),
                        "--socket", str(tmp_path / "api.sock")], capture_output=True, text=True, timeout=30)
    check_sanitizer(r.stderr)
    assert r.returncode == 1 and "broker.listen: needs a plain TCP listener" in r.stderr, r.stderr
    cfg.write_text(json.dumps({"broker": {"listen": ["ws://127.0.0.1:0/mqtt", "127.0.0.1:0"]}}))
    r = subprocess.run([str(HEDGED), "--check", str(cfg)], capture_output=True, text=True, timeout=30)
    check_sanitizer(r.stderr)
    assert r.returncode == 0, r.stderr


def test_disabled_broker_leaves_the_port_closed(daemons):
    d = daemons(broker={"enabled": False}).start()
    assert not port_open(d.port)
    status, text = d.api("GET", "/metrics")
    assert status == 200
    assert "hedge_broker_" not in text
    assert not (d.state / "broker").exists()
    d.stop()


def test_taken_port_is_a_clear_start_error(tmp_path, hedge):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        r = subprocess.run([str(HEDGED), "--state-dir", str(tmp_path / "s"), "--socket", str(tmp_path / "s.sock"),
                            "--mqtt-listen", f"127.0.0.1:{port}"], env=hedge.env(), capture_output=True, text=True,
                           timeout=30)
    finally:
        holder.close()
    check_sanitizer(r.stderr)
    assert r.returncode == 1
    assert f"listener 127.0.0.1:{port}: bind: Address already in use" in r.stderr
    assert not (tmp_path / "s.sock").exists()
