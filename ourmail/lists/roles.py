"""The two roles the list service handles itself (``lists/service.py``; the others are the
parts'): ``LIST-owner@``, forwarded to the owners and moderators, and
``LIST-confirm+TOKEN@``, a reply to a confirmation request, handed to the confirmer of the
token's action (the token is used up only once the confirmer has succeeded)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from twisted.logger import Logger

from ourmail.dsnparams import NO_MAIL_PARAMS, NO_RCPT_PARAMS
from ourmail.interfaces import ListArrival
from ourmail.lists import compose, headers, identity, tokens
from ourmail.lists.context import ListContext
from ourmail.lists.listdb import Token
from ourmail.lists.model import ListSettings, parse_address

log = Logger()

#: A confirmer of one action's tokens: ``(ctx, lst, token, by) -> a short result``.
Confirmer = Callable[[ListContext, ListSettings, Token, str], Awaitable[str]]
#: Replies about unknown confirmations, per sender and hour (beyond: silence).
UNKNOWN_REPLIES = 3
#: The actions only a (verified) moderator or owner may confirm by mail.
FOR_MODERATORS = frozenset({"approve", "reject"})
#: How much of a message's start is read to find its header section.
HEADER_LIMIT = 256 * 1024


def loggable(address: str) -> str:
    """``address`` fit for the log: a confirmation token is a secret (``-confirm+…@``)."""
    local, at, domain = address.rpartition("@")
    base, plus, _ = local.partition("+")
    return f"{base}+…{at}{domain}" if plus and base.endswith("-confirm") else address


def _header_is_ascii(path: Path) -> bool:
    """Whether the header section of the message at ``path`` is ASCII (else forwarding it
    needs SMTPUTF8, RFC 6531)."""
    with open(path, "rb") as f:
        head = f.read(HEADER_LIMIT)
    return head.partition(b"\r\n\r\n")[0].isascii()


async def forward_to_owners(
    ctx: ListContext, lst: ListSettings, arrival: ListArrival, path: Path
) -> None:
    """Forward to the owners and moderators as it came, from the ``-bounces`` address (so
    that their bounces come back to the list, never to the sender); mail from the list's own
    addresses is dropped (it would loop)."""
    if parse_address(arrival.sender.lower(), {lst.address}) is not None:
        log.info("{id}: dropped: owner mail from the list itself", id=arrival.id)
        return
    to = list(dict.fromkeys(a.lower() for a in (*lst.owners, *lst.moderators)))
    if not to:
        log.warn("{id}: dropped: {list} has no owner", id=arrival.id, list=lst.address)
        return
    ascii_header = await ctx.run(_header_is_ascii, path)
    queued = await ctx.queue.enqueue(
        lst.role_address("bounces"),
        [(r, NO_RCPT_PARAMS) for r in to],
        path,
        NO_MAIL_PARAMS,
        not ascii_header or not all(r.isascii() for r in to),
        forwarded=True,
    )
    log.info("{id}: owner mail forwarded as {queued}", id=arrival.id, queued=queued)


async def confirm(
    ctx: ListContext,
    lst: ListSettings,
    arrival: ListArrival,
    token: str,
    confirmers: Mapping[str, Confirmer],
    is_list: Callable[[str], bool],
    path: Path,
) -> None:
    """Hand ``token`` to its action's confirmer, with who sent the reply as far as it is
    verified (``lists/identity.py``), then use it up (:func:`tokens.use`: a confirmer that
    fails, or a crash, leaves it pending for the sender's next try).  An unknown, expired
    or used one (or another list's) gets a short reply, never to a null sender or a list
    (``is_list``: loops), at most :data:`UNKNOWN_REPLIES` an hour per sender (RFC 3834).
    A bounce or an automatic reply (``path``'s header says so) confirms nothing: it is
    dropped."""
    fields = await ctx.run(headers.read_fields, path)
    robot = identity.automatic(arrival.sender, fields)
    if robot is not None:
        log.info("{id}: a confirmation dropped: {why}", id=arrival.id, why=robot)
        return
    trusted = await ctx.run(identity.verified, arrival, fields, ctx.authserv_id)
    by = identity.by_mail(arrival, trusted)
    refused: list[tuple[Token, str]] = []

    async def act(pending: Token) -> str | None:
        if pending.list != lst.address:
            return None  # another list's token: left for that list
        confirmer = confirmers.get(pending.action)
        if confirmer is None:
            raise LookupError(f"no confirmer of {pending.action}")
        result = await confirmer(ctx, lst, pending, by)
        if pending.action in FOR_MODERATORS and not lst.is_moderator(by):
            # The confirmer refused (and audited) without acting; the token is not used
            # up, so that the moderators' own reply or link still works.
            refused.append((pending, result))
            return None
        return result

    used = await tokens.use(ctx, token, act)
    if used is None and refused:
        used = refused[0]
    if used is None:
        log.info("{id}: an unknown or expired confirmation", id=arrival.id)
        await _unknown(ctx, lst, arrival, is_list)
        return
    found, result = used
    log.info(
        "{id}: {list}: {action} of {address} confirmed by {by}: {result}",
        id=arrival.id,
        list=lst.address,
        action=found.action,
        address=found.address,
        by=by,
        result=result,
    )


async def _unknown(
    ctx: ListContext, lst: ListSettings, arrival: ListArrival, is_list: Callable[[str], bool]
) -> None:
    sender = arrival.sender.lower()
    if not sender or is_list(sender):
        return
    counts = await ctx.run(ctx.db.note_request, [f"confirm:{sender}"], ctx.clock(), 3600.0)
    if counts[0] > UNKNOWN_REPLIES:
        return
    _ = compose.translator(lst.language).gettext
    text = _(
        "The confirmation you sent to %(address)s is unknown, expired or was used"
        " already. Nothing was changed. If you still want it, ask again."
    ) % {"address": lst.address}
    subject = _("Confirmation not accepted")
    reply = compose.message(lst, [sender], subject, text, ctx.hostname, sender_role="request")
    await ctx.send(lst, [sender], reply)
