"""Line discipline on the SMTP byte stream, against SMTP smuggling.

aiosmtpd ends a command line at a bare LF and lets bare CR and LF through in
DATA. A next hop that reads line endings differently could then see a message
end (and a second, smuggled message begin) where we saw none. So command lines
must end in CRLF and carry no control characters, and message data must hold
no CR or LF outside a CRLF pair.
"""

from __future__ import annotations

import asyncio


class BareLineEnding(Exception):
    """A command line ended in a bare LF or held a bare CR."""


class ControlCharacters(Exception):
    """A command line held NUL or another control character."""


_CONTROL = bytes(range(0x20)) + b"\x7f"


class StrictLineReader(asyncio.StreamReader):
    """A StreamReader whose command lines (read up to LF) must be clean.

    DATA is read up to CRLF and is checked as a whole by `has_bare_line_ending`,
    because raising mid-DATA would turn the rest of the message into commands.
    """

    async def readuntil(self, separator: bytes = b"\n") -> bytes:  # type: ignore[override]
        line = await super().readuntil(separator)
        if separator == b"\n":
            body = line[:-2]
            if not line.endswith(b"\r\n") or b"\r" in body:
                raise BareLineEnding()
            if body.translate(None, _CONTROL) != body:
                raise ControlCharacters()
        return line


def has_bare_line_ending(data: bytes) -> bool:
    crlf = data.count(b"\r\n")
    return data.count(b"\n") != crlf or data.count(b"\r") != crlf
