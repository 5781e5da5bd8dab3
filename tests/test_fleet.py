"""The fleet protocol (docs/fleet.md): three hedged nodes and Debian's mosquitto as the cloud broker.

The operator's side is played by mosquitto_pub (a retained desired document per node) and a paho
client that keeps the latest retained message of every topic under hedge/ (reported, status); the
nodes are real hedged daemons with their uplink to that mosquitto, each with its own state dir,
port and node id.
"""
import json
import os
import signal
import time
import threading

import paho.mqtt.client as paho
import pytest

from conftest import HEDGE, SANITIZER_ENV, check_sanitizer
from mqtt_util import Collector, dedup_in_order, restore_cloud
from test_daemon import SLEEP, spec, wait_for
from test_daemon_broker import port_open
from test_daemon_uplink import UplinkDaemon, cloud  # noqa: F401 (the cloud broker fixture)

import subprocess


class Operator:
    """The cloud side: keeps the newest retained message per topic under hedge/#, publishes desired docs."""

    def __init__(self, cloud):
        self.cloud = cloud
        self.latest = {}
        self.lock = threading.Lock()
        self.client = paho.Client(client_id="operator")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", cloud.port)
        self.client.subscribe("hedge/#", qos=1)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.latest[msg.topic] = msg.payload.decode()

    def get(self, topic):
        with self.lock:
            return self.latest.get(topic)

    def reported(self, node):
        text = self.get(f"hedge/{node}/reported")
        return json.loads(text) if text else None

    def desire(self, node, generation, deployments):
        doc = json.dumps({"generation": generation, "deployments": deployments})
        self.publish(f"hedge/{node}/desired", doc)

    def publish(self, topic, payload, retain=True):
        r = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.cloud.port), "-q", "1",
                            *(["-r"] if retain else []), "-t", topic, "-m", payload],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr

    def job(self, node, job_id, request, timeout=30):
        """Publish a job as any MQTT client would, and wait for its result."""
        self.publish(f"hedge/{node}/jobs/{job_id}", json.dumps(request), retain=False)
        text = wait_for(lambda: self.get(f"hedge/{node}/jobs/{job_id}/result"), timeout=timeout,
                        what=f"the result of job {job_id}")
        return json.loads(text)

    def wait_generation(self, node, generation, timeout=30):
        def applied():
            r = self.reported(node)
            return r if r and r["generation"] == generation and r["applying"] is None else None
        return wait_for(applied, timeout=timeout, what=f"{node} to report generation {generation}")

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


class FleetNode(UplinkDaemon):
    def __init__(self, tmp, hedge, cloud_port, node, labels=None):
        super().__init__(tmp, hedge, cloud_port, name=node, uplink={"node_id": node})
        self.name = node
        config = json.loads(self.config.read_text())
        config["fleet"] = {"labels": labels or {}}
        self.config.write_text(json.dumps(config))

    def kill9(self):
        super().kill9()
        # its network child dies as it notices (PR_SET_PDEATHSIG): a start before that finds the port taken
        wait_for(lambda: not port_open(self.port), timeout=15, what="the killed hedged's broker port closed")


@pytest.fixture
def operator(cloud):
    o = Operator(cloud)
    yield o
    o.close()


def stop_nodes(started):
    """Stop the nodes a test started (a paused one too) and check each left nothing behind."""
    for n in started:
        if n.proc and n.proc.poll() is None:
            n.proc.send_signal(signal.SIGCONT)
            n.proc.send_signal(signal.SIGTERM)
            n.proc.wait(timeout=15)
        n.cleanup()


@pytest.fixture
def nodes(tmp_path, hedge, cloud):
    started = []

    def make(name, **kw):
        n = FleetNode(tmp_path, hedge, cloud.port, name, **kw)
        started.append(n)
        return n.start()
    yield make
    stop_nodes(started)


def running(report, name):
    d = report["deployments"].get(name)
    return d is not None and d["state"] == "running"


def test_three_nodes_converge_to_their_desired_documents_and_report(nodes, operator):
    ns = [nodes(f"n{i}", labels={"site": "plant-a", "index": str(i)}) for i in range(3)]
    for n in ns:
        wait_for(lambda: operator.get(f"hedge/{n.name}/status") == "online", timeout=15, what=f"{n.name} online")
        first = wait_for(lambda: operator.reported(n.name), timeout=15, what=f"{n.name}'s first report")
        assert first["generation"] is None and first["deployments"] == {}
        assert first["facts"]["labels"]["site"] == "plant-a" and first["node"] == n.name
    for i, n in enumerate(ns):
        operator.desire(n.name, 1, {f"svc{i}": spec(f"svc{i}", SLEEP), "common": spec("common", SLEEP)})
    for i, n in enumerate(ns):
        r = operator.wait_generation(n.name, 1)
        assert r["errors"] == {}
        assert set(r["deployments"]) == {f"svc{i}", "common"}
        assert all(d["managed"] == "fleet" and d["version"] == 1 for d in r["deployments"].values())
        wait_for(lambda: running(operator.reported(n.name), "common"), timeout=15, what="common running")
        assert {w["name"] for w in n.api("GET", "/v1/workloads")[1]} == {f"svc{i}", "common"}


