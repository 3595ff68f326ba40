"""Distribution of a post to a list's members: the archive copy, the digest, and the
outbound queue in batches with VERP return paths.

The recipients are the enabled subscriptions (delivery ``each``) and the members of the
list's group, each address once (case-insensitively), without the digest members.  The
shared copy (:mod:`ourmail.lists.rewrite`) is delivered to the archive (the store user
``lst.address``, folder INBOX), handed to the digest when the list has one, ARC-sealed once
(RFC 8617) and queued in batches of ``[lists] batch`` recipients from the list's ``-bounces``
address with VERP, each subscriber's copy carrying its own RFC 8058 ``List-Unsubscribe``.

A handler that fails is run again by the spool, so a distribution records its progress in
``<root>/outgoing/<key>.*`` (the key is a hash of the list and the post): the recipients as
first computed, then one line per step done (``archive``, ``digest``, ``batch N``), each
fsynced once its step is durable (the batches are queued side by side).  Run again, it
skips what is done, and the same post distributed again within :data:`KEEP` seconds (a
retry after the spool's file survived, a second approval) goes to nobody again.

A batch is queued under a key of its own (the record's key and the batch's number, cut with
the batch size the record keeps), and the queue queues a key once (``enqueue(key=…)``):
a crash after a batch is queued and before its step is recorded queues it again on the next
run, which the queue answers with the first copy's id, so no member gets a post twice.

The post's hash, its rewrite and its ARC seal run in threads (``ctx.run``), never on the
reactor; a seal that fails sends the post unsealed (logged), never stalls the list.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

import attrs
from twisted.internet.defer import Deferred, DeferredList, DeferredLock
from twisted.logger import Logger
from twisted.python.failure import Failure

from ourmail import fsutil
from ourmail.dsnparams import NO_MAIL_PARAMS, NO_RCPT_PARAMS
from ourmail.lists import digest, headers, rewrite
from ourmail.lists.context import ListContext
from ourmail.lists.model import Delivery, ListSettings, parse_address

log = Logger()

#: Seconds a finished distribution's record is kept (a post seen again within it is not
#: sent again).
KEEP = 7 * 86400
#: The record's step that says the distribution is complete.
DONE = "done"

_locks: dict[str, DeferredLock] = {}


@attrs.frozen
class Recipients:
    """Who gets a post: ``subscribers`` (with a one-click unsubscribe link each) and the
    group's other members."""

    subscribers: tuple[str, ...]
    others: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        return self.subscribers + self.others


async def recipients(ctx: ListContext, lst: ListSettings) -> Recipients:
    """The list's recipients of each post now (fails with ``DirectoryUnavailable`` when the
    group cannot be looked up: the post waits in the spool)."""
    members = await ctx.run(ctx.db.members, lst.address)
    # Digest members get digests; disabled ones nothing, even when the group names them.
    skip = {m.address.lower() for m in members if m.delivery is not Delivery.EACH}
    seen: set[str] = set()
    subscribers: list[str] = []
    for m in members:
        lower = m.address.lower()
        if lower not in skip and lower not in seen and not _ours(lst, lower):
            seen.add(lower)
            subscribers.append(m.address)
    others: list[str] = []
    if lst.group:
        group = await ctx.directory.lookup(lst.group)
        for address in (*group.mailboxes, *group.outbound):
            lower = address.lower()
            if lower not in skip and lower not in seen and not _ours(lst, lower):
                seen.add(lower)
                others.append(address)
    return Recipients(tuple(subscribers), tuple(others))


def _ours(lst: ListSettings, address: str) -> bool:
    """An address of the list itself (a group that names its own list would loop)."""
    return parse_address(address.lower(), {lst.address}) is not None


async def distribute(ctx: ListContext, lst: ListSettings, message: bytes, poster: str) -> int:
    """Send the post ``message`` (CRLF, as the poster sent it) to the list's members, the
    archive and the digest; how many members it was queued for."""
    key = await ctx.run(_key, lst.address, message)
    lock = _locks.setdefault(key, DeferredLock())
    await lock.acquire()
    try:
        return await _distribute(ctx, lst, message, poster, key)
    finally:
        lock.release()
        if not lock.locked and not lock.waiting:
            _locks.pop(key, None)


def _key(list_address: str, message: bytes) -> str:
    """The record's key of ``message`` posted to ``list_address``.  Blocking (a thread):
    hashing a large post takes a while."""
    return hashlib.sha256(list_address.encode() + b"\0" + message).hexdigest()[:40]


async def _seal(ctx: ListContext, lst: ListSettings, content: bytes) -> bytes:
    """``content`` with the list's ARC set (RFC 8617 §5.1), or unchanged when there is no
    sealer or sealing fails (a bad key, a message the sealer cannot read): the post goes out
    unsealed, logged, rather than stall the list."""
    if ctx.sealer is None:
        return content
    try:
        return await ctx.sealer.seal(content)
    except Exception as e:
        log.warn(
            "list {list}: post sent unsealed: ARC sealing failed: {e!r}", list=lst.address, e=e
        )
        return content


