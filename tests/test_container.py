"""`hedge run --isolation container`: namespaces, rootfs and mount table, capabilities,
seccomp, --init, user namespaces, exit codes, and that nothing is left behind.

Rootfs fixtures copy the session's busybox rootfs, so tests that write into a rootfs
or add the syscall probe never touch the shared one.
"""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import time

import pytest

from conftest import BUILD, CGROUP_PARENT, ROOT

DEFAULT_CAPS = 0x00000000A80425FB  # Docker's default set
CAP_NET_RAW = 13
CAP_SYS_ADMIN = 21


def run_c(hedge, rootfs, *args, **kw):
    """hedge run --isolation container --rootfs ROOTFS [flags...] -- command..."""
    return hedge("run", "--isolation", "container", "--rootfs", rootfs, *args, **kw)


def sh(hedge, rootfs, script, *flags, **kw):
    return run_c(hedge, rootfs, *flags, "--", "sh", "-c", script, **kw)


@pytest.fixture(scope="session")
def probe_binary(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "probe"
    src = ROOT / "tests" / "helpers" / "syscall_probe.c"
    subprocess.run(["cc", "-static", "-O2", "-o", str(out), str(src)], check=True)
    return out


@pytest.fixture(scope="session")
def ctr_rootfs(busybox_rootfs, probe_binary, tmp_path_factory):
    """A private copy of the busybox rootfs with /bin/probe (tests do not write into it; hedge
    adds mount points such as /etc/hosts on first use)."""
    root = tmp_path_factory.mktemp("ctr") / "rootfs"
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    shutil.copy(probe_binary, root / "bin" / "probe")
    return root


@pytest.fixture
def scratch_rootfs(busybox_rootfs, tmp_path):
    """A per-test copy for tests that write into the rootfs."""
    root = tmp_path / "scratch-rootfs"
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    return root


def tree_snapshot(root):
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            snap[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return snap


def caps_of(text):
    caps = {}
    for line in text.splitlines():
        if line.startswith("Cap"):
            key, value = line.split(":")
            caps[key] = int(value.strip(), 16)
    return caps


def host_cap_permitted():
    with open("/proc/self/status") as f:
        return caps_of(f.read())["CapPrm"]


# ---- namespaces ----------------------------------------------------------


def test_pid_1_and_own_pid_namespace(hedge, ctr_rootfs):
    r = sh(hedge, ctr_rootfs, 'echo $$; ls /proc | grep -E "^[0-9]+$" | sort -n | tr "\\n" " "')
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert lines[0] == "1"
    # only the shell (1) and ls/grep/sort/tr of the pipeline: no host process is visible
    pids = [int(p) for p in lines[1].split()]
    assert pids[0] == 1 and max(pids) < 10, pids


def test_host_processes_invisible(hedge, ctr_rootfs):
    r = sh(hedge, ctr_rootfs, "ps -o pid,comm")
    assert r.code == 0, r
    rows = [line.split() for line in r.out.splitlines()[1:]]
    assert [row[0] for row in rows] == ["1"], r.out


def test_hostname_default_and_set(hedge, ctr_rootfs):
    r = sh(hedge, ctr_rootfs, 'hostname; echo "$HOSTNAME"', "--hostname", "edge-box")
    assert r.code == 0, r
    assert r.out == "edge-box\nedge-box\n"
    r = sh(hedge, ctr_rootfs, "hostname", "--name", "filter")
    assert r.out == "filter\n"
    r = sh(hedge, ctr_rootfs, "hostname")
    assert r.code == 0
    host = os.uname().nodename
    assert r.out.strip() != host and len(r.out.strip()) == 12  # the run id


def test_etc_hostname_and_hosts(hedge, scratch_rootfs):
    r = sh(hedge, scratch_rootfs, "cat /etc/hostname /etc/hosts; echo x >> /etc/hosts", "--hostname", "box1")
    assert r.code == 0, r
    assert r.out == "box1\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tbox1\n"
    # the rootfs got empty mount points, the generated files lived in the run dir
    assert (scratch_rootfs / "etc" / "hostname").read_text() == ""
    assert (scratch_rootfs / "etc" / "hosts").read_text() == ""
    r = sh(hedge, scratch_rootfs, "cat /etc/hosts", "--network", "host")
    with open("/etc/hosts") as f:
        assert r.out == f.read()


def test_own_network_namespace(hedge, ctr_rootfs):
    r = sh(hedge, ctr_rootfs, "ls /sys/class/net")
    assert r.code == 0, r
    assert r.out.split() == ["lo"]


def test_cgroup_namespace_root(hedge, ctr_rootfs):
    r = sh(hedge, ctr_rootfs, "cat /proc/self/cgroup")
    assert r.code == 0, r
    for line in r.out.splitlines():
        assert line.split(":", 2)[2] == "/", r.out


def test_ipc_namespace(hedge, ctr_rootfs):
    r = sh(hedge, ctr_rootfs, "for n in ipc uts mnt; do readlink /proc/self/ns/$n; done")
    assert r.code == 0, r
    inside = r.out.split()
    for name, value in zip(["ipc", "uts", "mnt"], inside):
        assert value != os.readlink(f"/proc/self/ns/{name}")


# ---- mount table ----------------------------------------------------------


def test_host_mounts_invisible(hedge, ctr_rootfs):
    r = sh(hedge, ctr_rootfs, "cat /proc/self/mountinfo")
    assert r.code == 0, r
    targets = [line.split()[4] for line in r.out.splitlines()]
    assert targets[0] == "/"
    assert set(targets) <= {"/", "/etc/hostname", "/etc/hosts", "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys",
                            "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                            "/sys/firmware", "/sys/devices/virtual/powercap", "/proc/asound",
                            "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}, targets
    assert "/sys/fs/cgroup" not in targets


def test_only_allowed_devices(hedge, ctr_rootfs):
    r = sh(hedge, ctr_rootfs, "ls -A /dev; ls -l /dev/null /dev/ptmx /dev/fd; ls /dev/pts")
    assert r.code == 0, r
    lines = r.out.splitlines()
    names = set(lines[: lines.index(next(l for l in lines if l.startswith("crw") or l.startswith("lrw")))])
    assert names == {"null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "mqueue",
                     "fd", "stdin", "stdout", "stderr"}, names
    assert any(l.startswith("crw-rw-rw-") and l.endswith("/dev/null") for l in lines), lines
    assert any("/dev/ptmx -> pts/ptmx" in l for l in lines), lines
    assert any("/dev/fd -> /proc/self/fd" in l for l in lines), lines


def test_devices_work(hedge, ctr_rootfs):
    r = sh(hedge, ctr_rootfs, "head -c 4 /dev/zero | wc -c; head -c 16 /dev/urandom | wc -c; "
                              "echo x > /dev/null && echo ok; echo y > /dev/shm/f && cat /dev/shm/f")
    assert r.code == 0, r
    assert r.out == "4\n16\nok\ny\n"


def test_proc_sys_read_only_and_masks(hedge, ctr_rootfs):
    r = sh(hedge, ctr_rootfs, "echo evil > /proc/sys/kernel/hostname; echo rc=$?; "
                              "wc -c < /proc/keys; wc -c < /proc/timer_list; ls -A /proc/acpi | wc -l")
    assert r.code == 0, r
    assert r.out == "rc=1\n0\n0\n0\n"
    assert "Read-only file system" in r.err


def test_sysrq_trigger_not_writable(hedge, ctr_rootfs):
    if not os.path.exists("/proc/sysrq-trigger"):
        pytest.skip("this kernel has no /proc/sysrq-trigger (CONFIG_MAGIC_SYSRQ off)")
    r = sh(hedge, ctr_rootfs, "echo h > /proc/sysrq-trigger; echo rc=$?")
    assert r.out == "rc=1\n"


def test_sys_read_only(hedge, ctr_rootfs):
    r = sh(hedge, ctr_rootfs, "touch /sys/kernel/x; echo rc=$?; grep ' /sys ' /proc/mounts")
    assert r.code == 0, r
    assert r.out.startswith("rc=1\n")
    assert " ro," in r.out


def test_read_only_rootfs(hedge, scratch_rootfs):
    before = tree_snapshot(scratch_rootfs)
    r = sh(hedge, scratch_rootfs, "touch /x; echo rc=$?; touch /tmp/y; echo rc=$?; "
                                  "echo z > /dev/shm/z && echo shm", "--read-only")
    assert r.code == 0, r
    assert r.out == "rc=1\nrc=1\nshm\n"
    assert "Read-only file system" in r.err
    assert tree_snapshot(scratch_rootfs) == before


def test_writable_rootfs_is_written_in_place(hedge, scratch_rootfs):
    # Decision (docs/container.md): a plain --rootfs is the container's root, written in
    # place like runc; only image rootfs dirs get an overlay.
    r = sh(hedge, scratch_rootfs, "echo data > /root/written")
    assert r.code == 0, r
    assert (scratch_rootfs / "root" / "written").read_text() == "data\n"


def test_bind_mounts_rw_and_ro(hedge, scratch_rootfs, tmp_path):
    rw = tmp_path / "rw"
    ro = tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "hello").write_text("hi\n")
    r = sh(hedge, scratch_rootfs, "echo out > /data/new && cat /config/hello; touch /config/x; echo rc=$?",
           "-v", f"{rw}:/data", "-v", f"{ro}:/config:ro")
    assert r.code == 0, r
    assert r.out == "hi\nrc=1\n"
    assert "Read-only file system" in r.err
    assert (rw / "new").read_text() == "out\n"
    assert not (ro / "x").exists()


def test_bind_mount_file_and_nested_target(hedge, scratch_rootfs, tmp_path):
    f = tmp_path / "settings.conf"
    f.write_text("level=3\n")
    r = sh(hedge, scratch_rootfs, "cat /etc/app/settings.conf", "-v", f"{f}:/etc/app/settings.conf:ro")
    assert r.code == 0, r
    assert r.out == "level=3\n"


def test_bind_mount_missing_source_names_mount(hedge, ctr_rootfs, tmp_path):
    r = sh(hedge, ctr_rootfs, "true", "-v", f"{tmp_path}:/ok", "-v", f"{tmp_path}/missing:/data")
    assert r.code == 125
    assert r.err == f"hedge: mounts[1]: source {tmp_path}/missing: No such file or directory\n"


def test_mount_target_in_read_only_image_style_root(hedge, scratch_rootfs, tmp_path):
    # with --read-only the target must be created before / becomes read-only
    r = sh(hedge, scratch_rootfs, "ls -d /newdir", "--read-only", "-v", f"{tmp_path}:/newdir")
    assert r.code == 0, r
    assert r.out == "/newdir\n"


# ---- env, workdir, user -----------------------------------------------------


def test_env_workdir_user(hedge, ctr_rootfs):
    r = sh(hedge, ctr_rootfs, 'echo "$FOO"; pwd; id -u; id -g; echo "$PATH"', "-e", "FOO=bar", "-w", "/tmp",
           "-u", "app")
    assert r.code == 0, r
    assert r.out == "bar\n/tmp\n1000\n1000\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"


def test_default_workdir_is_root_and_env_is_clean(hedge, ctr_rootfs):
    r = run_c(hedge, ctr_rootfs, "--", "env", env={"HEDGE_TEST_LEAK": "1"})
    assert r.code == 0, r
    assert "HEDGE_TEST_LEAK" not in r.out
    r = sh(hedge, ctr_rootfs, "pwd")
    assert r.out == "/\n"


def test_unknown_user(hedge, ctr_rootfs):
    r = sh(hedge, ctr_rootfs, "true", "-u", "nosuchuser")
    assert r.code == 125
    assert 'user: "nosuchuser" not found in /etc/passwd' in r.err


def test_stdin_passthrough(hedge, ctr_rootfs):
    r = run_c(hedge, ctr_rootfs, "--", "tr", "a-z", "A-Z", input="edge\n")
    assert r.code == 0
    assert r.out == "EDGE\n"


# ---- capabilities -----------------------------------------------------------


def test_default_caps(hedge, ctr_rootfs):
    r = sh(hedge, ctr_rootfs, "grep Cap /proc/self/status")
    assert r.code == 0, r
    caps = caps_of(r.out)
    assert caps == {"CapInh": 0, "CapPrm": DEFAULT_CAPS, "CapEff": DEFAULT_CAPS, "CapBnd": DEFAULT_CAPS,
                    "CapAmb": 0}


def test_cap_add_and_drop(hedge, ctr_rootfs):
    r = sh(hedge, ctr_rootfs, "grep Cap /proc/self/status", "--cap-add", "SYS_ADMIN", "--cap-drop", "cap_net_raw")
    assert r.code == 0, r
    want = (DEFAULT_CAPS | 1 << CAP_SYS_ADMIN) & ~(1 << CAP_NET_RAW)
    caps = caps_of(r.out)
    assert (caps["CapEff"], caps["CapBnd"]) == (want, want)


def test_cap_drop_all_and_add_one(hedge, ctr_rootfs):
    r = sh(hedge, ctr_rootfs, "grep Cap /proc/self/status", "--cap-drop", "ALL", "--cap-add", "CAP_KILL")
    caps = caps_of(r.out)
    assert (caps["CapEff"], caps["CapBnd"]) == (1 << 5, 1 << 5), r


def test_cap_add_all(hedge, ctr_rootfs):
    r = sh(hedge, ctr_rootfs, "grep Cap /proc/self/status", "--cap-add", "ALL")
    caps = caps_of(r.out)
    assert caps["CapEff"] == host_cap_permitted(), r


def test_unknown_cap_is_an_error(hedge, ctr_rootfs):
    r = sh(hedge, ctr_rootfs, "true", "--cap-add", "NET_ADMIN", "--cap-add", "FLY")
    assert r.code == 125
    assert r.err == 'hedge: security.cap_add[1]: "FLY" is not a capability\n'
    r = sh(hedge, ctr_rootfs, "true", "--cap-drop", "CAP_")
    assert r.err == 'hedge: security.cap_drop[0]: "CAP_" is not a capability\n'


def test_non_root_user_has_no_caps(hedge, ctr_rootfs):
    r = sh(hedge, ctr_rootfs, "grep Cap /proc/self/status", "-u", "app")
    caps = caps_of(r.out)
    assert caps == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": DEFAULT_CAPS, "CapAmb": 0}, r


def test_no_new_privs_set(hedge, ctr_rootfs):
    r = sh(hedge, ctr_rootfs, "grep -E 'NoNewPrivs|Seccomp:' /proc/self/status")
    assert r.code == 0, r
    assert r.out.split() == ["NoNewPrivs:", "1", "Seccomp:", "2"]


# ---- seccomp and escape attempts ------------------------------------------


def test_mount_denied(hedge, ctr_rootfs):
    r = sh(hedge, ctr_rootfs, "mount -t tmpfs none /mnt; echo rc=$?; mkdir -p /tmp/m; "
                              "mount --bind /bin /tmp/m; echo rc=$?")
    assert r.out == "rc=1\nrc=1\n", r


def test_mount_allowed_with_sys_admin(hedge, scratch_rootfs):
    r = sh(hedge, scratch_rootfs, "mkdir -p /mnt && mount -t tmpfs none /mnt && echo mounted",
           "--cap-add", "SYS_ADMIN")
    assert r.code == 0, r
    assert r.out == "mounted\n"


def test_default_profile_denies(hedge, ctr_rootfs):
    calls = ["finit_module", "init_module", "delete_module", "kexec_load", "keyctl", "io_uring_setup",
             "personality_norandom", "personality_query", "personality_linux32", "clone3",
             "unshare_user", "unshare_files", "ptrace", "clock_settime", "swapoff", "bpf", "mount",
             "reboot", "getpid"]
    confined = run_c(hedge, ctr_rootfs, "--", "probe", *calls)
    unconfined = run_c(hedge, ctr_rootfs, "--seccomp", "unconfined", "--", "probe", *calls)
    assert confined.code == 0 and unconfined.code == 0, (confined, unconfined)
    got = dict(l.split("=") for l in confined.out.splitlines())
    raw = dict(l.split("=") for l in unconfined.out.splitlines())
    for name in ("finit_module", "init_module", "delete_module", "kexec_load", "keyctl", "io_uring_setup",
                 "personality_norandom", "unshare_user", "ptrace", "clock_settime", "swapoff", "bpf",
                 "mount", "reboot"):
        assert got[name] == "EPERM", (name, got)
    assert got["clone3"] == "ENOSYS"
    assert got["personality_query"] == "0" and got["personality_linux32"] == "0"
    assert got["unshare_files"] == "0" and got["getpid"] == "0"
    # the filter, not the kernel, refused these: unconfined they get another answer
    for name in ("keyctl", "io_uring_setup", "personality_norandom", "clone3", "ptrace"):
        assert raw[name] != got[name], (name, raw[name])


def test_reboot_denied(hedge, ctr_rootfs):
    r = sh(hedge, ctr_rootfs, "reboot -f; echo rc=$?")
    assert r.out == "rc=1\n"
    assert "Operation not permitted" in r.err


def test_json_profile(hedge, ctr_rootfs, tmp_path):
    profile = tmp_path / "profile.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],'
                       ' "syscalls": [{"names": ["mkdir", "mkdirat", "no_such_call"], "action": "SCMP_ACT_ERRNO",'
                       ' "errnoRet": 13}, {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}]}')
    r = sh(hedge, ctr_rootfs, "mkdir /tmp/d; echo rc=$?; probe keyctl", "--seccomp", profile)
    assert r.code == 0, r
    assert r.out == "rc=1\nkeyctl=0\n"
    assert "Permission denied" in r.err


def test_json_profile_docker_features(hedge, ctr_rootfs, tmp_path):
    # argument comparisons, and Docker's includes/excludes by capability and architecture
    profile = tmp_path / "docker.json"
    profile.write_text("""{
      "defaultAction": "SCMP_ACT_ALLOW",
      "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 262144, "valueTwo": 262144, "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["keyctl"], "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["io_uring_setup"], "action": "SCMP_ACT_ERRNO", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "includes": {"arches": ["s390x"]}},
        {"names": ["ptrace"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "includes": {"arches": ["amd64"]}}
      ]}""")
    calls = ["personality_norandom", "personality_linux32", "keyctl", "io_uring_setup", "getpid", "ptrace"]
    r = run_c(hedge, ctr_rootfs, "--seccomp", profile, "--", "probe", *calls)
    assert r.code == 0, r
    assert r.out.split() == ["personality_norandom=EPERM", "personality_linux32=0", "keyctl=0",
                             "io_uring_setup=EPERM", "getpid=0", "ptrace=ENOSYS"]
    r = run_c(hedge, ctr_rootfs, "--seccomp", profile, "--cap-add", "SYS_ADMIN", "--", "probe", "keyctl",
              "io_uring_setup")
    assert r.out.split() == ["keyctl=EPERM", "io_uring_setup=EFAULT"], r


def test_json_profile_errors_name_the_field(hedge, ctr_rootfs, tmp_path):
    profile = tmp_path / "bad.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "NOPE"}]}')
    r = sh(hedge, ctr_rootfs, "true", "--seccomp", profile)
    assert r.code == 125
    assert r.err == f"hedge: security.seccomp: {profile}: syscalls[0].action: missing or not a known action\n"
    profile.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"], "action": '
                       '"SCMP_ACT_ERRNO", "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}, '
                       '{"index": 1, "value": 15, "op": "SCMP_CMP_EQ"}]}]}')
    r = sh(hedge, ctr_rootfs, "true", "--seccomp", profile)
    assert r.code == 125
    assert r.err == (f"hedge: security.seccomp: {profile}: syscalls[0].args[1]: a second comparison of "
                     "argument 1 in one rule (libseccomp allows one; use two rules)\n")
    profile.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"], "action": '
                       '"SCMP_ACT_ERRNO", "includes": {"caps": ["CAP_FLY"]}}]}')
    r = sh(hedge, ctr_rootfs, "true", "--seccomp", profile)
    assert r.err == f"hedge: security.seccomp: {profile}: syscalls[0].includes.caps[0]: not a capability\n"
    r = sh(hedge, ctr_rootfs, "true", "--seccomp", tmp_path / "missing.json")
    assert r.code == 125
    assert r.err.startswith(f"hedge: security.seccomp: {tmp_path}/missing.json: ")