def test_a_new_generation_upgrades_removes_and_leaves_local_deployments_alone(nodes, operator):
    n = nodes("n1")
    wait_for(lambda: operator.reported("n1"), timeout=15, what="the first report")
    assert n.deploy(spec("mine", SLEEP)).code == 0  # made through the local API: not the fleet's
    operator.desire("n1", 1, {"a": spec("a", SLEEP), "b": spec("b", SLEEP)})
    operator.wait_generation("n1", 1)
    operator.desire("n1", 2, {"a": spec("a", ["/bin/sleep", "999"])})
    r = operator.wait_generation("n1", 2)
    assert set(r["deployments"]) == {"a", "mine"}, r
    assert r["deployments"]["a"]["version"] == 2 and r["deployments"]["mine"]["managed"] == "local"
    names = {w["name"] for w in n.api("GET", "/v1/workloads")[1]}
    assert names == {"a", "mine"}


def test_a_bad_spec_is_reported_by_field_and_the_rest_applies(nodes, operator):
    nodes("n1")
    wait_for(lambda: operator.reported("n1"), timeout=15, what="the first report")
    operator.desire("n1", 7, {"good": spec("good", SLEEP),
                              "bad": {"isolation": "process", "command": "not a list"},
                              "named": spec("other", SLEEP)})
    r = operator.wait_generation("n1", 7)
    assert set(r["deployments"]) == {"good"}, r
    assert r["errors"]["deployments.bad"] == "command: must be an array of strings, not a string", r["errors"]
    assert r["errors"]["deployments.named.name"] == "must be the deployment's key, or left out"


def test_a_malformed_document_is_refused_and_nothing_changes(nodes, operator):
    nodes("n1")
    wait_for(lambda: operator.reported("n1"), timeout=15, what="the first report")
    operator.desire("n1", 1, {"a": spec("a", SLEEP)})
    operator.wait_generation("n1", 1)
    operator.publish("hedge/n1/desired", json.dumps({"generation": "two", "deployments": {}}))
    wait_for(lambda: "desired" in operator.reported("n1")["errors"], timeout=15, what="the refusal")
    r = operator.reported("n1")
    assert r["errors"]["desired"].startswith("desired.generation: must be an integer"), r
    assert r["generation"] == 1 and set(r["deployments"]) == {"a"}
    operator.publish("hedge/n1/desired", "{not json")  # read by the unprivileged network child
    wait_for(lambda: operator.reported("n1")["errors"]["desired"].startswith("desired: line 1 column 4:"),
             timeout=15, what="the JSON error")
    operator.publish("hedge/n1/desired", "[1, 2]")
    wait_for(lambda: operator.reported("n1")["errors"]["desired"] == "desired: must be an object, not an array",
             timeout=15, what="the type error")
    assert operator.reported("n1")["generation"] == 1


def test_desired_while_offline_applies_at_reconnect_and_restart_keeps_ownership(nodes, operator, cloud):
    n = nodes("n1")
    wait_for(lambda: operator.reported("n1"), timeout=15, what="the first report")
    operator.desire("n1", 1, {"a": spec("a", SLEEP)})
    operator.wait_generation("n1", 1)
    # The node goes away without a goodbye: the broker publishes its will.
    n.kill9()
    wait_for(lambda: operator.get("hedge/n1/status") == "offline", timeout=30, what="the will")
    operator.desire("n1", 2, {"b": spec("b", SLEEP)})
    n.start()
    r = operator.wait_generation("n1", 2)
    assert set(r["deployments"]) == {"b"}, r  # "a" was the fleet's (fleet.json): removed
    assert operator.get("hedge/n1/status") == "online"
    operator.desire("n1", 3, {})
    assert operator.wait_generation("n1", 3)["deployments"] == {}
    # A clean stop says offline itself.
    n.stop()
    wait_for(lambda: operator.get("hedge/n1/status") == "offline", timeout=15, what="offline at a clean stop")


def test_fleet_config_errors_name_the_field(tmp_path, hedge):
    import pathlib
    from test_daemon import HEDGED
    cfg = pathlib.Path(tmp_path) / "c.json"
    cfg.write_text(json.dumps({"state_dir": str(tmp_path / "s"), "fleet": {}}))
    r = subprocess.run([str(HEDGED), "--check", str(cfg)], capture_output=True, text=True)
    assert r.returncode != 0 and "fleet: needs the \"uplink\" section" in r.stderr, r
    cfg.write_text(json.dumps({"state_dir": str(tmp_path / "s"), "fleet": {"prefix": "a/+/"},
                               "uplink": {"node_id": "n1", "cloud": {"host": "127.0.0.1", "port": 1}}}))
    r = subprocess.run([str(HEDGED), "--check", str(cfg)], capture_output=True, text=True)
    assert r.returncode != 0 and "fleet.prefix" in r.stderr, r


def events_of(collector):
    return [json.loads(p) for p in dedup_in_order(collector.payloads())]


