"""The lists' archives over IMAP (RFC 2342 shared namespace ``Lists/``), with imaplib, and in
the webmail: members see and read their list's archive read-only (in threads on the web) and
copy out of it; others see nothing and get the same NO (404) as for a missing folder; a
public archive is seen by everyone."""

from __future__ import annotations

import imaplib
import shutil
import time
from collections.abc import Iterator

import pytest
from conftest import RunningServer, client_tls, running_server
from imaphelp import Session
from queuehelp import wait_for
from storehelp import on_reactor
from twisted.internet.defer import ensureDeferred
from webhelp import Browser

from ourmail.lists import requests, tokens
from ourmail.lists.listdb import ListDB, Token
from ourmail.lists.model import Archive, ListSettings, Member

TEAM = "team@example.test"
NEWS = "news@example.test"
BOB = "bob@example.test"
TEAM_BOX = f'"Lists/{TEAM}"'


def post(n: int, reply_to: int = 0) -> bytes:
    refs = f"In-Reply-To: <p{reply_to}@example.test>\r\n" if reply_to else ""
    return (
        f"From: Alice <alice@example.test>\r\nTo: {TEAM}\r\nSubject: topic {n}\r\n"
        f"Message-ID: <p{n}@example.test>\r\n{refs}Date: Tue, 1 Dec 2026 10:0{n}:00 +0000\r\n"
        f"\r\nbody of post {n}\r\n"
    ).encode()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("archive")) as running:
        running.add_user(BOB)
        db = ListDB(running.data / "lists" / "lists.sqlite")
        db.create(ListSettings(TEAM, name="Team", owners=("owner@example.test",)), 0.0)
        db.subscribe(TEAM, [Member(running.user)])
        db.create(ListSettings(NEWS, archive=Archive.PUBLIC), 0.0)
        db.close()
        store = running.server.store
        for n in (1, 2, 3):
            on_reactor(store.user(TEAM).deliver, post(n, reply_to=1 if n == 2 else 0))
        on_reactor(store.user(NEWS).deliver, post(9))
        assert running.server.shared is not None
        on_reactor(running.server.shared.reload)
        yield running


def login(srv: RunningServer, user: str) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL("127.0.0.1", srv.port("imaps"), ssl_context=client_tls())
    m.login(user, srv.password)
    return m


def names(m: imaplib.IMAP4_SSL, pattern: str = "*") -> dict[str, bytes]:
    typ, data = m.list('""', pattern)
    assert typ == "OK"
    out = {}
    for line in data:
        assert isinstance(line, bytes)
        attrs, _, name = line.partition(b') "/" ')
        out[name.strip(b'"').decode()] = attrs
    return out


def test_member_reads_the_archive(srv: RunningServer) -> None:
    m = login(srv, srv.user)
    typ, data = m.namespace()
    assert data == [b'(("" "/")) NIL (("Lists/" "/"))']
    listed = names(m)
    assert b"\\Noselect" in listed["Lists"] and b"\\HasChildren" in listed["Lists"]
    assert {n for n in listed if n.startswith("Lists/")} == {f"Lists/{TEAM}", f"Lists/{NEWS}"}
    assert set(names(m, "Lists/%")) == {f"Lists/{TEAM}", f"Lists/{NEWS}"}
    typ, data = m.status(TEAM_BOX, "(MESSAGES UIDNEXT)")
    assert typ == "OK" and b"MESSAGES 3" in data[0]  # type: ignore[operator]
    # SELECT of a shared folder answers as EXAMINE does: imaplib takes [READ-ONLY] amiss.
    with pytest.raises(imaplib.IMAP4.readonly):
        m.select(TEAM_BOX)
    typ, data = m.select(TEAM_BOX, readonly=True)
    assert (typ, data) == ("OK", [b"3"])
    typ, data = m.search(None, "SUBJECT", '"topic 2"')
    assert data == [b"2"]
    typ, data = m.fetch("2", "(BODY[HEADER.FIELDS (SUBJECT)] BODY[TEXT])")
    assert b"Subject: topic 2" in data[0][1]  # type: ignore[index]
    assert data[1][1] == b"body of post 2\r\n"  # type: ignore[index]
    typ, data = m.fetch("2", "(FLAGS)")
    assert b"\\Seen" not in data[0]  # type: ignore[operator]
    typ, data = m.sort("(DATE)", "UTF-8", "ALL")
    assert data == [b"1 2 3"]
    # Copied out into the user's own folders, the message is theirs.
    typ, data = m.copy("1:2", "Archive")
    assert typ == "OK", data
    typ, data = m.select("Archive")
    assert data == [b"2"]
    m.logout()


