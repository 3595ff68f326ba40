"""The copy of a post that a list sends: the poster's message with the list's header fields,
its subject prefix, its footer, its ``Reply-To:`` policy and, for posters whose domain asks
receivers to refuse mail that fails DMARC, a ``From:`` of the list's own.

Only header fields are edited (whole fields dropped, replaced or added, see
:mod:`ourmail.lists.headers`) and the footer is added at the end of the text; every other
octet of the body stays as it came.

- RFC 2369 and RFC 2919: ``List-Id``, ``List-Post``, ``List-Help``, ``List-Subscribe``,
  ``List-Archive``, ``List-Owner``, and ``Precedence: list``; the incoming ``List-*``,
  ``Precedence`` and ``Return-Path`` fields are dropped.  ``X-Loop: <list>`` (as Sympa and
  mlmmj write it) is added, and other lists' ``X-Loop`` fields are kept.
- RFC 8058: ``List-Unsubscribe`` with a one-click HTTPS link and ``List-Unsubscribe-Post``
  differ per member (:func:`unsubscribe_fields`); the queue puts them on each member's copy
  and its DKIM signature covers them, so the shared copy carries none.
- The footer goes at the end of a single text/plain body (7bit, 8bit, quoted-printable or
  base64: the footer is encoded as the body is) or as a new text/plain part at the end of a
  multipart/mixed one.  Any other structure (multipart/alternative, multipart/signed,
  multipart/encrypted, HTML only) gets no footer: it would break S/MIME and OpenPGP
  signatures (RFC 8551, RFC 3156) or show in only one of the alternatives.
- DMARC (RFC 7489 §6.3): when the poster's domain publishes ``p=quarantine`` or
  ``p=reject``, the copy is ``From: "Name via List" <list@domain>`` with the poster in
  ``Reply-To:``, as Mailman does, since the list's changes break the poster's signature and
  its own domain is not the poster's; a lax poster's ``From:`` is kept.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email.header
import email.message
import email.policy
import email.utils
import re
from collections.abc import Sequence
from urllib.parse import quote

import attrs
from twisted.logger import Logger

from ourmail.lists import headers, tokens
from ourmail.lists.compose import list_id
from ourmail.lists.context import ListContext
from ourmail.lists.headers import Field, field
from ourmail.lists.model import ListSettings, ReplyTo

log = Logger()

#: The DMARC policies (RFC 7489 §6.3 ``p=``) for which the list writes its own ``From:``.
STRICT = frozenset({"quarantine", "reject"})
#: At most this many of a post's authors are asked for their DMARC policy and put in the
#: ``Reply-To:`` of a rewritten post (RFC 5322 allows many; a post has one or two).
MAX_AUTHORS = 10
#: A phrase of atoms (RFC 5322 §3.2.3 atext) that needs no quotes.
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+( [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
#: The line between a post and the footer (as Mailman draws it).
FOOTER_RULE = "_" * 47


@attrs.frozen
class Outgoing:
    """The copy of a post that a list sends to all its members."""

    content: bytes
    #: ``From:`` is the list's (the poster's domain is DMARC-strict): the list signs as its
    #: author; otherwise the queue signs it as forwarded mail.
    munged: bool


def archive_url(web_url: str, lst: ListSettings) -> str:
    """Where the list's archive is read: the webmail's archive page of the list."""
    return f"{web_url}/archive?folder={quote('Lists/' + lst.address, safe='')}"


def unsubscribe_url(web_url: str, secret: bytes, lst: ListSettings, member: str) -> str:
    """The member's RFC 8058 one-click unsubscribe URL (answered by ``web/listpublic.py``)."""
    signature = tokens.member_signature(secret, lst.address, member)
    list_part, member_part = quote(lst.address, safe=""), quote(member, safe="")
    return f"{web_url}/lists/unsubscribe/{list_part}/{member_part}/{signature}"


def unsubscribe_fields(web_url: str, secret: bytes, lst: ListSettings, member: str) -> bytes:
    """The header fields of one member's copy: RFC 2369 ``List-Unsubscribe`` with the
    one-click URL first, then the list's ``-leave`` address, and RFC 8058 §3.1
    ``List-Unsubscribe-Post``."""
    url = unsubscribe_url(web_url, secret, lst, member)
    leave = lst.role_address("leave")
    value = f"<{url}>,\r\n <mailto:{leave}>".encode()
    return field("List-Unsubscribe", value) + field(
        "List-Unsubscribe-Post", b"List-Unsubscribe=One-Click"
    )


