"""``vault export`` and ``docs/vault-verify.py`` (issue 18 point 7), ``vault head --sign``
and ``vault verify --anchors`` (point 2): an export checks with Python's standard library
alone, and a changed message or manifest line is caught."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from ourmail.admin import cli
from ourmail.secure import selfsigned
from ourmail.vault import expiry, heads
from ourmail.vault.export import export, select
from ourmail.vault.exportfiles import Proof
from ourmail.vault.headjob import DailyHeadSigner
from ourmail.vault.segments import Position, SegmentLog
from ourmail.vault.verify import signed_anchors, verify
from tests.vault.proofhelp import build, remove_content, where

CHECKER = Path(__file__).resolve().parents[2] / "docs" / "vault-verify.py"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    build(tmp_path / "vault")
    return tmp_path


def check(path: Path) -> tuple[int, str]:
    """docs/vault-verify.py run by a bare interpreter: isolated, ourmail not importable."""
    done = subprocess.run(
        [sys.executable, "-I", str(CHECKER), str(path)],
        capture_output=True,
        text=True,
        cwd=path.parent,
        timeout=60,
    )
    return done.returncode, done.stdout


def ourmail(data: Path, *args: str) -> int:
    return cli.main(["vault", *args, "--data", str(data)])


def test_a_zip_export_checks_and_a_changed_message_does_not(data: Path) -> None:
    log = SegmentLog(data / "vault")
    done = export(log, select(log, everything=True), "zip", data / "all.zip", "all")
    assert (done.count, done.left_out) == (12, 9)  # the other 9 records are bodies
    assert (data / "all.zip").stat().st_mode & 0o777 == 0o600  # it holds mail
    assert check(data / "all.zip") == (
        0,
        f"OK: 12 messages match the manifest and their capture records, in a chain of 21 "
        f"records to head 21 {log.head()[1]}; 0 expired (their content removed, as an "
        "expire record in the proof says), none skipped\n",
    )
    with zipfile.ZipFile(data / "all.zip") as source, zipfile.ZipFile(data / "bad.zip", "w") as z:
        for info in source.infolist():
            content = source.read(info)
            z.writestr(
                info,
                content.replace(b"Minutes", b"Minutez") if info.filename == "6.eml" else content,
            )
    assert check(data / "bad.zip") == (1, "NOT OK: message 6 (6.eml) has been changed\n")


def test_an_mbox_export_checks_and_a_changed_manifest_line_does_not(data: Path) -> None:
    assert (
        ourmail(data, "export", "--seq", "3-9", "--format", "mbox", "--out", str(data / "x.mbox"))
        == 0
    )
    mbox = (data / "x.mbox").read_bytes()
    assert mbox.startswith(b"From clerk")
    assert b"\r\n>From the clerk:\r\n>>From a quoted line\r\n" in mbox  # mboxrd (RFC 4155)
    assert check(data / "x.mbox")[0] == 0
    manifest = data / "x.mbox.manifest.csv"
    lines = manifest.read_text().splitlines(keepends=True)
    row = lines[2].split(",")
    row[2] = "0" * 64
    lines[2] = ",".join(row)
    manifest.write_text("".join(lines))
    code, out = check(data / "x.mbox")
    assert code == 1
    assert "NOT OK: message 6: manifest.csv and manifest.json differ" in out
    assert "NOT OK: message 6: the manifest's sha256 is not the vault's" in out


def test_an_expired_message_is_listed_and_the_rest_check(data: Path) -> None:
    log = SegmentLog(data / "vault")
    remove_content(log, 13)
    with log.locked():
        log.append([("expire", {"records": [13], "rule": [], "reason": "retention"}, None)], 0)
    done = export(log, [11, 13, 14], "zip", data / "x.zip", "11,13,14")
    assert (done.count, done.expired) == (2, 1)
    with zipfile.ZipFile(data / "x.zip") as z:
        assert sorted(z.namelist()) == [
            "11.eml",
            "14.eml",
            "manifest.csv",
            "manifest.json",
            "proof.json",
        ]
        rows = json.load(z.open("manifest.json"))["messages"]
    assert [(r["seq"], r["status"]) for r in rows] == [(11, "ok"), (13, "expired"), (14, "ok")]
    assert check(data / "x.zip")[0] == 0


def test_an_export_is_audited_in_the_vault_and_the_audit_log(data: Path) -> None:
    assert ourmail(data, "export", "--all", "--out", str(data / "all.zip")) == 0
    log = SegmentLog(data / "vault")
    (_, last), (_, start), *_ = reversed(list(log.records(22)))
    fields = start.fields  # written and fsynced before the export was
    assert (fields["kind"], fields["action"], fields["count"]) == ("audit", "export", 21)
    assert fields["detail"] == {
        "result": "started",
        "format": "zip",
        "out": str((data / "all.zip").absolute()),
    }
    fields = last.fields
    assert (fields["kind"], fields["action"], fields["count"]) == ("audit", "export", 12)
    assert fields["query"] == "all" and len(fields["detail"]["sha256"]) == 64
    line = json.loads((data / "log" / "audit.log").read_text().splitlines()[-1])
    assert (line["action"], line["result"]) == ("vault.export", "ok")
    assert verify(log).ok


def test_choosing_by_search_asks_the_index(data: Path) -> None:
    assert (
        ourmail(data, "export", "--from", "clerk1@town.example", "--out", str(data / "s.zip")) == 0
    )
    with zipfile.ZipFile(data / "s.zip") as z:
        names = [n for n in z.namelist() if n.endswith(".eml")]
        assert names and all(b"clerk1@town.example" in z.read(n) for n in names)
    assert check(data / "s.zip")[0] == 0


def test_verify_exits_1_and_names_the_problem(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head = (data / "vault" / "head").read_text().split()
    assert ourmail(data, "verify", "--anchor", f"{head[0]}:{head[1]}") == 0
    assert "1 anchors checked; the vault is whole" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        ourmail(data, "verify", "--anchor", f"30:{head[1]}")
    assert "anchor 30:" in capsys.readouterr().out
    (data / "vault" / "head").write_text(f"25 {'0' * 64}\n")
    with pytest.raises(SystemExit) as exit_:
        ourmail(data, "verify", "--json")
    assert exit_.value.code == 1
    report = json.loads(capsys.readouterr().out)
    assert report["problems"][0]["text"] == "head names record 25, but the last record is 21"


def test_a_signed_head_anchors_verify_and_an_export(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    selfsigned.ensure(data / "tls" / "cert.pem", data / "tls" / "key.pem", "mail.town.example")
    assert ourmail(data, "head", "--sign") == 0
    signed = json.loads(capsys.readouterr().out)
    assert signed["seq"] == 21 and signed["signature"]
    log = SegmentLog(data / "vault")
    heads_log = data / "vault" / "heads.log"
    report = verify(log, list(signed_anchors(heads_log)))
    assert report.ok and report.anchors == 1
    export(log, [2, 4], "zip", data / "two.zip", "2,4")
    with zipfile.ZipFile(data / "two.zip") as z:
        proof_head = json.loads(z.open("proof.json").readline().decode().rstrip() + "]}")
    assert proof_head["signed_heads"][0]["hash"] == signed["hash"]
    assert check(data / "two.zip")[0] == 0
    forged = dict(signed, hash="1" * 64)
    heads_log.write_text(json.dumps(forged) + "\n")
    texts = [p.text for p in verify(log, list(signed_anchors(heads_log))).problems]
    assert texts[0].startswith(
        f"the head signed at {signed['time']} names record 21 with hash 111111111111"
    )
    assert texts[1].endswith(
        "its signature does not verify with certificate " + signed["fingerprint"][:16] + "…"
    )


def test_the_daily_signer_signs_at_midnight_utc(data: Path) -> None:
    selfsigned.ensure(data / "tls" / "cert.pem", data / "tls" / "key.pem", "mail.town.example")
    clock = Clock()
    clock.advance(1_780_012_800 - 60)  # 23:59 UTC
    log = SegmentLog(data / "vault")
    signer = DailyHeadSigner(
        log, lambda: (data / "tls" / "cert.pem", data / "tls" / "key.pem"), clock
    )
    signer.startService()
    (call,) = clock.getDelayedCalls()
    assert call.getTime() == 1_780_012_800
    head = signer.sign_now()
    assert head is not None and head.seq == 21
    assert verify(log, list(signed_anchors(data / "vault" / "heads.log"))).ok
    signer.stopService()
    assert not clock.getDelayedCalls()


def test_a_forgery_that_rewrites_manifest_and_proof_breaks_the_chain(data: Path) -> None:
    """A changed message with its new sha256 written into both manifests and its capture
    record's metadata in the proof: the chain no longer reaches the head."""
    log = SegmentLog(data / "vault")
    export(log, [6, 7], "mbox", data / "f.mbox", "6,7")
    mbox = (data / "f.mbox").read_bytes()
    rows = json.loads((data / "f.mbox.manifest.json").read_text())["messages"]
    start, length = rows[0]["mbox_offset"], rows[0]["mbox_length"]
    forged = mbox[start : start + length].replace(b"Minutes 3", b"Minutes 8")
    (data / "f.mbox").write_bytes(mbox[:start] + forged + mbox[start + length :])
    old, new = rows[0]["message_sha256"], hashlib.sha256(forged).hexdigest()
    for name in ("manifest.csv", "manifest.json", "proof.json"):
        path = data / f"f.mbox.{name}"
        path.write_text(path.read_text().replace(old, new))
    code, out = check(data / "f.mbox")
    assert code == 1
    assert "NOT OK: proof record 7 does not follow record 6\n" in out
    assert "NOT OK: message 6: its record hash is not the chain's\n" in out


