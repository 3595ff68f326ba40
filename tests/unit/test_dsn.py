"""DSN parameters (RFC 3461) and reports (RFC 3464)."""

from __future__ import annotations

import email
import email.policy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ourmail import dsnparams
from ourmail.queue import dsn


def test_xtext_round_trip_and_errors() -> None:
    assert dsnparams.xtext_decode("a+2Bb+3Dc") == "a+b=c"
    assert dsnparams.xtext_encode("a+b=c d") == "a+2Bb+3Dc+20d"
    for bad in ("a+zz", "a+2", "a=b", "a b"):
        with pytest.raises(dsnparams.DSNParamError):
            dsnparams.xtext_decode(bad)


@given(st.text(max_size=60))
def test_xtext_encode_decodes_back(text: str) -> None:
    encoded = dsnparams.xtext_encode(text)
    if all(c.isascii() and c.isprintable() for c in text):
        assert dsnparams.xtext_decode(encoded) == text


@given(st.text(max_size=200), st.text(max_size=200))
def test_parameter_garbage_is_refused_cleanly(notify: str, orcpt: str) -> None:
    try:
        dsnparams.parse_rcpt_params(notify, orcpt)
    except dsnparams.DSNParamError as e:
        assert str(e).startswith("5.5.4")


def test_notify_rules() -> None:
    assert dsnparams.parse_rcpt_params(None, None).wants("FAILURE")
    assert dsnparams.parse_rcpt_params(None, None).wants("DELAY")
    assert not dsnparams.parse_rcpt_params(None, None).wants("SUCCESS")
    assert not dsnparams.parse_rcpt_params("NEVER", None).wants("FAILURE")
    assert dsnparams.parse_rcpt_params("success,delay", None).notify == {"SUCCESS", "DELAY"}
    with pytest.raises(dsnparams.DSNParamError):
        dsnparams.parse_rcpt_params("NEVER,FAILURE", None)
    assert dsnparams.parse_rcpt_params(None, "RFC822;a+40b").orcpt == "rfc822;a@b"


def test_report_structure() -> None:
    original = dsn.Original("env1", 1_700_000_000.0, None, b"Subject: hi\r\n\r\nbody\r\n")
    status = dsn.RecipientStatus(
        "rfc822;bob@remote.test",
        "failed",
        "5.1.1",
        original_recipient="rfc822;bob+x@remote.test",
        remote_mta="mx.remote.test",
        diagnostic="550 5.1.1 no such user",
        last_attempt=1_700_000_100.0,
    )
    raw = dsn.build_report(
        "mail.example.test", "alice@example.test", original, [status], 1_700_000_200.0, 1 << 20
    )
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Auto-Submitted"] == "auto-replied"
    parts = [p.get_content_type() for p in msg.walk()]
    assert parts[:3] == ["multipart/report", "text/plain", "message/delivery-status"]
    assert "message/rfc822" in parts
    status_part = next(p for p in msg.walk() if p.get_content_type() == "message/delivery-status")
    per_message, per_rcpt = status_part.get_payload()
    assert per_message["Original-Envelope-Id"] == "env1"
    assert per_rcpt["Original-Recipient"] == "rfc822;bob+2Bx@remote.test"
    assert per_rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"


def test_big_messages_return_only_their_header() -> None:
    big = b"Subject: big\r\n\r\n" + b"x" * 5000 + b"\r\n"
    original = dsn.Original(None, 0.0, "FULL", big)
    status = dsn.RecipientStatus("rfc822;b@r.test", "failed", "5.0.0")
    raw = dsn.build_report("m.test", "a@m.test", original, [status], 0.0, 1000)
    assert b"text/rfc822-headers" in raw and b"x" * 100 not in raw


def test_utf8_reports_use_the_global_types() -> None:
    original = dsn.Original(None, 0.0, None, "Subject: grüße\r\n\r\nx\r\n".encode())
    status = dsn.RecipientStatus("rfc822;jörg@r.test", "failed", "5.6.7")
    raw = dsn.build_report("m.test", "a@m.test", original, [status], 0.0, 1 << 20)
    assert b"Content-Type: message/global-delivery-status" in raw
    assert b"Content-Type: message/global\r\n" in raw
    assert "Final-Recipient: rfc822;jörg@r.test".encode() in raw