def test_events_go_up_in_order_and_those_of_an_outage_arrive_after_it(nodes, operator, cloud):
    n = nodes("n1")
    wait_for(lambda: operator.reported("n1"), timeout=15, what="the first report")
    events = Collector(cloud.port, "hedge/n1/events")
    operator.desire("n1", 1, {"a": spec("a", SLEEP)})
    operator.wait_generation("n1", 1)
    wait_for(lambda: any(e["type"] == "started" for e in events_of(events)), timeout=15, what="a started event")
    first = events_of(events)
    assert first[0]["type"] == "deployed" and first[0]["deployment"] == "a" and first[0]["managed"] == "fleet", first
    assert all(e["node"] == "n1" for e in first)
    events.close()
    # The cloud goes away; the node keeps working and records what happens.
    operator.close()
    cloud.stop()
    wait_for(lambda: n.status()["connected"] is False, timeout=15, what="the uplink to notice the cut")
    assert n.deploy(spec("local1", ["/bin/sh", "-c", "exit 3"], restart={"policy": "never"})).code == 0
    assert n.deploy(spec("local2", SLEEP)).code == 0
    wait_for(lambda: n.status()["depth"] >= 4, timeout=15, what="the outage's events in the spool")
    later = restore_cloud(n.proc, cloud, "hedge/n1/events")
    wait_for(lambda: any(e["deployment"] == "local2" and e["type"] == "started" for e in events_of(later)),
             timeout=30, what="the outage's events at the cloud")
    got = events_of(later)
    names = [e["deployment"] for e in got if e["type"] == "deployed"]
    assert names[-2:] == ["local1", "local2"], got  # in the order they happened
    times = [e["time_ms"] for e in got]
    assert times == sorted(times), got
    assert all(e["managed"] == "local" for e in got if e["deployment"].startswith("local"))
    later.close()
    assert n.cli("rm", "local1").code == 0 and n.cli("rm", "local2").code == 0


def test_hedge_fleet_cli_deploys_by_label_waits_lists_and_removes(nodes, cloud, hedge, tmp_path):
    ns = [nodes(f"n{i}", labels={"site": "a" if i < 2 else "b"}) for i in range(3)]

    def fleet(*args, timeout=60):
        return hedge("fleet", "--broker", f"127.0.0.1:{cloud.port}", *args, timeout=timeout)
    wait_for(lambda: fleet("ls").out.count(" online ") == 3, timeout=20, what="three nodes online in `fleet ls`")
    web = tmp_path / "web.json"
    web.write_text(json.dumps(spec("web", SLEEP)))
    r = fleet("deploy", "-l", "site=a", web)
    assert r.code == 0 and sorted(r.out.split("\n")[:2]) == ["n0: generation 1", "n1: generation 1"], r
    r = fleet("--timeout", "30", "wait", "n0", "n1")
    assert r.code == 0 and "n0: generation 1 applied" in r.out and "n1: generation 1 applied" in r.out, r
    for n in ns[:2]:
        assert [w["name"] for w in n.api("GET", "/v1/workloads")[1]] == ["web"]
    assert ns[2].api("GET", "/v1/workloads")[1] == []
    lines = {line.split()[0]: line.split() for line in fleet("ls").out.splitlines()[1:]}
    assert lines["n0"][1:4] == ["online", "1", "1"] and lines["n2"][2:4] == ["-", "-"], lines
    # ERRORS, SPOOL, VERSION, LAST SEEN (when the node's live facts were read, to the minute)
    version = json.loads(fleet("status", "n0").out)["facts"]["hedge_version"]
    assert lines["n0"][6:9] == ["0", "0", version] and lines["n0"][-1] == "ago" and lines["n0"][-2].endswith("s"), lines
    status = json.loads(fleet("status", "n1").out)
    assert status["deployments"]["web"]["managed"] == "fleet" and status["desired_generation"] == 1
    # A spec that does not validate: wait says so and exits 1.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "isolation": "process", "command": "oops"}))
    assert fleet("deploy", "n2", bad).code == 0
    r = fleet("--timeout", "30", "wait", "n2")
    assert r.code == 1 and "deployments.bad: command: must be an array of strings" in r.out, r
    # rm takes it out of the desired documents, by label or by node.
    assert fleet("rm", "-l", "site=a", "web").code == 0
    assert fleet("rm", "n2", "bad").code == 0
    assert fleet("--timeout", "30", "wait", "n0", "n1", "n2").code == 0
    assert all(n.api("GET", "/v1/workloads")[1] == [] for n in ns)


def test_hedge_fleet_cli_errors(cloud, hedge, tmp_path):
    def fleet(*args):
        return hedge("fleet", "--broker", f"127.0.0.1:{cloud.port}", *args, timeout=60)
    r = fleet("deploy", "-l", "site=nowhere", tmp_path / "x.json")
    assert r.code == 125 and "x.json: unable to open" in r.err, r
    (tmp_path / "x.json").write_text(json.dumps({"isolation": "process"}))
    r = fleet("deploy", "-l", "site=nowhere", tmp_path / "x.json")
    assert r.code == 125 and "must be a workload spec with a \"name\"" in r.err, r
    (tmp_path / "x.json").write_text(json.dumps(spec("x", SLEEP)))
    r = fleet("deploy", "-l", "site=nowhere", tmp_path / "x.json")
    assert r.code == 1 and "no node reports the label site=nowhere" in r.err, r
    assert fleet("frobnicate").code == 2
    assert fleet("wait", "a/b").code == 2
    r = fleet("--timeout", "1", "wait", "ghost")
    assert r.code == 124 and "ghost: not converged" in r.out, r
    r = hedge("fleet", "--broker", f"127.0.0.1:{cloud.port + 1 if cloud.port < 65535 else 1}", "ls")
    assert r.code == 125 and "broker" in r.err, r


def ed25519_pair(d, name):
    key, pub = d / f"{name}.pem", d / f"{name}.pub"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", key], check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-out", pub], check=True, capture_output=True)
    return key, pub


