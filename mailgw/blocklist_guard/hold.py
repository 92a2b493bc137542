"""The hold: mail of a suspended system, or of a restricted sender of a
system, already at the gateway waits in `spool/hold/` until the suspension
(restriction) is lifted, across restarts.

- What is held: a system's own mail (origin "system"), never the gateway's
  notices and bounces about it; of a restricted sender, only the mail that
  sender sent (mailgw/senders.py says whose a message is). Delivery asks
  `applies` when it claims a message and when it defers one; at a
  suspension or restriction, the mail it stops waiting in the queue is
  moved at once, not at its next try.
- At a lift: held mail that nothing stops any more goes back to the queue
  and out now; the lifted subject's mail is deleted instead when the
  operator lifted with `--purge`. Mail another record still stops (the
  system's suspension, another sender's restriction) stays.
- `count`: the system's own mail waiting at the gateway (queued or held),
  for the status page and the owner notice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mailgw.events import EventSink
from mailgw.relay.spool import Meta, Spool
from mailgw.senders import subject
from mailgw.state.records import Suspension
from mailgw.wording import things

log = logging.getLogger("mailgw.hold")


def stopped_by(meta: Meta, sender_of: Callable[[Meta], str | None],
               in_force: Callable[[str], Suspension | None]) -> str | None:
    """What stops a message now: None (nothing), "" (its system's
    suspension) or its sender (that sender's restriction).
    `in_force(subject)`: the record in force for a subject."""
    if meta.origin != "system" or meta.system is None:
        return None
    if in_force(meta.system) is not None:
        return ""
    sender = sender_of(meta)
    if sender is not None and in_force(subject(meta.system, sender)) is not None:
        return sender
    return None


class Hold:
    def __init__(self, *, spool: Spool, in_force: Callable[[str], Suspension | None],
                 sender_of: Callable[[Meta], str | None], events: EventSink,
                 run_io: Callable[..., Awaitable[Any]],
                 schedule: Callable[[str, float], None]):
        """`in_force(subject)`: the suspension (restriction) in force for a
        subject (mailgw/senders.py), if any; `sender_of(meta)`: whose a
        message is; `run_io(fn, *args)`: `fn` off the event loop;
        `schedule(queue_id, at)`: tell delivery a message is waiting."""
        self.spool, self.in_force, self.sender_of = spool, in_force, sender_of
        self.events, self.run_io, self.schedule = events, run_io, schedule

    def stopped_by(self, meta: Meta) -> str | None:
        return stopped_by(meta, self.sender_of, self.in_force)

    def applies(self, meta: Meta) -> bool:
        return self.stopped_by(meta) is not None

    def count(self, system: str, sender: str | None = None) -> int:
        """Blocking: the system's own mail waiting at the gateway (that
        sender's, with `sender`)."""
        return sum(sender is None or self.sender_of(m) == sender
                   for state in ("queue", "hold") for m in self.spool.metas_of(state, system))

    def held(self, meta: Meta) -> None:
        """Told: `meta` went to hold (by delivery, or here)."""
        by = self.stopped_by(meta)
        self.events.emit("held", meta.system, queue_id=meta.id,
                         **({"sender": by} if by else {}))

    async def senders_held(self, system: str) -> set[str | None]:
        """Whose the system's held mail is."""
        return {self.sender_of(m) for m in await self.run_io(self.spool.metas_of, "hold", system)}

    async def suspended(self, system: str) -> None:
        """The mail now stopped of the system waiting in the queue goes to
        hold: each by the same rename lock as delivery's claim, so one in
        flight is left to delivery, which holds it when it comes back."""
        for meta in await self.run_io(self.spool.metas_of, "queue", system):
            if not self.applies(meta):
                continue
            try:
                await self.run_io(self.spool.hold, meta.id, "queue")
            except FileNotFoundError:
                continue  # claimed or gone meanwhile
            self.held(meta)

    async def lifted(self, system: str, sender: str | None, purge: bool) -> None:
        """After the lift of the system's suspension (`sender` None) or of a
        sender's restriction: its held mail that nothing else stops goes, or
        is purged when the lift said so."""
        went = {"purged": 0, "released": 0}
        for meta in await self.run_io(self.spool.metas_of, "hold", system):
            if self.applies(meta):
                continue  # still stopped by another record
            if purge and (sender is None or self.sender_of(meta) == sender):
                await self.run_io(self.spool.purge, meta.id, "hold")
                how = "purged"
            else:
                try:
                    await self.run_io(self.spool.release, meta.id)
                except FileNotFoundError:
                    continue
                how = "released"
                self.schedule(meta.id, 0.0)
            went[how] += 1
            self.events.emit(how, system, queue_id=meta.id)
        for how, n in went.items():
            if n:
                log.info("%s%s: %s %s", system, f" (sender {sender})" if sender else "",
                         things(n, "held message"), how)
