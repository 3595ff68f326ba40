"""Builds the twistd service tree from Settings: first start, the portal, and every listener."""

from __future__ import annotations

import functools
import os
import secrets
import signal
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from twisted.application.service import MultiService, Service
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorCore,
    IReactorTime,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from ourmail import preflight
from ourmail.auth.accounts import AccountDB
from ourmail.auth.cache import CachingChecker
from ourmail.auth.changer import AccountPasswords
from ourmail.auth.checker import AccountChecker, FirstOf, password_checker
from ourmail.auth.login import Authenticator
from ourmail.auth.passwords import hash_password
from ourmail.auth.realm import MailRealm
from ourmail.auth.revocation import SessionRevoker
from ourmail.auth.throttle import FailureThrottle
from ourmail.backup import upgrade
from ourmail.config import IMPLICIT_TLS, SERVICES, ConfigError, Settings, config_template
from ourmail.configreload import ConfigReload
from ourmail.directory.local import LocalDirectory
from ourmail.dns.lookup import Lookup
from ourmail.dns.lookup import make_resolver as make_check_resolver
from ourmail.fdlimit import raise_open_file_limit
from ourmail.filters import dmarcpolicy
from ourmail.filters.chain import FilterChain
from ourmail.filters.filterlog import FilterLog, LogDB
from ourmail.filters.learning import JunkLearning
from ourmail.filters.probes import Probe, probes_for
from ourmail.filters.registry import build_chain
from ourmail.filters.spam import scanner_and_learner
from ourmail.filters.spamprefs import ContactBook, SpamPrefs, database_path
from ourmail.fsutil import write_atomic
from ourmail.imap.server import IMAPContext, IMAPServer
from ourmail.interfaces import (
    FilterEnvironment,
    ICommitGroup,
    IContactBook,
    IDirectory,
    IDirectoryUsers,
    IFilterChain,
    IForwardSealer,
    IMailStore,
    IOutboundQueue,
    IPreferences,
    IRetention,
    ISenderRewriter,
    ISpamLearner,
    IVault,
    IVaultDesk,
    Usage,
)
from ourmail.lists.archive import ListArchives
from ourmail.lists.context import ListContext
from ourmail.lists.listdb import ListDB
from ourmail.lists.secret import load_secret
from ourmail.lists.service import ListService
from ourmail.livesettings import LiveSettings
from ourmail.manage.accountadmin import LocalAccountAdmin
from ourmail.manage.accountops import served_domains
from ourmail.manage.audit import AuditFile
from ourmail.manage.disabling import AccountDisabling
from ourmail.manage.domainadmin import QUERY_TIMEOUT, LocalDomainAdmin
from ourmail.manage.filterlogview import FilterLogReader
from ourmail.manage.queueadmin import LocalQueueAdmin
from ourmail.manage.routingadmin import LocalRoutingAdmin
from ourmail.manage.setupstate import load as load_setup
from ourmail.manage.setupstate import open_setup, setup_url, state_path
from ourmail.manage.setupwizard import LocalSetupWizard
from ourmail.manage.shardreport import ShardReport
from ourmail.net.dns import make_resolver
from ourmail.net.health import Health
from ourmail.net.lineproto import SessionFactory
from ourmail.net.metrics import Metrics, clear_snapshots
from ourmail.net.portsfile import PortsFile
from ourmail.net.tls import ReloadableServerTLS
from ourmail.pop3.maildrop import MaildropLocks
from ourmail.pop3.policy import NoRetention
from ourmail.pop3.server import POP3Context, POP3Server
from ourmail.prefs import PreferenceFiles
from ourmail.queue.runner import OutboundQueue
from ourmail.secure import selfsigned
from ourmail.secure.acmerenewal import CertificateRenewal
from ourmail.secure.arcseal import ARCSealer
from ourmail.secure.certstatus import CertificateStatus
from ourmail.secure.dkimkeys import KeyStore
from ourmail.secure.dkimsign import DKIMSigner
from ourmail.smtp.delivery import Delivery
from ourmail.smtp.lmtp import LMTPServer
from ourmail.smtp.server import SMTPContext, SMTPServer
from ourmail.smtp.submission import SendingRates
from ourmail.smtp.submitter import Submitter
from ourmail.smtp.workers import MXWorkers
from ourmail.srs import SenderRewriter, load_secrets
from ourmail.store import faults
from ourmail.store.quota import QuotaPolicy
from ourmail.store.shards import DEFAULT_SHARDS_TOML
from ourmail.store.shards import FILE_NAME as SHARDS_FILE
from ourmail.store.userstore import MaildirStore
from ourmail.store.volumes import volumes
from ourmail.vacation.record import ReplyRecord
from ourmail.vacation.responder import AutoResponder
from ourmail.vault import indexfollow
from ourmail.vault.desk import VaultDesk
from ourmail.vault.headjob import DailyHeadSigner
from ourmail.vault.index import IndexError_, SQLiteIndex
from ourmail.vault.indexer import Indexer, IndexerService
from ourmail.vault.outbound import CapturingQueue
from ourmail.vault.retentionservice import RetentionService
from ourmail.vault.vault import NoVault, Vault, open_vault, vault_log
from ourmail.watchers import BackendWatch, VolumeWatch
from ourmail.web.acmechallenge import http_site
from ourmail.web.app import WebApp
from ourmail.web.clientconfig import ClientSetup
from ourmail.web.metricspages import HealthOrRedirect, networks
from ourmail.web.pages import WebServices
from ourmail.web.redirect import redirect_site
from ourmail.web.sessions import SessionStore, SessionSweeper

