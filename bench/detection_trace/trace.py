"""Generate the trace: events.jsonl in time order, config.toml declaring
every system, labels.json saying what is what.

Generation goes day by day: every system's ordinary day (hard cases
included), the incidents that start that day, strangers refused at the
door, the blocklist guard's own events; then whatever is before the next
midnight is written, the rest (retries) kept for later. Everything is drawn
from random generators seeded with the seed and a name (a system's id, an
incident's number), so a seed gives the same trace byte for byte.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson

from . import clock
from . import systems as systems_mod
from .clock import Calendar
from .delivery import Destinations
from .incidents import Incidents
from .scenario import Plan
from .sink import Sink
from .traffic import Traffic, scanners

# bumped whenever the same parameters would give a different trace
VERSION = 2


def generate(out: Path, seed: int, days: int, n_systems: int, scale: float,
             progress: bool = False) -> dict[str, Any]:
    cal = Calendar(days)
    systems, world = systems_mod.build(seed, n_systems, scale)
    dest = Destinations(world.zen_users)
    plan = Plan(seed, cal, systems, world, dest)
    sink = Sink()
    traffic = Traffic(cal, world, dest, plan, sink)
    incidents = Incidents(seed, world, dest, sink)
    strangers = random.Random(f"{seed}:strangers")
    end = cal.start(days)
    total = 0
    with open(out / "events.jsonl", "wb") as f:
        for d in range(days):
            for s in systems:
                traffic.day(s, d)
            for inc in plan.incidents:
                if cal.day_of(inc.start) == d:
                    incidents.run(inc)
            scanners(sink, strangers, world, cal.start(d))
            for event in plan.dnsbl:
                if cal.day_of(event["ts"]) == d and event["ts"] < end:
                    sink.add(dict(event))
            total += sink.flush(f, cal.start(d + 1))
            if progress:
                print(f"\r  generating: day {d + 1}/{days}, {total:,} events", end="", flush=True)
        total += sink.flush(f)
    if progress:
        print()
    note = (f"bench/detection trace: seed {seed}, {days} days from {clock.START.date()}, "
            f"{n_systems} systems, scale {scale:g}")
    systems_mod.write_config(out / "config.toml", systems, note)
    labels = {
        "version": VERSION,
        "params": {"seed": seed, "days": days, "systems": n_systems, "scale": scale},
        "start": clock.T0, "end": end, "local_time": "Asia/Almaty (UTC+5)",
        "holidays": cal.holidays(),
        "events": total, "event_kinds": dict(sorted(sink.counts.items())),
        "systems": [_system(s, days) for s in systems],
        "incidents": [{"id": i.id, "kind": i.kind, "system": i.system, "tier": i.tier,
                       "start": i.start, "end": i.end, "sender": i.sender,
                       "senders": i.senders, "by": i.by,
                       "queue_id_prefix": i.prefix, "messages": len(i.accepted),
                       "recipients": i.recipients, "params": i.params, "accepted": i.accepted}
                      for i in plan.incidents],
        "cases": [{"kind": c.kind, "system": c.system, "start": c.start, "end": c.end,
                   "note": c.note, "sender": c.sender} for c in plan.cases],
    }
    (out / "labels.json").write_bytes(orjson.dumps(labels))
    return labels


def _system(s: systems_mod.System, days: int) -> dict[str, Any]:
    st = s.stats
    attempts = max(1, st["attempts"])
    return {"id": s.id, "name": s.name, "kind": s.kind, "size_class": s.size_class(),
            "daily": round(s.daily, 1), "bounce_target": round(s.bounce, 4),
            "usual_bounce_rate": round(st["bounced"] / attempts, 4),
            "usual_deferral_rate": round(st["deferred"] / attempts, 4),
            "messages": st["messages"], "first_day": s.first_day,
            "mailboxes": len(s.senders), "robot": s.robot,
            "robot_share": round(s.robot_share, 3), "subaddress": s.subaddress,
            "silent": list(s.silent) if s.silent else None,
            "active_days": sum(1 for d in range(days) if s.active(d))}


def load(out: Path, seed: int, days: int, n_systems: int, scale: float) -> dict[str, Any] | None:
    """The labels of a trace already in `out` made with these parameters."""
    try:
        labels = orjson.loads((out / "labels.json").read_bytes())
    except (OSError, ValueError):
        return None
    same = labels.get("version") == VERSION and labels.get("params") == {
        "seed": seed, "days": days, "systems": n_systems, "scale": scale}
    ok = same and (out / "events.jsonl").exists() and (out / "config.toml").exists()
    return labels if ok else None
