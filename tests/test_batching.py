"""Blocking work handed to a thread in batches, on a real event loop and threads."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from mailgw.relay.batching import Batcher


def test_concurrent_items_share_calls_and_each_gets_its_own_result():
    calls: list[list[int]] = []
    release = threading.Event()

    def square_or_refuse(items: list[int]) -> list[int | Exception]:
        release.wait(5)  # the first call holds the thread while more arrive
        calls.append(items)
        return [ValueError(f"no {i}") if i == 13 else i * i for i in items]

    async def main() -> list[int | BaseException]:
        batcher = Batcher(ThreadPoolExecutor(1), square_or_refuse)
        first = asyncio.ensure_future(batcher.run(1))
        await asyncio.sleep(0.05)  # the first batch is in the thread now
        rest = [asyncio.ensure_future(batcher.run(i)) for i in range(2, 20)]
        await asyncio.sleep(0.05)
        release.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    results = asyncio.run(main())
    assert calls == [[1], list(range(2, 20))]
    assert results[:12] == [i * i for i in range(1, 13)]
    assert isinstance(results[12], ValueError) and str(results[12]) == "no 13"
    assert results[13:] == [i * i for i in range(14, 20)]


def test_a_call_that_raises_fails_every_item_of_its_batch_and_the_next_batch_runs():
    def fragile(items: list[str]) -> list[str | Exception]:
        if "boom" in items:
            raise OSError("disk on fire")
        return [s.upper() for s in items]

    async def main() -> None:
        batcher = Batcher(ThreadPoolExecutor(1), fragile)
        both = await asyncio.gather(batcher.run("boom"), batcher.run("a"),
                                    return_exceptions=True)
        assert [str(e) for e in both] == ["disk on fire"] * 2
        assert all(isinstance(e, OSError) for e in both)
        assert await batcher.run("b") == "B"

    asyncio.run(main())
