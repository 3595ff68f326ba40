"""Shard placement for the admin console (:class:`~ourmail.interfaces.IShardReport`): the report
``ourmail shard list`` prints (:func:`ourmail.store.shardmove.report`), in a worker thread."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from ourmail.interfaces import IShardReport, ShardRoot
from ourmail.store import shardmove


@implementer(IShardReport)
class ShardReport:
    """:class:`IShardReport` over ``<data>/shards.toml`` and the shard roots."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def roots(self, count_bytes: bool) -> Deferred[list[ShardRoot]]:
        def report() -> list[ShardRoot]:
            return [
                ShardRoot(
                    str(r.root),
                    shardmove.ranges_text(r.shards),
                    r.users,
                    r.bytes if count_bytes else None,
                )
                for r in shardmove.report(self.data_dir, sizes=count_bytes)
            ]

        return deferToThread(report)
