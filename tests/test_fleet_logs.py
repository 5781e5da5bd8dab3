"""Log forwarding to the fleet (docs/fleet.md, "Log forwarding"): a workload with `logs.forward` has its log
lines batched to hedge/NODE/logs/NAME through the uplink's durable spool, in its least important class.

Real parts as in test_fleet.py: Debian's mosquitto as the cloud broker, a real hedged node with its uplink
to it, paho subscribers on the cloud side.
"""
import json
import os
import signal
import time

import pytest

from conftest import check_sanitizer
from mqtt_util import Collector, dedup_in_order, publish_many, restore_cloud
from test_daemon import SLEEP, Daemon, spec, wait_for
from test_fleet import FleetNode, cloud, follow_logs, operator, stop_nodes  # noqa: F401 (fixtures)
from test_privsep import net_child


@pytest.fixture
def node(tmp_path, hedge, cloud):
    """make(name, config={...}, spool={...}): a fleet node with extra hedged config, started."""
    started = []

    def make(name="n1", config=None, spool=None):
        n = FleetNode(tmp_path, hedge, cloud.port, name)
        c = json.loads(n.config.read_text())
        c.update(config or {})
        if spool:
            c["uplink"]["spool"] = spool
        n.config.write_text(json.dumps(c))
        started.append(n)
        return n.start()
    yield make
    stop_nodes(started)


def batches(collector, topic=None):
    """The batches received (QoS 1 may repeat one: each counted once), in order of arrival."""
    with collector.lock:
        got = [(t, p) for t, p in collector.messages if topic is None or t == topic]
    return [json.loads(p) for _, p in dedup_in_order(got)]


def lines_of(collector, topic):
    return [line for b in batches(collector, topic) for line in b["lines"]]


def printer(lines, then="exec /bin/sleep 1000"):
    """A shell command that prints lines (one argument each) and then sleeps."""
    return ["/bin/sh", "-c", 'for l in "$@"; do echo "$l"; done; ' + then, "sh", *lines]


def test_lines_go_up_in_order_in_batches_and_only_for_workloads_that_forward(node, cloud):
    n = node()
    n.wait_connected()
    sub = Collector(cloud.port, "hedge/n1/logs/#")
    first = [f"line {i:03d}" for i in range(1, 401)]
    # 400 lines at once (within the default 600 a minute), then after a pause two more: another batch
    cmd = printer(first, then="sleep 2; echo 'after the pause'; echo 'ünïcödé ok'; exec /bin/sleep 1000")
    assert n.deploy(spec("talk", cmd, logs={"forward": True})).code == 0
    assert n.deploy(spec("quiet", printer(["not forwarded"]))).code == 0
    want = first + ["after the pause", "ünïcödé ok"]
    wait_for(lambda: len(lines_of(sub, "hedge/n1/logs/talk")) >= len(want), timeout=30, what="the talk lines")
    assert lines_of(sub, "hedge/n1/logs/talk") == want
    got = batches(sub, "hedge/n1/logs/talk")
    assert len(got) >= 2, got  # the pause makes a second batch at least
    now = time.time()
    for b in got:
        assert set(b) == {"deployment", "lines", "dropped", "ts"}, b
        assert b["deployment"] == "talk" and b["dropped"] == 0 and b["lines"]
        assert now - 60 < b["ts"] <= now + 1, b
    assert [b["ts"] for b in got] == sorted(b["ts"] for b in got)
    time.sleep(2)
    assert {t for t, _ in sub.messages} == {"hedge/n1/logs/talk"}, "quiet has no logs.forward: nothing of it"
    # hedge logs still shows everything locally
    assert "not forwarded" in n.cli("logs", "quiet").out
    sub.close()


