"""The courier: SMTP out to a next hop, one connection carrying many messages.

`Courier.connect(route)` tries the route's hops in order and returns an open
`Link`; `Link.send(sender, recipients, data)` returns one Outcome per
recipient. Every failure becomes an Outcome, never an exception: a reply code
decides permanent or temporary; anything else (timeouts, resets, TLS
trouble) is temporary, and the link is then dead.

TLS is opportunistic (encrypt when offered, no certificate check, as Postfix's
`may`); for a route that requires TLS it must be offered and the certificate
must verify for the hop's name, else the mail waits (temporary failure).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import aiosmtplib

from mailgw.relay.outcome import Outcome
from mailgw.relay.routing import Hop, Route

log = logging.getLogger("mailgw.courier")


class ConnectFailed(Exception):
    def __init__(self, outcome: Outcome):
        super().__init__(outcome.response)
        self.outcome = outcome


def _reply_text(e: aiosmtplib.SMTPResponseException) -> str:
    return f"{e.code} {e.message}".strip()


class Link:
    def __init__(self, client: aiosmtplib.SMTP, hop: Hop, source: str | None = None,
                 timeout: float = 300.0):
        self.client = client
        self.hop = hop
        self.source = source
        self.timeout = timeout  # for each command's reply
        self.alive = True
        self.sent = 0

    async def send(self, sender: str, recipients: list[str], data: bytes) -> list[Outcome]:
        # one timer for the transaction, moved on before each command:
        # aiosmtplib's own timeout costs an asyncio.wait_for per command
        try:
            async with asyncio.timeout(None) as deadline:
                return await self._transaction(deadline, sender, recipients, data)
        except TimeoutError:
            return self._dead(TimeoutError(f"no reply within {self.timeout:g}s"),
                              len(recipients))

    async def _transaction(self, deadline: asyncio.Timeout, sender: str, recipients: list[str],
                           data: bytes) -> list[Outcome]:
        remote = self.hop.host
        loop = asyncio.get_running_loop()
        deadline.reschedule(loop.time() + self.timeout)
        try:
            await self.client.mail(sender, timeout=None)
        except aiosmtplib.SMTPResponseException as e:
            await self._reset()
            return [Outcome.from_reply(e.code, _reply_text(e), remote)] * len(recipients)
        except Exception as e:  # noqa: BLE001 - any other failure is temporary
            return self._dead(e, len(recipients))
        outcomes: list[Outcome | None] = []
        try:
            for rcpt in recipients:
                deadline.reschedule(loop.time() + self.timeout)
                try:
                    await self.client.rcpt(rcpt, timeout=None)
                    outcomes.append(None)
                except aiosmtplib.SMTPResponseException as e:
                    outcomes.append(Outcome.from_reply(e.code, _reply_text(e), remote))
            if all(o is not None for o in outcomes):
                await self._reset()
                return [o for o in outcomes if o is not None]
            deadline.reschedule(loop.time() + self.timeout)
            try:
                reply = await self.client.data(data, timeout=None)
                done = Outcome.from_reply(reply.code, f"{reply.code} {reply.message}", remote)
            except aiosmtplib.SMTPResponseException as e:
                done = Outcome.from_reply(e.code, _reply_text(e), remote)
        except Exception as e:  # noqa: BLE001
            return self._dead(e, len(recipients))
        self.sent += 1
        return [o if o is not None else done for o in outcomes]

    async def _reset(self) -> None:
        try:
            await self.client.rset()
        except Exception:  # noqa: BLE001 - a link that cannot RSET is not reused
            self.alive = False

    def _dead(self, error: Exception, n: int) -> list[Outcome]:
        self.alive = False
        text = f"connection to {self.hop.host} failed: {type(error).__name__}: {error}"
        return [Outcome.temporary(text, remote=self.hop.host)] * n

    async def close(self) -> None:
        try:
            if self.alive:
                await self.client.quit()
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        finally:
            self.client.close()


class Courier:
    def __init__(
        self, *, helo_name: str, connect_timeout: float, command_timeout: float,
        tls_ca_file: Path | None = None,
    ):
        self.helo_name = helo_name
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._opportunistic = ssl.create_default_context()
        self._opportunistic.check_hostname = False
        self._opportunistic.verify_mode = ssl.CERT_NONE
        self._verified = ssl.create_default_context(
            cafile=str(tls_ca_file) if tls_ca_file else None
        )

    async def connect(self, route: Route, source_address: str | None = None) -> Link:
        last: Outcome | None = None
        for hop in route.hops:
            try:
                return await self._open(hop, route.tls_required, source_address)
            except ConnectFailed as e:
                log.info("cannot use %s:%d for %s: %s", hop.address, hop.port, route.key,
                         e.outcome.response)
                last = e.outcome
        raise ConnectFailed(last or Outcome.temporary(f"no usable host for {route.key}"))

    async def _open(self, hop: Hop, tls_required: bool, source: str | None) -> Link:
        client = aiosmtplib.SMTP(
            hostname=hop.address, port=hop.port, local_hostname=self.helo_name,
            timeout=self.command_timeout, start_tls=False,
            source_address=(source, 0) if source else None,
        )
        try:
            await asyncio.wait_for(client.connect(), self.connect_timeout)
            await client.ehlo()
            if client.supports_extension("starttls"):
                await self._starttls(client, hop, tls_required)
            elif tls_required:
                raise ConnectFailed(Outcome.temporary(
                    f"{hop.host} does not offer STARTTLS, which this destination requires",
                    code=454, remote=hop.host))
        except ConnectFailed:
            client.close()
            raise
        except aiosmtplib.SMTPResponseException as e:
            client.close()
            raise ConnectFailed(Outcome.from_reply(e.code, _reply_text(e), hop.host)) from e
        except Exception as e:  # noqa: BLE001 - refused, timed out, reset: all temporary
            client.close()
            raise ConnectFailed(Outcome.temporary(
                f"cannot connect to {hop.host}: {type(e).__name__}: {e}", remote=hop.host)) from e
        return Link(client, hop, source, self.command_timeout)

    async def _starttls(self, client: aiosmtplib.SMTP, hop: Hop, required: bool) -> None:
        context = self._verified if required else self._opportunistic
        try:
            await client.starttls(server_hostname=hop.host, tls_context=context)
        except Exception as e:
            if required:
                raise ConnectFailed(Outcome.temporary(
                    f"TLS with {hop.host} failed: {e}", code=454, remote=hop.host)) from e
            # opportunistic: a broken TLS stack on the far side must not stop mail
            log.info("STARTTLS with %s failed (%s); retrying in plain text", hop.host, e)
            client.close()
            await asyncio.wait_for(client.connect(), self.connect_timeout)
            await client.ehlo()
