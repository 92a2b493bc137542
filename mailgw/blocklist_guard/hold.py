"""The hold: a suspended system's mail already at the gateway waits in
`spool/hold/` until the suspension is lifted, across restarts.

- What is held: a system's own mail (origin "system"), never the gateway's
  notices and bounces about it. Delivery asks `applies` when it claims a
  message and when it defers one; at a suspension, the system's mail
  waiting in the queue is moved at once, not at its next try.
- At the lift: the held mail goes back to the queue and out now, or is
  deleted when the operator lifted with `--purge`.
- `count`: the system's own mail waiting at the gateway (queued or held),
  for the status page and the owner notice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mailgw.events import EventSink
from mailgw.relay.spool import Meta, Spool
from mailgw.wording import things

log = logging.getLogger("mailgw.hold")


class Hold:
    def __init__(self, *, spool: Spool, suspended: Callable[[str], bool], events: EventSink,
                 run_io: Callable[..., Awaitable[Any]],
                 schedule: Callable[[str, float], None]):
        """`suspended(system)`: whether it is suspended now; `run_io(fn,
        *args)`: `fn` off the event loop; `schedule(queue_id, at)`: tell
        delivery a message is waiting."""
        self.spool, self.is_suspended, self.events = spool, suspended, events
        self.run_io, self.schedule = run_io, schedule

    def applies(self, meta: Meta) -> bool:
        return (meta.origin == "system" and meta.system is not None
                and self.is_suspended(meta.system))

    def count(self, system: str) -> int:
        """Blocking: the system's own mail waiting at the gateway."""
        return sum(len(self.spool.ids_of(state, system)) for state in ("queue", "hold"))

    async def suspended(self, system: str) -> None:
        """The system's mail waiting in the queue goes to hold now: each by the
        same rename lock as delivery's claim, so one in flight is left to
        delivery, which holds it when it comes back."""
        for queue_id in await self.run_io(self.spool.ids_of, "queue", system):
            try:
                await self.run_io(self.spool.hold, queue_id, "queue")
            except FileNotFoundError:
                continue  # claimed or gone meanwhile
            self.events.emit("held", system, queue_id=queue_id)

    async def lifted(self, system: str, purge: bool) -> None:
        """Release the system's held mail, or purge it when the lift said so."""
        ids = await self.run_io(self.spool.ids_of, "hold", system)
        for queue_id in ids:
            if purge:
                await self.run_io(self.spool.purge, queue_id, "hold")
                self.events.emit("purged", system, queue_id=queue_id)
                continue
            try:
                await self.run_io(self.spool.release, queue_id)
            except FileNotFoundError:
                continue
            self.events.emit("released", system, queue_id=queue_id)
            self.schedule(queue_id, 0.0)
        if ids:
            log.info("%s: %s %s", system, things(len(ids), "held message"),
                     "purged" if purge else "released")
