"""Specs given as JSON files: every bad-input class gets its exact message, exit 125, and nothing starts."""
import json


def write(tmp_path, obj, name="spec.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_spec_file_process(hedge, tmp_path):
    p = write(tmp_path, {"isolation": "process", "command": ["sh", "-c", "echo $LEVEL; exit 4"],
                         "env": {"LEVEL": "info"}})
    r = hedge("run", "-f", p)
    assert r.code == 4
    assert r.out == "info\n"


def test_flags_override_spec(hedge, tmp_path):
    p = write(tmp_path, {"isolation": "process", "command": ["sh", "-c", "echo $LEVEL"], "env": {"LEVEL": "info"}})
    r = hedge("run", "-e", "LEVEL=debug", "-f", p)
    assert r.out == "debug\n"
    r = hedge("run", "-f", p, "--", "echo", "other")
    assert r.out == "other\n"


def test_malformed_json(hedge, tmp_path):
    p = write(tmp_path, '{"isolation": "process",')
    r = hedge("run", "-f", p)
    assert r.code == 125
    assert r.err == f"hedge: {p}: line 1 column 24: string or '}}' expected near end of file\n"


def test_unknown_field(hedge, tmp_path):
    p = write(tmp_path, {"isolation": "process", "command": ["true"], "resources": {"memroy": "1M"}})
    r = hedge("run", "-f", p)
    assert r.code == 125
    assert r.err == f"hedge: {p}: resources.memroy: unknown field\n"


def test_bad_size(hedge, tmp_path):
    p = write(tmp_path, {"isolation": "process", "command": ["true"], "resources": {"memory": "64Q"}})
    r = hedge("run", "-f", p)
    assert r.code == 125
    assert r.err == f'hedge: {p}: resources.memory: "64Q" is not a size (use K, M or G)\n'


def test_missing_spec_file(hedge, tmp_path):
    r = hedge("run", "-f", tmp_path / "nope.json")
    assert r.code == 125
    assert r.err == f"hedge: spec: open {tmp_path}/nope.json: No such file or directory\n"


def test_bad_spec_starts_nothing(hedge, tmp_path):
    marker = tmp_path / "started"
    p = write(tmp_path, {"isolation": "process", "command": ["touch", str(marker)], "hostname": "x"})
    r = hedge("run", "-f", p)
    assert r.code == 125
    assert not marker.exists()


def test_missing_rootfs(hedge, tmp_path):
    r = hedge("run", "--isolation", "container", "--rootfs", tmp_path / "none", "--", "true")
    assert r.code == 125
    assert r.err == f"hedge: rootfs: {tmp_path}/none: No such file or directory\n"


def test_unknown_image(hedge):
    r = hedge("run", "--isolation", "container", "nosuchimage:1", "--", "true")
    assert r.code == 125
    assert "nosuchimage:1" in r.err and "not found" in r.err
