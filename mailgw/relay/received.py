"""The Received header ingress adds (RFC 5321 4.4), built only from values
that cannot break the header: the HELO name is reduced to host-name
characters, the client IP comes from the socket, the rest is ours."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from email.utils import format_datetime

_HOSTISH = re.compile(r"^[A-Za-z0-9._:\[\]-]{1,255}$")


def _safe(value: str | None) -> str:
    return value if value and _HOSTISH.match(value) else "unknown"


@functools.lru_cache(maxsize=2)
def _date(second: int) -> str:
    # a busy gateway stamps many messages in the same second
    return format_datetime(datetime.fromtimestamp(second, UTC))


def received_header(
    *, helo: str | None, client_ip: str, hostname: str, protocol: str, queue_id: str,
    recipient: str | None, now: float,
) -> bytes:
    """`recipient` is named only for single-recipient mail, so one message to
    many does not disclose the whole list in every copy."""
    ip = _safe(client_ip)
    for_part = f"\r\n\tfor <{recipient}>" if recipient else ""
    text = (
        f"Received: from {_safe(helo)} ([{ip}])\r\n"
        f"\tby {hostname} (mailgw) with {protocol} id {queue_id}{for_part};\r\n"
        f"\t{_date(int(now))}\r\n"
    )
    return text.encode("ascii", "replace")
