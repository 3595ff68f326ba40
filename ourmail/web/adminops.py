"""The admin console's operations pages (issue 17 point 4, docs/admin-console.md): the outbound
queue, the filter log and shard placement.

Routes:

* ``GET /admin/queue?q=&page=``: queued messages, 50 a page, oldest first, kept to those whose
  sender or a pending recipient contains ``q``; ``GET /admin/queue/message?id=``: one message's
  envelope and header section (never its body); ``POST /admin/queue/change``: ``action``
  (``retry``, ``hold``, ``release``, ``delete``) for one or more ``id`` fields; a deletion is
  first shown for confirmation and made only with ``confirm=yes``.  Full admins only: the
  queue holds every domain's mail.
* ``GET /admin/filters?action=&check=&address=&page=``: the filter log, newest first; a domain
  admin sees only the entries of recipients in their domains.
* ``GET /admin/shards?bytes=1``: the shard roots, their shards and users (and, when asked for,
  the bytes: that walks every mailbox).  Full admins only.

Every route starts with :meth:`AdminPages.admin` (403, audit-logged, for anyone else); queue
changes go through :class:`~ourmail.interfaces.IQueueAdmin` (the code of ``ourmail queue``, in
worker threads, audit-logged) and redirect (303) to the queue with what was done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from twisted.web.iweb import IRequest

from ourmail.interfaces import (
    AccountRefused,
    IFilterLogReader,
    IQueueAdmin,
    IShardReport,
    QueueRefused,
)
from ourmail.web.adminpages import (
    MAX_ADDRESS,
    PAGE_SIZE,
    AdminAccess,
    AdminPages,
    NotAdmin,
    no_control,
)
from ourmail.web.pages import Pages

#: Longest queue id accepted (ours are 19 hexadecimal digits).
MAX_ID = 64
#: The queue changes, and the filter log's verdicts.
CHANGES = ("retry", "hold", "release", "delete")
VERDICTS = ("reject", "tempfail", "junk")
#: Longest check name read from the filter log's form.
MAX_CHECK = 100
#: Highest page number asked for (a page of the filter log is read with an SQL OFFSET).
MAX_PAGE = 100_000


class BadInput(Exception):
    """A malformed field of an operations page: 400 with the reason, nothing changed."""


def utc(seconds: float) -> str:
    """A POSIX time as the console shows it."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