log = Logger()


def first_start(settings: Settings) -> None:
    """Create what a new data directory needs; each step is skipped when already done.

    The data directory (mode 0700), a commented ``ourmail.toml`` (when the config lives in the
    data directory), ``shards.toml``, a self-signed certificate when none is configured, and a
    ``postmaster@<primary domain>`` account whose one-time password is logged once (with the
    set-up wizard opened first, for a new data folder only).
    """
    data = settings.data_dir
    try:
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise ConfigError(f"cannot create the data folder {data}: {e.strerror}") from None
    if not os.access(data, os.W_OK | os.X_OK):
        raise ConfigError(
            f"the data folder {data} is not writable by uid {os.geteuid()} "
            "(give it to the user ourmail runs as: chown -R USER: FOLDER)"
        )
    config = settings.config_path
    if config is not None and config.parent == data and not config.exists():
        write_atomic(config, config_template(settings).encode(), 0o640)
        log.info("wrote a commented configuration to {path}", path=str(config))
    if not (data / SHARDS_FILE).exists():
        write_atomic(data / SHARDS_FILE, DEFAULT_SHARDS_TOML.encode(), 0o640)
    default_tls = (data / "tls" / "cert.pem", data / "tls" / "key.pem")
    if (settings.tls_certificate, settings.tls_key) == default_tls:
        if selfsigned.ensure(*default_tls, settings.hostname):
            log.info(
                "generated a self-signed certificate for {host} in {path}",
                host=settings.hostname,
                path=str(settings.tls_certificate),
            )
    else:
        for path in (settings.tls_certificate, settings.tls_key):
            if not path.is_file():
                raise ConfigError(f"[tls] names {path}, which does not exist")
    accounts = AccountDB(data)
    if not accounts.users():
        # The wizard opens only for a new data folder, and only ever once: its setup.json is
        # written first (a crash before the account is made resumes with it open) and kept
        # after set-up (so deleting every local user later does not reopen it).
        if not accounts.path.exists() and not state_path(data).exists():
            open_setup(data)
        address = f"postmaster@{settings.primary_domain}"
        password = secrets.token_urlsafe(12)
        accounts.add_user(address, hash_password(password))
        log.warn(
            "created the account {address} with the one-time password {password} "
            "(shown only now: change it with `ourmail user passwd {address}`)",
            address=address,
            password=password,
        )
        if load_setup(data).open:
            log.warn(
                "open {url} to finish set-up (docs/setup-wizard.md)",
                url=setup_url(settings),
            )


def _clear_stale_unix_socket(socket_path: Path) -> None:
    """Remove a unix socket and its ``lockfile=1`` lock left by a server that has ended.

    Twisted's lock (a symlink to its owner's pid) counts any live pid as a live owner.  After
    an unclean stop (SIGKILL, the OOM killer, a power cut) that pid is often someone else's: a
    container's server is PID 1 on every start, so the lock in the volume names the restarted
    server itself, and after a reboot another service may hold it (run by root, Twisted's
    check even ends in a traceback).  The socket tells instead: a live server accepts on it.
    Nobody accepting, both files are stale and go (also a socket whose lock was deleted by
    hand, which would stop the start with "Address already in use"); someone accepting, they
    stay and the listener refuses to start with Twisted's reason."""
    lock = socket_path.with_name(socket_path.name + ".lock")
    if not lock.is_symlink() and not socket_path.exists():
        return
    with socket.socket(socket.AF_UNIX) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(socket_path))
        except (ConnectionRefusedError, FileNotFoundError):
            pass
        except OSError:  # a time-out (a busy live server), no permission: not ours to judge
            return
        else:
            return
    log.info("removing {path}, left by a server that has ended", path=str(socket_path))
    socket_path.unlink(missing_ok=True)
    lock.unlink(missing_ok=True)


class ListenerService(Service):
    """Listens on one endpoint; a failure to bind stops start-up with the reason."""

    def __init__(self, reactor: IReactorCore, service: str, endpoint: str, factory: Factory):
        self.name = service
        self.endpoint_string = endpoint
        self.endpoint = serverFromString(reactor, endpoint)
        self.factory = factory
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        kind, args, options = preflight.parse_endpoint(self.endpoint_string)
        if kind == "unix" and options.get("lockfile", "0") != "0":
            _clear_stale_unix_socket(preflight.unix_path(args, options))
        failures: list[Failure] = []
        d: Deferred[IListeningPort] = self.endpoint.listen(self.factory)
        d.addCallbacks(self._listening, failures.append)
        if failures:
            log.critical(
                "{service} cannot listen on {endpoint}: {why}",
                service=self.name,
                endpoint=self.endpoint_string,
                why=failures[0].getErrorMessage(),
            )
            failures[0].raiseException()

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        host = port.getHost()
        name = getattr(host, "name", host)  # a unix socket's path, as bytes
        path = os.fsdecode(name) if isinstance(name, bytes | str) else str(name)
        where = f"{host.host}:{host.port}" if hasattr(host, "port") else path
        log.info("{service} listening on {where}", service=self.name, where=where)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None


