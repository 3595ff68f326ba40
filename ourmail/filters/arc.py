"""The ``arc`` check: verification of an arriving ARC chain (RFC 8617 §5.2) with dkimpy.

dkimpy does the cryptography and the chain rules; it never touches the network here: the
key records its verification will ask for (``s._domainkey.d`` of every ARC-Seal and
ARC-Message-Signature) are fetched first through the FilterEnvironment's ``twisted.names``
resolver, and dkimpy's DNS function answers from them.  Parsing and verification run in a
thread (CPU).  The verdict never refuses: it records ``arc=pass|fail|none`` (RFC 8617 §6.1,
``smtp.remote-ip``) and ``notes["arc"] = {"result": ..., "trusted": ...}`` for the DMARC
check, ``trusted`` meaning the chain passed and its most recent sealer is a trusted forwarder
(option ``trusted_forwarders``, and ``trusted_forwarders_by_domain`` per recipient domain) of
every recipient domain.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import dkim
from dkim.util import InvalidTagValueList, parse_tag_value
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from zope.interface import implementer

from ourmail.filters.keyrecords import key_records, small_in_memory
from ourmail.filters.options import refuse_unknown
from ourmail.interfaces import (
    AuthResult,
    FilterEnvironment,
    ICheck,
    ICheckFactory,
    MailContext,
    Stage,
    Verdict,
)

log = Logger()

#: RFC 8617 §4.2.1: at most 50 ARC sets; more key records than this is no chain to honour.
MAX_KEYS = 16
#: A header section bigger than this is not looked through for ARC fields.
HEAD_LIMIT = 1 << 20
_ARC_FIELD = re.compile(rb"(?im)^(arc-seal|arc-message-signature)[ \t]*:((?:.*)(?:\r?\n[ \t].*)*)")
_ANY_ARC = re.compile(rb"(?im)^arc-authentication-results[ \t]*:")
_FOLD = re.compile(rb"\r?\n[ \t]")
_RESULTS = {dkim.CV_Pass: "pass", dkim.CV_Fail: "fail", dkim.CV_None: "none"}
#: What dkimpy's DNS function sees for a key record that could not be fetched now.
_TEMPFAIL = object()


def key_names(message: bytes) -> list[bytes] | None:
    """The key records (``s._domainkey.d.``, lower case) the ARC fields of ``message`` name,
    in order; None when it has no ARC field (RFC 8617 §4.1) or names more than
    :data:`MAX_KEYS`."""
    end = message.find(b"\r\n\r\n", 0, HEAD_LIMIT)
    head = message[: end if end >= 0 else HEAD_LIMIT]
    fields = list(_ARC_FIELD.finditer(head))
    if not fields and not _ANY_ARC.search(head):
        return None
    names: list[bytes] = []
    for match in fields:
        try:
            tags = parse_tag_value(_FOLD.sub(b" ", match.group(2)).strip())
        except InvalidTagValueList:
            continue  # dkimpy judges the malformed field itself
        s, d = tags.get(b"s", b"").strip(), tags.get(b"d", b"").strip()
        if s and d:
            name = (s + b"._domainkey." + d.rstrip(b".") + b".").lower()
            if name not in names:
                names.append(name)
    return names if len(names) <= MAX_KEYS else [*names, b""]


def _trusted(sealer: str, forwarders: Iterable[str]) -> bool:
    """``sealer`` is a listed domain or a sub-domain of one."""
    return any(sealer == f or sealer.endswith("." + f) for f in forwarders)


@implementer(ICheck)
@attrs.define
class ARCCheck:
    """Verifies ARC chains at the end of DATA (see the module's notes)."""

    resolver: Any
    trusted_forwarders: tuple[str, ...] = ()
    by_domain: Mapping[str, tuple[str, ...]] = attrs.Factory(dict)
    name: str = "arc"
    stages: tuple[Stage, ...] = ("data",)
    timeout: float = 10.0
    on_error: str = "accept"
    trusted: bool = False

    def check(self, stage: Stage, context: MailContext) -> Deferred[Verdict]:
        return Deferred.fromCoroutine(self._check(context))

    async def _check(self, context: MailContext) -> Verdict:
        small = small_in_memory(context)
        if small is not None:  # the header is read here: two thread hand-offs saved
            message, names = small, key_names(small)
        else:
            message = await deferToThread(context.message)
            names = await deferToThread(key_names, message)
        if names is None:
            result, reason, sealer = "none", "", ""
        elif len(names) > MAX_KEYS:
            result, reason, sealer = "fail", "too many ARC keys", ""
        else:
            lookups = [Deferred.fromCoroutine(self._lookup(n)) for n in names]
            records = dict(zip(names, await defer.gatherResults(lookups), strict=True))
            result, reason, sealer = await deferToThread(self._verify, message, records)
        recipients = {r.rpartition("@")[2].lower() for r in context.recipients}
        trusted = (
            result == "pass"
            and bool(recipients)
            and all(
                _trusted(sealer, (*self.trusted_forwarders, *self.by_domain.get(d, ())))
                for d in recipients
            )
        )
        context.notes["arc"] = {"result": result, "trusted": trusted}
        log.debug(
            "arc: {result} ({reason}) sealer {sealer} trusted {trusted}",
            result=result,
            reason=reason,
            sealer=sealer or "-",
            trusted=trusted,
        )
        properties = (("smtp.remote-ip", context.client_address),)
        return Verdict(results=(AuthResult("arc", result, reason, properties),))

    async def _lookup(self, name: bytes) -> object:
        """The key record's text, None when there is none, :data:`_TEMPFAIL` on a DNS error."""
        try:
            records = await key_records(
                self.resolver,
                name.decode("ascii", "replace").rstrip("."),
                (self.timeout / 4, self.timeout / 2),  # within the chain's wait
            )
        except Exception as e:  # time-out, SERVFAIL, refused: a temporary failure
            log.debug("arc: {name}: {e!r}", name=name, e=e)
            return _TEMPFAIL
        return records[0] if records else None

    def _verify(self, message: bytes, records: Mapping[bytes, object]) -> tuple[str, str, str]:
        """(result, reason, most recent sealer's domain); dkimpy asks ``records`` only."""

        def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
            record = records.get(name.lower().rstrip(b".") + b".")
            if record is _TEMPFAIL:
                raise dkim.DnsTimeoutError(f"no answer for {name!r}")
            return record if isinstance(record, bytes) else None

        try:
            cv, sets, reason = dkim.arc_verify(message, dnsfunc=dnsfunc)
        except Exception as e:  # dkimpy lets some malformed input escape as other errors
            return "fail", f"malformed ARC fields: {type(e).__name__}", ""
        sealer = sets[0].get("as-domain", b"") if sets else b""
        domain = sealer.decode("ascii", "replace").lower() if isinstance(sealer, bytes) else ""
        # None: an earlier set said cv=fail, the chain ended there (RFC 8617 §5.2 step 2).
        return _RESULTS.get(cv, "fail"), "" if cv == dkim.CV_Pass else str(reason)[:200], domain


def _domains(value: object, option: str) -> tuple[str, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise ValueError(f"{option} must be a list of domain names")
    if not all(isinstance(v, str) and v.strip(".") for v in value):
        raise ValueError(f"{option} must be a list of domain names")
    return tuple(v.lower().strip(".") for v in value)


@implementer(ICheckFactory)
class ARCCheckFactory:
    """``[filters.check.arc]``: ``trusted_forwarders = ["lists.example.net"]`` and
    ``trusted_forwarders_by_domain = { "example.org" = ["fwd.example.com"] }``."""

    name = "arc"

    def build(self, options: Mapping[str, object], env: FilterEnvironment) -> ICheck:
        refuse_unknown(options, ("trusted_forwarders", "trusted_forwarders_by_domain"))
        forwarders = _domains(options.get("trusted_forwarders", []), "trusted_forwarders")
        table = options.get("trusted_forwarders_by_domain", {})
        if not isinstance(table, Mapping):
            raise ValueError("trusted_forwarders_by_domain must be a table of domain lists")
        by_domain = {
            str(d).lower().strip("."): _domains(v, f"trusted_forwarders_by_domain.{d}")
            for d, v in table.items()
        }
        return ARCCheck(env.resolver, forwarders, by_domain)


factory = ARCCheckFactory()
