"""Vault search benchmark (issue 18): build a vault, index it, time the searches an auditor runs.
Prints figures; asserts nothing.

    .venv/bin/python bench/vault_search.py                                   # 1,000,000 messages
    .venv/bin/python bench/vault_search.py --messages 100000 --folder /tmp/v100k

The vault's segments are written directly with ``SegmentLog`` (as the capture would, a
``blob`` record per new body and a ``capture`` record per message), in big batches.  The
messages are made up but shaped like an organisation's mail: several thousand senders, local
users as recipients, words drawn by a Zipf law from an English-like vocabulary with some
Greek, text of a few hundred octets to a few kilo-octets, an HTML part in some, an attachment
in a few, and some bodies repeated (the vault keeps them once).  Then the ``Indexer`` indexes
it all (timed), and each search is run several times (the median is shown).

With ``--folder`` an existing vault of the same ``--messages`` is reused (and so is its index
unless ``--reindex``); targets at 1,000,000 messages: by sender under 1 s, full text under 5 s.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ourmail.interfaces import VaultQuery
from ourmail.vault.index import COUNT_LIMIT, SQLiteIndex
from ourmail.vault.indexer import Indexer
from ourmail.vault.segments import SegmentLog

T0 = 1_704_067_200.0  # 2024-01-01 UTC
SPAN = 3 * 365 * 86400.0  # the mail is spread over three years
GREEK = [
    "καλημέρα", "συνάντηση", "προϋπολογισμός", "δήμος", "απόφαση", "σύμβαση", "έγγραφο",
    "υπουργείο", "αίτηση", "προθεσμία", "έκθεση", "πρόσκληση", "ανακοίνωση", "διαγωνισμός",
    "πολίτες", "υπηρεσία", "γραφείο", "έργο",
]  # fmt: skip
SYLLABLES = [
    "ka", "re", "mi", "to", "sa", "po", "la", "ne", "di", "vo", "ru", "te", "an", "el", "os",
    "ur", "ip", "em", "ba", "co", "fi", "gu", "ho", "je",
]  # fmt: skip


def vocabulary(rng: random.Random, size: int = 20_000) -> list[str]:
    """Made-up words, a few Greek ones among the commonest thousand."""
    words: dict[str, None] = {}
    while len(words) < size:
        words["".join(rng.choices(SYLLABLES, k=rng.randint(2, 4)))] = None
    out = list(words)
    for n, word in enumerate(GREEK):
        out.insert(50 + n * 40, word)
    return out


class Mail:
    """Deterministic made-up mail (see the module text)."""

    def __init__(self, seed: int = 18, senders: int = 5000, users: int = 800) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - made-up mail, repeatable
        self.words = vocabulary(self.rng)
        self.weights = [1 / (rank + 1) for rank in range(len(self.words))]
        self.cum = list(_accumulate(self.weights))
        self.users = [f"user{n}@gov.example" for n in range(users)]
        outside = [f"contact{n}@org{n % 400}.example" for n in range(senders - users)]
        self.senders = self.users + outside
        self.bodies: list[bytes] = []

    def text(self, count: int) -> str:
        words = self.rng.choices(self.words, cum_weights=self.cum, k=count)
        lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
        return "\r\n".join(lines)

    def message(self, i: int) -> bytes:
        rng = self.rng
        sender = self.senders[min(int(rng.paretovariate(1.2)) - 1, len(self.senders) - 1)]
        if rng.random() < 0.5:
            sender = rng.choice(self.senders)
        to = rng.sample(self.users, rng.choice((1, 1, 1, 2, 3)))
        subject = self.text(rng.randint(3, 8)).replace("\r\n", " ")
        head = (
            f"From: {sender.split('@')[0].title()} <{sender}>\r\nTo: {', '.join(to)}\r\n"
            f"Subject: {subject}\r\nDate: Mon, 02 Nov 2026 10:00:00 +0000\r\n"
            f"Message-ID: <{i}.{rng.getrandbits(32)}@bench.example>\r\nMIME-Version: 1.0\r\n"
        )
        if self.bodies and rng.random() < 0.02:  # a newsletter or a forward: a body seen before
            body = rng.choice(self.bodies)
            return (head + 'Content-Type: text/plain; charset="utf-8"\r\n\r\n').encode() + body
        text = self.text(int(rng.lognormvariate(5.0, 0.8)) + 10)
        kind = rng.random()
        if kind < 0.06:
            name = f"{self.text(2).replace(' ', '_')}.pdf"
            blob = base64.encodebytes(rng.randbytes(rng.randint(5_000, 60_000))).replace(
                b"\n", b"\r\n"
            )
            body = (
                (
                    f"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
                    "--b\r\nContent-Type: application/pdf\r\n"
                    f'Content-Disposition: attachment; filename="{name}"\r\n'
                    "Content-Transfer-Encoding: base64\r\n\r\n"
                ).encode()
                + blob
                + b"--b--\r\n"
            )
            head += 'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        elif kind < 0.3:
            body = (
                f"--a\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
                "--a\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
                f"<html><body><p>{text}</p></body></html>\r\n"
                "--a--\r\n"
            ).encode()
            head += 'Content-Type: multipart/alternative; boundary="a"\r\n\r\n'
        else:
            body = (text + "\r\n").encode()
            head += 'Content-Type: text/plain; charset="utf-8"\r\n\r\n'
        if len(self.bodies) < 1000 and rng.random() < 0.01:
            self.bodies.append(body)
        return head.encode() + body


def _accumulate(values: list[float]) -> list[float]:
    total, out = 0.0, []
    for v in values:
        total += v
        out.append(total)
    return out


def build(folder: Path, count: int, batch: int = 100) -> tuple[float, int]:
    """Write ``count`` messages into a new vault at ``folder``; seconds and octets."""
    log = SegmentLog(folder)
    mail = Mail()
    known: set[str] = set()
    started = time.monotonic()
    octets = 0
    for first in range(0, count, batch):
        items: list[tuple[str, dict[str, Any], bytes | None]] = []
        for i in range(first, min(first + batch, count)):
            message = mail.message(i)
            octets += len(message)
            cut = message.index(b"\r\n\r\n") + 4
            header, body = message[:cut], message[cut:]
            sha = hashlib.sha256(body).hexdigest()
            if sha not in known:
                known.add(sha)
                items.append(("blob", {}, body))
            arrival = T0 + SPAN * i / count
            envelope = {"via": "smtp", "sender": "", "recipients": [], "mailboxes": [],
                        "client": "", "user": "", "id": str(i), "arrival": arrival}  # fmt: skip
            fields = {"body": sha, "message_sha256": hashlib.sha256(message).hexdigest(),
                      "size": len(message), "envelope": envelope}  # fmt: skip
            items.append(("capture", fields, header))
        with log.locked():
            log.append(items, T0 + SPAN * first / count)
    log.sync()
    (folder / "bench-messages").write_text(str(count))
    return time.monotonic() - started, octets


def median_time(run: Callable[[], object], runs: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--folder", type=Path, help="build here, or reuse the vault found here")
    parser.add_argument("--reindex", action="store_true", help="index a reused vault again")
    parser.add_argument("--runs", type=int, default=5, help="runs of each search (median shown)")
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="vault-bench-"))
    marker = folder / "bench-messages"
    reused = marker.exists() and marker.read_text() == str(args.messages)
    if not reused:
        if folder.exists():
            shutil.rmtree(folder)
        seconds, octets = build(folder, args.messages)
        print(f"build: {args.messages} messages, {octets / 1e6:.0f} MB, in {seconds:.1f} s "
              f"({args.messages / seconds:.0f} messages/s)")  # fmt: skip
    segments = sum(p.stat().st_size for _, p in SegmentLog(folder).segments())
    print(f"vault: {args.messages} messages, segments {segments / 1e6:.0f} MB")
    index = SQLiteIndex(folder / "index.sqlite")
    indexer = Indexer(SegmentLog(folder), index)
    if not reused or args.reindex or index.last_seq() == 0:
        started = time.monotonic()
        added = indexer.rebuild()
        seconds = time.monotonic() - started
        print(f"index: {added} messages in {seconds:.1f} s ({added / seconds:.0f} messages/s)")
    size = sum(p.stat().st_size for p in folder.glob("index.sqlite*"))
    print(f"index size: {size / 1e6:.0f} MB ({size / max(1, index.count()):.0f} octets a message)")
    mail = Mail()
    sender = mail.senders[40]  # a busy sender, not the busiest
    user = mail.users[123]
    word1, word2, common = mail.words[800], mail.words[1500], mail.words[3]
    month = (T0 + SPAN / 2, T0 + SPAN / 2 + 30 * 86400)
    searches = [
        ("by sender", VaultQuery(sender=sender), 0),
        ("by sender domain", VaultQuery(sender="@org7.example"), 0),
        ("full text, one word", VaultQuery(words=word1), 0),
        ("full text, two words", VaultQuery(words=f"{word1} {word2}"), 0),
        ("full text, Greek", VaultQuery(words="συναντηση"), 0),
        ("date range + address", VaultQuery(address=user, start=month[0], end=month[1]), 0),
        ("page 100 of a broad query", VaultQuery(words=common), 99 * 50),
    ]
    for name, query, offset in searches:
        seconds, result = median_time(lambda q=query, o=offset: index.search(q, o, 50), args.runs)
        total, hits = result  # type: ignore[misc]
        print(
            f"search {name}: {seconds * 1000:.0f} ms median of {args.runs} "
            f"({total}{'+' if total >= offset + COUNT_LIMIT else ''} found, {len(hits)} shown)"
        )
    if not args.folder:
        shutil.rmtree(folder)
    os.sync()


if __name__ == "__main__":
    main()
