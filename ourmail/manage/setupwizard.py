"""The set-up wizard below the web (:class:`~ourmail.interfaces.ISetupWizard`,
docs/setup-wizard.md): each step through the code of the matching ``ourmail`` command
(:mod:`~ourmail.manage.accountops`, :mod:`~ourmail.manage.domainops`), the chosen names
written into ``ourmail.toml`` (:mod:`~ourmail.manage.configfile`), the state kept in
``<data>/setup.json`` (:mod:`~ourmail.manage.setupstate`), and an audit line for each step,
done or refused, before its Deferred fires.  The work runs in a worker thread, one step at a
time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import partial

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from ourmail.auth.accounts import AccountDB
from ourmail.config import Settings
from ourmail.dns.api import domain_records
from ourmail.interfaces import (
    AccountRefused,
    Actor,
    IAuditLog,
    ISetupWizard,
    PublishRecord,
    SetupState,
)
from ourmail.manage import accountops, configfile, domainops, passwordrules, setupstate

#: Most domains chosen in one go (more are added later with the console or the command).
MAX_DOMAINS = 20
#: The records the summary shows (the DNS page lists them all).
SUMMARY_KINDS = ("mx", "spf", "dkim", "dmarc")

Work = Callable[[SetupState], tuple[str, SetupState]]


def host_name(raw: str) -> str:
    """A fully qualified host name (at least two labels, not ``localhost``), normalised;
    :class:`AccountRefused` ``bad-hostname`` otherwise."""
    try:
        name = domainops.domain_name(raw)
    except AccountRefused:
        raise AccountRefused("bad-hostname", "not a host name", raw[:255]) from None
    if "." not in name or name.startswith("localhost.") or name.rsplit(".", 1)[1].isdigit():
        raise AccountRefused("bad-hostname", "not a fully qualified host name", name)
    return name


def _with_step(state: SetupState, step: str, **changes: object) -> SetupState:
    done = state.done if step in state.done else (*state.done, step)
    return attrs.evolve(state, done=done, **changes)  # type: ignore[arg-type]


@implementer(ISetupWizard)
class LocalSetupWizard:
    """:class:`ISetupWizard` over the data folder of ``settings``."""

    def __init__(self, settings: Settings, audit: IAuditLog) -> None:
        self.settings = settings
        self.audit = audit
        self.db = AccountDB(settings.data_dir)
        # Read once, at start (blocking, small): the rules and the meter use them.
        self.common = passwordrules.common_list()
        passwordrules.common_passwords()
        self.current = setupstate.load(settings.data_dir)
        self._saved = self.current  # the worker threads' copy, under _lock
        self._lock = threading.Lock()

    def state(self) -> SetupState:
        return self.current

    def common_list(self) -> bytes:
        return self.common

    # -- steps -----------------------------------------------------------------------------

    def set_password(self, actor: Actor, address: str, password: str) -> Deferred[SetupState]:
        def work(state: SetupState) -> tuple[str, SetupState]:
            found = accountops.existing_user(self.settings, self.db, address)
            passwordrules.check_strength(password, found)
            accountops.set_password(self.settings, self.db, found, password)
            return found, _with_step(state, "password")

        return self._step(actor, "setup.password", address, work)

    def set_names(
        self, actor: Actor, domains: Sequence[str], hostname: str
    ) -> Deferred[SetupState]:
        def work(state: SetupState) -> tuple[str, SetupState]:
            self._needs(state, "password")
            host = host_name(hostname)
            chosen = list(dict.fromkeys(domainops.domain_name(d) for d in domains))
            if not chosen:
                raise AccountRefused("no-domains", "choose at least one mail domain")
            if len(chosen) > MAX_DOMAINS:
                raise AccountRefused("too-many", f"at most {MAX_DOMAINS} domains", "")
            primary = self.settings.primary_domain
            # The postmaster account signed in with stays served and an admin after a
            # restart, even when another domain becomes the primary one.
            listed = chosen if primary in chosen else [*chosen, primary]
            top = {"hostname": host, "domains": listed}
            tables = {"admin": {"admins": list(self.settings.admin.admins)}}
            path = self.settings.config_path
            if path is not None and path.parent == self.settings.data_dir:
                configfile.update_config(path, top, tables, keep={"admin": ("admins",)})
                config, lines = "written", ""
            else:
                config, lines = "manual", configfile.config_lines(top, tables)
            served = accountops.served_domains(self.settings, self.db)
            add_domain = partial(domainops.add_domain, self.settings, self.db)
            for domain in chosen:
                if domain not in served:
                    self._audited(actor, "domain.add", domain, partial(add_domain, domain))
            restart = tuple(
                what
                for what, changed in (
                    ("hostname", host != self.settings.hostname),
                    ("primary", chosen[0] != primary),
                )
                if changed
            )
            new = _with_step(
                state,
                "names",
                hostname=host,
                domains=tuple(chosen),
                config=config,
                config_lines=lines,
                restart=restart,
            )
            return host, new

        detail = "domains=" + ",".join(d[:255] for d in domains[:MAX_DOMAINS])
        return self._step(actor, "setup.names", hostname, work, detail)

    def add_user(self, actor: Actor, address: str, password: str) -> Deferred[SetupState]:
        def work(state: SetupState) -> tuple[str, SetupState]:
            self._needs(state, "names")
            found = accountops.address(self.settings, self.db, address)
            domain = found.rpartition("@")[2]
            if domain not in state.domains:
                raise AccountRefused("not-chosen", f"{domain} is not a chosen domain", domain)
            if self.db.has_user(found) or self.db.alias(found) is not None:
                raise AccountRefused("exists", f"{found} already exists", found)
            passwordrules.check_strength(password, found)
            added = accountops.add_user(self.settings, self.db, found, password)
            return added, attrs.evolve(state, users=(*state.users, added))

        return self._step(actor, "user.add", address, work)

    def users_done(self, actor: Actor) -> Deferred[SetupState]:
        def work(state: SetupState) -> tuple[str, SetupState]:
            self._needs(state, "names")
            return ",".join(state.users), _with_step(state, "users")

        return self._step(actor, "setup.users", "", work)

    def make_dkim(self, actor: Actor) -> Deferred[SetupState]:
        def work(state: SetupState) -> tuple[str, SetupState]:
            self._needs(state, "names")
            records = []
            for domain in state.domains:
                for key in domainops.ensure_dkim_key(self.settings, domain):
                    name = f"{key.selector}._domainkey.{domain}"
                    records.append(PublishRecord(name, "TXT", key.txt()))
            return ",".join(state.domains), _with_step(state, "dkim", dkim=tuple(records))

        return self._step(actor, "setup.dkim", "", work)

    def records(self, domain: str) -> Deferred[list[PublishRecord]]:
        host = self.current.hostname or self.settings.hostname
        settings = attrs.evolve(self.settings, hostname=host)

        def summary() -> list[PublishRecord]:
            found = domain_records(settings, domain)
            return [
                PublishRecord(r.name, r.type, r.value())
                for r in found.records
                if r.kind in SUMMARY_KINDS
            ]

        return deferToThread(summary)

    def finish(self, actor: Actor) -> Deferred[SetupState]:
        def work(state: SetupState) -> tuple[str, SetupState]:
            self._needs(state, "dkim")
            return ",".join(state.domains), _with_step(state, "done", open=False)

        return self._step(actor, "setup.finish", "", work)

    # -- the shared steps ---------------------------------------------------------------------

    @staticmethod
    def _needs(state: SetupState, step: str) -> None:
        if step not in state.done:
            raise AccountRefused("order", f"the step {step!r} comes first", step)

    def _audited(self, actor: Actor, action: str, target: str, work: Callable[[], str]) -> str:
        try:
            found = work()
        except AccountRefused as e:
            self.audit.record(actor, action, e.subject or target, f"refused: {e.code}")
            raise
        self.audit.record(actor, action, found, "ok")
        return found

    def _step(
        self, actor: Actor, action: str, target: str, work: Work, detail: str = ""
    ) -> Deferred[SetupState]:
        """``work`` in a thread (one step at a time), the new state kept durably, then the
        step's audit line (``ok`` or ``refused: <code>``), all before the Deferred fires."""

        def run() -> SetupState:
            with self._lock:
                try:
                    self.audit.ready()
                except OSError as e:
                    raise AccountRefused("audit", f"the audit log cannot be written: {e}") from e
                state = self._saved
                try:
                    if not state.open:
                        raise AccountRefused("closed", "set-up is finished")
                    found, new = work(state)
                    setupstate.save(self.settings.data_dir, new)
                except AccountRefused as e:
                    result = f"refused: {e.code}"
                    self.audit.record(actor, action, e.subject or target, result, detail)
                    raise
                self._saved = new
                self.audit.record(actor, action, found, "ok", detail)
                return new

        def keep(new: SetupState) -> SetupState:
            self.current = new
            return new

        return deferToThread(run).addCallback(keep)
