"""``[srs]`` and the MTA-STS settings of ``[queue]``: defaults, values, refusals; and the
config template still parses."""

from pathlib import Path

import pytest
from twisted.internet import reactor

from ourmail.config import ConfigError, QueueSettings, config_template, load_settings
from ourmail.queue.runner import OutboundQueue


def settings(tmp_path: Path, toml: str) -> object:
    (tmp_path / "ourmail.toml").write_text(toml)
    return load_settings(data=str(tmp_path), hostname="mail.example.org")


def test_defaults_are_secure(tmp_path: Path) -> None:
    s = load_settings(data=str(tmp_path), hostname="mail.example.org")
    assert (s.srs.enabled, s.srs.max_age) == (True, 21)
    q = s.queue
    assert (q.mta_sts, q.mta_sts_port, q.mta_sts_ca_file, q.mta_sts_timeout) == (True, 443, "", 60)


def test_values(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        "[srs]\nenabled = false\nmax_age = 7\n"
        '[queue]\nmta_sts = false\nmta_sts_port = 8443\nmta_sts_ca_file = "/ca.pem"\n'
        "mta_sts_timeout = 5\n",
    )
    assert (s.srs.enabled, s.srs.max_age) == (False, 7)  # type: ignore[attr-defined]
    q = s.queue  # type: ignore[attr-defined]
    assert (q.mta_sts, q.mta_sts_port, q.mta_sts_ca_file, q.mta_sts_timeout) == (
        False,
        8443,
        "/ca.pem",
        5,
    )


@pytest.mark.parametrize(
    "toml",
    [
        "[srs]\nmax_age = 0\n",
        "[srs]\nmax_age = 2000\n",
        '[srs]\nenabled = "yes"\n',
        "[srs]\nsecret = 1\n",
        "[queue]\nmta_sts = 1\n",
        "[queue]\nmta_sts_port = 0\n",
        "[queue]\nmta_sts_ca_file = 1\n",
    ],
)
def test_refused(tmp_path: Path, toml: str) -> None:
    with pytest.raises(ConfigError):
        settings(tmp_path, toml)


def test_template_parses(tmp_path: Path) -> None:
    s = load_settings(data=str(tmp_path), hostname="mail.example.org")
    (tmp_path / "ourmail.toml").write_text(config_template(s))
    assert load_settings(data=str(tmp_path)).srs.max_age == 21


def test_unreadable_mta_sts_ca_file_stops_the_start(tmp_path: Path) -> None:
    settings = QueueSettings(mta_sts_ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match=r"missing\.pem"):
        OutboundQueue(settings, tmp_path, "mx.test", None, None, reactor)  # type: ignore[arg-type]
