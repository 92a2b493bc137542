"""Operators' hands on the queue (`mailgw queue`): release and purge held or
deferred messages, by id or by system.

A spool belongs to one running gateway, which holds its lock (`SpoolLock`;
a second gateway on the same spool refuses to start). While one runs, a
change is handed to it as a request file in `control/` and it carries the
change out, so its scheduler knows at once; with none running, the CLI takes
the lock and changes the spool itself. Either way `carry_out` decides, and
the result comes back the same.

- release: a held message goes back to the queue; a deferred one is retried
  now; one set aside (crashed delivery too often) is tried again with its
  crash count cleared. The mail of a suspended system (a restricted
  sender) is not released: lift it first.
- purge: the message is deleted, without a bounce (the operator's call, as
  `postsuper -d`). A message being delivered right now is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

from mailgw.clock import Clock
from mailgw.events import EventSink
from mailgw.relay.queue_file import UNREADABLE
from mailgw.relay.spool import Meta, Spool, State

log = logging.getLogger("mailgw.queue")

CHANGEABLE: tuple[State, ...] = ("hold", "queue", "corrupt")


def find(spool: Spool, ids: Collection[str], system: str | None
         ) -> tuple[list[tuple[State, Meta]], list[str]]:
    """Messages named by id, or all of one system's own (not the gateway's
    notices and DSNs about it), that can be changed; and those named whose
    metadata cannot be read."""
    found, unreadable = [], []
    for state in CHANGEABLE:
        for queue_id in spool.ids(state):
            if (ids and queue_id not in ids) or (not ids and system is None):
                continue
            try:
                meta = spool.read(state, queue_id)
            except FileNotFoundError:
                continue
            except UNREADABLE:
                if ids:
                    unreadable.append(queue_id)
                continue
            if ids or (meta.system == system and meta.origin == "system"):
                found.append((state, meta))
    return found, unreadable


Told = tuple[str, str | None, dict[str, Any]]  # an event to emit: (event, system, fields)


def carry_out(spool: Spool, request: dict[str, Any], stopped: Callable[[Meta], str | None],
              now: float) -> tuple[dict[str, Any], list[Told]]:
    """Do one request ({"action", "ids", "system"}); what was done to which
    message, and what was not and why; and the events to tell (the caller
    emits them: this may run in a thread). `stopped(meta)`: what holds a
    message back (blocklist_guard/hold.stopped_by)."""
    told: list[Told] = []
    ids = set(request.get("ids") or [])
    done: list[dict[str, str | None]] = []
    skipped: list[dict[str, str]] = []
    found, unreadable = find(spool, ids, request.get("system"))
    for queue_id in unreadable:
        skipped.append({"id": queue_id, "why": "its metadata cannot be read; the file is "
                        f"{spool.root}/corrupt/{queue_id}.msg"})
    for missing in sorted(ids - {meta.id for _, meta in found} - set(unreadable)):
        skipped.append({"id": missing, "why": "not held or waiting in the queue, nor set aside "
                        "(delivered, being delivered, or no such message)"})
    for state, meta in found:
        by = stopped(meta) if request["action"] == "release" else None
        if by is not None:
            whom = f"{meta.system} is suspended" if by == "" else \
                f"sender {by} of {meta.system} is restricted"
            skipped.append({"id": meta.id, "why": f"{whom}; lift it to release its mail"})
            continue
        try:
            # claimed as delivery claims a message, by a rename only one side
            # wins: a running delivery never works on it at the same time, and
            # a crash now leaves it for recovery to queue again. Read again:
            # an attempt may have finished after `find` read it
            fresh, data = spool.take(meta.id, state)
        except FileNotFoundError:
            skipped.append({"id": meta.id, "why": "being delivered right now"})
            continue
        if request["action"] == "purge":
            spool.purge(meta.id, "active")
            told.append(("purged", meta.system, {"queue_id": meta.id, "by": request["operator"]}))
        else:
            try:
                spool.defer(replace(fresh, next_try=now, crashes=0), data)
            except OSError as e:  # the disk is full: it stays as it was
                spool.unclaim(meta.id, state)
                skipped.append({"id": meta.id, "why": f"cannot be changed now: {e}"})
                continue
            told.append(("released", meta.system,
                         {"queue_id": meta.id, "by": request["operator"]}))
        done.append({"id": meta.id, "system": meta.system})
    return {"action": request["action"], "done": done, "skipped": skipped}, told


def hand_over(root: Path, request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Give `request` to the gateway running on the spool at `root`; its
    result. TimeoutError if it did not answer."""
    control = root / "control"
    control.mkdir(exist_ok=True)
    name = f"{time.time():.6f}-{uuid.uuid4().hex}"
    tmp = control / f".{name}.tmp"
    tmp.write_text(json.dumps(request))
    tmp.rename(control / f"{name}.request")  # whole, or not there
    answer = control / f"{name}.result"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answer.exists():
            result = json.loads(answer.read_text())
            answer.unlink()
            return result
        time.sleep(0.05)
    with contextlib.suppress(FileNotFoundError):
        (control / f"{name}.request").unlink()  # not taken: withdrawn
    raise TimeoutError("the running gateway did not answer")


def _is_request(request: Any) -> bool:
    """Shaped as `hand_over` writes one: anything else is refused before it
    touches the spool."""
    return (isinstance(request, dict) and request.get("action") in ("release", "purge")
            and isinstance(request.get("operator"), str)
            and isinstance(request.get("ids"), list)
            and all(isinstance(i, str) for i in request["ids"])
            and isinstance(request.get("system"), str | None))


def take_requests(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The gateway's side: requests waiting, oldest first."""
    control = root / "control"
    out = []
    for path in sorted(control.glob("*.request")) if control.is_dir() else []:
        try:
            request = json.loads(path.read_text())
        except FileNotFoundError:
            continue  # withdrawn
        except ValueError:
            request = None
        if not _is_request(request):
            path.unlink()  # not a request of ours: it would fail every round
            continue
        out.append((path, request))
    return out


def answer(path: Path, result: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.rename(path.with_suffix(".result"))
    with contextlib.suppress(FileNotFoundError):  # withdrawn while it was done
        path.unlink()


async def serve_requests(*, spool: Spool, stopped: Callable[[Meta], str | None],
                         events: EventSink, schedule: Callable[[str, float], None],
                         run_io: Callable[..., Awaitable[Any]], clock: Clock,
                         every: float = 0.2) -> None:
    """The running gateway's side: carry out each request handed over, tell
    its events and have delivery try the released mail now."""
    while True:
        await asyncio.sleep(every)
        try:
            for path, request in await run_io(take_requests, spool.root):
                result, told = await run_io(carry_out, spool, request, stopped, clock.now())
                for event, system, fields in told:  # on the loop: subscribers are not
                    events.emit(event, system, **fields)  # thread-safe
                if request["action"] == "release":
                    for message in result["done"]:
                        schedule(message["id"], 0.0)
                await run_io(answer, path, result)
        except Exception:
            log.exception("cannot carry out a queue request")
