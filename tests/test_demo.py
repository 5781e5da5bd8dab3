"""`make run`'s edge scenario (scripts/demo-edge) end to end, in its test mode: hedged with the uplink, a
sensor (process workload), a filter function (container), the cloud broker stopped and restarted. The
script exits 0 only when the cloud got every result, in order."""
import pathlib
import subprocess

from conftest import BUILD, ROOT


def test_demo_edge_story(tmp_path, hedge):
    env = {**hedge.env(), "HEDGE_DEMO_DIR": str(tmp_path / "demo"), "HEDGE_DEMO_ONCE": "1"}
    (tmp_path / "demo").mkdir()
    r = subprocess.run([str(ROOT / "scripts" / "demo-edge"), str(BUILD)], env=env, capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "filter: version 1 (created)" in out and "sensor: version 1 (created)" in out
    assert "nodes/demo-node/filtered/line1" in out
    assert "cloud:     disconnected" in out  # the outage shows in hedge uplink status
    assert "all 40 results arrived, in order" in out
    # the function table of hedge ps
    assert "FUNCTION" in out and "on-demand" in out

