"""Who may use the vault (issue 18 point 8).

* **The console:** an admin may search, view and export the vault only if listed in both
  ``[admin] admins`` and ``[admin] vault_admins`` (the vault role; no one by default).
  :func:`may_use_vault` is what the console's vault pages ask.
* **The commands:** ``ourmail vault …`` work for whoever can read ``<data>/vault``, which is
  created with mode 0700 and owned by the server's Unix user; their actions are audited under
  that Unix user's name.
"""

from __future__ import annotations

from ourmail.config import AdminSettings, Settings


def may_use_vault(settings: Settings | AdminSettings, address: str) -> bool:
    """True if the admin logged in as ``address`` holds the vault role (``settings``: the
    server's, or their ``[admin]`` part, which the console has at hand)."""
    admin = settings.admin if isinstance(settings, Settings) else settings
    who = address.strip().lower()
    return bool(who) and who in admin.admins and who in admin.vault_admins