def test_ptrace_of_outside_process_impossible(hedge, ctr_rootfs):
    # host processes are not even visible: kill/ptrace targets do not exist
    r = sh(hedge, ctr_rootfs, f"kill -0 {os.getpid()}; echo rc=$?")
    assert r.out == "rc=1\n"


# ---- exit codes and signals ------------------------------------------------


def test_exit_codes(hedge, ctr_rootfs):
    assert sh(hedge, ctr_rootfs, "exit 0").code == 0
    assert sh(hedge, ctr_rootfs, "exit 3").code == 3
    r = run_c(hedge, ctr_rootfs, "--", "no-such-command")
    assert r.code == 127
    assert r.err == "hedge: exec no-such-command: command not found in PATH\n"
    r = run_c(hedge, ctr_rootfs, "--", "/etc/passwd")
    assert r.code == 126
    assert r.err == "hedge: exec /etc/passwd: Permission denied\n"
    assert sh(hedge, ctr_rootfs, "kill -KILL $$", "--init").code == 137
    assert sh(hedge, ctr_rootfs, "kill -TERM $$", "--init").code == 143


def test_pid_1_ignores_its_own_default_signals(hedge, ctr_rootfs):
    # without --init the workload is PID 1: the kernel drops signals it has no handler for
    r = sh(hedge, ctr_rootfs, "kill -TERM $$; echo still here")
    assert r.code == 0 and r.out == "still here\n"


