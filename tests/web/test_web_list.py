"""The message list over HTTPS against a running server (issue 16 points 4 and 6): sorting,
paging, every action on a selection (and what IMAP sees afterwards), emptying Trash and Junk,
search by each field and by dates, and the bad requests: forged CSRF, odd folder names, a
UID that is gone, a folder that does not exist, an overlong search."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from conftest import RunningServer, running_server
from imaphelp import Session, deliver
from learnerhelp import MemoryLearner
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread
from webhelp import Browser, Response
from zope.interface import implementer

from ourmail.interfaces import IFolder, IRetention, IStoredMessage, IUserStore
from ourmail.web import mailsearch

DAY = 86400


def message(
    subject: str,
    sender: str = "Bob <bob@else.test>",
    to: str = "alice@example.test",
    body: str = "Hello.",
    extra: str = "",
) -> bytes:
    head = f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n{extra}"
    return f"{head}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n".encode()


def user_store(srv: RunningServer) -> IUserStore:
    return blockingCallFromThread(reactor, srv.server.store.user, srv.user)


def append(srv: RunningServer, folder: str, data: bytes, when: float | None = None) -> int:
    """Store a message straight into a folder (as an IMAP APPEND would); its UID."""

    def run() -> object:
        return srv.server.store.user(srv.user).folder(folder).append(data, (), when)

    uid: int = blockingCallFromThread(reactor, run)
    return uid


def on_reactor(srv: RunningServer, folder: str, call: str, *args: object) -> object:
    def run() -> object:
        f: IFolder = srv.server.store.user(srv.user).folder(folder)
        f.sync()
        return getattr(f, call)(*args)

    return blockingCallFromThread(reactor, run)


def subjects(page: Response) -> list[str]:
    """The subjects of the list's rows, in order."""
    return [
        html.unescape(s)
        for s in re.findall(r'<td class="subject"><a href="[^"]*">([^<]*)</a>', page.text)
    ]


def selected(page: Response, subject: str) -> str:
    """The checkbox value of the row with ``subject``."""
    row = re.search(
        r'name="m" value="([^"]+)"(?:(?!</tr>).)*?<td class="subject"><a href="[^"]*">'
        + re.escape(html.escape(subject)),
        page.text,
        re.S,
    )
    assert row, subject
    return html.unescape(row.group(1))


@pytest.fixture
def learner() -> MemoryLearner:
    return MemoryLearner()


@pytest.fixture
def server(tmp_path: Path, learner: MemoryLearner) -> Iterator[RunningServer]:
    with running_server(tmp_path, learner=learner) as srv:
        yield srv


@pytest.fixture
def browser(server: RunningServer) -> Browser:
    b = Browser(server)
    assert b.login(server.user, server.password).status == 303
    return b


def act(b: Browser, page: Response, action: str, picked: list[str], **more: str) -> Response:
    back = re.search(r'name="back" value="([^"]*)"', page.text)
    assert back
    body = [("csrf", page.csrf()), ("action", action), ("back", html.unescape(back.group(1)))]
    body += [("m", v) for v in picked] + list(more.items())
    return b.request(
        "POST",
        "/mail/action",
        urlencode(body).encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )


def test_home_is_the_inbox_list_with_marks(server: RunningServer, browser: Browser) -> None:
    deliver(server, 2)
    attached = (
        b"From: Carol <carol@else.test>\r\nSubject: With a file\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n'
        b"See the file.\r\n--b\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="a.pdf"\r\n\r\nPDF\r\n--b--\r\n'
    )
    uid = append(server, "INBOX", attached)
    on_reactor(server, "INBOX", "store_flags", [uid], ["\\Flagged", "\\Seen"], "+")
    page = browser.get("/")
    assert page.status == 200
    assert 'aria-current="page"' in page.text and 'data-folder="INBOX"' in page.text
    assert len(subjects(page)) == 3
    row = re.search(rf'<tr[^>]*data-uid="{uid}".*?</tr>', page.text, re.S)
    assert row
    assert "flagged" in row.group(0) and "unread" not in row.group(0).split(">")[0]
    row_text = row.group(0)
    assert "attach-mark" in row_text and "flag-mark" in row_text
    assert page.text.count('class="row unread"') == 2  # the two SMTP deliveries
    assert "Carol" in page.text
    assert browser.get("/mail?folder=INBOX").text.count('<tr class="row') == 3


