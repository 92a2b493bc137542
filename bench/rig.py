"""What the benchmarks share: a free loopback port, a redis-server of their own,
a build with the engine compiled, a process's CPU time."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path


def compiled_build(into: Path) -> str:
    """mailgw with its anomaly engine compiled by mypyc, as production
    installs it (scripts/compiled-engine, about a minute and a half), built
    into `into`: run from there or with it on PYTHONPATH."""
    subprocess.run([str(Path(__file__).resolve().parent.parent / "scripts" / "compiled-engine"),
                    str(into)], check=True)
    return str(into)


def cpu_seconds(pid: int) -> float:
    """User and system time of a process so far. Per message it is steadier
    than msg/s on a noisy machine: it shows what a change to the
    per-message work saves."""
    utime, stime = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]
    return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(workdir: Path, *options: str) -> tuple[subprocess.Popen[bytes], int]:
    """A redis-server on a free loopback port, without persistence;
    `options`: more of its arguments."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                             "--save", "", "--appendonly", "no", "--dir", str(workdir),
                             *options], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(b"PING\r\n")
            if c.recv(7) == b"+PONG\r\n":
                return proc, port
        time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def start_cluster(workdir: Path, masters: int = 3) -> list[tuple[subprocess.Popen[bytes], int]]:
    """A Redis Cluster of `masters` servers on loopback, all slots assigned."""
    nodes = []
    for n in range(masters):
        (workdir / f"node{n}").mkdir()
        # the bus port named: port + 10000 (the default) may be out of range
        nodes.append(start_redis(workdir / f"node{n}", "--cluster-enabled", "yes",
                                 "--cluster-port", str(free_port())))
    subprocess.run(["redis-cli", "--cluster", "create",
                    *(f"127.0.0.1:{port}" for _, port in nodes),
                    "--cluster-replicas", "0", "--cluster-yes"],
                   check=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        states = [subprocess.run(["redis-cli", "-p", str(port), "cluster", "info"],
                                 capture_output=True, text=True).stdout for _, port in nodes]
        if all("cluster_state:ok" in state for state in states):
            return nodes
        time.sleep(0.2)
    raise SystemExit("the cluster did not form")
