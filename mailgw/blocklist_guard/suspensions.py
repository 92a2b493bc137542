"""Suspensions: the one holder of suspension records in a running gateway,
and the answer to "is this system suspended, is this sender of it
restricted?" for ingress and the hold.

A record's subject is a whole system (a suspension) or one sender inside it
(a restriction: that sender's mail is refused and held, the rest of the
system flows). Records are kept by subject (mailgw/senders.py). The system
is suspended too when its senders' restrictions say the trouble is the
system's: `escalate_after` of them within `escalate_window`, or a sender
first seen after another one's restriction restricted as well (a spammer
changing MAIL FROM); the suspension names those senders.

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
is written back. A sender's restriction lifted with a grace spares that
sender until the grace ends (Judge.spare), here and in gateways started
meanwhile (`Store.spared`). With a journal (Redis), what it knows is also
written down beside the spool, so a gateway restarted while the store is
away still refuses that mail, and audit entries the store cannot take
wait in the journal's outbox.
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
from mailgw.blocklist_guard.hold import Hold
from mailgw.clock import Clock, utc_time
from mailgw.config import Senders
from mailgw.events import Event, EventSink
from mailgw.outage import Outage
from mailgw.senders import subject
from mailgw.state.access import StoreAccess, Unavailable
from mailgw.state.journal import Journal
from mailgw.state.records import AuditEntry, Suspension
from mailgw.wording import why

log = logging.getLogger("mailgw.suspensions")


class Suspensions:
    def __init__(self, *, store: StoreAccess, judge: Judge, events: EventSink, clock: Clock,
                 run_io: Callable[..., Awaitable[Any]],
                 hold: Hold, journal: Journal | None = None,
                 escalation: Senders | None = None,
                 delay: Callable[[float], None] = lambda seconds: None):
        """`hold`: the mail each change stops or lets go (hold.py);
        `run_io(fn, *args)`: `fn` off the event loop (the journal);
        `escalation`: when senders' restrictions become the system's;
        `delay(seconds)`: from the crossing event to the suspension (a metric)."""
        self.store, self.judge, self.events, self.clock = store, judge, events, clock
        self.run_io, self.journal, self.delay = run_io, journal, delay
        self.hold = hold
        self.escalation = escalation or Senders()
        # by subject (mailgw/senders.py): a system's id, or "system sender"
        self._active: dict[str, Suspension] = {}  # in force, as the store has it
        self._unsaved: dict[str, Suspension] = {}  # in force, the store does not have it yet
        self._retry: set[str] = set()  # unsaved because the store was away
        self._journaled: dict[str, Suspension] = {}
        self._journal_outage = Outage(log, "the journal beside the spool")
        self._journal_lock = asyncio.Lock()  # one write at a time, the last one last
        self._saves = 0  # a refresh that overlapped a save is stale
        self._lifted_away: set[str] = set()  # held mail at start, no suspension known
        self._graces: dict[str, Suspension] = {}  # lifted with a grace, by subject
        self._graces_known = False  # read from the store once it answers
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
            await self._read_graces()
        for record in self.in_force().values():
            self._tell_judge(record)
        self._lifted_away = {s for s in held_at_start if self.suspended(s) is None}

    def record(self, key: str) -> Suspension | None:
        """The suspension (restriction) in force for a subject, if any."""
        return self._unsaved.get(key) or self._active.get(key)

    def suspended(self, system: str) -> Suspension | None:
        return self.record(system)

    def restricted(self, system: str, sender: str | None) -> Suspension | None:
        """The restriction of that sender of the system, if any."""
        return self.record(subject(system, sender)) if sender is not None else None

    def restrictions(self, system: str) -> list[Suspension]:
        """The system's senders restricted now, the oldest first."""
        return sorted((r for r in self.in_force().values()
                       if r.system == system and r.sender is not None), key=lambda r: r.since)

    def _tell_judge(self, record: Suspension) -> None:
        """Imposed elsewhere (an operator, another gateway, a restart): the
        judge decides nothing more on its subject until a lift."""
        if record.sender is None:
            self.judge.suspended(record.system)
        else:
            self.judge.restricted(record.system, record.sender)

    async def _read_graces(self) -> None:
        """The senders lifted with a grace still running (before this
        gateway started) are spared here too."""
        spared = await self.store("read suspensions", self.store.store.spared, self.clock.now())
        for key, record in spared.items():
            if key not in self.in_force() and record.sender is not None \
                    and record.grace_until is not None:
                self.judge.spare(record.system, record.sender, record.grace_until)
                self._graces[key] = record
        self._graces_known = True

    def spared(self, system: str) -> list[Suspension]:
        """The system's senders lifted with a grace that runs on now (the
        records of those lifts), the first to end first."""
        now = self.clock.now()
        return sorted((r for key, r in self._graces.items() if r.system == system
                       and key not in self.in_force() and (r.grace_until or 0.0) > now),
                      key=lambda r: r.grace_until or 0.0)

    def in_force(self) -> dict[str, Suspension]:
        """Every suspension in effect here."""
        return {**self._active, **self._unsaved}

    # --- a decision of the judge ---------------------------------------------

    def decided(self, d: Decision) -> None:
        """The judge's decision: the system suspended, or one of its senders
        restricted (and the system too, if that makes the trouble its own)."""
        weighed = d.as_dict()  # the system's usual and the chance, where the rule weighed them
        record = Suspension(system=d.system, since=d.ts, by="auto", rule=d.rule,
                            observed=d.observed, threshold=d.threshold, window=d.window,
                            sender=d.sender,
                            evidence={"counts": d.evidence, "top_domains": [],
                                      **{k: weighed[k] for k in ("usual", "expected", "chance")
                                         if k in weighed}})
        self.delay(max(0.0, self.clock.now() - d.ts))
        self._impose(record)
        if d.sender is not None and self.suspended(d.system) is None:
            escalated = self._escalation(record, d.first_seen)
            if escalated is not None:
                self.judge.suspended(d.system)
                self._impose(escalated)

    def _escalation(self, record: Suspension, first_seen: float | None) -> Suspension | None:
        """The system's suspension that `record`, a sender's restriction,
        brings, if it does: enough of its senders restricted within the
        window, or a sender first seen after another's restriction."""
        window, after = self.escalation.escalate_window, self.escalation.escalate_after
        recent = [r for r in self.restrictions(record.system) if r.since >= record.since - window]
        earlier = [r for r in recent if r.subject != record.subject]
        if len(recent) >= after:
            kind = "several"
        elif first_seen is not None and any(r.since <= first_seen for r in earlier):
            kind, recent = "rotation", [r for r in earlier if r.since <= first_seen] + [record]
        else:
            return None
        return Suspension(system=record.system, since=record.since, by="auto",
                          evidence={"escalated": kind, "window": window, "top_domains": [],
                                    "senders": [r.sender for r in recent]})

    def _impose(self, record: Suspension) -> None:
        """A decision of this gateway takes effect: its subject's mail is
        refused and held now; the record is written behind."""
        self._unsaved[record.subject] = record
        sender = {"sender": record.sender} if record.sender is not None else {}
        log.warning("%s %s: %s", "suspending" if record.sender is None else
                    f"restricting sender {record.sender} of", record.system, self.why(record))
        self.events.emit(record.actions[0], record.system, **sender, rule=record.rule,
                         observed=record.observed, threshold=record.threshold,
                         window=record.window, by="auto",
                         **{k: v for k, v in record.evidence.items()
                            if k in ("usual", "expected", "chance", "escalated", "senders")})
        self.spawn(self.hold.suspended(record.system))
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
        if record.subject in self._unsaved:
            self._unsaved[record.subject] = record
        await self._save(record)

    async def _save(self, record: Suspension) -> None:
        """Into the store; kept unsaved, to be tried again, while it is away."""
        try:
            saved = await self.store("record suspension", self._suspend_in_store, record)
        except Unavailable:
            self._retry.add(record.subject)
            return
        self._retry.discard(record.subject)
        # known as active before it stops being unsaved: never a gap between
        self._active = {**self._active, record.subject: saved}
        self._saves += 1
        self._unsaved.pop(record.subject, None)
        await self._remember()

    def _suspend_in_store(self, record: Suspension) -> Suspension:
        """Blocking: the record as stored, or its subject's record already
        there (an operator's, another gateway's), with its id."""
        store = self.store.store
        saved = store.suspend(record)
        if saved is None:
            log.info("%s was already %s in the store", record.subject, record.actions[0])
            saved = store.latest(record.system, record.sender)
            if saved is None:  # gone in between: tried again next round
                raise LookupError(f"the record of {record.subject} vanished from the store")
        return saved

    # --- the audit trail -------------------------------------------------------

    def audit_held(self, event: Event) -> None:
        """A subscriber of the event bus: mail kept back is in the audit
        trail, message by message."""
        if event["event"] != "held":
            return
        system = event["system"]
        sender = event.get("sender")
        record = (self.restricted(system, sender) if sender else self.suspended(system)) \
            if system else None
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
        return {key: await self.store("confirm suspension", self.store.store.confirm,
                                      record, self.clock.now())
                for key, record in self._active.items()
                if key not in active and key not in self._unsaved}

    def _take_in(self, active: dict[str, Suspension],
                 confirmed: dict[str, tuple[Suspension, bool]]) -> None:
        """The store's view becomes this gateway's: suspensions imposed
        elsewhere take effect, lifts end them, written-back ones go on."""
        kept = {s: record for s, (record, _) in confirmed.items() if record.lifted_at is None}
        lifted = [record for record, _ in confirmed.values() if record.lifted_at is not None]
        for key, (record, restored) in confirmed.items():
            if restored:
                log.warning("the state store had lost the %s of %s (id %s, by %s); "
                            "written back as id %s", _noun(record), key, self._active[key].id,
                            record.by, record.id)
        imposed = [r for key, r in active.items() if key not in self.in_force()]
        self._active = {**active, **kept}
        for record in imposed:  # by an operator, or by another instance
            self._tell_judge(record)
            self.events.emit(record.actions[0], record.system, **_sender(record), by=record.by,
                             reason=record.reason, rule=record.rule)
            log.warning("%s %s%s: %s", record.actions[0], _whom(record),
                        " (decided by another gateway)" if record.by == "auto" else "",
                        self.why(record))
            self.spawn(self.hold.suspended(record.system))
        for record in lifted:
            if record.sender is None:
                self.judge.lifted(record.system, once=str(record.id))
            else:
                self.judge.unrestricted(record.system, record.sender, once=str(record.id),
                                        grace_until=record.grace_until)
            grace = {"grace_until": record.grace_until} if record.grace_until else {}
            if grace:
                self._graces[record.subject] = record
            self.events.emit(record.actions[1], record.system, **_sender(record),
                             by=record.lifted_by, reason=record.lift_reason, **grace)
            log.warning("lifted the %s of %s (since %s: %s) by %s: %s; its held mail "
                        "is %s%s", _noun(record), _whom(record), utc_time(record.since),
                        self.why(record), record.lifted_by, record.lift_reason,
                        "purged" if record.purge else "released",
                        f"; spared until {utc_time(record.grace_until)}" if grace else "")
            self.spawn(self.hold.lifted(record.system, record.sender, record.purge))

    async def _release_lifted_away(self) -> None:
        """Held mail found at start that nothing known here stops: its
        suspension (restriction) was lifted while no gateway ran, with or
        without --purge, unless the store says it was not."""
        for system in list(self._lifted_away):
            if self.suspended(system) is None:
                latest = await self.store("read suspensions", self.store.store.latest, system)
                if latest is not None and latest.lifted_at is None:
                    continue  # suspended after all: taken in by the next round
                for sender in await self.hold.senders_held(system):
                    if self.restricted(system, sender) is None:
                        mine = await self.store("read suspensions", self.store.store.latest,
                                                system, sender)
                        if mine is not None and mine.lifted_at is not None and mine.purge:
                            await self.hold.lifted(system, sender, True)
                await self.hold.lifted(system, None, bool(latest and latest.purge))
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
        if not self._graces_known:  # the store was away at start
            await self._read_graces()
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


def _sender(record: Suspension) -> dict[str, str]:
    """An event's `sender`, for a sender's restriction."""
    return {"sender": record.sender} if record.sender is not None else {}


def _noun(record: Suspension) -> str:
    return "suspension" if record.sender is None else "restriction"


def _whom(record: Suspension) -> str:
    """As the log names a record's subject."""
    return record.system if record.sender is None else \
        f"sender {record.sender} of {record.system}"
