"""LMTP (RFC 2033) on a unix socket: LHLO, per-recipient replies, swaks as the client."""

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningServer, running_server
from rawclient import RawClient

from ourmail.config import FilterSettings
from ourmail.store import shardmove
from ourmail.store.shards import shard_of


@pytest.fixture
def lmtp(tmp_path: Path) -> Iterator[tuple[RunningServer, Path]]:
    short = Path(tempfile.mkdtemp(prefix="lmtp-", dir="/tmp"))  # AF_UNIX paths are short
    sock = short / "lmtp.sock"
    try:
        with running_server(tmp_path, listen={"lmtp": f"unix:{sock}:mode=660:lockfile=1"}) as srv:
            yield srv, sock
    finally:
        shutil.rmtree(short, ignore_errors=True)


def other_shard_user(srv: RunningServer) -> str:
    """A second address whose shard differs from the test user's."""
    return next(
        a for a in (f"bob{i}@{srv.domain}" for i in range(100)) if shard_of(a) != shard_of(srv.user)
    )


def test_lmtp_per_recipient_replies(lmtp: tuple[RunningServer, Path]) -> None:
    srv, sock = lmtp
    bob = other_shard_user(srv)
    srv.add_user(bob)
    assert oct(os.stat(sock).st_mode & 0o777) == "0o660"
    c = RawClient(unix=str(sock))
    assert c.line().startswith(b"220 mail.example.test LMTP")
    c.send(b"EHLO mta.local\r\n")
    assert c.line().startswith(b"500 5.5.1")
    c.send(b"LHLO mta.local\r\n")
    lines = [c.line()]
    while lines[-1][3:4] == b"-":
        lines.append(c.line())
    assert b"250-PIPELINING" in lines and not any(b"STARTTLS" in x or b"AUTH" in x for x in lines)
    # Bob's shard is "being moved": his delivery fails while Alice's goes through.
    marker = srv.data / shardmove.MARKER
    marker.write_text(json.dumps({"pid": os.getpid(), "shards": [shard_of(bob)]}))
    c.send(
        b"MAIL FROM:<mta@else.test>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<nobody@example.test>\r\n"
        + f"RCPT TO:<{bob}>\r\nDATA\r\n".encode()
    )
    assert c.line().startswith(b"250")
    assert c.line().startswith(b"250 2.1.5")
    assert c.line().startswith(b"550 5.1.1")
    assert c.line().startswith(b"250 2.1.5")
    assert c.line().startswith(b"354")
    c.send(b"Subject: via lmtp\r\n\r\nhi\r\n.\r\n")
    assert c.line().startswith(b"250 2.1.5 <alice@example.test> delivered")
    assert c.line().startswith(f"451 4.2.1 <{bob}>".encode())
    marker.unlink()
    folder = srv.server.store.user(srv.user).folder("INBOX")
    folder.sync()
    (uid,) = folder.uids()
    assert b"with LMTP id" in folder.message(uid).read()


def test_swaks_over_the_socket(lmtp: tuple[RunningServer, Path]) -> None:
    srv, sock = lmtp
    out = subprocess.run(
        [
            "swaks",
            "--protocol",
            "LMTP",
            "--socket",
            str(sock),
            "--to",
            srv.user,
            "--from",
            "mta@else.test",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    folder = srv.server.store.user(srv.user).folder("INBOX")
    folder.sync()
    assert len(folder.uids()) == 1


@pytest.mark.parametrize("action", ["reject", "tempfail"])
def test_a_message_refused_at_data_answers_every_recipient(tmp_path: Path, action: str) -> None:
    """RFC 2033 §4.2: a refusal at the end of DATA (a virus, a scanner that is down) is one
    reply per accepted recipient, or the client waits for the missing ones."""
    short = Path(tempfile.mkdtemp(prefix="lmtp-", dir="/tmp"))
    sock = short / "lmtp.sock"
    check = "filtercheck:factory"
    options = {check: {"action": action, "at": "data", "trusted": True}}
    filters = FilterSettings(chain=(check,), options=options)
    try:
        with running_server(
            tmp_path, listen={"lmtp": f"unix:{sock}:mode=660:lockfile=1"}, filters=filters
        ) as srv:
            bob = other_shard_user(srv)
            srv.add_user(bob)
            c = RawClient(unix=str(sock))
            c.line()
            c.send(b"LHLO mta.local\r\n")
            while c.line()[3:4] == b"-":
                pass
            c.send(
                b"MAIL FROM:<mta@else.test>\r\nRCPT TO:<alice@example.test>\r\n"
                + f"RCPT TO:<{bob}>\r\nDATA\r\n".encode()
            )
            assert [c.line()[:3] for _ in range(4)] == [b"250", b"250", b"250", b"354"]
            c.send(b"Subject: refused\r\n\r\nhi\r\n.\r\n")
            code = b"550" if action == "reject" else b"451"
            assert [c.line()[:3] for _ in range(2)] == [code, code]
            c.send(b"NOOP\r\n")
            assert c.line().startswith(b"250")  # in step: no reply was missing or extra
    finally:
        shutil.rmtree(short, ignore_errors=True)
