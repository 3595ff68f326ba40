"""The spam check's rules without a scanner: thresholds by user, domain and check; lists and
contacts; the preferences database; the check's options."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from conftest import _ensure_reactor
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import blockingCallFromThread
from zope.interface import implementer

from ourmail.filters import spam
from ourmail.filters.chain import FilterChain
from ourmail.filters.spampolicy import Thresholds, decide, refused_by_all, thresholds_for
from ourmail.filters.spamprefs import (
    MAX_CONTACTS,
    MAX_LABELS,
    OFF,
    SpamPrefs,
    UserPrefs,
    _candidates,
    normalise_entry,
)
from ourmail.filters.spamscan import SpamScore
from ourmail.interfaces import FilterEnvironment, FilterEvent, IFilterLog, MailContext, Verdict
from ourmail.net.dns import make_resolver

GTUBE = SpamScore(True, 1000.0, 5.0)
BOB = "bob@example.test"
CLEAN = SpamScore(False, 1.2, 5.0)


def test_thresholds_user_over_domain_over_check() -> None:
    domains = {"example.org": Thresholds(junk=4.0, reject=10.0)}
    default = Thresholds(junk=6.0, reject=15.0)
    own = UserPrefs(junk=2.0)
    assert thresholds_for("a@example.org", own, domains, default) == Thresholds(2.0, 10.0)
    assert thresholds_for("a@other.test", UserPrefs(), domains, default) == Thresholds(6.0, 15.0)
    off = UserPrefs(reject=OFF)
    assert thresholds_for("a@Example.ORG", off, domains, default).reject == math.inf


@pytest.mark.parametrize(
    ("score", "limits", "prefs", "outcome"),
    [
        (GTUBE, Thresholds(), UserPrefs(), "junk"),  # the scanner's verdict
        (CLEAN, Thresholds(), UserPrefs(), "inbox"),
        (CLEAN, Thresholds(junk=1.0), UserPrefs(), "junk"),
        (GTUBE, Thresholds(junk=2000.0), UserPrefs(), "inbox"),
        (GTUBE, Thresholds(reject=15.0), UserPrefs(), "reject"),
        (GTUBE, Thresholds(reject=OFF), UserPrefs(), "junk"),
        (GTUBE, Thresholds(reject=15.0), UserPrefs(listed="allow"), "inbox"),
        (GTUBE, Thresholds(reject=15.0), UserPrefs(contact=True), "inbox"),
        (CLEAN, Thresholds(), UserPrefs(listed="block"), "junk"),
        (None, Thresholds(reject=1.0), UserPrefs(), "inbox"),  # not scanned
        (None, Thresholds(), UserPrefs(listed="block"), "junk"),
    ],
)
def test_decide(
    score: SpamScore | None, limits: Thresholds, prefs: UserPrefs, outcome: str
) -> None:
    assert decide(score, limits, prefs).outcome == outcome


def test_refused_only_when_every_recipient_refuses() -> None:
    reject = decide(GTUBE, Thresholds(reject=15.0), UserPrefs())
    junk = decide(GTUBE, Thresholds(), UserPrefs())
    assert refused_by_all([reject, reject]) and not refused_by_all([reject, junk])
    assert not refused_by_all([])


def test_entries_are_normalised_and_bad_ones_refused() -> None:
    assert normalise_entry(" Bob@Example.ORG. ") == "bob@example.org"
    assert normalise_entry("@Example.org") == "@example.org"
    for bad in ("bob", "@", "bob@", "@localhost", "a b@example.org", "a@b@example.org", "@.org"):
        with pytest.raises(ValueError):
            normalise_entry(bad)


def test_lists_most_specific_wins_and_block_beats_allow(tmp_path: Path) -> None:
    prefs = SpamPrefs(tmp_path / "spam.sqlite")
    prefs.add_entry("alice@example.test", "@partner.example", "block")
    prefs.add_entry("alice@example.test", "boss@partner.example", "allow")
    senders = ["boss@partner.example"]
    looked = prefs.lookup(["alice@example.test"], senders, senders)
    assert looked["alice@example.test"].listed == "allow"
    # A subdomain is covered by its parent's entry.
    other = ["x@mail.partner.example"]
    assert prefs.lookup(["alice@example.test"], other, other)["alice@example.test"].listed == (
        "block"
    )
    # Envelope allowed, From: blocked: block wins.
    both = ["boss@partner.example", "x@partner.example"]
    assert prefs.lookup(["alice@example.test"], both, both)["alice@example.test"].listed == (
        "block"
    )
    # An allowed sender that is not trusted (SPF or DMARC failed) counts for nothing.
    assert prefs.lookup(["alice@example.test"], senders, [])["alice@example.test"].listed is None


def test_thresholds_and_contacts_are_kept(tmp_path: Path) -> None:
    prefs = SpamPrefs(tmp_path / "spam.sqlite")
    prefs.set_thresholds("alice@example.test", 3.0, OFF)
    assert prefs.thresholds("alice@example.test") == (3.0, math.inf)
    prefs.set_thresholds("alice@example.test", None, None)
    assert prefs.thresholds("alice@example.test") == (None, None)
    prefs.add_contacts("alice@example.test", ["Carol@Remote.Test", "not-an-address"], 1.0)
    assert prefs.contacts("alice@example.test") == ["carol@remote.test"]
    carol = ["carol@remote.test"]
    assert prefs.lookup(["alice@example.test"], carol, carol)["alice@example.test"].contact
    assert not prefs.lookup(["alice@example.test"], carol, [])["alice@example.test"].contact


def test_contacts_are_capped(tmp_path: Path) -> None:
    prefs = SpamPrefs(tmp_path / "spam.sqlite")
    many = [f"c{i}@remote.test" for i in range(MAX_CONTACTS + 10)]
    prefs.add_contacts("alice@example.test", many[:10], 1.0)
    prefs.add_contacts("alice@example.test", many[10:], 2.0)
    kept = prefs.contacts("alice@example.test")
    assert len(kept) == MAX_CONTACTS and "c0@remote.test" not in kept


def _env(tmp_path: Path) -> FilterEnvironment:
    return FilterEnvironment(make_resolver(["127.0.0.1:53"]), reactor, "mx.test", (), tmp_path)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bogus": 1}, "unknown option 'bogus'"),
        ({"backend": "bogofilter"}, "'backend' must be one of"),
        ({"password": "x"}, "'password' is an option of backend = 'rspamd'"),
        ({"max_size": 0}, "'max_size'"),
        ({"junk_score": "high"}, "'junk_score' must be a number"),
        ({"junk_score": 10, "reject_score": 5}, "must not be below"),
        ({"domains": {"example.org": {"junk": 1}}}, "unknown option 'junk'"),
        ({"domains": ["example.org"]}, "'domains' must be a table"),
        ({"backend": "rspamd", "address": "127.0.0.1:11333"}, "must be an http"),
        ({"backend": "rspamd", "password": "a", "password_file": "/x"}, "not both"),
        ({"backend": "rspamd", "password_file": "/nonexistent/pw"}, "cannot read"),
        ({"address": "127.0.0.1:99999"}, "bad spamd address"),
        ({"address": "spamd.example:783"}, "bad spamd address"),
        ({"backend": "rspamd", "address": "http://rspamd.example:11333"}, "with an IP address"),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spam.factory.build(options, _env(tmp_path))


def test_good_options(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    check = spam.factory.build(
        {
            "backend": "rspamd",
            "password_file": str(pw),
            "reject_score": 15,
            "domains": {"Example.ORG": {"junk_score": 4}},
        },
        _env(tmp_path),
    )
    assert isinstance(check, spam.SpamCheck)
    assert check.domains == {"example.org": Thresholds(4.0, None)}
    assert check.default == Thresholds(None, 15.0) and check.stages == ("data",)
    assert check.on_error == "accept" and check.trusted is False


def _context(froms: list[str], sender: str = "bob@partner.example", **notes: object) -> Any:
    head = "".join(f"From: {a}\r\n" for a in froms)
    content = f"{head}To: alice@example.test\r\nSubject: hi\r\n\r\nhello\r\n".encode()
    context = MailContext("192.0.2.1", sender=sender, recipients=["alice@example.test"])
    context.content = content
    context.notes.update(notes)
    return context


@pytest.mark.parametrize(
    ("froms", "notes", "trusted"),
    [
        # Two From: fields: DMARC permerror (RFC 7489 §6.6.1), nobody is trusted.
        (["bob@partner.example", "x@spam.example"], {"dmarc": {"result": "permerror"}}, []),
        (["bob@partner.example"], {"dmarc": {"result": "none", "domain": "partner.example"}}, []),
        (["bob@partner.example"], {"dmarc": {"result": "temperror"}}, []),
        (["bob@partner.example"], {}, []),  # no dmarc in the chain
        (
            ["bob@partner.example"],
            {"dmarc": {"result": "pass", "domain": "partner.example"}},
            ["bob@partner.example"],
        ),
        # A pass for another domain vouches for nothing here.
        (["bob@partner.example"], {"dmarc": {"result": "pass", "domain": "other.example"}}, []),
        (
            ["bob@partner.example", "x@spam.example"],
            {"dmarc": {"result": "pass", "domain": "partner.example"}},
            [],
        ),
        # The envelope sender: only an SPF pass for its domain (RFC 7208 §2.6.3).
        ([], {"spf": {"result": "pass", "domain": "partner.example"}}, ["bob@partner.example"]),
        ([], {"spf": {"result": "neutral", "domain": "partner.example"}}, []),
        ([], {"spf": {"result": "softfail", "domain": "partner.example"}}, []),
        ([], {"spf": {"result": "pass", "domain": "helo.example"}}, []),
    ],
)
def test_only_authenticated_senders_are_trusted(
    froms: list[str], notes: dict[str, object], trusted: list[str]
) -> None:
    context = _context(froms, **notes)
    assert spam.trusted_senders(context, "bob@partner.example", froms) == trusted


class _Scanner:
    timeout = 30.0

    def scan(self, message: bytes, envelope: object) -> Deferred[SpamScore]:
        return succeed(GTUBE)


def _run(check: spam.SpamCheck, context: MailContext) -> Verdict:
    _ensure_reactor()
    verdict: Verdict = blockingCallFromThread(reactor, check.check, "data", context)
    return verdict


def test_a_contact_in_a_second_from_field_does_not_pass_spam(tmp_path: Path) -> None:
    """From: bob (a contact) and From: x: DMARC permerror; GTUBE still goes to Junk."""
    prefs = SpamPrefs(tmp_path / "spam.sqlite")
    prefs.add_contacts("alice@example.test", ["bob@partner.example"], 1.0)
    prefs.add_entry("alice@example.test", "@partner.example", "allow")
    check = spam.SpamCheck(_Scanner(), prefs, reactor)
    froms = ["bob@partner.example", "x@spam.example"]
    context = _context(froms, "x@spam.example", dmarc={"result": "permerror"})
    assert _run(check, context).action == "junk"
    # One From:, DMARC pass for it: the contact reaches the inbox.
    context = _context(["bob@partner.example"], "x@spam.example")
    context.notes["dmarc"] = {"result": "pass", "domain": "partner.example"}
    assert _run(check, context).action == "accept"


def test_the_lookup_is_bounded(tmp_path: Path) -> None:
    """Many From: addresses and a deep domain: deduplicated, capped, one query a recipient."""
    prefs = SpamPrefs(tmp_path / "spam.sqlite")
    prefs.add_entry("carol@example.test", "@spam.example", "block")
    deep = "x@" + ".".join(f"l{i}" for i in range(40)) + ".spam.example"
    candidates = _candidates(deep)
    assert len(candidates) == 1 + MAX_LABELS and candidates[-1] == "@spam.example"
    statements: list[str] = []
    prefs._db().set_trace_callback(statements.append)
    try:
        users = ["alice@example.test", "bob@example.test", "carol@example.test"]
        senders = [f"s{i % 4}@spam.example" for i in range(40)] + [deep]
        looked = prefs.lookup(users, senders, senders)
    finally:
        prefs._db().set_trace_callback(None)
    assert len(statements) == len(users)
    assert looked["carol@example.test"].listed == "block"
    assert looked["alice@example.test"].listed is None

    froms = [f"f{i}@spam{i}.example" for i in range(3 * spam.MAX_FROM)]
    asked: list[tuple[list[str], list[str]]] = []
    real = prefs.lookup

    def spy(users: Any, senders: Any, trusted: Any) -> Any:
        asked.append((list(senders), list(trusted)))
        return real(users, senders, trusted)

    prefs.lookup = spy  # type: ignore[method-assign]
    check = spam.SpamCheck(_Scanner(), prefs, reactor)
    context = _context(froms + froms, "f0@spam0.example")
    context.notes["dmarc"] = {"result": "pass", "domain": "spam0.example"}
    context.notes["spf"] = {"result": "pass", "domain": "spam0.example"}
    _run(check, context)
    [(senders_asked, trusted_asked)] = asked
    assert senders_asked == froms[: spam.MAX_FROM]
    assert trusted_asked == ["f0@spam0.example"]  # SPF's pass; the From: addresses: none


@implementer(IFilterLog)
class _Log:
    def __init__(self) -> None:
        self.events: list[FilterEvent] = []

    def record(self, events: Any) -> None:
        self.events.extend(events)


def test_each_recipient_reads_only_its_own_reason(tmp_path: Path) -> None:
    """Alice blocks the sender, Bob's copy is junk by score: Bob's log entry and the shared
    X-Ourmail-Junk field never mention Alice's block list."""
    prefs = SpamPrefs(tmp_path / "spam.sqlite")
    prefs.add_entry("alice@example.test", "@spam.example", "block")
    filter_log = _Log()
    chain = FilterChain(
        [spam.SpamCheck(_Scanner(), prefs, reactor)], reactor, "mx.test", filter_log
    )
    context = _context(["x@spam.example"], "x@spam.example")
    context.recipients = ["alice@example.test", "bob@example.test"]
    _ensure_reactor()
    outcome = blockingCallFromThread(reactor, chain.run, "data", context)
    assert outcome.junk == ["spam: per-recipient settings"] and outcome.junk_recipients == []
    assert b"X-Ourmail-Junk: spam: per-recipient settings\r\n" in chain.fields(context, outcome)
    chain.filed(context, outcome, {"alice": ["alice@example.test"], "bob": ["bob@example.test"]})
    reasons = {e.recipient: e.reason for e in filter_log.events}
    assert reasons == {
        "alice": "spam: sender on the recipient's block list",
        "bob": "spam: score 1000: the scanner says spam",
    }
    # Junk by score alone for everyone: the shared reason is the score.
    prefs.remove_entry("alice@example.test", "@spam.example")
    context = _context(["x@spam.example"], "x@spam.example")
    context.recipients = ["alice@example.test", "bob@example.test"]
    outcome = blockingCallFromThread(reactor, chain.run, "data", context)
    assert outcome.junk == ["spam: score 1000.0"]


