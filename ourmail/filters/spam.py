"""The ``spam`` check: a scanner's score (spamd or rspamd) turned into X-Spam-* fields, Junk
or a refusal at the end of DATA, with per-domain and per-user thresholds, allow and block
lists and contacts (docs/filters.md#spam-spamd-rspamd).

Implementation notes (keep these true when changing this module):

* The message is scanned once, whatever the number of recipients; each recipient's outcome
  follows :mod:`ourmail.filters.spampolicy`.  The message is refused (``550 5.7.1``) only
  when every recipient refuses it; otherwise a recipient that would refuse gets its copy in
  Junk, and a ``junk`` verdict names the recipients whose copies go there, with each one's
  own reason (``Verdict.reasons``, for the filter log); its shared ``reason`` (the
  ``X-Ourmail-Junk`` field when every copy is junk) never names a list.
* Messages larger than ``max_size`` are not scanned (the header says so); the allow and
  block lists still apply.  The message is read off the reactor when it is a spool file.
* A scanner that is down, answers garbage or does not answer in time (the client gives up
  at 80% of the check's time-out, so the chain's own time-out does not fire first): with
  ``on_error = "accept"`` (the default) the message goes on with ``X-Spam-Status: Unknown``
  and a warning in the log; with ``"tempfail"`` the chain answers ``451 4.7.0``.
* Fields named like ours (:data:`SPAM_FIELDS`) that arrive with the message are removed by
  the chain before ours are added (``replaces_fields``): a sender cannot forge a verdict.
* An allow-list entry or a contact counts only for a sender identity an earlier check
  authenticated (:func:`trusted_senders`): the envelope sender when SPF said ``pass`` for its
  domain (RFC 7208 §2.6.3), the ``From:`` address when the message has exactly one and DMARC
  said ``pass`` for its domain (RFC 7489 §6.6.2; two ``From:`` fields are a permerror, §6.6.1).
  Anything else (neutral, none, softfail, temperror, permerror, or no ``spf``/``dmarc``
  before ``spam`` in the chain) trusts nobody.  A block-list entry counts for any sender.
* The work is bounded whatever the message: the ``From:`` addresses are deduplicated and at
  most :data:`MAX_FROM` are looked up (beyond that none is trusted), and the preferences
  database answers each recipient in one query (:meth:`SpamPrefs.lookup`).
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar, cast

from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorThreads, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from ourmail.filters import spampolicy
from ourmail.filters.options import refuse_unknown
from ourmail.filters.spamc import SpamdClient, SpamdLearner
from ourmail.filters.spampolicy import Decision, Thresholds
from ourmail.filters.spamprefs import SpamPrefs, UserPrefs, database_path
from ourmail.filters.spamscan import Envelope, Scanner, ScannerError, SpamScore
from ourmail.interfaces import (
    FilterEnvironment,
    ICheck,
    ICheckFactory,
    ISpamLearner,
    MailContext,
    Stage,
    Verdict,
    refuse,
)

log = Logger()
T = TypeVar("T")
NO_THRESHOLDS = Thresholds()

#: Header fields this check writes; any that arrive with the message are removed first.
SPAM_FIELDS = (
    "X-Spam-Flag",
    "X-Spam-Score",
    "X-Spam-Status",
    "X-Spam-Level",
    "X-Spam-Report",
    "X-Spam-Checker-Version",
)
OPTIONS = {
    "backend",
    "address",
    "controller",
    "password",
    "password_file",
    "max_size",
    "junk_score",
    "reject_score",
    "domains",
}
BACKENDS = ("spamd", "rspamd")
DEFAULT_ADDRESS = {"spamd": "127.0.0.1:783", "rspamd": "http://127.0.0.1:11333"}
DEFAULT_CONTROLLER = "http://127.0.0.1:11334"
#: Messages above this are not scanned by default (spamc's own limit is 500 KB: spam is
#: small, and a scanner's time grows with the message).
DEFAULT_MAX_SIZE = 1024 * 1024
#: How much of a message on disk is read for its From: field when it is too large to scan.
HEAD_READ = 256 * 1024
#: ``From:`` addresses looked up on the block lists; a message with more trusts none of them.
MAX_FROM = 5


def _read(content: bytes | os.PathLike[str], max_size: int) -> tuple[bytes | None, list[str]]:
    """The message (None when larger than ``max_size``) and its From: addresses.  Blocking
    for a file: call it in a thread."""
    if isinstance(content, bytes):
        message: bytes | None = content if len(content) <= max_size else None
        head = content[:HEAD_READ]
    else:
        with open(content, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            message = f.read() if size <= max_size else None
            head = f.read(HEAD_READ) if message is None else message[:HEAD_READ]
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    froms = [a for _, a in email.utils.getaddresses(parsed.get_all("From", [])) if "@" in a]
    return message, [a.lower() for a in froms]


def _passed(context: MailContext, method: str, address: str) -> bool:
    """Whether the ``spf``/``dmarc`` check's note says ``pass`` for ``address``'s domain."""
    note = context.notes.get(method)
    if not isinstance(note, Mapping) or note.get("result") != "pass":
        return False
    domain = str(note.get("domain", "")).lower().rstrip(".")
    return bool(domain) and address.rpartition("@")[2].rstrip(".") == domain


def trusted_senders(context: MailContext, sender: str, froms: Sequence[str]) -> list[str]:
    """The sender identities allow lists and contacts may vouch for: ``sender`` (MAIL FROM)
    when SPF passed for its domain (RFC 7208 §2.6.3), the ``From:`` address when ``froms``
    holds exactly one and DMARC passed for its domain (RFC 7489 §6.6.2; several ``From:``
    addresses cannot all be authenticated, §6.6.1).  Both need ``spf``/``dmarc`` earlier in
    the chain; without them nobody is trusted."""
    trusted = []
    if sender and _passed(context, "spf", sender):
        trusted.append(sender)
    if len(froms) == 1 and _passed(context, "dmarc", froms[0]):
        trusted.append(froms[0])
    return trusted


@implementer(ICheck)
class SpamCheck:
    """The ``spam`` check (see the module notes)."""

    name = "spam"
    stages: tuple[Stage, ...] = ("data",)
    replaces_fields = SPAM_FIELDS

    def __init__(
        self,
        scanner: Scanner,
        prefs: SpamPrefs,
        reactor: object,
        backend: str = "spamd",
        max_size: int = DEFAULT_MAX_SIZE,
        default: Thresholds = NO_THRESHOLDS,
        domains: Mapping[str, Thresholds] | None = None,
    ) -> None:
        self.scanner, self.prefs, self.backend = scanner, prefs, backend
        self.max_size = max_size
        self.default = default
        self.domains = dict(domains or {})
        self.timeout = 30.0
        self.on_error = "accept"
        self.trusted = False
        self._reactor = reactor

    def check(self, stage: Stage, context: MailContext) -> Deferred[Verdict]:
        return Deferred.fromCoroutine(self._check(context))

    async def _check(self, context: MailContext) -> Verdict:
        assert context.content is not None
        message, froms = await self._in_thread(_read, context.content, self.max_size)
        recipients = list(dict.fromkeys(r.lower() for r in context.recipients))
        owners = {
            r.lower(): tuple(o.lower() for o in context.owners(r)) for r in context.recipients
        }
        users = list(dict.fromkeys(u for found in owners.values() for u in found))
        sender = (context.sender or "").lower()
        froms = list(dict.fromkeys(froms))
        trusted = trusted_senders(context, sender, froms)
        senders = list(dict.fromkeys(s for s in [sender, *froms[:MAX_FROM]] if s))
        prefs: dict[str, UserPrefs] = await self._in_thread(
            self.prefs.lookup, users, senders, trusted
        )
        score: SpamScore | None = None
        status = ""
        if message is None:
            status = f"Unknown, not scanned (larger than {self.max_size} bytes)"
        else:
            try:
                score = await self._scan(message, context, recipients, users)
            except ScannerError as e:
                if self.on_error == "tempfail":
                    raise
                log.warn(
                    "spam: {backend} failed ({error}): message from {peer} accepted unscanned",
                    backend=self.backend,
                    error=str(e),
                    peer=context.client_address,
                )
                status = f"Unknown, {self.backend} unavailable"
        return self._verdict(context, owners, prefs, score, status)

    def _in_thread(self, f: Callable[..., T], *args: object) -> Deferred[T]:
        """``f(*args)`` in the reactor's thread pool (file and database work)."""
        pool = cast(IReactorThreads, self._reactor).getThreadPool()
        return threads.deferToThreadPool(cast(IReactorFromThreads, self._reactor), pool, f, *args)

    def _scan(
        self, message: bytes, context: MailContext, recipients: list[str], users: list[str]
    ) -> Deferred[SpamScore]:
        self.scanner.timeout = max(0.1, self.timeout * 0.8)
        envelope = Envelope(
            context.client_address,
            context.helo,
            context.sender,
            tuple(recipients),
            users[0] if len(users) == 1 else None,
        )
        return self.scanner.scan(message, envelope)

    def _verdict(
        self,
        context: MailContext,
        owners: Mapping[str, tuple[str, ...]],
        prefs: Mapping[str, UserPrefs],
        score: SpamScore | None,
        status: str,
    ) -> Verdict:
        """``owners``: each recipient's users (an alias's), whose settings decide for it."""
        value = score.score if score is not None else None
        decisions: dict[str, Decision] = {}  # by user
        for user in dict.fromkeys(u for found in owners.values() for u in found):
            own = prefs.get(user, UserPrefs())
            limits = spampolicy.thresholds_for(user, own, self.domains, self.default)
            decisions[user] = spampolicy.decide(score, limits, own)
        recipients = list(owners)
        headers: list[tuple[str, str]] = []
        junk_at = self.default.junk
        if score is not None:
            spam = score.spam if junk_at is None else score.score >= junk_at
            required = score.required if junk_at is None else junk_at
            status = f"{'Yes' if spam else 'No'}, score={score.score:.1f} required={required:.1f}"
            if score.action:
                status += f" action={score.action.replace(' ', '_')}"
            headers.append(("X-Spam-Score", f"{score.score:.1f}"))
            if spam:
                headers.append(("X-Spam-Flag", "YES"))
        headers.insert(0, ("X-Spam-Status", status))
        outcomes = {r: spampolicy.combine([decisions[u] for u in owners[r]]) for r in owners}
        context.notes["spam"] = {
            "score": value,
            "threshold": junk_at if junk_at is not None or score is None else score.required,
            "action": _overall(outcomes),
            "recipients": outcomes,
            "symbols": score.symbols if score is not None else (),
        }
        if spampolicy.refused_by_all(list(decisions.values())):
            log.info(
                "spam: refused mail from <{sender}> ({peer}): {why}",
                sender=context.sender,
                peer=context.client_address,
                why=next(iter(decisions.values())).reason,
            )
            # RFC 3463 X.7.1: delivery not authorized, message refused.
            return refuse(550, "5.7.1", f"Message refused as spam (score {value:.1f})")
        junk = [r for r, outcome in outcomes.items() if outcome != "inbox"]
        if not junk:
            return Verdict(headers=tuple(headers))
        # Each user's own reason, under the user (the alias's users: the filter log's mailboxes).
        junk_users = list(dict.fromkeys(u for r in junk for u in owners[r]))
        reasons = tuple((u, decisions[u].reason) for u in junk_users)
        only = () if len(junk) == len(recipients) else tuple(junk)
        log.info(
            "spam: mail from <{sender}> to Junk: {why}",
            sender=context.sender,
            why="; ".join(f"{r}: {why}" for r, why in reasons),
        )
        # The shared reason (X-Ourmail-Junk when every copy is junk) names no one's lists.
        by_score = value is not None and all(
            prefs.get(u, UserPrefs()).listed is None for u in junk_users
        )
        shared = f"score {value:.1f}" if by_score else "per-recipient settings"
        return Verdict(
            "junk", headers=tuple(headers), reason=shared, recipients=only, reasons=reasons
        )


