"""Ingress: the SMTP server connected mail systems relay through (aiosmtpd).

The handler only translates SMTP hooks into calls on the policy, the signer
and the spool. What it guarantees:
- 250 after DATA only once the message is durably in the spool;
- every refusal is a named reply from relay/replies.py, a `rejected` event
  and a line of the log (client, system, reply, reason; a warning for an
  attempt at SMTP smuggling), told in one place (`Ingress.refused`); a
  session ended by a limit or a stop is a line of the log too;
- connection, size, recipient, line, time and error limits from [limits].
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, Protocol

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from mailgw import hashing
from mailgw.clock import Clock, utc_time
from mailgw.config import Limits, System
from mailgw.events import EventSink
from mailgw.relay import replies
from mailgw.relay.batching import Batcher
from mailgw.relay.linecheck import RefusedLine, StrictLineReader, check_data, unstuff
from mailgw.relay.policy import Rejection, check_recipient, check_sender
from mailgw.relay.received import received_header
from mailgw.relay.replies import Reply
from mailgw.relay.smtp_edge import EdgeHandler, EdgeSMTP
from mailgw.relay.spool import Meta, Recipient, Spool, SpoolError, new_queue_id
from mailgw.senders import Attribution
from mailgw.state.records import Suspension
from mailgw.systems import SystemDirectory
from mailgw.wording import size

log = logging.getLogger("mailgw.ingress")

_HELO = re.compile(r"^(?:[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?|\[[0-9A-Fa-f:.IPv]+\])$")


# an attempt at SMTP smuggling: message data that a next hop could read as
# two messages
_SMUGGLING = frozenset({replies.BARE_LINE_ENDING_DATA, replies.NUL_IN_DATA})

# room for what is added on the way to the spool: a DKIM signature and the
# metadata line (with a recipient's state in it per recipient)
_ROOM_PER_MESSAGE, _ROOM_PER_RECIPIENT = 4096, 256


def _why(record: Suspension) -> str:
    """Why, in a reply line: the rule, or who decided."""
    if record.rule:
        return f"rule {record.rule}"
    return "restrictions of its senders" if record.evidence.get("escalated") else \
        "operator decision"


def client_ip(session: Session) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


class GatewaySession(Session):
    """A client's SMTP session and the connected system it is: known by its
    IP when the session begins, by its login after AUTH; None for neither."""

    def __init__(self, loop: asyncio.AbstractEventLoop, system: System | None):
        super().__init__(loop)
        self.system = system


class Signer(Protocol):
    def sign(self, message: bytes, envelope_sender_domain: str | None) -> bytes: ...


class ConnectionLimiter:
    def __init__(self, total: int, per_ip: int):
        self.total, self.per_ip = total, per_ip
        self.by_ip: Counter[str] = Counter()
        self.count = 0

    def acquire(self, ip: str) -> bool:
        if self.count >= self.total or self.by_ip[ip] >= self.per_ip:
            return False
        self.count += 1
        self.by_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self.count -= 1
        self.by_ip[ip] -= 1
        if not self.by_ip[ip]:
            del self.by_ip[ip]


async def _nothing_pending(system: str) -> None:
    return None


class Ingress(EdgeHandler):
    """Holds what every connection shares; `protocol()` makes one per client."""

    def __init__(
        self, *, hostname: str, limits: Limits, directory: SystemDirectory, spool: Spool,
        executor: Executor, events: EventSink, clock: Clock,
        on_queued: Callable[[Meta, bytes], None], signer: Signer | None = None,
        tls_context: ssl.SSLContext | None = None,
        suspended: Callable[[str], Suspension | None] = lambda system: None,
        restricted: Callable[[str, str | None], Suspension | None] = lambda system, sender: None,
        senders: Attribution | None = None,
        decided: Callable[[str], Awaitable[None]] = _nothing_pending,
        status_url: str = "",
    ):
        self.hostname, self.limits, self.directory, self.spool = hostname, limits, directory, spool
        self.executor, self.events, self.clock = executor, events, clock
        self.on_queued, self.signer, self.tls_context = on_queued, signer, tls_context
        self.suspended, self.status_url = suspended, status_url
        self.restricted, self.senders = restricted, senders or Attribution()
        self.decided = decided
        self.connections = ConnectionLimiter(limits.max_connections, limits.max_connections_per_ip)
        self.sessions: set[GatewaySMTP] = set()
        self.draining = False
        self._incoming = 0  # bytes of accepted messages on their way to the spool
        self._stores = Batcher(executor, self._sign_and_store)

    def protocol(self) -> GatewaySMTP:
        return GatewaySMTP(self)

    def room_for(self, size: int) -> bool:
        """Whether the spool can take `size` bytes more and keep
        `min_free_disk` free, counting the messages on their way to it. Looked
        up each time (a statvfs is under a microsecond): a cached answer let
        a burst fill the disk. The space below `min_free_disk` is the
        gateway's own, for what it must write to move the queue on."""
        free = self.spool.free_bytes() - self._incoming - size
        return free >= self.limits.min_free_disk

    def refused(self, client: str, system: System | None, rejection: Rejection,
                **fields: Any) -> None:
        """A refusal, told: its `rejected` event and its line of the log."""
        self.events.emit("rejected", system.id if system else None, reason=rejection.reason,
                         code=rejection.reply.code, client=client, **fields)
        level = logging.WARNING if rejection.reply in _SMUGGLING else logging.INFO
        log.log(level, "refused %s (%s): %s [%s]%s", client, system.id if system else
                "no system", rejection.text, rejection.reason,
                "".join(f" {name}={value}" for name, value in fields.items()))

    def ended(self, client: str, system: System | None, reply: Reply, reason: str) -> None:
        """A session the gateway ends (a time limit, a stop), told in the log."""
        log.info("closed %s (%s): %s [%s]", client, system.id if system else "no system",
                 reply, reason)

    async def drain(self, timeout: float) -> None:
        """Stop taking mail: idle sessions get 421 now, sessions inside a
        transaction finish it first; after `timeout` everything is closed."""
        self.draining = True
        for s in list(self.sessions):
            s.close_if_idle()
        deadline = time.monotonic() + timeout
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for s in list(self.sessions):
            s.end(replies.SHUTTING_DOWN, "shutting_down")

    # --- aiosmtpd handler hooks -------------------------------------------

    async def handle_MAIL(self, server: GatewaySMTP, session: GatewaySession,
                          envelope: Envelope, address: str, mail_options: list[str]) -> str:
        declared = next((int(o[5:]) for o in mail_options if o.startswith("SIZE=")), 0)
        if not self.room_for(declared):
            return server.refuse(Rejection.of(replies.INSUFFICIENT_STORAGE, "disk_low"))
        system = session.system
        if system is not None:
            await self.decided(system.id)  # its last message may be crossing a rule now
        if system is not None and (suspension := self.suspended(system.id)) is not None:
            return server.refuse(Rejection.of(
                replies.SUSPENDED, "suspended", system=system.id,
                since=utc_time(suspension.since), why=_why(suspension),
                url=self.status_url.format(system=system.id),
            ), sender=address)
        # aiosmtpd hands the null sender over as "<>"; it stays so in the
        # envelope, where an empty string would read as "no MAIL yet"
        envelope_sender = "" if address == "<>" else address
        _, rejection = check_sender(system, envelope_sender)
        if rejection:
            return server.refuse(rejection, sender=address)
        if system is not None and (restriction := self._restriction(
                system.id, envelope_sender, session)) is not None:
            return server.refuse(Rejection.of(
                replies.RESTRICTED, "restricted", sender=restriction.sender,
                since=utc_time(restriction.since), why=_why(restriction),
                url=self.status_url.format(system=system.id),
            ), sender=address)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return str(replies.SENDER_OK)

    def _restriction(self, system: str, envelope_sender: str,
                     session: GatewaySession) -> Suspension | None:
        login = session.auth_data.login.decode() if session.auth_data else None
        return self.restricted(system, self.senders.sender(system, envelope_sender, login))

    async def handle_RCPT(self, server: GatewaySMTP, session: GatewaySession,
                          envelope: Envelope, address: str, rcpt_options: list[str]) -> str:
        parsed, rejection = check_recipient(
            session.system, address, len(envelope.rcpt_tos), self.limits.max_recipients
        )
        if rejection:
            return server.refuse(rejection, recipient=address)
        assert parsed is not None
        envelope.rcpt_tos.append(str(parsed))
        envelope.rcpt_options.extend(rcpt_options)
        return str(replies.RECIPIENT_OK)

    async def handle_DATA(self, server: GatewaySMTP, session: GatewaySession,
                          envelope: Envelope) -> str:
        data = envelope.original_content
        assert isinstance(data, bytes)
        system = session.system
        assert system is not None  # RCPT took a recipient
        now = self.clock.now()
        queue_id = new_queue_id()
        sender = "" if envelope.mail_from == "<>" else envelope.mail_from or ""
        recipients = list(envelope.rcpt_tos)
        tls = session.ssl is not None
        protocol = ("ESMTP" if session.extended_smtp else "SMTP") + ("S" if tls else "") + (
            "A" if session.authenticated else "")
        header = received_header(
            helo=session.host_name, client_ip=client_ip(session), hostname=self.hostname,
            protocol=protocol, queue_id=queue_id,
            recipient=recipients[0] if len(recipients) == 1 else None, now=now,
        )
        meta = Meta(
            id=queue_id, system=system.id, sender=sender,
            recipients=[Recipient(r) for r in recipients], size=len(data), received_at=now,
            client={"ip": client_ip(session), "helo": session.host_name,
                    "login": session.auth_data.login.decode() if session.auth_data else None},
        )
        message = header + data
        size = len(message) + _ROOM_PER_MESSAGE + _ROOM_PER_RECIPIENT * len(recipients)
        if not self.room_for(size):
            return server.refuse(Rejection.of(replies.INSUFFICIENT_STORAGE, "disk_low"))
        self._incoming += size
        try:
            message = await self._stores.run((meta, message))
        except SpoolError as e:
            log.error("spool write failed for %s: %s", queue_id, e)
            return server.refuse(Rejection.of(replies.STORE_FAILED, "store_failed"))
        finally:
            self._incoming -= size
        log.info("%s: accepted from=<%s> system=%s nrcpt=%d size=%d client=%s", queue_id, sender,
                 system.id, len(recipients), len(message), client_ip(session))
        self.events.emit("accepted", system.id, queue_id=queue_id, recipients=recipients,
                         size=len(message), client=client_ip(session), **meta.whose())
        self.on_queued(meta, message)
        if self.draining:  # the transaction in progress is done: now the session ends
            server.close_after_reply(replies.SHUTTING_DOWN)
        return replies.QUEUED.format(queue_id=queue_id)

    def _signed(self, meta: Meta, message: bytes) -> bytes:
        if self.signer is not None:
            domain = meta.sender.rpartition("@")[2] or None
            message = self.signer.sign(message, domain) + message
        meta.size = len(message)
        return message

    def _sign_and_store(self, batch: list[tuple[Meta, bytes]]) -> list[bytes | Exception]:
        """In a thread: sign and spool the messages of concurrent sessions
        together; each gets its signed bytes, or the error that stopped it."""
        results: list[bytes | Exception] = []
        for meta, message in batch:
            try:
                results.append(self._signed(meta, message))
            except Exception as e:  # noqa: BLE001 - that session answers it
                results.append(e)
        signed = [(meta, r) for (meta, _), r in zip(batch, results, strict=True)
                  if isinstance(r, bytes)]
        errors = iter(self.spool.put_many(signed))
        return [(next(errors) or r) if isinstance(r, bytes) else r for r in results]

    async def verify_login(self, login: bytes, password: bytes) -> System | None:
        found = self.directory.login(login.decode("utf-8", "replace"))
        if found is None:
            return None
        system, stored = found
        ok = await asyncio.get_running_loop().run_in_executor(
            self.executor, hashing.verify_password, password.decode("utf-8", "replace"), stored
        )
        return system if ok else None


