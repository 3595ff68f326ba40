"""``ourmail vault verify``, ``vault head`` and ``vault export``: the vault's proof
(docs/vault.md#verify-and-export).

``verify`` reads every segment once and names every problem; it exits 1 when the vault is
not whole.  ``head`` prints the last record's seq and hash, and with ``--sign`` signs them
with the server's TLS key into ``<data>/vault/heads.log``.  ``export`` writes chosen
messages as mbox or zip with a manifest and the chain proof, and is audited twice: an
``audit`` record in the vault and a line in ``<data>/log/audit.log``.
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import attrs
from cryptography import x509

from ourmail.auth.accounts import AccountDB
from ourmail.config import Settings
from ourmail.interfaces import Actor, VaultQuery
from ourmail.manage.accountops import served_domains
from ourmail.manage.audit import AuditFile, unix_user
from ourmail.secure.certfiles import ACMEFiles
from ourmail.vault import heads
from ourmail.vault.export import FORMATS, ExportError, export, parse_seqs, select
from ourmail.vault.indexer import caught_up_index
from ourmail.vault.records import FormatError
from ourmail.vault.scan import entries
from ourmail.vault.segments import Damaged, SegmentLog
from ourmail.vault.vault import vault_log
from ourmail.vault.verify import Anchor, parse_anchor, signed_anchors, verify

#: A day in seconds.
DAY = 86400.0


def signing_pair(settings: Settings) -> tuple[Path, Path]:
    """The certificate and key the server serves: ACME's once it has one, else ``[tls]``."""
    acme = ACMEFiles.of(settings.data_dir)
    if settings.acme.enabled and acme.certificate.exists() and acme.key.exists():
        return acme.certificate, acme.key
    return settings.tls_certificate, settings.tls_key


def trusted_certificates(settings: Settings, given: list[Path]) -> list[x509.Certificate] | None:
    """The certificates whose keys may sign heads: the server's (``[tls]``, and ACME's when
    it has one) and those given with ``--trust``; None when there is none to check with."""
    acme = ACMEFiles.of(settings.data_dir)
    found: list[x509.Certificate] = []
    for path in (settings.tls_certificate, acme.certificate):
        with contextlib.suppress(OSError, ValueError):
            found.append(x509.load_pem_x509_certificate(path.read_bytes()))
    for path in given:
        try:
            found.append(x509.load_pem_x509_certificate(path.read_bytes()))
        except (OSError, ValueError) as e:
            _fail(f"--trust {path}: not a PEM certificate that can be read: {e}")
    return found or None


def _older_than(log: SegmentLog, age: float) -> bool:
    """Whether the vault's first record is older than ``age`` seconds."""
    try:
        for first in entries(log):
            return float(first.fields.get("time", time.time())) < time.time() - age
    except (OSError, FormatError):
        return False
    return False


def _fail(text: str) -> NoReturn:
    print(f"ourmail: {text}", file=sys.stderr)
    raise SystemExit(1)