def _start(hedge, rootfs, *args):
    return subprocess.Popen([hedge.binary, "run", "--isolation", "container", "--rootfs", str(rootfs), *args],
                            env=hedge.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_ready(p):
    line = p.stdout.readline()
    assert line == "ready\n", (line, p.stderr.read() if p.poll() is not None else "")


def test_sigterm_forwarded_to_trap(hedge, ctr_rootfs):
    p = _start(hedge, ctr_rootfs, "--", "sh", "-c",
               'trap "echo got TERM; exit 7" TERM; echo ready; while true; do sleep 0.05; done')
    _wait_ready(p)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 7, err
    assert out == "got TERM\n"


def test_sigint_with_init_gives_130(hedge, ctr_rootfs):
    p = _start(hedge, ctr_rootfs, "--init", "--", "sh", "-c", "echo ready; exec sleep 100")
    _wait_ready(p)
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=10)
    assert p.returncode == 130


def test_init_reaps_orphan_zombies(hedge, ctr_rootfs):
    # sh starts a background child in a subshell that exits at once: the child is orphaned
    # to PID 1 and becomes a zombie when it exits, unless PID 1 reaps it
    script = ("(sleep 0.2 &); sleep 1; "
              "for s in /proc/[0-9]*/stat; do read -r pid comm state rest < $s; echo $pid $state; done")
    r = sh(hedge, ctr_rootfs, script, "--init")
    assert r.code == 0, r
    states = dict(line.split() for line in r.out.splitlines())
    assert "Z" not in states.values(), r.out
    assert states["1"] == "S"


