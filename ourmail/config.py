"""Settings: embedded defaults < ``ourmail.toml`` < command-line options.

Everything an admin can set lives in :class:`Settings`.  :func:`load_settings` merges the three
layers and validates the result, raising :class:`ConfigError` with a message that names the
offending setting; the server refuses to start on a bad config rather than guess.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

#: Every listener the server knows, in start order.
SERVICES = (
    "smtp",
    "submission",
    "submissions",
    "lmtp",
    "imap",
    "imaps",
    "pop3",
    "pop3s",
    "web",
    "http",
)

#: Listeners that speak TLS from the first byte (the others offer STARTTLS/STLS).
IMPLICIT_TLS = frozenset({"submissions", "imaps", "pop3s", "web"})

#: (standard port, unprivileged port): docs/architecture.md#services-and-ports.
DEFAULT_PORTS: Mapping[str, tuple[int, int]] = {
    "smtp": (25, 2525),
    "submission": (587, 2587),
    "submissions": (465, 2465),
    "imap": (143, 1143),
    "imaps": (993, 1993),
    "pop3": (110, 1110),
    "pop3s": (995, 1995),
    # The webmail over HTTPS, and plain HTTP that only redirects to it (ourmail/web/).
    "web": (443, 8443),
    "http": (80, 8080),
}

DEFAULT_DATA_DIR = Path("ourmail-data")
CONFIG_NAME = "ourmail.toml"

_DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


class ConfigError(ValueError):
    """A setting is missing, unknown or invalid; the message says which."""


@attrs.frozen
class Limits:
    """Protocol limits. Each one answers with the protocol's own error when hit."""

    #: Largest message accepted by SMTP (advertised as SIZE) and by IMAP APPEND.
    max_message_size: int = 50 * 1024 * 1024
    #: Longest command line for SMTP, POP3 and IMAP (IMAP literals excluded).
    max_line_length: int = 8192
    #: Most recipients in one SMTP transaction (RFC 5321 §4.5.3.1.8 asks for at least 100).
    max_recipients: int = 1000
    #: Seconds of silence before a connection is closed (RFC 5321 §4.5.3.2.7; RFC 3501 §5.4).
    idle_timeout: int = 1800
    #: Protocol errors on one connection before it is closed.
    max_errors: int = 20
    #: Open connections per listener, in all and from one client address.  IMAP clients keep
    #: one or more connections open per user (IDLE), so the total is generous.
    max_connections: int = 10000
    max_connections_per_ip: int = 50
    #: SMTP commands on one connection (a spammer's endless RCPT loop ends here).
    max_commands: int = 10000
    #: Commands before a successful login (IMAP, POP3, SMTP submission): a client that has
    #: not logged in by then is closed, so unauthenticated sessions cannot linger and probe.
    max_commands_before_login: int = 100
    #: Seconds of silence allowed inside SMTP DATA (RFC 5321 §4.5.3.2.6 suggests 3 minutes).
    data_timeout: int = 180


@attrs.frozen
class QuotaLimit:
    """A storage limit; None means unlimited."""

    bytes: int | None = None
    messages: int | None = None


@attrs.frozen
class QuotaSettings:
    """Quota defaults: for everyone, per domain, and what an over-quota delivery is told."""

    default: QuotaLimit = QuotaLimit()
    domains: Mapping[str, QuotaLimit] = attrs.Factory(dict)
    #: Answer 552 5.2.2 (permanent) instead of 452 4.2.2 (RFC 3463 §3.3) when over quota.
    permanent: bool = False


@attrs.frozen
class ThrottleSettings:
    """Failed logins (``[auth]``): the delay before a failure's reply doubles per failure from
    one client up to ``max_delay``; ``client_limit`` failures lock that client out for
    ``client_lockout`` seconds, ``account_limit`` lock the account out (except from clients
    that logged in to it before) for ``account_lockout``; counts reset after ``window``."""

    base_delay: float = 0.5
    max_delay: float = 15.0
    window: float = 900.0
    client_limit: int = 50
    client_lockout: float = 900.0
    account_limit: int = 10
    account_lockout: float = 300.0


@attrs.frozen
class LoginCacheSettings:
    """The cache of verified logins (``[auth] cache_ttl``, ``cache_size``): a right password is
    remembered for ``ttl`` seconds (0: not at all), for at most ``size`` logins at once."""

    ttl: float = 60.0
    size: int = 10_000


#: What a POP3 deletion does (issue 6): hide from POP3, move to Trash, or erase.
POP3_DELETE_POLICIES = ("hide", "trash", "expunge")


@attrs.frozen
class Pop3Settings:
    """POP3 rules: the deletion policy (default, per domain; ``ourmail user pop3-delete``
    overrides it per user) and the minimum time between logins (RFC 2449 §6.5 LOGIN-DELAY)."""

    delete: str = "hide"
    domains: Mapping[str, str] = attrs.Factory(dict)
    login_delay: int = 0


@attrs.frozen
class WebSettings:
    """The webmail's sessions (docs/webmail.md#serving-and-login)."""

    #: Seconds without a request after which a session ends.
    session_idle: int = 30 * 60
    #: Seconds after the login at which a session ends however busy it is.
    session_lifetime: int = 12 * 3600
    #: Sessions kept in memory at most; beyond that the least recently used ends.
    max_sessions: int = 10_000
    #: The RFC 8461 MTA-STS policy served at mta-sts.<domain>: ``testing`` (senders report
    #: failures but deliver), ``enforce`` or ``none`` (docs/autoconfig.md).
    mta_sts_mode: str = "testing"


@attrs.frozen
class LogSettings:
    """``[log]``: the log's format and what the transaction events name (docs/logging.md)."""

    #: ``text`` (twistd's lines) or ``json`` (one JSON object a line, same file or stdout).
    format: str = "text"
    #: Whether ``smtp.transaction`` events list the recipients' addresses (else only a count).
    recipients: bool = True


LOG_FORMATS = ("text", "json")


@attrs.frozen
class SubmissionSettings:
    """Rules for mail sent by authenticated users on the submission ports."""

    #: Store a copy of every submitted message in the sender's Sent folder.
    save_sent: bool = False
    max_messages_per_hour: int = 500
    max_recipients_per_hour: int = 2000


@attrs.frozen
class RelaySettings:
    """An optional smart host that takes all outbound mail (TLS always required)."""

    #: "host:port"; empty means deliver to each domain's MX hosts.
    host: str = ""
    #: "starttls" (port 587, RFC 3207) or "implicit" (port 465, RFC 8314).
    tls: str = "starttls"
    username: str = ""
    #: A file holding the password (kept out of ourmail.toml and the logs).
    password_file: str = ""
    #: PEM certificates to trust for the smart host; empty means the system's trusted roots.
    ca_file: str = ""

    @property
    def address(self) -> tuple[str, int]:
        name, _, port = self.host.rpartition(":")
        return name.strip("[]"), int(port)


