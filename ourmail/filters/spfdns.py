"""pyspf's DNS function answered by ``twisted.names``: on the reactor thread from answers
already known (:class:`ReactorLookup`), or in a worker thread whose lookups are asked on the
reactor through the server's resolver (:class:`TwistedLookup`).

Implementation notes (keep these true when changing this module):

* A :class:`ReactorLookup` never waits: a question whose answer is neither known to this
  evaluation nor in the resolver's cache is recorded as :attr:`ReactorLookup.missing` and
  the lookup raises ``spf.TempError``; the caller then asks it, and evaluates again from the
  start.  pyspf is deterministic, so each pass repeats the last one's questions, and every
  pass learns one more answer.  (pyspf swallows some errors, e.g. of ``exp=``: the caller
  looks at ``missing``, not at the result, to know whether a pass was complete.)

* pyspf calls one module-level function, ``spf.DNSLookup(name, qtype, strict, timeout)``, for
  every query.  :func:`install` replaces it once with a dispatcher that uses the
  :class:`TwistedLookup` bound to the calling thread (:func:`bound`), so no lookup of ours
  ever reaches pyspf's own (blocking, system) resolver.
* The worker thread waits for each answer with a time limit: a lookup never outlives the
  evaluation's deadline, even when the DNS server never answers or the reactor stops, so a
  worker always comes back.
* RFC 7208 §5: NXDOMAIN and "no data" are an empty answer (a void lookup, §4.6.4); a server
  failure, any other RCODE or a time-out is ``spf.TempError`` (the result ``temperror``).
  Answers truncated over UDP are asked again over TCP by the twisted.names client.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import spf  # type: ignore[import-untyped]
from twisted.internet import defer
from twisted.names import dns
from twisted.names.error import DNSNameError
from twisted.python.failure import Failure

from ourmail.net.dns import negative_ttl

#: pyspf's query types, as twisted.names type codes.
QTYPES = {
    "A": dns.A,
    "AAAA": dns.AAAA,
    "MX": dns.MX,
    "PTR": dns.PTR,
    "TXT": dns.TXT,
    "SPF": dns.SPF,
    "CNAME": dns.CNAME,
}
_NAMES = {code: name for name, code in QTYPES.items()}

#: One answer as pyspf expects it: ((owner name, type name), value).
Answer = tuple[tuple[str, str], Any]


def wire_name(name: str) -> bytes | None:
    """``name`` as asked in DNS, or None for a name that cannot exist there: a non-ASCII
    name (no data, a void lookup) or one longer than RFC 1035 §2.3.4 allows."""
    try:
        wire = name.encode("ascii")
    except UnicodeError:
        return None
    return None if len(wire.rstrip(b".")) > 253 else wire


#: An answer this evaluation already has: the records, or why the lookup failed.
Known = dict[tuple[str, str], "list[Answer] | str"]


def outcome(result: tuple[list[dns.RRHeader], Any, Any] | Failure) -> list[Answer] | str:
    """What a resolver's answer means to pyspf: its records, none for NXDOMAIN (RFC 7208
    §4.3, §5), or the reason of a failure (a time-out, a server failure: ``temperror``)."""
    if not isinstance(result, Failure):
        return convert(result[0])
    if result.check(DNSNameError):  # type: ignore[no-untyped-call]
        return []
    if result.check(defer.TimeoutError):  # type: ignore[no-untyped-call]
        return "time-out"
    return getattr(result.type, "__name__", "error")


def _answer(name: str, qtype: str, known: list[Answer] | str) -> list[Answer]:
    if isinstance(known, str):
        raise spf.TempError(f"DNS {qtype} lookup of {name} failed: {known}")
    return known


def lifetime(result: tuple[list[dns.RRHeader], Any, Any] | Failure) -> float:
    """How long a resolver's answer stays true: its records' smallest TTL; for NXDOMAIN or
    no data, the SOA's negative TTL (RFC 2308 §5); 0 for a failure, or with no SOA."""
    if isinstance(result, Failure):
        message = getattr(result.value, "args", (None,))[0] if result.check(DNSNameError) else None  # type: ignore[no-untyped-call]
        return negative_ttl((message.authority,)) if isinstance(message, dns.Message) else 0.0
    if result[0]:
        return float(min(rr.ttl for rr in result[0]))
    return float(negative_ttl(result))


