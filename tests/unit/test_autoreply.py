"""The out-of-office reply (ourmail/vacation): whom it answers (RFC 3834 §2, RFC 5230 §4.5,
§4.6), what it says (RFC 3834 §3, §5), at most once per sender per period, and the responder
that delivery calls, on a fake queue."""

from __future__ import annotations

import datetime
import email
import email.policy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import _ensure_reactor
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.threads import blockingCallFromThread

from ourmail.dsnparams import MailParams, RcptParams
from ourmail.vacation.record import DAY, ReplyRecord
from ourmail.vacation.responder import AutoResponder
from ourmail.vacation.rules import Original, read_header, refusal, reply
from ourmail.vacation.settings import KEY, MAX_DAYS, Vacation
from ourmail.vacation.verified import sender_verified

USER = "ann@example.test"
TODAY = datetime.date(2026, 12, 1)
NOW = datetime.datetime(2026, 12, 1, 12, 0).timestamp()


def run(call: Callable[..., Any], *args: Any) -> Any:
    """``call`` on the reactor thread, waiting for its Deferred."""
    _ensure_reactor()
    return blockingCallFromThread(reactor, call, *args)


def message(*fields: str, to: str = USER, body: str = "Hello") -> bytes:
    head = [f"To: {to}", "From: Bob <bob@far.test>", "Subject: Budget", "Message-ID: <m1@far.test>"]
    return ("\r\n".join([*head, *fields]) + "\r\n\r\n" + body + "\r\n").encode()


def aliases(address: str) -> bool:
    """The directory's answer: ann may send as info@."""
    return address == "info@example.test"


def why(head: bytes, sender: str = "bob@far.test") -> str | None:
    return refusal(read_header(head), sender, USER, aliases)[0]


# -- whom -----------------------------------------------------------------------------------


def test_an_ordinary_message_is_answered_from_the_address_it_was_sent_to() -> None:
    assert refusal(read_header(message()), "bob@far.test", USER, aliases) == (None, USER)
    to_alias = message(to="Info <INFO@example.test>")
    assert refusal(read_header(to_alias), "bob@far.test", USER, aliases) == (
        None,
        "info@example.test",
    )
    cc = message("Cc: x@far.test, Ann <ann@example.test>", to="x@far.test")
    assert why(cc) is None
    assert why(message("Auto-Submitted: no")) is None


@pytest.mark.parametrize(
    "field",
    [
        "Auto-Submitted: auto-generated",
        "Auto-Submitted: auto-replied",
        "Auto-Submitted: Auto-Notified; owner-email=x@far.test",
        "Precedence: bulk",
        "Precedence: LIST",
        "Precedence: junk",
        "List-Id: Budget talk <budget.lists.far.test>",
        "List-Unsubscribe: <mailto:leave@far.test>",
        "List-Post: <mailto:budget@far.test>",
        "X-Auto-Response-Suppress: DR, OOF",
    ],
)
def test_automatic_and_list_mail_is_not_answered(field: str) -> None:
    assert why(message(field)) is not None


@pytest.mark.parametrize(
    "sender",
    [
        "",
        "MAILER-DAEMON@far.test",
        "owner-budget@far.test",
        "budget-request@far.test",
        "budget-owner@far.test",
        "budget-bounces@far.test",
        "noreply@far.test",
        "no-reply@far.test",
        "do-not-reply@far.test",
        "ann@example.test",
        "Ann@Example.test",
        "info@example.test",
    ],
)
def test_robots_the_null_sender_and_the_user_are_not_answered(sender: str) -> None:
    assert why(message(), sender) is not None


def test_mail_not_addressed_to_the_user_is_not_answered() -> None:
    # RFC 5230 §4.5: a blind copy (or a list's copy) does not name the user.
    assert why(message(to="team@far.test")) == "user not in To or Cc"
    assert why(message("Bcc: ann@example.test", to="team@far.test")) is None
    assert why(message("Resent-To: ann@example.test", to="x@far.test")) is None
    assert why(b"Subject: no header end") == "user not in To or Cc"


