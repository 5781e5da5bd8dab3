"""`hedge run --isolation process`: a plain process with env, workdir, user, stdio and docker's exit codes."""
import os
import signal
import subprocess
import time


def test_exit_status_propagates(hedge):
    r = hedge("run", "--isolation", "process", "--", "sh", "-c", "echo hi; exit 3")
    assert r.code == 3
    assert r.out == "hi\n"


def test_env_workdir(hedge, tmp_path):
    r = hedge("run", "-i", "process", "-e", "FOO=bar", "-w", tmp_path, "--", "sh", "-c", 'echo "$FOO"; pwd')
    assert r.code == 0, r
    assert r.out == f"bar\n{tmp_path}\n"


def test_inherits_caller_env(hedge):
    r = hedge("run", "-i", "process", "--", "/usr/bin/env", env={"HEDGE_TEST_MARK": "yes"})
    assert r.code == 0
    assert "HEDGE_TEST_MARK=yes" in r.out.splitlines()


def test_user(hedge):
    r = hedge("run", "-i", "process", "-u", "65534:65534", "--", "id", "-u")
    assert r.code == 0, r
    assert r.out.strip() == "65534"


def test_stdin_passthrough(hedge):
    r = hedge("run", "-i", "process", "--", "tr", "a-z", "A-Z", input="hello\n")
    assert r.out == "HELLO\n"


def test_command_not_found_127(hedge):
    r = hedge("run", "-i", "process", "--", "no-such-command-xyz")
    assert r.code == 127
    assert r.err == "hedge: exec no-such-command-xyz: command not found in PATH\n"


def test_not_executable_126(hedge, tmp_path):
    f = tmp_path / "script"
    f.write_text("#!/bin/sh\necho no\n")
    f.chmod(0o644)
    r = hedge("run", "-i", "process", "--", f)
    assert r.code == 126
    assert r.err == f"hedge: exec {f}: Permission denied\n"


def test_killed_by_signal_128_plus_n(hedge):
    r = hedge("run", "-i", "process", "--", "sh", "-c", "kill -KILL $$")
    assert r.code == 137
    r = hedge("run", "-i", "process", "--", "sh", "-c", "kill -TERM $$")
    assert r.code == 143


def _start(hedge, *args):
    return subprocess.Popen([hedge.binary, *args], env=hedge.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_sigterm_forwarded(hedge):
    # the workload traps TERM and exits 42: proves the signal reached it rather than killing hedge
    p = _start(hedge, "run", "-i", "process", "--", "sh", "-c",
               "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done")
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 42, err
    assert out == "got-term\n"


def test_sigint_default_130(hedge):
    p = _start(hedge, "run", "-i", "process", "--", "sh", "-c", "echo ready; exec sleep 30")
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=10)
    assert p.returncode == 130


def test_sighup_forwarded(hedge):
    p = _start(hedge, "run", "-i", "process", "--", "sh", "-c",
               "trap 'exit 7' HUP; echo ready; while :; do sleep 0.05; done")
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGHUP)
    p.communicate(timeout=10)
    assert p.returncode == 7


def test_usage_errors_exit_2(hedge):
    r = hedge("run", "--no-such-flag")
    assert r.code == 2
    r = hedge("frobnicate")
    assert r.code == 2
    assert "unknown command 'frobnicate'" in r.err


def test_bad_flag_values_125(hedge):
    r = hedge("run", "-i", "process", "--memory", "64Q", "--", "true")
    assert r.code == 125
    assert r.err == 'hedge run: --memory: "64Q" is not a size (use K, M or G)\n'
    r = hedge("run", "--isolation", "docker", "--", "true")
    assert r.code == 125
    assert "is not an isolation level" in r.err


def test_process_refuses_container_fields(hedge):
    r = hedge("run", "-i", "process", "--hostname", "x", "--", "true")
    assert r.code == 125
    assert r.err == "hedge: hostname: not supported with process isolation (a process shares the host's UTS namespace)\n"


def test_hedge_maps_no_library_run_does_not_use():
    """Issue 18 part 3: every `hedge run` starts hedge, and each shared library it names costs the
    loader an open, mmaps and relocations. libmnl is loaded when a netlink socket is first opened
    (src/net/mnl_lazy.c), and nothing of libm is used."""
    from conftest import HEDGE, SANITIZED
    # hedge itself is static (no NEEDED at all) outside sanitizer builds; hedge-full, its dynamic twin, and
    # the sanitizer build's dynamic hedge name libc and nothing the run path does not use
    for program in (HEDGE, HEDGE.parent / "hedge-full"):
        r = subprocess.run(["readelf", "-d", str(program)], capture_output=True, text=True, check=True)
        needed = [line for line in r.stdout.splitlines() if "(NEEDED)" in line]
        assert needed or program == HEDGE, r.stdout
        # the sanitizer build is -O0: math the optimiser turns into instructions stays a call into libm there
        for lib in ("libmnl",) if SANITIZED else ("libmnl", "libm.so"):
            assert not any(lib in line for line in needed), needed


def test_workload_starts_with_default_signal_dispositions(hedge):
    """The child resets only what /proc/self/status lists as ignored or caught: signals the caller
    ignored (exec keeps SIG_IGN) must not reach the workload ignored, and none is blocked."""
    script = "grep -E '^Sig(Ign|Blk):' /proc/self/status"
    # the caller ignores SIGINT, SIGQUIT, SIGPIPE, SIGUSR1 and a real-time signal
    ignoring = ["/usr/bin/python3", "-c",
                "import os, signal, sys\n"
                "for s in (signal.SIGINT, signal.SIGQUIT, signal.SIGPIPE, signal.SIGUSR1, signal.SIGRTMIN + 2):\n"
                "    signal.signal(s, signal.SIG_IGN)\n"
                "os.execv(sys.argv[1], sys.argv[1:])\n"]
    p = subprocess.run(ignoring + [hedge.binary, "run", "-i", "process", "--", "sh", "-c", script],
                       capture_output=True, text=True, timeout=30, env=hedge.env())
    assert p.returncode == 0, p
    assert p.stdout.split() == ["SigBlk:", "0000000000000000", "SigIgn:", "0000000000000000"], p.stdout
