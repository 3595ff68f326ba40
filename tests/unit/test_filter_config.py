"""``[filters]`` and ``[dns]`` in ourmail.toml: a chain that cannot work stops the start."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock

from ourmail.config import ConfigError, FilterSettings, load_settings
from ourmail.filters.registry import build_chain
from ourmail.interfaces import FilterEnvironment


def settings_from(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    (tmp_path / "ourmail.toml").write_text(text)
    return load_settings(data=str(tmp_path), hostname="mx.example.test")


def env(tmp_path: Path) -> FilterEnvironment:
    return FilterEnvironment(None, Clock(), "mx.example.test", ("example.test",), tmp_path)


def test_dns_servers_reach_the_queue_too(tmp_path: Path) -> None:
    s = settings_from(tmp_path, '[dns]\nservers = ["127.0.0.1:5353"]\n')
    assert s.dns.servers == ("127.0.0.1:5353",) and s.queue.dns_servers == ("127.0.0.1:5353",)


def test_chain_and_options_are_read(tmp_path: Path) -> None:
    s = settings_from(
        tmp_path,
        '[filters]\nchain = ["filtercheck:factory"]\ncheck_lmtp = true\n'
        '[filters.check."filtercheck:factory"]\ntimeout = 3\naction = "junk"\n',
    )
    assert s.filters.chain == ("filtercheck:factory",) and s.filters.check_lmtp
    chain = build_chain(s.filters, env(tmp_path), Clock())
    (check,) = chain.checks
    assert check.timeout == 3.0 and check.action == "junk"


@pytest.mark.parametrize(
    "text",
    [
        '[filters]\nchain = "spf"\n',
        "[filters]\nchain = [1]\n",
        '[filters]\nchain = ["a:b", "a:b"]\n',
        "[filters]\nunknown = 1\n",
        '[filters.check]\nx = "not a table"\n',
        '[dns]\nservers = ["no-port"]\n',
    ],
)
def test_bad_settings_are_config_errors(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        settings_from(tmp_path, text)


@pytest.mark.parametrize(
    ("chain", "options", "message"),
    [
        (("nosuchcheck",), {}, "unknown check 'nosuchcheck'"),
        (("nosuchmodule:factory",), {}, "cannot load"),
        (("os:path",), {}, "does not provide ICheckFactory"),
        (("filtercheck:factory",), {"filtercheck:factory": {"bogus": 1}}, "unknown option"),
        (("filtercheck:factory",), {"filtercheck:factory": {"timeout": -1}}, "timeout"),
        (("filtercheck:factory",), {"filtercheck:factory": {"on_error": "x"}}, "on_error"),
        (("filtercheck:factory",), {"other": {}}, "not in the chain"),
    ],
)
def test_checks_that_cannot_work_are_config_errors(
    tmp_path: Path, chain: tuple[str, ...], options: dict[str, dict[str, object]], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_chain(FilterSettings(chain=chain, options=options), env(tmp_path), Clock())


def test_filters_list_prints_the_chain_or_its_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ourmail.admin.cli import main

    (tmp_path / "ourmail.toml").write_text(
        '[filters]\nchain = ["filtercheck:factory"]\ncheck_submission = true\n'
        '[filters.check."filtercheck:factory"]\ntimeout = 3\non_error = "tempfail"\n'
    )
    assert main(["filters", "list", "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "runs on: smtp (MX), submission" in out
    assert (
        "1. filtercheck:factory: at connect, mail, rcpt, data; time-out 3 s, on failure tempfail"
        in out
    )
    (tmp_path / "ourmail.toml").write_text('[filters]\nchain = ["nosuch"]\n')
    assert main(["filters", "list", "--data", str(tmp_path)]) == 1
    assert "unknown check 'nosuch'" in capsys.readouterr().err
