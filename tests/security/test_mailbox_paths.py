"""Mailbox names can never leave the user's directory (issue 7 point 9): ``..``, ``/``, NUL,
control characters, 10,000 characters and odd modified UTF-7, through the store and over
IMAP."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import RunningServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imaphelp import Session

from ourmail.interfaces import StoreError
from ourmail.store.userstore import MaildirStore

NASTY = [
    "..", "../x", "a/../../b", ".", "/abs", "a//b", "~root", "a\x00b", "a\nb", "\x7f", "x" * 10_000,
    "a/" * 40, "\x9b", "a\u2028b", "&Jjo", "&AC4ALg-", "&AC8-etc", "INBOX/..", "..&AC8-", "%2e%2e", "C:\\x", "a\\..\\b",
]  # fmt: skip


@pytest.fixture
def tree(tmp_path: Path) -> tuple[MaildirStore, Path]:
    store = MaildirStore(tmp_path / "data")
    return store, store.user("alice@example.org").root


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.one_of(st.sampled_from(NASTY), st.text(max_size=60)))
def test_store_names_stay_inside(tree: tuple[MaildirStore, Path], name: str) -> None:
    store, root = tree
    user = store.user("alice@example.org")
    before = set(os.listdir(root.parent))
    try:
        user.create_folder(name)
    except StoreError:
        pass
    else:
        folder = user.folder(name.rstrip("/"))  # CREATE ignores a trailing separator
        assert Path(folder.path).resolve().is_relative_to(root.resolve())
    assert set(os.listdir(root.parent)) == before  # nothing beside the user's directory
    for entry in os.listdir(root):
        assert "/" not in entry and entry not in ("..", ".")


def test_nasty_names_over_imap(mailserver: RunningServer) -> None:
    data = mailserver.data
    Session(mailserver).close()  # the first login makes the user's tree
    before = sorted(p for p in data.rglob("*") if p.is_dir())
    for name in NASTY:
        s = Session(mailserver)  # a session each: refusals count towards the error limit
        literal = name.encode("utf-8")
        for cmd in (b"CREATE", b"SELECT", b"DELETE", b"RENAME INBOX"):
            reply = s.cmd(cmd + b" {%d+}\r\n" % len(literal) + literal)[-1]
            assert b"SERVERBUG" not in reply, (name, reply)
        s.close()
    after = [p for p in data.rglob("*") if p.is_dir()]
    user_root = MaildirStore(data).user(mailserver.user).root.resolve()
    for p in after:
        if p not in before:
            assert p.resolve().is_relative_to(user_root), p
