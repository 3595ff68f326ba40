"""Directory login over LDAP (OpenLDAP, Active Directory) through ldaptor, the only module that
imports it (a dependency of ourmail; :mod:`ourmail.preflight` checks it loads at start-up).

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
``timeout`` (seconds), ``ca_file`` (for ``ldaps://`` and StartTLS; default: system roots),
``address_filter``, ``alternate``, ``quota``, ``disabled``, and ``schema=ad`` for Active
Directory's attributes (:data:`SCHEMAS`; options given beside it win).
"""

from __future__ import annotations

import collections
import re
import urllib.parse
from pathlib import Path
from typing import Any

import attrs
from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, DeferredSemaphore, inlineCallbacks
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from zope.interface import implementer

from ourmail.addresses import AddressError, normalise_address
from ourmail.config import ConfigError, QuotaLimit
from ourmail.interfaces import Contact, DirectoryUnavailable, IDirectory, Recipient

log = Logger()

DEFAULT_FILTER = "(|(mail=%s)(uid=%s))"
#: How a recipient address is found: its main or an extra address.
ADDRESS_FILTER = "(|(mail=%s)(mailAlternateAddress=%s))"
#: Object classes of a group whose ``mail`` reaches its members (``group``: Active Directory).
_GROUP_CLASSES = {"groupofnames", "groupofuniquenames", "group"}

#: Option defaults by directory schema (``schema=`` in the URL): OpenLDAP-style (the default)
#: and Active Directory, where people log in by ``mail``, ``userPrincipalName`` or
#: ``sAMAccountName``, extra addresses are ``proxyAddresses`` (``smtp:a@b``), and bit 2 of
#: ``userAccountControl`` (ACCOUNTDISABLE) marks a disabled account.
SCHEMAS: dict[str, dict[str, str]] = {
    "rfc": {
        "filter": DEFAULT_FILTER,
        "address_filter": ADDRESS_FILTER,
        "alternate": "mailAlternateAddress",
        "quota": "mailQuota",
        "disabled": "mailAccountStatus=disabled",
    },
    "ad": {
        "filter": "(&(objectCategory=person)(objectClass=user)"
        "(|(mail=%s)(userPrincipalName=%s)(sAMAccountName=%s)))",
        "address_filter": "(|(mail=%s)(proxyAddresses=smtp:%s))",
        "alternate": "proxyAddresses",
        "quota": "mailQuota",
        "disabled": "userAccountControl&2",
    },
}
#: Cached lookups at most (the oldest go first).
CACHE_ENTRIES = 10_000
#: Entries read to expand one group, nested groups included.
MAX_MEMBERS = 1000


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
    address_filter: str = ADDRESS_FILTER
    #: The attribute with a user's extra addresses.
    alternate_attribute: str = "mailAlternateAddress"
    #: What marks a disabled account (its mail is refused, its login too):
    #: ``attribute=value`` (any value, case-insensitive) or ``attribute&bits`` (an integer
    #: with any of those bits set).
    disabled: str = "mailAccountStatus=disabled"
    #: The attribute with a user's storage quota in bytes, and the one naming the host that
    #: holds the mailbox (kept for the scale-out design; one host today).
    quota_attribute: str = "mailQuota"
    host_attribute: str = "mailHost"
    #: Seconds a lookup (never a password) is remembered.
    cache_ttl: float = 60.0
    #: Idle connections kept for lookups, and the most open at once.
    pool_size: int = 4
    max_connections: int = 16

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
        schema = options.pop("schema", "rfc").lower()
        if schema not in SCHEMAS:
            raise ConfigError(f"unknown LDAP schema {schema!r}: use {' or '.join(SCHEMAS)}")
        options = SCHEMAS[schema] | options
        user_filter = options["filter"]
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
            address_filter=options["address_filter"],
            alternate_attribute=options["alternate"],
            quota_attribute=options["quota"],
            disabled=_checked_disabled(options["disabled"]),
        )

    @property
    def disabled_attribute(self) -> str:
        """The attribute the ``disabled`` option tests (empty: none)."""
        return re.split("[=&]", self.disabled, maxsplit=1)[0]

    def user_attributes(self) -> list[str]:
        """What is read of a user's entry."""
        return ["mail", self.alternate_attribute, self.disabled_attribute,
                self.quota_attribute, self.host_attribute]  # fmt: skip

    def is_disabled(self, entry: Any) -> bool:
        attribute = self.disabled_attribute
        if not attribute:
            return False
        values = _values(entry, attribute)
        if self.disabled.startswith(attribute + "&"):  # a flag word, such as AD's
            bits = int(self.disabled.partition("&")[2], 0)
            return any(_as_int(v) & bits for v in values)
        wanted = self.disabled.partition("=")[2].lower()
        return wanted in {v.lower() for v in values}

    def within(self, d: Deferred[Any], reactor: IReactorCore) -> Deferred[Any]:
        """``d``, failed with a TimeoutError unless it fires within ``timeout`` seconds: a
        server that accepts connections but does not answer is as good as down."""
        return d.addTimeout(self.timeout, reactor)  # type: ignore[arg-type]

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
        #: The client connected last (bound or not yet).
        self.client: Any = None

    @inlineCallbacks
    def open(self) -> Deferred[Any]:
        """A connection bound as the service DN (anonymous without one)."""
        from ldaptor.protocols.ldap.ldapclient import LDAPClient

        last: Exception | None = None
        for server in self.settings.servers:
            try:
                endpoint = self._endpoint(server)
                d = endpoints.connectProtocol(endpoint, LDAPClient())
                d.addTimeout(self.settings.timeout, self.reactor)
                client = self.client = yield d
                if server.tls == "starttls":
                    yield self.settings.within(client.startTLS(self._tls(server)), self.reactor)
                # The service bind is the first exchange: a certificate that does not verify
                # fails here, and the next server is tried.
                bind = client.bind(self.settings.bind_dn, self.settings.bind_password())
                yield self.settings.within(bind, self.reactor)
                return client
            except ConfigError:
                raise
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


