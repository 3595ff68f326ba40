"""The sanitiser against the hostile corpus: its output parsed by html5lib, element by element.

A second, independent HTML5 parser (html5lib, not nh3's html5ever) reads every output as a
browser would, and every element, attribute, URL and style declaration is checked against the
allow-lists: no script vector and no remote URL may survive.  Text and structure of ordinary
mail (a newsletter, Thunderbird, Outlook) must.
"""

from __future__ import annotations

import re
from typing import Any

import html5lib
import pytest
import xsscorpus
from conftest import _ensure_reactor
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

from ourmail.web.safecss import PROPERTIES
from ourmail.web.sanitise import (
    ATTRIBUTES,
    MAX_HTML_CHARS,
    TAGS,
    HTMLTooLarge,
    SafeHTML,
    sanitise,
    sanitise_in_thread,
)

CID_URL = "/message/7/part/2"
MAPPED = {CID_URL}
cid = {xsscorpus.CID: CID_URL}.get
_CSS_URL = re.compile(r'url\("([^"]*)"\)')


def parse(markup: str) -> Any:
    """The fragment as a browser's HTML5 parser builds it (in a body context)."""
    return html5lib.parseFragment(markup, treebuilder="etree", namespaceHTMLElements=False)


def fetched_url_ok(url: str, *, allow_remote: bool) -> bool:
    return url in MAPPED or (allow_remote and url.startswith(("http://", "https://")))


def check_safe(markup: str, *, allow_remote: bool = False) -> None:
    """Every element and attribute of ``markup`` is on the allow-lists and harmless."""
    fragment = parse(markup)
    for element in fragment.iter():
        if element is fragment:
            continue
        assert isinstance(element.tag, str), f"comment or PI survived: {markup!r}"
        assert element.tag in TAGS, f"<{element.tag}> survived: {markup!r}"
        allowed = ATTRIBUTES.get(element.tag, set()) | ATTRIBUTES["*"]
        if element.tag == "a":
            allowed = allowed | {"target", "rel"}
        for name, value in element.attrib.items():
            assert name in allowed, f"{name}= on <{element.tag}> survived: {markup!r}"
            assert name != "srcset"
            if name == "href":
                assert value in MAPPED or re.match(r"(https?|mailto):", value), markup
            elif name in ("src", "background"):
                assert fetched_url_ok(value, allow_remote=allow_remote), markup
            elif name == "style":
                check_style(value, allow_remote=allow_remote)
            elif name == "target":
                assert value == "_blank"
            elif name == "rel":
                assert value == "noopener noreferrer"


def check_style(style: str, *, allow_remote: bool) -> None:
    lowered = style.lower()
    for word in ("expression", "javascript", "\\", "behavior", "binding", "@import", "image-set"):
        assert word not in lowered, style
    for declaration in style.split(";"):
        assert declaration.partition(":")[0] in PROPERTIES, style
    assert lowered.count("url(") == len(_CSS_URL.findall(style)), style
    for url in _CSS_URL.findall(style):
        assert fetched_url_ok(url, allow_remote=allow_remote), style


def test_the_corpus_is_big_enough() -> None:
    assert len(xsscorpus.CORPUS) >= 50
    assert len(set(xsscorpus.CORPUS)) == len(xsscorpus.CORPUS)


@pytest.mark.parametrize("payload", xsscorpus.CORPUS)
def test_no_script_vector_and_no_remote_url_survives(payload: str) -> None:
    payload = payload.replace("PWN", "top.__pwned.push(0)")
    result = sanitise(payload, allow_remote=False, cid=cid)
    check_safe(result.html)
    assert "evil.example/" not in _attribute_text(result.html)


@pytest.mark.parametrize("payload", xsscorpus.CORPUS)
def test_with_remote_content_allowed_no_script_vector_survives(payload: str) -> None:
    payload = payload.replace("PWN", "top.__pwned.push(0)")
    check_safe(sanitise(payload, allow_remote=True, cid=cid).html, allow_remote=True)


