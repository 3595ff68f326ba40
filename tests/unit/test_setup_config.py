"""The set-up wizard's edits of ``ourmail.toml`` (ourmail/manage/configfile.py): every comment
and setting of the admin's kept, each value it sets marked, a second run replacing the first
without piling up marks, an admin's own ``[admin] admins`` left alone, a file broken by hand
refused untouched, and the lines for a configuration kept elsewhere valid TOML."""

from __future__ import annotations

import datetime
import tomllib
from pathlib import Path

import pytest

from ourmail.config import config_template, load_settings
from ourmail.interfaces import AccountRefused
from ourmail.manage.configfile import config_lines, update_config

DAY = datetime.date(2026, 12, 1)
MARK = "# set by the set-up wizard on 2026-12-01"


def fresh(tmp_path: Path) -> Path:
    settings = load_settings(data=str(tmp_path), domains=("old.test",), hostname="mail.old.test")
    path = tmp_path / "ourmail.toml"
    path.write_text(config_template(settings) + '\n[quota.domain."old.test"]\nbytes = 5\n')
    return path


def test_values_are_set_and_marked_and_everything_else_kept(tmp_path: Path) -> None:
    path = fresh(tmp_path)
    before = path.read_text()
    admins = {"admin": {"admins": ["postmaster@old.test"]}}
    keep = {"admin": ("admins",)}
    for host in ("mx.first.test", "mx.new.test"):  # going back and choosing again
        update_config(
            path, {"hostname": host, "domains": ["new.test", "old.test"]}, admins, keep, DAY
        )
    after = path.read_text()
    removed = set(before.splitlines()) - set(after.splitlines())
    assert removed == {'domains = ["old.test"]'}
    assert after.count(MARK) == 3
    assert f'{MARK}\nhostname = "mx.new.test"\n{MARK}\ndomains = ["new.test", "old.test"]' in after
    settings = load_settings(data=str(tmp_path))
    assert (settings.hostname, settings.domains) == ("mx.new.test", ("new.test", "old.test"))
    assert settings.admin.admins == ("postmaster@old.test",)
    assert settings.quota.domains["old.test"].bytes == 5


def test_the_admins_own_admins_are_kept(tmp_path: Path) -> None:
    path = fresh(tmp_path)
    path.write_text(path.read_text().replace("[admin]\n", '[admin]\nadmins = ["boss@old.test"]\n'))
    admins = {"admin": {"admins": ["postmaster@old.test"]}}
    update_config(path, {"domains": ["old.test"]}, admins, {"admin": ("admins",)}, DAY)
    assert load_settings(data=str(tmp_path)).admin.admins == ("boss@old.test",)


# Not TOML; TOML the server refuses (a setting it does not know).
@pytest.mark.parametrize("broken", ["[broken\n", "nonsense = 1\n"])
def test_a_broken_file_is_refused_untouched(tmp_path: Path, broken: str) -> None:
    path = fresh(tmp_path)
    path.write_text(broken + path.read_text())
    before = path.read_bytes()
    with pytest.raises(AccountRefused) as refused:
        update_config(path, {"hostname": "mx.new.test", "domains": ["new.test"]}, {}, {}, DAY)
    assert refused.value.code == "bad-config"
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ourmail.toml"]


def test_lines_for_a_file_elsewhere_are_valid(tmp_path: Path) -> None:
    lines = config_lines(
        {"hostname": "mx.new.test", "domains": ["new.test"]}, {"admin": {"admins": ["p@new.test"]}}
    )
    assert tomllib.loads(lines) == {
        "hostname": "mx.new.test",
        "domains": ["new.test"],
        "admin": {"admins": ["p@new.test"]},
    }


def test_a_symbolic_link_stays_one(tmp_path: Path) -> None:
    real = fresh(tmp_path)
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    target = real.rename(elsewhere / "ourmail.toml")
    link = tmp_path / "ourmail.toml"
    link.symlink_to(target)
    update_config(link, {"hostname": "mx.new.test"}, {}, None, DAY)
    assert link.is_symlink() and link.resolve() == target
    assert tomllib.loads(target.read_text())["hostname"] == "mx.new.test"