@attrs.frozen
class QueueSettings:
    """The outbound queue: retries, notifications and connections (seconds for times)."""

    #: First retry after a temporary failure; each later one waits twice as long, at most
    #: ``max_retry_interval``.
    retry_first: int = 300
    max_retry_interval: int = 4 * 3600
    #: A message still undelivered after this long is returned to its sender (RFC 5321 §4.5.4.1).
    max_age: int = 5 * 24 * 3600
    #: Warn the sender of a delay after this long (0: never).
    delay_warning: int = 4 * 3600
    #: Connections at once to one destination, and in all.
    max_per_destination: int = 5
    max_connections: int = 100
    #: Messages sent over one connection before it is closed.
    messages_per_connection: int = 100
    connect_timeout: int = 30
    #: Time to wait for a reply (RFC 5321 §4.5.3.2 asks for minutes).
    command_timeout: int = 300
    #: Port of remote MX hosts (25; other values are for testing).
    smtp_port: int = 25
    #: DNS servers as "address:port"; empty means those of /etc/resolv.conf.
    dns_servers: tuple[str, ...] = ()
    #: Bounces return the whole message up to this size, else its header only.
    bounce_size_limit: int = 1 << 20
    relay: RelaySettings = RelaySettings()
    #: Honour MTA-STS policies (RFC 8461) of destination domains, and send TLS-RPT reports
    #: (RFC 8460) to those that ask.
    mta_sts: bool = True
    #: Port of the ``mta-sts.<domain>`` HTTPS servers (443; other values are for testing).
    mta_sts_port: int = 443
    #: PEM file of the CAs that policy servers and MX certificates must chain to under MTA-STS;
    #: empty: the system's trusted roots.
    mta_sts_ca_file: str = ""
    #: Seconds a policy fetch may take (RFC 8461 §3.3 suggests at least a minute).
    mta_sts_timeout: int = 60


@attrs.frozen
class SRSSettings:
    """``[srs]``: the Sender Rewriting Scheme for mail that aliases forward (ourmail/srs.py)."""

    enabled: bool = True
    #: Days a bounce to an SRS address is accepted after the forwarding (libsrs2's default).
    max_age: int = 21


@attrs.frozen
class DNSSettings:
    """``[dns]``: the resolvers every lookup uses (filters, the queue's MX lookups)."""

    #: Servers as "address:port"; empty means those of /etc/resolv.conf.
    servers: tuple[str, ...] = ()


#: The checks a server runs on arriving mail when ``[filters] chain`` is not set: the sender's
#: published policy (SPF, DKIM, DMARC; ARC first, so trusted forwarders can override DMARC).
#: DNS lists need zones chosen by the admin, and greylisting delays mail: both opt-in.
DEFAULT_CHAIN: tuple[str, ...] = ("spf", "dkim", "arc", "dmarc")


@attrs.frozen
class LearningSettings:
    """``[filters.learning]``: teaching the spam scanner from what people move into and out
    of Junk (ourmail/filters/learning.py, docs/filters.md)."""

    enabled: bool = True
    #: Messages larger than this are not learned (spamc's own default limit, 500 KB).
    max_size: int = 512_000
    #: Seconds before the first retry when the scanner could not be told; doubled each time
    #: up to ``retry_max``; a request still not learned after ``give_up`` seconds is dropped.
    retry_min: float = 60.0
    retry_max: float = 3600.0
    give_up: float = 7 * 86400.0
    #: Seconds the scanner has to answer one request.
    timeout: float = 30.0
    #: Days a learned message is remembered, so it is not learned twice in one direction.
    remember_days: int = 365
    #: Bytes of messages waiting to be learned at most (besides 20,000 requests): beyond,
    #: moves still work but teach nothing (logged), so a scanner down for long cannot fill
    #: the disk.
    max_queue_bytes: int = 1_000_000_000


@attrs.frozen
class FilterLogSettings:
    """``[filters.log]``: what the chain refused or filed into Junk, per recipient, for
    ``ourmail log filter`` (ourmail/filters/filterlog.py, docs/filters.md)."""

    enabled: bool = True
    #: Days an entry is kept.
    retention_days: int = 30


@attrs.frozen
class FilterSettings:
    """``[filters]``: the check chain on arriving mail (docs/filters.md)."""

    #: Check names in order: built-in ones, or ``package.module:factory`` for a plugin.
    chain: tuple[str, ...] = DEFAULT_CHAIN
    #: The authserv-id of Authentication-Results (RFC 8601 §2.5); empty: the host name.
    authserv_id: str = ""
    #: Run the chain on mail from logged-in users (submission) and from LMTP too.
    check_submission: bool = False
    check_lmtp: bool = False
    #: ``[filters.check.NAME]`` tables: each check's own options (it checks them itself).
    options: Mapping[str, Mapping[str, Any]] = attrs.Factory(dict)
    learning: LearningSettings = LearningSettings()
    log: FilterLogSettings = FilterLogSettings()


@attrs.frozen
class MetricsSettings:
    """``[metrics]``: who may read ``/metrics`` and ``/healthz`` (docs/metrics.md)."""

    #: Client networks (CIDR) allowed; a request from anywhere else gets 403.
    networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")


#: Let's Encrypt's production directory; its staging one is
#: https://acme-staging-v02.api.letsencrypt.org/directory (docs/certificates.md).
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"


@attrs.frozen
class ACMESettings:
    """Certificates from an ACME (RFC 8555) CA, ``[acme]`` (docs/certificates.md)."""

    #: Off: the ``[tls]`` certificate (self-signed by default) serves every TLS listener.
    enabled: bool = False
    #: The CA's directory URL.
    directory: str = LETS_ENCRYPT
    #: The account's contact address (the CA's expiry warnings); empty: none.
    email: str = ""
    #: Names beyond the host name and autoconfig.<domain> / mta-sts.<domain> of each domain.
    names: tuple[str, ...] = ()
    #: Renew this many days before the certificate expires.
    renew_days: int = 30
    #: CA certificates (PEM) the ACME server's own HTTPS must chain to; empty: the system's.
    ca_file: str = ""


@attrs.frozen
class AdminSettings:
    """``[admin]``: who may use the admin console (docs/admin-console.md).  Addresses are
    normalised (lower case, IDNA domains)."""

    #: Full admins: every domain, every page.  Default: ``postmaster@<primary domain>``.
    admins: tuple[str, ...] = ()
    #: Domain admins: address -> the domains whose users and aliases they manage.
    domain_admins: Mapping[str, tuple[str, ...]] = attrs.Factory(dict)
    #: The vault role: full admins who may also search and export the vault (docs/vault.md).
    vault_admins: tuple[str, ...] = ()


