"""The admin console's way to the domains, their DKIM keys and DNS records
(:class:`~ourmail.interfaces.IDomainAdmin`): changes through :mod:`ourmail.manage.domainops`
(the code of ``ourmail domain add``), records and checks through :mod:`ourmail.dns.api` (the
code of ``ourmail dns records|check``).

Implementation notes:

* Files are read and written in worker threads; every change is audit-logged before its
  Deferred fires, refusals too.
* DNS is asked through one :class:`~ourmail.dns.lookup.Lookup` made once (on the reactor),
  never the blocking system resolver.  Each record is checked on its own under a deadline, so
  a slow or dead resolver gives ``unknown`` for the records it did not answer, in at most
  :attr:`LocalDomainAdmin.deadline` seconds, and never holds up the others.
"""

from __future__ import annotations

from typing import TypeVar

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ourmail.auth.accounts import AccountDB
from ourmail.config import Settings
from ourmail.dns.api import DomainRecords, current_addresses, domain_records
from ourmail.dns.check import CheckResult, check_records
from ourmail.dns.lookup import Answer, Lookup
from ourmail.dns.records import Record
from ourmail.interfaces import (
    AccountRefused,
    Actor,
    DkimKeyInfo,
    DnsCheckRow,
    DnsRecordRow,
    DnsRecords,
    DomainInfo,
    IAuditLog,
    IDomainAdmin,
)
from ourmail.manage import domainops
from ourmail.manage.audit import audited_in_thread
from ourmail.net.portsfile import running_ports
from ourmail.secure.dkimkeys import Unreadable, report_unreadable

log = Logger()
T = TypeVar("T")

#: Seconds a whole check may take; each query's tries (2 s, then 2 s more) fit in it.
CHECK_DEADLINE = 5.0
QUERY_TIMEOUT = (2, 2)
#: Seconds the records page waits for the host name's addresses (the A/AAAA hint).
ADDRESS_DEADLINE = 1.5
#: Seconds the host name's addresses (the hint) are kept: page views and checks in a row ask
#: DNS for them once.
ADDRESS_KEPT = 60.0
#: Outcomes that mean DNS could not be asked.
BROKEN = frozenset({"timeout", "servfail", "refused", "error"})


class _Watched(Lookup):
    """A :class:`Lookup` that notes which of its questions got no answer at all."""

    def __init__(self, lookup: Lookup) -> None:
        super().__init__(lookup.resolver, lookup.timeout)
        self.asked: list[str] = []
        self.unanswered: list[str] = []

    async def query(self, name: str, type: str) -> Answer:
        answer = await super().query(name, type)
        self.asked.append(type)
        if answer.outcome in BROKEN:
            self.unanswered.append(type)
        return answer

    @property
    def broken(self) -> bool:
        """Whether a question got no answer."""
        return bool(self.unanswered)


def row(record: Record) -> DnsRecordRow:
    """A record as the console shows it."""
    return DnsRecordRow(
        type=record.type,
        name=record.name,
        value=record.value(),
        kind=record.kind,
        purpose=record.purpose,
        required=record.required,
    )


def key_infos(settings: Settings, domain: str) -> tuple[DkimKeyInfo, ...]:
    """``domain``'s DKIM keys, signing and retired (as ``ourmail dkim list`` shows them); a
    key file that cannot be read is listed as unreadable and logged once, never an error
    for the whole page."""
    infos = []
    for entry in domainops.dkim_keys(settings).entries(domain, retired=True):
        if isinstance(entry, Unreadable):
            report_unreadable(entry)
            infos.append(DkimKeyInfo(entry.selector, "", entry.active, readable=False))
        else:
            infos.append(DkimKeyInfo(entry.selector, entry.algorithm, entry.active))
    return tuple(infos)


