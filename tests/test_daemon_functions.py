"""Functions deployed with hedged: `hedge deploy` of a spec with a function block runs hedge-functions (the
function host) under a monitor, like any workload (src/daemon/function_host.c).

Every test runs a real hedged whose embedded broker requires a password (an "admin" user observes and sends
requests with a paho MQTT 5 client: response topic, correlation data); the host connects with its own broker
user. Covered: on-demand process and container functions invoked by MQTT and by `hedge invoke NAME`, error
events and hedge's own errors, exact counts in ps / the API / /metrics, a pinned function's state and crash
restart, kill -9 of hedged (the function keeps answering on its socket; the next hedged adopts it), the pinned
instance starting with hedged, an upgrade, stop/start/rm clean-up, that no instance sees the host's
credentials, and that a host killed with SIGKILL leaves nothing behind. The daemon fixture removes every workload and checks no monitor, host or instance dir is left.
"""
import json
import os
import pathlib
import re
import signal
import socket
import struct
import subprocess
import time

import pytest

from conftest import check_sanitizer
from mqtt_util import paho
from test_daemon import alive, wait_for
from test_daemon_creds import ADMIN, broker_daemon  # noqa: F401 (fixture)
from test_functions import PINNED_SH, Requester, error_of


@pytest.fixture
def node(broker_daemon):  # noqa: F811 (the imported fixture)
    """hedged with broker auth on, and an admin requester subscribed to fn/+/reply and replies/#."""
    if paho is None:
        pytest.skip("python3-paho-mqtt is not installed (see deps/functions.txt)")
    d = broker_daemon
    d.requester = Requester(d.port, auth=(ADMIN[1], ADMIN[3]))
    yield d
    d.requester.close()
    # stop every function host, so that its last words (a sanitizer's report too) are in its log before rm
    if d.proc.poll() is None:
        for w in d.ps():
            if "function" in w:
                assert d.cli("stop", w["name"]).code == 0
                check_sanitizer(host_log(d, w["name"]))


def fn_spec(name, command, mode="on-demand", isolation="process", extra=None, **function):
    spec = {"name": name, "isolation": isolation, "command": command, "triggers": [{"topic": f"fn/{name}"}],
            "function": {"mode": mode, **function}}
    spec.update(extra or {})
    return spec


def host_log(d, name):
    path = d.state / "logs" / f"{name}.log"
    return path.read_text() if path.exists() else ""


def deploy_fn(d, spec, subscribed=1):
    """Deploy and wait until the function host subscribed to its triggers (the n-th time in its log)."""
    r = d.deploy(spec)
    assert r.code == 0, r.err
    wait_for(lambda: host_log(d, spec["name"]).count("hedge-functions: subscribed") >= subscribed,
             what=f"{spec['name']}'s host to subscribe")
    return d.ps(spec["name"])


def invoke(d, name, payload=None, **kw):
    args = ["invoke", name] + (["--payload", payload] if payload is not None else [])
    return d.cli(*args, **kw)


def fn_stats(d, name, invocations):
    """The workload's function view once the host reported `invocations` (it writes at most 4 times a second)."""
    return wait_for(lambda: (f := d.ps(name)["function"])["invocations"] == invocations and f,
                    what=f"{name}: {invocations} invocations in ps")


