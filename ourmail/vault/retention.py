"""Retention rules and legal holds (docs/vault.md#retention-and-legal-hold).

The chain is the truth: rules and holds are ``rule``, ``hold`` and ``release`` records
(docs/vault-format.md), and :func:`load` derives the current ones from them in one pass
over the records' metadata (:mod:`ourmail.vault.scan`).  Nothing is cached on disk: at two
small reads per record the pass costs about what reading the metadata of a SQLite cache would,
and there is no second copy to keep in step (docs/performance.md has the figure).

How long a message is kept:

* A **rule** has a scope, ``default``, ``domain:<name>`` or ``user:<address>``, and keeps
  mail ``keep_days`` days or forever (null).  The latest rule of a scope replaces the earlier
  ones.  With no default rule set, the default is forever.
* Each **party** of a message, each of its addresses (:meth:`VaultEnvelope.addresses`) in a
  domain this server serves, asks for its most specific rule: its user rule, else its
  domain's rule, else the default.  Addresses elsewhere ask for nothing.
* The **longest** of the parties' rules wins: a message is kept as long as any party's rule
  asks.  A message with no local party at all gets the default rule.

A **hold** (user, domain, or a search query) keeps every message it covers, whatever the rules
say, until it is released.  A user or domain hold covers any message one of whose addresses is
that user or in that domain (a domain elsewhere too: a hold on a counterparty's mail).  A query
hold is matched by :func:`query_matches`.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from ourmail.interfaces import IVaultIndex, VaultEnvelope, VaultQuery
from ourmail.mime.summary import decode_header
from ourmail.vault.scan import entries
from ourmail.vault.segments import Position, SegmentLog

DAY = 86400.0
#: What ``--keep-years`` means in days: at least that many years, leap days included.
DAYS_PER_YEAR = 365.25
#: Longest hold name and reason kept.
MAX_NAME = 100
MAX_REASON = 1000
#: The kinds :func:`load` reads only the seq of (their metadata is not parsed).
BRIEF = frozenset({"capture", "blob"})


class RetentionRefused(ValueError):
    """A rule, hold or release that cannot be set: the message says why."""


@attrs.frozen
class Rule:
    """A retention rule as its latest ``rule`` record set it."""

    scope: str
    #: None: forever.
    keep_days: int | None
    by: str
    seq: int
    time: float

    def describe(self) -> str:
        kept = "forever" if self.keep_days is None else f"{self.keep_days} days"
        return f"{self.scope}={kept}"


#: The default when no default rule was ever set: keep forever.
FOREVER = Rule("default", None, "", 0, 0.0)


@attrs.frozen
class Hold:
    """An active legal hold."""

    name: str
    reason: str
    by: str
    #: One of ``{"user": address}``, ``{"domain": name}``, ``{"query": {field: value}}``.
    scope: Mapping[str, Any]
    seq: int
    time: float

    def describe(self) -> str:
        (kind, value), *_ = self.scope.items()
        shown = json.dumps(value, sort_keys=True) if kind == "query" else value
        return f"{kind} {shown}"

    @property
    def query(self) -> VaultQuery | None:
        value = self.scope.get("query")
        return None if value is None else query_from_json(value)


@attrs.frozen
class Facts:
    """The headers a query hold is matched on, from a capture's header section."""

    from_: tuple[str, ...] = ()
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    subject: str = ""
    message_id: str = ""
    date: float | None = None


