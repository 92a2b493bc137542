"""Property tests of the reader of the SMTP byte stream and of the DATA
verdict against reference parsers simple enough to be obviously right: DATA
splits the bytes on CRLF and takes the first line that is exactly "." as the
end; commands split them on LF. The reader is fed the same bytes cut into
arbitrary pieces, as a network would deliver them."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from itertools import pairwise
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from mailgw.relay.linecheck import (
    BareLineEnding,
    ControlCharacters,
    LineTooLong,
    StrictLineReader,
    check_data,
    unstuff,
)

END = b"\r\n.\r\n"

# the bytes that matter to the parser, often; any bytes, sometimes
PIECES = st.sampled_from(
    [b"\r\n", b"\r", b"\n", b".", b"..", b"\x00", b"a", b"\t", END, b".\r\n"]
) | st.binary(max_size=4)

bounded = settings(max_examples=200, deadline=None)


@st.composite
def after_data(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """What a client sends after DATA (a message, mostly an end line, then
    pipelined commands), and the pieces the network cuts it into: one cut
    anywhere in the end line, others anywhere."""
    head = b"".join(draw(st.lists(PIECES, max_size=30)))
    end = draw(st.sampled_from([END, b""]))
    tail = b"".join(draw(st.lists(PIECES, max_size=8)))
    stream = head + end + tail
    cuts = {len(head) + draw(st.integers(0, len(end)))}
    cuts |= set(draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    bounds = [0, *sorted(cuts), len(stream)]
    return stream, [stream[a:b] for a, b in pairwise(bounds)]


def reference(stream: bytes) -> tuple[list[bytes], bytes] | None:
    """The message's lines as sent (CRLF off) and what follows its end line;
    None when no end line has arrived."""
    lines = stream.split(b"\r\n")
    for i, line in enumerate(lines[:-1]):  # the last piece has no CRLF after it
        if line == b".":
            return lines[:i], b"\r\n".join(lines[i + 1:])
    return None


def joined(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\r\n" for line in lines)


def reference_verdict(lines: list[bytes], max_line_length: int) -> str | None:
    if any(b"\r" in line or b"\n" in line for line in lines):
        return "bare_line_ending"
    if any(b"\x00" in line for line in lines):
        return "nul_in_data"
    if any(len(line) > max_line_length + line.startswith(b".") for line in lines):
        return "line_too_long"
    return None


T = TypeVar("T")
LIMIT = 8  # the reader's limit: a command line of more octets than 9 is too long


def fed(chunks: list[bytes], use: Callable[[StrictLineReader], Awaitable[T]]) -> T:
    """What `use` makes of a reader fed `chunks` as a network would, then
    the end of the stream."""

    async def run() -> T:
        reader = StrictLineReader(limit=LIMIT)

        async def network() -> None:
            for chunk in chunks:
                reader.feed_data(chunk)
                await asyncio.sleep(0)  # the reader takes this piece before the next comes
            reader.feed_eof()

        feeding = asyncio.create_task(network())
        try:
            return await use(reader)
        finally:
            await feeding

    return asyncio.run(run())


NO_END = object()


def read(chunks: list[bytes], max_size: int = sys.maxsize) -> tuple[object, bytes]:
    """What read_message returns (NO_END at end of stream without an end
    line), and what is left for the next read."""

    async def use(reader: StrictLineReader) -> tuple[object, bytes]:
        try:
            data: object = await reader.read_message(max_size)
        except asyncio.IncompleteReadError:
            data = NO_END
        return data, await reader.read()

    return fed(chunks, use)


@bounded
@given(after_data())
def test_the_reader_returns_the_message_the_reference_finds_however_it_is_cut(sent):
    stream, chunks = sent
    expected = reference(stream)
    data, _ = read(chunks)
    assert data == (NO_END if expected is None else joined(expected[0]))


@bounded
@given(after_data())
def test_what_follows_the_end_line_stays_for_the_next_read(sent):
    stream, chunks = sent
    expected = reference(stream)
    if expected is None:
        return
    _, rest = read(chunks)
    assert rest == expected[1]


@bounded
@given(after_data(), st.integers(0, 40))
def test_a_message_over_the_size_limit_is_none_and_read_through_its_end_line(sent, max_size):
    stream, chunks = sent
    expected = reference(stream)
    if expected is None:
        return
    lines, after = expected
    data, rest = read(chunks, max_size)
    assert data == (None if len(joined(lines)) > max_size else joined(lines))
    assert rest == after


@bounded
@given(after_data(), st.integers(1, 6))
def test_the_verdict_and_the_unstuffed_message_are_the_reference_s(sent, max_line_length):
    stream, chunks = sent
    expected = reference(stream)
    if expected is None:
        return
    lines = expected[0]
    data, _ = read(chunks)
    assert isinstance(data, bytes)
    rejection = check_data(data, max_line_length)
    verdict = reference_verdict(lines, max_line_length)
    assert (rejection and rejection.reason) == verdict
    if verdict is None:
        assert unstuff(data) == joined([line[1:] if line.startswith(b".") else line
                                        for line in lines])


COMMAND_PIECES = st.sampled_from(
    [b"NOOP", b" ", b"\r", b"\n", b"\x00", b"\x7f", b"\t", b"\x1b", b"xxxxx"]
) | st.binary(max_size=4)
# mostly short lines (so that a bad byte is not hidden by a long line), mostly with CRLF
COMMAND_LINES = st.builds(lambda pieces, end: b"".join(pieces) + end,
                          st.lists(COMMAND_PIECES, max_size=3),
                          st.sampled_from([b"\r\n", b"\r\n", b"\n", b""]))


@st.composite
def commands(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    stream = b"".join(draw(st.lists(COMMAND_LINES, max_size=8)))
    cuts = sorted(set(draw(st.lists(st.integers(0, len(stream)), max_size=10))))
    bounds = [0, *cuts, len(stream)]
    return stream, [stream[a:b] for a, b in pairwise(bounds)]


def reference_commands(stream: bytes) -> list[bytes | type[Exception]]:
    """Each line through its LF, or the refusal it gets."""
    out: list[bytes | type[Exception]] = []
    for piece in stream.split(b"\n")[:-1]:  # the last piece has no LF after it
        line = piece + b"\n"
        body = line[:-2]
        if len(line) > LIMIT + 1:
            out.append(LineTooLong)
        elif not line.endswith(b"\r\n") or b"\r" in body:
            out.append(BareLineEnding)
        elif any(c < 0x20 or c == 0x7F for c in body):
            out.append(ControlCharacters)
        else:
            out.append(line)
    return out


async def command_lines(reader: StrictLineReader) -> list[bytes | type[Exception]]:
    out: list[bytes | type[Exception]] = []
    while True:
        try:
            out.append(await reader.readuntil())
        except (BareLineEnding, ControlCharacters, LineTooLong) as refused:
            out.append(type(refused))
        except asyncio.IncompleteReadError:
            return out


@bounded
@given(commands())
def test_command_lines_are_taken_or_refused_as_the_reference_says_and_stay_in_step(sent):
    stream, chunks = sent
    assert fed(chunks, command_lines) == reference_commands(stream)
