"""Which checks exist, and the chain built from ``[filters]``.

A built-in check is named by its short name; any other by ``package.module:attribute``, an
:class:`~ourmail.interfaces.ICheckFactory` (docs/plugins.md shows one).  Every option problem
is a :class:`~ourmail.config.ConfigError` at start-up, never a surprise at the first message.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from twisted.internet.interfaces import IReactorTime

from ourmail.config import ConfigError, FilterSettings
from ourmail.filters.chain import FilterChain
from ourmail.interfaces import STAGES, FilterEnvironment, ICheck, ICheckFactory, IFilterLog

#: Built-in checks: name -> "module:factory".
BUILTIN: Mapping[str, str] = {
    "dnsbl": "ourmail.filters.dnsbl:factory",
    "greylist": "ourmail.filters.greylist:factory",
    "spf": "ourmail.filters.spf:factory",
    "arc": "ourmail.filters.arc:factory",
    "dkim": "ourmail.filters.dkim:factory",
    "dmarc": "ourmail.filters.dmarc:factory",
    "antivirus": "ourmail.filters.antivirus:factory",
    "spam": "ourmail.filters.spam:factory",
}

#: Options every check takes, read by the chain's builder.
COMMON_OPTIONS = ("timeout", "on_error", "trusted")
ON_ERROR = ("accept", "tempfail")


def load_factory(name: str) -> ICheckFactory:
    """The factory for ``name``: a built-in check, or ``package.module:attribute``."""
    ref = BUILTIN.get(name, name)
    module_name, sep, attribute = ref.partition(":")
    if not sep:
        known = ", ".join(sorted(BUILTIN)) or "none"
        raise ConfigError(f"unknown check {name!r} in [filters] chain (built-in: {known})")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"check {name!r}: cannot load {ref}: {e}") from e
    if not ICheckFactory.providedBy(factory):
        raise ConfigError(f"check {name!r}: {ref} does not provide ICheckFactory")
    return factory


def build_check(name: str, options: Mapping[str, Any], env: FilterEnvironment) -> ICheck:
    """One check with its options; the common ones (timeout, on_error) are applied here."""
    factory = load_factory(name)
    own = {k: v for k, v in options.items() if k not in COMMON_OPTIONS}
    try:
        check = factory.build(own, env)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"[filters.check.{name}]: {e}") from e
    if "timeout" in options:
        timeout = options["timeout"]
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise ConfigError(f"'filters.check.{name}.timeout' must be a positive number")
        check.timeout = float(timeout)
    if "on_error" in options:
        if options["on_error"] not in ON_ERROR:
            raise ConfigError(f"'filters.check.{name}.on_error' must be one of {ON_ERROR}")
        check.on_error = options["on_error"]
    if "trusted" in options:
        if not isinstance(options["trusted"], bool):
            raise ConfigError(f"'filters.check.{name}.trusted' must be true or false")
        check.trusted = options["trusted"]
    elif not hasattr(check, "trusted"):
        check.trusted = False  # a check written before the attribute existed: not trusted
    if not ICheck.providedBy(check) or not set(check.stages) <= set(STAGES):
        raise ConfigError(f"check {name!r} did not make an ICheck")
    return check


def build_chain(
    settings: FilterSettings,
    env: FilterEnvironment,
    clock: IReactorTime,
    log: IFilterLog | None = None,
) -> FilterChain:
    """The configured chain (Authentication-Results under ``[filters] authserv_id``, by
    default the host name); ConfigError names the first check or option that cannot work.
    ``log`` records its refusals and Junk filings."""
    unknown = set(settings.options) - set(settings.chain)
    if unknown:
        raise ConfigError(f"[filters.check.{sorted(unknown)[0]}] names a check not in the chain")
    checks = [build_check(n, settings.options.get(n, {}), env) for n in settings.chain]
    return FilterChain(checks, clock, settings.authserv_id or env.hostname, log)
