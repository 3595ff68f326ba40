"""contrib/systemd/ourmail.service (issue 20 point 4): ``systemd-analyze verify`` accepts the
unit exactly as shipped, its hardening scores as docs/deploy.md says, and twistd runs under the
restrictions a process can take on without systemd (another user, only CAP_NET_BIND_SERVICE,
no new privileges, no writable-and-executable memory)."""

from __future__ import annotations

import ctypes
import imaplib
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import client_tls
from twistdhelp import REPO

UNIT = REPO / "contrib" / "systemd" / "ourmail.service"
ANALYZE = shutil.which("systemd-analyze")
#: prctl(2) PR_SET_MDWE / PR_MDWE_REFUSE_EXEC_GAIN (Linux 6.3): what MemoryDenyWriteExecute=
#: asks of the kernel.
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1

needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def _root(tmp_path: Path) -> Path:
    """A file-system root holding the unit as shipped, the binaries its Exec lines name (the
    venv's twistd at the documented /opt/ourmail), and systemd's own units."""
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system/ourmail.service")
    for line in UNIT.read_text().splitlines():
        m = re.match(r"Exec\w+=(\S+)", line)
        if m:
            binary = root / m.group(1).lstrip("/")
            binary.parent.mkdir(parents=True, exist_ok=True)
            # A copy (a link would be followed inside the root): the venv's twistd, kill.
            shutil.copy(shutil.which(Path(m.group(1)).name) or sys.executable, binary)
    units = Path("/usr/lib/systemd/system")
    shutil.copytree(units, root / "usr/lib/systemd/system", symlinks=True)
    return root