def test_long_lines_are_cut_bytes_that_are_not_utf8_replaced_and_an_unfinished_line_goes_out(node, cloud):
    n = node()
    n.wait_connected()
    sub = Collector(cloud.port, "hedge/n1/logs/#")
    cmd = ["/bin/sh", "-c", r"printf 'bad \377\376 bytes\n'; head -c 10000 /dev/zero | tr '\0' L; echo; "
           r"printf 'no newline yet'; exec /bin/sleep 1000"]
    assert n.deploy(spec("odd", cmd, logs={"forward": True})).code == 0
    wait_for(lambda: "no newline yet" in lines_of(sub, "hedge/n1/logs/odd"), timeout=20, what="the unfinished line")
    got = lines_of(sub, "hedge/n1/logs/odd")
    assert got == ["bad \ufffd\ufffd bytes", "L" * 4096, "L" * 4096, "L" * 1808, "no newline yet"], \
        [line[:40] for line in got]
    sub.close()


def test_the_rate_and_byte_caps_drop_lines_and_the_batches_say_how_many(node, cloud):
    n = node()
    n.wait_connected()
    sub = Collector(cloud.port, "hedge/n1/logs/#")
    twenty = [f"capped {i:02d}" for i in range(1, 21)]
    assert n.deploy(spec("lines", printer(twenty), logs={"forward": {"lines_per_minute": 5}})).code == 0
    wide = [f"{i:02d} " + "x" * 197 for i in range(1, 21)]  # 200 bytes each: 1024 bytes a minute let 5 through
    assert n.deploy(spec("bytes", printer(wide), logs={"forward": {"bytes_per_minute": 1024}})).code == 0

    def settled(topic, dropped):
        return sum(b["dropped"] for b in batches(sub, topic)) == dropped
    # drops with no line to go with them go out alone, at most every 10 s
    wait_for(lambda: settled("hedge/n1/logs/lines", 15), timeout=30, what="15 lines reported dropped")
    assert lines_of(sub, "hedge/n1/logs/lines") == twenty[:5]
    wait_for(lambda: settled("hedge/n1/logs/bytes", 15), timeout=30, what="15 wide lines reported dropped")
    assert lines_of(sub, "hedge/n1/logs/bytes") == wide[:5]
    sub.close()


def test_a_flood_is_capped_at_the_default_600_lines_a_minute(node, cloud):
    """80,000 lines in bursts over about 8 s: 600 go up in the minute, every other line is counted in
    "dropped" (in the first batch, then in batches of drops alone every 10 s), and hedged stays responsive."""
    n = node()
    n.wait_connected()
    sub = Collector(cloud.port, "hedge/n1/logs/#")
    cmd = ["/bin/sh", "-c", "i=0; while [ $i -lt 40 ]; do yes 'flood line' | head -n 2000; sleep 0.2; "
           "i=$((i+1)); done; exec /bin/sleep 1000"]
    assert n.deploy(spec("flood", cmd, logs={"forward": True})).code == 0
    wait_for(lambda: sum(b["dropped"] for b in batches(sub, "hedge/n1/logs/flood")) == 80000 - 600, timeout=40,
             what="the drops reported")
    assert n.ps("flood")["state"] == "running"
    got = batches(sub, "hedge/n1/logs/flood")
    assert [line for b in got for line in b["lines"]] == ["flood line"] * 600
    assert len(got) <= 5, [(len(b["lines"]), b["dropped"]) for b in got]  # drops alone: at most every 10 s
    sub.close()


