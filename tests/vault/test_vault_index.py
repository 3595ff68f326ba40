"""The vault's search: documents, the SQLite FTS5 index, the indexer, and the commands."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from ourmail.admin.cli import main
from ourmail.interfaces import VaultQuery
from ourmail.vault.document import document
from ourmail.vault.index import IndexError_, QueryError, SQLiteIndex, check_fts5
from ourmail.vault.indexer import Indexer
from ourmail.vault.segments import SegmentLog

DAY = 86400.0
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC


class Vault:
    """Captures messages the way docs/vault-format.md says: a ``blob`` record for a body
    not yet in the vault, then the ``capture`` record."""

    def __init__(self, root: Path) -> None:
        self.log = SegmentLog(root)
        self.bodies: set[str] = set()
        #: The seq of each message captured by the fixture, by a short name.
        self.seq: dict[str, int] = {}

    def capture(
        self, message: bytes, at: float, sender: str = "", rcpts: tuple[str, ...] = ()
    ) -> int:
        cut = message.find(b"\r\n\r\n")
        header, body = (message, b"") if cut < 0 else (message[: cut + 4], message[cut + 4 :])
        sha = hashlib.sha256(body).hexdigest()
        items: list[tuple[str, dict[str, Any], bytes | None]] = []
        if sha not in self.bodies:
            items.append(("blob", {}, body))
            self.bodies.add(sha)
        envelope = {"via": "smtp", "sender": sender, "recipients": list(rcpts), "mailboxes": list(rcpts),
                    "client": "192.0.2.1", "user": "", "id": "t", "arrival": at}  # fmt: skip
        fields = {
            "body": sha,
            "message_sha256": hashlib.sha256(message).hexdigest(),
            "size": len(message),
            "envelope": envelope,
        }
        items.append(("capture", fields, header))
        with self.log.locked():
            written = self.log.append(items, at)
        return written[-1][1].seq

    def append(self, kind: str, fields: dict[str, Any], at: float = T0) -> int:
        with self.log.locked():
            return self.log.append([(kind, fields, None)], at)[-1][1].seq


def mail(sender: str, to: str, subject: str, text: str, extra: str = "") -> bytes:
    head = f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject[:8].replace(' ', '.')}@x.test>\r\n"
    return (head + extra + "\r\n" + text + "\r\n").encode()


MULTIPART = (
    b"From: =?utf-8?b?zp3Or866zr/PgiDOkc67zrXOvs6vzr/PhQ==?= <nikos@gov.gr>\r\n"
    b"To: Anna <anna@example.org>, bob@Example.ORG\r\n"
    b"Cc: carol@other.test\r\n"
    b"Subject: =?utf-8?q?Budget_r=C3=A9sum=C3=A9?=\r\n"
    b"Date: Thu, 01 Jan 2026 10:00:00 +0000\r\n"
    b"Message-ID: <budget-1@gov.gr>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    b"--b1\r\n"
    b'Content-Type: multipart/mixed; boundary="b2"\r\n\r\n'
    b"--b2\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"=CE=9A=CE=B1=CE=BB=CE=B7=CE=BC=CE=AD=CF=81=CE=B1, the Caf=C3=A9 budget.\r\n"
    b"--b2\r\n"
    b"Content-Type: text/html\r\n\r\n"
    b"<html><style>p{hiddenstyle:1}</style><p>Hello <b>zebra</b></p><script>hiddenscript()</script></html>\r\n"
    b"--b2--\r\n"
    b"--b1\r\n"
    b"Content-Type: application/pdf\r\n"
    b"Content-Disposition: attachment; filename*=utf-8''%CE%A0%CF%81%CE%BF%CF%8B%CF%80.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--b1\r\n"
    b'Content-Type: application/vnd.ms-excel; name="=?utf-8?q?q3_report.xls?="\r\n\r\n'
    b"xx\r\n"
    b"--b1--\r\n"
)

BROKEN = [
    b"no header at all, just text",
    b"Content-Type: multipart/mixed; boundary=zz\r\nSubject: cut\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\nhalf",
    b"Subject: bad\r\nContent-Type: text/plain; charset=no-such-charset\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!notbase64",
    b"Subject: =?x?q?broken?= =?utf-8?b?////?=\r\nFrom: <<<@@@>>>\r\nDate: yesterday\r\n"
    b"Content-Type: text/html\r\n\r\n<<<<>>>><![CDATA[",
    b"Content-Type: multipart/mixed\r\n\r\nno boundary given\r\n",
    (b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n" * 300) + b"--a--\r\n",
]


def indexed(vault: Vault) -> tuple[SQLiteIndex, Indexer]:
    index = SQLiteIndex(vault.log.root / "index.sqlite")
    indexer = Indexer(vault.log, index)
    indexer.catch_up()
    return index, indexer


def seqs(index: SQLiteIndex, **criteria: Any) -> list[int]:
    total, hits = index.search(VaultQuery(**criteria), 0, 100)
    assert total == len(hits)
    return [h.seq for h in hits]


def test_a_document_has_the_fields_text_and_names_and_broken_mime_still_gives_one(
    tmp_path: Path,
) -> None:
    vault = Vault(tmp_path)
    seq = vault.capture(MULTIPART, T0, "bounce@gov.gr", ("anna@example.org",))
    records = {r.seq: r for _, r in vault.log.records()}
    doc = document(records[seq], records[seq - 1].plain())
    assert doc.sender == "nikos@gov.gr"
    assert doc.recipients == ("anna@example.org", "bob@example.org", "carol@other.test")
    assert doc.subject == "Budget résumé"
    assert doc.message_id == "budget-1@gov.gr"
    assert doc.date == T0 + 10 * 3600
    assert doc.attachments == ("Προϋπ.pdf", "q3 report.xls")
    assert "Καλημέρα, the Café budget." in doc.text
    assert "zebra" in doc.text and "hidden" not in doc.text
    assert doc.envelope.sender == "bounce@gov.gr" and doc.size == len(MULTIPART)
    # of a multipart/alternative only the plain text is read (the HTML says the same)
    alternative = MULTIPART.replace(
        b'multipart/mixed; boundary="b2"', b"multipart/alternative; boundary=b2"
    )
    seq = vault.capture(alternative, T0)
    capture = next(r for _, r in vault.log.records(seq))
    assert "zebra" not in document(capture, alternative[alternative.index(b"\r\n\r\n") + 4 :]).text
    for message in BROKEN:
        seq = vault.capture(message, T0)
        capture = next(r for _, r in vault.log.records(seq))
        broken = document(capture, b"")
        assert broken.seq == seq


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    v = Vault(tmp_path / "vault")
    v.seq["lunch"] = v.capture(
        mail("Alice <alice@a.test>", "bob@b.test", "Lunch plans", "pizza tomorrow"), T0
    )
    v.seq["re"] = v.capture(
        mail("bob@b.test", "alice@a.test", "Re: Lunch plans", "pizza sounds good"), T0 + DAY
    )
    v.seq["multi"] = v.capture(
        MULTIPART, T0 + 2 * DAY, "bounce@gov.gr", ("anna@example.org", "dave@example.org")
    )
    v.seq["greek"] = v.capture(
        mail("carol@c.test", "Team <team@b.test>", "Ελληνικά νέα", "η συνάντηση είναι αύριο"),
        T0 + 3 * DAY,
    )
    v.seq["sheet"] = v.capture(
        mail("alice@a.test", "carol@c.test", "Spreadsheet", "pizza figures"), T0 + 4 * DAY
    )
    for n, message in enumerate(BROKEN):
        v.seq[f"broken{n}"] = v.capture(message, T0 + 5 * DAY)
    return v


def test_each_criterion_paging_and_greek(vault: Vault) -> None:
    index, _ = indexed(vault)
    lunch, re_, multi, greek, sheet = (
        vault.seq[k] for k in ("lunch", "re", "multi", "greek", "sheet")
    )
    assert seqs(index, sender="ALICE@a.test") == [lunch, sheet]
    assert seqs(index, sender="@a.test") == [lunch, sheet]
    assert seqs(index, recipient="alice@a.test") == [re_]
    assert seqs(index, recipient="dave@example.org") == [multi]  # only in the envelope
    assert seqs(index, recipient="@example.org") == [multi]
    assert seqs(index, address="bounce@gov.gr") == [multi]
    assert seqs(index, address="@b.test") == [lunch, re_, greek]
    assert seqs(index, start=T0 + DAY, end=T0 + 3 * DAY) == [re_, multi]
    assert seqs(index, subject="lunch") == [lunch, re_]
    assert seqs(index, subject="pizza") == []
    assert seqs(index, words="pizza") == [lunch, re_, sheet]
    assert seqs(index, words="pizza good") == [re_]
    assert seqs(index, words="spreadsheet") == [sheet]  # the subject is searched too
    assert seqs(index, words="q3") == []  # attachment names are not
    assert seqs(index, words="PIZZA", sender="alice@a.test", start=T0 + DAY) == [sheet]
    assert seqs(index, attachment="q3 report") == [multi]
    assert seqs(index, attachment="report.xls") == [multi]
    assert seqs(index, attachment="q3.xls") == []
    assert seqs(index, attachment="προυπ.PDF") == [multi]
    assert (
        seqs(index, message_id="<budget-1@gov.gr>")
        == seqs(index, message_id="budget-1@gov.gr")
        == [multi]
    )
    # Greek and accents, either way round; HTML text but not its scripts
    assert seqs(index, words="καλημερα cafe") == [multi]
    assert seqs(index, words="ΚΑΛΗΜΈΡΑ Café") == [multi]
    assert seqs(index, words="συναντηση") == [greek]
    assert seqs(index, subject="ελληνικα") == [greek]
    assert seqs(index, words="zebra") == [multi]
    assert seqs(index, words="hiddenscript") == []
    total, page = index.search(VaultQuery(start=0.0), 2, 3)
    assert total == len(vault.seq) and [h.seq for h in page] == [multi, greek, sheet]
    hit = page[0]
    assert (hit.sender, hit.subject, hit.message_id) == (
        "nikos@gov.gr",
        "Budget résumé",
        "budget-1@gov.gr",
    )
    assert hit.recipients == ("anna@example.org", "bob@example.org", "carol@other.test")


HOSTILE = ['"', '"pizza', "pizza*", "NEAR(pizza good)", "pizza OR good", "pizza NOT good", "AND",
     "{subject}: pizza", "pizza)", "^pizza", "subject:pizza", "x" * 999, "word " * 40, "y" * 5000, "***", ""]  # fmt: skip


def test_hostile_words_give_results_or_a_clear_error(vault: Vault) -> None:
    index, _ = indexed(vault)
    for words in HOSTILE:
        for query in (
            VaultQuery(words=words),
            VaultQuery(subject=words),
            VaultQuery(attachment=words),
        ):
            try:
                index.search(query, 0, 10)
            except QueryError as e:
                assert str(e)
    assert seqs(index, words='pizza"') == [vault.seq[k] for k in ("lunch", "re", "sheet")]
    assert seqs(index, words="pizza OR nothing") == []  # OR is a word, not an operator
    with pytest.raises(QueryError):
        index.search(VaultQuery(sender="not an address"), 0, 10)


def test_a_sqlite_without_fts5_is_named() -> None:
    class NoFTS5:
        def execute(self, sql: str) -> None:
            raise sqlite3.OperationalError("no such module: fts5")

    with pytest.raises(IndexError_, match="has no FTS5"):
        check_fts5(NoFTS5())  # type: ignore[arg-type]


def test_catch_up_expire_and_reindex(vault: Vault) -> None:
    index, indexer = indexed(vault)
    lunch, re_, sheet = (vault.seq[k] for k in ("lunch", "re", "sheet"))
    asks = [("words", "pizza"), ("address", "@b.test"), ("attachment", "q3"), ("start", 0.0)]
    before = {k: seqs(index, **{k: v}) for k, v in asks}
    # a frame still being written at the tail is left for the next catch-up
    with open(vault.log.segments()[-1][1], "ab") as segment:
        segment.write(b"R " + b"0" * 64 + b' 500 0\n{"seq"')
    assert indexer.catch_up() == 0
    # more mail, one reusing an old body; a new indexer reads on from its cursor
    body = b"pizza tomorrow\r\n"
    seq = vault.capture(b"From: eve@e.test\r\nSubject: again\r\n\r\n" + body, T0 + 6 * DAY)
    assert Indexer(vault.log, index).catch_up() == 1
    assert seqs(index, words="tomorrow") == [lunch, seq]
    vault.append("expire", {"records": [lunch, re_], "rule": "default", "reason": "test"})
    vault.append("audit", {"action": "search", "by": "x", "query": {}, "count": 0, "detail": ""})
    assert indexer.catch_up() == 0
    assert seqs(index, words="pizza") == [sheet, seq]
    assert lunch not in seqs(index, start=0.0)
    # reindex gives the same results, expiry included
    expected = {k: [s for s in v if s not in (lunch, re_)] for k, v in before.items()}
    expected["start"].append(seq)
    expected["words"].append(seq)
    assert indexer.rebuild() == len(vault.seq) + 1
    assert {k: seqs(index, **{k: v}) for k, v in asks} == expected
    assert index.last_seq() == seq


def test_the_commands_search_audit_and_reindex(
    vault: Vault, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data", str(tmp_path)]
    assert main(["vault", "search", *data, "--words", "pizza", "--per-page", "2"]) == 0
    out = capsys.readouterr().out
    assert "Lunch plans" in out and "Spreadsheet" not in out
    assert "3 messages, page 1 of 2" in out
    assert (
        main(
            [
                "vault",
                "search",
                *data,
                "--from",
                "alice@a.test",
                "--page",
                "2",
                "--per-page",
                "1",
                "--json",
            ]
        )
        == 0
    )
    found = json.loads(capsys.readouterr().out)
    assert found["total"] == 2 and [h["subject"] for h in found["hits"]] == ["Spreadsheet"]
    audits = [r.fields for _, r in vault.log.records() if r.fields["kind"] == "audit"]
    assert [(a["action"], a["query"], a["count"]) for a in audits] == [
        ("search", {"words": "pizza"}, 3), ("search", {"sender": "alice@a.test"}, 2)
    ]  # fmt: skip
    lines = [json.loads(x) for x in (tmp_path / "log" / "audit.log").read_text().splitlines()]
    assert [x["action"] for x in lines] == ["vault.search", "vault.search"]
    assert main(["vault", "search", *data]) == 1
    assert main(["vault", "search", *data, "--words", "***"]) == 1
    assert main(["vault", "search", *data, "--since", "soon"]) == 1
    assert "ourmail:" in capsys.readouterr().err
    assert main(["vault", "reindex", *data]) == 0
    assert f"reindexed {len(vault.seq)} messages" in capsys.readouterr().out
    assert main(["vault", "search", *data, "--address", "@b.test", "--until", "2026-01-02"]) == 0
    assert "2 messages, page 1 of 1" in capsys.readouterr().out
