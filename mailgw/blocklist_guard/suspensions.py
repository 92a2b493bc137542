"""Suspensions: the one holder of suspension records in a running gateway,
and the answer to "is this system suspended?" for ingress and the hold.

A decision of the judge takes effect at once (the next MAIL FROM gets 450),
before the record is written; then the record goes to the state store,
shared with the operator CLI and other gateways, which is read again every
second, so that an operator's lift or suspend reaches a running gateway
within that time. Every change is told to the judge (it judges that system
again only after a lift), to the hold (the system's waiting mail is kept
back, or released) and to the event bus.

What this gateway knows is the truth until the store confirms it: a
suspension missing from the store's active list ends only if the store
holds that very record lifted; one the store lost (Redis restarted empty)
is written back. With a journal (Redis), what it knows is also written down
beside the spool, so a gateway restarted while the store is away still
refuses that mail, and audit entries the store cannot take wait in the
journal's outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import replace
from typing import Any

from mailgw.anomaly.judge import Judge
from mailgw.anomaly.rules import Decision
from mailgw.clock import Clock, utc_time
from mailgw.events import Event, EventSink
from mailgw.outage import Outage
from mailgw.state.access import StoreAccess, Unavailable
from mailgw.state.journal import Journal
from mailgw.state.records import AuditEntry, Suspension
from mailgw.wording import why

log = logging.getLogger("mailgw.suspensions")


class Suspensions:
    def __init__(self, *, store: StoreAccess, judge: Judge, events: EventSink, clock: Clock,
                 run_io: Callable[..., Awaitable[Any]],
                 held: Callable[[str], Coroutine[Any, Any, None]],
                 released: Callable[[str, bool], Coroutine[Any, Any, None]],
                 journal: Journal | None = None,
                 delay: Callable[[float], None] = lambda seconds: None):
        """`held(system)`: keep its waiting mail back; `released(system,
        purge)`: its held mail goes (or is deleted) after a lift; `run_io(fn,
        *args)`: `fn` off the event loop (the journal); `delay(seconds)`:
        from the crossing event to the suspension (a metric)."""
        self.store, self.judge, self.events, self.clock = store, judge, events, clock
        self.run_io, self.journal, self.delay = run_io, journal, delay
        self.hold, self.release = held, released
        self._active: dict[str, Suspension] = {}  # in force, as the store has it
        self._unsaved: dict[str, Suspension] = {}  # in force, the store does not have it yet
        self._retry: set[str] = set()  # unsaved because the store was away
        self._journaled: dict[str, Suspension] = {}
        self._journal_outage = Outage(log, "the journal beside the spool")
        self._journal_lock = asyncio.Lock()  # one write at a time, the last one last
        self._saves = 0  # a refresh that overlapped a save is stale
        self._lifted_away: set[str] = set()  # held mail at start, no suspension known
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, held_at_start: Iterable[str]) -> None:
        """What the journal and the store know; `held_at_start`: systems with
        mail in hold/, whose suspension may have been lifted while no gateway
        ran (their mail goes once the store tells which)."""
        known = await self.run_io(self.journal.known) if self.journal is not None else {}
        self._journaled = known
        # decided before a restart and never recorded: recorded now
        self._unsaved = {s: r for s, r in known.items() if r.id is None}
        self._retry = set(self._unsaved)
        self._active = {s: r for s, r in known.items() if r.id is not None}
        # while the store is away: known from the journal, and the next refresh
        with contextlib.suppress(Unavailable):
            self._active.update(await self.store("read suspensions", self.store.store.active))
        for system in self.in_force():
            self.judge.suspended(system)
        self._lifted_away = {s for s in held_at_start if self.suspended(s) is None}

    def suspended(self, system: str) -> Suspension | None:
        return self._unsaved.get(system) or self._active.get(system)

    def in_force(self) -> dict[str, Suspension]:
        """Every suspension in effect here."""
        return {**self._active, **self._unsaved}

    # --- a decision of the judge ---------------------------------------------

    def decided(self, d: Decision) -> None:
        weighed = d.as_dict()  # the system's usual and the chance, where the rule weighed them
        record = Suspension(system=d.system, since=d.ts, by="auto", rule=d.rule,
                            observed=d.observed, threshold=d.threshold, window=d.window,
                            evidence={"counts": d.evidence, "top_domains": [],
                                      **{k: weighed[k] for k in ("usual", "expected", "chance")
                                         if k in weighed}})
        self._unsaved[d.system] = record
        self.delay(max(0.0, self.clock.now() - d.ts))
        log.warning("suspending %s: %s", d.system, self.why(record))
        self.events.emit("suspended", d.system, rule=d.rule, observed=d.observed,
                         threshold=d.threshold, window=d.window, by="auto",
                         **{k: v for k, v in record.evidence.items()
                            if k in ("usual", "expected", "chance")})
        self.spawn(self.hold(d.system))
        self.spawn(self._record(record))

    def why(self, record: Suspension) -> str:
        """Why `record` was imposed, for the log: its rule's finding in
        words, or the operator's decision."""
        return why(record, self.judge.rule(record.rule) if record.rule else None)["en"]

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in the background; `settle` waits for it at a stop."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait for records and audit entries being written; before stopping."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _record(self, record: Suspension) -> None:
        """The record, with the domains the system was mailing most (for the
        owner notice), into the journal and the store."""
        await self._remember()  # a restart before the store takes it still knows it
        top = await self.judge.top_domains(record.system, record.since)
        record = replace(record, evidence={**record.evidence, "top_domains": top})
        if record.system in self._unsaved:
            self._unsaved[record.system] = record
        await self._save(record)

    async def _save(self, record: Suspension) -> None:
        """Into the store; kept unsaved, to be tried again, while it is away."""
        try:
            saved = await self.store("record suspension", self._suspend_in_store, record)
        except Unavailable:
            self._retry.add(record.system)
            return
        self._retry.discard(record.system)
        # known as active before it stops being unsaved: never a gap between
        self._active = {**self._active, record.system: saved}
        self._saves += 1
        self._unsaved.pop(record.system, None)
        await self._remember()

    def _suspend_in_store(self, record: Suspension) -> Suspension:
        """Blocking: the record as stored, or the system's suspension already
        there (an operator's, another gateway's), with its id."""
        store = self.store.store
        saved = store.suspend(record)
        if saved is None:
            log.info("%s was already suspended in the store", record.system)
            saved = store.latest(record.system)
            if saved is None:  # gone in between: tried again next round
                raise LookupError(f"the suspension of {record.system} vanished from the store")
        return saved

    # --- the audit trail -------------------------------------------------------

    def audit_held(self, event: Event) -> None:
        """A subscriber of the event bus: mail kept back is in the audit
        trail, message by message."""
        if event["event"] != "held":
            return
        system = event["system"]
        record = self.suspended(system) if system else None
        self.audit(AuditEntry(event["ts"], system, "held", "auto",
                              record.rule or record.reason if record else None,
                              {"queue_id": event.get("queue_id"),
                               "suspension": record.id if record else None}))

    def audit(self, entry: AuditEntry) -> None:
        """Into the audit trail; while the store is away, into the journal's
        outbox, to be written when it is back."""
        self.spawn(self._write_audit(entry))

    async def _write_audit(self, entry: AuditEntry) -> None:
        journal = self.journal
        # while the store is away, straight to the outbox: a burst of held
        # messages would otherwise wait out a connect timeout each
        if journal is None or not self.store.down:
            try:
                await self.store("write audit", self.store.store.record, entry)
                return
            except Unavailable:
                if journal is None:
                    return  # counted and told; the embedded store is a local file
        await self._keep_locally(journal.queue, entry)

    # --- the journal -----------------------------------------------------------

    async def _keep_locally(self, fn: Callable[..., None], *args: Any) -> bool:
        """`fn(*args)`, a journal call, off the event loop; False if it failed
        (the local disk: told once)."""
        try:
            await self.run_io(fn, *args)
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
            known = self.in_force()
            if known != self._journaled and await self._keep_locally(self.journal.keep, known):
                self._journaled = known

    # --- the store's view ------------------------------------------------------

    async def _confirm_missing(self, active: dict[str, Suspension]
                               ) -> dict[str, tuple[Suspension, bool]]:
        """The store's word on each suspension known here that its active
        list lacks: lifted, or written back because the store lost it."""
        return {record.system: await self.store("confirm suspension", self.store.store.confirm,
                                                record, self.clock.now())
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
        imposed = [r for s, r in active.items() if s not in self.in_force()]
        self._active = {**active, **kept}
        for record in imposed:  # by an operator, or by another instance
            self.judge.suspended(record.system)
            self.events.emit("suspended", record.system, by=record.by, reason=record.reason,
                             rule=record.rule)
            log.warning("suspended %s%s: %s", record.system,
                        " (decided by another gateway)" if record.by == "auto" else "",
                        self.why(record))
            self.spawn(self.hold(record.system))
        for record in lifted:
            self.judge.lifted(record.system, once=str(record.id))
            self.events.emit("lifted", record.system, by=record.lifted_by,
                             reason=record.lift_reason)
            log.warning("lifted the suspension of %s (since %s: %s) by %s: %s; its held mail "
                        "is %s", record.system, utc_time(record.since), self.why(record),
                        record.lifted_by, record.lift_reason,
                        "purged" if record.purge else "released")
            self.spawn(self.release(record.system, record.purge))

    async def _release_lifted_away(self) -> None:
        for system in list(self._lifted_away):
            if self.suspended(system) is None:
                latest = await self.store("read suspensions", self.store.store.latest, system)
                if latest is not None and latest.lifted_at is None:
                    continue  # suspended after all: taken in by the next round
                await self.release(system, bool(latest and latest.purge))
            self._lifted_away.discard(system)

    async def refresh(self) -> None:
        """Take in the store's view: suspensions and lifts made elsewhere.
        Those the store lost are written back, before suspensions that could
        not be recorded (store down) are tried again, so that these take
        new ids; audit entries waiting in the outbox go in."""
        saves = self._saves
        active = await self.store("read suspensions", self.store.store.active)
        confirmed = await self._confirm_missing(active)
        if saves == self._saves:  # else stale: next time
            self._take_in(active, confirmed)
        for system in list(self._retry):
            if system in self._unsaved:
                await self._save(self._unsaved[system])
        await self._remember()
        await self._release_lifted_away()
        if self.journal is not None:
            await self.store("write audit", self.journal.deliver, self.store.store)

    async def run(self, every: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.refresh()
            except Unavailable:
                pass  # told when the outage began; the next round tries again
            except Exception:
                log.exception("cannot sync suspensions with the state store")
