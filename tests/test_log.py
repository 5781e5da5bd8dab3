"""The one log module (src/base/log.c) as the programs use it: hedged's lines name the program once and
then the component ("hedged: broker: ..."), `log_level` in hedged's config and `--log-level` on hedged,
hedge-broker, hedge-uplink and hedge-functions filter them, and a bad level is refused by name.
The module itself (levels, prefixes, "last message repeated") is unit-tested in tests/unit/test_log.c.
"""
import json
import socket
import subprocess

import pytest

from conftest import BUILD, check_sanitizer
from test_daemon import HEDGED, Daemon


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_hedged_lines_name_the_program_then_the_component(tmp_path, hedge):
    port = free_port()
    d = Daemon(tmp_path, hedge, config={"broker": {"listen": [f"127.0.0.1:{port}"]}}).start()
    d.stop()
    log = d.errlog.read_text()
    assert f"hedged: broker: MQTT broker listening on 127.0.0.1:{port}\n" in log
    assert "hedged: version " in log
    assert "hedged: signal 15: exiting; workloads keep running\n" in log
    assert "hedge-broker:" not in log


def test_log_level_warn_drops_info_lines(tmp_path, hedge):
    port = free_port()
    d = Daemon(tmp_path, hedge, config={"log_level": "warn", "broker": {"listen": [f"127.0.0.1:{port}"]}}).start()
    d.stop()
    log = d.errlog.read_text()
    assert "listening on" not in log
    assert "exiting" not in log


def test_log_level_flag_overrides_the_config(tmp_path, hedge):
    port = free_port()
    d = Daemon(tmp_path, hedge, config={"log_level": "error", "broker": {"listen": [f"127.0.0.1:{port}"]}})
    env = hedge.env()
    d.proc = subprocess.Popen([str(HEDGED), "--config", str(d.config), "--state-dir", str(d.state), "--socket",
                               str(d.sock), "--log-level", "info"], env=env, stdout=subprocess.DEVNULL,
                              stderr=open(d.errlog, "a"))
    from test_daemon import wait_for
    wait_for(lambda: "listening on" in d.errlog.read_text(), what="the info lines --log-level info asks for")
    d.stop()


@pytest.mark.parametrize("value", ["loud", 3])
def test_check_refuses_a_bad_log_level(tmp_path, value):
    cfg = tmp_path / "hedged.json"
    cfg.write_text(json.dumps({"log_level": value}))
    r = subprocess.run([str(HEDGED), "--check", str(cfg)], capture_output=True, text=True, timeout=30)
    check_sanitizer(r.stderr)
    assert r.returncode == 1
    assert 'log_level: must be "error", "warn", "info" or "debug"' in r.stderr


def test_check_accepts_each_log_level(tmp_path):
    for level in ("error", "warn", "info", "debug"):
        cfg = tmp_path / f"{level}.json"
        cfg.write_text(json.dumps({"log_level": level}))
        r = subprocess.run([str(HEDGED), "--check", str(cfg)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("program, prefix", [
    ("hedged", "hedged: --log-level: "),
    ("hedge-broker", "hedge-broker: --log-level: "),
    ("hedge-uplink", "hedge-uplink: --log-level: "),
    ("hedge-functions", "hedge-functions: --log-level: "),
])
def test_log_level_flag_refuses_an_unknown_level(program, prefix):
    r = subprocess.run([str(BUILD / program), "--log-level", "loud"], capture_output=True, text=True, timeout=30)
    check_sanitizer(r.stderr)
    assert r.returncode in (1, 2)
    assert r.stderr.startswith(prefix + 'log level "loud": expected error, warn, info or debug'), r.stderr