@attrs.define
class Server:
    """The assembled server: its service tree and the parts tests and tools reach into."""

    service: MultiService
    listeners: dict[str, ListenerService]
    store: IMailStore
    accounts: AccountDB
    queue: OutboundQueue
    #: Learning from Junk moves, when a spam scanner is configured.
    learning: JunkLearning | None = None
    #: The webmail, when the ``web`` listener is on.
    web: WebApp | None = None
    #: The ACME certificate's renewal, when ``[acme] enabled``.
    acme: CertificateRenewal | None = None
    #: The mailing lists (docs/lists.md).
    lists: ListService | None = None
    #: The lists' archives shared with their readers (IMAP, webmail); None: lists are off.
    shared: ListArchives | None = None


@attrs.define
class Parts:
    """What every listener of one process shares: accounts, store, directory, portal, queue."""

    settings: Settings
    clock: IReactorTime
    accounts: AccountDB
    store: IMailStore
    directory: IDirectory
    authenticator: Authenticator
    tls: ReloadableServerTLS
    quota: QuotaPolicy
    rates: SendingRates
    queue: OutboundQueue
    #: Recipient checks and fan-out to the store and the queue (SMTP, LMTP and the queue).
    delivery: Delivery
    #: Retention and legal hold (a later issue); POP3 ``expunge`` asks it first.
    retention: IRetention
    #: The filter chain on arriving mail, or None when ``[filters] chain`` is empty.
    checks: IFilterChain | None = None
    #: Learning from Junk moves (its runner is a service of the main process only).
    learning: JunkLearning | None = None
    #: Whom users write to (submission), for the spam check; None without that check.
    contacts: IContactBook | None = None
    #: POP3 sessions of both listeners share one lock table and one login-delay record.
    pop3_locks: MaildropLocks = attrs.Factory(MaildropLocks)
    pop3_logins: dict[str, float] = attrs.Factory(dict)
    #: Each user's own settings (webmail, out-of-office).
    preferences: IPreferences | None = None
    #: The webmail (made with the ``web`` listener's factory).
    web: WebApp | None = None
    #: The figures of this process (``/metrics``, docs/metrics.md).
    metrics: Metrics = attrs.Factory(Metrics)
    #: Where every message is kept (docs/vault.md): SMTP, LMTP, the queue, APPEND into Sent.
    vault: IVault = attrs.Factory(NoVault)
    #: Keeps the vault's search index in step with its captures (None: no index).
    indexer: Indexer | None = None
    #: The mailing lists (docs/lists.md): delivery hands their mail to it.
    lists: ListService | None = None
    #: The lists' archives shared with their readers (IMAP, webmail); None: lists are off.
    shared: ListArchives | None = None

    def _checked(self, service: str) -> bool:
        """Whether mail arriving on ``service`` goes through the filter chain."""
        if service in ("submission", "submissions"):
            return self.settings.filters.check_submission
        if service == "lmtp":
            return self.settings.filters.check_lmtp
        return True

    def _directory_users(self) -> IDirectoryUsers | None:
        """The LDAP directory's users for the admin console (None: no directory)."""
        if not self.settings.ldap_url:
            return None
        from ourmail.directory.ldap import LDAPSettings
        from ourmail.directory.ldapusers import LDAPUserList

        def usage(address: str) -> Usage:
            return self.quota.usage(self.store.user(address))

        ldap = LDAPSettings.from_urls(self.settings.ldap_url)
        return LDAPUserList(ldap, self.clock, self.directory.is_local_domain, usage)  # type: ignore[arg-type]

    def _vault_desk(self, audit: AuditFile) -> IVaultDesk | None:
        """The vault for the console's vault pages (None: no vault, or no search index)."""
        if not isinstance(self.vault, Vault) or self.indexer is None:
            return None
        vault = self.vault
        return VaultDesk(
            vault.log,
            vault.catalog,
            self.indexer.index,
            self.indexer,
            self.settings.admin,
            audit,
            self.clock,
        )

    def factory(self, service: str) -> Factory:
        """The protocol factory of one listener (without the implicit-TLS wrapper)."""
        settings = self.settings
        implicit = service in IMPLICIT_TLS
        if service == "web":
            web = settings.web
            sessions = SessionStore(
                self.clock, web.session_idle, web.session_lifetime, web.max_sessions
            )
            audit = AuditFile(settings.data_dir)
            services = WebServices(
                directory=self.directory,
                preferences=self.preferences,
                reactor=self.clock,
                retention=self.retention,
                authserv_id=settings.filters.authserv_id or settings.hostname,
                passwords=AccountPasswords(self.accounts),
                submission=Submitter(
                    hostname=settings.hostname,
                    limits=settings.limits,
                    directory=self.directory,
                    store=self.store,
                    delivery=self.delivery,
                    spool_dir=settings.data_dir / "spool" / "incoming",
                    rates=self.rates,
                    checks=self.checks,
                    check_mail=self._checked("submission"),
                    contacts=self.contacts,
                ),
                upload_dir=settings.data_dir / "web" / "uploads",
                max_message_size=settings.limits.max_message_size,
                metrics=self.metrics,
                monitor_networks=networks(settings.metrics.networks),
                admin=settings.admin,
                accounts=LocalAccountAdmin(
                    settings, self.store, self.quota, audit, self.directory.quota
                ),
                audit=audit,
                queue_admin=LocalQueueAdmin(self.queue.files, audit),
                filter_log=FilterLogReader(settings.data_dir / "filters" / "log.sqlite"),
                shards=ShardReport(settings.data_dir),
                routing=LocalRoutingAdmin(settings, audit),
                disabling=AccountDisabling(settings, audit),
                domains=LocalDomainAdmin(
                    settings,
                    audit,
                    Lookup(make_check_resolver(settings.dns.servers), QUERY_TIMEOUT),
                    self.clock,
                ),
                certificates=CertificateStatus(settings, lambda: self.tls.cert_path),
                setup=LocalSetupWizard(settings, audit),
                directory_users=self._directory_users(),
                vault=self._vault_desk(audit),
                lists=self.lists,
                shared=self.shared,
            )
            self.web = WebApp(self.authenticator, sessions, services)
            return self.web.site(settings.limits)
        if service in ("smtp", "submission", "submissions", "lmtp"):
            return SessionFactory(
                LMTPServer if service == "lmtp" else SMTPServer,
                SMTPContext(
                    hostname=settings.hostname,
                    primary_domain=settings.primary_domain,
                    limits=settings.limits,
                    directory=self.directory,
                    store=self.store,
                    delivery=self.delivery,
                    authenticator=self.authenticator,
                    spool_dir=settings.data_dir / "spool" / "incoming",
                    tls_context=self.tls,
                    submission=service in ("submission", "submissions"),
                    rates=self.rates,
                    save_sent=settings.submission.save_sent,
                    implicit_tls=implicit,
                    checks=self.checks,
                    check_mail=self._checked(service),
                    contacts=self.contacts if service in ("submission", "submissions") else None,
                    metrics=self.metrics,
                    log_recipients=settings.log.recipients,
                ),
            )
        if service in ("imap", "imaps"):
            return SessionFactory(
                IMAPServer,
                IMAPContext(
                    hostname=settings.hostname,
                    limits=settings.limits,
                    authenticator=self.authenticator,
                    tls_context=self.tls,
                    implicit_tls=implicit,
                    clock=self.clock,
                    quota=self.quota,
                    vault=self.vault,
                    shared=self.shared,
                ),
            )
        return SessionFactory(
            POP3Server,
            POP3Context(
                hostname=settings.hostname,
                limits=settings.limits,
                authenticator=self.authenticator,
                tls_context=self.tls,
                settings=settings.pop3,
                accounts=self.accounts,
                retention=self.retention,
                locks=self.pop3_locks,
                clock=self.clock,
                last_login=self.pop3_logins,
                implicit_tls=implicit,
            ),
        )


