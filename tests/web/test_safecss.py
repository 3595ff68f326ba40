"""Inline style declarations: the value filter behind the sanitiser's style allow-list."""

from __future__ import annotations

import pytest

from ourmail.web.safecss import filter_style

MAPPED = {"cid:logo": "/part/2"}.get


def run(style: str, allow_remote: bool = False) -> tuple[str | None, bool]:
    result = filter_style(style, allow_remote=allow_remote, resolve_cid=MAPPED)
    return result.value, result.blocked_remote


def test_plain_declarations_are_kept() -> None:
    assert run('color:red;font-family:"a;b" , serif;border:1px solid rgb(1, 2, 3)') == (
        'color:red;font-family:"a;b" , serif;border:1px solid rgb(1, 2, 3)',
        False,
    )


@pytest.mark.parametrize(
    "style",
    [
        "width:expression(alert(1))",
        'background:image-set("http://e.example/a.png" 1x)',
        'background:var(--x, url("http://e.example/a.png"))',
        'background:url("javascript:alert(1)")',
        'background:url("data:image/png;base64,AAAA")',
        'background:url("/relative.png")',
        "background:url(http://e.example/unquoted.png)",
        'background:u\\72l("http://e.example/a.png")',
        "position:fixed",
        'behavior:url("x.htc")',
    ],
)
def test_dangerous_declarations_are_dropped(style: str) -> None:
    assert run(style, allow_remote=True)[0] is None


def test_remote_urls_are_blocked_unless_allowed() -> None:
    style = 'color:red;background:url("https://e.example/b.png") no-repeat'
    assert run(style) == ("color:red", True)
    assert run(style, allow_remote=True) == (style, False)


def test_cid_urls_are_mapped_and_unknown_ones_dropped() -> None:
    assert run('background:url("cid:logo")') == ('background:url("/part/2")', False)
    assert run('background:url("cid:other")') == (None, False)
