"""What a reload finds changed in ourmail.toml, and which of it applies live
(ourmail/configreload.py)."""

from __future__ import annotations

from pathlib import Path

from ourmail.config import Settings, load_settings
from ourmail.configreload import changes, live_part


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
