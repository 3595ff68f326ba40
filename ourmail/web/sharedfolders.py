"""The folders shared with a webmail user (the lists' archives), named as IMAP names them:
``<prefix>/<name>`` (``Lists/team@example.org``).  A name under the prefix is looked up only
through :class:`~ourmail.interfaces.ISharedFolders`, for the logged-in user; one they may not
read is not there, as a missing folder is not.  Shared folders are read-only: the archive
pages (``archivepages.py``) and the message view show them without any action that changes
them."""

from __future__ import annotations

from urllib.parse import urlencode

from ourmail.interfaces import IFolder, ISharedFolders


def shared_part(shared: ISharedFolders | None, name: str) -> str | None:
    """What follows ``<prefix>/`` in ``name``; None when it is not a shared folder's name."""
    if shared is None or not name.startswith(shared.prefix + "/"):
        return None
    return name[len(shared.prefix) + 1 :] or None


def open_shared(shared: ISharedFolders | None, user: str, name: str) -> IFolder | None:
    """The shared folder ``name`` if ``user`` may read it (synchronised), else None."""
    part = shared_part(shared, name)
    if shared is None or part is None:
        return None
    found = shared.folder(user, part)
    if found is None:
        return None
    found.folder.sync()
    return found.folder


def shared_tree(shared: ISharedFolders | None, user: str) -> list[tuple[str, str]]:
    """The shared folders ``user`` may read: (name, title), for the folder tree."""
    if shared is None:
        return []
    return [(f"{shared.prefix}/{f.name}", f.title or f.name) for f in shared.folders(user)]


def archive_url(name: str, **params: str | int) -> str:
    """The address of a shared folder's page."""
    return "/archive?" + urlencode({"folder": name, **{k: str(v) for k, v in params.items()}})
