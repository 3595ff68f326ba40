"""The users of an LDAP directory as the admin console lists them
(:class:`~ourmail.interfaces.IDirectoryUsers`; docs/admin-console.md#users-from-an-ldap-directory).

What LDAP paging really offers decides the design.  The simple paged results control (RFC 2696)
walks a result set forward only, with a cookie valid on one connection: it cannot jump to page
400, and a new search for each page of the console would walk through all the earlier ones.
Server-side sorting (RFC 2891) and virtual list views (draft-ietf-ldapext-ldapv3-vlv) would
allow that, but are optional: OpenLDAP ships them as overlays that are often not loaded, and a
directory's entries come back in no defined order without them.  So:

* **Listing**: an index of the users' main addresses, read in pages of :data:`PAGE_SIZE` on one
  connection of its own (a search as the service DN, for ``mail`` only), sorted here, kept per
  domain, and read again when a page asks for it after :data:`REFRESH` seconds, or
  :data:`REFRESH_FACTOR` times as long as the last reading took if that is longer (the old
  index answers meanwhile).  Decoding entries is ldaptor's work on the reactor thread, so the
  reading pauses after each page as long as the page took: other connections never wait for
  more than one page's decoding, and a large directory's reading takes half the reactor's time
  at most, and only once in a while.  Paging through it is stable: a page asks for the
  addresses after the last one shown (not for a position), so a new reading between two
  pages neither repeats nor skips anyone; the counts are exact.  At 200,000 users it holds
  some 20 MB; it stops at :data:`MAX_ENTRIES` entries.
* **Search** (``q``): asked of the directory itself, so it is current: the text escaped
  (RFC 4515 §3), on the main and extra addresses and the name, only the admin's domains, at
  most :data:`MAX_MATCHES` entries and the server's time limit (RFC 4511 §4.5.1.5/6); the
  matches are sorted here and paged in memory.

Nothing here writes to the directory: changes to its people happen in the directory.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorCore
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from zope.interface import implementer

from ourmail.directory.ldap import (
    Connection,
    LDAPSettings,
    SearchPool,
    _addresses,
    _values,
    escape_filter_value,
)
from ourmail.interfaces import (
    DirectoryBusy,
    DirectoryPage,
    DirectoryPerson,
    DirectoryUnavailable,
    IDirectoryUsers,
    Usage,
)

log = Logger()

#: Entries asked for per page of the index's search (RFC 2696; AD's default MaxPageSize is 1000).
PAGE_SIZE = 200
#: Seconds an index is used before a page asks for a fresh one.
REFRESH = 300.0
#: ... or this many times as long as the last reading took, if that is longer.
REFRESH_FACTOR = 20
#: Most users indexed; a larger directory's list stops there (and says so in the log).
MAX_ENTRIES = 1_000_000
#: Most entries a search returns (the console says when there are more).
MAX_MATCHES = 200
#: Merged lists kept per index (each as long as its domains' lists together).
MERGED = 8
#: Most groups shown on a user's page.
MAX_GROUPS = 50
#: The simple paged results control (RFC 2696 §2).
PAGED_RESULTS = b"1.2.840.113556.1.4.319"
#: People with a mail address; groups have one too and are not users.
PEOPLE = (
    "(&(mail=*)(!(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=group))))"
)


def paged_control(size: int, cookie: bytes) -> tuple[bytes, bool, bytes]:
    """The paged results control asking for ``size`` entries after ``cookie`` (RFC 2696 §2:
    ``SEQUENCE { size INTEGER, cookie OCTET STRING }``), not critical: a server without it
    answers in one piece, up to its size limit."""
    from ldaptor.protocols import pureber

    value = pureber.BERSequence([pureber.BERInteger(size), pureber.BEROctetString(cookie)])
    return (PAGED_RESULTS, False, value.toWire())


def paged_cookie(controls: Any) -> bytes:
    """The cookie of the server's paged results control (empty: the last page, or no paging)."""
    from ldaptor.protocols import pureber

    for kind, _critical, value in controls or ():
        if kind == PAGED_RESULTS and value:
            decoded, _ = pureber.berDecodeObject(pureber.BERDecoderContext(), value)
            return bytes(decoded[1].value)
    return b""


@attrs.frozen
class Index:
    """The directory's users at one reading: main addresses, sorted, per domain."""

    by_domain: dict[str, list[str]]
    #: Every address, sorted (a full admin's list, without a merge per page).
    everyone: list[str]
    read_at: float
    #: Seconds the reading took.
    took: float
    #: Whether the reading stopped early (:data:`MAX_ENTRIES`, or the server's size limit).
    truncated: bool
    #: Several domains' lists merged, by domains (for domain admins of several domains).
    merged: dict[tuple[str, ...], list[str]] = attrs.field(factory=dict)

    def chosen(self, domains: Sequence[str]) -> Sequence[str]:
        """The sorted addresses of ``domains`` (several: merged once, then kept)."""
        if self.by_domain.keys() <= set(domains):
            return self.everyone
        key = tuple(sorted(set(domains)))
        if len(key) == 1:
            return self.by_domain.get(key[0], [])
        found = self.merged.get(key)
        if found is None:
            found = list(heapq.merge(*(self.by_domain.get(d, []) for d in key)))
            if len(self.merged) < MERGED:
                self.merged[key] = found
        return found