def test_sort_by_each_column_both_ways(server: RunningServer, browser: Browser) -> None:
    now = time.time()
    append(
        server,
        "INBOX",
        message("Re: banana", "Zed <zed@else.test>", body="x" * 5000),
        now - 3 * DAY,
    )
    append(server, "INBOX", message("apple", "Anna <anna@else.test>", body="x" * 10), now - DAY)
    append(server, "INBOX", message("Cherry", "mike@else.test", body="x" * 900), now - 2 * DAY)
    get = lambda q: subjects(browser.get("/mail?" + urlencode({"folder": "INBOX", **q})))  # noqa: E731
    assert get({}) == ["apple", "Cherry", "Re: banana"]  # newest first
    assert get({"sort": "date", "order": "asc"}) == ["Re: banana", "Cherry", "apple"]
    assert get({"sort": "subject"}) == ["apple", "Re: banana", "Cherry"]  # Re: left out
    assert get({"sort": "subject", "order": "desc"}) == ["Cherry", "Re: banana", "apple"]
    assert get({"sort": "from"}) == ["apple", "Cherry", "Re: banana"]  # anna, mike, zed
    assert get({"sort": "size"}) == ["Re: banana", "Cherry", "apple"]  # largest first
    assert get({"sort": "size", "order": "asc"}) == ["apple", "Cherry", "Re: banana"]
    # Nonsense sort and order fall back to the defaults.
    assert get({"sort": "evil", "order": "sideways"}) == ["apple", "Cherry", "Re: banana"]
    # A message arriving changes the order kept in memory.
    append(server, "INBOX", message("Aardvark"), now)
    assert get({"sort": "subject"})[0] == "Aardvark"


def test_paging(server: RunningServer, browser: Browser) -> None:
    now = time.time()
    for n in range(120):
        append(server, "INBOX", message(f"m{n:03}"), now - (120 - n) * 60)
    first = browser.get("/mail?folder=INBOX")
    assert subjects(first) == [f"m{n:03}" for n in range(119, 69, -1)]
    assert "Page 1 of 3" in first.text
    third = browser.get("/mail?folder=INBOX&page=3")
    assert subjects(third) == [f"m{n:03}" for n in range(19, -1, -1)]
    ascending = browser.get("/mail?folder=INBOX&order=asc&page=2")
    assert subjects(ascending) == [f"m{n:03}" for n in range(50, 100)]
    beyond = browser.get("/mail?folder=INBOX&page=99")  # clamped to the last page
    assert "Page 3 of 3" in beyond.text
    assert "Page 1 of 3" in browser.get("/mail?folder=INBOX&page=-4").text
    # Search results are paged the same way, and the page links keep the search.
    found = browser.get("/mail?folder=INBOX&subject=m0&page=2")
    assert "Messages found: 100" in found.text and "Page 2 of 2" in found.text
    assert subjects(found) == [f"m{n:03}" for n in range(49, -1, -1)]
    assert "subject=m0" in found.text.split('rel="prev"')[0].rsplit("<a", 1)[1]


def test_mark_read_unread_flag_unflag_seen_over_imap(
    server: RunningServer, browser: Browser
) -> None:
    uid = append(server, "INBOX", message("flags"))
    page = browser.get("/")
    pick = [selected(page, "flags")]
    assert pick == [f"{uid}:INBOX"]
    imap = Session(server)

    def imap_flags() -> str:
        imap.ok("SELECT INBOX")
        lines = imap.ok(f"UID FETCH {uid} FLAGS")
        return b" ".join(lines).decode()

    done = act(browser, page, "read", pick)
    assert done.status == 303 and done.headers["location"].startswith("/mail?folder=INBOX")
    assert "\\Seen" in imap_flags()
    assert "Marked as read." in browser.get(done.headers["location"]).text
    act(browser, page, "flag", pick)
    assert "\\Flagged" in imap_flags()
    act(browser, page, "unread", pick)
    act(browser, page, "unflag", pick)
    flags = imap_flags()
    assert "\\Seen" not in flags and "\\Flagged" not in flags


