"""Suspensions: the engine's decisions made real, and the answer to "is this
system suspended?" for ingress and delivery.

The Guard sits between the stages and the event log: every event passes
through it to the engine, so a suspension is decided on the event that
crosses a rule, and takes effect at once (the next MAIL FROM gets 450), before
the record is even written. Records live in the state store, shared with the
operator CLI; the Guard re-reads them every `refresh` seconds, so an
operator's lift or suspend reaches a running gateway within that time.

Window counts are kept in process, and with `shared` (Redis) also across
every gateway; the rules are judged on the shared counts when they come back,
on the in-process ones while Redis is away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any

from mailgw.anomaly.engine import Engine
from mailgw.anomaly.rules import Decision
from mailgw.anomaly.tally import Counts, SharedWindows, Tally
from mailgw.clock import Clock
from mailgw.events import EventSink
from mailgw.metrics import Metrics
from mailgw.state.records import AuditEntry, Suspension
from mailgw.state.store import Store

log = logging.getLogger("mailgw.guard")


class Guard:
    def __init__(self, *, engine: Engine, store: Store, events: EventSink, clock: Clock,
                 executor: Executor, on_lifted: Callable[[str], None] = lambda system: None,
                 notify: Callable[[str, Suspension], None] = lambda kind, record: None,
                 shared: SharedWindows | None = None, metrics: Metrics | None = None):
        """`notify(kind, record)` sends the owner notice; it is called off the
        event loop, once per suspension and kind across every gateway."""
        self.engine, self.store, self.events, self.clock = engine, store, events, clock
        self.executor, self.on_lifted, self.notify = executor, on_lifted, notify
        self.shared, self.metrics = shared, metrics
        self._recording: set[asyncio.Task[None]] = set()
        try:
            self._active: dict[str, Suspension] = store.active()
            engine.restore_baselines(store.load_baselines())
        except Exception:  # a state backend that is down must not stop mail
            log.exception("cannot read the state store at start; no suspensions known yet")
            self._active = {}
        self._unsaved: dict[str, Suspension] = {}
        self._failed: dict[str, Suspension] = {}  # unsaved because the store was down
        self._saves = 0  # a refresh that overlapped a save is stale
        for system in self._active:
            engine.suspended.add(system)

    def suspended(self, system: str) -> Suspension | None:
        return self._unsaved.get(system) or self._active.get(system)

    async def decided(self, system: str) -> None:
        """Return once the system's events so far are judged: with shared
        counts that is a round trip away, and a transaction must not slip in
        between the event that crosses a rule and the suspension."""
        if self.shared is not None:
            await self.shared.settled(system)

    def active(self) -> dict[str, Suspension]:
        """Every suspension in effect here."""
        return {**self._active, **self._unsaved}

    def emit(self, event: str, system: str | None, **fields: Any) -> None:
        """The EventSink the stages write to: log the event, then judge it."""
        self.events.emit(event, system, **fields)
        if event == "held":  # mail kept back is in the audit trail, message by message
            record = self.suspended(system) if system else None
            entry = AuditEntry(self.clock.now(), system, "held", "auto",
                               record.rule or record.reason if record else None,
                               {"queue_id": fields.get("queue_id"),
                                "suspension": record.id if record else None})
            asyncio.get_running_loop().run_in_executor(self.executor, self._record_audit,
                                                       entry)
            return
        tally = self.engine.tally({"ts": self.clock.now(), "system": system, "event": event,
                                   **fields})
        if tally is None:
            return
        counts = self.engine.local.count(tally)
        if self.shared is None:
            self._judge(tally, counts)
        else:
            self.shared.submit(tally, counts, self._judge)

    def _judge(self, tally: Tally, counts: Counts) -> None:
        for decision in self.engine.judge(tally, counts):
            self._suspend(decision)

    def _suspend(self, d: Decision) -> None:
        record = Suspension(system=d.system, since=d.ts, by="auto", rule=d.rule,
                            observed=d.observed, threshold=d.threshold, window=d.window,
                            evidence={"counts": d.evidence, "top_domains": []})
        self._unsaved[d.system] = record
        if self.metrics is not None:
            self.metrics.suspension_delay.observe(max(0.0, self.clock.now() - d.ts))
        log.warning("suspending %s: %s observed %s over %ss, threshold %s", d.system, d.rule,
                    d.observed, d.window, d.threshold)
        self.events.emit("suspended", d.system, rule=d.rule, observed=d.observed,
                         threshold=d.threshold, window=d.window, by="auto")
        task = asyncio.create_task(self._record(record))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _record(self, record: Suspension) -> None:
        """The record, with the domains the system was mailing most (for the
        owner notice), into the store."""
        window = self.engine.top_domains_window
        if window is not None:
            top = await self.shared.top_keys(record.system, window, 5) if self.shared else None
            if top is None:
                top = self.engine.local.top_keys(record.system, record.since, window, 5)
            record = replace(record, evidence={**record.evidence, "top_domains": top})
            if record.system in self._unsaved:
                self._unsaved[record.system] = record
        await asyncio.get_running_loop().run_in_executor(self.executor, self._save, record)

    def _record_audit(self, entry: AuditEntry) -> None:
        try:
            self.store.record(entry)
        except Exception:
            log.exception("cannot write the audit entry for %s", entry.system)
            if self.metrics is not None:
                self.metrics.backend_error("write audit")

    async def settle(self) -> None:
        """Wait for suspensions being recorded; before stopping."""
        await asyncio.gather(*self._recording, return_exceptions=True)

    def _save(self, record: Suspension) -> None:
        try:
            if self.store.suspend(record) is None:
                log.info("%s was already suspended in the store", record.system)
        except Exception:
            log.exception("cannot record the suspension of %s; it holds in memory and is "
                          "tried again", record.system)
            if self.metrics is not None:
                self.metrics.backend_error("record suspension")
            self._failed[record.system] = record
            return
        self._failed.pop(record.system, None)
        # known as active before it stops being unsaved: never a gap between
        self._active = {**self._active, record.system: record}
        self._saves += 1
        self._unsaved.pop(record.system, None)

    def _send_notices(self) -> None:
        """Blocking: every notice still due, each claimed in the store first so
        that one gateway sends it; given back if sending fails, for the next
        round. Claimed before it is spooled: a crash in between loses that one
        notice, where the other order could send two."""
        for kind, record in self.store.pending_notices():
            assert record.id is not None
            if self.store.claim_notice(record.id, kind):
                try:
                    self.notify(kind, record)
                except Exception:
                    log.exception("cannot send the %s notice for %s; trying again",
                                  kind, record.system)
                    self.store.unclaim_notice(record.id, kind)

    async def refresh(self) -> None:
        """Take in the store's view: suspensions and lifts made elsewhere.
        Suspensions that could not be recorded (store down) are tried again."""
        loop = asyncio.get_running_loop()
        for record in list(self._failed.values()):
            await loop.run_in_executor(self.executor, self._save, record)
        saves = self._saves
        active = await asyncio.get_running_loop().run_in_executor(self.executor,
                                                                  self.store.active)
        if saves != self._saves:
            return  # stale: next time
        lifted = [record for s, record in self._active.items()
                  if s not in active and s not in self._unsaved]
        imposed = [r for s, r in active.items() if s not in self._active]
        self._active = active
        for record in imposed:  # by an operator, or by another instance
            self.engine.suspended.add(record.system)
            self.events.emit("suspended", record.system, by=record.by, reason=record.reason,
                             rule=record.rule)
            log.warning("%s suspended by %s: %s", record.system, record.by,
                        record.reason or record.rule)
        for system in active:
            self.engine.suspended.add(system)
        for record in lifted:
            # through the engine: it re-arms and counts afresh
            self.emit("lifted", record.system)
            if self.shared is not None:
                self.shared.reset(record.system, once=str(record.id))
            log.warning("suspension of %s lifted", record.system)
            self.on_lifted(record.system)
        await asyncio.get_running_loop().run_in_executor(self.executor, self._send_notices)

    def save_baselines(self) -> None:
        """Blocking; also called once at stop."""
        self.store.save_baselines(self.engine.baselines())

    async def run(self, every: float = 1.0, save_every: float = 300.0) -> None:
        last_save = self.clock.now()
        while True:
            await asyncio.sleep(every)
            try:
                await self.refresh()
                if self.clock.now() - last_save >= save_every:
                    last_save = self.clock.now()
                    await asyncio.get_running_loop().run_in_executor(self.executor,
                                                                     self.save_baselines)
            except Exception:
                log.exception("cannot sync suspensions with the state store")
                if self.metrics is not None:
                    self.metrics.backend_error("read suspensions")
