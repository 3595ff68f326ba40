"""The outgoing copy of a post (ourmail/lists/rewrite.py) on odd but legal posts, parsed
back with Python's email package."""

from __future__ import annotations

import email
import email.message
import email.policy
from urllib.parse import unquote

import pytest
from twisted.internet import defer

from ourmail.lists import rewrite, tokens
from ourmail.lists.model import ListSettings, ReplyTo

WEB = "https://mail.example.test"
SECRET = b"k" * 32
TEAM = ListSettings("team@example.test", name="Team", subject_prefix="[team]")


def post(header: str, body: bytes = b"Hello all.\r\n") -> bytes:
    lines = header.strip("\n").split("\n")
    return "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n" + body


PLAIN = post(
    """From: Ann Poster <ann@poster.test>
To: team@example.test
Subject: Budget
Message-ID: <1@poster.test>
List-Id: Other <other.elsewhere.test>
List-Unsubscribe: <mailto:x@elsewhere.test>
Precedence: bulk
Return-Path: <ann@poster.test>
DKIM-Signature: v=1; a=rsa-sha256; d=poster.test; s=s; h=from; bh=x; b=y"""
)


def parse(data: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def text(part: email.message.EmailMessage) -> str:
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def out(message: bytes, lst: ListSettings = TEAM, munge: bool = False) -> bytes:
    data = rewrite.outgoing(lst, message, web_url=WEB, munge=munge)
    assert data.count(b"\n") == data.count(b"\r\n"), "CRLF only"
    return data


def test_list_fields_replace_the_incoming_ones() -> None:
    data = out(PLAIN)
    msg = parse(data)
    assert msg.get_all("List-Id") == ["Team <team.example.test>"]
    assert msg["List-Post"] == "<mailto:team@example.test>"
    assert msg["List-Help"] == "<mailto:team-request@example.test?subject=help>"
    assert msg["List-Subscribe"] == "<mailto:team-join@example.test>"
    assert msg["List-Owner"] == "<mailto:team-owner@example.test>"
    assert msg["List-Archive"].startswith(f"<{WEB}/archive?folder=")
    assert msg.get_all("Precedence") == ["list"]
    assert msg.get_all("X-Loop") == ["team@example.test"]
    relayed = parse(out(post("From: a@p.test\nX-Loop: other@else.test")))
    assert relayed.get_all("X-Loop") == ["other@else.test", "team@example.test"]
    assert msg["Return-Path"] is None
    assert msg["List-Unsubscribe"] is None  # per member, from the queue
    assert msg["DKIM-Signature"] is not None  # the poster's, kept
    assert msg["From"] == "Ann Poster <ann@poster.test>"
    assert msg["Reply-To"] is None
    assert msg["Subject"] == "[team] Budget"
    assert data.endswith(b"\r\n\r\nHello all.\r\n")  # body octets as they came
    announce = parse(out(PLAIN, ListSettings("team@example.test", announce_only=True)))
    assert announce["List-Post"] == "NO"  # RFC 2369 §3.4


def test_member_unsubscribe_fields() -> None:
    raw = rewrite.unsubscribe_fields(WEB, SECRET, TEAM, "Bob+x@Remote.test")
    msg = parse(raw + b"\r\n")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"  # RFC 8058 §3.1
    https, mailto = (u.strip().strip("<>") for u in str(msg["List-Unsubscribe"]).split(","))
    assert mailto == "mailto:team-leave@example.test"
    prefix = f"{WEB}/lists/unsubscribe/"
    assert https.startswith(prefix)
    lst, member, signature = (unquote(s) for s in https[len(prefix) :].split("/"))
    assert (lst, member) == ("team@example.test", "Bob+x@Remote.test")
    assert tokens.valid_signature(SECRET, lst, member, signature)


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Subject: Re: [team] Budget", "Re: [team] Budget"),
        ("Subject: [TEAM] shouting", "[TEAM] shouting"),
        ("Subject: =?utf-8?b?zrrOsc67zrfOvM6tz4HOsQ==?=", "[team] καλημέρα"),
        ("Subject: Re: =?utf-8?q?=5Bteam=5D_caf=C3=A9?=", "Re: [team] café"),
        ("Subject: =?bogus-charset?q?x?=", "[team] x"),
        ("Subject: " + "long words " * 60, "[team] " + ("long words " * 60).strip()),
        ("X-No-Subject: here", "[team]"),
    ],
)
def test_subject_prefix_once(subject: str, expected: str) -> None:
    msg = parse(out(post(f"From: ann@poster.test\n{subject}")))
    assert " ".join(str(msg["Subject"]).split()) == expected
    assert len(msg.get_all("Subject") or []) == 1


