"""``ourmail dns``: the DNS records a domain needs (docs/dns.md).

``records DOMAIN`` prints them as a BIND zone-file snippet; ``check DOMAIN`` asks DNS for
each of them and prints one line per record, PASS, WARN or FAIL with the reason, and exits
with status 1 when any fails.  Both run their own reactor (``task.react``) for the queries.
The ports are the running server's (``<data>/listening.json``), else those ``[listen]`` and
the defaults for the user running the command give; a note on standard error says which.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import attrs
from twisted.internet import defer, task

from ourmail.auth.accounts import AccountDB
from ourmail.config import ConfigError, Settings, normalise_domain
from ourmail.dns.api import DomainRecords, check_domain, current_addresses, records_of
from ourmail.dns.fromsettings import mail_setup
from ourmail.dns.lookup import DEFAULT_TIMEOUT, Lookup, make_resolver
from ourmail.dns.records import MailSetup
from ourmail.net.portsfile import ports_file, running_ports


class DNSCommandError(Exception):
    """Bad arguments to ``ourmail dns`` (printed without a traceback)."""


def _lookup(settings: Settings, args: argparse.Namespace) -> Lookup:
    servers = [args.server] if args.server else settings.dns.servers
    try:
        resolver = make_resolver(servers)
    except ValueError as e:
        raise DNSCommandError(f"--server: {e}") from None
    if args.timeout is not None and not 0 < args.timeout <= 60:
        raise DNSCommandError("--timeout: seconds, more than 0 and at most 60")
    timeout = DEFAULT_TIMEOUT if args.timeout is None else (args.timeout,)
    return Lookup(resolver, timeout)


def _domain(settings: Settings, db: AccountDB, raw: str) -> str:
    domain = normalise_domain(raw)
    if domain not in settings.domains and domain not in db.domains():
        print(f"ourmail: note: {domain} is not a domain served here (`ourmail domain list`)",
              file=sys.stderr)  # fmt: skip
    return domain


async def _with_addresses(setup: MailSetup, lookup: Lookup) -> DomainRecords:
    """The records of ``setup`` with the addresses its host name has now."""
    addresses = await current_addresses(lookup, setup.hostname)
    return records_of(attrs.evolve(setup, addresses=addresses))


async def _records(setup: MailSetup, lookup: Lookup) -> int:
    """Print the zone snippet; 0 (nothing fails)."""
    sys.stdout.write((await _with_addresses(setup, lookup)).zone)
    return 0


async def _check(setup: MailSetup, lookup: Lookup) -> int:
    """Print one line per record and a count; the number of failures."""
    found = await _with_addresses(setup, lookup)
    results = await check_domain(lookup, found)
    for result in results:
        print(result.line())
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "warn", "fail")}
    print(f"{counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail")
    return counts["fail"]


def _react(work: Any) -> int:
    """Run ``work`` (a coroutine function of no arguments) on a reactor; its result."""
    status: list[int] = []

    async def main(reactor: Any) -> None:
        status.append(await work())

    try:
        task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor)))
    except SystemExit as e:
        if e.code:  # react exits non-zero when ``work`` raised (its traceback is logged)
            raise
    return status[0] if status else 1


def _ports_note(setup: MailSetup, running: bool, settings: Settings) -> None:
    """Say on standard error which ports the records name, and where they come from."""
    ports = ", ".join(f"{name} {port}" for name, port in sorted(setup.ports.items()))
    if running:
        where = f"those the running server listens on ({ports_file(settings.data_dir)})"
    else:
        where = (
            "from [listen], or where it names none the defaults for the user running this "
            "command (root and other users differ); no server is running on this data folder"
        )
    print(f"ourmail: note: ports {ports or 'none'}: {where}", file=sys.stderr)


def run(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    """The chosen ``dns`` command; raises DNSCommandError (exit status 1) when a check
    fails."""
    try:
        domain = _domain(settings, db, args.domain)
    except ConfigError as e:
        raise DNSCommandError(str(e)) from None
    lookup = _lookup(settings, args)
    running = running_ports(settings.data_dir)
    setup = mail_setup(settings, domain, ports=running)  # (reads the DKIM keys first)
    _ports_note(setup, running is not None, settings)
    work = _records if args.command == "records" else _check
    failed = _react(lambda: work(setup, lookup))
    if failed:
        raise DNSCommandError(f"{failed} record{'s' if failed != 1 else ''} of {domain} failed")


def add_parser(topics: Any, common: argparse.ArgumentParser) -> None:
    """The ``dns`` topic and its commands."""
    dns = topics.add_parser("dns", parents=[common], help="the DNS records a domain needs")
    cmds = dns.add_subparsers(dest="command", required=True)
    for name, help_ in (
        ("records", "print the records to publish, as a zone-file snippet"),
        ("check", "check each record in DNS now: PASS, WARN or FAIL (exit 1 if any fails)"),
    ):
        p = cmds.add_parser(name, parents=[common], help=help_)
        p.add_argument("domain")
        p.add_argument("--server", help="ask this DNS server (HOST:PORT) only; default: "
                       "[dns] servers, else the system's")  # fmt: skip
        p.add_argument("--timeout", type=float, help="seconds to wait for each answer "
                       "(default: 2, then 4 more)")  # fmt: skip
        p.set_defaults(func=run)
