"""The set-up wizard below the web (:class:`~ourmail.interfaces.ISetupWizard`,
docs/setup-wizard.md): each step through the code of the matching ``ourmail`` command
(:mod:`~ourmail.manage.accountops`, :mod:`~ourmail.manage.domainops`), the chosen names
written into ``ourmail.toml`` (:mod:`~ourmail.manage.configfile`), the state kept in
``<data>/setup.json`` (:mod:`~ourmail.manage.setupstate`), and an audit line for each step,
done or refused, before its Deferred fires.  The work runs in a worker thread, one step at a
time.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable, Sequence
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

    def set_password(
        self, actor: Actor, address: str, password: str
    ) -> Deferred[tuple[SetupState, Hashable]]:
        stamp: list[Hashable] = []

        def work(state: SetupState) -> tuple[str, SetupState]:
            found = accountops.existing_user(self.settings, self.db, address)
            passwordrules.check_strength(password, found)
            accountops.set_password(self.settings, self.db, found, password)
            # What the account checker's credential stamp now is (read at once, in the same
            # thread): the admin's own session is kept through this change, not ended by it.
            stamp.append(self.db.login_state(found))
            return found, _with_step(state, "password")

        return self._step(actor, "setup.password", address, work).addCallback(
            lambda state: (state, stamp[0])
        )

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
            # The admins' and every account's domains stay listed, so that after a restart
            # they stay served (the admin signed in with above all, even when another domain
            # becomes the primary one).
            listed = list(dict.fromkeys([*chosen, *self._account_domains()]))
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
            for domain in chosen:
                self._postmaster(actor, domain)
            # Served now but left out of the file (and not added with `ourmail domain add`):
            # no longer served after a restart.
            kept = {*listed, *self.db.domains()}
            removed = tuple(f"removed:{d}" for d in self.settings.domains if d not in kept)
            restart = (
                *(("hostname",) if host != self.settings.hostname else ()),
                *(("primary",) if chosen[0] != primary else ()),
                *removed,
            )
            changes: dict[str, object] = {}
            if tuple(chosen) != state.domains:
                # Another set of domains: the DKIM step is to be done again for them all.
                done = tuple(s for s in state.done if s not in ("dkim", "done"))
                changes = {"done": done, "dkim": ()}
            new = _with_step(
                attrs.evolve(state, **changes),  # type: ignore[arg-type]
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
            for domain in state.domains:
                if not domainops.signing_keys(self.settings, domain):
                    raise AccountRefused("no-dkim", f"{domain} has no DKIM key yet", domain)
            return ",".join(state.domains), _with_step(state, "done", open=False)

        return self._step(actor, "setup.finish", "", work)

    def restart_needed(self) -> tuple[str, ...]:
        state, running = self.current, self.settings
        needed = []
        if state.hostname and state.hostname != running.hostname:
            needed.append("hostname")
        if state.domains and state.domains[0] != running.primary_domain:
            needed.append("primary")
        for what in state.restart:
            if what.startswith("removed:") and what.partition(":")[2] in running.domains:
                needed.append(what)
        return tuple(needed)

    # -- the shared steps ---------------------------------------------------------------------

    def _account_domains(self) -> list[str]:
        """The domains of the admins and of every account, alias and group kept here."""
        addresses = [
            *self.settings.admin.admins,
            *self.settings.admin.domain_admins,
            *self.db.users(),
            *self.db.aliases(),
            *self.db.groups(),
        ]
        return [a.rpartition("@")[2] for a in addresses if a.rpartition("@")[2]]

    def _postmaster(self, actor: Actor, domain: str) -> None:
        """Make ``postmaster@domain`` reach the admin (an alias, as ``ourmail alias add``),
        unless that address exists already: RFC 5321 §4.5.1 requires it, and the DMARC and
        TLS-RPT reports of the DNS records (ourmail/dns/records.py) are sent there."""
        address = f"postmaster@{domain}"
        db = self.db
        if db.has_user(address) or db.alias(address) is not None or db.group(address):
            return
        add = partial(accountops.set_alias, self.settings, db, address, [actor.who])
        # Refused (the admin is no local user, say): audited, and the step goes on without it.
        with contextlib.suppress(AccountRefused):
            self._audited(actor, "alias.add", address, lambda: add()[0])

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
                    try:
                        found, new = work(state)
                        setupstate.save(self.settings.data_dir, new)
                    except OSError as e:  # a full disk, a file's permissions
                        raise AccountRefused("io", f"a file cannot be written: {e}") from e
                except AccountRefused as e:
                    result = f"refused: {e.code}"
                    try:
                        self.audit.record(actor, action, e.subject or target, result, detail)
                    except OSError as failed:
                        raise AccountRefused(
                            "audit", f"the audit log cannot be written: {failed}"
                        ) from e
                    raise
                self._saved = new
                self.audit.record(actor, action, found, "ok", detail)
                return new

        def keep(new: SetupState) -> SetupState:
            self.current = new
            return new

        return deferToThread(run).addCallback(keep)