def test_a_rotated_log_keeps_its_lines_flowing(node, cloud):
    n = node(config={"log_max_size": 4096})
    n.wait_connected()
    sub = Collector(cloud.port, "hedge/n1/logs/#")
    # 150 lines of 60 bytes at about 30 a second: the 4 KiB log is renamed to .1 twice meanwhile
    cmd = ["/bin/sh", "-c", 'i=0; while [ $i -lt 150 ]; do i=$((i+1)); printf "rotating line %04d %s\\n" $i '
           '0123456789012345678901234567890123456789; sleep 0.03; done; exec /bin/sleep 1000']
    assert n.deploy(spec("rot", cmd, logs={"forward": True})).code == 0
    want = [f"rotating line {i:04d} 0123456789012345678901234567890123456789" for i in range(1, 151)]
    wait_for(lambda: len(lines_of(sub, "hedge/n1/logs/rot")) >= 150, timeout=40, what="150 lines")
    assert lines_of(sub, "hedge/n1/logs/rot") == want
    logs = n.state / "logs"
    assert (logs / "rot.log.1").exists() and (logs / "rot.log").stat().st_size < 4096 + 61
    sub.close()


def test_a_truncated_log_is_read_again_from_its_start(node, cloud):
    n = node()
    n.wait_connected()
    sub = Collector(cloud.port, "hedge/n1/logs/#")
    cmd = ["/bin/sh", "-c", 'i=0; while true; do i=$((i+1)); echo "truncated-log line $i"; sleep 0.1; done']
    assert n.deploy(spec("trunc", cmd, logs={"forward": True})).code == 0

    def numbers():
        return [int(line.split()[2]) for line in lines_of(sub, "hedge/n1/logs/trunc")]
    wait_for(lambda: len(numbers()) >= 30, timeout=15, what="30 lines")
    log = n.state / "logs" / "trunc.log"
    with open(log, "r+") as f:  # as logrotate's copytruncate does; the monitor appends (O_APPEND) at 0 then
        f.truncate(0)
    cut = max(numbers())
    wait_for(lambda: len([x for x in numbers() if x > cut]) >= 20, timeout=15, what="lines after the truncation")
    got = numbers()
    assert got == sorted(set(got)), got
    # lines written between hedged's last look and the truncation are gone (at most about a second's 10);
    # the next ones are read from the start of the shrunk file, not from where the old one had got to
    assert max(b - a for a, b in zip(got, got[1:])) <= 15, got
    sub.close()


def test_lines_written_while_the_cloud_is_away_arrive_after_it_returns(node, cloud, operator):
    n = node()
    n.wait_connected()
    operator.close()
    cloud.stop()
    wait_for(lambda: n.status()["connected"] is False, timeout=15, what="the uplink to notice the cut")
    lines = [f"offline {i}" for i in range(1, 31)]
    assert n.deploy(spec("off", printer(lines), logs={"forward": True})).code == 0
    wait_for(lambda: n.status()["depth"] >= 1, timeout=15, what="a log batch in the spool")
    later = restore_cloud(n.proc, cloud, "hedge/n1/logs/#")
    wait_for(lambda: len(lines_of(later, "hedge/n1/logs/off")) >= 30, timeout=30, what="the outage's lines")
    assert lines_of(later, "hedge/n1/logs/off") == lines
    later.close()


def test_after_hedged_restarts_forwarding_goes_on_from_the_end_of_the_log(node, cloud):
    """kill -9 hedged while a forwarding workload runs: the restarted hedged adopts it and follows its log
    from where the log ends then; no line is sent twice (the lines of the restart's gap are not sent)."""
    n = node()
    n.wait_connected()
    sub = Collector(cloud.port, "hedge/n1/logs/#")
    cmd = ["/bin/sh", "-c", 'i=0; while true; do i=$((i+1)); echo "beat $i"; sleep 0.2; done']
    assert n.deploy(spec("beat", cmd, logs={"forward": True})).code == 0

    def numbers():
        return [int(line.split()[1]) for line in lines_of(sub, "hedge/n1/logs/beat")]
    wait_for(lambda: len(numbers()) >= 5, timeout=15, what="the first beats")
    n.kill9()
    time.sleep(1)
    n.start()
    n.wait_connected()
    before = max(numbers())
    wait_for(lambda: len([x for x in numbers() if x > before]) >= 10, timeout=30, what="beats after the restart")
    got = numbers()
    assert got == sorted(set(got)), got
    assert got[0] == 1, "a deployment made while hedged runs is followed from the start of its log"
    sub.close()


