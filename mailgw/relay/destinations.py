"""Connection sharing: one queue of delivery jobs per destination, served by
a few workers that each hold one SMTP link and push job after job through it.

Caps: `per_destination` workers for one destination, `total` links overall
(a semaphore). A worker keeps its link open for `keepalive` seconds without
work, so a burst to one destination pays for one connection, not hundreds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from mailgw.relay.courier import ConnectFailed, Courier, Link
from mailgw.relay.outcome import Outcome
from mailgw.relay.routing import Route

log = logging.getLogger("mailgw.delivery")


@dataclass
class Job:
    route: Route
    sender: str
    recipients: list[str]
    data: bytes
    # told True when its SMTP transaction begins, False when it ends
    sending: Callable[[bool], None] = lambda begins: None
    done: asyncio.Future[list[Outcome]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def finish(self, outcomes: list[Outcome]) -> None:
        if not self.done.done():
            self.done.set_result(outcomes)


class _Destination:
    def __init__(self, key: str):
        self.key = key
        self.jobs: deque[Job] = deque()
        self.workers = 0
        self.idle = 0
        self.wakeup = asyncio.Event()


class Destinations:
    def __init__(self, courier: Courier, *, total: int, per_destination: int,
                 messages_per_link: int, keepalive: float = 2.0,
                 sources: Callable[[], list[str]] = list,
                 pick_source: Callable[[], str | None] = lambda: None):
        """`pick_source()`: the egress address of a new link; `sources()`:
        those still usable (a link from another one is closed)."""
        self.courier = courier
        self.sources, self.pick_source = sources, pick_source
        self.per_destination = per_destination
        self.messages_per_link = messages_per_link
        self.keepalive = keepalive
        self.slots = asyncio.Semaphore(total)
        self._dests: dict[str, _Destination] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, job: Job) -> None:
        dest = self._dests.get(job.route.key)
        if dest is None:
            dest = self._dests[job.route.key] = _Destination(job.route.key)
        dest.jobs.append(job)
        if dest.idle:
            dest.wakeup.set()
        elif dest.workers < self.per_destination:
            dest.workers += 1
            task = asyncio.create_task(self._work(dest))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _next(self, dest: _Destination) -> Job | None:
        while not dest.jobs:
            dest.idle += 1
            dest.wakeup.clear()
            try:
                await asyncio.wait_for(dest.wakeup.wait(), self.keepalive)
            except TimeoutError:
                if not dest.jobs:  # a job may have come just as the wait timed out
                    return None
            finally:
                dest.idle -= 1
        return dest.jobs.popleft()

    async def _work(self, dest: _Destination) -> None:
        link: Link | None = None
        try:
            async with self.slots:
                while (job := await self._next(dest)) is not None:
                    if link is not None and (not link.alive or link.sent >= self.messages_per_link
                                             or (link.source and link.source
                                                 not in self.sources())):
                        await link.close()
                        link = None
                    if link is None:
                        try:
                            link = await self.courier.connect(job.route, self.pick_source())
                        except ConnectFailed as e:
                            # the destination is unreachable now: everything
                            # waiting for it fails the same way, to be retried later
                            for waiting in [job, *dest.jobs]:
                                waiting.finish([e.outcome] * len(waiting.recipients))
                            dest.jobs.clear()
                            continue
                    job.sending(True)
                    try:
                        outcomes = await link.send(job.sender, job.recipients, job.data)
                    finally:
                        job.sending(False)
                    if link.source is not None:
                        outcomes = [replace(o, source=link.source) for o in outcomes]
                    job.finish(outcomes)
        finally:
            dest.workers -= 1
            if dest.workers == 0 and not dest.jobs:
                self._dests.pop(dest.key, None)
            if link is not None:
                await link.close()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
