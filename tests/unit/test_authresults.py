"""Authentication-Results (RFC 8601): ours written right, forged ones under our id removed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ourmail.filters import authresults
from ourmail.interfaces import AuthResult


def test_results_are_written_with_properties_and_quoted_reasons() -> None:
    header = authresults.header(
        "mx.example.org",
        [
            AuthResult("spf", "pass", properties=(("smtp.mailfrom", "example.net"),)),
            AuthResult("dkim", "fail", "signature did not verify", (("header.d", "x.net"),)),
        ],
    )
    assert header == (
        b"Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=example.net;\r\n"
        b'\tdkim=fail reason="signature did not verify" header.d=x.net\r\n'
    )


def test_no_results_is_none() -> None:
    assert authresults.header("mx.test", []) == b"Authentication-Results: mx.test; none\r\n"


def test_forged_fields_under_our_id_are_removed_folded_or_commented() -> None:
    head = (
        b"Received: from x\r\n"
        b"Authentication-Results: MX.Example.Org;\r\n\tspf=pass smtp.mailfrom=forged\r\n"
        b"authentication-results:(comment) mx.example.org; dkim=pass\r\n"
        b"Authentication-Results: other.example; dkim=pass\r\n"
        b"Subject: Authentication-Results: mx.example.org; in a subject\r\n"
        b"\r\n"
    )
    assert authresults.strip_own(head, "mx.example.org") == (
        b"Received: from x\r\n"
        b"Authentication-Results: other.example; dkim=pass\r\n"
        b"Subject: Authentication-Results: mx.example.org; in a subject\r\n"
        b"\r\n"
    )


def test_an_empty_authserv_id_is_no_claim() -> None:
    assert authresults.authserv_id_of(b" ; spf=pass") == ""
    head = b"Authentication-Results: ;\r\n"
    assert authresults.strip_own(head, "mx.t") == head


def test_a_field_with_no_end_is_removed_to_the_end() -> None:
    assert authresults.strip_own(b"Authentication-Results: mx.t; x", "mx.t") == b""


@given(st.binary(max_size=400))
def test_garbage_headers_never_raise(head: bytes) -> None:
    out = authresults.strip_own(head, "mx.test")
    assert len(out) <= len(head)
    assert authresults.authserv_id_of(head) is not None


def test_nested_comments_and_quoted_pairs_do_not_hide_our_id() -> None:
    for value in (b" ((x)) mx.t; dkim=pass", b" (a\\)b (c)) mx.t; x", b"(one)(two)mx.t;"):
        assert authresults.authserv_id_of(value) == "mx.t"
        assert authresults.strip_own(b"Authentication-Results:" + value + b"\r\n", "mx.t") == b""
    assert authresults.authserv_id_of(b"(never closed mx.t; x") == ""
