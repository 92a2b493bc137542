"""Who sent a message inside its system: the sender a restriction names.

A system's mail is attributed to a sender by its envelope sender, with the
domain lower-cased (RFC 5321 leaves the local part to its owner) and a
`+tag` dropped where the system says its mailboxes take subaddresses; a
system whose mailboxes each log in with SMTP AUTH of their own
(`sender_by = "login"`) is attributed by the login instead. The null sender
(`<>`: the system's own bounces) is nobody's. Ingress (the restriction at
MAIL FROM), the hold and the anomaly engine (per-sender windows) all ask
here, so one address is one sender everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

SenderBy = Literal["envelope", "login"]


class Policy:
    """How a system's senders are told apart: a plain class, read natively
    by the compiled engine at every event (a NamedTuple's fields are not)."""

    __slots__ = ("by", "subaddress")

    def __init__(self, by: SenderBy = "envelope", subaddress: str | None = None) -> None:
        self.by = by
        self.subaddress = subaddress  # the delimiter of a `+tag`, if the system uses one


ENVELOPE = Policy()  # a system that says nothing: its envelope senders as they are


def identity(envelope: str, login: str | None, policy: Policy = ENVELOPE) -> str | None:
    """The sender of a message sent with envelope sender `envelope` (""
    for the null sender) after AUTH as `login` (None without)."""
    if policy.by == "login" and login:
        return login
    if not envelope:
        return None
    local, at, domain = envelope.rpartition("@")
    if not at:
        return envelope
    if policy.subaddress:
        base = local.split(policy.subaddress, 1)[0]
        local = base or local  # "+x@d" is a mailbox of its own, not a tag of ""
    return f"{local}@{domain.lower()}"


def subject(system: str, sender: str | None) -> str:
    """The key of a suspension's subject: a system id (no spaces in it), or
    the id and one of its senders."""
    return system if sender is None else f"{system} {sender}"


def split(key: str) -> tuple[str, str | None]:
    """`subject`'s inverse."""
    system, _, sender = key.partition(" ")
    return system, sender or None


class Attribution:
    """The policy of every configured system; reloadable."""

    def __init__(self, policies: dict[str, Policy] | None = None):
        self.policies: dict[str, Policy] = policies or {}

    @classmethod
    def of(cls, systems: Iterable[Any]) -> Attribution:
        """From config.System entries (their `sender_by` and `subaddress`)."""
        return cls({s.id: Policy(s.sender_by, s.subaddress) for s in systems})

    def sender(self, system: str, envelope: str, login: str | None) -> str | None:
        return identity(envelope, login, self.policies.get(system, ENVELOPE))

    def of_meta(self, meta: Any) -> str | None:
        """The sender of a spooled message (relay/queue_file.Meta)."""
        if meta.system is None:
            return None
        return self.sender(meta.system, meta.sender, meta.client.get("login"))

    def load(self, systems: Iterable[Any]) -> None:
        """A config reload."""
        self.policies = Attribution.of(systems).policies

    def of_event(self, event: dict[str, Any]) -> str | None:
        """The sender of a system's event, from its `sender` and `auth`
        (None for an event that carries neither)."""
        envelope = event.get("sender")
        system = event.get("system")
        if envelope is None or system is None:
            return None
        return self.sender(system, envelope, event.get("auth"))
