"""kill -9 of a running server at each step of the delivery path (the store's fault hook,
``OURMAIL_CRASH_AT``): every message that got its ``250`` is in the vault and in the
mailbox, and no mailbox holds a message the vault lacks (issue 18, point 1); a kill between
the segment write and the ``head`` file leaves the catalog and the chain whole."""

from __future__ import annotations

import contextlib
import re
import smtplib
from pathlib import Path

import pytest
from twistdhelp import Twistd

from ourmail.auth.accounts import AccountDB
from ourmail.auth.passwords import hash_password
from ourmail.store.folder import MaildirFolder
from ourmail.store.userstore import MaildirStore
from ourmail.vault.catalog import Catalog
from ourmail.vault.segments import SegmentLog

pytestmark = pytest.mark.system

USERS = ("alice@example.test", "bob@example.test")
_N = re.compile(rb"^Subject: message (\d+)\r$", re.M)


def numbers(data: bytes) -> set[int]:
    return {int(n) for n in _N.findall(data)}


def in_mailbox(data: Path, user: str) -> set[int]:
    folder = MaildirFolder(MaildirStore(data).shards.user_dir(user), "INBOX")
    found: set[int] = set()
    for uid in folder.uids():
        found |= numbers(folder.message(uid).read())
    return found


def in_vault(data: Path) -> set[int]:
    """What a fresh process finds in the vault (its catalog caught up, as at a restart)."""
    log = SegmentLog(data / "vault")
    catalog = Catalog(data / "vault", log)
    return {n for seq, _, _ in catalog.captures() for n in numbers(catalog.message(seq))}


@pytest.mark.parametrize(
    "crash",
    [
        "delivery-prepared:3",
        "vault-written:3",
        "vault-appended:3",
        "delivery-renamed:5",
        "delivery-journaled:5",
        "delivery-synced:3",
    ],
)
def test_kill_at_each_step_of_delivery(
    tmp_path: Path, crash: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "ourmail.toml").write_text("[smtp]\nmx_processes = 1\n")
    accounts = AccountDB(data)
    for user in USERS:
        accounts.add_user(user, hash_password("crash test"))
    monkeypatch.setenv("OURMAIL_CRASH_AT", crash)
    server = Twistd(data)
    acked: set[int] = set()
    try:
        with (
            contextlib.suppress(OSError, smtplib.SMTPException),
            smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=30) as s,
        ):
            for n in range(20):
                s.sendmail("x@else.test", USERS, b"Subject: message %d\r\n\r\nbody %d\r\n" % (n, n))
                acked.add(n)
        assert server.proc.wait(30) == -9, "the crash point was never reached"
    finally:
        if server.proc.poll() is None:
            server.kill()
    assert 0 < len(acked) < 20
    vaulted = in_vault(data)
    for user in USERS:
        stored = in_mailbox(data, user)
        assert acked <= stored, f"an acknowledged message is missing from {user}'s mailbox"
        assert stored <= vaulted, f"{user}'s mailbox holds a message the vault lacks"
    assert acked <= vaulted
    # The vault takes records again after the crash (a cut-short tail is dropped).
    log = SegmentLog(data / "vault")
    with log.locked():
        log.append([("notice", {"text": "after the crash"}, None)], 1.0)
    head = log.head()[0]
    assert [r.seq for _, r in log.records()] == list(range(1, head + 1))
    assert Catalog(data / "vault", log).count() == head
