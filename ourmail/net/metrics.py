"""The counters, gauges and histograms of one server process (docs/metrics.md).

Implementation notes (keep these true when changing this module):

* One :class:`Metrics` per server, with its own ``prometheus_client`` registry: never the
  library's process-wide default registry, as tests run several servers in one process.
* It lives below the protocols (``net/``), so SMTP, LMTP, IMAP, POP3, the queue, delivery,
  the filter chain and the web count into the same object without importing one another;
  ``service.py`` makes one and hands it to each part.  A part that is not handed one (a unit
  test building a protocol by hand) counts into a private instance nobody reads.
* Every label value comes from a short fixed list (services, reasons, destinations) or from
  the configuration (the names of filter checks): never a user name, an address or a client
  IP, so the number of series stays bounded whatever the traffic.
* MX worker processes (``[smtp] mx_processes``) count into their own :class:`Metrics` and
  write its counters and histograms (:meth:`Metrics.snapshot`) to a file every
  :data:`SNAPSHOT_INTERVAL` seconds; the main process adds those files' samples to its own
  when scraped (:meth:`Metrics.watch_workers`).  Connections are not in the snapshots: the
  main process admits every worker's sessions, so its tables already count them.
* A restarted worker counts from 0 again.  So that the sums never go down (Prometheus would
  take the drop for a reset and count the whole sum again in ``increase()``), each snapshot
  names the run of the worker that wrote it, and the main process carries the last figures of
  a run that ended over into a base it always adds (:class:`_WorkerFigures`).
* Hooks are one call each.  What can be read when Prometheus asks (open connections, the
  queue, the certificate) is read at scrape time by :class:`_Sampled`, so nothing has to be
  kept up to date on the hot paths.  What would block (``statvfs`` of the volumes) or wait
  for a peer (the filter back-ends' probes) is done by a timer in ``service.py``, in a thread
  or asynchronously, and only its last result is read at scrape time.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.process_collector import ProcessCollector
from twisted.logger import Logger

from ourmail import __version__

log = Logger()

#: Why a message, a recipient or a sender was refused (the ``reason`` label).
REASONS = ("relay", "recipient", "quota", "size", "filter", "rate", "auth", "other")
#: Where a message was delivered: a mailbox here, or another server (``destination``).
DESTINATIONS = ("local", "remote")
#: Store delivery latency buckets (seconds): a group commit takes milliseconds, a slow disk
#: or a long queue of commits seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Seconds between a worker's snapshots (how late its counts may be in ``/metrics``).
SNAPSHOT_INTERVAL = 5.0
#: How a snapshot's first line begins; the rest names the run of the worker that wrote it.
SNAPSHOT_MARK = "# ourmail-snapshot "
#: What a worker's snapshot leaves out: what the main process counts for every process.
NOT_IN_SNAPSHOTS = ("ourmail_process_", "ourmail_connections", "ourmail_mx_worker_")
#: The text exposition format 0.0.4, which every Prometheus reads (newer prometheus_client
#: versions announce 1.0.0, which differs only for names outside [a-zA-Z0-9_:]; ours are not).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ConnectionSource(Protocol):
    """What a listener's connection table tells (``ourmail.net.admission.ConnectionCounts``)."""

    @property
    def total(self) -> int:
        """Sessions open now."""

    @property
    def admitted(self) -> int:
        """Sessions admitted since the listener started."""

    @property
    def refused(self) -> int:
        """Connections turned away by a connection limit since the listener started."""


