"""The directory's users on the admin console's pages
(docs/admin-console.md#users-from-an-ldap-directory): the read-only part of ``/admin/users``
under the local accounts, with its own paging (``?dpage=``), and the count on ``/admin``.
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
    previous: str | None
    next: str | None


def _page_number(request: IRequest) -> int:
    raw = Pages.form(request, "dpage", 10) or "1"
    return int(raw) if raw.isascii() and raw.isdigit() and 0 < int(raw) < 10**7 else 1


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
    """The page of the directory's users of ``domains`` (containing ``text``) asked for by
    ``?dpage=``; None without a directory."""
    users = pages.services.directory_users
    if users is None:
        return None
    number = _page_number(request)
    try:
        found = await users.users(domains, text, (number - 1) * PAGE_SIZE, PAGE_SIZE)
    except DirectoryUnavailable as e:
        log.warn("admin console: the directory's users are not shown: {why}", why=str(e))
        text = unavailable_text(pages, request, isinstance(e, DirectoryBusy))
        return DirectoryListing(None, text, number, 1, None, None)
    count = max(1, math.ceil(found.total / PAGE_SIZE))
    keep = {k: v for k, v in (("domain", domain), ("q", text)) if v}
    local_page = Pages.form(request, "page", 10)
    if local_page:
        keep["page"] = local_page

    def link(n: int) -> str:
        return "/admin/users?" + urlencode({**keep, "dpage": n}) + "#directory-heading"

    return DirectoryListing(
        found,
        "",
        number,
        count,
        link(number - 1) if number > 1 else None,
        link(number + 1) if number < count else None,
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
