"""The timers of ourmail/watchers.py: the volumes measured in a thread, the back-ends probed
asynchronously, each kept in Metrics; stopping never waits for a back-end that is silent."""

from __future__ import annotations

import functools
from pathlib import Path

from metricshelp import Samples
from prometheus_client.parser import text_string_to_metric_families
from storehelp import on_reactor
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.logger import formatEvent, globalLogPublisher

from ourmail.filters.probes import Probe
from ourmail.net.metrics import Metrics
from ourmail.store.volumes import Volume, volumes
from ourmail.watchers import BackendWatch, VolumeWatch


def samples(metrics: Metrics) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
    }


def test_volumes_are_measured_at_start(tmp_path: Path) -> None:
    metrics = Metrics()
    watch = VolumeWatch(lambda: [Volume(tmp_path, "00-ff")], metrics, reactor)
    on_reactor(watch.measure)
    labels = (("root", str(tmp_path)), ("shards", "00-ff"))
    assert samples(metrics)[("ourmail_volume_size_bytes", labels)] > 0


def test_a_root_added_by_a_shard_move_is_measured_without_a_restart(tmp_path: Path) -> None:
    # The runbook's answer to a full disk is ourmail shard move to another volume: that
    # volume must be watched from the next round, and the old root's shards label follow.
    data, new_root = tmp_path / "data", tmp_path / "mail-c"
    (data / "mail").mkdir(parents=True)
    new_root.mkdir()
    metrics = Metrics()
    watch = VolumeWatch(functools.partial(volumes, data), metrics, reactor)
    on_reactor(watch.measure)
    assert (("root", str(data / "mail")), ("shards", "00-ff")) in roots(metrics)
    (data / "shards.toml").write_text(
        f'[[shard]]\nrange = "00-7f"\nroot = "mail"\n'
        f'[[shard]]\nrange = "80-ff"\nroot = "{new_root}"\n'
    )
    on_reactor(watch.measure)
    found = roots(metrics)
    assert (("root", str(data / "mail")), ("shards", "00-7f")) in found
    assert (("root", str(new_root)), ("shards", "80-ff")) in found
    (data / "shards.toml").write_text("[[shard]]\nrange = \n")  # an edit under way
    on_reactor(watch.measure)
    assert roots(metrics) == found  # the last volumes found


def roots(metrics: Metrics) -> set[tuple[tuple[str, str], ...]]:
    return {labels for name, labels in samples(metrics) if name == "ourmail_volume_size_bytes"}


def test_stopping_cancels_a_round_that_waits_for_a_silent_backend() -> None:
    metrics = Metrics()
    asked: list[Deferred[bool]] = []

    def silent() -> Deferred[bool]:
        asked.append(Deferred())
        return asked[-1]

    answering = Probe("spamd", lambda: Deferred.fromCoroutine(_yes()))
    watch = BackendWatch([Probe("clamd", silent), answering], metrics, reactor)

    def start_and_stop() -> Deferred[None]:
        watch.startService()
        assert len(asked) == 1  # the first round runs at once
        return watch.stopService()

    on_reactor(start_and_stop)  # returns at once: the silent probe is cancelled
    assert not watch.running
    found = samples(metrics)
    assert found[("ourmail_backend_up", (("backend", "spamd"),))] == 1
    assert found[("ourmail_backend_up", (("backend", "clamd"),))] == 0


async def _yes() -> bool:
    return True


def test_a_backend_going_down_and_up_is_logged_once_each() -> None:
    answers = [True, False, False, True, True]
    watch = BackendWatch(
        [Probe("clamd", lambda: succeed(answers.pop(0)))], Metrics(), reactor, interval=60
    )
    events: list[str] = []

    def observe(event: dict[str, object]) -> None:
        if str(event.get("log_namespace", "")).startswith("ourmail.watchers"):
            events.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        for _ in range(5):
            on_reactor(watch.probe)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert events == [
        "back-end clamd does not answer its probe",
        "back-end clamd answers again",
    ]