def test_archive_is_read_only(srv: RunningServer) -> None:
    m = login(srv, srv.user)
    m.select(TEAM_BOX, readonly=True)
    for attempt in (
        lambda: m.store("1", "+FLAGS", "(\\Deleted)"),
        lambda: m.expunge(),
        lambda: m.append(TEAM_BOX, None, None, post(7)),
        lambda: m.copy("1", TEAM_BOX),
        lambda: m.delete(TEAM_BOX),
        lambda: m.rename(TEAM_BOX, "Mine"),
    ):
        typ, data = attempt()
        assert typ == "NO", data
    m.select("INBOX")
    typ, data = m.append(TEAM_BOX, None, None, post(7))
    assert typ == "NO" and b"[NOPERM]" in data[0]  # type: ignore[operator]
    # No folder of the user's own can take the shared prefix.
    for name in ("Lists", "Lists/mine", f"Lists/{TEAM}"):
        typ, data = m.create(f'"{name}"')
        assert typ == "NO" and b"[CANNOT]" in data[0], data  # type: ignore[operator]
    typ, data = m.rename("Archive", "Lists/x")
    assert typ == "NO"
    m.logout()
    m = login(srv, srv.user)
    typ, data = m.status(TEAM_BOX, "(MESSAGES)")
    assert b"MESSAGES 3" in data[0]  # type: ignore[operator]
    m.logout()


def test_non_member_sees_only_the_public_archive(srv: RunningServer) -> None:
    m = login(srv, BOB)
    assert {n for n in names(m) if n.startswith("Lists")} == {"Lists", f"Lists/{NEWS}"}
    typ, missing = m.select('"Lists/nosuch@example.test"')
    assert typ == "NO"
    for attempt in (
        lambda: m.select(TEAM_BOX),
        lambda: m.status(TEAM_BOX, "(MESSAGES)"),
        lambda: m.append(TEAM_BOX, None, None, post(7)),
        lambda: m.delete(TEAM_BOX),
    ):
        typ, data = attempt()
        # The same answer as for a list that does not exist: nothing is disclosed.
        assert (typ, data) == ("NO", [b"[NONEXISTENT] No such mailbox"])
    assert missing == [b"[NONEXISTENT] No such mailbox"]
    typ, data = m.select(f'"Lists/{NEWS}"', readonly=True)
    assert (typ, data) == ("OK", [b"1"])
    typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"topic 9" in data[0][1]  # type: ignore[index]
    m.logout()


def test_unsubscribed_member_loses_the_archive(srv: RunningServer) -> None:
    db = ListDB(srv.data / "lists" / "lists.sqlite")
    db.create(ListSettings("board@example.test"), 0.0)
    db.subscribe("board@example.test", [Member(BOB)])
    shared = srv.server.shared
    assert shared is not None
    on_reactor(shared.reload)
    m = login(srv, BOB)
    assert "Lists/board@example.test" in names(m)
    db.unsubscribe("board@example.test", [BOB])
    db.close()
    on_reactor(shared.reload)
    assert "Lists/board@example.test" not in names(m)
    typ, _ = m.select('"Lists/board@example.test"')
    assert typ == "NO"
    m.logout()


def test_members_who_join_or_leave_by_themselves_are_readers_within_seconds(
    srv: RunningServer,
) -> None:
    """A subscription confirmed or a one-click unsubscribe (not the console, not the command
    line) marks the lists changed: the service's next look, seconds away, reads who may read
    each archive again, with no reload asked for."""
    lists, shared = srv.server.lists, srv.server.shared
    assert lists is not None and shared is not None
    club = "choir@example.test"
    add_list(srv, club, srv.user)
    on_reactor(lists.reload)
    lst = lists.ctx.db.get(club)
    assert lst is not None
    token = Token(club, BOB, "subscribe", "", time.time(), time.time() + 3600)
    assert on_reactor(lambda: ensureDeferred(requests.confirm(lists.ctx, lst, token, BOB)))
    wait_for(lambda: shared.folder(BOB, club) is not None)
    signature = tokens.member_signature(lists.ctx.secret, club, BOB)
    assert on_reactor(lambda: ensureDeferred(requests.one_click(lists.ctx, lst, BOB, signature)))
    wait_for(lambda: shared.folder(BOB, club) is None)


