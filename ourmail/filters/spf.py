"""SPF (RFC 7208): may the client's IP address send mail for the MAIL FROM domain, and for
the name it gave in HELO/EHLO?  Check ``spf`` of the filter chain (docs/filters.md).

Implementation notes (keep these true when changing this module):

* pyspf (the RFC 7208 test suite ships with it) does the evaluation: record
  selection, mechanisms, macros, ``exp=``, the §4.6.4 limits (10 DNS-querying terms, 2 void
  lookups, 10 MX/PTR names).  It is synchronous and asks for DNS answers as it goes, so it
  runs on the reactor in passes: a pass that needs an answer neither known nor cached
  stops, the answer is fetched (asynchronously, through the server's twisted.names
  resolver), and the evaluation starts again (:mod:`ourmail.filters.spfdns`).  With the
  common records in the resolver's cache that is one pass of some 0.1 ms and no thread;
  an outcome whose records hold no macro is kept as long as its answers (SPFCheck._identity).
  After :data:`REACTOR_PASSES` passes, the evaluation finishes in a small thread pool of
  its own, whose lookups are asked on the reactor.  The reactor thread never waits.
* Both identities are checked at MAIL (RFC 7208 §2.3, §2.4): for the null sender the HELO
  identity decides; otherwise MAIL FROM decides, and a ``fail`` of the HELO identity (a
  conclusive result, §2.3) is answered like a MAIL FROM ``fail``.
* One evaluation never runs longer than the check's time-out: past its deadline every
  lookup is ``temperror``, so the verdict comes from this check, not from the chain's
  time-out, and the worker thread is free again.
* A ``junk`` verdict at MAIL files the transaction's message into Junk (the SMTP session
  keeps the verdicts of every stage until the end of DATA).
* Results follow the chain's contract: the MAIL FROM result first as
  ``spf=<result> smtp.mailfrom=<domain>`` (for the null sender ``smtp.helo=<name>``), then
  the HELO result; ``context.notes["spf"]`` holds the deciding result and its domain (DMARC
  reads it).
"""

from __future__ import annotations

import re
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import attrs
import spf as pyspf  # type: ignore[import-untyped]
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from ourmail.filters.netlist import IPNetwork, client_ip, in_networks, parse_networks
from ourmail.filters.options import refuse_unknown
from ourmail.filters.spfdns import ReactorLookup, TwistedLookup, bound
from ourmail.interfaces import (
    ACCEPT,
    Action,
    AuthResult,
    FilterEnvironment,
    ICheck,
    ICheckFactory,
    MailContext,
    Stage,
    Verdict,
)
from ourmail.net.ttlcache import TTLCache

log = Logger()

#: The results of RFC 7208 §2.6.
RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")
#: Names older pyspf versions use for two of them (RFC 4408).
_OLD_NAMES = {"unknown": "permerror", "error": "temperror"}
#: Stands for "no exp= explanation"; never shown to anyone.
_NO_EXPLANATION = "\x00ourmail-default\x00"
#: Longest explanation put into an SMTP reply (RFC 5321 §4.5.3.1.5 allows 512 per line).
MAX_EXPLANATION = 300
#: Concurrent SPF evaluations in threads (each holds one while it waits for DNS); more wait.
POOL_SIZE = 16
#: Passes of one evaluation on the reactor thread, each with one more answer, before the
#: rest goes to a worker thread (a record needing many rounds of lookups).
REACTOR_PASSES = 8
#: Outcomes kept per process (see SPFCheck._identity).
OUTCOMES_KEPT = 10_000

FAIL_ACTIONS = ("reject", "junk", "accept")
SOFTFAIL_ACTIONS = ("accept", "junk")
TEMPERROR_ACTIONS = ("accept", "tempfail")
DEFAULT_SKIP = ("127.0.0.0/8", "::1/128")
OPTIONS = ("fail", "softfail", "temperror", "skip_networks", "helo", "dns_timeout")

_SEVERITY: dict[Action, int] = {"accept": 0, "junk": 1, "tempfail": 2, "reject": 3}
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$", re.IGNORECASE)


@attrs.frozen
class SPFOutcome:
    """The result of evaluating one identity (RFC 7208 §4, ``check_host()``)."""

    result: str
    #: The domain checked: the MAIL FROM domain or the HELO name.
    domain: str
    #: The domain's own ``exp=`` explanation (RFC 7208 §6.2), printable ASCII; "" if none.
    explanation: str = ""
    #: pyspf's words on the outcome, for the log.
    detail: str = ""


