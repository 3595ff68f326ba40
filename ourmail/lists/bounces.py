"""Bounces: what comes back to a list's ``LIST-bounces@`` address, and members' bounce scores.

The list sends each post with a VERP return path, ``LIST-bounces+member=domain@…``, so a
bounce names its member in the address it comes to.  Only such a bounce counts: one to the
bare ``LIST-bounces@`` (where the list's own notices come back), or whose VERP part names
no address, is logged and dropped.  The report's ``Final-Recipient`` fields are not used to
guess whose it is: anyone can write a report naming any member.

Only a real delivery status notification counts: a ``multipart/report;
report-type=delivery-status`` (RFC 6522, RFC 3464; RFC 6533's global form too) with a
per-recipient block ``Action: failed`` and a permanent ``Status: 5.x.x`` (RFC 3463 §3.1).
Delays, successes and transient failures count nothing, and so do auto-replies and
challenges sent to the bounce address; they are logged and dropped.

A counted bounce adds 1 to the member's score, at most once a (UTC) day.  At the list's
``bounce_limit`` the member's delivery is disabled (``Delivery.NONE``,
``disabled_by = "bounces"``) and the member and the owners are told.

The member's notice carries a confirmation of action ``subscribe`` (there is no action of
its own in the confirmers' registry) whose ``data`` is ``reenable:<delivery>``
(:data:`REENABLE`, then the member's delivery before): confirming it, by replying to
``LIST-confirm+TOKEN@`` or on the web's confirmation page, gives the member back that
delivery with a clean score.  ``requests.confirm`` hands such a token to :func:`reenable`.

:func:`decay`, run daily, halves the score of members without a bounce for
:data:`QUIET_DAYS` days.
"""

from __future__ import annotations

import contextlib
import email
import email.message
import email.parser
import email.policy
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs
from twisted.logger import Logger

from ourmail import fsutil
from ourmail.dsnparams import DSNParamError, xtext_decode
from ourmail.interfaces import ListArrival
from ourmail.lists import compose, tokens
from ourmail.lists.context import ListContext
from ourmail.lists.listdb import ListDB, Token
from ourmail.lists.model import Delivery, ListSettings, Member, parse_address, verp_member

log = Logger()

#: At most this much of a bounce is read and parsed: the report comes before the returned
#: message (RFC 6522 §3), so a bounce that carries a huge original loses only the original.
#: Hostile input of this size parses in about a second, in a thread.
READ_LIMIT = 256 * 1024
#: A bounce with more lines that may be MIME boundaries than this is no report (a real one
#: has three parts and perhaps a few in the returned message): no parse of a part flood.
MAX_BOUNDARIES = 200
#: Days without a bounce before a member's score starts to halve, once a day.
QUIET_DAYS = 7
#: Scores below this are forgotten by :func:`decay`.
FORGET_BELOW = 0.5
#: The ``data`` of a ``subscribe`` confirmation that re-enables a member disabled by bounces
#: starts with this, followed by ``:`` and the delivery to give back.
REENABLE = "reenable"
#: A report naming more failed recipients than this is looked at for these only.
MAX_CANDIDATES = 100
DAY = 86400.0

_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")


@attrs.frozen
class Report:
    """What a message to a bounce address says."""

    #: A delivery status notification (RFC 3464) at all.
    dsn: bool
    #: The addresses of its per-recipient blocks that failed permanently.
    failed: frozenset[str] = frozenset()


def parse_report(data: bytes) -> Report:
    """Take a bounce apart (blocking: call it in a thread).  Never raises: a message that
    cannot be parsed is no DSN."""
    if data.count(b"\n--") > MAX_BOUNDARIES:
        log.info("a bounce of too many MIME parts; not parsed")
        return Report(dsn=False)
    try:
        msg = email.message_from_bytes(data, policy=email.policy.compat32)
        if msg.get_content_type() != "multipart/report":
            return Report(dsn=False)
        # RFC 6522 §3: report-type says what the second part is; RFC 6533 keeps its value.
        if str(msg.get_param("report-type", "")).lower() not in (
            "delivery-status",
            "global-delivery-status",
        ):
            return Report(dsn=False)
        status = next((p for p in msg.walk() if p.get_content_type() in _STATUS_TYPES), None)
        if status is None:
            return Report(dsn=False)
        blocks = list(_blocks(status))
    except Exception as e:  # hostile or broken MIME: a clear outcome, never a traceback
        log.info("unparsable bounce: {why}", why=repr(e)[:200])
        return Report(dsn=False)
    failed: set[str] = set()
    for fields in blocks[1:]:  # RFC 3464 §2.2: the per-message fields come first
        action = fields.get("action", "").split("(")[0].strip().lower()
        code = fields.get("status", "").strip()
        if action == "failed" and code.startswith("5."):  # RFC 3463 §3.1: 5 is permanent
            for name in ("final-recipient", "original-recipient"):
                address = _address(fields.get(name, ""))
                if address:
                    failed.add(address)
    return Report(dsn=True, failed=frozenset(failed))


