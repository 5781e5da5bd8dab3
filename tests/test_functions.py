"""Black-box tests of local functions: hedge-functions serving a spec from a real broker.

The broker is Debian's mosquitto on a loopback port; requests and replies go
through a paho MQTT 5 client (response topic, correlation data). Functions
run as real workloads (process and container isolation) through the runtime
library; the autouse leftover check makes sure no cgroup or run dir remains
after hedge-functions stopped.
"""
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from conftest import CGROUP_PARENT
from test_vm import guest_kernel, vm_rootfs  # noqa: F401 (fixtures)
from mqtt_util import BUILD, HedgeBroker, Mosquitto, check_log, hedge_env, need_mqtt_tools, paho, wait_for

# A pinned function in busybox sh: reads a frame (4-byte big-endian length,
# body) from stdin, answers "<count>:<body>" as a frame; "crash" exits 3,
# "garbage" writes a line instead of a frame.
PINNED_SH = r"""
i=0
while true; do
  h=$(dd bs=1 count=4 2>/dev/null | od -An -tu1)
  [ -z "$h" ] && exit 0
  set -- $h
  n=$(( ($1 << 24) + ($2 << 16) + ($3 << 8) + $4 ))
  body=$(dd bs=1 count=$n 2>/dev/null)
  [ "$body" = crash ] && exit 3
  if [ "$body" = garbage ]; then echo "this is not a frame"; continue; fi
  i=$((i + 1))
  out="$i:$body"
  len=${#out}
  printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $((len >> 24 & 255)) $((len >> 16 & 255)) $((len >> 8 & 255)) $((len & 255)))"
  printf '%s' "$out"
done
"""


@pytest.fixture
def broker(request, tmp_path):
    """Debian's mosquitto, or hedge-broker when parametrized so."""
    need_mqtt_tools()
    kind = getattr(request, "param", "mosquitto")
    b = (HedgeBroker if kind == "hedge-broker" else Mosquitto)(tmp_path, "local").start()
    yield b
    b.stop()


class Requester:
    """An MQTT 5 client that sends requests and collects replies (topic, payload, correlation data)."""

    def __init__(self, port, auth=None):
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        self.Properties, self.PacketTypes = Properties, PacketTypes
        self.replies = []
        self.lock = threading.Lock()
        self.client = paho.Client(client_id=f"req-{os.getpid()}-{time.monotonic_ns()}", protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        if auth:
            self.client.username_pw_set(*auth)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([("fn/+/reply", 1), ("replies/#", 1)])
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, client, userdata, msg):
        corr = getattr(msg.properties, "CorrelationData", None) if msg.properties else None
        with self.lock:
            self.replies.append((msg.topic, msg.payload, corr, time.monotonic()))

    def send(self, topic, payload, response_topic=None, correlation=None):
        props = None
        if response_topic or correlation:
            props = self.Properties(self.PacketTypes.PUBLISH)
            if response_topic:
                props.ResponseTopic = response_topic
            if correlation:
                props.CorrelationData = correlation
        self.client.publish(topic, payload, qos=1, properties=props).wait_for_publish(10)

    def wait(self, n, timeout=20):
        wait_for(lambda: len(self.replies) >= n, timeout, f"{n} replies (have {len(self.replies)})")
        with self.lock:
            return list(self.replies)

    def call(self, topic, payload, timeout=20):
        n = len(self.replies)
        self.send(topic, payload)
        return self.wait(n + 1, timeout)[n][1]

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def functions(tmp_path, dirs, broker):
    """functions(spec) starts hedge-functions for spec; all are stopped (SIGTERM) at teardown."""
    started = []

    def start(spec, env=None):
        path = tmp_path / f"{spec['name']}.json"
        path.write_text(json.dumps(spec))
        log = tmp_path / f"{spec['name']}.log"
        env = hedge_env({"HEDGE_STATE_DIR": str(dirs["state"]), "HEDGE_RUN_DIR": str(dirs["run"]),
                         "HEDGE_CGROUP_PARENT": CGROUP_PARENT, **(env or {})})
        proc = subprocess.Popen([str(BUILD / "hedge-functions"), "--spec", str(path), "--broker",
                                 f"127.0.0.1:{broker.port}"], env=env, stdout=open(log, "ab"),
                                stderr=subprocess.STDOUT)
        started.append(proc)
        wait_for(lambda: "subscribed" in log.read_text() or proc.poll() is not None, 10, "hedge-functions")
        assert proc.poll() is None, log.read_text()
        proc.log = log
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, proc.log.read_text()
            check_log(proc.log)


@pytest.fixture
def requester(broker):
    r = Requester(broker.port)
    yield r
    r.close()