def test_init_is_pid_1_and_workload_pid_2(hedge, ctr_rootfs):
    r = sh(hedge, ctr_rootfs, "echo $$; cat /proc/1/comm; grep CapEff /proc/1/status", "--init")
    assert r.code == 0, r
    assert r.out.split() == ["2", "hedge-init", "CapEff:", "%016x" % (1 << 5)]  # only CAP_KILL


def test_init_forwards_to_non_root_workload(hedge, ctr_rootfs):
    p = _start(hedge, ctr_rootfs, "--init", "-u", "app", "--", "sh", "-c",
               'trap "echo got TERM; exit 9" TERM; echo ready; while true; do sleep 0.05; done')
    _wait_ready(p)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 9, err
    assert out == "got TERM\n"


# ---- user namespace ----------------------------------------------------------


def test_user_namespace_maps_root(hedge, ctr_rootfs):
    r = sh(hedge, ctr_rootfs, "cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups; id -u; "
                              "grep CapEff /proc/self/status; ls /dev/null /dev/zero",
           "--userns", "100000:200000:65536")
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert lines[0].split() == ["0", "100000", "65536"]
    assert lines[1].split() == ["0", "200000", "65536"]
    assert lines[2] == "deny"
    assert lines[3] == "0"
    assert int(lines[4].split()[1], 16) == DEFAULT_CAPS