def socket_invoke(path, payload):
    """What `hedge invoke NAME` does, without hedged: one frame to the host's invoke socket."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(20)
    s.connect(path)
    s.sendall(struct.pack(">I", len(payload)) + payload)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    kind, length = data[0:1], struct.unpack(">I", data[1:5])[0]
    assert len(data) == 5 + length
    return kind, data[5:]


def test_on_demand_process_function(node):
    d = node
    w = deploy_fn(d, fn_spec("upper", ["/usr/bin/tr", "a-z", "A-Z"]))
    assert w["state"] == "running" and w["function"]["mode"] == "on-demand"
    assert (w["function"]["invocations"], w["function"]["p50_ms"]) == (0, None)
    assert w["function"]["socket"] == str(d.state / "functions" / "upper" / "v1" / "invoke.sock")
    # MQTT 5 request/response through the authenticated broker
    d.requester.send("fn/upper", b"hello", response_topic="replies/c1", correlation=b"\x00id-1")
    topic, payload, corr, _ = d.requester.wait(1)[0]
    assert (topic, payload, corr) == ("replies/c1", b"HELLO", b"\x00id-1")
    assert d.requester.call("fn/upper", b"plain") == b"PLAIN"
    assert d.requester.replies[1][0] == "fn/upper/reply"
    # by hand: --payload, and stdin
    r = invoke(d, "upper", "abc")
    assert (r.code, r.out, r.err) == (0, "ABC", "")
    r = d.cli("invoke", "upper", input="from stdin")
    assert (r.code, r.out) == (0, "FROM STDIN")
    # exact counts in the API, ps and /metrics
    f = fn_stats(d, "upper", 4)
    assert (f["errors"], f["timeouts"], f["rejected"]) == (0, 0, 0)
    assert f["p50_ms"] > 0 and f["p99_ms"] >= f["p50_ms"]
    ps = d.cli("ps")
    assert ps.code == 0
    row = next(line.split() for line in ps.out.splitlines() if line.startswith("upper ") and "on-demand" in line)
    assert row[:6] == ["upper", "on-demand", "4", "0", "0", "0"], ps.out
    metrics = d.api("GET", "/metrics")[1]
    assert 'hedge_function_invocations_total{name="upper"} 4\n' in metrics
    assert 'hedge_function_errors_total{name="upper"} 0\n' in metrics
    assert 'hedge_function_latency_p99_seconds{name="upper"} ' in metrics
    sample = re.compile(r'^hedge_function_[a-z0-9_]+\{name="upper"\} [0-9]+(\.[0-9]+)?$')
    typed = {line.split()[2] for line in metrics.splitlines() if line.startswith("# TYPE hedge_function_")}
    lines = [line for line in metrics.splitlines() if line.startswith("hedge_function_")]
    assert len(lines) == len(typed) == 7
    for line in lines:
        assert sample.match(line) and line.split("{")[0] in typed, line


def test_error_events_and_invoke_errors(node):
    d = node
    deploy_fn(d, fn_spec("picky", ["/bin/sh", "-c", 'read x; [ "$x" = bad ] && exit 3; [ "$x" = slow ] && sleep 30;'
                                   ' echo "ok $x"'], timeout="400ms"))
    assert invoke(d, "picky", "fine").out == "ok fine\n"
    r = invoke(d, "picky", "bad")
    assert r.code == 1 and r.out == "" and r.err == "hedge invoke: picky: exit: exited with code 3\n", r
    r = invoke(d, "picky", "slow")
    assert r.code == 1 and r.err == "hedge invoke: picky: timeout: killed after 400 ms\n", r
    e = error_of(d.requester.call("fn/picky", b"bad"))
    assert (e["error"], e["function"]) == ("exit", "picky")
    # the host counts an invocation when it starts and its error when it ends, and may report in between
    f = wait_for(lambda: (f := d.ps("picky")["function"])["invocations"] == 4 and f["errors"] >= 3 and f,
                 what="picky: 4 invocations, 3 errors in ps")
    assert (f["errors"], f["timeouts"], f["rejected"]) == (3, 1, 0)
    assert 'hedge_function_timeouts_total{name="picky"} 1\n' in d.api("GET", "/metrics")[1]

    # hedge's own failures: 125 with a clear message
    r = invoke(d, "nosuch", "x")
    assert r.code == 125 and 'workload "nosuch": not found' in r.err, r
    assert d.deploy({"name": "plain", "isolation": "process", "command": ["/bin/sleep", "1000"]}).code == 0
    r = invoke(d, "plain", "x")
    assert r.code == 125 and "plain: is not a function" in r.err, r
    assert "function" not in d.ps("plain")
    assert d.cli("stop", "picky").code == 0
    r = invoke(d, "picky", "x")
    assert r.code == 125 and "picky: function is not running (state stopped)" in r.err, r
    r = d.cli("invoke", "picky", "--topic", "fn/picky")
    assert r.code == 2 and "not both" in r.err, r


def test_instances_never_see_the_host_credentials(node):
    d = node
    show = ["/bin/sh", "-c", "cat >/dev/null; env | grep ^HEDGE_MQTT_USERNAME= || echo none"]
    deploy_fn(d, fn_spec("bare", show))
    assert invoke(d, "bare", "").out == "none\n"
    # a function that asks for broker access itself gets the workload's user, not the host's
    deploy_fn(d, fn_spec("talker", show, extra={"mqtt": {"publish": ["out/talker"]}}))
    assert invoke(d, "talker", "").out == "HEDGE_MQTT_USERNAME=workload:talker\n"
    host_pw = (d.state / "mqtt-credentials" / "talker@host").read_text()
    for path in (d.state / "functions").rglob("*"):
        if path.is_file():
            assert host_pw.encode() not in path.read_bytes(), f"host password in {path}"


def test_pinned_function_state_crash_and_restart(node, tmp_path):
    d = node
    marker = tmp_path / "starts"
    spec = fn_spec("count", ["/bin/sh", "-c", f"echo up >> {marker}\n" + PINNED_SH], mode="pinned",
                   extra={"restart": {"policy": "always"}})
    deploy_fn(d, spec)
    # started with the deployment, before any invocation
    wait_for(lambda: marker.exists() and marker.read_text() == "up\n", what="the pinned instance to start")
    assert invoke(d, "count", "a").out == "1:a"
    assert d.requester.call("fn/count", b"b") == b"2:b"
    r = invoke(d, "count", "crash")
    assert r.code == 1 and "count: crashed:" in r.err, r
    assert invoke(d, "count", "c").out == "1:c"  # restarted per its policy: state starts over
    assert marker.read_text() == "up\nup\n"
    f = fn_stats(d, "count", 4)
    assert (f["errors"], f["restarts"]) == (1, 1)
    assert d.ps("count")["restarts"] == 0  # the host itself never restarted


def test_container_function(node, busybox_rootfs, busybox_image_tar):
    d = node
    deploy_fn(d, fn_spec("cupper", ["/bin/tr", "a-z", "A-Z"], isolation="container",
                         extra={"rootfs": str(busybox_rootfs)}))
    d.requester.send("fn/cupper", b"inside", response_topic="replies/cu", correlation=b"c-1")
    assert d.requester.wait(1)[0][:3] == ("replies/cu", b"INSIDE", b"c-1")
    assert invoke(d, "cupper", "warm").out == "WARM"
    assert fn_stats(d, "cupper", 2)["errors"] == 0
    # from an image in hedged's store: the host looks images up in hedged's state dir
    r = d.cli("image", "import", busybox_image_tar, "--name", "busybox:fn", env={"HEDGE_STATE_DIR": str(d.state)})
    assert r.code == 0, r.err
    deploy_fn(d, fn_spec("cimg", ["/bin/sh", "-c", "echo image $(cat)"], isolation="container",
                         extra={"image": "busybox:fn"}))
    assert invoke(d, "cimg", "ok").out == "image ok\n"


def test_kill9_hedged_function_keeps_answering_and_is_adopted(node, tmp_path):
    d = node
    marker = tmp_path / "starts"
    spec = fn_spec("keeper", ["/bin/sh", "-c", f"echo up >> {marker}\n" + PINNED_SH], mode="pinned",
                   extra={"restart": {"policy": "always"}})
    w = deploy_fn(d, spec)
    assert d.requester.call("fn/keeper", b"a") == b"1:a"
    d.kill9()
    assert alive(w["pid"]) and alive(w["monitor_pid"])
    assert socket_invoke(w["function"]["socket"], b"b") == (b"R", b"2:b")  # hedged (and its broker) are gone
    d.start()
    again = d.wait_state("keeper", "running")
    assert (again["pid"], again["monitor_pid"]) == (w["pid"], w["monitor_pid"])
    # the host reconnects to the new broker with its restored credentials
    wait_for(lambda: host_log(d, "keeper").count("hedge-functions: subscribed") >= 2, what="host to resubscribe")
    d.requester.close()  # its broker died with hedged
    d.requester = Requester(d.port, auth=(ADMIN[1], ADMIN[3]))
    assert d.requester.call("fn/keeper", b"c") == b"3:c"
    assert invoke(d, "keeper", "d").out == "4:d"
    assert fn_stats(d, "keeper", 4)["errors"] == 0
    assert "keeper" in d.cli("ps").out

    # A host that ended while hedged was down is started again by the next hedged, pinned instance and all.
    d.kill9()
    os.kill(w["monitor_pid"], signal.SIGTERM)
    wait_for(lambda: not alive(w["pid"]) and not alive(w["monitor_pid"]), what="the host to stop")
    assert marker.read_text() == "up\n"
    d.start()
    fresh = d.wait_state("keeper", "running")
    assert fresh["pid"] != w["pid"]
    wait_for(lambda: marker.read_text() == "up\nup\n", what="the pinned instance to start with hedged")
    assert invoke(d, "keeper", "e").out == "1:e"


def test_upgrade_stop_start_and_rm(node):
    d = node
    v1 = fn_spec("ver", ["/bin/sh", "-c", 'echo "v1 $(cat)"'])
    deploy_fn(d, v1)
    assert invoke(d, "ver", "x").out == "v1 x\n"
    # While the new version waits to be healthy both versions run: each request is answered once
    # (the hosts share one subscription group).
    v2 = fn_spec("ver", ["/bin/sh", "-c", 'echo "v2 $(cat)"'])
    (d.tmp / "ver.json").write_text(json.dumps(v2))
    upgrade = subprocess.Popen([d.hedge.binary, "deploy", "--health-wait", "3", str(d.tmp / "ver.json")],
                               env={**d.hedge.env(), "HEDGE_SOCKET": str(d.sock)}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    wait_for(lambda: host_log(d, "ver").count("hedge-functions: subscribed") >= 2, what="version 2's host")
    for i in range(6):
        d.requester.send("fn/ver", b"%d" % i)
    replies = d.requester.wait(6)
    out, err = upgrade.communicate(timeout=30)
    assert upgrade.returncode == 0, err
    time.sleep(0.3)
    assert len(d.requester.replies) == 6, d.requester.replies
    assert sorted(p.split()[1] for _, p, _, _ in replies) == [b"%d" % i for i in range(6)]
    assert {p.split()[0] for _, p, _, _ in replies} == {b"v1", b"v2"}  # round robin: both answered

    w = d.wait_state("ver", "running")
    assert w["version"] == 2 and w["function"]["socket"].endswith("/ver/v2/invoke.sock")
    assert invoke(d, "ver", "y").out == "v2 y\n"
    wait_for(lambda: host_log(d, "ver").count("hedge-functions: stopping") >= 1, what="version 1's host to stop")
    assert d.requester.call("fn/ver", b"z") == b"v2 z\n"
    assert d.cli("stop", "ver").code == 0
    assert d.ps("ver")["function"]["socket"] is None
    assert not os.path.exists(w["function"]["socket"])
    assert d.cli("start", "ver").code == 0
    assert invoke(d, "ver", "again").out == "v2 again\n"  # waits for the restarted host's socket
    assert d.cli("rm", "ver").code == 0
    assert not (d.state / "functions" / "ver").exists()
    assert not (d.state / "mqtt-credentials" / "ver@host").exists()
    assert json.loads(d.cli("ps", "--json").out) == []


def function_instance_cgroups(name, version=1):
    """{hierarchy dir: [instance group dirs]} under the function host's own cgroup parent, in every hierarchy."""
    from conftest import CGROUP_PARENT
    base = pathlib.Path("/sys/fs/cgroup")
    found = {}
    for parent in [base / CGROUP_PARENT] + list(base.glob("*/" + CGROUP_PARENT)):
        host_parent = parent / f"fn-{name}-v{version}"
        if host_parent.is_dir():
            found[str(host_parent)] = sorted(p for p in host_parent.iterdir() if p.is_dir())
    return found


