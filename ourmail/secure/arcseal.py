"""ARC sealing (RFC 8617 §5.1) of mail this host forwards, with dkimpy's ``arc_sign``.

The ARC set's ARC-Authentication-Results repeat this host's own Authentication-Results (the
field the filter chain put on top, under ``authserv_id``); its ``cv=`` is the ``arc=`` result
found there (the ``arc`` check's verdict on the chain that arrived).  dkimpy adds no set, by
RFC 8617 §5.1.2, when the message carries no Authentication-Results of ours, or an earlier
chain whose validation we did not record.  dkimpy seals with rsa-sha256 only (the one
algorithm RFC 8617 §4.1.3 defines), so the key is the host name's domain's RSA key.
"""

from __future__ import annotations

import os

import dkim
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from zope.interface import implementer

from ourmail.interfaces import IForwardSealer
from ourmail.secure import dkimspeed
from ourmail.secure.dkimsign import DKIMSigner, head_of, header_names, parents, signed_fields

log = Logger()


@implementer(IForwardSealer)
class ARCSealer:
    """Seals with the first active RSA key of the host name's domain (or a parent of it)."""

    def __init__(self, signer: DKIMSigner, authserv_id: str) -> None:
        self.signer = signer
        self.authserv_id = authserv_id
        dkimspeed.install()  # OpenSSL's RSA: dkimpy's own would hold the GIL ~20 ms a seal

    def sealed(self, content: bytes | os.PathLike[str]) -> bytes:
        """``content`` with one more ARC set on top, or unchanged (see the module's notes).
        Blocking: reads the file and signs."""
        if isinstance(content, bytes):
            data = content
        else:
            with open(content, "rb") as f:
                data = f.read()
        for domain in parents(self.signer.hostname):
            rsa = [a for a in self.signer.active(domain) if a.key.algorithm == "rsa"]
            if rsa:
                key, private = rsa[0].key, rsa[0].dkimpy
                break
        else:
            return data
        names = header_names(head_of(data))
        if "from" not in names:
            return data
        try:
            fields = dkim.arc_sign(
                data,
                key.selector.encode(),
                domain.encode(),
                private,
                self.authserv_id.encode(),
                include_headers=signed_fields(names),
            )
        except dkim.DKIMException as e:
            log.warn("arc: not sealed ({e})", e=e)
            return data
        return b"".join(fields) + data

    def seal(self, content: bytes | os.PathLike[str]) -> Deferred[bytes]:
        return deferToThread(self.sealed, content)