def answers(settings: LDAPSettings, reactor: IReactorCore) -> Deferred[bool]:
    """Whether an LDAP server of ``settings`` takes the service bind now (the probe of
    ``ourmail_backend_up{backend="ldap"}``); the connection is closed at once.  Fails with
    :class:`DirectoryUnavailable` when none does or when cancelled (the probe's time-out),
    and then aborts the connection, so a wedged server does not collect one every round."""
    return Deferred.fromCoroutine(_answers(Connection(settings, reactor)))


async def _answers(connection: Connection) -> bool:
    try:
        client = await connection.open()
    except Exception:
        # Cancelled (``open`` then fails with DirectoryUnavailable) or refused: the last
        # connection, maybe still waiting for the bind's answer, goes.
        if connection.client is not None and connection.client.transport is not None:
            connection.client.transport.abortConnection()
        raise
    client.transport.loseConnection()
    return True


@implementer(ICredentialsChecker)
class LDAPChecker:
    """Checks a login name and password by searching the entry and binding as it."""

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(
        self,
        settings: LDAPSettings,
        reactor: IReactorCore,
        directory: LDAPDirectory | None = None,
    ) -> None:
        self.settings = settings
        self.reactor = reactor
        #: Told each user's addresses at login, for ``may_send_as``.
        self.directory = directory

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
                value = escape_filter_value(name)
                search = self.settings.user_filter.replace("%s", value)
                base = ldapsyntax.LDAPEntry(client, self.settings.base)
                wanted = self.settings.user_attributes()
                found = yield self.settings.within(
                    base.search(filterText=search, attributes=wanted, sizeLimit=2), self.reactor
                )
            except Exception as e:  # an LDAP error or a broken connection
                raise DirectoryUnavailable(f"LDAP search failed: {e}") from None
            if len(found) != 1 or self.settings.is_disabled(found[0]):
                raise error.UnauthorizedLogin()
            entry = found[0]
            mails = _values(entry, "mail")
            extra = _values(entry, self.settings.alternate_attribute)
            try:
                yield self.settings.within(client.bind(entry.dn.getText(), password), self.reactor)
            except ldaperrors.LDAPInvalidCredentials:
                raise error.UnauthorizedLogin() from None
            except Exception as e:
                raise DirectoryUnavailable(f"LDAP bind failed: {e}") from None
        finally:
            client.transport.loseConnection()
        addresses = _addresses(mails + extra)
        if addresses:
            if self.directory is not None:
                self.directory.remember(addresses[0], addresses, entry)
            return addresses[0]
        log.warn("LDAP entry {dn} has no usable mail address", dn=entry.dn.getText())
        raise error.UnauthorizedLogin()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _values(entry: Any, attribute: str) -> list[str]:
    """An entry's values of ``attribute`` as text (none if it has none)."""
    return [_text(v) for v in entry.get(attribute, ())]