# -- what -----------------------------------------------------------------------------------


def parsed(raw: bytes) -> Any:
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_the_reply_has_the_fields_rfc_3834_asks_for() -> None:
    head = message("References: <m0@far.test>")
    vacation = Vacation(enabled=True, text="Away until Monday.\nAsk Bob.")
    raw, utf8 = reply(vacation, read_header(head), USER, "bob@far.test", "mail.example.test", NOW)
    assert not utf8 and raw.isascii()
    assert b"\r\n\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    msg = parsed(raw)
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["From"] == USER and msg["To"] == "bob@far.test"
    assert msg["Subject"] == "Auto: Budget"
    assert msg["In-Reply-To"] == "<m1@far.test>"
    assert msg["References"] == "<m0@far.test> <m1@far.test>"
    assert msg["Message-ID"].endswith("@mail.example.test>") and msg["Date"]
    assert msg.get_content().splitlines() == ["Away until Monday.", "Ask Bob."]


def test_greek_subjects_and_text_survive() -> None:
    head = message("Subject: =?UTF-8?B?zqDPgc+Mz4POus67zrfPg863?=")  # Πρόσκληση
    original = read_header(head.replace(b"Subject: Budget\r\n", b""))
    assert original.subject == "Πρόσκληση"
    raw, _ = reply(
        Vacation(True, text="Λείπω ως τη Δευτέρα."), original, USER, "b@far.test", "h", NOW
    )
    msg = parsed(raw)
    assert msg["Subject"] == "Auto: Πρόσκληση"
    assert msg.get_content().strip() == "Λείπω ως τη Δευτέρα."
    own = parsed(
        reply(Vacation(True, "Εκτός γραφείου", "x"), original, USER, "b@far.test", "h", 0)[0]
    )
    assert own["Subject"] == "Εκτός γραφείου"


def test_a_message_without_message_id_gets_no_in_reply_to() -> None:
    raw, _ = reply(Vacation(True, text="x"), Original(), USER, "b@far.test", "h", NOW)
    msg = parsed(raw)
    assert msg["In-Reply-To"] is None and msg["References"] is None and msg["Subject"] == "Auto:"


# -- the settings -----------------------------------------------------------------------------


def test_settings_read_back_and_bad_values_are_off() -> None:
    vacation = Vacation(True, "Away", "text", TODAY, TODAY + datetime.timedelta(days=3), 3)
    assert Vacation.from_json(vacation.to_json()) == vacation
    assert Vacation.from_json(None) == Vacation()
    assert Vacation.from_json({"enabled": True, "text": "x", "first": "soon"}) == Vacation()
    assert Vacation.from_json({"enabled": "yes", "text": "x"}).enabled is False
    assert Vacation.from_json({"enabled": True, "text": "x", "days": 10_000}).days == MAX_DAYS
    # A subject is one line: no header field can be slipped into the reply.
    injected = Vacation.from_json(
        {"enabled": True, "subject": "Away\r\nBcc: x@far.test", "text": "x"}
    )
    assert injected.subject == "Away Bcc: x@far.test"


def test_the_dates_include_the_first_and_last_day() -> None:
    day = datetime.timedelta(days=1)
    vacation = Vacation(True, text="x", first=TODAY, last=TODAY + day)
    assert [vacation.active_on(TODAY + n * day) for n in (-1, 0, 1, 2)] == [
        False,
        True,
        True,
        False,
    ]
    assert not Vacation(False, text="x").active_on(TODAY)
    assert not Vacation(True, text="  ").active_on(TODAY)


# -- once per sender per period -------------------------------------------------------------