def test_with_a_verify_key_only_documents_it_signed_apply(nodes, cloud, operator, hedge, tmp_path):
    key, pub = ed25519_pair(tmp_path, "fleet")
    other, _ = ed25519_pair(tmp_path, "other")
    n = FleetNode(tmp_path, hedge, cloud.port, "s1")
    config = json.loads(n.config.read_text())
    config["fleet"]["verify_key"] = str(pub)
    n.config.write_text(json.dumps(config))
    n.start()
    try:
        wait_for(lambda: operator.reported("s1"), timeout=15, what="the first report")

        def fleet(*args):
            return hedge("fleet", "--broker", f"127.0.0.1:{cloud.port}", *args, timeout=60)
        web = tmp_path / "web.json"
        web.write_text(json.dumps(spec("web", SLEEP)))
        # unsigned: refused, nothing applied
        operator.desire("s1", 1, {"web": spec("web", SLEEP)})
        wait_for(lambda: "desired" in operator.reported("s1")["errors"], timeout=15, what="the refusal")
        assert operator.reported("s1")["errors"]["desired"] == \
            "desired: not signed, and fleet.verify_key asks for a signature"
        # signed by another key: refused
        assert fleet("--sign-key", other, "deploy", "s1", web).code == 0
        wait_for(lambda: "does not verify" in operator.reported("s1")["errors"].get("desired", ""), timeout=15,
                 what="the bad signature's refusal")
        assert operator.reported("s1")["generation"] is None and n.api("GET", "/v1/workloads")[1] == []
        # a document signed by the fleet's key whose text was changed after signing: refused
        text = json.dumps({"generation": 1, "deployments": {}})
        (tmp_path / "doc.json").write_text(text)
        sig = subprocess.run(["openssl", "pkeyutl", "-sign", "-rawin", "-inkey", key, "-in", tmp_path / "doc.json"],
                             check=True, capture_output=True).stdout
        import base64
        envelope = {"document": text.replace('"deployments"', ' "deployments"'),
                    "ed25519": base64.b64encode(sig).decode()}
        operator.desire("s1", 1, {})  # unsigned again: the error changes back, so the next one is its own
        wait_for(lambda: operator.reported("s1")["errors"].get("desired", "").startswith("desired: not signed"),
                 timeout=15, what="the unsigned refusal")
        operator.publish("hedge/s1/desired", json.dumps(envelope))
        wait_for(lambda: "does not verify" in operator.reported("s1")["errors"].get("desired", ""), timeout=15,
                 what="the tampered document's refusal")
        envelope["document"] = text  # untouched, it verifies (signed by openssl's CLI, not by hedge)
        operator.publish("hedge/s1/desired", json.dumps(envelope))
        wait_for(lambda: operator.reported("s1")["generation"] == 1 and not operator.reported("s1")["errors"],
                 timeout=15, what="the signed document applied")
        # signed by the fleet's key: applied
        r = fleet("--sign-key", key, "deploy", "s1", web)
        assert r.code == 0, r
        assert fleet("--timeout", "30", "wait", "s1").code == 0
        assert [w["name"] for w in n.api("GET", "/v1/workloads")[1]] == ["web"]
        assert fleet("--sign-key", key, "rm", "s1", "web").code == 0
        assert fleet("--timeout", "30", "wait", "s1").code == 0
        r = fleet("--sign-key", tmp_path / "fleet.pub", "deploy", "s1", web)
        assert r.code == 125 and "not a PEM private key" in r.err, r
    finally:
        n.stop()
        n.cleanup()


def test_kill_9_during_a_fleet_upgrade_finishes_or_rolls_back_and_reported_says_which(nodes, operator):
    n = nodes("n1")
    wait_for(lambda: operator.reported("n1"), timeout=15, what="the first report")
    operator.desire("n1", 1, {"app": spec("app", SLEEP)})
    operator.wait_generation("n1", 1)
    # generation 2 upgrades app; the new version must keep running 3 s to count as healthy
    operator.desire("n1", 2, {"app": spec("app", ["/bin/sleep", "999"], health={"wait": 3})})
    wait_for(lambda: operator.reported("n1")["applying"] == 2, timeout=15, what="the upgrade under way")
    n.kill9()
    n.start()
    r = operator.wait_generation("n1", 2, timeout=60)
    app = r["deployments"]["app"]
    history = n.api("GET", "/v1/workloads/app/history")[1]
    wanted = [v["digest"] for v in history["versions"] if v["version"] == 2][0]  # the generation-2 spec
    # Either the upgrade finished (the generation-2 spec runs, maybe as a later version: hedged marks the
    # interrupted upgrade failed at its restart and the fleet applies generation 2 again), or it was rolled
    # back and the report names the deployment under errors.
    finished = app["digest"] == wanted and app["state"] == "running" and r["errors"] == {}
    rolled_back = app["version"] == 1 and "deployments.app" in r["errors"]
    assert finished or rolled_back, json.dumps(history, indent=1)
    types = [e["type"] for e in history["events"]]
    assert "upgrade-failed" in types, types  # the interrupted attempt is on record
    print("after kill -9 mid-upgrade:", f"finished as version {app['version']}" if finished else
          f"rolled back: {r['errors']}")
    operator.desire("n1", 3, {})
    assert operator.wait_generation("n1", 3)["deployments"] == {}


