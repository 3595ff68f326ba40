"""Changes to the domains served here and their DKIM keys, shared by the ``ourmail domain`` /
``ourmail dkim`` commands (``ourmail/admin/``), the set-up wizard and the admin console, so all
check and store alike.

Each function blocks (the accounts file is locked, replaced and fsynced; a key is generated and
fsynced): the server calls them in a thread.  A change that cannot be done raises
:class:`~ourmail.interfaces.AccountRefused`, whose text is the commands' error message.
"""

from __future__ import annotations

from twisted.logger import Logger

from ourmail.auth.accounts import AccountDB, AccountError
from ourmail.config import ConfigError, Settings, normalise_domain
from ourmail.interfaces import AccountRefused
from ourmail.secure.dkimkeys import (
    Algorithm,
    DKIMKey,
    KeyError_,
    KeyExists,
    KeyStore,
    Unreadable,
    default_selector,
    report_unreadable,
)

log = Logger()

#: Selectors tried for a new key: ``YYYYMMr``, then ``YYYYMMr-2`` … (a retired key of this
#: month keeps its selector: its record stays published).
SELECTOR_TRIES = 20


def domain_name(raw: str) -> str:
    """``raw`` as a normalised (lower-case, IDNA) domain name."""
    try:
        return normalise_domain(raw)
    except ConfigError as e:
        raise AccountRefused("bad-domain", str(e), raw[:255]) from None


def add_domain(settings: Settings, db: AccountDB, raw: str) -> str:
    """Serve another domain (kept in the accounts file: a running server sees it at once);
    returns its normalised name."""
    domain = domain_name(raw)
    if domain in settings.domains:
        raise AccountRefused(
            "configured", f"{domain} is already served (from the configuration)", domain
        )
    try:
        db.add_domain(domain)
    except AccountError as e:
        raise AccountRefused("exists", str(e), domain) from None
    return domain


def dkim_keys(settings: Settings) -> KeyStore:
    """The DKIM keys under ``<data>/dkim`` (docs/filters.md)."""
    return KeyStore(settings.data_dir / "dkim")


def signing_keys(settings: Settings, domain: str) -> list[DKIMKey]:
    """The keys that sign ``domain``'s mail (every active one, ``ourmail/secure/dkimkeys.py``);
    an unreadable key file signs nothing: it is logged once and left out."""
    keys = []
    for entry in dkim_keys(settings).entries(domain_name(domain)):
        if isinstance(entry, Unreadable):
            report_unreadable(entry)
        else:
            keys.append(entry)
    return keys


def new_dkim_key(settings: Settings, domain: str, algorithm: Algorithm = "rsa") -> DKIMKey:
    """Make a key for ``domain`` under the first free selector of :func:`default_selector`
    (``YYYYMMr``, ``YYYYMMr-2`` …).  Refused with ``has-key`` when another key of the domain
    began signing meanwhile (two admins at once), with ``dkim`` (and the reason logged) when
    no key can be made."""
    domain = domain_name(domain)
    base = default_selector(algorithm)
    store = dkim_keys(settings)
    reason = f"no free selector from {base} to {base}-{SELECTOR_TRIES}"
    for n in range(1, SELECTOR_TRIES + 1):
        selector = base if n == 1 else f"{base}-{n}"
        try:
            return store.generate(domain, selector, algorithm)
        except KeyExists:
            if signing_keys(settings, domain):
                raise AccountRefused(
                    "has-key", f"{domain} already has a DKIM key", domain
                ) from None
        except (KeyError_, OSError) as e:
            reason = str(e)
            break
    log.error("dkim: no key made for {domain}: {reason}", domain=domain, reason=reason)
    raise AccountRefused("dkim", f"no DKIM key made for {domain}: {reason}", domain)


def ensure_dkim_key(settings: Settings, domain: str, algorithm: Algorithm = "rsa") -> list[DKIMKey]:
    """``domain``'s signing keys, one made (RSA 2048 by default, selector ``YYYYMMr``) when it
    has none; the TXT record each needs is :meth:`DKIMKey.dns_record`."""
    domain = domain_name(domain)
    keys = signing_keys(settings, domain)
    if keys:
        return keys
    try:
        return [new_dkim_key(settings, domain, algorithm)]
    except AccountRefused as e:
        if e.code != "has-key":
            raise
        return signing_keys(settings, domain)  # made meanwhile by another