@attrs.frozen
class VaultSettings:
    """``[vault]``: the permanent copy of every message (docs/vault.md)."""

    #: Off: nothing is captured (the vault's existing records are kept).
    enabled: bool = True
    #: Extra folders (other volumes) where segments moved there are found (docs/vault.md).
    roots: tuple[Path, ...] = ()
    #: A new segment file starts once the current one is this many octets.
    segment_size: int = 256 * 1024 * 1024
    #: Flush a batch's records (fdatasync) before its mailbox files are placed, so that not
    #: even a power cut can keep the mailbox copy of a message never acknowledged and lose
    #: its record; off, one syncfs makes both durable before any answer (docs/vault.md).
    flush_first: bool = False


@attrs.frozen
class ListsSettings:
    """``[lists]``: the mailing lists' server-wide limits (docs/lists.md); each list's own
    settings are kept with it (``ourmail list set``)."""

    #: Off: no list address is answered (the lists and their members are kept).
    enabled: bool = True
    #: Hours a confirmation (subscribe, unsubscribe) waits for its reply or click.
    confirm_hours: int = 72
    #: Days a held post waits for a moderator before it is discarded.
    held_days: int = 14
    #: Held posts a list keeps at most; beyond, a post that would be held is dropped (logged).
    held_max: int = 1000
    #: Subscription requests per hour from one address, and from one client (web form).
    requests_per_address: int = 5
    requests_per_client: int = 30
    #: Recipients per queue envelope when a post is distributed.
    batch: int = 1000
    #: The largest message any list address takes, in octets (RFC 1870 SIZE at RCPT, then the
    #: message's own size at the end of DATA): larger ones are refused with 552 5.3.4.  A
    #: list's own ``max_size``, below it, holds a post for moderation instead.
    max_post: int = 10 * 1024 * 1024


def default_mx_processes() -> int:
    """One MX process per CPU core this process may run on (its affinity mask), at most 64."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, 64))


@attrs.frozen
class Settings:
    """The validated configuration of one server."""

    data_dir: Path
    domains: tuple[str, ...]
    hostname: str
    #: service name -> Twisted server endpoint string, or None when switched off.
    listen: Mapping[str, str | None]
    tls_certificate: Path
    tls_key: Path
    limits: Limits = Limits()
    auth_throttle: ThrottleSettings = ThrottleSettings()
    auth_cache: LoginCacheSettings = LoginCacheSettings()
    quota: QuotaSettings = QuotaSettings()
    submission: SubmissionSettings = SubmissionSettings()
    queue: QueueSettings = QueueSettings()
    pop3: Pop3Settings = Pop3Settings()
    web: WebSettings = WebSettings()
    dns: DNSSettings = DNSSettings()
    srs: SRSSettings = SRSSettings()
    filters: FilterSettings = FilterSettings()
    #: ``[ldap] url``: log users in and find recipients in LDAP too (ourmail/directory/ldap.py).
    ldap_url: str | None = None
    #: Processes accepting on the MX (``smtp``) port, by default one per CPU core; 1 means the
    #: main process only.
    mx_processes: int = attrs.Factory(default_mx_processes)
    config_path: Path | None = None
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()
    acme: ACMESettings = ACMESettings()
    #: ``[admin]``: the admin console's admins and domain admins.
    admin: AdminSettings = AdminSettings()
    #: ``[vault]``: capture of every message (docs/vault.md).
    vault: VaultSettings = VaultSettings()
    #: ``[lists]``: the mailing lists (docs/lists.md).
    lists: ListsSettings = ListsSettings()

    @property
    def primary_domain(self) -> str:
        """The first domain: used for unqualified logins and the postmaster account."""
        return self.domains[0]


def default_hostname() -> str:
    """This machine's fully qualified name, lower-cased."""
    name = socket.gethostname()
    if "." not in name:
        fqdn = socket.getfqdn(name)
        # /etc/hosts often lists the host as an alias of localhost: that is no mail host name.
        if "." in fqdn and not fqdn.startswith("localhost"):
            name = fqdn
    return name.lower().rstrip(".") or "localhost"


def domain_from_hostname(hostname: str) -> str:
    """The mail domain a host name implies, as Postfix derives ``mydomain``.

    ``mail.example.org`` gives ``example.org``; a two-label name is the domain itself; a bare host
    name (no dot) gives ``<host>.localdomain``, which only works on this machine.
    """
    labels = hostname.split(".")
    if len(labels) >= 3:
        return ".".join(labels[1:])
    if len(labels) == 2:
        return hostname
    return f"{hostname}.localdomain"


def normalise_domain(name: str) -> str:
    """Lower-case, IDNA-encode and check a domain name; raise ConfigError if it is not one."""
    try:
        ascii_name = name.strip().rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError as e:
        raise ConfigError(f"not a domain name: {name!r}") from e
    if not _DOMAIN_RE.match(ascii_name):
        raise ConfigError(f"not a domain name: {name!r}")
    return ascii_name


def default_listen(standard: bool) -> dict[str, str]:
    """The port table of docs/architecture.md as endpoint strings on every interface: the
    standard ports, or the unprivileged ones."""
    # A long accept queue absorbs bursts (every client reconnecting after a network blip).
    return {
        svc: f"tcp:{ports[0] if standard else ports[1]}:backlog=1024"
        for svc, ports in DEFAULT_PORTS.items()
    }


#: Schema marker: a table of named sub-tables, each following the given schema.
class _Named(dict):  # type: ignore[type-arg]
    pass


_QUOTA_LIMIT = {"bytes": int, "messages": int}