def test_user_namespace_rootfs_is_idmapped(hedge, scratch_rootfs, tmp_path):
    # the rootfs is an idmapped mount: host root's files belong to root inside, and what
    # root inside writes lands on disk as host root; a bind mount keeps host ownership
    (tmp_path / "vol").mkdir()
    r = sh(hedge, scratch_rootfs, "stat -c %u /bin/busybox; echo x > /root/made; stat -c %u /vol; "
                                  "touch /vol/f; echo rc=$?",
           "--userns", "100000:100000:65536", "-v", f"{tmp_path}/vol:/vol")
    assert r.code == 0, r
    assert r.out == "0\n65534\nrc=1\n"
    st = (scratch_rootfs / "root" / "made").stat()
    assert (st.st_uid, st.st_gid) == (0, 0)


def test_user_namespace_host_pid_owner(hedge, ctr_rootfs):
    p = _start(hedge, ctr_rootfs, "--init", "--userns", "300000:300000:1000", "--", "sh", "-c",
               "echo ready; exec sleep 100")
    _wait_ready(p)
    # the container's PID 1 on the host is hedge's only child
    kids = pathlib.Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
    status = pathlib.Path(f"/proc/{kids[0]}/status").read_text() if len(kids) == 1 else ""
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=10)
    assert p.returncode == 143
    assert len(kids) == 1
    uids = next(l for l in status.splitlines() if l.startswith("Uid:")).split()[1:]
    assert uids == ["300000"] * 4