def _capture(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
             auth_data: Any) -> AuthResult:
    """aiosmtpd's authenticator is synchronous; it only hands the credentials
    on, and GatewaySMTP checks them off the event loop (scrypt is slow)."""
    return AuthResult(success=True, auth_data=auth_data)


class GatewaySMTP(EdgeSMTP[StrictLineReader]):
    """One client connection: aiosmtpd through the edge (relay/smtp_edge.py),
    plus the limits and the line discipline."""

    session: GatewaySession | None

    def __init__(self, ingress: Ingress):
        self.ingress = ingress
        limits = ingress.limits
        super().__init__(
            ingress, reader_class=StrictLineReader, max_command_length=limits.max_command_length,
            hostname=ingress.hostname, ident="mailgw",
            data_size_limit=limits.max_message_size, timeout=limits.idle_timeout,
            tls_context=ingress.tls_context, auth_require_tls=True, authenticator=_capture,
            auth_exclude_mechanism=["CRAM-MD5"], loop=asyncio.get_running_loop(),
        )
        self.errors = 0
        self._ip = ""
        self._admitted = False
        self._deadline: asyncio.TimerHandle | None = None

    def new_session(self) -> GatewaySession:
        return GatewaySession(self.loop, self.ingress.directory.by_ip(self._ip))

    def refuse(self, rejection: Rejection, owner: System | None = None, **fields: Any) -> str:
        """A refusal: its `rejected` event (the system's: the session's, or
        `owner`), and a 5xx counts towards max_errors, the last of which
        closes the session after its reply."""
        self._record(rejection, owner, **fields)
        if rejection.reply.permanent:
            self.errors += 1
            if self.errors == self.ingress.limits.max_errors:
                self._record(Rejection.of(replies.TOO_MANY_ERRORS, "too_many_errors"))
                self.close_after_reply(replies.TOO_MANY_ERRORS)
        return rejection.text

    def _record(self, rejection: Rejection, owner: System | None = None, **fields: Any) -> None:
        assert self.session is not None
        self.ingress.refused(client_ip(self.session), owner or self.session.system, rejection,
                             **fields)

    def end(self, reply: Reply, reason: str) -> None:
        """End the session with `reply` (a time limit, a stop), told in the log."""
        if self.close_with(reply):
            self.ingress.ended(self._ip, self.session.system if self.session else None, reply,
                               reason)

    def idle(self) -> None:
        self.end(replies.IDLE_TIMEOUT, "idle_timeout")

    # HELO/EHLO are vetted here rather than in handler hooks: aiosmtpd
    # inspects an EHLO hook's signature on every connection, which is costly
    async def _helo_ok(self, hostname: str) -> bool:
        if hostname and not _HELO.match(hostname):
            await self.send(self.refuse(Rejection.of(replies.BAD_HELO, "bad_helo")))
            return False
        return True

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        if await self._helo_ok(hostname):
            await super().smtp_HELO(hostname)

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        if await self._helo_ok(hostname):
            await super().smtp_EHLO(hostname)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str | None) -> None:
        """aiosmtpd's DATA, with the message read whole (see read_message)
        and checked whole (see check_data)."""
        if await self.check_helo_needed():
            return
        assert self.session is not None and self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.send(self.refuse(Rejection.of(replies.NEED_RCPT, "bad_sequence")))
            return
        if arg:
            await self.send(self.refuse(Rejection.of(replies.SYNTAX, "bad_syntax", usage="DATA")))
            return
        await self.send(str(replies.START_DATA))
        data = await self.reader.read_message(self.data_size_limit or sys.maxsize)
        if data is None:
            status = self.refuse(Rejection.of(
                replies.MESSAGE_TOO_LARGE, "message_too_large",
                limit=size(self.data_size_limit or 0)))
        elif (rejection := check_data(data, self.ingress.limits.max_line_length)) is not None:
            status = self.refuse(rejection)
        else:
            self.envelope.content = self.envelope.original_content = unstuff(data)
            status = await self.ingress.handle_DATA(self, self.session, self.envelope)
        self.end_transaction()
        await self.send(status)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, RefusedLine):
            return self.refuse(error.rejection)
        log.exception("internal error in SMTP session", exc_info=error)
        return self.refuse(Rejection.of(replies.INTERNAL_ERROR, "internal_error"))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._admitted:  # the TLS layer after STARTTLS: a new session begins
            super().connection_made(transport)
            return
        peer = transport.get_extra_info("peername")
        self._ip = peer[0] if peer else "?"
        refusal = None
        if self.ingress.draining:
            refusal = (replies.SHUTTING_DOWN, "shutting_down")
        elif not self.ingress.connections.acquire(self._ip):
            refusal = (replies.TOO_MANY_CONNECTIONS, "too_many_connections")
        if refusal is not None:
            reply, reason = refusal
            transport.write(f"{reply}\r\n".encode())  # type: ignore[attr-defined]
            transport.close()
            self.ingress.refused(self._ip, self.ingress.directory.by_ip(self._ip),
                                 Rejection.of(reply, reason))
            return
        self._admitted = True
        self.ingress.sessions.add(self)
        super().connection_made(transport)
        self._deadline = self.loop.call_later(
            self.ingress.limits.session_timeout, self.end, replies.SESSION_TOO_LONG,
            "session_too_long")

    def connection_lost(self, error: Exception | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self.ingress.connections.release(self._ip)
        self.ingress.sessions.discard(self)
        if self._deadline:
            self._deadline.cancel()
        super().connection_lost(error)

    def close_if_idle(self) -> None:
        if self.envelope is None or not self.envelope.mail_from:
            self.end(replies.SHUTTING_DOWN, "shutting_down")

    async def _verified(self, result: AuthResult) -> AuthResult:
        assert self.session is not None
        if not result.success:
            return result
        creds = result.auth_data
        assert isinstance(creds, LoginPassword)
        login = creds.login.decode("utf-8", "replace")
        system = await self.ingress.verify_login(creds.login, creds.password)
        if system is None:
            # a wrong password for a login of a system is that system's to
            # know of (a guessed password: anomaly rules watch the bursts)
            known = self.ingress.directory.login(login)
            text = self.refuse(Rejection.of(replies.AUTH_FAILED, "auth_failed"),
                               known[0] if known else None, login=login)
            return AuthResult(success=False, handled=False, message=text)
        self.session.system = system
        return AuthResult(success=True, auth_data=LoginPassword(creds.login, b""))

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verified(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verified(await super().auth_LOGIN(_, args))