_TOML_KEYS: Mapping[str, Any] = {
    "data": str,
    "hostname": str,
    "ports": str,
    "domains": list,
    "listen": {svc: str for svc in SERVICES},
    "tls": {"certificate": str, "key": str},
    "limits": {f.name: int for f in attrs.fields(Limits)},
    "auth": {
        "failure_delay": (int, float),
        "max_delay": (int, float),
        "client_lockout_after": int,
        "client_lockout_seconds": (int, float),
        "account_lockout_after": int,
        "account_lockout_seconds": (int, float),
        "cache_ttl": (int, float),
        "cache_size": int,
    },
    "quota": {"bytes": int, "messages": int, "permanent": bool, "domain": _Named(_QUOTA_LIMIT)},
    "submission": {"save_sent": bool, "max_messages_per_hour": int, "max_recipients_per_hour": int},
    "smtp": {"mx_processes": int},
    "pop3": {"delete": str, "login_delay": int, "domain": _Named({"delete": str})},
    "web": {"session_idle": int, "session_lifetime": int, "max_sessions": int, "mta_sts_mode": str},
    "ldap": {"url": str},
    "log": {"format": str, "recipients": bool},
    "admin": {"admins": list, "domain_admins": dict, "vault_admins": list},
    "dns": {"servers": list},
    "srs": {"enabled": bool, "max_age": int},
    "filters": {
        "chain": list,
        "authserv_id": str,
        "check_submission": bool,
        "check_lmtp": bool,
        "check": dict,
        "learning": {
            "enabled": bool,
            "max_size": int,
            "retry_min": (int, float),
            "retry_max": (int, float),
            "give_up": (int, float),
            "timeout": (int, float),
            "remember_days": int,
            "max_queue_bytes": int,
        },
        "log": {"enabled": bool, "retention_days": int},
    },
    "queue": {
        **{f.name: int for f in attrs.fields(QueueSettings) if f.type in ("int", int)},
        "dns_servers": list,
        "mta_sts": bool,
        "mta_sts_ca_file": str,
        "relay": {f.name: str for f in attrs.fields(RelaySettings)},
    },
    "metrics": {"networks": list},
    "acme": {
        "enabled": bool,
        "directory": str,
        "email": str,
        "names": list,
        "renew_days": int,
        "ca_file": str,
    },
    "vault": {"enabled": bool, "roots": list, "segment_size": int, "flush_first": bool},
    "lists": {
        f.name: bool if f.type in ("bool", bool) else int for f in attrs.fields(ListsSettings)
    },
}


def _check_schema(table: Mapping[str, Any], schema: Mapping[str, Any], where: str) -> None:
    for key, value in table.items():
        name = f"{where}{key}"
        if key not in schema:
            raise ConfigError(f"unknown setting {name!r}")
        expected = schema[key]
        if isinstance(expected, _Named):
            if not isinstance(value, dict):
                raise ConfigError(f"{name!r} must be a table")
            for sub, table in value.items():
                if not isinstance(table, dict):
                    raise ConfigError(f"'{name}.{sub}' must be a table")
                _check_schema(table, expected, f"{name}.{sub}.")
        elif isinstance(expected, Mapping):
            if not isinstance(value, dict):
                raise ConfigError(f"{name!r} must be a table")
            _check_schema(value, expected, f"{name}.")
        elif not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise ConfigError(f"{name!r} has the wrong type: {type(value).__name__}")


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse and schema-check an ``ourmail.toml``; an absent file is an empty config."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from e
    _check_schema(table, _TOML_KEYS, "")
    return table


def parse_size(text: str) -> int:
    """``500M``, ``10G``, ``1024`` -> bytes (binary units); ValueError otherwise."""
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    factor = 1
    if text and text[-1] in "KMGT":
        factor = 1024 ** ("KMGT".index(text[-1]) + 1)
        text = text[:-1]
    if not text.isdigit():
        raise ValueError(f"not a size: {text!r}")
    return int(text) * factor


def parse_listen_option(value: str) -> tuple[str, str | None]:
    """Split ``SERVICE=ENDPOINT`` (ENDPOINT ``none`` switches the service off)."""
    service, sep, endpoint = value.partition("=")
    service = service.strip().lower()
    if not sep or service not in SERVICES or not endpoint.strip():
        raise ConfigError(
            f"--listen takes SERVICE=ENDPOINT with SERVICE one of {', '.join(SERVICES)}; "
            f"got {value!r}"
        )
    endpoint = endpoint.strip()
    return service, None if endpoint.lower() == "none" else endpoint


PORT_CHOICES = ("standard", "unprivileged")


#: CAP_NET_BIND_SERVICE's bit in the capability sets (linux/capability.h).
CAP_NET_BIND_SERVICE = 10


def may_bind_low_ports(status: Path = Path("/proc/self/status")) -> bool:
    """Whether this process may listen on ports below 1024: root, or a user given
    CAP_NET_BIND_SERVICE (systemd's ``AmbientCapabilities=``, the container's interpreter)."""
    if os.geteuid() == 0:
        return True
    try:
        lines = status.read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_NET_BIND_SERVICE & 1)
    return False


def _standard_ports(option: str | None, table: Mapping[str, Any], may_bind: bool) -> bool:
    """Whether the default listeners take the standard ports (25, 587, 993...): ``--ports``
    wins over ``ports`` in the file; with neither, a process that may bind them (root, or
    CAP_NET_BIND_SERVICE: :func:`may_bind_low_ports`) gets them, any other the unprivileged
    ones."""
    choice = option or table.get("ports")
    if choice is None:
        return may_bind
    if choice not in PORT_CHOICES:
        raise ConfigError(f"'ports' is one of {', '.join(PORT_CHOICES)}; got {choice!r}")
    return choice == "standard"


