"""Blocking spool work handed to a thread in batches.

A hop from the event loop to a thread and back costs about as much CPU as
the unlink or the small write it carries (30-120 µs measured here, futex
wake-ups and GIL hand-offs included). Under load many messages reach the
same step at once: what arrives while one batch is in the thread goes
together in the next, one hop for all of it, and the spool can share one
directory fsync among them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """`await run(item)` returns what `fn` gave for that item, or raises the
    exception `fn` gave for it. `fn(items)` runs in `executor` and returns
    one result or Exception per item, in order."""

    def __init__(self, executor: Executor, fn: Callable[[list[T]], Sequence[R | Exception]]):
        self.executor, self.fn = executor, fn
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._draining: asyncio.Task[None] | None = None

    async def run(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    results = await loop.run_in_executor(
                        self.executor, self.fn, [item for item, _ in batch])
                except Exception as e:  # noqa: BLE001 - each caller gets it
                    results = [e] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():  # its caller gave up (cancelled)
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._draining = None