def test_move_delete_spam_not_spam_and_empty(
    server: RunningServer, browser: Browser, learner: MemoryLearner
) -> None:
    for subject in ("one", "two", "three", "four"):
        append(server, "INBOX", message(subject))
    page = browser.get("/")
    moved = act(browser, page, "move", [selected(page, "one")], target="Archive")
    assert moved.status == 303
    assert subjects(browser.get("/mail?folder=Archive")) == ["one"]
    act(browser, page, "delete", [selected(page, "two")])
    trash = browser.get("/mail?folder=Trash")
    assert subjects(trash) == ["two"] and "Delete for good" in trash.text
    act(browser, page, "spam", [selected(page, "three")])
    junk = browser.get("/mail?folder=Junk")
    assert subjects(junk) == ["three"] and "Not spam" in junk.text
    imap = Session(server)
    assert b"* 1 EXISTS" in b"".join(imap.ok("SELECT Junk"))
    assert b"* 1 EXISTS" in b"".join(imap.ok("SELECT Trash"))
    assert subjects(browser.get("/")) == ["four"]
    # The spam learning was told of the move into Junk (and of nothing else).
    until = time.monotonic() + 10
    while not learner.taught and time.monotonic() < until:
        time.sleep(0.05)
    assert [(user, spam) for user, _, spam in learner.taught] == [(server.user, True)]
    assert b"Subject: three" in learner.taught[0][1]
    # Not spam: back to the INBOX.
    back = act(browser, junk, "notspam", [selected(junk, "three")])
    assert back.status == 303 and "folder=Junk" in back.headers["location"]
    assert sorted(subjects(browser.get("/"))) == ["four", "three"]
    # Deleting in Trash erases for good.
    gone = act(browser, trash, "delete", [selected(trash, "two")])
    assert "done=erase" in gone.headers["location"]
    assert subjects(browser.get("/mail?folder=Trash")) == []
    assert b"* 0 EXISTS" in b"".join(imap.ok("SELECT Trash"))
    # Emptying Junk: a confirmation first, then everything goes.
    page = browser.get("/")
    act(browser, page, "spam", [selected(page, "three"), selected(page, "four")])
    junk = browser.get("/mail?folder=Junk")
    assert "/mail/empty?folder=Junk" in junk.text
    confirm = browser.get("/mail/empty?folder=Junk")
    assert "Delete all 2 messages in Junk for good?" in confirm.text
    emptied = browser.post("/mail/empty", {"csrf": confirm.csrf(), "folder": "Junk"})
    assert emptied.status == 303
    assert "The folder is empty now." in browser.get(emptied.headers["location"]).text
    assert b"* 0 EXISTS" in b"".join(imap.ok("SELECT Junk"))
    # Only Trash and Junk can be emptied.
    refused = browser.post("/mail/empty", {"csrf": confirm.csrf(), "folder": "INBOX"})
    assert refused.status == 400
    assert on_reactor(server, "INBOX", "uids") == []


def test_forged_csrf_is_refused(server: RunningServer, browser: Browser) -> None:
    append(server, "INBOX", message("keep me"))
    page = browser.get("/")
    pick = selected(page, "keep me")
    for token in ("", "x" * 43):
        forged = browser.post(
            "/mail/action", {"csrf": token, "action": "delete", "m": pick, "back": "folder=INBOX"}
        )
        assert forged.status == 403
        assert browser.post("/mail/empty", {"csrf": token, "folder": "Trash"}).status == 403
    assert subjects(browser.get("/")) == ["keep me"]
    # The header a script sends is accepted.
    ok = browser.request(
        "POST",
        "/mail/action",
        urlencode({"action": "read", "m": pick}).encode(),
        {"Content-Type": "application/x-www-form-urlencoded", "X-CSRF-Token": page.csrf()},
    )
    assert ok.status == 303


def test_odd_folder_names(server: RunningServer, browser: Browser) -> None:
    user = user_store(server)
    names = ["Ünï/κόσμος", "with space", "this & that"]
    for name in names:
        blockingCallFromThread(reactor, user.create_folder, name)
        append(server, name, message(f"in {name}"))
    page = browser.get("/")
    for name in names:
        listed = browser.get("/mail?" + urlencode({"folder": name}))
        assert listed.status == 200, name
        assert subjects(listed) == [f"in {name}"]
        assert f"<h1>{html.escape(name)}</h1>" in listed.text
    # Move into and out of them.
    append(server, "INBOX", message("travelling"))
    page = browser.get("/")
    act(browser, page, "move", [selected(page, "travelling")], target="Ünï/κόσμος")
    there = browser.get("/mail?" + urlencode({"folder": "Ünï/κόσμος"}))
    assert sorted(subjects(there)) == ["in Ünï/κόσμος", "travelling"]
    act(browser, there, "move", [selected(there, "travelling")], target="this & that")
    amp = browser.get("/mail?" + urlencode({"folder": "this & that"}))
    assert sorted(subjects(amp)) == ["in this & that", "travelling"]


