"""Message flags as IMAP defines them, shared by the store and every protocol.

RFC 3501 §2.3.2: the system flags begin with a backslash and are matched without regard to
case; any other flag is a keyword, kept as written.  ``\\Recent`` is a session's view, never
stored.
"""

from __future__ import annotations

#: The system flags a message can carry (``\\Recent`` is not stored, so not among them).
SYSTEM_FLAGS = frozenset({"\\Answered", "\\Deleted", "\\Draft", "\\Flagged", "\\Seen"})
_CANONICAL = {f.lower(): f for f in SYSTEM_FLAGS}


def canonical_flag(flag: str) -> str:
    """System flags are case-insensitive (RFC 3501 §2.3.2): ``\\SEEN`` -> ``\\Seen``."""
    return _CANONICAL.get(flag.lower(), flag)
