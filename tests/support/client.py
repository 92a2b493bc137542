"""A raw SMTP client for tests that must send exactly the bytes they mean
(bare LF, NUL, pipelined smuggling attempts), which smtplib would fix up."""

from __future__ import annotations

import socket


class RawClient:
    def __init__(self, port: int, host: str = "127.0.0.1", source: str | None = None,
                 timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.buf = b""
        self.greeting = self.reply()

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed by server; unread: {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self) -> str:
        lines = [self._line()]
        while lines[-1][3:4] == b"-":
            lines.append(self._line())
        return "\n".join(x.decode() for x in lines)

    def send(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def cmd(self, raw: bytes | str) -> str:
        if isinstance(raw, str):
            raw = raw.encode() + b"\r\n"
        self.send(raw)
        return self.reply()

    def closed(self) -> bool:
        """True when the server has closed the connection."""
        try:
            return self.sock.recv(1) == b""
        except (ConnectionError, TimeoutError):
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
