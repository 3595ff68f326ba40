"""The greylisting state (RFC 6647) with a controlled clock: triplet networks, the delay,
``max_wait``, ``allow_for``, expiry and the size cap; exemptions; option errors."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor

from ourmail.config import ConfigError
from ourmail.filters.greylist import DAY, EXPIRE_EVERY, GreylistDB, factory, network_of
from ourmail.filters.registry import build_check
from ourmail.interfaces import ACCEPT, FilterEnvironment, MailContext
from ourmail.net.dns import make_resolver

NET = "192.0.2.0/24"


@pytest.fixture
def db(tmp_path: Path) -> GreylistDB:
    return GreylistDB(tmp_path / "g" / "greylist.sqlite", delay=300, max_wait=2 * DAY)


def test_networks_are_24_and_64() -> None:
    assert network_of(ipaddress.ip_address("192.0.2.77")) == "192.0.2.0/24"
    assert network_of(ipaddress.ip_address("2001:db8:1:2:3:4:5:6")) == "2001:db8:1:2::/64"


def test_delay_then_retry_then_allowed(db: GreylistDB) -> None:
    assert db.decide(NET, "a@x.test", "u@y.test", 1000).why == "new"
    early = db.decide(NET, "a@x.test", "u@y.test", 1100)
    assert (early.passed, early.wait, early.why) == (False, 200, "early")
    assert db.decide(NET, "a@x.test", "u@y.test", 1300).why == "retried"
    assert db.decide(NET, "b@z.test", "v@y.test", 1301).why == "allowed"
    assert db.decide(NET, "b@z.test", "v@y.test", 1300 + 30 * DAY + 1).why == "new"


def test_an_allowed_network_that_keeps_sending_stays_allowed(db: GreylistDB) -> None:
    db.decide(NET, "a@x.test", "u@y.test", 0)
    assert db.decide(NET, "a@x.test", "u@y.test", 300).why == "retried"
    assert db.decide(NET, "a@x.test", "u@y.test", 20 * DAY).why == "allowed"  # renewed
    assert db.decide(NET, "a@x.test", "u@y.test", 45 * DAY).why == "allowed"
    assert db.decide(NET, "a@x.test", "u@y.test", 80 * DAY).why == "new"  # silent too long


def test_a_retry_after_max_wait_starts_again(db: GreylistDB) -> None:
    db.decide(NET, "a@x.test", "u@y.test", 0)
    assert db.decide(NET, "a@x.test", "u@y.test", 2 * DAY + 1).why == "new"
    assert db.decide(NET, "a@x.test", "u@y.test", 2 * DAY + 302).passed


def test_expiry_and_the_cap_on_entries(tmp_path: Path) -> None:
    db = GreylistDB(tmp_path / "greylist.sqlite", delay=1, max_wait=100, max_entries=3)
    for i in range(5):
        db.decide(NET, f"s{i}@x.test", "u@y.test", 0)
    db.decide("198.51.100.0/24", "s@x.test", "u@y.test", 0)
    db.decide("198.51.100.0/24", "s@x.test", "u@y.test", 2)  # allowed for 30 days
    db.decide(NET, "late@x.test", "u@y.test", EXPIRE_EVERY + 1)  # expires the rest
    assert db.counts() == (1, 1)
    for i in range(20):  # a flood: trimmed after every max_entries / 10 new triplets
        db.decide("203.0.113.0/24", f"t{i}@x.test", "u@y.test", EXPIRE_EVERY + 2 + i)
        assert db.counts()[0] <= 3
    assert db.counts() == (3, 1)  # the newest three stay
    assert db.decide("203.0.113.0/24", "t19@x.test", "u@y.test", EXPIRE_EVERY + 30).passed


def env(tmp_path: Path) -> FilterEnvironment:
    return FilterEnvironment(make_resolver(["127.0.0.1:53"]), reactor, "mx.test", (), tmp_path)


def test_spf_pass_and_skip_networks_are_exempt(tmp_path: Path) -> None:
    check = factory.build({"skip_networks": ["192.0.2.0/24"]}, env(tmp_path))
    passed = MailContext("203.0.113.5", sender="a@x.test", recipient="u@y.test")
    passed.notes["spf"] = {"result": "pass", "domain": "x.test"}
    results: list[Any] = []
    check.check("rcpt", passed).addCallback(results.append)
    check.check("rcpt", MailContext("192.0.2.9", recipient="u@y.test")).addCallback(results.append)
    assert results == [ACCEPT, ACCEPT]
    assert not (tmp_path / "greylist").exists()  # decided without the database


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"delay": -1}, "'delay'"),
        ({"delay": 600, "max_wait": 300}, "longer than 'delay'"),
        ({"skip_spf_pass": "yes"}, "true or false"),
        ({"max_entries": 0}, "max_entries"),
        ({"skip_networks": ["nowhere"]}, "is not a network"),
        ({"triplet": "ip"}, "unknown option 'triplet'"),
    ],
)
def test_bad_options_are_config_errors(tmp_path: Path, options: Any, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        build_check("greylist", options, env(tmp_path))