def test_subject_utf8_raw_and_folded_kept() -> None:
    raw = post("From: ann@poster.test\nSubject: Καλημέρα\n\tfolded").replace(
        "Καλημέρα".encode(), "Καλημέρα".encode()
    )
    data = out(raw)
    assert "Subject: [team] Καλημέρα\r\n\tfolded\r\n".encode() in data


def test_footer_plain_7bit_8bit_qp_base64() -> None:
    lst = ListSettings("team@example.test", footer="Team list: https://x.test/team")
    seven = parse(out(post("From: a@p.test\nSubject: s"), lst))
    assert text(seven).endswith("Team list: https://x.test/team\n")
    greek = ListSettings("team@example.test", footer="Λίστα της ομάδας")
    plain = parse(out(post("From: a@p.test\nSubject: s", b"plain ascii = text\r\n"), greek))
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"
    assert plain.get_content_charset() == "utf-8"
    assert text(plain).startswith("plain ascii = text\n")
    assert text(plain).endswith("Λίστα της ομάδας\n")
    eight_body = "γειά σας\r\n".encode()
    eight = post(
        "From: a@p.test\nContent-Type: text/plain; charset=utf-8; format=flowed\n"
        "Content-Transfer-Encoding: 8bit",
        eight_body,
    )
    data = out(eight, greek)
    assert data.split(b"\r\n\r\n", 1)[1].startswith(eight_body)  # body octets kept
    assert text(parse(data)).endswith("Λίστα της ομάδας\n")
    qp = post(
        "From: a@p.test\nContent-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: quoted-printable",
        b"caf=C3=A9 soft=\r\nbreak\r\n",
    )
    body = text(parse(out(qp, greek)))
    assert body.startswith("café softbreak\n") and body.endswith("Λίστα της ομάδας\n")
    b64 = post(
        "From: a@p.test\nContent-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: base64",
        b"zrPOtc65zqw=\r\n",
    )
    assert text(parse(out(b64, greek))).startswith("γειά")
    assert text(parse(out(b64, greek))).endswith("Λίστα της ομάδας\n")


def test_footer_in_mixed_not_in_alternative_or_signed() -> None:
    lst = ListSettings("team@example.test", footer="Λίστα")
    mixed = post(
        'From: a@p.test\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b1"',
        b"--b1\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b1\r\n"
        b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBE\r\n"
        b"--b1--\r\n",
    )
    parts = list(parse(out(mixed, lst)).iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "application/pdf", "text/plain"]
    assert text(parts[-1]).strip().endswith("Λίστα")
    for kind in ("multipart/alternative", 'multipart/signed; protocol="application/pgp-signature"'):
        message = post(
            f'From: a@p.test\nMIME-Version: 1.0\nContent-Type: {kind}; boundary="b1"',
            b"--b1\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b1\r\n"
            b"Content-Type: text/html\r\n\r\n<p>hi</p>\r\n--b1--\r\n",
        )
        data = out(message, lst)
        assert data.split(b"\r\n\r\n", 1)[1] == message.split(b"\r\n\r\n", 1)[1]


def test_reply_to_policy() -> None:
    message = post("From: Ann <ann@poster.test>\nReply-To: ann-home@poster.test\nSubject: s")
    kept = parse(out(message))
    assert kept["Reply-To"] == "ann-home@poster.test"
    to_list = parse(out(message, ListSettings("team@example.test", reply_to=ReplyTo.LIST)))
    assert to_list.get_all("Reply-To") == ["team@example.test"]


def test_dmarc_munging() -> None:
    message = post("From: =?utf-8?q?Ann=C3=A9?= <ann@strict.test>\nSubject: s")
    msg = parse(out(message, munge=True))
    assert msg["From"].addresses[0].addr_spec == "team@example.test"
    assert msg["From"].addresses[0].display_name == "Anné via Team"
    assert [a.addr_spec for a in msg["Reply-To"].addresses] == ["ann@strict.test"]
    to_list = ListSettings("team@example.test", name="Team", reply_to=ReplyTo.LIST)
    both = parse(out(message, to_list, munge=True))
    assert [a.addr_spec for a in both["Reply-To"].addresses] == [
        "ann@strict.test",
        "team@example.test",
    ]
    own = post("From: Ann <ann@strict.test>\nReply-To: desk@strict.test\nSubject: s")
    assert parse(out(own, munge=True))["Reply-To"] == "desk@strict.test"


def test_odd_from_fields() -> None:
    several = post("From: Ann <ann@a.test>, Bob <bob@b.test>\nSender: ann@a.test\nSubject: s")
    msg = parse(out(several, munge=True))
    assert [a.addr_spec for a in msg["From"].addresses] == ["team@example.test"]
    assert [a.addr_spec for a in msg["Reply-To"].addresses] == ["ann@a.test", "bob@b.test"]
    group = post("From: Crew: ann@a.test, bob@b.test;\nSubject: s")
    assert [d for _, d in rewrite.authors(rewrite.headers.split(group)[0])] == [
        "ann@a.test",
        "bob@b.test",
    ]
    undisclosed = post("From: undisclosed:;\nSubject: s")
    assert parse(out(undisclosed, munge=True))["From"] == "undisclosed:;"


