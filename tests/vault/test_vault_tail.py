"""The vault's tail after crashes and with several appending processes: the catalog follows
the segments' real tail, a torn tail is cut off and kept, a grown segment is scanned on from
where this process left it (the review of issue 18)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from ourmail.config import ConfigError, load_settings
from ourmail.interfaces import VaultEnvelope
from ourmail.service import make_vault
from ourmail.vault.catalog import Catalog
from ourmail.vault.segments import Damaged, SegmentLog
from ourmail.vault.vault import Capture, Vault
from ourmail.vault.verify import verify

ENVELOPE = VaultEnvelope("smtp", "a@example.org", recipients=("b@example.org",))


def open_at(root: Path) -> Vault:
    """A vault writing outside any commit group (the tests call ``write`` themselves)."""
    log = SegmentLog(root)
    return Vault(log, Catalog(root, log), group=None)  # type: ignore[arg-type]


def test_catalog_ahead_of_the_segments_after_a_power_cut(tmp_path: Path) -> None:
    vault = open_at(tmp_path)
    vault.write([Capture(b"Subject: first\r\n\r\nother\r\n", ENVELOPE)])
    vault.log.sync()
    segment = vault.log.segments()[-1][1]
    size = segment.stat().st_size
    message = b"Subject: hi\r\n\r\nthe body\r\n"
    vault.write([Capture(message, ENVELOPE)])  # never acknowledged: ...
    with open(segment, "r+b") as f:  # ... the catalog and head reached the disk, this did not
        f.truncate(size)
    vault.catalog.close()
    again = open_at(tmp_path)
    assert again.catalog.last_seq() == 2  # the phantom blob and capture are forgotten
    [seq] = again.write([Capture(message, ENVELOPE)])  # the sender tries again
    assert again.catalog.message(seq) == message
    assert [r.fields["kind"] for _, r in again.log.records()] == ["blob", "capture"] * 2


def test_phantom_rows_are_forgotten_by_an_open_vault_too(tmp_path: Path) -> None:
    vault = open_at(tmp_path)
    vault.write([Capture(b"Subject: a\r\n\r\nA\r\n", ENVELOPE)])
    segment = vault.log.segments()[-1][1]
    size = segment.stat().st_size
    vault.write([Capture(b"Subject: b\r\n\r\nB\r\n", ENVELOPE)])
    with open(segment, "r+b") as f:
        f.truncate(size)
    vault.log = SegmentLog(tmp_path)  # as after a restart, the catalog's file kept
    vault.catalog.log = vault.log
    [seq] = vault.write([Capture(b"Subject: b\r\n\r\nB\r\n", ENVELOPE)])
    assert vault.catalog.message(seq) == b"Subject: b\r\n\r\nB\r\n"


def test_a_body_stored_again_after_expiry_is_found_after_a_rebuild(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path)
    body = hashlib.sha256(b"BODY").hexdigest()
    with log.locked():
        ((_, blob), _) = log.append(
            [("blob", {}, b"BODY"), ("capture", {"body": body, "size": 10}, b"A: a\r\n\r\n")],
            1.0,
        )
        log.append([("expire", {"records": [blob.seq]}, None)], 2.0)
        w = log.append(
            [("blob", {}, b"BODY"), ("capture", {"body": body, "size": 10}, b"A: b\r\n\r\n")],
            3.0,
        )
    catalog = Catalog(tmp_path, log)
    assert catalog.blob(body) == w[0][1].seq
    assert catalog.message(w[1][1].seq) == b"A: b\r\n\r\nBODY"


def test_two_processes_appending_in_turn_keep_one_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = SegmentLog(tmp_path), SegmentLog(tmp_path)
    scans: list[object] = []
    scan = SegmentLog._scan_tail

    def counted(self: SegmentLog, path: Path, start: object = None) -> object:
        scans.append(start)
        return scan(self, path, start)  # type: ignore[arg-type]

    monkeypatch.setattr(SegmentLog, "_scan_tail", counted)
    for n in range(3):
        for log in (first, second):
            with log.locked():
                log.append([("notice", {"text": f"{n}"}, b"x" * 1000)] * 2, float(n))
    report = verify(SegmentLog(tmp_path))
    assert report.ok and report.last[0] == 12
    # One full scan (the second's first append), then only what the other one appended.
    assert len(scans) == 5 and scans[0] is None and None not in scans[1:]


def test_a_zero_filled_tail_is_cut_and_kept(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path)
    with log.locked():
        log.append([("notice", {"text": "a"}, None)], 1.0)
        ((position, _),) = log.append([("notice", {"text": "b"}, b"x" * 300)], 1.0)
    segment = log.segments()[-1][1]
    data = segment.read_bytes()
    kept = segment.with_name(f"{segment.name}.cut-{position.offset}")
    torn_tails = (b"\0" * (len(data) - position.offset), data[position.offset :][:30])
    for torn, cut in zip(torn_tails, (kept, kept.with_name(f"{kept.name}-2")), strict=True):
        segment.write_bytes(data[: position.offset] + torn + b"\0" * 500)
        again = SegmentLog(tmp_path)
        with again.locked():
            again.append([("notice", {"text": "after"}, None)], 2.0)
        assert [r.seq for _, r in again.records()] == [1, 2]
        assert cut.read_bytes() == torn + b"\0" * 500  # an earlier cut is not overwritten
    segment.write_bytes(data[: position.offset] + b"garbage" + b"\0" * 500)
    with pytest.raises(Damaged), SegmentLog(tmp_path).locked():
        SegmentLog(tmp_path).append([("notice", {"text": "no"}, None)], 3.0)


def other_process(code: str, root: Path) -> str:
    """What ``code`` prints, run in another Python process with ``root`` as ``p``."""
    setup = "import sys, sqlite3; from pathlib import Path; p = Path(sys.argv[1]);"
    done = subprocess.run(
        [sys.executable, "-c", setup + code, str(root)], check=True, capture_output=True
    )
    return done.stdout.decode().strip()


def test_a_replaced_catalog_is_reopened(tmp_path: Path) -> None:
    vault = open_at(tmp_path)
    vault.write([Capture(b"Subject: a\r\n\r\nA\r\n", ENVELOPE)])
    rebuild = "from ourmail.vault.catalog import Catalog; from ourmail.vault.segments import"
    rebuild += " SegmentLog; [Path(f'{p}/catalog.sqlite{s}').unlink() for s in ('', '-wal')];"
    rebuild += " Catalog(p, SegmentLog(p)).close()"
    other_process(rebuild, tmp_path)  # a new catalog file, as a rebuild makes
    [seq] = vault.write([Capture(b"Subject: b\r\n\r\nB\r\n", ENVELOPE)])
    last = "print(sqlite3.connect(p / 'catalog.sqlite').execute('SELECT max(seq) FROM records')"
    assert other_process(last + ".fetchone()[0])", tmp_path) == str(seq)


def test_a_store_without_a_group_commit_cannot_have_a_vault(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[vault\] enabled = false"):
        make_vault(load_settings(data=str(tmp_path)), object())  # type: ignore[arg-type]
