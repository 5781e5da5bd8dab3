"""Per-workload MQTT credentials: hedged registers "workload:<name>" in its embedded broker with
exactly the spec's mqtt.publish (write) and mqtt.subscribe/triggers (read) filters, hands the
credentials over in HEDGE_MQTT_* environment variables, removes the user at stop/rm and
re-registers it (same password, kept 0600 in the state dir) when a restarted hedged adopts the
workload. Real mosquitto clients; an "admin" user from a password file (no ACL file, so it is
unrestricted) observes the topics.
"""
import os
import shutil
import stat
import subprocess

import pytest

from test_daemon import wait_for
from test_daemon_broker import BrokerDaemon

pytestmark = pytest.mark.skipif(not shutil.which("mosquitto_pub") or not shutil.which("mosquitto_sub"),
                                reason="mosquitto-clients is not installed (deps/broker.txt)")

ADMIN = ["-u", "admin", "-P", "adminpw"]
ENV_KEYS = ("HEDGE_MQTT_HOST", "HEDGE_MQTT_PORT", "HEDGE_MQTT_USERNAME", "HEDGE_MQTT_PASSWORD")


def pub(port, topic, message, *auth):
    return subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-m", message,
                           "-q", "1", *auth], capture_output=True, text=True, timeout=15)


def watch(port, topic, *auth, wait=4):
    """A subscriber running in the background: read its output with .communicate()."""
    return subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-v", "-q", "1",
                             "-W", str(wait), *auth], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def subscribed(d, n):
    return lambda: f"hedge_broker_subscriptions {n}\n" in d.api("GET", "/metrics")[1]


def read_env(path):
    if not path.exists():
        return None
    env = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return env if "DONE" in env else None


@pytest.fixture
def broker_daemon(tmp_path, hedge):
    pw = tmp_path / "passwd"
    assert hedge("broker", "passwd", pw, "admin", input="adminpw\n").code == 0
    d = BrokerDaemon(tmp_path, hedge, name="c", broker={"password_file": str(pw)})
    d.start()
    yield d
    d.cleanup()
    assert not (d.state / "mqtt-credentials").exists() or not list((d.state / "mqtt-credentials").iterdir())


def env_workload(tmp_path, name, **extra):
    """A process workload that writes its HEDGE_MQTT_* environment to a file, publishes once, then sleeps."""
    out = tmp_path / f"{name}.env"
    script = (f"env | grep ^HEDGE_MQTT_ > {out}.tmp; "
              "if [ -n \"$HEDGE_MQTT_PASSWORD\" ]; then mosquitto_pub -h \"$HEDGE_MQTT_HOST\" -p \"$HEDGE_MQTT_PORT\" "
              "-u \"$HEDGE_MQTT_USERNAME\" -P \"$HEDGE_MQTT_PASSWORD\" -q 1 -t sensors/a/boot -m up; fi; "
              f"echo DONE=1 >> {out}.tmp; mv {out}.tmp {out}; exec sleep 1000")
    return {"name": name, "isolation": "process", "command": ["/bin/sh", "-c", script], **extra}, out


def test_workload_gets_credentials_for_its_topics_only(broker_daemon, tmp_path):
    d = broker_daemon
    boot = watch(d.port, "sensors/#", *ADMIN, wait=8)
    wait_for(subscribed(d, 1), what="admin subscription")
    spec, out = env_workload(tmp_path, "sensor-a", mqtt={"publish": ["sensors/a/#"], "subscribe": ["cmd/a"]})
    r = d.deploy(spec)
    assert r.code == 0, r.err
    env = wait_for(lambda: read_env(out), what="workload env")
    assert env["HEDGE_MQTT_HOST"] == "127.0.0.1"
    assert env["HEDGE_MQTT_PORT"] == str(d.port)
    assert env["HEDGE_MQTT_USERNAME"] == "workload:sensor-a"
    password = env["HEDGE_MQTT_PASSWORD"]
    assert len(password) == 48 and int(password, 16) >= 0
    # the workload itself published with them
    got, _ = boot.communicate(timeout=20)
    assert "sensors/a/boot up\n" in got

    creds = ["-u", "workload:sensor-a", "-P", password]
    # kept 0600 in the state dir, never in the store or the logs
    kept = d.state / "mqtt-credentials" / "sensor-a"
    assert kept.read_text() == password
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600
    for root, _, files in os.walk(d.state):
        for f in files:
            p = os.path.join(root, f)
            if p == str(kept) or "/instances/" in p:
                continue
            assert password.encode() not in open(p, "rb").read(), f"password leaked into {p}"
    assert password not in d.errlog.read_text()
    status, info = d.api("GET", "/v1/workloads/sensor-a")
    assert status == 200 and password not in str(info)

    # publish: allowed under sensors/a/#, refused elsewhere (the message does not arrive)
    seen = watch(d.port, "sensors/#", *ADMIN)
    wait_for(subscribed(d, 1), what="admin subscription")
    assert pub(d.port, "sensors/b/x", "forbidden", *creds).returncode in (0, 5), "client error"
    assert pub(d.port, "sensors/a/x", "allowed", *creds).returncode == 0
    got, _ = seen.communicate(timeout=20)
    assert got == "sensors/a/x allowed\n"

    # subscribe: cmd/a allowed, other topics refused
    allowed = watch(d.port, "cmd/a", *creds)
    denied = watch(d.port, "sensors/a/x", *creds)
    wait_for(subscribed(d, 1), what="the allowed subscription only")
    assert pub(d.port, "cmd/a", "go", *ADMIN).returncode == 0
    assert pub(d.port, "sensors/a/x", "secret", *ADMIN).returncode == 0
    assert allowed.communicate(timeout=20)[0] == "cmd/a go\n"
    assert denied.communicate(timeout=20)[0] == ""

    # a wrong password is refused
    assert pub(d.port, "sensors/a/x", "x", "-u", "workload:sensor-a", "-P", "0" * 48).returncode != 0

    # after rm the credentials are refused and the kept password is gone
    assert d.cli("rm", "sensor-a").code == 0
    refused = pub(d.port, "sensors/a/x", "late", *creds)
    assert refused.returncode != 0
    assert "bad user name or password" in refused.stderr.lower(), refused.stderr
    assert not kept.exists()


