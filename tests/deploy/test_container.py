"""contrib/container/Containerfile, built with podman from wheels made here and run for real
(issue 20): mail sent over SMTP to the container is read over IMAP from outside it; the
container is destroyed and re-created on the same volume, set up this time by the volume's
ourmail.toml alone, and the mail, its UID and UIDVALIDITY, and the accounts are still there;
the server binds the standard ports as an unprivileged user; the health check turns unhealthy
when the server stops answering.

Runs as root with podman, runc and mmdebstrap (tests/debian-packages.txt), as on CI, where it
never skips.  The base image ``localhost/debian-min:12`` is made with mmdebstrap only when
missing (docs/deploy.md#container) and removed at the end only if this run made it.
"""

from __future__ import annotations

import imaplib
import json
import os
import re
import secrets
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import client_tls, dns_zone

pytestmark = pytest.mark.container

REPO = Path(__file__).resolve().parents[2]
BASE = "localhost/debian-min:12"
# crun fails on this machine's hybrid cgroups, and podman's default ulimits are refused.
PODMAN = ("podman", "--runtime", "runc")
LIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
DOMAIN = "example.test"
POSTMASTER = f"postmaster@{DOMAIN}"
ENVIRONMENT = ("-e", f"OURMAIL_DOMAIN={DOMAIN}", "-e", "OURMAIL_HOSTNAME=mail.example.test")
ONE_TIME = re.compile(r"created the account (\S+) with the one-time password (\S+)")
#: Whether OpenSSL's default paths (what Twisted's platformTrust loads for MTA-STS and a smart
#: host) hold trusted roots: the first root of certifi's bundle must verify against them.
TRUSTS = """
import re, certifi
from OpenSSL import SSL, crypto
with open(certifi.where(), "rb") as f:
    pem = re.search(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", f.read(), re.S)
context = SSL.Context(SSL.TLS_METHOD)
context.set_default_verify_paths()
root = crypto.load_certificate(crypto.FILETYPE_PEM, pem[0])
crypto.X509StoreContext(context.get_cert_store(), root).verify_certificate()
print("trusted")
"""


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (podman with runc, as CI runs it)"
    for tool in ("podman", "runc", "mmdebstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (tests/debian-packages.txt)"
    return None


if (_why := _missing()) and not os.environ.get("CI"):
    pytest.skip(_why, allow_module_level=True)


def podman(*args: str, check: bool = True, timeout: float = 120, stdin: str | None = None) -> str:
    """Run podman; its stdout (stderr too when it fails)."""
    done = subprocess.run(
        [*PODMAN, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {done.returncode}\n{done.stderr}")
    return done.stdout


def _run(*command: str, timeout: float) -> None:
    """Run a build step; its output in the failure."""
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(command)}: {done.returncode}\n{done.stderr[-3000:]}")


def _make_base(work: Path) -> None:
    """A minimal Debian 12 with python3 as ``localhost/debian-min:12`` (docs/deploy.md)."""
    rootfs = work / "rootfs.tar"
    _run(
        "mmdebstrap", "--variant=minbase", "--include=python3", "bookworm", str(rootfs), timeout=600
    )
    podman("import", str(rootfs), BASE, timeout=300)
    rootfs.unlink()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The image built offline: wheels made on this host, the build context holding only
    them and contrib/container/."""
    work = tmp_path_factory.mktemp("container")
    made_base = subprocess.run([*PODMAN, "image", "exists", BASE]).returncode != 0
    tag = f"localhost/ourmail-test:{secrets.token_hex(4)}"
    try:
        if made_base:
            _make_base(work)
        context = work / "context"
        shutil.copytree(REPO / "contrib" / "container", context / "contrib" / "container")
        _run(sys.executable, "-m", "pip", "wheel", "-q", str(REPO), "pip",
             "-w", str(context / "wheels"), timeout=600)  # fmt: skip
        podman(
            "build", "--format", "docker", "--layers=false", *LIMITS,
            "--build-arg", f"BASE={BASE}",
            "-f", str(context / "contrib" / "container" / "Containerfile"),
            "-t", tag, str(context),
            timeout=900,
        )  # fmt: skip
        size = int(podman("image", "inspect", "--format", "{{.Size}}", tag))
        print(f"image {tag}: {size / 1e6:.0f} MB")
        yield tag
    finally:
        podman("rmi", "-f", tag, check=False)
        if made_base:
            podman("rmi", "-f", BASE, check=False)


class Container:
    """One ``podman run -d`` of the image, removed (with its anonymous volumes) at the end."""

    def __init__(self, image: str, *options: str, args: tuple[str, ...] = ()) -> None:
        self.name = f"ourmail-test-{secrets.token_hex(4)}"
        podman("run", "-d", "--name", self.name, *LIMITS, *options, image, *args)

    def log_text(self) -> str:
        done = subprocess.run(
            [*PODMAN, "logs", self.name], capture_output=True, text=True, timeout=30
        )
        return done.stdout + done.stderr

    def wait_ready(self, timeout: float = 90, starts: int = 1) -> str:
        """Until the listeners and the MX worker are up (for the ``starts``-th time: the log
        keeps the earlier runs of a restarted container); the log so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            ready = ("http listening on", "accepting mail on the MX port")
            if all(text.count(line) >= starts for line in ready):
                return text
            if podman("inspect", "--format", "{{.State.Running}}", self.name).strip() != "true":
                raise AssertionError(f"the container stopped:\n{text}")
            time.sleep(0.5)
        raise AssertionError(f"not ready in {timeout} s:\n{self.log_text()}")

    def exec(self, *command: str, stdin: str | None = None, check: bool = True) -> str:
        return podman("exec", "-i", self.name, *command, stdin=stdin, check=check, timeout=60)

    def health(self) -> tuple[int, str]:
        """``podman healthcheck run``: its exit status and the recorded status."""
        done = subprocess.run(
            [*PODMAN, "healthcheck", "run", self.name],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        status = podman("inspect", "--format", "{{.State.Health.Status}}", self.name).strip()
        return done.returncode, status

    def host_pid(self) -> int:
        return int(podman("inspect", "--format", "{{.State.Pid}}", self.name))

    def stop(self) -> int:
        """``podman stop`` (SIGTERM); the exit status."""
        podman("stop", "-t", "30", self.name, timeout=60)
        return int(podman("inspect", "--format", "{{.State.ExitCode}}", self.name))

    def remove(self) -> None:
        podman("rm", "-f", "-v", self.name, check=False, timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _imap(port: int, user: str, password: str) -> imaplib.IMAP4:
    imap = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    imap.starttls(client_tls())
    imap.login(user, password)
    return imap


def _find(imap: imaplib.IMAP4, marker: str, timeout: float = 30) -> tuple[int, int, bytes]:
    """(UIDVALIDITY, UID, message) of the INBOX message whose Subject is ``marker``."""
    deadline = time.monotonic() + timeout
    while True:
        imap.select("INBOX", readonly=True)
        uidvalidity = int(imap.response("UIDVALIDITY")[1][0])
        typ, found = imap.uid("SEARCH", "SUBJECT", marker)
        assert typ == "OK"
        if found[0]:
            uid = int(found[0].split()[-1])
            typ, data = imap.uid("FETCH", str(uid), "(BODY.PEEK[])")
            assert typ == "OK"
            return uidvalidity, uid, bytes(data[0][1])
        if time.monotonic() > deadline:
            raise AssertionError(f"{marker} not in the INBOX after {timeout} s")
        time.sleep(0.5)


def test_mail_accounts_and_uids_survive_a_new_container(image: str) -> None:
    volume = f"ourmail-test-{secrets.token_hex(4)}"
    podman("volume", "create", volume)
    ports = {svc: _free_port() for svc in ("smtp", "imap", "http")}
    # The host's network (rootful podman here has no other that works) on loopback high ports;
    # the other listeners off, DNS from the tests' own server.
    listen = {svc: f"tcp:{port}:interface=127.0.0.1" for svc, port in ports.items()}
    listen |= {s: "none" for s in ("submission", "submissions", "imaps", "pop3", "pop3s", "web")}
    dns = f"127.0.0.1:{dns_zone()[1]}"
    run = ("--network=host", "-v", f"{volume}:/var/lib/ourmail")
    first = second = None
    try:
        # Set up by the environment and twistd options after the image name.
        first = Container(
            image, *run, *ENVIRONMENT,
            args=(*(f"--listen={svc}={ep}" for svc, ep in listen.items()), f"--dns={dns}"),
        )  # fmt: skip
        log = first.wait_ready()
        found = ONE_TIME.search(log)
        assert found, log
        assert found.group(1) == POSTMASTER
        password = found.group(2)
        first.exec(
            "ourmail", "user", "add", f"bob@{DOMAIN}", "--password-stdin", stdin="b0b-s3cret\n"
        )

        marker = f"container-{secrets.token_hex(6)}"
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "someone@example.net", POSTMASTER, marker
        msg.set_content(f"Delivered into the container, kept on its volume: {marker}\n")
        with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=30) as smtp:
            smtp.starttls(context=client_tls())
            smtp.send_message(msg)
        imap = _imap(ports["imap"], POSTMASTER, password)
        uidvalidity, uid, body = _find(imap, marker)
        imap.logout()
        assert marker.encode() in body

        # SIGTERM reaches twistd (the container's PID 1), which shuts down cleanly.
        assert first.stop() == 0
        first.remove()
        first = None

        # The new container is set up by the volume's ourmail.toml alone: the domain the first
        # start wrote there, and the listeners and DNS server added now.
        mountpoint = podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume)
        config = Path(mountpoint.strip()) / "ourmail.toml"
        text = config.read_text()
        assert f'\ndomains = ["{DOMAIN}"]\n' in text
        entries = "".join(f'{svc} = "{ep}"\n' for svc, ep in listen.items())
        text = text.replace("\n[listen]\n", f"\n[listen]\n{entries}", 1)
        config.write_text(text.replace("\n[dns]\n", f'\n[dns]\nservers = ["{dns}"]\n', 1))
        second = Container(image, *run)
        log = second.wait_ready()
        assert "one-time password" not in log, "a second start made a new account"
        imap = _imap(ports["imap"], POSTMASTER, password)
        assert _find(imap, marker, timeout=0) == (uidvalidity, uid, body)
        imap.logout()
        _imap(ports["imap"], f"bob@{DOMAIN}", "b0b-s3cret").logout()
    finally:
        for container in (first, second):
            if container is not None:
                container.remove()
        podman("volume", "rm", "-f", volume, check=False)


def test_standard_ports_unprivileged_and_health(image: str) -> None:
    # The image's HEALTHCHECK, made to mark it unhealthy at the first failed probe even just
    # after the start (the image allows 60 s to start, then 3 failures in a row, one probe
    # every 30 s); podman 4.3 ignores --health-retries without --health-cmd.
    check = json.loads(
        podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}", image)
    )
    assert check["Test"] == ["CMD", "python3", "/usr/local/lib/ourmail/healthcheck.py"]
    # Its own network namespace (no network), the image's defaults: the standard ports, bound
    # by the user ourmail with only CAP_NET_BIND_SERVICE.
    box = Container(
        image,
        *ENVIRONMENT,
        "--network=none",
        "--cap-drop=all",
        "--cap-add=net_bind_service",
        f"--health-cmd={json.dumps(check['Test'][1:])}",
        "--health-retries=1",
        "--health-start-period=0s",
    )
    try:
        box.wait_ready()
        ports = json.loads(box.exec("cat", "/var/lib/ourmail/listening.json"))["ports"]
        assert ports == {
            "smtp": 25, "submission": 587, "submissions": 465, "imap": 143, "imaps": 993,
            "pop3": 110, "pop3s": 995, "web": 443, "http": 80,
        }  # fmt: skip
        status = dict(
            line.split(":\t", 1) for line in box.exec("cat", "/proc/1/status").splitlines()
        )
        assert status["Uid"].split()[0] == "10025"
        assert int(status["CapEff"], 16) == 1 << 10  # CAP_NET_BIND_SERVICE only
        # twistd has it from its interpreter's file capability, not from the runtime (no
        # ambient set), and only that interpreter has one: with podman's default capabilities
        # it binds a low port and the image's python3 may not.
        assert int(status["CapAmb"], 16) == 0
        bind = "import socket; socket.socket().bind(('127.0.0.1', 24)); print('bound')"
        for python, answer in (("/opt/ourmail/bin/python3", "bound"), ("python3", "Permission")):
            done = subprocess.run(
                [*PODMAN, "run", "--rm", "--network=none", *LIMITS, "--entrypoint", python,
                 image, "-c", bind],
                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            assert answer in done.stdout + done.stderr, (python, done.stderr)
        # No compilers, pip or test tools in the image.
        tools = "command -v gcc cc c++ make pip pip3 pytest; true"
        assert box.exec("sh", "-c", tools).strip() == ""
        assert box.exec(
            "/opt/ourmail/bin/python", "-c",
            "import importlib.util as u; print([m for m in ('pip', 'pytest', 'setuptools')"
            " if u.find_spec(m)])",
        ).strip() == "[]"  # fmt: skip

        assert box.exec("/opt/ourmail/bin/python", "-c", TRUSTS).strip() == "trusted"

        assert box.health() == (0, "healthy")
        # A hung server: the process stopped (SIGSTOP from the host), its sockets still
        # accepting in the kernel but nothing answering.
        pid = box.host_pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            code, status_now = box.health()
        finally:
            os.kill(pid, signal.SIGCONT)
        assert (code, status_now) == (1, "unhealthy")
        assert box.health() == (0, "healthy")

        # Restarted (not re-created) after an unclean stop (SIGKILL, as at the end of the stop
        # timeout): twistd is PID 1 again, the pid in the lock of the LMTP socket the killed
        # one left in the volume, and starts all the same.
        podman("kill", box.name)
        podman("start", box.name)
        log = box.wait_ready(starts=2)
        assert "removing /var/lib/ourmail/lmtp.sock, left by a server that has ended" in log
        assert box.health() == (0, "healthy")
    finally:
        box.remove()
