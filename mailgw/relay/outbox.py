"""The gateway's own mail: bounce notices (DSNs), owner notices and operators'
alerts, written to the spool like accepted mail and handed to delivery.

One way in, so that each is durable before it counts as sent, is retried
like any message, and is marked with its origin: never counted as a
system's traffic, never held with a suspended system's mail.
"""

from __future__ import annotations

from collections.abc import Callable

from mailgw.clock import Clock
from mailgw.relay.queue_file import Origin
from mailgw.relay.spool import Meta, Recipient, Spool, new_queue_id


class Outbox:
    def __init__(self, spool: Spool, clock: Clock, submit: Callable[[Meta, bytes], object]):
        """`submit(meta, data)`: hand a spooled message to delivery; called
        from whatever thread `post` runs in, so it must be thread-safe."""
        self.spool, self.clock, self.submit = spool, clock, submit

    def post(self, *, origin: Origin, system: str | None, sender: str,
             recipients: list[str], data: bytes) -> Meta:
        """Spool a message durably (or raise SpoolError) and hand it to
        delivery. Blocking: run it off the event loop."""
        meta = Meta(id=new_queue_id(), system=system, sender=sender,
                    recipients=[Recipient(a) for a in recipients], size=len(data),
                    received_at=self.clock.now(), origin=origin)
        self.spool.put(meta, data)
        self.submit(meta, data)
        return meta
