"""What a POP3 deletion does, and what may never be erased.

The policy (``[pop3] delete``) is the user's own (``ourmail user pop3-delete``), else their
domain's (``[pop3.domain."<name>"]``), else the default, ``hide``:

* ``hide``: the message gets the ``$POP3Deleted`` keyword; later POP3 sessions do not list it,
  IMAP still shows it.  Nothing is erased.
* ``trash``: the message moves to the user's Trash.
* ``expunge``: the message is erased; the only policy that frees storage.

Whatever the policy, a message that an :class:`~ourmail.interfaces.IRetention` holds is never
erased: ``expunge`` hides it instead.
"""

from __future__ import annotations

from zope.interface import implementer

from ourmail.auth.accounts import AccountDB
from ourmail.config import Pop3Settings
from ourmail.interfaces import IRetention, IStoredMessage

#: The keyword the ``hide`` policy sets.
HIDDEN = "$POP3Deleted"


def deletion_policy(settings: Pop3Settings, accounts: AccountDB, address: str) -> str:
    """``hide``, ``trash`` or ``expunge`` for this user."""
    own = accounts.pop3_delete(address)
    if own:
        return own
    return settings.domains.get(address.rpartition("@")[2], settings.delete)


@implementer(IRetention)
class NoRetention:
    """Nothing is held: every message may be erased (until retention and legal hold exist)."""

    def may_erase(self, address: str, folder: str, message: IStoredMessage) -> bool:
        return True