def test_an_alias_is_judged_and_logged_by_its_users(tmp_path: Path) -> None:
    """info@ leads to alice: alice's block list decides, and the filter log's entries (Junk
    and refusal) are alice's, not the alias's."""
    prefs = SpamPrefs(tmp_path / "spam.sqlite")
    prefs.add_entry("alice@example.test", "@spam.example", "block")
    filter_log = _Log()
    check = spam.SpamCheck(_Scanner(), prefs, reactor)
    chain = FilterChain([check], reactor, "mx.test", filter_log)

    def context() -> MailContext:
        made = _context(["x@spam.example"], "x@spam.example")
        made.recipients = ["info@example.test", "bob@example.test"]
        made.mailboxes = {"info@example.test": ("alice@example.test",)}
        return made

    _ensure_reactor()
    first = context()
    outcome = blockingCallFromThread(reactor, chain.run, "data", first)
    assert first.notes["spam"]["recipients"] == {  # type: ignore[index]
        "info@example.test": "junk",
        "bob@example.test": "junk",
    }
    mailboxes = {"alice@example.test": ["info@example.test"], "bob@example.test": [BOB]}
    chain.filed(first, outcome, mailboxes)
    assert {e.recipient: e.reason for e in filter_log.events} == {
        "alice@example.test": "spam: sender on the recipient's block list",
        "bob@example.test": "spam: score 1000: the scanner says spam",
    }
    filter_log.events.clear()
    prefs.remove_entry("alice@example.test", "@spam.example")
    check.default = Thresholds(reject=15.0)
    outcome = blockingCallFromThread(reactor, chain.run, "data", context())
    assert outcome.refusal is not None
    assert [e.recipient for e in filter_log.events] == ["alice@example.test", BOB]


def test_an_alias_filed_alone_is_logged_with_its_users_reason(tmp_path: Path) -> None:
    """Only info@'s copy (alice's) goes to Junk: alice's entry gives her own reason once."""
    prefs = SpamPrefs(tmp_path / "spam.sqlite")
    prefs.add_entry("alice@example.test", "@spam.example", "block")
    prefs.set_thresholds(BOB, 2000.0, None)
    filter_log = _Log()
    chain = FilterChain([spam.SpamCheck(_Scanner(), prefs, reactor)], reactor, "mx", filter_log)
    context = _context(["x@spam.example"], "x@spam.example")
    context.recipients = ["info@example.test", BOB]
    context.mailboxes = {"info@example.test": ("alice@example.test",)}
    _ensure_reactor()
    outcome = blockingCallFromThread(reactor, chain.run, "data", context)
    assert outcome.junk == [] and outcome.junk_recipients == ["info@example.test"]
    chain.filed(context, outcome, {"alice@example.test": ["info@example.test"]})
    [event] = filter_log.events
    assert event.reason == "spam: sender on the recipient's block list"
