"""What a client asks for in its Accept-Language header (RFC 9110 12.5):
the page's language."""

from __future__ import annotations

from collections.abc import Iterable


def _ranges(header: str) -> list[tuple[str, float]]:
    """Each range of the header with its weight (q), in the header's order."""
    out = []
    for part in header.split(","):
        name, *params = (p.strip() for p in part.split(";"))
        if not name:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        out.append((name.lower(), q))
    return out


def language(accept_language: str, offered: Iterable[str], default: str) -> str:
    """The offered language the client weighs most (`ru-RU` is `ru`), else `default`."""
    offered = list(offered)
    best, best_q = default, 0.0
    for name, q in _ranges(accept_language):
        primary = name.split("-")[0]
        if primary in offered and q > best_q:
            best, best_q = primary, q
    return best
