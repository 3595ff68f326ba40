"""What every check factory does with its ``[filters.check.NAME]`` table: refuse options it
does not know, and read numbers with a lower bound; each problem a ``ValueError`` that the
registry turns into one clear configuration error."""

from __future__ import annotations

from collections.abc import Collection, Mapping


def refuse_unknown(options: Mapping[str, object], known: Collection[str], where: str = "") -> None:
    """ValueError naming the first option of ``options`` not in ``known`` (and ``where`` it
    was, for a nested table)."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        place = f" in {where}" if where else ""
        raise ValueError(
            f"unknown option {unknown[0]!r}{place} (known: {', '.join(sorted(known))})"
        )


def number(options: Mapping[str, object], key: str, default: float, minimum: float) -> float:
    """The number at ``key`` (``default`` when absent), at least ``minimum``."""
    value = options.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{key!r} must be a number of at least {minimum}")
    return float(value)