def load_settings(
    data: str | None = None,
    config: str | None = None,
    domains: tuple[str, ...] = (),
    hostname: str | None = None,
    listen: tuple[str, ...] = (),
    is_root: bool | None = None,
    dns_servers: tuple[str, ...] = (),
    ports: str | None = None,
) -> Settings:
    """Merge defaults, the config file and command-line values into validated Settings.

    The config file is ``config`` if given, else ``<data>/ourmail.toml``.  A config file may
    itself name the data directory; a ``data`` argument wins over it.
    """
    data_dir = (Path(data) if data else DEFAULT_DATA_DIR).absolute()
    config_path = Path(config).absolute() if config else data_dir / CONFIG_NAME
    table = read_config_file(config_path)
    if not data and "data" in table:
        data_dir = (config_path.parent / table["data"]).resolve()

    host = normalise_domain(hostname or table.get("hostname") or default_hostname())
    names = list(domains) or list(table.get("domains", [])) or [domain_from_hostname(host)]
    doms: list[str] = []
    for name in names:
        if not isinstance(name, str):
            raise ConfigError(f"'domains' must list strings, got {name!r}")
        d = normalise_domain(name)
        if d not in doms:
            doms.append(d)

    may_bind = may_bind_low_ports() if is_root is None else is_root
    endpoints: dict[str, str | None] = default_listen(_standard_ports(ports, table, may_bind))
    # RFC 2033 §5: LMTP is for this machine only, so by default a unix socket.
    endpoints["lmtp"] = f"unix:{data_dir / 'lmtp.sock'}:mode=660:lockfile=1"
    for svc, ep in table.get("listen", {}).items():
        endpoints[svc] = None if ep.strip().lower() == "none" else ep.strip()
    for item in listen:
        svc, ep = parse_listen_option(item)
        endpoints[svc] = ep

    tls = table.get("tls", {})
    if ("certificate" in tls) != ("key" in tls):
        raise ConfigError("[tls] needs both 'certificate' and 'key', or neither")
    cert = Path(tls.get("certificate", data_dir / "tls" / "cert.pem"))
    key = Path(tls.get("key", data_dir / "tls" / "key.pem"))

    limits = Limits(**table.get("limits", {}))
    for field in attrs.fields(Limits):
        if getattr(limits, field.name) <= 0:
            raise ConfigError(f"'limits.{field.name}' must be positive")
    quota = _quota_settings(table.get("quota", {}))
    submission = SubmissionSettings(**table.get("submission", {}))
    if submission.max_messages_per_hour <= 0 or submission.max_recipients_per_hour <= 0:
        raise ConfigError("the [submission] hourly limits must be positive")
    servers = list(dns_servers) or table.get("dns", {}).get("servers", [])
    dns = DNSSettings(_dns_servers(servers, "dns.servers"))
    queue = _queue_settings(table.get("queue", {}))
    if not queue.dns_servers and dns.servers:
        queue = attrs.evolve(queue, dns_servers=dns.servers)
    filters = _filter_settings(table.get("filters", {}))
    mx_processes = table.get("smtp", {}).get("mx_processes", default_mx_processes())
    if not 1 <= mx_processes <= 64:
        raise ConfigError("'smtp.mx_processes' must be between 1 and 64")
    throttle = _throttle_settings(table.get("auth", {}))
    login_cache = _login_cache_settings(table.get("auth", {}))

    return Settings(
        data_dir=data_dir,
        domains=tuple(doms),
        hostname=host,
        listen=endpoints,
        tls_certificate=cert,
        tls_key=key,
        limits=limits,
        auth_throttle=throttle,
        auth_cache=login_cache,
        quota=quota,
        submission=submission,
        queue=queue,
        pop3=_pop3_settings(table.get("pop3", {})),
        web=_web_settings(table.get("web", {})),
        dns=dns,
        srs=_srs_settings(table.get("srs", {})),
        filters=filters,
        ldap_url=table.get("ldap", {}).get("url") or None,
        mx_processes=mx_processes,
        config_path=config_path,
        metrics=_metrics_settings(table.get("metrics", {})),
        log=_log_settings(table.get("log", {})),
        acme=_acme_settings(table.get("acme", {})),
        admin=_admin_settings(table.get("admin", {}), doms[0]),
        vault=_vault_settings(table.get("vault", {}), data_dir),
        lists=_lists_settings(table.get("lists", {})),
    )


def _log_settings(table: Mapping[str, Any]) -> LogSettings:
    log = LogSettings(**table)
    if log.format not in LOG_FORMATS:
        raise ConfigError(f"'log.format' must be one of {', '.join(LOG_FORMATS)}")
    return log


def _throttle_settings(table: Mapping[str, Any]) -> ThrottleSettings:
    delay = float(table.get("failure_delay", 0.5))
    if not 0 <= delay <= 30:
        raise ConfigError("'auth.failure_delay' must be between 0 and 30 seconds")
    values = {
        "max_delay": table.get("max_delay", 15.0),
        "client_limit": table.get("client_lockout_after", 50),
        "client_lockout": table.get("client_lockout_seconds", 900.0),
        "account_limit": table.get("account_lockout_after", 10),
        "account_lockout": table.get("account_lockout_seconds", 300.0),
    }
    for name, value in values.items():
        if value <= 0:
            raise ConfigError(f"the [auth] lockout settings must be positive ({name})")
    if values["account_lockout"] > 3600:
        raise ConfigError("'auth.account_lockout_seconds' may be at most 3600: a locked-out "
                          "account is a denial of service to its owner")  # fmt: skip
    return ThrottleSettings(base_delay=delay, **values)


def _login_cache_settings(table: Mapping[str, Any]) -> LoginCacheSettings:
    ttl = float(table.get("cache_ttl", 60.0))
    if not 0 <= ttl <= 3600:
        # An hour at most: a password changed in LDAP is only noticed once its entry expires.
        raise ConfigError("'auth.cache_ttl' must be between 0 (off) and 3600 seconds")
    size = table.get("cache_size", 10_000)
    if not 1 <= size <= 1_000_000:
        raise ConfigError("'auth.cache_size' must be between 1 and 1000000")
    return LoginCacheSettings(ttl=ttl, size=size)


def _admin_address(value: Any, where: str) -> str:
    """An admin's address spelled as logins are (``ourmail.addresses.normalise_address``,
    which imports this module): the local part NFC and lower-cased, the domain IDNA; an empty
    local part (``" @example.org"``, a catch-all), spaces or control characters are refused."""
    text = unicodedata.normalize("NFC", value.strip()) if isinstance(value, str) else ""
    local, at, domain = text.rpartition("@")
    if (
        not at
        or not local
        or any(c.isspace() or c in '@"<>' for c in local)
        or any(unicodedata.category(c)[0] == "C" for c in text)
    ):
        raise ConfigError(f"'{where}' takes addresses (local@domain), got {value!r}")
    return f"{local.lower()}@{normalise_domain(domain)}"


def _admin_settings(table: Mapping[str, Any], primary: str) -> AdminSettings:
    raw_admins = table.get("admins", [f"postmaster@{primary}"])
    admins = tuple(dict.fromkeys(_admin_address(a, "admin.admins") for a in raw_admins))
    domain_admins: dict[str, tuple[str, ...]] = {}
    for address, domains in table.get("domain_admins", {}).items():
        where = f"admin.domain_admins.{address}"
        if not isinstance(domains, list) or not domains:
            raise ConfigError(f"'{where}' must list the domains that admin manages")
        names = []
        for name in domains:
            if not isinstance(name, str):
                raise ConfigError(f"'{where}' must list domain names, got {name!r}")
            names.append(normalise_domain(name))
        domain_admins[_admin_address(address, where)] = tuple(dict.fromkeys(names))
    vault_admins = tuple(
        dict.fromkeys(
            _admin_address(a, "admin.vault_admins") for a in table.get("vault_admins", [])
        )
    )
    for address in vault_admins:
        if address not in admins:
            raise ConfigError(f"'admin.vault_admins' lists {address}, who is not in 'admin.admins'")
    return AdminSettings(admins=admins, domain_admins=domain_admins, vault_admins=vault_admins)


#: RFC 8461 §3.2 policy modes.
MTA_STS_MODES = ("testing", "enforce", "none")


def _web_settings(table: Mapping[str, Any]) -> WebSettings:
    web = WebSettings(**table)
    for name in ("session_idle", "session_lifetime", "max_sessions"):
        if getattr(web, name) <= 0:
            raise ConfigError(f"'web.{name}' must be positive")
    if web.mta_sts_mode not in MTA_STS_MODES:
        raise ConfigError(f"'web.mta_sts_mode' must be one of {', '.join(MTA_STS_MODES)}")
    return web