def test_long_and_many_header_fields() -> None:
    long_to = "To: " + ", ".join(f"person{n}@example.test" for n in range(400))
    folded = long_to.replace(", ", ",\n ")
    data = out(post(f"From: ann@poster.test\n{folded}\nSubject: s"))
    msg = parse(data)
    assert len(msg["To"].addresses) == 400
    assert msg["List-Id"] == "Team <team.example.test>"


def fired(d: defer.Deferred[rewrite.Outgoing]) -> rewrite.Outgoing:
    results: list[rewrite.Outgoing] = []
    d.addCallback(results.append)
    return results[0]


def test_dmarc_policy_decides() -> None:
    from tests.lists.listreqhelp import SyncContext  # rewrites in the test's thread

    policies = {"strict.test": "reject", "q.test": "quarantine", "lax.test": "none"}

    def policy(domain: str) -> defer.Deferred[str | None]:
        if domain == "broken.test":
            return defer.fail(OSError("SERVFAIL"))
        return defer.succeed(policies.get(domain))

    ctx = SyncContext(
        None,
        None,
        None,
        None,
        None,
        None,
        "h",
        WEB,
        SECRET,
        dmarc_policy=policy,  # type: ignore[arg-type]
    )
    for domain, munged in [
        ("strict.test", True),
        ("q.test", True),
        ("lax.test", False),
        ("none.test", False),
        ("broken.test", True),
    ]:
        message = post(f"From: Ann <ann@{domain}>\nSubject: s")
        result = fired(defer.Deferred.fromCoroutine(rewrite.rewrite(ctx, TEAM, message)))
        assert result.munged is munged, domain
        author = parse(result.content)["From"].addresses[0].addr_spec
        assert author == ("team@example.test" if munged else f"ann@{domain}")


def test_greek_catalogue_has_posting_texts() -> None:
    import re
    from pathlib import Path

    from ourmail.lists import compose, moderation, posting

    greek = compose.translator("el")
    for module in (posting, moderation):
        source = Path(str(module.__file__)).read_text(encoding="utf-8")
        for text in re.findall(r'_\("([^"]+)"\)', source):
            assert greek.gettext(text) != text, text


HOSTILE = [
    "From: Άννα <ann@strict.test>\r\nSubject: Καλημέρα\r\n\r\nbody\r\n".encode(),
    b"From: \xe9t\xe9 <ann@str\xfc\xc3ict.test>\r\nSubject: \xe9t\xe9 =?\xf9utf-8?q?x?=\r\n\r\nb\r\n",
    "From: a@s.test\r\nFrom: Δ <δ@παράδειγμα.test>\r\nSubject: =?utf-8?q?a?=\r\n\r\nx".encode(),
    b'From: ".unterminated <a@b.test>\r\nSubject: =?utf-8?b?!!!?=\r\n'
    b'Content-Type: text/plain; charset="\r\n\r\nx',
    b"From: <>\r\nContent-Type: multipart/mixed; boundary=\r\n\r\n--\r\n",
    b"From: a@b.test (c \xff)\r\nContent-Type: text/plain; charset=utf-16\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n!!!!",
    b"From: a@b.test\r\nContent-Type: text/plain; charset=iso-8859\x00-7\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n=E1=E2",
    b"\r\n\r\nno header",
    b"",
    b"From: " + b", ".join(b"p%d@d%d.test" % (i, i) for i in range(2000)) + b"\r\n\r\n",
]


def test_hostile_posts_never_raise() -> None:
    import random

    lst = ListSettings(
        "team@example.test",
        name='T "x", <y>',
        subject_prefix="[τ]",
        footer="Λίστα",
        reply_to=ReplyTo.LIST,
    )
    rng = random.Random(19)
    cases = list(HOSTILE)
    for _ in range(300):
        mutated = bytearray(rng.choice(HOSTILE[:7]))
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(len(mutated) + 1)
            mutated[at:at] = bytes([rng.randrange(256)])
        cases.append(bytes(mutated))
    for case in cases:
        for munge in (False, True):
            data = rewrite.outgoing(lst, case, web_url=WEB, munge=munge)
            msg = parse(data)
            assert msg["List-Id"] == '"T \\"x\\", <y>" <team.example.test>', (case, data)
            assert msg["Precedence"] == "list"
            head = data[: data.index(b"\r\n\r\n")].replace(b"\r\n", b"")
            assert b"\r" not in head and b"\n" not in head
