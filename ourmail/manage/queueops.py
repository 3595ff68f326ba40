"""The outbound queue's admin operations, shared by ``ourmail queue``
(``ourmail/admin/queuecmd.py``) and the admin console (:mod:`ourmail.manage.queueadmin`):
a message's state, its header section, and the changes (retry now, hold, release, delete),
each made under the queue lock through :class:`~ourmail.queue.files.QueueFiles` and
audit-logged.

Blocking: call from a thread, or from the command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ourmail.interfaces import Actor, IAuditLog, QueuedMessage, QueueRefused, WaitingRecipient
from ourmail.queue.files import Envelope, QueueFiles

T = TypeVar("T")

#: The changes an admin can make, and the audit log's action for each.
ACTIONS = {
    "retry": "queue.retry",
    "hold": "queue.hold",
    "release": "queue.release",
    "delete": "queue.delete",
}
#: Longest message id accepted (ours are 19 hexadecimal digits, see ``queue.files.new_id``).
MAX_ID = 64
#: Most bytes read of a message to find the end of its header section.
HEADER_MOST = 1024 * 1024
_CHUNK = 64 * 1024


def check_id(qid: str) -> str:
    """``qid`` when it can be a queue id (ASCII letters and digits: never a path)."""
    if not qid or len(qid) > MAX_ID or not (qid.isascii() and qid.isalnum()):
        raise QueueRefused("bad-id", f"not a queue id: {qid[:MAX_ID]!r}", qid[:MAX_ID])
    return qid


def state(envelope: Envelope) -> str:
    """``held``, ``new`` (not tried yet) or ``retry`` (at ``envelope.next_attempt``)."""
    if envelope.held:
        return "held"
    return "new" if envelope.attempts == 0 else "retry"


def summary(envelope: Envelope) -> QueuedMessage:
    """What the console lists of a message."""
    return QueuedMessage(
        id=envelope.id,
        size=envelope.size,
        created=envelope.created,
        sender=envelope.sender,
        state=state(envelope),
        next_attempt=envelope.next_attempt,
        attempts=envelope.attempts,
        pending=tuple(
            WaitingRecipient(r.address, r.state, r.status, r.diagnostic) for r in envelope.pending()
        ),
        verp=envelope.verp,
    )


def recipients(envelope: Envelope) -> tuple[WaitingRecipient, ...]:
    """Every recipient of a message, final ones too."""
    return tuple(
        WaitingRecipient(r.address, r.state, r.status, r.diagnostic) for r in envelope.recipients
    )


def header(files: QueueFiles, qid: str, most: int = HEADER_MOST) -> bytes:
    """The header section of a queued message (RFC 5322 §2.1: up to the first empty line),
    read in chunks, at most ``most`` bytes; never the body."""
    check_id(qid)
    found = b""
    try:
        with open(files.message_path(qid), "rb") as f:
            while len(found) < most:
                chunk = f.read(_CHUNK)
                if not chunk:
                    break
                start = max(0, len(found) - 3)
                found += chunk
                end = found.find(b"\r\n\r\n", start)
                if end >= 0:
                    return found[:end]
    except FileNotFoundError:
        raise QueueRefused("no-such-message", f"no such message: {qid}", qid) from None
    return found[:most]


def _change(files: QueueFiles, qid: str, change: Callable[[Envelope], None]) -> None:
    check_id(qid)
    if files.update(qid, change) is None:
        raise QueueRefused("no-such-message", f"no such message: {qid}", qid)
    files.poke()


def _due_now(e: Envelope) -> None:
    e.next_attempt = 0.0
    e.retries += 1  # the runner, if it is trying it now, tries again at once after


def _hold(e: Envelope) -> None:
    e.held = True


def _release(e: Envelope) -> None:
    e.held = False
    e.next_attempt = 0.0


def retry(files: QueueFiles, qid: str) -> None:
    """Make a message due now (a held one stays held)."""
    _change(files, qid, _due_now)


def hold(files: QueueFiles, qid: str) -> None:
    """Keep a message from being delivered until it is released."""
    _change(files, qid, _hold)


def release(files: QueueFiles, qid: str) -> None:
    """Let a held message go, now."""
    _change(files, qid, _release)


def delete(files: QueueFiles, qid: str) -> None:
    """Remove a message from the queue, without notice to its sender."""
    check_id(qid)
    if not files.remove(qid):
        raise QueueRefused("no-such-message", f"no such message: {qid}", qid)
    files.poke()


CHANGES: dict[str, Callable[[QueueFiles, str], None]] = {
    "retry": retry,
    "hold": hold,
    "release": release,
    "delete": delete,
}


def audited(
    audit: IAuditLog,
    actor: Actor,
    action: str,
    target: str,
    work: Callable[[], T],
    detail: str = "",
) -> T:
    """``work``, then its line in the audit log (``ok``, or ``refused: <code>`` when it raised
    :class:`QueueRefused`); refused before ``work`` when no line can be written."""
    try:
        audit.ready()
    except OSError as e:
        raise QueueRefused("audit", f"the audit log cannot be written: {e}", target) from e
    try:
        done = work()
    except QueueRefused as e:
        audit.record(actor, action, target, f"refused: {e.code}", detail)
        raise
    audit.record(actor, action, target, "ok", detail)
    return done