class AdminOpsPages(AdminPages):
    """The operations pages (see the module docstring)."""

    app = Pages.app

    @app.handle_errors(BadInput)
    def bad_input(self, request: IRequest, failure: Any) -> bytes:
        return self.error(request, 400, str(failure.value))

    # -- helpers ---------------------------------------------------------------------------

    def full_admin(self, request: IRequest, action: str) -> AdminAccess:
        """A full admin; a domain admin (or anyone else) gets :class:`NotAdmin` (403, logged)."""
        access = self.admin(request, action)
        if not access.full:
            raise NotAdmin(action)
        return access

    def queue(self, request: IRequest) -> IQueueAdmin:
        """The queue, or :class:`BadInput` in a process that has none."""
        queue = self.services.queue_admin
        if queue is None:
            _ = self.gettext(request)
            raise BadInput(_("The queue is not available here."))
        return queue

    def ids(self, request: IRequest) -> list[str]:
        """The ``id`` fields of a form: each a queue id (ASCII letters and digits, at most
        64), at most a page of them, at least one; otherwise :class:`BadInput`."""
        _ = self.gettext(request)
        raw = (request.args or {}).get(b"id") or []
        if not raw:
            raise BadInput(_("Choose at least one message."))
        if len(raw) > PAGE_SIZE:
            raise BadInput(_("At most %(n)s messages at a time.") % {"n": PAGE_SIZE})
        ids = []
        for value in raw:
            if not 0 < len(value) <= MAX_ID or not (value.isascii() and value.isalnum()):
                raise BadInput(_("This is not a message id of the queue."))
            ids.append(value.decode("ascii"))
        return list(dict.fromkeys(ids))

    def text_field(self, request: IRequest, name: str, limit: int) -> str:
        """A search field (stripped; empty when absent); too long or with control
        characters: :class:`BadInput`."""
        raw = (request.args or {}).get(name.encode())
        if not raw:
            return ""
        text = self.form(request, name, limit)
        if text is None or not no_control(text):
            _ = self.gettext(request)
            raise BadInput(_("This search text is too long or has control characters."))
        return text.strip()

    # -- the queue -------------------------------------------------------------------------

    @app.route("/admin/queue", methods=["GET"])
    async def admin_queue(self, request: IRequest) -> bytes:
        access = self.full_admin(request, "queue.view")
        _ = self.gettext(request)
        text = self.text_field(request, "q", MAX_ADDRESS)
        page = min(self.page_number(request), MAX_PAGE)
        found = await self.queue(request).page(text, (page - 1) * PAGE_SIZE, PAGE_SIZE)
        pages = max(1, -(-found.total // PAGE_SIZE))
        now = time.time()

        def link(number: int) -> str:
            return "/admin/queue?" + urlencode({**({"q": text} if text else {}), "page": number})

        changed = self.form(request, "changed", 10)
        return self.render_admin(
            request,
            access,
            "admin_queue.html",
            q=text,
            found=found,
            rows=[
                (m, utc(m.created), _age(now - m.created, _), utc(m.next_attempt))
                for m in found.messages
            ],
            page=page,
            pages=pages,
            previous=link(page - 1) if page > 1 else None,
            next=link(page + 1) if page < pages else None,
            changed=changed if changed in CHANGES else None,
            changed_n=_count(self.form(request, "n", 6)),
            missing_n=_count(self.form(request, "missing", 6)),
        )

    @app.route("/admin/queue/message", methods=["GET"])
    async def admin_queue_message(self, request: IRequest) -> bytes:
        access = self.full_admin(request, "queue.show")
        (qid,) = self.ids(request)[:1]
        try:
            detail = await self.queue(request).message(qid)
        except QueueRefused:
            _ = self.gettext(request)
            return self.error(request, 404, _("This message is no longer in the queue."))
        return self.render_admin(
            request,
            access,
            "admin_queue_message.html",
            detail=detail,
            m=detail.message,
            arrived=utc(detail.message.created),
            next_attempt=utc(detail.message.next_attempt),
        )

    @app.route("/admin/queue/change", methods=["POST"])
    async def admin_queue_change(self, request: IRequest) -> bytes:
        access = self.full_admin(request, "queue.change")
        self.checked(request)
        _ = self.gettext(request)
        action = self.form(request, "action", 10)
        if action not in CHANGES:
            raise BadInput(_("Choose retry, hold, release or delete."))
        ids = self.ids(request)
        if action == "delete" and self.form(request, "confirm", 5) != "yes":
            return self.render_admin(request, access, "admin_queue_confirm.html", ids=ids)
        actor = self.actor(request, access)
        done = missing = 0
        for qid in ids:
            try:
                await self.queue(request).change(actor, action, qid)
                done += 1
            except QueueRefused as e:
                if e.code == "audit":
                    text = self.refusal_text(request, AccountRefused("audit", str(e)))
                    return self.error(request, 503, text)
                missing += 1
        query = urlencode({"changed": action, "n": done, "missing": missing})
        return self.redirect(request, b"/admin/queue?" + query.encode("ascii"))

    # -- the filter log --------------------------------------------------------------------

    @app.route("/admin/filters", methods=["GET"])
    async def admin_filters(self, request: IRequest) -> bytes:
        access = self.admin(request, "filters.view")
        _ = self.gettext(request)
        verdict = self.text_field(request, "action", 10)
        if verdict and verdict not in VERDICTS:
            raise BadInput(_("Choose a verdict from the list."))
        check = self.text_field(request, "check", MAX_CHECK)
        address = self.text_field(request, "address", MAX_ADDRESS)
        page = min(self.page_number(request), MAX_PAGE)
        reader: IFilterLogReader | None = self.services.filter_log
        found = None
        if reader is not None:
            found = await reader.page(
                access.domains, verdict, check, address, (page - 1) * PAGE_SIZE, PAGE_SIZE
            )

        def link(number: int) -> str:
            fields = {"action": verdict, "check": check, "address": address}
            return "/admin/filters?" + urlencode(
                {**{k: v for k, v in fields.items() if v}, "page": number}
            )

        names = {
            "reject": _("refused"),
            "tempfail": _("deferred"),
            "junk": _("Junk"),
        }
        return self.render_admin(
            request,
            access,
            "admin_filters.html",
            verdict=verdict,
            check=check,
            filter_address=address,
            verdicts=[(v, names[v]) for v in VERDICTS],
            rows=[(e, utc(e.at), names.get(e.action, e.action)) for e in found.events]
            if found
            else [],
            page=page,
            previous=link(page - 1) if page > 1 else None,
            next=link(page + 1) if found and found.more else None,
            stopped=bool(found and found.stopped),
        )

    # -- shard placement -------------------------------------------------------------------

    @app.route("/admin/shards", methods=["GET"])
    async def admin_shards(self, request: IRequest) -> bytes:
        access = self.full_admin(request, "shards.view")
        shards: IShardReport | None = self.services.shards
        count_bytes = self.form(request, "bytes", 2) == "1"
        roots = await shards.roots(count_bytes) if shards is not None else []
        return self.render_admin(
            request,
            access,
            "admin_shards.html",
            roots=[(r, None if r.bytes is None else _mib(r.bytes)) for r in roots],
            counted=count_bytes,
        )


def _age(seconds: float, _: Callable[[str], str]) -> str:
    """How long ago, roughly, in the page's language."""
    minutes = max(0, int(seconds // 60))
    if minutes < 120:
        return _("%(n)s min") % {"n": minutes}
    if minutes < 48 * 60:
        return _("%(n)s h") % {"n": minutes // 60}
    return _("%(n)s d") % {"n": minutes // (24 * 60)}


def _count(text: str | None) -> int:
    return int(text) if text and text.isascii() and text.isdigit() else 0


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f}"
