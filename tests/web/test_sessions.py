"""The web session table: ids, expiry, the bound on its size, and the realm's logout."""

from __future__ import annotations

from twisted.internet import task

from ourmail.auth.login import Session as Login
from ourmail.web.sessions import SessionStore, same_token


class User:
    address = "alice@example.test"


def login(ended: list[str], name: str = "s") -> Login:
    return Login(User(), lambda: ended.append(name))


def test_ids_are_random_and_256_bits() -> None:
    store = SessionStore(task.Clock())
    a, b = store.create(login([])), store.create(login([]))
    assert a.id != b.id and a.csrf != b.csrf and a.id != a.csrf
    assert len(a.id) == 43  # base64url of 32 bytes
    assert store.get(a.id) is a and store.get("nope") is None and store.get(None) is None


def test_expiry_calls_the_realms_logout_once() -> None:
    clock, ended = task.Clock(), []
    store = SessionStore(clock, idle=60, absolute=300)
    session = store.create(login(ended))
    clock.advance(59)
    assert store.get(session.id) is session
    clock.advance(60)
    assert store.get(session.id) is None
    assert ended == ["s"]
    store.end(session)
    assert ended == ["s"]


def test_the_table_is_bounded() -> None:
    clock, ended = task.Clock(), []
    store = SessionStore(clock, max_sessions=3)
    first = store.create(login(ended, "first"))
    second = store.create(login(ended, "second"))
    store.create(login(ended, "third"))
    store.get(first.id)  # used: the least recently used is now "second"
    store.create(login(ended, "fourth"))
    assert len(store) == 3
    assert ended == ["second"]
    assert store.get(second.id) is None and store.get(first.id) is first


def test_expired_sessions_are_swept_when_new_ones_come() -> None:
    clock, ended = task.Clock(), []
    store = SessionStore(clock, idle=60)
    store.create(login(ended, "old"))
    clock.advance(61)
    store.create(login(ended, "new"))
    assert ended == ["old"] and len(store) == 1


def test_tokens_compare_safely() -> None:
    assert same_token("abc", "abc")
    assert not same_token("abd", "abc")
    assert not same_token(None, "abc")
    assert not same_token("", "abc")
