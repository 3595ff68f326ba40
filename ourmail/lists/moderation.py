"""Posts held for a moderator: holding, the notice to the moderators, approval and rejection
(by a reply to the notice, or on the admin console's page), and expiry.

A held post is the file ``<root>/held/<list>/<id>`` (written and fsynced, file and folder,
before its row in ``ListDB.hold``); its id is a hash of the message, so that a handler run
again holds it once.  The notice goes to the moderators (the owners when there are none)
with two addresses to act by, each carrying a confirmation token (``lists/tokens.py``):
replying to the notice goes to its ``Reply-To:``, ``LIST-confirm+TOKEN@``, whose token
approves; any message to the second address, ``LIST-confirm+TOKEN2@``, rejects.  Each
token has its link to the confirmation page too (``/lists/confirm/TOKEN``: GET asks, POST
decides).  Only a reply from a verified moderator or owner counts (``lists/identity.py``).
Decisions by mail and on the confirmation page are written to the audit log.  The poster
hears of a rejection only when the post was held for its size (never for a non-member's
post: that would answer spam).
"""

from __future__ import annotations

import email
import email.message
import email.policy
import hashlib
import re
from pathlib import Path
from urllib.parse import quote

from twisted.logger import Logger

from ourmail import fsutil
from ourmail.interfaces import Actor, ListArrival
from ourmail.lists import compose, headers, requests, tokens
from ourmail.lists.context import ListContext
from ourmail.lists.distribute import distribute
from ourmail.lists.listdb import Held, Token
from ourmail.lists.model import ListSettings

log = Logger()

#: Why a post is held.
NON_MEMBER = "non-member"
SIZE = "size"
#: Not exactly one ``From:`` field, or one that names no address (RFC 5322 §3.6).
BAD_FROM = "from"
#: A held post's id: hex, so that it is safe as a file name and in a URL.
ID_RE = re.compile(r"[0-9a-f]{24}")
#: The first lines of a held post shown in the notice, and how much of it is read for them.
PREVIEW_LINES = 12
PREVIEW_READ = 64 * 1024
#: A beginning with more lines that may be MIME boundaries than this gets no preview: the
#: ``email`` parser is not given a flood of parts or a deep nesting of multiparts.
PREVIEW_MAX_PARTS = 100

#: Held posts being approved now (a second approval waits for no one: it finds none).
_busy: set[tuple[str, str]] = set()


def held_path(ctx: ListContext, lst: ListSettings, held_id: str) -> Path:
    """Where a held post's message is kept."""
    return ctx.root / "held" / lst.address / held_id


async def hold(
    ctx: ListContext, lst: ListSettings, arrival: ListArrival, message: Path, reason: str
) -> str:
    """Keep the post ``message`` for a moderator (``reason``: :data:`NON_MEMBER`,
    :data:`SIZE` or :data:`BAD_FROM`) and tell the moderators; its held id.  A list that
    holds ``[lists] held_max`` posts already holds no more: the post is dropped (logged),
    so that a flood cannot fill the disk; "" then."""
    existing = await ctx.run(ctx.db.held, lst.address)
    if len(existing) >= ctx.settings.held_max:
        log.warn(
            "list {list}: post {id} from {sender} dropped: {count} posts are held already",
            list=lst.address,
            id=arrival.id,
            sender=arrival.sender or "<>",
            count=len(existing),
        )
        return ""
    held_id, subject, preview, size = await ctx.run(_keep, ctx, lst, message)
    if any(h.id == held_id for h in existing):
        log.info("list {list}: post {id} was held already", list=lst.address, id=held_id)
        return held_id
    now = ctx.clock()
    record = Held(
        lst.address, held_id, arrival.sender, subject, reason, size, now,
        now + ctx.settings.held_days * 86400,
    )  # fmt: skip
    # The notice first, then the row: run again after a crash, the notice may go twice but
    # is never lost.
    await _notify(ctx, lst, record, preview)
    await ctx.run(ctx.db.hold, record)
    log.info(
        "list {list}: post {id} from {sender} held ({reason})",
        list=lst.address,
        id=held_id,
        sender=arrival.sender,
        reason=reason,
    )
    return held_id