@pytest.mark.parametrize("status", ["expired", "damaged"])
def test_a_changed_message_marked_expired_or_damaged_is_not_ok(data: Path, status: str) -> None:
    """An edited .eml whose manifest row says it is expired or damaged, so its content is
    not checked: no expire record names it, so the export is not OK."""
    log = SegmentLog(data / "vault")
    export(log, [6, 7], "mbox", data / "f.mbox", "6,7")
    for name in ("manifest.csv", "manifest.json"):
        path = data / f"f.mbox.{name}"
        path.write_text(
            path.read_text()
            .replace(",ok,", f",{status},", 1)
            .replace('"status": "ok"', f'"status": "{status}"', 1)
        )
    code, out = check(data / "f.mbox")
    assert code == 1
    expected = (
        "message 6 is listed as expired, but no expire record in the proof names it"
        if status == "expired"
        else "message 6 is listed as 'damaged', not ok"
    )
    assert out == f"NOT OK: {expected}\n"


def statuses(path: Path) -> list[tuple[int, str]]:
    with zipfile.ZipFile(path) as z:
        return [(r["seq"], r["status"]) for r in json.load(z.open("manifest.json"))["messages"]]


def test_content_gone_without_an_expire_record_is_damaged(data: Path) -> None:
    log = SegmentLog(data / "vault")
    remove_content(log, 13)
    export(log, [11, 13], "zip", data / "x.zip", "11,13")
    assert statuses(data / "x.zip") == [(11, "ok"), (13, "damaged")]
    assert check(data / "x.zip")[0] == 1


