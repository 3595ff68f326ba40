"""twistd plugin: ``twistd ourmail`` and the ``ourmail`` strcred checker."""

from __future__ import annotations

import functools
from typing import Any

from twisted.application.service import IServiceMaker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.strcred import AuthOptionMixin, ICheckerFactory
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class Options(usage.Options, AuthOptionMixin):
    synopsis = "[options]"
    longdesc = (
        "Runs the ourmail mail server (SMTP, submission, IMAP, POP3). With no options it keeps "
        "its data in ./ourmail-data and listens on unprivileged ports; see docs/admin.md."
    )
    optParameters = [
        ["data", None, None, "Data directory (default ./ourmail-data)."],
        ["config", None, None, "Configuration file (default <data>/ourmail.toml)."],
        ["hostname", None, None, "Host name for greetings and the certificate."],
        ["log-format", None, None, "text or json (default: [log] format, else text)."],
        [
            "ports",
            None,
            None,
            "standard (25, 587, 993...) or unprivileged (2525, 2587, 1993...) for the "
            "default listeners (default: ports in the config file, else standard when the "
            "process may bind them: root or CAP_NET_BIND_SERVICE).",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["domain"] = []
        self["listen"] = []
        self["dns"] = []

    def postOptions(self) -> None:
        if self["log-format"] not in (None, "text", "json"):
            raise usage.UsageError("--log-format is text or json")

    def opt_domain(self, name: str) -> None:
        """A mail domain served here (repeatable; the first is the primary domain)."""
        self["domain"].append(name)

    def opt_dns(self, server: str) -> None:
        """A DNS server for every lookup, ADDRESS:PORT (repeatable; instead of [dns] servers)."""
        self["dns"].append(server)

    def opt_listen(self, spec: str) -> None:
        """SERVICE=ENDPOINT, e.g. imap=tcp:1143:interface=127.0.0.1, or SERVICE=none
        (repeatable; SERVICE: smtp submission submissions imap imaps pop3 pop3s)."""
        self["listen"].append(spec)


@implementer(IServiceMaker, IPlugin)
class OurmailServiceMaker:
    tapname = "ourmail"
    description = "An integrated mail server: ESMTP, IMAP4 and POP3 over a sharded Maildir."
    options = Options

    def makeService(self, options: Options) -> Any:
        from ourmail.config import ConfigError, load_settings
        from ourmail.service import HeldHangups, build

        HeldHangups.hold()  # a SIGHUP before the server runs must not end it
        try:
            reread = functools.partial(
                load_settings,
                data=options["data"],
                config=options["config"],
                domains=tuple(options["domain"]),
                hostname=options["hostname"],
                listen=tuple(options["listen"]),
                dns_servers=tuple(options["dns"]),
                ports=options["ports"],
            )
            settings = reread()  # SIGHUP reads it again with the same options
            checkers = options.get("credCheckers", [])
            service = build(settings, checkers=checkers, reread=reread).service
            if (options["log-format"] or settings.log.format) == "json":
                from ourmail.logs.jsonlog import JSONLogged

                return JSONLogged(service, options.parent)
            return service
        except ConfigError as e:
            raise SystemExit(f"ourmail: configuration error: {e}") from None


@implementer(ICheckerFactory, IPlugin)
class OurmailCheckerFactory:
    """``--auth=ourmail:DATA_DIR``: the local accounts of an ourmail data directory."""

    authType = "ourmail"
    authHelp = (
        "Local ourmail accounts (argon2id hashes in DATA_DIR/accounts.json); a name without @ "
        "is in the server's primary domain."
    )
    argStringFormat = "Path to an ourmail data directory."
    credentialInterfaces = (IUsernamePassword,)

    def generateChecker(self, argstring: str = "") -> Any:
        from pathlib import Path

        from ourmail.auth.accounts import AccountDB
        from ourmail.auth.checker import AccountChecker

        return AccountChecker(AccountDB(Path(argstring or "ourmail-data").absolute()))


@implementer(ICheckerFactory, IPlugin)
class LDAPCheckerFactory:
    """``--auth=ldap:URL``: log in against an LDAP directory (docs/ldap.md)."""

    authType = "ldap"
    authHelp = (
        "An LDAP directory: search the user's entry, then bind as it with the password. "
        "ldap://host:389/BASE-DN[?bind=DN&password_file=PATH&starttls=1&filter=...], ldaps:// "
        "for implicit TLS; several space-separated URLs for failover."
    )
    argStringFormat = "ldap://host:389/dc=example,dc=org[?options]"
    credentialInterfaces = (IUsernamePassword,)

    def generateChecker(self, argstring: str = "") -> Any:
        from twisted.internet import reactor

        from ourmail import preflight
        from ourmail.config import ConfigError

        try:
            preflight.check_ldap(argstring)
            from ourmail.directory.ldap import LDAPChecker, LDAPSettings

            return LDAPChecker(LDAPSettings.from_urls(argstring), reactor)
        except ConfigError as e:
            raise SystemExit(f"ourmail: --auth=ldap: {e}") from None


serviceMaker = OurmailServiceMaker()
checkerFactory = OurmailCheckerFactory()
ldapCheckerFactory = LDAPCheckerFactory()
