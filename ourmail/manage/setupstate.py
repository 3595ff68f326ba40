"""The set-up wizard's durable state: ``<data>/setup.json`` (docs/setup-wizard.md).

First start writes it (open, no step done) just before it creates the postmaster account of
a new data folder; the wizard rewrites it after each step, atomically and fsynced
(``write_atomic``), so a reload or a restart resumes where the admin was, and keeps it once
set-up is finished (closed), so that it is never written afresh.  Without the file (a data
folder from before the wizard, or one set up by hand) the wizard is closed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from ourmail.config import Settings
from ourmail.dns.fromsettings import configured_ports
from ourmail.fsutil import write_atomic
from ourmail.interfaces import SETUP_STEPS, PublishRecord, SetupState

#: The file's name in the data folder.
FILE_NAME = "setup.json"


def state_path(data_dir: Path) -> Path:
    """Where the state of the set-up of ``data_dir`` is kept."""
    return data_dir / FILE_NAME


def open_setup(data_dir: Path) -> None:
    """Mark a new data folder as not set up yet: ``/setup`` opens."""
    save(data_dir, SetupState(open=True))


def load(data_dir: Path) -> SetupState:
    """The state kept in ``data_dir`` (closed when there is none, or it is unreadable: a
    broken file must not reopen the wizard to the network)."""
    try:
        raw = json.loads(state_path(data_dir).read_bytes())
    except (OSError, ValueError):
        return SetupState()
    if not isinstance(raw, dict):
        return SetupState()
    return _from_json(raw)


def save(data_dir: Path, state: SetupState) -> None:
    """Replace the kept state with ``state``, durably."""
    data = json.dumps(attrs.asdict(state), indent=1, ensure_ascii=True).encode("ascii")
    write_atomic(state_path(data_dir), data + b"\n", 0o600)


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def _from_json(raw: dict[str, Any]) -> SetupState:
    records = raw.get("dkim") if isinstance(raw.get("dkim"), list) else []
    return SetupState(
        open=raw.get("open") is True,
        done=tuple(s for s in _strings(raw.get("done")) if s in SETUP_STEPS),
        hostname=str(raw.get("hostname") or ""),
        domains=_strings(raw.get("domains")),
        users=_strings(raw.get("users")),
        config=str(raw.get("config") or ""),
        config_lines=str(raw.get("config_lines") or ""),
        restart=_strings(raw.get("restart")),
        dkim=tuple(
            PublishRecord(str(r.get("name", "")), str(r.get("type", "")), str(r.get("value", "")))
            for r in records or []
            if isinstance(r, dict)
        ),
    )


def setup_url(settings: Settings) -> str:
    """Where the wizard is: ``https://<host name>[:<web port>]/setup`` (the port as the
    ``web`` listener is configured; left out for 443, or when it is not a TCP port)."""
    port = configured_ports(settings.listen).get("web")
    where = settings.hostname if port in (None, 443) else f"{settings.hostname}:{port}"
    return f"https://{where}/setup"
