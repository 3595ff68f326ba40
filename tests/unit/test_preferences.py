"""Each user's settings file (ourmail.prefs): durable writes, the last write wins whole, no
address names a path of its own, other processes' writes are seen, bad values refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import _ensure_reactor
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.threads import blockingCallFromThread

from ourmail.prefs import MAX_BYTES, PreferenceFiles


def run(call: Callable[..., Any], *args: Any) -> Any:
    """``call`` on the reactor thread, waiting for its Deferred."""
    _ensure_reactor()
    return blockingCallFromThread(reactor, call, *args)


@pytest.fixture
def prefs(tmp_path: Path) -> PreferenceFiles:
    return PreferenceFiles(tmp_path / "prefs")


def test_a_value_is_kept_and_read_back_after_a_restart(
    prefs: PreferenceFiles, tmp_path: Path
) -> None:
    assert prefs.get("ann@example.test", "signature") is None
    run(prefs.set, "ann@example.test", "signature", "Ann\nMinistry of Mail")
    run(prefs.set, "ann@example.test", "images", ["news@example.org"])
    again = PreferenceFiles(tmp_path / "prefs")
    assert again.get("ANN@example.test", "signature") == "Ann\nMinistry of Mail"
    assert again.get("ann@example.test", "images") == ["news@example.org"]
    assert again.get("bob@example.test", "signature") is None
    run(again.set, "ann@example.test", "signature", None)
    assert PreferenceFiles(tmp_path / "prefs").get("ann@example.test", "signature") is None


def test_concurrent_writes_of_one_user_all_land(prefs: PreferenceFiles) -> None:
    run(lambda: gatherResults([prefs.set("ann@x.test", f"k{i}", i) for i in range(20)]))
    assert [prefs.get("ann@x.test", f"k{i}") for i in range(20)] == list(range(20))


@pytest.mark.parametrize("user", ["../../etc/passwd", "a/b@x", "\x00@x", "é@παράδειγμα.δοκιμή"])
def test_no_address_escapes_the_folder(prefs: PreferenceFiles, tmp_path: Path, user: str) -> None:
    run(prefs.set, user, "k", 1)
    path = prefs.path(user)
    assert path.resolve().is_relative_to((tmp_path / "prefs").resolve())
    assert json.loads(path.read_text()) == {"k": 1}


def test_a_write_by_another_process_is_seen(prefs: PreferenceFiles, tmp_path: Path) -> None:
    run(prefs.set, "ann@x.test", "k", 1)
    assert prefs.get("ann@x.test", "k") == 1
    run(PreferenceFiles(tmp_path / "prefs").set, "ann@x.test", "k", 2)
    assert prefs.get("ann@x.test", "k") == 2


def test_bad_values_and_keys_are_refused(prefs: PreferenceFiles) -> None:
    with pytest.raises(ValueError):
        prefs.set("ann@x.test", "k", object())
    with pytest.raises(ValueError):
        prefs.set("ann@x.test", "", 1)
    with pytest.raises(ValueError):
        run(prefs.set, "ann@x.test", "big", "x" * (MAX_BYTES + 1))
    assert prefs.get("ann@x.test", "big") is None


def test_a_damaged_file_reads_as_defaults(prefs: PreferenceFiles) -> None:
    path = prefs.path("ann@x.test")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"{not json")
    assert prefs.get("ann@x.test", "k") is None
    path.write_bytes(b"[1, 2]")
    assert prefs.get("ann@x.test", "k") is None
