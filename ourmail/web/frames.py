"""What the message frame needs between the message page and the frame's own requests.

The frame that shows a sanitised HTML body is sandboxed without ``allow-same-origin``: to the
browser it is a foreign, opaque origin.  Its image requests (``cid:`` parts, RFC 2392) carry
no ``SameSite=Strict`` session cookie and no same-origin ``Origin``, so they cannot be
authorised by the session.  Instead the page hands the frame *grants*: random 128-bit tokens,
each naming one message of one live session, which the frame's image URLs carry
(:class:`PartGrants`).  A grant is worthless once its session ends, and the table is bounded.

The page also sanitises the bodies it frames (it must know whether remote images were cut,
to offer "show images"); :class:`FrameDocuments` hands each result over to the frame's request
once, so a body is sanitised once per view, not twice.  Both tables live in memory.
"""

from __future__ import annotations

import collections
import secrets

import attrs

from ourmail.web.safehtml import SafeHTML

#: Grants kept, at most (the oldest go first): a few per open message view.
MAX_GRANTS = 20_000
#: Sanitised documents waiting for their frame's request, at most, and their characters.
MAX_DOCUMENTS = 64
MAX_DOCUMENT_CHARS = 16 * 1024 * 1024


@attrs.frozen
class Grant:
    """The message one grant lets the frame read the inline images of."""

    session_id: str
    folder: str
    uidvalidity: int
    uid: int


class PartGrants:
    """Tokens that stand for (session, message) in the frame's image URLs."""

    def __init__(self, most: int = MAX_GRANTS) -> None:
        self.most = most
        self._grants: collections.OrderedDict[str, Grant] = collections.OrderedDict()

    def grant(self, grant: Grant) -> str:
        """A new token for ``grant``."""
        token = secrets.token_urlsafe(16)
        self._grants[token] = grant
        while len(self._grants) > self.most:
            self._grants.popitem(last=False)
        return token

    def get(self, token: str | None) -> Grant | None:
        """The grant of ``token``, or None (unknown, forgotten, malformed)."""
        if not token or len(token) > 64:
            return None
        return self._grants.get(token)


@attrs.frozen
class DocumentKey:
    """Which body a sanitised document is, and whether remote content was allowed in it."""

    session_id: str
    folder: str
    uidvalidity: int
    uid: int
    section: str
    allow_remote: bool


class FrameDocuments:
    """Sanitised bodies made by the page, each taken once by its frame's request."""

    def __init__(self, most: int = MAX_DOCUMENTS, chars: int = MAX_DOCUMENT_CHARS) -> None:
        self.most = most
        self.chars = chars
        self._size = 0
        self._documents: collections.OrderedDict[DocumentKey, SafeHTML] = collections.OrderedDict()

    def put(self, key: DocumentKey, document: SafeHTML) -> None:
        """Keep ``document`` for the frame (the oldest go when the table is full)."""
        self.take(key)
        self._documents[key] = document
        self._size += len(document.html)
        while self._documents and (len(self._documents) > self.most or self._size > self.chars):
            _, old = self._documents.popitem(last=False)
            self._size -= len(old.html)

    def take(self, key: DocumentKey) -> SafeHTML | None:
        """The document kept for ``key``, removed from the table; None if there is none."""
        document = self._documents.pop(key, None)
        if document is not None:
            self._size -= len(document.html)
        return document
