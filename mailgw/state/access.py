"""The running gateway's calls on the state store: off the event loop (a
store call blocks: SQLite, or Redis with a 2 s timeout), each failure
counted by what was tried, and an outage told once when it starts and once
when it ends (mailgw/outage.py), however many callers meet it. A caller
learns of a failure as `Unavailable` and carries on without the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from mailgw.outage import Outage
from mailgw.state.store import Store

log = logging.getLogger("mailgw.state")
T = TypeVar("T")


class Unavailable(Exception):
    """A state store call failed; already told (once per outage) and counted."""


class StoreAccess:
    def __init__(self, store: Store, executor: Executor, *, name: str, consequence: str,
                 count: Callable[[str], None] = lambda operation: None):
        """`name` names the store in the log; `consequence`, what the gateway
        does while it is away; `count(operation)`: a failure (a metric)."""
        self.store, self.executor, self.count = store, executor, count
        self.consequence = consequence
        self.outage = Outage(log, f"the state store ({name})")

    @property
    def down(self) -> bool:
        return self.outage.down

    async def __call__(self, operation: str, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)`, a call on the store, off the event loop."""
        try:
            result = await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        except Exception as e:
            self.failed(operation, e)
            raise Unavailable(operation) from e
        self.outage.ok()
        return result

    async def quietly(self, operation: str, fn: Callable[..., T], *args: Any) -> T | None:
        """The same, None while the store is away (for what can wait)."""
        try:
            return await self(operation, fn, *args)
        except Unavailable:
            return None

    def failed(self, operation: str, error: Exception) -> None:
        self.count(operation)
        self.outage.failed(error, self.consequence)
