"""JSON lines: every log event as one JSON object a line, for log shippers.

Two ways to switch it on (docs/logging.md):

* ``[log] format = "json"`` in ``ourmail.toml``: :class:`JSONLogged` gives twistd the
  observer as the application's ``ILogObserver`` component (what twistd documents for
  applications with their own log format), writing where twistd would have written its text:
  standard output under ``twistd -n`` (or ``--logfile=-``), else ``--logfile`` (default
  ``twistd.log``), rotated like twistd's own (by size, and on ``SIGUSR1``).
* ``twistd --logger=ourmail.logs.jsonlog.json_stdout``: twistd's own option, JSON to standard
  output whatever the configuration says (``--logger`` wins over the component).

Each line is :func:`twisted.logger.eventAsJSON` of the event (so
:func:`twisted.logger.eventsFromJSONLogFile` reads the file back) plus ``log_text``, the
line a person would have read.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import IO, Any

from twisted.application.service import IService, MultiService
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    eventAsJSON,
    formatEvent,
)
from twisted.python.logfile import LogFile

from ourmail.logs import events


def json_line(event: LogEvent) -> str:
    """One event as a JSON line (newline-terminated)."""
    return eventAsJSON({**event, "log_text": formatEvent(event)}) + "\n"


def worker_line(event: LogEvent) -> str:
    """How an MX worker process writes an event to the master (ourmail/mxworker.py): a
    structured event (one with an ``event`` field, :mod:`ourmail.logs.events`) as a JSON
    line that :func:`relayed` turns back into the event, anything else as its text, on one
    line (line breaks escaped) that does not begin with ``{``, so no text, whatever values
    it quotes, can pass for a structured event."""
    if "event" in event:
        return eventAsJSON(event) + "\n"
    text = (formatEvent(event) or "").replace("\r", "\\r").replace("\n", "\\n")
    return (" " + text if text.startswith("{") else text) + "\n"


#: The structured events an MX worker may relay: their text format and their fields (in the
#: order :mod:`ourmail.logs.events` gives them, which the fail2ban JSON regex relies on) with
#: the types they must have.  Anything else in a relayed line is dropped.
_RELAYED: dict[str, tuple[str, dict[str, type | tuple[type, ...]]]] = {
    "login": (
        events.LOGIN_FORMAT,
        {
            "outcome": str,
            "service": str,
            "client": str,
            "user": str,
            "mechanism": str,
            "result": str,
        },
    ),
    "smtp.transaction": (
        events.TRANSACTION_FORMAT,
        {
            "service": str,
            "client": str,
            "client_port": (int, str),
            "helo": str,
            "tls": str,
            "user": str,
            "sender": str,
            "mail_given": bool,
            "recipients": list,
            "rcpt_count": int,
            "rcpt_refused": int,
            "size": int,
            "message_id": str,
            "queue_id": str,
            "result": str,
            "code": int,
            "reply": str,
            "filters": str,
            "duration": (float, int),
        },
    ),
}


def _safe(value: str) -> str:
    """A worker's field value as it should be already: printable, bounded."""
    return value if value.isprintable() and len(value) <= 1000 else events.escaped(value, 1000)


def relayed(line: bytes, worker: int) -> LogEvent | None:
    """The structured event an MX worker wrote as ``line`` (:func:`worker_line`), to be
    published again in the master with a ``worker`` field and ``mx worker N:`` before its
    text; None when the line is not one.  Only ``login`` and ``smtp.transaction`` events
    are taken, rebuilt from their known fields (each of its type) with a fixed format,
    namespace and level."""
    try:
        data = json.loads(line.decode("utf-8"))
    except ValueError:
        return None
    kind = data.get("event") if isinstance(data, dict) else None
    if not isinstance(kind, str) or kind not in _RELAYED:
        return None
    fmt, types = _RELAYED[kind]
    event: dict[str, Any] = {"event": kind}
    for name, wanted in types.items():
        value = data.get(name)
        if not isinstance(value, wanted):
            return None
        if isinstance(value, str):
            value = _safe(value)
        elif isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                return None
            value = [_safe(v) for v in value[: events.MAX_RECIPIENTS]]
        event[name] = value
    when = data.get("log_time")
    event.update(
        worker=worker,
        log_format="mx worker {worker}: " + fmt,
        log_namespace=events.log.namespace,
        log_level=LogLevel.info,
        log_time=when if isinstance(when, float | int) else time.time(),
        log_source=None,
    )
    return event


def json_observer(out: IO[Any]) -> FileLogObserver:
    """An observer writing every event to ``out`` as a JSON line."""
    return FileLogObserver(out, json_line)


def json_stdout() -> FileLogObserver:
    """The ``twistd --logger`` factory: JSON lines on standard output."""
    return json_observer(sys.stdout)


def _rotate_on_sigusr1(logfile: LogFile) -> None:
    """What twistd does for its own log file: ``kill -USR1`` rotates it (unless something
    else handles the signal already)."""
    if signal.getsignal(signal.SIGUSR1) in (None, signal.SIG_DFL, 0):

        def rotate(_signum: int, _frame: object) -> None:
            from twisted.internet import reactor

            reactor.callFromThread(logfile.rotate)  # type: ignore[attr-defined]

        signal.signal(signal.SIGUSR1, rotate)


def observer_for(twistd_options: Any) -> FileLogObserver:
    """The JSON observer for where twistd's options send the log: standard output for
    ``--logfile=-`` or ``-n`` without ``--logfile``, else the ``--logfile`` (``twistd.log``
    by default) as a rotating :class:`~twisted.python.logfile.LogFile`."""
    options = twistd_options if twistd_options is not None else {}
    name = options.get("logfile") or ""
    if name == "-" or (options.get("nodaemon", True) and not name):
        return json_observer(sys.stdout)
    logfile = LogFile.fromFullPath(name or "twistd.log")  # type: ignore[no-untyped-call]
    _rotate_on_sigusr1(logfile)
    return json_observer(logfile)


class JSONLogged(MultiService):
    """The whole server (its one child) under an application that logs JSON lines: when
    twistd attaches it to the application, it sets the application's ``ILogObserver``
    component, which twistd uses instead of its text observer.  ``--syslog`` is left alone."""

    def __init__(self, service: IService, twistd_options: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.options = twistd_options
        service.setServiceParent(self)  # type: ignore[no-untyped-call]

    def setServiceParent(self, parent: Any) -> None:
        """Join ``parent``; if it is twistd's application, give it the JSON observer."""
        syslog = self.options is not None and self.options.get("syslog")
        if hasattr(parent, "setComponent") and not syslog:
            parent.setComponent(ILogObserver, observer_for(self.options))
        super().setServiceParent(parent)  # type: ignore[no-untyped-call]