@pytest.mark.parametrize("payload", xsscorpus.CORPUS)
def test_sanitising_twice_changes_nothing(payload: str) -> None:
    """A fixed point: what the browser parses is what the sanitiser already judged.

    (Without cid mapping: a mapped same-origin address is rightly refused when it comes
    from the mail itself.)
    """
    once = sanitise(payload, allow_remote=False, cid={}.get).html
    assert sanitise(once, allow_remote=False, cid={}.get).html == once


def _attribute_text(markup: str) -> str:
    """All attribute values of the parsed fragment, the title attribute aside (plain text)."""
    return " ".join(
        value
        for element in parse(markup).iter()
        for name, value in element.attrib.items()
        if name not in ("title", "alt")
    )


@pytest.mark.parametrize(
    "payload",
    [
        f'<img src="{xsscorpus.EVIL}/p.gif">',
        f'<div style="background:url({xsscorpus.EVIL}/b.png)">x</div>',
        f'<img srcset="{xsscorpus.EVIL}/s.gif 1x">',
        f'<table background="{xsscorpus.EVIL}/t.png"><tr><td>x</td></tr></table>',
    ],
)
def test_blocked_remote_content_is_reported(payload: str) -> None:
    assert sanitise(payload, allow_remote=False, cid=cid).blocked_remote
    assert not sanitise(payload, allow_remote=True, cid=cid).blocked_remote


def test_remote_content_is_kept_when_allowed() -> None:
    out = sanitise(
        '<img src="https://news.example/a.png"><div style="background:url(https://news.example/b.png)">x</div>'
        '<table background="https://news.example/t.png"><tr><td>t</td></tr></table>',
        allow_remote=True,
        cid=cid,
    ).html
    assert '<img src="https://news.example/a.png">' in out
    assert 'style="background:url(&quot;https://news.example/b.png&quot;)"' in out
    assert 'background="https://news.example/t.png"' in out


def test_nothing_remote_means_nothing_blocked() -> None:
    result = sanitise(
        '<p>hello <a href="https://x.example/">link</a></p>', allow_remote=False, cid=cid
    )
    assert not result.blocked_remote


@pytest.mark.parametrize(
    ("markup", "expected"),
    [
        (f'<img src="cid:{xsscorpus.CID}">', f'<img src="{CID_URL}">'),
        ('<img src="cid:logo%40ourmail.test">', f'<img src="{CID_URL}">'),  # RFC 2392 %-encoding
        ('<img src="cid:unknown@x">', "<img>"),
        (
            f"<div style=\"background-image:url('cid:{xsscorpus.CID}')\">x</div>",
            f'<div style="background-image:url(&quot;{CID_URL}&quot;)">x</div>',
        ),
    ],
)
def test_cid_urls_map_to_same_origin_addresses(markup: str, expected: str) -> None:
    assert sanitise(markup, allow_remote=False, cid=cid).html == expected


def test_a_relative_url_from_the_mail_is_not_taken_for_a_cid_address() -> None:
    out = sanitise(
        '<img src="/message/8/part/1"><a href="/logout">x</a>', allow_remote=False, cid=cid
    )
    assert out.html == '<img><a target="_blank" rel="noopener noreferrer">x</a>'


def test_links_open_safely_in_a_new_context() -> None:
    out = sanitise(
        '<a href="https://a.example/" target="_self" rel="opener">a</a>',
        allow_remote=False,
        cid=cid,
    )
    assert out.html == (
        '<a href="https://a.example/" target="_blank" rel="noopener noreferrer">a</a>'
    )


def test_mailto_links_are_kept() -> None:
    out = sanitise('<a href="mailto:mayor@city.example">m</a>', allow_remote=False, cid=cid)
    assert 'href="mailto:mayor@city.example"' in out.html


