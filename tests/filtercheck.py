"""A check whose verdicts the tests script through its options (``filtercheck:factory``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from twisted.internet import task
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from ourmail.interfaces import (
    STAGES,
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
class ScriptedCheck:
    """Answers ``action`` at stage ``at`` (accept elsewhere), after ``delay`` seconds."""

    name: str
    stages: tuple[Stage, ...]
    at: str
    action: str
    reason: str
    result: str
    header: str
    delay: float
    fail: bool
    clock: Any
    timeout: float = 5.0
    on_error: str = "accept"
    trusted: bool = False
    seen: list[tuple[str, MailContext]] = attrs.Factory(list)

    def check(self, stage: Stage, context: MailContext) -> Deferred[Verdict]:
        self.seen.append((stage, context))
        if stage != self.at:
            return succeed(Verdict())
        if self.fail:
            raise RuntimeError("scripted failure")
        results = ()
        if self.result:
            method, _, result = self.result.partition("=")
            results = (AuthResult(method, result, properties=(("smtp.mailfrom", "x.test"),)),)
        headers = (tuple(self.header.split(": ", 1)),) if self.header else ()
        codes = {"reject": (550, "5.7.1"), "tempfail": (451, "4.7.1")}
        code, status = codes.get(self.action, (0, ""))
        verdict = Verdict(
            self.action,  # type: ignore[arg-type]
            code,
            status,
            self.reason if code else "",
            headers,  # type: ignore[arg-type]
            results,
            self.reason,
        )
        if self.delay:
            return task.deferLater(self.clock, self.delay, lambda: verdict)
        return succeed(verdict)


@implementer(ICheckFactory)
class ScriptedFactory:
    name = "scripted"

    def build(self, options: Mapping[str, object], env: FilterEnvironment) -> ICheck:
        known = {"at", "action", "reason", "result", "header", "delay", "fail", "stages"}
        unknown = set(options) - known
        if unknown:
            raise ValueError(f"unknown option {sorted(unknown)[0]!r}")
        stages = tuple(options.get("stages", STAGES))  # type: ignore[call-overload]
        return ScriptedCheck(
            name=str(options.get("name", "scripted")),
            stages=stages,
            at=str(options.get("at", "data")),
            action=str(options.get("action", "accept")),
            reason=str(options.get("reason", "scripted")),
            result=str(options.get("result", "")),
            header=str(options.get("header", "")),
            delay=float(options.get("delay", 0)),  # type: ignore[arg-type]
            fail=bool(options.get("fail", False)),
            clock=env.reactor,
        )


factory = ScriptedFactory()
