"""`hedge bench`: the report (structure, units, SVG, HTML rendered by Chromium), the sockperf
cross-check of the RR client, the bench's own network namespace and cleanup, the lock, and
clear errors for bad arguments.

Runs are kept short (fractions of a second per test); the figures themselves are checked
for consistency (p50 <= p90 <= p99, transactions/s against latency), not for speed.
"""
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET

import pytest

from conftest import BUILD, CGROUP_PARENT, SANITIZED, check_sanitizer

ECHO_SERVER = BUILD / "hedge-echo-server"
SHORT = ["--runs", "2", "--duration", "0.4", "--warmup", "0.1"]
RR_FIGURES = {
    "start_to_ready_ms": "ms",
    "rr_latency_p50_us": "\u00b5s",
    "rr_latency_p90_us": "\u00b5s",
    "rr_latency_p99_us": "\u00b5s",
    "rr_transactions_per_s": "1/s",
    "stream_throughput_mbit_s": "Mbit/s",
    "host_cpu_s_per_10k_transactions": "CPU s",
    "workload_cpu_s_per_10k_transactions": "CPU s",
    "workload_memory_mib": "MiB",
    "runtime_overhead_memory_mib": "MiB",
}
SVG_NS = "{http://www.w3.org/2000/svg}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_with(marker):
    """Pids whose command line mentions marker (a path unique to this test)."""
    found = []
    for d in pathlib.Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd:
            found.append((int(d.name), cmd))
    return found


def echo_servers():
    """Echo servers of this test session: this build's hedge-echo-server (same executable) or one that runs
    in this session's cgroup parent (the copy in the bench's container image). Neither a compiler building
    echo-server.c nor the echo servers of another test session running beside this one count."""
    ours = os.stat(ECHO_SERVER)
    found = []
    for pid, cmd in processes_with("hedge-echo-server"):
        try:
            exe = os.stat(f"/proc/{pid}/exe")
            cgroups = pathlib.Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        if (exe.st_dev, exe.st_ino) == (ours.st_dev, ours.st_ino) or f"/{CGROUP_PARENT}/" in cgroups:
            found.append((pid, cmd))
    return found


def processes_in_netns(netns):
    found = []
    for d in pathlib.Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.readlink(d / "ns" / "net") == netns:
                    found.append(int(d.name))
            except OSError:
                pass
    return found


_echo_before = set()


@pytest.fixture(autouse=True)
def echo_servers_before():
    """hedge-echo-server processes that already ran before the test (not ours to account for)."""
    _echo_before.clear()
    _echo_before.update(pid for pid, _ in echo_servers())
    yield


def assert_nothing_left(dirs, report=None):
    left = [p for p in echo_servers() if p[0] not in _echo_before]
    left += processes_with(str(dirs["state"]))
    assert left == [], f"processes left behind: {left}"
    if report and report.get("netns"):
        assert processes_in_netns(report["netns"]) == [], f"processes still in {report['netns']}"
    if os.path.isdir("/run/netns"):
        assert [n for n in os.listdir("/run/netns") if n.startswith("hedge-bench")] == []


def run_builtin(hedge, out, *extra, timeout=120):
    return hedge("bench", "--builtin", "echo", "--isolation", "process", *SHORT, "--out", out, *extra,
                 timeout=timeout)


@pytest.fixture
def process_report(hedge, dirs, tmp_path):
    out = tmp_path / "report"
    r = run_builtin(hedge, out)
    assert r.code == 0, r
    report = json.loads((out / "report.json").read_text())
    assert_nothing_left(dirs, report)
    return r, out, report