def _blocks(part: email.message.Message) -> Iterator[dict[str, str]]:
    """The field blocks of a ``message/delivery-status`` part, per-message block first.

    The ``email`` package parses ``message/delivery-status`` as a list of header blocks,
    and RFC 6533's ``message/global-delivery-status`` as one message whose header is the
    first block and whose body holds the rest; both are read here."""
    payload = part.get_payload()
    items = payload if isinstance(payload, list) else [payload]
    for item in items:
        if isinstance(item, email.message.Message):
            yield {k.lower(): str(v) for k, v in item.items()}
            rest = item.get_payload()
            if isinstance(rest, str) and rest.strip():
                yield from _text_blocks(rest)
        elif isinstance(item, str):
            yield from _text_blocks(item)


def _text_blocks(text: str) -> Iterator[dict[str, str]]:
    parser = email.parser.HeaderParser(policy=email.policy.compat32)
    for chunk in text.replace("\r\n", "\n").split("\n\n"):
        if chunk.strip():
            yield {k.lower(): str(v) for k, v in parser.parsestr(chunk.strip() + "\n").items()}


def _address(field: str) -> str:
    """The address of a ``Final-Recipient``/``Original-Recipient`` value
    (``rfc822; someone@example.org``, RFC 3464 §2.3.1, §2.3.2); "" when it is none."""
    kind, semi, value = field.partition(";")
    if not semi or kind.strip().lower() not in ("rfc822", "utf-8"):
        return ""
    value = value.strip().strip("<>")
    with contextlib.suppress(DSNParamError):
        value = xtext_decode(value)  # RFC 3464 §2.3.1: the original recipient is xtext
    return value if value.count("@") == 1 and " " not in value else ""


