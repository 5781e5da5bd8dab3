"""Privilege separation (docs/security.md): hedged's broker and uplink run in a network child without
privileges; `hedge-broker --user` drops the same way.

What is checked, on the real processes: the child's /proc status (uid, capabilities, no_new_privs,
seccomp filter mode); that it cannot open hedged's state database or API socket, neither in its own
mount namespace nor with its uid alone; that a forbidden syscall (the HEDGE_TEST_HOOKS=1 hook, SIGUSR2
to hedged) kills only the child, hedged restarts it, clients reconnect with their workload credentials
(hedged sends its users again) and not one QoS 1 message is lost.
"""
import json
import os
import pathlib
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest

from mqtt_util import hedge_env
from test_daemon import wait_for
from test_daemon_broker import BrokerDaemon, free_port, port_open

mqtt = pytest.importorskip("paho.mqtt.client")
pytestmark = pytest.mark.skipif(not shutil.which("mosquitto_pub") or not shutil.which("nsenter"),
                                reason="mosquitto-clients and util-linux are needed (deps/broker.txt)")

BUILD = pathlib.Path(os.environ.get("HEDGE_BUILD", pathlib.Path(__file__).resolve().parent.parent / "build"))


def status(pid):
    fields = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def assert_unprivileged(pid):
    st = status(pid)
    uids = [int(u) for u in st["Uid"].split()]
    gids = [int(g) for g in st["Gid"].split()]
    assert 0 not in uids and 0 not in gids, st
    assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0 and int(st["CapBnd"], 16) == 0, st
    assert st["NoNewPrivs"] == "1", st
    assert st["Seccomp"] == "2", st
    return uids[0], gids[0]


def net_child(hedged_pid):
    """The network child: hedged's child named hedged-net (monitors are its children too)."""
    def find():
        kids = pathlib.Path(f"/proc/{hedged_pid}/task/{hedged_pid}/children").read_text().split()
        for k in kids:
            try:
                if pathlib.Path(f"/proc/{k}/comm").read_text().strip() == "hedged-net" and \
                        status(k)["Seccomp"] == "2":
                    return int(k)
            except OSError:
                pass
        return None
    return wait_for(find, what="hedged's network child")


def metric(d, name):
    for line in d.api("GET", "/metrics")[1].splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


@pytest.fixture
def hooked(tmp_path, hedge, monkeypatch):
    monkeypatch.setenv("HEDGE_TEST_HOOKS", "1")
    made = []

    def make():
        d = BrokerDaemon(tmp_path, hedge, name=f"p{len(made)}")
        made.append(d)
        return d.start()
    yield make
    for d in made:
        d.cleanup()


