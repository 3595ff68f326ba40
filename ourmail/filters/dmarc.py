"""DMARC (RFC 7489) at end of DATA, after ``spf``, ``dkim`` and ``arc`` in the chain.

It reads their notes (``context.notes["spf"|"dkim"|"arc"]``), finds the ``From:`` domain,
discovers its policy through the server's ``twisted.names`` resolver
(:mod:`ourmail.filters.dmarcpolicy`), checks alignment and applies the policy:

* ``p=reject`` → ``550 5.7.1 Message rejected by DMARC policy of <domain>``;
* ``p=quarantine`` → the recipients' Junk folder;
* ``p=none`` → delivered, with ``dmarc=fail`` in Authentication-Results.

``sp=`` applies when the policy was found at the organisational domain for a subdomain.
``pct`` (§6.6.4): a failing message not sampled gets the next milder policy (reject →
quarantine, quarantine → none), reported as ``sampled_out``.  When DMARC fails but the ARC
check found a trusted forwarder's intact chain (``notes["arc"]["trusted"]``), the policy is
not applied (reported as ``trusted_forwarder``, RFC 7489 §7.2 reason types).
A DKIM result of ``policy`` (an ``l=`` that leaves content unsigned) does not count.
"""

from __future__ import annotations

import email.utils
import random
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import defer, threads
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from ourmail.filters.dmarcpolicy import (
    Policy,
    PolicyLookupError,
    aligned,
    discover,
)
from ourmail.filters.dmarcreport import Reporter, ResultStore
from ourmail.filters.keyrecords import small_in_memory
from ourmail.filters.options import refuse_unknown
from ourmail.interfaces import (
    AuthResult,
    FilterEnvironment,
    ICheck,
    ICheckFactory,
    MailContext,
    Stage,
    Verdict,
    refuse,
)

log = Logger()
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_MILDER = {"reject": "quarantine", "quarantine": "none", "none": "none"}


def from_fields(head: bytes) -> list[bytes]:
    """The value of every ``From:`` field of the header section ``head``, unfolded (RFC 5322
    §2.2.3), however many fields come before: a sender must not hide a second From: (or the
    only one) behind padding."""
    values: list[list[bytes]] = []
    current: list[bytes] | None = None
    for line in head.split(b"\r\n"):
        if not line:
            break  # the end of the header section
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
            continue
        name, colon, value = line.partition(b":")
        current = [value] if colon and name.strip().lower() == b"from" else None
        if current is not None:
            values.append(current)
    return [b"".join(parts) for parts in values]


def from_domain(head: bytes) -> str | None:
    """The domain of the one address in the one ``From:`` field of ``head``, or None when
    there is not exactly one (RFC 7489 §6.6.1)."""
    fields = from_fields(head)
    if len(fields) != 1:
        return None
    value = fields[0].decode("utf-8", "replace")  # RFC 6532: UTF-8 header fields
    addresses = [a for _, a in email.utils.getaddresses([value]) if a]
    if len(addresses) != 1:
        return None
    local, at, domain = addresses[0].rpartition("@")
    try:  # the A-label form for DNS (RFC 5891); a U-label From: is looked up as such
        domain = domain.strip().rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    labels = domain.split(".")
    if not (local and at) or len(labels) < 2 or not all(map(_LABEL.match, labels)):
        return None
    return domain


def _head(context: MailContext) -> bytes:
    """The header section (read from the file when the message is one: call in a thread)."""
    if isinstance(context.content, bytes):
        end = context.content.find(b"\r\n\r\n")
        return (context.content if end < 0 else context.content[:end]) + b"\r\n\r\n"
    assert context.content is not None
    head = b""
    with open(context.content, "rb") as f:
        for line in f:
            if line in (b"\r\n", b"\n") or len(head) > 1 << 20:
                break
            head += line
    return head + b"\r\n"


