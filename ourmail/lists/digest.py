"""Digests: members with ``Delivery.DIGEST`` get one message a day with the list's posts.

Posting hands each outgoing copy to :func:`add`, which keeps it durably in
``<lists>/digest/<list>/posts/``.  :func:`send_due` (run hourly by the list service) sends a
list's digest once a day: an RFC 2046 §5.1.5 ``multipart/digest`` whose first part is a
table of contents (``text/plain``, as RFC 1153's "Today's Topics") and whose other parts
are the posts (``message/rfc822``, the default type of a digest's parts), to the digest
members in batches with VERP return paths, each with its own RFC 8058 one-click
``List-Unsubscribe``.  A digest larger than the server's message size limit is split
into several issues.

A crash is survived by a small journal, ``state.json`` beside the posts: the issue number,
the posts it holds, the digest members it goes to (taken when the issue is built, so a
resumed issue goes to the same people, not to whoever is a digest member then), and how far
sending got (``sending`` with the batches queued, ``sent``).  A digest is built into
``issue.eml`` before it is marked ``sending``; once every batch is queued it is marked
``sent``, and only then are its posts removed.  After a crash the next run carries on from
the mark; each batch is queued under a key of its own (``enqueue(key=…)``), so a batch
queued but not yet marked is not queued again.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import hashlib
import json
import os
import secrets
from collections.abc import Sequence
from email.message import EmailMessage, MIMEPart
from pathlib import Path
from urllib.parse import quote

import attrs
from twisted.logger import Logger

from ourmail import fsutil
from ourmail.dsnparams import NO_MAIL_PARAMS, NO_RCPT_PARAMS
from ourmail.lists import compose, tokens
from ourmail.lists.context import ListContext
from ourmail.lists.model import Delivery, ListSettings

log = Logger()

DAY = 86400.0
#: Of each post, this much is read for the table of contents (its header).
HEAD_LIMIT = 64 * 1024
IDLE, SENDING, SENT = "", "sending", "sent"


@attrs.frozen
class State:
    """A list's digest journal (``state.json``)."""

    #: The number of the last issue built (RFC 1153's issue number).
    issue: int = 0
    #: When the last digest went out (or the first post came): the next is due a day later.
    last_sent: float = 0.0
    phase: str = IDLE
    #: The file names of the posts in issue :attr:`issue` while it is being sent.
    posts: tuple[str, ...] = ()
    #: How many recipient batches of that issue are queued.
    done: int = 0
    #: The digest members that issue goes to, sorted (None in a journal written before
    #: they were kept: the members at the time it is resumed).
    recipients: tuple[str, ...] | None = None


def _dir(ctx: ListContext, list_address: str) -> Path:
    return ctx.root / "digest" / list_address


def _load(where: Path) -> State:
    try:
        data = json.loads((where / "state.json").read_bytes())
        recipients = data.get("recipients")
        return State(
            int(data["issue"]),
            float(data["last_sent"]),
            str(data["phase"]),
            tuple(str(p) for p in data["posts"]),
            int(data["done"]),
            None if recipients is None else tuple(str(r) for r in recipients),
        )
    except FileNotFoundError:
        return State()


def _save(where: Path, state: State) -> None:
    data = attrs.asdict(state)
    fsutil.write_atomic(where / "state.json", json.dumps(data).encode())


def _pending(where: Path) -> list[str]:
    """The posts waiting, oldest first (temporary files of a write are dot files)."""
    try:
        names = os.listdir(where / "posts")
    except FileNotFoundError:
        return []
    return sorted(n for n in names if not n.startswith("."))


def _add(where: Path, message: bytes, now: float) -> None:
    posts = where / "posts"
    if not posts.is_dir():
        posts.mkdir(parents=True, exist_ok=True)
        for made in (where, where.parent, where.parent.parent):  # digest/, LIST/, posts/
            fsutil.fsync_dir(made)
    if not (where / "state.json").exists():
        _save(where, State(last_sent=now))  # the first digest is due a day after this
    name = f"{int(now * 1e6):020d}.{secrets.token_hex(4)}.eml"
    fsutil.write_atomic(posts / name, message)


async def add(ctx: ListContext, lst: ListSettings, message: bytes) -> None:
    """Keep ``message`` (a post as distributed) for the next digest of ``lst``; returns once
    it is on disk (file and directory fsynced)."""
    await ctx.run(_add, _dir(ctx, lst.address), message, ctx.clock())