def test_builtin_echo_process_report(process_report):
    r, out, report = process_report
    host = report["host"]
    for key in ("hostname", "kernel", "machine", "cgroup_mode", "vm_accelerator"):
        assert isinstance(host[key], str) and host[key], key
    assert host["cpus"] == os.cpu_count()
    assert host["kernel"].split()[1] == os.uname().release
    assert host["vm_accelerator"] == "not used (no vm level)"
    assert report["settings"]["levels"] == ["process"]
    assert report["settings"]["runs"] == 2 and report["settings"]["interleaved"] is True
    assert report["workload"]["protocol"] == "message"
    assert report["workload"]["request_bytes"] == 64 and report["workload"]["response_bytes"] == 64
    assert re.fullmatch(r"net:\[\d+\]", report["netns"])
    assert report["netns"] != os.readlink("/proc/self/ns/net")

    units = {f["key"]: f["unit"] for f in report["figures"]}
    assert units == RR_FIGURES
    res = report["results"]["process"]
    for key in RR_FIGURES:
        fig = res[key]
        assert len(fig["samples"]) == 2, key
        assert fig["min"] <= fig["median"] <= fig["max"], key
        assert fig["median"] == pytest.approx(statistics.median(fig["samples"]), rel=1e-4), key
        if fig["median"] > 0:
            assert fig["ratio_to_process"] == pytest.approx(1.0), key
        else:  # no ratio to a zero
            assert fig["ratio_to_process"] is None, key
    p50, p90, p99 = (res[f"rr_latency_{p}_us"]["median"] for p in ("p50", "p90", "p99"))
    assert 0 < p50 <= p90 <= p99 < 1e6
    # one transaction in flight: in each run, transactions/s is about 1 / mean latency (per run: the medians
    # of two figures may come from different runs, and a loaded machine makes runs differ)
    runs = zip(*(res[k]["samples"] for k in ("rr_transactions_per_s", "rr_latency_p50_us", "rr_latency_p99_us")))
    for tps, run_p50, run_p99 in runs:
        assert 1e6 / run_p99 / 2 < tps < 1e6 / run_p50 * 1.5, (tps, run_p50, run_p99)
    assert 0 < res["start_to_ready_ms"]["median"] < 10000
    assert res["stream_throughput_mbit_s"]["median"] > 10
    assert res["host_cpu_s_per_10k_transactions"]["median"] > 0
    assert res["workload_cpu_s_per_10k_transactions"]["median"] > 0
    assert 0.05 < res["workload_memory_mib"]["median"] < 128

    # the terminal table and the progress
    assert "RR latency p50" in r.out and "process" in r.out and "cgroup mode" in r.out
    assert "hedge bench: process, repetition 1 of 2" in r.err
    assert "hedge bench: process, repetition 2 of 2" in r.err
    assert "s left)" in r.err


def test_json_output_is_quiet(hedge, dirs, tmp_path):
    r = hedge("bench", "--builtin", "echo", "-i", "process", "--runs", "1", "--duration", "0.2", "--warmup", "0",
              "--no-stream", "--json")
    assert r.code == 0, r
    assert r.err == ""
    report = json.loads(r.out)
    assert "stream_throughput_mbit_s" not in report["results"]["process"]
    assert report["results"]["process"]["rr_latency_p50_us"]["median"] > 0
    assert not (tmp_path / "hedge-bench-report").exists()
    assert_nothing_left(dirs, report)


def test_svg_charts_are_valid(process_report):
    _, out, report = process_report
    keys = [f["key"] for f in report["figures"]]
    files = sorted(p.stem for p in (out / "charts").glob("*.svg"))
    assert files == sorted(keys)
    html = (out / "report.html").read_text()
    inline = re.findall(r"<svg .*?</svg>", html, re.S)
    assert len(inline) == len(keys)
    for key, text in zip(keys, inline):
        root = ET.fromstring(text)
        assert root.tag == SVG_NS + "svg"
        assert root.get("data-figure") == key
        texts = ["".join(t.itertext()) for t in root.iter(SVG_NS + "text")]
        assert "process" in texts
        if report["results"]["process"][key]["median"] > 0:
            assert "1.00\u00d7" in texts, f"{key}: no ratio on the process bar"
        bars = [r for r in root.iter(SVG_NS + "rect") if r.get("fill") == "#4c78a8"]
        assert len(bars) == 1
    for key in keys:
        root = ET.parse(out / "charts" / f"{key}.svg").getroot()
        assert root.get("data-figure") == key
    for word in (report["host"]["kernel"], report["host"]["cgroup_mode"], "vm accelerator"):
        assert word in html


def read_png_pixels(path):
    Image = pytest.importorskip("PIL.Image", reason="python3-pil is needed to read the screenshot")
    with Image.open(path) as im:
        rgb = im.convert("RGB")
        return rgb.size, list(rgb.getdata())


