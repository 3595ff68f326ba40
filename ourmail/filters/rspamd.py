"""A client for rspamd's HTTP API (treq): ``/checkv2`` on the normal worker to scan,
``/learnspam`` and ``/learnham`` on the controller to learn.

Implementation notes (keep these true when changing this module):

* The envelope goes in rspamd's request headers (``IP``, ``Helo``, ``From``, ``Rcpt``,
  ``Deliver-To``), the message is the body.  The reply is JSON: ``score``,
  ``required_score``, ``action``, ``symbols``.
* Replies are bounded (:attr:`RspamdClient.max_reply`): a longer one is cut off and fails,
  as does one that is not JSON of that shape or an HTTP error; every request is given up
  after :attr:`RspamdClient.timeout` seconds.  All of these are :class:`RspamdError`.
* Learning needs the controller's password (``Password`` header; rspamd also lets its
  ``secure_ip`` addresses in without one).  rspamd answering that it has already learned
  the message counts as success: a message is learned once.  The password is never logged.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit, urlunsplit

import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IResponse
from zope.interface import implementer

from ourmail.filters.spamscan import Envelope, ScannerError, ScannerTimeout, SpamScore
from ourmail.interfaces import ISpamLearner

#: Newer rspamd answers HTTP 208 when its learn cache already has the message; 3.4 (Debian
#: 12) answers 404 with ``"<id> has been already learned as spam, ignore it"``.
ALREADY_REPORTED = 208


class RspamdError(ScannerError):
    """rspamd could not be asked, refused the request, or answered something unusable."""


class RspamdTimeout(RspamdError, ScannerTimeout):
    """rspamd did not answer in time."""


class _TooLong(Exception):
    pass


def read_password(password: object, password_file: object) -> str | None:
    """The controller password from ``password`` or the first line of ``password_file``
    (ValueError for a bad option or an unreadable file)."""
    if password is not None and password_file is not None:
        raise ValueError("give 'password' or 'password_file', not both")
    if password is not None:
        if not isinstance(password, str) or not password:
            raise ValueError("'password' must be a non-empty string")
        return password
    if password_file is None:
        return None
    if not isinstance(password_file, str):
        raise ValueError("'password_file' must be a path")
    try:
        lines = Path(password_file).read_text().splitlines()
    except OSError as e:
        raise ValueError(f"cannot read 'password_file': {e.strerror}") from e
    if not lines or not lines[0].strip():
        raise ValueError("'password_file' is empty")
    return lines[0].strip()


def _url(url: str) -> str:
    """An rspamd URL whose host is an IP address (``localhost`` becomes 127.0.0.1): names
    would be looked up by the system resolver, and lookups go through twisted.names only.
    ValueError for anything else."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        if parts.scheme not in ("http", "https") or parts.port == 0:
            raise ValueError("not http(s)")
        if host != "localhost":
            ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"rspamd address {url!r} must be an http:// or https:// URL with an IP address"
        ) from None
    if host == "localhost":
        parts = parts._replace(netloc=parts.netloc.replace("localhost", "127.0.0.1", 1))
    return urlunsplit(parts).rstrip("/")


def _safe(value: str) -> str:
    """A value that fits in one HTTP header line."""
    return "".join(c for c in value if c.isprintable() and c not in "\r\n")


def parse_check(body: bytes) -> SpamScore:
    """A ``/checkv2`` reply; :class:`RspamdError` for anything else."""
    try:
        reply = json.loads(body)
        score, required = float(reply["score"]), float(reply["required_score"])
        action = str(reply.get("action", ""))
        symbols = reply.get("symbols") or {}
        if not isinstance(symbols, dict):
            raise TypeError("symbols is not an object")
    except (ValueError, KeyError, TypeError) as e:
        raise RspamdError(f"not an rspamd reply ({e}): {body[:80]!r}") from None
    spam = action in ("reject", "add header", "rewrite subject") or score >= required
    return SpamScore(spam, score, required, tuple(sorted(symbols)), action)