def helo_domain(helo: str | None) -> str | None:
    """The HELO name as an SPF identity, or None when it cannot be one: an address literal
    or a name that is not a multi-label domain name (RFC 7208 §2.3, §4.3)."""
    if not helo:
        return None
    name = helo.rstrip(".")
    labels = name.split(".")
    if len(labels) < 2 or len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        return None
    if labels[-1].isdigit():  # a bare IPv4 address is not a domain name
        return None
    return name.lower()


def printable(text: str) -> str:
    """``text`` fit for an SMTP reply line: printable ASCII (anything else a space), bounded."""
    cleaned = "".join(c if " " <= c <= "~" else " " for c in text).strip()
    if len(cleaned) > MAX_EXPLANATION:
        cleaned = cleaned[: MAX_EXPLANATION - 3] + "..."
    return cleaned


def check_host(
    ip: str,
    sender: str,
    helo: str,
    lookup: TwistedLookup | ReactorLookup,
    receiver: str | None = None,
) -> SPFOutcome:
    """RFC 7208 ``check_host()`` of ``sender`` (MAIL FROM; "" checks the HELO identity
    ``helo``) for the client ``ip``, every DNS query answered by ``lookup``; ``receiver`` is
    this host's name (the ``%{r}`` macro, §7.3).  Runs in a worker thread; never raises
    (malformed input is ``permerror``, DNS trouble ``temperror``)."""
    local, at, domain = sender.rpartition("@")
    if not sender:
        domain = helo
    elif at:
        try:
            # RFC 8616 §4: an internationalized domain is looked up as A-labels.
            domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
        except UnicodeError:
            return SPFOutcome("none", domain, detail="not a valid domain name (RFC 7208 §4.3)")
        sender = f"{local}@{domain}"
    try:
        with bound(lookup):
            query = pyspf.query(i=ip, s=sender, h=helo, receiver=receiver, strict=True, querytime=0)
            query.set_default_explanation(_NO_EXPLANATION)
            result, _code, text = query.check()
        domain = query.o or domain
    except pyspf.TempError as e:
        return SPFOutcome("temperror", domain, detail=str(e))
    except pyspf.PermError as e:
        return SPFOutcome("permerror", domain, detail=str(e))
    except Exception as e:  # pyspf tripping over input it did not foresee
        return SPFOutcome("permerror", domain, detail=f"evaluation failed: {e!r}")
    result = _OLD_NAMES.get(result, result)
    if result not in RESULTS:
        result = "permerror"
    if text == _NO_EXPLANATION:
        return SPFOutcome(result, domain, detail=f"mechanism {query.mechanism}")
    explanation = printable(str(text)) if result == "fail" else ""
    return SPFOutcome(result, domain, explanation, printable(str(text)))


def _pool(reactor: Any) -> ThreadPool:
    """The SPF worker threads of this process: made and started once; at shutdown the
    evaluations under way are abandoned (temperror) and the threads stopped."""
    pool: ThreadPool | None = _pools.get(id(reactor))
    if pool is None:
        pool = ThreadPool(minthreads=0, maxthreads=POOL_SIZE, name="ourmail-spf")
        _pools[id(reactor)] = pool
        reactor.callWhenRunning(pool.start)
        reactor.addSystemEventTrigger("before", "shutdown", _abandon_all)
        reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
    return pool


def _abandon_all() -> None:
    for lookup in list(_running):
        lookup.cancel()


_pools: dict[int, ThreadPool] = {}
#: The evaluations under way (their lookups), so shutdown does not wait for their DNS.
_running: weakref.WeakSet[TwistedLookup] = weakref.WeakSet()


#: The MAIL FROM and HELO identities' outcomes (either may be None: not evaluated).
Outcomes = tuple["SPFOutcome | None", "SPFOutcome | None"]
T = TypeVar("T")


class Evaluation:
    """One evaluation's passes on the reactor, then (if it needs more rounds of lookups) the
    rest in a worker thread with the answers known so far (see the module's notes)."""

    def __init__(
        self, reactor: Any, resolver: Any, attempts: tuple[float, ...], deadline: float
    ) -> None:
        self._reactor, self._resolver = reactor, resolver
        self._attempts, self._deadline = attempts, deadline
        self._on_reactor = ReactorLookup(resolver, reactor, attempts, deadline)
        self._threaded: TwistedLookup | None = None
        self._cancelled = False

    async def run(
        self, evaluate: Callable[[ReactorLookup | TwistedLookup], T], passes: int = REACTOR_PASSES
    ) -> T:
        """What ``evaluate`` (synchronous pyspf work given a lookup) finds."""
        for _ in range(passes):
            found = evaluate(self._on_reactor)
            if self._on_reactor.missing is None:
                return found
            await self._on_reactor.fetch()
            if self._cancelled:
                raise CancelledError()
        lookup = TwistedLookup(
            self._reactor, self._resolver, self._attempts, self._deadline, self._on_reactor.known
        )
        self._threaded = lookup

        def in_thread() -> T:
            _running.add(lookup)
            try:
                return evaluate(lookup)
            finally:
                _running.discard(lookup)

        return await deferToThreadPool(self._reactor, _pool(self._reactor), in_thread)

    def cancel(self) -> None:
        """Abandon the evaluation: its DNS question, or its worker thread's lookups."""
        self._cancelled = True
        self._on_reactor.cancel()
        if self._threaded is not None:
            self._threaded.cancel()