@attrs.frozen
class Evaluation:
    """What DMARC found for one message."""

    result: str  # pass fail none temperror permerror
    domain: str = ""
    policy: Policy | None = None
    dkim_aligned: bool = False
    spf_aligned: bool = False
    disposition: str = "none"
    reason: str = ""  # RFC 7489 Appendix C PolicyOverrideType, or ""


@implementer(ICheck)
@attrs.define
class DMARCCheck:
    """Applies the From: domain's DMARC policy to the results of SPF and DKIM."""

    resolver: Any
    reactor: Any
    reporter: Reporter | None = None
    dns_timeout: float = 5.0
    reject_malformed_from: bool = False
    sample: Callable[[], float] = random.random
    name: str = "dmarc"
    stages: tuple[Stage, ...] = ("data",)
    timeout: float = 20.0
    on_error: str = "accept"
    trusted: bool = False

    def check(self, stage: Stage, context: MailContext) -> Deferred[Verdict]:
        return defer.ensureDeferred(self._check(context))

    async def _check(self, context: MailContext) -> Verdict:
        if small_in_memory(context) is not None:
            head = _head(context)
        else:
            head = await threads.deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), _head, context
            )
        domain = from_domain(head)
        if domain is None:
            result = AuthResult("dmarc", "permerror", "not exactly one From: address")
            if self.reject_malformed_from:
                text = "Message must have exactly one From: address (RFC 7489 6.6.1)"
                return refuse(550, "5.7.1", text, result)
            return Verdict(results=(result,))
        evaluation = await self.evaluate(domain, context)
        return await self._verdict(evaluation, context)

    async def evaluate(self, domain: str, context: MailContext) -> Evaluation:
        """DMARC's evaluation of the message from ``domain`` (RFC 7489 §6.6.2)."""
        try:
            policy = await discover(self.resolver, self.reactor, domain, self.dns_timeout)
        except (PolicyLookupError, defer.TimeoutError) as e:
            log.info("dmarc: policy of {domain} unknown: {e}", domain=domain, e=e)
            return Evaluation("temperror", domain)
        if policy is None:
            return Evaluation("none", domain)
        dkim_ok = any(
            n.get("result") == "pass" and aligned(n.get("domain", ""), domain, policy.adkim == "s")
            for n in _notes_list(context.notes.get("dkim"))
        )
        spf = _notes_dict(context.notes.get("spf"))
        spf_ok = spf.get("result") == "pass" and aligned(
            str(spf.get("domain", "")), domain, policy.aspf == "s"
        )
        if dkim_ok or spf_ok:
            return Evaluation("pass", domain, policy, dkim_ok, spf_ok)
        # §6.6.3 / §6.3 sp=: for a subdomain whose policy was found at the organisational domain.
        disposition = policy.disposition(domain)
        reason = ""
        if disposition != "none" and self.sample() * 100 >= policy.pct:
            disposition, reason = _MILDER[disposition], "sampled_out"  # §6.6.4
        if disposition != "none" and _notes_dict(context.notes.get("arc")).get("trusted"):
            log.info(
                "dmarc: {domain} fails but a trusted forwarder's ARC chain passed: "
                "{disposition} not applied",
                domain=domain,
                disposition=disposition,
            )
            disposition, reason = "none", "trusted_forwarder"
        return Evaluation("fail", domain, policy, disposition=disposition, reason=reason)

    async def _verdict(self, e: Evaluation, context: MailContext) -> Verdict:
        props = [("header.from", e.domain)]
        if e.policy is not None:
            props.append(("policy.dmarc", e.policy.disposition(e.domain)))
        result = AuthResult("dmarc", e.result, e.reason, tuple(props))
        context.notes["dmarc"] = {
            "result": e.result,
            "domain": e.domain,
            "disposition": e.disposition,
        }
        if e.policy is not None and e.policy.rua and self.reporter is not None:
            try:
                await self.reporter.record(e.policy.domain, _report_row(e, context))
            except Exception:  # a lost report line must not lose the message
                log.failure("dmarc: result for {domain} not recorded", domain=e.domain)
        if e.result != "fail" or e.policy is None:
            return Verdict(results=(result,))
        if e.disposition == "reject":
            text = f"Message rejected by DMARC policy of {e.policy.domain}"
            return refuse(550, "5.7.1", text, result)
        if e.disposition == "quarantine":
            reason = f"DMARC policy of {e.policy.domain} (quarantine)"
            return Verdict("junk", results=(result,), reason=reason)
        return Verdict(results=(result,))


