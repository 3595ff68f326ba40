"""The Sender Rewriting Scheme (ourmail/srs.py): SRS0/SRS1 forms, hash, age and secrets."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from ourmail.interfaces import InvalidSRS
from ourmail.srs import SenderRewriter, load_secrets

DAY = 86400
LOCAL = {"example.test", "other.test"}


def rewriter(clock: Clock, *keys: bytes, max_age: int = 21) -> SenderRewriter:
    return SenderRewriter(keys or (b"secret",), LOCAL.__contains__, clock, max_age)


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(20000 * DAY + 3600)
    return c


def test_forward_and_reverse(clock: Clock) -> None:
    srs = rewriter(clock)
    address = srs.forward("dan@else.test", "example.test")
    local, _, domain = address.rpartition("@")
    assert domain == "example.test"
    tag, digest, stamp, orig_domain, orig_local = local.split("=")
    assert (tag, len(digest), len(stamp), orig_domain, orig_local) == (
        "SRS0",
        4,
        2,
        "else.test",
        "dan",
    )
    assert srs.reverse(address) == "dan@else.test"
    # A hop that lower-cases the local part does no harm (as with libsrs2).
    assert srs.reverse(address.lower()) == "dan@else.test"


def test_null_and_local_senders_stay(clock: Clock) -> None:
    srs = rewriter(clock)
    assert srs.forward("", "example.test") == ""
    assert srs.forward("alice@Example.TEST", "example.test") == "alice@Example.TEST"
    assert srs.forward("bob@other.test", "example.test") == "bob@other.test"


def test_not_srs_is_none(clock: Clock) -> None:
    srs = rewriter(clock)
    assert srs.reverse("alice@example.test") is None
    assert srs.reverse("srs0@example.test") is None
    assert srs.reverse("SRS2=x=y@example.test") is None


def test_second_forwarder_makes_srs1_and_its_reverse_is_the_first_srs0(clock: Clock) -> None:
    first = rewriter(clock, b"first-secret")
    second = rewriter(clock, b"second-secret")
    srs0 = first.forward("dan@else.test", "first.test")
    srs1 = second.forward(srs0, "second.test")
    assert srs1.startswith("SRS1=") and srs1.endswith("@second.test")
    assert "=first.test==" in srs1
    assert second.reverse(srs1) == srs0
    # A third forwarder keeps the first forwarder's part and signs it anew.
    third = rewriter(clock, b"third-secret")
    again = third.forward(srs1, "third.test")

    def kept(address: str) -> str:
        return address.rpartition("@")[0].split("=", 2)[2]

    assert kept(again) == kept(srs1) == "first.test==" + srs0.rpartition("@")[0][5:]
    assert third.reverse(again) == srs0
    assert first.reverse(srs0) == "dan@else.test"


@pytest.mark.parametrize(
    "forge",
    [
        lambda a: a.replace("SRS0=", "SRS0=A", 1)[:-1],  # a different hash
        lambda a: a.replace("else.test", "evil.test"),  # the domain changed under the hash
        lambda a: a.replace("=dan@", "=eve@"),
    ],
)
def test_forged_addresses_are_invalid(clock: Clock, forge: object) -> None:
    srs = rewriter(clock)
    address = srs.forward("dan@else.test", "example.test")
    with pytest.raises(InvalidSRS):
        srs.reverse(forge(address))  # type: ignore[operator]


@pytest.mark.parametrize(
    "address",
    ["SRS0==@example.test", "SRS0=abcd=@example.test", "SRS0=a=b=c@example.test", "SRS1=x@e.t"],
)
def test_malformed_addresses_are_invalid(clock: Clock, address: str) -> None:
    with pytest.raises(InvalidSRS):
        rewriter(clock).reverse(address)


def test_age_limit_and_wrap_around(clock: Clock) -> None:
    srs = rewriter(clock, max_age=21)
    address = srs.forward("dan@else.test", "example.test")
    clock.advance(21 * DAY)
    assert srs.reverse(address) == "dan@else.test"
    clock.advance(DAY)
    with pytest.raises(InvalidSRS, match="expired"):
        srs.reverse(address)
    clock.advance(1002 * DAY)  # the 10-bit stamp wraps after 1024 days, as in libsrs2
    assert srs.reverse(address) == "dan@else.test"


def test_bad_stamp_is_invalid(clock: Clock) -> None:
    srs = rewriter(clock)
    local = srs.forward("dan@else.test", "example.test").rpartition("@")[0]
    _, digest, _, domain, user = local.split("=")
    forged = f"SRS0={srs._hash('1!', domain, user)}=1!={domain}={user}@example.test"
    with pytest.raises(InvalidSRS, match="time stamp"):
        srs.reverse(forged)
    assert digest


def test_rotated_secrets_still_verify(clock: Clock) -> None:
    old = rewriter(clock, b"old")
    address = old.forward("dan@else.test", "example.test")
    new = rewriter(clock, b"new", b"old")
    assert new.reverse(address) == "dan@else.test"
    assert new.forward("dan@else.test", "example.test") != address
    with pytest.raises(InvalidSRS):
        rewriter(clock, b"new").reverse(address)


def test_secret_file_is_made_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "srs" / "secret"
    keys = load_secrets(path)
    assert len(keys) == 1 and len(keys[0]) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secrets(path) == keys
    path.write_text("newer\n\n" + keys[0].decode() + "\n")
    assert load_secrets(path) == [b"newer", keys[0]]
    path.write_text("\n")
    with pytest.raises(ValueError):
        load_secrets(path)
