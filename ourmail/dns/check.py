"""Each expected record checked live against DNS: pass, warn or fail, with a one-line
reason (docs/dns.md#checking).

A required record (MX, the host's address, SPF, DKIM, DMARC) that is missing fails; a
recommended one (MTA-STS, TLS-RPT, SRV, the autoconfig names) that is missing warns.  A
record that is there but wrong fails when it breaks delivery or trust (another MX, a stale
DKIM key, two SPF records, an SRV port nobody listens on) and warns when it only weakens
them (a DMARC record without reports, an SPF record unlike ours).  A time-out, a server
failure or a refusal always fails: nothing could be checked.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Literal

import attrs
from twisted.internet import defer
from twisted.names import dns

from ourmail.dns.lookup import Answer, Lookup
from ourmail.dns.records import MailSetup, Record
from ourmail.filters.dmarcpolicy import organizational_domain

Status = Literal["pass", "warn", "fail"]

#: RFC 8461 §3.1: the policy id is 1 to 32 letters and digits.
_STS_ID = re.compile(r"[A-Za-z0-9]{1,32}")
#: Outcomes that mean the name could not be checked at all.
_BROKEN = frozenset({"timeout", "servfail", "refused", "error"})


@attrs.frozen
class CheckResult:
    """The verdict on one expected record."""

    record: Record
    status: Status
    #: Why, in one line.
    reason: str
    #: What DNS holds there now (values in one line each).
    found: tuple[str, ...] = ()

    def line(self) -> str:
        """``PASS  MX     example.org: reason``: one line for a terminal."""
        return f"{self.status.upper():4}  {self.record.type:5}  {self.record.name}: {self.reason}"


def check_records(
    lookup: Lookup, setup: MailSetup, records: Sequence[Record]
) -> defer.Deferred[list[CheckResult]]:
    """Check ``records`` (from :func:`ourmail.dns.records.expected_records`) all at once;
    the results in the same order (the host's addresses checked once)."""
    checks: list[defer.Deferred[CheckResult]] = []
    addresses_checked = False
    for record in records:
        if record.kind == "address":
            if addresses_checked:
                continue
            addresses_checked = True
        checks.append(defer.Deferred.fromCoroutine(_CHECKS[record.kind](lookup, setup, record)))
    if not setup.dkim:
        checks.append(defer.succeed(_no_dkim_key(setup)))
    return defer.gatherResults(checks, consumeErrors=True)


def _no_dkim_key(setup: MailSetup) -> CheckResult:
    record = Record(f"_domainkey.{setup.domain}", "TXT", "dkim", "DKIM keys")
    return CheckResult(
        record,
        "fail",
        f"no DKIM key signs for {setup.domain} here: make one "
        f"with `ourmail dkim gen {setup.domain}` and publish its record",
    )


def _missing(record: Record, answer: Answer) -> CheckResult:
    reason = answer.describe(record.name, record.type)
    if answer.outcome in _BROKEN:
        return CheckResult(record, "fail", reason)
    return CheckResult(record, "fail" if record.required else "warn", f"missing: {reason}")


def _text(payload: Any) -> str:
    """A TXT record's strings joined without spaces (RFC 7208 §3.3, RFC 6376 §3.6.2.2)."""
    return b"".join(payload.data).decode("utf-8", "replace")


def _host(payload_name: Any) -> str:
    """A domain name of a payload, lower case without the final dot (the root: ``.``)."""
    return payload_name.name.decode("ascii", "replace").lower().rstrip(".") or "."


def _tags(text: str, fold: bool = False) -> dict[str, str]:
    """``tag=value; ...``: the tags.  Their names are case-sensitive (RFC 6376 §3.2, RFC 8461
    §3.1 and RFC 8460 §3 write them ``%s``); ``fold``: not in DMARC (RFC 7489 §6.4's plain
    ABNF strings), so lower-cased."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, equals, value = part.partition("=")
        if equals:
            name = name.strip()
            tags.setdefault(name.lower() if fold else name, value.strip())
    return tags


#: RFC 7489 §6.4: ``dmarc-version = "v" *WSP "=" *WSP %x44 %x4d %x41 %x52 %x43 %x31``: the
#: tag name in any case, the value exactly ``DMARC1``.
_DMARC_VERSION = re.compile(r"[vV][ \t]*=[ \t]*DMARC1[ \t]*(;|$)")


def _is_dmarc(text: str) -> bool:
    return _DMARC_VERSION.match(text) is not None


def _starts(prefix: str) -> Callable[[str], bool]:
    """Whether a record starts exactly with ``prefix`` (RFC 8461 §3.1 ``%s"v=STSv1"``, RFC
    8460 §3 ``%s"v=TLSRPTv1"``: case-sensitive)."""
    return lambda text: text.startswith(prefix)


async def _txt(
    lookup: Lookup, record: Record, version: str, matches: Callable[[str], bool]
) -> tuple[Answer, list[str], str]:
    """The TXT records at ``record.name`` whose ``version`` tag ``matches``; and a note naming
    one that starts with it in another case only (receivers ignore that one)."""
    answer = await lookup.query(record.name, "TXT")
    texts = [_text(p).strip() for p in answer.records]
    found = [t for t in texts if matches(t)]
    near = [t for t in texts if not matches(t) and t.lower().startswith(version.lower())]
    note = f" ({near[0][: len(version)]!r} is not {version!r}: case matters)" if near else ""
    return answer, found, note


async def check_mx(lookup: Lookup, setup: MailSetup, record: Record) -> CheckResult:
    answer = await lookup.query(record.name, "MX")
    if answer.outcome == "nodata":
        return CheckResult(
            record,
            "fail",
            f"no MX record: senders fall back to the address of "
            f"{record.name} (RFC 5321 §5.1), not {setup.hostname}",
        )
    if answer.outcome != "ok":
        return _missing(record, answer)
    hosts = [_host(p.name) for p in sorted(answer.records, key=lambda p: p.preference)]
    found = tuple(f"{p.preference} {_host(p.name)}" for p in answer.records)
    if hosts == ["."]:
        return CheckResult(
            record, "fail", "a null MX: the domain says it takes no mail (RFC 7505)", found
        )
    if setup.hostname not in hosts:
        return CheckResult(
            record, "fail", f"MX points at {', '.join(hosts)}, not at {setup.hostname}", found
        )
    # RFC 5321 §5.1: senders try the lowest preference first and go on only when it cannot be
    # reached, so a host preferred to ours gets all the mail.
    ours = min(p.preference for p in answer.records if _host(p.name) == setup.hostname)
    before = [_host(p.name) for p in answer.records if p.preference < ours]
    if before:
        return CheckResult(
            record,
            "fail",
            f"MX prefers {', '.join(dict.fromkeys(before))} to {setup.hostname} (a lower "
            f"preference number than {ours}): senders deliver there first (RFC 5321 §5.1)",
            found,
        )
    others = [h for h in hosts if h != setup.hostname]
    if others:
        return CheckResult(
            record,
            "warn",
            f"MX also names {', '.join(others)}: they must pass mail on to {setup.hostname}",
            found,
        )
    return CheckResult(record, "pass", f"MX points at {setup.hostname}", found)


async def check_address(lookup: Lookup, setup: MailSetup, record: Record) -> CheckResult:
    v4, v6 = await defer.gatherResults(
        [
            defer.Deferred.fromCoroutine(lookup.query(setup.hostname, "A")),
            defer.Deferred.fromCoroutine(lookup.query(setup.hostname, "AAAA")),
        ],
        consumeErrors=True,
    )
    found = tuple(p.dottedQuad() for p in v4.records) + tuple(_ipv6(p.address) for p in v6.records)
    if not found:
        broken = next((a for a in (v4, v6) if a.outcome in _BROKEN), None)
        if broken is not None:
            return _missing(record, broken)
        if v4.outcome == "nxdomain":
            return _missing(record, v4)
        return CheckResult(record, "fail", f"{setup.hostname} has no A or AAAA record")
    aliases = v4.aliases or v6.aliases
    if aliases:
        final = v4.final if v4.aliases else v6.final
        return CheckResult(
            record,
            "warn",
            f"{setup.hostname} is an alias of {final}: an MX "
            "or SRV target must not be an alias (RFC 2181 §10.3)",
            found,
        )
    if not any(str(ipaddress.ip_address(a)) in setup.own_addresses for a in found):
        return CheckResult(
            record,
            "warn",
            f"{setup.hostname} has {', '.join(found)}, no address of this machine: cannot "
            "confirm this address is this server (fine behind NAT or a port forward)",
            found,
        )
    return CheckResult(
        record, "pass", f"{setup.hostname} has {', '.join(found)}, this machine's", found
    )


def _ipv6(packed: bytes) -> str:
    return str(ipaddress.IPv6Address(packed))


async def check_spf(lookup: Lookup, setup: MailSetup, record: Record) -> CheckResult:
    answer = await lookup.query(record.name, "TXT")
    texts = [_text(p).strip() for p in answer.records]
    # RFC 7208 §4.5: "v=spf1" alone or followed by a space, in any case (§12's ABNF string).
    spf = [t for t in texts if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]
    if not spf:
        if answer.outcome in ("ok", "nodata"):
            return CheckResult(
                record, "fail", f"no SPF record (a TXT starting v=spf1) at {record.name}"
            )
        return _missing(record, answer)
    found = tuple(spf)
    if len(spf) > 1:
        return CheckResult(
            record,
            "fail",
            f"{len(spf)} SPF records: receivers treat that as "
            "an error and ignore SPF (RFC 7208 §4.5); keep one",
            found,
        )
    terms = spf[0].lower().split()
    # RFC 7208 §5.1: the first "all" mechanism ends the evaluation, whatever follows it
    # (modifiers such as exp= may); without a qualifier it is "+" (§4.6.2).
    final = next((t for t in terms[1:] if t.lstrip("+-~?") == "all"), None)
    if final in ("all", "+all"):
        return CheckResult(
            record, "fail", f"SPF has {final}: it lets anyone send as {setup.domain}", found
        )
    if setup.relay:  # whether the relay's addresses are in it cannot be told from here
        return CheckResult(
            record,
            "warn",
            f"mail leaves through the smart host {setup.relay} ([queue] relay): make sure SPF "
            "lets its addresses send (the include: its provider documents)",
            found,
        )
    if " ".join(terms) == record.text:
        return CheckResult(record, "pass", f"SPF is {record.text!r}", found)
    return CheckResult(
        record,
        "warn",
        f"SPF differs from {record.text!r}: make sure it lets {setup.hostname} send",
        found,
    )


async def check_dkim(lookup: Lookup, setup: MailSetup, record: Record) -> CheckResult:
    answer = await lookup.query(record.name, "TXT")
    if answer.outcome != "ok":
        return _missing(record, answer)
    texts = tuple(_text(p) for p in answer.records)
    if len(texts) > 1:
        return CheckResult(
            record,
            "fail",
            f"{len(texts)} TXT records: verifiers may take "
            "any one (RFC 6376 §3.6.2.2); keep ours only",
            texts,
        )
    tags = _tags(texts[0])
    public = re.sub(r"\s+", "", tags.get("p", ""))
    if "p" not in tags:
        return CheckResult(
            record, "fail", "not a DKIM key record (no p= tag, RFC 6376 §3.6.1)", texts
        )
    if not public:
        return CheckResult(record, "fail", "the key is revoked (empty p=, RFC 6376 §3.6.1)", texts)
    if public != record.key:
        return CheckResult(
            record,
            "fail",
            "the published key is not this server's (a stale "
            "key? publish the record `ourmail dkim list` prints)",
            texts,
        )
    return CheckResult(record, "pass", "the DKIM key matches this server's", texts)


async def check_dmarc(lookup: Lookup, setup: MailSetup, record: Record) -> CheckResult:
    answer, found, note = await _txt(lookup, record, "v=DMARC1", _is_dmarc)
    if not found:
        if answer.outcome in ("ok", "nodata", "nxdomain"):
            inherited = await _organizational_dmarc(lookup, setup, record)
            if inherited is not None:
                return inherited
        if answer.outcome in ("ok", "nodata"):
            return CheckResult(
                record,
                "fail",
                f"no DMARC record (a TXT starting v=DMARC1) at {record.name}{note}",
            )
        return _missing(record, answer)
    if len(found) > 1:
        return CheckResult(
            record,
            "fail",
            f"{len(found)} DMARC records: receivers apply none of them (RFC 7489 §6.6.3); keep one",
            tuple(found),
        )
    tags = _tags(found[0], fold=True)
    policy = tags.get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return CheckResult(
            record, "fail", "no valid p= tag (none, quarantine or reject)", tuple(found)
        )
    if not tags.get("rua", "").lower().startswith("mailto:"):
        return CheckResult(
            record,
            "warn",
            f"p={policy} but no rua=mailto: address: nobody "
            "receives the reports that show when it is safe to be stricter",
            tuple(found),
        )
    later = " (monitoring only: raise it once the reports are clean)" if policy == "none" else ""
    return CheckResult(
        record, "pass", f"DMARC p={policy}, reports to {tags['rua']}{later}", tuple(found)
    )


async def _organizational_dmarc(
    lookup: Lookup, setup: MailSetup, record: Record
) -> CheckResult | None:
    """For a sub-domain without a DMARC record: its organizational domain's record, which
    receivers apply then (RFC 7489 §6.6.3; its sp= if any, else its p=), as a warning; None
    when it has no one valid record either (or the domain is an organizational domain)."""
    organizational = organizational_domain(setup.domain)
    if organizational == setup.domain:
        return None
    above = attrs.evolve(record, name=f"_dmarc.{organizational}")
    _, found, _ = await _txt(lookup, above, "v=DMARC1", _is_dmarc)
    if len(found) != 1:
        return None
    tags = _tags(found[0], fold=True)
    policy = (tags.get("sp") or tags.get("p", "")).lower()
    if policy not in ("none", "quarantine", "reject"):
        return None
    return CheckResult(
        record,
        "warn",
        f"no DMARC record at {record.name}: receivers apply {organizational}'s "
        f"(p={policy} for its sub-domains, RFC 7489 §6.6.3); publish one to set this "
        "domain's own policy and reports",
        tuple(found),
    )


async def _one_tagged(
    lookup: Lookup, record: Record, version: str, two: str
) -> CheckResult | list[str]:
    """The TXT records at ``record`` that start with ``version`` (exactly one expected), or
    the result when there is none or more than one (``two``: what several records mean)."""
    answer, found, note = await _txt(lookup, record, version, _starts(version))
    if not found:
        if answer.outcome in ("ok", "nodata"):
            answer = Answer("nodata", final=record.name)
        missing = _missing(record, answer)
        return attrs.evolve(missing, reason=missing.reason + note)
    if len(found) > 1:
        reason = f"{len(found)} {version} records: {two}; keep one"
        return CheckResult(record, "fail", reason, tuple(found))
    return found


async def check_mta_sts(lookup: Lookup, setup: MailSetup, record: Record) -> CheckResult:
    found = await _one_tagged(lookup, record, "v=STSv1", "senders use no policy (RFC 8461 §3.1)")
    if isinstance(found, CheckResult):
        return found
    published = _tags(found[0]).get("id", "")
    if not _STS_ID.fullmatch(published):
        return CheckResult(
            record, "fail", "no valid id= (1 to 32 letters and digits, RFC 8461 §3.1)", tuple(found)
        )
    if published != setup.mta_sts_id:
        return CheckResult(
            record,
            "warn",
            f"id={published}, not this policy's id="
            f"{setup.mta_sts_id}: publish it so senders fetch the current policy",
            tuple(found),
        )
    return CheckResult(
        record, "pass", f"MTA-STS id matches the policy ({setup.mta_sts_mode})", tuple(found)
    )


async def check_tls_rpt(lookup: Lookup, setup: MailSetup, record: Record) -> CheckResult:
    found = await _one_tagged(lookup, record, "v=TLSRPTv1", "senders report nothing (RFC 8460 §3)")
    if isinstance(found, CheckResult):
        return found
    if "rua" not in _tags(found[0]):
        return CheckResult(
            record,
            "fail",
            "no rua=: senders do not know where to report (RFC 8460 §3)",
            tuple(found),
        )
    return CheckResult(record, "pass", f"TLS reports go to {_tags(found[0])['rua']}", tuple(found))


async def check_srv(lookup: Lookup, setup: MailSetup, record: Record) -> CheckResult:
    answer = await lookup.query(record.name, "SRV")
    service = record.name.split(".", 1)[0].lstrip("_")
    if answer.outcome != "ok":
        return _missing(record, answer)
    found = tuple(f"{p.priority} {p.weight} {p.port} {_host(p.target)}" for p in answer.records)
    targets = {(_host(p.target), p.port) for p in answer.records}
    if record.target == ".":
        if {t for t, _ in targets} == {"."}:
            return CheckResult(record, "pass", f"says {service} is not offered", found)
        return CheckResult(
            record,
            "warn",
            f"points clients at {service}, which is off here (publish target '.', RFC 6186 §4)",
            found,
        )
    ports = sorted(port for target, port in targets if target == setup.hostname)
    if not ports:
        where = ", ".join(sorted(t for t, _ in targets))
        return CheckResult(record, "fail", f"points at {where}, not {setup.hostname}", found)
    if record.port not in ports:
        return CheckResult(
            record,
            "fail",
            f"port {', '.join(map(str, ports))}, but {service} listens on {record.port}",
            found,
        )
    return CheckResult(record, "pass", f"{service} at {setup.hostname}:{record.port}", found)


async def check_alias(lookup: Lookup, setup: MailSetup, record: Record) -> CheckResult:
    answer = await lookup.query(record.name, "CNAME")
    if answer.outcome == "ok":
        targets = tuple(_host(p.name) for p in answer.records)
        if setup.hostname in targets:
            return CheckResult(record, "pass", f"an alias of {setup.hostname}", targets)
        # A chain of aliases (RFC 1034 §3.6.2) that ends at the host is as good as one.
        chain = await lookup.query(record.name, "A")
        names = (*chain.aliases, chain.final)
        if setup.hostname in names:
            via = " -> ".join(names[1 : names.index(setup.hostname)])
            return CheckResult(
                record, "pass", f"an alias of {setup.hostname} (through {via})", targets
            )
        return CheckResult(
            record, "warn", f"an alias of {', '.join(targets)}, not of {setup.hostname}", targets
        )
    if answer.outcome != "nodata":
        return _missing(record, answer)
    # The name exists without a CNAME: fine if it has the host's addresses, IPv4 and IPv6.
    theirs4, theirs6, ours4, ours6 = await defer.gatherResults(
        [
            defer.Deferred.fromCoroutine(lookup.query(name, kind))
            for name in (record.name, setup.hostname)
            for kind in ("A", "AAAA")
        ],
        consumeErrors=True,
    )
    mine = _addresses(ours4) | _addresses(ours6)
    found = tuple(sorted(_addresses(theirs4) | _addresses(theirs6)))
    if found and set(found) == mine:
        return CheckResult(record, "pass", f"has the addresses of {setup.hostname}", found)
    return CheckResult(
        record, "warn", f"not an alias of {setup.hostname} and not at its address", found
    )


def _addresses(answer: Answer) -> set[str]:
    """The addresses of an A or AAAA answer, as text."""
    return {
        str(ipaddress.IPv4Address(p.address)) if isinstance(p, dns.Record_A) else _ipv6(p.address)
        for p in answer.records
    }


async def check_ptr(lookup: Lookup, setup: MailSetup, record: Record) -> CheckResult:
    answer = await lookup.query(record.name, "PTR")
    if answer.outcome != "ok":
        return _missing(record, answer)
    names = tuple(_host(p.name) for p in answer.records)
    if setup.hostname in names:
        return CheckResult(record, "pass", f"{record.address} names {setup.hostname}", names)
    return CheckResult(
        record,
        "warn",
        f"{record.address} names {', '.join(names)}, not "
        f"{setup.hostname}: some receivers refuse its mail",
        names,
    )


_CHECKS: dict[str, Callable[[Lookup, MailSetup, Record], Coroutine[Any, Any, CheckResult]]] = {
    "mx": check_mx,
    "address": check_address,
    "spf": check_spf,
    "dkim": check_dkim,
    "dmarc": check_dmarc,
    "mta-sts": check_mta_sts,
    "tls-rpt": check_tls_rpt,
    "srv": check_srv,
    "alias": check_alias,
    "ptr": check_ptr,
}
