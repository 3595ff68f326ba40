"""Expiry: removing the content of records past their retention (docs/vault.md).

:func:`plan` finds, in one pass over the metadata, the ``capture`` records past their
retention (:mod:`ourmail.vault.retention`) and covered by no active hold, and the ``blob``
records every user of which is going or gone.  :func:`expire` plans again (without the
vault's lock: captures go on), then under the lock reads the records appended since, so a
hold or a rule set after a plan was made, or while the run read, is honoured, and a message
captured meanwhile keeps the body it shares with an expiring one.

The order of a run, and why (an auditor's view):

1. The ``expire`` record naming every record whose content goes is appended and fsynced
   **first**.  The chain then says what is about to be removed, by which rules, before
   anything is.
2. Then each segment holding such content is rewritten: a new file with those frames' content
   cut to length 0 (their frame hash and metadata unchanged, so the chain still verifies),
   fsynced, renamed over the old one, and its folder fsynced.

A crash between the two leaves content that an ``expire`` record names: it still verifies
against its ``sha256``, and the next run removes it (unless a hold now covers it: then it is
kept and the run logs it).  The other order would leave, after a crash, content missing that no
record accounts for, which is exactly what tampering looks like; so absent content is always
named by an earlier ``expire`` record, and ``ourmail vault verify`` accepts nothing else.

Locks: a run holds ``<vault>/expire.lock`` (``flock``) from start to end, so two runs, the
server's and a command's, never overlap.  The vault's own lock, which capture waits for, is
held only to read the records appended since the plan, to write the ``expire`` record, and to
rewrite the **last** segment, the one appends go to.  A closed segment (one a later segment
follows in the vault's own folder, where :class:`~ourmail.vault.segments.SegmentLog` appends
only to the last) is never written again by anyone else, so it is rewritten without the
vault's lock while capture goes on.  A rule, hold or release appended during the pass
means another pass, also without the vault's lock (:func:`_settled`).  A rewrite streams
frame by frame in chunks of :data:`CHUNK`: a segment is never read whole into memory.

Segment offsets change in a rewrite.  The catalog (``ourmail/vault/catalog.py``) notices
that when it next reads there, in this process or the server, and catalogues the segment
again; the search index forgets the expired seqs when it reads the ``expire`` record.  After
a run, every callable of ``hooks`` is called with the report.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import attrs
from twisted.logger import Logger

from ourmail.fsutil import fsync_dir
from ourmail.interfaces import IVaultIndex
from ourmail.vault import records
from ourmail.vault.retention import (
    Facts,
    Rule,
    State,
    envelope_of,
    facts_of,
    load,
    search_holds,
)
from ourmail.vault.scan import Entry, entries, frames
from ourmail.vault.segments import Position, SegmentLog

log = Logger()

#: The file a run ``flock``s so that two runs never overlap (beside the vault's ``lock``).
EXPIRE_LOCK = "expire.lock"
#: Read and written at a time when a segment is rewritten.
CHUNK = 1 << 20
#: Passes a run makes without the vault's lock while rules or holds change meanwhile; the
#: last is made under it, so a run always ends.
SETTLE_TRIES = 3
#: A segment's file name (``ourmail/vault/segments.py``).
_SEGMENT = re.compile(r"\d{8}\.seg")


@attrs.frozen
class Plan:
    """What an expiry run would remove."""

    now: float
    #: capture seqs past retention and not held.
    captures: tuple[int, ...]
    #: blob seqs no longer used by any kept message.
    blobs: tuple[int, ...]
    #: seqs an earlier ``expire`` record named whose content is still there (a crash).
    pending: tuple[int, ...]
    #: Where each of those records is, and its stored content's length.
    positions: dict[int, tuple[Position, int]]
    #: The rules that expired the captures.
    rules: tuple[Rule, ...]
    #: Captures past their retention that a hold keeps: hold name -> count.
    held: dict[str, int]
    #: The body hash of each blob whose content goes (a capture appended meanwhile may use it).
    bodies: dict[int, str] = attrs.field(factory=dict)
    #: The last seq the plan read.
    last_seq: int = 0
    #: Where that record is (None: not known), so that the records appended since are read
    #: from there rather than from the start of its segment.
    last_position: Position | None = None

    @property
    def octets(self) -> int:
        return sum(length for _, length in self.positions.values())

    def seqs(self) -> list[int]:
        """Every record whose content goes."""
        return sorted({*self.captures, *self.blobs, *self.pending})


@attrs.frozen
class Report:
    """What an expiry run did."""

    plan: Plan
    #: The ``expire`` record's seq (0: nothing was expired).
    record: int
    segments: tuple[int, ...]


Hook = Callable[[Report], None]


def plan(
    log_: SegmentLog, local_domains: Iterable[str], now: float, index: IVaultIndex | None = None
) -> Plan:
    """What expiry would remove now (``index``: the search index, for query holds on body
    words or attachment names; without it they keep every message).  Blocks on the disk:
    call it in a thread."""
    return _plan(log_, load(log_, local_domains), now, None, index)


def _plan(
    log_: SegmentLog,
    state: State,
    now: float,
    allowed: set[int] | None,
    index: IVaultIndex | None = None,
) -> Plan:
    if index is not None:
        search_holds(state, index)
    latest_blob: dict[str, int] = {}
    blob_at: dict[int, tuple[Position, int]] = {}
    bodies: dict[int, str] = {}
    blob_kept: set[int] = set()
    blob_going: set[int] = set()
    captures: list[int] = []
    pending: list[int] = []
    positions: dict[int, tuple[Position, int]] = {}
    rules: dict[str, Rule] = {}
    held: dict[str, int] = {}
    last_seq, last_position = 0, None
    for entry in entries(log_):
        fields, seq = entry.fields, entry.seq
        last_seq, last_position = seq, entry.position
        if entry.kind == "blob":
            latest_blob[str(fields.get("sha256"))] = seq
            bodies[seq] = str(fields.get("sha256"))
            blob_at[seq] = (entry.position, entry.stored)
            if seq in state.expired and entry.stored:
                pending.append(seq)
                positions[seq] = (entry.position, entry.stored)
            continue
        if entry.kind != "capture":
            continue
        blob = latest_blob.get(str(fields.get("body")))
        if seq in state.expired and not entry.stored:
            continue  # gone already: keeps nothing
        envelope = envelope_of(fields)
        captured = float(fields["time"])
        past = state.keep_until(envelope, captured) <= now
        if (past or seq in state.expired) and (allowed is None or seq in allowed):
            facts = _facts(log_, entry.position, entry.stored)
            hold = state.holding(envelope, captured, facts, seq)
            if hold is None:
                if seq in state.expired:
                    pending.append(seq)
                else:
                    captures.append(seq)
                    rule = state.rule_for(envelope)
                    rules[rule.scope] = rule
                if entry.stored:
                    positions[seq] = (entry.position, entry.stored)
                if blob is not None:
                    blob_going.add(blob)
                continue
            held[hold.name] = held.get(hold.name, 0) + 1
            if seq in state.expired:
                log.warn(
                    "vault expiry: record {seq} stays, held by {hold}, though an earlier "
                    "expire record names it",
                    seq=seq,
                    hold=hold.name,
                )
        if blob is not None:
            blob_kept.add(blob)
    blobs = []
    for seq in sorted(blob_going - blob_kept):
        position, stored = blob_at[seq]
        if stored and seq not in state.expired:
            blobs.append(seq)
            positions[seq] = (position, stored)
    positions = {s: p for s, p in positions.items() if s not in blob_kept}
    return Plan(
        now=now,
        captures=tuple(captures),
        blobs=tuple(blobs),
        pending=tuple(sorted(set(pending) - blob_kept)),
        positions=positions,
        rules=tuple(rules.values()),
        held=held,
        bodies={s: sha for s, sha in bodies.items() if s in positions},
        last_seq=last_seq,
        last_position=last_position,
    )


def _fresh(
    log_: SegmentLog,
    local_domains: Iterable[str],
    now: float,
    allowed: set[int] | None,
    index: IVaultIndex | None,
) -> Plan:
    """A plan from one pass over the vault (without the vault's lock)."""
    state = load(log_, local_domains)
    fresh = _plan(log_, state, now, allowed, index)
    if state.last_seq < fresh.last_seq:  # a hold may have come between the two passes
        fresh = attrs.evolve(fresh, last_seq=state.last_seq, last_position=state.last_position)
    return fresh


def _settle(
    log_: SegmentLog,
    plan_: Plan,
    local_domains: Iterable[str],
    allowed: set[int] | None,
    index: IVaultIndex | None,
    replan: bool,
) -> Plan | None:
    """``plan_`` made good for now (the caller holds the lock): the records appended since it
    was made are read; a rule, hold, release or expire among them means planning again (here
    when ``replan``, else None: the caller plans again without the lock), and a capture among
    them keeps the body it uses."""
    used: set[str] = set()
    for entry in _since(log_, plan_):
        if entry.kind in ("rule", "hold", "release", "expire"):
            if not replan:
                return None
            return _plan(log_, load(log_, local_domains), plan_.now, allowed, index)
        if entry.kind == "capture":
            used.add(str(entry.fields.get("body")))
    keep = {seq for seq, sha in plan_.bodies.items() if sha in used}
    if not keep:
        return plan_
    return attrs.evolve(
        plan_,
        blobs=tuple(s for s in plan_.blobs if s not in keep),
        pending=tuple(s for s in plan_.pending if s not in keep),
        positions={s: p for s, p in plan_.positions.items() if s not in keep},
        bodies={s: sha for s, sha in plan_.bodies.items() if s not in keep},
    )


def _since(log_: SegmentLog, plan_: Plan) -> Iterator[Entry]:
    """The records appended since ``plan_`` was made, read from where its last record is
    (under the expiry lock no rewrite moves it), else from the start of its segment."""
    start = plan_.last_position
    if start is None:
        yield from entries(log_, plan_.last_seq)
        return
    number, offset = start.segment, start.offset
    while True:
        with open(log_.path_of(number), "rb") as f:
            fd = f.fileno()
            if number != start.segment:
                header = os.pread(fd, records.MAX_FRAME_LINE, 0)
                offset = records.parse_segment_header(header).length
            for entry, after in frames(fd, number, offset):
                if number == start.segment and entry.position == start:
                    if entry.seq != plan_.last_seq:
                        raise records.FormatError(f"record {plan_.last_seq} is not at {start}")
                    offset = after
                    continue
                yield entry
                offset = after
            following = _exists(log_, number + 1)
            if following and offset != os.fstat(fd).st_size:
                raise records.FormatError(f"segment {number}: record cut short at {offset}")
        if not following:
            return
        number += 1


def _exists(log_: SegmentLog, number: int) -> bool:
    try:
        log_.path_of(number)
    except FileNotFoundError:
        return False
    return True


def _facts(log_: SegmentLog, position: Position, stored: int) -> Callable[[], Facts]:
    """The headers of the capture at ``position``, read only if a query hold asks."""
    cache: list[Facts] = []

    def read() -> Facts:
        if not cache:
            header = log_.read_at(position).plain() if stored else b""
            cache.append(facts_of(header))
        return cache[0]

    return read


@contextmanager
def expiry_locked(log_: SegmentLog) -> Iterator[None]:
    """Hold ``<vault>/expire.lock``: one expiry run at a time, server or command (blocks
    until the other run ends)."""
    log_.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(log_.root / EXPIRE_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def expire(
    log_: SegmentLog,
    local_domains: Iterable[str],
    now: float,
    planned: Plan | None = None,
    hooks: Sequence[Hook] = (),
    index: IVaultIndex | None = None,
) -> Report:
    """Carry out expiry (see the module text): plan again, and remove what both plans agree
    on (everything found now, when ``planned`` is None).  The long pass runs without the
    vault's lock, so captures go on meanwhile; under the lock only the records appended since
    are read (:func:`_settle`) and the expire record is written; then the closed segments are
    rewritten without it, and the last one under it.  Blocks on the disk: call it in a
    thread."""
    allowed = None if planned is None else set(planned.captures) | set(planned.pending)
    with expiry_locked(log_):
        fresh, record = _settled(log_, local_domains, now, allowed, index)
        if not fresh.seqs():
            report = Report(fresh, 0, ())
            _log_run(report)
            return report
        segments = remove_content(log_, fresh.positions)
    report = Report(fresh, record, segments)
    for hook in hooks:
        hook(report)
    _log_run(report)
    return report


def _settled(
    log_: SegmentLog,
    local_domains: Iterable[str],
    now: float,
    allowed: set[int] | None,
    index: IVaultIndex | None,
) -> tuple[Plan, int]:
    """The plan made good under the vault's lock, and its ``expire`` record's seq (0: none
    written).  A rule, hold or release set during a pass means another pass without the
    lock; only the last of :data:`SETTLE_TRIES` plans again under it."""
    fresh = _fresh(log_, local_domains, now, allowed, index)
    tries = 1
    while True:
        with log_.locked():
            settled = _settle(log_, fresh, local_domains, allowed, index, tries >= SETTLE_TRIES)
            if settled is not None:
                return settled, _write_expire_record(log_, settled, now)
        fresh = _fresh(log_, local_domains, now, allowed, index)
        tries += 1


def _write_expire_record(log_: SegmentLog, plan_: Plan, now: float) -> int:
    """Append and fsync the ``expire`` record naming the captures and blobs that go (the
    caller holds the vault's lock); its seq, or 0 when only pending content remains."""
    named = sorted({*plan_.captures, *plan_.blobs})
    if not named:
        return 0
    rules = [{"scope": r.scope, "keep_days": r.keep_days} for r in plan_.rules]
    item = ("expire", {"records": named, "rule": rules, "reason": "retention"}, None)
    ((_, written),) = log_.append([item], now)
    log_.sync()
    return written.seq


def remove_content(log_: SegmentLog, positions: dict[int, tuple[Position, int]]) -> tuple[int, ...]:
    """Rewrite each segment holding one of these records with their content cut to length 0
    (the caller holds the expiry lock, :func:`expiry_locked`, and not the vault's lock): a
    closed segment without the vault's lock, the last under it (module text).  Returns the
    segments rewritten."""
    by_segment: dict[int, dict[int, int]] = {}
    for seq, (position, _) in positions.items():
        by_segment.setdefault(position.segment, {})[position.offset] = seq
    for number, offsets in sorted(by_segment.items()):
        if closed(log_, number):
            _rewrite(log_.path_of(number), offsets)
        else:
            with log_.locked():
                _rewrite(log_.path_of(number), offsets)
    return tuple(sorted(by_segment))


def closed(log_: SegmentLog, number: int) -> bool:
    """True if segment ``number`` is never appended to again: a later segment is in the
    vault's own folder, and :class:`SegmentLog` appends only to the last segment there (or
    starts a new one).  Once true, it stays true."""
    try:
        names = os.listdir(log_.directory)
    except FileNotFoundError:
        return False
    return any(_SEGMENT.fullmatch(name) and int(name[:8]) > number for name in names)


def _rewrite(path: Path, offsets: dict[int, int]) -> None:
    """Write ``path`` again with the frames at ``offsets`` (offset -> seq) emptied: a new
    file, fsynced, renamed over the old one, the folder fsynced.  Streams: each frame kept
    is copied :data:`CHUNK` octets at a time, and of an emptied one only its line and
    metadata are read."""
    temporary = path.with_name(path.name + ".expiring")
    with open(path, "rb") as source:
        src = source.fileno()
        size = os.fstat(src).st_size
        header = records.parse_segment_header(os.pread(src, records.MAX_FRAME_LINE, 0))
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _copy(src, fd, 0, header.length)
            offset = header.length
            while offset < size:
                digest, line, meta_len, stored = _frame_line(src, offset, path)
                after = offset + line + meta_len + stored + 1
                if after > size:
                    raise records.Truncated(f"{path.name}: record at offset {offset} cut short")
                seq = offsets.get(offset)
                if seq is None:
                    _copy(src, fd, offset, after - offset)
                else:
                    meta = os.pread(src, meta_len, offset + line)
                    record = records.Record(digest, meta, b"")
                    if len(meta) != meta_len or record.seq != seq:
                        raise records.FormatError(f"{path.name}: record {seq} is not at {offset}")
                    _write(fd, record.frame())
                offset = after
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(temporary, path)
    fsync_dir(path.parent)


def _frame_line(src: int, offset: int, path: Path) -> tuple[str, int, int, int]:
    """The frame line at ``offset``: the record hash, the line's length, the metadata's
    length and the stored content's length (docs/vault-format.md)."""
    head = os.pread(src, records.MAX_FRAME_LINE, offset)
    end = head.find(b"\n")
    parts = head[:end].split(b" ") if end > 0 else []
    if len(parts) != 4 or parts[0] != b"R" or len(parts[1]) != 64:
        raise records.FormatError(f"{path.name}: no record frame at offset {offset}")
    try:
        meta_len, stored = int(parts[2]), int(parts[3])
    except ValueError:
        raise records.FormatError(f"{path.name}: bad record frame at offset {offset}") from None
    if not (0 < meta_len <= records.MAX_META and 0 <= stored <= records.MAX_CONTENT):
        raise records.FormatError(f"{path.name}: impossible lengths at offset {offset}")
    return parts[1].decode("ascii"), end + 1, meta_len, stored


def _copy(src: int, fd: int, offset: int, length: int) -> None:
    """Copy ``length`` octets of ``src`` from ``offset`` to ``fd``, a chunk at a time."""
    end = offset + length
    while offset < end:
        data = os.pread(src, min(CHUNK, end - offset), offset)
        if not data:
            raise records.Truncated(f"segment ends before offset {end}")
        _write(fd, data)
        offset += len(data)


def _write(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _log_run(report: Report) -> None:
    done = report.plan
    log.info(
        "vault expiry: {captures} messages and {blobs} bodies expired ({octets} octets) in "
        "record {record}, by rules {rules}; {held} past retention kept by holds {holds}",
        captures=len(done.captures),
        blobs=len(done.blobs),
        octets=done.octets,
        record=report.record,
        rules=", ".join(r.describe() for r in done.rules) or "none",
        held=sum(done.held.values()),
        holds=", ".join(sorted(done.held)) or "none",
    )
