"""The Sender Rewriting Scheme in the format of Shevek's libsrs2 (and postsrsd, Exim, Postfix).

Mail that an alias forwards to another domain keeps its original envelope sender only at the
price of failing SPF (RFC 7208) at the next hop, since we are not among the sender domain's
hosts.  So the forwarded copy leaves with a sender in our domain that encodes the original::

    SRS0=HHHH=TT=orig-domain=orig-local@forwarder          (first forwarding)
    SRS1=HHHH=first-forwarder==HHHH=TT=orig-domain=orig-local@forwarder  (a later one)

``HHHH`` is an HMAC-SHA1 of the other fields under our secret (base64, first four characters,
computed on the lower-cased fields so that a hop that lower-cases the local part does no
harm), ``TT`` the day of sending modulo 1024 in two base32 characters.  A bounce to such an
address is checked (hash, age at most ``max_age`` days) and sent on to the address it stands
for.  An SRS1 address is reversed to the SRS0 address of the first forwarder, as libsrs2 does.

The secrets live in ``<data>/srs/secret`` (mode 0600), one a line, the first one signing: to
rotate, add a new first line and keep the old ones as long as bounces may come back (a
``max_age``).  The file is made with one random secret at start-up when it does not exist.

The PyPI package ``pysrs`` implements the same format but has not been maintained since 2018,
so this module is written after the libsrs2 description with ``hmac`` from the standard library.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from ourmail.fsutil import write_atomic
from ourmail.interfaces import InvalidSRS, ISenderRewriter

#: libsrs2's defaults: four hash characters, stamps valid for 21 days.
HASH_LENGTH = 4
DEFAULT_MAX_AGE = 21
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_PERIOD = 1024  # the stamp counts days modulo 2**10
_SEPARATORS = "=+-"  # libsrs2 accepts any of these after SRS0/SRS1


def load_secrets(path: Path) -> list[bytes]:
    """The secrets in ``path``, signing one first; a new file with one secret if none exists."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, secrets.token_urlsafe(32).encode() + b"\n", 0o600)
    os.chmod(path, 0o600)
    found = [line.strip().encode() for line in path.read_text("utf-8").splitlines()]
    found = [s for s in found if s]
    if not found:
        raise ValueError(f"{path} holds no SRS secret")
    return found


@implementer(ISenderRewriter)
class SenderRewriter:
    """SRS0/SRS1 rewriting with the secrets given (the first one signs, all verify)."""

    def __init__(
        self,
        keys: Sequence[bytes],
        is_local_domain: Callable[[str], bool],
        clock: IReactorTime,
        max_age: int = DEFAULT_MAX_AGE,
    ) -> None:
        if not keys:
            raise ValueError("SRS needs at least one secret")
        self.keys = list(keys)
        self.is_local_domain = is_local_domain
        self.clock = clock
        self.max_age = max_age

    # -- the two directions ----------------------------------------------------------------

    def forward(self, sender: str, domain: str) -> str:
        """See :meth:`ISenderRewriter.forward`."""
        local, at, sender_domain = sender.rpartition("@")
        if not sender or not at or self.is_local_domain(sender_domain.lower()):
            return sender
        prefix = local[:4].upper()
        if prefix in ("SRS0", "SRS1") and len(local) > 5 and local[4] in _SEPARATORS:
            if prefix == "SRS0":
                # Already rewritten by a first forwarder: keep its part whole (libsrs2 "SRS1").
                first, opaque = sender_domain, local[4:]
            else:
                parts = local[5:].split("=", 2)
                if len(parts) < 3:
                    return self._srs0(local, sender_domain, domain)
                _, first, opaque = parts
            return f"SRS1={self._hash(first, opaque)}={first}={opaque}@{domain}"
        return self._srs0(local, sender_domain, domain)

    def reverse(self, address: str) -> str | None:
        """See :meth:`ISenderRewriter.reverse`."""
        local = address.rpartition("@")[0]
        prefix = local[:4].upper()
        if prefix not in ("SRS0", "SRS1") or len(local) < 6 or local[4] not in _SEPARATORS:
            return None
        if prefix == "SRS1":
            parts = local[5:].split("=", 2)
            if len(parts) < 3 or not parts[1] or len(parts[2]) < 2:
                raise InvalidSRS(f"malformed SRS1 address {address!r}")
            given, first, opaque = parts
            self._verify(given, first, opaque)
            return f"SRS0{opaque}@{first}"
        parts = local[5:].split("=", 3)
        if len(parts) < 4 or not all(parts):
            raise InvalidSRS(f"malformed SRS0 address {address!r}")
        given, stamp, domain, original = parts
        self._verify(given, stamp, domain, original)
        self._check_stamp(stamp)
        return f"{original}@{domain}"

    # -- the parts ------------------------------------------------------------------------

    def _srs0(self, local: str, sender_domain: str, domain: str) -> str:
        stamp = self._stamp()
        digest = self._hash(stamp, sender_domain, local)
        return f"SRS0={digest}={stamp}={sender_domain}={local}@{domain}"

    def _hash(self, *fields: str, key: bytes | None = None) -> str:
        data = "".join(fields).lower().encode("utf-8")
        mac = hmac.new(key or self.keys[0], data, hashlib.sha1).digest()
        return base64.b64encode(mac).decode("ascii")[:HASH_LENGTH]

    def _verify(self, given: str, *fields: str) -> None:
        # Case-insensitively, as libsrs2 does too: some hops lower-case the local part.
        for key in self.keys:
            if hmac.compare_digest(self._hash(*fields, key=key).lower(), given.lower()):
                return
        raise InvalidSRS("SRS hash does not verify")

    def _today(self) -> int:
        return int(self.clock.seconds() // 86400) % _PERIOD

    def _stamp(self) -> str:
        day = self._today()
        return _BASE32[day >> 5] + _BASE32[day & 31]

    def _check_stamp(self, stamp: str) -> None:
        upper = stamp.upper()
        if len(upper) != 2 or any(c not in _BASE32 for c in upper):
            raise InvalidSRS(f"malformed SRS time stamp {stamp!r}")
        then = _BASE32.index(upper[0]) << 5 | _BASE32.index(upper[1])
        if (self._today() - then) % _PERIOD > self.max_age:
            raise InvalidSRS("SRS address has expired")
