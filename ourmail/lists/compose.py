"""The messages a list writes itself (confirmation requests, notices to owners, moderators
and members), in the list's language: English, or Greek from the catalogue
``ourmail/lists/locale/el/LC_MESSAGES/ourmail-lists.po`` (compiled in memory with babel,
as the webmail's).  Every text shown to people goes through :func:`translator`.

They are ``Auto-Submitted: auto-generated`` (RFC 3834 §5) with ``Precedence: list``, so
that out-of-office replies and other lists leave them alone, and carry the list's
``List-Id`` (RFC 2919) so that a loop through another list is recognised.
"""

from __future__ import annotations

import email.policy
import email.utils
import functools
import gettext
from collections.abc import Sequence
from email.message import EmailMessage

from ourmail import catalogues
from ourmail.lists.model import ListSettings

#: The languages a list may write in.
LANGUAGES = ("en", "el")
DOMAIN = "ourmail-lists"


@functools.cache
def translator(lang: str) -> gettext.NullTranslations:
    """The catalogue of ``lang``; English (the msgids) and unknown languages translate
    nothing."""
    if lang not in LANGUAGES or lang == "en":
        return gettext.NullTranslations()
    return catalogues.compiled(__package__, lang, DOMAIN)


def list_id(lst: ListSettings) -> str:
    """The list's ``List-Id`` value (RFC 2919 §2): ``Name <local.domain>``."""
    return f"{lst.display_name} <{lst.local.replace('.', '-')}.{lst.domain}>"


def message(
    lst: ListSettings,
    to: Sequence[str],
    subject: str,
    text: str,
    hostname: str,
    *,
    reply_to: str | None = None,
    sender_role: str = "owner",
    in_reply_to: str | None = None,
) -> bytes:
    """A text/plain UTF-8 message from the list's ``sender_role`` address (``owner`` or
    ``request``) to ``to``; CRLF line endings, ready for ``ListContext.send``.

    Header fields are ASCII, other text in RFC 2047 encoded words, unless an address is not
    ASCII: an encoded word may not stand in an address (RFC 2047 §5), so the whole header
    is then UTF-8 (RFC 6532) and ``ListContext.send`` queues it with SMTPUTF8 (RFC 6531)."""
    addresses = (*to, reply_to or "", lst.role_address(sender_role))
    utf8 = not all(a.isascii() for a in addresses)
    msg = EmailMessage(policy=email.policy.SMTPUTF8 if utf8 else email.policy.SMTP)
    msg["From"] = email.utils.formataddr((lst.display_name, lst.role_address(sender_role)))
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg["Message-ID"] = email.utils.make_msgid(domain=hostname)
    if reply_to:
        msg["Reply-To"] = reply_to
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg["List-Id"] = list_id(lst)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834 §5
    msg["Precedence"] = "list"
    msg.set_content(text, charset="utf-8", cte="quoted-printable")
    return msg.as_bytes()