# ---- nothing left behind ------------------------------------------------------


def test_nothing_left_behind(hedge, ctr_rootfs, tmp_path):
    with open("/proc/self/mountinfo") as f:
        before = f.read().splitlines()
    r = sh(hedge, ctr_rootfs, "sleep 7919 & sleep 7919 & echo started", "-v", f"{tmp_path}:/data")
    assert r.code == 0 and r.out == "started\n", r
    with open("/proc/self/mountinfo") as f:
        after = f.read().splitlines()
    # other test sessions may mount things meanwhile (netns files): look only for what a
    # leaked container mount would be
    new = [line.split() for line in set(after) - set(before)]
    ours = [m for m in new if m[4] == "/" or m[4].startswith((str(ctr_rootfs), str(tmp_path), "/proc", "/sys", "/dev"))
            or m[m.index("-") + 1] in ("proc", "sysfs", "devpts", "mqueue", "overlay")]
    assert ours == []
    left = []
    for proc in pathlib.Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "cmdline").read_bytes() == b"sleep\x007919\x00":
                    left.append(proc.name)
            except OSError:
                pass
    assert left == []


def test_setup_failure_names_step(hedge, scratch_rootfs):
    # /proc as a file: the mount point cannot be created
    shutil.rmtree(scratch_rootfs / "proc")
    (scratch_rootfs / "proc").write_text("not a dir")
    r = sh(hedge, scratch_rootfs, "true")
    assert r.code == 125
    assert r.err == "hedge: mount /proc: Not a directory\n"


def test_missing_rootfs(hedge, tmp_path):
    r = run_c(hedge, tmp_path / "nope", "--", "true")
    assert r.code == 125
    assert r.err == f"hedge: rootfs: {tmp_path}/nope: No such file or directory\n"


# ---- image rootfs: overlay, never written -------------------------------------

IMAGE_RUN = BUILD / "tests" / "unit" / "container_image_run"