def _pop3_settings(table: Mapping[str, Any]) -> Pop3Settings:
    def policy(value: str, where: str) -> str:
        if value not in POP3_DELETE_POLICIES:
            raise ConfigError(f"'{where}' must be one of {', '.join(POP3_DELETE_POLICIES)}")
        return value

    delay = table.get("login_delay", 0)
    if not 0 <= delay <= 86400:
        raise ConfigError("'pop3.login_delay' must be between 0 and 86400 seconds")
    domains = {
        normalise_domain(name): policy(sub.get("delete", "hide"), f"pop3.domain.{name}.delete")
        for name, sub in table.get("domain", {}).items()
    }
    return Pop3Settings(policy(table.get("delete", "hide"), "pop3.delete"), domains, delay)


def _srs_settings(table: Mapping[str, Any]) -> SRSSettings:
    srs = SRSSettings(**table)
    if not 1 <= srs.max_age <= 1000:  # the time stamp wraps after 1024 days
        raise ConfigError("'srs.max_age' must be between 1 and 1000 days")
    return srs


def _queue_settings(table: Mapping[str, Any]) -> QueueSettings:
    others = ("dns_servers", "relay", "mta_sts", "mta_sts_ca_file")
    numbers = {k: v for k, v in table.items() if k not in others}
    for key, value in numbers.items():
        if value < 0 or (value == 0 and key != "delay_warning"):
            raise ConfigError(f"'queue.{key}' must be positive")
    servers = _dns_servers(table.get("dns_servers", []), "queue.dns_servers")
    relay = RelaySettings(**table.get("relay", {}))
    if relay.host:
        name, _, port = relay.host.rpartition(":")
        if not name or not port.isdigit():
            raise ConfigError(f"'queue.relay.host' must be \"host:port\", got {relay.host!r}")
        if relay.tls not in ("starttls", "implicit"):
            raise ConfigError('\'queue.relay.tls\' must be "starttls" or "implicit"')
        if bool(relay.username) != bool(relay.password_file):
            raise ConfigError("'queue.relay' needs both 'username' and 'password_file', or neither")
    return QueueSettings(
        **numbers,
        dns_servers=tuple(servers),
        relay=relay,
        mta_sts=table.get("mta_sts", True),
        mta_sts_ca_file=table.get("mta_sts_ca_file", ""),
    )


def _dns_servers(items: list[Any], where: str) -> tuple[str, ...]:
    servers = []
    for item in items:
        host, _, port = str(item).rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"'{where}' takes \"address:port\" items, got {item!r}")
        servers.append(str(item))
    return tuple(servers)


def _filter_settings(table: Mapping[str, Any]) -> FilterSettings:
    chain = table.get("chain", list(DEFAULT_CHAIN))
    if not all(isinstance(name, str) and name for name in chain):
        raise ConfigError("'filters.chain' must list check names")
    if len(set(chain)) != len(chain):
        raise ConfigError("'filters.chain' names a check twice")
    options = table.get("check", {})
    for name, sub in options.items():
        if not isinstance(sub, dict):
            raise ConfigError(f"'filters.check.{name}' must be a table")
    learning = LearningSettings(**table.get("learning", {}))
    for name in (
        "max_size",
        "retry_min",
        "retry_max",
        "give_up",
        "timeout",
        "remember_days",
        "max_queue_bytes",
    ):
        if getattr(learning, name) <= 0:
            raise ConfigError(f"'filters.learning.{name}' must be positive")
    if learning.retry_max < learning.retry_min:
        raise ConfigError("'filters.learning.retry_max' must not be below retry_min")
    log = FilterLogSettings(**table.get("log", {}))
    if log.retention_days <= 0:
        raise ConfigError("'filters.log.retention_days' must be positive")
    return FilterSettings(
        chain=tuple(chain),
        authserv_id=table.get("authserv_id", ""),
        check_submission=table.get("check_submission", False),
        check_lmtp=table.get("check_lmtp", False),
        options=options,
        learning=learning,
        log=log,
    )


def _quota_limit(table: Mapping[str, int], where: str) -> QuotaLimit:
    for key, value in table.items():
        if isinstance(value, int) and value < 0:
            raise ConfigError(f"'{where}.{key}' must not be negative")
    # 0 means unlimited, as in Dovecot.
    return QuotaLimit(bytes=table.get("bytes") or None, messages=table.get("messages") or None)


def _quota_settings(table: Mapping[str, Any]) -> QuotaSettings:
    domains = {
        normalise_domain(name): _quota_limit(sub, f"quota.domain.{name}")
        for name, sub in table.get("domain", {}).items()
    }
    return QuotaSettings(
        default=_quota_limit({k: v for k, v in table.items() if k in _QUOTA_LIMIT}, "quota"),
        domains=domains,
        permanent=bool(table.get("permanent", False)),
    )


def _acme_settings(table: Mapping[str, Any]) -> ACMESettings:
    names = []
    for name in table.get("names", []):
        if not isinstance(name, str):
            raise ConfigError(f"'acme.names' must list strings, got {name!r}")
        names.append(normalise_domain(name))
    acme = ACMESettings(**{**table, "names": tuple(names)})
    if not acme.directory.startswith("https://"):
        raise ConfigError("'acme.directory' must be an https:// URL")
    if not 1 <= acme.renew_days <= 60:
        raise ConfigError("'acme.renew_days' must be between 1 and 60")
    if acme.email and "@" not in acme.email:
        raise ConfigError("'acme.email' must be an address")
    return acme


