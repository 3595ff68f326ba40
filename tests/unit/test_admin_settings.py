"""``[admin]`` settings (issue 17 point 4): the postmaster is the admin by default; admins and
domain admins are normalised; a bad entry stops the server with a message naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ourmail.config import ConfigError, load_settings


def settings(tmp_path: Path, text: str = "") -> object:
    (tmp_path / "ourmail.toml").write_text('domains = ["Example.TEST"]\n' + text)
    return load_settings(data=str(tmp_path), hostname="mail.example.test").admin


def test_the_postmaster_is_the_admin_by_default(tmp_path: Path) -> None:
    admin = settings(tmp_path)
    assert admin.admins == ("postmaster@example.test",)  # type: ignore[attr-defined]
    assert admin.domain_admins == {}  # type: ignore[attr-defined]


def test_admins_and_domain_admins_are_normalised(tmp_path: Path) -> None:
    admin = settings(
        tmp_path,
        '[admin]\nadmins = ["Boss@Example.TEST", "boss@example.test"]\n'
        '[admin.domain_admins]\n"IT@Δήμος.gr" = ["Δήμος.gr", "other.TEST"]\n',
    )
    assert admin.admins == ("boss@example.test",)  # type: ignore[attr-defined]
    greek = "Δήμος.gr".encode("idna").decode().lower()
    assert admin.domain_admins == {f"it@{greek}": (greek, "other.test")}  # type: ignore[attr-defined]


def test_an_admin_is_spelled_as_logins_are(tmp_path: Path) -> None:
    """NFC, as the login normalises: a decomposed é still names the same admin."""
    admin = settings(tmp_path, '[admin]\nadmins = ["Jose\u0301@example.test"]\n')
    assert admin.admins == ("jos\u00e9@example.test",)  # type: ignore[attr-defined]


def test_no_full_admin_at_all(tmp_path: Path) -> None:
    assert settings(tmp_path, "[admin]\nadmins = []\n").admins == ()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[admin]\nadmins = "postmaster@example.test"\n', "'admin.admins' has the wrong type"),
        ("[admin]\nadmins = [1]\n", "admin.admins"),
        ('[admin]\nadmins = ["nobody"]\n', "admin.admins"),
        ('[admin]\nadmins = ["a@b@c"]\n', "admin.admins"),
        ('[admin]\nadmins = [" @example.test"]\n', "admin.admins"),  # would be a catch-all
        ('[admin.domain_admins]\n"it@example.test" = []\n', "admin.domain_admins.it@example.test"),
        ('[admin.domain_admins]\n"it@example.test" = "x.test"\n', "admin.domain_admins"),
        ('[admin.domain_admins]\n"it@example.test" = ["not a domain"]\n', "not a domain name"),
        ("[admin]\nsuperusers = []\n", "unknown setting 'admin.superusers'"),
    ],
)
def test_bad_admin_settings_are_refused(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        settings(tmp_path, text)
