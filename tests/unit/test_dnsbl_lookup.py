"""The dnsbl check's pieces: query names (RFC 5782 §2.1, §2.4), which answers are listings,
reason sanitising, the bounded TTL cache, and option errors."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor

from ourmail.config import ConfigError, load_settings
from ourmail.filters.dnsbl import Zone, factory, query_name, sanitise
from ourmail.filters.netlist import client_ip
from ourmail.filters.registry import build_check
from ourmail.interfaces import FilterEnvironment
from ourmail.net.dns import make_resolver
from ourmail.net.ttlcache import TTLCache


def test_ipv4_query_names_reverse_the_octets() -> None:
    assert query_name(ipaddress.ip_address("192.0.2.99"), "bl.test") == "99.2.0.192.bl.test"


def test_ipv6_query_names_reverse_the_nibbles() -> None:
    # RFC 5782 §2.4's example address.
    ip = ipaddress.ip_address("2001:db8:1:2:3:4:567:89ab")
    assert (
        query_name(ip, "ugly.example.com")
        == "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com"
    )


def test_ipv4_mapped_clients_are_looked_up_as_ipv4() -> None:
    assert client_ip("::ffff:192.0.2.1") == ipaddress.ip_address("192.0.2.1")
    assert client_ip("fe80::1%eth0") == ipaddress.ip_address("fe80::1")
    assert client_ip("not an address") is None


@pytest.mark.parametrize(
    ("answer", "listed"),
    [
        ("127.0.0.2", True),
        ("127.0.0.10", True),
        ("127.0.1.2", True),
        ("127.0.0.1", False),  # RFC 5782 §5
        ("127.255.255.254", False),  # a list's "you may not query" answer
        ("10.0.0.2", False),
        ("garbage", False),
    ],
)
def test_default_answers(answer: str, listed: bool) -> None:
    assert Zone("bl.test").lists(answer) is listed


def test_configured_answers() -> None:
    zone = Zone("bl.test", answers=(ipaddress.ip_network("127.0.0.4/30"),))
    assert [zone.lists(f"127.0.0.{n}") for n in (2, 4, 7, 8)] == [False, True, True, False]


def test_sanitise_keeps_printable_ascii_and_bounds_the_length() -> None:
    assert sanitise("Listed\r\n\x00by\tus \xe9 https://x.test/") == "Listed by us https://x.test/"
    long = sanitise("y" * 10_000)
    assert len(long) == 200 and long.endswith("...")


def test_the_cache_honours_ttl_and_size() -> None:
    cache: TTLCache[str, int] = TTLCache(2)
    cache.put("a", 1, ttl=10, now=0)
    assert cache.get("a", now=9.9) == (True, 1)
    assert cache.get("a", now=10) == (False, None)
    cache.put("zero", 0, ttl=0, now=0)  # a TTL of 0 is not kept
    assert len(cache) == 0
    for i, key in enumerate("bcd"):
        cache.put(key, i, ttl=10, now=0)
    assert len(cache) == 2 and cache.get("b", now=1) == (False, None)


def env(tmp_path: Path) -> FilterEnvironment:
    return FilterEnvironment(make_resolver(["127.0.0.1:53"]), reactor, "mx.test", (), tmp_path)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({}, "at least one zone"),
        ({"zones": []}, "at least one zone"),
        ({"zones": "bl.test"}, "at least one zone"),
        ({"zones": [{"zone": "bl.test"}], "colour": 1}, "unknown option 'colour'"),
        ({"zones": [{"zone": "not a zone"}]}, "is not a DNS zone"),
        ({"zones": [{"zone": "bl.test", "wait": 1}]}, "unknown key 'wait'"),
        ({"zones": [{"zone": "a" * 60 + ".b" * 65}]}, "is not a DNS zone"),
        ({"zones": [{"zone": "bl.test", "weight": "1"}]}, "must be a number"),
        ({"zones": [{"zone": "bl.test", "answers": ["127.0.0.x"]}]}, "is not a network"),
        ({"zones": [{"zone": "bl.test"}], "threshold": 0}, "positive"),
        ({"zones": [{"zone": "bl.test"}], "action": "drop"}, "'reject' or 'junk'"),
        ({"zones": [{"zone": "bl.test"}], "query_timeout": 0}, "query_timeout"),
        ({"zones": [{"zone": "bl.test"}], "skip_networks": "10.0.0.0/8"}, "list of networks"),
    ],
)
def test_bad_options_are_config_errors(tmp_path: Path, options: Any, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        build_check("dnsbl", options, env(tmp_path))


def test_the_stage_follows_the_action(tmp_path: Path) -> None:
    zones = [{"zone": "BL.test."}]
    assert factory.build({"zones": zones}, env(tmp_path)).stages == ("connect",)
    check = factory.build({"zones": zones, "action": "junk"}, env(tmp_path))
    assert check.stages == ("data",) and check.zones[0].zone == "bl.test"


@pytest.mark.parametrize("check", ["dnsbl", "greylist"])
def test_the_documented_example_builds(tmp_path: Path, check: str) -> None:
    docs = (Path(__file__).parents[2] / "docs" / "filters.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", docs, re.S)
    (example,) = [b for b in blocks if f"[filters.check.{check}" in b]
    (tmp_path / "ourmail.toml").write_text(example)
    settings = load_settings(data=str(tmp_path), domains=("example.test",), hostname="mx.test")
    assert check in settings.filters.chain
    built = build_check(check, settings.filters.options[check], env(tmp_path))
    assert built.name == check
