"""Suspensions: the engine's decisions made real, and the answer to "is this
system suspended?" for ingress and delivery.

The Guard sits between the stages and the event log: every event passes
through it to the engine, so a suspension is decided on the event that
crosses a rule, and takes effect at once (the next MAIL FROM gets 450), before
the record is even written. Records live in the state store, shared with the
operator CLI; the Guard re-reads them every `refresh` seconds, so an
operator's lift or suspend reaches a running gateway within that time.

The suspensions the Guard knows are the truth until the store confirms them:
one missing from the store's active list ends only if the store holds that
very record lifted; one the store lost (Redis restarted empty) is written
back. With a journal (Redis), what the Guard knows is also written down
beside the spool, so a gateway restarted while the store is away still
refuses that mail, and audit entries the store cannot take wait in the
journal's outbox. A store that is away is told in one log line, and one when
it is back.

Window counts are kept in process, and with `shared` (Redis) also across
every gateway; the rules are judged on the shared counts when they come back,
on the in-process ones while Redis is away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any, TypeVar

from mailgw.anomaly.engine import Engine
from mailgw.anomaly.rules import Decision
from mailgw.anomaly.tally import Counts, SharedWindows, Tally
from mailgw.clock import Clock
from mailgw.events import EventSink
from mailgw.metrics import Metrics
from mailgw.outage import Outage
from mailgw.state.journal import Journal
from mailgw.state.records import AuditEntry, Suspension
from mailgw.state.store import Store

log = logging.getLogger("mailgw.guard")
T = TypeVar("T")


class _Unavailable(Exception):
    """A state store call failed; already told (once per outage) and counted."""


class Guard:
    def __init__(self, *, engine: Engine, store: Store, events: EventSink, clock: Clock,
                 executor: Executor,
                 on_lifted: Callable[[str, bool], None] = lambda system, purge: None,
                 notify: Callable[[str, Suspension], None] = lambda kind, record: None,
                 shared: SharedWindows | None = None, metrics: Metrics | None = None,
                 journal: Journal | None = None, store_name: str = "the state store"):
        """`notify(kind, record)` sends the owner notice; it is called off the
        event loop, once per suspension and kind across every gateway.
        `on_lifted(system, purge)`: a lift, its held mail to be released, or
        purged. `store_name` names the store in the log."""
        self.engine, self.store, self.events, self.clock = engine, store, events, clock
        self.executor, self.on_lifted, self.notify = executor, on_lifted, notify
        self.shared, self.metrics, self.journal = shared, metrics, journal
        self._outage = Outage(log, f"the state store ({store_name})")
        self._recording: set[asyncio.Task[None]] = set()
        known = journal.known() if journal is not None else {}
        self._journaled = known
        self._journal_outage = Outage(log, "the journal beside the spool")
        self._journal_lock = asyncio.Lock()  # one write at a time, the last one last
        self._unsaved: dict[str, Suspension] = {s: r for s, r in known.items() if r.id is None}
        # unsaved because the store was down (decided before a restart, too)
        self._failed: dict[str, Suspension] = dict(self._unsaved)
        self._active: dict[str, Suspension] = {s: r for s, r in known.items()
                                               if r.id is not None}
        try:
            self._active.update(store.active())
            engine.restore_baselines(store.load_baselines())
        except Exception as e:  # a state backend that is down must not stop mail
            self._unreachable("read suspensions", e)
        self._saves = 0  # a refresh that overlapped a save is stale
        self._held: set[str] = set()  # systems with held mail and no suspension known
        for system in self.active():
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
            self.audit(AuditEntry(self.clock.now(), system, "held", "auto",
                                  record.rule or record.reason if record else None,
                                  {"queue_id": fields.get("queue_id"),
                                   "suspension": record.id if record else None}))
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
        self._spawn(self._record(record))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _record(self, record: Suspension) -> None:
        """The record, with the domains the system was mailing most (for the
        owner notice), into the journal and the store."""
        await self._remember()  # a restart before the store takes it still knows it
        window = self.engine.top_domains_window
        if window is not None:
            top = await self.shared.top_keys(record.system, window, 5) if self.shared else None
            if top is None:
                top = self.engine.local.top_keys(record.system, record.since, window, 5)
            record = replace(record, evidence={**record.evidence, "top_domains": top})
            if record.system in self._unsaved:
                self._unsaved[record.system] = record
        await self._save(record)

    def audit(self, entry: AuditEntry) -> None:
        """Into the audit trail; while the store is away, into the journal's
        outbox, to be written when it is back."""
        self._spawn(self._write_audit(entry))

    async def _write_audit(self, entry: AuditEntry) -> None:
        journal = self.journal
        # while the store is away, straight to the outbox: a burst of held
        # messages would otherwise wait out a connect timeout each
        if journal is None or not self._outage.down:
            try:
                await self._io("write audit", self.store.record, entry)
                return
            except _Unavailable:
                if journal is None:
                    return  # counted and told; the embedded store is a local file
        await self._keep_locally(journal.queue, entry)

    async def settle(self) -> None:
        """Wait for suspensions and audit entries being recorded; before stopping."""
        await asyncio.gather(*self._recording, return_exceptions=True)

    # --- the state store, and what to do while it is away --------------------

    def _unreachable(self, operation: str, error: Exception) -> None:
        if self.metrics is not None:
            self.metrics.backend_error(operation)
        self._outage.failed(error, "suspensions hold from what this gateway knows"
                            + ("; audit entries wait in its journal" if self.journal else ""))

    async def _io(self, operation: str, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)`, a state store call, off the event loop. A failure is
        counted, told once per outage, and raised as `_Unavailable`."""
        try:
            result = await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        except Exception as e:
            self._unreachable(operation, e)
            raise _Unavailable(operation) from e
        self._outage.ok()
        return result

    async def _keep_locally(self, fn: Callable[..., None], *args: Any) -> bool:
        """`fn(*args)`, a journal call, off the event loop; False if it failed
        (the local disk: told once)."""
        try:
            await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        except Exception as e:
            self._journal_outage.failed(e, "a restart while the state store is away would not "
                                        "know every suspension; audit entries may be lost")
            return False
        self._journal_outage.ok()
        return True

    async def _remember(self) -> None:
        """The journal holds the suspensions in force here, whenever they change."""
        if self.journal is None:
            return
        async with self._journal_lock:
            known = self.active()
            if known != self._journaled and await self._keep_locally(self.journal.keep, known):
                self._journaled = known

    async def _save(self, record: Suspension) -> None:
        """Into the store; kept to be tried again while it is away."""
        try:
            saved = await self._io("record suspension", self._suspend_in_store, record)
        except _Unavailable:
            self._failed[record.system] = record
            return
        self._failed.pop(record.system, None)
        # known as active before it stops being unsaved: never a gap between
        self._active = {**self._active, record.system: saved}
        self._saves += 1
        self._unsaved.pop(record.system, None)
        await self._remember()

    def _suspend_in_store(self, record: Suspension) -> Suspension:
        """Blocking: the record as stored, or the system's suspension already
        there (an operator's, another gateway's), with its id."""
        saved = self.store.suspend(record)
        if saved is None:
            log.info("%s was already suspended in the store", record.system)
            saved = self.store.latest(record.system)
            if saved is None:  # gone in between: tried again next round
                raise LookupError(f"the suspension of {record.system} vanished from the store")
        return saved

    async def _confirm_missing(self, active: dict[str, Suspension]
                               ) -> dict[str, tuple[Suspension, bool]]:
        """The store's word on each suspension known here that its active
        list lacks: lifted, or written back because the store lost it."""
        return {record.system: await self._io("confirm suspension", self.store.confirm, record,
                                              self.clock.now())
                for s, record in self._active.items() if s not in active and s not in self._unsaved}

    def _take_in(self, active: dict[str, Suspension],
                 confirmed: dict[str, tuple[Suspension, bool]]) -> None:
        """The store's view becomes this gateway's: suspensions imposed
        elsewhere take effect, lifts end them, written-back ones go on."""
        kept = {s: record for s, (record, _) in confirmed.items() if record.lifted_at is None}
        lifted = [record for record, _ in confirmed.values() if record.lifted_at is not None]
        for system, (record, restored) in confirmed.items():
            if restored:
                log.warning("the state store had lost the suspension of %s (id %s, by %s); "
                            "written back as id %s", system, self._active[system].id,
                            record.by, record.id)
        imposed = [r for s, r in active.items() if s not in self.active()]
        self._active = {**active, **kept}
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
            self.on_lifted(record.system, record.purge)

    def held_at_start(self, systems: Iterable[str]) -> None:
        """Systems with mail in hold/ at start. Those not suspended were lifted
        while no gateway ran: their mail goes (or is purged, as the lift
        said) once the store tells which."""
        self._held = {system for system in systems if self.suspended(system) is None}

    async def _release_held(self) -> None:
        for system in list(self._held):
            if self.suspended(system) is None:
                latest = await self._io("read suspensions", self.store.latest, system)
                if latest is not None and latest.lifted_at is None:
                    continue  # suspended after all: taken in by the next round
                self.on_lifted(system, bool(latest and latest.purge))
            self._held.discard(system)

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
        Those the store lost are written back, before suspensions that could
        not be recorded (store down) are tried again, so that these take
        new ids; audit entries waiting in the outbox go in."""
        saves = self._saves
        active = await self._io("read suspensions", self.store.active)
        confirmed = await self._confirm_missing(active)
        if saves == self._saves:  # else stale: next time
            self._take_in(active, confirmed)
        for record in list(self._failed.values()):
            await self._save(record)
        await self._remember()
        await self._release_held()
        await self._io("send notices", self._send_notices)
        if self.journal is not None:
            await self._io("write audit", self.journal.deliver, self.store)

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
                    await self._io("save baselines", self.save_baselines)
            except _Unavailable:
                pass  # told when the outage began; the next round tries again
            except Exception:
                log.exception("cannot sync suspensions with the state store")