def _read(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(READ_LIMIT)


def _parse_file(path: Path) -> Report:
    return parse_report(_read(path))


def _day(when: float) -> int:
    return int(when // DAY)


def _normal(address: str) -> str:
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}"


def _find_members(db: ListDB, list_address: str, candidates: Sequence[str]) -> list[Member]:
    found: dict[str, Member] = {}
    for address in candidates[:MAX_CANDIDATES]:
        for form in dict.fromkeys((_normal(address), address.lower())):
            member = db.member(list_address, form)
            if member is not None:
                found[member.address] = member
                break
    return list(found.values())


async def handle(ctx: ListContext, lst: ListSettings, arrival: ListArrival, message: Path) -> None:
    """Handle one message to ``LIST-bounces[+member=domain]@`` (see the module's docstring)."""
    report = await ctx.run(_parse_file, message)
    if not report.dsn:
        log.info(
            "{list}: not a delivery report at the bounce address, from <{sender}>; dropped",
            list=lst.address,
            sender=arrival.sender,
        )
        return
    if not report.failed:
        log.info("{list}: a report of no permanent failure; nothing counted", list=lst.address)
        return
    where = parse_address(arrival.address, {lst.address})
    verp = verp_member(where.detail) if where is not None and where.detail else None
    if verp is None:
        # Only the VERP address says whose bounce it is (the report may name the address
        # the member's server forwarded to, or any member at all if it is forged).
        log.info(
            "{list}: a report to the bounce address without a member's VERP part ({who}); dropped",
            list=lst.address,
            who=", ".join(sorted(report.failed))[:300],
        )
        return
    members = await ctx.run(_find_members, ctx.db, lst.address, [verp])
    if not members:
        log.info("{list}: a bounce for no member ({who}); dropped", list=lst.address, who=verp)
    for member in members:
        await count(ctx, lst, member)


async def count(ctx: ListContext, lst: ListSettings, member: Member) -> Member:
    """Count one hard bounce of ``member`` (at most one a day); disable its delivery at the
    list's ``bounce_limit`` and tell the member and the owners.  Returns the member as
    stored."""
    now = ctx.clock()
    if member.last_bounce and _day(member.last_bounce) == _day(now):
        log.info(
            "{list}: <{member}> bounced again today; counted once",
            list=lst.address,
            member=member.address,
        )
        return member
    score = member.bounce_score + 1
    updated = attrs.evolve(member, bounce_score=score, last_bounce=now)
    disable = score >= lst.bounce_limit and member.delivery is not Delivery.NONE
    if disable:
        updated = attrs.evolve(updated, delivery=Delivery.NONE, disabled_by="bounces")
        # Told first, stored after: a crash in between tells them twice, never not at all.
        await _tell(ctx, lst, updated, member.delivery)
    await ctx.run(ctx.db.record_bounce, lst.address, member.address, score, now, disable)
    log.info(
        "{list}: bounce of <{member}> counted, score {score:.1f} of {limit:.1f}{disabled}",
        list=lst.address,
        member=member.address,
        score=score,
        limit=lst.bounce_limit,
        disabled="; delivery disabled" if disable else "",
    )
    return updated


async def _tell(ctx: ListContext, lst: ListSettings, member: Member, before: Delivery) -> None:
    _ = compose.translator(lst.language).gettext
    data = f"{REENABLE}:{before.value}"
    token = await tokens.issue(ctx, lst.address, member.address, "subscribe", data)
    confirm = lst.role_address("confirm", token)
    text = _(
        "Mail from the list {list} to your address {address} has been returned as"
        " undeliverable too often, so the list has stopped sending you its posts."
        " You are still a member.\n\n"
        "To get the list's posts again, reply to this message (the reply goes to {confirm})"
        " or open this page and confirm:\n\n    {url}\n\n"
        "This works for {hours} hours. If you do nothing, you stay a member without mail."
    ).format(
        list=lst.address,
        address=member.address,
        confirm=confirm,
        url=f"{ctx.web_url}/lists/confirm/{token}",
        hours=ctx.settings.confirm_hours,
    )
    subject = _("Your delivery from {list} is disabled").format(list=lst.display_name)
    notice = compose.message(lst, [member.address], subject, text, ctx.hostname, reply_to=confirm)
    await ctx.send(lst, [member.address], notice)
    if lst.owners:
        text = _(
            "The list {list} has stopped sending posts to {address}: its mail bounced"
            " {score:.0f} times, the list's limit being {limit:g}. The member was told how to"
            " get the posts again."
        ).format(
            list=lst.address,
            address=member.address,
            score=member.bounce_score,
            limit=lst.bounce_limit,
        )
        subject = _("{address} disabled on {list} by bounces").format(
            address=member.address, list=lst.display_name
        )
        notice = compose.message(lst, list(lst.owners), subject, text, ctx.hostname)
        await ctx.send(lst, list(lst.owners), notice)


async def reenable(ctx: ListContext, lst: ListSettings, token: Token, by: str) -> str:
    """Confirm a re-enabling token (a ``subscribe`` token whose data starts with
    :data:`REENABLE`; ``by``: who confirmed, "" from the web): the member disabled by
    bounces gets its delivery back, with a clean score.  Returns ``"reenabled"``, or
    ``"already"`` when the member is not disabled by bounces (any more), or
    ``"not-member"``."""
    member = await ctx.run(ctx.db.member, lst.address, token.address)
    if member is None:
        return "not-member"
    if member.delivery is not Delivery.NONE or member.disabled_by != "bounces":
        return "already"
    wanted = token.data.partition(":")[2]
    known = {d.value for d in Delivery} - {Delivery.NONE.value}
    delivery = Delivery(wanted) if wanted in known else Delivery.EACH
    enabled = attrs.evolve(
        member, delivery=delivery, disabled_by="", bounce_score=0.0, last_bounce=0.0
    )
    await ctx.run(ctx.db.set_member, lst.address, enabled)
    log.info(
        "{list}: <{member}> re-enabled after bounces (confirmed by <{by}>)",
        list=lst.address,
        member=member.address,
        by=by or "the web",
    )
    return "reenabled"


# -- decay ------------------------------------------------------------------------------------


def _decay_file(ctx: ListContext) -> Path:
    return ctx.root / "bounces" / "decayed.json"


def _decay(ctx: ListContext, now: float) -> int:
    state = _decay_file(ctx)
    today = _day(now)
    try:
        done = int(json.loads(state.read_bytes())["day"])
    except (OSError, ValueError, KeyError, TypeError):
        done = -1
    if done >= today:
        return 0
    # The day is marked before the scores change: a crash halves a score once less, never
    # twice on one day.
    state.parent.mkdir(parents=True, exist_ok=True)
    fsutil.write_atomic(state, json.dumps({"day": today}).encode())
    changed = 0
    for lst in ctx.db.lists():
        for member in ctx.db.members(lst.address):
            if member.bounce_score <= 0 or now - member.last_bounce < QUIET_DAYS * DAY:
                continue
            score = member.bounce_score / 2
            score = 0.0 if score < FORGET_BELOW else score
            ctx.db.set_member(lst.address, attrs.evolve(member, bounce_score=score))
            changed += 1
    return changed


async def decay(ctx: ListContext) -> int:
    """Once a day (later calls that day do nothing): halve the bounce score of the members
    with no bounce for :data:`QUIET_DAYS` days, forgetting scores below
    :data:`FORGET_BELOW`.  Returns how many members' scores changed."""
    started = time.monotonic()
    changed = await ctx.run(_decay, ctx, ctx.clock())
    if changed:
        log.info(
            "bounce scores decayed for {n} members in {s:.2f}s",
            n=changed,
            s=time.monotonic() - started,
        )
    return changed