def _keep(ctx: ListContext, lst: ListSettings, message: Path) -> tuple[str, str, str, int]:
    """Copy the message to its held file, durably; its id, decoded subject, first lines and
    size.  Blocking."""
    digest = hashlib.sha256()
    with message.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    held_id = digest.hexdigest()[:24]
    target = held_path(ctx, lst, held_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        tmp = target.with_name(f".{held_id}.tmp")
        with message.open("rb") as src, tmp.open("wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
            dst.flush()
            fsutil.fsync_file(tmp)
        tmp.replace(target)
        fsutil.fsync_dir(target.parent)
        fsutil.fsync_dir(target.parent.parent)
    with message.open("rb") as f:
        head = f.read(PREVIEW_READ)
    fields = headers.parse_fields(head[: headers.header_end(head)])
    text = headers.shown(headers.first(fields, "subject"))
    return held_id, text, _preview(head), message.stat().st_size


def _preview(head: bytes) -> str:
    """The first lines of the first text part of a message's beginning ``head``; "" for
    one that looks like a flood of MIME parts."""
    if head.count(b"\n--") > PREVIEW_MAX_PARTS:
        return ""
    try:
        parsed = email.message_from_bytes(head, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        part = parsed.get_body(preferencelist=("plain",))
        text = part.get_content() if part is not None else ""
    except Exception as e:  # the email package has errors of its own on odd input
        log.debug("list: no preview of a held post: {error}", error=e)
        text = ""
    lines = [line[:200] for line in str(text).splitlines()[:PREVIEW_LINES]]
    return "\n".join(lines)


async def _notify(ctx: ListContext, lst: ListSettings, held: Held, preview: str) -> None:
    _ = compose.translator(lst.language).gettext
    approve = await tokens.issue(ctx, lst.address, lst.role_address("owner"), "approve", held.id)
    reject = await tokens.issue(ctx, lst.address, lst.role_address("owner"), "reject", held.id)
    approve_address = lst.role_address("confirm", approve)
    reject_address = lst.role_address("confirm", reject)
    reasons = {
        NON_MEMBER: _("The sender may not post to the list without approval."),
        SIZE: _("The message is larger than the list's limit of {limit} octets."),
        BAD_FROM: _("The message does not have exactly one From: field naming an address."),
    }
    parts = [
        _("A post to {list} is held for a moderator's decision.").format(list=lst.address),
        reasons.get(held.reason, held.reason).format(limit=lst.max_size),
        "",
        _("Sender: {sender}").format(sender=held.sender or "<>"),
        _("Subject: {subject}").format(subject=held.subject),
        _("Size: {size} octets").format(size=held.size),
        "",
        preview,
        "",
        _("To approve it, reply to this message: the reply goes to {address}.").format(
            address=approve_address
        ),
        _("Or open this page and press the button to approve it: {url}").format(
            url=requests.confirm_url(ctx, approve)
        ),
        _("To reject it, send any message to {address}.").format(address=reject_address),
        _("Or open this page and press the button to reject it: {url}").format(
            url=requests.confirm_url(ctx, reject)
        ),
        _("Or decide on the list's page of the admin console: {url}").format(
            url=f"{ctx.web_url}/admin/list?address={quote(lst.address, safe='@')}"
        ),
        _("Without a decision, the post is discarded after {days} days.").format(
            days=ctx.settings.held_days
        ),
    ]
    to = list(lst.moderators or lst.owners)
    if not to:
        log.warn("list {list} has neither moderators nor owners to decide", list=lst.address)
        return
    subject = _("Post to {list} held: {subject}").format(list=lst.address, subject=held.subject)
    notice = compose.message(
        lst, to, subject, "\n".join(parts), ctx.hostname, reply_to=approve_address
    )
    await ctx.send(lst, to, notice)


async def confirm(ctx: ListContext, lst: ListSettings, token: Token, by: str) -> str:
    """The confirmer of ``approve`` and ``reject`` tokens: ``by`` (the verified address that
    replied, ``lists/identity.py``; "" from the confirmation page, whose link only the
    moderators got) must be a moderator or an owner.  The decision, or its refusal, is
    written to the audit log."""
    result = await _decide(ctx, lst, token, by)
    await _audit(ctx, lst, token, by, result)
    return result


async def _decide(ctx: ListContext, lst: ListSettings, token: Token, by: str) -> str:
    if token.list.lower() != lst.address.lower():
        return "refused: another list's token"
    if by and not lst.is_moderator(by):
        log.warn(
            "list {list}: {by} is no moderator; decision on post {id} ignored",
            list=lst.address,
            by=by,
            id=token.data,
        )
        return "refused: not a moderator"
    who = by or "confirmation page"
    if token.action == "approve":
        done = await approve(ctx, lst, token.data, who)
        return "approved" if done else "already decided"
    if token.action == "reject":
        done = await reject(ctx, lst, token.data, who)
        return "rejected" if done else "already decided"
    return "unknown action"


async def _audit(ctx: ListContext, lst: ListSettings, token: Token, by: str, result: str) -> None:
    """One audit line for a decision by mail (``by``: who replied) or on the confirmation
    page (``by`` ""), as the console writes its own (``list.held-approve``, …).  A line
    that cannot be written is logged: the decision is made already."""
    if ctx.audit is None:
        return
    actor = Actor(by, "mail") if by else Actor("confirmation link", "web")
    outcome = "ok" if result in ("approved", "rejected") else result
    try:
        action, target = f"list.held-{token.action}", f"{lst.address} {token.data}"
        await ctx.run(ctx.audit.record, actor, action, target, outcome)
    except Exception:
        log.failure("list {list}: the audit log could not be written", list=lst.address)


async def _find(ctx: ListContext, lst: ListSettings, held_id: str) -> Held | None:
    if not ID_RE.fullmatch(held_id):
        return None
    rows = await ctx.run(ctx.db.held, lst.address)
    return next((h for h in rows if h.id == held_id), None)


async def approve(ctx: ListContext, lst: ListSettings, held_id: str, by: str) -> bool:
    """Distribute the held post ``held_id``; False when there is no such post (decided
    already, expired)."""
    if (lst.address, held_id) in _busy:
        return False
    _busy.add((lst.address, held_id))
    try:
        held = await _find(ctx, lst, held_id)
        if held is None:
            return False
        path = held_path(ctx, lst, held_id)
        try:
            content = await ctx.run(path.read_bytes)
        except FileNotFoundError:
            await ctx.run(ctx.db.release, lst.address, held_id)
            return False
        # Distribution first, then the row: approved twice after a crash, the second finds
        # the distribution's record and sends nothing again.
        await distribute(ctx, lst, content, held.sender)
        await ctx.run(_forget, ctx, lst, held_id)
    finally:
        _busy.discard((lst.address, held_id))
    log.info("list {list}: held post {id} approved by {by}", list=lst.address, id=held_id, by=by)
    return True


async def reject(
    ctx: ListContext, lst: ListSettings, held_id: str, by: str, reason: str = ""
) -> bool:
    """Discard the held post ``held_id``, telling the poster when it was held for its size;
    False when there is no such post."""
    if not ID_RE.fullmatch(held_id) or (lst.address, held_id) in _busy:
        return False
    held = await ctx.run(_forget, ctx, lst, held_id)
    if held is None:
        return False
    log.info("list {list}: held post {id} rejected by {by}", list=lst.address, id=held_id, by=by)
    if held.sender and held.reason == SIZE:
        if not await ctx.run(requests.counted, ctx, held.sender.lower(), ctx.clock()):
            log.info(
                "list {list}: {sender} not told: too many notices to that address",
                list=lst.address,
                sender=held.sender,
            )
            return True
        _ = compose.translator(lst.language).gettext
        lines = [
            _("Your post to {list} was not distributed: it is larger than the list allows.")
            .format(list=lst.address),
            _("Subject: {subject}").format(subject=held.subject),
        ]  # fmt: skip
        if reason:
            lines.append(_("The moderator's reason: {reason}").format(reason=reason))
        subject = _("Your post to {list} was rejected").format(list=lst.address)
        notice = compose.message(lst, [held.sender], subject, "\n".join(lines), ctx.hostname)
        await ctx.send(lst, [held.sender], notice)
    return True


def _forget(ctx: ListContext, lst: ListSettings, held_id: str) -> Held | None:
    """Remove a held post's row, then its file.  Blocking."""
    held = ctx.db.release(lst.address, held_id)
    path = held_path(ctx, lst, held_id)
    if path.exists():
        path.unlink()
        fsutil.fsync_dir(path.parent)
    return held


async def expire_held(ctx: ListContext) -> int:
    """Discard the held posts older than ``[lists] held_days``; how many."""
    return await ctx.run(_expire, ctx, ctx.clock())


def _expire(ctx: ListContext, now: float) -> int:
    count = 0
    for held in ctx.db.held():
        if held.expires > now:
            continue
        if ctx.db.release(held.list, held.id) is not None:
            count += 1
        path = ctx.root / "held" / held.list / held.id
        if path.exists():
            path.unlink()
    if count:
        log.info("lists: {count} held posts expired", count=count)
    return count