_DISABLED = re.compile(r"[A-Za-z][\w;.-]*(=.*|&(0x[0-9a-fA-F]+|[0-9]+))")


def _checked_disabled(text: str) -> str:
    """The ``disabled`` option, refused unless it is ``attribute=value`` or ``attribute&bits``
    (empty: no account is disabled by an attribute)."""
    if text and not _DISABLED.fullmatch(text):
        raise ConfigError(
            f"the LDAP disabled option must be attribute=value or attribute&bits, not {text!r}"
        )
    return text


def _as_int(value: str) -> int:
    """An INTEGER attribute value (0 when it is not one)."""
    try:
        return int(value.strip())
    except ValueError:
        return 0


def _addresses(values: list[str]) -> list[str]:
    """The values that are addresses, normalised, in order.

    Active Directory's ``proxyAddresses`` hold typed values: ``SMTP:main@x`` and
    ``smtp:extra@x`` are addresses; ``X500:``, ``SIP:`` and other types are not.
    """
    out = []
    for value in values:
        kind, colon, rest = value.partition(":")
        if colon and "@" not in kind:
            if kind.lower() != "smtp":
                continue
            value = rest
        try:
            out.append(normalise_address(value))
        except AddressError:
            continue
    return out


class SearchPool:
    """Bound connections for lookups (as the service DN), reused; a broken one is replaced.
    At most ``max_connections`` are open at once: a burst of lookups (a message to many
    recipients, many MX sessions) queues for them instead of opening one connection each."""

    def __init__(self, settings: LDAPSettings, reactor: IReactorCore) -> None:
        self.settings, self.reactor = settings, reactor
        self._idle: list[Any] = []
        self._slots = DeferredSemaphore(settings.max_connections)

    def search(self, filter_text: str, attributes: list[str], base: str | None = None,
               scope: Any = None, size_limit: int = 0) -> Deferred[list[Any]]:  # fmt: skip
        """The entries under ``base`` (default: the base DN) matching ``filter_text``; with a
        ``size_limit``, at most that many (RFC 4511 §4.5.1.5: the server stops there, and
        the entries found so far are the answer)."""
        return self._slots.run(self._search, filter_text, attributes, base, scope, size_limit)

    @inlineCallbacks
    def _search(
        self,
        filter_text: str,
        attributes: list[str],
        base: str | None,
        scope: Any,
        size_limit: int = 0,
    ) -> Deferred[list[Any]]:
        from ldaptor.protocols.ldap import ldaperrors, ldapsyntax

        for attempt in range(2):
            client = self._idle.pop() if self._idle else None
            if client is None or not client.connected:
                client = yield Connection(self.settings, self.reactor).open()
            try:
                entry = ldapsyntax.LDAPEntry(client, base or self.settings.base)
                kwargs: dict[str, Any] = {} if scope is None else {"scope": scope}
                if size_limit:
                    # RFC 4511 §4.5.1.5/6: the server's own limits too, in entries and seconds
                    kwargs |= {
                        "sizeLimit": size_limit,
                        "sizeLimitIsNonFatal": True,
                        "timeLimit": max(1, int(self.settings.timeout)),
                    }
                found = yield self.settings.within(
                    entry.search(filterText=filter_text, attributes=attributes, **kwargs),
                    self.reactor,
                )
            except ldaperrors.LDAPNoSuchObject:
                found = []
            except Exception as e:  # the connection broke: once more with a new one
                client.transport.loseConnection()
                if attempt:
                    raise DirectoryUnavailable(f"LDAP search failed: {e}") from None
                continue
            if len(self._idle) < self.settings.pool_size:
                self._idle.append(client)
            else:
                client.transport.loseConnection()
            return found
        raise DirectoryUnavailable("LDAP search failed")