def _overall(outcomes: Mapping[str, str]) -> str:
    kinds = set(outcomes.values())
    if len(kinds) == 1:
        return kinds.pop()
    return "mixed" if kinds else "inbox"


def _score(options: Mapping[str, object], key: str) -> float | None:
    value = options.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{key!r} must be a number (a spam score)")
    return float(value)


def _thresholds(options: Mapping[str, object], where: str) -> Thresholds:
    refuse_unknown(options, ("junk_score", "reject_score"), where)
    limits = Thresholds(_score(options, "junk_score"), _score(options, "reject_score"))
    if limits.junk is not None and limits.reject is not None and limits.reject < limits.junk:
        raise ValueError(f"'reject_score' must not be below 'junk_score' in {where}")
    return limits


def _text(options: Mapping[str, object], key: str, default: str) -> str:
    value = options.get(key, default)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key!r} must be a non-empty string")
    return value


def scanner_and_learner(
    options: Mapping[str, object], reactor: object
) -> tuple[Scanner, ISpamLearner]:
    """The scanner client and its learner for ``[filters.check.spam]``'s ``backend``,
    ``address``, ``controller`` and ``password``/``password_file`` (ValueError for a bad
    one).  The learning from Junk moves builds its :class:`ISpamLearner` here too."""
    backend = _text(options, "backend", "spamd")
    if backend not in BACKENDS:
        raise ValueError(f"'backend' must be one of {BACKENDS}")
    address = _text(options, "address", DEFAULT_ADDRESS[backend])
    if backend == "spamd":
        rspamd_only = {"controller", "password", "password_file"} & set(options)
        if rspamd_only:
            raise ValueError(f"{sorted(rspamd_only)[0]!r} is an option of backend = 'rspamd'")
        client = SpamdClient(cast(IReactorTime, reactor), address)
        return client, SpamdLearner(client)
    from ourmail.filters.rspamd import RspamdClient, RspamdLearner, read_password

    password = read_password(options.get("password"), options.get("password_file"))
    rspamd = RspamdClient(
        reactor, address, _text(options, "controller", DEFAULT_CONTROLLER), password
    )
    return rspamd, RspamdLearner(rspamd)


