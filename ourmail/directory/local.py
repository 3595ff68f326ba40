"""The directory of local accounts: ``accounts.json`` users and aliases in the local domains.

An alias maps an address to one or more local users and remote addresses (forwarding through
the outbound queue); ``@domain`` is that domain's catch-all, which exists only when an admin adds
it (``ourmail alias add @example.org postmaster@…``).
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from ourmail.auth.accounts import AccountDB
from ourmail.config import QuotaLimit
from ourmail.interfaces import Contact, IDirectory, Recipient


@implementer(IDirectory)
class LocalDirectory:
    """Local domains are the configured ones plus those added with ``ourmail domain add``."""

    def __init__(self, accounts: AccountDB, domains: Iterable[str]) -> None:
        self.accounts = accounts
        self.configured_domains = tuple(domains)

    def is_local_domain(self, domain: str) -> bool:
        domain = domain.lower()
        return domain in self.configured_domains or domain in self.accounts.domains()

    def lookup(self, address: str) -> Deferred[Recipient]:
        """``address`` must already be normalised (:func:`~ourmail.addresses.normalise_address`)."""
        domain = address.rpartition("@")[2]
        if not self.is_local_domain(domain):
            return succeed(Recipient("remote", address))
        if self.accounts.has_user(address):
            return succeed(Recipient("user", address))
        # An alias, else the domain's catch-all ("@domain"), which exists only if configured.
        targets = self.accounts.alias(address) or self.accounts.alias(f"@{domain}")
        if targets:
            local = tuple(t for t in targets if self.is_local_domain(t.rpartition("@")[2]))
            remote = tuple(t for t in targets if t not in local)
            return succeed(Recipient("alias", address, local, remote))
        return succeed(Recipient("unknown", address))

    def quota(self, user: str) -> QuotaLimit | None:
        """None: a local account's own limit is in ``accounts.json``, which the quota policy
        reads itself."""
        return None

    def may_send_as(self, user: str, address: str) -> bool:
        """A user may send as themselves and as any alias that delivers to them."""
        return address == user or user in (self.accounts.alias(address) or [])

    def identities(self, user: str) -> list[str]:
        """The user's address, then the aliases that deliver to them (a catch-all, which
        stands for no address of its own, is none)."""
        owned = [a for a, targets in self.accounts.aliases().items() if user in targets]
        return [user, *sorted(a for a in owned if not a.startswith("@"))]

    def search(self, text: str, limit: int) -> Deferred[list[Contact]]:
        """Users and aliases whose address contains ``text`` (ignoring case), in order."""
        needle = text.lower()
        found = [
            Contact(address)
            for address in sorted({*self.accounts.users(), *self.accounts.aliases()})
            if needle in address and not address.startswith("@")
        ]
        return succeed(found[:limit])
