"""DMARC aggregate reports (RFC 7489 §7.2): every evaluated message is recorded durably, and
once a day the results are sent as the RFC's gzip'd XML (Appendix C) to the ``rua=``
addresses, through the outbound queue.

The results live in SQLite (WAL, ``<data>/filters/dmarc/results.sqlite``), shared by all
server processes; every database call runs in a thread, never on the reactor.  Which process
sends is decided in the database too (the one that moves ``next_send`` on), so a report is
sent once however many processes run.  Rows are deleted only after their report is queued:
a crash between the two sends the rows again rather than losing them.
"""

from __future__ import annotations

import email.utils
import gzip
import json
import sqlite3
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import attrs
from lxml import etree
from twisted.internet import task, threads
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ourmail.dsnparams import NO_MAIL_PARAMS, RcptParams
from ourmail.filters.dmarcpolicy import ReportURI, verify_external

log = Logger()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY, policy_domain TEXT NOT NULL, at REAL NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
"""


class ResultStore:
    """The evaluated messages not yet reported (one SQLite file, WAL, several processes).
    Every method blocks: call them in a thread."""

    def __init__(self, path: Path, limit: int = 1_000_000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.limit = limit
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA synchronous=FULL")
        return db

    def add(self, policy_domain: str, at: float, row: Mapping[str, Any]) -> bool:
        """Record one evaluated message (durable when this returns); False when ``limit``
        results wait already (a flood of forged mail must not fill the disk)."""
        with self._db() as db:
            (waiting,) = db.execute(
                "SELECT COALESCE(MAX(id) - MIN(id) + 1, 0) FROM results"
            ).fetchone()
            if waiting >= self.limit:
                return False
            db.execute(
                "INSERT INTO results (policy_domain, at, data) VALUES (?, ?, ?)",
                (policy_domain, at, json.dumps(row, sort_keys=True)),
            )
        return True

    def pending(self) -> dict[str, list[tuple[int, float, dict[str, Any]]]]:
        """The recorded results by policy domain, as (id, time, row)."""
        by_domain: dict[str, list[tuple[int, float, dict[str, Any]]]] = defaultdict(list)
        with self._db() as db:
            for rowid, domain, at, data in db.execute(
                "SELECT id, policy_domain, at, data FROM results ORDER BY id"
            ):
                by_domain[domain].append((rowid, at, json.loads(data)))
        return dict(by_domain)

    def forget(self, policy_domain: str, last_id: int) -> None:
        """Delete ``policy_domain``'s results up to ``last_id`` (they were reported)."""
        with self._db() as db:
            db.execute(
                "DELETE FROM results WHERE policy_domain = ? AND id <= ?", (policy_domain, last_id)
            )

    def claim(self, now: float, interval: float) -> bool:
        """Whether this process is the one to send now (at most once per ``interval``)."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT value FROM meta WHERE key = 'next_send'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('next_send', ?)", (now + interval,))
                db.execute("COMMIT")
                return False
            if row[0] > now:
                db.execute("COMMIT")
                return False
            db.execute("UPDATE meta SET value = ? WHERE key = 'next_send'", (now + interval,))
            db.execute("COMMIT")
            return True


def _text(parent: Any, tag: str, value: object) -> Any:
    element = etree.SubElement(parent, tag)
    element.text = str(value)
    return element


def _group(rows: Iterable[Mapping[str, Any]]) -> Counter[str]:
    """Rows that would print the same ``<record>`` counted together (RFC 7489 §7.2: by
    source IP, disposition and authentication results)."""
    return Counter(json.dumps(row["record"], sort_keys=True) for row in rows)


def build_report(
    rows: Sequence[Mapping[str, Any]],
    policy: Mapping[str, Any],
    org_name: str,
    contact: str,
    report_id: str,
    begin: int,
    end: int,
) -> bytes:
    """The aggregate report XML (RFC 7489 Appendix C) for the ``rows`` of one policy domain."""
    feedback = etree.Element("feedback")
    _text(feedback, "version", "1.0")
    meta = etree.SubElement(feedback, "report_metadata")
    _text(meta, "org_name", org_name)
    _text(meta, "email", contact)
    _text(meta, "report_id", report_id)
    dates = etree.SubElement(meta, "date_range")
    _text(dates, "begin", begin)
    _text(dates, "end", end)
    published = etree.SubElement(feedback, "policy_published")
    for key in ("domain", "adkim", "aspf", "p", "sp", "pct"):
        _text(published, key, policy[key])
    for key, count in sorted(_group(rows).items()):
        record = json.loads(key)
        element = etree.SubElement(feedback, "record")
        row = etree.SubElement(element, "row")
        _text(row, "source_ip", record["source_ip"])
        _text(row, "count", count)
        evaluated = etree.SubElement(row, "policy_evaluated")
        for tag in ("disposition", "dkim", "spf"):
            _text(evaluated, tag, record[tag])
        if record.get("reason"):
            _text(etree.SubElement(evaluated, "reason"), "type", record["reason"])
        _text(etree.SubElement(element, "identifiers"), "header_from", record["header_from"])
        results = etree.SubElement(element, "auth_results")
        for sig in record["auth_dkim"]:
            dkim = etree.SubElement(results, "dkim")
            _text(dkim, "domain", sig["domain"])
            if sig.get("selector"):
                _text(dkim, "selector", sig["selector"])
            _text(dkim, "result", sig["result"])
        spf = etree.SubElement(results, "spf")
        for tag in ("domain", "scope", "result"):
            _text(spf, tag, record["auth_spf"][tag])
    return bytes(etree.tostring(feedback, xml_declaration=True, encoding="UTF-8"))


def report_message(
    sender: str,
    to: str,
    policy_domain: str,
    submitter: str,
    report_id: str,
    begin: int,
    end: int,
    xml: bytes,
) -> bytes:
    """The report mail (RFC 7489 §7.2.1.1): the gzip'd XML attached as
    ``receiver!policy-domain!begin!end.xml.gz``."""
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = to
    message["Date"] = email.utils.formatdate(end)
    message["Message-ID"] = f"<{report_id}@{submitter}>"
    message["Subject"] = (
        f"Report Domain: {policy_domain} Submitter: {submitter} Report-ID: <{report_id}>"
    )
    message.set_content(
        f"DMARC aggregate report for {policy_domain} from {submitter} (RFC 7489 section 7.2).\n"
    )
    message.add_attachment(
        gzip.compress(xml, mtime=0),
        maintype="application",
        subtype="gzip",
        filename=f"{submitter}!{policy_domain}!{begin}!{end}.xml.gz",
    )
    return message.as_bytes()


@attrs.define
class Reporter:
    """Sends the recorded results once a ``interval`` through ``queue``
    (:class:`~ourmail.interfaces.IOutboundQueue`); :meth:`send_now` sends at once."""

    store: ResultStore
    queue: Any
    resolver: Any
    reactor: Any
    hostname: str
    sender: str
    interval: float = 86400.0
    dns_timeout: float = 5.0
    _loop: task.LoopingCall | None = None

    def record(self, policy_domain: str, row: Mapping[str, Any]) -> Deferred[None]:
        """Record one evaluated message (in a thread)."""

        def recorded(kept: bool) -> None:
            if not kept:
                log.warn(
                    "dmarc: {limit} results wait for a report already: {domain} not recorded",
                    limit=self.store.limit,
                    domain=policy_domain,
                )

        now = self.reactor.seconds()
        return self._in_thread(self.store.add, policy_domain, now, row).addCallback(recorded)

    def start(self) -> None:
        """Check hourly whether a report is due (the day is counted in the database)."""
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._loop.start(min(self.interval, 3600.0), now=True).addErrback(
            lambda f: log.failure("dmarc reports stopped", f)
        )

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    async def _due(self) -> None:
        if await self._in_thread(self.store.claim, self.reactor.seconds(), self.interval):
            await self.send_now()

    def _tick(self) -> Deferred[None]:
        d = Deferred.fromCoroutine(self._due())
        return d.addErrback(lambda f: log.failure("dmarc reports failed", f))

    def send_now(self) -> Deferred[list[str]]:
        """Send every recorded result now; fires with the queue ids."""
        return Deferred.fromCoroutine(self._send_all())

    async def _send_all(self) -> list[str]:
        if self.queue is None:
            return []
        pending = await self._in_thread(self.store.pending)
        sent: list[str] = []
        for policy_domain, entries in sorted(pending.items()):
            sent += await self._send_one(policy_domain, entries)
            await self._in_thread(self.store.forget, policy_domain, entries[-1][0])
        return sent

    async def _send_one(
        self, policy_domain: str, entries: Sequence[tuple[int, float, dict[str, Any]]]
    ) -> list[str]:
        latest = entries[-1][2]
        begin, end = int(entries[0][1]), int(self.reactor.seconds())
        report_id = f"{begin}.{uuid.uuid4().hex[:16]}"
        rows = [row for _, _, row in entries]
        xml = await self._in_thread(
            build_report,
            rows,
            latest["policy"],
            self.hostname,
            self.sender,
            report_id,
            begin,
            end,
        )
        ids = []
        for uri in (ReportURI(**u) for u in latest["rua"]):
            ok = await verify_external(
                self.resolver, self.reactor, policy_domain, uri, self.dns_timeout
            )
            if not ok:
                log.warn(
                    "dmarc report for {domain} not sent to {to}: no {domain}._report._dmarc "
                    "record there (RFC 7489 7.1)",
                    domain=policy_domain,
                    to=uri.domain,
                )
                continue
            content = report_message(
                self.sender, uri.address, policy_domain, self.hostname, report_id, begin, end, xml
            )
            if uri.limit and len(content) > uri.limit:
                log.warn(
                    "dmarc report for {domain} to {to} is {size} bytes, over its !{limit} limit",
                    domain=policy_domain,
                    to=uri.address,
                    size=len(content),
                    limit=uri.limit,
                )
                continue
            qid = await self.queue.enqueue(
                self.sender,
                [(uri.address, RcptParams(notify=frozenset()))],
                content,
                NO_MAIL_PARAMS,
                False,
            )
            log.info(
                "dmarc report {id} for {domain} ({n} messages) queued to {to} as {qid}",
                id=report_id,
                domain=policy_domain,
                n=len(rows),
                to=uri.address,
                qid=qid,
            )
            ids.append(qid)
        return ids

    def _in_thread(self, f: Any, *args: Any) -> Deferred[Any]:
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args)
