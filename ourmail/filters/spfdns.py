"""pyspf's DNS function answered by ``twisted.names``: the SPF evaluation runs in a worker
thread and each of its lookups is asked on the reactor through the server's resolver.

Implementation notes (keep these true when changing this module):

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


class TwistedLookup:
    """pyspf's DNS function for one evaluation, asking ``resolver`` on ``reactor``.

    ``attempts`` are the per-try time-outs of one query (twisted.names retries with each);
    nothing is asked after ``deadline`` (``time.monotonic()``) or once :meth:`cancel` is
    called: both give ``spf.TempError``."""

    def __init__(
        self, reactor: Any, resolver: Any, attempts: tuple[float, ...], deadline: float
    ) -> None:
        self._reactor = reactor
        self._resolver = resolver
        self._attempts = attempts
        self.deadline = deadline
        self._cancelled = threading.Event()
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
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise spf.TempError("DNS: SPF evaluation time limit reached")
        try:
            # Non-ASCII names do not exist in DNS as such: no data (a void lookup).
            wire = name.encode("ascii")
        except UnicodeError:
            return []
        if len(wire.rstrip(b".")) > 253:  # RFC 1035 §2.3.4: no such name can exist
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

        def answered(result: tuple[list[dns.RRHeader], list[Any], list[Any]]) -> None:
            box.put((True, convert(result[0])))

        def failed(failure: Failure) -> None:
            if failure.check(DNSNameError):  # type: ignore[no-untyped-call]  # NXDOMAIN: no data (RFC 7208 §4.3, §5)
                box.put((True, []))
            elif failure.check(defer.TimeoutError):  # type: ignore[no-untyped-call]
                box.put((False, "time-out"))
            else:
                box.put((False, getattr(failure.type, "__name__", "error")))

        d.addCallbacks(answered, failed)


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
def bound(lookup: TwistedLookup) -> Iterator[TwistedLookup]:
    """Within this block, pyspf's lookups in this thread are answered by ``lookup``."""
    install()
    _local.lookup = lookup
    try:
        yield lookup
    finally:
        _local.lookup = None
