"""`make run`'s edge scenario (scripts/demo-edge) end to end, in its test mode: hedged with the uplink, a
sensor (process workload), a filter function (container), the cloud broker stopped and restarted. The
script exits 0 only when the cloud got every result, in order.

On a real Debian host another MQTT broker (mosquitto.service) holds 127.0.0.1:1883, so the story runs with a
squatter there: a plain TCP listener this test starts when 1883 is free (when something already holds it,
that is the squatter). The demo must pick another port and say which."""
import socket
import subprocess

import pytest

from conftest import BUILD, ROOT


@pytest.fixture
def squatter_on_1883():
    """Something listening on 127.0.0.1:1883 for the test's duration: ours if the port was free."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 1883))
        s.listen(8)
    except OSError:
        s.close()
        s = None  # already held by someone else: that is the squatter
    probe = socket.socket()
    try:
        probe.settimeout(2)
        probe.connect(("127.0.0.1", 1883))  # the port is held, by us or by another broker
    finally:
        probe.close()
    yield
    if s is not None:
        s.close()


def test_demo_edge_story(tmp_path, hedge, squatter_on_1883):
    env = {**hedge.env(), "HEDGE_DEMO_DIR": str(tmp_path / "demo"), "HEDGE_DEMO_ONCE": "1"}
    (tmp_path / "demo").mkdir()
    r = subprocess.run([str(ROOT / "scripts" / "demo-edge"), str(BUILD)], env=env, capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    # the ports it chose, and why not 1883
    assert "demo-edge: hedged's MQTT broker on 127.0.0.1:" in out
    assert "(1883 is taken by another program, e.g. mosquitto.service)" in out
    assert "hedged's MQTT broker on 127.0.0.1:1883 " not in out
    assert "filter: version 1 (created)" in out and "sensor: version 1 (created)" in out
    assert "nodes/demo-node/filtered/line1" in out
    assert "cloud:     disconnected" in out  # the outage shows in hedge uplink status
    assert "all 40 results arrived, in order" in out
    # the function table of hedge ps
    assert "FUNCTION" in out and "on-demand" in out


def test_hedged_says_which_listener_failed_and_what_to_change(tmp_path, hedge, squatter_on_1883):
    """hedged with the default listener while 1883 is held: it names the listener, the config key and the flag."""
    r = subprocess.run([str(BUILD / "hedged"), "--mqtt-listen", "127.0.0.1:1883", "--state-dir",
                        str(tmp_path / "state"), "--socket", str(tmp_path / "s.sock")],
                       env=hedge.env(), capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "listener 127.0.0.1:1883: bind: Address already in use" in r.stderr, r.stderr
    assert "broker.listen" in r.stderr and "--mqtt-listen" in r.stderr, r.stderr
