"""A stand-in for the ``spf`` check (built in another branch of issue 14) for the DMARC tests:
at MAIL it writes SPF's contract (``notes["spf"]`` and an ``spf=`` result) with the result the
test names for the sender's domain (``spfnotes:factory``, option ``results``)."""

from __future__ import annotations

from collections.abc import Mapping

import attrs
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


@implementer(ICheck)
@attrs.define
class SPFNotes:
    results: Mapping[str, str]
    name: str = "spf"
    stages: tuple[Stage, ...] = ("mail",)
    timeout: float = 5.0
    on_error: str = "accept"
    trusted: bool = False

    def check(self, stage: Stage, context: MailContext) -> Deferred[Verdict]:
        domain = (context.sender or "").rpartition("@")[2].lower() or (context.helo or "")
        result = self.results.get(domain, "none")
        context.notes["spf"] = {"result": result, "domain": domain}
        return succeed(
            Verdict(results=(AuthResult("spf", result, properties=(("smtp.mailfrom", domain),)),))
        )


@implementer(ICheckFactory)
class SPFNotesFactory:
    name = "spf"

    def build(self, options: Mapping[str, object], env: FilterEnvironment) -> ICheck:
        results = options.get("results", {})
        assert isinstance(results, Mapping)
        return SPFNotes(dict(results))


factory = SPFNotesFactory()
