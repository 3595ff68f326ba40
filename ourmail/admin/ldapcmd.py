"""``ourmail ldap test ADDRESS``: ask the configured directory about an address, and say what
mail to it would do; the way to check an ``[ldap] url`` before users depend on it."""

from __future__ import annotations

import argparse
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, inlineCallbacks

from ourmail.addresses import AddressError, normalise_address
from ourmail.auth.accounts import AccountDB
from ourmail.config import ConfigError, Settings
from ourmail.directory.local import LocalDirectory
from ourmail.interfaces import DirectoryUnavailable


def add_parser(topics: Any, common: argparse.ArgumentParser) -> None:
    ldap = topics.add_parser("ldap", parents=[common], help="the LDAP directory ([ldap] url)")
    cmds = ldap.add_subparsers(dest="command", required=True)
    p = cmds.add_parser("test", parents=[common], help="look an address up in the directory")
    p.add_argument("address")
    p.set_defaults(func=test)


def test(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    if not settings.ldap_url:
        raise ConfigError("no [ldap] url in the configuration")
    try:
        address = normalise_address(args.address, settings.primary_domain)
    except AddressError as e:
        raise ConfigError(str(e)) from None
    task.react(lambda reactor: _lookup(reactor, settings, db, address))


@inlineCallbacks
def _lookup(reactor: Any, settings: Settings, db: AccountDB, address: str) -> Deferred[None]:
    from ourmail.directory.ldap import LDAPDirectory, LDAPSettings

    ldap = LDAPSettings.from_urls(settings.ldap_url or "")
    servers = ", ".join(f"{s.host}:{s.port} ({s.tls})" for s in ldap.servers)
    print(f"directory: {servers}, base {ldap.base}")
    directory = LDAPDirectory(ldap, reactor, LocalDirectory(db, settings.domains))
    try:
        found = yield directory.lookup(address)
    except DirectoryUnavailable as e:
        print(f"{address}: the directory did not answer: {e}")
        return
    if found.kind == "user":
        print(f"{address}: a user; mail is delivered to the mailbox {found.address}")
    elif found.kind == "alias":
        targets = ", ".join([*found.targets, *found.forwards]) or "nobody"
        print(f"{address}: an address or group; mail goes to {targets}")
    elif found.kind == "remote":
        print(f"{address}: not in a local domain; mail is sent on")
    else:
        print(f"{address}: unknown (or disabled); mail to it is refused")