@implementer(ICheckFactory)
class SpamFactory:
    """Builds the ``spam`` check from ``[filters.check.spam]`` (docs/filters.md)."""

    name = "spam"

    def build(self, options: Mapping[str, object], env: FilterEnvironment) -> ICheck:
        refuse_unknown(options, OPTIONS)
        scanner, _ = scanner_and_learner(options, env.reactor)
        max_size = options.get("max_size", DEFAULT_MAX_SIZE)
        if not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 1:
            raise ValueError("'max_size' must be a whole number of bytes, 1 or more")
        default = _thresholds(
            {k: v for k, v in options.items() if k in ("junk_score", "reject_score")},
            "[filters.check.spam]",
        )
        domains_option = options.get("domains", {})
        if not isinstance(domains_option, Mapping):
            raise ValueError("'domains' must be a table of domain = { junk_score, reject_score }")
        domains = {}
        for domain, table in domains_option.items():
            if not isinstance(table, Mapping):
                raise ValueError(f"'domains.{domain}' must be a table")
            domains[str(domain).lower()] = _thresholds(table, f"domains.{domain}")
        prefs = SpamPrefs(database_path(env.state_dir))
        backend = str(options.get("backend", "spamd"))
        return SpamCheck(scanner, prefs, env.reactor, backend, max_size, default, domains)


factory = SpamFactory()


def prefs_for(data_dir: Path) -> SpamPrefs:
    """The spam preferences of the server whose data directory is ``data_dir`` (the admin
    command's way in)."""
    return SpamPrefs(database_path(data_dir / "filters"))
