"""Failed-login throttling (issue 7 point 7): delays, client lockout, account lockout that
spares the owner's known addresses, and expiry."""

from __future__ import annotations

from twisted.internet.task import Clock

from ourmail.auth.throttle import FailureThrottle
from ourmail.config import ThrottleSettings

SETTINGS = ThrottleSettings(
    base_delay=0.5, max_delay=4, window=900, client_limit=5, client_lockout=600,
    account_limit=3, account_lockout=300,
)  # fmt: skip


def test_delay_doubles_per_client_and_a_success_forgets_it() -> None:
    clock = Clock()
    t = FailureThrottle(clock, SETTINGS)
    delays = [t.failed("10.0.0.1", f"user{n}")[0] for n in range(4)]
    assert delays == [0.5, 1, 2, 4]
    assert t.failed("10.0.0.2", "other")[0] == 0.5  # another client is not slowed
    t.succeeded("10.0.0.1", "user0")
    assert t.failed("10.0.0.1", "user9")[0] == 0.5


def test_client_lockout_then_release() -> None:
    clock = Clock()
    t = FailureThrottle(clock, SETTINGS)
    started = [t.failed("10.0.0.1", f"user{n}")[1] for n in range(5)]
    assert started == [None, None, None, None, "client"]
    assert t.refused("10.0.0.1", "anyone") == "client locked out"
    assert t.refused("10.0.0.2", "anyone") is None
    clock.advance(601)
    assert t.refused("10.0.0.1", "anyone") is None


def test_account_lockout_spares_known_clients_and_is_short() -> None:
    clock = Clock()
    t = FailureThrottle(clock, SETTINGS)
    t.succeeded("192.0.2.7", "alice@example.org")  # alice's own laptop
    for n in range(3):
        t.failed(f"198.51.100.{n}", "alice@example.org")  # an attacker, from many addresses
    assert t.refused("203.0.113.9", "alice@example.org") == "account locked out"
    assert t.refused("192.0.2.7", "alice@example.org") is None  # the owner still gets in
    clock.advance(301)
    assert t.refused("203.0.113.9", "alice@example.org") is None
    t.failed("198.51.100.9", "alice@example.org")  # still within the window: locked again
    assert t.refused("203.0.113.9", "alice@example.org") == "account locked out"
    clock.advance(1000)  # a quiet window forgets it all
    assert t.failed("198.51.100.9", "alice@example.org")[1] is None


def test_refusals_of_a_disabled_account_count_against_the_account_only() -> None:
    """A leaver's phone retrying the right password does not lock out the office's NAT
    address; its delay is the one a wrong password from there would get."""
    clock = Clock()
    t = FailureThrottle(clock, SETTINGS)
    t.failed("10.0.0.1", "someone")  # one real failure from the office: 1 s next
    delays = [t.failed("10.0.0.1", "leaver", against_client=False)[0] for _ in range(10)]
    assert delays == [1] * 10
    assert t.refused("10.0.0.1", "anyone") is None
    assert t.refused("10.0.0.1", "leaver") == "account locked out"
    assert t.failed("10.0.0.1", "someone")[0] == 1