def test_one_reply_per_sender_per_period(tmp_path: Path) -> None:
    record = ReplyRecord(tmp_path / "r.sqlite")
    assert record.claim(USER, "bob@far.test", "h", 7, NOW) is None
    assert record.claim(USER, "bob@far.test", "h", 7, NOW + 6 * DAY) == "answered already"
    assert record.claim(USER, "carl@far.test", "h", 7, NOW) is None
    assert record.claim("bo@example.test", "bob@far.test", "h", 7, NOW) is None
    assert record.claim(USER, "bob@far.test", "new text", 7, NOW + DAY) is None
    assert record.claim(USER, "bob@far.test", "h", 7, NOW + 7 * DAY + 1) is None
    record.forget(USER, "carl@far.test", "h")
    assert record.claim(USER, "carl@far.test", "h", 7, NOW + 60) is None


def test_claims_made_out_of_order_still_answer_once(tmp_path: Path) -> None:
    """Two messages from one sender, their claims run by worker threads in the other order:
    the one stamped a moment earlier must still find the reply sent (a CI run under load
    sent two)."""
    record = ReplyRecord(tmp_path / "r.sqlite")
    assert record.claim(USER, "bob@far.test", "h", 7, NOW + 0.5) is None
    assert record.claim(USER, "bob@far.test", "h", 7, NOW) == "answered already"
    # A record more than a day ahead is a clock that was set back: it answers again.
    assert record.claim(USER, "carl@far.test", "h", 7, NOW + 3 * DAY) is None
    assert record.claim(USER, "carl@far.test", "h", 7, NOW) is None


def test_the_record_is_bounded(tmp_path: Path) -> None:
    record = ReplyRecord(tmp_path / "r.sqlite", max_entries=5, max_per_day=3)
    for n in range(3):
        assert record.claim(USER, f"s{n}@far.test", "h", 1, NOW) is None
    assert record.claim(USER, "s3@far.test", "h", 1, NOW) == "daily limit reached"
    later = NOW + 2 * DAY
    for n in range(8):
        record.claim(f"u{n}@example.test", "s@far.test", "h", 1, later + n * 601)
    assert record.count() <= 5 + 1
    record.claim("z@example.test", "s@far.test", "h", 1, later + (MAX_DAYS + 1) * DAY)
    assert record.count() == 1  # everything older than the longest period is gone


# -- the responder ----------------------------------------------------------------------------


class Queue:
    """An outbound queue that keeps what it is given (or fails)."""

    def __init__(self) -> None:
        self.queued: list[tuple[str, list[tuple[str, RcptParams]], bytes, MailParams, bool]] = []
        self.failing = False

    def enqueue(
        self,
        sender: str,
        recipients: list[tuple[str, RcptParams]],
        content: bytes,
        mail_params: MailParams,
        utf8: bool,
        forwarded: bool = False,
    ) -> Deferred[str]:
        if self.failing:
            return defer.fail(OSError("disk full"))
        self.queued.append((sender, recipients, content, mail_params, utf8))
        return defer.succeed(f"q{len(self.queued)}")


class Prefs:
    def __init__(self) -> None:
        self.values: dict[tuple[str, str], object] = {}

    def get(self, user: str, key: str) -> object:
        return self.values.get((user, key))

    def set(self, user: str, key: str, value: object) -> Deferred[None]:
        self.values[(user, key)] = value
        return defer.succeed(None)


class Directory:
    def may_send_as(self, user: str, address: str) -> bool:
        return address == user or aliases(address)


@pytest.fixture
def responder(tmp_path: Path) -> AutoResponder:
    clock = Clock()
    clock.advance(NOW)
    prefs = Prefs()
    on = Vacation(True, "", "I am away.", TODAY, TODAY, 7)
    prefs.values[(USER, KEY)] = on.to_json()
    return AutoResponder(
        prefs,  # type: ignore[arg-type]
        Directory(),  # type: ignore[arg-type]
        Queue(),  # type: ignore[arg-type]
        ReplyRecord(tmp_path / "r.sqlite"),
        "mail.example.test",
        clock,
        day=lambda now: datetime.date.fromtimestamp(now),
    )