def test_missing_folder_gone_uid_and_bad_requests(server: RunningServer, browser: Browser) -> None:
    missing = browser.get("/mail?folder=" + "Nowhere")
    assert missing.status == 404 and "There is no folder called “Nowhere”." in missing.text
    assert browser.get("/mail?folder=" + "%FF%FE").status == 404
    assert browser.get("/mail?folder=../../etc").status == 404
    uid = append(server, "INBOX", message("soon gone"))
    page = browser.get("/")
    pick = selected(page, "soon gone")
    on_reactor(server, "INBOX", "expunge", [uid])
    for action in ("read", "flag", "delete", "spam"):
        done = act(browser, page, action, [pick])
        assert done.status == 303, action
    assert act(browser, page, "move", [pick], target="Archive").status == 303
    assert subjects(browser.get("/mail?folder=Archive")) == []
    # Into or from a folder that does not exist.
    assert act(browser, page, "move", [f"{uid}:INBOX"], target="Nowhere").status == 404
    assert act(browser, page, "read", ["1:Nowhere"]).status == 404
    # Nothing selected: nothing done, and the list says so.
    nothing = act(browser, page, "delete", [])
    assert nothing.status == 303
    assert "Select one or more messages first." in browser.get(nothing.headers["location"]).text
    # Malformed selections and actions.
    assert act(browser, page, "read", ["abc:INBOX"]).status == 400
    assert act(browser, page, "read", ["7"]).status == 400
    assert act(browser, page, "explode", [f"{uid}:INBOX"]).status == 400
    # Not logged in: back to the login page.
    stranger = Browser(server)
    assert stranger.get("/mail?folder=INBOX").headers["location"] == "/login"


def search(b: Browser, **terms: str) -> list[str]:
    page = b.get("/mail?" + urlencode({"folder": "INBOX", **terms}))
    assert page.status == 200, page.text
    return sorted(subjects(page))


def test_search_by_each_field_and_dates(server: RunningServer, browser: Browser) -> None:
    now = time.time()
    append(
        server,
        "INBOX",
        message("Budget 2025", "Μαρία <maria@example.gr>", body="Ο προϋπολογισμός"),
        now - 10 * DAY,
    )
    append(
        server, "INBOX",
        message("Lunch", "Bob <bob@else.test>", to="team@example.test", body="Pizza at noon",
                extra="Cc: boss@example.test\r\n"),
        now - 40 * DAY,
    )  # fmt: skip
    encoded = (
        b"From: Nikos <nikos@example.gr>\r\nTo: alice@example.test\r\n"
        b"Subject: =?UTF-8?B?zprOsc67zrfOvM6tz4HOsQ==?=\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=iso-8859-7\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"<p>=C3=E5=E9=DC =F3=EF=F5 <b>kosme</b></p>\r\n"
    )
    append(server, "INBOX", encoded, now)
    assert search(browser, **{"from": "maria"}) == ["Budget 2025"]
    assert search(browser, **{"from": "ΜΑΡΊΑ".lower()}) == ["Budget 2025"]
    assert search(browser, to="team@") == ["Lunch"]
    assert search(browser, to="boss") == ["Lunch"]  # Cc counts as a recipient
    assert search(browser, subject="BUDGET") == ["Budget 2025"]
    assert search(browser, subject="καλημέρα") == ["Καλημέρα"]
    assert search(browser, text="pizza") == ["Lunch"]
    assert search(browser, text="προϋπολογισμός") == ["Budget 2025"]
    assert search(browser, text="γειά σου") == ["Καλημέρα"]  # ISO-8859-7, quoted-printable
    assert search(browser, text="kosme") == ["Καλημέρα"]  # not the <b> tag's text
    assert search(browser, text="<b>") == []
    day = lambda ago: time.strftime("%Y-%m-%d", time.localtime(now - ago * DAY))  # noqa: E731
    assert search(browser, since=day(15)) == ["Budget 2025", "Καλημέρα"]
    assert search(browser, before=day(15)) == ["Lunch"]
    assert search(browser, since=day(45), before=day(5)) == ["Budget 2025", "Lunch"]
    assert search(browser, since=day(10), before=day(10)) == ["Budget 2025"]
    assert search(browser, **{"from": "bob", "text": "noon", "since": day(50)}) == ["Lunch"]
    assert search(browser, **{"from": "bob", "text": "budget"}) == []
    found = browser.get("/mail?" + urlencode({"folder": "INBOX", "from": "maria"}))
    assert "Messages found: 1" in found.text and "Clear search" in found.text


