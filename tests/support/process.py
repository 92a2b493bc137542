"""`mailgw serve` as a subprocess with a config file the test writes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.waiting import wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            return s.recv(3) == b"220"
    except OSError:
        return False


class ServeProcess:
    def __init__(self, config_path: Path, port: int,
                 mailgw: tuple[str, ...] = (sys.executable, "-m", "mailgw"),
                 env: dict[str, str] | None = None):
        """`mailgw`: the command (this checkout's by default); `env`: its
        environment (this one's by default)."""
        self.config_path, self.port, self.mailgw, self.env = config_path, port, mailgw, env
        self.log = config_path.parent / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServeProcess:
        log = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [*self.mailgw, "serve", "--config", str(self.config_path)],
            stdout=log, stderr=log, cwd=self.config_path.parent,
            env=os.environ.copy() if self.env is None else self.env,
        )
        log.close()
        wait_until(lambda: self._alive_or_fail() and _accepts(self.port), timeout=20,
                   what="mailgw serve to listen")
        return self

    def _alive_or_fail(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"mailgw serve exited: {self.log.read_text()}")
        return True

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Daemon:
    """A server the tests start, with a scratch directory; stop() ends both."""

    proc: subprocess.Popen[bytes] | None = None
    dir: Path

    def kill(self) -> None:
        """SIGKILL: gone at once, as a crashed host's server is."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
