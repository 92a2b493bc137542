"""`mailgw replay` until every decision is seen, in passes: the fallback
of stream.py, needing only replay's contract.

Each suspension is lifted `lift_after` (1 h) later, a `restrict` answered
with `unrestricted`, as in stream.py; but here the trace is replayed, the
lifts of its decisions added, and replayed again, until a pass decides
what the one before did. That fixed point is what one replay with the
operator in the loop decides. Each pass finds at least one more decision
of every system still moving, so a system suspended again and again needs
as many passes.

The rules judge each system on its own traffic (windows, baselines and
suspensions are per system), so a later pass replays only the systems
whose decisions changed in the pass before, and the events that belong to
no system (e.g. the guard's dnsbl_listed). `full=True` replays the whole
trace every pass, for rules that would look across systems.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .stream import lift_event

MAX_PASSES = 40


@dataclass
class Run:
    decisions: list[dict[str, Any]] = field(default_factory=list)
    passes: list[dict[str, Any]] = field(default_factory=list)  # events, seconds, systems
    converged: bool = True

    @property
    def first(self) -> dict[str, Any]:
        return self.passes[0]


def replay(repo: Path, config: Path, trace: Path) -> tuple[list[dict[str, Any]], float]:
    """One `python -m mailgw replay` of this checkout; its decisions and
    wall-clock seconds."""
    env = dict(os.environ, PYTHONPATH=str(repo))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mailgw", "replay", "--config", str(config),
                           str(trace)], cwd=repo, env=env, capture_output=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"mailgw replay failed (exit {proc.returncode}):\n"
                         f"{proc.stderr.decode(errors='replace')[-3000:]}")
    return [orjson.loads(line) for line in proc.stdout.splitlines() if line.strip()], seconds


def _key(d: dict[str, Any]) -> tuple[Any, ...]:
    return d["ts"], d.get("action", "suspend"), d.get("rule"), d.get("sender")


def _lifts(decisions: Iterable[dict[str, Any]], after: float) -> list[tuple[float, bytes]]:
    out = [lift for lift in (lift_event(d, after) for d in decisions) if lift is not None]
    out.sort(key=lambda x: x[0])
    return out


def _write(trace: Path, path: Path, systems: set[str] | None,
           lifts: list[tuple[float, bytes]]) -> int:
    """`trace` with only `systems`' lines (all if None; lines of no
    system always) and the lift events merged in by time."""
    wanted = None if systems is None else {s.encode() for s in systems}
    n, i = 0, 0
    with open(trace, "rb") as src, open(path, "wb") as dst:
        write = dst.write
        for line in src:
            if wanted is not None:
                at = line.find(b',"system":', 0, 40) + 10
                if line[at] != 110 and line[at + 1:line.index(b'"', at + 1)] not in wanted:
                    continue  # 110: "null", no system's
            if i < len(lifts):
                ts = float(line[6:line.index(b",", 6)])
                while i < len(lifts) and lifts[i][0] <= ts:
                    write(lifts[i][1])
                    n, i = n + 1, i + 1
            write(line)
            n += 1
        for _, event in lifts[i:]:
            write(event)
            n += 1
    return n


def run(repo: Path, config: Path, trace: Path, events: int, workdir: Path, lift_after: float,
        full: bool = False, progress: bool = True) -> Run:
    result = Run()

    def say(text: str) -> None:
        if progress:
            print(text, flush=True)

    decisions, seconds = replay(repo, config, trace)
    result.passes.append({"events": events, "seconds": seconds, "systems": "all",
                          "decisions": len(decisions)})
    say(f"  replay pass 1: {events:,} events in {seconds:.1f} s, {len(decisions)} decisions")
    by_system: dict[str, list[dict[str, Any]]] = {}
    for d in decisions:
        by_system.setdefault(d["system"], []).append(d)
    changed = set(by_system)
    while changed:
        if len(result.passes) == MAX_PASSES:
            result.converged = False
            say(f"  no fixed point after {MAX_PASSES} passes: {len(changed)} systems still move")
            break
        replayed = None if full else changed
        lifts = _lifts((d for s, ds in by_system.items() if replayed is None or s in replayed
                        for d in ds), lift_after)
        path = workdir / f"pass{len(result.passes) + 1}.jsonl"
        n = _write(trace, path, replayed, lifts)
        decisions, seconds = replay(repo, config, path)
        path.unlink()
        new: dict[str, list[dict[str, Any]]] = {}
        for d in decisions:
            new.setdefault(d["system"], []).append(d)
        looked = set(by_system) | set(new) if full else changed
        changed = {s for s in looked
                   if [_key(d) for d in new.get(s, [])] != [_key(d) for d in by_system.get(s, [])]}
        for s in looked:
            if new.get(s):
                by_system[s] = new[s]
            else:
                by_system.pop(s, None)
        result.passes.append({"events": n, "seconds": seconds,
                              "systems": "all" if full else len(replayed or ()),
                              "decisions": len(decisions)})
        say(f"  replay pass {len(result.passes)}: {n:,} events "
            f"({'all' if full else len(replayed or ())} systems) in {seconds:.1f} s, "
            f"{len(changed)} systems changed")
    result.decisions = sorted((d for ds in by_system.values() for d in ds),
                              key=lambda d: (d["ts"], d["system"]))
    return result
