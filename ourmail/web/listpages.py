"""The message list (issue 16 points 4 and 6): a folder's messages, sorted and paged, actions
on a selection of them, emptying Trash and Junk, and search.

Routes:

* ``GET /`` and ``GET /mail?folder=F&sort=date|from|subject|size&order=asc|desc&page=N``
  (and the search fields of :mod:`ourmail.web.mailsearch`): the list;
* ``POST /mail/action``: ``action`` (read, unread, flag, unflag, move with ``target``,
  delete, spam, notspam) on the messages ``m`` (each ``<uid>:<folder>``), then a 303 back to
  the list the form came from (``back``);
* ``GET /mail/empty?folder=F``: asks to confirm; ``POST /mail/empty``: empties a Trash or
  Junk folder for good.

Every action works as a plain form; ``static/list.js`` only adds comfort (select all, drag
and drop onto the folder tree, keyboard keys, refreshing on new mail).  A move is answered
only once the store has made the copy durable (:meth:`IFolder.move_to`).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from twisted.web.iweb import IRequest

from ourmail.interfaces import IFolder, IUserStore, NoSuchFolder, StoreError
from ourmail.web.listing import (
    SORTS,
    Orders,
    Page,
    Row,
    human_size,
    long_date,
    page_of,
    row_of,
    rows_of,
    sender_key,
    short_date,
    subject_key,
)
from ourmail.web.mailsearch import BadQuery, Query, TooBroad, parse_query, search
from ourmail.web.pages import Pages
from ourmail.web.sessions import WebSession

#: Longest folder name read from a request (bytes).
MAX_FOLDER = 1000
#: Most messages one action takes.
MAX_SELECTED = 1000
#: Most matches a search of every folder lists.
MAX_EVERYWHERE = 5000
#: The query parameters of a list page that a form's ``back`` may carry.
LIST_PARAMS = ("folder", "sort", "order", "page", "from", "to", "subject", "text", "since",
               "before", "all")  # fmt: skip
ACTIONS = ("read", "unread", "flag", "unflag", "move", "delete", "spam", "notspam")


class FolderMissing(Exception):
    """A request named a folder the user does not have."""


def special_folder(user: IUserStore, use: str) -> str | None:
    """The user's folder of an RFC 6154 special use (``\\Trash``, ``\\Junk``), or None."""
    for name, attribute in user.special_uses().items():
        if attribute.lower() == use.lower():
            return name
    return None


def open_folder(user: IUserStore, name: str) -> IFolder:
    """The folder, synchronised; :class:`FolderMissing` when there is none of that name."""
    try:
        folder = user.folder(name)
        folder.sync()
    except (NoSuchFolder, StoreError) as e:
        raise FolderMissing(name) from e
    return folder


def list_url(folder: str, **params: str | int) -> str:
    """The address of a list page."""
    fields = {"folder": folder, **{k: str(v) for k, v in params.items() if v not in ("", None)}}
    return "/mail?" + urlencode(fields)


