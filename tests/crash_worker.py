"""Runs one store operation in a subprocess, so the durability tests can kill it mid-way.

    python tests/crash_worker.py DATA_DIR OPERATION [FIRST_MESSAGE_NUMBER]

Prints ``ACK <n> <uid>`` (flushed) for every delivery the store acknowledged, then ``DONE``.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.internet.threads import blockingCallFromThread

from ourmail.store import folder as folder_mod
from ourmail.store.userstore import MaildirStore, ensure_default_folders

USER = "alice@example.org"


def body(n: int) -> bytes:
    return b"Subject: message %d\r\n\r\nbody of message %d\r\n" % (n, n)


@defer.inlineCallbacks
def deliver_in_waves(user: object, first: int = 0) -> defer.Deferred[None]:
    """40 messages, 8 at a time, so that they commit in several batches."""

    def ack(uid: int, n: int) -> None:
        print(f"ACK {n} {uid}", flush=True)

    for wave in range(5):
        numbers = range(first + wave * 8, first + wave * 8 + 8)
        yield defer.gatherResults([user.deliver(body(n)).addCallback(ack, n) for n in numbers])


def main() -> None:
    data, operation = Path(sys.argv[1]), sys.argv[2]
    threading.Thread(
        target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True
    ).start()
    user = MaildirStore(data).user(USER)
    ensure_default_folders(user)

    def run() -> defer.Deferred[None] | None:
        inbox = user.folder("INBOX")
        if operation == "deliver":
            return deliver_in_waves(user, int(sys.argv[3]) if len(sys.argv) > 3 else 0)
        if operation == "flags":
            inbox.store_flags(inbox.uids(), ["\\Seen", "$Done"], "+")
        elif operation == "expunge":
            inbox.expunge(list(inbox.uids()))
        elif operation == "rename":
            user.rename_folder("Projects", "Work")
        elif operation == "compact":
            folder_mod.COMPACT_SLACK = 5
            for _ in range(60):
                inbox.store_flags(inbox.uids()[:1], ["\\Flagged"], "+")
                inbox.store_flags(inbox.uids()[:1], ["\\Flagged"], "-")
        return None

    blockingCallFromThread(reactor, run)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