class _Sampled:
    """A collector whose figures are read when Prometheus asks: connections per listener,
    the queue, the certificate.  Each source is a cheap callable (no disk, no network)."""

    def __init__(self) -> None:
        self.connections: dict[str, ConnectionSource] = {}
        #: () -> (messages queued, creation time of the oldest or None), in the queue's clock.
        self.queue: Callable[[], tuple[int, float | None]] | None = None
        #: The queue's clock (seconds), for the oldest message's age.
        self.queue_clock: Callable[[], float] = time.time
        #: () -> the TLS certificate's notAfter (POSIX seconds), or None when unknown.
        self.certificate: Callable[[], float | None] | None = None
        self.wall: Callable[[], float] = time.time
        #: The last measure of each volume: (root, shards, free bytes, total bytes).
        self.volumes: list[tuple[str, str, int, int]] = []
        #: The last probe of each filter back-end: kind -> answered.
        self.backends: dict[str, bool] = {}

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        yield from self._connections()
        if self.queue is not None:
            size, oldest = self.queue()
            yield GaugeMetricFamily(
                "ourmail_queue_messages", "Messages waiting in the outbound queue.", value=size
            )
            age = 0.0 if oldest is None else max(0.0, self.queue_clock() - oldest)
            yield GaugeMetricFamily(
                "ourmail_queue_oldest_age_seconds",
                "Age of the oldest message in the outbound queue (0 when it is empty).",
                value=age,
            )
        if self.certificate is not None:
            not_after = self.certificate()
            if not_after is not None:
                yield GaugeMetricFamily(
                    "ourmail_tls_certificate_expiry_seconds",
                    "Seconds until the listeners' TLS certificate expires (notAfter); "
                    "negative once it has.",
                    value=not_after - self.wall(),
                )
        yield from self._volumes()
        if self.backends:
            up = GaugeMetricFamily(
                "ourmail_backend_up",
                "Whether the filter back-end answered its last probe (1) or not (0).",
                labels=["backend"],
            )
            for backend, ok in sorted(self.backends.items()):
                up.add_metric([backend], 1.0 if ok else 0.0)
            yield up

    def _volumes(self) -> Iterator[Metric]:
        if not self.volumes:
            return
        labels = ["root", "shards"]
        free = GaugeMetricFamily(
            "ourmail_volume_free_bytes",
            "Bytes the server may still write on the volume of a shard root (statvfs f_bavail).",
            labels=labels,
        )
        size = GaugeMetricFamily(
            "ourmail_volume_size_bytes",
            "Size of the volume of a shard root in bytes (statvfs f_blocks).",
            labels=labels,
        )
        for root, shards, free_bytes, size_bytes in self.volumes:
            free.add_metric([root, shards], free_bytes)
            size.add_metric([root, shards], size_bytes)
        yield from (free, size)

    def _connections(self) -> Iterator[Metric]:
        open_now = GaugeMetricFamily(
            "ourmail_connections_open", "Connections open now, by listener.", labels=["service"]
        )
        total = CounterMetricFamily(
            "ourmail_connections",
            "Connections admitted since start, by listener.",
            labels=["service"],
        )
        refused = CounterMetricFamily(
            "ourmail_connections_refused",
            "Connections turned away by a connection limit since start, by listener.",
            labels=["service"],
        )
        for service, counts in sorted(self.connections.items()):
            open_now.add_metric([service], counts.total)
            total.add_metric([service], counts.admitted)
            refused.add_metric([service], counts.refused)
        yield from (open_now, total, refused)


def _add(mine: Metric, family: Metric) -> None:
    """Add ``family``'s samples (one worker's counter or histogram) to ``mine``'s."""
    at = {(s.name, tuple(sorted(s.labels.items()))): i for i, s in enumerate(mine.samples)}
    for sample in family.samples:
        if sample.name.endswith("_created"):
            continue
        key = (sample.name, tuple(sorted(sample.labels.items())))
        if key in at:
            old = mine.samples[at[key]]
            mine.samples[at[key]] = old._replace(value=old.value + sample.value)
        else:
            at[key] = len(mine.samples)
            mine.samples.append(sample)


class _Merged:
    """A registry's figures with the counters and histograms of workers' snapshots added."""

    def __init__(self, registry: CollectorRegistry, families: Iterable[Metric]) -> None:
        self.registry = registry
        self.families = families

    def collect(self) -> Iterator[Metric]:
        own = list(self.registry.collect())  # fresh Metric objects: ours to change
        by_name = {m.name: m for m in own if m.type in ("counter", "histogram")}
        for family in self.families:
            mine = by_name.get(family.name)
            if mine is not None and mine.type == family.type:
                _add(mine, family)
        return iter(own)