def test_forwarding_goes_on_after_the_network_child_restarts(node, cloud):
    """The network child is killed twice while a workload writes: hedged holds what it reads meanwhile
    (a bounded number of batches) and sends it to the new child; the lines keep their order."""
    n = node()
    n.wait_connected()
    sub = Collector(cloud.port, "hedge/n1/logs/#")
    cmd = ["/bin/sh", "-c", 'i=0; while [ $i -lt 40 ]; do i=$((i+1)); echo "tick $i"; sleep 0.1; done; '
           'exec /bin/sleep 1000']
    assert n.deploy(spec("ticker", cmd, logs={"forward": True})).code == 0
    for _ in range(2):
        time.sleep(1)
        child = net_child(n.proc.pid)
        os.kill(child, signal.SIGKILL)
        wait_for(lambda: net_child(n.proc.pid) != child, timeout=15, what="a new network child")
    wait_for(lambda: "tick 40" in lines_of(sub, "hedge/n1/logs/ticker"), timeout=30, what="the last line")
    numbers = [int(line.split()[1]) for line in lines_of(sub, "hedge/n1/logs/ticker")]
    # a batch the killed child had read but not yet spooled is lost with it; nothing else is
    assert numbers == sorted(set(numbers)) and len(numbers) >= 30, numbers
    sub.close()


def test_a_spool_full_of_logs_gives_way_to_events_and_telemetry(node, cloud, operator, tmp_path):
    """A small spool, the cloud away, a noisy workload forwarding its log: the log batches (class 9) make
    room for events (class 1) and telemetry (class 5), never the reverse; after the outage every event and
    reading arrives, before the logs, and the logs that arrive are the newest."""
    n = node(spool={"max_bytes": 6000})
    n.wait_connected()
    operator.close()
    cloud.stop()
    wait_for(lambda: n.status()["connected"] is False, timeout=15, what="the uplink to notice the cut")
    stop = tmp_path / "stop-noisy"
    # 10 lines of 113 bytes a second: batches of about 1.2 KiB, a few fit beside the events and readings
    noisy = ["/bin/sh", "-c", f'i=0; while [ ! -e {stop} ]; do i=$((i+1)); printf "noisy %06d %0100d\\n" $i 0; '
             'sleep 0.1; done; exec /bin/sleep 1000']
    caps = {"lines_per_minute": 100000, "bytes_per_minute": 1048576}
    assert n.deploy(spec("noisy", noisy, logs={"forward": caps})).code == 0
    wait_for(lambda: n.status().get("dropped_oldest", 0) >= 3, timeout=30, what="log batches evicted by logs")
    readings = [f"reading-{i:03d}".encode() for i in range(20)]
    publish_many(n.port, "sensors/x", readings)
    assert n.deploy(spec("other", SLEEP)).code == 0  # its events: deployed, started
    time.sleep(2)  # the noisy log keeps coming: it may only push out its own older batches
    stop.touch()
    time.sleep(2)  # its last lines spooled
    st = n.status()
    assert st["dropped_oldest"] >= 3 and st["rejected_new"] == 0, st
    later = restore_cloud(n.proc, cloud, "#")

    def arrived():
        with later.lock:
            msgs = list(later.messages)
        return (sum(t == "nodes/n1/sensors/x" for t, _ in msgs) >= 20 and
                any(t == "hedge/n1/logs/noisy" for t, _ in msgs) and
                any(json.loads(p).get("deployment") == "other" and json.loads(p).get("type") == "started"
                    for t, p in msgs if t == "hedge/n1/events"))
    wait_for(arrived, timeout=30, what="the outage's events, readings and logs")
    wait_for(lambda: n.status()["depth"] == 0, timeout=30, what="the drain")
    time.sleep(0.5)
    with later.lock:
        msgs = list(later.messages)
    sensors = dedup_in_order([p for t, p in msgs if t == "nodes/n1/sensors/x"])
    assert sensors == readings, "no reading was pushed out by log batches"
    events = [json.loads(p) for t, p in msgs if t == "hedge/n1/events"]
    assert [e["type"] for e in events if e["deployment"] == "noisy"][:2] == ["deployed", "started"], events
    first_log = next(i for i, (t, _) in enumerate(msgs) if t == "hedge/n1/logs/noisy")
    last_reading = max(i for i, (t, _) in enumerate(msgs) if t == "nodes/n1/sensors/x")
    last_event = max(i for i, (t, _) in enumerate(msgs) if t == "hedge/n1/events")
    assert last_event < last_reading < first_log, "the drain sends events, then telemetry, then logs"
    got = [line for t, p in dedup_in_order(msgs) if t == "hedge/n1/logs/noisy" for line in json.loads(p)["lines"]]
    numbers = [int(line.split()[1]) for line in got]
    assert numbers[0] > 1, "the oldest log batches made room"
    assert numbers == sorted(numbers) and numbers[-1] - numbers[0] + 1 == len(numbers), "the newest, in order"
    later.close()


