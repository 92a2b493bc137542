"""Line discipline on the SMTP byte stream, against SMTP smuggling.

aiosmtpd ends a command line at a bare LF and lets bare CR and LF through in
DATA. A next hop that reads line endings differently, or drops NUL bytes,
could then see a message end (and a second, smuggled message begin) where we
saw none. So command lines must end in CRLF and carry no control characters,
and message data must hold no CR or LF outside a CRLF pair and no NUL (RFC
5321 forbids it; other control characters are legal in a message body).
"""

from __future__ import annotations

import asyncio

from mailgw.relay import replies
from mailgw.relay.policy import Rejection
from mailgw.relay.smtp_edge import StreamBuffer


class RefusedLine(Exception):
    """A command line the reader refused, and how it is answered."""

    rejection: Rejection


class BareLineEnding(RefusedLine):
    """A command line ended in a bare LF or held a bare CR."""

    rejection = Rejection.of(replies.BARE_LINE_ENDING_COMMAND, "bare_line_ending")


class ControlCharacters(RefusedLine):
    """A command line held NUL or another control character."""

    rejection = Rejection.of(replies.CONTROL_CHARACTERS, "control_characters")


class LineTooLong(RefusedLine):
    """A command line overran the reader's limit; it was dropped through its
    LF. Answered as aiosmtpd answers a line it held whole and found too long."""

    rejection = Rejection.of(replies.LINE_TOO_LONG, "line_too_long")


_CONTROL = bytes(range(0x20)) + b"\x7f"


_END = b"\r\n.\r\n"


class StrictLineReader(StreamBuffer):
    """A StreamReader whose command lines (read up to LF) must be clean.

    DATA is read whole by `read_message` and is checked as a whole by
    `check_data`, because raising mid-DATA would turn the rest of the message
    into commands.
    """

    async def read_message(self, max_size: int) -> bytes | None:
        """The message data after DATA, through its end line (".\r\n" at a
        line start), which is consumed and not returned; dot-stuffing is left
        in. None if it grew past `max_size`: it is then dropped as it arrives
        until the end line, so that the session stays in step.

        aiosmtpd reads DATA a line at a time in Python: about a tenth of a
        gateway's CPU for 2 KiB messages, and a long stall of the event loop
        for a big one. This looks for the end in whatever has arrived, with
        bytes.find, in the bytes as they lie (StreamBuffer.unread): what
        follows the end line stays there for the next command.
        """
        # the CRLF that ended the DATA line starts the message: an empty one is ".\r\n"
        if await self._starts_empty():
            return b""
        data = bytearray()
        too_big = False
        while True:
            buffer = self.unread
            end = buffer.find(_END)
            if end >= 0:  # the message ends with the CRLF that starts _END
                take, consumed = end + 2, end + len(_END)
            else:  # all but a possible start of _END (4 bytes) is message
                take = consumed = max(0, len(buffer) - len(_END) + 1)
            if not too_big:
                data += buffer[:take]
                too_big = len(data) > max_size
                if too_big:
                    data = bytearray()
            self.consume(consumed)
            if end >= 0:
                return None if too_big else bytes(data)
            await self.more()

    async def _starts_empty(self) -> bool:
        while len(self.unread) < 3 and b".\r\n".startswith(self.unread):
            await self.more()
        if self.unread[:3] == b".\r\n":
            self.consume(3)
            return True
        return False

    async def readuntil(self, separator: bytes = b"\n") -> bytes:  # type: ignore[override]
        if separator != b"\n":
            return await super().readuntil(separator)
        try:
            line = await super().readuntil(separator)
        except asyncio.LimitOverrunError:
            # aiosmtpd would drop what overran and read on to the LF, which
            # it would then take (and this method refuse) as a line of its own
            await self._drop_line()
            raise LineTooLong() from None
        body = line[:-2]
        if not line.endswith(b"\r\n") or b"\r" in body:
            raise BareLineEnding()
        if body.translate(None, _CONTROL) != body:
            raise ControlCharacters()
        return line

    async def _drop_line(self) -> None:
        """Drop bytes as they arrive, through the next LF."""
        while (end := self.unread.find(b"\n")) < 0:
            self.consume(len(self.unread))
            await self.more()
        self.consume(end + 1)


def check_data(data: bytes, max_line_length: int) -> Rejection | None:
    """Why message data as `read_message` returns it (dot-stuffing in) must
    be refused, or None. Smuggling is named before a long line."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
        return Rejection.of(replies.BARE_LINE_ENDING_DATA, "bare_line_ending")
    if b"\x00" in data:
        return Rejection.of(replies.NUL_IN_DATA, "nul_in_data")
    # RFC 5321 4.5.3.1.6: a text line of max_line_length characters, one
    # more if that is a stuffed dot. split and len run at C speed; only a
    # line exactly one over needs a look at its first byte, line by line
    lines = data.split(b"\r\n")
    longest = max(map(len, lines))
    if longest == max_line_length + 1:
        longest = max(len(line) - line.startswith(b".") for line in lines)
    if longest > max_line_length:
        return Rejection.of(replies.LINE_TOO_LONG, "line_too_long")
    return None


def unstuff(data: bytes) -> bytes:
    """The message without the dots stuffed at line starts (RFC 5321 4.5.2)."""
    content = data.replace(b"\r\n.", b"\r\n")
    return content[1:] if content.startswith(b".") else content
