"""What a reload finds changed in ourmail.toml, and which of it applies live
(ourmail/configreload.py)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import LogEvent, formatEvent, globalLogPublisher

from ourmail.config import Settings, load_settings
from ourmail.configreload import ConfigReload, changes, live_part


def _settings(tmp_path: Path, text: str) -> Settings:
    (tmp_path / "ourmail.toml").write_text(text)
    return load_settings(data=str(tmp_path), hostname="mail.example.test", is_root=False)


def test_changes_name_each_setting_and_say_if_it_is_live(tmp_path: Path) -> None:
    old = _settings(tmp_path, "")
    new = _settings(
        tmp_path,
        "[limits]\nmax_recipients = 5\n[log]\nrecipients = false\n[queue]\nretry_first = 60\n",
    )
    found = {c.setting: c.live for c in changes(old, new)}
    assert found == {
        "[limits] max_recipients": True,
        "[log] recipients": True,
        "[queue] retry_first": False,
    }


def test_live_part_takes_only_the_live_settings(tmp_path: Path) -> None:
    old = _settings(tmp_path, "")
    new = _settings(
        tmp_path,
        '[limits]\nmax_recipients = 5\n[metrics]\nnetworks = ["10.0.0.0/8"]\n'
        "[queue]\nretry_first = 60\n",
    )
    merged = live_part(old, new)
    assert merged.limits.max_recipients == 5
    assert merged.metrics.networks == ("10.0.0.0/8",)
    assert merged.queue == old.queue  # needs a restart: the running value stays
    assert [c.setting for c in changes(merged, new)] == ["[queue] retry_first"]


def test_top_level_settings_need_a_restart(tmp_path: Path) -> None:
    old = _settings(tmp_path, "")
    new = _settings(tmp_path, 'domains = ["other.test"]\n')
    found = {c.setting: c.live for c in changes(old, new)}
    assert found["domains"] is False


def test_settings_are_named_as_in_the_file(tmp_path: Path) -> None:
    old = _settings(tmp_path, "")
    new = _settings(
        tmp_path,
        '[smtp]\nmx_processes = 7\n[ldap]\nurl = "ldap://ldap.example.org/dc=example"\n'
        "[auth]\nfailure_delay = 2\n",
    )
    assert {c.setting for c in changes(old, new)} == {
        "[smtp] mx_processes",
        "[ldap] url",
        "[auth]",
    }


def test_one_read_at_a_time_and_the_last_sighup_reads_last(tmp_path: Path) -> None:
    # Two quick SIGHUPs: reads in parallel threads could end in any order, and an older
    # version of the file applied last would undo the newer one.
    started = _settings(tmp_path, "")
    older = _settings(tmp_path, "[limits]\nmax_recipients = 5\n")
    newer = _settings(tmp_path, "[limits]\nmax_recipients = 7\n")
    reads: list[Deferred[Settings]] = []

    def in_thread(read: Callable[[], Settings]) -> Deferred[Settings]:
        reads.append(Deferred())
        return reads[-1]

    applied: list[int] = []
    reload = ConfigReload(
        started,
        lambda: started,
        [lambda s: applied.append(s.limits.max_recipients)],
        in_thread=in_thread,
    )
    first, second, third = reload.reload(), reload.reload(), reload.reload()
    assert len(reads) == 1  # the others wait for it
    reads[0].callback(older)
    assert first.called and not second.called and len(reads) == 2  # one more read
    reads[1].callback(newer)
    assert second.called and third.called and len(reads) == 2
    assert applied == [5, 7] and reload.settings.limits.max_recipients == 7


def test_an_error_while_applying_is_logged_and_the_next_reload_runs(tmp_path: Path) -> None:
    started = _settings(tmp_path, "")
    changed = _settings(tmp_path, "[limits]\nmax_recipients = 5\n")
    reads: list[Deferred[Settings]] = []

    def in_thread(read: Callable[[], Settings]) -> Deferred[Settings]:
        reads.append(Deferred())
        return reads[-1]

    def broken(settings: Settings) -> None:
        raise RuntimeError("apply failed")

    reload = ConfigReload(started, lambda: started, [broken], in_thread=in_thread)
    first = reload.reload()
    reads[0].callback(changed)
    assert first.called and first.result is None  # never fails
    second = reload.reload()
    assert len(reads) == 2 and not second.called


def test_a_file_gone_at_a_reload_is_refused_not_read_as_empty(tmp_path: Path) -> None:
    # An absent ourmail.toml is an empty one at start; at a reload it is an edit under way
    # (moved away, about to come back), not an order to put every setting back to default.
    started = _settings(
        tmp_path, '[limits]\nmax_recipients = 5\n[metrics]\nnetworks = ["10.0.0.0/8"]\n'
    )
    applied: list[Settings] = []
    reread = functools.partial(
        load_settings, data=str(tmp_path), hostname="mail.example.test", is_root=False
    )
    reload = ConfigReload(started, reread, [applied.append], in_thread=maybeDeferred)
    (tmp_path / "ourmail.toml").unlink()
    reload.reload()
    assert applied == [] and reload.settings == started
    (tmp_path / "ourmail.toml").write_text("[limits]\nmax_recipients = 7\n")
    reload.reload()
    assert [s.limits.max_recipients for s in applied] == [7]


def test_no_secret_of_a_change_that_needs_a_restart_is_logged(tmp_path: Path) -> None:
    # Only the live settings (limits, log recipients, metrics networks) are logged with
    # their values; a changed relay password file or rspamd password is named, never shown.
    started = _settings(tmp_path, "")
    secret = (
        '[queue.relay]\nhost = "smtp.example.net:587"\nusername = "mail"\n'
        'password_file = "/etc/ourmail/SECRET-relay-password"\n'
        '[filters.check.spam]\nbackend = "rspamd"\npassword = "SECRET-controller"\n'
        '[ldap]\nurl = "ldap://ldap.example.org/dc=example?password_file=/SECRET-ldap"\n'
    )
    (tmp_path / "ourmail.toml").write_text(secret)
    reread = functools.partial(
        load_settings, data=str(tmp_path), hostname="mail.example.test", is_root=False
    )
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        ConfigReload(started, reread, [], in_thread=maybeDeferred).reload()
    finally:
        globalLogPublisher.removeObserver(events.append)
    logged = [e for e in events if e.get("log_namespace") == "ourmail.configreload"]
    assert {e["setting"] for e in logged} >= {
        "[queue.relay] password_file",
        "[filters] options",
        "[ldap] url",
    }
    assert all("SECRET" not in formatEvent(e) and "SECRET" not in repr(e) for e in logged)
