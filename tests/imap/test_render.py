"""ENVELOPE, BODYSTRUCTURE and BODY rendered from the store's plain data (RFC 3501 §7.4.2)."""

from ourmail.imap import render
from ourmail.mime import outline, structure
from ourmail.mime.summary import Summary, summarize

MSG = (
    b'From: "Al \\"B\\"" <al@x.org>\r\nSender: s@x.org\r\nTo: undisclosed-recipients:;\r\n'
    b"Subject: caf\xc3\xa9\r\nContent-Type: multipart/alternative; boundary=zz\r\n\r\nno delimiter\r\n"
)


def test_the_summary_and_its_tuples_render_alike() -> None:
    summary = Summary.from_record(summarize(MSG).to_record())
    part = structure.parse(MSG)
    assert render.summary_envelope(summary) == render.envelope(outline.envelope(part))
    body = outline.body_part(part, MSG)
    for extensible in (True, False):
        assert render.summary_body(summary, extensible) == render.body_structure(body, extensible)


def test_envelope_fields() -> None:
    env = render.envelope(outline.envelope(structure.parse(MSG)))
    assert env.startswith(b'(NIL {5}\r\ncaf\xc3\xa9 (("Al \\"B\\"" NIL "al" "x.org"))')
    # Sender as given; Reply-To absent: as From; a group with no members: NIL
    assert b'((NIL NIL "s" "x.org")) (("Al \\"B\\"" NIL "al" "x.org")) NIL NIL NIL NIL NIL)' in env


def test_a_multipart_without_parts_shows_an_empty_text_part() -> None:
    body = outline.body_part(structure.parse(MSG), MSG)
    assert (body.maintype, body.children) == ("multipart", ())
    assert render.body_structure(body) == b'("TEXT" "PLAIN" NIL NIL NIL "7BIT" 0 0)'


def test_renderings_are_memoised_on_the_summary_bytes() -> None:
    summary = summarize(MSG + b"memo\r\n")
    first = render.summary_envelope(summary)
    hits = render._envelope_of.cache_info().hits
    again = Summary.from_record(summary.to_record())
    assert render.summary_envelope(again) is first
    assert render._envelope_of.cache_info().hits == hits + 1