def _uses_macros(answers: list[Answer] | str) -> bool:
    """Whether a TXT answer may hold an SPF macro (RFC 7208 §7: every macro has a "%")."""
    return not isinstance(answers, str) and any(
        b"%" in part for (_, kind), value in answers if kind in ("TXT", "SPF") for part in value
    )


class ReactorLookup:
    """pyspf's DNS function on the reactor thread, for one evaluation: answers from
    :attr:`known` or the resolver's cache; anything else is :attr:`missing` (see the
    module's notes), asked with :meth:`fetch`.

    It also tells, since :meth:`begin`, until when the answers asked stay true
    (:attr:`valid`: none may have expired) and whether any record may hold a macro: an
    outcome from answers without macros depends on nothing but the client's address, the
    domain and those answers, so it may be kept that long."""

    def __init__(self, resolver: Any, clock: Any, attempts: tuple[float, ...], deadline: float):
        self._resolver = resolver
        self._clock = clock
        self._attempts = attempts
        self.deadline = deadline
        self.known: Known = {}
        #: The question the last pass could not answer, and the resolver's Deferred for it.
        self.missing: tuple[tuple[str, str], Any] | None = None
        self._fetching: Any = None
        #: When each known answer stops being true (clock seconds), and those with a "%".
        self._expires: dict[tuple[str, str], float] = {}
        self._macros: set[tuple[str, str]] = set()
        #: Since begin(): the earliest expiry of the answers asked, and whether one had a "%".
        self.valid = float("inf")
        self.macros = False

    def begin(self) -> None:
        """Start tracking what the next evaluation's answers allow (:attr:`valid`,
        :attr:`macros`)."""
        self.valid, self.macros = float("inf"), False

    def _know(self, key: tuple[str, str], result: Any) -> None:
        self.known[key] = outcome(result)
        self._expires[key] = self._clock.seconds() + lifetime(result)
        if _uses_macros(self.known[key]):
            self._macros.add(key)

    def _asked(self, key: tuple[str, str]) -> list[Answer]:
        self.valid = min(self.valid, self._expires.get(key, 0.0))
        self.macros = self.macros or key in self._macros
        return _answer(key[0], key[1], self.known[key])

    def __call__(
        self, name: str, qtype: str, strict: object = True, timeout: object = None
    ) -> list[Answer]:
        key = (name, qtype)
        if key in self.known:
            return self._asked(key)
        wire = wire_name(name)
        if wire is None:
            return []  # (a name that cannot exist: no lookup, true forever)
        if self.missing is None:
            d = self._resolver.query(dns.Query(wire, QTYPES[qtype], dns.IN), self._attempts)
            if d.called:  # the resolver's cache had it
                results: list[Any] = []
                d.addBoth(results.append)
                self._know(key, results[0])
                return self._asked(key)
            self.missing = (key, d)
        raise spf.TempError(f"DNS {qtype} lookup of {name} not answered yet")

    async def fetch(self) -> None:
        """Wait for the missing answer (at most until the deadline) and know it."""
        assert self.missing is not None
        key, d = self.missing
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            d.addErrback(lambda _: None)  # the cancellation below is its only failure
            d.cancel()
            self.known[key] = "SPF evaluation time limit reached"
            self._expires[key] = 0.0
        else:
            d.addTimeout(remaining, self._clock)
            self._fetching = d
            results: list[Any] = []
            await d.addBoth(results.append)
            self._fetching = None
            self._know(key, results[0])
        self.missing = None

    def cancel(self) -> None:
        """Stop waiting for the answer being fetched."""
        if self._fetching is not None:
            self._fetching.cancel()