def authors(fields: Sequence[Field]) -> list[tuple[str, str]]:
    """The (display name, address) pairs of the ``From:`` field (several are legal,
    RFC 5322 §3.6.2; a group's members are taken too)."""
    found = headers.first(fields, "from")
    return [] if found is None else headers.addresses(found.value)


async def strict_dmarc(ctx: ListContext, domains: Sequence[str]) -> bool:
    """Whether any of the author ``domains`` publishes a DMARC policy of quarantine or
    reject.  A lookup that fails counts as strict: a ``From:`` rewritten without need costs
    less than a post the members' servers refuse."""
    if ctx.dmarc_policy is None:
        return False
    for domain in list(dict.fromkeys(d.lower() for d in domains))[:MAX_AUTHORS]:
        try:
            policy = await ctx.dmarc_policy(domain)
        except Exception as e:
            log.warn("list DMARC lookup of {domain} failed: {error}", domain=domain, error=e)
            return True
        if policy in STRICT:
            return True
    return False


async def rewrite(ctx: ListContext, lst: ListSettings, message: bytes) -> Outgoing:
    """The copy of ``message`` (CRLF) that ``lst`` sends to its members; the message is
    split and rewritten in threads (``ctx.run``): a large post would hold up the reactor."""
    domains = await ctx.run(_author_domains, message)
    munge = await strict_dmarc(ctx, domains)
    content = await ctx.run(_outgoing, lst, message, ctx.web_url, munge)
    return Outgoing(content, munge)


def _author_domains(message: bytes) -> list[str]:
    """The domains of the ``From:`` addresses of ``message``.  Blocking (a thread)."""
    fields, _ = headers.split(message)
    return [addr.rpartition("@")[2] for _, addr in authors(fields)]


def _outgoing(lst: ListSettings, message: bytes, web_url: str, munge: bool) -> bytes:
    """:func:`outgoing` with positional arguments, for ``ctx.run``."""
    return outgoing(lst, message, web_url=web_url, munge=munge)


def outgoing(lst: ListSettings, message: bytes, *, web_url: str, munge: bool) -> bytes:
    """The shared copy of ``message``; ``munge``: write the list's own ``From:``."""
    fields, body = headers.split(message)
    kept = _subject([f for f in fields if not _dropped(f.name)], lst.subject_prefix)
    kept, added = _reply_to(kept, lst, munge)
    if lst.footer:
        kept, body = _footer(kept, body, lst.footer)
    added += _list_fields(lst, web_url)
    return b"".join(f.raw for f in kept) + b"".join(added) + b"\r\n" + body


def _list_id(lst: ListSettings) -> str:
    """The list identifier (RFC 2919 §2), as ``compose.list_id`` writes it inside ``<>``."""
    value = list_id(lst)
    return value[value.rfind("<") + 1 : value.rfind(">")]


def _dropped(name: str) -> bool:
    return name.startswith("list-") or name in ("precedence", "return-path")


def _list_fields(lst: ListSettings, web_url: str) -> list[bytes]:
    """RFC 2919 ``List-Id`` (its phrase quoted or encoded, as the ``compose.list_id`` value
    need not be), RFC 2369 §3 fields and ``Precedence: list``."""
    post = "NO" if lst.announce_only else f"<mailto:{lst.address}>"  # RFC 2369 §3.4
    request = lst.role_address("request")
    return [
        field("List-Id", _phrase(lst.display_name) + b" <" + _list_id(lst).encode() + b">"),
        field("List-Post", post.encode()),
        field("List-Help", f"<mailto:{request}?subject=help>".encode()),
        field("List-Subscribe", f"<mailto:{lst.role_address('join')}>".encode()),
        field("List-Archive", f"<{archive_url(web_url, lst)}>".encode()),
        field("List-Owner", f"<mailto:{lst.role_address('owner')}>".encode()),
        field("Precedence", b"list"),
        # Kept by other lists (they drop List-Id): a post that went round a chain of lists
        # and came back is recognised by the first (lists/posting.py).
        field("X-Loop", lst.address.encode()),
    ]


# -- Subject --------------------------------------------------------------------------------


def _subject(fields: list[Field], prefix: str) -> list[Field]:
    """The subject with ``prefix`` in front, once: not again when a reply's subject
    (``Re: [team] …``) has it already, in its encoded (RFC 2047) form or not."""
    if not prefix:
        return fields
    old = headers.first(fields, "subject")
    if old is None:
        return [*fields, Field("subject", _fold("Subject", prefix))]
    if prefix.lower() in headers.decoded(old.value).lower():
        return fields
    return [Field("subject", _prefixed(old, prefix)) if f is old else f for f in fields]


