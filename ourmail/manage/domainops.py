"""Changes to the domains served here and their DKIM keys, shared by the ``ourmail domain`` /
``ourmail dkim`` commands (``ourmail/admin/``), the set-up wizard and the admin console, so all
check and store alike.

Each function blocks (the accounts file is locked, replaced and fsynced; a key is generated and
fsynced): the server calls them in a thread.  A change that cannot be done raises
:class:`~ourmail.interfaces.AccountRefused`, whose text is the commands' error message.
"""

from __future__ import annotations

from ourmail.auth.accounts import AccountDB, AccountError
from ourmail.config import ConfigError, Settings, normalise_domain
from ourmail.interfaces import AccountRefused
from ourmail.secure.dkimkeys import Algorithm, DKIMKey, KeyError_, KeyStore, default_selector


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
    """The keys that sign ``domain``'s mail (every active one, ``ourmail/secure/dkimkeys.py``)."""
    return list(dkim_keys(settings).keys(domain_name(domain)))


def ensure_dkim_key(settings: Settings, domain: str, algorithm: Algorithm = "rsa") -> list[DKIMKey]:
    """``domain``'s signing keys, one made (RSA 2048 by default, selector ``YYYYMMr``) when it
    has none; the TXT record each needs is :meth:`DKIMKey.dns_record`."""
    domain = domain_name(domain)
    keys = signing_keys(settings, domain)
    if keys:
        return keys
    try:
        return [dkim_keys(settings).generate(domain, default_selector(algorithm), algorithm)]
    except KeyError_ as e:
        raise AccountRefused("dkim", str(e), domain) from None