def verify_cmd(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    log = vault_log(settings)
    try:
        anchors: list[Anchor] = [parse_anchor(a) for a in args.anchor]
    except ValueError as e:
        _fail(str(e))
    files = [Path(p) for p in args.anchors]
    default = log.root / heads.HEADS_LOG
    if not files and default.exists():
        files.append(default)
    try:
        for path in files:
            anchors.extend(signed_anchors(path))
    except heads.HeadError as e:
        _fail(str(e))
    try:
        report = verify(
            log,
            anchors,
            local_domains=served_domains(settings, db),
            trusted=trusted_certificates(settings, [Path(p) for p in args.trust]),
        )
    except OSError as e:
        _fail(f"the vault cannot be read: {e}")
    if not args.anchors and not default.exists() and _older_than(log, 2 * DAY):
        report.warnings.append(
            f"{default} is missing, yet the vault holds records more than two days old and "
            "the server signs its head every midnight UTC: it was removed, or the server has "
            "not run since; only heads kept off this server can tell"
        )
    if args.json:
        print(json.dumps(report.as_json(), indent=2, ensure_ascii=False))
    else:
        for problem in report.problems:
            print(problem.text)
        if report.more:
            print(f"… and {report.more} more problems")
        for note in report.notes:
            print(f"note: {note}")
        for warning in report.warnings:
            print(f"WARNING: {warning}")
        print(report.summary())
    if not report.ok:
        raise SystemExit(1)


def head_cmd(settings: Settings, db: object, args: argparse.Namespace) -> None:
    log = vault_log(settings)
    seq, digest = log.head()
    if not args.sign:
        print(f"{seq} {digest}")
        return
    if seq == 0:
        _fail("the vault is empty: there is no head to sign")
    audit, actor = AuditFile(settings.data_dir), Actor(unix_user(), "cli")
    certificate, key = signing_pair(settings)
    try:
        head = heads.sign(log.root, seq, digest, certificate, key)
    except (heads.HeadError, OSError) as e:
        audit.record(actor, "vault.head.sign", str(seq), "failed", str(e))
        _fail(str(e))
    audit.record(actor, "vault.head.sign", str(seq), "ok", head.fingerprint)
    print(head.line())


def _day(text: str | None, end: bool) -> float | None:
    if not text:
        return None
    try:
        day = time.strptime(text, "%Y-%m-%d")
    except ValueError:
        _fail(f"not a date as YYYY-MM-DD: {text!r}")
    return float(calendar.timegm(day) + (86400 if end else 0))


def query_of(args: argparse.Namespace) -> VaultQuery:
    """The search criteria given (the same options as ``ourmail vault search``)."""
    return VaultQuery(
        sender=args.sender or "",
        recipient=args.recipient or "",
        address=args.address or "",
        start=_day(args.since, False),
        end=_day(args.until, True),
        subject=args.subject or "",
        words=args.words or "",
        attachment=args.attachment or "",
        message_id=args.message_id or "",
    )


def _description(args: argparse.Namespace, query: VaultQuery) -> str:
    parts = ["all"] if args.all else []
    parts += [f"seq {','.join(args.seq)}"] if args.seq else []
    given = {k: v for k, v in sorted(attrs.asdict(query).items()) if v not in ("", None)}
    parts += [f"{k}={v}" for k, v in given.items()]
    return "; ".join(parts)


def _audit_record(
    log: SegmentLog, actor: Actor, description: str, count: int, detail: dict[str, Any]
) -> None:
    """Append and fsync an ``audit`` record of an export (OSError or Damaged when it cannot
    be written)."""
    fields = {
        "action": "export",
        "by": actor.who,
        "query": description,
        "count": count,
        "detail": detail,
    }
    with log.locked():
        log.append([("audit", fields, None)], time.time())
        log.sync()


def export_cmd(settings: Settings, db: object, args: argparse.Namespace) -> None:
    log = vault_log(settings)
    query = query_of(args)
    if not (args.seq or args.all or not query.empty()):
        _fail("choose the messages: --seq, --all, or search criteria (--from, --to, …)")
    description = _description(args, query)
    audit, actor = AuditFile(settings.data_dir), Actor(unix_user(), "cli")
    out = Path(args.out)
    try:
        index = None if query.empty() else caught_up_index(log)
        chosen = select(log, parse_seqs(args.seq), args.all, query, index)
    except ExportError as e:
        audit.record(actor, "vault.export", str(out), "refused", f"{description}: {e}")
        _fail(str(e))
    # The start is on disk before anything is written, so no export exists unaudited, even
    # after a crash between writing it and recording its result.
    started = {"result": "started", "format": args.format, "out": str(out.absolute())}
    try:
        _audit_record(log, actor, description, len(chosen), started)
    except (OSError, Damaged) as e:
        audit.record(actor, "vault.export", str(out), "failed", f"{description}: {e}")
        _fail(f"the export's audit record cannot be written, so it is not made: {e}")
    audit.record(actor, "vault.export", str(out), "started", json.dumps(started, sort_keys=True))
    try:
        done = export(log, chosen, args.format, out, description)
    except (ExportError, OSError) as e:
        result = "refused" if isinstance(e, ExportError) else "failed"
        # When this cannot be written either, the start record stands and the audit.log
        # line below says why the export ended.
        with contextlib.suppress(OSError, Damaged):
            _audit_record(log, actor, description, 0, dict(started, result=result, error=str(e)))
        audit.record(actor, "vault.export", str(out), result, f"{description}: {e}")
        _fail(str(e) if isinstance(e, ExportError) else f"the export could not be written: {e}")
    detail: dict[str, Any] = {
        "result": "ok",
        "format": done.format,
        "out": str(done.out.resolve()),
        "sha256": done.sha256,
        "octets": done.octets,
        "head": done.head[0],
    }
    try:
        _audit_record(log, actor, description, done.count, detail)
    except (OSError, Damaged) as e:
        audit.record(actor, "vault.export", str(out), "failed", f"{description}: {e}")
        _fail(f"the export is written and its start audited, but its result record is not: {e}")
    audit.record(actor, "vault.export", str(out), "ok", json.dumps(detail, sort_keys=True))
    for path in done.files:
        print(path)
    rate = done.octets / 1e6 / done.seconds if done.seconds else 0.0
    left = f"; {done.left_out} chosen records left out" if done.left_out else ""
    print(
        f"{done.count} messages, {done.octets} octets in {done.seconds:.2f} s "
        f"({rate:.1f} MB/s), sha256 {done.sha256}{left} (expired {done.expired}, "
        f"damaged {done.damaged}); proof to head {done.head[0]}"
    )


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """``vault verify``, ``vault head`` and ``vault export`` (they set ``func``)."""
    p = sub.add_parser("verify", parents=[common], help="check every record of the vault")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.add_argument(
        "--anchor", action="append", default=[], metavar="SEQ:HASH", help="a head taken earlier"
    )
    p.add_argument(
        "--anchors",
        action="append",
        default=[],
        metavar="FILE",
        help="signed heads (default: <data>/vault/heads.log when it exists)",
    )
    p.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="CERT.pem",
        help="a certificate whose key may have signed heads (besides the server's TLS one)",
    )
    p.set_defaults(func=verify_cmd)
    p = sub.add_parser("head", parents=[common], help="the last record's seq and hash")
    p.add_argument("--sign", action="store_true", help="sign it with the TLS key, into heads.log")
    p.set_defaults(func=head_cmd)
    p = sub.add_parser("export", parents=[common], help="messages as mbox or zip, with proof")
    p.add_argument("--seq", action="append", default=[], help="seqs and ranges: 7, 1-500, 3,9")
    p.add_argument("--all", action="store_true", help="every message")
    p.add_argument("--format", choices=FORMATS, default="zip")
    p.add_argument("--out", required=True, help="the file to write (must not exist)")
    p.add_argument("--from", dest="sender", help="search: the sender")
    p.add_argument("--to", dest="recipient", help="search: a recipient")
    p.add_argument("--address", help="search: any address")
    p.add_argument("--since", help="search: arrived on or after YYYY-MM-DD (UTC)")
    p.add_argument("--until", help="search: arrived on or before YYYY-MM-DD (UTC)")
    p.add_argument("--subject", help="search: words in the subject")
    p.add_argument("--words", help="search: words in the subject or body")
    p.add_argument("--attachment", help="search: an attachment's name")
    p.add_argument("--message-id", help="search: the Message-ID")
    p.set_defaults(func=export_cmd)
