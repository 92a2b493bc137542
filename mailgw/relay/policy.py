"""Who may relay what: the envelope checks of ingress, free of SMTP plumbing.

Each check returns None (go on) or a Rejection naming the reply and the
reason recorded in the event log. The order of the checks is the order of
the SMTP dialogue: the sender domain at MAIL, relaying at RCPT.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailgw.config import System
from mailgw.relay import replies
from mailgw.relay.addresses import Address, AddressError, parse
from mailgw.relay.replies import Reply


@dataclass(frozen=True)
class Rejection:
    reply: Reply
    reason: str
    text: str

    @classmethod
    def of(cls, reply: Reply, reason: str, **values: object) -> Rejection:
        return cls(reply, reason, reply.format(**values))


def check_sender(system: System | None, sender: str) -> tuple[Address | None, Rejection | None]:
    """The null sender (bounces from the system's own MTA) is allowed; any
    other sender must be in one of the system's sender domains. Before we
    know the system (unknown client) nothing is decided here: RCPT refuses."""
    if sender == "":
        return None, None
    try:
        address = parse(sender)
    except AddressError as e:
        return None, Rejection.of(replies.ADDRESS_FORM_DENIED, "bad_address", why=e)
    if system is not None and address.domain not in system.sender_domains:
        return address, Rejection.of(
            replies.SENDER_DOMAIN_DENIED, "sender_domain", domain=address.domain, system=system.id
        )
    return address, None


def check_recipient(
    system: System | None, recipient: str, count: int, max_recipients: int
) -> tuple[Address | None, Rejection | None]:
    if system is None:
        return None, Rejection.of(replies.RELAY_DENIED, "relay_denied")
    try:
        address = parse(recipient)
    except AddressError as e:
        return None, Rejection.of(replies.ADDRESS_FORM_DENIED, "bad_address", why=e)
    if count >= max_recipients:
        return None, Rejection.of(replies.TOO_MANY_RECIPIENTS, "too_many_recipients")
    return address, None
