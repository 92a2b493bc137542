"""What a client asks for in its Accept and Accept-Language headers (RFC
9110 12.5): a browser's page or an API client's JSON; the page's language.

A browser asks for text/html before anything else; curl and most API
clients send `*/*` or nothing, and get JSON as before."""

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


def _weight(ranges: list[tuple[str, float]], media_type: str) -> float:
    """The q of the most specific range that matches `media_type` (0: none)."""
    kind = media_type.split("/")[0]
    for wanted in (media_type, f"{kind}/*", "*/*"):
        for name, q in ranges:
            if name == wanted:
                return q
    return 0.0


def wants_html(accept: str) -> bool:
    """Whether the client would rather have HTML than JSON: a browser,
    not `*/*` or `application/json`."""
    ranges = _ranges(accept)
    return _weight(ranges, "text/html") > _weight(ranges, "application/json")


def language(accept_language: str, offered: Iterable[str], default: str) -> str:
    """The offered language the client weighs most (`ru-RU` is `ru`), else `default`."""
    offered = list(offered)
    best, best_q = default, 0.0
    for name, q in _ranges(accept_language):
        primary = name.split("-")[0]
        if primary in offered and q > best_q:
            best, best_q = primary, q
    return best
