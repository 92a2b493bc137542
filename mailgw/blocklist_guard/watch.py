"""Watches: evidence too weak to stop a system's mail, told to the operators.

A rule that weighs evidence (anomaly/rules.py) may find a system's traffic
unusual but not surely abnormal: a backlog flushed at once, a rush. The
gateway then stops nothing: it records a `watch` event (and audit entry)
and alerts the operators, once per rule and system a window (the engine
keeps it to that), so that a person looks before anything is suspended.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from mailgw.anomaly.rules import Decision
from mailgw.blocklist_guard.notices import Notifier
from mailgw.clock import utc_time
from mailgw.events import EventSink
from mailgw.outage import Outage
from mailgw.state.records import AuditEntry

log = logging.getLogger("mailgw.watch")


def watch_fields(d: Decision) -> dict[str, Any]:
    """What a watch records: in its event and its audit entry."""
    return {"rule": d.rule, "observed": d.observed, "threshold": d.threshold,
            "window": d.window, "usual": d.usual, "expected": d.expected,
            "chance": d.as_dict().get("chance"),
            **({"sender": d.sender} if d.sender is not None else {})}


def alert_context(d: Decision) -> dict[str, Any]:
    """What the operators' alert of a watch is rendered with."""
    return {"system": d.system, "since": utc_time(d.ts), **watch_fields(d)}


class Watcher:
    def __init__(self, *, events: EventSink, notifier: Notifier,
                 audit: Callable[[AuditEntry], None],
                 run_io: Callable[..., Awaitable[Any]],
                 spawn: Callable[[Coroutine[Any, Any, None]], None]):
        """`audit(entry)`: into the audit trail; `spawn(work)`: run `work`
        in the background (the alert is spooled off the event loop)."""
        self.events, self.notifier, self.audit = events, notifier, audit
        self.run_io, self.spawn = run_io, spawn
        self._alerting = Outage(log, "alerting the operators of watches")

    def watched(self, d: Decision) -> None:
        fields = watch_fields(d)
        log.warning("watching %s%s: %s observed %s over %gs (usual %s), not %s",
                    d.system, f" sender {d.sender}" if d.sender else "", d.rule, d.observed,
                    d.window, d.usual, "restricted" if d.sender else "suspended")
        self.events.emit("watch", d.system, **fields)
        self.audit(AuditEntry(d.ts, d.system, "watch", "auto", d.rule, fields))
        self.spawn(self._alert(d, fields))

    async def _alert(self, d: Decision, fields: dict[str, Any]) -> None:
        try:
            await self.run_io(self.notifier.alert, "watch", alert_context(d))
        except Exception as e:  # the spool's disk, a broken template: the event stands
            self._alerting.failed(e, "watches are in the event log and the audit trail")
            return
        self._alerting.ok()
