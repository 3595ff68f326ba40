"""The admin console's vault pages on a real server (issue 18 points 6-8): mail sent over
SMTP is found by a vault admin's search (words, an attachment name, an address), a record's
page shows its envelope and header but not its body, and an export is a zip that
docs/vault-verify.py checks without ourmail.  Each search, view and export is in the vault's
audit trail and in audit.log before its answer.  A full admin without the vault role and a
plain user get 403 (logged); hostile fields get 400 and a forged export 403."""

from __future__ import annotations

import io
import json
import re
import smtplib
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from conftest import PASSWORD, RunningServer, running_server
from webhelp import Browser

from ourmail.auth.passwords import hash_password
from ourmail.config import AdminSettings
from ourmail.vault.segments import SegmentLog

CHECKER = Path(__file__).parents[2] / "docs" / "vault-verify.py"
RECORDS = "records-officer@example.test"
OTHER_ADMIN = "postmaster@example.test"
OFFICER_PASSWORD = "the records officer's password"
ADMIN_PASSWORD = "postmaster's own long password"

BUDGET = (
    b"From: Dana <dana@elsewhere.test>\r\nTo: user@example.test\r\n"
    b"Subject: Quarterly budget\r\nMessage-ID: <budget-1@elsewhere.test>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n"
    b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe kumquat figures are in.\r\n"
    b"--b1\r\nContent-Type: application/pdf\r\n"
    b'Content-Disposition: attachment; filename="report-q3.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n"
)
GREEK = (
    b"From: Eleni <eleni@elsewhere.test>\r\nTo: user@example.test\r\n"
    b"Subject: =?utf-8?b?zprOsc67zrfOvM6tz4HOsQ==?=\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    + "Συνάντηση για τον προϋπολογισμό.\r\n".encode()
)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    admin = AdminSettings(admins=(OTHER_ADMIN, RECORDS), vault_admins=(RECORDS,))
    with running_server(tmp_path_factory.mktemp("vaultweb"), admin=admin) as server:
        accounts = server.server.accounts
        accounts.set_password(OTHER_ADMIN, hash_password(ADMIN_PASSWORD))
        accounts.add_user(RECORDS, hash_password(OFFICER_PASSWORD))
        with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as smtp:
            smtp.sendmail("dana@elsewhere.test", [server.user], BUDGET)
            smtp.sendmail("eleni@elsewhere.test", [server.user], GREEK)
        yield server


def browser(srv: RunningServer, address: str, password: str) -> Browser:
    b = Browser(srv)
    assert b.login(address, password).status == 303
    return b


def audit_records(srv: RunningServer) -> list[dict[str, Any]]:
    log = SegmentLog(srv.data / "vault")
    return [r.fields for _, r in log.records() if r.fields["kind"] == "audit"]


def audit_lines(srv: RunningServer) -> list[dict[str, Any]]:
    path = srv.data / "log" / "audit.log"
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def seqs(page: str) -> list[int]:
    return [int(s) for s in re.findall(r"/admin/vault/message\?seq=(\d+)", page)]


