"""Joining and leaving a list: by mail (``LIST-request@``, ``LIST-join@``, ``LIST-leave@``)
and by the web form, always with a confirmation (double opt-in, RFC 2369 §3.3 and §3.2 name
the addresses), and at once by an RFC 8058 one-click unsubscribe.

* A message to ``-join@`` or ``-leave@`` asks to subscribe or unsubscribe its envelope
  sender; one to ``-request@`` carries commands (``subscribe``/``join``,
  ``unsubscribe``/``leave``, ``digest``/``set digest``, ``nodigest``/``each``/``set
  nodigest``, ``help``) in its Subject or the first lines of its first text/plain part.
  By mail only the envelope sender is ever (un)subscribed: an address other than the one
  the mail came from would let anyone sign anyone up.
* :func:`request` sends the confirmation request: a token (``tokens.issue``) to reply to at
  ``LIST-confirm+TOKEN@`` or to confirm on the web page ``/lists/confirm/TOKEN``.  Requests
  are counted per address and per web client (``[lists] requests_per_address`` and
  ``requests_per_client`` an hour); over the limit, or while a confirmation of the same
  action for the address is still pending, nothing is sent, so that nobody can bomb an
  address with confirmation requests.  A request to subscribe a member (or to unsubscribe
  a non-member) sends nothing either, and the web answers it like any other, so that the
  form does not tell who is a member.
* A member chooses how it gets the posts, each one or (on a list with ``digest``) the daily
  digest, with a confirmation too (anyone can forge a sender): tokens of action ``digest``
  or ``each``.  A non-member, a list without a digest or a member disabled by an owner get
  a short answer by mail (counted with the requests), nothing on the web.
* :func:`confirm` is the confirmer of ``subscribe``, ``unsubscribe``, ``digest`` and
  ``each`` tokens; with ``approve_subscriptions`` a confirmed subscription waits for an
  owner, who gets a token of their own (``data="approved"``).  A subscription asked for
  with the digest (the web form) carries ``digest`` in its data.
* :func:`one_click` unsubscribes at once on a valid HMAC signature (RFC 8058 §3.1: no
  confirmation, no login).

Null-sender and automatic mail (RFC 3834 ``Auto-Submitted``, ``Precedence: bulk``) to these
addresses is dropped unanswered: answering it is how mail loops start.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import attrs
from twisted.internet.defer import DeferredLock
from twisted.logger import Logger

from ourmail.addresses import AddressError, normalise_address
from ourmail.interfaces import ListArrival
from ourmail.lists import bounces, compose, tokens
from ourmail.lists.context import ListContext
from ourmail.lists.listdb import Token
from ourmail.lists.model import Delivery, ListSettings, Member
from ourmail.mime import content, structure, summary

log = Logger()

#: Octets of a message read for commands and headers: enough for the header and the first
#: lines of the body of any honest request, and a bound on what hostile mail costs.
READ_LIMIT = 64 * 1024
#: Commands acted on per message (Mailman reads at most 10 too).
MAX_COMMANDS = 10
#: The commands ``-request@`` understands, and the action each asks for.
COMMANDS: dict[str, str] = {
    "subscribe": "subscribe",
    "join": "subscribe",
    "unsubscribe": "unsubscribe",
    "leave": "unsubscribe",
    "digest": "digest",
    "nodigest": "each",
    "each": "each",
    "help": "help",
}
#: The words after ``set`` (Mailman's and Sympa's ``set digest``, ``set nodigest``).
SET_COMMANDS: dict[str, str] = {"digest": "digest", "nodigest": "each", "each": "each"}
#: The token actions that choose a member's delivery (each is a ``Delivery`` value).
MODES = ("digest", "each")
#: What :func:`request` asks for.
ACTIONS = ("subscribe", "unsubscribe", *MODES)
#: A subscription's token data (and part of its owners' token data): the digest wanted.
DIGEST_CHOICE = "digest"
#: What :func:`request` answers.
SENT, LIMITED, ALREADY = "sent", "limited", "already"
#: The window of the rate limits, seconds.
WINDOW = 3600.0
#: Held from a request's check of the limits and pending confirmations to its stored token.
_issuing = DeferredLock()
#: A confirmation of the same request still waits: sent before, nothing sent again.
PENDING = "pending"
#: What :func:`confirm` answers (for the log and the web page).
SUBSCRIBED = "subscribed"
AWAITING_APPROVAL = "awaiting-approval"
ALREADY_MEMBER = "already-member"
UNSUBSCRIBED = "unsubscribed"
NOT_MEMBER = "not-member"
UNKNOWN_ACTION = "unknown-action"
#: What :func:`request` and :func:`confirm` answer for a choice of delivery.
NO_DIGEST = "no-digest"
DISABLED = "disabled"
SWITCHED = "switched"
REENABLED = "reenabled"
#: A subscription token that an owner confirms (``approve_subscriptions``).
APPROVED = "approved"


# -- the handlers of arrivals ------------------------------------------------------------------


async def handle_join(
    ctx: ListContext, lst: ListSettings, arrival: ListArrival, message: Path
) -> None:
    """``LIST-join@``: any message asks to subscribe its envelope sender."""
    await _by_address(ctx, lst, arrival, message, "subscribe")


async def handle_leave(
    ctx: ListContext, lst: ListSettings, arrival: ListArrival, message: Path
) -> None:
    """``LIST-leave@``: any message asks to unsubscribe its envelope sender."""
    await _by_address(ctx, lst, arrival, message, "unsubscribe")


async def handle_request(
    ctx: ListContext, lst: ListSettings, arrival: ListArrival, message: Path
) -> None:
    """``LIST-request@``: the commands of the message, or the help text when it has none."""
    sender = _sender(arrival)
    if sender is None:
        return
    mail = await ctx.run(read, message)
    if mail.automatic:
        log.info("list {list}: automatic mail to -request ignored", list=lst.address)
        return
    if not mail.actions or "help" in mail.actions:
        if await ctx.run(counted, ctx, sender, ctx.clock()):
            await send_help(ctx, lst, sender, mail.message_id)
        else:
            log.info("list {list}: help for {address}: limited", list=lst.address, address=sender)
    for action in mail.actions:
        if action != "help":
            await request(ctx, lst, sender, action, "", "mail")


async def _by_address(
    ctx: ListContext, lst: ListSettings, arrival: ListArrival, message: Path, action: str
) -> None:
    sender = _sender(arrival)
    if sender is None:
        return
    if (await ctx.run(read, message)).automatic:
        log.info("list {list}: automatic mail to -{role} ignored", list=lst.address, role=action)
        return
    await request(ctx, lst, sender, action, "", "mail")


def _sender(arrival: ListArrival) -> str | None:
    """The envelope sender, normalised; None for the null sender (a bounce: never answered)
    and for what is not an address."""
    if not arrival.sender:
        return None
    try:
        return normalise_address(arrival.sender)
    except AddressError:
        return None


@attrs.frozen
class CommandMail:
    """What a message to a command address says: whether a robot sent it, its Message-ID
    (for the answer's In-Reply-To), and the actions it asks for, in order, each once."""

    automatic: bool
    message_id: str | None
    actions: tuple[str, ...]


def read(path: Path) -> CommandMail:
    """Thread: the first :data:`READ_LIMIT` octets of the spooled message, taken apart by
    offsets (``ourmail.mime.structure``: nesting and part count bounded, nothing decoded
    but the one text part read)."""
    with path.open("rb") as f:
        head = f.read(READ_LIMIT)
    root = structure.parse(head)
    return CommandMail(_automatic(root), _message_id(root), commands(head, root))


def _header(part: structure.Part, name: str) -> str:
    return summary.decode_header(part.header(name) or "")


def _automatic(root: structure.Part) -> bool:
    """Mail no person wrote: RFC 3834 §5 ``Auto-Submitted`` other than ``no``, or a
    ``Precedence`` of bulk, junk or list (RFC 3834 §3.1.8 asks responders to leave it)."""
    auto = _header(root, "auto-submitted").strip().lower()
    if auto and not auto.startswith("no"):
        return True
    return _header(root, "precedence").strip().lower() in ("bulk", "junk", "list")


def _message_id(root: structure.Part) -> str | None:
    value = (root.header("message-id") or "").strip()
    printable = value.isascii() and value.isprintable() and " " not in value
    ok = printable and value.startswith("<") and value.endswith(">") and len(value) < 1000
    return value if ok else None


def commands(head: bytes, root: structure.Part) -> tuple[str, ...]:
    """The actions the Subject and the first lines of the first text/plain part ask for, in
    order, each once, at most :data:`MAX_COMMANDS` lines read; reading stops at the first
    line that is not a command (a signature, a quoted message)."""
    found: list[str] = []
    subject = _command(_strip_reply(_header(root, "subject")))
    if subject:
        found.append(subject)
    read = 0
    for line in _first_text(head, root).splitlines():
        if read >= MAX_COMMANDS:
            break
        if not line.strip():
            if read == 0:
                continue  # blank lines before the commands
            break
        action = _command(line)
        if action is None:
            break
        read += 1
        found.append(action)
    return tuple(dict.fromkeys(found))


def _strip_reply(subject: str) -> str:
    words = subject.split()
    while words and words[0].lower().rstrip(":") in ("re", "aw", "fw", "fwd", "απ", "σχετ"):
        words = words[1:]
    return " ".join(words)


def _command(line: str) -> str | None:
    words = line.strip().lower().split(None, 2)
    if len(words) > 1 and words[0] == "set":
        return SET_COMMANDS.get(words[1])
    return COMMANDS.get(words[0]) if words else None


def _first_text(head: bytes, root: structure.Part) -> str:
    """The first text/plain part that is not an attachment, decoded (as much as was read);
    "" when there is none.  Enclosed messages (message/rfc822) are not looked into."""
    stack = [root]
    while stack:
        part = stack.pop()
        if part.maintype == "multipart":
            stack.extend(reversed(part.children))
            continue
        disposition = (part.header("content-disposition") or "").strip().lower()
        if (part.maintype, part.subtype) != ("text", "plain") or disposition.startswith(
            "attachment"
        ):
            continue
        raw = content.Span(head, part.body_start, part.end)
        try:
            body = b"".join(content.decoded(raw, part.header("content-transfer-encoding")).chunks())
        except content.UnknownCTE:
            return ""
        try:
            return body.decode(part.params.get("charset", "utf-8"), "replace")
        except LookupError:  # a charset Python does not know
            return body.decode("utf-8", "replace")
    return ""


# -- requests and confirmations ----------------------------------------------------------------


def _gettext(lst: ListSettings) -> Callable[[str], str]:
    return compose.translator(lst.language).gettext


def confirm_url(ctx: ListContext, token: str) -> str:
    """The web page that confirms ``token`` (GET asks, POST confirms)."""
    return f"{ctx.web_url}/lists/confirm/{token}"


def page_url(ctx: ListContext, lst: ListSettings) -> str:
    """The list's public page (the subscribe and unsubscribe form)."""
    return f"{ctx.web_url}/lists/{quote(lst.address, safe='@')}"


def unsubscribe_url(ctx: ListContext, lst: ListSettings, address: str) -> str:
    """``address``'s one-click unsubscribe URL (RFC 8058 §3.1: POST unsubscribes, GET asks)."""
    signature = tokens.member_signature(ctx.secret, lst.address, address)
    list_part, member = quote(lst.address, safe=""), quote(address, safe="")
    return f"{ctx.web_url}/lists/unsubscribe/{list_part}/{member}/{signature}"


async def request(
    ctx: ListContext,
    lst: ListSettings,
    address: str,
    action: str,
    client: str,
    via: str,
    data: str = "",
) -> str:
    """Ask ``address`` to confirm ``action`` (one of :data:`ACTIONS`) on ``lst``; ``client``
    is the web client's IP address ("" by mail), ``via`` ``web`` or ``mail``, ``data`` the
    token's (:data:`DIGEST_CHOICE`: a subscription with the digest).  :data:`LIMITED`: over
    a rate limit, nothing sent; :data:`ALREADY`: nothing to do (a member subscribing, a
    non-member unsubscribing, a member asking for the delivery it has), nothing sent;
    :data:`NOT_MEMBER`, :data:`NO_DIGEST`, :data:`DISABLED`: a choice of delivery that
    cannot be made (by mail, a short answer says why); :data:`SENT`: a confirmation request
    is on its way (or one still pending is)."""
    if action not in ACTIONS:
        raise ValueError(f"not a request: {action!r}")
    address = normalise_address(address)
    # One request at a time from the check to the stored token, so that two requests at
    # once cannot both find no pending confirmation.
    await _issuing.acquire()
    try:
        now = ctx.clock()
        state = await ctx.run(_state, ctx, lst, address, action, client, now)
        sent = state == SENT
        token = await tokens.issue(ctx, lst.address, address, action, data) if sent else ""
    finally:
        _issuing.release()
    if state != SENT:
        log.info(
            "list {list}: {action} request for {address} by {via}: {state}",
            list=lst.address,
            action=action,
            address=address,
            via=via,
            state=state,
        )
        if via == "mail" and action in MODES and state != LIMITED and state != PENDING:
            await _refuse(ctx, lst, address, state)
        return SENT if state == PENDING else state
    try:
        await _send_confirmation(ctx, lst, address, action, token, data)
    except Exception:
        # Not sent: the token must not stand as pending, or no request would send one again
        # until it expired.
        await tokens.redeem(ctx, token)
        raise
    log.info(
        "list {list}: {action} confirmation sent to {address} (by {via})",
        list=lst.address,
        action=action,
        address=address,
        via=via,
    )
    return SENT


async def _send_confirmation(
    ctx: ListContext, lst: ListSettings, address: str, action: str, token: str, data: str
) -> None:
    _ = _gettext(lst)
    if action == "subscribe":
        subject = _("Confirm your subscription to {list}").format(list=lst.address)
        text = _(
            "Someone, probably you, asked to subscribe {address} to the mailing list {list}."
        ).format(address=address, list=lst.address)
        if wants_digest(data):
            text += " " + _("The posts will come in one daily digest.")
    elif action in MODES:
        subject = _("Confirm how you get the posts of {list}").format(list=lst.address)
        text = _mode_request(lst, action).format(address=address, list=lst.address)
    else:
        subject = _("Confirm leaving {list}").format(list=lst.address)
        text = _(
            "Someone, probably you, asked to unsubscribe {address} from the mailing list {list}."
        ).format(address=address, list=lst.address)
    text += "\n\n" + _("To confirm, reply to this message, or open this page and press the button:")
    text += f"\n\n    {confirm_url(ctx, token)}\n\n"
    text += _(
        "If you did not ask for this, ignore this message: nothing will change. "
        "The request expires in {hours} hours."
    ).format(hours=ctx.settings.confirm_hours)
    text += "\n"
    mail = compose.message(
        lst,
        [address],
        subject,
        text,
        ctx.hostname,
        reply_to=lst.role_address("confirm", token),
        sender_role="request",
    )
    await ctx.send(lst, [address], mail)


def _mode_request(lst: ListSettings, action: str) -> str:
    """The confirmation request's sentence for a choice of delivery (to format)."""
    _ = _gettext(lst)
    if action == "digest":
        return _(
            "Someone, probably you, asked that {address} get one daily digest of the mailing"
            " list {list} instead of each post."
        )
    return _(
        "Someone, probably you, asked that {address} get each post of the mailing list {list}"
        " as it is sent."
    )


def _state(
    ctx: ListContext,
    lst: ListSettings,
    address: str,
    action: str,
    client: str,
    now: float,
) -> str:
    """Thread: count the request and say whether to send (:data:`SENT`), not to (over a
    limit: :data:`LIMITED`; nothing to do: :data:`ALREADY`; a choice of delivery that
    cannot be made: :data:`NOT_MEMBER`, :data:`NO_DIGEST`, :data:`DISABLED`; sent before:
    :data:`PENDING`)."""
    keys = [f"addr:{address}"] + ([f"ip:{client}"] if client else [])
    counts = ctx.db.note_request(keys, now, WINDOW)
    if counts[0] > ctx.settings.requests_per_address:
        return LIMITED
    if client and counts[1] > ctx.settings.requests_per_client:
        return LIMITED
    found = ctx.db.member(lst.address, address)
    if action in MODES:
        refused = _mode_refused(lst, found, Delivery(action))
        if refused:
            return refused
    elif (found is not None) == (action == "subscribe"):
        return ALREADY
    if ctx.db.pending_tokens(lst.address, address, action, now):
        return PENDING
    return SENT


def _mode_refused(lst: ListSettings, member: Member | None, delivery: Delivery) -> str:
    """Why ``member`` cannot be given ``delivery`` ("" when it can): not a member, no
    digest on the list, disabled by an owner (only an owner enables it again), or the
    delivery it has already."""
    if delivery is Delivery.DIGEST and not lst.digest:
        return NO_DIGEST
    if member is None:
        return NOT_MEMBER
    if member.disabled_by == "owner":
        return DISABLED
    if member.delivery is delivery:
        return ALREADY
    return ""


async def _refuse(ctx: ListContext, lst: ListSettings, address: str, state: str) -> None:
    """The short answer to a choice of delivery made by mail that cannot be made (counted
    with the address's requests in :func:`_state`, so rate-limited as they are)."""
    _ = _gettext(lst)
    texts = {
        NOT_MEMBER: _("{address} is not subscribed to the mailing list {list}."),
        NO_DIGEST: _("The mailing list {list} has no digest: each post is sent as it comes."),
        DISABLED: _(
            "The owners of the mailing list {list} have stopped its posts to {address};"
            " write to {owner} to get them again."
        ),
        ALREADY: _("{address} gets the posts of {list} that way already."),
    }
    text = texts[state].format(address=address, list=lst.address, owner=lst.role_address("owner"))
    subject = _("Your request to {list}").format(list=lst.address)
    mail = compose.message(
        lst, [address], subject, text + "\n", ctx.hostname, sender_role="request"
    )
    await _notify(ctx, lst, [address], mail)


def counted(ctx: ListContext, address: str, now: float) -> bool:
    """Thread: count a message the list would send ``address`` unasked (help, a refusal, a
    rejection) with its subscription requests; whether it is within the address's limit
    (``[lists] requests_per_address`` an hour): a forged sender must not make the list mail
    a victim without end (backscatter)."""
    [count] = ctx.db.note_request([f"addr:{address}"], now, WINDOW)
    return count <= ctx.settings.requests_per_address


def approved(data: str) -> bool:
    """Whether a ``subscribe`` token's ``data`` is an owner's approval."""
    return data.split(":")[0] == APPROVED


def wants_digest(data: str) -> bool:
    """Whether a ``subscribe`` token's ``data`` asks for the digest."""
    return DIGEST_CHOICE in data.split(":")


async def confirm(ctx: ListContext, lst: ListSettings, token: Token, by: str) -> str:
    """The confirmer of ``subscribe``, ``unsubscribe``, ``digest`` and ``each`` tokens
    (``by``: who replied, "" from the web); idempotent, as :func:`tokens.use` needs: run
    again, it finds the change made and answers so.  Answers :data:`SUBSCRIBED`,
    :data:`AWAITING_APPROVAL`, :data:`ALREADY_MEMBER`, :data:`UNSUBSCRIBED`,
    :data:`NOT_MEMBER`, :data:`SWITCHED`, :data:`REENABLED`, :data:`ALREADY`,
    :data:`NO_DIGEST`, :data:`DISABLED` or :data:`UNKNOWN_ACTION`."""
    if token.action == "subscribe" and token.data.startswith(f"{bounces.REENABLE}:"):
        # A member disabled by bounces asked to get the posts again (bounces.py).
        return await bounces.reenable(ctx, lst, token, by)
    digest = lst.digest and wants_digest(token.data)
    if token.action == "subscribe":
        if lst.approve_subscriptions and not approved(token.data):
            result = await _ask_owners(ctx, lst, token.address, digest)
        else:
            result = await _subscribe(ctx, lst, token.address, digest)
    elif token.action in MODES:
        result = await _switch(ctx, lst, token.address, Delivery(token.action))
    elif token.action == "unsubscribe":
        result = await _unsubscribe(ctx, lst, token.address, goodbye=True)
    else:
        result = UNKNOWN_ACTION
    log.info(
        "list {list}: {action} of {address} confirmed{by}: {result}",
        list=lst.address,
        action=token.action,
        address=token.address,
        by=f" by {by}" if by else " on the web",
        result=result,
    )
    return result


def signed(ctx: ListContext, lst: ListSettings, address: str, signature: str) -> bool:
    """Whether ``signature`` (from a URL: any text) is ``address``'s one-click signature."""
    hexadecimal = len(signature) <= 64 and all(c in "0123456789abcdef" for c in signature)
    return hexadecimal and tokens.valid_signature(ctx.secret, lst.address, address, signature)


async def one_click(ctx: ListContext, lst: ListSettings, address: str, signature: str) -> bool:
    """RFC 8058 one-click unsubscribe: with ``address``'s valid signature it is unsubscribed
    at once (True, also when it was not a member any more); False for any other signature.
    No goodbye message: the one who clicked asked to hear nothing more."""
    try:
        address = normalise_address(address)
    except AddressError:
        return False
    if not signed(ctx, lst, address, signature):
        log.info("list {list}: one-click unsubscribe with a wrong signature", list=lst.address)
        return False
    await _unsubscribe(ctx, lst, address, goodbye=False)
    return True


async def _switch(ctx: ListContext, lst: ListSettings, address: str, delivery: Delivery) -> str:
    """A confirmed choice of delivery: the member gets ``delivery`` (a bounce-disabled one
    is re-enabled with it), and a short notice says so."""
    result = await ctx.run(_set_delivery, ctx, lst, address, delivery)
    if result in (SWITCHED, REENABLED):
        _ = _gettext(lst)
        what = (
            _("{address} now gets the daily digest of {list}.")
            if delivery is Delivery.DIGEST
            else _("{address} now gets each post of {list}.")
        ).format(address=address, list=lst.address)
        mail = compose.message(lst, [address], what, what + "\n", ctx.hostname)
        await _notify(ctx, lst, [address], mail)
    return result


def _set_delivery(ctx: ListContext, lst: ListSettings, address: str, delivery: Delivery) -> str:
    """Thread: give ``address`` ``delivery`` unless it cannot have it (see
    :func:`_mode_refused`); run again, it finds it done (:data:`ALREADY`)."""
    member = ctx.db.member(lst.address, address)
    refused = _mode_refused(lst, member, delivery)
    if refused or member is None:
        return refused or NOT_MEMBER
    if not ctx.db.set_delivery(lst.address, address, delivery):
        # Removed or disabled by an owner since it was read.
        return NOT_MEMBER if ctx.db.member(lst.address, address) is None else DISABLED
    return REENABLED if member.disabled_by == "bounces" else SWITCHED


async def _ask_owners(ctx: ListContext, lst: ListSettings, address: str, digest: bool) -> str:
    """A confirmed subscription of a list that needs approval: a token to the owners, once
    (confirmed again after a crash, an approval already pending is not asked for again);
    the member's choice of the digest goes with it."""
    if not lst.owners:
        log.warn("list {list}: subscriptions need approval, but it has no owner", list=lst.address)
        return AWAITING_APPROVAL
    data = f"{APPROVED}:{DIGEST_CHOICE}" if digest else APPROVED
    pending = await ctx.run(
        ctx.db.pending_tokens, lst.address, address, "subscribe", ctx.clock(), data
    )
    if pending:
        return AWAITING_APPROVAL
    token = await tokens.issue(ctx, lst.address, address, "subscribe", data)
    _ = _gettext(lst)
    subject = _("{address} asks to join {list}").format(address=address, list=lst.address)
    text = _("{address} asked to join the mailing list {list} and confirmed the address.").format(
        address=address, list=lst.address
    )
    text += "\n\n" + _(
        "To let them in, reply to this message, or open this page and press the button:"
    )
    text += f"\n\n    {confirm_url(ctx, token)}\n\n"
    text += _("To refuse, do nothing: the request expires in {hours} hours.").format(
        hours=ctx.settings.confirm_hours
    )
    text += "\n"
    owners = list(lst.owners)
    mail = compose.message(
        lst, owners, subject, text, ctx.hostname, reply_to=lst.role_address("confirm", token)
    )
    await _notify(ctx, lst, owners, mail)
    return AWAITING_APPROVAL


async def _subscribe(ctx: ListContext, lst: ListSettings, address: str, digest: bool) -> str:
    delivery = Delivery.DIGEST if digest else Delivery.EACH
    member = Member(address, delivery=delivery, subscribed=ctx.clock())
    added = await ctx.run(ctx.db.subscribe, lst.address, [member])
    if not added:
        return ALREADY_MEMBER
    await ctx.changed()  # the archive opens to them within seconds
    _ = _gettext(lst)
    text = _("Welcome to the mailing list {list}.").format(list=lst.address) + "\n\n"
    if lst.description:
        text += lst.description + "\n\n"
    text += _("To write to the list, send your message to {address}.").format(address=lst.address)
    text += "\n\n" + _unsubscribe_ways(ctx, lst, address)
    subject = _("Welcome to {list}").format(list=lst.address)
    await _notify(ctx, lst, [address], compose.message(lst, [address], subject, text, ctx.hostname))
    await _tell_owners(
        ctx, lst, _("{address} joined {list}").format(address=address, list=lst.address)
    )
    return SUBSCRIBED


def _unsubscribe_ways(ctx: ListContext, lst: ListSettings, address: str) -> str:
    _ = _gettext(lst)
    return (
        _("To leave the list, send any message to {address}, or open this page:").format(
            address=lst.role_address("leave")
        )
        + f"\n\n    {unsubscribe_url(ctx, lst, address)}\n"
    )


async def _unsubscribe(ctx: ListContext, lst: ListSettings, address: str, goodbye: bool) -> str:
    removed = await ctx.run(ctx.db.unsubscribe, lst.address, [address])
    if not removed:
        return NOT_MEMBER
    await ctx.changed()  # the archive closes to them within seconds
    _ = _gettext(lst)
    if goodbye:
        subject = _("You have left {list}").format(list=lst.address)
        text = _("{address} is no longer subscribed to the mailing list {list}.").format(
            address=address, list=lst.address
        )
        text += "\n"
        await _notify(
            ctx, lst, [address], compose.message(lst, [address], subject, text, ctx.hostname)
        )
    await _tell_owners(
        ctx, lst, _("{address} left {list}").format(address=address, list=lst.address)
    )
    return UNSUBSCRIBED


async def _tell_owners(ctx: ListContext, lst: ListSettings, what: str) -> None:
    """A notice to the owners (issue 19 point 5): its subject says it all."""
    if not lst.owners:
        return
    owners = list(lst.owners)
    await _notify(ctx, lst, owners, compose.message(lst, owners, what, what + "\n", ctx.hostname))


async def _notify(ctx: ListContext, lst: ListSettings, to: list[str], mail: bytes) -> None:
    """Send a message about a change already made (durable): a failure to queue it is
    logged, not raised, so that the change is not undone or retried for its notice."""
    try:
        await ctx.send(lst, to, mail)
    except Exception:
        log.failure("list {list}: a notice could not be queued", list=lst.address)


async def send_help(
    ctx: ListContext, lst: ListSettings, address: str, in_reply_to: str | None = None
) -> None:
    """The help text of ``LIST-request@`` to ``address``."""
    _ = _gettext(lst)
    text = _("This is the mailing list {list}.").format(list=lst.address) + "\n\n"
    text += _(
        "To join, send any message to {join}, or a message to {request} with the word "
        "subscribe in the subject."
    ).format(join=lst.role_address("join"), request=lst.role_address("request"))
    text += "\n\n" + _(
        "To leave, send any message to {leave}, or a message to {request} with the word "
        "unsubscribe in the subject."
    ).format(leave=lst.role_address("leave"), request=lst.role_address("request"))
    if lst.digest:
        text += "\n\n" + _(
            "To get one daily digest instead of each post, send a message to {request} with"
            " the word digest in the subject; to get each post again, the word nodigest."
        ).format(request=lst.role_address("request"))
    text += "\n\n" + _("You can also join or leave on the web:") + "\n\n"
    text += f"    {page_url(ctx, lst)}\n\n"
    text += _("Either way, you will be asked to confirm by mail.") + "\n\n"
    text += _("The people who run the list are at {owner}.").format(owner=lst.role_address("owner"))
    text += "\n"
    subject = _("Help for {list}").format(list=lst.address)
    mail = compose.message(
        lst, [address], subject, text, ctx.hostname, sender_role="request", in_reply_to=in_reply_to
    )
    await ctx.send(lst, [address], mail)
