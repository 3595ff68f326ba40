"""Keeps an ACME certificate current and hands it to every TLS listener without a restart.

At start the stored ACME certificate (if any) replaces the ``[tls]`` one, then a check runs:
when the certificate is missing, lacks a wanted name, or expires within ``renew_days``, a new
one is ordered (in a thread, ``ourmail/secure/acmeorder.py``; optional names that fail
validation are left off and tried again a week later), written atomically under
``<data>/tls/acme/`` and swapped into the shared :class:`ReloadableServerTLS`: connections made
afterwards get it, open ones keep theirs.  The check repeats daily; a failure is logged and
retried after 5 minutes, doubling up to 6 hours, while the old certificate stays in use.  The
back-off is kept in ``backoff.json`` so a restart does not skip it, and a SIGHUP during it
orders only when ``ourmail cert renew`` asked for it.
"""

from __future__ import annotations

import datetime
import signal
import threading
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.internet.threads import blockingCallFromThread, deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from ourmail.auth.accounts import AccountDB
from ourmail.config import ConfigError, Settings
from ourmail.net.tls import ReloadableServerTLS, trust_root
from ourmail.preflight import parse_endpoint
from ourmail.secure.acmeorder import CAServer, OrderFailed, RateLimited, order_certificate
from ourmail.secure.certfiles import (
    ACMEFiles,
    Backoff,
    WantedNames,
    pair_matches,
    read_backoff,
    read_info,
    read_left_out,
    record_failure,
    recover_pair,
    renewal_reason,
    still_left_out,
    store_pair,
    wanted_names,
    write_left_out,
)

log = Logger()

#: Seconds between checks while all is well.
CHECK_INTERVAL = 24 * 3600.0
#: Seconds before the first retry after a failure, and the longest wait between retries.
RETRY_FIRST = 300.0
RETRY_MAX = 6 * 3600.0
#: The longest a CA's ``Retry-After`` is waited for (a week: Let's Encrypt's longest window).
RETRY_AFTER_MAX = 7 * 86400.0
#: The port the CA connects to for HTTP-01 (RFC 8555 §8.3).
HTTP01_PORT = 80


def port_warning(settings: Settings) -> str:
    """Why the CA may not reach the ``http`` listener ("" when it listens on port 80): the CA
    validates on port 80 only, so another port works only when port 80 is forwarded to it."""
    endpoint = settings.listen.get("http")
    if not endpoint:
        return ""
    try:
        _, args, options = parse_endpoint(endpoint)
    except ValueError:
        return ""
    port = options.get("port", args[0] if args else "")
    if not port.isdigit() or int(port) == HTTP01_PORT:
        return ""
    return (
        f"the http listener is on port {port}, but the CA checks HTTP-01 on port "
        f"{HTTP01_PORT}: forward port {HTTP01_PORT} to it, or set [listen] http = "
        f'"tcp:{HTTP01_PORT}" (docs/certificates.md)'
    )


