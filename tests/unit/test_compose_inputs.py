"""The compose page's inputs without a server: address fields split in one pass (commas in
quoted names, hostile input), quoting HTML that never closes its links, the hourly rate
reserved at the check so parallel sends cannot all pass, and a partly sent message's form
keeping only the recipients it did not reach."""

from __future__ import annotations

from ourmail.config import SubmissionSettings
from ourmail.smtp.submission import SendingRates
from ourmail.web.compose import _without
from ourmail.web.composeform import ComposeForm, parse_addresses
from ourmail.web.richtext import to_plain


def test_address_fields_are_split_outside_quotes() -> None:
    good, bad = parse_addresses('a@b.test, "Smith, John" <j@s.test>; nonsense')
    assert good == ["a@b.test", '"Smith, John" <j@s.test>'] and bad == ["nonsense"]


def test_a_trailing_backslash_in_a_name_cannot_break_the_quoting() -> None:
    good, _ = parse_addresses("foo\\\\ <x@y.test>")
    assert good == ['"foo" <x@y.test>']


def test_hostile_address_fields_are_bounded() -> None:
    # Before: a lookahead rescanned the field for each comma (seconds for 64 KB).
    good, bad = parse_addresses(',"' * 32_000)
    assert good == [] and len(bad) <= 1000


def test_quoting_html_whose_links_never_close() -> None:
    # Before: the link pattern scanned to the end for each unclosed <a> (minutes for 1 MB).
    text = to_plain('<a href="https://x.test">' * 20_000)
    assert text.count("<https://x.test>") == 20_000
    assert to_plain('<p>See <a href="https://a.test/">the page</a></p>') == (
        "See the page <https://a.test/>\n"
    )


def test_the_hourly_rate_is_reserved_at_the_check() -> None:
    now = [1000.0]
    rates = SendingRates(
        SubmissionSettings(max_messages_per_hour=2, max_recipients_per_hour=100),
        lambda: now[0],
    )
    first, second = rates.reserve("ann", 1), rates.reserve("ann", 1)
    assert first is not None and second is not None
    assert rates.reserve("ann", 1) is None  # a third send at the same time: over the limit
    rates.release("ann", second)  # that one sent nothing
    assert rates.reserve("ann", 1) is not None


def test_a_partly_sent_message_keeps_only_the_others() -> None:
    form = ComposeForm(
        from_="ann@x.test",
        to="bob@x.test, Carol <carol@y.test>",
        cc="dave@y.test",
        bcc="eve@z.test, BOB@x.test",
    )
    left = _without(form, {"bob@x.test", "dave@y.test"})
    assert left.to == '"Carol" <carol@y.test>'
    assert left.cc == ""
    assert left.bcc == "eve@z.test"  # a Bcc stays a Bcc