def spec_for(name, isolation, command, mode="on-demand", rootfs=None, **function):
    spec = {"name": name, "isolation": isolation, "command": command, "triggers": [{"topic": f"fn/{name}"}],
            "function": {"mode": mode, **function}}
    if rootfs:
        spec["rootfs"] = str(rootfs)
    return spec


def error_of(payload):
    return json.loads(payload)


@pytest.mark.parametrize("broker", ["mosquitto", "hedge-broker"], indirect=True)
def test_on_demand_process(functions, requester):
    functions(spec_for("upper", "process", ["/usr/bin/tr", "a-z", "A-Z"]))
    assert requester.call("fn/upper", b"hello") == b"HELLO"
    assert requester.call("fn/upper", b"again") == b"AGAIN"
    assert requester.replies[0][0] == "fn/upper/reply"


@pytest.mark.parametrize("broker", ["mosquitto", "hedge-broker"], indirect=True)
def test_response_topic_and_correlation_data(functions, requester):
    functions(spec_for("echo", "process", ["/bin/cat"]))
    requester.send("fn/echo", b"ping", response_topic="replies/client-7", correlation=b"\x00req-42")
    topic, payload, corr, _ = requester.wait(1)[0]
    assert (topic, payload, corr) == ("replies/client-7", b"ping", b"\x00req-42")


def test_spec_reply_topic_wins(functions, requester):
    functions(spec_for("fixed", "process", ["/bin/cat"], reply_topic="replies/fixed"))
    requester.send("fn/fixed", b"x", response_topic="replies/other")
    assert requester.wait(1)[0][:2] == ("replies/fixed", b"x")


def test_on_demand_container(functions, requester, busybox_rootfs):
    functions(spec_for("cupper", "container", ["/bin/tr", "a-z", "A-Z"], rootfs=busybox_rootfs))
    assert requester.call("fn/cupper", b"inside") == b"INSIDE"
    # Warm: the second invocation uses the instance prepared after the first.
    assert requester.call("fn/cupper", b"warm") == b"WARM"
    # It really runs in the container: its hostname is not the host's.
    functions(spec_for("chost", "container", ["/bin/sh", "-c", "cat >/dev/null; ls /"], rootfs=busybox_rootfs))
    listing = requester.call("fn/chost", b"").split()
    assert b"bin" in listing and b"home" not in listing


@pytest.mark.parametrize("broker", ["mosquitto", "hedge-broker"], indirect=True)
def test_pinned_process_keeps_state(functions, requester):
    proc = functions(spec_for("count", "process", ["/bin/sh", "-c", PINNED_SH], mode="pinned"))
    assert requester.call("fn/count", b"a") == b"1:a"
    assert requester.call("fn/count", b"b") == b"2:b"
    assert requester.call("fn/count", b"c") == b"3:c"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    check_log(proc.log)
    assert "stopping (3 invocations, 0 errors, 0 timeouts, 0 rejected, 0 restarts, latency p50" in proc.log.read_text()


def test_pinned_container(functions, requester, busybox_rootfs):
    functions(spec_for("ccount", "container", ["/bin/sh", "-c", PINNED_SH], mode="pinned", rootfs=busybox_rootfs))
    assert requester.call("fn/ccount", b"x") == b"1:x"
    assert requester.call("fn/ccount", b"y") == b"2:y"


def test_concurrency_limit(functions, requester, tmp_path):
    slots = tmp_path / "slots"
    slots.mkdir()
    script = f"cat >/dev/null; touch {slots}/$$; n=$(ls {slots} | wc -l); sleep 0.4; rm {slots}/$$; echo $n"
    functions(spec_for("conc", "process", ["/bin/sh", "-c", script], max_concurrency=2))
    for i in range(6):
        requester.send("fn/conc", b"go")
    replies = [int(p) for _, p, _, _ in requester.wait(6, timeout=30)]
    assert max(replies) == 2, replies


def test_queue_overflow_is_an_error_event(functions, requester):
    functions(spec_for("slow", "process", ["/bin/sh", "-c", "cat; sleep 1"], max_concurrency=1, max_queue=1))
    for i in range(4):
        requester.send("fn/slow", b"%d" % i)
    replies = requester.wait(4, timeout=30)
    errors = [error_of(p) for _, p, _, _ in replies if p.startswith(b"{")]
    assert len(errors) == 2 and all(e["error"] == "queue full" and e["function"] == "slow" for e in errors), replies
    assert sorted(p for _, p, _, _ in replies if not p.startswith(b"{")) == [b"0", b"1"]


