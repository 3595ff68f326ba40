"""``twistd ourmail --auth=ldap:URL``, ``ourmail ldap test ADDRESS`` and ``ourmail ldap login
NAME`` against a real slapd."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers.slapd import SUFFIX, Slapd, slapd, user_ldif
from rawclient import RawClient
from twistdhelp import REPO, Twistd

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(shutil.which("slapd") is None, reason="scripts/test installs slapd"),
]

PEOPLE = user_ldif("dana", "dana pw", "mailAlternateAddress: d.smith@example.test")


def test_twistd_with_an_ldap_checker(tmp_path: Path) -> None:
    with slapd(PEOPLE) as directory:
        server = Twistd(tmp_path / "data", ("--auth", f"ldap:{directory.url}/{SUFFIX}"))
        try:
            c = RawClient(server.ports["imaps"], tls=True)
            c.line()
            c.send(b'a LOGIN dana "dana pw"\r\n')
            assert c.until(b"a ")[-1].startswith(b"a OK")
            c.close()
        finally:
            server.stop()


def _run(data: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "ourmail", "--data", str(data), *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=60,
    )


def _ourmail(data: Path, *args: str) -> str:
    run = _run(data, *args)
    return run.stdout + run.stderr


@pytest.fixture
def configured(tmp_path: Path) -> Iterator[tuple[Path, Slapd]]:
    """A data folder whose ``ourmail.toml`` points at a running slapd."""
    data = tmp_path / "data"
    data.mkdir()
    with slapd(PEOPLE) as directory:
        (data / "ourmail.toml").write_text(
            f'domains = ["example.test"]\n[ldap]\nurl = "{directory.url}/{SUFFIX}?timeout=2"\n'
        )
        yield data, directory


def test_ourmail_ldap_test(configured: tuple[Path, Slapd]) -> None:
    data, directory = configured
    out = _ourmail(data, "ldap", "test", "dana@example.test")
    assert "a user; mail is delivered to the mailbox dana@example.test" in out, out
    out = _ourmail(data, "ldap", "test", "d.smith@example.test")
    assert "mail goes to dana@example.test" in out, out
    assert "unknown" in _ourmail(data, "ldap", "test", "nobody@example.test")
    directory.stop()
    assert "did not answer" in _ourmail(data, "ldap", "test", "dana@example.test")


def test_ourmail_ldap_login(configured: tuple[Path, Slapd]) -> None:
    data, directory = configured
    ok = _run(data, "ldap", "login", "dana", "--password-stdin", stdin="dana pw\n")
    assert ok.returncode == 0 and "logs in; the mailbox is dana@example.test" in ok.stdout
    bad = _run(data, "ldap", "login", "dana", "--password-stdin", stdin="wrong\n")
    assert bad.returncode == 1 and "refused" in bad.stdout, bad.stdout + bad.stderr
    assert "dana pw" not in ok.stdout + ok.stderr + bad.stdout + bad.stderr
    directory.stop()
    down = _run(data, "ldap", "login", "dana", "--password-stdin", stdin="dana pw\n")
    assert down.returncode == 1 and "did not answer" in down.stdout


def test_a_bad_ldap_url_is_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "ourmail.toml").write_text('[ldap]\nurl = "ldap://x"\n')  # no base DN
    for args in (("test", "a@example.test"), ("login", "a", "--password-stdin")):
        run = _run(data, "ldap", *args)
        assert run.returncode == 1 and "Traceback" not in run.stderr
        assert "the LDAP URL needs a base DN" in run.stderr
