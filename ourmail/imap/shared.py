"""The shared namespace (RFC 2342): folders others share with the user, read-only.

With an :class:`~ourmail.interfaces.ISharedFolders` (the mailing lists' archives), the names
``<prefix>/<name>`` are its folders, looked up through ``ISharedFolders.folder(user, name)``
for the logged-in user only, so a shared name reaches nothing else.  ``<prefix>`` itself is a
``\\Noselect`` parent (RFC 3501 §7.2.2).  Shared folders are read-only (``[READ-ONLY]``,
``NO [NOPERM]``), and one the user may not read answers exactly as one that does not exist.
The user's own folders cannot be made or renamed under the prefix; those made there before (a
``Lists`` folder of one's own is common) stay the user's, in their own store, beside the
shared ones, unless a shared folder has the same name.
"""

from __future__ import annotations

from ourmail.interfaces import IFolder, SharedFolder


class SharedNamespace:
    """Mailbox name resolution with the shared namespace (a mixin of
    :class:`~ourmail.imap.server.IMAPServer`)."""

    def shared_part(self, name: str) -> str | None:
        """For a name in the shared namespace, what follows ``<prefix>/`` ("" for the prefix
        itself); None for the user's own folders (or when nothing is shared)."""
        shared = self.ctx.shared
        if shared is None:
            return None
        prefix: str = shared.prefix
        if name == prefix:
            return ""
        if name.startswith(prefix + "/"):
            return name[len(prefix) + 1 :]
        return None

    def shared_folder(self, name: str) -> SharedFolder | None:
        """The shared folder named ``name`` (in the namespace) if the user may read it."""
        part = self.shared_part(name)
        if not part:
            return None
        found: SharedFolder | None = self.ctx.shared.folder(self._user().address, part)
        return found

    def open_folder(self, name: str) -> IFolder:
        """The folder a mailbox name stands for: the user's own, or a shared one;
        :class:`NoSuchFolder` when there is none (or it is not the user's to read)."""
        shared = self.shared_folder(name)
        if shared is not None:
            return shared.folder
        folder: IFolder = self._user().folder(name)  # NoSuchFolder when there is none
        return folder

    def shared_names(self) -> list[str]:
        """The names LIST shows in the shared namespace: the prefix and the user's shared
        folders under it; none when nothing is shared with the user."""
        shared = self.ctx.shared
        if shared is None:
            return []
        names = [f"{shared.prefix}/{f.name}" for f in shared.folders(self._user().address)]
        return [shared.prefix, *names] if names else []

    def with_shared(self, own: list[str]) -> list[str]:
        """The user's own folder names followed by the shared ones (those not also own)."""
        mine = set(own)
        return own + [n for n in self.shared_names() if n not in mine]

    def refuse_shared(self, name: str) -> bool:
        """Answer NO to a change of ``name`` (DELETE, RENAME, APPEND, COPY into) when it is in
        the shared namespace, and say so: ``[NOPERM]`` when the user sees it (RFC 5530),
        as a missing mailbox when not.  False for the user's own folders."""
        part = self.shared_part(name)
        if part is None:
            return False
        own = self._user().list_folders()
        if self.shared_folder(name) is not None or (
            not part and name not in own and self.shared_names()
        ):
            self.send(f"{self._tag} NO [NOPERM] Shared folders are read-only")
        elif name in own:
            return False  # the user's own folder, made there before
        else:
            self.send(f"{self._tag} NO [NONEXISTENT] No such mailbox")
        return True

    def refuse_own_in_shared(self, name: str) -> bool:
        """Answer NO to making (CREATE, RENAME to) a folder of the user's own under the
        shared prefix; False when ``name`` is outside it."""
        if self.shared_part(name) is None:
            return False
        prefix = self.ctx.shared.prefix
        self.send(f"{self._tag} NO [CANNOT] {prefix} holds shared folders; choose another name")
        return True