def test_timeout_kills_the_invocation(functions, requester):
    functions(spec_for("sleepy", "process", ["/bin/sh", "-c", "sleep 30"], timeout="300ms"))
    t0 = time.monotonic()
    e = error_of(requester.call("fn/sleepy", b""))
    assert e["error"] == "timeout" and "300 ms" in e["detail"]
    assert time.monotonic() - t0 < 5


def test_pinned_timeout_restarts_the_instance(functions, requester):
    script = "read line; sleep 30"
    functions(spec_for("stuck", "process", ["/bin/sh", "-c", script], mode="pinned", timeout=0.3))
    e = error_of(requester.call("fn/stuck", b"x"))
    assert e["error"] == "timeout" and "restarted" in e["detail"]


def test_bad_output_on_demand(functions, requester):
    functions(spec_for("fails", "process", ["/bin/sh", "-c", "cat >/dev/null; exit 3"]))
    e = error_of(requester.call("fn/fails", b"x"))
    assert e["error"] == "exit" and "code 3" in e["detail"]
    functions(spec_for("chatty", "process", ["/bin/sh", "-c", "cat >/dev/null; head -c 2000000 /dev/zero"]))
    e = error_of(requester.call("fn/chatty", b"x"))
    assert e["error"] == "bad output", e


def test_bad_output_pinned_then_recovers(functions, requester):
    spec = spec_for("garb", "process", ["/bin/sh", "-c", PINNED_SH], mode="pinned", timeout=2)
    functions(spec)
    assert requester.call("fn/garb", b"a") == b"1:a"
    e = error_of(requester.call("fn/garb", b"garbage"))
    assert e["error"] == "bad output", e
    assert requester.call("fn/garb", b"b") == b"1:b"  # a fresh instance


@pytest.mark.parametrize("policy", ["always", "never"])
def test_pinned_crash_restart_policy(functions, requester, policy):
    spec = spec_for("crashy", "process", ["/bin/sh", "-c", PINNED_SH], mode="pinned")
    spec["restart"] = {"policy": policy}
    functions(spec)
    assert requester.call("fn/crashy", b"a") == b"1:a"
    e = error_of(requester.call("fn/crashy", b"crash"))
    assert e["error"] == "crashed"
    after = requester.call("fn/crashy", b"b")
    if policy == "always":
        assert after == b"1:b"  # restarted: state starts over
    else:
        e = error_of(after)
        assert e["error"] == "not running" and "code 3" in e["detail"] and "never" in e["detail"]


def test_on_demand_vm(functions, requester, guest_kernel, vm_rootfs):
    """A function in a QEMU guest (TCG: each boot takes seconds, so three invocations): stdin to its end,
    and a guest flooding stdout past the output limit is killed although the invoker stopped reading."""
    script = 'x=$(cat); [ "$x" = flood ] && exec cat /dev/zero; printf %s "$x" | tr a-z A-Z'
    spec = spec_for("vmupper", "vm", ["/bin/sh", "-c", script], rootfs=vm_rootfs, timeout=60)
    spec["vm"] = {"accel": "tcg"}
    functions(spec, env={"HEDGE_VM_KERNEL_DIR": str(guest_kernel)})
    reply = requester.call("fn/vmupper", b"guest", timeout=180)
    assert reply == b"GUEST", reply
    e = error_of(requester.call("fn/vmupper", b"flood", timeout=180))  # the warm (prepared) instance
    assert e["error"] == "bad output", e
    assert requester.call("fn/vmupper", b"again", timeout=180) == b"AGAIN"


def test_pinned_vm_keeps_state(functions, requester, guest_kernel, vm_rootfs):
    """A pinned function in one guest: frames both ways, state kept; a clean stop leaves no QEMU behind."""
    spec = spec_for("vmcount", "vm", ["/bin/sh", "-c", PINNED_SH], mode="pinned", rootfs=vm_rootfs, timeout=60)
    spec["vm"] = {"accel": "tcg"}
    proc = functions(spec, env={"HEDGE_VM_KERNEL_DIR": str(guest_kernel)})
    assert requester.call("fn/vmcount", b"a", timeout=180) == b"1:a"
    assert requester.call("fn/vmcount", b"b", timeout=60) == b"2:b"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    check_log(proc.log)


def test_spec_without_function_block(tmp_path, broker):
    path = tmp_path / "plain.json"
    path.write_text(json.dumps({"isolation": "process", "command": ["/bin/true"]}))
    r = subprocess.run([str(BUILD / "hedge-functions"), "--spec", str(path), "--check"], capture_output=True, text=True, env=hedge_env())
    assert r.returncode == 2 and "function: the spec has no function block" in r.stderr
    path.write_text(json.dumps({"isolation": "process", "command": ["/bin/true"], "triggers": [{"topic": "t"}],
                                "function": {"mode": "pinned", "idle_timeout": 3}}))
    r = subprocess.run([str(BUILD / "hedge-functions"), "--spec", str(path), "--check"], capture_output=True, text=True, env=hedge_env())
    assert r.returncode == 125 and "function.idle_timeout: only applies to on-demand functions" in r.stderr