def _analyze(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, *args, f"--root={root}", "/etc/systemd/system/ourmail.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@needs_analyze
def test_the_shipped_unit_verifies_without_a_warning(tmp_path: Path) -> None:
    done = _analyze(_root(tmp_path), "verify")
    assert done.returncode == 0, done.stderr
    assert done.stdout + done.stderr == ""  # an unknown key or a bad value is only a warning


@needs_analyze
def test_a_typo_in_the_unit_would_be_caught(tmp_path: Path) -> None:
    root = _root(tmp_path)
    shipped = root / "etc/systemd/system/ourmail.service"
    shipped.write_text(shipped.read_text().replace("ProtectSystem=", "ProtectSystm="))
    assert "Unknown key 'ProtectSystm'" in _analyze(root, "verify").stderr


@needs_analyze
def test_the_hardening_scores_as_documented(tmp_path: Path) -> None:
    done = _analyze(_root(tmp_path), "security", "--offline=true", "--threshold=20")
    assert done.returncode == 0, done.stdout + done.stderr
    m = re.search(r"Overall exposure level for ourmail.service: (\d+\.\d+) (\w+)", done.stdout)
    assert m, done.stdout
    documented = (REPO / "docs" / "deploy.md").read_text()
    assert f"exposure level {m.group(1)} ({m.group(2)})" in documented


def _unit(key: str) -> list[str]:
    return [
        line.split("=", 1)[1]
        for line in UNIT.read_text().splitlines()
        if line.startswith(key + "=")
    ]


def test_the_unit_names_what_the_issue_asks() -> None:
    assert _unit("User") == ["ourmail"]
    assert _unit("ExecReload") == ["/bin/kill -HUP $MAINPID"]
    assert "--data /var/lib/ourmail --ports standard" in _unit("ExecStart")[0]
    assert _unit("CapabilityBoundingSet") == ["CAP_NET_BIND_SERVICE"]
    assert _unit("AmbientCapabilities") == ["CAP_NET_BIND_SERVICE"]
    assert _unit("ReadWritePaths") == ["/var/lib/ourmail"]
    assert _unit("ProtectSystem") == ["strict"]
    assert _unit("NoNewPrivileges") == ["yes"]
    assert _unit("MemoryDenyWriteExecute") == ["no"]  # see the test below


#: Sets PR_SET_MDWE in this process (inherited by what it runs), then runs argv[1:].
MDWE = f"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
    sys.exit("PR_SET_MDWE: " + os.strerror(ctypes.get_errno()))
os.execv(sys.argv[1], sys.argv[1:])
"""

#: What twistd does when it makes its TLS context (Twisted's ALPN set-up): a cffi callback.
ALPN = (
    "from OpenSSL import SSL; ctx = SSL.Context(SSL.TLS_METHOD); "
    "ctx.set_alpn_select_callback(lambda conn, offered: offered[0])"
)


def _mdwe_supported() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_MDWE + 1, 0, 0, 0, 0) >= 0  # PR_GET_MDWE answers


def _wrapper() -> list[str]:
    """The command that runs twistd as the unit would (MemoryDenyWriteExecute= aside, see
    below): as ``nobody`` where that user can
    run this venv's twistd, else (an interpreter under /root) as uid 0 with the same
    capability sets, which leaves it CAP_NET_BIND_SERVICE and nothing else of root's."""
    nobody = pwd.getpwnam("nobody")
    restricted = [
        "--inh-caps=-all,+net_bind_service",
        "--ambient-caps=-all,+net_bind_service",
        "--bounding-set=-all,+net_bind_service",
        "--no-new-privs",
    ]
    user = [f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]
    again = "import os, sys; os.execv(sys.executable, [sys.executable, '-c', 'import twisted'])"
    probe = ["setpriv", *user, *restricted, sys.executable, "-c", again]  # as twistd's children
    if subprocess.run(probe, capture_output=True, cwd="/", timeout=60).returncode == 0:
        return ["setpriv", *user, *restricted]
    return ["setpriv", *restricted]


@pytest.mark.skipif(not _mdwe_supported(), reason="the kernel has no PR_SET_MDWE (< 6.3)")
def test_memory_deny_write_execute_would_stop_the_tls_set_up() -> None:
    """Why the unit says ``MemoryDenyWriteExecute=no``: pyOpenSSL's callbacks (ALPN, SNI,
    verification) are cffi ``ffi.callback``s, which need writable and executable memory.  The
    same code runs without the restriction.  When a cffi release no longer needs it, this test
    fails: then turn the setting on."""
    plain = subprocess.run([sys.executable, "-c", ALPN], capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr
    denied = subprocess.run(
        [sys.executable, "-c", MDWE, sys.executable, "-c", ALPN],
        capture_output=True,
        text=True,
    )
    assert "Cannot allocate write+execute memory for ffi.callback()" in denied.stderr


@pytest.mark.system
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_twistd_serves_tls_and_logins_under_the_units_restrictions(tmp_path: Path) -> None:
    """As the unit runs it: only CAP_NET_BIND_SERVICE (bounding, inheritable and ambient
    sets), no new privileges, as ``nobody`` where that user can run this venv: a TLS IMAP
    login (argon2) works."""
    from twistdhelp import Twistd

    nobody = pwd.getpwnam("nobody")
    top = Path(tempfile.mkdtemp(prefix="ourmail-unit-"))  # pytest's tmp_path is root's only
    top.chmod(0o755)
    data = top / "data"
    data.mkdir()
    wrapper = _wrapper()
    if f"--reuid={nobody.pw_uid}" in wrapper:  # StateDirectory= gives the folder to the user
        os.chown(data, nobody.pw_uid, nobody.pw_gid)
    server = Twistd(data, prefix=tuple(wrapper))
    try:
        status = Path(f"/proc/{server.proc.pid}/status").read_text()
        for caps in ("CapBnd", "CapEff", "CapPrm"):  # bit 10 only: CAP_NET_BIND_SERVICE
            assert re.search(rf"^{caps}:\s+0000000000000400$", status, re.M), status
        assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)
        password = re.search(r"one-time password (\S+)", "\n".join(server.log))
        assert password
        with imaplib.IMAP4_SSL(
            "127.0.0.1", server.ports["imaps"], ssl_context=client_tls()
        ) as imap:
            assert imap.login("postmaster@example.test", password.group(1))[0] == "OK"
        assert server.proc.poll() is None
    finally:
        server.stop()
        shutil.rmtree(top)
