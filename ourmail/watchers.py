"""The timers behind the figures that cannot be read at scrape time: the volumes' free space
and the filter back-ends' health (docs/metrics.md).

Implementation notes (keep these true when changing this module):

* ``statvfs`` can hang on a network filesystem, so :class:`VolumeWatch` runs it in the
  reactor's thread pool; a probe of a back-end waits for a peer, so :class:`BackendWatch`
  runs it asynchronously.  Neither blocks the reactor, and ``/metrics`` only reads their last
  result (:class:`~ourmail.net.metrics.Metrics`).
* A back-end that stops answering is logged once (``back-end clamd does not answer its
  probe``), and once more when it answers again: not every round.
* The volumes are found again each round (``shards.toml`` is re-read in the thread), so a
  root that ``ourmail shard move`` added is watched, and the ``shards`` labels follow the
  move, without a restart; a ``shards.toml`` that does not parse keeps the last volumes.
* Both run once at start-up, then every interval; a round that is still running when the
  next is due delays it (``TimerService`` waits for the Deferred), so a hung volume never
  piles up threads.  Stopping cancels a round of probes under way (at most
  :data:`~ourmail.filters.probes.PROBE_TIMEOUT` seconds otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

from twisted.application.internet import TimerService
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from ourmail.config import ConfigError
from ourmail.filters.probes import PROBE_INTERVAL, Probe, probe_all
from ourmail.net.metrics import Metrics
from ourmail.store.volumes import MEASURE_INTERVAL, Usage, Volume, measure_all

log = Logger()


class VolumeWatch(TimerService):
    """Measures the volumes that ``find()`` names (``volumes`` of the data folder, blocking:
    called in the thread) every ``interval`` seconds, in a thread, into ``metrics``."""

    def __init__(
        self,
        find: Callable[[], Sequence[Volume]],
        metrics: Metrics,
        reactor: object,
        interval: float = MEASURE_INTERVAL,
    ) -> None:
        super().__init__(interval, self.measure)  # type: ignore[no-untyped-call]
        self.clock = cast(IReactorTime, reactor)
        self.find = find
        #: The volumes last found (kept when ``shards.toml`` is being edited badly).
        self.volumes: tuple[Volume, ...] = ()
        self.metrics = metrics
        self._reactor = reactor

    def measure(self) -> Deferred[None]:
        """One measure of every volume (fires once the figures are kept)."""
        pool = cast(IReactorThreads, self._reactor).getThreadPool()
        d: Deferred[list[Usage]] = deferToThreadPool(
            cast(IReactorFromThreads, self._reactor), pool, self._measure
        )
        return d.addCallback(self._keep)

    def _measure(self) -> list[Usage]:
        """In the thread (one round at a time): find the volumes again, measure them."""
        try:
            self.volumes = tuple(self.find())
        except (ConfigError, OSError) as e:  # an error here would stop the timer for good
            log.warn("volumes not found again, the last ones are measured: {e}", e=str(e))
        return measure_all(self.volumes)

    def _keep(self, usages: list[Usage]) -> None:
        self.metrics.measured_volumes(
            (str(u.volume.root), u.volume.shards, u.free, u.size) for u in usages
        )


class BackendWatch(TimerService):
    """Probes the filter back-ends every ``interval`` seconds into ``metrics``."""

    def __init__(
        self,
        probes: Sequence[Probe],
        metrics: Metrics,
        reactor: object,
        interval: float = PROBE_INTERVAL,
    ) -> None:
        super().__init__(interval, self.probe)  # type: ignore[no-untyped-call]
        self.clock = cast(IReactorTime, reactor)
        self.probes = tuple(probes)
        self.metrics = metrics

        self._round: Deferred[None] | None = None
        #: The last answer of each back-end, to log when it changes.
        self._up: dict[str, bool] = {}

    def probe(self) -> Deferred[None]:
        """One round of probes (fires once each has answered or timed out)."""
        self._round = Deferred.fromCoroutine(probe_all(self.probes, self.clock, self._record))
        return self._round.addErrback(_cancelled)

    def _record(self, backend: str, up: bool) -> None:
        before = self._up.get(backend)
        self._up[backend] = up
        self.metrics.backend(backend, up)
        if not up and before is not False:
            log.warn("back-end {backend} does not answer its probe", backend=backend)
        elif up and before is False:
            log.info("back-end {backend} answers again", backend=backend)

    def stopService(self) -> Deferred[None]:
        """Stop probing; a round under way is cancelled, not waited for."""
        stopped: Deferred[None] = super().stopService()  # type: ignore[no-untyped-call]
        if self._round is not None:
            self._round.cancel()
        return stopped


def _cancelled(failure: Failure) -> None:
    """A round cancelled by :meth:`BackendWatch.stopService` is no error."""
    failure.trap(CancelledError)  # type: ignore[no-untyped-call]
