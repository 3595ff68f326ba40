"""DKIM verification of arriving mail (RFC 6376, Ed25519 per RFC 8463, RFC 8301 crypto rules).

Every ``DKIM-Signature`` (up to ``max_signatures``) gets one ``dkim=`` result with
``header.d``, ``header.s`` and ``header.a``; an unsigned message gets ``dkim=none``.  The
results go to ``context.notes["dkim"]`` for DMARC as ``[{"result", "domain", "selector"}]``.

Who does what: dkimpy does the canonicalisation (RFC 6376 §3.4), the hashes and the
signature cryptography; its own DNS (blocking) is never used.  This module parses the
signatures, fetches every ``s._domainkey.d`` key through the server's ``twisted.names``
resolver in parallel, then runs dkimpy in a thread with a ``dnsfunc`` that answers from
those prefetched records.  The check itself never refuses mail: DMARC decides.

Decisions where the RFCs leave room:

* ``rsa-sha1`` is never valid (RFC 8301 §3.1): ``permerror`` without any lookup.
* RSA keys under ``min_rsa_bits`` (1024, RFC 8301 §3.2) give ``fail``.
* ``l=`` (RFC 6376 §8.2 warns that content may be appended): a signature that verifies but
  leaves canonicalised body bytes unsigned gets ``policy`` ("l= leaves N bytes unsigned"),
  which DMARC does not count as a pass.  An ``l=`` covering the whole body is an ordinary pass.
* No key record (NXDOMAIN, or no TXT) is ``permerror`` (RFC 6376 §6.1.2 "no key for
  signature"); a DNS time-out or server failure is ``temperror``; several TXT records at the
  key name are ``permerror`` (RFC 6376 §3.6.2.2 leaves them undefined).
* ``From`` not among the signed fields is ``permerror`` (RFC 6376 §5.4 requires it).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import dkim
import dkim.util
from dkim.canonicalization import CanonicalizationPolicy, InvalidCanonicalizationPolicyError
from twisted.internet import defer, threads
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.names import error
from zope.interface import implementer

from ourmail.filters.keyrecords import key_records, small_in_memory
from ourmail.filters.options import number, refuse_unknown
from ourmail.interfaces import (
    AuthResult,
    FilterEnvironment,
    ICheck,
    ICheckFactory,
    MailContext,
    Stage,
    Verdict,
)
from ourmail.secure import dkimspeed

log = Logger()

#: Algorithms that may pass, with the key type each needs (RFC 8301 §3.1, RFC 8463 §3).
ALGORITHMS = {"rsa-sha256": "rsa", "ed25519-sha256": "ed25519"}
#: A key record longer than this is refused unread (a 4096-bit RSA key is about 750 bytes).
MAX_KEY_RECORD = 8192
#: A message up to this size is verified on the reactor thread (about 1.4 ms of CPU for 4 KB
#: with RSA-2048); a bigger one, whose body takes longer to canonicalise and hash, in a thread.
INLINE_VERIFY = 64 * 1024
#: RSA keys verified: at most 4096 bits (RFC 8301 §3.2), exponent at most 2**32 - 1.
MAX_RSA_BITS = 4096
MAX_EXPONENT = 2**32 - 1
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


@attrs.define
class Signature:
    """One DKIM-Signature and what became of it."""

    index: int
    tags: dict[bytes, bytes] = attrs.Factory(dict)
    domain: str = ""
    selector: str = ""
    algorithm: str = ""
    result: str = ""
    reason: str = ""

    @property
    def key_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def decide(self, result: str, reason: str = "") -> None:
        self.result, self.reason = result, reason

    def auth_result(self) -> AuthResult:
        """The ``dkim=`` result (RFC 8601 §2.7.1) with the signature's d=, s= and a=."""
        props = (("header.d", self.domain), ("header.s", self.selector))
        props += (("header.a", self.algorithm),)
        return AuthResult("dkim", self.result, self.reason, tuple((k, v) for k, v in props if v))