class HeldHangups:
    """The SIGHUP handler while the server assembles itself (``hold`` it first thing in
    twistd's ``makeService``): SIGHUP's default action would end the process, and systemd
    does not restart a unit a SIGHUP ended.  :class:`ReloadOnHangup` replaces it once started
    and then acts on the SIGHUPs it counted, once."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, signum: int, frame: Any) -> None:
        self.count += 1

    @classmethod
    def hold(cls) -> None:
        """Count SIGHUPs from now until :class:`ReloadOnHangup` starts (main thread only)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, cls())


class InUse(Service):
    """Holds the data folder as in use while the server runs (``ourmail upgrade`` refuses it),
    from its build to its stop (ourmail/backup/upgrade.py)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def stopService(self) -> Any:
        upgrade.release(self.data_dir)
        return super().stopService()


class ReloadOnHangup(Service):
    """SIGHUP reloads the TLS certificate and key (after a renewal) and, through ``also``, the
    configuration (ourmail/configreload.py) without a restart; open sessions are not
    touched.  Installed only when running in the main thread (twistd); a SIGHUP that came
    while the server was being assembled (:class:`HeldHangups`) is acted on at start."""

    def __init__(self, tls: ReloadableServerTLS, reactor: IReactorCore) -> None:
        self.tls, self.reactor = tls, reactor
        self._previous: Any = None
        #: Also told of each SIGHUP (the MX worker processes reload their certificate).
        self.also: list[Callable[[], None]] = []

    def startService(self) -> None:
        super().startService()
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGHUP, self._hangup)
            if isinstance(self._previous, HeldHangups) and self._previous.count:
                self._previous.count = 0
                self._hangup(signal.SIGHUP, None)

    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _hangup(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.tls.reload)  # type: ignore[attr-defined]
        for tell in self.also:
            self.reactor.callFromThread(tell)  # type: ignore[attr-defined]


def assemble(
    settings: Settings,
    reactor: IReactorCore,
    checkers: Sequence[ICredentialsChecker] = (),
    store: IMailStore | None = None,
    realm: IRealm | None = None,
    queue_clock: IReactorTime | None = None,
    retention: IRetention | None = None,
    learner: ISpamLearner | None = None,
) -> Parts:
    """The shared parts of a server process (see :func:`build` for the arguments)."""
    clock: IReactorTime = reactor  # type: ignore[assignment]
    data: Path = settings.data_dir
    accounts = AccountDB(data)
    store = MaildirStore(data, reactor) if store is None else store  # type: ignore[arg-type]
    directory: IDirectory = LocalDirectory(accounts, settings.domains)
    local_checker = AccountChecker(accounts, settings.primary_domain)
    default_checker: ICredentialsChecker = local_checker
    if settings.ldap_url:
        from ourmail.directory.ldap import LDAPChecker, LDAPDirectory, LDAPSettings

        ldap = LDAPSettings.from_urls(settings.ldap_url)
        directory = LDAPDirectory(ldap, reactor, directory)
        default_checker = FirstOf(local_checker, LDAPChecker(ldap, reactor, directory))
    checker = password_checker(checkers or [default_checker], settings.primary_domain)
    if settings.auth_cache.ttl:
        checker = CachingChecker(checker, clock, settings.auth_cache)
    portal = Portal(realm or MailRealm(store), [checker])
    quota = QuotaPolicy(settings.quota, accounts, directory.quota)
    # Delivery hands remote mail to the queue, the queue local mail to delivery.
    delivery = Delivery(
        directory, store, quota, rewriter=sender_rewriter(settings, directory, clock)
    )
    queue = OutboundQueue(
        settings.queue,
        data,
        settings.hostname,
        directory,
        delivery,
        reactor,  # type: ignore[arg-type]
        queue_clock or reactor,  # type: ignore[arg-type]
        report_from=f"postmaster@{settings.primary_domain}",
    )
    delivery.queue = queue
    # Outbound DKIM signing at enqueue, ARC sealing of an alias's forwards (docs/filters.md).
    signer = DKIMSigner(KeyStore(data / "dkim"), settings.hostname)
    queue.signer = signer
    delivery.sealer = ARCSealer(signer, settings.filters.authserv_id or settings.hostname)
    vault = make_vault(settings, store)
    delivery.vault = vault
    indexer = vault_indexer(vault)
    # What the server sends on its own account is captured before it is queued.
    own_mail: IOutboundQueue = queue
    if isinstance(vault, Vault):
        own_mail = queue.reports = CapturingQueue(queue, vault, clock)
    # Out-of-office replies (docs/webmail.md#settings-and-out-of-office), in every process.
    preferences = PreferenceFiles(data / "prefs")
    replies = ReplyRecord(data / "vacation" / "replies.sqlite")
    delivery.responder = AutoResponder(
        preferences,
        directory,
        own_mail,
        replies,
        settings.hostname,
        clock,
        authserv_id=settings.filters.authserv_id or settings.hostname,
    )
    metrics = Metrics()
    delivery.metrics = queue.metrics = metrics
    # Mailing lists (docs/lists.md): what they send is the server's own mail, captured.
    delivery.lists = lists = mailing_lists(
        settings, reactor, directory, store, own_mail, delivery.sealer
    )
    checks = filter_checks(settings, reactor, own_mail, log=True)
    checks.metrics = metrics
    authenticator = Authenticator(
        portal, FailureThrottle(clock, settings.auth_throttle), clock, metrics
    )
    # Open sessions end when their account is disabled, deleted or given a new password.
    authenticator.revoker = SessionRevoker(checker, accounts.stamp, clock)
    return Parts(
        settings=settings,
        clock=clock,
        accounts=accounts,
        store=store,
        directory=directory,
        authenticator=authenticator,
        tls=ReloadableServerTLS(settings.tls_certificate, settings.tls_key),
        quota=quota,
        rates=SendingRates(settings.submission),
        queue=queue,
        delivery=delivery,
        retention=retention or NoRetention(),
        checks=checks,
        contacts=contact_book(settings),
        learning=junk_learning(settings, reactor, store, learner),
        preferences=preferences,
        metrics=metrics,
        vault=vault,
        indexer=indexer,
        lists=lists,
        shared=list_archives(settings, lists, clock),
    )


def ldap_probe(url: str, reactor: IReactorCore) -> Probe:
    """The probe of ``[ldap] url``'s servers for ``ourmail_backend_up{backend="ldap"}``."""
    from ourmail.directory.ldap import LDAPSettings, answers

    ldap = LDAPSettings.from_urls(url)
    return Probe("ldap", lambda: answers(ldap, reactor))


