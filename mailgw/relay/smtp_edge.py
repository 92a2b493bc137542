"""The SMTP edge's one contact with the insides of aiosmtpd and asyncio.

Every undocumented name of aiosmtpd or asyncio the gateway uses is to be
used here and nowhere else, each with why. What the rest of the gateway uses:
- StreamBuffer: a StreamReader whose unread bytes a parser searches in place
  (`unread`), takes off (`consume`) and waits for (`more`).
"""

from __future__ import annotations

import asyncio


class StreamBuffer(asyncio.StreamReader):
    """A StreamReader whose unread bytes a parser searches where they lie
    (bytes.find over all that has arrived) instead of copying them out a
    line at a time, as StreamReader.readuntil does inside."""

    @property
    def unread(self) -> bytearray:
        """What has arrived and is not read yet. Search and slice it; take
        bytes off only with `consume`."""
        return self._buffer  # type: ignore[attr-defined]  # StreamReader has no view of it

    def consume(self, count: int) -> None:
        """Take `count` bytes off the front of `unread`."""
        del self._buffer[:count]  # type: ignore[attr-defined]
        # a transport paused for a full buffer must read again as it drains,
        # as StreamReader's own reads make it
        self._maybe_resume_transport()  # type: ignore[attr-defined]

    async def more(self) -> None:
        """Wait for more bytes. Raises the stream's error, or, at its end,
        IncompleteReadError with what is unread."""
        error = self.exception()
        if error is not None:
            raise error
        # the end of the stream, even with bytes unread (at_eof() is false then)
        if self._eof:  # type: ignore[attr-defined]
            raise asyncio.IncompleteReadError(bytes(self.unread), None)
        # StreamReader's own wait: one waiter at a time, resumes a paused transport
        await self._wait_for_data("more")  # type: ignore[attr-defined]