def test_reported_facts_cover_the_node(nodes, operator):
    nodes("n1", labels={"site": "x"})
    keys = ("hedge_version", "kernel", "arch", "cgroup", "vm_accelerator", "uptime_s", "load", "memory_total_bytes",
            "memory_available_bytes", "disk_total_bytes", "disk_available_bytes", "broker_clients", "spool_depth")
    # the network child's counts come once it serves (a report without them is followed by one with them)
    r = wait_for(lambda: (operator.reported("n1") or {"facts": {}})["facts"].keys() >= set(keys) and
                 operator.reported("n1"), timeout=15, what="a report with every fact")
    facts = r["facts"]
    assert facts["cgroup"] in ("v1", "hybrid", "v2") and facts["vm_accelerator"] in ("kvm", "tcg")
    assert len(facts["load"]) == 3 and facts["memory_total_bytes"] >= facts["memory_available_bytes"] > 0
    # as counted at the last refresh (once a minute): the first may come before the uplink's own client connects
    assert isinstance(facts["broker_clients"], int) and facts["broker_clients"] >= 0
    assert facts["spool_depth"] == 0 and facts["labels"] == {"site": "x"}


def test_staged_rollout_goes_canary_first_and_a_failing_canary_halts_it_and_gets_its_document_back(
        nodes, cloud, operator, hedge, tmp_path):
    ns = [nodes(f"r{i}", labels={"ring": "1"}) for i in range(3)]
    for n in ns:
        wait_for(lambda: operator.reported(n.name), timeout=15, what=f"{n.name}'s first report")

    def fleet(*args):
        return hedge("fleet", "--broker", f"127.0.0.1:{cloud.port}", "--timeout", "60", *args, timeout=120)
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(spec("app", SLEEP)))
    bad.write_text(json.dumps(spec("app", ["/bin/sleep", "999"], health={"command": ["/bin/false"], "wait": 1})))
    r = fleet("rollout", "-l", "ring=1", good)
    assert r.code == 0 and "1 canary first" in r.out and "rollout done: 3 nodes" in r.out, r
    digests = {n.name: operator.reported(n.name)["deployments"]["app"]["digest"] for n in ns}
    r = fleet("rollout", "-l", "ring=1", "--canaries", "1", bad)
    assert r.code == 1 and "rollout halted: canary r0: deployments.app" in r.out, r
    assert "rolling the canaries back" in r.out
    # the canary has its previous document again, applied: the good spec runs, no errors
    back = operator.wait_generation("r0", 3)
    assert back["errors"] == {} and back["deployments"]["app"]["digest"] == digests["r0"], back
    # the rest never saw the bad spec
    for n in ns[1:]:
        assert json.loads(operator.get(f"hedge/{n.name}/desired"))["generation"] == 1
        assert operator.reported(n.name)["deployments"]["app"]["version"] == 1
    assert fleet("rm", "-l", "ring=1", "app").code == 0
    assert fleet("wait", "r0", "r1", "r2").code == 0


def test_jobs_restart_and_tail_logs_and_a_repeated_id_gets_the_same_result(nodes, cloud, operator, hedge, tmp_path):
    n = nodes("n1")
    wait_for(lambda: operator.reported("n1"), timeout=15, what="the first report")
    operator.desire("n1", 1, {"talk": spec("talk", ["/bin/sh", "-c", "for i in 1 2 3 4 5; do echo line $i; done; "
                                                                       "exec sleep 1000"])})
    operator.wait_generation("n1", 1)

    def fleet(*args):
        return hedge("fleet", "--broker", f"127.0.0.1:{cloud.port}", "--timeout", "30", *args, timeout=60)
    wait_for(lambda: "line 5" in fleet("job", "n1", "logs", "talk").out, timeout=15, what="the log lines")
    r = fleet("job", "n1", "logs", "talk", "-n", "2")
    assert r.code == 0 and r.out == "line 4\nline 5\n", r
    pid = n.ps("talk")["pid"]
    r = fleet("--id", "restart-1", "job", "n1", "restart", "talk")
    assert r.code == 0 and "n1: talk restarted" in r.out, r
    new_pid = wait_for(lambda: (n.ps("talk")["pid"] or pid) != pid and n.ps("talk")["pid"], timeout=15,
                       what="the restarted process")
    # the same id again: the kept result, no second restart
    r2 = fleet("--id", "restart-1", "job", "n1", "restart", "talk")
    assert r2.code == 0 and r2.out == r.out, r2
    time.sleep(0.5)
    assert n.ps("talk")["pid"] == new_pid
    r = fleet("job", "n1", "restart", "nosuch")
    assert r.code == 1 and "deployment: no deployment nosuch on this node" in r.err, r
    r = fleet("--timeout", "2", "job", "ghost", "restart", "talk")
    assert r.code == 124 and "no result from ghost" in r.err, r
    assert fleet("job", "n1", "frobnicate", "talk").code == 2
    operator.desire("n1", 2, {})
    operator.wait_generation("n1", 2)


def restart(n):
    """Stop hedged cleanly (its workloads keep running) and start it again."""
    n.proc.send_signal(signal.SIGTERM)
    assert n.proc.wait(timeout=15) == 0
    n.start()


STUBBORN = ["/bin/sh", "-c", "trap '' TERM; while :; do sleep 1; done"]  # a stop takes the whole stop_grace


