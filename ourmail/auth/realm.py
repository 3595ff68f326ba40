"""The default realm: a login (an address) gets that user's mail store as its avatar."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.cred.portal import IRealm
from zope.interface import implementer

from ourmail.interfaces import IMailStore, IUserStore
from ourmail.store.userstore import ensure_default_folders


@implementer(IRealm)
class MailRealm:
    """Hands out :class:`~ourmail.interfaces.IUserStore` avatars for IMAP, POP3 and submission.

    The user's Maildir and its standard folders (Sent, Drafts, Trash, Junk, Archive) are created
    at the first login.
    """

    def __init__(self, store: IMailStore) -> None:
        self.store = store

    def requestAvatar(
        self, avatarId: Any, mind: Any, *interfaces: Any
    ) -> tuple[Any, Any, Callable[[], None]]:
        if IUserStore not in interfaces:
            raise NotImplementedError("this realm only serves IUserStore avatars")
        address = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else avatarId
        user = self.store.user(address)
        ensure_default_folders(user)
        return IUserStore, user, lambda: None