def _pick(where: Path, limit: int) -> tuple[str, ...]:
    """The oldest posts that fit in ``limit`` octets together (at least one)."""
    chosen: list[str] = []
    total = 0
    for name in _pending(where):
        size = (where / "posts" / name).stat().st_size
        if chosen and total + size > limit:
            break
        chosen.append(name)
        total += size
    return tuple(chosen)


def _topic(data: bytes) -> tuple[str, str]:
    """A post's subject and author, for the table of contents."""
    head = data[:HEAD_LIMIT].split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    parser = email.parser.BytesHeaderParser(policy=email.policy.default)
    try:
        msg = parser.parsebytes(head)
        subject = " ".join(str(msg.get("Subject", "")).split())
        name, address = email.utils.parseaddr(str(msg.get("From", "")))
    except Exception:  # a header that does not parse still has a place in the digest
        return "", ""
    return subject, name or address


def _header(
    ctx: ListContext, lst: ListSettings, issue: int, boundary: str, eight_bit: bool
) -> bytes:
    _ = compose.translator(lst.language).gettext
    head = EmailMessage(policy=email.policy.SMTP)
    head["From"] = email.utils.formataddr((lst.display_name, lst.role_address("request")))
    head["To"] = lst.address
    head["Reply-To"] = lst.address
    head["Subject"] = _("{name} digest, issue {issue}").format(name=lst.display_name, issue=issue)
    head["Date"] = email.utils.formatdate(ctx.clock(), localtime=False)
    head["Message-ID"] = email.utils.make_msgid(domain=ctx.hostname)
    head["List-Id"] = compose.list_id(lst)  # RFC 2919
    head["List-Post"] = f"<mailto:{lst.address}>"  # RFC 2369 §3.4
    head["Precedence"] = "list"
    head["MIME-Version"] = "1.0"
    head["Content-Type"] = f'multipart/digest; boundary="{boundary}"'  # RFC 2046 §5.1.5
    if eight_bit:  # RFC 2046 §5.1: a composite type's encoding is that of its parts
        head["Content-Transfer-Encoding"] = "8bit"
    return head.as_bytes().split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"


def _build(
    ctx: ListContext, lst: ListSettings, where: Path, issue: int, posts: Sequence[str]
) -> None:
    """Write issue ``issue`` of ``lst``'s digest with ``posts`` to ``issue.eml``, durably.
    Posts are read twice (the table of contents first), never all held at once."""
    _ = compose.translator(lst.language).gettext
    present = [where / "posts" / n for n in posts if (where / "posts" / n).exists()]
    lines = [_("Today's Topics:"), ""]
    eight_bit = False
    for number, path in enumerate(present, 1):
        data = path.read_bytes()
        eight_bit = eight_bit or not data.isascii()
        subject, author = _topic(data)
        lines.append(f"  {number:>3}. {subject or _('(no subject)')} ({author})")
    lines += ["", _("Reply to the list at {address}.").format(address=lst.address)]
    toc = MIMEPart(policy=email.policy.SMTP)
    toc.set_content("\n".join(lines) + "\n", charset="utf-8", cte="quoted-printable")
    boundary = f"digest-{secrets.token_hex(16)}"
    tmp = where / ".issue.eml.tmp"
    with tmp.open("wb") as out:
        out.write(_header(ctx, lst, issue, boundary, eight_bit))
        out.write(f"--{boundary}\r\n".encode())
        out.write(toc.as_bytes())
        for path in present:
            out.write(f"\r\n--{boundary}\r\n\r\n".encode())  # message/rfc822 by default
            data = path.read_bytes()
            out.write(data if data.endswith(b"\r\n") else data + b"\r\n")
        out.write(f"\r\n--{boundary}--\r\n".encode())
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, where / "issue.eml")
    fsutil.fsync_dir(where)


def _finish(where: Path, state: State, now: float) -> State:
    """Remove the posts of the issue sent and its file; the journal back to idle."""
    for name in state.posts:
        (where / "posts" / name).unlink(missing_ok=True)
    (where / "issue.eml").unlink(missing_ok=True)
    if (where / "posts").is_dir():
        fsutil.fsync_dir(where / "posts")
    idle = State(issue=state.issue, last_sent=now)
    _save(where, idle)
    return idle


