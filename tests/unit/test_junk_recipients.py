"""A junk verdict naming recipients: which mailboxes get their copy in Junk."""

from __future__ import annotations

import attrs

from ourmail.dsnparams import NO_MAIL_PARAMS, NO_RCPT_PARAMS
from ourmail.interfaces import Recipient
from ourmail.smtp.delivery import Accepted, Transaction

ALICE = Recipient("user", "alice@example.test")
BOB = Recipient("user", "bob@example.test")
TEAM = Recipient("alias", "team@example.test", targets=("alice@example.test",))


def txn(*rcpts: Recipient) -> Transaction:
    accepted = [Accepted(r, NO_RCPT_PARAMS) for r in rcpts]
    return Transaction("id1", "s@else.test", accepted, NO_MAIL_PARAMS, False, 10)


def test_only_the_named_recipients_go_to_junk() -> None:
    t = attrs.evolve(txn(ALICE, BOB), junk_recipients=frozenset({"bob@example.test"}))
    assert t.junk_for("bob@example.test") and not t.junk_for("alice@example.test")


def test_a_mailbox_reached_twice_goes_to_junk_only_if_every_way_says_so() -> None:
    t = attrs.evolve(txn(ALICE, TEAM), junk_recipients=frozenset({"team@example.test"}))
    assert not t.junk_for("alice@example.test")
    both = attrs.evolve(t, junk_recipients=frozenset({"team@example.test", "alice@example.test"}))
    assert both.junk_for("alice@example.test")


def test_a_junk_verdict_for_the_message_files_every_copy() -> None:
    t = attrs.evolve(txn(ALICE, BOB), junk=True)
    assert t.junk_for("alice@example.test") and t.junk_for("bob@example.test")
    assert not txn(ALICE).junk_for("alice@example.test")
