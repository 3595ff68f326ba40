"""Joining and leaving a list: by mail (``LIST-request@``, ``LIST-join@``, ``LIST-leave@``)
and by the web form, always with a confirmation (double opt-in, RFC 2369 §3.3 and §3.2 name
the addresses), and at once by an RFC 8058 one-click unsubscribe.

* A message to ``-join@`` or ``-leave@`` asks to subscribe or unsubscribe its envelope
  sender; one to ``-request@`` carries commands (``subscribe``/``join``,
  ``unsubscribe``/``leave``, ``help``) in its Subject or the first lines of its first
  text/plain part.  By mail only the envelope sender is ever (un)subscribed: an address
  other than the one the mail came from would let anyone sign anyone up.
* :func:`request` sends the confirmation request: a token (``tokens.issue``) to reply to at
  ``LIST-confirm+TOKEN@`` or to confirm on the web page ``/lists/confirm/TOKEN``.  Requests
  are counted per address and per web client (``[lists] requests_per_address`` and
  ``requests_per_client`` an hour); over the limit, or while a confirmation of the same
  action for the address is still pending, nothing is sent, so that nobody can bomb an
  address with confirmation requests.  A request to subscribe a member (or to unsubscribe
  a non-member) sends nothing either, and the web answers it like any other, so that the
  form does not tell who is a member.
* :func:`confirm` is the confirmer of ``subscribe`` and ``unsubscribe`` tokens; with
  ``approve_subscriptions`` a confirmed subscription waits for an owner, who gets a token of
  their own (``data="approved"``).
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
from ourmail.lists.model import ListSettings, Member
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
    "help": "help",
}
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
    words = line.strip().split(None, 1)
    return COMMANDS.get(words[0].lower()) if words else None


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
    ctx: ListContext, lst: ListSettings, address: str, action: str, client: str, via: str
) -> str:
    """Ask ``address`` to confirm ``action`` (``subscribe`` or ``unsubscribe``) on ``lst``;
    ``client`` is the web client's IP address ("" by mail), ``via`` ``web`` or ``mail``.
    :data:`LIMITED`: over a rate limit, nothing sent; :data:`ALREADY`: nothing to do (a
    member subscribing, a non-member unsubscribing), nothing sent; :data:`SENT`: a
    confirmation request is on its way (or one still pending is)."""
    if action not in ("subscribe", "unsubscribe"):
        raise ValueError(f"not a request: {action!r}")
    address = normalise_address(address)
    # One request at a time from the check to the stored token, so that two requests at
    # once cannot both find no pending confirmation.
    await _issuing.acquire()
    try:
        now = ctx.clock()
        state = await ctx.run(_state, ctx, lst.address, address, action, client, now)
        token = await tokens.issue(ctx, lst.address, address, action) if state == SENT else ""
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
        return SENT if state == PENDING else state
    try:
        await _send_confirmation(ctx, lst, address, action, token)
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
    ctx: ListContext, lst: ListSettings, address: str, action: str, token: str
) -> None:
    _ = _gettext(lst)
    if action == "subscribe":
        subject = _("Confirm your subscription to {list}").format(list=lst.address)
        text = _(
            "Someone, probably you, asked to subscribe {address} to the mailing list {list}."
        ).format(address=address, list=lst.address)
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


def _state(
    ctx: ListContext, list_address: str, address: str, action: str, client: str, now: float
) -> str:
    """Thread: count the request and say whether to send (:data:`SENT`), not to (over a
    limit: :data:`LIMITED`; nothing to do: :data:`ALREADY`; sent before: :data:`PENDING`)."""
    keys = [f"addr:{address}"] + ([f"ip:{client}"] if client else [])
    counts = ctx.db.note_request(keys, now, WINDOW)
    if counts[0] > ctx.settings.requests_per_address:
        return LIMITED
    if client and counts[1] > ctx.settings.requests_per_client:
        return LIMITED
    member = ctx.db.member(list_address, address) is not None
    if member == (action == "subscribe"):
        return ALREADY
    if ctx.db.pending_tokens(list_address, address, action, now):
        return PENDING
    return SENT


def counted(ctx: ListContext, address: str, now: float) -> bool:
    """Thread: count a message the list would send ``address`` unasked (help, a refusal, a
    rejection) with its subscription requests; whether it is within the address's limit
    (``[lists] requests_per_address`` an hour): a forged sender must not make the list mail
    a victim without end (backscatter)."""
    [count] = ctx.db.note_request([f"addr:{address}"], now, WINDOW)
    return count <= ctx.settings.requests_per_address


async def confirm(ctx: ListContext, lst: ListSettings, token: Token, by: str) -> str:
    """The confirmer of ``subscribe`` and ``unsubscribe`` tokens (``by``: who replied, ""
    from the web); idempotent, as :func:`tokens.use` needs: run again, it finds the change
    made and answers so.  Answers :data:`SUBSCRIBED`, :data:`AWAITING_APPROVAL`,
    :data:`ALREADY_MEMBER`, :data:`UNSUBSCRIBED`, :data:`NOT_MEMBER` or
    :data:`UNKNOWN_ACTION`."""
    if token.action == "subscribe" and token.data.startswith(f"{bounces.REENABLE}:"):
        # A member disabled by bounces asked to get the posts again (bounces.py).
        return await bounces.reenable(ctx, lst, token, by)
    if token.action == "subscribe":
        if lst.approve_subscriptions and token.data != APPROVED:
            result = await _ask_owners(ctx, lst, token.address)
        else:
            result = await _subscribe(ctx, lst, token.address)
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


async def _ask_owners(ctx: ListContext, lst: ListSettings, address: str) -> str:
    """A confirmed subscription of a list that needs approval: a token to the owners, once
    (confirmed again after a crash, an approval already pending is not asked for again)."""
    if not lst.owners:
        log.warn("list {list}: subscriptions need approval, but it has no owner", list=lst.address)
        return AWAITING_APPROVAL
    pending = await ctx.run(
        ctx.db.pending_tokens, lst.address, address, "subscribe", ctx.clock(), APPROVED
    )
    if pending:
        return AWAITING_APPROVAL
    token = await tokens.issue(ctx, lst.address, address, "subscribe", APPROVED)
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


async def _subscribe(ctx: ListContext, lst: ListSettings, address: str) -> str:
    member = Member(address, subscribed=ctx.clock())
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
