"""The directory's users on the admin console's pages
(docs/admin-console.md#users-from-an-ldap-directory): the read-only part of ``/admin/users``
under the local accounts, with its own paging (``?after=`` the last address shown), and the
count on ``/admin``.
Both ask :class:`~ourmail.interfaces.IDirectoryUsers` and turn a directory that cannot be
reached into a message on the page, never an error page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from urllib.parse import urlencode

import attrs
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from ourmail.interfaces import DirectoryBusy, DirectoryPage, DirectoryUnavailable
from ourmail.web.pages import Pages

log = Logger()

#: Directory users shown per page.
PAGE_SIZE = 50


@attrs.frozen
class DirectoryListing:
    """What the users page shows of the directory: a page of it, or why there is none."""

    #: The page (None: the directory could not be asked; ``error`` says so).
    found: DirectoryPage | None
    error: str
    number: int
    pages: int
    #: The link to the first page (None: this is the first page).
    first: str | None
    #: The link to the page after this one (None: this is the last).
    next: str | None


#: The longest ``?after=`` taken: an address has at most 254 characters (RFC 5321 §4.5.3.1.3),
#: some UTF-8 ones up to 4 bytes each (RFC 6531).
MAX_AFTER = 1024


def _after(request: IRequest) -> str:
    """The ``?after=`` address, "" when absent or unusable (then the first page)."""
    raw = Pages.form(request, "after", MAX_AFTER) or ""
    return raw if raw.isprintable() else ""


def unavailable_text(pages: Pages, request: IRequest, busy: bool = False) -> str:
    """The message a page shows when the directory cannot be asked (``busy``: its users
    are still being read)."""
    _ = pages.gettext(request)
    if busy:
        return _("The directory's users are still being read: reload the page in a minute.")
    return _("The directory cannot be reached just now: try again in a minute.")


async def directory_listing(
    pages: Pages, request: IRequest, domains: Sequence[str], domain: str, text: str
) -> DirectoryListing | None:
    """The page of the directory's users of ``domains`` (containing ``text``) after the
    address ``?after=`` names; None without a directory."""
    users = pages.services.directory_users
    if users is None:
        return None
    after = _after(request)
    try:
        found = await users.users(domains, text, after, PAGE_SIZE)
    except DirectoryUnavailable as e:
        log.warn("admin console: the directory's users are not shown: {why}", why=str(e))
        text = unavailable_text(pages, request, isinstance(e, DirectoryBusy))
        return DirectoryListing(None, text, 1, 1, None, None)
    count = max(1, math.ceil(found.total / PAGE_SIZE))
    keep = {k: v for k, v in (("domain", domain), ("q", text)) if v}
    local_page = Pages.form(request, "page", 10)
    if local_page:
        keep["page"] = local_page

    def link(**more: str) -> str:
        return "/admin/users?" + urlencode({**keep, **more}) + "#directory-heading"

    more = bool(found.addresses) and found.offset + len(found.addresses) < found.total
    return DirectoryListing(
        found,
        "",
        min(count, found.offset // PAGE_SIZE + 1),
        count,
        link() if found.offset > 0 else None,
        link(after=found.addresses[-1]) if more else None,
    )


async def directory_count(pages: Pages, domains: Sequence[str]) -> int | None:
    """How many directory users ``domains`` hold; None without a directory, -1 when it
    cannot be asked."""
    users = pages.services.directory_users
    if users is None:
        return None
    try:
        return await users.count(domains)
    except DirectoryUnavailable as e:
        log.warn("admin console: the directory's users are not counted: {why}", why=str(e))
        return -1
