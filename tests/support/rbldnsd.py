"""A real DNSBL: Debian's rbldnsd serving one ip4set zone on a loopback port;
the test lists and delists addresses by rewriting its data file."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import dns.resolver

from tests.support.process import Daemon, free_port
from tests.support.waiting import wait_until


class Rbldnsd(Daemon):
    def __init__(self, zone: str = "bl.test"):
        self.zone = zone
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mailgw-rbldnsd-"))
        self.dir.chmod(0o755)  # it drops root for its own user, who must read the zone
        self.data = self.dir / "list"
        self._version = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def list(self, *addresses: str) -> None:
        """Exactly these addresses are listed from now on."""
        self.data.write_text(f":127.0.0.2:Listed for sending spam, see http://{self.zone}/$\n"
                             + "".join(f"{a}\n" for a in addresses))
        self._version += 1  # rbldnsd reloads a file whose mtime moved
        os.utime(self.data, (1_700_000_000 + self._version,) * 2)
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: self._answers() == set(addresses), timeout=10,
                       what="rbldnsd to reload")

    def _answers(self) -> set[str]:
        r = dns.resolver.Resolver(configure=False)
        r.nameservers, r.port, r.lifetime = ["127.0.0.1"], self.port, 2
        listed = set()
        for a in ("127.0.0.2", "127.0.0.3"):
            try:
                r.resolve(".".join(reversed(a.split("."))) + "." + self.zone, "A")
                listed.add(a)
            except dns.resolver.NXDOMAIN:
                pass
        return listed

    def start(self) -> Rbldnsd:
        binary = shutil.which("rbldnsd")
        assert binary, "install Debian's rbldnsd"
        self.list()
        self.proc = subprocess.Popen(
            [binary, "-n", "-b", f"127.0.0.1/{self.port}", "-w", str(self.dir),
             "-c", "1", f"{self.zone}:ip4set:list"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self._up(), timeout=10, what="rbldnsd")
        return self

    def _up(self) -> bool:
        try:
            self._answers()
            return True
        except dns.exception.DNSException:
            return False