def _text(value: bytes | None) -> str:
    return (value or b"").decode("ascii", "replace").strip()


def _valid_name(domain: str, selector: str) -> bool:
    name = f"{selector}._domainkey.{domain}"
    return len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


def parse_message(message: bytes, limit: int, min_rsa_bits: int) -> tuple[Any, list[Signature]]:
    """dkimpy's verifier of ``message`` (None when dkimpy cannot parse it) and every
    DKIM-Signature of the message, those that cannot pass already decided (permerror with
    the reason); signatures beyond ``limit`` are permerror unread."""
    try:
        verifier = dkim.DKIM(message, minkey=min_rsa_bits, logger=_QUIET)
    except dkim.DKIMException as e:
        head = message.split(b"\r\n\r\n", 1)[0].lower()
        if b"dkim-signature" not in head:
            return None, []
        bad = Signature(0)
        bad.decide("permerror", f"header section cannot be parsed: {e}")
        return None, [bad]
    values = [v for name, v in verifier.headers if name.lower() == b"dkim-signature"]
    signatures = []
    for index, value in enumerate(values):
        sig = Signature(index)
        signatures.append(sig)
        if index >= limit:
            sig.decide("permerror", f"more than {limit} signatures: not verified")
            continue
        try:
            sig.tags = dkim.util.parse_tag_value(value)
        except dkim.util.InvalidTagValueList as e:
            sig.decide("permerror", f"malformed signature: {e}")
            continue
        sig.domain = _text(sig.tags.get(b"d")).lower()
        sig.selector = _text(sig.tags.get(b"s")).lower()
        sig.algorithm = _text(sig.tags.get(b"a")).lower()
        _precheck(sig)
    return verifier, signatures


def _precheck(sig: Signature) -> None:
    """Decide what can be decided without the key (RFC 6376 §6.1.1)."""
    if sig.tags.get(b"v") not in (None, b"1"):
        return sig.decide("permerror", "unknown version v=")
    if sig.algorithm == "rsa-sha1":
        return sig.decide("permerror", "rsa-sha1 is never valid (RFC 8301 3.1)")
    if sig.algorithm not in ALGORITHMS:
        return sig.decide("permerror", f"unknown algorithm {sig.algorithm!r}")
    try:
        dkim.validate_signature_fields(sig.tags)
    except dkim.DKIMException as e:
        return sig.decide("permerror", str(e).replace("b'", "'"))
    signed = [h.strip().lower() for h in sig.tags[b"h"].split(b":")]
    if b"from" not in signed:
        return sig.decide("permerror", "From is not signed (RFC 6376 5.4)")
    try:
        CanonicalizationPolicy.from_c_value(sig.tags.get(b"c", b"simple/simple"))
    except InvalidCanonicalizationPolicyError:
        return sig.decide("permerror", "unknown canonicalization c=")
    if not _valid_name(sig.domain, sig.selector):
        return sig.decide("permerror", "d= or s= is not a domain name")
    return None


def verify_signatures(
    verifier: Any, signatures: Sequence[Signature], keys: Mapping[str, bytes], min_rsa_bits: int
) -> None:
    """Decide the signatures still open with their prefetched ``keys`` and the message's
    dkimpy ``verifier`` (from :func:`parse_message`; CPU work: call in a thread for a large
    message).  Never raises for bad input: every signature ends with a result."""
    for sig in signatures:
        if sig.result:
            continue
        try:
            _verify_one(verifier, sig, keys[sig.key_name], min_rsa_bits)
        except dkim.DKIMException as e:
            sig.decide("permerror", str(e))
        except Exception as e:  # dkimpy on hostile input: a result, never a traceback
            log.warn("dkim: {key} could not be verified: {e!r}", key=sig.key_name, e=e)
            sig.decide("permerror", "signature cannot be verified")