def _prefixed(old: Field, prefix: str) -> bytes:
    raw_value = old.raw.split(b":", 1)[1]
    if b"=?" in raw_value:
        # Encoded words: decoded, and the whole subject encoded again as need be.
        return _fold("Subject", f"{prefix} {headers.clean(headers.decoded(old.value))}")
    # No encoded words: the prefix goes in front of the octets as they are (folding and
    # RFC 6532 UTF-8 kept).
    lead = prefix.encode() + b" " if prefix.isascii() else _encoded_word(prefix + " ")
    return b"Subject: " + lead + raw_value.lstrip(b" \t")


def _encoded_word(text: str) -> bytes:
    """``text`` as RFC 2047 encoded words (a space inside them survives beside another
    encoded word, RFC 2047 §6.2)."""
    return email.header.Header(text, "utf-8").encode().encode("ascii")


def _fold(name: str, value: str) -> bytes:
    """``Name: value`` folded, non-ASCII text as RFC 2047 encoded words; a non-ASCII address
    (RFC 6532, or octets that are not UTF-8 shown as U+FFFD) stays UTF-8."""
    value = " ".join(value.replace("\0", " ").split())
    for policy in (email.policy.SMTP, email.policy.SMTPUTF8):
        try:
            folded: str = policy.header_factory(name, value).fold(policy=policy)
            return folded.encode("ascii" if policy is email.policy.SMTP else "utf-8")
        except Exception as e:  # the header parser has errors of its own on odd input
            log.debug("list: {name} field not folded by {policy}: {error}", name=name,
                      policy=policy, error=e)  # fmt: skip
    return f"{name}: {value}\r\n".encode("utf-8", "replace")


# -- From: and Reply-To: ----------------------------------------------------------------------


def _reply_to(
    fields: list[Field], lst: ListSettings, munge: bool
) -> tuple[list[Field], list[bytes]]:
    """``From:`` rewritten for DMARC when ``munge``, and the ``Reply-To:`` the list's policy
    and the rewriting call for; new fields to add."""
    posters = authors(fields)
    own = headers.first(fields, "reply-to")
    replies: list[bytes] = []
    if munge and posters:
        name = posters[0][0] or posters[0][1].rpartition("@")[0]
        via = _addresses("From", [_mailbox(f"{name} via {lst.display_name}", lst.address)])
        fields = [Field("from", via) if f.name == "from" else f for f in fields]
        fields = _unique(fields, "from")
        # Replies reach the poster: their own Reply-To if they set one, else their From.
        if own is not None and lst.reply_to is ReplyTo.POSTER:
            return fields, []
        replies = [_mailbox(name, address) for name, address in posters[:MAX_AUTHORS]]
    if lst.reply_to is ReplyTo.LIST:
        replies.append(_mailbox("", lst.address))
    if not replies:
        return fields, []
    fields = [f for f in fields if f.name != "reply-to"]
    return fields, [_addresses("Reply-To", replies)]


def _mailbox(name: str, address: str) -> bytes:
    """``"Name" <address>`` (RFC 5322 §3.4): a name that is not ASCII as RFC 2047 encoded
    words; an address that is not ASCII as UTF-8 (RFC 6532).  Control characters become
    blanks (none can end the field)."""
    address = "".join(c for c in address if c.isprintable() and c not in "<> ")
    angle = b"<" + address.encode("utf-8") + b">"
    return _phrase(name) + b" " + angle if name else angle


def _phrase(name: str) -> bytes:
    """A display name (RFC 5322 §3.2.5): quoted, or RFC 2047 encoded words when it is not
    ASCII; control characters become blanks."""
    name = "".join(c if c.isprintable() else " " for c in name).strip()
    if _ATOMS.fullmatch(name):
        return name.encode("ascii")
    if name.isascii():
        return b'"' + email.utils.quote(name).encode("ascii") + b'"'
    return email.header.Header(name, "utf-8").encode(linesep="\r\n").encode("ascii")


def _addresses(name: str, mailboxes: Sequence[bytes]) -> bytes:
    """An address field, one mailbox a line (RFC 5322 §2.2.3 folding)."""
    return field(name, b",\r\n ".join(mailboxes))


def _unique(fields: list[Field], name: str) -> list[Field]:
    """Only the first field called ``name`` (a second ``From:`` is malformed anyway)."""
    seen = False
    out = []
    for f in fields:
        if f.name == name:
            if seen:
                continue
            seen = True
        out.append(f)
    return out


# -- the footer -------------------------------------------------------------------------------


