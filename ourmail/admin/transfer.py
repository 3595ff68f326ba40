"""Moving mail in and out: import a Dovecot or Courier Maildir, export as Maildir or mbox.

Import reads a Maildir++ tree (``cur/``, ``new/``, ``.Folder.Sub`` subfolders with modified
UTF-7 names) and stores every message through the store, so it is durable, indexed and given
UIDs like any delivery.  Flags come from the ``:2,`` letters, keywords from the folder's
``dovecot-keywords``, the internal date from the file's modification time (Dovecot's rule).

Export writes either a Maildir++ tree (the messages as stored, flags in the names, Dovecot
keywords) or one mboxrd file per folder (RFC 4155, ``>From`` quoting, flags in ``Status:``,
``X-Status:`` and ``X-Keywords:`` as mutt and Thunderbird read them).
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from twisted.internet.defer import Deferred, inlineCallbacks

from ourmail import mutf7
from ourmail.fsutil import fsync_dir
from ourmail.interfaces import FolderExists, IUserStore
from ourmail.mime.structure import to_crlf
from ourmail.store import maildir

_FROM_LINE = re.compile(rb"^(>*From )", re.M)


def source_folders(root: Path) -> Iterator[tuple[str, Path]]:
    """(folder name, path) for the INBOX and every Maildir++ subfolder of ``root``."""
    if (root / "cur").is_dir():
        yield "INBOX", root
    for entry in sorted(root.iterdir()):
        if (
            entry.name.startswith(".")
            and entry.name not in (".", "..")
            and (entry / "cur").is_dir()
        ):
            try:
                name = "/".join(mutf7.decode(p.encode("ascii")) for p in entry.name[1:].split("."))
            except (ValueError, UnicodeEncodeError):
                name = entry.name[1:].replace(".", "/")
            yield name, entry


@inlineCallbacks
def import_maildir(user: IUserStore, root: Path) -> Deferred[int]:
    """Store every message of the Maildir++ at ``root`` into ``user``; fires with the count."""
    count = 0
    for name, path in source_folders(root):
        if name != "INBOX":
            with contextlib.suppress(FolderExists):
                user.create_folder(name)
        folder = user.folder(name)
        keywords = maildir.read_keywords(path)
        files = []
        for sub in ("cur", "new"):
            for entry in os.scandir(path / sub):
                if entry.is_file() and not entry.name.startswith("."):
                    base, info = maildir.split_name(entry.name)
                    files.append((entry.stat().st_mtime, base, entry.path, info))
        for mtime, _, file_path, info in sorted(files):  # delivery order, so UIDs follow it
            data = to_crlf(Path(file_path).read_bytes())
            yield folder.append(data, maildir.flags_from_info(info, keywords), mtime)
            count += 1
    return count


def export_maildir(user: IUserStore, dest: Path) -> int:
    """Write the user's folders as a Maildir++ tree at ``dest``; returns the message count."""
    count = 0
    for name in user.list_folders():
        path = (
            dest
            if name == "INBOX"
            else dest / ("." + ".".join(mutf7.encode(p).decode("ascii") for p in name.split("/")))
        )
        maildir.make_maildir(path)
        folder = user.folder(name)
        folder.sync()
        keywords = folder.keywords()
        for uid in folder.uids():
            msg = folder.message(uid)
            letters = "".join(sorted(
                maildir.LETTER_OF.get(f) or chr(ord("a") + keywords.index(f))
                for f in msg.flags if f in maildir.LETTER_OF or f in keywords
            ))  # fmt: skip
            target = path / "cur" / f"{msg.key}:2,{letters}"
            target.write_bytes(msg.read())
            os.utime(target, (msg.internal_date, msg.internal_date))
            count += 1
        if keywords:
            maildir.write_keywords(path, keywords)
        fsync_dir(path / "cur")
    return count


def export_mbox(user: IUserStore, dest: Path) -> int:
    """Write one mboxrd file per folder: ``Archive/2024`` becomes ``dest/Archive/2024.mbox``."""
    count = 0
    for name in user.list_folders():
        target = dest / f"{name}.mbox"
        target.parent.mkdir(parents=True, exist_ok=True)
        folder = user.folder(name)
        folder.sync()
        with open(target, "wb") as out:
            for uid in folder.uids():
                msg = folder.message(uid)
                out.write(_mbox_entry(msg.read(), msg.flags, msg.internal_date))
                count += 1
            out.flush()
            os.fsync(out.fileno())
    return count


def _mbox_entry(data: bytes, flags: frozenset[str], date: float) -> bytes:
    text = data.replace(b"\r\n", b"\n")
    head, _, body = text.partition(b"\n\n")
    status = ("R" if "\\Seen" in flags else "") + "O"
    x_status = "".join(c for f, c in (("\\Answered", "A"), ("\\Flagged", "F"), ("\\Deleted", "D"),
                                      ("\\Draft", "T")) if f in flags)  # fmt: skip
    keywords = " ".join(sorted(f for f in flags if not f.startswith("\\")))
    extra = f"Status: {status}\nX-Status: {x_status}\n"
    if keywords:
        extra += f"X-Keywords: {keywords}\n"
    message = head + b"\n" + extra.encode() + b"\n" + body
    message = _FROM_LINE.sub(rb">\1", message)  # mboxrd quoting
    when = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(date))
    sender = email.utils.parseaddr(_header(head, b"return-path") or _header(head, b"from"))[1]
    envelope = f"From {sender or 'MAILER-DAEMON'} {when}\n".encode()
    if not message.endswith(b"\n"):
        message += b"\n"
    return envelope + message + b"\n"


def _header(head: bytes, name: bytes) -> str:
    for line in head.split(b"\n"):
        if line.lower().startswith(name + b":"):
            return line.split(b":", 1)[1].decode("utf-8", "replace").strip()
    return ""
