"""MIME structure, envelope and body outline (and their IMAP rendering), sections; hostile input
stays cheap."""

from hypothesis import given, settings
from hypothesis import strategies as st

from ourmail.imap import render
from ourmail.mime import outline
from ourmail.mime import structure as S


def envelope(root: S.Part) -> bytes:
    return render.envelope(outline.envelope(root))


def bodystructure(root: S.Part, data: bytes, extensible: bool = True) -> bytes:
    return render.body_structure(outline.body_part(root, data), extensible)


MIXED = (
    b'From: Alice <alice@example.org>\r\nTo: bob@example.org, "C D" <c@d.e>\r\n'
    b"Subject: =?utf-8?q?h=C3=A9?=\r\nMessage-ID: <1@x>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\npreamble\r\n--XX\r\n'
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\nworld\r\n--XX\r\n"
    b'Content-Type: message/rfc822\r\nContent-Disposition: attachment; filename="m.eml"\r\n\r\n'
    b"Subject: inner\r\n\r\ninner body\r\n--XX--\r\nepilogue\r\n"
)


def test_envelope() -> None:
    env = envelope(S.parse(MIXED))
    assert env.startswith(b'(NIL "=?utf-8?q?h=C3=A9?=" (("Alice" NIL "alice" "example.org"))')
    assert b'((NIL NIL "bob" "example.org")("C D" NIL "c" "d.e"))' in env
    assert env.endswith(b'NIL NIL NIL "<1@x>")')


def test_bodystructure_multipart_with_message() -> None:
    bs = bodystructure(S.parse(MIXED), MIXED)
    assert bs.startswith(b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 12 2 ')
    assert b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 28 (NIL "inner"' in bs
    assert b'("ATTACHMENT" ("FILENAME" "m.eml"))' in bs
    assert bs.endswith(b'"MIXED" ("BOUNDARY" "XX") NIL NIL NIL)')
    body = bodystructure(S.parse(MIXED), MIXED, extensible=False)
    assert body.endswith(b' "MIXED")')


def _section(root: S.Part, data: bytes, numbers: list[int], text: str, fields: list[str]) -> bytes:
    found = S.section(root, data, numbers, text, fields)
    return found if isinstance(found, bytes) else data[found[0] : found[1]]


def test_sections() -> None:
    root = S.parse(MIXED)
    assert _section(root, MIXED, [1], "", []) == b"hello\r\nworld"
    assert (
        _section(root, MIXED, [1], "MIME", []) == b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    assert _section(root, MIXED, [2], "HEADER", []) == b"Subject: inner\r\n\r\n"
    assert _section(root, MIXED, [2, 1], "", []) == b"inner body"
    assert _section(root, MIXED, [], "HEADER.FIELDS", ["SUBJECT"]).startswith(b"Subject: =?utf")
    assert b"Subject" not in _section(root, MIXED, [], "HEADER.FIELDS.NOT", ["subject"])
    assert _section(root, MIXED, [9], "", []) == b""
    assert _section(root, MIXED, [], "", []) == MIXED


def test_single_part_and_headerless() -> None:
    data = b"Subject: x\r\n\r\nbody"
    assert bodystructure(S.parse(data), data).startswith(
        b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 4 1'
    )
    assert _section(S.parse(data), data, [1], "", []) == b"body"
    data = b"\r\nonly a body\r\n"
    assert _section(S.parse(data), data, [], "TEXT", []) == b"only a body\r\n"


def test_nesting_bomb_is_bounded() -> None:
    data = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        for i in range(5000)
    )
    depth = deepest = 0
    for c in bodystructure(S.parse(data), data):
        depth += {40: 1, 41: -1}.get(c, 0)
        deepest = max(depth, deepest)
    assert deepest <= S.MAX_DEPTH + 3


def test_boundary_prefix_is_not_a_delimiter() -> None:
    data = (
        b"Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\n\r\none\r\n--b10\r\n"
        b"still one\r\n--b1  \r\n\r\ntwo\r\n--b1--\r\n"
    )
    root = S.parse(data)
    assert [data[c.body_start : c.end] for c in root.children] == [
        b"one\r\n--b10\r\nstill one",
        b"two",
    ]


def test_many_parts_are_bounded() -> None:
    data = (
        b"Content-Type: multipart/mixed; boundary=z\r\n\r\n"
        + b"--z\r\n\r\nx\r\n" * 50_000
        + b"--z--\r\n"
    )
    root = S.parse(data)
    assert len(root.children) < S.MAX_PARTS


@given(st.binary(max_size=2000))
@settings(max_examples=200)
def test_garbage_parses(data: bytes) -> None:
    root = S.parse(data)
    envelope(root)
    bodystructure(root, data)
    _section(root, data, [1, 2], "MIME", [])


@given(
    st.lists(
        st.sampled_from(
            [
                b"--a\r\n",
                b"--a--\r\n",
                b"\r\n",
                b"Content-Type: multipart/mixed; boundary=a\r\n",
                b"Content-Type: message/rfc822\r\n",
                b"x\r\n",
                b"--",
            ]
        ),
        max_size=60,
    )
)
@settings(max_examples=200)
def test_mime_shaped_garbage_parses(chunks: list[bytes]) -> None:
    data = b"Content-Type: multipart/mixed; boundary=a\r\n\r\n" + b"".join(chunks)
    root = S.parse(data)
    bodystructure(root, data)