def _verify_one(verifier: Any, sig: Signature, record: bytes, min_rsa_bits: int) -> None:
    try:
        public, bits, key_type, _ = dkim.evaluate_pk(sig.key_name, record)
    except (dkim.DKIMException, ValueError) as e:
        if re.search(rb"(^|;)\s*p\s*=\s*(;|$)", record):
            return sig.decide("permerror", "key revoked (empty p=, RFC 6376 3.6.1)")
        return sig.decide("permerror", f"bad key record: {e}")
    if key_type.decode() != ALGORITHMS[sig.algorithm]:
        return sig.decide("permerror", f"{key_type.decode()} key for {sig.algorithm}")
    if key_type == b"rsa" and bits < min_rsa_bits:
        return sig.decide("fail", f"RSA key of {bits} bits (RFC 8301 3.2)")
    if key_type == b"rsa" and (bits > MAX_RSA_BITS or public["publicExponent"] > MAX_EXPONENT):
        # A sender's key must not buy minutes of our CPU: RFC 8301 §3.2 asks verifiers to
        # handle up to 4096 bits, and keys in use have exponent 65537.
        return sig.decide("permerror", "RSA key too large or with an unusual exponent")
    if b"l" not in sig.tags:
        # The common case: dkimpy canonicalises and hashes the body once; ours only tells a
        # failure's reason.
        try:
            verified = verifier.verify(sig.index, dnsfunc=lambda name, timeout=0: record)
        except dkim.DKIMException:
            if _body_hash_matches(verifier, sig, None):
                raise  # a reason of its own: permerror with dkimpy's words
            verified = False  # dkimpy says "body hash mismatch" by raising
        if verified:
            return sig.decide("pass")
        if not _body_hash_matches(verifier, sig, None):
            return sig.decide("fail", "body hash did not verify")
        return sig.decide("fail", "signature did not verify")
    policy = CanonicalizationPolicy.from_c_value(sig.tags.get(b"c", b"simple/simple"))
    body = policy.canonicalize_body(verifier.body)
    length = int(sig.tags[b"l"])
    if length > len(body):
        return sig.decide("fail", "l= is longer than the body")
    if not _body_hash_matches(verifier, sig, body[:length]):
        return sig.decide("fail", "body hash did not verify")
    if not verifier.verify(sig.index, dnsfunc=lambda name, timeout=0: record):
        return sig.decide("fail", "signature did not verify")
    if length < len(body):
        # RFC 6376 §8.2: content after l= is not covered, so the signature vouches for less
        # than the reader sees.
        return sig.decide("policy", f"l= leaves {len(body) - length} bytes unsigned")
    return sig.decide("pass")


def _body_hash_matches(verifier: Any, sig: Signature, body: bytes | None) -> bool:
    """Whether the signature's bh= is the hash of ``body`` (None: the whole canonical body)."""
    if body is None:
        policy = CanonicalizationPolicy.from_c_value(sig.tags.get(b"c", b"simple/simple"))
        body = policy.canonicalize_body(verifier.body)
    digest = hashlib.sha256(body).digest()
    return digest == base64.b64decode(re.sub(rb"\s+", b"", sig.tags[b"bh"]))


class _QuietLogger:
    """dkimpy logs every failure at error level; our results carry the reasons."""

    def debug(self, *args: object) -> None:
        pass

    error = info = warning = debug


_QUIET = _QuietLogger()