def list_archives(
    settings: Settings, lists: ListService, clock: IReactorTime
) -> ListArchives | None:
    """The lists' archives as shared folders (docs/lists.md#the-archive), read again whenever
    the lists are; None when ``[lists] enabled`` is off."""
    if not settings.lists.enabled:
        return None
    ctx = lists.ctx
    archives = ListArchives(ctx.db, ctx.store, ctx.directory, clock)
    lists.followers.append(archives.reload)
    return archives


def make_vault(settings: Settings, store: IMailStore) -> IVault:
    """The vault of ``<data>/vault`` (docs/vault.md), joining the store's group commit;
    NoVault when ``[vault] enabled = false``.  A store without a group commit (a plugin's)
    cannot have a vault: a commit of the vault's own could not put each record on disk before
    its mailbox copy (ConfigError, at start)."""
    if not settings.vault.enabled:
        return NoVault()
    group = getattr(store, "committer", None)
    if not ICommitGroup.providedBy(group):
        raise ConfigError(
            f"the vault needs a mail store with a group commit, and {type(store).__name__}"
            " has none: set [vault] enabled = false, or use the Maildir store"
        )
    return open_vault(
        settings.data_dir / "vault",
        settings.vault.roots,
        group,
        settings.vault.segment_size,
        crash_point=faults.point,
        flush_first=settings.vault.flush_first,
    )