CONFIG_TEMPLATE = """\
# ourmail configuration, written on first start.  Every setting has a default; uncomment and
# change the ones you need, then restart.  Command-line options win over this file.
# Reference: docs/admin.md

# Host name used in greetings, Received: headers and the self-signed certificate.
# hostname = "{hostname}"

# Mail domains served here; the first is the primary domain (unqualified logins, postmaster).
# Set on first start from --domain or the host name; more can be added while the server runs
# with `ourmail domain add NAME`.
domains = {domains}

[tls]
# A certificate chain and key in PEM (e.g. from Let's Encrypt).  Default: a self-signed pair in
# <data>/tls/, generated on first start.
# certificate = "/etc/letsencrypt/live/{hostname}/fullchain.pem"
# key = "/etc/letsencrypt/live/{hostname}/privkey.pem"

[listen]
# SERVICE = "Twisted server endpoint", or "none" to switch a service off.  Implicit-TLS services
# (submissions, imaps, pop3s, web) get TLS added with the certificate above; `http` only
# redirects every request to `web` (docs/webmail.md).
# smtp = "tcp:25"
# submission = "tcp:587"
# submissions = "tcp:465"
# lmtp = "unix:/path/to/data/lmtp.sock:mode=660:lockfile=1"
# imap = "tcp:143"
# imaps = "tcp:993"
# pop3 = "tcp:110"
# pop3s = "tcp:995"
# web = "tcp:443"
# http = "tcp:80"

[limits]
# max_message_size = 52428800
# max_line_length = 8192
# max_recipients = 1000
# idle_timeout = 1800
# max_errors = 20
# max_connections = 10000         # per listener
# max_connections_per_ip = 50     # per listener and client address
# max_commands = 10000            # per SMTP connection
# data_timeout = 180

[smtp]
# Processes accepting inbound mail on the smtp (MX) port: by default one per CPU core; 1 keeps
# everything in one process.  Connection limits count across all of them.
# mx_processes = 1

[auth]
# Seconds added to a failed login reply; doubles with each recent failure from the same client
# (up to max_delay).
# failure_delay = 0.5
# max_delay = 15
# A client address with this many failures in 15 minutes is refused for a while; so is an
# account, except from addresses it logged in from before (at most an hour).
# client_lockout_after = 50
# client_lockout_seconds = 900
# account_lockout_after = 10
# account_lockout_seconds = 300
# A right password is remembered this many seconds (0: never), so clients reconnecting at once
# cost one password check per account; a password changed with `ourmail user passwd` is never
# taken from it, one changed in LDAP is noticed within this time.
# cache_ttl = 60
# cache_size = 10000

[submission]
# Keep a copy of each message a user sends in their Sent folder (most clients save their own).
# save_sent = false
# max_messages_per_hour = 500
# max_recipients_per_hour = 2000

[queue]
# Outbound mail: retries after a temporary failure start after retry_first seconds and double up
# to max_retry_interval; after max_age the message is returned to its sender.
# retry_first = 300
# max_retry_interval = 14400
# max_age = 432000
# delay_warning = 14400           # 0: never warn senders of delays
# max_per_destination = 5         # connections to one domain at once
# dns_servers = []                # default: the [dns] servers
# mta_sts = true                  # honour MTA-STS (RFC 8461), send TLS-RPT reports (RFC 8460)
# mta_sts_ca_file = ""            # default: the system's trusted roots
# [queue.relay]
# Send all outbound mail through a smart host (TLS required; AUTH if a username is set).
# host = "smtp.example.net:587"
# tls = "starttls"                # or "implicit" for port 465
# username = "ourmail"
# password_file = "/etc/ourmail/relay-password"
# ca_file = ""                    # default: the system's trusted roots

[srs]
# Mail an alias forwards to another domain leaves with an SRS0 sender in the alias's domain
# (secret in <data>/srs/secret); bounces to it are accepted for max_age days.
# enabled = true
# max_age = 21

[dns]
# Resolvers for every lookup (filters, MX), as "address:port"; default: /etc/resolv.conf.
# servers = ["127.0.0.1:53"]

[filters]
# Checks on arriving mail, in order (docs/filters.md; `ourmail filters list` shows the chain).
# chain = ["spf", "dkim", "arc", "dmarc"]   # the default; [] turns filtering off
# authserv_id = ""                # Authentication-Results id; default: the host name
# check_submission = false        # also check mail from logged-in users
# check_lmtp = false              # also check mail arriving by LMTP
# [filters.check.NAME]
# timeout = 20                    # seconds to wait for the check
# on_error = "accept"             # or "tempfail": what a failure or time-out means
# trusted = false                 # true: also on mail submission and LMTP trust (antivirus: true)
# [filters.check.spf]             # SPF, RFC 7208 (docs/filters.md)
# fail = "reject"                 # 550 5.7.23; or "junk", "accept"
# softfail = "accept"             # or "junk"
# temperror = "accept"            # or "tempfail" (451 4.4.3)
# helo = true                     # also check the HELO/EHLO name (RFC 7208 §2.3)
# skip_networks = ["127.0.0.0/8", "::1/128"]
# dns_timeout = 5                 # seconds for one DNS query
# [filters.check.arc]            # ARC chains (RFC 8617) whose last sealer may override DMARC
# trusted_forwarders = []         # e.g. ["lists.example.net"], for every local domain
# trusted_forwarders_by_domain = {{}}   # e.g. {{ "example.org" = ["fwd.example.com"] }}
# [filters.check.antivirus]      # clamd scans at DATA, add "antivirus" to chain (docs/filters.md)
# address = "/run/clamav/clamd.ctl"   # clamd's unix socket, or "127.0.0.1:3310"
# timeout = 60                    # then on_error = "tempfail" (451 4.7.1), or "accept"
# max_size = 26214400             # clamd's StreamMaxLength; larger mail follows oversize:
# oversize = "refuse"             # 552 5.3.4; or "accept" with a not-scanned header
# [filters.check.spam]            # spamd or rspamd scores (add "spam" to chain; docs/filters.md)
# backend = "spamd"               # or "rspamd" (address "http://127.0.0.1:11333")
# address = "127.0.0.1:783"
# junk_score = 5                  # Junk from this score; default: the scanner's own verdict
# reject_score = 15               # 550 5.7.1 from this score; default: never refused
# [filters.learning]              # learn spam/ham from Junk moves (needs the spam check)
# enabled = true
# max_size = 512000               # larger messages are not learned
# retry_min = 60                  # seconds; doubled up to retry_max while the scanner is down
# retry_max = 3600
# give_up = 604800                # drop a request not learned after this many seconds
# max_queue_bytes = 1000000000    # bytes waiting at most; beyond, moves teach nothing
# [filters.log]                   # `ourmail log filter USER`: refusals and Junk filings
# enabled = true
# retention_days = 30

[pop3]
# What DELE + QUIT does: "hide" keeps the message (IMAP still sees it, with the $POP3Deleted
# keyword), "trash" moves it to Trash, "expunge" erases it (the only one that frees space).
# `ourmail user pop3-delete ADDRESS POLICY` sets it for one user.
# delete = "hide"
# login_delay = 0                 # seconds a user must wait between POP3 logins
# [pop3.domain."example.org"]
# delete = "trash"

[ldap]
# Log users in and find recipients in a directory too (checked at start-up); local
# accounts keep working.  Options: bind, password_file, filter, starttls, timeout, ca_file,
# address_filter, alternate, disabled; several URLs (space-separated) for failover.
# url = "ldap://ldap.example.org:389/dc=example,dc=org?bind=cn=mail,dc=example,dc=org&password_file=/etc/ourmail/ldap-password&starttls=1"

[web]
# The webmail's sessions end after session_idle seconds without a request, session_lifetime
# seconds after the login, or at logout (docs/webmail.md).
# session_idle = 1800
# session_lifetime = 43200
# max_sessions = 10000
# The MTA-STS policy (RFC 8461) served at https://mta-sts.<domain>/.well-known/mta-sts.txt:
# "testing" (the default), "enforce" once TLS reports show every sender gets through, or "none".
# mta_sts_mode = "testing"

[acme]
# Certificates from Let's Encrypt (or another ACME CA, RFC 8555) instead of the self-signed one,
# for the host name, autoconfig.<domain> and mta-sts.<domain> of every domain, and `names`.
# Needs the `http` listener reachable from the internet on port 80 and those names' DNS
# pointing here; renewed by itself, handed to every TLS listener (docs/certificates.md).
# enabled = false
# directory = "https://acme-v02.api.letsencrypt.org/directory"
# directory = "https://acme-staging-v02.api.letsencrypt.org/directory"   # staging, for trials
# email = "postmaster@{hostname}"   # the CA writes here before a certificate expires
# names = []                      # more names for the certificate
# renew_days = 30                 # renew when the certificate expires within this many days
# ca_file = ""                    # the CA server's own HTTPS roots; default: the system's

[admin]
# Who may use the admin console at https://<host>/admin (docs/admin-console.md).  Full admins
# manage every domain; the default is the postmaster account created on first start.
# admins = ["postmaster@{primary}"]
# Full admins who may also search and export the vault (docs/vault.md); none by default.
# vault_admins = []
# Domain admins manage only the users and aliases of the domains listed for them.
# [admin.domain_admins]
# "it@example.org" = ["example.org", "example.net"]

[quota]
# Per-user storage limits (0 = unlimited); `ourmail user quota` sets them for one user.
# bytes = 10737418240
# messages = 0
# Over quota, deliveries get 452 4.2.2 (try later); true makes it 552 5.2.2 (bounce).
# permanent = false
# [quota.domain."example.org"]
# bytes = 5368709120

[metrics]
# /metrics (Prometheus) and /healthz on the web listener (and /healthz on the http one) answer
# only clients in these networks (the TCP peer's address; X-Forwarded-For is not trusted).
# Others get 403 (docs/metrics.md).  A reverse proxy on this host connects from loopback:
# then block /metrics at the proxy, or leave loopback out.  IPv4 networks as IPv4, not ::ffff:.
# networks = ["127.0.0.0/8", "::1/128"]

[log]
# "text" (the default) or "json": one JSON object a line, to twistd's --logfile or, with
# twistd -n, to standard output (docs/logging.md).  `twistd ourmail --log-format` wins over
# this.
# format = "text"
# Whether each SMTP transaction's log line lists the recipients' addresses (false: a count,
# and the addresses its reply quotes are written <redacted>).
# recipients = true

[vault]
# A permanent, tamper-evident copy of every message that enters or leaves, kept whatever
# users delete (docs/vault.md).  Its segments live in <data>/vault/segments.
# enabled = true
# Other volumes to which old segments were moved (each holds a segments/ folder).
# roots = ["/srv/vault2"]
# A new segment file starts at this size (octets).
# segment_size = 268435456
# Flush the vault's records before the mailbox copies of their batch are placed, so that
# not even a power cut keeps a mailbox copy of a message never acknowledged without its
# record (it costs about a quarter of intake: docs/vault.md).
# flush_first = false

[lists]
# Mailing lists run here (`ourmail list create`, docs/lists.md).  Off, no list address is
# answered (the lists and their members are kept).
# enabled = true
# Hours a subscribe or unsubscribe confirmation waits for its reply or click.
# confirm_hours = 72
# Days a held post waits for a moderator before it is discarded.
# held_days = 14
# Held posts a list keeps at most: beyond, a post that would be held is dropped (logged).
# held_max = 1000
# Subscription requests per hour from one address, and from one client of the web form.
# requests_per_address = 5
# requests_per_client = 30
# Recipients per queue envelope when a post is distributed.
# batch = 1000
# The largest message a list takes (octets); larger ones are refused (552 5.3.4).  Each
# list's own max_size, below it, holds a post for the moderators instead.
# max_post = 10485760
"""