def test_hedge_fleet_logs_follows_what_the_node_forwards(node, cloud, operator, hedge):
    """The operator's `hedge fleet logs NODE NAME -f` (src/cli/fleet.c) on the node's real batches: a
    deployment from a desired document with logs.forward, its tail, then its lines as they are forwarded."""
    node()
    wait_for(lambda: operator.reported("n1"), timeout=15, what="the first report")
    cmd = ["/bin/sh", "-c", 'i=0; while true; do i=$((i+1)); echo "beat $i"; sleep 0.3; done']
    operator.desire("n1", 1, {"beat": spec("beat", cmd, logs={"forward": True})})
    operator.wait_generation("n1", 1)
    proc, out = follow_logs(cloud.port, "n1", "beat")
    try:
        wait_for(lambda: len(out) >= 8, timeout=20, what="the tail and forwarded lines")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        check_sanitizer(proc.stderr.read())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    numbers = [int(line.split()[1]) for line in out]
    assert all(line.startswith("beat ") for line in out), out
    assert numbers[1:] == sorted(set(numbers[1:])), out  # the batches after the tail, in order
    assert numbers[-1] > numbers[0], out


@pytest.mark.parametrize("forward, message", [
    ({"lines_per_minute": 0}, "logs.forward.lines_per_minute: must be an integer 1..100000"),
    ({"bytes_per_minute": "64K"}, "logs.forward.bytes_per_minute: must be an integer 1024..1048576"),
    ({"lines": 5}, "logs.forward.lines: unknown field"),
    ("yes", "logs.forward: must be true, false or an object {lines_per_minute, bytes_per_minute}, not a string"),
])
def test_a_bad_logs_forward_is_refused_by_deploy_naming_the_field(tmp_path, hedge, forward, message):
    d = Daemon(tmp_path, hedge)
    d.start()
    try:
        r = d.deploy(spec("bad", SLEEP, logs={"forward": forward}))
        assert r.code != 0 and message in r.err, r
        assert d.api("GET", "/v1/workloads")[1] == []
    finally:
        d.stop()


def test_a_bad_logs_forward_in_a_desired_document_is_reported_by_field(node, operator):
    node()
    wait_for(lambda: operator.reported("n1"), timeout=15, what="the first report")
    operator.desire("n1", 1, {"good": spec("good", SLEEP, logs={"forward": True}),
                              "bad": spec("bad", SLEEP, logs={"forward": {"lines_per_minute": -1}})})
    r = operator.wait_generation("n1", 1)
    assert set(r["deployments"]) == {"good"}, r
    assert r["errors"] == {"deployments.bad": "logs.forward.lines_per_minute: must be an integer 1..100000"}, r
