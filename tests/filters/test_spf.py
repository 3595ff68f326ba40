"""The ``spf`` check on its own: the chain's contract (results and notes), both identities,
its options, and bad input (garbage records, a DNS server that never answers) answered
with a clear result in time, against the real twisted.names server on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import spf as pyspf
from conftest import _ensure_reactor, served_zone
from peers import dns as testdns
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import globalLogPublisher
from twisted.names import dns

from ourmail.filters import spf as spfmodule
from ourmail.filters.registry import BUILTIN, load_factory
from ourmail.filters.spf import SPFCheck, factory, helo_domain, printable
from ourmail.filters.spfdns import ReactorLookup, TwistedLookup
from ourmail.interfaces import AuthResult, FilterEnvironment, MailContext, Verdict
from ourmail.net.dns import make_resolver

IP = "192.0.2.10"

pytestmark = pytest.mark.usefixtures("no_system_dns")


@pytest.fixture(scope="module")
def zone() -> Iterator[tuple[testdns.TestZone, int]]:
    """A zone of our own, served over UDP and TCP (TCP for answers too big for UDP)."""
    zone = testdns.TestZone()
    with served_zone(zone, 512) as number:
        yield zone, number


@pytest.fixture
def failures() -> Iterator[list[dict[str, Any]]]:
    """Every logged failure (a traceback in the log) while the test runs."""
    seen: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            seen.append(event)

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


def make_check(port: int, tmp_path: Path, **options: Any) -> SPFCheck:
    def build() -> SPFCheck:
        env = FilterEnvironment(
            resolver=make_resolver((f"127.0.0.1:{port}",)),
            reactor=reactor,
            hostname="mx.example.test",
            domains=("example.test",),
            state_dir=tmp_path,
        )
        return factory.build({"skip_networks": [], **options}, env)  # type: ignore[return-value]

    return blockingCallFromThread(reactor, build)


def run(
    check: SPFCheck, sender: str, helo: str = "client.nowhere.test", ip: str = IP
) -> tuple[Verdict, MailContext]:
    context = MailContext(client_address=ip, helo=helo, sender=sender)
    verdict = blockingCallFromThread(reactor, check.check, "mail", context)
    return verdict, context


def test_registered_as_spf() -> None:
    assert BUILTIN["spf"] == "ourmail.filters.spf:factory"
    assert load_factory("spf") is factory


def test_pass_follows_the_contract(zone: Any, tmp_path: Path) -> None:
    z, port = zone
    z.set_txt("pass.spf.test", "v=spf1 ip4:192.0.2.0/24 -all")
    verdict, context = run(make_check(port, tmp_path), "bob@pass.spf.test")
    assert verdict.action == "accept"
    assert verdict.results[0] == AuthResult(
        "spf", "pass", properties=(("smtp.mailfrom", "pass.spf.test"),)
    )
    # The HELO name has no record: its result comes second, as smtp.helo (RFC 8601 §2.7.2).
    assert verdict.results[1] == AuthResult(
        "spf", "none", properties=(("smtp.helo", "client.nowhere.test"),)
    )
    assert context.notes["spf"] == {"result": "pass", "domain": "pass.spf.test"}


def test_fail_is_550_5_7_23_with_a_default_text(zone: Any, tmp_path: Path) -> None:
    z, port = zone
    z.set_txt("fail.spf.test", "v=spf1 -all")
    verdict, context = run(make_check(port, tmp_path), "bob@fail.spf.test")
    assert (verdict.action, verdict.code, verdict.status) == ("reject", 550, "5.7.23")
    assert verdict.text == f"SPF: fail.spf.test does not allow {IP} to send its mail"
    assert context.notes["spf"] == {"result": "fail", "domain": "fail.spf.test"}


def test_fail_shows_the_expanded_explanation(zone: Any, tmp_path: Path) -> None:
    z, port = zone
    z.set_txt("exp.spf.test", "v=spf1 -all exp=why.exp.spf.test")
    z.set_txt("why.exp.spf.test", "%{i} may not send for %{d}\r\n\x00 (ask %{l})")
    verdict, _ = run(make_check(port, tmp_path), "bob@exp.spf.test")
    assert verdict.code == 550
    # Control characters from the record never reach the SMTP reply.
    assert verdict.text == f"{IP} may not send for exp.spf.test    (ask bob)"


@pytest.mark.parametrize(
    ("options", "action"),
    [({"fail": "junk"}, "junk"), ({"fail": "accept"}, "accept")],
)
def test_fail_policy(zone: Any, tmp_path: Path, options: dict[str, str], action: str) -> None:
    z, port = zone
    z.set_txt("fail.spf.test", "v=spf1 -all")
    check = make_check(port, tmp_path, **options)
    verdict, context = run(check, "bob@fail.spf.test")
    assert verdict.action == action and verdict.results[0].result == "fail"
    assert verdict.reason == f"SPF fail for fail.spf.test from {IP}"


@pytest.mark.parametrize(("policy", "action"), [("accept", "accept"), ("junk", "junk")])
def test_softfail_policy(zone: Any, tmp_path: Path, policy: str, action: str) -> None:
    z, port = zone
    z.set_txt("soft.spf.test", "v=spf1 ~all")
    verdict, _ = run(make_check(port, tmp_path, softfail=policy), "bob@soft.spf.test")
    assert verdict.action == action and verdict.results[0].result == "softfail"


def test_neutral_and_none(zone: Any, tmp_path: Path) -> None:
    z, port = zone
    z.set_txt("neutral.spf.test", "v=spf1 ?all")
    z.set_txt("norecord.spf.test", "just some text")
    check = make_check(port, tmp_path)
    assert run(check, "a@neutral.spf.test")[0].results[0].result == "neutral"
    assert run(check, "a@norecord.spf.test")[0].results[0].result == "none"
    assert run(check, "a@nxdomain.spf.test")[0].results[0].result == "none"


def test_null_sender_is_decided_by_helo(zone: Any, tmp_path: Path) -> None:
    z, port = zone
    z.set_txt("good.helo.test", f"v=spf1 ip4:{IP} -all")
    z.set_txt("bad.helo.test", "v=spf1 -all")
    check = make_check(port, tmp_path)
    verdict, context = run(check, "", helo="good.helo.test")
    assert verdict.results == (
        AuthResult("spf", "pass", properties=(("smtp.helo", "good.helo.test"),)),
    )
    assert context.notes["spf"] == {"result": "pass", "domain": "good.helo.test"}
    verdict, _ = run(check, "", helo="bad.helo.test")
    assert (verdict.code, verdict.status) == (550, "5.7.23")
    # An address literal is no identity to check: none (RFC 7208 §2.3).
    verdict, context = run(check, "", helo=f"[{IP}]")
    assert verdict.results[0].result == "none" and verdict.action == "accept"


def test_helo_fail_is_conclusive_for_any_sender(zone: Any, tmp_path: Path) -> None:
    z, port = zone
    z.set_txt("bad.helo.test", "v=spf1 -all")
    z.set_txt("pass.spf.test", "v=spf1 ip4:192.0.2.0/24 -all")
    verdict, _ = run(make_check(port, tmp_path), "bob@pass.spf.test", helo="bad.helo.test")
    assert verdict.code == 550 and "bad.helo.test" in verdict.text
    # Not checked when helo = false: MAIL FROM alone decides.
    verdict, _ = run(make_check(port, tmp_path, helo=False), "bob@pass.spf.test", "bad.helo.test")
    assert verdict.action == "accept" and len(verdict.results) == 1


def test_explanation_names_this_host_and_idn_domains_are_a_labels(
    zone: Any, tmp_path: Path
) -> None:
    z, port = zone
    z.set_txt("xn--bcher-kva.spf.test", "v=spf1 -all exp=why.spf.test")
    z.set_txt("why.spf.test", "%{r} refused %{o}")
    verdict, context = run(make_check(port, tmp_path), "bob@bücher.spf.test")
    assert verdict.text == "mx.example.test refused xn--bcher-kva.spf.test"
    assert context.notes["spf"] == {"result": "fail", "domain": "xn--bcher-kva.spf.test"}


def test_logged_in_users_are_not_checked(zone: Any, tmp_path: Path) -> None:
    z, port = zone
    z.set_txt("fail.spf.test", "v=spf1 -all")
    context = MailContext(IP, "submission", "x.test", "bob@fail.spf.test", authenticated="bob")
    verdict = blockingCallFromThread(reactor, make_check(port, tmp_path).check, "mail", context)
    assert verdict == Verdict() and context.notes == {}


def test_ipv6_client(zone: Any, tmp_path: Path) -> None:
    z, port = zone
    z.set_txt("six.spf.test", "v=spf1 ip6:2001:db8::/32 -all")
    check = make_check(port, tmp_path)
    assert run(check, "a@six.spf.test", ip="2001:db8::5")[0].results[0].result == "pass"
    assert run(check, "a@six.spf.test", ip="::ffff:192.0.2.1")[0].results[0].result == "fail"


def test_skip_networks(zone: Any, tmp_path: Path) -> None:
    z, port = zone
    z.set_txt("fail.spf.test", "v=spf1 -all")
    check = make_check(port, tmp_path, skip_networks=["192.0.2.0/24"])
    verdict, context = run(check, "bob@fail.spf.test")
    assert verdict == Verdict() and "spf" not in context.notes


def test_loopback_is_skipped_by_default(zone: Any, tmp_path: Path) -> None:
    _, port = zone

    def build() -> Any:
        env = FilterEnvironment(make_resolver((f"127.0.0.1:{port}",)), reactor, "mx", (), tmp_path)
        return factory.build({}, env)

    check = blockingCallFromThread(reactor, build)
    assert run(check, "bob@fail.spf.test", ip="127.0.0.1")[0] == Verdict()
    assert run(check, "bob@fail.spf.test", ip="::1")[0] == Verdict()


@pytest.mark.parametrize(
    "options",
    [
        {"fail": "bounce"},
        {"softfail": "reject"},
        {"temperror": "reject"},
        {"skip_networks": "127.0.0.1"},
        {"skip_networks": ["not-a-network"]},
        {"helo": "yes"},
        {"dns_timeout": 0},
        {"dns_timeout": "5"},
        {"colour": "blue"},
    ],
)
def test_bad_options_are_refused(tmp_path: Path, options: dict[str, Any]) -> None:
    env = FilterEnvironment(None, reactor, "mx", (), tmp_path)
    with pytest.raises(ValueError):
        factory.build(options, env)


GARBAGE = {
    # RFC 7208 §4.6.4: more than 10 DNS-querying terms.
    "many.bad.test": "v=spf1 " + " ".join(f"include:i{n}.bad.test" for n in range(20)) + " -all",
    # An include of itself, and two that include each other.
    "self.bad.test": "v=spf1 include:self.bad.test -all",
    "ping.bad.test": "v=spf1 include:pong.bad.test -all",
    "pong.bad.test": "v=spf1 include:ping.bad.test -all",
    # Syntax errors.
    "syntax.bad.test": "v=spf1 ip4:192.0.2.300 -all",
    "junkmech.bad.test": "v=spf1 frobnicate:%{z} ~all",
    "macro.bad.test": "v=spf1 a:%{ -all",
    "twice.bad.test": "v=spf1 redirect=a.test redirect=b.test",
    "binary.bad.test": "v=spf1 a:\xff\x00\x7f -all",
    # RFC 7208 §4.6.4: more than 2 void lookups.
    "void.bad.test": "v=spf1 a:v1.bad.test a:v2.bad.test a:v3.bad.test -all",
}


@pytest.mark.parametrize("domain", sorted(GARBAGE))
def test_garbage_records_give_permerror(
    zone: Any, tmp_path: Path, failures: list[Any], domain: str
) -> None:
    z, port = zone
    for n in range(20):
        z.set_txt(f"i{n}.bad.test", "v=spf1 a -all")
    for name, record in GARBAGE.items():
        z.set_records(name, dns.TXT, dns.Record_TXT(*chunks(record.encode("latin-1"))))
    verdict, context = run(make_check(port, tmp_path), f"bob@{domain}")
    assert verdict.action == "accept" and verdict.results[0].result == "permerror"
    assert context.notes["spf"] == {"result": "permerror", "domain": domain}
    assert failures == []


def test_two_spf_records_are_permerror(zone: Any, tmp_path: Path) -> None:
    z, port = zone
    z.set_txt("two.bad.test", "v=spf1 -all", "v=spf1 +all")
    assert run(make_check(port, tmp_path), "a@two.bad.test")[0].results[0].result == "permerror"


def chunks(record: bytes) -> list[bytes]:
    """One TXT record as character-strings of at most 255 octets (RFC 7208 §3.3)."""
    return [record[i : i + 255] for i in range(0, len(record), 255)]


def test_huge_txt_over_tcp(zone: Any, tmp_path: Path, failures: list[Any]) -> None:
    """Answers too big for UDP come over TCP (RFC 1035 §4.2.2); a 25 kB record of 1,500
    ip4 mechanisms (no lookups) is judged, and one of 60 kB of filler is a permerror."""
    z, port = zone
    many = " ".join(f"ip4:198.51.{n // 256}.{n % 256}" for n in range(1500))
    record = f"v=spf1 {many} ip4:{IP} -all".encode()
    assert len(record) > 20_000
    z.set_records("big.bad.test", dns.TXT, dns.Record_TXT(*chunks(record)))
    check = make_check(port, tmp_path)
    assert run(check, "a@big.bad.test")[0].results[0].result == "pass"
    filler = b"v=spf1 " + b"x" * 60_000 + b" -all"
    z.set_records("huge.bad.test", dns.TXT, dns.Record_TXT(*chunks(filler)))
    assert run(check, "a@huge.bad.test")[0].results[0].result == "permerror"
    assert failures == []


def test_truncated_answer_without_tcp_is_temperror(tmp_path: Path, failures: list[Any]) -> None:
    """A server that truncates over UDP and has no TCP: temperror, not a wrong answer."""
    _ensure_reactor()
    z = testdns.TestZone()
    port, number = blockingCallFromThread(reactor, testdns.start, z, 512)
    try:
        z.set_records("huge.bad.test", dns.TXT, dns.Record_TXT(*chunks(b"v=spf1 " + b"x" * 5000)))
        verdict, _ = run(make_check(number, tmp_path, dns_timeout=1), "a@huge.bad.test")
        assert verdict.results[0].result == "temperror"
    finally:
        blockingCallFromThread(reactor, port.stopListening)
    assert failures == []


@pytest.mark.parametrize(("policy", "code"), [("accept", 0), ("tempfail", 451)])
def test_a_name_that_never_answers_is_temperror_in_time(
    zone: Any, tmp_path: Path, policy: str, code: int
) -> None:
    z, port = zone
    z.set_silent("slow.spf.test")
    check = make_check(port, tmp_path, dns_timeout=0.5, temperror=policy)
    start = time.monotonic()
    verdict, context = run(check, "a@slow.spf.test")
    took = time.monotonic() - start
    assert verdict.results[0].result == "temperror" and verdict.code == code
    if code:
        assert (verdict.status, verdict.text) == (
            "4.4.3",
            "SPF: temporary DNS error checking slow.spf.test, try again later",
        )
    assert context.notes["spf"] == {"result": "temperror", "domain": "slow.spf.test"}
    assert took < 3


def test_a_dns_server_that_never_answers_gives_a_verdict_before_the_time_out(
    tmp_path: Path,
) -> None:
    """Nothing answers at all (a UDP port that swallows every query): the check's own
    deadline (its time-out less a second) ends the evaluation with temperror."""
    hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    hole.bind(("127.0.0.1", 0))
    try:
        check = make_check(hole.getsockname()[1], tmp_path, dns_timeout=30)
        check.timeout = 3.0
        start = time.monotonic()
        verdict, _ = run(check, "a@anything.test")
        took = time.monotonic() - start
    finally:
        hole.close()
    assert verdict.results[0].result == "temperror"
    assert 1.5 < took < check.timeout


def test_helo_domain_and_printable() -> None:
    assert helo_domain("Mail.Example.ORG.") == "mail.example.org"
    for bad in (None, "", "localhost", "[192.0.2.1]", "192.0.2.1", "a..b", "x" * 64 + ".test"):
        assert helo_domain(bad) is None
    assert printable("a\r\nb\tc\x00") == "a  b c"
    assert len(printable("y" * 1000)) == 300


def test_abandoned_evaluations_stop_at_once(zone: Any, tmp_path: Path) -> None:
    """The chain's time-out cancels the check (its DNS question too), and shutdown abandons
    every evaluation in a thread: the worker stops waiting for DNS within a fraction of a
    second, not at its deadline."""
    z, port = zone
    z.set_silent("slow.spf.test")
    check = make_check(port, tmp_path, dns_timeout=60)
    context = MailContext(client_address=IP, helo="x", sender="a@slow.spf.test")
    started: list[Any] = []  # the Deferred itself, not its result
    blockingCallFromThread(reactor, lambda: started.append(check.check("mail", context)))
    time.sleep(0.3)
    assert not started[0].called  # waiting for the silent server, on the reactor
    failures: list[Any] = []
    blockingCallFromThread(reactor, started[0].cancel)
    started[0].addErrback(failures.append)
    assert failures[0].check(CancelledError)
    time.sleep(0.2)
    assert "spf" not in context.notes  # nothing written after being abandoned
    outcomes: list[Any] = []
    lookup = TwistedLookup(reactor, check.resolver, (60.0,), time.monotonic() + 60)
    worker = threading.Thread(
        target=lambda: outcomes.append(spfmodule.check_host(IP, "a@slow.spf.test", "x", lookup))
    )
    worker.start()
    time.sleep(0.3)
    spfmodule._running.add(lookup)
    blockingCallFromThread(reactor, spfmodule._abandon_all)
    worker.join(1)
    assert outcomes[0].result == "temperror"


def test_a_question_past_the_deadline_is_cancelled_quietly() -> None:
    """The answer a pass needs arrives after the evaluation's deadline: the question is
    cancelled, and its cancellation is handled (no "Unhandled error in Deferred")."""
    asked: list[Deferred[Any]] = []

    class Silent:
        def query(self, query: Any, timeout: Any = None) -> Deferred[Any]:
            asked.append(Deferred())
            return asked[-1]

    lookup = ReactorLookup(Silent(), reactor, (1.0,), time.monotonic() - 1)
    with pytest.raises(pyspf.TempError):
        lookup("x.test", "TXT")
    Deferred.fromCoroutine(lookup.fetch())
    assert asked[0].called and asked[0].result is None  # the failure was consumed
    with pytest.raises(pyspf.TempError, match="time limit"):
        lookup("x.test", "TXT")


@pytest.mark.parametrize(
    ("record", "ttl", "kept"),
    [
        ("v=spf1 ip4:192.0.2.0/24 -all", 60, True),
        ("v=spf1 ip4:192.0.2.0/24 -all", 0, False),  # answers that may not be kept
        ("v=spf1 exists:%{l}.ok.kept.spf.test -all", 60, False),  # a macro: local part
    ],
)
def test_an_outcome_is_kept_while_its_answers_are(
    zone: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: str, ttl: int, kept: bool
) -> None:
    """The next message from the same address and domain costs no evaluation, unless a
    record holds a macro (the outcome may depend on more) or an answer may not be kept."""
    z, port = zone
    name = f"d{ttl}{len(record)}.kept.spf.test"
    z.set_txt(name, record, ttl=ttl)
    z.set_address("bob.ok.kept.spf.test", "127.0.0.2", ttl=ttl)
    z.set_txt("client.kept.spf.test", "v=spf1 -all", ttl=ttl)
    evaluated: list[str] = []
    original = spfmodule.check_host

    def counted(ip: str, sender: str, helo: str, *args: Any) -> Any:
        evaluated.append(sender)
        return original(ip, sender, helo, *args)

    monkeypatch.setattr(spfmodule, "check_host", counted)
    check = make_check(port, tmp_path, helo=False)
    first, _ = run(check, f"bob@{name}", "client.kept.spf.test")
    evaluated.clear()
    second, context = run(check, f"bob@{name}", "client.kept.spf.test")
    assert first.results == second.results and first.action == second.action
    assert context.notes["spf"]["domain"] == name
    # With a macro, or answers not to be kept, every message is evaluated.
    assert (evaluated == []) if kept else bool(evaluated)