class _WorkerFigures:
    """The MX workers' figures as the main process adds them: the latest snapshot of each
    worker, plus what the earlier runs of the workers had counted (carried over), so that the
    sums only grow however often a worker is restarted."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        #: Per snapshot file: the run that wrote it and its families, as last read.
        self._latest: dict[str, tuple[str, list[Metric]]] = {}
        #: The figures of the runs that ended, summed (one family per name: bounded).
        self._carried: dict[str, Metric] = {}

    def read(self) -> list[Metric]:
        """Read the snapshots (a few small files, from the page cache); the families to add."""
        latest: dict[str, tuple[str, list[Metric]]] = {}
        for path in sorted(self.folder.glob("*.prom")):
            try:
                text = path.read_text("utf-8")
            except (OSError, UnicodeDecodeError):  # being replaced (renamed) or gone
                if path.name in self._latest:
                    latest[path.name] = self._latest[path.name]
                continue
            first = text.partition("\n")[0]
            run = first.removeprefix(SNAPSHOT_MARK) if first.startswith(SNAPSHOT_MARK) else ""
            latest[path.name] = (run, list(text_string_to_metric_families(text)))
        for name, (run, families) in self._latest.items():
            now = latest.get(name)
            if now is None or now[0] != run:  # that run ended: its figures stay counted
                for family in families:
                    self._carry(family)
        self._latest = latest
        families = [f for _, fs in latest.values() for f in fs]
        return [*self._carried.values(), *families]

    def _carry(self, family: Metric) -> None:
        base = self._carried.get(family.name)
        if base is None:
            base = self._carried[family.name] = Metric(
                family.name, family.documentation, family.type
            )
        _add(base, family)


class _Only:
    """The counters and histograms of a registry that a worker's snapshot carries."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for m in self.registry.collect():
            if m.type in ("counter", "histogram") and not m.name.startswith(NOT_IN_SNAPSHOTS):
                yield m