def test_an_export_reads_bodies_from_the_segment_it_opened_while_expiry_rewrites_it(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Message 14's body is blob 8 (segment 2); when the pass reaches segment 3, expiry
    renames a rewritten segment 2 (record 7's content cut, so blob 8 moves)."""
    log = SegmentLog(data / "vault")
    segment, start, _ = where(log, 7)
    blob_at = where(log, 8)
    add = Proof.add

    def racing(proof: Proof, seq: int, prev: str, meta: bytes) -> None:
        if seq == 13:
            expiry.remove_content(log, {7: (Position(segment, start), 1)})
        add(proof, seq, prev, meta)

    monkeypatch.setattr(Proof, "add", racing)
    export(log, [14], "zip", data / "x.zip", "14")
    assert where(log, 8) != blob_at  # it moved while the export ran
    assert statuses(data / "x.zip") == [(14, "ok")]


def test_verify_warns_without_a_signed_head_and_refuses_a_foreign_signer(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing heads.log is said loudly; a heads.log re-signed with another key fails."""
    selfsigned.ensure(data / "tls" / "cert.pem", data / "tls" / "key.pem", "mail.town.example")
    assert ourmail(data, "verify") == 0
    out = capsys.readouterr().out
    assert "WARNING: no signed head checked: this proves the chain is consistent, not" in out
    assert f"WARNING: {data / 'vault' / 'heads.log'} is missing, yet the vault holds" in out
    log = SegmentLog(data / "vault")
    other = data / "other"
    selfsigned.ensure(other / "cert.pem", other / "key.pem", "mail.town.example")
    head = heads.sign(log.root, *log.head(), other / "cert.pem", other / "key.pem")
    with pytest.raises(SystemExit):
        ourmail(data, "verify")
    assert (
        f"the head signed at {head.time}: it is signed by certificate {head.fingerprint[:16]}…, "
        "whose key is neither the server's TLS key nor one given with --trust"
    ) in capsys.readouterr().out
    assert ourmail(data, "verify", "--trust", str(other / "cert.pem")) == 0
    assert "WARNING" not in capsys.readouterr().out