def test_search_in_all_folders(server: RunningServer, browser: Browser) -> None:
    append(server, "INBOX", message("report one"))
    append(server, "Archive", message("report two"))
    append(server, "Archive", message("other"))
    page = browser.get("/mail?" + urlencode({"folder": "INBOX", "subject": "report", "all": "1"}))
    assert sorted(subjects(page)) == ["report one", "report two"]
    assert "(Archive)" in page.text
    # Actions work on rows of several folders at once.
    act(browser, page, "flag", [selected(page, "report one"), selected(page, "report two")])
    assert len(on_reactor(server, "Archive", "uids_with_flag", "\\Flagged")) == 1  # type: ignore[arg-type]
    assert len(on_reactor(server, "INBOX", "uids_with_flag", "\\Flagged")) == 1  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("terms", "expected"),
    [
        ({"subject": "x" * 201}, "at most 200 characters"),
        ({"text": "y" * 5000}, "at most 200 characters"),
        ({"since": "yesterday"}, "year-month-day"),
        ({"before": "2024-02-30"}, "year-month-day"),
        ({"since": "0000-01-01"}, "year-month-day"),
        ({"since": "2024-05-01", "before": "2024-04-01"}, "comes after"),
    ],
)
def test_bad_searches_are_explained(
    server: RunningServer, browser: Browser, terms: dict[str, str], expected: str
) -> None:
    page = browser.get("/mail?" + urlencode({"folder": "INBOX", **terms}))
    assert page.status == 400
    assert expected in page.text


def test_odd_search_input_is_harmless(server: RunningServer, browser: Browser) -> None:
    append(server, "INBOX", message("100% sure (really) [yes] *"))
    for needle in ("100%", "(really)", "[yes]", "*", "\x00\x01", "%FF", "\u202e", "\\", "'\""):
        page = browser.get("/mail?" + urlencode({"folder": "INBOX", "subject": needle}))
        assert page.status == 200, needle
    raw = browser.get("/mail?folder=INBOX&subject=%FF%FE%00")
    assert raw.status == 200
    assert search(browser, subject="(really) [yes]") == ["100% sure (really) [yes] *"]


def test_greek_interface(server: RunningServer, browser: Browser) -> None:
    append(server, "INBOX", message("γεια"), time.time() - 400 * DAY)
    browser.accept_language = "el"
    page = browser.get("/")
    assert "Θέμα" in page.text and "Αναφορά ως ανεπιθύμητο" in page.text
    assert page.headers["content-language"] == "el"


def test_body_search_is_bounded(
    server: RunningServer, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mailsearch, "MAX_BODY_SCAN", 2)
    for subject in ("a", "b", "c"):
        append(server, "INBOX", message(subject, body="needle"))
    broad = browser.get("/mail?" + urlencode({"folder": "INBOX", "text": "needle"}))
    assert broad.status == 400 and "add dates or another field" in broad.text
    assert search(browser, text="needle", subject="b") == ["b"]  # narrowed first: allowed


@implementer(IRetention)
class HoldLegal:
    """Keeps every message whose subject mentions "legal"."""

    def may_erase(self, address: str, folder: str, message: IStoredMessage) -> bool:
        return "legal" not in message.summary().headers.get("subject", "").lower()


def test_erasing_asks_retention(tmp_path: Path) -> None:
    with running_server(tmp_path, retention=HoldLegal()) as srv:
        b = Browser(srv)
        b.login(srv.user, srv.password)
        for subject in ("legal matter", "lunch", "legal too", "spam"):
            append(srv, "Trash", message(subject))
        trash = b.get("/mail?folder=Trash")
        done = act(b, trash, "delete", [selected(trash, "legal matter"), selected(trash, "lunch")])
        assert "done=held" in done.headers["location"]
        assert "kept by the retention policy" in b.get(done.headers["location"]).text
        assert sorted(subjects(b.get("/mail?folder=Trash"))) == [
            "legal matter",
            "legal too",
            "spam",
        ]
        confirm = b.get("/mail/empty?folder=Trash")
        emptied = b.post("/mail/empty", {"csrf": confirm.csrf(), "folder": "Trash"})
        assert "done=held" in emptied.headers["location"]
        assert sorted(subjects(b.get("/mail?folder=Trash"))) == ["legal matter", "legal too"]
