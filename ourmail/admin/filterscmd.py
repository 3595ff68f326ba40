"""``ourmail filters list``: the filter chain as the server builds it from ``[filters]``, so a
check or option that cannot work shows here exactly as it would stop the server."""

from __future__ import annotations

import argparse
from typing import Any

from ourmail.auth.accounts import AccountDB
from ourmail.config import Settings
from ourmail.interfaces import STAGES


def add_parser(topics: Any, common: argparse.ArgumentParser) -> None:
    filters = topics.add_parser("filters", parents=[common], help="checks on arriving mail")
    cmds = filters.add_subparsers(dest="command", required=True)
    p = cmds.add_parser("list", parents=[common], help="the active chain, in order")
    p.set_defaults(func=list_chain)


def list_chain(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    from twisted.internet import reactor

    from ourmail.service import filter_checks  # the whole server: only for this command

    config = settings.filters
    if not config.chain:
        print("no checks: mail is accepted for local recipients without filtering")
        print("(set [filters] chain in ourmail.toml; see docs/filters.md)")
        return
    chain = filter_checks(settings, reactor, None)  # type: ignore[arg-type]
    listeners = ["smtp (MX)"]
    if config.check_submission:
        listeners.append("submission")
    if config.check_lmtp:
        listeners.append("lmtp")
    print(f"authserv-id: {chain.authserv_id}; runs on: {', '.join(listeners)}")
    print(f"DNS: {', '.join(settings.dns.servers) or '/etc/resolv.conf'}")
    for number, (name, check) in enumerate(zip(config.chain, chain.checks, strict=True), 1):
        stages = ", ".join(s for s in STAGES if s in check.stages)
        everywhere = "; also submission and lmtp" if check.trusted else ""
        print(
            f"{number}. {name}: at {stages}; time-out {check.timeout:g} s, "
            f"on failure {check.on_error}{everywhere}"
        )
        for key, value in sorted(config.options.get(name, {}).items()):
            print(f"     {key} = {value!r}")
