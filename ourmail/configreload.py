"""SIGHUP re-reads the configuration (docs/admin.md, "Reloading"): what changed is logged one
line per setting; the settings that can change while the server runs (:data:`LIVE`) take
effect, those that need a restart keep their running value and say so, and a file that does
not parse changes nothing (the parser's reason is logged).

The file is read in a thread; the changes are applied in the reactor thread by the
``apply`` callables the service gives (ourmail/livesettings.py), so open sessions are never
touched from elsewhere.  One read at a time: SIGHUPs that come during a read make one more
read after it, so a slow read of an older version of the file is never applied after the
newer one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from ourmail.config import ConfigError, Settings

log = Logger()

#: The settings applied while running (dotted: a table, or a table's key).  Everything else
#: needs a restart: the listeners, the data folder, the domains, the filter chain...
LIVE = ("limits", "log.recipients", "metrics.networks")
#: Settings whose name in ``Settings`` is not their place in ourmail.toml (config.py): the
#: name, or the first part of it, as the admin writes it.
IN_THE_FILE = {
    "data_dir": "data",
    "tls_certificate": "[tls] certificate",
    "tls_key": "[tls] key",
    "ldap_url": "[ldap] url",
    "mx_processes": "[smtp] mx_processes",
    "auth_throttle": "[auth]",
    "auth_cache": "[auth]",
}


@attrs.frozen
class Change:
    """One setting whose value in the file differs from the running one."""

    #: Dotted name: ``limits.max_message_size``, ``hostname``.
    name: str
    old: Any
    new: Any

    @property
    def live(self) -> bool:
        """Whether it takes effect without a restart."""
        return any(self.name == p or self.name.startswith(p + ".") for p in LIVE)

    @property
    def setting(self) -> str:
        """As the admin writes it in ourmail.toml: ``[limits] max_message_size``, ``[ldap]
        url``, ``[auth]`` (its keys are named otherwise in the file)."""
        first = self.name.partition(".")[0]
        if first in IN_THE_FILE:
            return IN_THE_FILE[first]
        table, _, key = self.name.rpartition(".")
        return f"[{table}] {key}" if table else key


def changes(old: Any, new: Any, prefix: str = "") -> list[Change]:
    """The settings that differ between two attrs objects of one class, nested tables
    compared key by key."""
    found = []
    for field in attrs.fields(type(old)):
        a, b = getattr(old, field.name), getattr(new, field.name)
        if a == b:
            continue
        name = prefix + field.name
        if attrs.has(type(a)) and type(a) is type(b):
            found += changes(a, b, name + ".")
        else:
            found.append(Change(name, a, b))
    return found


def _take(current: Any, new: Any, path: Sequence[str]) -> Any:
    """``current`` with the value at ``path`` taken from ``new``."""
    head, rest = path[0], path[1:]
    value = _take(getattr(current, head), getattr(new, head), rest) if rest else getattr(new, head)
    return attrs.evolve(current, **{head: value})


def live_part(current: Settings, new: Settings) -> Settings:
    """``current`` with every :data:`LIVE` setting taken from ``new``."""
    for name in LIVE:
        current = _take(current, new, name.split("."))
    return current


class ConfigReload:
    """Re-reads the configuration with ``reread`` (``load_settings`` with the command line's
    options) and hands the live part of it to each of ``apply``."""

    def __init__(
        self,
        settings: Settings,
        reread: Callable[[], Settings],
        apply: Sequence[Callable[[Settings], None]],
        announce: bool = True,
        in_thread: Callable[[Callable[[], Settings]], Deferred[Settings]] = deferToThread,
    ) -> None:
        #: The settings in effect: the live ones as last reloaded, the others as started.
        self.settings = settings
        self.reread = reread
        self.apply = list(apply)
        #: Whether to log what changed and what was refused (an MX worker process applies
        #: quietly: its master says it once for all).
        self.announce = announce
        self.in_thread = in_thread
        #: Whether the server started with a file: then a file gone (moved away during an
        #: edit, say) is refused, not read as an empty one (every setting back to its default).
        path = settings.config_path
        self.had_file = path is not None and path.exists()
        #: Whether a read is under way, and who waits for the next one.
        self._reading = False
        self._waiting: list[Deferred[None]] = []

    def reload(self) -> Deferred[None]:
        """Read the file (in a thread), then apply it; fires when done (never fails).  During
        a read, wait for it and read once more."""
        done: Deferred[None] = Deferred()
        self._waiting.append(done)
        if not self._reading:
            self._read()
        return done

    def _read(self) -> None:
        waiting, self._waiting = self._waiting, []
        self._reading = True
        applied = self.in_thread(self._reread).addCallback(self._loaded)
        applied.addErrback(self._refused).addCallback(self._done, waiting)

    def _reread(self) -> Settings:
        """In the thread: the file again (ConfigError when it is gone)."""
        path = self.settings.config_path
        if self.had_file and path is not None and not path.exists():
            raise ConfigError(f"cannot read {path}: it is gone")
        return self.reread()

    def _done(self, _: None, waiting: list[Deferred[None]]) -> None:
        self._reading = False
        for done in waiting:
            done.callback(None)
        if self._waiting:
            self._read()

    def _refused(self, failure: Failure) -> None:
        if not self.announce:
            return
        where = self.settings.config_path
        if isinstance(failure.value, ConfigError):
            log.error(
                "configuration not reloaded, the running one stays: {reason}",
                reason=str(failure.value),
                path=str(where),
            )
        else:
            log.failure("configuration not reloaded, the running one stays", failure)

    def _loaded(self, new: Settings) -> None:
        found = changes(self.settings, new)
        if self.announce:
            _announce(found)
        if any(change.live for change in found):
            self.settings = live_part(self.settings, new)
            for apply in self.apply:
                apply(self.settings)


def _announce(found: Sequence[Change]) -> None:
    """One line per changed setting: its new value when live, only its name otherwise."""
    if not found:
        log.info("configuration reloaded: nothing changed")
    for change in found:
        if change.live:
            log.info(
                "configuration reloaded: {setting} is now {new} (was {old})",
                setting=change.setting,
                new=change.new,
                old=change.old,
            )
        else:  # values left out: some name secrets (an LDAP URL, a relay's password file)
            log.warn(
                "configuration: {setting} changed but needs a restart; the old value "
                "stays until then",
                setting=change.setting,
            )