class ListPages(Pages):
    """The message list, its actions and search."""

    app = Pages.app

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.orders = Orders()

    @staticmethod
    def arg(request: IRequest, name: str) -> str | None:
        """A query or form parameter as text (undecodable octets replaced), or None."""
        values = (request.args or {}).get(name.encode())
        return values[0].decode("utf-8", "replace") if values else None

    # -- the list -----------------------------------------------------------------------------

    @app.route("/", methods=["GET"])
    async def inbox(self, request: IRequest) -> bytes:
        """The INBOX's list: the webmail's home page."""
        return await self.listing(request, "INBOX")

    @app.route("/mail", methods=["GET"])
    async def mail(self, request: IRequest) -> bytes:
        """A folder's list (``?folder=``, INBOX without it)."""
        name = self.arg(request, "folder")
        return await self.listing(request, "INBOX" if name is None else name[:MAX_FOLDER])

    async def listing(self, request: IRequest, name: str) -> bytes:
        session = self.user(request)
        _ = self.gettext(request)
        user = session.login.avatar
        try:
            folder = open_folder(user, name)
        except FolderMissing:
            return self.no_folder(request, name)
        name = folder.name
        key = self.arg(request, "sort")
        key = key if key in SORTS else SORTS[0]
        wanted = self.arg(request, "order")
        # Newest and largest first unless asked otherwise; names and subjects A to Z.
        descending = wanted != "asc" if key in ("date", "size") else wanted == "desc"
        number = _number(self.arg(request, "page"))
        try:
            query = parse_query(lambda n: self.arg(request, n), _)
        except BadQuery as e:
            return self.error(request, 400, str(e))
        special = user.special_uses().get(name, "")
        recipients = special.lower() in ("\\sent", "\\drafts")
        try:
            if query.active and query.everywhere:
                page, rows = await self.everywhere(user, query, key, descending, number, _)
            else:
                order = self.orders.order(user.address, folder, key, recipients)
                hits = await search(folder, query) if query.active else None
                page = page_of(order, descending, number, hits)
                rows = rows_of(folder, name, page.uids, recipients)
        except BadQuery as e:
            return self.error(request, 400, str(e))
        except TooBroad:
            message = _("Too many messages to search their text: add dates or another field.")
            return self.error(request, 400, message)
        return self.render_list(
            request, session, name, rows, page, key, descending, query, recipients, special
        )

    async def everywhere(
        self,
        user: IUserStore,
        query: Query,
        key: str,
        descending: bool,
        number: int,
        _: Callable[[str], str],
    ) -> tuple[Page, list[Row]]:
        """A search of every folder: its page and rows, ordered by ``key`` across folders."""
        found: list[tuple[Any, int, int, str]] = []
        for rank, name in enumerate(user.list_folders()):
            try:
                folder = open_folder(user, name)
            except FolderMissing:  # deleted since the listing
                continue
            hits = await search(folder, query)
            if len(found) + len(hits) > MAX_EVERYWHERE:
                raise BadQuery(
                    _("Too many messages match in all folders. Please narrow the search.")
                )
            sort_key = _cross_key(folder, key)
            found.extend((sort_key(uid), rank, uid, folder.name) for uid in hits)
        found.sort(reverse=descending)
        total = len(found)
        page = page_of(range(total), False, number)
        rows = []
        for index in page.uids:
            _key, _rank, uid, name = found[index]
            try:
                rows.append(row_of(name, user.folder(name).message(uid)))
            except (KeyError, NoSuchFolder):
                continue
        return Page([], page.number, page.pages, total), rows

    def render_list(
        self,
        request: IRequest,
        session: WebSession,
        name: str,
        rows: list[Row],
        page: Page,
        key: str,
        descending: bool,
        query: Query,
        recipients: bool,
        special: str,
    ) -> bytes:
        lang = self.language(request)
        _ = self.gettext(request)
        user = session.login.avatar
        order = "desc" if descending else "asc"
        search = query.params()
        here: dict[str, str | int] = {"sort": key, "order": order, **search}

        def sort_link(column: str) -> str:
            flip = column == key and not descending
            if column != key:
                flip = column in ("date", "size")
            return list_url(name, **{**search, "sort": column, "order": "desc" if flip else "asc"})

        def page_link(n: int) -> str:
            return list_url(name, **here, page=n)

        now = datetime.datetime.now(datetime.UTC)
        notice = _done_texts(_).get(self.arg(request, "done") or "")
        folders = user.list_folders()
        return self.render_mail(
            request,
            session,
            "list.html",
            current=name,
            folder=name,
            rows=rows,
            page=page,
            sort=key,
            order=order,
            query=query,
            search=search,
            recipients=recipients,
            trash=special.lower() == "\\trash",
            junk=special.lower() == "\\junk",
            targets=[n for n in folders if n != name],
            sort_link=sort_link,
            page_link=page_link,
            clear=list_url(name, sort=key, order=order),
            back=urlencode({"folder": name, **here, "page": page.number}),
            short_date=lambda d: short_date(d, lang, now),
            long_date=lambda d: long_date(d, lang),
            size=lambda s: human_size(s, lang),
            notice=notice,
            message_url=lambda row: "/message?" + urlencode({"folder": row.folder, "uid": row.uid}),
        )

    def no_folder(self, request: IRequest, name: str) -> bytes:
        """404: the user has no folder of that name."""
        _ = self.gettext(request)
        return self.error(
            request, 404, _("There is no folder called “%(name)s”.") % {"name": name[:200]}
        )

    # -- actions ------------------------------------------------------------------------------

    @app.route("/mail/action", methods=["POST"])
    async def act(self, request: IRequest) -> bytes:
        """An action on the selected messages, then back to the list."""
        session = self.checked(request)
        _ = self.gettext(request)
        user = session.login.avatar
        action = self.form(request, "action", 20)
        picked = _selection(self.form_list(request, "m", MAX_FOLDER + 12, MAX_SELECTED))
        if action not in ACTIONS or picked is None:
            return self.error(request, 400, _("This request is not valid."))
        back = _back(self.form(request, "back", 8000))
        if not picked:  # nothing selected: nothing to do
            return self.redirect(request, f"/mail?{back or 'folder=INBOX'}&done=none".encode())
        done = action
        try:
            for name, uids in picked.items():
                folder = open_folder(user, name)
                done = await self.apply(request, user, folder, action, uids) or done
        except FolderMissing as e:
            return self.no_folder(request, str(e.args[0]))
        except StoreError:
            return self.error(
                request, 503, _("Your mail cannot be changed right now. Please try again soon.")
            )
        if back is None:
            first = next(iter(picked), "INBOX")
            back = urlencode({"folder": first})
        return self.redirect(request, f"/mail?{back}&done={done}".encode())

    async def apply(
        self, request: IRequest, user: IUserStore, folder: IFolder, action: str, uids: list[int]
    ) -> str | None:
        """Do ``action`` on ``uids`` of ``folder``; what was done when it differs from the
        action (a delete in Trash erases)."""
        if action in ("read", "unread", "flag", "unflag"):
            flag = "\\Seen" if action in ("read", "unread") else "\\Flagged"
            folder.store_flags(uids, [flag], "-" if action.startswith("un") else "+")
            return None
        if action == "move":
            target = self.form(request, "target", MAX_FOLDER) or ""
            await self.move(user, folder, uids, target)
            return None
        if action == "delete":
            trash = special_folder(user, "\\Trash")
            if trash is None or open_folder(user, trash).name == folder.name:
                return "erase" if self.erase(user, folder, uids) else "held"
            await self.move(user, folder, uids, trash)
            return None
        if action == "spam":
            junk = special_folder(user, "\\Junk")
            if junk is None:
                raise FolderMissing("Junk")
            await self.move(user, folder, uids, junk)
            return None
        await self.move(user, folder, uids, "INBOX")  # notspam
        return None

    def erase(self, user: IUserStore, folder: IFolder, uids: Iterable[int]) -> bool:
        """Expunge ``uids`` for good, except those retention or a legal hold keeps (they
        stay where they are); False if any was kept."""
        retention = self.services.retention
        doomed, kept = [], False
        for uid in uids:
            try:
                message = folder.message(uid)
            except KeyError:
                continue  # gone already
            if retention is None or retention.may_erase(user.address, folder.name, message):
                doomed.append(uid)
            else:
                kept = True
        folder.expunge(doomed)
        return not kept

    async def move(self, user: IUserStore, folder: IFolder, uids: list[int], name: str) -> None:
        """Move ``uids`` to the folder ``name``; fires once the copies are durable (the
        store's moves also tell the spam learning about moves into and out of Junk)."""
        target = open_folder(user, name)
        if target.name != folder.name:
            await folder.move_to(uids, target)

    # -- emptying Trash and Junk ----------------------------------------------------------------

    @app.route("/mail/empty", methods=["GET"])
    def empty_page(self, request: IRequest) -> bytes:
        """Asks whether to empty a Trash or Junk folder."""
        session = self.user(request)
        found = self.emptiable(request, session)
        if isinstance(found, bytes):
            return found
        return self.render_mail(
            request,
            session,
            "empty.html",
            current=found.name,
            folder=found.name,
            count=len(found.uids()),
            cancel=list_url(found.name),
        )

    @app.route("/mail/empty", methods=["POST"])
    def empty(self, request: IRequest) -> bytes:
        """Erases every message of a Trash or Junk folder."""
        session = self.checked(request)
        found = self.emptiable(request, session)
        if isinstance(found, bytes):
            return found
        user = session.login.avatar
        done = "emptied" if self.erase(user, found, list(found.uids())) else "held"
        return self.redirect(request, (list_url(found.name) + f"&done={done}").encode())

    def emptiable(self, request: IRequest, session: WebSession) -> IFolder | bytes:
        """The Trash or Junk folder the request names, or the error page to answer."""
        _ = self.gettext(request)
        user = session.login.avatar
        name = self.form(request, "folder", MAX_FOLDER) or ""
        try:
            folder = open_folder(user, name)
        except FolderMissing:
            return self.no_folder(request, name)
        if user.special_uses().get(folder.name, "").lower() not in ("\\trash", "\\junk"):
            return self.error(request, 400, _("Only the Trash and Junk folders can be emptied."))
        return folder


