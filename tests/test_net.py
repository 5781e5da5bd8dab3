"""Workload networking (src/net/net.c) through tests/helpers/net-driver.

Every test makes its own network namespace (hedge-test-<random>) and runs the
driver, and so the bridge, veths, taps and nftables rules, inside it; traffic
goes only to addresses in namespaces the test made. "The internet" of the
masquerade test is a second namespace joined to the first by a veth pair.
"""
import os
import pathlib
import re
import secrets
import subprocess
import time

import pytest

from conftest import BUILD, SANITIZER_ENV, check_sanitizer

DRIVER = BUILD / "tests" / "helpers" / "net-driver"
BUSYBOX = "/bin/busybox"


def sh(*args, timeout=30, check=True):
    proc = subprocess.run(list(map(str, args)), capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{args}: {proc.returncode} {proc.stderr}"
    return proc


def make_netns():
    name = f"hedge-test-{secrets.token_hex(4)}"
    proc = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot create a network namespace (ip netns add): {proc.stderr.strip()}")
    return name


class Netns:
    def __init__(self, name, state):
        self.name = name
        self.state = state

    def run(self, *args, timeout=30, check=True):
        return sh("ip", "netns", "exec", self.name, *args, timeout=timeout, check=check)

    def driver_argv(self, id, mode, *cmd, flags=()):
        return ["ip", "netns", "exec", self.name, str(DRIVER), str(self.state), id, mode, *flags, "--",
                *map(str, cmd)]

    def driver(self, id, mode, *cmd, flags=(), env=None, timeout=30):
        e = {**os.environ, **SANITIZER_ENV, **(env or {})}
        proc = subprocess.run(self.driver_argv(id, mode, *cmd, flags=flags), capture_output=True,
                              text=True, timeout=timeout, env=e)
        check_sanitizer(proc.stderr)
        return proc

    def holder(self, id, env=None):
        """A bridge workload that prints its eth0 address and waits for stdin to close."""
        return self.holder_address(self.holder_start(id, env))

    def holder_start(self, id, env=None):
        e = {**os.environ, **SANITIZER_ENV, **(env or {})}
        proc = subprocess.Popen(self.driver_argv(id, "bridge", "sh", "-c",
                                                 "ip -o -4 addr show eth0; read x; exit 0"),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=e)
        proc.id = id
        return proc

    def holder_address(self, proc):
        id = proc.id
        line = proc.stdout.readline()
        m = re.search(r"inet (\S+)", line)
        if m is None:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"holder {id} did not report an address: {line!r} {err!r}")
        proc.address = m.group(1)
        return proc

    def links(self):
        return [line.split(":")[1].strip().split("@")[0]
                for line in self.run("ip", "-o", "link").stdout.splitlines()]

    def workload_links(self):
        return [name for name in self.links() if name.startswith(("hd", "ht"))]

    def leases(self, bridge="hedge0"):
        d = pathlib.Path(self.state) / "net" / bridge / "leases"
        return sorted(p.name for p in d.iterdir()) if d.exists() else []


def release(proc):
    out, err = proc.communicate(input="", timeout=30)
    check_sanitizer(err)
    assert proc.returncode == 0, err
    return out, err


@pytest.fixture
def ns(tmp_path):
    name = make_netns()
    state = tmp_path / "netstate"
    state.mkdir()
    yield Netns(name, state)
    subprocess.run(["ip", "netns", "del", name], check=True)


def root_namespace_view():
    links = sh("ip", "-o", "link").stdout.splitlines()
    ours = sorted(l.split(":")[1].strip() for l in links
                  if l.split(":")[1].strip().startswith(("hd", "ht", "hedge")))
    forward = pathlib.Path("/proc/sys/net/ipv4/ip_forward").read_text()
    return ours, forward


@pytest.fixture(autouse=True)
def root_namespace_untouched():
    """The host's own namespace gets no hedge link and no forwarding change from these tests."""
    before = root_namespace_view()
    yield
    assert root_namespace_view() == before


def test_driver_built():
    assert DRIVER.exists(), f"{DRIVER} not built"