def invoke(broker, *args, input=None):
    return subprocess.run([str(BUILD / "hedge"), "invoke", "--broker", f"127.0.0.1:{broker.port}", *args],
                          capture_output=True, input=input, timeout=60, env=hedge_env())


@pytest.mark.parametrize("broker", ["mosquitto", "hedge-broker"], indirect=True)
def test_hedge_invoke_prints_the_result(functions, broker):
    functions(spec_for("shout", "process", ["/usr/bin/tr", "a-z", "A-Z"]))
    r = invoke(broker, "--topic", "fn/shout", "--payload", "by hand")
    assert (r.returncode, r.stdout) == (0, b"BY HAND"), r
    r = invoke(broker, "--topic", "fn/shout", input=b"from stdin")
    assert (r.returncode, r.stdout) == (0, b"FROM STDIN"), r


def test_hedge_invoke_error_event_and_no_listener(functions, broker):
    functions(spec_for("broken", "process", ["/bin/sh", "-c", "cat >/dev/null; exit 7"]))
    r = invoke(broker, "--topic", "fn/broken", "--payload", "x")
    assert r.returncode == 1 and r.stdout == b"", r
    assert b"broken: exit: exited with code 7" in r.stderr
    r = invoke(broker, "--topic", "fn/nobody", "--payload", "x", "--timeout", "0.5")
    assert r.returncode == 125 and b"no reply" in r.stderr, r
    r = invoke(broker, "--topic", "fn/+", "--payload", "x")
    assert r.returncode == 2 and b"no wildcards" in r.stderr, r



def test_hedge_invoke_is_served_by_hedge_alone(tmp_path, functions, broker):
    """`hedge invoke` is hedge's own verb: a copy of hedge and its twin hedge-full with no other binary beside them
    (none in PATH either) calls the function."""
    functions(spec_for("echo", "process", ["/bin/cat"]))
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy2(BUILD / "hedge", alone / "hedge")
    shutil.copy2(BUILD / "hedge-full", alone / "hedge-full")  # the static hedge hands invoke over to it
    r = subprocess.run([str(alone / "hedge"), "invoke", "--broker", f"127.0.0.1:{broker.port}", "--topic", "fn/echo",
                        "--payload", "alone"], capture_output=True, timeout=60,
                       env=hedge_env({"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}))
    assert (r.returncode, r.stdout) == (0, b"alone"), r


def test_sensor_filter_uplink_scenario(tmp_path, functions, broker, busybox_rootfs):
    """The article's node: readings -> a filter function (container) -> the uplink -> the cloud,
    with the cloud broker stopped for a while: the filtered results wait in the spool, then arrive in order."""
    from mqtt_util import Collector, Uplink, publish_many
    cloud = Mosquitto(tmp_path, "cloud").start()
    uplink = Uplink(tmp_path, "n1", broker.port, cloud.port, extra={
        "up": [{"local": "sensors/filtered", "cloud": "nodes/{node_id}/filtered"}], "down": []})
    try:
        uplink.start()
        spec = spec_for("filter", "container", ["/bin/awk", '{ if ($1 > 20) print "hot " $1; else print "ok " $1 }'],
                        rootfs=busybox_rootfs, reply_topic="sensors/filtered")
        spec["triggers"] = [{"topic": "sensors/raw"}]
        functions(spec)
        sub = Collector(cloud.port, "nodes/n1/#")
        publish_many(broker.port, "sensors/raw", [b"19.5", b"21.0"])
        wait_for(lambda: len(sub.messages) == 2, 20, "the first results at the cloud")
        sub.close()
        cloud.stop()
        publish_many(broker.port, "sensors/raw", [b"22.5", b"18.0", b"25.1"])
        wait_for(lambda: uplink.status().get("depth") == 3, 20, "3 results in the spool")
        sub = uplink.restore_cloud(cloud, "nodes/n1/#")
        wait_for(lambda: uplink.status().get("depth") == 0, 20, "the drain")
        wait_for(lambda: len(sub.messages) >= 3, 10, "the spooled results at the cloud")
        assert sub.messages == [("nodes/n1/filtered", b"hot 22.5\n"), ("nodes/n1/filtered", b"ok 18.0\n"),
                                ("nodes/n1/filtered", b"hot 25.1\n")]
        sub.close()
        uplink.stop()
    finally:
        uplink.kill()
        cloud.stop()
