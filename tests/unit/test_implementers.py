"""Every class in ourmail (and its twistd plugin) that declares interfaces with ``@implementer``
passes ``zope.interface.verify.verifyObject`` for each of them.  The classes are found by
walking the packages, so a new one fails here until it has a factory below."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from learnerhelp import MemoryLearner
from storehelp import on_reactor
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementedBy
from zope.interface.verify import verifyObject

import ourmail
from ourmail.auth.accounts import AccountDB
from ourmail.auth.cache import CachingChecker
from ourmail.auth.changer import AccountPasswords
from ourmail.auth.checker import AccountChecker, FirstOf
from ourmail.auth.realm import MailRealm
from ourmail.config import (
    AdminSettings,
    Limits,
    LoginCacheSettings,
    QueueSettings,
    QuotaSettings,
    load_settings,
)
from ourmail.directory.ldap import LDAPChecker, LDAPDirectory, LDAPSettings
from ourmail.directory.ldapusers import LDAPUserList
from ourmail.directory.local import LocalDirectory
from ourmail.dns.lookup import Lookup
from ourmail.dns.lookup import make_resolver as make_check_resolver
from ourmail.filters import antivirus, clamd, dkim, dmarc, dnsbl, greylist, spam
from ourmail.filters.arc import ARCCheck, ARCCheckFactory
from ourmail.filters.chain import FilterChain
from ourmail.filters.filterlog import FilterLog, LogDB
from ourmail.filters.learning import JunkLearning
from ourmail.filters.rspamd import RspamdClient, RspamdLearner
from ourmail.filters.spamc import SpamdClient, SpamdLearner
from ourmail.filters.spamprefs import ContactBook, SpamPrefs
from ourmail.filters.spf import SPFCheck, SPFFactory
from ourmail.interfaces import FilterEnvironment, Usage
from ourmail.lists.archive import ListArchives
from ourmail.lists.listdb import ListDB
from ourmail.manage.accountadmin import LocalAccountAdmin
from ourmail.manage.audit import AuditFile
from ourmail.manage.disabling import AccountDisabling
from ourmail.manage.domainadmin import LocalDomainAdmin
from ourmail.manage.filterlogview import FilterLogReader
from ourmail.manage.queueadmin import LocalQueueAdmin
from ourmail.manage.routingadmin import LocalRoutingAdmin
from ourmail.manage.setupwizard import LocalSetupWizard
from ourmail.manage.shardreport import ShardReport
from ourmail.net.dns import make_resolver
from ourmail.net.lineproto import LineProtocol, _ChunkSender
from ourmail.net.tls import ReloadableServerTLS
from ourmail.pop3.policy import NoRetention
from ourmail.prefs import PreferenceFiles
from ourmail.queue.files import QueueFiles
from ourmail.queue.mtasts import ToAddress
from ourmail.queue.runner import OutboundQueue
from ourmail.secure import selfsigned
from ourmail.secure.arcseal import ARCSealer
from ourmail.secure.certstatus import CertificateStatus
from ourmail.secure.dkimkeys import KeyStore
from ourmail.secure.dkimsign import DKIMSigner
from ourmail.service import mailing_lists
from ourmail.smtp.delivery import Delivery
from ourmail.smtp.submitter import Submitter
from ourmail.srs import SenderRewriter
from ourmail.store.committer import Committer
from ourmail.store.memory import MemoryStore
from ourmail.store.quota import QuotaPolicy
from ourmail.store.userstore import MaildirStore
from ourmail.vacation.record import ReplyRecord
from ourmail.vacation.responder import AutoResponder
from ourmail.vault.desk import VaultDesk
from ourmail.vault.index import SQLiteIndex
from ourmail.vault.outbound import CapturingQueue
from ourmail.vault.retentionservice import VaultRetention
from ourmail.vault.vault import NoVault, open_vault
from ourmail.web.live import FolderStream
from ourmail.web.streaming import PieceProducer
from twisted.plugins import ourmail_plugin

MSG = b"From: a@example.test\r\nSubject: hi\r\n\r\nbody\r\n"


def _modules() -> list[Any]:
    names = [
        m.name
        for m in pkgutil.walk_packages(ourmail.__path__, "ourmail.")
        if not m.name.endswith("__main__")  # runs the admin command when imported
    ]
    return [importlib.import_module(n) for n in [*names, "twisted.plugins.ourmail_plugin"]]


def implementers() -> list[type]:
    """The classes defined in ourmail that declare interfaces themselves (not by inheritance)."""
    found = []
    for module in _modules():
        for obj in vars(module).values():
            own = inspect.isclass(obj) and obj.__module__ == module.__name__
            if own and tuple(implementedBy(obj).declared):
                found.append(obj)
    return found


def _checker(tmp: Path) -> AccountChecker:
    return AccountChecker(AccountDB(tmp), "example.test")


def _ldap() -> LDAPSettings:
    return LDAPSettings.from_urls("ldap://127.0.0.1:1/dc=example,dc=test")


def _directory(tmp: Path) -> LocalDirectory:
    return LocalDirectory(AccountDB(tmp), ("example.test",))


def _maildir_inbox(tmp: Path) -> Any:
    return MaildirStore(tmp).user("alice@example.test").folder("INBOX")


def _maildir_message(tmp: Path) -> Any:
    inbox = _maildir_inbox(tmp)
    return inbox.message(on_reactor(inbox.append, MSG))


def _memory_inbox(tmp: Path) -> Any:
    return MemoryStore().user("alice@example.test").folder("INBOX")


def _memory_message(tmp: Path) -> Any:
    inbox = _memory_inbox(tmp)
    uids: list[int] = []
    inbox.append(MSG).addCallback(uids.append)  # the memory store answers at once
    return inbox.message(uids[0])


def _delivery(tmp: Path) -> Delivery:
    return Delivery(_directory(tmp), MemoryStore(), QuotaPolicy(QuotaSettings(), AccountDB(tmp)))


def _filter_env(tmp: Path) -> FilterEnvironment:
    return FilterEnvironment(make_resolver(["127.0.0.1:53"]), reactor, "mx.test", (), tmp)


def _tls(tmp: Path) -> ReloadableServerTLS:
    selfsigned.ensure(tmp / "cert.pem", tmp / "key.pem", "mail.example.test")
    return ReloadableServerTLS(tmp / "cert.pem", tmp / "key.pem")


def _responder(tmp: Path) -> AutoResponder:
    queue = OutboundQueue(
        QueueSettings(), tmp, "mail.example.test", _directory(tmp), _delivery(tmp), reactor
    )
    prefs, record = PreferenceFiles(tmp / "prefs"), ReplyRecord(tmp / "replies.sqlite")
    return AutoResponder(prefs, _directory(tmp), queue, record, "mx.test", Clock())


def _vault_desk(tmp: Path) -> VaultDesk:
    vault = open_vault(tmp / "vault", (), Committer(reactor))
    index = SQLiteIndex(tmp / "vault" / "index.sqlite")
    return VaultDesk(vault.log, vault.catalog, index, None, AdminSettings(), None, reactor)


#: "module.Class" -> a function of a temporary folder that makes an instance to verify.
FACTORIES: dict[str, Callable[[Path], Any]] = {
    "ourmail.auth.cache.CachingChecker": lambda tmp: CachingChecker(
        _checker(tmp), Clock(), LoginCacheSettings()
    ),
    "ourmail.auth.checker.AccountChecker": _checker,
    "ourmail.auth.changer.AccountPasswords": lambda tmp: AccountPasswords(AccountDB(tmp)),
    "ourmail.vacation.responder.AutoResponder": _responder,
    "ourmail.auth.checker.FirstOf": lambda tmp: FirstOf(_checker(tmp)),
    "ourmail.auth.realm.MailRealm": lambda tmp: MailRealm(MaildirStore(tmp)),
    "ourmail.directory.ldap.LDAPChecker": lambda tmp: LDAPChecker(_ldap(), reactor),
    "ourmail.directory.ldap.LDAPDirectory": lambda tmp: LDAPDirectory(
        _ldap(), reactor, _directory(tmp)
    ),
    "ourmail.directory.local.LocalDirectory": _directory,
    "ourmail.net.lineproto._ChunkSender": lambda tmp: _ChunkSender(LineProtocol(), iter([])),
    "ourmail.net.tls.ReloadableServerTLS": _tls,
    "ourmail.pop3.policy.NoRetention": lambda tmp: NoRetention(),
    "ourmail.queue.mtasts.ToAddress": lambda tmp: ToAddress(
        TCP4ClientEndpoint(reactor, "127.0.0.1", 443)
    ),
    "ourmail.queue.runner.OutboundQueue": lambda tmp: OutboundQueue(
        QueueSettings(), tmp, "mail.example.test", _directory(tmp), _delivery(tmp), reactor
    ),
    "ourmail.smtp.delivery.Delivery": _delivery,
    "ourmail.smtp.submitter.Submitter": lambda tmp: Submitter(
        "mail.example.test", Limits(), _directory(tmp), MemoryStore(), _delivery(tmp), tmp
    ),
    "ourmail.prefs.PreferenceFiles": lambda tmp: PreferenceFiles(tmp / "prefs"),
    "ourmail.vault.index.SQLiteIndex": lambda tmp: SQLiteIndex(tmp / "index.sqlite"),
    "ourmail.web.live.FolderStream": lambda tmp: FolderStream(DummyRequest([b"events"]), bool),
    "ourmail.web.streaming.PieceProducer": lambda tmp: PieceProducer(
        DummyRequest([b""]), iter(()), Deferred()
    ),
    "ourmail.srs.SenderRewriter": lambda tmp: SenderRewriter([b"k"], bool, Clock()),
    "ourmail.filters.chain.FilterChain": lambda tmp: FilterChain([], Clock(), "mx.test"),
    "ourmail.filters.filterlog.FilterLog": lambda tmp: FilterLog(
        LogDB(tmp / "log.sqlite"), reactor
    ),
    "ourmail.filters.learning.JunkLearning": lambda tmp: JunkLearning.at(
        tmp, MemoryLearner(), Clock()
    ),
    "ourmail.filters.dnsbl.DNSBLFactory": lambda tmp: dnsbl.factory,
    "ourmail.filters.dnsbl.DNSBLCheck": lambda tmp: dnsbl.factory.build(
        {"zones": [{"zone": "bl.test"}]}, _filter_env(tmp)
    ),
    "ourmail.filters.antivirus.AntivirusFactory": lambda tmp: antivirus.factory,
    "ourmail.filters.antivirus.AntivirusCheck": lambda tmp: antivirus.factory.build(
        {"address": "127.0.0.1:3310"}, _filter_env(tmp)
    ),
    "ourmail.filters.clamd._Session": lambda tmp: clamd._Session(),
    "ourmail.filters.greylist.GreylistFactory": lambda tmp: greylist.factory,
    "ourmail.filters.greylist.GreylistCheck": lambda tmp: greylist.factory.build(
        {}, _filter_env(tmp)
    ),
    "ourmail.filters.spamc.SpamdLearner": lambda tmp: SpamdLearner(
        SpamdClient(reactor, "127.0.0.1:783")
    ),
    "ourmail.filters.rspamd.RspamdLearner": lambda tmp: RspamdLearner(
        RspamdClient(reactor, "http://127.0.0.1:11333")
    ),
    "ourmail.filters.spam.SpamFactory": lambda tmp: spam.factory,
    "ourmail.filters.spam.SpamCheck": lambda tmp: spam.factory.build({}, _filter_env(tmp)),
    "ourmail.filters.spamprefs.ContactBook": lambda tmp: ContactBook(SpamPrefs(tmp / "s.db")),
    "ourmail.filters.spf.SPFCheck": lambda tmp: SPFCheck(reactor=Clock(), resolver=None),
    "ourmail.filters.spf.SPFFactory": lambda tmp: SPFFactory(),
    "ourmail.filters.arc.ARCCheck": lambda tmp: ARCCheck(None),
    "ourmail.filters.arc.ARCCheckFactory": lambda tmp: ARCCheckFactory(),
    "ourmail.secure.dkimsign.DKIMSigner": lambda tmp: DKIMSigner(KeyStore(tmp), "mx.test"),
    "ourmail.secure.arcseal.ARCSealer": lambda tmp: ARCSealer(
        DKIMSigner(KeyStore(tmp), "mx.test"), "mx.test"
    ),
    "ourmail.filters.dkim.DKIMCheck": lambda tmp: dkim.DKIMCheck(None, reactor),
    "ourmail.filters.dkim.DKIMFactory": lambda tmp: dkim.factory,
    "ourmail.filters.dmarc.DMARCCheck": lambda tmp: dmarc.DMARCCheck(None, reactor),
    "ourmail.filters.dmarc.DMARCFactory": lambda tmp: dmarc.factory,
    "ourmail.store.quota.QuotaPolicy": lambda tmp: QuotaPolicy(QuotaSettings(), AccountDB(tmp)),
    "ourmail.store.folder.StoredMessage": _maildir_message,
    "ourmail.store.folder.MaildirFolder": _maildir_inbox,
    "ourmail.store.memory.MemoryMessage": _memory_message,
    "ourmail.store.memory.MemoryFolder": _memory_inbox,
    "ourmail.store.memory.MemoryUserStore": lambda tmp: MemoryStore().user("a@example.test"),
    "ourmail.store.memory.MemoryStore": lambda tmp: MemoryStore(),
    "ourmail.store.userstore.MaildirUserStore": lambda tmp: MaildirStore(tmp).user(
        "alice@example.test"
    ),
    "ourmail.store.userstore.MaildirStore": MaildirStore,
    "ourmail.lists.archive.ListArchives": lambda tmp: ListArchives(
        ListDB(tmp / "lists.sqlite"), MemoryStore(), _directory(tmp)
    ),
    "twisted.plugins.ourmail_plugin.OurmailServiceMaker": lambda tmp: ourmail_plugin.serviceMaker,
    "twisted.plugins.ourmail_plugin.OurmailCheckerFactory": (
        lambda tmp: ourmail_plugin.checkerFactory
    ),
    "twisted.plugins.ourmail_plugin.LDAPCheckerFactory": (
        lambda tmp: ourmail_plugin.ldapCheckerFactory
    ),
    "ourmail.manage.audit.AuditFile": lambda tmp: AuditFile(tmp),
    "ourmail.manage.accountadmin.LocalAccountAdmin": lambda tmp: LocalAccountAdmin(
        load_settings(data=str(tmp), domains=("example.test",), hostname="mx.example.test"),
        MemoryStore(),
        QuotaPolicy(QuotaSettings(), AccountDB(tmp)),
        AuditFile(tmp),
    ),
    "ourmail.manage.queueadmin.LocalQueueAdmin": lambda tmp: LocalQueueAdmin(
        QueueFiles(tmp / "queue"), AuditFile(tmp)
    ),
    "ourmail.manage.filterlogview.FilterLogReader": lambda tmp: FilterLogReader(tmp / "log.db"),
    "ourmail.manage.shardreport.ShardReport": lambda tmp: ShardReport(tmp),
    "ourmail.manage.routingadmin.LocalRoutingAdmin": lambda tmp: LocalRoutingAdmin(
        load_settings(data=str(tmp), domains=("example.test",), hostname="mx.example.test"),
        AuditFile(tmp),
    ),
    "ourmail.manage.disabling.AccountDisabling": lambda tmp: AccountDisabling(
        load_settings(data=str(tmp), domains=("example.test",), hostname="mx.example.test"),
        AuditFile(tmp),
    ),
    "ourmail.manage.domainadmin.LocalDomainAdmin": lambda tmp: LocalDomainAdmin(
        load_settings(data=str(tmp), domains=("example.test",), hostname="mx.example.test"),
        AuditFile(tmp),
        Lookup(make_check_resolver(["127.0.0.1:53"])),
        Clock(),
    ),
    "ourmail.secure.certstatus.CertificateStatus": lambda tmp: CertificateStatus(
        load_settings(data=str(tmp), domains=("example.test",), hostname="mx.example.test")
    ),
    "ourmail.manage.setupwizard.LocalSetupWizard": lambda tmp: LocalSetupWizard(
        load_settings(data=str(tmp), domains=("example.test",), hostname="mx.example.test"),
        AuditFile(tmp),
    ),
    "ourmail.directory.ldapusers.LDAPUserList": lambda tmp: LDAPUserList(
        _ldap(), reactor, lambda domain: True, lambda address: Usage(0, 0)
    ),
    "ourmail.store.committer.Committer": lambda tmp: Committer(reactor),
    "ourmail.vault.vault.Vault": lambda tmp: open_vault(tmp / "vault", (), Committer(reactor)),
    "ourmail.vault.vault.NoVault": lambda tmp: NoVault(),
    "ourmail.vault.desk.VaultDesk": lambda tmp: _vault_desk(tmp),
    "ourmail.vault.outbound.CapturingQueue": lambda tmp: CapturingQueue(
        OutboundQueue(
            QueueSettings(), tmp, "mail.example.test", _directory(tmp), _delivery(tmp), reactor
        ),
        NoVault(),
        reactor,
    ),
    "ourmail.vault.retentionservice.VaultRetention": lambda tmp: VaultRetention(("example.test",)),
    "ourmail.lists.service.ListService": lambda tmp: mailing_lists(
        load_settings(data=str(tmp), domains=("example.test",), hostname="mx.example.test"),
        reactor,
        _directory(tmp),
        MemoryStore(),
        NoVault(),  # type: ignore[arg-type]
        None,
    ),
}


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@pytest.mark.parametrize("cls", implementers(), ids=_name)
def test_verify_object(cls: type, tmp_path: Path) -> None:
    factory = FACTORIES.get(_name(cls))
    assert factory is not None, f"add a factory for {_name(cls)} to FACTORIES in {__file__}"
    obj = factory(tmp_path)
    assert type(obj) is cls
    for interface in implementedBy(cls):
        verifyObject(interface, obj)


def test_the_walk_finds_the_plugin_points() -> None:
    names = {_name(c) for c in implementers()}
    assert {
        "ourmail.directory.local.LocalDirectory",
        "ourmail.auth.checker.FirstOf",
        "twisted.plugins.ourmail_plugin.OurmailCheckerFactory",
    } <= names
    assert set(FACTORIES) == names  # no factory for a class that is gone