def test_the_responder_queues_one_reply_from_the_null_sender(responder: AutoResponder) -> None:
    queue: Queue = responder.queue  # type: ignore[assignment]
    run(responder.delivered, USER, "bob@far.test", message())
    run(responder.delivered, USER, "bob@far.test", message())
    assert len(queue.queued) == 1
    sender, recipients, content, _, utf8 = queue.queued[0]
    assert sender == "" and [a for a, _ in recipients] == ["bob@far.test"] and not utf8
    assert parsed(content)["Auto-Submitted"] == "auto-replied"
    run(responder.delivered, USER, "bob@far.test", message("Precedence: bulk"))
    run(responder.delivered, "bo@example.test", "carl@far.test", message())  # bo is not away
    assert len(queue.queued) == 1


def test_outside_the_dates_nothing_is_sent(responder: AutoResponder) -> None:
    queue: Queue = responder.queue  # type: ignore[assignment]
    responder.clock.advance(DAY)  # type: ignore[attr-defined]
    run(responder.delivered, USER, "bob@far.test", message())
    assert queue.queued == []


def test_a_reply_that_could_not_be_queued_is_tried_again_next_time(
    responder: AutoResponder,
) -> None:
    queue: Queue = responder.queue  # type: ignore[assignment]
    queue.failing = True
    assert run(responder.delivered, USER, "bob@far.test", message()) is None  # logged, no error
    queue.failing = False
    run(responder.delivered, USER, "bob@far.test", message())
    assert len(queue.queued) == 1


@pytest.mark.parametrize(
    ("results", "sender", "verified"),
    [
        ("mx.test; spf=pass smtp.mailfrom=a@far.test", "a@far.test", True),
        ("mx.test; spf=pass smtp.mailfrom=far.test", "a@far.test", True),
        ("mx.test; dkim=pass header.d=far.test", "a@news.far.test", True),
        ("mx.test; dkim=pass header.d=news.far.test", "a@far.test", None),
        ("mx.test; spf=none smtp.mailfrom=far.test; dkim=none", "a@far.test", False),
        ("mx.test; spf=fail smtp.mailfrom=a@far.test", "a@far.test", False),
        ("mx.test; spf=pass smtp.mailfrom=a@other.test", "a@far.test", False),
        ("elsewhere.test; spf=pass smtp.mailfrom=a@far.test", "a@far.test", None),
    ],
)
def test_only_a_sender_we_verified_gets_a_reply(
    results: str, sender: str, verified: bool | None
) -> None:
    head = f"Authentication-Results: {results}\r\nSubject: hi\r\n\r\n".encode()
    assert sender_verified(head, "mx.test", sender) is verified


def test_a_subject_with_line_breaks_is_quoted_on_one_line() -> None:
    head = b"Subject: =?utf-8?q?hi=0D=0ABcc:_x@evil.test?=\r\nTo: ann@example.test\r\n\r\n"
    original = read_header(head)
    content, _ = reply(
        Vacation(enabled=True, text="Away."), original, "ann@example.test", "b@x.test", "mx", 0
    )
    subject = [line for line in content.split(b"\r\n") if line.startswith(b"Subject:")]
    assert len(subject) == 1 and b"Bcc" in subject[0]
    assert not any(line.lower().startswith(b"bcc:") for line in content.split(b"\r\n"))


def test_no_reply_when_the_header_is_longer_than_what_was_read() -> None:
    from ourmail.vacation.responder import _cut_header
    from ourmail.vacation.verified import HEAD_LIMIT

    long_head = b"To: ann@example.test\r\n" + b"X-Pad: " + b"x" * HEAD_LIMIT
    assert _cut_header(long_head[:HEAD_LIMIT])
    assert not _cut_header(b"To: ann@example.test\r\n\r\nbody")
    assert not _cut_header(b"To: ann@example.test\r\n")  # short: the whole header