@implementer(ICheck)
@attrs.define
class DKIMCheck:
    """Verifies every DKIM-Signature at end of DATA; the verdict is always accept with
    results (DMARC, later in the chain, decides what to do with them)."""

    resolver: Any
    reactor: Any
    max_signatures: int = 10
    dns_timeout: float = 5.0
    min_rsa_bits: int = 1024
    name: str = "dkim"
    stages: tuple[Stage, ...] = ("data",)
    timeout: float = 20.0
    on_error: str = "accept"
    trusted: bool = False

    def check(self, stage: Stage, context: MailContext) -> Deferred[Verdict]:
        return defer.ensureDeferred(self._check(context))

    async def _check(self, context: MailContext) -> Verdict:
        small = small_in_memory(context)
        if small is not None:  # parsed here
            message = small
            verifier, signatures = parse_message(small, self.max_signatures, self.min_rsa_bits)
        else:
            message, verifier, signatures = await self._in_thread(self._read_and_parse, context)
        if not signatures:
            context.notes["dkim"] = []
            return Verdict(results=(AuthResult("dkim", "none"),))
        keys = await self._fetch_keys([s for s in signatures if not s.result])
        if len(message) <= INLINE_VERIFY and len(signatures) <= 2:
            # About half a millisecond of Python: here, rather than in a thread whose hold on the
            # interpreter lock would make every send of the reactor wait its turn.
            verify_signatures(verifier, signatures, keys, self.min_rsa_bits)
        else:
            await self._in_thread(verify_signatures, verifier, signatures, keys, self.min_rsa_bits)
        context.notes["dkim"] = [
            {"result": s.result, "domain": s.domain, "selector": s.selector} for s in signatures
        ]
        return Verdict(results=tuple(s.auth_result() for s in signatures))

    def _read_and_parse(self, context: MailContext) -> tuple[bytes, Any, list[Signature]]:
        message = context.message()
        return message, *parse_message(message, self.max_signatures, self.min_rsa_bits)

    def _in_thread(self, f: Any, *args: Any) -> Deferred[Any]:
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args)

    async def _fetch_keys(self, signatures: Sequence[Signature]) -> dict[str, bytes]:
        """Every key record the open signatures need, fetched in parallel; a signature
        whose key cannot be had is decided here."""
        names = sorted({s.key_name for s in signatures})
        answers = await defer.gatherResults([Deferred.fromCoroutine(self._key(n)) for n in names])
        found = dict(zip(names, answers, strict=True))
        keys = {}
        for sig in signatures:
            answer = found[sig.key_name]
            if isinstance(answer, bytes):
                keys[sig.key_name] = answer
            else:
                sig.decide(*answer)
        return keys

    async def _key(self, name: str) -> bytes | tuple[str, str]:
        """The key record at ``name``, or the (result, reason) that a failed lookup means
        (RFC 6376 §6.1.2)."""
        first = max(self.dns_timeout / 3, 0.1)
        attempts = (first, self.dns_timeout - first)
        try:
            records = await key_records(
                self.resolver, name, attempts, self.reactor, self.dns_timeout
            )
        except (defer.TimeoutError, error.DNSQueryTimeoutError):
            return ("temperror", f"DNS time-out for {name}")
        except Exception as e:
            return ("temperror", f"DNS error for {name}: {type(e).__name__}")
        if not records:
            return ("permerror", f"no key at {name}")
        if len(records) > 1:
            return ("permerror", f"{len(records)} key records at {name}")
        if len(records[0]) > MAX_KEY_RECORD:
            return ("permerror", f"key record at {name} is too long")
        return records[0]


@implementer(ICheckFactory)
class DKIMFactory:
    """``[filters.check.dkim]``: ``max_signatures`` (10), ``dns_timeout`` (5 s),
    ``min_rsa_bits`` (1024; RFC 8301 §3.2 forbids less)."""

    name = "dkim"
    options = ("max_signatures", "dns_timeout", "min_rsa_bits")

    def build(self, options: Mapping[str, object], env: FilterEnvironment) -> ICheck:
        refuse_unknown(options, self.options)
        for key in ("max_signatures", "min_rsa_bits"):
            if key in options and not isinstance(options[key], int):
                raise ValueError(f"{key} must be a whole number")
        dkimspeed.install()  # OpenSSL verifies RSA in dkimpy's place: about 1 ms less a message
        return DKIMCheck(
            resolver=env.resolver,
            reactor=env.reactor,
            max_signatures=int(number(options, "max_signatures", 10, 1)),
            dns_timeout=number(options, "dns_timeout", 5.0, 0.1),
            min_rsa_bits=int(number(options, "min_rsa_bits", 1024, 1024)),
        )


factory = DKIMFactory()
