"""The pieces of ourmail/logs and ourmail/smtp/txnlog.py on their own: escaping, the
Message-ID, the relay of an MX worker's events, the summary of a transaction's replies."""

from __future__ import annotations

import json

from twisted.logger import formatEvent

from ourmail.logs import events
from ourmail.logs.jsonlog import json_line, relayed, worker_line
from ourmail.smtp.txnlog import _outcome, message_id


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


def test_a_worker_event_comes_back_with_its_fields() -> None:
    event = {
        "event": "smtp.transaction",
        "log_format": "done {n}",
        "n": 3,
        "log_namespace": "ourmail.logs",
        "log_time": 1.0,
    }
    line = worker_line(event)
    assert line.endswith("\n") and json.loads(line)["n"] == 3
    back = relayed(line.encode(), 2)
    assert back is not None and back["worker"] == 2 and back["n"] == 3
    assert formatEvent(back) == "mx worker 2: done 3"


def test_other_worker_output_is_not_an_event() -> None:
    assert worker_line({"log_format": "plain {x}", "x": 1}) == "plain 1\n"
    for line in (
        b"{not json",
        b'{"a": 1}',
        b'{"event": "x"}',
        b"[1]",
        b'{"event": 1, "log_format": 2}',
    ):
        assert relayed(line, 1) is None


def test_a_json_line_is_one_line() -> None:
    line = json_line({"log_format": "{u}", "u": "a\nb", "event": "login"})
    assert line.count("\n") == 1 and json.loads(line)["log_text"] == "a\nb"