def test_job_results_survive_a_restart_and_a_job_cut_short_by_kill_9_is_answered_interrupted(
        nodes, cloud, operator, hedge):
    n = nodes("n1")
    wait_for(lambda: operator.reported("n1"), timeout=15, what="the first report")
    operator.desire("n1", 1, {"talk": spec("talk", SLEEP), "stubborn": spec("stubborn", STUBBORN)})
    operator.wait_generation("n1", 1)

    def fleet(*args):
        return hedge("fleet", "--broker", f"127.0.0.1:{cloud.port}", "--timeout", "30", *args, timeout=60)
    r = fleet("--id", "keep-1", "job", "n1", "restart", "talk")
    assert r.code == 0 and "n1: talk restarted" in r.out, r
    pid = wait_for(lambda: n.ps("talk")["pid"], timeout=15, what="talk running")
    # a clean restart of hedged: the kept result answers, nothing runs again
    restart(n)
    wait_for(lambda: operator.get("hedge/n1/status") == "online", timeout=15, what="n1 online again")
    r2 = fleet("--id", "keep-1", "job", "n1", "restart", "talk")
    assert r2.code == 0 and r2.out == r.out, r2
    assert n.ps("talk")["pid"] == pid
    # a restart job that takes stop_grace (10 s); hedged is killed while it runs
    r = fleet("--timeout", "2", "--id", "cut-1", "job", "n1", "restart", "stubborn")
    assert r.code == 124 and "no result from n1" in r.err, r
    kept = json.loads((n.state / "fleet-jobs.json").read_text())
    assert kept["running"] == ["cut-1"] and [d[0] for d in kept["done"]] == ["keep-1"], kept
    n.kill9()
    n.start()
    wait_for(lambda: operator.get("hedge/n1/status") == "online", timeout=15, what="n1 online after kill -9")
    r = fleet("--id", "cut-1", "job", "n1", "restart", "stubborn")
    assert r.code == 1 and "job cut-1 on n1: interrupted by a restart of hedged" in r.err, r
    result = operator.job("n1", "cut-1", {"type": "restart", "deployment": "stubborn"})
    assert result == {"id": "cut-1", "ok": False, "error": "interrupted by a restart of hedged"}, result
    assert fleet("--id", "keep-1", "job", "n1", "restart", "talk").out == r2.out  # kept across kill -9 too
    assert n.ps("talk")["pid"] == pid
    operator.desire("n1", 2, {"talk": spec("talk", SLEEP)})
    operator.wait_generation("n1", 2, timeout=60)


def test_a_rollback_job_keeps_its_version_in_the_same_generation_and_reports_the_drift(nodes, operator):
    n = nodes("n1")
    wait_for(lambda: operator.reported("n1"), timeout=15, what="the first report")
    operator.desire("n1", 1, {"app": spec("app", SLEEP)})
    v1 = operator.wait_generation("n1", 1)["deployments"]["app"]["digest"]
    operator.desire("n1", 2, {"app": spec("app", ["/bin/sleep", "999"])})
    v2 = operator.wait_generation("n1", 2)["deployments"]["app"]
    assert v2["version"] == 2 and v2["digest"] != v1
    result = operator.job("n1", "rb-1", {"type": "rollback", "deployment": "app"})
    assert result["ok"] is True and result["type"] == "rollback" and result["deployment"] == "app", result
    assert result["version"] == 3 and result["digest"] == v1 and result["managed"] == "fleet", result
    assert result["spec"]["command"] == SLEEP and result["spec"]["name"] == "app", result

    def drifted():
        r = operator.reported("n1")
        return r if r["deployments"]["app"]["digest"] == v1 and "deployments.app" in r["errors"] else None
    r = wait_for(drifted, timeout=15, what="the rollback in the report")
    assert r["generation"] == 2 and r["deployments"]["app"]["version"] == 3, r
    assert r["errors"]["deployments.app"].startswith(f"rolled back by job rb-1 to version 3 ({v1}): runs another "
                                                     "spec than the desired one"), r["errors"]
    # the desired spec is not applied again over the rollback in the same generation, restart included
    time.sleep(2)
    assert n.ps("app")["version"] == 3
    restart(n)
    wait_for(lambda: operator.get("hedge/n1/status") == "online", timeout=15, what="n1 online again")
    time.sleep(1.5)
    r = operator.reported("n1")
    assert r["generation"] == 2 and r["deployments"]["app"]["version"] == 3 and "deployments.app" in r["errors"], r
    # errors: a deployment with no earlier version, one that does not exist, a rollback in progress
    operator.desire("n1", 3, {"app": spec("app", SLEEP), "solo": spec("solo", SLEEP)})
    assert operator.wait_generation("n1", 3)["errors"] == {}
    result = operator.job("n1", "rb-2", {"type": "rollback", "deployment": "solo"})
    assert result == {"id": "rb-2", "ok": False,
                      "error": "workload \"solo\": no earlier version to roll back to"}, result
    result = operator.job("n1", "rb-3", {"type": "rollback", "deployment": "ghost"})
    assert result["ok"] is False and result["error"] == "deployment: no deployment ghost on this node", result
    result = operator.job("n1", "rb-4", {"type": "frobnicate", "deployment": "app"})
    assert result["error"] == "type: must be \"restart\", \"logs\", \"rollback\" or \"bench\"", result
    operator.desire("n1", 4, {})
    operator.wait_generation("n1", 4)