def test_workload_without_mqtt_gets_no_credentials(broker_daemon, tmp_path):
    d = broker_daemon
    spec, out = env_workload(tmp_path, "plain")
    assert d.deploy(spec).code == 0
    env = wait_for(lambda: read_env(out), what="workload env")
    assert [k for k in env if k.startswith("HEDGE_MQTT")] == []
    assert not (d.state / "mqtt-credentials" / "plain").exists()


def test_triggers_count_as_subscribe_and_stop_revokes(broker_daemon, tmp_path):
    d = broker_daemon
    spec, out = env_workload(tmp_path, "trig", triggers=[{"topic": "jobs/+"}])
    assert d.deploy(spec).code == 0
    env = wait_for(lambda: read_env(out), what="workload env")
    creds = ["-u", env["HEDGE_MQTT_USERNAME"], "-P", env["HEDGE_MQTT_PASSWORD"]]
    allowed = watch(d.port, "jobs/+", *creds)
    wait_for(subscribed(d, 1), what="trigger subscription")
    assert pub(d.port, "jobs/1", "work", *ADMIN).returncode == 0
    assert allowed.communicate(timeout=20)[0] == "jobs/1 work\n"
    # no publish rights: sensors/a/boot from the workload never arrived, a publish is dropped
    seen = watch(d.port, "jobs/#", *ADMIN)
    wait_for(subscribed(d, 1), what="admin subscription")
    pub(d.port, "jobs/2", "self", *creds)
    assert seen.communicate(timeout=20)[0] == ""
    # stop removes the user at once
    assert d.cli("stop", "trig").code == 0
    assert pub(d.port, "jobs/3", "x", *creds).returncode != 0
    # start registers it again with the same password
    assert d.cli("start", "trig").code == 0
    d.wait_state("trig", "running")
    wait_for(lambda: pub(d.port, "x", "y", *creds).returncode == 0 or None, what="credentials back")


def test_credentials_survive_a_kill9_of_hedged(broker_daemon, tmp_path):
    d = broker_daemon
    spec, out = env_workload(tmp_path, "keeper", mqtt={"publish": ["sensors/a/#"]})
    assert d.deploy(spec).code == 0
    env = wait_for(lambda: read_env(out), what="workload env")
    creds = ["-u", env["HEDGE_MQTT_USERNAME"], "-P", env["HEDGE_MQTT_PASSWORD"]]
    pid = d.ps("keeper")["pid"]
    d.kill9()
    d.start()
    wait_for(lambda: d.ps("keeper") and d.ps("keeper")["state"] == "running", what="adopted")
    assert d.ps("keeper")["pid"] == pid, "the workload was restarted, not adopted"
    seen = watch(d.port, "sensors/#", *ADMIN)
    wait_for(subscribed(d, 1), what="admin subscription")
    assert pub(d.port, "sensors/b/x", "no", *creds).returncode in (0, 5)
    r = pub(d.port, "sensors/a/after", "restart", *creds)
    assert r.returncode == 0, r.stderr
    assert seen.communicate(timeout=20)[0] == "sensors/a/after restart\n"


def test_upgrade_changes_the_topics_and_keeps_the_password(broker_daemon, tmp_path):
    d = broker_daemon
    spec, out = env_workload(tmp_path, "up", mqtt={"publish": ["sensors/a/#"]})
    assert d.deploy(spec).code == 0
    env = wait_for(lambda: read_env(out), what="workload env")
    creds = ["-u", env["HEDGE_MQTT_USERNAME"], "-P", env["HEDGE_MQTT_PASSWORD"]]
    out.unlink()
    spec["mqtt"] = {"publish": ["sensors/c/#"]}
    r = d.deploy(spec)
    assert r.code == 0, r.err
    assert d.ps("up")["version"] == 2
    assert wait_for(lambda: read_env(out), what="new version env")["HEDGE_MQTT_PASSWORD"] == env["HEDGE_MQTT_PASSWORD"]
    seen = watch(d.port, "sensors/#", *ADMIN)
    wait_for(subscribed(d, 1), what="admin subscription")
    pub(d.port, "sensors/a/old", "no", *creds)
    assert pub(d.port, "sensors/c/new", "yes", *creds).returncode == 0
    assert seen.communicate(timeout=20)[0] == "sensors/c/new yes\n"
