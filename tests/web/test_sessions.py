"""The web session table: ids, expiry, the bound on its size, and the realm's logout."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet import task

from ourmail.auth.login import Session as Login
from ourmail.config import ConfigError, WebSettings, load_settings
from ourmail.web.sessions import SessionStore, SessionSweeper, same_token


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


def test_the_sweep_ends_expired_sessions_and_stopping_ends_all() -> None:
    clock, ended = task.Clock(), []
    store = SessionStore(clock, idle=60, absolute=100)
    busy = store.create(login(ended, "busy"))
    store.create(login(ended, "idle"))
    clock.advance(50)
    store.get(busy.id)
    clock.advance(20)
    store.sweep()
    assert ended == ["idle"]
    clock.advance(31)  # 101 s after the login, 51 s after its last use: over by age alone
    store.sweep()
    assert ended == ["idle", "busy"]
    store.create(login(ended, "a"))
    store.create(login(ended, "b"))
    sweeper = SessionSweeper(store)
    sweeper.clock = clock
    sweeper.startService()
    sweeper.stopService()
    assert ended[-2:] == ["a", "b"] and len(store) == 0


def test_session_times_come_from_the_config(tmp_path: Path) -> None:
    (tmp_path / "ourmail.toml").write_text(
        "[web]\nsession_idle = 600\nsession_lifetime = 3600\nmax_sessions = 50\n"
    )
    settings = load_settings(data=str(tmp_path), domains=("example.test",))
    assert settings.web == WebSettings(600, 3600, 50)
    (tmp_path / "ourmail.toml").write_text("[web]\nsession_idle = 0\n")
    with pytest.raises(ConfigError, match=r"web\.session_idle"):
        load_settings(data=str(tmp_path), domains=("example.test",))
