"""Helpers for the uplink and functions tests: real brokers and real clients.

Mosquitto runs Debian's mosquitto on its own loopback port with a temporary
config (the "cloud", and the local broker too), stoppable and restartable on
the same port to cut and restore the link. Collector and publish_many use
python3-paho-mqtt. Uplink runs build/hedge-uplink with a generated config
(test_daemon_uplink.py runs the same uplink inside hedged).
"""
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUILD = pathlib.Path(os.environ.get("HEDGE_BUILD", ROOT / "build"))
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
SANITIZED = os.environ.get("HEDGE_SANITIZED") == "1"


def hedge_env(extra=None):
    """Environment for hedge's own binaries: sanitizer options when the build is sanitized."""
    from conftest import SANITIZER_ENV
    env = dict(os.environ, **(extra or {}))
    if SANITIZED:
        env.update(SANITIZER_ENV)
    return env


def check_log_text(text):
    from conftest import check_sanitizer
    check_sanitizer(text)


def check_log(path):
    """A sanitizer report in a daemon's log fails the test."""
    from conftest import check_sanitizer
    check_sanitizer(pathlib.Path(path).read_text(errors="replace"))

try:
    import paho.mqtt.client as paho
except ImportError:  # pragma: no cover
    paho = None


def need_mqtt_tools():
    if not os.path.exists(MOSQUITTO):
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; see deps/functions.txt)")
    if paho is None:
        pytest.skip("python3-paho-mqtt is not installed (see deps/functions.txt)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Mosquitto:
    """mosquitto on 127.0.0.1:port; stop() and start() cut and restore it on the same port."""

    def __init__(self, directory, name, extra=""):
        self.dir = pathlib.Path(directory)
        self.name = name
        self.port = free_port()
        self.conf = self.dir / f"{name}.conf"
        self.log = self.dir / f"{name}.log"
        self.conf.write_text(
            # user root: read the test's 0700 temp dirs (mosquitto would drop to user mosquitto).
            f"user root\nlistener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            # Hold everything for offline sessions and deliver without a window limit:
            # the tests count every message.
            "max_queued_messages 0\nmax_inflight_messages 0\n" + extra)
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT)
        try:
            wait_port(self.port)
        except AssertionError:
            self.stop()
            raise AssertionError(f"mosquitto {self.name} did not start: {self.log.read_text()}")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


class HedgeBroker:
    """build/hedge-broker on 127.0.0.1:port with a state dir: the node's own broker as the local one."""

    def __init__(self, directory, name, extra=""):
        self.dir = pathlib.Path(directory)
        self.name = name
        self.port = free_port()
        self.conf = self.dir / f"{name}.conf"
        self.log = self.dir / f"{name}.log"
        state = self.dir / f"{name}-state"
        state.mkdir(exist_ok=True)
        # Unlimited queues for offline sessions: the tests count every message.
        self.conf.write_text(f"listener 127.0.0.1:{self.port}\nstate_dir {state}\nmax_queued_messages 0\n" + extra)
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([str(BUILD / "hedge-broker"), "--config", str(self.conf)],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, env=hedge_env())
        wait_port(self.port)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            assert self.proc.wait(timeout=10) == 0, self.log.read_text()
            check_log(self.log)
        self.proc = None


class Collector:
    """A paho subscriber that records (topic, payload) in arrival order."""

    def __init__(self, port, topic, qos=1, client_id=None):
        self.messages = []
        self.lock = threading.Lock()
        self.client = paho.Client(client_id=client_id or f"collector-{os.getpid()}-{time.monotonic_ns()}",
                                  clean_session=True)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos)
        self.client.loop_start()
        assert subscribed.wait(10), "SUBACK not received"

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((msg.topic, msg.payload))

    def payloads(self):
        with self.lock:
            return [p for _, p in self.messages]

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def publish_many(port, topic, payloads, qos=1, timeout=120):
    """Publish every payload with QoS qos and wait until the broker acknowledged all of them."""
    client = paho.Client(client_id=f"pub-{os.getpid()}-{time.monotonic_ns()}", clean_session=True)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    done = threading.Event()
    acked = [0]
    total = len(payloads)

    def on_publish(c, u, mid):
        acked[0] += 1
        if acked[0] == total:
            done.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    for p in payloads:
        client.publish(topic(p) if callable(topic) else topic, p, qos=qos)
    if total:
        assert done.wait(timeout), f"only {acked[0]} of {total} publishes acknowledged"
    client.loop_stop()
    client.disconnect()


def dedup_in_order(items):
    seen = set()
    out = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def make_pki(d):
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate (openssl CLI)."""
    def ssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=hedge test CA")
    for name, ext in (("server", "subjectAltName=DNS:localhost,IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=hedge-{name}")
        (d / f"{name}.ext").write_text(ext + "\n")
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    # A second CA the server certificate does not chain to.
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "other.crt", "-days", "2",
        "-subj", "/CN=other CA")


def process_tree(pid):
    """pid and every process below it (hedged's uplink runs in its network child, not in hedged)."""
    pids = [pid]
    for p in pids:
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    pids.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            pass
    return pids


def restore_cloud(proc, cloud, topic):
    """Start the cloud broker and subscribe there before the uplink can reconnect (its process,
    hedge-uplink or hedged with its network child, is paused with SIGSTOP meanwhile), so the
    collector sees the whole drain."""
    stopped = []
    try:
        for pid in process_tree(proc.pid):
            try:
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            except ProcessLookupError:
                pass
        cloud.start()
        sub = Collector(cloud.port, topic)
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    return sub


class Uplink:
    """build/hedge-uplink with a generated config; kill() is kill -9."""

    def __init__(self, directory, node_id, local_port, cloud_port, spool=None, extra=None, cloud_options=None):
        self.dir = pathlib.Path(directory)
        self.config = {
            "node_id": node_id,
            "local": {"host": "127.0.0.1", "port": local_port, "client_id": f"uplink-{node_id}-{os.getpid()}"},
            "cloud": {"host": "127.0.0.1", "port": cloud_port, "client_id": f"uplink-{node_id}-{os.getpid()}",
                      **(cloud_options or {})},
            "up": [{"local": "sensors/#", "cloud": "nodes/{node_id}/sensors/#"}],
            "down": [{"cloud": "nodes/{node_id}/cmd/#", "local": "cmd/#"}],
            "spool": {"path": str(self.dir / f"spool-{node_id}.db"), **(spool or {})},
            "reconnect_min_ms": 50,
            "reconnect_max_ms": 500,
            **(extra or {}),
        }
        self.config_path = self.dir / f"uplink-{node_id}.json"
        self.config_path.write_text(json.dumps(self.config))
        self.log = self.dir / f"uplink-{node_id}.log"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([str(BUILD / "hedge-uplink"), "--config", str(self.config_path)],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, env=hedge_env())
        wait_for(lambda: self.status().get("running") and "local broker connected" in self.log.read_text(),
                 10, "the uplink to connect to the local broker")
        return self

    def status(self):
        r = subprocess.run([str(BUILD / "hedge"), "uplink", "status", "--config", str(self.config_path), "--json"],
                           capture_output=True, text=True, timeout=30, env=hedge_env())
        check_log_text(r.stderr)
        if r.returncode != 0:
            return {}
        return json.loads(r.stdout)

    def restore_cloud(self, cloud, topic):
        return restore_cloud(self.proc, cloud, topic)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            code = self.proc.wait(timeout=10)
            assert code == 0, f"hedge-uplink exited {code}: {self.log.read_text()}"
            check_log(self.log)
        self.proc = None