def _index(found: list[str], read_at: float, took: float, truncated: bool) -> Index:
    """Sort and split by domain (in a worker thread: 200,000 addresses take a while)."""
    everyone = sorted(set(found))
    by_domain: dict[str, list[str]] = {}
    for address in everyone:
        by_domain.setdefault(address.rpartition("@")[2], []).append(address)
    return Index(by_domain, everyone, read_at, took, truncated)


@implementer(IDirectoryUsers)
class LDAPUserList:
    """:class:`IDirectoryUsers` over an LDAP directory (see the module docstring).

    ``served`` says which domains are ours (the index keeps only their addresses); ``usage``
    is what a user stores (blocking: called in a worker thread)."""

    def __init__(
        self,
        settings: LDAPSettings,
        reactor: IReactorCore,
        served: Callable[[str], bool],
        usage: Callable[[str], Usage],
        refresh: float = REFRESH,
        refresh_factor: float = REFRESH_FACTOR,
    ) -> None:
        self.settings, self.reactor = settings, reactor
        self.served, self.usage = served, usage
        self.refresh, self.refresh_factor = refresh, refresh_factor
        self.pool = SearchPool(settings, reactor)
        self._index: Index | None = None
        self._reading: Deferred[Index] | None = None
        self._waiting: list[Deferred[Index]] = []

    # -- the index ---------------------------------------------------------------------------

    def _now(self) -> float:
        return float(self.reactor.seconds())  # type: ignore[attr-defined]

    def current(self) -> Deferred[Index]:
        """The index: the one held while it is fresh; a stale one while a new one is read;
        with none yet, the first reading (given up after the directory's time-out with
        :class:`DirectoryUnavailable`, while the reading goes on for the next page)."""
        index = self._index
        if index is not None:
            if self._now() - index.read_at >= max(self.refresh, self.refresh_factor * index.took):
                self._start()
            return succeed(index)
        self._start()
        waiter: Deferred[Index] = Deferred(lambda d: self._waiting.remove(d))
        self._waiting.append(waiter)

        def slow(failure: Any) -> Any:
            from twisted.internet.defer import TimeoutError

            failure.trap(TimeoutError)
            raise DirectoryBusy("the directory's users are still being read")

        return self.settings.within(waiter, self.reactor).addErrback(slow)

    def _start(self) -> None:
        if self._reading is not None:
            return
        self._reading = self._read()

        def done(result: Any) -> None:
            self._reading = None
            waiting, self._waiting = self._waiting, []
            if isinstance(result, Index):
                self._index = result
                for d in waiting:
                    d.callback(result)
                return
            why = result.getErrorMessage()
            log.warn("LDAP: the directory's users could not be read: {why}", why=why)
            for d in waiting:
                d.errback(DirectoryUnavailable(f"the directory's users cannot be read ({why})"))

        self._reading.addBoth(done)

    @inlineCallbacks
    def _read(self) -> Deferred[Index]:
        """Every user's main address, in pages on one connection (RFC 2696)."""
        started = self._now()
        found: list[str] = []
        truncated = False

        def entry(attributes: Any) -> None:
            nonlocal truncated
            if len(found) >= MAX_ENTRIES:
                truncated = True
                return
            values = [v for k, vs in attributes if _text(k).lower() == "mail" for v in vs]
            mails = _addresses([_text(v) for v in values])
            if mails and self.served(mails[0].rpartition("@")[2]):
                found.append(mails[0])

        client = yield Connection(self.settings, self.reactor).open()
        try:
            cookie = b""
            while True:
                page_started = self._now()
                code, cookie = yield self.settings.within(
                    self._page(client, cookie, entry), self.reactor
                )
                pause = min(1.0, self._now() - page_started)
                yield deferLater(self.reactor, pause)  # type: ignore[arg-type]
                if code in (3, 4):
                    # timeLimitExceeded, sizeLimitExceeded (RFC 4511 §4.1.9): the server's
                    # limits for this DN (OpenLDAP ``limits ... size.prtotal``): the list is
                    # what came so far.
                    truncated = True
                elif code:
                    raise DirectoryUnavailable(f"the LDAP search failed with result {code}")
                if not cookie or truncated:
                    break
        finally:
            client.transport.loseConnection()
        if truncated:
            log.warn("LDAP: the users' list stopped at {n} entries", n=len(found))
        took = self._now() - started
        index = yield deferToThread(_index, found, started, took, truncated)
        return index

    def _page(
        self, client: Any, cookie: bytes, entry: Callable[[Any], None]
    ) -> Deferred[tuple[int, bytes]]:
        """One page of the people search: each entry's attributes to ``entry``; fires with
        the result code and the cookie for the next page.  (ldaptor's own search reports a
        size limit as success, so the result is read here.)"""
        from ldaptor import ldapfilter
        from ldaptor.protocols import pureldap

        done: Deferred[tuple[int, bytes]] = Deferred()
        op = pureldap.LDAPSearchRequest(
            baseObject=self.settings.base,
            scope=pureldap.LDAP_SCOPE_wholeSubtree,
            derefAliases=pureldap.LDAP_DEREF_neverDerefAliases,
            sizeLimit=0,
            timeLimit=max(1, int(self.settings.timeout)),
            typesOnly=0,
            filter=ldapfilter.parseFilter(PEOPLE),
            attributes=["mail"],
        )

        def handler(message: Any, controls: Any) -> bool:
            if isinstance(message, pureldap.LDAPSearchResultEntry):
                entry(message.attributes)
                return False
            if isinstance(message, pureldap.LDAPSearchResultDone):
                done.callback((message.resultCode, paged_cookie(controls)))
                return True
            return False  # a referral: not followed

        def lost(failure: Any) -> None:
            if not done.called:
                done.errback(failure)

        sent = client.send_multiResponse_ex(op, [paged_control(PAGE_SIZE, cookie)], handler)
        sent.addErrback(lost)
        return done

    # -- IDirectoryUsers -------------------------------------------------------------------

    def count(self, domains: Sequence[str]) -> Deferred[int]:
        def total(index: Index) -> int:
            return sum(len(index.by_domain.get(d, ())) for d in dict.fromkeys(domains))

        return self.current().addCallback(total)

    def users(
        self, domains: Sequence[str], text: str, after: str, limit: int
    ) -> Deferred[DirectoryPage]:
        if not domains:
            return succeed(DirectoryPage((), 0, 0, True, self._now()))
        if text:
            return self._search(domains, text, after, limit)

        def page(index: Index) -> Deferred[DirectoryPage]:
            def cut() -> DirectoryPage:
                chosen = index.chosen(domains)
                start = _start(chosen, after)
                shown = tuple(chosen[start : start + limit])
                return DirectoryPage(shown, len(chosen), start, not index.truncated, index.read_at)

            if len(set(domains)) == 1 or index.by_domain.keys() <= set(domains):
                return succeed(cut())  # a slice of a list: no need for a thread
            return deferToThread(cut)

        return self.current().addCallback(page)

    @inlineCallbacks
    def _search(
        self, domains: Sequence[str], text: str, after: str, limit: int
    ) -> Deferred[DirectoryPage]:
        value = escape_filter_value(text)
        alternate = self.settings.alternate_attribute
        scope = "".join(f"(mail=*@{escape_filter_value(d)})" for d in dict.fromkeys(domains))
        search = (
            f"(&{PEOPLE}(|{scope})"
            f"(|(mail=*{value}*)({alternate}=*{value}*)(cn=*{value}*)(displayName=*{value}*)))"
        )
        entries = yield self.pool.search(search, ["mail"], size_limit=MAX_MATCHES + 1)
        wanted = set(domains)
        matches = set()
        for item in entries:
            mails = _addresses(_values(item, "mail"))
            if mails and mails[0].rpartition("@")[2] in wanted:
                matches.add(mails[0])
        ordered = sorted(matches)[:MAX_MATCHES]
        complete = len(entries) <= MAX_MATCHES
        start = _start(ordered, after)
        shown = tuple(ordered[start : start + limit])
        return DirectoryPage(shown, len(ordered), start, complete, self._now())

    @inlineCallbacks
    def person(self, address: str) -> Deferred[DirectoryPerson | None]:
        s = self.settings
        wanted = ["mail", "cn", "displayName", s.alternate_attribute, s.quota_attribute,
                  s.disabled_attribute, "objectClass"]  # fmt: skip
        found = yield self.pool.search(
            f"(&{PEOPLE}(mail={escape_filter_value(address)}))", wanted, size_limit=2
        )
        entries = [e for e in found if _addresses(_values(e, "mail"))[:1] == [address]]
        if len(entries) != 1:
            return None
        entry = entries[0]
        dn = escape_filter_value(entry.dn.getText())
        groups = yield self.pool.search(
            f"(|(member={dn})(uniqueMember={dn}))", ["cn", "mail"], size_limit=MAX_GROUPS
        )
        quota = _values(entry, s.quota_attribute)
        names = _values(entry, "displayName") or _values(entry, "cn")
        used = yield deferToThread(self.usage, address)
        return DirectoryPerson(
            address=address,
            name=names[0] if names else "",
            alternates=tuple(_addresses(_values(entry, s.alternate_attribute))),
            groups=tuple(sorted(_group_name(g) for g in groups)),
            quota=int(quota[0]) if quota and quota[0].isdigit() else None,
            disabled=s.is_disabled(entry),
            used=used,
        )


def _start(ordered: Sequence[str], after: str) -> int:
    """The position of the first address sorting after ``after`` (found by bisection, so
    an address added or removed before it between two page views moves no one across the
    page's edge)."""
    return bisect.bisect_right(ordered, after) if after else 0


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _group_name(group: Any) -> str:
    """A group as the console names it: its address, else its ``cn``."""
    mails = _addresses(_values(group, "mail"))
    if mails:
        return mails[0]
    names = _values(group, "cn")
    return names[0] if names else group.dn.getText()