def test_hedge_fleet_rollback_rolls_back_then_makes_the_running_spec_the_desired_one(nodes, cloud, operator, hedge,
                                                                                    tmp_path):
    n = nodes("n1")
    wait_for(lambda: operator.reported("n1"), timeout=15, what="the first report")

    def fleet(*args):
        return hedge("fleet", "--broker", f"127.0.0.1:{cloud.port}", "--timeout", "60", *args, timeout=90)
    for g, command in ((1, SLEEP), (2, ["/bin/sleep", "999"])):
        (tmp_path / "app.json").write_text(json.dumps(spec("app", command)))
        assert fleet("deploy", "n1", tmp_path / "app.json").code == 0
        assert fleet("wait", "n1").code == 0
    v1 = [v["digest"] for v in n.api("GET", "/v1/workloads/app/history")[1]["versions"] if v["version"] == 1][0]
    r = fleet("rollback", "n1", "app")
    assert r.code == 0, r
    assert f"n1: app rolled back to version 3 ({v1})" in r.out and "n1: generation 3 applied" in r.out, r
    desired = json.loads(operator.get("hedge/n1/desired"))
    assert desired["generation"] == 3 and desired["deployments"]["app"]["command"] == SLEEP, desired
    rep = operator.wait_generation("n1", 3)
    assert rep["errors"] == {} and rep["deployments"]["app"]["version"] == 3, rep  # unchanged: no new version
    assert rep["deployments"]["app"]["digest"] == v1
    # a local deployment rolls back too; it has no desired document to change
    assert n.deploy(spec("mine", SLEEP)).code == 0
    assert n.deploy(spec("mine", ["/bin/sleep", "998"])).code == 0
    r = fleet("rollback", "n1", "mine")
    assert r.code == 0 and "mine is a local deployment: no desired document to change" in r.out, r
    assert n.ps("mine")["version"] == 3 and json.loads(operator.get("hedge/n1/desired"))["generation"] == 3
    # errors: the job's own (exit 1), usage (2), a node that does not answer (124)
    r = fleet("rollback", "n1", "nosuch")
    assert r.code == 1 and "deployment: no deployment nosuch on this node" in r.err, r
    r = fleet("rollback", "n1", "mine")  # version 3 went back to version 1's spec; 2 is its previous good one
    assert r.code == 0, r
    r = hedge("fleet", "--broker", f"127.0.0.1:{cloud.port}", "--timeout", "2", "rollback", "ghost", "app")
    assert r.code == 124 and "no result from ghost" in r.err, r
    assert fleet("rollback", "n1").code == 2 and fleet("rollback", "n1", "app", "x").code == 2
    assert n.cli("rm", "mine").code == 0
    assert fleet("rm", "n1", "app").code == 0 and fleet("wait", "n1").code == 0