def test_image_rootfs_overlay_leaves_image_unchanged(scratch_rootfs, dirs):
    # The image store is not built yet, so this drives the backend directly with a plan
    # that marks the rootfs as an image's (tests/helpers/container_image_run.c).
    before = tree_snapshot(scratch_rootfs)
    env = {**os.environ, "HEDGE_RUN_DIR": str(dirs["run"])}
    p = subprocess.run([str(IMAGE_RUN), str(scratch_rootfs), "rw", "sh", "-c",
                        "echo new > /root/new; rm /etc/group; echo x >> /etc/passwd; "
                        "cat /root/new; grep -c ' / overlay' /proc/mounts"],
                       capture_output=True, text=True, env=env, timeout=30)
    assert p.returncode == 0, p
    assert p.stdout == "new\n1\n"
    assert tree_snapshot(scratch_rootfs) == before
    assert list((dirs["run"]).rglob("upper")) == []


def test_image_rootfs_read_only_bind(scratch_rootfs, dirs):
    before = tree_snapshot(scratch_rootfs)
    env = {**os.environ, "HEDGE_RUN_DIR": str(dirs["run"])}
    p = subprocess.run([str(IMAGE_RUN), str(scratch_rootfs), "ro", "sh", "-c",
                        "touch /root/new; echo rc=$?; grep -c ' / overlay' /proc/mounts; true"],
                       capture_output=True, text=True, env=env, timeout=30)
    assert p.returncode == 0, p
    assert p.stdout == "rc=1\n0\n"
    assert tree_snapshot(scratch_rootfs) == before


def test_image_rootfs_overlay_in_user_namespace(scratch_rootfs, dirs):
    before = tree_snapshot(scratch_rootfs)
    env = {**os.environ, "HEDGE_RUN_DIR": str(dirs["run"])}
    p = subprocess.run([str(IMAGE_RUN), str(scratch_rootfs), "rw-userns", "sh", "-c",
                        "cat /proc/self/uid_map; echo hi > /tmp/x && cat /tmp/x; stat -c %u /bin/busybox"],
                       capture_output=True, text=True, env=env, timeout=30)
    assert p.returncode == 0, p
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["0", "100000", "65536"]
    # not idmapped (overlayfs refuses it): host root's files show as nobody
    assert lines[1:] == ["hi", "65534"]
    assert tree_snapshot(scratch_rootfs) == before


# ---- seccomp program cache ------------------------------------------------------


def test_seccomp_cache_reused_and_corruption_ignored(hedge, ctr_rootfs, dirs):
    r = run_c(hedge, ctr_rootfs, "--", "probe", "keyctl")
    assert r.out == "keyctl=EPERM\n", r
    cache = list((dirs["run"] / "seccomp-cache").iterdir())
    assert len(cache) == 1
    mtime = cache[0].stat().st_mtime_ns
    r = run_c(hedge, ctr_rootfs, "--", "probe", "keyctl")
    assert r.out == "keyctl=EPERM\n"
    assert cache[0].stat().st_mtime_ns == mtime  # read, not rebuilt
    # another capability set is another program
    r = run_c(hedge, ctr_rootfs, "--cap-add", "SYS_ADMIN", "--", "probe", "mount")
    assert r.out == "mount=0\n", r
    assert len(list((dirs["run"] / "seccomp-cache").iterdir())) == 2
    # a damaged entry is a miss: rebuilt, and the filter still holds
    data = cache[0].read_bytes()
    cache[0].write_bytes(data[:8] + b"X" + data[9:-8])
    r = run_c(hedge, ctr_rootfs, "--", "probe", "keyctl")
    assert r.out == "keyctl=EPERM\n"
    assert cache[0].read_bytes() == data


def test_inherited_fds_do_not_reach_the_workload(hedge, ctr_rootfs, tmp_path):
    leak = open(tmp_path / "secret", "w")
    try:
        p = subprocess.run([hedge.binary, "run", "--isolation", "container", "--rootfs", str(ctr_rootfs), "--",
                            "ls", "/proc/self/fd"], env=hedge.env(), capture_output=True, text=True,
                           pass_fds=(leak.fileno(),), timeout=30)
    finally:
        leak.close()
    assert p.returncode == 0, p
    # 0, 1, 2 and the directory ls itself opened
    assert sorted(int(x) for x in p.stdout.split()) == [0, 1, 2, 3], p.stdout


def test_seccomp_without_no_new_privs(hedge, ctr_rootfs, tmp_path):
    # no_new_privs off: the filter is installed before the user switch, while CAP_SYS_ADMIN allows it
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({
        "isolation": "container", "rootfs": str(ctr_rootfs), "user": "app",
        "command": ["sh", "-c", "grep -E 'NoNewPrivs|Seccomp:' /proc/self/status; probe keyctl"],
        "security": {"no_new_privs": False},
    }))
    r = hedge("run", "-f", spec)
    assert r.code == 0, r
    assert r.out.split() == ["NoNewPrivs:", "0", "Seccomp:", "2", "keyctl=EPERM"]