@attrs.define
class State:
    """The current rules and holds, and the records already expired (see :func:`load`)."""

    local_domains: tuple[str, ...]
    rules: dict[str, Rule] = attrs.Factory(dict)
    holds: dict[str, Hold] = attrs.Factory(dict)
    #: Seqs an ``expire`` record names (their content removed, or about to be).
    expired: set[int] = attrs.Factory(set)
    last_seq: int = 0
    #: Where the record ``last_seq`` is (set by :func:`load`; None: not known).
    last_position: Position | None = None
    #: Per query hold on body words or attachment names: the seqs the search index finds,
    #: and the last seq it had indexed then (:func:`search_holds`).
    found: dict[str, tuple[frozenset[int], int]] = attrs.Factory(dict)

    def add(self, fields: Mapping[str, Any]) -> None:
        """Take one record's metadata into account (records in seq order)."""
        kind, seq = fields["kind"], int(fields["seq"])
        self.last_seq = seq
        if kind in BRIEF:
            return
        time = float(fields["time"])
        if kind == "rule":
            keep = fields.get("keep_days")
            scope = str(fields["scope"])
            self.rules[scope] = Rule(scope, keep, str(fields.get("by", "")), seq, time)
        elif kind == "hold":
            name = str(fields["name"])
            scope = fields["scope"]
            by, reason = str(fields.get("by", "")), str(fields.get("reason", ""))
            self.holds[name] = Hold(name, reason, by, scope, seq, time)
        elif kind == "release":
            self.holds.pop(str(fields["name"]), None)
        elif kind == "expire":
            self.expired.update(int(s) for s in fields.get("records", ()))

    def rule_for(self, envelope: VaultEnvelope) -> Rule:
        """The rule that decides how long a message with ``envelope`` is kept (module text)."""
        default = self.rules.get("default", FOREVER)
        asked = [self._party_rule(a, default) for a in envelope.addresses() if self._local(a)]
        if not asked:
            return default
        forever = [r for r in asked if r.keep_days is None]
        if forever:
            return forever[0]
        return max(asked, key=lambda r: r.keep_days or 0)

    def keep_until(self, envelope: VaultEnvelope, captured: float) -> float:
        """When a message captured at ``captured`` may go (``inf``: never)."""
        days = self.rule_for(envelope).keep_days
        return math.inf if days is None else captured + days * DAY

    def holding(
        self, envelope: VaultEnvelope, captured: float, facts: Callable[[], Facts], seq: int = 0
    ) -> Hold | None:
        """The first active hold that covers message ``seq`` (``facts`` asked only for a
        query hold; a query on body words or attachment names is answered by :attr:`found`,
        see :func:`search_holds`)."""
        addresses = envelope.addresses()
        domains = {a.rpartition("@")[2] for a in addresses}
        for hold in self.holds.values():
            if "user" in hold.scope and hold.scope["user"] in addresses:
                return hold
            if "domain" in hold.scope and hold.scope["domain"] in domains:
                return hold
            query = hold.query
            if query is None:
                continue
            if query.words or query.attachment:
                # The search index decides (words of the body, attachment names); without
                # its answer, or for a message it has not indexed yet, the hold keeps it.
                found = self.found.get(hold.name)
                if found is None or seq > found[1] or seq in found[0]:
                    return hold
            elif query_matches(query, envelope, captured, facts()):
                return hold
        return None

    def holds_address(self, address: str) -> bool:
        """True if a user or domain hold covers ``address``, or any query hold exists that
        names no addresses (it may cover any message)."""
        address = address.lower()
        domain = address.rpartition("@")[2]
        for hold in self.holds.values():
            if hold.scope.get("user") == address or hold.scope.get("domain") == domain:
                return True
            query = hold.query
            if query is not None and _query_may_cover(query, address):
                return True
        return False

    def _party_rule(self, address: str, default: Rule) -> Rule:
        domain = address.rpartition("@")[2]
        return self.rules.get(f"user:{address}") or self.rules.get(f"domain:{domain}") or default

    def _local(self, address: str) -> bool:
        if not self.local_domains:
            return True
        return address.rpartition("@")[2] in self.local_domains


def load(log: SegmentLog, local_domains: Iterable[str]) -> State:
    """The current rules and holds, from one pass over the records' metadata.  Blocks on the
    disk: call it in a thread."""
    state = State(tuple(d.lower() for d in local_domains))
    for entry in entries(log, brief=BRIEF):
        state.add(entry.fields)
        state.last_position = entry.position
    return state


def envelope_of(fields: Mapping[str, Any]) -> VaultEnvelope:
    """The envelope of a ``capture`` record's metadata."""
    raw = fields.get("envelope") or {}
    return VaultEnvelope(
        via=str(raw.get("via", "")),
        sender=str(raw.get("sender", "")),
        recipients=tuple(str(a) for a in raw.get("recipients", ())),
        mailboxes=tuple(str(a) for a in raw.get("mailboxes", ())),
        client=str(raw.get("client", "")),
        user=str(raw.get("user", "")),
        id=str(raw.get("id", "")),
        arrival=float(raw.get("arrival", 0.0)),
    )


