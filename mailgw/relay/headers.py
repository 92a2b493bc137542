"""A message's header section, for what reads or signs headers only."""

from __future__ import annotations


def header_section(message: bytes) -> bytes:
    """The header lines with their final CRLF, without the empty line and
    the body (all of `message` if it has no body)."""
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 2]