@implementer(IDirectory)
class LDAPDirectory:
    """Recipients from LDAP, after the local accounts (service mailboxes stay local).

    An entry found by ``address_filter`` is a user (its main ``mail`` is the mailbox, its
    alternate addresses deliver there) or a group (``groupOfNames``/``groupOfUniqueNames``,
    or AD's ``group``, with a ``mail``: mail reaches every member, nested groups expanded).
    A disabled user is unknown.  Lookups are cached for ``cache_ttl`` seconds; when LDAP does
    not answer, :class:`DirectoryUnavailable`.
    """

    def __init__(self, settings: LDAPSettings, reactor: IReactorCore, local: IDirectory) -> None:
        self.settings, self.reactor, self.local = settings, reactor, local
        self.pool = SearchPool(settings, reactor)
        self._cache: collections.OrderedDict[str, tuple[float, Recipient]] = (
            collections.OrderedDict()
        )
        self._addresses: dict[str, set[str]] = {}
        self._quotas: dict[str, int | None] = {}
        #: user -> the ``mailHost`` of their entry (for the scale-out design; not used yet)
        self.hosts: dict[str, str | None] = {}

    def is_local_domain(self, domain: str) -> bool:
        return self.local.is_local_domain(domain)

    def remember(self, user: str, addresses: list[str], entry: Any) -> None:
        """What a login or lookup learnt of ``user``: addresses (for :meth:`may_send_as`),
        quota (for :meth:`quota`) and mail host."""
        self._addresses[user] = set(addresses)
        quota = _values(entry, self.settings.quota_attribute)
        self._quotas[user] = int(quota[0]) if quota and quota[0].isdigit() else None
        hosts = _values(entry, self.settings.host_attribute)
        self.hosts[user] = hosts[0] if hosts else None
        for table in (self._addresses, self._quotas, self.hosts):
            if len(table) > CACHE_ENTRIES:
                table.pop(next(iter(table)))  # type: ignore[attr-defined]

    def quota(self, user: str) -> QuotaLimit | None:
        """The user's storage limit from the directory, if it sets one."""
        limit = self._quotas.get(user)
        return None if limit is None else QuotaLimit(bytes=limit or None)

    def may_send_as(self, user: str, address: str) -> bool:
        return self.local.may_send_as(user, address) or address in self._addresses.get(user, ())

    def identities(self, user: str) -> list[str]:
        """The local directory's, then the addresses of the user's entry that their login
        or a lookup brought in."""
        own = self.local.identities(user)
        return own + sorted(self._addresses.get(user, set()) - set(own))

    @inlineCallbacks
    def search(self, text: str, limit: int) -> Deferred[list[Contact]]:
        """Local users and aliases first, then entries with a ``mail`` whose address or
        ``cn`` contains ``text`` (escaped, RFC 4515 §3), at most ``limit`` in all."""
        found: list[Contact] = yield self.local.search(text, limit)
        if len(found) >= limit:
            return found
        value = escape_filter_value(text)
        alternate = self.settings.alternate_attribute
        entries = yield self.pool.search(
            f"(&(mail=*)(|(mail=*{value}*)(cn=*{value}*)({alternate}=*{value}*)))",
            ["mail", "cn", "displayName"],
            size_limit=limit,
        )
        known = {c.address for c in found}
        for entry in entries:
            mails = _addresses(_values(entry, "mail"))
            names = _values(entry, "displayName") or _values(entry, "cn")
            if mails and mails[0] not in known and len(found) < limit:
                known.add(mails[0])
                found.append(Contact(mails[0], names[0] if names else ""))
        return found

    @inlineCallbacks
    def lookup(self, address: str) -> Deferred[Recipient]:
        found = yield self.local.lookup(address)  # also says "remote" for other domains
        if found.kind != "unknown":
            return found
        now = self.reactor.seconds()  # type: ignore[attr-defined]
        cached = self._cache.get(address)
        if cached is not None and cached[0] > now:
            return cached[1]
        recipient = yield self._ask(address)
        self._cache[address] = (now + self.settings.cache_ttl, recipient)
        self._cache.move_to_end(address)
        if len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return recipient

    @inlineCallbacks
    def _ask(self, address: str) -> Deferred[Recipient]:
        s = self.settings
        wanted = [*s.user_attributes(), "objectClass", "member", "uniqueMember"]
        entries = yield self.pool.search(
            s.address_filter.replace("%s", escape_filter_value(address)), wanted
        )
        if len(entries) != 1:
            if entries:
                log.warn("LDAP: {n} entries have the address {a}", n=len(entries), a=address)
            return Recipient("unknown", address)
        entry = entries[0]
        if _is_group(entry):
            members = yield self._members(entry)
            if not members:
                # Accepting would acknowledge mail that reaches nobody: refuse it instead.
                log.warn("LDAP group {a} has no member to deliver to", a=address)
                return Recipient("unknown", address)
            local = tuple(m for m in members if self.is_local_domain(m.rpartition("@")[2]))
            remote = tuple(m for m in members if m not in local)
            return Recipient("alias", address, local, remote)
        if s.is_disabled(entry):
            return Recipient("unknown", address)
        mails = _addresses(_values(entry, "mail"))
        if not mails:
            return Recipient("unknown", address)
        extra = _addresses(_values(entry, s.alternate_attribute))
        self.remember(mails[0], mails + extra, entry)
        if mails[0] == address:
            return Recipient("user", address)
        return Recipient("alias", address, (mails[0],))

    @inlineCallbacks
    def _members(self, group: Any) -> Deferred[list[str]]:
        """The main addresses of a group's members: enabled users, and the members of nested
        groups (each group once, so a loop ends; :data:`MAX_MEMBERS` entries read at most)."""
        from ldaptor.protocols import pureldap

        out: list[str] = []
        seen = {group.dn.getText().lower()}
        pending = collections.deque(_member_dns(group))
        wanted = ["objectClass", "mail", "member", "uniqueMember", self.settings.disabled_attribute]
        while pending and len(seen) <= MAX_MEMBERS:
            dn = pending.popleft()
            if dn.lower() in seen:
                continue
            seen.add(dn.lower())
            found = yield self.pool.search(
                "(objectClass=*)", wanted, base=dn, scope=pureldap.LDAP_SCOPE_baseObject
            )
            for entry in found:
                if _is_group(entry):
                    pending.extend(_member_dns(entry))
                    continue
                mails = _addresses(_values(entry, "mail"))
                if mails and not self.settings.is_disabled(entry) and mails[0] not in out:
                    out.append(mails[0])
        if pending and len(seen) > MAX_MEMBERS:
            log.warn("LDAP group {dn}: more than {n} members, the rest left out",
                     dn=group.dn.getText(), n=MAX_MEMBERS)  # fmt: skip
        return out


def _is_group(entry: Any) -> bool:
    return bool({c.lower() for c in _values(entry, "objectClass")} & _GROUP_CLASSES)


def _member_dns(group: Any) -> list[str]:
    """A group's member DNs.  Active Directory sends a group of more than 1,500 members as
    ``member;range=0-1499``: that first range is read (more than :data:`MAX_MEMBERS`)."""
    names = [_text(k) for k in group]
    ranged = [k for k in names if k.lower().startswith("member;range=")]
    return [v for k in ["member", "uniqueMember", *ranged] for v in _values(group, k)]
