"""The spam check's rules without a scanner: thresholds by user, domain and check; lists and
contacts; the preferences database; the check's options."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from twisted.internet import reactor

from ourmail.filters import spam
from ourmail.filters.spampolicy import Thresholds, decide, refused_by_all, thresholds_for
from ourmail.filters.spamprefs import MAX_CONTACTS, OFF, SpamPrefs, UserPrefs, normalise_entry
from ourmail.filters.spamscan import SpamScore
from ourmail.interfaces import FilterEnvironment
from ourmail.net.dns import make_resolver

GTUBE = SpamScore(True, 1000.0, 5.0)
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