def test_own_lists_folder_made_before_stays(srv: RunningServer) -> None:
    """A folder of the user's own under ``Lists`` (made before lists came) stays theirs,
    read-write, beside the shared ones; LSUB and LIST-STATUS show the shared ones too."""
    store = srv.server.store
    on_reactor(store.user(srv.user).create_folder, "Lists/ietf")
    s = Session(srv)
    listed = s.ok('LIST "" "Lists*" RETURN (STATUS (MESSAGES))')
    # The store made the parent too: a real folder now, not the namespace's \\Noselect root.
    assert b'* LIST (\\HasChildren) "/" "Lists"' in listed
    assert b'* STATUS "Lists/ietf" (MESSAGES 0)' in listed
    assert f'* STATUS "Lists/{TEAM}" (MESSAGES 3)'.encode() in listed
    assert b"READ-WRITE" in s.ok("SELECT Lists/ietf")[-1]
    s.append("Lists/ietf", post(5))
    s.ok(f"SUBSCRIBE {TEAM_BOX}")
    assert f'* LSUB () "/" "Lists/{TEAM}"'.encode() in s.ok('LSUB "" "*"')
    s.ok("DELETE Lists/ietf")
    s.ok("DELETE Lists")
    assert b'* LIST (\\Noselect \\HasChildren) "/" "Lists"' in s.ok('LIST "" "Lists"')
    s.close()


def add_list(srv: RunningServer, address: str, member: str, posts: int = 1) -> None:
    """A list of its own for one test, with ``member`` and ``posts`` posts in its archive."""
    db = ListDB(srv.data / "lists" / "lists.sqlite")
    db.create(ListSettings(address), 0.0)
    db.subscribe(address, [Member(member)])
    db.close()
    for n in range(1, posts + 1):
        on_reactor(srv.server.store.user(address).deliver, post(n))
    assert srv.server.shared is not None
    on_reactor(srv.server.shared.reload)


def bob_session(srv: RunningServer) -> Session:
    s = Session(srv, login=False)
    s.ok(f'LOGIN {BOB} "{srv.password}"')
    return s


