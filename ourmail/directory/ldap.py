"""Directory login over LDAP (OpenLDAP, Active Directory) through ldaptor, the only module that
imports it (``pip install 'ourmail[ldap]'``).

A login searches the user's entry with a filter (default ``(|(mail=%s)(uid=%s))``, the name
escaped per RFC 4515 §3 so it can never widen the search), requires exactly one match, then
binds as that entry with the given password: LDAP checks the password, ourmail never sees a
hash.  The avatar is the entry's ``mail`` address.  When no server answers (every URL tried in
order, each with a time-out), the login fails with :class:`DirectoryUnavailable`, a temporary
error, never as a wrong password.

Settings come from a URL, as ``twistd ourmail --auth=ldap:URL`` takes them::

    ldap://host:389/dc=example,dc=org?bind=cn=mail,dc=example,dc=org&password_file=/etc/x
    ldaps://host:636/dc=example,dc=org          ldap://host/dc=...?starttls=1
    ldap://a/dc=example,dc=org ldap://b/dc=example,dc=org     (space-separated: failover)

Query options: ``bind`` (service DN), ``password_file``, ``filter``, ``starttls``,
``timeout`` (seconds), ``ca_file`` (for ``ldaps://`` and StartTLS; default: system roots).
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

import attrs
from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from zope.interface import implementer

from ourmail.addresses import AddressError, normalise_address
from ourmail.auth.login import LoginUnavailable
from ourmail.config import ConfigError

log = Logger()

DEFAULT_FILTER = "(|(mail=%s)(uid=%s))"


class DirectoryUnavailable(LoginUnavailable):
    """No LDAP server answered: a temporary failure (IMAP ``[UNAVAILABLE]``, POP3
    ``[SYS/TEMP]``, SMTP 454/451), never a wrong password."""


def escape_filter_value(value: str) -> str:
    """RFC 4515 §3: ``*``, ``(``, ``)``, ``\\`` and NUL as ``\\XX`` escapes."""
    out = []
    for ch in value:
        out.append(f"\\{ord(ch):02x}" if ch in "*()\\\0" else ch)
    return "".join(out)


@attrs.frozen
class LDAPServer:
    host: str
    port: int
    tls: str  # "none", "starttls" or "ldaps"


@attrs.frozen
class LDAPSettings:
    servers: tuple[LDAPServer, ...]
    base: str
    user_filter: str = DEFAULT_FILTER
    bind_dn: str = ""
    password_file: Path | None = None
    timeout: float = 10.0
    ca_file: Path | None = None

    @classmethod
    def from_urls(cls, text: str) -> LDAPSettings:
        """Parse one or more space-separated LDAP URLs (see the module docstring)."""
        servers, base, options = [], None, {}
        for url in text.split():
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
                raise ConfigError(f"not an LDAP URL: {url!r}")
            query = dict(urllib.parse.parse_qsl(parts.query))
            tls = "ldaps" if parts.scheme == "ldaps" else "none"
            if query.get("starttls", "0") not in ("0", "", "no", "false"):
                tls = "starttls"
            port = parts.port or (636 if tls == "ldaps" else 389)
            servers.append(LDAPServer(parts.hostname, port, tls))
            path = urllib.parse.unquote(parts.path.lstrip("/"))
            if base is not None and path and path != base:
                raise ConfigError("every LDAP URL must name the same base DN")
            base = path or base
            options |= query
        if not servers or not base:
            raise ConfigError("the LDAP URL needs a base DN: ldap://host:389/dc=example,dc=org")
        user_filter = options.get("filter", DEFAULT_FILTER)
        if "%s" not in user_filter:
            raise ConfigError("the LDAP user filter must contain %s for the login name")
        try:
            timeout = float(options.get("timeout", 10))
        except ValueError:
            raise ConfigError("the LDAP timeout must be a number of seconds") from None
        return cls(
            servers=tuple(servers),
            base=base,
            user_filter=user_filter,
            bind_dn=options.get("bind", ""),
            password_file=Path(options["password_file"]) if "password_file" in options else None,
            timeout=timeout,
            ca_file=Path(options["ca_file"]) if "ca_file" in options else None,
        )

    def bind_password(self) -> str:
        if self.password_file is None:
            return ""
        try:
            return self.password_file.read_text("utf-8").strip()
        except OSError as e:
            raise ConfigError(f"cannot read the LDAP password file: {e.strerror}") from e


class Connection:
    """One LDAP connection: the first server that answers, in order."""

    def __init__(self, settings: LDAPSettings, reactor: IReactorCore) -> None:
        self.settings, self.reactor = settings, reactor

    @inlineCallbacks
    def open(self) -> Deferred[Any]:
        from ldaptor.protocols.ldap.ldapclient import LDAPClient

        last: Exception | None = None
        for server in self.settings.servers:
            try:
                endpoint = self._endpoint(server)
                d = endpoints.connectProtocol(endpoint, LDAPClient())
                d.addTimeout(self.settings.timeout, self.reactor)
                client = yield d
                if server.tls == "starttls":
                    yield client.startTLS(self._tls(server))
                return client
            except Exception as e:  # refused, timed out, TLS failed: try the next server
                why = str(e) or type(e).__name__
                log.warn(
                    "LDAP server {host}:{port} unavailable: {why}",
                    host=server.host,
                    port=server.port,
                    why=why,
                )
                last = e
        raise DirectoryUnavailable(f"no LDAP server answered ({last})")

    def _endpoint(self, server: LDAPServer) -> Any:
        if server.tls == "ldaps":
            return endpoints.wrapClientTLS(
                self._tls(server),
                endpoints.HostnameEndpoint(self.reactor, server.host, server.port),
            )
        return endpoints.HostnameEndpoint(
            self.reactor, server.host, server.port, timeout=self.settings.timeout
        )

    def _tls(self, server: LDAPServer) -> Any:
        from ourmail.net.tls import verified_client_context

        return verified_client_context(server.host, self.settings.ca_file)


@implementer(ICredentialsChecker)
class LDAPChecker:
    """Checks a login name and password by searching the entry and binding as it."""

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, settings: LDAPSettings, reactor: IReactorCore) -> None:
        self.settings = settings
        self.reactor = reactor

    @inlineCallbacks
    def requestAvatarId(self, creds: credentials.IUsernamePassword) -> Deferred[str]:
        from ldaptor.protocols.ldap import ldaperrors, ldapsyntax

        try:
            name = _text(creds.username).strip()
            password = _text(creds.password)
        except UnicodeDecodeError:
            raise error.UnauthorizedLogin() from None
        if not name or not password:
            # RFC 4513 §5.1.2: an empty password is an "unauthenticated bind", which succeeds.
            raise error.UnauthorizedLogin()
        client = yield Connection(self.settings, self.reactor).open()
        try:
            try:
                yield client.bind(self.settings.bind_dn, self.settings.bind_password())
                value = escape_filter_value(name)
                search = self.settings.user_filter.replace("%s", value)
                base = ldapsyntax.LDAPEntry(client, self.settings.base)
                found = yield base.search(filterText=search, attributes=["mail"], sizeLimit=2)
            except ldaperrors.LDAPException as e:
                raise DirectoryUnavailable(f"LDAP search failed: {e}") from None
            if len(found) != 1:
                raise error.UnauthorizedLogin()
            entry = found[0]
            mails = [_text(v) for v in entry.get("mail", ())]
            try:
                yield client.bind(entry.dn.getText(), password)
            except ldaperrors.LDAPInvalidCredentials:
                raise error.UnauthorizedLogin() from None
            except ldaperrors.LDAPException as e:
                raise DirectoryUnavailable(f"LDAP bind failed: {e}") from None
        finally:
            client.transport.loseConnection()
        for mail in mails:
            try:
                return normalise_address(mail)
            except AddressError:
                continue
        log.warn("LDAP entry {dn} has no usable mail address", dn=entry.dn.getText())
        raise error.UnauthorizedLogin()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