async def _distribute(
    ctx: ListContext, lst: ListSettings, message: bytes, poster: str, key: str
) -> int:
    folder = ctx.root / "outgoing"
    record = await ctx.run(Record.load, folder, key)
    if record is None:
        found = await recipients(ctx, lst)
        record = await ctx.run(Record.create, folder, key, found, ctx.settings.batch)
    if DONE in record.done:
        log.info("list {list}: post from {poster} was distributed already", list=lst.address,
                 poster=poster)  # fmt: skip
        return len(record.recipients.all)
    out = await rewrite.rewrite(ctx, lst, message)
    if "archive" not in record.done:
        await ctx.store.user(lst.address).deliver(out.content)
        await ctx.run(record.mark, "archive")
    if lst.digest and "digest" not in record.done:
        await digest.add(ctx, lst, out.content)
        await ctx.run(record.mark, "digest")
    content = await _seal(ctx, lst, out.content)
    subscribers = set(record.recipients.subscribers)
    header_ascii = content[: headers.header_end(content)].isascii()

    async def send(n: int, batch: Sequence[str]) -> None:
        personal = {
            r: rewrite.unsubscribe_fields(ctx.web_url, ctx.secret, lst, r)
            for r in batch
            if r in subscribers
        }
        await ctx.queue.enqueue(
            lst.role_address("bounces"),
            [(r, NO_RCPT_PARAMS) for r in batch],
            content,
            NO_MAIL_PARAMS,
            not header_ascii or not all(r.isascii() for r in batch),
            forwarded=not out.munged,
            verp=True,
            personal=personal,
            key=f"list-{key}-{n}",  # queued again after a crash: not sent twice
        )
        await ctx.run(record.mark, f"batch {n}")

    # The batches are queued side by side (their files are written and fsynced in the
    # thread pool at once); each is recorded as it becomes durable.
    batches = _batches(record.recipients.all, record.batch or ctx.settings.batch)
    pending = [
        Deferred.fromCoroutine(send(n, batch))
        for n, batch in enumerate(batches)
        if f"batch {n}" not in record.done
    ]
    for ok, result in await DeferredList(pending, consumeErrors=True):
        if not ok and isinstance(result, Failure):
            result.raiseException()
    await ctx.run(record.mark, DONE)
    log.info(
        "list {list}: post from {poster} queued for {count} members",
        list=lst.address,
        poster=poster,
        count=len(record.recipients.all),
    )
    return len(record.recipients.all)


def _batches(items: Sequence[str], size: int) -> list[Sequence[str]]:
    size = max(1, size)
    return [items[i : i + size] for i in range(0, len(items), size)]


@attrs.define
class Record:
    """The progress of one distribution on disk: ``<key>.rcpt`` (``b size``, the batch size
    the batches were cut with, then ``s address`` for a subscriber, ``g address`` for a group
    member, one a line) and ``<key>.log`` (the steps done, one a line).  Blocking: used in a
    thread."""

    log_path: Path
    recipients: Recipients
    done: set[str]
    #: The recipients per batch (0 in a record written before it was kept: the setting's).
    batch: int = 0

    @classmethod
    def load(cls, folder: Path, key: str) -> Record | None:
        """The record of ``key``, None when there is none (it also forgets old records)."""
        _prune(folder)
        try:
            lines = (folder / f"{key}.rcpt").read_bytes().decode("utf-8").splitlines()
            done = (folder / f"{key}.log").read_bytes().decode("utf-8").splitlines()
        except FileNotFoundError:
            return None
        subscribers = tuple(line[2:] for line in lines if line.startswith("s "))
        others = tuple(line[2:] for line in lines if line.startswith("g "))
        sizes = [int(line[2:]) for line in lines if line.startswith("b ") and line[2:].isdigit()]
        recipients = Recipients(subscribers, others)
        return cls(folder / f"{key}.log", recipients, set(done), sizes[0] if sizes else 0)

    @classmethod
    def create(cls, folder: Path, key: str, found: Recipients, batch: int) -> Record:
        """A new record of the recipients ``found``, to be sent in batches of ``batch``,
        durable (files and folder)."""
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            fsutil.fsync_dir(folder.parent)
        lines = [f"b {batch}"]
        lines += [f"s {a}" for a in found.subscribers] + [f"g {a}" for a in found.others]
        log_path = folder / f"{key}.log"
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fsync(fd)
        os.close(fd)
        fsutil.write_atomic(folder / f"{key}.rcpt", "".join(f"{x}\n" for x in lines).encode())
        return cls(log_path, found, set(), batch)

    def mark(self, step: str) -> None:
        """Record ``step`` as done, durably."""
        with self.log_path.open("ab") as f:
            f.write(f"{step}\n".encode())
            f.flush()
            os.fsync(f.fileno())
        self.done.add(step)


def _prune(folder: Path) -> None:
    """Forget the records older than :data:`KEEP`."""
    if not folder.is_dir():
        return
    limit = time.time() - KEEP
    for path in folder.iterdir():
        try:
            if path.stat().st_mtime < limit:
                path.unlink()
        except FileNotFoundError:
            continue
