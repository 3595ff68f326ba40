"""Settings the set-up wizard chooses, written into ``ourmail.toml`` (docs/setup-wizard.md).

The file is edited as a document with ``tomlkit``, which keeps every comment, blank line and
setting of the admin's own as they were: a key the wizard sets gets the comment ``# set by the
set-up wizard on <date>`` above it and replaces the old value in place (a key the file does
not set yet is added above ``domains``, or at the top of its table).  A file that does not
parse (the admin edited it into invalid TOML meanwhile) is left alone and refused with the
parser's reason.  The new file replaces the old one atomically (``write_atomic``: whole, and
on disk before the wizard says it is done); when ``ourmail.toml`` is a symbolic link, the file
it points to is the one replaced, and the link stays.

Blocking (reads, fsyncs): the server calls it in a thread.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.container import Container
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import Comment, Key, Table

from ourmail.config import ConfigError, read_config_file
from ourmail.fsutil import write_atomic
from ourmail.interfaces import AccountRefused

#: The comment above each value the wizard writes (``{date}``: YYYY-MM-DD, UTC).
MARK = "set by the set-up wizard on {date}"
_MARK_START = "# set by the set-up wizard on "


def mark(today: datetime.date | None = None) -> str:
    """The comment text for values written ``today`` (default: today, UTC)."""
    day = today or datetime.datetime.now(datetime.UTC).date()
    return MARK.format(date=day.isoformat())


def config_lines(top: Mapping[str, Any], tables: Mapping[str, Mapping[str, Any]]) -> str:
    """The settings as lines of TOML, for an admin whose configuration is elsewhere to copy."""
    doc = tomlkit.document()
    for key, value in top.items():
        doc.add(key, value)
    for name, values in tables.items():
        table = tomlkit.table()
        for key, value in values.items():
            table.add(key, value)
        doc.add(name, table)
    return tomlkit.dumps(doc)


def update_config(
    path: Path,
    top: Mapping[str, Any],
    tables: Mapping[str, Mapping[str, Any]],
    keep: Mapping[str, tuple[str, ...]] | None = None,
    today: datetime.date | None = None,
) -> None:
    """Set the top-level keys ``top`` and, in each table of ``tables``, its keys, in the
    configuration file ``path``; keys named in ``keep`` (table -> keys) are left as the
    admin set them when the file has them.  Raises :class:`AccountRefused` (``bad-config``)
    when the file does not parse or the result would not be a valid configuration; nothing
    is written then."""
    # A symbolic link stays one: the file it points to is replaced, next to itself.
    real = path.resolve()
    try:
        old = real.read_text("utf-8")
        doc = tomlkit.parse(old)
    except FileNotFoundError:
        old, doc = "", tomlkit.document()
    except (OSError, UnicodeDecodeError, TOMLKitError) as e:
        raise AccountRefused("bad-config", f"{path}: {e}", str(path)) from None
    comment = mark(today)
    new = tomlkit.document()
    _copy_with(doc.body, new, top, comment, before="domains")
    for name, values in tables.items():
        table = new.get(name)
        if table is not None and not isinstance(table, Table):
            raise AccountRefused("bad-config", f"{path}: [{name}] is not a table", str(path))
        kept = set((keep or {}).get(name, ())) & set(table or ())
        wanted = {k: v for k, v in values.items() if k not in kept}
        if not wanted:
            continue
        rebuilt = tomlkit.table()
        _copy_with(table.value.body if table is not None else [], rebuilt, wanted, comment, None)
        if table is None:
            new.add(name, rebuilt)
        else:
            new[name] = rebuilt
    text = tomlkit.dumps(new)
    tmp = real.with_name(f".{real.name}.check")
    try:
        tmp.write_text(text, "utf-8")
        read_config_file(tmp)  # the server must be able to read what it is given
    except ConfigError as e:
        raise AccountRefused("bad-config", f"{path}: {e}", str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)
    mode = os.stat(real).st_mode & 0o777 if old else 0o640
    write_atomic(real, text.encode("utf-8"), mode)


def _is_mark(item: Any) -> bool:
    return isinstance(item, Comment) and item.as_string().strip().startswith(_MARK_START)


def _copy_with(
    body: list[tuple[Key | None, Any]],
    into: Container | Table,
    values: Mapping[str, Any],
    comment: str,
    before: str | None,
) -> None:
    """Copy the items of ``body`` into ``into`` with ``values`` set: a key already there is
    replaced where it is, the others go above the key ``before`` (or the first table; None:
    at the top), each below the ``comment`` mark; an earlier run's marks are dropped."""
    present = {k.key for k, _ in body if k is not None}
    missing = [k for k in values if k not in present]
    anchor = before if before in present else None

    def add_marked(key: str) -> None:
        into.add(tomlkit.comment(comment))
        into.add(key, values[key])

    pending = True
    if before is None:
        for name in missing:
            add_marked(name)
        pending = False
    for index, (key, item) in enumerate(body):
        following = body[index + 1][0] if index + 1 < len(body) else None
        if key is None and _is_mark(item) and following is not None and following.key in values:
            continue  # an earlier run's mark: replaced by today's
        found = None if key is None else key.key
        if pending and (found == anchor or (anchor is None and isinstance(item, Table))):
            for k in missing:
                add_marked(k)
            pending = False
        if key is None:
            into.add(item)
        elif key.key in values:
            add_marked(key.key)
        else:
            into.append(key, item)
    if pending:
        for name in missing:
            add_marked(name)
