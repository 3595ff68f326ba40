"""SMTP TLS Reporting (RFC 8460): what became of our TLS sessions, reported once a day.

Each connection to a destination's MX hosts is recorded (one JSON line, appended and fsynced
in a thread) in ``<data>/queue/tlsrpt/<UTC day>.jsonl``: the policy domain, the MTA-STS policy
in force (``sts``) or ``no-policy-found``, and success or the failure's result type (§4.3:
``starttls-not-supported``, ``certificate-host-mismatch``, ``validation-failure``,
``sts-policy-invalid``, ``sts-policy-fetch-error``, ``sts-webpki-invalid``...).

After the day is over, the queue builds one JSON report per policy domain (§4.4), gzips it
and queues it as a ``multipart/report; report-type="tlsrpt"`` message (§5.3) to the
``mailto:`` addresses of the domain's ``_smtp._tls`` TXT record (§3).  ``https:`` report
URIs (§3, HTTPS POST) are not supported: they are logged and skipped.
"""

from __future__ import annotations

import datetime
import email.policy
import email.utils
import gzip
import json
import os
import secrets
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IResolver
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.names import dns
from twisted.names.error import DNSNameError

from ourmail.dsnparams import NO_MAIL_PARAMS, NO_RCPT_PARAMS, MailParams, RcptParams
from ourmail.fsutil import write_atomic

log = Logger()

#: Days a report is retried while the domain's DNS fails.
RETRY_DAYS = 3
#: At most this many report addresses per domain are mailed (§3 has no limit; we do).
MAX_RUA = 5


@attrs.frozen
class Outcome:
    """One attempted TLS session with an MX host of ``domain``."""

    domain: str
    ok: bool
    #: "sts" or "no-policy-found"; for "sts" the policy's lines and mx patterns.
    policy_type: str = "no-policy-found"
    policy_lines: tuple[str, ...] = ()
    policy_mx: tuple[str, ...] = ()
    #: For a failure: the RFC 8460 §4.3 result type, and what we know of the session.
    result_type: str = ""
    mx_host: str = ""
    receiving_ip: str = ""
    sending_ip: str = ""
    reason: str = ""


def day_of(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%d")


def _iso(day: str, end: bool) -> str:
    start = datetime.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=datetime.UTC)
    moment = start + datetime.timedelta(days=1, seconds=-1) if end else start
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_report(
    domain: str, day: str, outcomes: Iterable[Outcome], organization: str, contact: str
) -> dict[str, Any]:
    """The RFC 8460 §4.4 report of ``domain`` for the UTC ``day`` (YYYY-MM-DD)."""
    policies: dict[tuple[str, tuple[str, ...], tuple[str, ...]], dict[str, Any]] = {}
    for o in outcomes:
        key = (o.policy_type, o.policy_lines, o.policy_mx)
        entry = policies.setdefault(key, {"ok": 0, "failed": 0, "details": {}})
        if o.ok:
            entry["ok"] += 1
            continue
        entry["failed"] += 1
        detail = (o.result_type, o.sending_ip, o.mx_host, o.receiving_ip, o.reason)
        entry["details"][detail] = entry["details"].get(detail, 0) + 1
    report_policies = []
    for (kind, lines, mx), entry in policies.items():
        policy: dict[str, Any] = {"policy-type": kind, "policy-domain": domain}
        if lines:  # none when the policy could not be fetched or parsed
            policy["policy-string"] = list(lines)
        if mx:
            policy["mx-host"] = list(mx)
        failures = []
        for (result, sending, host, receiving, reason), count in entry["details"].items():
            detail: dict[str, Any] = {"result-type": result, "failed-session-count": count}
            for name, value in (
                ("sending-mta-ip", sending),
                ("receiving-mx-hostname", host),
                ("receiving-ip", receiving),
                ("failure-reason-code", reason),
            ):
                if value:
                    detail[name] = value
            failures.append(detail)
        item: dict[str, Any] = {
            "policy": policy,
            "summary": {
                "total-successful-session-count": entry["ok"],
                "total-failure-session-count": entry["failed"],
            },
        }
        if failures:
            item["failure-details"] = failures
        report_policies.append(item)
    return {
        "organization-name": organization,
        "date-range": {"start-datetime": _iso(day, False), "end-datetime": _iso(day, True)},
        "contact-info": contact,
        "report-id": f"{day}.{secrets.token_hex(8)}@{organization}",
        "policies": report_policies,
    }


def report_message(
    report: dict[str, Any], domain: str, submitter: str, sender: str, to: Sequence[str]
) -> bytes:
    """§5.3: the gzip'd report as ``application/tlsrpt+gzip`` in a ``multipart/report``."""
    start = report["date-range"]["start-datetime"]
    end = report["date-range"]["end-datetime"]
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = (
        f"Report Domain: {domain} Submitter: {submitter} Report-ID: <{report['report-id']}>"
    )
    msg["Date"] = email.utils.formatdate(usegmt=True)
    msg["Message-ID"] = email.utils.make_msgid(domain=submitter)
    msg["TLS-Report-Domain"] = domain
    msg["TLS-Report-Submitter"] = submitter
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834 §5
    msg.set_content(
        f"This is an aggregate TLS report (RFC 8460) from {submitter} for {domain},\n"
        f"covering {start} to {end}.\n"
    )
    data = gzip.compress(json.dumps(report, indent=1).encode(), mtime=0)
    stamp = lambda s: str(int(datetime.datetime.fromisoformat(s).timestamp()))  # noqa: E731
    msg.add_attachment(
        data,
        maintype="application",
        subtype="tlsrpt+gzip",
        filename=f"{submitter}!{domain}!{stamp(start)}!{stamp(end)}.json.gz",
    )
    msg.replace_header("Content-Type", 'multipart/report; report-type="tlsrpt"')
    msg.set_boundary(f"tlsrpt-{secrets.token_hex(8)}")
    return msg.as_bytes()


