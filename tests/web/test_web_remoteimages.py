"""Whose remote images are shown (ourmail/web/remoteimages.py): a sender's choice is honoured
only for a From that this server's DMARC verdict verified; the kept list is bounded."""

from __future__ import annotations

import pytest

from ourmail.web.remoteimages import MAX_SENDERS, header_fields, verified_sender, with_sender

OURS = "mail.example.test"


def head(*fields: str) -> bytes:
    return ("\r\n".join(fields) + "\r\n\r\nbody: not a field\r\n").encode()


PASS = f"Authentication-Results: {OURS}; spf=pass smtp.mailfrom=news.example;\r\n\tdmarc=pass header.from=news.example"


def test_a_dmarc_pass_under_our_id_verifies_the_from() -> None:
    assert (
        verified_sender(head("From: News <Info@News.Example>", PASS), OURS) == "info@news.example"
    )
    # Case of the id and a comment do not matter (RFC 8601 §2.2).
    upper = PASS.replace(OURS, OURS.upper()).replace("dmarc=pass", "dmarc=pass (aligned)")
    assert verified_sender(head("From: info@news.example", upper), OURS) == "info@news.example"


@pytest.mark.parametrize(
    "fields",
    [
        ("From: info@news.example",),  # no verdict
        ("From: info@news.example", PASS.replace(OURS, "mx.elsewhere.example")),  # not ours
        ("From: info@news.example", PASS.replace("dmarc=pass", "dmarc=fail")),
        ("From: info@news.example", PASS.replace("dmarc=pass", "dmarc=none")),
        ("From: info@other.example", PASS),  # the verdict is for another domain
        ("From: info@news.example", PASS.replace("header.from", "header.d")),
        ("From: info@news.example", "From: x@news.example", PASS),  # two From fields
        ("From: info@news.example, x@news.example", PASS),  # two addresses
        ("From: undisclosed", PASS),
        ("From: info@news.example", f"Authentication-Results: {OURS}; ;;; garbage ("),
        # A verdict hidden in another result's quoted reason is no verdict.
        (
            "From: info@news.example",
            f'Authentication-Results: {OURS}; spf=fail reason="dmarc=pass header.from=news.example"',
        ),
    ],
)
def test_anything_less_verifies_nothing(fields: tuple[str, ...]) -> None:
    assert verified_sender(head(*fields), OURS) is None


def test_no_authserv_id_trusts_nothing() -> None:
    assert verified_sender(head("From: info@news.example", PASS), "") is None


def test_a_verdict_in_the_body_is_not_a_header() -> None:
    raw = b"From: info@news.example\r\n\r\n" + PASS.encode() + b"\r\n"
    assert verified_sender(raw, OURS) is None
    assert [name for name, _ in header_fields(raw)] == ["from"]


def test_the_kept_senders_are_bounded_and_the_newest_last() -> None:
    kept: list[str] = []
    for n in range(MAX_SENDERS + 10):
        kept = with_sender(kept, f"s{n}@example.org")
    assert len(kept) == MAX_SENDERS and kept[-1] == f"s{MAX_SENDERS + 9}@example.org"
    assert with_sender(["a@x", "b@x"], "a@x") == ["b@x", "a@x"]


def test_an_idn_sender_is_matched_by_the_a_label_dmarc_names() -> None:
    verdict = (
        f"Authentication-Results: {OURS}; dmarc=pass header.from=xn--hxajbheg2az3al.xn--jxalpdlp"
    )
    fields = head("From: info@παράδειγμα.δοκιμή", verdict)
    assert verified_sender(fields, OURS) == "info@παράδειγμα.δοκιμή"