def vault_indexer(vault: IVault) -> Indexer | None:
    """The indexer of the vault's search index (``<data>/vault/index.sqlite``): the
    console's catch-ups and, from its log, the command of the follower process that keeps
    the index in step (:class:`IndexerService`); None without a vault, or where SQLite lacks
    FTS5 (logged: ``ourmail vault search`` says the same)."""
    if not isinstance(vault, Vault):
        return None
    try:
        index = SQLiteIndex(vault.log.root / "index.sqlite")
    except IndexError_ as e:
        log.error("the vault is kept but cannot be searched: {e}", e=str(e))
        return None
    return Indexer(vault.log, index)


def spam_learner(settings: Settings, reactor: IReactorCore) -> ISpamLearner | None:
    """The spam scanner to teach, from ``[filters.check.spam]`` (its ``backend`` and
    ``address``); None while no spam check is configured."""
    if "spam" not in settings.filters.chain:
        return None
    _, learner = scanner_and_learner(settings.filters.options.get("spam", {}), reactor)
    return learner


def junk_learning(
    settings: Settings, reactor: IReactorCore, store: IMailStore, learner: ISpamLearner | None
) -> JunkLearning | None:
    """Learning from Junk moves (``[filters.learning]``), told by the store of every copy and
    move between folders; None when off, or with no scanner to teach."""
    config = settings.filters.learning
    learner = learner if learner is not None else spam_learner(settings, reactor)
    if learner is None or not config.enabled:
        return None
    if not isinstance(store, MaildirStore):
        log.warn("learning from Junk moves needs the Maildir store: off")
        return None
    clock: IReactorTime = reactor  # type: ignore[assignment]
    learning = JunkLearning.at(settings.data_dir / "filters", learner, clock, config)
    store.observers.append(learning)
    return learning


def contact_book(settings: Settings) -> IContactBook | None:
    """Where submission records whom users write to: the spam check's database, when the
    chain has the ``spam`` check (docs/filters.md#spam-spamd-rspamd)."""
    if "spam" not in settings.filters.chain:
        return None
    return ContactBook(SpamPrefs(database_path(settings.data_dir / "filters")))


def sender_rewriter(
    settings: Settings, directory: IDirectory, clock: IReactorTime
) -> ISenderRewriter | None:
    """SRS for forwarded mail (``[srs]``), its secrets in ``<data>/srs/secret``."""
    if not settings.srs.enabled:
        return None
    try:
        keys = load_secrets(settings.data_dir / "srs" / "secret")
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the SRS secret: {e}") from e
    return SenderRewriter(keys, directory.is_local_domain, clock, settings.srs.max_age)


def filter_checks(
    settings: Settings, reactor: IReactorCore, queue: IOutboundQueue | None, log: bool = False
) -> FilterChain:
    """The ``[filters]`` chain (ConfigError for a check or option that cannot work); with no
    checks it still removes forged Authentication-Results under our authserv-id.  ``queue``
    sends the checks' reports (None: `ourmail filters list`, which sends nothing); ``log``:
    record refusals and Junk filings in the filter log (``[filters.log]``)."""
    env = FilterEnvironment(
        resolver=make_resolver(settings.dns.servers),
        reactor=reactor,
        hostname=settings.hostname,
        domains=settings.domains,
        state_dir=settings.data_dir / "filters",
        queue=queue,
    )
    filter_log = None
    if log and settings.filters.log.enabled:
        db = LogDB(settings.data_dir / "filters" / "log.sqlite")
        filter_log = FilterLog(db, reactor, settings.filters.log.retention_days)
    return build_chain(settings.filters, env, reactor, filter_log)  # type: ignore[arg-type]


