"""Parsing of the human units used in config.toml: durations and sizes.

Both accept a plain number (seconds, bytes) or a number with a unit, so
`first_retry = "5m"` and `first_retry = 300` mean the same.
"""

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib|k|m|g)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2, "g": 1024**3, "gib": 1024**3,
}


def parse_duration(value: object) -> float:
    """Seconds from 300, 300.0, "300", "5m", "1.5h", "5d"."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m, 1h or 5d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ValueError(f"expected a duration such as 30s, 5m, 1h or 5d, got {value!r}")


def parse_size(value: object) -> int:
    """Bytes from 1048576, "1MiB", "10MB", "512k"."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512KiB, 25MiB or 1GB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            unit = m.group(2).lower() if m.group(2) else None
            return int(float(m.group(1)) * _SIZE_UNITS[unit])
    raise ValueError(f"expected a size such as 512KiB, 25MiB or 1GB, got {value!r}")