# -- query holds ----------------------------------------------------------------------------


def query_from_json(value: Mapping[str, Any] | str) -> VaultQuery:
    """A VaultQuery from a hold's scope (an object, or its JSON text); RetentionRefused when
    it is not one."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise RetentionRefused(f"the query is not JSON: {e}") from None
    if not isinstance(value, Mapping):
        raise RetentionRefused("the query must be a JSON object")
    known = {f.name for f in attrs.fields(VaultQuery)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise RetentionRefused(f"unknown query fields: {', '.join(unknown)}")
    args: dict[str, Any] = {}
    for name, raw in value.items():
        if name in ("start", "end"):
            if raw is not None and not isinstance(raw, int | float):
                raise RetentionRefused(f"query field {name} must be seconds since the epoch")
            args[name] = None if raw is None else float(raw)
        else:
            if not isinstance(raw, str):
                raise RetentionRefused(f"query field {name} must be text")
            args[name] = raw.strip().lower()
    return VaultQuery(**args)


def query_to_json(query: VaultQuery) -> dict[str, Any]:
    """The fields of ``query`` that are set, for a hold record."""
    empty = VaultQuery()
    return {
        f.name: getattr(query, f.name)
        for f in attrs.fields(VaultQuery)
        if getattr(query, f.name) != getattr(empty, f.name)
    }


def facts_of(header: bytes) -> Facts:
    """The matched headers of a header section (bounded: the capture's header section)."""
    msg = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(header)

    def addresses(name: str) -> tuple[str, ...]:
        values = [str(v) for v in msg.get_all(name, [])]
        return tuple(a.lower() for _, a in email.utils.getaddresses(values) if a)

    date = None
    raw_date = msg.get("Date")
    if raw_date:
        try:
            date = email.utils.parsedate_to_datetime(str(raw_date)).timestamp()
        except (TypeError, ValueError, IndexError):
            date = None
    message_id = str(msg.get("Message-ID", "")).strip().strip("<>").lower()
    return Facts(
        from_=addresses("From"),
        to=addresses("To"),
        cc=addresses("Cc"),
        subject=decode_header(str(msg.get("Subject", ""))),
        message_id=message_id,
        date=date,
    )


#: Hits read from the search index at a time for a query hold.
HOLD_PAGE = 5000


def search_holds(state: State, index: IVaultIndex) -> None:
    """Ask the search index which messages each query hold on body words or attachment names
    covers (into ``state.found``); the index should be caught up first.  Blocking."""
    for hold in state.holds.values():
        query = hold.query
        if query is None or not (query.words or query.attachment):
            continue
        indexed = index.last_seq()
        seqs: set[int] = set()
        while True:
            _, hits = index.search(query, len(seqs), HOLD_PAGE)
            seqs.update(hit.seq for hit in hits)
            if len(hits) < HOLD_PAGE:
                break
        state.found[hold.name] = (frozenset(seqs), indexed)


def query_matches(
    query: VaultQuery, envelope: VaultEnvelope, captured: float, facts: Facts
) -> bool:
    """True if a captured message matches every criterion of ``query``.

    This is the one place a query hold meets a message; it reads the envelope and the header
    section.  Words of the body and attachment names are the search index's to match
    (:func:`search_holds`); they are not looked at here."""
    senders = (envelope.sender.lower(), *facts.from_)
    recipients = (*envelope.recipients, *envelope.mailboxes, *facts.to, *facts.cc)
    everyone = (*senders, *recipients, envelope.user)
    checks = (
        not query.sender or _address_in(query.sender, senders),
        not query.recipient or _address_in(query.recipient, recipients),
        not query.address or _address_in(query.address, everyone),
        query.start is None or captured >= query.start,
        query.end is None or captured < query.end,
        not query.subject or _words_in(query.subject, facts.subject),
        not query.message_id or query.message_id.strip("<>").lower() == facts.message_id,
    )
    return all(checks)


def _address_in(wanted: str, addresses: Iterable[str]) -> bool:
    """``wanted`` is an address, or a domain (``@example.org`` or ``example.org``)."""
    wanted = wanted.lower()
    if "@" in wanted.lstrip("@"):
        return any(a.lower() == wanted for a in addresses)
    domain = wanted.lstrip("@")
    return any(a.lower().rpartition("@")[2] == domain for a in addresses)


def _words_in(words: str, text: str) -> bool:
    have = text.lower()
    return all(word in have for word in words.lower().split())


def _query_may_cover(query: VaultQuery, address: str) -> bool:
    named = [v for v in (query.sender, query.recipient, query.address) if v]
    return not named or any(_address_in(v, (address,)) for v in named)


# -- the records that set rules and holds ---------------------------------------------------


def check_scope(scope: str) -> str:
    """A rule's scope, normalised: ``default``, ``domain:<name>`` or ``user:<address>``."""
    if scope == "default":
        return scope
    kind, _, value = scope.partition(":")
    if kind == "domain":
        return f"domain:{check_domain(value)}"
    if kind == "user":
        return f"user:{check_address(value)}"
    raise RetentionRefused(f"a rule's scope is default, domain:<name> or user:<address>: {scope!r}")


def check_domain(value: str) -> str:
    name = value.strip().lower().rstrip(".")
    labels = name.split(".")
    if (
        not name
        or len(name) > 253
        or any(not label or len(label) > 63 for label in labels)
        or any(not (c.isalnum() or c in "-_") for c in name.replace(".", ""))
    ):
        raise RetentionRefused(f"not a domain name: {value!r}")
    return name


def check_address(value: str) -> str:
    local, at, domain = value.strip().rpartition("@")
    if not at or not local or any(c.isspace() or c in '<>"' or ord(c) < 32 for c in local):
        raise RetentionRefused(f"not an address (local@domain): {value!r}")
    return f"{local.lower()}@{check_domain(domain)}"


def rule_item(scope: str, keep_days: int | None, by: str) -> tuple[str, dict[str, Any], None]:
    """The ``rule`` record that sets a rule (scope checked, keep_days positive or None)."""
    if keep_days is not None and (not isinstance(keep_days, int) or keep_days <= 0):
        raise RetentionRefused("a rule keeps mail a positive number of days, or forever")
    return ("rule", {"scope": check_scope(scope), "keep_days": keep_days, "by": by}, None)


def hold_item(
    state: State, name: str, scope: Mapping[str, Any], reason: str, by: str
) -> tuple[str, dict[str, Any], None]:
    """The ``hold`` record that sets a hold; RetentionRefused for a name in use, an empty
    reason, a bad scope, or a query the vault cannot match yet."""
    name = _check_text(name, "name", MAX_NAME)
    reason = _check_text(reason, "reason", MAX_REASON)
    if name in state.holds:
        raise RetentionRefused(f"a hold named {name!r} is active already")
    if len(scope) != 1:
        raise RetentionRefused("a hold is on one user, one domain or one query")
    (kind, value), *_ = scope.items()
    if kind == "user":
        checked: Any = check_address(str(value))
    elif kind == "domain":
        checked = check_domain(str(value))
    elif kind == "query":
        query = query_from_json(value)
        if query.empty():
            raise RetentionRefused("a query hold needs at least one criterion")
        checked = query_to_json(query)
    else:
        raise RetentionRefused(f"a hold is on a user, a domain or a query, not {kind!r}")
    return ("hold", {"name": name, "reason": reason, "by": by, "scope": {kind: checked}}, None)


def release_item(state: State, name: str, reason: str, by: str) -> tuple[str, dict[str, Any], None]:
    """The ``release`` record that lifts an active hold."""
    reason = _check_text(reason, "reason", MAX_REASON)
    if name not in state.holds:
        raise RetentionRefused(f"no active hold is named {name!r}")
    return ("release", {"name": name, "reason": reason, "by": by}, None)


def _check_text(value: str, what: str, longest: int) -> str:
    text = " ".join(value.split())
    if not text:
        raise RetentionRefused(f"the {what} must not be empty")
    if len(text) > longest:
        raise RetentionRefused(f"the {what} is longer than {longest} characters")
    return text


def days_for_years(years: int) -> int:
    """Days that keep mail at least ``years`` years."""
    return math.ceil(years * DAYS_PER_YEAR)
