"""What happened to one recipient on one delivery attempt.

"Permanent or temporary" is a type, not a string: only TEMPORARY is retried,
and anything unexpected is TEMPORARY, so a surprise never bounces mail.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    DELIVERED = "delivered"
    TEMPORARY = "deferred"
    PERMANENT = "bounced"


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    code: int
    response: str
    remote: str | None = None
    source: str | None = None  # the egress address the attempt went out from

    @classmethod
    def from_reply(cls, code: int, response: str, remote: str | None = None) -> Outcome:
        if 200 <= code < 300:
            kind = Kind.DELIVERED
        elif 500 <= code < 600:
            kind = Kind.PERMANENT
        else:
            kind = Kind.TEMPORARY
        return cls(kind, code, response, remote)

    @classmethod
    def temporary(cls, response: str, code: int = 451, remote: str | None = None) -> Outcome:
        return cls(Kind.TEMPORARY, code, response, remote)