def test_removed_member_stops_reading_the_selected_archive(srv: RunningServer) -> None:
    """Access is checked on every command, not only at SELECT: once unsubscribed, the open
    session's reads answer NO [NOPERM] and tell nothing more of the folder."""
    club = "club@example.test"
    add_list(srv, club, BOB)
    s = bob_session(srv)
    s.ok(f'EXAMINE "Lists/{club}"')
    assert b"topic 1" in b"".join(s.ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
    db = ListDB(srv.data / "lists" / "lists.sqlite")
    db.unsubscribe(club, [BOB])
    db.close()
    assert srv.server.shared is not None
    on_reactor(srv.server.shared.reload)
    on_reactor(srv.server.store.user(club).deliver, post(2))
    for command in ("FETCH 1 (BODY.PEEK[])", "UID SEARCH ALL", "NOOP", "IDLE"):
        lines = s.cmd(command)
        assert lines == [
            f"{s.last_tag} NO [NOPERM] You may no longer read Lists/{club}; "
            "select another mailbox".encode()
        ], lines
    assert b"EXISTS" not in b"".join(s.ok('LIST "" "*"'))
    s.ok("UNSELECT")
    assert s.cmd(f'EXAMINE "Lists/{club}"')[-1].endswith(b"NO [NONEXISTENT] No such mailbox")
    s.ok("SELECT INBOX")
    s.ok("NOOP")
    s.close()


def test_selected_archive_gone_says_bye(srv: RunningServer) -> None:
    gone = "gone@example.test"
    add_list(srv, gone, BOB)
    s = bob_session(srv)
    s.ok(f'EXAMINE "Lists/{gone}"')
    inbox = srv.server.store.user(gone).folder("INBOX")
    shutil.rmtree(inbox._cur_path)  # type: ignore[attr-defined]

    s.raw.send(b"t99 FETCH 1 (FLAGS)\r\n")
    assert s.raw.line() == f"* BYE [NONEXISTENT] Lists/{gone} is gone".encode()
    s.close()


def test_own_folder_named_like_an_archive_wins(srv: RunningServer) -> None:
    """A folder of the user's own with an archive's very name (made before the user joined;
    only a list of a domain without a dot can have one: the store takes no "." in names) is
    what the name reaches, read-write; the archive shows again once it is renamed."""
    mine = "mine@localhost"
    add_list(srv, mine, srv.user)
    box = f'"Lists/{mine}"'
    on_reactor(srv.server.store.user(srv.user).create_folder, f"Lists/{mine}")
    s = Session(srv)
    listed = [x for x in s.ok('LIST "" "Lists/*"') if mine.encode() in x]
    assert listed == [f'* LIST (\\HasNoChildren) "/" "Lists/{mine}"'.encode()]
    selected = s.ok(f"SELECT {box}")
    assert b"* 0 EXISTS" in selected and b"[READ-WRITE]" in selected[-1]
    s.append(box, post(5))
    assert b"MESSAGES 1" in s.ok(f"STATUS {box} (MESSAGES)")[0]
    # The webmail too: no archive link for it, the archive page sends to the user's folder,
    # whose message opens as any of theirs (not read-only).
    web = Browser(srv)
    assert web.login(srv.user, srv.password).status == 303
    assert "/archive?folder=Lists%2Fmine%40localhost" not in web.get("/mail").text
    page = web.get("/archive?folder=Lists%2Fmine%40localhost")
    assert page.status == 303 and "Lists%2Fmine%40localhost" in page.headers["location"]
    message = web.get("/message?folder=Lists%2Fmine%40localhost&uid=1")
    assert message.status == 200 and "topic 5" in message.text
    assert "This archive is read-only." not in message.text
    s.ok("STORE 1 +FLAGS (\\Deleted)")
    s.ok("CLOSE")
    s.ok(f"RENAME {box} Kept")
    selected = s.ok(f"SELECT {box}")
    assert b"* 1 EXISTS" in selected and b"[READ-ONLY]" in selected[-1]
    s.close()


def test_webmail_shows_the_archive_in_threads(srv: RunningServer) -> None:
    web = Browser(srv)
    assert web.login(srv.user, srv.password).status == 303
    home = web.get("/mail").text
    assert 'id="shared-heading">Lists</p>' in home
    link = "/archive?folder=Lists%2Fteam%40example.test"
    assert link in home and "Team</span>" in home
    page = web.get(link)
    assert page.status == 200
    text = page.text
    # Newest conversation first; the reply under the post it answers, indented.
    order = [text.index(f"topic {n}</a>") for n in (3, 1, 2)]
    assert order == sorted(order)
    assert 'data-uid="2" data-depth="1"' in text and 'data-uid="1" data-depth="0"' in text
    assert "/mail/action" not in text and "This archive is read-only." in text
    message = web.get("/message?folder=Lists%2Fteam%40example.test&uid=3")
    assert message.status == 200
    assert "topic 3" in message.text and "This archive is read-only." in message.text
    assert "/compose?" not in message.text and 'value="delete"' not in message.text
    assert link in message.text  # back to the archive
    m = login(srv, srv.user)
    m.select(TEAM_BOX, readonly=True)
    typ, data = m.fetch("3", "(FLAGS)")
    assert b"\\Seen" not in data[0]  # type: ignore[operator]
    m.logout()


def test_webmail_hides_private_archives(srv: RunningServer) -> None:
    web = Browser(srv)
    assert web.login(BOB, srv.password).status == 303
    home = web.get("/mail").text
    assert "Lists%2Fnews%40example.test" in home and "team%40example.test" not in home
    assert web.get("/archive?folder=Lists%2Fteam%40example.test").status == 404
    assert web.get("/archive?folder=Lists%2Fnosuch%40example.test").status == 404
    assert web.get("/message?folder=Lists%2Fteam%40example.test&uid=1").status == 404
    assert web.get("/archive?folder=Lists%2Fnews%40example.test").status == 200
