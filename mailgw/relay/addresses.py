"""Envelope addresses as relaying decisions must see them.

aiosmtpd hands over the addr-spec with any source route already dropped
(RFC 5321 4.1.1.3: accepted, then ignored). What is left is judged on its
final, unquoted domain, and local parts that other MTAs treat as routing
(`%`, `!`, an `@` inside quotes) are refused outright, so that a relay or
sender-domain decision can never be made on one domain while the mail is
routed to another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = re.compile(rf"^{_ATEXT}+(\.{_ATEXT}+)*$")
_QUOTED = re.compile(r'^"([\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"$')
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})+$")
_ROUTING_CHARS = ("%", "!", "@")


class AddressError(ValueError):
    """Why an address cannot be used; the text goes into the SMTP reply."""


@dataclass(frozen=True)
class Address:
    local: str
    domain: str  # lower-case

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


def parse(addr_spec: str) -> Address:
    """Split and vet an addr-spec as aiosmtpd returns it (no angle brackets)."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in addr_spec):
        raise AddressError("control characters in address")
    local, at, domain = addr_spec.rpartition("@")
    if not at or not local:
        raise AddressError("a full address (local@domain) is required")
    if len(local) > 64 or len(addr_spec) > 254:
        raise AddressError("address too long")
    if domain.startswith("["):
        raise AddressError("address literals are not relayed")
    if not _DOMAIN.match(domain):
        raise AddressError("invalid domain")
    if _DOT_ATOM.match(local):
        if any(c in local for c in _ROUTING_CHARS):
            raise AddressError("routing characters (% !) in local part")
    elif _QUOTED.match(local):
        if any(c in local for c in _ROUTING_CHARS):
            raise AddressError("routing characters (% ! @) in quoted local part")
    else:
        raise AddressError("invalid local part")
    return Address(local, domain.lower())
