"""Who a message to a list comes from, as far as the list can trust it.

The envelope sender and a bare ``From:`` can be forged by anyone, so they never give a
moderator's rights (approving a held post by reply, posting to a moderated list).  Only two
things do:

* the user who logged in to submission to send it (``ListArrival.user``);
* the one ``From:`` address (RFC 5322 §3.6: exactly one field) whose domain passed this
  server's DMARC check (RFC 7489 §3.1: aligned SPF or DKIM), as the first
  ``Authentication-Results:`` field under this server's authserv-id says (RFC 8601 §5:
  every listener removes such fields coming from outside, so that field is ours).
"""

from __future__ import annotations

from collections.abc import Sequence

from ourmail.interfaces import ListArrival
from ourmail.lists import headers
from ourmail.lists.headers import Field

#: Added to an envelope sender that is not verified when it is handed to a confirmer as
#: ``by``: it can never equal a moderator's address.
UNVERIFIED = " (unverified)"


def without_comments(value: str) -> str:
    """``value`` with its comments (RFC 5322 §3.2.2: nested, with quoted-pairs) made blanks,
    counted without recursion (hostile nesting stays cheap); an unclosed one runs to the
    end."""
    out: list[str] = []
    depth = 0
    escaped = False
    for c in value:
        if depth:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
                if not depth:
                    out.append(" ")
        elif c == "(":
            depth = 1
        else:
            out.append(c)
    return "".join(out)


def dmarc_passed(fields: Sequence[Field], authserv_id: str) -> frozenset[str]:
    """The ``header.from`` domains of ``dmarc=pass`` results in the first
    ``Authentication-Results:`` field under ``authserv_id`` (RFC 8601 §2.2); none when it
    is empty."""
    if not authserv_id:
        return frozenset()
    for f in fields:
        if f.name != "authentication-results":
            continue
        first, _, rest = without_comments(f.value).partition(";")
        words = first.split()
        if not words or words[0].lower() != authserv_id.lower():
            continue
        passed = set()
        for resinfo in rest.split(";"):
            words = resinfo.split()
            method, _, result = (words[0] if words else "").partition("=")
            if method.split("/")[0].lower() != "dmarc" or result.lower() != "pass":
                continue
            for word in words[1:]:
                name, _, domain = word.partition("=")
                if name.lower() == "header.from":
                    passed.add(domain.strip('"').lower().rstrip("."))
        return frozenset(passed)
    return frozenset()


def sole_author(fields: Sequence[Field]) -> str | None:
    """The address of the one ``From:`` field when it names one mailbox (RFC 5322 §3.6:
    exactly one ``From:``); None otherwise."""
    found = [f for f in fields if f.name == "from"]
    if len(found) != 1:
        return None
    authors = headers.addresses(found[0].value)
    return authors[0][1] if len(authors) == 1 else None


def verified(arrival: ListArrival, fields: Sequence[Field], authserv_id: str) -> list[str]:
    """The addresses a message verifiably comes from, lower-cased (see the module
    docstring): the logged-in user, then the ``From:`` address that passed DMARC."""
    out = [arrival.user.lower()] if arrival.user else []
    author = sole_author(fields)
    if author is not None:
        domain = author.rpartition("@")[2].lower().rstrip(".")
        if domain in dmarc_passed(fields, authserv_id):
            out.append(author.lower())
    return out


def by_mail(arrival: ListArrival, trusted: Sequence[str]) -> str:
    """Who a reply by mail is from, for a confirmer's ``by``: the first verified address, or
    the envelope sender marked :data:`UNVERIFIED` (never "", which means the console)."""
    if trusted:
        return trusted[0]
    return (arrival.sender or "<>") + UNVERIFIED


def automatic(sender: str, fields: Sequence[Field]) -> str | None:
    """Why a message is a robot's, not a person's, or None: a null envelope sender (a
    bounce), ``Auto-Submitted:`` other than ``no`` (RFC 3834 §5), or ``Precedence:`` bulk,
    junk or list (RFC 3834 §3.1.8 asks responders to leave those alone)."""
    if not sender:
        return "null sender"
    for f in fields:
        value = f.value.split(";", 1)[0].strip().lower()
        if f.name == "auto-submitted" and value != "no":
            return f"Auto-Submitted: {value[:40]}"
        if f.name == "precedence" and value in ("bulk", "junk", "list"):
            return f"Precedence: {value}"
    return None
