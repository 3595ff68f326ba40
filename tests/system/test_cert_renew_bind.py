"""``ourmail cert renew`` with the ``http`` address it needs taken or unusable: only a running
ourmail (recognised by its challenge answer) gets a renewal request; another program, or any
other bind failure, is a clear error; a port other than 80 is warned of."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers.pebble import free_port

from ourmail.secure.certfiles import ACMEFiles

pytestmark = pytest.mark.system


def ourmail(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("ourmail")), *args, "--data", str(data)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def acme_data(tmp_path: Path, http: str) -> Path:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "ourmail.toml").write_text(
        'domains = ["example.test"]\nhostname = "mail.example.test"\n'
        f'[listen]\nhttp = "{http}"\n'
        f'[acme]\nenabled = true\ndirectory = "https://127.0.0.1:{free_port()}/dir"\n'
    )
    return data


class NotFound(http.server.BaseHTTPRequestHandler):
    """A web server that is not ourmail: 404 for everything."""

    def do_GET(self) -> None:
        self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def other_web_server() -> Iterator[int]:
    """Another program's web server on 127.0.0.1; its port."""
    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_another_program_on_the_http_address_is_an_error_not_a_request(
    tmp_path: Path, other_web_server: int
) -> None:
    data = acme_data(tmp_path, f"tcp:{other_web_server}:interface=127.0.0.1")
    result = ourmail(data, "cert", "renew")
    assert result.returncode == 1
    assert "is taken by another program, not by ourmail" in result.stderr
    assert f"warning: the http listener is on port {other_web_server}" in result.stderr
    assert not ACMEFiles.of(data).renew_request.exists()


def test_an_address_that_cannot_be_bound_is_an_error_with_the_reason(tmp_path: Path) -> None:
    data = acme_data(tmp_path, f"tcp:{free_port()}:interface=192.0.2.7")  # not this machine's
    result = ourmail(data, "cert", "renew")
    assert result.returncode == 1
    assert "cannot listen on the http listener's address" in result.stderr
    assert "server is running" not in result.stdout
    assert not ACMEFiles.of(data).renew_request.exists()
