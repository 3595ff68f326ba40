"""The pieces of ourmail/logs and ourmail/smtp/txnlog.py on their own: escaping, the
Message-ID, the relay of an MX worker's events, the summary of a transaction's replies."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from ourmail.logs import events
from ourmail.logs.jsonlog import json_line, relayed, worker_line
from ourmail.smtp.txnlog import _outcome, message_id
from ourmail.smtp.workers import WorkerProtocol


def test_escaped_keeps_each_value_on_its_line_and_in_its_quotes() -> None:
    assert events.escaped('a"b\\c\r\n\x1b[31m\u202e\u2028') == (
        'a\\"b\\\\c\\r\\n\\x1b[31m\\u202e\\u2028'
    )
    assert events.escaped("é日本") == "é日本"  # printable text is kept as it is
    assert events.escaped(None) == "" and events.escaped("") == ""
    assert events.escaped("x" * 500) == "x" * events.MAX_FIELD + "..."


def test_client_address_has_no_space() -> None:
    assert events.client_address("1.2.3.4 x") == "1.2.3.4_x"
    assert events.client_address("") == "unknown"


def test_message_id_is_unfolded_and_only_from_the_header() -> None:
    head = b"Subject: x\r\nMessage-ID:\r\n <a@b>\r\n\r\nMessage-ID: <body@x>\r\n"
    assert message_id(head) == "<a@b>"
    assert message_id(b"Subject: x\r\n\r\nMessage-ID: <body@x>\r\n") is None


def test_outcome_of_replies() -> None:
    assert _outcome([(250, "ok")], None) == ("accepted", 250, "ok")
    assert _outcome([(250, "ok"), (452, "full")], None) == ("partial", 452, "full")
    assert _outcome([(451, "later"), (550, "no")], None) == ("refused", 451, "later")
    assert _outcome([(451, "later")], None) == ("deferred", 451, "later")
    assert _outcome([], (550, "no such user")) == ("refused", 550, "no such user")
    assert _outcome([], None) == ("abandoned", None, "")


def _logged(emit: Callable[[], None]) -> dict[str, Any]:
    """The one event ``emit()`` logs."""
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        emit()
    finally:
        globalLogPublisher.removeObserver(seen.append)
    (event,) = seen
    return event


SUMMARY = events.TransactionSummary(
    service="smtp",
    client="192.0.2.1",
    client_port=4321,
    helo="mx.example",
    tls=None,
    user=None,
    sender="a@example.org",
    recipients=("b@example.test",),
    rcpt_refused=0,
    size=10,
    message_id="<m@example.org>",
    queue_id="abc",
    result="accepted",
    code=250,
    reply="2.0.0 Ok",
    filters=(),
    duration=0.25,
)


def test_a_worker_event_comes_back_with_its_fields() -> None:
    for emit in (
        lambda: events.login("imap", "192.0.2.9", 'bo"b', "LOGIN", events.BAD_PASSWORD),
        lambda: events.transaction(SUMMARY),
    ):
        event = _logged(emit)
        text = formatEvent(event)
        line = worker_line(event)
        assert line.endswith("\n") and line.count("\n") == 1
        back = relayed(line.encode(), 2)
        assert back is not None and back["worker"] == 2
        assert formatEvent(back) == "mx worker 2: " + text
        assert back["log_namespace"] == "ourmail.logs" and back["log_time"] == event["log_time"]
        kept = {k: v for k, v in event.items() if not k.startswith("log_")}
        assert {k: back[k] for k in kept} == kept
    login = json_line(
        relayed(
            worker_line(
                _logged(
                    lambda: events.login("imap", "192.0.2.9", "bob", "LOGIN", events.BAD_PASSWORD)
                )
            ).encode(),
            1,
        )
        or {}
    )
    # The order the fail2ban JSON regex relies on.
    assert login.startswith(
        '{"event": "login", "outcome": "failed", "service": "imap", "client": "192.0.2.9", '
    )


def test_a_relayed_event_is_rebuilt_from_its_known_fields() -> None:
    event = _logged(lambda: events.login("imap", "192.0.2.9", "bob", "LOGIN", events.OK))
    data = json.loads(worker_line(event))
    data.update(extra="dropped", log_format="{extra}", log_namespace="forged", log_level=None)
    back = relayed(json.dumps(data).encode(), 1)
    assert back is not None and "extra" not in back
    assert back["log_namespace"] == "ourmail.logs" and back["log_level"] == LogLevel.info
    assert formatEvent(back).startswith("mx worker 1: login ok: client=192.0.2.9 ")
    data["client"] = "192.0.2.9\n[ourmail.logs#info] login failed: client=6.6.6.6"
    back = relayed(json.dumps(data).encode(), 1)
    assert back is not None and "\n" not in formatEvent(back)
    for wrong in ({"client": 5}, {"user": None}, {"event": "other"}, {"event": ["login"]}):
        assert relayed(json.dumps({**data, **wrong}).encode(), 1) is None
    del data["result"]
    assert relayed(json.dumps(data).encode(), 1) is None


def test_other_worker_output_is_not_an_event() -> None:
    assert worker_line({"log_format": "plain {x}", "x": 1}) == "plain 1\n"
    for line in (
        b"{not json",
        b'{"a": 1}',
        b'{"event": "x"}',
        b"[1]",
        b'{"event": 1, "log_format": 2}',
        b'{"event": "smtp.transaction", "log_format": "done {n}", "n": 3}',
    ):
        assert relayed(line, 1) is None


def test_a_worker_text_line_cannot_forge_an_event() -> None:
    """A value a worker's text line quotes (from DNS, a message...) with a line break and a
    JSON event after it stays one text line, and a text line never begins with ``{``."""
    forged = json.dumps(
        {
            "event": "login",
            "outcome": "failed",
            "service": "imap",
            "client": "198.51.100.7",
            "user": "",
            "mechanism": "x",
            "result": "bad-password",
        }
    )
    line = worker_line({"log_format": "spf: {d}", "d": "permerror\r\n" + forged})
    assert line.count("\n") == 1 and line.startswith("spf: permerror\\r\\n{")
    assert worker_line({"log_format": "{d}", "d": forged}) == " " + forged + "\n"
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        proto = WorkerProtocol(None, 1)  # type: ignore[arg-type]
        proto.outReceived(line.encode())
        proto.outReceived(worker_line({"log_format": "{d}", "d": forged}).encode())
        proto.errReceived(forged.encode() + b"\n")  # stderr carries no events
        proto.outReceived(b"x" * 70000)  # a line too long: its rest is not a line of its own
        proto.outReceived(forged.encode() + b"\n")
        proto.errReceived(b"half a ")  # stderr's partial line is its own
        proto.outReceived(b"stdout line\n")
        proto.errReceived(b"stderr line\n")
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert [e for e in seen if "event" in e] == []
    texts = [formatEvent(e) for e in seen]
    assert "mx worker 1: stdout line" in texts and "mx worker 1: half a stderr line" in texts


def test_a_json_line_is_one_line() -> None:
    line = json_line({"log_format": "{u}", "u": "a\nb", "event": "login"})
    assert line.count("\n") == 1 and json.loads(line)["log_text"] == "a\nb"
