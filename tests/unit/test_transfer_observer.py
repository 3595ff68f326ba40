"""The store tells its observers before a copy or move between two folders of a user, with
the folders' special uses and the messages' files, whoever calls it (IMAP, later the
webmail); an observer that fails never fails the transfer."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import attrs
from storehelp import on_reactor
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from ourmail.interfaces import ITransferObserver
from ourmail.store.userstore import MaildirStore, ensure_default_folders


@implementer(ITransferObserver)
@attrs.define
class Recorder:
    seen: list[tuple[str, str | None, str | None, list[bytes]]] = attrs.Factory(list)
    broken: bool = False

    def transferring(
        self,
        user: str,
        source_use: str | None,
        target_use: str | None,
        files: Sequence[os.PathLike[str]],
    ) -> Deferred[None]:
        contents = [Path(f).read_bytes() for f in files]  # readable until it fires
        self.seen.append((user, source_use, target_use, contents))
        return fail(RuntimeError("observer broken")) if self.broken else succeed(None)


def store_with(tmp_path: Path, *observers: Recorder) -> MaildirStore:
    store = MaildirStore(tmp_path)
    store.observers.extend(observers)
    return store


def test_moves_and_copies_are_told_with_special_uses(tmp_path: Path) -> None:
    recorder = Recorder()
    store = store_with(tmp_path, recorder)
    user = store.user("alice@example.test")
    ensure_default_folders(user)
    user.create_folder("Projects")
    inbox, junk = user.folder("INBOX"), user.folder("Junk")
    on_reactor(inbox.append, b"Subject: one\r\n\r\n1\r\n")
    on_reactor(inbox.append, b"Subject: two\r\n\r\n2\r\n")
    on_reactor(inbox.move_to, [1], junk)
    on_reactor(inbox.copy_to, [2], user.folder("Projects"))
    on_reactor(junk.move_to, [1], user.folder("Trash"))
    assert recorder.seen == [
        ("alice@example.test", None, "\\Junk", [b"Subject: one\r\n\r\n1\r\n"]),
        ("alice@example.test", None, None, [b"Subject: two\r\n\r\n2\r\n"]),
        ("alice@example.test", "\\Junk", "\\Trash", [b"Subject: one\r\n\r\n1\r\n"]),
    ]
    assert len(user.folder("Trash").uids()) == 1


def test_a_failing_observer_does_not_fail_the_move(tmp_path: Path) -> None:
    broken, fine = Recorder(broken=True), Recorder()
    store = store_with(tmp_path, broken, fine)
    user = store.user("alice@example.test")
    ensure_default_folders(user)
    inbox = user.folder("INBOX")
    on_reactor(inbox.append, b"Subject: one\r\n\r\n1\r\n")
    pairs = on_reactor(inbox.move_to, [1], user.folder("Junk"))
    assert pairs == [(1, 1)] and len(fine.seen) == 1 and len(broken.seen) == 1
    assert list(inbox.uids()) == [] and list(user.folder("Junk").uids()) == [1]


def test_nothing_is_told_when_nothing_is_moved(tmp_path: Path) -> None:
    recorder = Recorder()
    store = store_with(tmp_path, recorder)
    user = store.user("alice@example.test")
    ensure_default_folders(user)
    on_reactor(user.folder("INBOX").move_to, [42], user.folder("Junk"))  # no such UID
    assert recorder.seen == []
