"""Plain-text bodies as HTML: escaping, links, line breaks and RFC 3676 format=flowed."""

from __future__ import annotations

from ourmail.web.sanitise import text_to_html

LINK = '<a href="{0}" target="_blank" rel="noopener noreferrer">{0}</a>'


def body(inner: str) -> str:
    return f'<div class="om-text">{inner}</div>'


def test_markup_in_text_is_escaped() -> None:
    assert text_to_html('<script>alert("x")</script> & co').html == body(
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co<br>"
    )


def test_line_breaks_are_kept() -> None:
    assert text_to_html("one\ntwo\r\n\nthree").html == body("one<br>two<br><br>three<br>")


def test_http_https_and_mailto_become_links_without_trailing_punctuation() -> None:
    out = text_to_html(
        "See https://city.example/a?b=1&c=2. Or (http://x.example/) mailto:a@b.example!"
    )
    assert out.html == body(
        "See "
        + LINK.format("https://city.example/a?b=1&amp;c=2")
        + ". Or ("
        + LINK.format("http://x.example/")
        + ") "
        + LINK.format("mailto:a@b.example")
        + "!<br>"
    )


def test_other_schemes_stay_text() -> None:
    out = text_to_html("javascript:alert(1) data:text/html,x ftp://f.example http://")
    assert "<a" not in out.html


def test_a_link_cannot_break_out_of_its_attribute() -> None:
    out = text_to_html('https://x.example/"onmouseover="alert(1)')
    assert 'href="https://x.example/"' in out.html and "onmouseover=" not in out.html.split(">")[0]


def test_format_flowed_joins_soft_breaks() -> None:
    # RFC 3676 §4.1: a line ending in a space flows into the next.
    out = text_to_html("The meeting is \nat ten.\nBye", flowed=True)
    assert out.html == body("The meeting is at ten.<br>Bye<br>")


def test_format_flowed_delsp_removes_the_soft_space() -> None:
    out = text_to_html("Καλη \nμέρα", flowed=True, delsp=True)
    assert out.html == body("Καλημέρα<br>")


def test_format_flowed_space_stuffing_and_signature() -> None:
    # §4.4: a leading space is stuffing; §4.3: "-- " is a fixed line.
    out = text_to_html(" From the desk \nof the mayor\n-- \nYannis", flowed=True)
    assert out.html == body("From the desk of the mayor<br>-- <br>Yannis<br>")


def test_format_flowed_quotes_become_nested_blockquotes() -> None:
    out = text_to_html("> Can we \n> meet?\n>> Earlier\nYes.", flowed=True)
    assert out.html == body(
        '<blockquote type="cite">Can we meet?<br>'
        '<blockquote type="cite">Earlier<br></blockquote></blockquote>Yes.<br>'
    )


def test_fixed_text_keeps_quote_marks_as_text() -> None:
    assert text_to_html("> quoted").html == body("&gt; quoted<br>")