def _have_cgroup_v2():
    return os.path.exists("/sys/fs/cgroup/cgroup.controllers") or os.path.exists("/sys/fs/cgroup/unified/cgroup.procs")


@pytest.mark.parametrize("mode", ["detected", "v1", "v2"])
def test_pid_1_is_in_the_workload_cgroup(hedge, ctr_rootfs, mode):
    # v2 (forced on a hybrid host: the unified hierarchy) and a hybrid host's unified directory: born
    # there with clone3(CLONE_INTO_CGROUP); each v1 hierarchy: the child writes itself into "tasks"
    if mode == "v2" and not _have_cgroup_v2():
        pytest.skip("no cgroup v2 hierarchy on this host")
    if mode == "v1" and not os.path.isdir("/sys/fs/cgroup/memory"):
        pytest.skip("no cgroup v1 hierarchies on this host")
    env = dict(hedge.env())
    if mode != "detected":
        env["HEDGE_CGROUP_MODE"] = mode
    p = subprocess.Popen([hedge.binary, "run", "--isolation", "container", "--rootfs", str(ctr_rootfs), "--init",
                          "--", "sh", "-c", "cat /proc/self/cgroup; echo ready; exec sleep 100"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    inside = []
    while True:
        line = p.stdout.readline()
        if line in ("ready\n", ""):
            break
        inside.append(line.strip())
    kids = pathlib.Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
    host_view = pathlib.Path(f"/proc/{kids[0]}/cgroup").read_text().splitlines() if kids else []
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=10)
    assert p.returncode == 143
    assert inside and all(l.split(":", 2)[2] == "/" for l in inside), inside
    paths = {l.split(":", 2)[1]: l.split(":", 2)[2] for l in host_view}
    if mode == "v2" or "memory" not in paths:  # forced v2, or a pure v2 host
        assert paths[""].startswith(f"/{CGROUP_PARENT}/"), host_view
    else:
        used = {"memory", "cpu", "cpuacct", "pids", "freezer"}
        # memory always; a lean hybrid group uses cpu, cpuacct and pids only for limits, no freezer
        # (docs/cgroups.md, "Which v1 hierarchies"): the others may stay where the caller was
        memory = [path for names, path in paths.items() if "memory" in names.split(",")]
        assert memory and memory[0].startswith(f"/{CGROUP_PARENT}/"), host_view
        v1_groups = [path for names, path in paths.items()
                     if used & set(names.split(",")) and path.startswith(f"/{CGROUP_PARENT}/")]
        assert len(set(v1_groups)) == 1, host_view
        if mode == "detected" and os.path.exists("/sys/fs/cgroup/unified/cgroup.procs"):  # hybrid
            assert paths[""] == v1_groups[0], host_view


# ---- image rootfs through the image store (hedge image import + hedge run IMAGE) ----------


def _image_rootfs(hedge):
    r = hedge("image", "inspect", "busybox:latest")
    assert r.code == 0, r
    return pathlib.Path(json.loads(r.out)["rootfs"])


def test_image_run_is_an_overlay_and_read_only_is_a_bind(hedge, imported_busybox):
    root = _image_rootfs(hedge)
    before = tree_snapshot(root)
    r = hedge("run", "busybox", "--", "sh", "-c", "grep -c ' / overlay ' /proc/mounts; echo y > /root/y")
    assert (r.code, r.out) == (0, "1\n"), r
    r = hedge("run", "--read-only", "busybox", "--", "sh", "-c",
              "touch /root/z; echo rc=$?; grep ' / ' /proc/mounts | cut -d' ' -f3,4 | cut -d, -f1; "
              "ls /etc/hostname")
    # a read-only bind of the store's dir (not an overlay); no mount point is ever created in it,
    # so the image, which has no /etc/hostname, gets none
    assert r.code == 1, r
    lines = r.out.splitlines()
    assert lines[0] == "rc=1" and lines[1].endswith(" ro") and not lines[1].startswith("overlay"), r.out
    assert tree_snapshot(root) == before


def test_image_run_in_a_user_namespace(hedge, imported_busybox):
    root = _image_rootfs(hedge)
    before = tree_snapshot(root)
    r = hedge("run", "--userns", "100000:100000:65536", "busybox", "--", "sh", "-c",
              "cat /proc/self/uid_map; echo t > /tmp/t && cat /tmp/t")
    assert r.code == 0, r
    assert r.out.split() == ["0", "100000", "65536", "t"]
    assert tree_snapshot(root) == before
