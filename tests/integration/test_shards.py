"""Moving shards to another root while the server runs (issue 3, point 2)."""

import imaplib
import smtplib
from pathlib import Path

import pytest
from conftest import RunningServer, client_tls

from ourmail.admin.cli import main
from ourmail.store import shardmove
from ourmail.store.shards import ShardMap, shard_of

MSG = b"Subject: moving\r\n\r\nhello\r\n"


def send(srv: RunningServer) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.ehlo()
        s.mail("bob@else.test")
        s.rcpt(srv.user)
        return s.data(MSG)


def imap_state(srv: RunningServer) -> tuple[bytes, list[bytes]]:
    m = imaplib.IMAP4_SSL("127.0.0.1", srv.port("imaps"), ssl_context=client_tls())
    m.login(srv.user, srv.password)
    m.select("INBOX")
    validity = m.response("UIDVALIDITY")[1][0]
    uids = m.uid("SEARCH", "ALL")[1][0].split()
    m.logout()
    return validity, uids


def test_move_while_running(
    mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(3):
        assert send(mailserver)[0] == 250
    before = imap_state(mailserver)
    n = shard_of(mailserver.user)
    old_dir = ShardMap(mailserver.data).user_dir(mailserver.user)

    during: list[tuple[int, bytes]] = []
    real_copy = shardmove._copy_user

    def copy_and_try_delivering(source: Path, dest: Path) -> None:
        during.append(send(mailserver))  # a delivery while the shard is moving
        real_copy(source, dest)

    monkeypatch.setattr(shardmove, "_copy_user", copy_and_try_delivering)
    assert main(["--data", str(mailserver.data), "shard", "move", f"{n:02x}", "--to", "vol2"]) == 0
    assert during and during[0][0] == 451  # a temporary failure, never a loss
    assert not old_dir.exists()
    new_dir = ShardMap(mailserver.data).user_dir(mailserver.user)
    assert new_dir.is_relative_to(mailserver.data / "vol2")
    assert imap_state(mailserver) == before  # same UIDVALIDITY, same UIDs
    assert send(mailserver)[0] == 250
    assert len(imap_state(mailserver)[1]) == 4
    capsys.readouterr()
    assert main(["--data", str(mailserver.data), "shard", "list"]) == 0
    out = capsys.readouterr().out
    assert f"vol2\tshards {n:02x}\t1 users" in out


def test_move_refuses_bad_ranges(tmp_path: Path) -> None:
    with pytest.raises(shardmove.MoveError):
        shardmove.parse_range("zz")
    with pytest.raises(shardmove.MoveError):
        shardmove.parse_range("10-1ff")
    with pytest.raises(shardmove.MoveError):
        shardmove.move(tmp_path, 0, 255, "mail")  # already there


def test_stale_marker_is_ignored(tmp_path: Path) -> None:
    (tmp_path / shardmove.MARKER).write_text('{"pid": 999999999, "shards": [1, 2]}')
    assert shardmove.MovingShards(tmp_path).moving() == frozenset()
    assert shardmove.ranges_text([0, 1, 2, 5, 7, 8]) == "00-02, 05, 07-08"
