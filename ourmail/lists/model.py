"""What a mailing list is: its settings, its members, and the addresses it answers at.

A list ``team@example.org`` answers at (RFC 2369 §3 names the roles these serve):

==================================  =======================================================
``team@``                           posts
``team-request@``                   commands by mail (``subscribe``, ``unsubscribe``, ``help``)
``team-join@`` / ``team-leave@``    subscribe / unsubscribe (any message will do)
``team-owner@``                     the owners and moderators
``team-bounces@``                   bounces; ``team-bounces+member=domain@`` (VERP) say whose
``team-confirm+TOKEN@``             replies to confirmation requests and moderation notices
==================================  =======================================================
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import attrs

#: The list's command addresses: the suffix after the list's local part, and the role.
SUFFIXES: dict[str, str] = {
    "-request": "request",
    "-join": "join",
    "-leave": "leave",
    "-owner": "owner",
    "-bounces": "bounces",
    "-confirm": "confirm",
}
#: Roles whose address takes a ``+detail`` (VERP for bounces, a token for confirmations).
DETAILED = frozenset({"bounces", "confirm"})


class PostPolicy(enum.Enum):
    """Who may post without moderation."""

    MEMBERS = "members"
    ANYONE = "anyone"
    #: The addresses in :attr:`ListSettings.posters` (and the moderators).
    ADDRESSES = "addresses"
    MODERATORS = "moderators"


class ReplyTo(enum.Enum):
    """Where replies to a post go (the ``Reply-To:`` field the list sets)."""

    #: As the poster set it (no Reply-To: added).
    POSTER = "poster"
    #: To the list.
    LIST = "list"


class Archive(enum.Enum):
    """Who may read the list's archive folder."""

    #: Members (and owners and moderators).
    PRIVATE = "private"
    #: Every user of this server.
    PUBLIC = "public"


@attrs.frozen
class ListSettings:
    """One list's settings (changed with ``ourmail list set`` or the console)."""

    #: The list's address, normalised (lower-case ASCII domain).
    address: str
    #: A short name, shown in ``From: Name via List`` and the archive ("" : the local part).
    name: str = ""
    description: str = ""
    owners: tuple[str, ...] = ()
    moderators: tuple[str, ...] = ()
    post_policy: PostPolicy = PostPolicy.MEMBERS
    #: For :attr:`PostPolicy.ADDRESSES`: who may post.
    posters: tuple[str, ...] = ()
    #: Only moderators post, without moderation; posts of others are refused, not held.
    announce_only: bool = False
    reply_to: ReplyTo = ReplyTo.POSTER
    #: Put before each post's subject (``[team]``), once; "" for none.
    subject_prefix: str = ""
    #: Text added at the end of each post (plain text; "" for none).
    footer: str = ""
    #: Posts larger than this (octets) are held for moderation.
    max_size: int = 2 * 1024 * 1024
    #: Members may choose a daily digest instead of each post.
    digest: bool = False
    archive: Archive = Archive.PRIVATE
    #: A local or LDAP group whose members are members of the list too, kept in step (looked
    #: up at each post); "" for none.
    group: str = ""
    #: The bounce score at which a member's delivery is disabled (each failed DSN adds 1, on
    #: at most one a day; after 7 days without bounces, each day halves it).
    bounce_limit: float = 5.0
    #: The language of the messages the list sends (``en`` or ``el``).
    language: str = "en"
    #: Subscribers need an owner's approval after confirming.
    approve_subscriptions: bool = False
    #: The list has a public web page (``/lists/LIST``) where anyone may ask to subscribe;
    #: off, that page answers 404 as for no list (joining by mail still works).
    advertised: bool = True

    @property
    def local(self) -> str:
        return self.address.rpartition("@")[0]

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    @property
    def display_name(self) -> str:
        return self.name or self.local

    def role_address(self, role: str, detail: str = "") -> str:
        """The list's address for ``role`` (a value of :data:`SUFFIXES`), with ``+detail``."""
        if role == "post":
            return self.address
        suffix = next(s for s, r in SUFFIXES.items() if r == role)
        plus = f"+{detail}" if detail else ""
        return f"{self.local}{suffix}{plus}@{self.domain}"

    def is_moderator(self, address: str) -> bool:
        return address.lower() in {a.lower() for a in (*self.owners, *self.moderators)}


class Delivery(enum.Enum):
    """How a member gets the list's posts."""

    EACH = "each"
    DIGEST = "digest"
    #: Disabled (by bounces or by choice): a member still, gets nothing.
    NONE = "none"


@attrs.frozen
class Member:
    """One subscription (a group's members are members too, but not stored)."""

    address: str
    name: str = ""
    delivery: Delivery = Delivery.EACH
    #: Why delivery is NONE: ``"bounces"``, ``"member"``, ``"owner"``; "" otherwise.
    disabled_by: str = ""
    bounce_score: float = 0.0
    #: When the last counted bounce came (seconds since the epoch; 0: never).
    last_bounce: float = 0.0
    subscribed: float = 0.0


@attrs.frozen
class ListAddress:
    """An address of a list, taken apart: which list, which role, which detail."""

    list: str
    role: str
    detail: str = ""


def parse_address(address: str, lists: Iterable[str]) -> ListAddress | None:
    """Which list and role ``address`` (normalised) is, among the list addresses ``lists``
    (a set for speed); None when it is none of theirs."""
    known = lists if isinstance(lists, (set, frozenset)) else set(lists)
    if address in known:
        return ListAddress(address, "post")
    local, at, domain = address.rpartition("@")
    if not at:
        return None
    base, plus, detail = local.partition("+")
    for suffix, role in SUFFIXES.items():
        if base.endswith(suffix) and len(base) > len(suffix):
            candidate = f"{base[: -len(suffix)]}@{domain}"
            if candidate in known and (not plus or role in DETAILED):
                return ListAddress(candidate, role, detail)
    return None


def verp_member(detail: str) -> str | None:
    """The member address a VERP detail (``member=domain``, as the queue writes it) stands
    for; None when it is not one."""
    local, eq, domain = detail.rpartition("=")
    if not eq or not local or not domain or "@" in detail:
        return None
    return f"{local}@{domain}"