def _footer(fields: list[Field], body: bytes, footer: str) -> tuple[list[Field], bytes]:
    """``body`` with the footer added where that is safe (see the module's docstring)."""
    ctype = headers.first(fields, "content-type")
    parsed = email.message.Message()
    if ctype is not None:
        if not ctype.value.isascii() or not ctype.value.isprintable():
            return fields, body  # RFC 2045 §5.1: a malformed Content-Type, left alone
        parsed["Content-Type"] = ctype.value
    kind = parsed.get_content_type()
    cte_field = headers.first(fields, "content-transfer-encoding")
    cte = cte_field.value.lower() if cte_field is not None else "7bit"
    text = f"\r\n{FOOTER_RULE}\r\n" + "\r\n".join(footer.splitlines()) + "\r\n"
    if kind == "text/plain":
        done = _text_footer(fields, body, text, parsed, cte)
    elif kind == "multipart/mixed":
        done = _mixed_footer(fields, body, text, parsed)
    else:
        done = None
    if done is None:
        log.info("list footer not added to a {kind} post", kind=kind)
        return fields, body
    return done


def _text_footer(
    fields: list[Field], body: bytes, text: str, parsed: email.message.Message, cte: str
) -> tuple[list[Field], bytes] | None:
    charset = str(parsed.get_param("charset") or "us-ascii").lower()
    try:
        codecs.lookup(charset)
        added = text.encode(charset)
    except UnicodeEncodeError:
        if charset not in ("us-ascii", "ascii") or not _is_plain_ascii(body, cte):
            return None
        # An ASCII body is UTF-8 too: relabel it so that the footer can be added.
        parsed.set_param("charset", "utf-8")
        fields = _replace(fields, "content-type", _fold("Content-Type", parsed["Content-Type"]))
        added = text.encode("utf-8")
    except (LookupError, ValueError):  # an unknown charset, or a name no codec can have
        return None
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    if cte in ("8bit", "binary"):
        return fields, body + added
    if cte in ("7bit", ""):
        if added.isascii():
            return fields, body + added
        qp = field("Content-Transfer-Encoding", b"quoted-printable")
        return _replace(fields, "content-transfer-encoding", qp), _qp(body) + _qp(added)
    if cte == "quoted-printable":
        return fields, body + _qp(added)
    if cte == "base64":
        try:
            decoded = base64.b64decode(body, validate=False)
        except binascii.Error:
            return None
        return fields, _base64(decoded.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + added)
    return None


def _is_plain_ascii(body: bytes, cte: str) -> bool:
    return cte in ("7bit", "8bit", "binary", "quoted-printable", "") and body.isascii()


def _mixed_footer(
    fields: list[Field], body: bytes, text: str, parsed: email.message.Message
) -> tuple[list[Field], bytes] | None:
    boundary = parsed.get_boundary()
    if not boundary:
        return None
    # RFC 2046 §5.1.1: the CRLF before "--boundary--" belongs to the delimiter.
    closing = b"\r\n--" + boundary.encode("utf-8", "surrogateescape") + b"--"
    # Found in CRLF + body at ``at``, the closing "--boundary--" starts at ``at`` in body.
    at = (b"\r\n" + body).rfind(closing)
    if at < 0:
        return None
    content = text.lstrip("\r\n").encode("utf-8")
    if content.isascii():
        part_header = b'Content-Type: text/plain; charset="us-ascii"\r\n'
        part_body = content
    else:
        part_header = (
            b'Content-Type: text/plain; charset="utf-8"\r\n'
            b"Content-Transfer-Encoding: quoted-printable\r\n"
        )
        part_body = _qp(content)
    part = (
        b"--"
        + boundary.encode("utf-8", "surrogateescape")
        + b"\r\n"
        + part_header
        + b"Content-Disposition: inline\r\n\r\n"
        + part_body.rstrip(b"\r\n")
        + b"\r\n"
    )
    return fields, body[:at] + part + body[at:]


def _replace(fields: list[Field], name: str, raw: bytes) -> list[Field]:
    if headers.first(fields, name) is None:
        return [*fields, Field(name, raw)]
    return _unique([Field(name, raw) if f.name == name else f for f in fields], name)


def _qp(data: bytes) -> bytes:
    """Quoted-printable (RFC 2045 §6.7) of CRLF text, with CRLF line breaks."""
    encoded = binascii.b2a_qp(data.replace(b"\r\n", b"\n"), istext=True)
    return encoded.replace(b"\n", b"\r\n")


def _base64(data: bytes) -> bytes:
    """Base64 (RFC 2045 §6.8) in lines of 76 characters, CRLF-terminated."""
    return base64.encodebytes(data).replace(b"\n", b"\r\n")