def test_none_has_only_lo_up(ns):
    r = ns.driver("n0ne00000001", "none", "ip", "-o", "link")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1, lines
    assert re.match(r"1: lo: <LOOPBACK,UP,LOWER_UP>", lines[0]), lines[0]
    r = ns.driver("n0ne00000002", "none", "sh", "-c", f"{BUSYBOX} ping -c1 -W2 127.0.0.1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "hedge0" not in ns.links()  # none needs no bridge
    assert ns.leases() == []


def test_host_mode_creates_nothing(ns):
    r = ns.driver("h0st00000001", "host", "ip", "-o", "link")
    assert r.returncode == 0, r.stderr
    # The driver's child has its own namespace anyway: host mode did not touch it (lo stays down).
    assert "UP" not in r.stdout.split(">")[0]
    assert ns.links() == ["lo"]
    assert ns.leases() == []


def test_bridge_address_route_and_gateway(ns):
    r = ns.driver("b0000000000a", "bridge", "sh", "-c",
                  f"ip -o -4 addr show eth0; ip route; ip -o link show lo; {BUSYBOX} ping -c1 -W2 10.89.0.1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "inet 10.89.0.2/24 brd 10.89.0.255" in r.stdout
    assert "default via 10.89.0.1 dev eth0" in r.stdout
    assert "<LOOPBACK,UP,LOWER_UP>" in r.stdout
    assert "1 packets received" in r.stdout
    # Teardown removed the veth and the lease; the bridge stays with the gateway address.
    assert ns.workload_links() == []
    assert ns.leases() == []
    assert "inet 10.89.0.1/24" in ns.run("ip", "-o", "-4", "addr", "show", "hedge0").stdout
    assert ns.run("cat", "/proc/sys/net/ipv4/ip_forward").stdout == "1\n"


def test_two_workloads_reach_each_other_and_the_gateway(ns):
    a = ns.holder("a0000000000a")
    try:
        assert "hda0000000000a" in ns.workload_links()
        assert "master hedge0" in ns.run("ip", "-o", "link", "show", "hda0000000000a").stdout
        a_ip = a.address.split("/")[0]
        r = ns.driver("b0000000000b", "bridge", "sh", "-c",
                      f"ip -o -4 addr show eth0 && {BUSYBOX} ping -c1 -W2 {a_ip} && {BUSYBOX} ping -c1 -W2 10.89.0.1")
        assert r.returncode == 0, r.stdout + r.stderr
        b_ip = re.search(r"inet (\S+)/", r.stdout).group(1)
        assert b_ip != a_ip
        assert r.stdout.count("1 packets received") == 2
        # And from the host side (the namespace holding the bridge) to the workload.
        ns.run(BUSYBOX, "ping", "-c1", "-W2", a_ip)
    finally:
        release(a)
    assert ns.workload_links() == []
    assert ns.leases() == []


def test_addresses_unique_then_released(ns):
    holders = [ns.holder(f"u{i:011d}") for i in range(5)]
    try:
        addresses = [h.address for h in holders]
        assert len(set(addresses)) == 5, addresses
        assert sorted(addresses) == sorted(f"10.89.0.{i}/24" for i in range(2, 7))
        assert ns.leases() == sorted(a.split("/")[0] for a in addresses)
    finally:
        for h in holders:
            release(h)
    assert ns.leases() == []
    assert ns.workload_links() == []
    for i in range(5):
        r = ns.driver(f"s{i:011d}", "bridge", "ip", "-o", "-4", "addr", "show", "eth0")
        assert r.returncode == 0, r.stderr
        assert "inet 10.89.0.2/24" in r.stdout  # the lowest address is free again each time
        assert ns.leases() == []
        assert ns.workload_links() == []


def test_concurrent_setups_get_distinct_addresses(ns):
    # Started together: the lease lock serialises them.
    started = [ns.holder_start(f"c{i:011d}") for i in range(8)]
    holders = []
    try:
        for proc in started:
            holders.append(ns.holder_address(proc))
        addresses = [h.address for h in holders]
        assert sorted(addresses) == sorted(f"10.89.0.{i}/24" for i in range(2, 10))
        assert len(ns.workload_links()) == 8
    finally:
        for h in started:
            if h.poll() is None:
                release(h)
    assert ns.leases() == []
    assert ns.workload_links() == []


def test_stale_lease_of_dead_run_is_reclaimed(ns):
    r = ns.driver("d0000000000d", "bridge", "true", flags=["--keep"])
    assert r.returncode == 0, r.stderr
    assert ns.leases() == ["10.89.0.2"]
    lease = pathlib.Path(ns.state) / "net" / "hedge0" / "leases" / "10.89.0.2"
    assert lease.read_text() == "d0000000000d hdd0000000000d\n"
    # The workload's namespace died with it, taking the veth along (asynchronously).
    deadline = time.monotonic() + 10
    while ns.workload_links() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ns.workload_links() == []
    r = ns.driver("e0000000000e", "bridge", "sh", "-c", "ip -o -4 addr show eth0; cat " + str(lease))
    assert r.returncode == 0, r.stderr
    assert "inet 10.89.0.2/24" in r.stdout
    assert "e0000000000e hde0000000000e" in r.stdout  # the new owner holds the reclaimed address
    assert ns.leases() == []


def test_masquerade_to_outside(ns, tmp_path):
    inet = make_netns()  # "the internet": reachable from ns only
    try:
        ns.run("ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", inet)
        ns.run("ip", "addr", "add", "192.0.2.1/24", "dev", "up0")
        ns.run("ip", "link", "set", "up0", "up")
        sh("ip", "netns", "exec", inet, "ip", "addr", "add", "192.0.2.2/24", "dev", "up1")
        sh("ip", "netns", "exec", inet, "ip", "link", "set", "up1", "up")
        sh("ip", "netns", "exec", inet, "ip", "link", "set", "lo", "up")
        server = subprocess.Popen(
            ["ip", "netns", "exec", inet, "/usr/bin/python3", "-c",
             "import socket\n"
             "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
             "s.bind(('192.0.2.2', 7000)); s.listen(1); print('ready', flush=True)\n"
             "s.settimeout(20); c, addr = s.accept(); data = c.recv(100)\n"
             "print(addr[0], data.decode().strip(), flush=True)\n"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert server.stdout.readline() == "ready\n"
            r = ns.driver("m0000000000m", "bridge", "sh", "-c",
                          f"echo hello | {BUSYBOX} nc -w 5 192.0.2.2 7000")
            assert r.returncode == 0, r.stdout + r.stderr
            out, err = server.communicate(timeout=30)
        finally:
            if server.poll() is None:
                server.kill()
                server.communicate()
        # Seen from outside, the workload (10.89.0.2) speaks with the uplink's address.
        assert out == "192.0.2.1 hello\n", err
        rules = ns.run("nft", "list", "table", "ip", "hedge-hedge0").stdout
        assert 'ip saddr 10.89.0.0/24 oifname != "hedge0" masquerade' in rules
        assert "type nat hook postrouting priority srcnat" in rules
    finally:
        subprocess.run(["ip", "netns", "del", inet], check=True)
    assert ns.workload_links() == []
    assert ns.leases() == []


def test_masquerade_rule_restored_if_flushed(ns):
    assert ns.driver("f000000000f1", "bridge", "true").returncode == 0
    ns.run("nft", "flush", "ruleset")
    r = ns.driver("f000000000f2", "bridge", "true")
    assert r.returncode == 0, r.stderr
    rules = ns.run("nft", "list", "ruleset").stdout
    assert rules.count("masquerade") == 1, rules


def test_tap_on_the_bridge(ns):
    r = ns.driver("t0000000000t", "tap", "sh", "-c", "ip -o link show master hedge0; ip -d -o link show htt0000000000t")
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0].split()
    assert first[:5] == ["tap", "htt0000000000t", "10.89.0.2/24", "10.89.0.1", first[4]]
    assert "htt0000000000t" in r.stdout.splitlines()[1]
    assert "tun type tap" in r.stdout and "vnet_hdr on" in r.stdout
    assert ns.workload_links() == []
    assert ns.leases() == []


def test_tap_removed_while_another_process_holds_it(ns, tmp_path):
    """Teardown removes the tap even if the hypervisor still holds its fd (it outlived hedge)."""
    pidfile = tmp_path / "holder.pid"
    r = ns.driver("t000000000t2", "tap", "sh", "-c", f"sleep 30 >/dev/null 2>&1 & echo $! > {pidfile}")
    holder = int(pidfile.read_text())
    try:
        assert r.returncode == 0, r.stderr
        assert os.readlink(f"/proc/{holder}/fd/3") == "/dev/net/tun"
        assert ns.workload_links() == []
        assert ns.leases() == []
    finally:
        os.kill(holder, 9)


def test_setup_for_a_gone_pid_fails_cleanly(ns):
    r = ns.driver("x0000000000x", "bridge", "true", flags=["--dead-pid"])
    assert r.returncode == 125
    assert re.search(r"net-driver: network bridge: workload pid \d+: /proc/\d+/ns/net: No such file", r.stderr), r.stderr
    assert ns.links() == ["lo"]
    assert ns.leases() == []


def test_setup_refuses_the_callers_namespace(ns):
    for mode in ("bridge", "none"):
        r = ns.driver("w0000000000w", mode, "true", flags=["--same-netns"])
        assert r.returncode == 125
        assert "shares the caller's network namespace" in r.stderr, r.stderr
    assert ns.links() == ["lo"]
    assert ns.leases() == []


def test_setup_failing_at_veth_leaves_nothing(ns):
    # Somebody else's link already has the name: the veth cannot be made, after the lease was taken.
    ns.run("ip", "link", "add", "hdx0000000000x", "type", "veth", "peer", "name", "other0")
    r = ns.driver("x0000000000x", "bridge", "true")
    assert r.returncode == 125
    assert re.search(r"create veth hdx0000000000x \(eth0 in pid \d+\): File exists", r.stderr), r.stderr
    assert ns.leases() == []
    assert sorted(ns.workload_links()) == ["hdx0000000000x"]  # not ours: left alone


def test_existing_non_bridge_is_not_used(ns):
    ns.run("ip", "link", "add", "hbx", "type", "veth", "peer", "name", "hby")
    r = ns.driver("v0000000000v", "bridge", "true", env={"HEDGE_BRIDGE": "hbx"})
    assert r.returncode == 125
    assert "bridge hbx: the interface exists and is not a bridge (veth)" in r.stderr, r.stderr
    assert ns.run("ip", "-o", "addr", "show", "hbx").stdout == ""
    assert ns.leases("hbx") == []


def test_setup_failing_inside_leaves_nothing(ns):
    # The workload's namespace already has a default route: the last step (route) fails.
    prepare = ("ip link add x0 type veth peer name x1 && ip link set x0 up && ip link set x1 up"
               " && ip route add default dev x0")
    r = ns.driver("y0000000000y", "bridge", "true", env={"NET_DRIVER_PREPARE": prepare})
    assert r.returncode == 125
    assert "add default route via 10.89.0.1: File exists" in r.stderr, r.stderr
    assert ns.workload_links() == []
    assert ns.leases() == []


def test_bridge_name_and_subnet_overrides_and_exhaustion(ns):
    env = {"HEDGE_BRIDGE": "hbtest", "HEDGE_BRIDGE_SUBNET": "10.90.5.0/30"}
    a = ns.holder("o0000000000o", env=env)
    try:
        assert a.address == "10.90.5.2/30"
        assert "inet 10.90.5.1/30" in ns.run("ip", "-o", "-4", "addr", "show", "hbtest").stdout
        assert ns.leases("hbtest") == ["10.90.5.2"]
        r = ns.driver("p0000000000p", "bridge", "true", env=env)
        assert r.returncode == 125
        assert "no free address in 10.90.5.0/30: No space left on device" in r.stderr, r.stderr
        assert ns.leases("hbtest") == ["10.90.5.2"]
    finally:
        release(a)
    assert ns.leases("hbtest") == []
    assert "hedge0" not in ns.links()
    assert ns.workload_links() == []


@pytest.mark.parametrize("subnet,message", [
    ("10.89.0.1/24", "host bits are set"),
    ("10.89.0.0/8", "prefix must be 16 to 30"),
    ("10.89.0.0", "expected an IPv4 CIDR"),
    ("10.89.300.0/24", "\"10.89.300.0\" is not an IPv4 address"),
])
def test_bad_subnet_is_refused(ns, subnet, message):
    r = ns.driver("z0000000000z", "bridge", "true", env={"HEDGE_BRIDGE_SUBNET": subnet})
    assert r.returncode == 125
    assert f'HEDGE_BRIDGE_SUBNET "{subnet}": {message}' in r.stderr, r.stderr
    assert ns.links() == ["lo"]


def test_bad_bridge_name_is_refused(ns):
    r = ns.driver("z0000000000y", "bridge", "true", env={"HEDGE_BRIDGE": "bad name/x"})
    assert r.returncode == 125
    assert 'HEDGE_BRIDGE "bad name/x": not a valid interface name' in r.stderr, r.stderr
    assert ns.links() == ["lo"]


# ---- end to end: hedge run --isolation container (the container backend calls hd_net_setup) ----

def in_netns(ns):
    """Enter only the network namespace: `ip netns exec` also remounts /sys, which hides the cgroup mounts."""
    return ["nsenter", f"--net=/run/netns/{ns.name}"]


def hedge_in(ns, hedge, *args, timeout=60):
    proc = subprocess.run([*in_netns(ns), hedge.binary, *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=hedge.env())
    check_sanitizer(proc.stderr)
    return proc


def hedge_leases(dirs, bridge="hedge0"):
    d = dirs["state"] / "net" / bridge / "leases"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_container_none_brings_up_lo(ns, hedge, busybox_rootfs):
    r = hedge_in(ns, hedge, "run", "-i", "container", "--rootfs", busybox_rootfs, "--",
                 "sh", "-c", "ip -o link; ping -c1 -W2 127.0.0.1")
    assert r.returncode == 0, r.stderr
    links = [line for line in r.stdout.splitlines() if re.match(r"\d+: ", line)]
    assert len(links) == 1 and links[0].startswith("1: lo: <LOOPBACK,UP,LOWER_UP>"), r.stdout
    assert "1 packets received" in r.stdout


def test_container_bridge_end_to_end(ns, hedge, dirs, busybox_rootfs):
    listener = subprocess.Popen(
        [*in_netns(ns), hedge.binary, "run", "-i", "container", "--rootfs", str(busybox_rootfs),
         "--network", "bridge", "--", "sh", "-c",
         # nc's stdin must stay open (not EOF) or busybox nc may close before the peer's data arrives
         "ip -o -4 addr show eth0; sleep 5 | nc -l -p 5000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=hedge.env())
    try:
        line = listener.stdout.readline()
        m = re.search(r"inet (\S+)/24", line)
        assert m, line + listener.stderr.read() if listener.poll() is not None else line
        a_ip = m.group(1)
        assert hedge_leases(dirs) == [a_ip]
        r = hedge_in(ns, hedge, "run", "-i", "container", "--rootfs", busybox_rootfs, "--network", "bridge", "--",
                     "sh", "-c", f"ip route; ping -c1 -W2 {a_ip} && ping -c1 -W2 10.89.0.1 && "
                                 # retried: the listener may not be listening yet
                                 f"for i in 1 2 3 4 5 6 7 8 9 10; do echo hello | nc -w 2 {a_ip} 5000 && break; "
                                 f"sleep 0.2; done")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "default via 10.89.0.1 dev eth0" in r.stdout
        assert r.stdout.count("1 packets received") == 2
        out, err = listener.communicate(timeout=30)
        check_sanitizer(err)
        assert listener.returncode == 0, err
        assert out == "hello\n"
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.communicate()
    assert hedge_leases(dirs) == []
    assert ns.workload_links() == []


def test_container_bridge_in_a_user_namespace(ns, hedge, dirs, busybox_rootfs):
    """The workload's network namespace belongs to its own user namespace: setup still works from the host."""
    r = hedge_in(ns, hedge, "run", "-i", "container", "--rootfs", busybox_rootfs, "--network", "bridge",
                 "--userns", "0:100000:65536", "--", "sh", "-c",
                 "cat /proc/self/uid_map; ip -o -4 addr show eth0; ping -c1 -W2 10.89.0.1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split()[2] == "65536"  # inside a user namespace (the host's map is 4294967295 wide)
    assert "inet 10.89.0.2/24" in r.stdout
    assert "1 packets received" in r.stdout
    assert hedge_leases(dirs) == []
    assert ns.workload_links() == []
