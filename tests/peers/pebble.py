"""Pebble, Let's Encrypt's ACME test server (Debian ``pebble``), run for one test.

Its own HTTPS needs a certificate for ``localhost`` (the package ships none): made here with
``cryptography``; ``ca_file`` is what the ACME client must trust to talk to it.  Its validation
authority asks ``dns_port`` on 127.0.0.1 for the names and fetches HTTP-01 answers from
``http_port`` there (``PEBBLE_VA_NOSLEEP=1``: no random wait before each validation).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from ourmail.secure import selfsigned

EXAMPLE_CONFIG = Path("/usr/share/doc/pebble/examples/pebble-config.json")

needs_pebble = pytest.mark.skipif(
    shutil.which("pebble") is None, reason="Debian package pebble not installed"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def names_on_loopback(names: tuple[str, ...]) -> Iterator[int]:
    """The tests' DNS server answering 127.0.0.1 for ``names`` (Pebble's VA asks it); its
    port."""
    from conftest import dns_zone
    from twisted.internet import reactor
    from twisted.internet.threads import blockingCallFromThread

    zone, port = dns_zone()
    for name in names:
        blockingCallFromThread(reactor, zone.set_address, name, "127.0.0.1")
    try:
        yield port
    finally:
        for name in names:
            blockingCallFromThread(reactor, zone.clear, name)


@attrs.frozen
class Pebble:
    """A running Pebble."""

    directory: str
    management: str
    ca_file: Path

    def _get(self, path: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(self.management + path, context=context) as answer:
            return bytes(answer.read())

    def intermediate_pem(self) -> bytes:
        """The intermediate CA that signs the certificates it issues now."""
        return self._get("/intermediates/0")

    def root_pem(self) -> bytes:
        """The root CA its chains end in (what a client of the issued certificates trusts)."""
        return self._get("/roots/0")


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(300):
        if process.poll() is not None:
            raise RuntimeError(f"pebble ended: {log.read_text(errors='replace')}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError("pebble did not start listening")


@contextlib.contextmanager
def running_pebble(folder: Path, http_port: int, dns_port: int) -> Iterator[Pebble]:
    """Pebble validating HTTP-01 on 127.0.0.1:``http_port``, resolving through ``dns_port``."""
    folder.mkdir(parents=True, exist_ok=True)
    cert_pem, key_pem = selfsigned.generate("localhost", ("localhost",))
    (folder / "cert.pem").write_bytes(cert_pem)
    (folder / "key.pem").write_bytes(key_pem)
    config = json.loads(EXAMPLE_CONFIG.read_text())
    port, management = free_port(), free_port()
    config["pebble"].update(
        listenAddress=f"127.0.0.1:{port}",
        managementListenAddress=f"127.0.0.1:{management}",
        certificate=str(folder / "cert.pem"),
        privateKey=str(folder / "key.pem"),
        httpPort=http_port,
        tlsPort=free_port(),
    )
    (folder / "pebble-config.json").write_text(json.dumps(config))
    # No nonces refused at random and no reused authorisations: every order validates.
    env = os.environ | {
        "PEBBLE_VA_NOSLEEP": "1",
        "PEBBLE_WFE_NONCEREJECT": "0",
        "PEBBLE_AUTHZREUSE": "0",
    }
    log = folder / "pebble.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                "pebble",
                "-config",
                str(folder / "pebble-config.json"),
                "-dnsserver",
                f"127.0.0.1:{dns_port}",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_listening(port, process, log)
        _wait_listening(management, process, log)
        yield Pebble(
            f"https://localhost:{port}/dir",
            f"https://localhost:{management}",
            folder / "cert.pem",
        )
    finally:
        process.terminate()
        process.wait(10)
