"""The records the state store keeps."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mailgw.senders import subject

# the reason of a `restored` audit entry (by "gateway"): a suspension a gateway
# knew to be in force, written back to a store that had lost it
RESTORED = "the state store lost it"


@dataclass(frozen=True)
class Suspension:
    system: str
    since: float
    by: str  # "auto" or the operator's name
    rule: str | None = None
    observed: float | None = None
    threshold: float | None = None
    window: float | None = None
    reason: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    lifted_at: float | None = None
    lifted_by: str | None = None
    lift_reason: str | None = None
    purge: bool = False  # lifted with the held mail purged rather than released
    # a sender's restriction lifted with a grace: until then that sender's
    # traffic is neither judged nor counted against its system (the
    # operator vouched for it: a press release, its own server's retries)
    grace_until: float | None = None
    # None: the whole system is suspended; an address: only that sender of
    # the system is restricted (mailgw/senders.py), the rest of it flows
    sender: str | None = None

    @property
    def subject(self) -> str:
        """Whom it stops, as a key: one active record per subject."""
        return subject(self.system, self.sender)

    @property
    def actions(self) -> tuple[str, str]:
        """Its audit actions and events: imposed, and ended."""
        return ("suspended", "lifted") if self.sender is None else ("restricted", "unrestricted")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def ending(self) -> dict[str, Any]:
        """How it was lifted, for the audit trail."""
        return {"suspension": self.id, "purge": self.purge,
                **({"sender": self.sender} if self.sender is not None else {}),
                **({"grace_until": self.grace_until} if self.grace_until is not None else {})}

    def finding(self) -> dict[str, Any]:
        """What a rule found, for the audit trail: the figures, and the
        system's usual and the chance where the rule weighed them."""
        return {"rule": self.rule, "observed": self.observed, "threshold": self.threshold,
                "window": self.window, **{k: self.evidence[k] for k in ("usual", "chance")
                                          if k in self.evidence},
                **({"sender": self.sender} if self.sender is not None else {})}


@dataclass(frozen=True)
class AuditEntry:
    ts: float
    system: str | None
    # suspended, lifted, restricted, unrestricted, restored, held, released,
    # purged, config_reloaded, dnsbl_listed, dnsbl_delisted
    action: str
    by: str
    reason: str | None
    details: dict[str, Any]
    id: int | None = None
