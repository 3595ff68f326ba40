"""``ourmail vault``: the vault of every message (``<data>/vault``, docs/vault.md).

This module makes the ``vault`` topic and its ``status`` command; the vault's other commands
(search, verify, export, rules and holds) add themselves through their own modules'
``add_commands(sub, common)``.  ``status`` reads the catalog (catching it up with the segments
first) and never writes a record.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path
from typing import Any

from ourmail.admin import vaultindexcmd, vaultproofcmd, vaultrulescmd
from ourmail.config import Settings
from ourmail.vault.catalog import Catalog
from ourmail.vault.vault import vault_log


def status(settings: Settings) -> dict[str, Any]:
    """What ``ourmail vault status`` reports, as a JSON-ready dict."""
    log = vault_log(settings)
    vault_dir = settings.data_dir / "vault"
    catalog = Catalog(vault_dir, log)
    try:
        totals = catalog.totals()
    finally:
        catalog.close()
    roots: dict[str, dict[str, Any]] = {
        str(root / "segments"): {"segments": [], "octets": 0}
        for root in (vault_dir, *settings.vault.roots)
    }
    for number, path in log.segments():
        root = roots.setdefault(str(path.parent), {"segments": [], "octets": 0})
        size = path.stat().st_size
        root["segments"].append({"number": number, "octets": size})
        root["octets"] += size
    for folder, root in roots.items():
        root["free"] = _free(Path(folder))
    seq, digest = log.head()
    return {
        "records": dict(sorted(totals.kinds.items())),
        "messages": totals.captures,
        "shared_bodies": totals.shared,
        "original_octets": totals.original,
        "stored_octets": totals.stored,
        "ratio": round(totals.original / totals.stored, 2) if totals.stored else None,
        "roots": roots,
        "head": {"seq": seq, "hash": digest},
        "first_capture": totals.first,
        "last_capture": totals.last,
    }


def _free(folder: Path) -> int | None:
    """Octets free for unprivileged writers on the volume of ``folder`` (None: not there)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "none"
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def print_status(report: dict[str, Any]) -> None:
    kinds = ", ".join(f"{k} {n}" for k, n in report["records"].items()) or "none"
    print(f"records: {kinds}")
    print(
        f"messages: {report['messages']} captured, {report['shared_bodies']} of them with a "
        "body already stored (kept once)"
    )
    ratio = f" (ratio {report['ratio']}:1)" if report["ratio"] else ""
    print(
        f"octets: {report['original_octets']} as received, {report['stored_octets']} stored{ratio}"
    )
    for folder, root in report["roots"].items():
        free = "not there" if root["free"] is None else f"{root['free']} octets free"
        print(f"{folder}: {len(root['segments'])} segments, {root['octets']} octets; {free}")
        for segment in root["segments"]:
            print(f"  {segment['number']:08d}.seg  {segment['octets']} octets")
    print(f"head: seq {report['head']['seq']} hash {report['head']['hash']}")
    print(f"captures: first {_when(report['first_capture'])}, last {_when(report['last_capture'])}")


def vault_status(settings: Settings, db: object, args: argparse.Namespace) -> None:
    """``ourmail vault status [--json]``."""
    report = status(settings)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_status(report)


def add_parser(topics: Any, common: argparse.ArgumentParser) -> None:
    """The ``vault`` topic and its ``status`` command; the other parts' commands are added by
    their modules' ``add_commands(sub, common)``."""
    vault = topics.add_parser("vault", parents=[common], help="the vault of every message")
    sub = vault.add_subparsers(dest="command", required=True)
    p = sub.add_parser("status", parents=[common], help="records, sizes, volumes, the head")
    p.add_argument("--json", action="store_true", help="the same as JSON")
    p.set_defaults(func=vault_status)
    vaultrulescmd.add_commands(sub, common)
    vaultproofcmd.add_commands(sub, common)
    vaultindexcmd.add_commands(sub, common)
