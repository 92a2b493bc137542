"""Delivery: takes spooled messages to their next hops, retries, bounces.

Guarantees:
- a message leaves the spool only when every recipient is delivered or
  bounced, and a bounce notice (DSN), where one is due, is spooled first;
- temporary failures are retried with exponential backoff and jitter until
  `max_queue_lifetime`, then bounced as expired;
- an attempt that raises (a bug, not a remote failure) counts as a crash; a
  message that crashed `max_crashes` times is set aside in `corrupt/`;
- an outcome that cannot be recorded (a full disk) is kept in memory with
  its message claimed, and recorded once the disk takes it: nothing is
  lost, nothing delivered is sent again, and the queue drains by itself;
- the queue goes in order of when each message became due: mail waiting
  since before a restart is not passed by mail that arrives after it;
- on stop, messages in flight go back to the queue uncounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from functools import partial
from typing import Protocol, TypeVar

from mailgw.clock import Clock
from mailgw.config import Delivery as DeliveryConfig
from mailgw.events import EventSink
from mailgw.relay.batching import Batcher
from mailgw.relay.destinations import Destinations, Job
from mailgw.relay.outbox import Outbox
from mailgw.relay.outcome import Kind, Outcome
from mailgw.relay.queue_file import UNREADABLE
from mailgw.relay.routing import RouteError, Router
from mailgw.relay.spool import Meta, Recipient, Spool, SpoolError

log = logging.getLogger("mailgw.delivery")
T = TypeVar("T")

# (meta of the message, its bytes, the recipients that failed, "failed" or "expired")
# -> the DSN bytes to spool, or None when no DSN is due
BounceMaker = Callable[[Meta, bytes, list[Recipient], str], bytes | None]


def retry_delay(attempts: int, config: DeliveryConfig, rng: random.Random) -> float:
    """Exponential from `first_retry`, capped at `max_retry_interval`, with
    jitter so that messages deferred together do not retry together."""
    base = min(config.first_retry * 2 ** max(attempts - 1, 0), config.max_retry_interval)
    return base * rng.uniform(1 - config.retry_jitter, 1 + config.retry_jitter)


class Holding(Protocol):
    """The hold rule, as delivery meets it (blocklist_guard/hold.py)."""

    def applies(self, meta: Meta) -> bool: ...
    def held(self, meta: Meta) -> None: ...  # told: it went to hold


class _NoHold:
    def applies(self, meta: Meta) -> bool:
        return False

    def held(self, meta: Meta) -> None:
        pass


NO_HOLD = _NoHold()


class Delivery:
    MAX_DISK_RETRY = 30.0  # seconds between tries to record an outcome on a failing disk

    def __init__(
        self, *, config: DeliveryConfig, spool: Spool, router: Router, destinations: Destinations,
        events: EventSink, clock: Clock, executor: Executor, make_bounce: BounceMaker,
        outbox: Outbox, rng: random.Random | None = None,
        hold: Holding | None = None,
        max_in_flight: int = 2000, max_in_flight_bytes: int = 256 * 1024**2,
    ):
        self.config, self.spool, self.router = config, spool, router
        self.destinations, self.events, self.clock = destinations, events, clock
        self.executor, self.make_bounce, self.outbox = executor, make_bounce, outbox
        self.rng = rng or random.Random()
        self._waiting: list[tuple[float, str]] = []  # heap of (next_try, queue id)
        self._wakeup = asyncio.Event()
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._slots = max_in_flight
        # message bytes held in memory by attempts under way: big messages
        # wait their turn in the queue instead of exhausting memory
        self._bytes_budget = max_in_flight_bytes
        self._bytes = 0
        self._stopping = False
        self.hold = hold or NO_HOLD
        self._removals: Batcher[str, None] = Batcher(
            executor, spool.ack_many)
        # claimed in batches, in the order started: one thread hop for all,
        # and the queue's order kept on the way to the next hop
        self._claims: Batcher[str, tuple[Meta, bytes]] = Batcher(executor, spool.claim_many)

    # --- intake --------------------------------------------------------------

    def submit(self, meta: Meta, data: bytes | None = None) -> None:
        """A message is in `queue/`: start it now if there is room and nothing
        due before it waits, else let the scheduler pick it up in its turn
        (its bytes are then read back from disk)."""
        now = self.clock.now()
        if (not self._stopping and self._room() and meta.due <= now
                and not (self._waiting and self._waiting[0][0] <= now)):
            self._start(meta.id, data, meta)
        else:
            self.schedule(meta.id, meta.due)

    def schedule(self, queue_id: str, at: float) -> None:
        heapq.heappush(self._waiting, (at, queue_id))
        self._wakeup.set()

    def load(self, waiting: list[Meta]) -> None:
        for meta in waiting:
            self.schedule(meta.id, meta.due)

    # --- the scheduler -------------------------------------------------------

    async def run(self) -> None:
        while not self._stopping:
            now = self.clock.now()
            while self._waiting and self._waiting[0][0] <= now and self._room():
                _, queue_id = heapq.heappop(self._waiting)
                if queue_id not in self._in_flight:
                    self._start(queue_id)
            self._wakeup.clear()
            # with no room, a finished attempt wakes us; never spin on due work
            if self._waiting and self._room():
                delay = max(0.0, min(1.0, self._waiting[0][0] - now))
            else:
                delay = 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), delay)

    def _room(self) -> bool:
        return len(self._in_flight) < self._slots and self._bytes < self._bytes_budget

    def _start(self, queue_id: str, data: bytes | None = None, meta: Meta | None = None) -> None:
        task = asyncio.create_task(self._attempt(queue_id, data, meta))
        self._in_flight[queue_id] = task
        task.add_done_callback(lambda _t: self._finished(queue_id))

    def _finished(self, queue_id: str) -> None:
        self._in_flight.pop(queue_id, None)
        if self._waiting:
            self._wakeup.set()

    async def stop(self, timeout: float) -> None:
        """Let attempts under way finish for `timeout` seconds, then cancel
        the rest; cancelled messages return to the queue."""
        self._stopping = True
        self._wakeup.set()
        if self._in_flight:
            await asyncio.wait(list(self._in_flight.values()), timeout=timeout)
        for task in list(self._in_flight.values()):
            task.cancel()
        await asyncio.gather(*self._in_flight.values(), return_exceptions=True)
        await self.destinations.close()

    # --- one attempt ---------------------------------------------------------

    async def _run_io(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _attempt(self, queue_id: str, data: bytes | None, known: Meta | None) -> None:
        try:
            if known is not None and data is not None:
                # just accepted: a rename claims it; a thread hop would cost more
                self.spool.claim_known(queue_id)
                meta, body = known, data
            else:
                meta, body = await self._claims.run(queue_id)
        except FileNotFoundError:
            return  # held, purged or finished meanwhile
        except UNREADABLE:
            await self._durably(lambda: self._run_io(self.spool.set_aside, queue_id))
            log.error("%s: set aside in corrupt/: its metadata cannot be read", queue_id)
            self.events.emit("set_aside", None, queue_id=queue_id, reason="unreadable metadata")
            return
        try:
            if self.hold.applies(meta):
                # a suspended system's (restricted sender's) mail waits in
                # hold/ until a lift releases it
                await self._durably(lambda: self._run_io(self.spool.hold, queue_id))
                self.hold.held(meta)
                return
            self._bytes += len(body)
            try:
                outcomes = await self._deliver(meta, body)
                await self._settle(meta, body, outcomes)
            except Exception:  # a bug, not a remote failure (those are outcomes)
                log.exception("%s: delivery attempt crashed", queue_id)
                await self._crashed(meta, body)
            finally:
                self._bytes -= len(body)
        except FileNotFoundError:  # nothing but an attempt moves a claimed message
            log.error("%s: left the spool while it was being delivered", queue_id)
        except asyncio.CancelledError:
            with contextlib.suppress(FileNotFoundError):  # unless already settled
                self.spool.unclaim(queue_id)
            raise

    async def _deliver(self, meta: Meta, data: bytes) -> dict[str, Outcome]:
        by_domain: dict[str, list[str]] = defaultdict(list)
        for rcpt in meta.pending():
            by_domain[rcpt.address.rpartition("@")[2].lower()].append(rcpt.address)
        outcomes: dict[str, Outcome] = {}
        jobs: list[Job] = []
        sending = 0  # transactions of this message under way

        def mark(begins: bool) -> None:
            nonlocal sending
            sending += 1 if begins else -1
            if sending == (1 if begins else 0):
                (self.spool.attempt_begins if begins else self.spool.attempt_ends)(meta.id)

        for domain, addrs in by_domain.items():
            try:
                route = await self.router.route(domain)
            except RouteError as e:
                failed = Outcome.from_reply(e.code, f"{e.code} {e.enhanced} {e.text}")
                outcomes.update((a, failed) for a in addrs)
                continue
            job = Job(route, meta.sender, addrs, data, sending=mark)
            self.destinations.submit(job)
            jobs.append(job)
        for job in jobs:
            outcomes.update(zip(job.recipients, await job.done, strict=True))
        return outcomes

    async def _settle(self, meta: Meta, data: bytes, outcomes: dict[str, Outcome]) -> None:
        now = self.clock.now()
        meta.attempts += 1
        # the gateway's own mail (DSNs, notices) is marked, so that it is
        # never counted as the system's activity
        # a system's own mail: whose it is, for its sender's windows
        origin = meta.whose() if meta.origin == "system" else {"origin": meta.origin}
        for rcpt in meta.pending():
            outcome = outcomes[rcpt.address]
            rcpt.code, rcpt.response, rcpt.remote = outcome.code, outcome.response, outcome.remote
            if outcome.kind is not Kind.TEMPORARY:
                rcpt.state = "delivered" if outcome.kind is Kind.DELIVERED else "bounced"
            source = {"source": outcome.source} if outcome.source else {}
            self.events.emit(outcome.kind.value, meta.system, queue_id=meta.id,
                             recipient=rcpt.address, code=outcome.code, response=outcome.response,
                             **origin, **source)
            log.info("%s: to=<%s> status=%s code=%d relay=%s (%s)", meta.id, rcpt.address,
                     outcome.kind.value, outcome.code, outcome.remote or "none", outcome.response)
        expired = meta.pending() and now - meta.received_at >= self.config.max_queue_lifetime
        if expired:
            for rcpt in meta.pending():
                rcpt.state = "bounced"
                self.events.emit("bounced", meta.system, queue_id=meta.id,
                                 recipient=rcpt.address, code=rcpt.code or 451,
                                 response="expired: " + (rcpt.response or ""), **origin)
        if meta.pending():
            meta.next_try = now + retry_delay(meta.attempts, self.config, self.rng)
            await self._defer(meta, data)
            return
        bounced = [r for r in meta.recipients if r.state == "bounced"]
        dsn = self.make_bounce(meta, data, bounced, "expired" if expired else "failed") \
            if bounced else None
        if dsn is not None:
            notice = await self._durably(lambda: self._run_io(partial(
                self.outbox.post, origin="dsn", system=meta.system, sender="",
                recipients=[meta.sender], data=dsn)))
            log.info("%s: bounce notice %s to <%s>", meta.id, notice.id, meta.sender)
        # unlinking blocks for a disk update: off the event loop, in batches
        await self._durably(lambda: self._removals.run(meta.id))

    async def _crashed(self, meta: Meta, data: bytes) -> None:
        meta.crashes += 1
        if meta.crashes >= self.config.max_crashes:
            log.error("%s: set aside in corrupt/ after %d crashed attempts", meta.id, meta.crashes)
            await self._durably(lambda: self._run_io(self.spool.set_aside, meta.id, meta, data))
            self.events.emit("set_aside", meta.system, queue_id=meta.id,
                             reason=f"{meta.crashes} crashed delivery attempts")
            return
        meta.next_try = self.clock.now() + retry_delay(meta.crashes, self.config, self.rng)
        await self._defer(meta, data)

    async def _defer(self, meta: Meta, data: bytes) -> None:
        """Back to waiting: in the queue for its next try, or in hold if its
        system was suspended while it was out (else it would wait in the
        queue until then)."""
        if self.hold.applies(meta):
            await self._durably(lambda: self._run_io(self.spool.defer, meta, data, "hold"))
            self.hold.held(meta)
            return
        await self._durably(lambda: self._run_io(self.spool.defer, meta, data))
        self.schedule(meta.id, meta.next_try)

    async def _durably(self, step: Callable[[], Awaitable[T]]) -> T:
        """Run a spool step until it succeeds. While the disk fails
        it (full, or failing), the message stays claimed where it is and its
        new state waits here, in memory: retried with backoff, so that the
        queue moves on by itself once the disk has room again."""
        delay = 1.0
        while True:
            try:
                result = await step()
            except FileNotFoundError:
                raise  # not the disk: the message is gone, no retry brings it back
            except (OSError, SpoolError) as e:
                self.spool.disk.failed(e, "outcomes of delivery wait in memory and are "
                                       "recorded when it has room")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.MAX_DISK_RETRY)
                continue
            self.spool.disk.ok()
            return result
