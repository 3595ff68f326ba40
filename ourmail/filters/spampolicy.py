"""What a spam score means for each recipient: inbox, Junk or refusal (no I/O here).

Order of the rules, for one recipient (docs/filters.md#spam-spamd-rspamd):

1. A sender on the recipient's block list: Junk, whatever the score (not a refusal: the
   message may have other recipients, and the sender learns nothing of the list).
2. A sender on the allow list, or one of the recipient's contacts: the inbox, whatever the
   score (never Junk or refused by score alone).
3. A score at or above the recipient's refusal threshold (user, else domain, else the
   check's ``reject_score``; none by default): refused, but only when every recipient of
   the message would refuse it (SMTP refuses a message once, for all, RFC 5321 §4.2.5).
4. A score at or above the Junk threshold (user, else domain, else ``junk_score``): Junk;
   with no threshold set, the scanner's own verdict (spamd: its required score; rspamd: an
   action of ``add header``, ``rewrite subject`` or ``reject``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import attrs

from ourmail.filters.spamprefs import UserPrefs
from ourmail.filters.spamscan import SpamScore

Outcome = Literal["inbox", "junk", "reject"]


@attrs.frozen
class Thresholds:
    """Scores for Junk and refusal; None: not set at this level."""

    junk: float | None = None
    reject: float | None = None

    def over(self, other: Thresholds) -> Thresholds:
        """These thresholds, with ``other``'s where these are not set."""
        return Thresholds(
            self.junk if self.junk is not None else other.junk,
            self.reject if self.reject is not None else other.reject,
        )


@attrs.frozen
class Decision:
    """One recipient's outcome and why."""

    outcome: Outcome
    reason: str


def thresholds_for(
    recipient: str,
    prefs: UserPrefs,
    domains: Mapping[str, Thresholds],
    default: Thresholds,
) -> Thresholds:
    """The thresholds that hold for ``recipient``: its own, its domain's, the check's."""
    domain = recipient.rpartition("@")[2].lower()
    own = Thresholds(prefs.junk, prefs.reject)
    return own.over(domains.get(domain, Thresholds())).over(default)


def decide(score: SpamScore | None, limits: Thresholds, prefs: UserPrefs) -> Decision:
    """One recipient's outcome for ``score`` (None: not scanned)."""
    if prefs.listed == "block":
        return Decision("junk", "sender on the recipient's block list")
    if prefs.listed == "allow":
        return Decision("inbox", "sender on the recipient's allow list")
    if prefs.contact:
        return Decision("inbox", "sender is one of the recipient's contacts")
    if score is None:
        return Decision("inbox", "not scanned")
    value = score.score
    if limits.reject is not None and value >= limits.reject:
        return Decision("reject", f"score {value:g} >= {limits.reject:g}")
    if limits.junk is None:
        if score.spam:
            return Decision("junk", f"score {value:g}: the scanner says spam")
        return Decision("inbox", f"score {value:g}: the scanner says not spam")
    if value >= limits.junk:
        return Decision("junk", f"score {value:g} >= {limits.junk:g}")
    return Decision("inbox", f"score {value:g} < {limits.junk:g}")


def combine(decisions: Sequence[Decision]) -> Outcome:
    """One recipient's outcome from its users' (an alias's): refused when every user refuses,
    Junk when every user's copy would go to Junk or be refused, else the inbox (a user who
    wants the message must get it; the copy is one for all of them)."""
    if refused_by_all(decisions):
        return "reject"
    if decisions and all(d.outcome != "inbox" for d in decisions):
        return "junk"
    return "inbox"


def refused_by_all(decisions: Sequence[Decision]) -> bool:
    """A message is refused only when every recipient's outcome is a refusal."""
    return bool(decisions) and all(d.outcome == "reject" for d in decisions)