@implementer(ICheck)
@attrs.define
class SPFCheck:
    """The ``spf`` check: RFC 7208 at MAIL FROM, answered by the configured policy."""

    reactor: Any
    resolver: Any
    #: This host's name (the ``%{r}`` macro of explanations, RFC 7208 §7.3).
    receiver: str = "unknown"
    fail: Action = "reject"
    softfail: Action = "accept"
    temperror: Action = "accept"
    skip_networks: tuple[IPNetwork, ...] = ()
    helo: bool = True
    #: Seconds one DNS query may take (tried twice within that).
    dns_timeout: float = 5.0
    name: str = "spf"
    stages: tuple[Stage, ...] = ("mail",)
    #: RFC 7208 §4.6.4: at least 20 seconds for one evaluation.
    timeout: float = 20.0
    on_error: str = "accept"
    trusted: bool = False
    #: Outcomes kept while the DNS answers they rest on are (see :meth:`_identity`).
    outcomes: TTLCache[tuple[str, str, str], SPFOutcome] = attrs.field(
        factory=lambda: TTLCache(OUTCOMES_KEPT), init=False
    )

    def _identity(
        self,
        kind: str,
        ip: str,
        domain: str,
        lookup: ReactorLookup | TwistedLookup,
        evaluate: Callable[[], SPFOutcome],
    ) -> SPFOutcome:
        """One identity's outcome.  pyspf's outcome is a function of the client's address,
        the identity and the DNS answers, plus (through macros, RFC 7208 §7) the sender's
        local part, the HELO name and this host's name: an outcome from answers none of
        which holds a macro is kept until the first of them expires, and the next message
        from that address and domain costs no evaluation."""
        key = (kind, ip, domain.lower())
        now = self.reactor.seconds()
        found, kept = self.outcomes.get(key, now)
        if found:
            assert kept is not None
            return kept
        if not isinstance(lookup, ReactorLookup):
            return evaluate()
        lookup.begin()
        outcome = evaluate()
        if lookup.missing is None and not lookup.macros and outcome.result != "temperror":
            self.outcomes.put(key, outcome, lookup.valid - now, now)
        return outcome

    def check(self, stage: Stage, context: MailContext) -> Deferred[Verdict]:
        """The verdict at MAIL FROM."""
        if stage != "mail" or context.sender is None or context.authenticated:
            return succeed(ACCEPT)  # a logged-in user (check_submission) is no SPF matter
        ip = client_ip(context.client_address)
        if ip is None or in_networks(ip, self.skip_networks):
            return succeed(ACCEPT)
        # Our own deadline comes before the chain's time-out, so the verdict is ours.
        budget = max(self.timeout - 1.0, self.timeout * 0.8)
        deadline = time.monotonic() + budget
        attempts = (
            min(1.0, self.dns_timeout / 2),
            self.dns_timeout - min(1.0, self.dns_timeout / 2),
        )
        ip_text, sender, helo = str(ip), context.sender, context.helo or ""
        check_helo = self.helo and helo_domain(helo) is not None

        def identities(lookup: ReactorLookup | TwistedLookup) -> Outcomes:
            helo_outcome = None
            if check_helo or not sender:
                helo_outcome = self._identity(
                    "helo",
                    ip_text,
                    helo,
                    lookup,
                    lambda: _evaluate_helo(ip_text, helo, lookup, self.receiver),
                )
                if not sender or (helo_outcome.result == "fail" and self.fail == "reject"):
                    return None, helo_outcome
            mailfrom = self._identity(
                "mailfrom",
                ip_text,
                sender.rpartition("@")[2],
                lookup,
                lambda: check_host(ip_text, sender, helo, lookup, self.receiver),
            )
            return mailfrom, helo_outcome

        evaluation = Evaluation(self.reactor, self.resolver, attempts, deadline)
        result: Deferred[Verdict] = Deferred(lambda _: evaluation.cancel())
        inner = Deferred.fromCoroutine(evaluation.run(identities))
        # The notes of this transaction: an evaluation that outlives its check (the chain
        # gave up waiting) must not write into the next transaction's.
        notes = context.notes
        verdict: Deferred[Verdict] = inner.addCallback(
            lambda outcomes: self._verdict(notes, str(ip), *outcomes)
        )

        def done(value: Verdict | Failure) -> None:
            if not result.called:
                if isinstance(value, Failure):
                    result.errback(value)
                else:
                    result.callback(value)
            elif isinstance(value, Failure) and not value.check(CancelledError):  # type: ignore[no-untyped-call]
                log.failure("SPF check finished after being abandoned", value)

        verdict.addBoth(done)
        return result

    def _verdict(
        self,
        notes: dict[str, object],
        ip: str,
        mailfrom: SPFOutcome | None,
        helo: SPFOutcome | None,
    ) -> Verdict:
        results = []
        deciding = mailfrom or helo
        assert deciding is not None
        if mailfrom is not None:
            results.append(
                AuthResult("spf", mailfrom.result, properties=(("smtp.mailfrom", mailfrom.domain),))
            )
        if helo is not None:
            results.append(AuthResult("spf", helo.result, properties=(("smtp.helo", helo.domain),)))
        notes["spf"] = {"result": deciding.result, "domain": deciding.domain}
        # The MAIL FROM result decides; the HELO one only when it is a conclusive fail.
        judged = [deciding]
        if helo is not None and helo is not deciding and helo.result == "fail":
            judged.append(helo)
        worst = max(judged, key=lambda o: _SEVERITY[self._action(o.result)])
        action = self._action(worst.result)
        # One line a message: the deciding identity, and the HELO name's when it is another.
        other = f"; HELO {helo.domain}: {helo.result}" if helo and helo is not deciding else ""
        log.info(
            "SPF {result} for {domain} from {ip}: {detail}{other}",
            result=deciding.result,
            domain=deciding.domain,
            ip=ip,
            detail=deciding.detail,
            other=other,
        )
        if action == "reject":
            # RFC 7372 §3.2: X.7.23 "SPF validation failed".
            text = worst.explanation or (
                f"SPF: {worst.domain} does not allow {ip} to send its mail"
            )
            return Verdict("reject", 550, "5.7.23", text, results=tuple(results))
        if action == "tempfail":
            text = f"SPF: temporary DNS error checking {worst.domain}, try again later"
            return Verdict("tempfail", 451, "4.4.3", text, results=tuple(results))
        reason = f"SPF {worst.result} for {worst.domain} from {ip}"
        return Verdict(action, results=tuple(results), reason=reason)

    def _action(self, result: str) -> Action:
        if result == "fail":
            return self.fail
        if result == "softfail":
            return self.softfail
        if result == "temperror":
            return self.temperror
        return "accept"


