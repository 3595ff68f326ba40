"""A check of your own for ourmail's filter chain: mail whose Subject: names a word from a list
goes to the recipient's Junk folder, and says why in Authentication-Results.

Put this file where Python finds it (a package of yours, or PYTHONPATH) and name it in
``ourmail.toml``::

    [filters]
    chain = ["spf", "dkim", "dmarc", "subject_check:factory"]

    [filters.check."subject_check:factory"]
    words = ["lottery", "inheritance"]
    timeout = 5                 # common to every check
    on_error = "accept"         # what a failure or time-out means

``ourmail filters list`` shows it in the chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from email.parser import BytesHeaderParser

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from ourmail.interfaces import (
    AuthResult,
    FilterEnvironment,
    ICheck,
    ICheckFactory,
    MailContext,
    Stage,
    Verdict,
)

#: Read no further than this into the message: the header is at the top.
HEADER_LIMIT = 64 * 1024


@implementer(ICheck)
class SubjectCheck:
    name = "subject"
    stages = ("data",)  # connect, mail, rcpt or data
    timeout = 5.0
    on_error = "accept"
    trusted = False  # True: also mail that submission and LMTP trust

    def __init__(self, words: list[str]) -> None:
        self.words = [w.lower() for w in words]

    def check(self, stage: Stage, context: MailContext) -> Deferred[Verdict]:
        # The message as it will be stored; quick here (bytes in memory for most mail), but a
        # check that parses whole messages should use twisted.internet.threads.deferToThread.
        head = context.message()[:HEADER_LIMIT]
        subject = str(BytesHeaderParser().parsebytes(head).get("Subject", "")).lower()
        hit = next((w for w in self.words if w in subject), None)
        if hit is None:
            return succeed(Verdict(results=(AuthResult("x-subject", "pass"),)))
        return succeed(
            Verdict(
                "junk",
                reason=f"subject names {hit!r}",
                results=(AuthResult("x-subject", "fail", f"subject names {hit}"),),
            )
        )


@implementer(ICheckFactory)
class SubjectCheckFactory:
    name = "subject"

    def build(self, options: Mapping[str, object], env: FilterEnvironment) -> ICheck:
        unknown = set(options) - {"words"}
        if unknown:
            raise ValueError(f"unknown option {sorted(unknown)[0]!r}")
        words = options.get("words", [])
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError("'words' must be a list of strings")
        return SubjectCheck(words)


factory = SubjectCheckFactory()
