"""Digests (owned by the bounces part; this is the posting part's minimal stand-in with the
agreed signature, which the lead replaces with that part's module)."""

from __future__ import annotations

from ourmail.lists.context import ListContext
from ourmail.lists.model import ListSettings


async def add(ctx: ListContext, lst: ListSettings, message: bytes) -> None:
    """Keep ``message`` (the list's outgoing copy) for the list's next digest."""
    raise NotImplementedError("digests are the bounces part's module")