def test_a_newsletter_keeps_its_text_table_layout_and_safe_styles() -> None:
    result = sanitise(xsscorpus.NEWSLETTER, allow_remote=False, cid=cid)
    check_safe(result.html)
    tree = parse(result.html)
    text = "".join(tree.itertext())
    for words in (
        "Council newsletter",
        "The library opens on Saturday.",
        "Opening hours",
        "Unsubscribe",
    ):
        assert words in text
    assert "News" not in text  # the <title> is not body text
    assert ".btn" not in text  # nor is the <style>
    assert len(tree.findall(".//table")) == 2
    assert len(tree.findall(".//td")) == 4
    assert tree.find(".//img").get("src") == CID_URL
    assert tree.find(".//a").get("href") == "https://city.example/library"
    assert "border:1px solid #dddddd" in result.html
    assert 'cellpadding="0"' in result.html and 'bgcolor="#eeeeee"' in result.html
    assert "tracker.example" not in result.html and result.blocked_remote
    shown = sanitise(xsscorpus.NEWSLETTER, allow_remote=True, cid=cid)
    assert "https://tracker.example/open.gif" in shown.html and not shown.blocked_remote


def test_a_thunderbird_message_keeps_its_quote_and_lists() -> None:
    result = sanitise(xsscorpus.THUNDERBIRD, allow_remote=False, cid=cid)
    check_safe(result.html)
    tree = parse(result.html)
    assert tree.find(".//blockquote").findtext("p") == "Can we meet on Tuesday?"
    assert [li.text for li in tree.findall(".//li")] == ["Budget", "Parks"]
    assert tree.find(".//b").text == "minutes"
    assert "Yannis" in "".join(tree.itertext())
    assert not result.blocked_remote


def test_an_outlook_message_keeps_its_greek_text_and_table() -> None:
    result = sanitise(xsscorpus.OUTLOOK, allow_remote=False, cid=cid)
    check_safe(result.html)
    tree = parse(result.html)
    text = "".join(tree.itertext())
    assert "Καλημέρα σας," in text and "The report is attached." in text
    assert "MsoNormal" not in text and "shapedefaults" not in text
    assert [td.findtext(".//p") for td in tree.findall(".//td")] == ["Quarter", "Total"]
    assert "font-size:11pt" in result.html.replace(".0pt", "pt")
    assert "border-collapse:collapse" in result.html


def test_too_large_html_is_refused_with_a_clear_error() -> None:
    with pytest.raises(HTMLTooLarge):
        sanitise("x" * (MAX_HTML_CHARS + 1), allow_remote=False, cid=cid)


def test_safe_html_is_markup_for_jinja() -> None:
    safe = SafeHTML("<b>x</b>")
    assert safe.__html__() == str(safe) == "<b>x</b>"


def test_the_checker_itself_rejects_the_raw_corpus() -> None:
    """The checks above are not vacuous: unsanitised, nearly every payload fails them.

    The few that pass are harmless in a body context (an unclosed tag at the end of input,
    ``<body>``/``<frameset>`` attributes, markup inside an attribute value).
    """
    failing = 0
    for payload in xsscorpus.CORPUS:
        try:
            check_safe(payload)
        except AssertionError:
            failing += 1
    assert failing >= len(xsscorpus.CORPUS) - 10


def test_sanitise_in_thread_gives_the_same_result_through_the_reactor() -> None:
    _ensure_reactor()
    result = blockingCallFromThread(
        reactor, lambda: sanitise_in_thread(xsscorpus.NEWSLETTER, allow_remote=False, cid=cid)
    )
    assert result == sanitise(xsscorpus.NEWSLETTER, allow_remote=False, cid=cid)


# Pieces of the corpus and of markup syntax, shuffled into new inputs.
_PIECES = [
    *(p.replace("PWN", "top.__pwned.push(0)") for p in xsscorpus.CORPUS),
    "<", ">", "</", "/>", '"', "'", "=", "<!--", "-->", "<svg>", "<math>", "<style>",
    "<noscript>", "<template>", "<table>", "<a href=", "javascript:", "onerror=", " ",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=8))
def test_shuffled_corpus_pieces_stay_safe(pieces: list[str]) -> None:
    result = sanitise("".join(pieces), allow_remote=False, cid=cid)
    check_safe(result.html)
    assert "evil.example/" not in _attribute_text(result.html)
