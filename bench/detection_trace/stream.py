"""One `mailgw replay` with an operator in the loop.

Replay suspends a system at most once until a `lifted` event for it comes
in its input, so a replay of the bare trace hides whatever would be decided
on a system after its first suspension (a false one would hide a later
incident there, and every later false one). Here, as an operator would
after a look at a false alarm or the cleanup of an incident, every
suspension is lifted `lift_after` (1 h) after it, a `restrict` answered
with `unrestricted` for its sender; a `watch` changes nothing.

The trace is fed to `mailgw replay ... -` through a pipe and its decisions
read as they come (PYTHONUNBUFFERED). The lift of a decision at t must be
in the input before any event at t + 1 h or later, so before writing an
event more than an hour past the last moment up to which replay is known
to have judged everything, the feeder makes sure of it: it writes a blank
line longer than the pipe and replay's read buffer together (replay skips
blank lines). Once that write has gone into the pipe, replay has taken in,
and so judged, every event before it, and written their decisions (a
reader asks for more input only when it has used up what it read). The
decisions are then read and their lifts queued. That costs a stall about
once per hour of the trace.

This leans on how replay reads (line by line, in order) rather than on its
contract alone, so it checks itself: a decision that comes in after the
feeder has written an event at its lift's time or later is late, and the
caller then falls back to passes.py (replay, add the lifts, replay again
until nothing changes), which needs only the contract.
"""

from __future__ import annotations

import fcntl
import heapq
import os
import selectors
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

F_GETPIPE_SZ = 1032  # Linux


@dataclass
class Streamed:
    decisions: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    events: int = 0  # the trace's and the lifts
    stalls: int = 0
    late: int = 0  # decisions that came too late to be lifted in time


def lift_event(d: dict[str, Any], after: float) -> tuple[float, bytes] | None:
    action = d.get("action", "suspend")
    ts = round(d["ts"] + after, 3)
    if action == "suspend":
        event = {"ts": ts, "system": d["system"], "event": "lifted", "by": "bench",
                 "reason": "looked at"}
    elif action == "restrict":
        event = {"ts": ts, "system": d["system"], "event": "unrestricted",
                 "sender": d.get("sender"), "by": "bench", "reason": "looked at"}
    else:
        return None
    return ts, orjson.dumps(event) + b"\n"


class _Replay:
    """The replay process, its input written and its output read without
    either side blocking the other."""

    def __init__(self, repo: Path, config: Path, err: Any):
        env = dict(os.environ, PYTHONPATH=str(repo), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailgw", "replay", "--config", str(config), "-"],
            cwd=repo, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.fd_in, self.fd_out = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        os.set_blocking(self.fd_in, False)
        os.set_blocking(self.fd_out, False)
        capacity = fcntl.fcntl(self.fd_in, F_GETPIPE_SZ)
        # longer than the pipe and replay's read buffer (8 KiB) together
        self.blank = b" " * (capacity + (1 << 16)) + b"\n"
        self.output = selectors.DefaultSelector()
        self.output.register(self.fd_out, selectors.EVENT_READ)
        self.either = selectors.DefaultSelector()  # room for input, or output to read
        self.either.register(self.fd_in, selectors.EVENT_WRITE)
        self.either.register(self.fd_out, selectors.EVENT_READ)
        self.partial = b""
        self.lines: list[bytes] = []  # decisions read, not yet taken

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd_in, view):]
            except BlockingIOError:
                self.either.select()  # replay may be waiting for us to read
                self.read()
            except BrokenPipeError:
                raise SystemExit(self.failure()) from None
        self.read()

    def read(self) -> bool:
        """Take what output there is; False at its end."""
        while True:
            try:
                chunk = os.read(self.fd_out, 1 << 16)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            *lines, self.partial = (self.partial + chunk).split(b"\n")
            self.lines.extend(line for line in lines if line.strip())

    def finish(self) -> None:
        assert self.proc.stdin is not None
        self.either.unregister(self.fd_in)
        self.proc.stdin.close()
        while self.read():
            self.output.select()
        if self.proc.wait() != 0:
            raise SystemExit(self.failure())

    def failure(self) -> str:
        self.proc.kill()
        self.proc.wait()
        return f"mailgw replay failed (exit {self.proc.returncode})"


def _ts(data: bytes, at: int = 0) -> float:
    """The ts of the event line starting at `at`: lines begin {"ts":<number>,"""
    return float(data[at + 6:data.index(b",", at + 6)])


class _Feeder:
    def __init__(self, replay: _Replay, lift_after: float, out: Streamed):
        self.replay, self.after, self.out = replay, lift_after, out
        self.lifts: list[tuple[float, bytes]] = []
        self.last = float("-inf")  # the time of the last event written
        self.judged = float("-inf")  # replay has judged every event up to here

    def block(self, data: bytes) -> None:
        """Whole lines of the trace: written at once when none of them needs
        a lift before it or replay to catch up, else line by line."""
        if not data:
            return
        last = _ts(data, data.rfind(b"\n", 0, len(data) - 1) + 1)
        if last <= self.judged + self.after and not (self.lifts and self.lifts[0][0] <= last):
            self.replay.write(data)
            self.out.events += data.count(b"\n")
            self.last = last
            self.take()
            return
        batch: list[bytes] = []
        for line in data.splitlines(keepends=True):
            ts = _ts(line)
            if ts > self.judged + self.after:
                self.replay.write(b"".join(batch) + self.replay.blank)
                batch = []
                self.out.stalls += 1
                self.replay.read()
                self.judged = self.last
                self.take()
            while self.lifts and self.lifts[0][0] <= ts:
                batch.append(heapq.heappop(self.lifts)[1])
                self.out.events += 1
            batch.append(line)
            self.out.events += 1
            self.last = ts
        self.replay.write(b"".join(batch))
        self.take()

    def take(self) -> None:
        """The decisions replay has written: their lifts queued."""
        for line in self.replay.lines:
            d = orjson.loads(line)
            self.out.decisions.append(d)
            lift = lift_event(d, self.after)
            if lift is None:
                continue
            if lift[0] <= self.last:
                self.out.late += 1
            else:
                heapq.heappush(self.lifts, lift)
        self.replay.lines.clear()


def run(repo: Path, config: Path, trace: Path, lift_after: float) -> Streamed:
    out = Streamed()
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        replay = _Replay(repo, config, err)
        feeder = _Feeder(replay, lift_after, out)
        try:
            with open(trace, "rb") as src:
                rest = b""
                while chunk := src.read(1 << 16):
                    chunk = rest + chunk
                    cut = chunk.rfind(b"\n") + 1
                    feeder.block(chunk[:cut])
                    rest = chunk[cut:]
            feeder.block(rest + b"\n" if rest.strip() else b"")
            replay.finish()
            feeder.take()
        except SystemExit:
            err.seek(0)
            raise SystemExit(f"mailgw replay failed:\n"
                             f"{err.read().decode(errors='replace')[-3000:]}") from None
        out.seconds = time.perf_counter() - start
    out.decisions.sort(key=lambda d: (d["ts"], d["system"]))
    return out