class Metrics:
    """The figures of one server process and their Prometheus text (see the module notes)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        #: A monotonic clock for durations (latency); the start time is wall-clock.
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.sampled = _Sampled()
        #: The run of this process, named in its snapshots.
        self.run = secrets.token_hex(8)
        #: The MX workers' snapshots (None: no workers).
        self._workers: _WorkerFigures | None = None
        r.register(self.sampled)
        ProcessCollector(namespace="ourmail", registry=r)
        Info("ourmail_build", "The running ourmail.", registry=r).info({"version": __version__})
        Gauge(
            "ourmail_server_start_time_seconds",
            "When this server was assembled (POSIX seconds).",
            registry=r,
        ).set(time.time())
        self._accepted = Counter(
            "ourmail_messages_accepted",
            "Messages accepted (250 at the end of DATA/BDAT), by listener.",
            ["service"],
            registry=r,
        )
        self._refused = Counter(
            "ourmail_messages_refused",
            "Refusals of a sender, a recipient or a message, by listener and reason.",
            ["service", "reason"],
            registry=r,
        )
        self._delivered = Counter(
            "ourmail_messages_delivered",
            "Copies delivered: to a mailbox here (local, per mailbox) or to another server "
            "(remote, per recipient).",
            ["destination"],
            registry=r,
        )
        for destination in DESTINATIONS:  # at 0 from the start: a rule dividing by the
            self._delivered.labels(destination)  # remote rate needs the series to exist
        self._deferred = Counter(
            "ourmail_messages_deferred",
            "Delivery attempts of the queue that failed for now (per recipient; retried).",
            registry=r,
        )
        self._bounced = Counter(
            "ourmail_messages_bounced",
            "Recipients the queue gave up on (a permanent failure or expiry).",
            registry=r,
        )
        self._latency = Histogram(
            "ourmail_store_delivery_seconds",
            "Time from the end of a message's checks to its durable commit in the store "
            "(and queue).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._logins = Counter(
            "ourmail_logins", "Successful logins, by service.", ["service"], registry=r
        )
        self._login_failures = Counter(
            "ourmail_login_failures",
            "Failed logins (wrong password, unknown user, locked out), by service.",
            ["service"],
            registry=r,
        )
        self._worker_restarts = Counter(
            "ourmail_mx_worker_restarts",
            "MX worker processes that ended on their own and were started again.",
            registry=r,
        )
        self._verdicts = Counter(
            "ourmail_filter_verdicts",
            "Verdicts of the filter chain's checks, by check and verdict.",
            ["check", "verdict"],
            registry=r,
        )

    # -- hooks (one call at the place where the thing happens) ---------------------------------

    def accepted(self, service: str) -> None:
        """A message was accepted on listener ``service``."""
        self._accepted.labels(service).inc()

    def refused(self, service: str, reason: str) -> None:
        """A sender, recipient or message was refused; ``reason`` outside :data:`REASONS`
        counts as ``other``."""
        self._refused.labels(service, reason if reason in REASONS else "other").inc()

    def delivered(self, destination: str, count: int = 1) -> None:
        """``count`` copies reached their ``destination`` (``local`` or ``remote``)."""
        if count:
            self._delivered.labels(destination).inc(count)

    def attempted(self, outcome: str, local: bool) -> None:
        """One recipient's outcome in a queue attempt: ``sent``, ``deferred`` or
        ``bounced``.  A local ``sent`` is not counted here: delivery counted its copies."""
        if outcome == "deferred":
            self._deferred.inc()
        elif outcome == "bounced":
            self._bounced.inc()
        elif not local:
            self._delivered.labels("remote").inc()

    def stored(self, started: float) -> None:
        """A delivery that began at ``started`` (of :attr:`clock`) is durable now."""
        self._latency.observe(max(0.0, self.clock() - started))

    def login(self, service: str, ok: bool) -> None:
        """A login on ``service`` succeeded or failed."""
        (self._logins if ok else self._login_failures).labels(service).inc()

    def verdict(self, check: str, verdict: str) -> None:
        """The filter check ``check`` (a configured name) said ``verdict``."""
        self._verdicts.labels(check, verdict).inc()

    # -- what is read at scrape time -----------------------------------------------------------

    def watch_connections(self, service: str, counts: ConnectionSource) -> None:
        """Report listener ``service``'s open and admitted connections from ``counts``."""
        self.sampled.connections[service] = counts

    def watch_queue(
        self, backlog: Callable[[], tuple[int, float | None]], clock: Callable[[], float]
    ) -> None:
        """Report the outbound queue's size and oldest message (``backlog()``, in ``clock``)."""
        self.sampled.queue, self.sampled.queue_clock = backlog, clock

    def watch_certificate(self, not_after: Callable[[], float | None]) -> None:
        """Report the seconds until the TLS certificate's ``not_after()``."""
        self.sampled.certificate = not_after

    def measured_volumes(self, volumes: Iterable[tuple[str, str, int | None, int | None]]) -> None:
        """Keep the last measure of the volumes, ``(root, shards, free, total)`` in bytes,
        for ``/metrics`` (a volume that could not be measured, None, is left out)."""
        self.sampled.volumes = [
            (root, shards, free, size)
            for root, shards, free, size in volumes
            if free is not None and size is not None
        ]

    def backend(self, backend: str, up: bool) -> None:
        """The filter back-end ``backend`` (``clamd``, ``spamd``, ``rspamd``) answered its
        probe, or did not."""
        self.sampled.backends[backend] = up

    def watch_workers(self, folder: Path) -> None:
        """Add the snapshots that MX workers leave in ``folder`` (``*.prom``) to the
        counters and histograms of :meth:`exposition`."""
        self._workers = _WorkerFigures(folder)

    def worker_restarted(self) -> None:
        """An MX worker process ended on its own (a crash) and is started again."""
        self._worker_restarts.inc()

    def worker_ended(self) -> None:
        """An MX worker ended: read its last snapshot now, so that what it counted since the
        last scrape is carried over once it runs again."""
        if self._workers is not None:
            self._workers.read()

    def exposition(self) -> bytes:
        """Every figure in the Prometheus text format (:data:`CONTENT_TYPE`), with the MX
        workers' counts added."""
        if self._workers is None:
            return generate_latest(self.registry)
        return generate_latest(_Merged(self.registry, self._workers.read()))

    def snapshot(self) -> bytes:
        """This (worker) process's counters and histograms, for the main process to add,
        after a first line naming this run (:data:`SNAPSHOT_MARK`)."""
        return f"{SNAPSHOT_MARK}{self.run}\n".encode() + generate_latest(_Only(self.registry))

    def write_snapshot(self, path: Path) -> None:
        """Replace ``path`` with :meth:`snapshot` (blocking: run it in a thread).  Renamed
        into place, so a reader sees the old or the new one whole; no fsync: after a crash
        the counts start again anyway."""
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            tmp.write_bytes(self.snapshot())
            tmp.replace(path)
        except OSError as e:  # the next one may succeed; the counts are still in memory
            log.warn("cannot write the metrics snapshot {path}: {e}", path=str(path), e=e)


def clear_snapshots(folder: Path) -> None:
    """Make ``folder`` (for the workers' snapshots) and remove those of earlier runs."""
    folder.mkdir(mode=0o700, exist_ok=True)
    for path in folder.glob("*.prom"):
        path.unlink(missing_ok=True)