def test_network_child_holds_no_privileges_and_sees_nothing_of_hedged(hooked):
    d = hooked()
    child = net_child(d.proc.pid)
    uid, gid = assert_unprivileged(child)
    assert status(d.proc.pid)["Uid"].split()[0] == "0"  # hedged itself stays root
    db = d.state / "hedged.db"
    assert db.exists()
    # Its own dir is its own; hedged's state is not.
    assert (d.state / "broker").stat().st_uid == uid
    as_child = ["nsenter", "-t", str(child), "-m", "-S", str(uid), "-G", str(gid), "--"]
    connect = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect(sys.argv[1])\nexcept OSError as e:\n"
               " print(e.strerror); sys.exit(3)\nprint('connected')")
    # In the child's mount namespace, with its credentials: the state dir shows its own dir alone.
    r = subprocess.run(as_child + ["cat", str(db)], capture_output=True, text=True)
    assert r.returncode != 0 and "No such file" in r.stderr, r
    r = subprocess.run(as_child + ["/usr/bin/python3", "-c", connect, str(d.sock)], capture_output=True, text=True)
    assert r.returncode == 3, r
    r = subprocess.run(as_child + ["ls", "-A", str(d.state)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.split() == ["broker"], r
    # With its uid alone (outside the namespace), the files refuse it too.
    alone = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
    r = subprocess.run(alone + ["cat", str(db)], capture_output=True, text=True)
    assert r.returncode != 0 and "Permission denied" in r.stderr, r
    r = subprocess.run(alone + ["/usr/bin/python3", "-c", connect, str(d.sock)], capture_output=True, text=True)
    assert r.returncode == 3, r
    assert metric(d, "hedge_netchild_up") == 1 and metric(d, "hedge_netchild_crashes_total") == 0


def test_forbidden_syscall_kills_only_the_child_and_no_qos1_message_is_lost(hooked):
    d = hooked()
    # A workload user: hedged must send it again to the restarted child, or the clients below
    # (which use its credentials) cannot reconnect.
    spec = {"name": "load", "isolation": "process", "command": ["/bin/sleep", "1000"],
            "mqtt": {"publish": ["load/#"], "subscribe": ["load/#"]}}
    r = d.deploy(spec)
    assert r.code == 0, r.err
    pid = d.wait_state("load", "running")["pid"]
    env = dict(kv.split("=", 1) for kv in pathlib.Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in kv)
    user, password = env["HEDGE_MQTT_USERNAME"], env["HEDGE_MQTT_PASSWORD"]
    first = net_child(d.proc.pid)

    got, acked, lock = set(), set(), threading.Lock()

    def client(cid):
        c = mqtt.Client(client_id=cid, clean_session=False)
        c.username_pw_set(user, password)
        c.reconnect_delay_set(0.05, 0.5)
        return c

    sub = client("privsep-sub")
    subscribed = threading.Event()
    sub.on_connect = lambda c, u, f, rc: rc == 0 and (c.subscribe("load/#", qos=1), subscribed.set())

    def on_message(c, u, m):
        with lock:
            got.add(m.payload.decode())
    sub.on_message = on_message
    sub.connect("127.0.0.1", d.port)
    sub.loop_start()
    pub = client("privsep-pub")
    pub.on_publish = lambda c, u, mid: acked.add(mid)
    pub.connect("127.0.0.1", d.port)
    pub.loop_start()
    try:
        assert subscribed.wait(10)
        wait_for(lambda: metric(d, "hedge_broker_subscriptions") == 1, what="subscription")
        n, mids = 300, []
        for i in range(n):
            if i == 100:
                os.kill(d.proc.pid, signal.SIGUSR2)  # the child calls a forbidden syscall
            mids.append(pub.publish("load/x", f"m{i}", qos=1).mid)
            time.sleep(0.002)
        wait_for(lambda: metric(d, "hedge_netchild_crashes_total") == 1, what="the crash counted")
        wait_for(lambda: set(mids) <= acked, timeout=20, what="every PUBACK")
        try:
            wait_for(lambda: len(got) == n, timeout=20, what=f"{n} messages")
        except AssertionError:
            missing = sorted(i for i in range(n) if f"m{i}" not in got)
            raise AssertionError(f"{len(missing)} of {n} messages missing: {missing}\n"
                                 f"{d.errlog.read_text()[-6000:]}")
        assert got == {f"m{i}" for i in range(n)}
    finally:
        for c in (pub, sub):
            c.loop_stop()
            c.disconnect()
    # Only the child died: the same hedged, a new unprivileged child, the workload untouched.
    assert d.proc.poll() is None
    second = net_child(d.proc.pid)
    assert second != first and not pathlib.Path(f"/proc/{first}").exists()
    assert_unprivileged(second)
    assert metric(d, "hedge_netchild_restarts_total") == 1 and metric(d, "hedge_netchild_up") == 1
    assert d.ps("load")["state"] == "running" and d.ps("load")["pid"] == pid
    log = d.errlog.read_text()
    assert f"network child (pid {first}) killed by signal {signal.SIGSYS.value}" in log, log


def mqtt_connect_rc(port, user, password, timeout=2.0):
    """A raw MQTT 3.1.1 CONNECT; the CONNACK's return code, or None when no CONNACK came."""
    import socket
    import struct

    def field(b):
        return struct.pack("!H", len(b)) + b
    body = field(b"MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 30) + field(b"privsep-probe") + \
        field(user.encode()) + field(password.encode())
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(bytes([0x10, len(body)]) + body)
            ack = s.recv(4)
    except OSError:
        return None
    return ack[3] if len(ack) == 4 and ack[0] == 0x20 else None


def deploy_mqtt_workload(d, name):
    """A sleeping process workload with broker credentials: its pid, user and password."""
    spec = {"name": name, "isolation": "process", "command": ["/bin/sleep", "1000"],
            "mqtt": {"publish": [f"{name}/#"], "subscribe": [f"{name}/#"]}}
    r = d.deploy(spec)
    assert r.code == 0, r.err
    pid = d.wait_state(name, "running")["pid"]
    env = dict(kv.split("=", 1) for kv in pathlib.Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in kv)
    return pid, env["HEDGE_MQTT_USERNAME"], env["HEDGE_MQTT_PASSWORD"]


def assert_wrong_password_never_let_in(port, user, meanwhile):
    """Eight clients try user with a wrong password over and over while meanwhile() runs (and 0.3 s more):
    every CONNACK they get must refuse it."""
    answers, stop = [], threading.Event()

    def probe():
        while not stop.is_set():
            answers.append(mqtt_connect_rc(port, user, "wrong", timeout=5))
            time.sleep(0.001)
    threads = [threading.Thread(target=probe) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        meanwhile()
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    judged = [a for a in answers if a is not None]
    assert judged and 0 not in judged, f"a wrong password was let in: {judged.count(0)} of {len(judged)}"


def test_a_restarted_child_judges_no_client_before_hedged_users_are_in(hooked):
    # The restarted child knows no users until hedged sends them: a client it judged before that would pass
    # as anonymous. It serves only after hedged's users and rules (SERVE).
    d = hooked()
    _, user, password = deploy_mqtt_workload(d, "probe")
    assert mqtt_connect_rc(d.port, user, password) == 0
    assert mqtt_connect_rc(d.port, user, "wrong") == 4

    def restart_the_child():
        time.sleep(0.2)
        os.kill(d.proc.pid, signal.SIGUSR2)  # the child calls a forbidden syscall and is restarted
        wait_for(lambda: metric(d, "hedge_netchild_restarts_total") == 1 and metric(d, "hedge_netchild_up") == 1,
                 what="the restarted child")
    assert_wrong_password_never_let_in(d.port, user, restart_the_child)
    assert mqtt_connect_rc(d.port, user, password) == 0


def test_a_restarted_hedged_serves_only_once_its_workloads_users_are_back(hooked):
    # hedged killed with -9: its workload lives on (KillMode=process) and keeps connecting. The new hedged
    # re-adopts it and sends its user again; until then its broker must judge nobody (with no users at all,
    # any name would pass as anonymous).
    d = hooked()
    pid, user, password = deploy_mqtt_workload(d, "adopted")

    def restart_hedged():
        d.kill9()
        d.start()
        wait_for(lambda: mqtt_connect_rc(d.port, user, password) == 0, what="the workload's user")
    assert_wrong_password_never_let_in(d.port, user, restart_hedged)
    assert d.ps("adopted")["pid"] == pid


def test_a_restarted_child_keeps_the_port_a_zero_listener_got(tmp_path, hedge, monkeypatch):
    # broker.listen 127.0.0.1:0: the first child binds some port and workloads are given it; a restarted
    # child (hedged passes it the port) binds the same one, so their HEDGE_MQTT_PORT stays right
    from test_daemon import Daemon
    monkeypatch.setenv("HEDGE_TEST_HOOKS", "1")
    d = BrokerDaemon(tmp_path, hedge, name="z")
    config = json.loads(d.config.read_text())
    config["broker"]["listen"] = ["127.0.0.1:0"]
    d.config.write_text(json.dumps(config))
    try:
        Daemon.start(d)

        def mqtt_port(name):
            spec = {"name": name, "isolation": "process", "command": ["/bin/sleep", "1000"],
                    "mqtt": {"publish": [f"{name}/#"], "subscribe": [f"{name}/#"]}}
            r = d.deploy(spec)
            assert r.code == 0, r.err
            pid = d.wait_state(name, "running")["pid"]
            env = pathlib.Path(f"/proc/{pid}/environ").read_text().split("\0")
            env = dict(kv.split("=", 1) for kv in env if "=" in kv)
            return int(env["HEDGE_MQTT_PORT"]), ["-u", env["HEDGE_MQTT_USERNAME"], "-P", env["HEDGE_MQTT_PASSWORD"]]
        port, _ = mqtt_port("before")
        assert 0 < port < 65536 and port_open(port)
        first = net_child(d.proc.pid)
        os.kill(d.proc.pid, signal.SIGUSR2)  # the child calls a forbidden syscall and is restarted
        wait_for(lambda: metric(d, "hedge_netchild_restarts_total") == 1 and metric(d, "hedge_netchild_up") == 1,
                 what="the restarted child")
        assert net_child(d.proc.pid) != first
        after, creds = mqtt_port("after")
        assert after == port
        # a client with the new workload's credentials connects to it (the restarted child serves it)
        r = subprocess.run(["mosquitto_pub", "-p", str(port), *creds, "-t", "after/z", "-m", "same", "-r", "-q", "1"],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r.stderr
        r = subprocess.run(["mosquitto_sub", "-p", str(port), *creds, "-t", "after/z", "-C", "1", "-W", "5"],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 0 and r.stdout.strip() == "same", r
    finally:
        d.cleanup()


def test_standalone_broker_drops_to_user(tmp_path):
    nobody = pwd.getpwnam("nobody")
    # The store's path must be searchable by the user (pytest's temp root is 0700).
    top = pathlib.Path(tempfile.mkdtemp(prefix="hedge-privsep-", dir="/tmp"))
    top.chmod(0o711)
    port = free_port()
    proc = subprocess.Popen([str(BUILD / "hedge-broker"), "--listen", f"127.0.0.1:{port}", "--state-dir",
                             str(top / "state"), "--user", "nobody"], env=hedge_env(),
                            stderr=open(tmp_path / "broker.stderr", "w"))
    try:
        # the listener is bound as root, then it drops: wait for the filter
        wait_for(lambda: proc.poll() is None and status(proc.pid)["Seccomp"] == "2", what="hedge-broker's drop")
        assert port_open(port)
        assert assert_unprivileged(proc.pid) == (nobody.pw_uid, nobody.pw_gid)
        assert (top / "state").stat().st_uid == nobody.pw_uid
        r = subprocess.run(["mosquitto_pub", "-p", str(port), "-t", "kept", "-m", "yes", "-r", "-q", "1"],
                           capture_output=True, text=True, timeout=15)
        assert r.returncode == 0, r.stderr
        r = subprocess.run(["mosquitto_sub", "-p", str(port), "-t", "kept", "-C", "1", "-W", "5"],
                           capture_output=True, text=True, timeout=15)
        assert r.stdout == "yes\n", (r, (tmp_path / "broker.stderr").read_text())
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
        shutil.rmtree(top)
    assert rc == 0, (tmp_path / "broker.stderr").read_text()
    r = subprocess.run([str(BUILD / "hedge-broker"), "--listen", "127.0.0.1:0", "--user", "no-such-user-here"],
                       capture_output=True, text=True, env=hedge_env(), timeout=10)
    assert r.returncode != 0 and "no-such-user-here: no such user" in r.stderr, r


def test_standalone_uplink_drops_to_user(tmp_path):
    from mqtt_util import Collector, Mosquitto, Uplink, publish_many
    nobody = pwd.getpwnam("nobody")
    top = pathlib.Path(tempfile.mkdtemp(prefix="hedge-privsep-", dir="/tmp"))
    top.chmod(0o711)
    (top / "spool").mkdir()
    local, cloud = Mosquitto(tmp_path, "local").start(), Mosquitto(tmp_path, "cloud").start()
    u = Uplink(tmp_path, "n1", local.port, cloud.port, spool={"path": str(top / "spool" / "s.db")})
    proc = subprocess.Popen([str(BUILD / "hedge-uplink"), "--config", str(u.config_path), "--user", "nobody"],
                            env=hedge_env(), stderr=open(tmp_path / "uplink.stderr", "w"))
    try:
        wait_for(lambda: proc.poll() is None and status(proc.pid)["Seccomp"] == "2", what="hedge-uplink's drop")
        assert assert_unprivileged(proc.pid) == (nobody.pw_uid, nobody.pw_gid)
        assert (top / "spool").stat().st_uid == nobody.pw_uid and (top / "spool" / "s.db").stat().st_uid == nobody.pw_uid
        sub = Collector(cloud.port, "nodes/#")
        # the spool takes messages, commits and drains them as nobody, under the filter
        wait_for(lambda: publish_many(local.port, "sensors/a", [b"x"]) is None and len(sub.messages) >= 1,
                 timeout=20, what="a message through the uplink")
        assert sub.messages[0] == ("nodes/n1/sensors/a", b"x")
        sub.close()
        assert proc.poll() is None, (tmp_path / "uplink.stderr").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
        local.stop()
        cloud.stop()
        shutil.rmtree(top)
    assert rc == 0, (tmp_path / "uplink.stderr").read_text()


def test_sighup_starts_a_fresh_child_and_retained_messages_survive(hooked):
    d = hooked()
    first = net_child(d.proc.pid)
    r = subprocess.run(["mosquitto_pub", "-p", str(d.port), "-t", "state/door", "-m", "open", "-r", "-q", "1"],
                       capture_output=True, text=True, timeout=15)
    assert r.returncode == 0, r.stderr
    os.kill(d.proc.pid, signal.SIGHUP)  # the child exits on RELOAD; hedged starts one that reads the config again
    wait_for(lambda: metric(d, "hedge_netchild_restarts_total") == 1 and metric(d, "hedge_netchild_up") == 1,
             what="a fresh network child")
    second = net_child(d.proc.pid)
    assert second != first
    assert_unprivileged(second)
    assert metric(d, "hedge_netchild_crashes_total") == 0  # asked for: no crash
    r = subprocess.run(["mosquitto_sub", "-p", str(d.port), "-t", "state/door", "-C", "1", "-W", "5"],
                       capture_output=True, text=True, timeout=15)
    assert r.stdout == "open\n", r
    assert "exited to reload" in d.errlog.read_text()