def _number(value: str | None) -> int:
    """A page number from the query: 1 unless it is a sane positive number."""
    if value is None or not value.isdigit() or len(value) > 7:
        return 1
    return int(value)


def _selection(values: list[str]) -> dict[str, list[int]] | None:
    """``<uid>:<folder>`` values by folder; None when one is not of that form."""
    picked: dict[str, list[int]] = {}
    for value in values:
        uid, sep, name = value.partition(":")
        if not sep or not uid.isdigit() or len(uid) > 10 or not name:
            return None
        picked.setdefault(name, []).append(int(uid))
    return picked


def _back(value: str | None) -> str | None:
    """The list a form came from, as a query string rebuilt from its known parameters only
    (so it can never lead off this site)."""
    if not value:
        return None
    kept = [(k, v) for k, v in parse_qsl(value) if k in LIST_PARAMS]
    return urlencode(kept) if any(k == "folder" for k, _ in kept) else None


def _cross_key(folder: IFolder, key: str) -> Callable[[int], Any]:
    """A sort key for ``folder``'s UIDs that compares across folders."""
    if key in ("date", "size"):

        def indexed(uid: int) -> Any:
            try:
                message = folder.message(uid)
            except KeyError:
                return 0
            return message.internal_date if key == "date" else message.size

        return indexed
    values = folder.header_values(key if key == "subject" else "from")
    normal = subject_key if key == "subject" else sender_key
    return lambda uid: normal(values.get(uid, ""))


def _done_texts(_: Callable[[str], str]) -> dict[str, str]:
    """What the list says after an action (the ``done`` query parameter)."""
    return {
        "none": _("Select one or more messages first."),
        "read": _("Marked as read."),
        "unread": _("Marked as unread."),
        "flag": _("Flagged."),
        "unflag": _("Flag removed."),
        "move": _("Moved."),
        "delete": _("Moved to the Trash."),
        "erase": _("Deleted for good."),
        "spam": _("Reported as spam and moved to Junk."),
        "notspam": _("Marked as not spam and moved to the inbox."),
        "emptied": _("The folder is empty now."),
        "held": _("Some messages are kept by the retention policy and were not deleted."),
    }
