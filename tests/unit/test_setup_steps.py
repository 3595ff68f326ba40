"""The set-up wizard's steps below the web (ourmail/manage/setupwizard.py,
docs/setup-wizard.md): changing the primary domain keeps the admin's domain served and gives
each chosen domain a postmaster; going back to the names step sends the admin to the DKIM step
again and Finish wants a key for every domain; a file that cannot be written is a refusal
(``io``), audited; what needs a restart is told against the running settings; and the first
start opens the wizard only for a new data folder, once."""

from __future__ import annotations

import json
import shutil
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import _ensure_reactor
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

from ourmail.auth.accounts import AccountDB
from ourmail.config import Settings, load_settings
from ourmail.interfaces import AccountRefused, Actor
from ourmail.manage import setupstate
from ourmail.manage.audit import AuditFile
from ourmail.manage.setupwizard import LocalSetupWizard
from ourmail.service import first_start

POSTMASTER = "postmaster@first.test"
ADMIN = Actor(POSTMASTER, "web", "127.0.0.1")
PASSWORD = "correct horse battery staple"


def call(step: Callable[..., Any], *args: Any) -> Any:
    """A step's result, run on the tests' reactor."""
    _ensure_reactor()
    return blockingCallFromThread(reactor, step, ADMIN, *args)


def settings_of(data: Path, domains: tuple[str, ...] = ()) -> Settings:
    return load_settings(data=str(data), domains=domains, hostname="mail.first.test")


def wizard_of(settings: Settings) -> LocalSetupWizard:
    return LocalSetupWizard(settings, AuditFile(settings.data_dir))


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Path]:
    """A first-started data folder whose admin chose a password."""
    data = tmp_path / "data"
    settings = settings_of(data, ("first.test",))
    first_start(settings)
    call(wizard_of(settings).set_password, POSTMASTER, PASSWORD)
    yield data


def audit(data: Path) -> list[dict[str, Any]]:
    lines = (data / "log" / "audit.log").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_a_new_primary_domain_keeps_the_admins_and_has_a_postmaster(data: Path) -> None:
    wizard = wizard_of(settings_of(data, ("first.test", "old.test")))
    state = call(wizard.set_names, ["example.org"], "mail.example.org")
    assert wizard.restart_needed() == ("hostname", "primary", "removed:old.test")
    assert state.restart == wizard.restart_needed()
    # RFC 5321 §4.5.1: postmaster@ each domain reaches the admin.
    assert AccountDB(data).alias("postmaster@example.org") == [POSTMASTER]
    assert ("alias.add", "postmaster@example.org", "ok") in {
        (e["action"], e["target"], e["result"]) for e in audit(data)
    }
    # Restarted with the file: going back and choosing the new domain alone keeps the one
    # of the admin (and of the accounts), and only what still differs needs a restart.
    restarted = load_settings(data=str(data))
    assert restarted.domains == ("example.org", "first.test")
    again = wizard_of(restarted)
    assert again.restart_needed() == ()
    call(again.set_names, ["example.org"], "mx.example.org")
    written = tomllib.loads((data / "ourmail.toml").read_text())
    assert written["domains"] == ["example.org", "first.test"]
    assert written["admin"]["admins"] == [POSTMASTER]
    assert again.restart_needed() == ("hostname",)


def test_going_back_to_the_names_means_dkim_again_for_every_domain(data: Path) -> None:
    wizard = wizard_of(settings_of(data))
    call(wizard.set_names, ["a.test"], "mail.a.test")
    call(wizard.users_done)
    call(wizard.make_dkim)
    state = call(wizard.set_names, ["a.test", "b.test"], "mail.a.test")
    assert state.next_step() == "dkim" and state.dkim == ()
    with pytest.raises(AccountRefused) as refused:
        call(wizard.finish)
    assert refused.value.code == "order"
    state = call(wizard.make_dkim)
    assert {r.name.rpartition("._domainkey.")[2] for r in state.dkim} == {"a.test", "b.test"}
    shutil.rmtree(data / "dkim" / "b.test")  # a key lost meanwhile
    with pytest.raises(AccountRefused) as refused:
        call(wizard.finish)
    assert (refused.value.code, refused.value.subject) == ("no-dkim", "b.test")
    assert wizard.state().open


def test_a_file_that_cannot_be_written_is_a_refusal_audited(data: Path) -> None:
    wizard = wizard_of(settings_of(data))
    call(wizard.set_names, ["a.test"], "mail.a.test")
    kept = setupstate.state_path(data)
    kept.unlink()
    kept.mkdir()  # setup.json cannot be replaced
    with pytest.raises(AccountRefused) as refused:
        call(wizard.users_done)
    assert refused.value.code == "io"
    assert {"action": "setup.users", "result": "refused: io"}.items() <= audit(data)[-1].items()
    assert "users" not in wizard.state().done


def test_the_wizard_opens_only_for_a_new_data_folder_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = settings_of(data, ("first.test",))
    first_start(settings)
    assert setupstate.load(data).open
    finished = setupstate.SetupState(open=False, done=("password", "names", "users"))
    setupstate.save(data, finished)
    # Every local user deleted later (an LDAP-only site): a postmaster again, no wizard.
    AccountDB(data).delete_user(POSTMASTER)
    first_start(settings)
    assert AccountDB(data).has_user(POSTMASTER)
    assert setupstate.load(data) == finished
