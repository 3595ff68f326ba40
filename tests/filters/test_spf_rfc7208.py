"""The RFC 7208 test suite (``rfc7208-tests.yml`` from the pyspf sdist, data/ with its
licence) run against ourmail's SPF evaluation, every scenario's zone served by a real
twisted.names server on loopback (UDP answers over 512 octets truncated, so TCP is used
too) and asked through the resolver the server itself uses (``make_resolver``).

How the suite's zone data becomes DNS (as the suite's own runner, pyspf's testspf.py, reads
it): ``SPF`` records are served as type 99 and, when the name has no ``TXT`` entry, as TXT
too; ``TXT: NONE`` means no TXT record; ``TIMEOUT`` makes the server never answer queries
for that name, except those of the types listed before it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import served_zone
from peers import dns as testdns
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import blockingCallFromThread
from twisted.names import dns

from ourmail.filters.spf import Evaluation, SPFOutcome, check_host
from ourmail.net.dns import make_resolver

SUITE = Path(__file__).parent / "data" / "rfc7208-tests.yml"
#: A silent name costs one time-out per query; the suite only needs it short.
ATTEMPTS = (0.3,)

pytestmark = pytest.mark.usefixtures("no_system_dns")


def _scenarios() -> list[dict[str, Any]]:
    with SUITE.open("rb") as f:
        return list(yaml.safe_load_all(f))


SCENARIOS = _scenarios()
CASES = [
    pytest.param(n, name, id=f"{name}")
    for n, scenario in enumerate(SCENARIOS)
    for name in scenario["tests"]
]


def _strings(value: str | list[str]) -> list[bytes]:
    """A TXT/SPF value as character-strings of at most 255 octets (RFC 1035 §3.3.14)."""
    texts = [value] if isinstance(value, str) else value
    out = []
    for text in texts:
        raw = text.encode("utf-8")
        out += [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
    return out


def _payload(kind: str, value: Any) -> tuple[int, object]:
    if kind == "A":
        return dns.A, dns.Record_A(value, ttl=0)
    if kind == "AAAA":
        return dns.AAAA, dns.Record_AAAA(value, ttl=0)
    if kind == "MX":
        return dns.MX, dns.Record_MX(value[0], value[1].encode(), ttl=0)
    if kind == "PTR":
        return dns.PTR, dns.Record_PTR(value.encode(), ttl=0)
    if kind == "CNAME":
        return dns.CNAME, dns.Record_CNAME(value.encode(), ttl=0)
    data = _strings(value) if value else []
    if kind == "TXT":
        return dns.TXT, dns.Record_TXT(*data, ttl=0)
    return dns.SPF, dns.Record_SPF(*data, ttl=0)


def load(zone: testdns.TestZone, zonedata: dict[str, list[Any]]) -> None:
    """Serve one scenario's ``zonedata`` (and nothing else) from ``zone``."""
    zone.records.clear()
    zone.silent.clear()
    for owner, entries in zonedata.items():
        name = owner.lower()
        has_txt = any(isinstance(e, dict) and "TXT" in e for e in entries)
        items: list[Any] = list(entries)
        if not has_txt:  # SPF records are also published as TXT (pyspf's runner does so)
            items += [{"TXT": e["SPF"]} for e in entries if isinstance(e, dict) and "SPF" in e]
        answered: set[int] = set()
        timeout = False
        for item in items:
            if item == "TIMEOUT":
                timeout = True
                continue
            ((kind, value),) = item.items()
            if value == "NONE":
                continue
            qtype, payload = _payload(kind, value)
            zone.records.setdefault((name, qtype), []).append(payload)
            if not timeout:
                answered.add(qtype)
        if timeout:
            zone.silent[name] = frozenset(answered)
        else:
            zone.records.setdefault((name, dns.TXT), [])  # the name exists


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[testdns.TestZone, Any]]:
    zone = testdns.TestZone()
    with served_zone(zone, 512) as number:
        yield zone, blockingCallFromThread(reactor, make_resolver, (f"127.0.0.1:{number}",))


#: How the evaluation runs: all on the reactor in passes; all in a worker thread; and as
#: the check runs it (some passes, then a thread for records that need more).
PASSES = {"reactor": 1000, "thread": 0, "mixed": 2}


@pytest.mark.parametrize("path", PASSES)
@pytest.mark.parametrize(("scenario", "name"), CASES)
def test_rfc7208(server: tuple[testdns.TestZone, Any], scenario: int, name: str, path: str) -> None:
    zone, resolver = server
    data = SCENARIOS[scenario]
    case = data["tests"][name]
    blockingCallFromThread(reactor, load, zone, data["zonedata"])
    evaluation = Evaluation(reactor, resolver, ATTEMPTS, time.monotonic() + 20)

    def evaluate(lookup: Any) -> SPFOutcome:
        return check_host(case["host"], case["mailfrom"], case["helo"], lookup)

    outcome = blockingCallFromThread(
        reactor, lambda: Deferred.fromCoroutine(evaluation.run(evaluate, PASSES[path]))
    )
    expected = case["result"]
    allowed = [expected] if isinstance(expected, str) else expected
    assert outcome.result in allowed, f"{case.get('spec')}: {outcome}"
    if "explanation" in case:
        # The suite's runner sets the default explanation to DEFAULT: here "no exp= text".
        wanted = "" if case["explanation"] == "DEFAULT" else case["explanation"]
        assert outcome.explanation == wanted
