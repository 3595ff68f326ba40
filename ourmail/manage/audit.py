"""The audit log: ``<data>/log/audit.log``, one JSON object per line for every change made
with the admin console or the ``ourmail`` commands, and every refused admin request
(docs/admin-console.md#the-audit-log).

A line is written with one ``write`` on a file opened for appending, under an exclusive
``flock`` (the server and the commands are separate processes), and fsynced before
:meth:`AuditFile.record` returns: a change is never confirmed before its line is on disk.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import pwd
from collections.abc import Callable
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from ourmail.fsutil import fsync_dir
from ourmail.interfaces import AccountRefused, Actor, IAuditLog

#: The log's path under the data directory.
RELATIVE_PATH = Path("log") / "audit.log"
#: Longest text kept of any one field (a hostile form value is cut, not copied whole).
MAX_FIELD = 400


def _field(value: str) -> str:
    return value if len(value) <= MAX_FIELD else value[:MAX_FIELD] + "…"


def unix_user() -> str:
    """Who runs this process: the effective Unix user, and the one sudo ran it for."""
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    sudo = os.environ.get("SUDO_USER")
    return f"{name} (sudo by {sudo})" if sudo and sudo != name else name


@implementer(IAuditLog)
class AuditFile:
    """:class:`IAuditLog` as a file of JSON lines (see the module docstring)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / RELATIVE_PATH

    def ready(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))

    def record(self, actor: Actor, action: str, target: str, result: str, detail: str = "") -> None:
        line = json.dumps(
            {
                "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "who": _field(actor.who),
                "via": actor.via,
                "client": _field(actor.client),
                "action": action,
                "target": _field(target),
                "result": result,
                "detail": _field(detail),
            },
            # ASCII only: no U+2028, U+0085 or other line break a reader might split on.
            ensure_ascii=True,
        )
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, (line + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.path.parent)


def audited_change(
    audit: IAuditLog,
    actor: Actor,
    action: str,
    target: str,
    work: Callable[[], str],
    detail: str | Callable[[], str] = "",
) -> str:
    """Run ``work`` (a change; it returns what it changed) and write its audit line:
    ``ok``, ``refused: <code>`` (:class:`AccountRefused`) or ``failed: <error>`` (anything
    else, raised on).  Nothing is tried while the log cannot be written.  A callable
    ``detail`` is asked once ``work`` is done.  Blocks on the disk: the console calls it in a
    thread, before telling the admin the change is made."""
    try:
        audit.ready()
    except OSError as e:
        raise AccountRefused("audit", f"the audit log cannot be written: {e}") from e

    def text() -> str:
        return detail if isinstance(detail, str) else detail()

    try:
        done = work()
    except AccountRefused as e:
        audit.record(actor, action, e.subject or target, f"refused: {e.code}", text())
        raise
    except Exception as e:
        audit.record(actor, action, target, f"failed: {type(e).__name__}", text())
        raise
    audit.record(actor, action, done, "ok", text())
    return done


def audited_in_thread(
    audit: IAuditLog,
    actor: Actor,
    action: str,
    target: str,
    work: Callable[[], str],
    detail: str | Callable[[], str] = "",
) -> Deferred[str]:
    """:func:`audited_change` in a worker thread: the console's way to make a change, which
    fires once the change and its audit line are both on disk."""
    return deferToThread(audited_change, audit, actor, action, target, work, detail)
