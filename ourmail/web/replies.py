"""What the compose form starts with when the user answers or forwards a message, or resumes
a draft: recipients, subject, thread fields and the quoted text.

* Reply (RFC 5322 §3.6.3/§3.6.4): to the ``Reply-To:`` addresses, else the ``From:`` ones;
  reply-all adds the original ``To:`` and ``Cc:`` as Cc, without the user's own addresses and
  without repeats.  ``In-Reply-To:`` is the original's Message-ID, ``References:`` its
  References (else its In-Reply-To) followed by that Message-ID.  The subject gets one
  ``Re:`` (none added when it already starts with one).  The text is quoted with ``> `` under
  an "On DATE, NAME wrote:" line.
* Forward: ``Fwd:``; inline with a block of the original's header fields and its text (its
  attachments are carried over by the caller), or the whole message attached.

Only plain data goes in and out; the pages module reads the message and the files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import attrs

from ourmail.mime import structure
from ourmail.web import richtext
from ourmail.web.charsets import header_text
from ourmail.web.messageview import Mailbox, MessageView

#: Prefixes that already mark a reply or a forward (English, German, Greek "ΑΠ:"/"ΣΧΕΤ:"...).
_REPLY = re.compile(r"^\s*(re|aw|απ|σχετ)\s*:", re.IGNORECASE)
_FORWARD = re.compile(r"^\s*(fwd?|wg|πρθ|προώθηση)\s*:", re.IGNORECASE)
#: The longest References: kept (RFC 5322 §3.6.4 allows trimming the oldest but the first).
MAX_REFERENCES = 20


@attrs.frozen
class Prefill:
    """The compose form's starting values."""

    to: str = ""
    cc: str = ""
    bcc: str = ""
    subject: str = ""
    text: str = ""
    #: Clean editor markup of a draft written as rich text, else "".
    html: str = ""
    from_: str = ""
    in_reply_to: str = ""
    references: str = ""
    #: ``reply FOLDER:UID`` or ``forward FOLDER:UID``: flagged once sent.
    origin: str = ""


def reply_subject(subject: str) -> str:
    """``Re: subject``, without a second ``Re:``."""
    return subject if _REPLY.match(subject) else f"Re: {subject}".rstrip()


def forward_subject(subject: str) -> str:
    """``Fwd: subject``, without a second ``Fwd:``."""
    return subject if _FORWARD.match(subject) else f"Fwd: {subject}".rstrip()


def _formatted(boxes: Iterable[Mailbox]) -> list[str]:
    out = []
    for box in boxes:
        name = box.name.replace('"', "'")
        out.append(f'"{name}" <{box.address}>' if name else box.address)
    return out


def _ids(text: str | None) -> list[str]:
    return re.findall(r"<[^<>\s]+>", text or "")


def thread_fields(header: structure.Part) -> tuple[str, str]:
    """``In-Reply-To:`` and ``References:`` for an answer to the message whose header part
    this is (RFC 5322 §3.6.4)."""
    own = _ids(header.header("message-id"))
    if not own:
        return "", ""
    parents = _ids(header.header("references")) or _ids(header.header("in-reply-to"))[:1]
    chain = [*parents, own[0]]
    if len(chain) > MAX_REFERENCES:
        chain = chain[:1] + chain[-(MAX_REFERENCES - 1) :]
    return own[0], " ".join(chain)


def body_text(view: MessageView) -> str:
    """The message's text: its plain body, else its HTML body as text."""
    for body in view.bodies:
        if body.kind == "plain":
            return body.text
    for body in view.bodies:
        if body.html is not None:
            return richtext.to_plain(body.html.source)
    return view.raw or ""


def quoted(text: str, intro: str) -> str:
    """``text`` quoted for a reply (``> `` before each line, ``>`` before one already quoted)
    under ``intro``, with room to write above it."""
    lines = text.replace("\r\n", "\n").rstrip("\n").split("\n")
    body = "\n".join(
        (">" if line.startswith(">") else "> ") + line if line else ">" for line in lines
    )
    return f"\n\n{intro}\n{body}\n"


def _names(boxes: Iterable[Mailbox]) -> str:
    return ", ".join(box.name or box.address for box in boxes)


def reply(
    view: MessageView,
    header: structure.Part,
    mine: Iterable[str],
    everyone: bool,
    origin: str,
    _: Callable[[str], str],
) -> Prefill:
    """The answer to a message (to everyone when ``everyone``); ``mine``: the user's own
    addresses, left out of reply-all; ``_`` translates the quote's intro."""
    h = view.headers
    own = {a.lower() for a in mine}
    to_boxes = h.reply_to or h.from_
    to = _formatted(to_boxes)
    cc: list[str] = []
    if everyone:
        seen = {b.address.lower() for b in to_boxes} | own
        for box in (*h.to, *h.cc):
            if box.address.lower() not in seen:
                seen.add(box.address.lower())
                cc.extend(_formatted([box]))
    in_reply_to, references = thread_fields(header)
    when = h.date.strftime("%Y-%m-%d %H:%M") if h.date else h.date_text
    intro = _("On %(date)s, %(name)s wrote:") % {"date": when, "name": _names(h.from_)}
    return Prefill(
        to=", ".join(to),
        cc=", ".join(cc),
        subject=reply_subject(h.subject),
        text=quoted(body_text(view), intro),
        in_reply_to=in_reply_to,
        references=references,
        origin=f"reply {origin}",
    )


def forward(view: MessageView, inline: bool, origin: str, _: Callable[[str], str]) -> Prefill:
    """A forward of a message: its text under a header block (``inline``), or nothing but
    the subject when the message goes as an attachment."""
    h = view.headers
    subject = forward_subject(h.subject)
    if not inline:
        return Prefill(subject=subject, origin=f"forward {origin}")
    when = h.date.strftime("%Y-%m-%d %H:%M %z") if h.date else h.date_text
    block = [
        _("---------- Forwarded message ----------"),
        f"{_('From')}: {', '.join(_formatted(h.from_))}",
        f"{_('Date')}: {when}",
        f"{_('Subject')}: {h.subject}",
        f"{_('To')}: {', '.join(_formatted(h.to))}",
    ]
    if h.cc:
        block.append(f"{_('Cc')}: {', '.join(_formatted(h.cc))}")
    text = "\n\n" + "\n".join(block) + "\n\n" + body_text(view).replace("\r\n", "\n")
    return Prefill(subject=subject, text=text, origin=f"forward {origin}")


def resumed(view: MessageView, header: structure.Part) -> Prefill:
    """A saved draft as the form it was saved from."""
    h = view.headers
    return Prefill(
        to=", ".join(_formatted(h.to)),
        cc=", ".join(_formatted(h.cc)),
        bcc=header_text(header.header("bcc") or ""),
        subject=h.subject,
        text=body_text(view),
        html=next((richtext.clean(b.html.source) for b in view.bodies if b.html), ""),
        from_=h.from_[0].address if h.from_ else "",
        in_reply_to=" ".join(_ids(header.header("in-reply-to"))[:1]),
        references=" ".join(_ids(header.header("references"))),
        origin=header_text(header.header("x-ourmail-origin") or ""),
    )
