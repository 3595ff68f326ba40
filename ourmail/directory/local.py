"""The directory of local accounts: ``accounts.json`` users and aliases in the local domains.

An alias maps an address to one or more local users and remote addresses (forwarding through
the outbound queue); ``@domain`` is that domain's catch-all, which exists only when an admin adds
it (``ourmail alias add @example.org postmaster@…``).  A local group delivers to every member
once (nested groups expanded, loops stopped); a user who forwards their mail is answered as an
alias of themselves (a copy kept or not) with forwards, so the forwards leave through the
outbound queue with an SRS sender as an alias's do (:mod:`ourmail.directory.expand`).
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from ourmail.auth.accounts import AccountDB
from ourmail.config import QuotaLimit
from ourmail.directory.expand import expand
from ourmail.interfaces import Contact, ExpansionTooLarge, IDirectory, Recipient


@implementer(IDirectory)
class LocalDirectory:
    """Local domains are the configured ones plus those added with ``ourmail domain add``."""

    def __init__(self, accounts: AccountDB, domains: Iterable[str]) -> None:
        self.accounts = accounts
        self.configured_domains = tuple(domains)

    def is_local_domain(self, domain: str) -> bool:
        domain = domain.lower()
        return domain in self.configured_domains or domain in self.accounts.domains()

    def _local_domains(self) -> frozenset[str]:
        """The local domains as one set, for an expansion's many questions."""
        return frozenset([*self.configured_domains, *self.accounts.domains()])

    def lookup(self, address: str) -> Deferred[Recipient]:
        """``address`` must already be normalised (:func:`~ourmail.addresses.normalise_address`)."""
        domain = address.rpartition("@")[2]
        if not self.is_local_domain(domain):
            return succeed(Recipient("remote", address))
        if self.accounts.has_user(address) and self.accounts.forward(address) is None:
            return succeed(Recipient("user", address))
        first = None
        if (
            not self.accounts.has_user(address)
            and self.accounts.group(address) is None
            and self.accounts.alias(address) is None
        ):
            # The domain's catch-all ("@domain"), which exists only if configured.
            first = self.accounts.alias(f"@{domain}")
            if first is None:
                return succeed(Recipient("unknown", address))
        try:
            found = expand(self.accounts, self._local_domains().__contains__, address, first)
        except ExpansionTooLarge:
            return fail()
        if not found.mailboxes and not found.forwards:
            return succeed(Recipient("unknown", address))
        return succeed(
            Recipient(
                "alias", address, found.mailboxes, found.forwards, catch_all=first is not None
            )
        )

    def members(self, group: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """A local group's mailboxes and addresses elsewhere, nested groups and forwards
        expanded (for the mailing lists that take their members from a group).  Raises
        :class:`~ourmail.interfaces.ExpansionTooLarge` for a group too large to expand."""
        found = expand(self.accounts, self._local_domains().__contains__, group)
        return found.mailboxes, found.forwards

    def quota(self, user: str) -> QuotaLimit | None:
        """None: a local account's own limit is in ``accounts.json``, which the quota policy
        reads itself."""
        return None

    def may_send_as(self, user: str, address: str) -> bool:
        """A user may send as themselves, as any alias that delivers to them and as any
        local group they are a direct member of."""
        group = self.accounts.group(address)
        return (
            address == user
            or user in (self.accounts.alias(address) or [])
            or (group is not None and user in group[1])
        )

    def identities(self, user: str) -> list[str]:
        """The user's address, then the aliases that deliver to them (a catch-all, which
        stands for no address of its own, is none)."""
        owned = [a for a, targets in self.accounts.aliases().items() if user in targets]
        groups = [a for a, (_, members) in self.accounts.groups().items() if user in members]
        return [user, *sorted(a for a in [*owned, *groups] if not a.startswith("@"))]

    def search(self, text: str, limit: int) -> Deferred[list[Contact]]:
        """Users and aliases whose address contains ``text`` (ignoring case), in order."""
        needle = text.lower()
        found = [
            Contact(address)
            for address in sorted(
                {*self.accounts.users(), *self.accounts.aliases(), *self.accounts.groups()}
            )
            if needle in address and not address.startswith("@")
        ]
        return succeed(found[:limit])