class RspamdClient:
    """Asks one rspamd: ``address`` (the normal worker's URL) and ``controller`` (its
    controller's URL, for learning, with ``password``)."""

    def __init__(
        self,
        reactor: object,
        address: str,
        controller: str = "http://127.0.0.1:11334",
        password: str | None = None,
        timeout: float = 30.0,
        max_reply: int = 1024 * 1024,
    ) -> None:
        self.reactor = cast(IReactorTime, reactor)
        self.address, self.controller = _url(address), _url(controller)
        self.password = password
        self.timeout, self.max_reply = timeout, max_reply
        pool = HTTPConnectionPool(reactor, persistent=True)  # type: ignore[no-untyped-call]
        self._http = HTTPClient(Agent(reactor, pool=pool))  # type: ignore[no-untyped-call]

    def _post(
        self, url: str, body: bytes, headers: dict[str | bytes, list[str | bytes]]
    ) -> Deferred[tuple[int, bytes]]:
        return Deferred.fromCoroutine(self._ask(url, body, headers))

    async def _exchange(
        self, url: str, body: bytes, headers: dict[str | bytes, list[str | bytes]]
    ) -> tuple[int, bytes]:
        d = Deferred.fromCoroutine(self._receive(url, body, headers))
        timed_out = False

        def expire() -> None:
            nonlocal timed_out
            timed_out = True
            d.cancel()

        call = self.reactor.callLater(self.timeout, expire)
        try:
            return await d
        except Exception:
            if timed_out:
                raise RspamdTimeout(f"rspamd at {url} did not answer in {self.timeout} s") from None
            raise
        finally:
            if call.active():
                call.cancel()

    async def _ask(
        self, url: str, body: bytes, headers: dict[str | bytes, list[str | bytes]]
    ) -> tuple[int, bytes]:
        try:
            return await self._exchange(url, body, headers)
        except _TooLong:
            raise RspamdError(f"rspamd's reply is longer than {self.max_reply} bytes") from None
        except RspamdError:
            raise
        except Exception as e:
            raise RspamdError(f"cannot ask rspamd at {url}: {e}") from e

    async def _receive(
        self, url: str, body: bytes, headers: dict[str | bytes, list[str | bytes]]
    ) -> tuple[int, bytes]:
        response: IResponse = await self._http.post(url, data=body, headers=headers)
        # A body announced too long is refused at its first bytes (the connection is
        # dropped), one without a length as soon as it passes the limit.
        too_long = isinstance(response.length, int) and response.length > self.max_reply
        chunks: list[bytes] = []
        received = 0

        def collect(data: bytes) -> None:
            nonlocal received
            received += len(data)
            if too_long or received > self.max_reply:
                raise _TooLong()
            chunks.append(data)

        await treq.collect(response, collect)
        if not 100 <= response.code <= 599:
            raise RspamdError(f"not an HTTP reply from {url} (status {response.code})")
        return response.code, b"".join(chunks)

    def scan(self, message: bytes, envelope: Envelope) -> Deferred[SpamScore]:
        """Score ``message`` (``/checkv2``)."""
        headers: dict[str | bytes, list[str | bytes]] = {}
        if envelope.client_address:
            headers["IP"] = [_safe(envelope.client_address)]
        if envelope.helo:
            headers["Helo"] = [_safe(envelope.helo)]
        if envelope.sender:
            headers["From"] = [_safe(envelope.sender)]
        if envelope.recipients:
            headers["Rcpt"] = [_safe(r) for r in envelope.recipients]
        if envelope.user:
            headers["Deliver-To"] = [_safe(envelope.user)]

        def parsed(reply: tuple[int, bytes]) -> SpamScore:
            code, body = reply
            if code != 200:
                raise RspamdError(f"rspamd answered HTTP {code}: {body[:80]!r}")
            return parse_check(body)

        return self._post(self.address + "/checkv2", message, headers).addCallback(parsed)

    def ping(self) -> Deferred[bool]:
        """Whether rspamd's normal worker answers ``GET /ping`` with ``pong`` (the probe of
        ``ourmail_backend_up``); fails when it cannot be reached."""
        return Deferred.fromCoroutine(self._ping())

    async def _ping(self) -> bool:
        response: IResponse = await self._http.get(self.address + "/ping")
        chunks: list[bytes] = []

        def collect(data: bytes) -> None:
            chunks.append(data)
            if sum(map(len, chunks)) > 64:
                raise _TooLong()

        await treq.collect(response, collect)
        return response.code == 200 and b"".join(chunks).strip() == b"pong"

    def learn(self, user: str, message: bytes, spam: bool) -> Deferred[bool]:
        """Teach rspamd's Bayes classifier; fires with whether it learned (False: it had
        already learned the message)."""
        path = "/learnspam" if spam else "/learnham"
        headers: dict[str | bytes, list[str | bytes]] = {"Deliver-To": [_safe(user)]}
        if self.password:
            headers["Password"] = [self.password]

        def answered(reply: tuple[int, bytes]) -> bool:
            code, body = reply
            if code == ALREADY_REPORTED or b"already learned" in body:
                return False
            if code == 200:
                try:
                    if json.loads(body).get("success") is True:
                        return True
                except (ValueError, AttributeError):
                    pass
            raise RspamdError(f"rspamd did not learn: HTTP {code}: {body[:120]!r}")

        return self._post(self.controller + path, message, headers).addCallback(answered)


@implementer(ISpamLearner)
class RspamdLearner:
    """Learning through rspamd's controller (``/learnspam``, ``/learnham``)."""

    def __init__(self, client: RspamdClient) -> None:
        self.client = client

    def learn(self, user: str, message: bytes, spam: bool) -> Deferred[None]:
        return self.client.learn(user, message, spam).addCallback(lambda _: None)
