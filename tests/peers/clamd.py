"""A private ClamAV daemon (Debian's ``clamd``) on a loopback port and a unix socket, with a
test signature database made from the EICAR test string (freshclam cannot download here).

The signature is an ``.ndb`` body signature (hex of the EICAR string, any file type), so it
matches the string wherever clamd finds it: a plain attachment, a decoded base64 part, a zip
member or a forwarded message/rfc822.  clamd names the detection ``Ourmail.Test.EICAR`` with
``.UNOFFICIAL`` appended (it is not one of ClamAV's signed databases).
"""

from __future__ import annotations

import atexit
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: The EICAR anti-virus test file (https://www.eicar.org): harmless, detected by every scanner.
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
SIGNATURE = "Ourmail.Test.EICAR.UNOFFICIAL"

CONFIG = """\
Foreground yes
TCPSocket {port}
TCPAddr 127.0.0.1
LocalSocket {work}/clamd.sock
DatabaseDirectory {work}/db
TemporaryDirectory {work}/tmp
PidFile {work}/clamd.pid
LogFile {work}/clamd.log
StreamMaxLength {stream_max}
MaxThreads {threads}
SelfCheck 0
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ping(port: int) -> bool:
    """Whether clamd on ``port`` answers ``PING`` with ``PONG``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"zPING\0")
            return s.recv(16) == b"PONG\0"
    except OSError:
        return False


class Clamd:
    """A clamd with its own config and data folder: ``address`` (TCP), ``socket`` (unix),
    ``start``/``stop`` (by PID), ``pause``/``resume`` (SIGSTOP: connections are accepted
    by the kernel, nothing is answered)."""

    def __init__(self, work: Path, port: int) -> None:
        self.work, self.port = work, port
        self.address = f"127.0.0.1:{port}"
        self.socket = str(work / "clamd.sock")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["clamd", "-c", str(self.work / "clamd.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if ping(self.port):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        log = (self.work / "clamd.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"clamd did not start; its log ends:\n{log}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


@contextmanager
def clamd(
    stream_max: int = 25 * 1024 * 1024, threads: int = 10, extra: str = ""
) -> Iterator[Clamd]:
    """A fresh clamd that detects EICAR; ``stream_max`` is its StreamMaxLength, ``extra``
    more lines of clamd.conf."""
    if shutil.which("clamd") is None:
        raise RuntimeError(
            "clamd is not installed: apt-get install clamav-daemon (tests/debian-packages.txt)"
        )
    work = Path(tempfile.mkdtemp(prefix="ourmail-clamd-", dir="/tmp"))  # short socket path
    (work / "db").mkdir()
    (work / "tmp").mkdir()
    (work / "db" / "ourmail-test.ndb").write_text(f"Ourmail.Test.EICAR:0:*:{EICAR.hex()}\n")
    port = free_port()
    config = CONFIG.format(work=work, port=port, stream_max=stream_max, threads=threads) + extra
    (work / "clamd.conf").write_text(config)
    server = Clamd(work, port)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


_shared: tuple[Clamd, object] | None = None


def shared() -> Clamd:
    """One clamd for the whole test run (started on first use, stopped at exit); tests that
    stop or pause clamd start their own with :func:`clamd`."""
    global _shared
    if _shared is None:
        manager = clamd()
        _shared = (manager.__enter__(), manager)
        atexit.register(manager.__exit__, None, None, None)
    return _shared[0]
