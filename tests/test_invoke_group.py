"""`hedge invoke NAME` by a member of the API socket's group, without root (issue 18, part 4).

hedged with socket_group: the API socket is the group's (0660); a function's dirs under the state dir are
group-searchable (0710, no listing) and its host makes invoke.sock 0660 in that group, so the CLI of a member
can ask the API for the socket and invoke through it. Someone outside the group gets neither. The state dir's
parents must be searchable by others, as /var/lib/hedge is in the package (0711): the test opens its own tmp
dirs that way and restores them.
"""
import grp
import os
import pathlib
import stat
import subprocess

from conftest import HEDGE
from test_daemon import Daemon, wait_for
from test_daemon_broker import free_port

GROUP = "users"  # exists on every Debian system (gid 100)
NOBODY = 65534


def as_nobody(groups, *args, sock):
    ids = ["--reuid", str(NOBODY), "--regid", str(NOBODY)]
    ids += ["--groups", ",".join(map(str, groups))] if groups else ["--clear-groups"]
    return subprocess.run(["setpriv", *ids, "--", str(HEDGE), *args], env={"HEDGE_SOCKET": str(sock),
                          "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)


def test_invoke_as_a_member_of_the_socket_group(tmp_path, hedge):
    gid = grp.getgrnam(GROUP).gr_gid
    opened = []
    for p in [tmp_path, *tmp_path.parents]:
        mode = p.stat().st_mode
        if not mode & stat.S_IXOTH:
            opened.append((p, stat.S_IMODE(mode)))
            p.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
    d = Daemon(tmp_path, hedge, "g", config={"socket_group": GROUP,
                                             "broker": {"listen": [f"127.0.0.1:{free_port()}"]}})
    try:
        d.start()
        d.state.chmod(0o711)
        spec = {"name": "upper", "isolation": "process", "command": ["/usr/bin/tr", "a-z", "A-Z"],
                "triggers": [{"topic": "fn/upper"}], "function": {"mode": "on-demand"}}
        assert d.deploy(spec).code == 0
        sock = d.state / "functions" / "upper" / "v1" / "invoke.sock"
        wait_for(sock.exists, what="the host's invoke socket")
        st = sock.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, gid)
        for p in (sock.parent, sock.parent.parent, sock.parent.parent.parent):
            st = p.stat()
            assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o710, gid), p
        assert stat.S_IMODE((sock.parent / "spec.json").stat().st_mode) == 0o600

        r = as_nobody([gid], "invoke", "upper", "--payload", "abc", sock=d.sock)
        assert (r.returncode, r.stdout, r.stderr) == (0, "ABC", "")
        # outside the group: not even the API answers
        r = as_nobody([], "invoke", "upper", "--payload", "abc", sock=d.sock)
        assert r.returncode == 125 and "Permission denied" in r.stderr, r.stderr
    finally:
        d.cleanup()
        for p, mode in opened:
            p.chmod(mode)
