"""DKIM signing (dkimpy) of outgoing mail, once, on the exact bytes that go out.

Ingress signs a message just before it is spooled, so the signature covers
the bytes delivery sends, whatever the number of attempts. The key is the
one of the From: header's domain when there is one (DMARC alignment), else
the envelope sender's domain's, else the message goes unsigned.
Keys are RSA in PEM form, read and checked once at start.
"""

from __future__ import annotations

import re
from email.utils import parseaddr
from pathlib import Path

import dkim
from dkim.crypto import parse_pem_private_key

from mailgw.config import DKIMKey
from mailgw.relay.headers import header_section

_FROM = re.compile(rb"^From:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", re.IGNORECASE | re.MULTILINE)
# signed when present; From is always signed (RFC 6376 5.4)
_SIGNED = [b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to",
           b"in-reply-to", b"references", b"mime-version", b"content-type",
           b"content-transfer-encoding", b"list-unsubscribe"]


class DkimKeyError(ValueError):
    pass


def _load_key(key: DKIMKey) -> bytes:
    try:
        pem = Path(key.key_file).read_bytes()
        parse_pem_private_key(pem)
    except OSError as e:
        raise DkimKeyError(f"DKIM key for {key.domain}: cannot read {key.key_file}: "
                           f"{e.strerror}") from None
    except Exception as e:  # dkimpy raises assorted errors for bad PEM
        raise DkimKeyError(f"DKIM key for {key.domain}: {key.key_file} is not an RSA private "
                           f"key in PEM form ({e})") from None
    return pem


def from_domain(message: bytes) -> str | None:
    m = _FROM.search(header_section(message))
    if not m:
        return None
    _, address = parseaddr(m.group(1).decode("utf-8", "replace").replace("\r\n", ""))
    domain = address.rpartition("@")[2].lower().rstrip(".")
    return domain or None


class DkimSigner:
    def __init__(self, keys: list[DKIMKey]):
        self._keys = {k.domain: (k.selector.encode(), _load_key(k)) for k in keys}

    def sign(self, message: bytes, envelope_sender_domain: str | None) -> bytes:
        """The DKIM-Signature header (CRLF-terminated) to put on top of
        `message`, or b"" when no configured key applies."""
        domain = from_domain(message)
        if domain not in self._keys:
            domain = (envelope_sender_domain or "").lower()
        if domain not in self._keys:
            return b""
        selector, pem = self._keys[domain]
        present = {line.split(b":", 1)[0].strip().lower()
                   for line in header_section(message).split(b"\r\n") if b":" in line}
        headers = [h for h in _SIGNED if h in present or h == b"from"]
        return dkim.sign(message, selector, domain.encode(), pem,
                         canonicalize=(b"relaxed", b"relaxed"), include_headers=headers,
                         linesep=b"\r\n")
