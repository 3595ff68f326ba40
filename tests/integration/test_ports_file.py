"""``<data>/listening.json``: the running server writes its listeners' ports there, removes
it when it stops, and ``ourmail dns records`` prefers those ports (saying so) to the ones the
configuration and the user running the command would give."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import running_server

from ourmail.net.portsfile import ports_file, running_ports


def test_the_running_server_writes_its_ports_and_removes_them_at_stop(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv:
        found = running_ports(srv.data)
        assert found is not None
        for service in ("smtp", "submissions", "imaps", "web", "http"):
            assert found[service] == srv.port(service)
        data = srv.data
    assert not ports_file(data).exists()
    assert running_ports(data) is None


def test_a_file_left_by_an_ended_process_or_unreadable_is_ignored(tmp_path: Path) -> None:
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    ports_file(tmp_path).write_text(json.dumps({"pid": int(ended.stdout), "ports": {"smtp": 25}}))
    assert running_ports(tmp_path) is None
    ports_file(tmp_path).write_text(json.dumps({"pid": os.getpid(), "ports": {"smtp": 2525}}))
    assert running_ports(tmp_path) == {"smtp": 2525}
    ports_file(tmp_path).write_text("{not json")
    assert running_ports(tmp_path) is None


def _records(data: Path) -> subprocess.CompletedProcess[str]:
    # No DNS server listens on port 9 of loopback: the address is left as a placeholder.
    command = [sys.executable, "-m", "ourmail", "--data", str(data), "dns", "records",
               "example.org", "--server", "127.0.0.1:9", "--timeout", "0.5"]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_dns_records_prefers_the_running_servers_ports_and_says_where_they_come_from(
    tmp_path: Path,
) -> None:
    (tmp_path / "ourmail.toml").write_text(
        'hostname = "mail.example.org"\ndomains = ["example.org"]\n'
        '[listen]\nimaps = "tcp:993"\nsubmissions = "tcp:465"\nweb = "none"\n'
    )
    configured = _records(tmp_path)
    assert configured.returncode == 0, configured.stderr
    assert "0 1 993 mail.example.org." in configured.stdout
    assert "imaps 993" in configured.stderr
    assert "from [listen], or where it names none the defaults for the user" in configured.stderr

    # As if a server of this process listened on other ports.
    ports_file(tmp_path).write_text(
        json.dumps({"pid": os.getpid(), "ports": {"imaps": 10993, "submissions": 10465}})
    )
    running = _records(tmp_path)
    assert running.returncode == 0, running.stderr
    assert "0 1 10993 mail.example.org." in running.stdout
    assert "0 1 993 " not in running.stdout
    assert (
        f"ourmail: note: ports imaps 10993, submissions 10465: those the running server "
        f"listens on ({ports_file(tmp_path)})"
    ) in running.stderr
