"""A real SMTP server standing in for the internet's mail servers: aiosmtpd on
a loopback port in its own thread, recording what it receives and answering
with a fault where the test asks for one. It can also play a next hop that
drops NUL bytes, the one a NUL smuggling attempt is aimed at."""

from __future__ import annotations

import asyncio
import ssl
import threading
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: tuple[str, int]
    tls: bool


@dataclass
class Faults:
    """Replies to give instead of 250: `mail`, `data` for every message;
    `rcpt[address]` for one recipient; `connect` refuses with a greeting code."""

    mail: str | None = None
    data: str | None = None
    delay: float = 0.0  # seconds to sit on each message before answering DATA
    rcpt: dict[str, str] = field(default_factory=dict)


class _Handler:
    def __init__(self, dest: Destination):
        self.dest = dest

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        self.dest.commands.append(f"MAIL {address}")
        if self.dest.faults.mail:
            return self.dest.faults.mail
        envelope.mail_from = address
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        if address in self.dest.faults.rcpt:
            return self.dest.faults.rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.dest.faults.delay:
            await asyncio.sleep(self.dest.faults.delay)
        if self.dest.faults.data:
            return self.dest.faults.data
        assert isinstance(envelope.original_content, bytes)
        with self.dest.lock:
            self.dest.messages.append(Received(
                "" if envelope.mail_from == "<>" else envelope.mail_from or "",
                list(envelope.rcpt_tos), envelope.original_content,
                session.peer, session.ssl is not None,
            ))
        return "250 2.0.0 Ok: delivered"


class _NulBlindSMTP(SMTP):
    """Drops NUL bytes as they arrive, as some MTAs do: to it "\r\n\x00.\r\n"
    ends the message, and what follows is read as commands."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data.replace(b"\x00", b""))


class Destination:
    def __init__(self, host: str = "127.0.0.1", tls_context: ssl.SSLContext | None = None,
                 drops_nul: bool = False):
        self.host, self.port = host, 0
        self.tls_context = tls_context
        self._smtp = _NulBlindSMTP if drops_nul else SMTP
        self.faults = Faults()
        self.messages: list[Received] = []
        self.commands: list[str] = []
        self.connections = 0
        self.lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _protocol(self) -> SMTP:
        self.connections += 1
        return self._smtp(_Handler(self), hostname="dest.test", tls_context=self.tls_context,
                          require_starttls=False)

    def start(self) -> Destination:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(
            self._loop.create_server(self._protocol, self.host, 0), self._loop)
        self._server = fut.result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def received_ids(self) -> set[str]:
        """Queue ids of mailgw's Received headers in what arrived."""
        import re

        with self.lock:
            return {m.group(1).decode() for msg in self.messages
                    for m in [re.search(rb"\(mailgw\) with \S+ id (\w+)", msg.data)] if m}

    def __enter__(self) -> Destination:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