def build(
    settings: Settings,
    reactor: IReactorCore | None = None,
    checkers: Sequence[ICredentialsChecker] = (),
    store: IMailStore | None = None,
    realm: IRealm | None = None,
    queue_clock: IReactorTime | None = None,
    retention: IRetention | None = None,
    learner: ISpamLearner | None = None,
    reread: Callable[[], Settings] | None = None,
) -> Server:
    """The whole server for ``settings``.

    Plugin points (docs/plugins.md): ``checkers`` replace the local-account checker (several
    are asked in turn), ``store`` replaces the sharded Maildir store (delivery and the default
    realm use it), and ``realm`` replaces the default realm (it must hand out ``IUserStore``
    avatars, and its logout is called when the session ends), and ``retention``
    says which messages must never be erased (POP3 ``expunge`` asks it), and ``learner``
    is the spam scanner taught from Junk moves (default: the spam check's).  ``queue_clock``
    drives the outbound queue's schedule (tests pass a ``task.Clock``).  ``reread`` reads
    the configuration again at SIGHUP (``load_settings`` with the command line's options;
    None: SIGHUP reloads the certificate only).
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor  # type: ignore[assignment]
    assert reactor is not None
    raise_open_file_limit()
    upgrade.prepare(settings.data_dir, vault_roots=settings.vault.roots)
    first_start(settings)
    preflight.check_listeners(settings.listen, reactor)
    preflight.check(settings)
    vault_rules = None
    if retention is None:  # holds keep users' mail; daily expiry (ourmail/vault/retention.py)
        accounts = AccountDB(settings.data_dir)
        vault_rules = RetentionService(
            vault_log(settings), lambda: served_domains(settings, accounts), reactor
        )
        retention = vault_rules.retention
    parts = assemble(settings, reactor, checkers, store, realm, queue_clock, retention, learner)
    root = MultiService()
    InUse(settings.data_dir).setServiceParent(root)
    if vault_rules is not None:
        vault_rules.indexer = parts.indexer
        vault_rules.setServiceParent(root)
    if parts.indexer is not None:
        closing = [parts.vault.catalog.close] if isinstance(parts.vault, Vault) else []
        vault = settings.vault
        follow = indexfollow.arguments(parts.indexer.log.root, vault.roots, vault.segment_size)
        IndexerService(parts.indexer, reactor, follow, closing).setServiceParent(root)
    parts.queue.setServiceParent(root)
    if parts.lists is not None:
        parts.lists.setServiceParent(root)
    if parts.shared is not None:
        parts.shared.setServiceParent(root)
    if parts.authenticator.revoker is not None:
        parts.authenticator.revoker.setServiceParent(root)
    if parts.learning is not None:
        parts.learning.setServiceParent(root)
    hangup = ReloadOnHangup(parts.tls, reactor)
    hangup.setServiceParent(root)
    challenges: dict[str, str] = {}  # ACME HTTP-01: token -> key authorisation
    listeners: dict[str, ListenerService] = {}
    live = LiveSettings()
    health = Health(settings.data_dir, listeners)
    site_networks = networks(settings.metrics.networks)
    for service in SERVICES:
        endpoint = settings.listen.get(service)
        if endpoint is None:
            continue
        if service == "http":
            port = web_port(settings, listeners.get("web"))
            site = (
                http_site(settings.hostname, port, settings.limits, challenges)
                if settings.acme.enabled
                else redirect_site(settings.hostname, port, settings.limits)
            )
            site.resource = HealthOrRedirect(site.resource, health, site_networks)
            factory: Factory = site
        else:
            factory = parts.factory(service)
        live.watch(factory)
        parts.metrics.watch_connections(service, factory.counts)  # type: ignore[attr-defined]
        if service in IMPLICIT_TLS and not endpoint.startswith("ssl:"):
            factory = TLSMemoryBIOFactory(parts.tls, False, factory)
        listener = ListenerService(reactor, service, endpoint, factory)
        listener.setServiceParent(root)
        listeners[service] = listener
    PortsFile(settings.data_dir, listening_ports(listeners)).setServiceParent(root)
    if parts.web is not None:
        SessionSweeper(parts.web.sessions).setServiceParent(root)
        parts.web.services.clients = client_setup(settings, listeners)
        parts.web.services.certificate = (settings.tls_certificate, settings.tls_key)
        parts.web.services.health = health
        parts.web.services.listening = listening(listeners)
        live.web = parts.web.services
    parts.metrics.watch_queue(parts.queue.backlog, parts.queue.clock.seconds)
    parts.metrics.watch_certificate(parts.tls.not_after)
    find = functools.partial(volumes, settings.data_dir)  # again each round: shard moves
    VolumeWatch(find, parts.metrics, reactor).setServiceParent(root)
    probes = probes_for(getattr(parts.checks, "checks", ()), reactor)
    if settings.ldap_url:
        probes.append(ldap_probe(settings.ldap_url, reactor))
    if probes:
        BackendWatch(probes, parts.metrics, reactor).setServiceParent(root)
    acme = None
    if settings.acme.enabled:
        acme = CertificateRenewal.from_settings(settings, parts.tls, reactor, challenges)
        if parts.web is not None:  # Apple profiles are signed with the new certificate
            web = parts.web.services
            acme.installed.append(lambda cert, key: setattr(web, "certificate", (cert, key)))
        acme.setServiceParent(root)
    if settings.mx_processes > 1 and "smtp" in listeners:
        MXWorkers(settings, listeners["smtp"], reactor).setServiceParent(root)  # type: ignore[arg-type]
        workers = root.getServiceNamed("mx-workers")  # they reload at SIGHUP too
        hangup.also.append(workers.hangup)
        if acme is not None:  # and load each new ACME certificate
            acme.installed.append(lambda cert, key: workers.hangup())
        clear_snapshots(settings.data_dir / "metrics")
        parts.metrics.watch_workers(settings.data_dir / "metrics")
        workers.ended.append(parts.metrics.worker_ended)  # its last counts are carried over
        workers.restarted.append(parts.metrics.worker_restarted)  # OurmailWorkerRestarting
    if reread is not None:
        hangup.also.append(ConfigReload(settings, reread, [live.apply]).reload)
    tls = parts.tls  # the vault's head is signed daily with the certificate served
    heads = DailyHeadSigner(vault_log(settings), lambda: (tls.cert_path, tls.key_path), reactor)  # type: ignore[arg-type]
    heads.setServiceParent(root)
    return Server(
        service=root,
        listeners=listeners,
        store=parts.store,
        accounts=parts.accounts,
        queue=parts.queue,
        learning=parts.learning,
        web=parts.web,
        acme=acme,
        lists=parts.lists,
        shared=parts.shared,
    )


#: The listeners mail clients connect to (autoconfig offers those that are on).
CLIENT_SERVICES = frozenset({"imap", "imaps", "pop3", "pop3s", "submission", "submissions"})


def client_setup(
    settings: Settings, listeners: Mapping[str, ListenerService]
) -> Callable[[], ClientSetup]:
    """How mail clients reach this server (autoconfig, docs/autoconfig.md): the host name and
    the port each client-facing listener listens on."""

    def setup() -> ClientSetup:
        ports = {
            name: port
            for name, listener in listeners.items()
            if name in CLIENT_SERVICES and (port := listening_port(listener))
        }
        return ClientSetup(settings.hostname, ports, settings.web.mta_sts_mode)

    return setup


def listening_port(listener: ListenerService) -> int | None:
    """The TCP port ``listener`` listens on, or None before it does."""
    if listener.port is None:
        return None
    port = getattr(listener.port.getHost(), "port", None)
    return port if isinstance(port, int) else None


def web_port(settings: Settings, listener: ListenerService | None) -> Callable[[], int]:
    """The port the ``http`` listener redirects to: the ``web`` listener's once it listens
    (port 0 in tests picks one), else the configured one, else 443."""

    def port() -> int:
        if listener is not None and listener.port is not None:
            return int(getattr(listener.port.getHost(), "port", 443))
        endpoint = settings.listen.get("web")
        if endpoint:
            _, args, options = preflight.parse_endpoint(endpoint)
            text = options.get("port", args[0] if args else "")
            if text.isdigit():
                return int(text)
        return 443

    return port


def listening(listeners: Mapping[str, ListenerService]) -> Callable[[], dict[str, str]]:
    """Each listener and where it listens (``host:port`` or a socket's path), for the admin
    console; an empty text for one that does not listen (yet)."""

    def where() -> dict[str, str]:
        found = {}
        for name, listener in listeners.items():
            host = listener.port.getHost() if listener.port is not None else None
            if host is None:
                found[name] = ""
            elif hasattr(host, "port"):
                found[name] = f"{host.host}:{host.port}"
            else:
                found[name] = str(getattr(host, "name", host))
        return found

    return where


def listening_ports(listeners: Mapping[str, ListenerService]) -> Callable[[], dict[str, int]]:
    """Each listener on TCP and its port (for ``<data>/listening.json``)."""

    def ports() -> dict[str, int]:
        return {n: p for n, listener in listeners.items() if (p := listening_port(listener))}

    return ports


#: Seconds for a DMARC policy lookup of a list's poster (as the filters' DMARC check).
DMARC_TIMEOUT = 5.0


def mailing_lists(
    settings: Settings,
    reactor: IReactorCore,
    directory: IDirectory,
    store: IMailStore,
    queue: IOutboundQueue,
    sealer: IForwardSealer | None,
) -> ListService:
    """The mailing lists' service (docs/lists.md): their state under ``<data>/lists``, the
    secret of their one-click links, their web address as the setup wizard's, DMARC policy
    discovery for the ``From:`` rewriting of strict posters' mail."""
    root = settings.data_dir / "lists"
    resolver = make_resolver(settings.dns.servers)

    def dmarc_policy(domain: str) -> Deferred[str | None]:
        d = Deferred.fromCoroutine(dmarcpolicy.discover(resolver, reactor, domain, DMARC_TIMEOUT))
        return d.addCallback(lambda policy: None if policy is None else policy.disposition(domain))

    ctx = ListContext(
        db=ListDB(root / "lists.sqlite"),
        root=root,
        directory=directory,
        store=store,
        queue=queue,
        settings=settings.lists,
        hostname=settings.hostname,
        web_url=setup_url(settings).removesuffix("/setup"),
        secret=load_secret(root / "secret"),
        sealer=sealer,
        dmarc_policy=dmarc_policy,
        audit=AuditFile(settings.data_dir),
        authserv_id=settings.filters.authserv_id or settings.hostname,
        max_message_size=settings.limits.max_message_size,
    )
    lists = ListService(ctx, reactor)  # type: ignore[arg-type]
    lists.load()
    return lists
