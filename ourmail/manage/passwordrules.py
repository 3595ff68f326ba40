"""The password rules of the set-up wizard (docs/setup-wizard.md), the same as its strength
meter (``ourmail/web/static/setup.js``) shows while the admin types: at least
:data:`~ourmail.manage.accountops.MIN_PASSWORD` characters, not containing the local part of
the address it is for, and not one of the common passwords in ``common-passwords.txt`` (a
small public list shipped with ourmail, compared ignoring case).

A list rather than a strength estimator such as zxcvbn: the browser's meter and the server
then apply exactly the same rules from the same file, and the file is 32 kB where zxcvbn's
JavaScript is 800 kB.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from ourmail.interfaces import AccountRefused
from ourmail.manage.accountops import MIN_PASSWORD

#: The list's file name, in this package.
LIST_NAME = "common-passwords.txt"
#: Local parts shorter than this are not looked for inside a password ("a@x" would refuse
#: every password with an "a").
MIN_NAME = 3


@cache
def common_list() -> bytes:
    """The file as shipped (served to the meter as it is).  Blocking: read it once at start."""
    return resources.files(__package__).joinpath(LIST_NAME).read_bytes()


@cache
def common_passwords() -> frozenset[str]:
    """The list's passwords, lower-cased."""
    lines = common_list().decode("utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line and not line.startswith("#"))


def check_strength(password: str, address: str) -> None:
    """Refuse (:class:`AccountRefused`) a password for ``address`` that breaks a rule: codes
    ``short-password``, ``contains-name`` and ``common-password``."""
    if len(password) < MIN_PASSWORD:
        raise AccountRefused(
            "short-password",
            f"the password must have at least {MIN_PASSWORD} characters",
            str(MIN_PASSWORD),
        )
    local = address.rpartition("@")[0].lower()
    if len(local) >= MIN_NAME and local in password.lower():
        raise AccountRefused("contains-name", "the password contains the address's name", local)
    if password.lower() in common_passwords():
        raise AccountRefused("common-password", "the password is a commonly used one")
