"""A fleet node whose link to the cloud dies without a word (docs/fleet.md; issue 15's "cut a node's link").

Stopping the cloud broker (test_fleet.py) closes every connection: the node hears a RST at once. Here the
node's traffic is dropped instead, inside a network namespace this test creates: no FIN, no RST, the TCP
connection just goes quiet on both ends. The node must find out by its MQTT keepalive, the broker must publish
the node's will (`offline`), a desired document changed meanwhile must apply once the link is back, and the
events of the outage must arrive in order.

The node (a real hedged, uplink keepalive 2 s) runs in the namespace (nsenter --net: its mount namespace,
and so cgroups and the API socket, stay the host's); the cloud mosquitto listens on the host end of a veth
pair, and the operator talks to it on 127.0.0.1. nftables rules live only in the test's namespace.
"""
import json
import os
import shutil
import signal
import subprocess

import pytest

from mqtt_util import Collector, Mosquitto, free_port, need_mqtt_tools
from test_daemon import HEDGED, SLEEP, spec, wait_for
from test_fleet import FleetNode, Operator, events_of

pytestmark = pytest.mark.skipif(not shutil.which("nft") or not shutil.which("nsenter"),
                                reason="nftables and util-linux are needed (deps/net.txt, deps/core.txt)")


def sh(*argv):
    r = subprocess.run(argv, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(argv)}: {r.stderr}"
    return r.stdout


@pytest.fixture
def netns():
    """A network namespace joined to the host by a veth pair: host end 10.201.N.1/30, namespace end .2."""
    n = os.getpid() % 250 + 1
    name, host_end, ns_end = f"hfl{os.getpid()}", f"hflh{os.getpid()}", f"hfln{os.getpid()}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
        sh("ip", "link", "set", ns_end, "netns", name)
        sh("ip", "addr", "add", f"10.201.{n}.1/30", "dev", host_end)
        sh("ip", "link", "set", host_end, "up")
        inside = ["ip", "netns", "exec", name]
        sh(*inside, "ip", "addr", "add", f"10.201.{n}.2/30", "dev", ns_end)
        sh(*inside, "ip", "link", "set", ns_end, "up")
        sh(*inside, "ip", "link", "set", "lo", "up")
        yield {"name": name, "host_ip": f"10.201.{n}.1", "inside": inside}
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


class NetnsNode(FleetNode):
    """A fleet node whose hedged runs in the test's network namespace (only that: nsenter --net)."""

    def __init__(self, tmp, hedge, cloud_host, cloud_port, node, netns):
        super().__init__(tmp, hedge, cloud_port, node)
        self.netns = netns
        config = json.loads(self.config.read_text())
        config["uplink"]["cloud"] = {"host": cloud_host, "port": cloud_port, "keepalive": 2}
        self.config.write_text(json.dumps(config))

    def start(self):
        # As Daemon.start, in the namespace; its broker listens on the namespace's loopback, out of reach here.
        self.proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{self.netns}", "--", str(HEDGED), "--config",
                                      str(self.config), "--state-dir", str(self.state), "--socket", str(self.sock)],
                                     env=self.hedge.env(), stdout=subprocess.DEVNULL, stderr=open(self.errlog, "a"))
        wait_for(lambda: self.sock.exists() and self.proc.poll() is None, what="hedged socket")
        wait_for(lambda: self.api("GET", "/v1/workloads")[0] == 200, what="hedged's API")
        return self


def test_a_link_that_goes_silent_is_noticed_and_the_node_catches_up_after_it(tmp_path, hedge, netns):
    need_mqtt_tools()
    port = free_port()
    cloud = Mosquitto(tmp_path, "cloud", extra=f"listener {port} {netns['host_ip']}\n").start()
    operator = Operator(cloud)
    node = NetnsNode(tmp_path, hedge, netns["host_ip"], port, "far", netns["name"])
    # nftables in the test's namespace: a table that drops the cloud's traffic both ways
    drop = ("table inet hfl {\n"
            f" chain out {{ type filter hook output priority 0; ip daddr {netns['host_ip']} drop; }}\n"
            f" chain in {{ type filter hook input priority 0; ip saddr {netns['host_ip']} drop; }}\n"
            "}\n")
    try:
        node.start()
        wait_for(lambda: operator.get("hedge/far/status") == "online", timeout=20, what="the node online")
        events = Collector(cloud.port, "hedge/far/events")
        operator.desire("far", 1, {"a": spec("a", SLEEP)})
        operator.wait_generation("far", 1)
        # The link goes silent: every packet between the node and the cloud is dropped, in both directions.
        r = subprocess.run([*netns["inside"], "nft", "-f", "-"], input=drop, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: node.status()["connected"] is False, timeout=20,
                 what="the node's keepalive to notice the silent link")
        wait_for(lambda: operator.get("hedge/far/status") == "offline", timeout=20,
                 what="the broker's keepalive to publish the node's will")
        # Meanwhile: the operator changes the node's document, and the node does things of its own.
        operator.desire("far", 2, {"a": spec("a", SLEEP), "b": spec("b", SLEEP)})
        assert node.deploy(spec("local1", SLEEP)).code == 0
        assert node.cli("rm", "local1").code == 0
        wait_for(lambda: node.status()["depth"] >= 3, timeout=15, what="the outage's events in the spool")
        assert operator.reported("far")["generation"] == 1
        # The link comes back: the node reconnects, applies generation 2 and sends what it held, in order.
        sh(*netns["inside"], "nft", "delete", "table", "inet", "hfl")
        operator.wait_generation("far", 2, timeout=60)
        report = operator.reported("far")
        assert report["deployments"]["b"]["state"] == "running", report
        assert "local1" not in report["deployments"], report
        wait_for(lambda: operator.get("hedge/far/status") == "online", timeout=20, what="the node online again")
        wait_for(lambda: any(e["deployment"] == "local1" and e["type"] == "removed" for e in events_of(events)),
                 timeout=30, what="the outage's events at the cloud")
        got = events_of(events)
        local = [e["type"] for e in got if e["deployment"] == "local1"]
        assert local[0] == "deployed" and local[-1] == "removed", got
        times = [e["time_ms"] for e in got]
        assert times == sorted(times), got
        events.close()
    finally:
        operator.close()
        if node.proc and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGCONT)
        node.cleanup()
        cloud.stop()
