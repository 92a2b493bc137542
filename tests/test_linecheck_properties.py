"""Property tests of the DATA reader and the DATA verdict against a reference
parser simple enough to be obviously right: split the bytes after DATA on
CRLF and take the first line that is exactly "." as the end. The reader is
fed the same bytes cut into arbitrary pieces, as a network would deliver
them."""

from __future__ import annotations

import asyncio
import sys
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from mailgw.relay.linecheck import StrictLineReader, check_data, unstuff

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


NO_END = object()


def read(chunks: list[bytes], max_size: int = sys.maxsize) -> tuple[object, bytes]:
    """What read_message returns (NO_END at end of stream without an end
    line), and what is left for the next read."""

    async def run() -> tuple[object, bytes]:
        reader = StrictLineReader(limit=64)

        async def network() -> None:
            for chunk in chunks:
                reader.feed_data(chunk)
                await asyncio.sleep(0)  # the reader takes this piece before the next comes
            reader.feed_eof()

        feeding = asyncio.create_task(network())
        try:
            data: object = await reader.read_message(max_size)
        except asyncio.IncompleteReadError:
            data = NO_END
        await feeding
        return data, await reader.read()

    return asyncio.run(run())


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
