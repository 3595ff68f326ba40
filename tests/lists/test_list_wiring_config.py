"""``[lists]`` in ourmail.toml: parsed, validated with clear errors, in the template."""

from __future__ import annotations

import tomllib
from pathlib import Path

import attrs
import pytest

from ourmail.config import ConfigError, ListsSettings, config_template, load_settings


def settings(tmp_path: Path, text: str) -> ListsSettings:
    (tmp_path / "ourmail.toml").write_text(text)
    return load_settings(data=str(tmp_path), hostname="mail.example.org", is_root=False).lists


def test_defaults_and_values(tmp_path: Path) -> None:
    assert settings(tmp_path, "") == ListsSettings()
    lists = settings(tmp_path, "[lists]\nenabled = false\nbatch = 500\nheld_days = 3\n")
    assert lists == ListsSettings(enabled=False, batch=500, held_days=3)
    assert settings(tmp_path, "[lists]\nheld_max = 50\n").held_max == 50


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("batch = 0", "'lists.batch' must be between 1 and 100000"),
        ("held_max = 0", "'lists.held_max' must be between 1 and 1000000"),
        ("confirm_hours = -1", "'lists.confirm_hours' must be between"),
        ("requests_per_address = 5000", "'lists.requests_per_address' must be between"),
        ('held_days = "7"', "'lists.held_days' has the wrong type: str"),
        ("enabled = 1", "'lists.enabled' has the wrong type: int"),
        ("owners = []", "unknown setting 'lists.owners'"),
    ],
)
def test_bad_values_are_refused_clearly(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        settings(tmp_path, f"[lists]\n{text}\n")


def test_the_template_documents_every_setting(tmp_path: Path) -> None:
    template = config_template(load_settings(data=str(tmp_path), hostname="mail.example.org"))
    section = template.partition("\n[lists]\n")[2].partition("\n[")[0]
    uncommented = "\n".join(line.removeprefix("# ") for line in section.splitlines())
    lines = [line for line in uncommented.splitlines() if "=" in line and "#" not in line]
    documented = tomllib.loads("\n".join(lines))
    assert documented == attrs.asdict(ListsSettings())