@implementer(IDomainAdmin)
class LocalDomainAdmin:
    """:class:`IDomainAdmin` over ``ourmail.toml``'s domains, the accounts file's added ones
    and the keys under ``<data>/dkim``."""

    def __init__(
        self,
        settings: Settings,
        audit: IAuditLog,
        lookup: Lookup,
        clock: IReactorTime,
        deadline: float = CHECK_DEADLINE,
    ) -> None:
        self.settings = settings
        self.audit = audit
        self.lookup = lookup
        self.clock = clock
        self.deadline = deadline
        # Used in worker threads only.
        self.db = AccountDB(settings.data_dir)
        #: When DNS last gave the host name's addresses, and those addresses.
        self._hint: tuple[float, tuple[str, ...]] | None = None

    # -- domains -----------------------------------------------------------------------------

    def _domains(self) -> list[DomainInfo]:
        settings = self.settings
        configured = [
            DomainInfo(d, "configuration", d == settings.primary_domain, key_infos(settings, d))
            for d in settings.domains
        ]
        added = [
            DomainInfo(d, "added", False, key_infos(settings, d))
            for d in self.db.domains()
            if d not in settings.domains
        ]
        return configured + added

    def domains(self) -> Deferred[list[DomainInfo]]:
        return deferToThread(self._domains)

    def add_domain(self, actor: Actor, name: str) -> Deferred[str]:
        return audited_in_thread(
            self.audit,
            actor,
            "domain.add",
            name,
            lambda: domainops.add_domain(self.settings, self.db, name),
        )

    def make_dkim_key(self, actor: Actor, domain: str) -> Deferred[tuple[DkimKeyInfo, ...]]:
        def make() -> str:
            served = domainops.domain_name(domain)
            if served not in self.settings.domains and served not in self.db.domains():
                raise AccountRefused("not-served", f"{served} is not served here", served)
            if domainops.signing_keys(self.settings, served):
                raise AccountRefused("has-key", f"{served} already has a DKIM key", served)
            domainops.new_dkim_key(self.settings, served)
            return served

        d = audited_in_thread(self.audit, actor, "dkim.gen", domain, make)
        return d.addCallback(lambda served: deferToThread(key_infos, self.settings, served))

    # -- DNS -----------------------------------------------------------------------------------

    def _found(self, domain: str, addresses: tuple[str, ...]) -> DomainRecords:
        """The records of ``domain`` for the ports the server listens on (as ``ourmail dns``
        finds them), else the configured ones."""
        return domain_records(
            self.settings,
            domain,
            addresses,
            running_ports(self.settings.data_dir),
            unreadable=report_unreadable,  # listed as unreadable on the domains page
        )

    def _kept(self) -> tuple[str, ...] | None:
        """The host name's addresses DNS gave less than :data:`ADDRESS_KEPT` seconds ago."""
        if self._hint is not None and self.clock.seconds() - self._hint[0] < ADDRESS_KEPT:
            return self._hint[1]
        return None

    async def _addresses(self, deadline: float, ask_dns: bool = True) -> tuple[str, ...]:
        """The host name's addresses: those kept, else DNS's now (kept when it gives some),
        or none when DNS does not say within ``deadline`` seconds or is not to be asked."""
        kept = self._kept()
        if kept is not None or not ask_dns:
            return kept or ()
        asked: Deferred[tuple[str, ...] | None] = defer.Deferred.fromCoroutine(
            current_addresses(self.lookup, self.settings.hostname)
        )
        found = await within(asked, deadline, self.clock, None)  # None: no answer in time
        if found:  # (none: asked again next time, so a record just published shows at once)
            self._hint = (self.clock.seconds(), found)
        return found or ()

    async def _records(self, domain: str, deadline: float, ask_dns: bool = True) -> DomainRecords:
        addresses = await self._addresses(deadline, ask_dns)
        return await deferToThread(self._found, domain, addresses)

    def records(self, domain: str, ask_dns: bool = True) -> Deferred[DnsRecords]:
        async def records() -> DnsRecords:
            found = await self._records(domain, ADDRESS_DEADLINE, ask_dns)
            return DnsRecords(
                domain=domain,
                hostname=found.setup.hostname,
                rows=tuple(row(r) for r in found.records),
                zone=found.zone,
                has_dkim=bool(found.setup.dkim),
            )

        return defer.Deferred.fromCoroutine(records())

    def check(self, domain: str) -> Deferred[list[DnsCheckRow]]:
        async def check() -> list[DnsCheckRow]:
            # The addresses' hint gets a share of the deadline; the records the rest.
            found = await self._records(domain, self.deadline / 3)
            wanted: list[Record] = []
            for record in found.records:
                if record.kind != "address" or not any(r.kind == "address" for r in wanted):
                    wanted.append(record)
            rows = [self._check_one(found, record) for record in wanted]
            results = await defer.gatherResults(rows, consumeErrors=True)
            if not found.setup.dkim:  # check_records' own line for a domain without a key
                missing = await check_records(self.lookup, found.setup, [])
                results += [_row(r) for r in missing]
            return results

        return defer.Deferred.fromCoroutine(check())

    def _check_one(self, found: DomainRecords, record: Record) -> Deferred[DnsCheckRow]:
        """One record checked, ``unknown`` when DNS did not answer (in time)."""
        watched = _Watched(self.lookup)

        def result(results: list[CheckResult]) -> DnsCheckRow:
            checked = _row(results[0])  # (a "no DKIM key" line may follow: added once)
            if not watched.broken:
                return checked
            if record.kind == "address" and len(watched.unanswered) < len(watched.asked):
                # A and AAAA are judged each on its own: the one that answered gives the
                # verdict, the other is named (a pass becomes a warning: half unchecked).
                missing = " and ".join(watched.unanswered)
                status = "warn" if checked.status == "pass" else checked.status
                reason = f"{checked.reason} ({missing}: no answer from DNS)"
                return attrs.evolve(checked, status=status, reason=reason)
            return attrs.evolve(checked, status="unknown")

        def failed(failure: Failure) -> DnsCheckRow:
            log.failure("DNS check of {name} {type}", failure, name=record.name, type=record.type)
            return DnsCheckRow(row(record), "unknown", "the check failed: see the server's log")

        d = check_records(watched, found.setup, [record]).addCallback(result).addErrback(failed)
        late = DnsCheckRow(row(record), "unknown", "no answer from DNS in time")
        return within(d, self.deadline, self.clock, late)


def within(work: Deferred[T], seconds: float, clock: IReactorTime, late: T) -> Deferred[T]:
    """``work``'s result, or ``late`` when it has none after ``seconds``.  ``work`` is not
    cancelled: the resolver shares one query among those asking the same (a cancel would end
    it for the others too); it ends by itself at its own time-out."""
    outcome: Deferred[T] = Deferred()

    def fire(result: T | Failure) -> None:
        if timer.active():
            timer.cancel()
        if not outcome.called:
            outcome.callback(result)

    timer = clock.callLater(seconds, fire, late)
    work.addBoth(fire)
    return outcome


def _row(result: CheckResult) -> DnsCheckRow:
    return DnsCheckRow(row(result.record), result.status, result.reason, result.found)
