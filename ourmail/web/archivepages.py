"""A folder shared with the user (a list's archive), read-only, in threads.

Route: ``GET /archive?folder=Lists/<list>&page=N``: the conversations of the archive, newest
activity first, replies indented under what they answer (``threads.py``), a page of
:data:`THREADS_PER_PAGE` conversations (and at most :data:`ROWS_PER_PAGE` messages) at a
time; the threads are made off the reactor's hands (``threads.py``).  The user's own folder
of the same name, if any, wins (the page sends to it).  No selection, no actions: nothing here
changes the folder, and opening a message does not mark it read (it is not the user's).  A
folder the user may not read is answered as a missing one (404), so private lists are not
disclosed.
"""

from __future__ import annotations

import datetime
import functools
from urllib.parse import urlencode

from twisted.web.iweb import IRequest

from ourmail.interfaces import NoSuchFolder
from ourmail.web.listing import Row, human_size, long_date, row_of, short_date
from ourmail.web.pages import Pages
from ourmail.web.sessions import WebSession
from ourmail.web.sharedfolders import archive_url, open_shared
from ourmail.web.threads import Arrangements

#: Conversations on one page of an archive.
THREADS_PER_PAGE = 30
#: Messages on one page of an archive (a longer conversation goes on over the next page).
ROWS_PER_PAGE = 200
#: Deepest indentation shown (deeper replies line up with it).
MAX_INDENT = 8
#: Longest folder name read from a request.
MAX_FOLDER = 1000


class ArchivePages(Pages):
    """The archive pages (see the module's documentation)."""

    app = Pages.app

    @functools.cached_property
    def arrangements(self) -> Arrangements:
        """The threads of recently shown archives."""
        return Arrangements(THREADS_PER_PAGE, ROWS_PER_PAGE)

    @app.route("/archive", methods=["GET"])
    async def archive(self, request: IRequest) -> bytes:
        session = self.user(request)
        _ = self.gettext(request)
        name = (self.form(request, "folder", MAX_FOLDER) or "")[:MAX_FOLDER]
        if _own(session, name):  # the user's own folder of that name wins
            return self.redirect(request, b"/mail?" + urlencode({"folder": name}).encode())
        folder = open_shared(self.services.shared, session.address, name)
        if folder is None:
            return self.error(request, 404, _("There is no such folder."))
        arrangement = await self.arrangements.of(name, folder, self.services.reactor)
        pages = len(arrangement.starts)
        number = min(max(1, _number(self.form(request, "page", 9))), pages)
        rows: list[tuple[Row, int, bool]] = []
        for p in arrangement.page(number):
            try:
                row = row_of(name, folder.message(p.uid))
            except KeyError:  # expunged meanwhile
                continue
            rows.append((row, min(p.depth, MAX_INDENT), p.depth == 0))
        lang = self.language(request)
        now = datetime.datetime.now(datetime.UTC)
        return self.render_mail(
            request,
            session,
            "archive.html",
            current=name,
            folder=name,
            rows=rows,
            number=number,
            pages=pages,
            page_link=lambda n: archive_url(name, page=n),
            message_url=lambda row: "/message?" + urlencode({"folder": name, "uid": row.uid}),
            short_date=lambda d: short_date(d, lang, now),
            long_date=lambda d: long_date(d, lang),
            size=lambda s: human_size(s, lang),
        )


def _own(session: WebSession, name: str) -> bool:
    """Whether the user has a folder of their own named ``name``."""
    try:
        session.login.avatar.folder(name)
    except NoSuchFolder:
        return False
    return True


def _number(value: str | None) -> int:
    return int(value) if value and value.isascii() and value.isdigit() else 1
