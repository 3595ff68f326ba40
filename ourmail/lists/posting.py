"""The handler of posts (mail to the list's own address): loops dropped, who may post,
size, then distribution, moderation or refusal.

Only the header section is read to decide (:data:`ourmail.lists.headers.MAX_HEADER` octets
at most, in a thread); the whole message is read into memory only when it is distributed,
and then it is no larger than the list's ``max_size`` (a larger one is held as a file).

A post is dropped (logged, neither held nor answered) when it cannot be a person's post to
the list: its envelope sender is null (a bounce), it is ``Auto-Submitted`` other than
``no`` (RFC 3834 §5: out-of-office replies, other lists' notices), or it already carries
this list's ``List-Id`` (RFC 2919) or ``X-Loop``: it went out through this list and came
back, through a forwarder or a chain of lists (which replace ``List-Id`` but keep
``X-Loop``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import attrs
from twisted.logger import Logger

from ourmail.interfaces import ListArrival
from ourmail.lists import compose, headers, identity, moderation, requests, rewrite
from ourmail.lists.context import ListContext
from ourmail.lists.distribute import distribute
from ourmail.lists.headers import Field
from ourmail.lists.model import ListSettings, PostPolicy

log = Logger()


def loop_reason(lst: ListSettings, sender: str, fields: Sequence[Field]) -> str | None:
    """Why a post must never go out (a loop or an automatic message), or None."""
    if not sender:
        return "null sender"
    for f in fields:
        if f.name == "auto-submitted":
            value = f.value.split(";", 1)[0].strip().lower()
            if value != "no":  # RFC 3834 §5
                return f"Auto-Submitted: {value[:40]}"
        elif f.name == "list-id" and _bracketed(f.value) == _bracketed(compose.list_id(lst)):
            return "it carries this list's List-Id"
        elif f.name == "x-loop" and f.value.strip().lower() == lst.address.lower():
            return "it carries this list's X-Loop"
    return None


def _bracketed(value: str) -> str:
    """The list identifier inside ``<>`` of a List-Id value (RFC 2919 §2), lower-cased."""
    start, end = value.rfind("<"), value.rfind(">")
    return value[start + 1 : end].strip().lower() if 0 <= start < end else value.strip().lower()


async def may_post(ctx: ListContext, lst: ListSettings, addresses: Sequence[str]) -> bool:
    """Whether one of ``addresses`` (the envelope sender, the From: addresses) may post
    without moderation under the list's policy.  These can be forged: a moderator's right
    to post comes only from a verified address (``lists/identity.py``), which the caller
    checks."""
    wanted = {a.lower() for a in addresses if a}
    policy = lst.post_policy
    if policy is PostPolicy.ANYONE:
        return True
    if policy is PostPolicy.ADDRESSES:
        return bool(wanted & {p.lower() for p in lst.posters})
    if policy is PostPolicy.MODERATORS:
        return False
    # Members: subscribers, enabled or not, and the group's members.
    members = await ctx.run(ctx.db.members, lst.address)
    if wanted & {m.address.lower() for m in members}:
        return True
    if lst.group:
        group = await ctx.directory.lookup(lst.group)
        return bool(wanted & {a.lower() for a in (*group.mailboxes, *group.outbound)})
    return False


async def handle(ctx: ListContext, lst: ListSettings, arrival: ListArrival, message: Path) -> None:
    """Handle one post to ``lst`` (the spooled file ``message``)."""
    post = await ctx.run(read_post, message, arrival, ctx.authserv_id)
    fields = post.fields
    why = loop_reason(lst, arrival.sender, fields)
    if why is not None:
        log.info(
            "list {list}: post {id} from {sender} dropped: {why}",
            list=lst.address,
            id=arrival.id,
            sender=arrival.sender or "<>",
            why=why,
        )
        return
    if not post.one_from:
        await moderation.hold(ctx, lst, arrival, message, moderation.BAD_FROM)
        return
    authors = post.authors
    candidates = [arrival.sender, *authors]
    poster = authors[0] if authors else arrival.sender
    size = arrival.size or (await ctx.run(message.stat)).st_size
    moderator = any(lst.is_moderator(a) for a in post.trusted)
    if lst.announce_only and not moderator:
        await _refuse(ctx, lst, arrival, fields)
        return
    if not moderator and not await may_post(ctx, lst, candidates):
        await moderation.hold(ctx, lst, arrival, message, moderation.NON_MEMBER)
        return
    if size > lst.max_size:
        await moderation.hold(ctx, lst, arrival, message, moderation.SIZE)
        return
    content = await ctx.run(message.read_bytes)
    await distribute(ctx, lst, content, poster)


@attrs.frozen
class Post:
    """What deciding on a post reads of its header section."""

    fields: list[Field]
    #: The ``From:`` addresses.
    authors: list[str]
    #: Exactly one ``From:`` field, naming an address.
    one_from: bool
    #: The verified addresses it comes from (``identity.verified``).
    trusted: list[str]


def read_post(message: Path, arrival: ListArrival, authserv_id: str) -> Post:
    """Read and parse the header section of the spooled post ``message``.  Blocking (disk and
    CPU: a hostile header section costs up to a fraction of a second): call it in a
    thread."""
    fields = headers.read_fields(message)
    return Post(
        fields,
        [address for _, address in rewrite.authors(fields)],
        _one_author_field(fields),
        identity.verified(arrival, fields, authserv_id),
    )


def _one_author_field(fields: Sequence[Field]) -> bool:
    """Whether the post has exactly one ``From:`` field (RFC 5322 §3.6) and it names an
    address: otherwise who wrote it would be a guess, so a moderator decides."""
    found = [f for f in fields if f.name == "from"]
    return len(found) == 1 and bool(headers.addresses(found[0].value))


def _message_id(value: str) -> bool:
    """A ``msg-id`` (RFC 5322 §3.6.4) fit to repeat in ``In-Reply-To:``."""
    return value.isascii() and len(value) < 250 and value.startswith("<") and value.endswith(">")


async def _refuse(
    ctx: ListContext, lst: ListSettings, arrival: ListArrival, fields: Sequence[Field]
) -> None:
    """Tell the poster that only the moderators post to an announcement list (not more
    often than ``requests.counted`` allows: the sender may be a forged victim)."""
    if not await ctx.run(requests.counted, ctx, arrival.sender.lower(), ctx.clock()):
        log.info(
            "list {list}: post {id} from {sender} refused (announcement list); not told:"
            " too many notices to that address",
            list=lst.address,
            id=arrival.id,
            sender=arrival.sender,
        )
        return
    _ = compose.translator(lst.language).gettext
    text = headers.shown(headers.first(fields, "subject"))
    lines = [
        _("Your post to {list} was not distributed: only its moderators post to it.").format(
            list=lst.address
        ),
        _("Subject: {subject}").format(subject=text),
    ]
    title = _("Your post to {list} was not distributed").format(list=lst.address)
    found = headers.first(fields, "message-id")
    message_id = found.value if found is not None else ""
    notice = compose.message(
        lst,
        [arrival.sender],
        title,
        "\n".join(lines),
        ctx.hostname,
        in_reply_to=message_id if _message_id(message_id) else None,
    )
    await ctx.send(lst, [arrival.sender], notice)
    log.info(
        "list {list}: post {id} from {sender} refused (announcement list)",
        list=lst.address,
        id=arrival.id,
        sender=arrival.sender,
    )