def _vault_settings(table: Mapping[str, Any], data_dir: Path) -> VaultSettings:
    roots = table.get("roots", [])
    if not all(isinstance(r, str) and r for r in roots):
        raise ConfigError("'vault.roots' must list folder names")
    size = table.get("segment_size", VaultSettings().segment_size)
    if not 1 << 20 <= size <= 1 << 40:
        raise ConfigError("'vault.segment_size' must be between 1 MiB and 1 TiB")
    return VaultSettings(
        enabled=table.get("enabled", True),
        roots=tuple((data_dir / r).absolute() for r in roots),
        segment_size=size,
        flush_first=table.get("flush_first", False),
    )


#: ``[lists]`` numbers and their bounds: (least, most).
_LISTS_BOUNDS = {
    "confirm_hours": (1, 24 * 90),
    "held_days": (1, 365),
    "held_max": (1, 1_000_000),
    "requests_per_address": (1, 1000),
    "requests_per_client": (1, 100_000),
    "batch": (1, 100_000),
    "max_post": (1024, 1 << 31),
}


def _lists_settings(table: Mapping[str, Any]) -> ListsSettings:
    default = ListsSettings()
    for key, (least, most) in _LISTS_BOUNDS.items():
        value = table.get(key, getattr(default, key))
        if not least <= value <= most:
            raise ConfigError(f"'lists.{key}' must be between {least} and {most}")
    return ListsSettings(**table)


def _metrics_settings(table: Mapping[str, Any]) -> MetricsSettings:
    networks = table.get("networks", list(MetricsSettings().networks))
    for item in networks:
        if not isinstance(item, str):  # ipaddress would take the number 10 for 0.0.0.10
            raise ConfigError(f"'metrics.networks': {item!r} is not a network: write it in quotes")
        try:
            network = ipaddress.ip_network(item)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"'metrics.networks': {item!r} is not a network: {e}") from e
        # An IPv4-mapped peer is judged as its IPv4 address (RFC 4291 §2.5.5.2), so such an
        # entry would never match anyone.
        if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_IPV4_MAPPED):
            raise ConfigError(
                f"'metrics.networks': {item!r} is IPv4-mapped: write the IPv4 network instead"
            )
    return MetricsSettings(tuple(networks))


_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def config_template(settings: Settings) -> str:
    """The commented ``ourmail.toml`` written on first start."""
    domains = "[" + ", ".join(f'"{d}"' for d in settings.domains) + "]"
    return CONFIG_TEMPLATE.format(
        hostname=settings.hostname, domains=domains, primary=settings.primary_domain
    )