def test_html_renders_in_chromium(process_report, tmp_path):
    _, out, report = process_report
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian package chromium)")
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with tempfile.TemporaryDirectory() as profile:
        r = subprocess.run([chromium, *flags, f"--user-data-dir={profile}", f"--screenshot={shot}",
                            "--window-size=1000,3200", f"file://{out}/report.html"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        dom = subprocess.run([chromium, *flags, f"--user-data-dir={profile}", "--dump-dom",
                              f"file://{out}/report.html"], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr
    assert dom.stdout.count("<svg") == len(report["figures"])
    (w, h), pixels = read_png_pixels(shot)
    assert (w, h) == (1000, 3200)
    colours = {}
    for p in pixels:
        colours[p] = colours.get(p, 0) + 1
    assert len(colours) > 50, "the screenshot is (nearly) blank"
    bar = colours.get((0x4c, 0x78, 0xa8), 0)
    # every chart with a non-zero median draws a bar of at least ~50x10 pixels
    drawn = sum(1 for k in report["results"]["process"].values() if k["median"] > 0)
    assert bar > drawn * 500, f"bar colour covers only {bar} pixels for {drawn} charts"


def sockperf_p50(port, seconds, pin):
    r = subprocess.run([*pin, "sockperf", "ping-pong", "--tcp", "-i", "127.0.0.1", "-p", str(port), "-t", str(seconds),
                        "-m", "64", "--full-rtt"], capture_output=True, text=True, timeout=60)
    m = re.search(r"percentile 50\.000 =\s+([\d.]+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    return float(m.group(1))


def hedge_p50(hedge, port, seconds, pin):
    r = subprocess.run([*pin, hedge.binary, "bench", "--connect", f"127.0.0.1:{port}", "--runs", "1", "--duration",
                        seconds, "--warmup", "0.2", "--json"], env=hedge.env(), capture_output=True, text=True,
                       timeout=60)
    check_sanitizer(r.stderr)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["results"]["external"]["rr_latency_p50_us"]["median"]


def wait_port(port, proc):
    for _ in range(200):
        assert proc.poll() is None, "server exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise AssertionError(f"port {port} never opened")


def test_rr_latency_agrees_with_sockperf(hedge):
    """hedge's RR client and `sockperf ping-pong` against the same server, for `sockperf server` and for
    hedge-echo-server: their p50 round trips agree within 15%.

    The machine is shared (other test sessions load both cores) and its latency switches between a
    fast and a slow mode from one second to the next (about 9.5 and 13-17 us here, for both clients
    alike). So the clients take turns for 12 one-second rounds each, and their figures are compared
    two ways: the median p50 (the usual mode) and the lowest p50 (the fast mode, as load only adds
    latency). They agree if either comparison is within 15%: a client that measured wrongly would be
    off in both, while one client missing the fast mode by chance is off in only one. Server
    and clients are pinned to one CPU, so no round gains or loses by where the scheduler put them."""
    if shutil.which("sockperf") is None:
        pytest.skip("sockperf is not installed (Debian package sockperf)")
    if SANITIZED:
        pytest.skip("a latency comparison of instrumented code says nothing of the product's client; the "
                    "plain pass runs this test")
    sp_port, echo_port = free_port(), free_port()
    pin = ["taskset", "-c", str(max(os.sched_getaffinity(0)))]
    servers = [subprocess.Popen([*pin, "sockperf", "server", "--tcp", "-i", "127.0.0.1", "-p", str(sp_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
               subprocess.Popen([*pin, str(ECHO_SERVER), "--address", "127.0.0.1", "--port", str(echo_port)])]
    try:
        wait_port(sp_port, servers[0])
        wait_port(echo_port, servers[1])
        for port in (sp_port, echo_port):
            ours, theirs = [], []
            for _ in range(12):
                ours.append(hedge_p50(hedge, port, "1", pin))
                theirs.append(sockperf_p50(port, 1, pin))
            by_min = abs(min(ours) - min(theirs)) / min(theirs)
            by_median = abs(statistics.median(ours) - statistics.median(theirs)) / statistics.median(theirs)
            assert min(by_min, by_median) <= 0.15, \
                f"port {port}: hedge p50 {sorted(ours)} vs sockperf p50 {sorted(theirs)}"
    finally:
        for s in servers:
            s.kill()
            s.wait()


def test_spec_workload_sockperf_server(hedge, dirs, tmp_path):
    """Any spec serving a port: `sockperf server` run as a process workload in the bench's netns."""
    if shutil.which("sockperf") is None:
        pytest.skip("sockperf is not installed (Debian package sockperf)")
    spec = tmp_path / "sockperf.json"
    spec.write_text(json.dumps({"name": "sockperf", "command": [shutil.which("sockperf"), "server", "--tcp",
                                                                  "-i", "127.0.0.1", "-p", "11111"]}))
    r = hedge("bench", "-f", spec, "--port", "11111", "--protocol", "message", "-i", "process", *SHORT,
              "--json", timeout=120)
    assert r.code == 0, r
    report = json.loads(r.out)
    res = report["results"]["process"]
    assert report["workload"]["name"] == "sockperf"
    assert res["rr_latency_p50_us"]["median"] > 0
    assert "stream_throughput_mbit_s" not in res  # sockperf server does not count a stream
    assert processes_in_netns(report["netns"]) == []


def test_spec_workload_default_connect_protocol(hedge, dirs, tmp_path):
    """A spec serving a port with an unknown protocol: a transaction is a TCP connect and close."""
    spec = tmp_path / "server.json"
    spec.write_text(json.dumps({"name": "server", "command": [str(ECHO_SERVER), "--port", "8080"]}))
    r = hedge("bench", "-f", spec, "--port", "8080", "-i", "process", *SHORT, "--json")
    assert r.code == 0, r
    report = json.loads(r.out)
    assert report["workload"]["protocol"] == "connect"
    res = report["results"]["process"]
    assert 0 < res["rr_latency_p50_us"]["median"] <= res["rr_latency_p99_us"]["median"]
    assert "stream_throughput_mbit_s" not in res
    assert_nothing_left(dirs, report)


def test_run_to_completion(hedge, dirs, tmp_path):
    spec = tmp_path / "true.json"
    spec.write_text(json.dumps({"command": ["/bin/true"]}))
    r = hedge("bench", "-f", spec, "--run-to-completion", "-i", "process", "--runs", "3", "--json")
    assert r.code == 0, r
    res = json.loads(r.out)["results"]["process"]
    assert list(res) == ["start_to_exit_ms"]
    assert len(res["start_to_exit_ms"]["samples"]) == 3
    assert 0 < res["start_to_exit_ms"]["median"] < 5000


def test_run_to_completion_failure_is_an_error(hedge, tmp_path):
    spec = tmp_path / "false.json"
    spec.write_text(json.dumps({"command": ["/bin/false"]}))
    r = hedge("bench", "-f", spec, "--run-to-completion", "-i", "process", "--runs", "1")
    assert r.code == 125
    assert "process, repetition 1: the workload exited with code 1" in r.err


@pytest.mark.parametrize("kind", ["cpu", "memory", "fork"])
def test_neighbour(hedge, dirs, tmp_path, kind):
    r = hedge("bench", "--builtin", "echo", "-i", "process", "--runs", "1", "--duration", "0.3", "--warmup", "0.1",
              "--no-stream", "--neighbour", kind, "--json", timeout=120)
    assert r.code == 0, r
    report = json.loads(r.out)
    assert report["settings"]["neighbour"] == kind
    res = report["results"]["process"]
    for key in ("neighbour_rr_latency_p50_us", "neighbour_rr_latency_p99_us", "neighbour_rr_transactions_per_s"):
        assert res[key]["median"] > 0, key
    assert res["neighbour_rr_latency_p50_us"]["median"] <= res["neighbour_rr_latency_p99_us"]["median"]
    assert_nothing_left(dirs, report)


def test_refuses_a_second_bench(hedge, dirs):
    first = subprocess.Popen([hedge.binary, "bench", "--builtin", "echo", "-i", "process", "--runs", "1",
                              "--duration", "3", "--warmup", "0", "--no-stream", "--json"],
                             env=hedge.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = dirs["run"] / "bench.lock"
        for _ in range(200):
            if lock.exists() and lock.read_text().strip() == str(first.pid):
                break
            time.sleep(0.01)
        r = hedge("bench", "--builtin", "echo", "-i", "process", "--runs", "1", "--duration", "0.1")
        assert r.code == 125
        assert f"another hedge bench is running (pid {first.pid} holds {lock})" in r.err
    finally:
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert_nothing_left(dirs, json.loads(out))


def test_interrupt_cleans_up(hedge, dirs):
    p = subprocess.Popen([hedge.binary, "bench", "--builtin", "echo", "-i", "process", "--runs", "1",
                          "--duration", "30", "--warmup", "0", "--no-stream"],
                         env=hedge.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(500):
        if [p for p in echo_servers() if p[0] not in _echo_before]:
            break
        time.sleep(0.01)
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 125
    assert "Interrupted system call" in err
    assert_nothing_left(dirs)


def test_no_port_is_a_usage_error(hedge, tmp_path):
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps({"command": ["/bin/true"]}))
    r = hedge("bench", "-f", spec)
    assert r.code == 2
    assert f"hedge bench: -f {spec}: no port; give --port PORT for a server" in r.err


def test_port_never_opens(hedge, dirs, tmp_path):
    spec = tmp_path / "sleep.json"
    spec.write_text(json.dumps({"command": ["/bin/sleep", "30"]}))
    r = hedge("bench", "-f", spec, "--port", "9", "-i", "process", "--runs", "1", "--ready-timeout", "0.5")
    assert r.code == 125
    assert "hedge: bench: process, repetition 1: 127.0.0.1:9 did not accept a connection within 0.5 s" in r.err
    assert processes_with(str(spec)) == [] and processes_with("/bin/sleep 30") == []
    assert_nothing_left(dirs)


def test_workload_exits_before_ready(hedge, dirs, tmp_path):
    spec = tmp_path / "echo.json"
    spec.write_text(json.dumps({"command": ["/bin/sh", "-c", "echo cannot bind >&2; exit 3"]}))
    r = hedge("bench", "-f", spec, "--port", "9", "-i", "process", "--runs", "1")
    assert r.code == 125
    assert "the workload exited before 127.0.0.1:9 accepted a connection" in r.err
    assert 'its last output: "cannot bind"' in r.err


@pytest.mark.parametrize("args,message", [
    (["--builtin", "echo", "--isolation", "process,bogus"],
     'hedge bench: --isolation: "bogus" is not an isolation level (process, container or vm)'),
    (["--builtin", "echo", "--isolation", "process,process"], '--isolation: "process" is listed twice'),
    (["--builtin", "nginx"], '--builtin: "nginx" is not a built-in workload (echo)'),
    ([], "nothing to measure"),
    (["--builtin", "echo", "--port", "0"], '--port: "0" is not a TCP port (1..65535)'),
    (["--builtin", "echo", "--neighbour", "disk"], '--neighbour: "disk" is not a neighbour (cpu, memory or fork)'),
    (["--builtin", "echo", "--runs", "zero"], '--runs: "zero" is not a repetition count'),
    (["--builtin", "echo", "--request-size", "8"], "requests need at least 18 bytes"),
    (["--connect", "127.0.0.1:1", "--neighbour", "cpu"], "--neighbour needs a workload"),
])
def test_bad_arguments(hedge, args, message):
    r = hedge("bench", *args)
    assert r.code == 2, r
    assert message in r.err
    assert "usage: hedge bench" in r.err


def test_builtin_echo_container(hedge, dirs, tmp_path, busybox_rootfs):
    r = hedge("run", "--isolation", "container", "--rootfs", busybox_rootfs, "--", "/bin/busybox", "true")
    if r.code != 0:
        pytest.skip(f"container isolation does not run here: {r.err.strip()}")
    out = tmp_path / "report"
    r = hedge("bench", "--builtin", "echo", "--isolation", "process,container", "--runs", "1", "--duration",
              "0.3", "--warmup", "0.1", "--out", out, timeout=300)
    assert r.code == 0, r
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["levels"] == ["process", "container"]
    res = report["results"]["container"]
    for key in ("start_to_ready_ms", "rr_latency_p50_us", "rr_transactions_per_s", "stream_throughput_mbit_s",
                "workload_cpu_s_per_10k_transactions", "workload_memory_mib"):
        assert res[key]["median"] > 0, key
        assert res[key]["ratio_to_process"] > 0, key
    assert "container" in (out / "report.html").read_text()
    assert_nothing_left(dirs, report)
    # the echo workload's image was built into the image store at first use, named by the binary's digest
    digest = hashlib.sha256(ECHO_SERVER.read_bytes()).hexdigest()
    images = hedge("image", "ls")
    assert images.code == 0, images
    assert f"hedge-bench/echo:{digest[:12]}" in images.out


def net_links(pid="self"):
    with open(f"/proc/{pid}/net/dev") as f:
        return {line.split(":")[0].strip() for line in f.readlines()[2:]}


def test_container_network_lives_in_the_bench_netns(hedge, dirs, busybox_rootfs):
    """The bridge and the container's veth are made in the bench's own namespace, never on the host,
    and go away with it."""
    r = hedge("run", "--isolation", "container", "--rootfs", busybox_rootfs, "--", "/bin/busybox", "true")
    if r.code != 0:
        pytest.skip(f"container isolation does not run here: {r.err.strip()}")
    host_before = net_links()
    p = subprocess.Popen([hedge.binary, "bench", "--builtin", "echo", "-i", "container", "--runs", "1",
                          "--duration", "2", "--warmup", "0", "--no-stream", "--json"],
                         env=hedge.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = set()
    try:
        for _ in range(1000):
            if p.poll() is not None:
                break
            try:
                seen = net_links(p.pid)
            except OSError:
                break
            if "hedge0" in seen and any(n.startswith("hd") for n in seen):
                break
            time.sleep(0.01)
    finally:
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    veths = {n for n in seen if n.startswith("hd")}
    assert "hedge0" in seen and veths, f"links in the bench's namespace: {seen}"
    host_after = net_links()
    assert veths & host_after == set(), "the container's veth showed up on the host"
    new_on_host = host_after - host_before
    assert [n for n in new_on_host if n.startswith(("hd", "ht")) or n == "hedge0"] == [], new_on_host
    report = json.loads(out)
    assert processes_in_netns(report["netns"]) == []
    assert_nothing_left(dirs, report)


KERNEL_DIR = BUILD / "guest-kernel"


@pytest.fixture(scope="module")
def guest_kernel():
    """The vm backend's guest kernel (fetched into the build dir once, as tests/test_vm.py does)."""
    missing = [t for t in ("qemu-system-x86_64", "mkfs.erofs") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"vm needs {', '.join(missing)} (deps/vm.txt)")
    if not (KERNEL_DIR / "vmlinuz").exists():
        r = subprocess.run([str(pathlib.Path(__file__).parent.parent / "scripts" / "fetch-guest-kernel"),
                            str(KERNEL_DIR)], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            pytest.skip(f"guest kernel not available: {r.stderr.strip()}")
    return KERNEL_DIR


def test_vm_run_to_completion(hedge, dirs, tmp_path, busybox_rootfs, guest_kernel):
    """Start-to-exit under vm beside container, and the accelerator named in the report (TCG here)."""
    spec = tmp_path / "true.json"
    spec.write_text(json.dumps({"name": "true", "rootfs": str(busybox_rootfs), "command": ["/bin/busybox", "true"]}))
    r = hedge("bench", "-f", spec, "--run-to-completion", "-i", "container,vm", "--runs", "1", "--json",
              env={"HEDGE_VM_KERNEL_DIR": str(guest_kernel)}, timeout=600)
    assert r.code == 0, r
    report = json.loads(r.out)
    accel = report["host"]["vm_accelerator"]
    assert accel.startswith("kvm (") or accel.startswith("tcg, emulation"), accel
    for level in ("container", "vm"):
        assert report["results"][level]["start_to_exit_ms"]["median"] > 0
    assert_nothing_left(dirs, report)


def test_vm_echo(hedge, dirs, tmp_path, guest_kernel):
    r = hedge("bench", "--builtin", "echo", "--isolation", "vm", "--runs", "1", "--duration", "0.3", "--warmup",
              "0.1", "--json", env={"HEDGE_VM_KERNEL_DIR": str(guest_kernel)}, timeout=600)
    if r.code != 0 and "network.mode: not supported with vm isolation" in r.err:
        pytest.skip(f"the vm backend has no guest network yet: {r.err.strip()}")
    assert r.code == 0, r
    res = json.loads(r.out)["results"]["vm"]
    assert res["rr_latency_p50_us"]["median"] > 0
    assert_nothing_left(dirs)
