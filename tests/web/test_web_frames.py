"""The message frame's tables (ourmail/web/frames.py): grants and handed-over documents are
unguessable, bounded, and taken once."""

from __future__ import annotations

from ourmail.web.frames import DocumentKey, FrameDocuments, Grant, PartGrants
from ourmail.web.safehtml import SafeHTML


def test_grants_are_random_and_bounded() -> None:
    grants = PartGrants(most=3)
    tokens = [grants.grant(Grant("s", "INBOX", 1, uid)) for uid in range(5)]
    assert len(set(tokens)) == 5 and all(len(t) >= 22 for t in tokens)
    assert grants.get(tokens[0]) is None  # the oldest went
    assert grants.get(tokens[4]) == Grant("s", "INBOX", 1, 4)
    assert grants.get(None) is None and grants.get("x" * 100) is None


def key(section: str) -> DocumentKey:
    return DocumentKey("s", "INBOX", 1, 7, section, False)


def test_documents_are_taken_once_and_bounded_by_count_and_size() -> None:
    docs = FrameDocuments(most=2, chars=10)
    docs.put(key("1"), SafeHTML("abc"))
    assert docs.take(key("1")) == SafeHTML("abc")
    assert docs.take(key("1")) is None
    for n in range(3):
        docs.put(key(str(n)), SafeHTML("x"))
    assert docs.take(key("0")) is None and docs.take(key("2")) == SafeHTML("x")
    docs.put(key("big"), SafeHTML("y" * 8))
    docs.put(key("bigger"), SafeHTML("z" * 8))  # over 10 characters: the older goes
    assert docs.take(key("big")) is None and docs.take(key("bigger")) is not None
    assert docs._size == 0