def parse_rua(texts: Sequence[str]) -> list[str]:
    """The ``mailto:`` addresses of the one ``v=TLSRPTv1`` record among ``texts`` (§3)."""
    found = [t for t in texts if t.startswith("v=TLSRPTv1")]
    if len(found) != 1:
        return []
    fields = {}
    for part in found[0].split(";"):
        key, eq, value = part.strip().partition("=")
        if eq:
            fields[key.strip()] = value.strip()
    addresses = []
    for uri in fields.get("rua", "").split(","):
        uri = uri.strip()
        if uri.lower().startswith("mailto:"):
            address = urllib.parse.unquote(uri[7:].partition("?")[0])
            if "@" in address and not any(c in address for c in "<>\r\n ,"):
                addresses.append(address)
        elif uri:
            log.info("tls-rpt: report URI {uri} not supported (mailto only)", uri=uri)
    return addresses[:MAX_RUA]


#: How the queue takes a report: (sender, recipients, content, mail_params, utf8).
Enqueue = Callable[[str, Sequence[tuple[str, RcptParams]], bytes, MailParams, bool], Deferred[str]]


class TLSReports:
    """The durable record of TLS sessions, and the daily reports made from it."""

    def __init__(self, directory: Path, submitter: str, sender: str) -> None:
        self.directory = directory
        #: Our organisation/host name in reports (§4.4 organization-name, §5.3 submitter).
        self.submitter = submitter
        #: The From: of reports, also their contact-info.
        self.sender = sender

    def record(self, outcome: Outcome, now: float) -> Deferred[None]:
        """Append ``outcome`` to the day's file (in a thread)."""
        line = json.dumps(attrs.asdict(outcome)) + "\n"
        d: Deferred[None] = deferToThread(self._append, day_of(now), line.encode())
        d.addErrback(lambda f: log.failure("tls-rpt: cannot record a session", f))
        return d

    def _append(self, day: str, line: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / f"{day}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def finished_days(self, now: float) -> dict[str, dict[str, list[Outcome]]]:
        """Outcomes of the days before today, by day and domain (blocking: in a thread)."""
        today = day_of(now)
        days: dict[str, dict[str, list[Outcome]]] = {}
        if not self.directory.is_dir():
            return days
        for path in sorted(self.directory.glob("*.jsonl")):
            if path.stem >= today:
                continue
            by_domain = days.setdefault(path.stem, {})
            for line in path.read_bytes().splitlines():
                try:
                    data = json.loads(line)
                    data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
                    outcome = Outcome(**data)
                except (ValueError, TypeError):
                    continue  # a line cut short by a crash
                by_domain.setdefault(outcome.domain, []).append(outcome)
        return days

    def keep_only(self, day: str, outcomes: Sequence[Outcome]) -> None:
        """What is left of ``day`` to report later (nothing: the day is done)."""
        path = self.directory / f"{day}.jsonl"
        if not outcomes:
            path.unlink(missing_ok=True)
            return
        lines = b"".join(json.dumps(attrs.asdict(o)).encode() + b"\n" for o in outcomes)
        write_atomic(path, lines, 0o640)

    async def send(self, now: float, resolver: IResolver, enqueue: Enqueue) -> int:
        """Queue the reports of every finished day to the domains that ask; how many."""
        days = await deferToThread(self.finished_days, now)
        sent = 0
        for day, by_domain in days.items():
            later: list[Outcome] = []
            too_old = day < day_of(now - RETRY_DAYS * 86400)
            for domain, outcomes in by_domain.items():
                rua = await self._rua(resolver, domain)
                if rua is None and not too_old:
                    later += outcomes  # DNS trouble: try again at the next round
                if not rua:
                    continue
                report = build_report(domain, day, outcomes, self.submitter, self.sender)
                content = report_message(report, domain, self.submitter, self.sender, rua)
                await enqueue(
                    "", [(a, NO_RCPT_PARAMS) for a in rua], content, NO_MAIL_PARAMS, False
                )
                log.info(
                    "tls-rpt: report for {domain} of {day} queued to {rua}",
                    domain=domain,
                    day=day,
                    rua=rua,
                )
                sent += 1
            await deferToThread(self.keep_only, day, later)
        return sent

    async def _rua(self, resolver: IResolver, domain: str) -> list[str] | None:
        """The report addresses of ``domain`` (none: it wants no reports); None when DNS
        could not say."""
        try:
            answers, _, _ = await resolver.lookupText(f"_smtp._tls.{domain}")
        except DNSNameError:
            return []
        except Exception as e:
            log.info("tls-rpt: TXT of _smtp._tls.{domain}: {why}", domain=domain, why=e)
            return None
        texts = [
            b"".join(a.payload.data).decode("utf-8", "replace")
            for a in answers
            if a.type == dns.TXT
        ]
        return parse_rua(texts)
