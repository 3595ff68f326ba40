"""``ourmail ldap test ADDRESS``: ask the configured directory about an address, and say what
mail to it would do; ``ourmail ldap login NAME``: check a login name and password, and say
which mailbox it opens.  The way to check an ``[ldap] url`` before users depend on it."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING, Any

from twisted.internet import task
from twisted.internet.defer import Deferred, inlineCallbacks

from ourmail import preflight
from ourmail.addresses import AddressError, normalise_address
from ourmail.auth.accounts import AccountDB
from ourmail.config import ConfigError, Settings
from ourmail.directory.local import LocalDirectory
from ourmail.interfaces import DirectoryUnavailable

if TYPE_CHECKING:
    from ourmail.directory.ldap import LDAPSettings


def add_parser(topics: Any, common: argparse.ArgumentParser) -> None:
    ldap = topics.add_parser("ldap", parents=[common], help="the LDAP directory ([ldap] url)")
    cmds = ldap.add_subparsers(dest="command", required=True)
    p = cmds.add_parser("test", parents=[common], help="look an address up in the directory")
    p.add_argument("address")
    p.set_defaults(func=test)
    p = cmds.add_parser(
        "login", parents=[common], help="check a login name and password against the directory"
    )
    p.add_argument("name", help="what the user types as login name (mail, uid, sAMAccountName…)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(func=login)


def _ldap_settings(settings: Settings) -> LDAPSettings:
    """The configured ``[ldap] url``, checked before the reactor starts: a missing or bad URL,
    or a file it names that cannot be read, is a ConfigError, printed as such."""
    from ourmail.directory.ldap import LDAPSettings

    if not settings.ldap_url:
        raise ConfigError("no [ldap] url in the configuration")
    preflight.check_ldap(settings.ldap_url)
    return LDAPSettings.from_urls(settings.ldap_url)


def login(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    """Exit status 0 when the name and password log in, 1 otherwise."""
    ldap = _ldap_settings(settings)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
    else:
        raise ConfigError("no terminal to ask for the password: use --password-stdin")
    task.react(lambda reactor: _login(reactor, ldap, args.name, password))


@inlineCallbacks
def _login(reactor: Any, ldap: LDAPSettings, name: str, password: str) -> Deferred[None]:
    from twisted.cred import credentials, error

    from ourmail.directory.ldap import LDAPChecker

    _print_servers(ldap)
    creds = credentials.UsernamePassword(name.encode("utf-8"), password.encode("utf-8"))
    try:
        mailbox = yield LDAPChecker(ldap, reactor).requestAvatarId(creds)
    except DirectoryUnavailable as e:
        print(f"{name}: not checked, the directory did not answer: {e}")
        raise SystemExit(1) from None
    except error.UnauthorizedLogin:
        print(f"{name}: refused (unknown, several entries match, disabled, or wrong password)")
        raise SystemExit(1) from None
    print(f"{name}: logs in; the mailbox is {mailbox}")


def _print_servers(ldap: LDAPSettings) -> None:
    servers = ", ".join(f"{s.host}:{s.port} ({s.tls})" for s in ldap.servers)
    print(f"directory: {servers}, base {ldap.base}")


def test(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    ldap = _ldap_settings(settings)
    try:
        address = normalise_address(args.address, settings.primary_domain)
    except AddressError as e:
        raise ConfigError(str(e)) from None
    local = LocalDirectory(db, settings.domains)
    task.react(lambda reactor: _lookup(reactor, ldap, local, address))


@inlineCallbacks
def _lookup(
    reactor: Any, ldap: LDAPSettings, local: LocalDirectory, address: str
) -> Deferred[None]:
    from ourmail.directory.ldap import LDAPDirectory

    _print_servers(ldap)
    directory = LDAPDirectory(ldap, reactor, local)
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