def test_sigkill_of_the_host_leaves_nothing_and_the_pinned_function_returns(node, tmp_path, dirs):
    """Issue 18: a function host killed with SIGKILL leaves no instance cgroup, socket or dir behind; the
    monitor restarts it, the new host sweeps what the old one left and the pinned function answers again."""
    d = node
    marker = tmp_path / "starts"
    spec = fn_spec("phoenix", ["/bin/sh", "-c", f"echo up >> {marker}\n" + PINNED_SH], mode="pinned",
                   extra={"restart": {"policy": "always"}})
    w = deploy_fn(d, spec)
    wait_for(lambda: marker.exists() and marker.read_text() == "up\n", what="the pinned instance to start")
    assert invoke(d, "phoenix", "a").out == "1:a"
    groups = function_instance_cgroups("phoenix")
    assert groups and all(len(g) == 1 for g in groups.values()), groups  # one instance, in every hierarchy
    old_groups = {g[0] for g in groups.values()}
    old_pids = {int(p) for g in old_groups for p in (g / "cgroup.procs").read_text().split()}
    assert old_pids

    os.kill(w["pid"], signal.SIGKILL)
    wait_for(lambda: marker.read_text() == "up\nup\n", what="the pinned instance of the restarted host")
    wait_for(lambda: host_log(d, "phoenix").count("hedge-functions: subscribed") >= 2, what="the new host")
    assert invoke(d, "phoenix", "b").out == "1:b"  # a new instance: its state starts over
    assert d.requester.call("fn/phoenix", b"c") == b"2:c"
    assert d.ps("phoenix")["pid"] != w["pid"]
    # the old instance and its cgroup in every hierarchy are gone; the new one has its own
    wait_for(lambda: not any(alive(p) for p in old_pids), what="the old pinned instance to end")
    groups = function_instance_cgroups("phoenix")
    assert all(len(g) == 1 for g in groups.values()), groups
    assert not any(g.exists() for g in old_groups), sorted(str(g) for g in old_groups if g.exists())

    # `hedge rm` right after another SIGKILL: nothing of the host remains
    os.kill(d.ps("phoenix")["pid"], signal.SIGKILL)
    assert d.cli("rm", "phoenix").code == 0
    assert function_instance_cgroups("phoenix") == {}
    assert not (d.state / "functions" / "phoenix").exists()  # spec, invoke.sock, stats
    assert not (dirs["run"] / "functions" / "phoenix").exists()  # the instances' run dirs
    assert marker.read_text() in ("up\nup\n", "up\nup\nup\n")