def _personal(ctx: ListContext, lst: ListSettings, member: str) -> bytes:
    """A member's own one-click unsubscribe fields (RFC 8058 §3.1, RFC 2369 §3.2)."""
    signature = tokens.member_signature(ctx.secret, lst.address, member)
    path = "/".join(quote(p, safe="") for p in (lst.address, member, signature))
    url = f"{ctx.web_url}/lists/unsubscribe/{path}"
    return (
        f"List-Unsubscribe: <{url}>, <mailto:{lst.role_address('leave')}>\r\n"
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    ).encode()


async def _send_issue(ctx: ListContext, lst: ListSettings, where: Path, state: State) -> State:
    """Queue issue ``state.issue`` to the digest members, batch after batch, marking each."""
    if not (where / "issue.eml").exists():
        await ctx.run(_build, ctx, lst, where, state.issue, state.posts)
    utf8 = await ctx.run(_needs_utf8, where / "issue.eml")
    if state.recipients is None:
        state = attrs.evolve(state, recipients=await ctx.run(_members, ctx, lst))
        await ctx.run(_save, where, state)
    recipients = state.recipients or ()
    size = max(1, ctx.settings.batch)
    batches = [recipients[i : i + size] for i in range(0, len(recipients), size)]
    for number, batch in enumerate(batches):
        if number < state.done:
            continue
        await ctx.queue.enqueue(
            lst.role_address("bounces"),
            [(r, NO_RCPT_PARAMS) for r in batch],
            where / "issue.eml",
            NO_MAIL_PARAMS,
            utf8 or not all(r.isascii() for r in batch),
            verp=True,
            personal={r: _personal(ctx, lst, r) for r in batch},
            key=f"{_issue_key(lst, state)}-{number}",  # queued again after a crash: once
        )
        state = attrs.evolve(state, done=number + 1)
        await ctx.run(_save, where, state)
    log.info(
        "{list}: digest issue {issue} ({posts} posts) queued for {n} members",
        list=lst.address,
        issue=state.issue,
        posts=len(state.posts),
        n=len(recipients),
    )
    state = attrs.evolve(state, phase=SENT)
    await ctx.run(_save, where, state)
    return state


def _issue_key(lst: ListSettings, state: State) -> str:
    """The queue key of the issue ``state`` is sending (its batches add their number): the
    list, the issue number and its posts' file names, which are unique."""
    what = "\0".join((lst.address, str(state.issue), *state.posts))
    return "digest-" + hashlib.sha256(what.encode()).hexdigest()[:40]


def _needs_utf8(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(HEAD_LIMIT)
    return not head.split(b"\r\n\r\n", 1)[0].isascii()


def _members(ctx: ListContext, lst: ListSettings) -> tuple[str, ...]:
    """The digest members of ``lst`` now, sorted.  Blocking (a thread)."""
    return tuple(sorted(m.address for m in ctx.db.members(lst.address, Delivery.DIGEST)))


def _start(ctx: ListContext, lst: ListSettings, where: Path, state: State) -> State | None:
    """Build the next issue from the oldest posts and mark it ``sending``, with the digest
    members it goes to; None when no post waits."""
    posts = _pick(where, ctx.max_message_size * 9 // 10)  # room for the digest's own parts
    if not posts:
        return None
    issue = state.issue + 1
    _build(ctx, lst, where, issue, posts)
    sending = State(issue, state.last_sent, SENDING, posts, 0, _members(ctx, lst))
    _save(where, sending)
    return sending


async def send_list(ctx: ListContext, lst: ListSettings) -> int:
    """Send ``lst``'s digest if one is due (or finish one a crash interrupted); how many
    issues were queued."""
    where = _dir(ctx, lst.address)
    now = ctx.clock()
    state = await ctx.run(_load, where)
    sent = 0
    while True:
        if state.phase == SENT:
            state = await ctx.run(_finish, where, state, now)
            sent += 1
        elif state.phase == SENDING:
            state = await _send_issue(ctx, lst, where, state)
        elif sent or now >= state.last_sent + DAY:
            started = await ctx.run(_start, ctx, lst, where, state)
            if started is None:
                return sent
            state = started
        else:
            return sent


async def send_due(ctx: ListContext) -> int:
    """The periodic job: send every list's digest that is due; how many issues were
    queued.  A list whose digest fails is logged and tried again at the next run."""
    root = ctx.root / "digest"
    names = await ctx.run(lambda: sorted(os.listdir(root)) if root.is_dir() else [])
    sent = 0
    for name in names:
        lst = await ctx.run(ctx.db.get, name)
        if lst is None:
            continue
        try:
            sent += await send_list(ctx, lst)
        except Exception:
            log.failure("{list}: digest not sent; tried again later", list=lst.address)
    return sent
