"""Gettext catalogues kept as ``.po`` files in a package (``locale/<lang>/LC_MESSAGES/<domain>.po``)
and compiled in memory with babel when first used: no ``.mo`` files and no build step, so a
fresh clone and an installed wheel behave the same.  The webmail's and the lists' texts are
loaded this way."""

from __future__ import annotations

import gettext
import io
from importlib import resources

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po


def compiled(package: str, lang: str, domain: str) -> gettext.GNUTranslations:
    """The catalogue ``domain`` of ``lang`` in ``package``'s ``locale`` folder."""
    po = resources.files(package).joinpath("locale", lang, "LC_MESSAGES", f"{domain}.po")
    with po.open("rb") as f:
        catalog = read_po(f, locale=lang, domain=domain)
    mo = io.BytesIO()
    write_mo(mo, catalog)
    mo.seek(0)
    return gettext.GNUTranslations(mo)