def _notes_list(value: object) -> list[Mapping[str, str]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _notes_dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _report_row(e: Evaluation, context: MailContext) -> dict[str, Any]:
    """What the aggregate report needs of this message (RFC 7489 Appendix C ``record``)."""
    assert e.policy is not None
    spf = _notes_dict(context.notes.get("spf"))
    record = {
        "source_ip": context.client_address,
        "disposition": e.disposition,
        "dkim": "pass" if e.dkim_aligned else "fail",
        "spf": "pass" if e.spf_aligned else "fail",
        "reason": e.reason,
        "header_from": e.domain,
        "auth_dkim": [
            {
                "domain": n.get("domain", ""),
                "selector": n.get("selector", ""),
                "result": n["result"],
            }
            for n in _notes_list(context.notes.get("dkim"))
            if n.get("domain") and n.get("result")
        ],
        "auth_spf": {
            "domain": str(spf.get("domain", "")),
            "scope": "mfrom" if context.sender else "helo",
            "result": str(spf.get("result", "none")),
        },
    }
    return {
        "record": record,
        "policy": e.policy.published(),
        "rua": [attrs.asdict(u) for u in e.policy.rua],
    }


def _option(options: Mapping[str, object], key: str, kind: Any, default: Any) -> Any:
    value = options.get(key, default)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ValueError(f"{key} has the wrong type ({type(value).__name__})")
    return value


@implementer(ICheckFactory)
class DMARCFactory:
    """``[filters.check.dmarc]``: ``dns_timeout`` (5 s), ``reject_malformed_from`` (false),
    ``reports`` (true: record results and send aggregate reports; only with a queue),
    ``report_from`` (``postmaster@<first local domain>``), ``report_interval`` (86400 s),
    ``max_results`` (1,000,000 results waiting for a report at most)."""

    name = "dmarc"
    options = (
        "dns_timeout",
        "reject_malformed_from",
        "reports",
        "report_from",
        "report_interval",
        "max_results",
    )

    def build(self, options: Mapping[str, object], env: FilterEnvironment) -> ICheck:
        refuse_unknown(options, self.options)
        timeout = float(_option(options, "dns_timeout", int | float, 5.0))
        interval = float(_option(options, "report_interval", int | float, 86400.0))
        if timeout <= 0 or interval < 60:
            raise ValueError("dns_timeout must be positive and report_interval at least 60")
        sender = _option(
            options, "report_from", str, f"postmaster@{(env.domains or (env.hostname,))[0]}"
        )
        if "@" not in sender:
            raise ValueError("report_from must be a mail address")
        reporter = None
        limit = _option(options, "max_results", int, 1_000_000)
        if limit < 1:
            raise ValueError("max_results must be at least 1")
        if _option(options, "reports", bool, True) and env.queue is not None:
            store = ResultStore(Path(env.state_dir) / "dmarc" / "results.sqlite", limit)
            reporter = Reporter(
                store, env.queue, env.resolver, env.reactor, env.hostname, sender, interval, timeout
            )
            env.reactor.callWhenRunning(reporter.start)  # type: ignore[attr-defined]
            env.reactor.addSystemEventTrigger(  # type: ignore[attr-defined]
                "before", "shutdown", reporter.stop
            )
        return DMARCCheck(
            resolver=env.resolver,
            reactor=env.reactor,
            reporter=reporter,
            dns_timeout=timeout,
            reject_malformed_from=_option(options, "reject_malformed_from", bool, False),
        )


factory = DMARCFactory()
