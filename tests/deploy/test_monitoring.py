"""contrib/monitoring (docs/operations.md): the alert rules pass ``promtool check rules``,
each fires in ``promtool test rules`` for its condition and stays quiet for a healthy series,
and every metric the rules and the Grafana dashboard use is in a real scrape of a running
server (with clamd and spamd as its filter back-ends), so they cannot drift from the code."""

from __future__ import annotations

import json
import os
import re
import shutil
import smtplib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import RunningServer, running_server
from metricshelp import Samples, scrape
from peers import clamd as clamd_peer
from peers.spamd import spamd_peer
from webhelp import imap_login

from ourmail.admin.cli import main as cli_main
from ourmail.config import FilterSettings

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "contrib" / "monitoring"
ALERTS = MONITORING / "alerts.yml"
ALERTS_TEST = MONITORING / "alerts_test.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
OPERATIONS = ROOT / "docs" / "operations.md"
#: A metric of ours in a PromQL expression.
OURS = re.compile(r"\bourmail_[a-z0-9_]+\b")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        raise RuntimeError(
            "promtool is not installed: apt-get install prometheus (tests/debian-packages.txt)"
        )
    return subprocess.run(
        ["promtool", *args], cwd=MONITORING, capture_output=True, text=True, timeout=60
    )


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def dashboard_panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", ALERTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_each_rule_fires_and_stays_quiet_in_promtools_unit_tests() -> None:
    done = promtool("test", "rules", ALERTS_TEST.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    cases = [
        case
        for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    for rule in rules():
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']} never fires"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']} is never quiet"


def test_each_rule_has_severity_summary_description_and_a_runbook_section() -> None:
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("## ") or line.startswith("### ")
    }
    for rule in rules():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page.endswith("/operations.md") and anchor in headings, notes["runbook_url"]


def runbook_commands() -> set[tuple[str, str]]:
    """Each ``ourmail GROUP COMMAND`` of docs/operations.md: in inline code or a code line."""
    text = OPERATIONS.read_text()
    spans = re.findall(r"`(ourmail [^`]+)`", text)
    spans += [line for line in text.splitlines() if line.startswith("ourmail ")]
    found = set()
    for span in spans:
        words = span.split()
        if len(words) >= 3 and words[2].isalpha():
            found.add((words[1], words[2]))
    return found


def test_every_command_of_the_runbook_exists(capsys: pytest.CaptureFixture[str]) -> None:
    commands = runbook_commands()
    assert {("queue", "list"), ("cert", "status"), ("shard", "move")} <= commands
    for group, command in sorted(commands):
        with pytest.raises(SystemExit) as done:
            cli_main([group, command, "--help"])
        assert done.value.code == 0, (group, command, capsys.readouterr().err)
        assert f"usage: ourmail {group} {command}" in capsys.readouterr().out


def test_the_dashboard_is_grafana_json_with_a_target_in_every_panel() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    panels = dashboard_panels()
    titles = " ".join(p["title"].lower() for p in panels)
    for subject in ("accepted", "queue", "latency", "logins", "verdicts", "connections"):
        assert subject in titles
    for subject in ("volume", "certificate", "back-ends", "cpu", "memory", "restarts"):
        assert subject in titles
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert OURS.search(target["expr"]) or "up{" in target["expr"], panel["title"]


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Samples]:
    """One scrape of a running server with clamd and spamd in its chain, after a message,
    a failed and a good login (so the labelled counters have their first samples)."""
    clamd, spamd = clamd_peer.shared(), spamd_peer()
    filters = FilterSettings(
        chain=("spf", "antivirus", "spam"),
        options={"antivirus": {"address": clamd.address}, "spam": {"address": spamd.address}},
    )
    with running_server(tmp_path_factory.mktemp("monitoring"), filters=filters) as srv:
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
            s.ehlo("client.example.net")
            s.mail("sender@example.net")
            assert s.rcpt("nobody@example.test")[0] == 550
            assert s.rcpt(srv.user)[0] == 250
            assert s.data(b"Subject: watched\r\n\r\nHello\r\n")[0] == 250
        assert imap_login(srv, "wrong password").startswith(b"a NO")
        assert imap_login(srv, srv.password).startswith(b"a OK")
        yield _until_watched(srv)


def _until_watched(srv: RunningServer) -> Samples:
    """A scrape once the first volume measure and back-end probes are in (both run at
    start, in a thread and asynchronously)."""
    deadline = time.monotonic() + 20
    while True:
        samples = scrape(srv)
        names = {name for name, _ in samples}
        if {"ourmail_volume_free_bytes", "ourmail_backend_up"} <= names:
            return samples
        assert time.monotonic() < deadline, sorted(names)
        time.sleep(0.1)


def test_the_new_figures_are_real(scraped: Samples) -> None:
    assert scraped[("ourmail_backend_up", (("backend", "clamd"),))] == 1
    assert scraped[("ourmail_backend_up", (("backend", "spamd"),))] == 1
    [(root, shards)] = [
        (dict(labels)["root"], dict(labels)["shards"])
        for name, labels in scraped
        if name == "ourmail_volume_size_bytes"
    ]
    data = Path(root) if shards == "" else Path(root).parent
    # The data folder, or its mail root once it exists: one filesystem, measured once.
    assert (root, shards) in ((str(data), ""), (str(data / "mail"), "00-ff"))
    labels = (("root", root), ("shards", shards))
    st = os.statvfs(root)
    assert scraped[("ourmail_volume_size_bytes", labels)] == st.f_blocks * st.f_frsize
    assert 0 < scraped[("ourmail_volume_free_bytes", labels)] <= st.f_blocks * st.f_frsize


def test_every_metric_of_the_rules_and_the_dashboard_is_in_a_real_scrape(
    scraped: Samples,
) -> None:
    exposed = {name for name, _ in scraped}
    used_by_rules = {m for r in rules() for m in OURS.findall(r["expr"])}
    used_by_board = {
        m for p in dashboard_panels() for t in p["targets"] for m in OURS.findall(t["expr"])
    }
    assert used_by_rules and used_by_board
    assert sorted(used_by_rules - exposed) == []
    assert sorted(used_by_board - exposed) == []