class TwistedLookup:
    """pyspf's DNS function for one evaluation in a worker thread, asking ``resolver`` on
    ``reactor``.

    ``attempts`` are the per-try time-outs of one query (twisted.names retries with each);
    nothing is asked after ``deadline`` (``time.monotonic()``) or once :meth:`cancel` is
    called: both give ``spf.TempError``.  ``known``: answers the evaluation already has
    (from its passes on the reactor)."""

    def __init__(
        self,
        reactor: Any,
        resolver: Any,
        attempts: tuple[float, ...],
        deadline: float,
        known: Known | None = None,
    ) -> None:
        self._reactor = reactor
        self._resolver = resolver
        self._attempts = attempts
        self.deadline = deadline
        self._cancelled = threading.Event()
        self._known = dict(known or {})
        #: How many queries were sent (for tests and the log).
        self.queries = 0

    def cancel(self) -> None:
        """Stop asking: the next lookup (and the one waiting) ends in temperror."""
        self._cancelled.set()

    def __call__(
        self, name: str, qtype: str, strict: object = True, timeout: object = None
    ) -> list[Answer]:
        """The answers for ``name``/``qtype``, in the worker thread."""
        if self._cancelled.is_set():
            raise spf.TempError("SPF evaluation abandoned")
        if (name, qtype) in self._known:
            return _answer(name, qtype, self._known[(name, qtype)])
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise spf.TempError("DNS: SPF evaluation time limit reached")
        wire = wire_name(name)
        if wire is None:
            return []
        box: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self.queries += 1
        self._reactor.callFromThread(self._ask, wire, QTYPES[qtype], remaining, box)
        waited = time.monotonic()
        while True:
            try:
                ok, value = box.get(timeout=0.25)
                break
            except queue.Empty:
                if self._cancelled.is_set():
                    raise spf.TempError("SPF evaluation abandoned") from None
                if time.monotonic() - waited > remaining + 1:
                    raise spf.TempError(f"DNS: no answer for {name} {qtype}") from None
        if not ok:
            raise spf.TempError(f"DNS {qtype} lookup of {name} failed: {value}")
        return value  # type: ignore[no-any-return]

    def _ask(
        self, name: bytes, qtype: int, limit: float, box: queue.SimpleQueue[tuple[bool, Any]]
    ) -> None:
        """In the reactor thread: send the query, put (ok, answers or reason) into ``box``."""
        attempts = tuple(a for a in self._attempts if a > 0) or (limit,)
        try:
            d = self._resolver.query(dns.Query(name, qtype, dns.IN), timeout=attempts)
        except Exception as e:  # a name twisted.names cannot encode, a closed resolver
            box.put((False, e.__class__.__name__))
            return
        d.addTimeout(limit, self._reactor)

        def answered(result: tuple[list[dns.RRHeader], Any, Any] | Failure) -> None:
            meaning = outcome(result)
            box.put((False, meaning) if isinstance(meaning, str) else (True, meaning))

        d.addBoth(answered)


def convert(records: list[dns.RRHeader]) -> list[Answer]:
    """twisted.names answer records as pyspf's ((name, type), value) pairs; CNAMEs included
    (pyspf follows them), record types pyspf does not use left out."""
    answers: list[Answer] = []
    for rr in records:
        kind = _NAMES.get(rr.type)
        if kind is None:
            continue
        owner = rr.name.name.decode("ascii", "replace")
        payload: Any = rr.payload
        value: Any
        if kind == "A":
            value = payload.dottedQuad()
        elif kind == "AAAA":
            value = socket.inet_ntop(socket.AF_INET6, payload.address)
        elif kind == "MX":
            value = (payload.preference, payload.name.name.decode("ascii", "replace"))
        elif kind in ("PTR", "CNAME"):
            value = payload.name.name.decode("ascii", "replace")
        else:  # TXT, SPF: the strings as bytes, joined by pyspf (RFC 7208 §3.3)
            value = tuple(payload.data)
        answers.append(((owner, kind), value))
    return answers


_local = threading.local()
_installing = threading.Lock()
_original: Callable[..., Any] | None = None


def _dispatch(name: str, qtype: str, strict: object = True, timeout: object = None) -> Any:
    lookup = getattr(_local, "lookup", None)
    if lookup is None:
        # pyspf used by someone else in this process: its own behaviour, untouched.
        assert _original is not None
        return _original(name, qtype, strict, timeout)
    return lookup(name, qtype, strict, timeout)


def install() -> None:
    """Route pyspf's lookups through :func:`bound` lookups (idempotent, thread-safe)."""
    global _original
    with _installing:
        if spf.DNSLookup is not _dispatch:
            _original = spf.DNSLookup
            spf.DNSLookup = _dispatch


@contextlib.contextmanager
def bound(lookup: TwistedLookup | ReactorLookup) -> Iterator[TwistedLookup | ReactorLookup]:
    """Within this block, pyspf's lookups in this thread are answered by ``lookup``."""
    install()
    _local.lookup = lookup
    try:
        yield lookup
    finally:
        _local.lookup = None