def test_search_view_and_export(srv: RunningServer) -> None:
    officer = browser(srv, RECORDS, OFFICER_PASSWORD)
    overview = officer.get("/admin")
    assert 'href="/admin/vault"' in overview.text  # the menu shows the vault to its admins
    empty = officer.get("/admin/vault")
    assert empty.status == 200 and "messages match" not in empty.text

    found = officer.get("/admin/vault?" + urlencode({"words": "kumquat"}))
    assert found.status == 200, found.text
    (budget,) = seqs(found.text)
    assert "Quarterly budget" in found.text and "dana@elsewhere.test" in found.text
    assert seqs(officer.get("/admin/vault?attachment=report-q3.pdf").text) == [budget]
    greek = officer.get("/admin/vault?" + urlencode({"words": "προυπολογισμο"}))
    assert len(seqs(greek.text)) == 1 and "Καλημέρα" in greek.text
    assert seqs(officer.get("/admin/vault?from=%40elsewhere.test&since=2000-01-01").text)
    assert not seqs(officer.get("/admin/vault?from=%40elsewhere.test&until=2000-01-01").text)

    record = officer.get(f"/admin/vault/message?seq={budget}")
    assert record.status == 200
    assert "budget-1@elsewhere.test" in record.text and "smtp" in record.text
    assert "kumquat figures" not in record.text  # the header, never the body

    page = officer.get("/admin/vault?" + urlencode({"words": "kumquat"}))
    exported = officer.post("/admin/vault/export", {"csrf": page.csrf(), "words": "kumquat"})
    assert exported.status == 200, exported.text
    assert exported.headers["content-type"] == "application/zip"
    assert "attachment" in exported.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(exported.body)) as z:
        assert f"{budget}.eml" in z.namelist() and "proof.json" in z.namelist()
        assert z.read(f"{budget}.eml").endswith(BUDGET)  # as it came, after our trace fields
    out = srv.data.parent / "export.zip"
    out.write_bytes(exported.body)
    checked = subprocess.run(
        [sys.executable, "-I", str(CHECKER), str(out)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0 and checked.stdout.startswith("OK"), checked.stdout
    assert not list((srv.data / "vault" / "exports").iterdir())  # removed once sent

    actions = [(r["action"], r["by"].split(" ")[0]) for r in audit_records(srv)]
    assert ("search", RECORDS) in actions and ("view", RECORDS) in actions
    assert ("export", RECORDS) in actions
    started, result = [r["detail"] for r in audit_records(srv) if r["action"] == "export"][-2:]
    assert started.startswith("started: zip") and "sha256" in result  # audited before written
    logged = {line["action"] for line in audit_lines(srv) if line["who"] == RECORDS}
    assert {"vault.search", "vault.view", "vault.export"} <= logged


def test_only_vault_admins(srv: RunningServer) -> None:
    before = len(audit_records(srv))
    admin = browser(srv, OTHER_ADMIN, ADMIN_PASSWORD)
    assert 'href="/admin/vault"' not in admin.get("/admin").text
    user = browser(srv, srv.user, PASSWORD)
    for who in (admin, user):
        assert who.get("/admin/vault?words=kumquat").status == 403
        assert who.get("/admin/vault/message?seq=2").status == 403
        token = who.get("/").text
        match = re.search(r'data-csrf="([^"]+)"', token) or re.search(
            r'name="csrf" value="([^"]+)"', token
        )
        assert match
        answer = who.post("/admin/vault/export", {"csrf": match.group(1), "words": "kumquat"})
        assert answer.status == 403
    assert len(audit_records(srv)) == before  # nothing searched, nothing shown
    refused = [
        line
        for line in audit_lines(srv)
        if line["who"] == OTHER_ADMIN and "vault" in line["action"]
    ]
    assert refused and all(line["result"] != "ok" for line in refused)


def test_hostile_fields_and_a_forged_export(srv: RunningServer) -> None:
    officer = browser(srv, RECORDS, OFFICER_PASSWORD)
    before = len(audit_records(srv))
    assert officer.get("/admin/vault?since=2026-13-45").status == 400
    assert officer.get("/admin/vault?" + urlencode({"words": "a\r\nb"})).status == 400
    assert officer.get("/admin/vault?" + urlencode({"words": "x" * 600})).status == 400
    assert officer.get("/admin/vault/message?seq=abc").status == 400
    assert officer.get("/admin/vault/message?seq=999999").status == 404
    assert officer.get("/admin/vault?" + urlencode({"words": '"*) NEAR('})).status in (200, 400)
    assert officer.post("/admin/vault/export", {"words": "kumquat"}).status == 403
    assert len(audit_records(srv)) <= before + 1  # at most the one query the index ran
