"""Cheap probes of the filter chain's back-ends (clamd, spamd, rspamd) for
``ourmail_backend_up`` (docs/metrics.md).

Implementation notes (keep these true when changing this module):

* A probe is the back-end's own liveness command, on a new connection each time: clamd's
  ``zPING\\0`` (answered ``PONG\\0``, ``man clamd``), spamd's ``PING SPAMC/1.5`` (answered
  ``SPAMD/1.5 0 PONG``), rspamd's ``GET /ping`` on its normal worker (``pong``).  Nothing is
  scanned and nothing is learned.
* The probes run in the main process every :data:`PROBE_INTERVAL` seconds, whatever the
  traffic (MX worker processes scan too, but their gauges would not reach ``/metrics``), so a
  back-end that goes down at night shows before the morning's mail is deferred.
* Each probe is bounded by :data:`PROBE_TIMEOUT` seconds; an answer that is late, wrong or
  missing counts as down.  A probe never raises: it reports.
* Only the back-ends of checks configured in ``[filters] chain`` are probed; the label is the
  back-end's kind (``clamd``, ``spamd``, ``rspamd``), a fixed list.  ``service.py`` adds the
  LDAP directory's probe (``backend="ldap"``, :func:`ourmail.directory.ldap.answers`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import cast

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ourmail.filters.antivirus import AntivirusCheck
from ourmail.filters.rspamd import RspamdClient
from ourmail.filters.spam import SpamCheck
from ourmail.filters.spamc import SpamdClient

log = Logger()

#: Seconds between two rounds of probes.
PROBE_INTERVAL = 30.0
#: Seconds a back-end has to answer a probe.
PROBE_TIMEOUT = 5.0


@attrs.frozen
class Probe:
    """A back-end to probe: its kind (the ``backend`` label) and how to ask it."""

    backend: str
    ask: Callable[[], Deferred[bool]]


def _spamd_probe(client: SpamdClient) -> Probe:
    return Probe("spamd", lambda: client.ping().addCallback(lambda _: True))


def probes_for(checks: Iterable[object], reactor: object) -> list[Probe]:
    """The probes of the back-ends that the configured ``checks`` use (one per kind)."""
    found: dict[str, Probe] = {}
    for check in checks:
        if isinstance(check, AntivirusCheck):
            found.setdefault("clamd", Probe("clamd", check.client.ping))
        elif isinstance(check, SpamCheck):
            scanner = check.scanner
            if isinstance(scanner, SpamdClient):
                found.setdefault("spamd", _spamd_probe(scanner))
            elif isinstance(scanner, RspamdClient):
                found.setdefault("rspamd", Probe("rspamd", scanner.ping))
    return list(found.values())


async def probe(one: Probe, clock: IReactorTime, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether ``one``'s back-end answers within ``timeout`` seconds (never raises)."""
    try:
        asked = one.ask()
        asked.addTimeout(timeout, clock)
        return bool(await asked)
    except Exception as e:
        why = "no answer in time" if isinstance(e, defer.TimeoutError) else str(e)
        log.debug("probe of {backend} failed: {why}", backend=one.backend, why=why)
        return False


async def probe_all(
    probes: Iterable[Probe], clock: object, record: Callable[[str, bool], None]
) -> None:
    """Probe each back-end at once and ``record(backend, up)`` each result."""
    probes = list(probes)
    results = await defer.gatherResults(
        [Deferred.fromCoroutine(probe(p, cast(IReactorTime, clock))) for p in probes]
    )
    for p, up in zip(probes, results, strict=True):
        record(p.backend, up)
