"""imapclient (PyPI), an independent client library, through every advertised extension."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import RunningServer, client_tls
from imapclient import IMAPClient
from imaphelp import deliver

from ourmail.config import QuotaLimit

EXTENSIONS = [
    "IDLE", "ID", "ENABLE", "NAMESPACE", "UNSELECT", "UIDPLUS", "MOVE", "CHILDREN", "SPECIAL-USE",
    "LITERAL+", "CONDSTORE", "STATUS=SIZE", "ESEARCH", "LIST-EXTENDED", "LIST-STATUS", "QUOTA",
    "MULTIAPPEND", "UTF8=ACCEPT", "IMAP4rev2", "QRESYNC", "BINARY", "SEARCHRES",
    "CREATE-SPECIAL-USE", "SORT", "COMPRESS=DEFLATE", "QUOTA=RES-STORAGE",
]  # fmt: skip


@pytest.fixture
def client(mailserver: RunningServer) -> Iterator[IMAPClient]:
    c = IMAPClient("127.0.0.1", port=mailserver.port("imaps"), ssl_context=client_tls())
    c.login(mailserver.user, mailserver.password)
    yield c
    c.logout()


def test_capabilities_id_namespace(client: IMAPClient) -> None:
    caps = client.capabilities()
    for name in EXTENSIONS:
        assert name.upper().encode() in caps, name
    (fields,) = client.id_({"name": "imapclient"})
    assert dict(zip(fields[::2], fields[1::2], strict=True))[b"name"] == b"ourmail"
    personal = client.namespace().personal
    assert personal == (("", "/"),)


def test_special_use_children_and_status(mailserver: RunningServer, client: IMAPClient) -> None:
    deliver(mailserver, 2)
    assert client.find_special_folder(b"\\Sent") == "Sent"
    assert client.find_special_folder(b"\\Trash") == "Trash"
    client.create_folder("Projects/2026")
    flags = {name: f for f, _, name in client.list_folders()}
    assert b"\\HasChildren" in flags["Projects"]
    status = client.folder_status("INBOX", [b"MESSAGES", b"SIZE", b"HIGHESTMODSEQ"])
    assert status[b"MESSAGES"] == 2 and status[b"SIZE"] > 0 and status[b"HIGHESTMODSEQ"] > 0


def test_uidplus_move_unselect(mailserver: RunningServer, client: IMAPClient) -> None:
    deliver(mailserver, 3)
    response = client.append("Drafts", b"Subject: d\r\n\r\nx\r\n", flags=[b"\\Draft"])
    assert b"APPENDUID" in response
    client.select_folder("INBOX")
    client.move([1], "Archive")
    client.add_flags([2, 3], [b"\\Deleted"])
    client.uid_expunge([2])
    assert client.search("ALL") == [3]
    client.unselect_folder()
    client.select_folder("Archive")
    assert len(client.search("ALL")) == 1


def test_condstore_and_esearch_modseq(mailserver: RunningServer, client: IMAPClient) -> None:
    deliver(mailserver, 3)
    client.enable("CONDSTORE")
    info = client.select_folder("INBOX")
    start = info[b"HIGHESTMODSEQ"]
    client.add_flags([2], [b"\\Flagged"])
    changed = client.fetch([1, 2, 3], ["FLAGS"], modifiers=[f"CHANGEDSINCE {start}"])
    assert list(changed) == [2] and changed[2][b"MODSEQ"][0] > start
    assert client.search(["MODSEQ", start + 1]) == [2]


def test_quota_multiappend_utf8(mailserver: RunningServer, client: IMAPClient) -> None:
    mailserver.server.accounts.set_quota(mailserver.user, QuotaLimit(messages=100))
    (quota,) = client.get_quota_root("INBOX")[1]
    assert quota.resource == "MESSAGE" and quota.limit == 100
    assert client.enable("UTF8=ACCEPT") == [b"UTF8=ACCEPT"]
    client.multiappend("Drafts", [b"Subject: a\r\n\r\na\r\n", b"Subject: b\r\n\r\nb\r\n"])
    client.select_folder("Drafts")
    assert len(client.search("ALL")) == 2


def test_idle(mailserver: RunningServer, client: IMAPClient) -> None:
    client.select_folder("INBOX")
    client.idle()
    deliver(mailserver)
    responses = client.idle_check(timeout=5)
    client.idle_done()
    assert (1, b"EXISTS") in responses


def test_qresync_binary_sort_and_special_use(mailserver: RunningServer, client: IMAPClient) -> None:
    deliver(mailserver, 3)
    assert client.enable("QRESYNC") == [b"QRESYNC"]
    info = client.select_folder("INBOX")
    start = info[b"HIGHESTMODSEQ"]
    client.add_flags([1], [b"\\Deleted"])
    client.expunge()
    client.add_flags([2], [b"\\Seen"])  # imapclient works on UIDs
    changed = client.fetch([2, 3], ["FLAGS"], modifiers=[f"CHANGEDSINCE {start}"])
    assert list(changed) == [2] and b"\\Seen" in changed[2][b"FLAGS"]
    body = client.fetch([2], ["BINARY.PEEK[1]", "BINARY.SIZE[1]"])[2]
    assert body[b"BINARY[1]"] == b"body 1\r\n" and body[b"BINARY.SIZE[1]"] == 8
    assert client.sort(["REVERSE", "ARRIVAL"]) == [3, 2]
    client._imap._simple_command("CREATE", "Outbox", "(USE (\\Sent))")
    assert b"\\Sent" in {name: f for f, _, name in client.list_folders()}["Outbox"]
    client.unselect_folder()
    assert client.enable("IMAP4rev2") == [b"IMAP4rev2"]
    assert "Outbox" in [name for _, _, name in client.list_folders()]
