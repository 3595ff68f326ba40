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
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
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


SOCKET = REPO / "contrib" / "systemd" / "ourmail.socket"
DROP_IN = REPO / "contrib" / "systemd" / "ourmail-socket.conf"


@needs_analyze
def test_the_socket_unit_and_its_drop_in_verify(tmp_path: Path) -> None:
    root = _root(tmp_path)
    shutil.copy(SOCKET, root / "etc/systemd/system/ourmail.socket")
    (root / "etc/systemd/system/ourmail.service.d").mkdir()
    shutil.copy(DROP_IN, root / "etc/systemd/system/ourmail.service.d/socket.conf")
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "verify", f"--root={root}", "/etc/systemd/system/ourmail.socket"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def _exec_start(drop_in: str) -> list[str]:
    """The drop-in's ExecStart= command (its continuation lines joined)."""
    text = drop_in.replace("\\\n", " ")
    [line] = [x for x in text.splitlines() if x.startswith("ExecStart=") and x != "ExecStart="]
    return line.split("=", 1)[1].split()


def _free_port() -> int:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        return int(s.getsockname()[1])


@pytest.mark.system
@pytest.mark.skipif(not shutil.which("systemd-socket-activate"), reason="needs systemd")
def test_twistd_serves_on_the_sockets_systemd_passes(tmp_path: Path) -> None:
    """``systemd-socket-activate`` binds the ports in ourmail.socket's order (on ::1, high
    ports instead of the standard ones) and starts the drop-in's command: SMTP, IMAPS (TLS
    added by ourmail) and /healthz answer on the passed descriptors."""
    from conftest import dns_zone

    services = ["smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s"]
    services += ["web", "http"]
    listens = [x for x in SOCKET.read_text().splitlines() if x.startswith("ListenStream=")]
    assert len(listens) == len(services)
    ports = {service: _free_port() for service in services}
    command = _exec_start(DROP_IN.read_text())
    assert command[0] == "/opt/ourmail/bin/twistd"
    for index, service in enumerate(services):  # the drop-in names them in the socket's order
        assert f"--listen={service}=systemd:domain=INET6:index={index}" in command
    data = tmp_path / "data"
    command = [str(Path(sys.executable).with_name("twistd"))] + [
        str(data) if arg == "/var/lib/ourmail" else arg for arg in command[1:]
    ]
    command += ["--hostname", "mail.example.test", "--domain", "example.test"]
    command += [f"--dns=127.0.0.1:{dns_zone()[1]}"]
    # systemd names every descriptor (LISTEN_FDNAMES), by default after the socket unit;
    # Twisted takes none without names.
    names = ":".join(["ourmail.socket"] * len(services))
    activate = ["systemd-socket-activate", f"--setenv=PYTHONPATH={REPO}", f"--fdname={names}"]
    activate += [f"--listen=[::1]:{ports[s]}" for s in services]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        activate + command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # until systemd-socket-activate has bound them
            try:
                socket.create_connection(("::1", ports["smtp"])).close()
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        # The ports are open before twistd is: the first session waits for it.
        with smtplib.SMTP("::1", ports["smtp"], timeout=60) as smtp:
            assert smtp.ehlo()[0] == 250
        with imaplib.IMAP4_SSL("::1", ports["imaps"], ssl_context=client_tls(), timeout=30):
            pass
        with urllib.request.urlopen(f"http://[::1]:{ports['http']}/healthz", timeout=30) as r:
            assert r.read() == b"ok\n"
        assert proc.poll() is None
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        log = out.decode("utf-8", "replace")
        print(log)  # shown when the test fails
    assert "Traceback" not in log, log
    assert f"imaps listening on ::1:{ports['imaps']}" in log, log


def test_a_systemd_listener_without_its_socket_is_a_clear_error(tmp_path: Path) -> None:
    """The drop-in's command started without ourmail.socket: one line saying so, no
    traceback."""
    twistd = str(Path(sys.executable).with_name("twistd"))
    options = ["--data", str(tmp_path / "data"), "--hostname", "mail.example.test"]
    done = subprocess.run(
        [
            twistd,
            "-n",
            "--pidfile=",
            "ourmail",
            *options,
            "--listen=smtp=systemd:domain=INET6:index=0",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr
    assert "systemd passed no such socket" in done.stdout + done.stderr


def test_the_documented_install_puts_every_file_the_units_name() -> None:
    """``Documentation=file://...`` and the binaries of the Exec lines exist after the
    install commands of docs/deploy.md (pip puts twistd in the venv's bin/)."""
    section = (REPO / "docs" / "deploy.md").read_text().split("### Install", 1)[1]
    commands = section.split("```sh", 1)[1].split("```", 1)[0]
    assert "python3 -m venv /opt/ourmail\n" in commands
    for unit in (UNIT, SOCKET, DROP_IN):
        for line in unit.read_text().splitlines():
            if line.startswith("Documentation=file://"):
                path = line.removeprefix("Documentation=file://")
                assert re.search(rf"^install -D .* {re.escape(path)}$", commands, re.M), path
            elif re.match(r"Exec\w+=/opt/ourmail/bin/", line):
                assert line.split("=", 1)[1].split()[0] in ("/opt/ourmail/bin/twistd",)