class CertificateRenewal(Service):
    """The ``[acme]`` certificate of one server (see the module's docstring).

    ``names`` gives the names the certificate should carry (asked in the order's thread);
    ``tls`` is the listeners' shared context, swapped after each order (None: only write the
    files, as ``ourmail cert renew`` does); ``challenges`` is the table the ``http`` listener
    answers HTTP-01 from (token -> key authorisation); ``installed`` are told the new files
    after each swap (the webmail signs Apple profiles with them, the MX workers reload).
    """

    name = "acme"

    def __init__(
        self,
        ca: CAServer,
        files: ACMEFiles,
        names: Callable[[], WantedNames],
        renew_days: int,
        tls: ReloadableServerTLS | None,
        reactor: Any,
        challenges: MutableMapping[str, str],
    ) -> None:
        self.ca, self.files, self.names, self.renew_days = ca, files, names, renew_days
        self.tls = tls
        self.reactor = reactor
        self.challenges = challenges
        self.installed: list[Callable[[Path, Path], None]] = []
        self._next: IDelayedCall | None = None
        self._retry = RETRY_FIRST
        self._busy: Deferred[bool] | None = None
        self._previous: Any = None
        #: :func:`port_warning`'s, logged at start and with each failure.
        self.port_warning = ""
        #: While backing off after a failure: when the next try is (reactor seconds).
        self._backoff_until: float | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        tls: ReloadableServerTLS | None,
        reactor: Any,
        challenges: MutableMapping[str, str],
    ) -> CertificateRenewal:
        """The renewal ``[acme]`` describes, for the names of :func:`wanted_names` (the
        domains added since the start too)
        (ConfigError without an ``http`` listener or with an unreadable ``ca_file``)."""
        acme = settings.acme
        if not settings.listen.get("http"):
            raise ConfigError(
                "[acme] answers HTTP-01 challenges on the http listener (port 80): "
                "set [listen] http, or switch [acme] off"
            )
        if acme.ca_file:
            trust_root(Path(acme.ca_file))  # ConfigError when it cannot be read
        ca = CAServer(acme.directory, acme.email, Path(acme.ca_file) if acme.ca_file else None)
        files = ACMEFiles.of(settings.data_dir)
        accounts = AccountDB(settings.data_dir)  # read in the renewal's thread only

        def names() -> WantedNames:
            return wanted_names(settings, accounts.domains())

        renewal = cls(ca, files, names, acme.renew_days, tls, reactor, challenges)
        renewal.port_warning = port_warning(settings)
        return renewal

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self.port_warning:
            log.warn("ACME: {warning}", warning=self.port_warning)
        if recover_pair(self.files):
            log.info("ACME: a new certificate stored before a crash is now in place")
        if read_info(self.files.certificate) is not None:
            self._install()
        self._schedule(self._resume(read_backoff(self.files.backoff)))
        if threading.current_thread() is threading.main_thread():  # twistd, not a test
            self._previous = signal.signal(signal.SIGHUP, self._hangup)

    def stopService(self) -> Deferred[None]:
        """Stop checking; fires once an order under way has ended (its thread writes nothing
        after the server stopped)."""
        super().stopService()  # type: ignore[no-untyped-call]
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None
        ended: Deferred[None] = Deferred()
        if self._busy is None:
            ended.callback(None)
            return ended

        def end(result: object) -> object:
            ended.callback(None)
            return result

        self._busy.addBoth(end)
        return ended

    def _hangup(self, signum: int, frame: Any) -> None:
        """SIGHUP: what was there before (the certificate's reload), then a check now."""
        if callable(self._previous):
            self._previous(signum, frame)
        self.reactor.callFromThread(self.asked)

    def _resume(self, backoff: Backoff | None) -> float:
        """Seconds until the first check: 0, or what is left of a stored back-off (the
        retry after it waits twice as long)."""
        if backoff is None or backoff.failures < 1:
            return 0
        delay: float = min(RETRY_FIRST * 2.0 ** min(backoff.failures - 1, 32), RETRY_MAX)
        now: float = self.reactor.seconds()
        left = max(backoff.last + delay, min(backoff.not_before, now + RETRY_AFTER_MAX)) - now
        if left <= 0:
            return 0
        self._retry = min(delay * 2, RETRY_MAX)
        self._backoff_until = now + left
        log.info(
            "ACME: {failures} orders in a row failed; the next try is in {left:.0f} s",
            failures=backoff.failures,
            left=left,
        )
        return left

    def asked(self) -> Deferred[bool]:
        """A check now, forced when ``ourmail cert renew`` asked for one (its request is
        removed once the new certificate is in use); failures are logged and retried.
        During the back-off after a failure only a request of ``ourmail cert renew`` orders
        (False otherwise)."""
        request = self.files.renew_request
        d: Deferred[bool] = deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), request.exists
        )
        d.addCallback(self._asked_check)
        d.addErrback(self._failed)
        return d

    def _asked_check(self, forced: bool) -> bool | Deferred[bool]:
        until = self._backoff_until
        if not forced and until is not None and self.reactor.seconds() < until:
            log.info(
                "ACME: SIGHUP while backing off after a failed order: next try in {left:.0f} "
                "s (`ourmail cert renew` asks for one at once)",
                left=until - self.reactor.seconds(),
            )
            return False
        return self.renew(force=forced).addCallback(self._asked_done)

    def _asked_done(self, new: bool) -> bool:
        self._backoff_until = None
        self._retry = RETRY_FIRST
        if new:
            self.files.renew_request.unlink(missing_ok=True)
        return new

    def renew(self, force: bool = False) -> Deferred[bool]:
        """Check now and order a new certificate if needed (always, with ``force``).  Fires
        True when a new one is in use, False when none was needed; errbacks on a failure."""
        if self._busy is not None:  # one order at a time: this one starts after it
            waiting: Deferred[bool] = Deferred()

            def then(result: object) -> object:
                self.renew(force).chainDeferred(waiting)
                return result

            self._busy.addBoth(then)
            return waiting
        clock: IReactorTime = self.reactor
        now = datetime.datetime.fromtimestamp(clock.seconds(), datetime.UTC)
        pool = self.reactor.getThreadPool()
        d: Deferred[bool] = deferToThreadPool(self.reactor, pool, self._attempt, force, now)
        d.addCallback(self._renewed)
        self._busy = d

        def idle(result: object) -> object:
            self._busy = None
            return result

        d.addBoth(idle)
        return d

    def _attempt(self, force: bool, now: datetime.datetime) -> bool:
        """In a thread: :meth:`_renew`, its failure counted in ``backoff.json`` and the count
        removed after a success."""
        try:
            new = self._renew(force, now)
        except RateLimited as e:
            wish = e.retry_after.timestamp() if e.retry_after else 0.0
            record_failure(self.files.backoff, now.timestamp(), wish)
            raise
        except Exception:
            record_failure(self.files.backoff, now.timestamp())
            raise
        self.files.backoff.unlink(missing_ok=True)
        return new

    def _renew(self, force: bool, now: datetime.datetime) -> bool:
        """In a thread: order and store a certificate if one is needed."""
        files = self.files
        wanted = self.names()
        left_out = still_left_out(read_left_out(files.left_out), wanted, now)
        names = tuple(n for n in wanted.all if n not in left_out)
        reason = renewal_reason(read_info(files.certificate), names, self.renew_days, now)
        if reason is None and not pair_matches(files.certificate, files.key):
            reason = "the key does not belong to the certificate"
        if reason is None and not force:
            return False
        log.info(
            "ordering a certificate for {names} from {ca}: {why}",
            names=", ".join(names),
            ca=self.ca.directory,
            why=reason or "renewal asked for",
        )
        chain, key, names = self._order(names, wanted)
        store_pair(files, chain, key)
        dropped = {n: now for n in wanted.optional if n not in names and n not in left_out}
        write_left_out(files.left_out, left_out | dropped)
        return True

    def _order(
        self, names: tuple[str, ...], wanted: WantedNames
    ) -> tuple[bytes, bytes, tuple[str, ...]]:
        """In a thread: (chain, key, names it carries) for ``names``; when only optional names
        fail validation, ordered again without them (raises when a required one fails)."""
        reactor: IReactorFromThreads = self.reactor
        while True:
            try:
                chain, key = order_certificate(
                    self.ca,
                    self.files.account_key,
                    names,
                    lambda token, answer: blockingCallFromThread(
                        reactor, self.challenges.__setitem__, token, answer
                    ),
                    lambda token: blockingCallFromThread(reactor, self._withdraw, token),
                )
            except OrderFailed as e:
                failed = set(e.names)
                if not failed or not failed <= set(wanted.optional) or failed >= set(names):
                    raise
                names = tuple(n for n in names if n not in failed)
                log.warn(
                    "ACME: {dropped} did not validate and are left off the certificate "
                    "(tried again in a week; `ourmail cert status`): {why}",
                    dropped=", ".join(sorted(failed)),
                    why=str(e),
                )
                continue
            return chain, key, names

    def _withdraw(self, token: str) -> None:
        self.challenges.pop(token, None)

    def _renewed(self, new: bool) -> bool:
        if new:
            info = read_info(self.files.certificate)
            log.info(
                "new certificate from {issuer}, serial {serial:x}, valid until {until}",
                issuer=info.issuer if info else "?",
                serial=info.serial if info else 0,
                until=info.not_after.isoformat() if info else "?",
            )
            self._install()
        return new

    def _install(self) -> None:
        if self.tls is not None and not self.tls.use(self.files.certificate, self.files.key):
            return
        for tell in self.installed:  # each one told, whatever another one raises
            try:
                tell(self.files.certificate, self.files.key)
            except Exception:
                log.failure("ACME: a part not told of the new certificate ({hook})", hook=tell)

    def _schedule(self, delay: float) -> None:
        if self._next is not None and self._next.active():
            self._next.cancel()
        if self.running:
            self._next = self.reactor.callLater(delay, self._check)

    def _check(self) -> None:
        self._next = None
        self.renew().addCallbacks(self._succeeded, self._failed)

    def _succeeded(self, new: bool) -> None:
        self._retry = RETRY_FIRST
        self._backoff_until = None
        self._schedule(CHECK_INTERVAL)

    def _failed(self, failure: Failure) -> None:
        delay = self._retry
        wish = failure.value.retry_after if isinstance(failure.value, RateLimited) else None
        if wish is not None:  # RFC 8555 §6.6: the CA's Retry-After, when it is later
            delay = max(delay, min(wish.timestamp() - self.reactor.seconds(), RETRY_AFTER_MAX))
        log.error(
            "ACME certificate not obtained from {ca}, the current certificate stays; "
            "next try in {delay:.0f} s: {why}{note}",
            ca=self.ca.directory,
            delay=delay,
            why=failure.getErrorMessage() or repr(failure.value),
            note=f" (note: {self.port_warning})" if self.port_warning else "",
        )
        self._schedule(delay)
        self._backoff_until = self.reactor.seconds() + delay
        self._retry = min(self._retry * 2, RETRY_MAX)


def serve_acme_certificate(settings: Settings, tls: ReloadableServerTLS, reactor: Any) -> None:
    """In an MX worker process: serve the stored ACME certificate (when ``[acme]`` is on and
    there is one) and load the files again on SIGHUP, which the master sends after each
    renewal (``MXWorkers.hangup``)."""
    files = ACMEFiles.of(settings.data_dir)

    def load() -> None:
        if settings.acme.enabled and read_info(files.certificate) is not None:
            tls.use(files.certificate, files.key)
        else:
            tls.reload()

    def hangup(signum: int, frame: Any) -> None:
        reactor.callFromThread(load)

    if settings.acme.enabled and read_info(files.certificate) is not None:
        tls.use(files.certificate, files.key)

    signal.signal(signal.SIGHUP, hangup)
