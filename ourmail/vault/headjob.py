"""The daily signed chain head: at each midnight UTC the server signs the vault's head with
its TLS key, appends it to ``<data>/vault/heads.log`` and writes it to its log as one
structured ``vault.head`` event (docs/vault.md#verify-and-export)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from ourmail.vault import heads
from ourmail.vault.heads import SignedHead
from ourmail.vault.segments import SegmentLog

DAY = 86400
log = Logger()


def until_midnight(now: float) -> float:
    """Seconds from ``now`` (epoch seconds) to the next midnight UTC."""
    return DAY - now % DAY


class DailyHeadSigner(Service):
    """Signs the vault's head every midnight UTC (nothing while the vault is empty).
    ``pair`` gives the certificate and key paths in use (they change at an ACME renewal)."""

    name = "vault-heads"

    def __init__(
        self, vault: SegmentLog, pair: Callable[[], tuple[Path, Path]], clock: IReactorTime
    ) -> None:
        self.vault = vault
        self.pair = pair
        self.clock = clock
        self._call: IDelayedCall | None = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._schedule()

    def stopService(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        return super().stopService()  # type: ignore[no-untyped-call,no-any-return]

    def _schedule(self) -> None:
        if self.running:
            self._call = self.clock.callLater(until_midnight(self.clock.seconds()), self._tick)

    def _tick(self) -> None:
        d = deferToThread(self.sign_now)
        d.addCallbacks(self._signed, self._failed)
        d.addBoth(lambda _: self._schedule())

    def sign_now(self) -> SignedHead | None:
        """Blocking: sign the head as it is now (None for an empty vault)."""
        seq, digest = self.vault.head()
        if seq == 0:
            return None
        certificate, key = self.pair()
        return heads.sign(self.vault.root, seq, digest, certificate, key)

    def _signed(self, head: SignedHead | None) -> None:
        if head is not None:
            log.info(
                "vault.head {seq} {hash} signed at {time}: {signature} by {fingerprint}",
                event="vault.head",
                seq=head.seq,
                hash=head.hash,
                time=head.time,
                signature=head.signature,
                fingerprint=head.fingerprint,
                algorithm=head.algorithm,
            )

    def _failed(self, failure: Failure) -> None:
        log.error("vault.head: the head could not be signed: {error}", error=failure.value)
