"""The SMTP spool: small messages in memory, large ones in a file that is removed after."""

from pathlib import Path

from ourmail.smtp import spool as spool_mod
from ourmail.smtp.spool import Spool


def test_small_message_stays_in_memory(tmp_path: Path) -> None:
    s = Spool(tmp_path / "spool", "id1")
    s.write(b"Received: x\r\n")
    s.write(b"Subject: a\r\n\r\nbody\r\n")
    s.insert(13, b"Date: now\r\n")
    assert s.source() == b"Received: x\r\nDate: now\r\nSubject: a\r\n\r\nbody\r\n"
    assert s.size == len(s.source()) and s.on_disk() is None
    assert not (tmp_path / "spool").exists()


def test_large_message_spills_to_a_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(spool_mod, "IN_MEMORY", 10)
    s = Spool(tmp_path / "spool", "id2")
    s.write(b"Received: x\r\n")
    s.write(b"Subject: big\r\n\r\n" + b"y" * 100)
    s.insert(13, b"Date: now\r\n")
    s.write(b"\r\n")
    path = s.source()
    assert isinstance(path, Path)
    assert (
        path.read_bytes()
        == b"Received: x\r\nDate: now\r\nSubject: big\r\n\r\n" + b"y" * 100 + b"\r\n"
    )
    assert s.head(13) == b"Received: x\r\n"
    s.discard()
    assert not path.exists()