def follow_logs(port, node, name):
    """`hedge fleet logs NODE NAME -f -n 1` in the background: the process and the list its stdout lines go to."""
    proc = subprocess.Popen([str(HEDGE), "fleet", "--broker", f"127.0.0.1:{port}", "logs", node, name, "-f", "-n",
                             "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **SANITIZER_ENV))
    out = []
    threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True).start()
    return proc, out


def test_hedge_fleet_logs_tails_and_follows_the_forwarded_batches(nodes, cloud, operator, hedge):
    n = nodes("n1")
    wait_for(lambda: operator.reported("n1"), timeout=15, what="the first report")
    operator.desire("n1", 1, {"talk": spec("talk", ["/bin/sh", "-c", "for i in 1 2 3 4 5; do echo line $i; done; "
                                                                       "exec sleep 1000"])})
    operator.wait_generation("n1", 1)

    def fleet(*args):
        return hedge("fleet", "--broker", f"127.0.0.1:{cloud.port}", "--timeout", "30", *args, timeout=60)
    wait_for(lambda: "line 5" in fleet("logs", "n1", "talk").out, timeout=15, what="the log lines")
    r = fleet("logs", "n1", "talk", "-n", "2")
    assert r.code == 0 and r.out == "line 4\nline 5\n", r
    # -f: the tail, then each forwarded batch as it comes, until SIGINT
    proc, out = follow_logs(cloud.port, "n1", "talk")
    try:
        wait_for(lambda: out == ["line 5\n"], timeout=15, what="the tail")

        def forwarded():  # published until the subscription (made after the tail) sees one
            batch = {"deployment": "talk", "lines": ["fwd 1", "fwd 2"], "dropped": 3, "ts": 1796569200123}
            operator.publish("hedge/n1/logs/talk", json.dumps(batch), retain=False)
            time.sleep(0.3)
            return "fwd 2\n" in out
        wait_for(forwarded, timeout=15, what="a forwarded batch printed")
        assert out[1:3] == ["fwd 1\n", "fwd 2\n"], out
        operator.publish("hedge/n1/logs/talk", json.dumps({"deployment": "talk", "lines": ["fwd 3"], "dropped": 0,
                                                           "ts": 1796569200124}), retain=False)
        wait_for(lambda: out[-1] == "fwd 3\n", timeout=15, what="the next batch")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        err = proc.stderr.read()
        assert "hedge fleet: 3 lines dropped by the node's rate cap" in err, err
        check_sanitizer(err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    r = fleet("logs", "n1", "nosuch", "-f")
    assert r.code == 1 and "deployment: no deployment nosuch on this node" in r.err, r
    assert fleet("logs", "n1").code == 2 and fleet("logs", "n1", "talk", "-n", "0").code == 2
    assert fleet("logs", "n1", "talk", "-x").code == 2
    # names are passed as JSON strings, whatever they hold
    r = fleet("job", "n1", "restart", 'a"b\\c')
    assert r.code == 1 and 'deployment: no deployment a"b\\c on this node' in r.err, r
    operator.desire("n1", 2, {})
    operator.wait_generation("n1", 2)


def test_a_bench_job_runs_hedge_bench_on_the_spec_and_answers_its_report(nodes, operator, cloud, hedge, tmp_path):
    n = nodes("n1")
    wait_for(lambda: operator.reported("n1"), timeout=15, what="the first report")
    request = {"type": "bench", "spec": spec("b", ["/bin/true"]), "runs": 2}
    result = operator.job("n1", "bench-1", request, timeout=120)
    assert result["ok"] is True and result["type"] == "bench", result
    report = result["report"]
    assert report["workload"]["name"] == "b" and report["settings"]["runs"] == 2, report
    figure = report["results"]["process"]["start_to_exit_ms"]
    assert len(figure["samples"]) == 2 and figure["median"] > 0, figure
    # the same through `hedge fleet job NODE bench SPEC`: it prints the report
    (tmp_path / "b.json").write_text(json.dumps(spec("b", ["/bin/true"])))
    r = hedge("fleet", "--broker", f"127.0.0.1:{cloud.port}", "job", "n1", "bench", tmp_path / "b.json", "--runs", "1",
              "--isolation", "process", timeout=120)
    assert r.code == 0 and len(json.loads(r.out)["results"]["process"]["start_to_exit_ms"]["samples"]) == 1, r
    r = hedge("fleet", "--broker", f"127.0.0.1:{cloud.port}", "job", "n1", "bench", tmp_path / "b.json", "--runs", "0")
    assert r.code == 1 and "runs: must be an integer 1..20" in r.err, r
    r = hedge("fleet", "--broker", f"127.0.0.1:{cloud.port}", "job", "n1", "bench", tmp_path / "b.json", "--frob", "1")
    assert r.code == 2, r
    # the request's fields are checked by name
    for bad, why in (({"spec": {"isolation": "process"}}, "spec: must be a workload spec with a \"name\""),
                     ({"spec": spec("b", ["/bin/true"]), "runs": 0}, "runs: must be an integer 1..20"),
                     ({"spec": spec("b", ["/bin/true"]), "port": "80"}, "port: must be a TCP port 1..65535"),
                     ({"spec": spec("b", ["/bin/true"]), "timeout": -1}, "timeout: must be a number of seconds")):
        result = operator.job("n1", f"bad-{len(why)}", {"type": "bench", **bad})
        assert result["ok"] is False and result["error"].startswith(why), result
    # what hedge bench itself refuses comes back as its reason
    result = operator.job("n1", "bench-2", {"type": "bench", "spec": spec("b", "not a list")}, timeout=60)
    assert result["ok"] is False and result["error"].startswith("bench: ") and "command" in result["error"], result
    # a bench that takes too long is stopped at its timeout, with what it started
    marker = f"61.{os.getpid()}"  # a sleep of its own, to look for afterwards
    slow = spec("slow", ["/bin/sleep", marker])
    t0 = time.monotonic()
    result = operator.job("n1", "bench-3", {"type": "bench", "spec": slow, "runs": 1, "timeout": 2}, timeout=60)
    assert result == {"id": "bench-3", "ok": False,
                      "error": "bench: no report within the timeout of 2s (stopped)"}, result
    assert time.monotonic() - t0 < 15
    ps = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True)
    assert ps.stdout == "", ps.stdout
    assert not list(n.state.glob("fleet-bench.*"))  # its directory is gone
    # hedged stops (cleanly, or kill -9) while a bench runs: the bench stops too, and the restarted hedged
    # answers the job as interrupted
    for i, stop in enumerate((restart, lambda n: (n.kill9(), n.start()))):
        operator.publish(f"hedge/n1/jobs/cut-{i}", json.dumps({"type": "bench", "spec": slow, "runs": 1}), retain=False)
        wait_for(lambda: subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True).returncode == 0,
                 timeout=15, what="the bench's workload")
        during = operator.job("n1", f"during-{i}", {"type": "logs", "deployment": "none"}, timeout=5)
        assert during["error"] == "deployment: no deployment none on this node"  # hedged answers meanwhile
        stop(n)
        wait_for(lambda: operator.get("hedge/n1/status") == "online", timeout=15, what="n1 online again")
        wait_for(lambda: subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True).returncode == 1,
                 timeout=15, what="the bench and its workload gone")
        result = operator.job("n1", f"cut-{i}", {"type": "bench", "spec": slow, "runs": 1})
        assert result == {"id": f"cut-{i}", "ok": False, "error": "interrupted by a restart of hedged"}, result
        assert not list(n.state.glob("fleet-bench.*"))
    # the kept result across a restart, as for any job
    restart(n)
    wait_for(lambda: operator.get("hedge/n1/status") == "online", timeout=15, what="n1 online again")
    operator.latest.pop("hedge/n1/jobs/bench-1/result")
    assert operator.job("n1", "bench-1", request)["report"] == report
    # a hedged started with the fleet turned off still stops and removes what a killed one's bench left
    operator.publish("hedge/n1/jobs/cut-off", json.dumps({"type": "bench", "spec": slow, "runs": 1}), retain=False)
    wait_for(lambda: subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True).returncode == 0,
             timeout=15, what="the bench's workload")
    assert list(n.state.glob("fleet-bench.*"))
    n.kill9()
    config = json.loads(n.config.read_text())
    del config["fleet"]
    n.config.write_text(json.dumps(config))
    n.start()
    wait_for(lambda: subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True).returncode == 1,
             timeout=15, what="the bench and its workload gone")
    assert not list(n.state.glob("fleet-bench.*"))