def _evaluate_helo(
    ip: str, helo: str, lookup: TwistedLookup | ReactorLookup, receiver: str
) -> SPFOutcome:
    """The HELO identity (RFC 7208 §2.3): ``none`` for a name that cannot be checked."""
    name = helo_domain(helo)
    if name is None:
        return SPFOutcome("none", helo, detail="HELO name is not a domain name")
    return check_host(ip, "", name, lookup, receiver)


def _choice(options: Mapping[str, object], key: str, allowed: Sequence[str], default: str) -> Any:
    value = options.get(key, default)
    if value not in allowed:
        raise ValueError(f"'{key}' must be one of {', '.join(allowed)} (got {value!r})")
    return value


@implementer(ICheckFactory)
class SPFFactory:
    """Builds the ``spf`` check from ``[filters.check.spf]``."""

    name = "spf"

    def build(self, options: Mapping[str, object], env: FilterEnvironment) -> ICheck:
        refuse_unknown(options, OPTIONS)
        skip = parse_networks(options.get("skip_networks", DEFAULT_SKIP), "skip_networks")
        helo = options.get("helo", True)
        if not isinstance(helo, bool):
            raise ValueError("'helo' must be true or false")
        dns_timeout = options.get("dns_timeout", 5.0)
        if not isinstance(dns_timeout, int | float) or isinstance(dns_timeout, bool):
            raise ValueError("'dns_timeout' must be a number of seconds")
        if dns_timeout <= 0:
            raise ValueError("'dns_timeout' must be positive")
        return SPFCheck(
            reactor=env.reactor,
            resolver=env.resolver,
            receiver=env.hostname,
            fail=_choice(options, "fail", FAIL_ACTIONS, "reject"),
            softfail=_choice(options, "softfail", SOFTFAIL_ACTIONS, "accept"),
            temperror=_choice(options, "temperror", TEMPERROR_ACTIONS, "accept"),
            skip_networks=skip,
            helo=helo,
            dns_timeout=float(dns_timeout),
        )


factory = SPFFactory()
