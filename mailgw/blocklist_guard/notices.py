"""Owner notices: a suspension (a sender's restriction) and its lift told to
the system's owners
(operators in Cc), in Kazakh, Russian and English, plain text and HTML, from
the Jinja2 templates notice_*; and alerts to the operators.

A notice goes out through the outbox (relay/outbox.py, origin "notice"), so
it survives a crash and is retried, and it is never counted as the system's
traffic nor held with the system's mail. Exactly once per suspension and
kind: the dispatcher sends a notice only after winning the store's claim
for it, and gives the claim back if it cannot be spooled, for a later try.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.header import Header
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import Any, Protocol

import jinja2

from mailgw.clock import utc_time
from mailgw.config import System
from mailgw.outage import Outage
from mailgw.relay.queue_file import Origin
from mailgw.state.access import StoreAccess, Unavailable
from mailgw.state.records import Suspension
from mailgw.systems import SystemDirectory
from mailgw.wording import LANGS, RuleShape, count, why

log = logging.getLogger("mailgw.notices")

def _subject(msg: EmailMessage, text: str) -> None:
    """Encoded here, not by the email package: its folding can leave the
    space between two words outside the encoded words, where every reader
    drops it (RFC 2047 6.2); Header keeps each space inside one. Plain
    ASCII needs no encoded words."""
    if text.isascii():
        msg["Subject"] = text
        return
    msg.set_raw("Subject", Header(text, "utf-8", header_name="Subject").encode(linesep="\r\n"))


class Post(Protocol):
    """Where notices and alerts go: the outbox (relay/outbox.py); in
    `check-config`, nowhere (templating.py)."""

    def post(self, *, origin: Origin, system: str | None, sender: str,
             recipients: list[str], data: bytes) -> object: ...


class Notifier:
    def __init__(self, *, templates: jinja2.Environment, outbox: Post, hostname: str,
                 sender: str, operators: list[str], status_url: str,
                 rule: Callable[[str], RuleShape | None] = lambda name: None):
        """`rule(name)`: the rule of that name as configured, for the words
        of a finding."""
        self.templates, self.outbox, self.hostname = templates, outbox, hostname
        self.sender, self.operators, self.status_url = sender, operators, status_url
        self.rule = rule

    def _render(self, kind: str, context: dict[str, Any]) -> tuple[str, str, str]:
        def render(part: str) -> str:
            return self.templates.get_template(f"notice_{kind}.{part}.j2").render(**context)

        return " ".join(render("subject").split()), render("txt"), render("html")

    def _context(self, system: System, record: Suspension) -> dict[str, Any]:
        return {
            "system": system, "sender": record.sender, "since": utc_time(record.since),
            "rule": record.rule,
            **{f"why_{lang}": text for lang, text in
               why(record, self.rule(record.rule) if record.rule else None).items()},
            "top_domains": record.evidence.get("top_domains", []),
            "status_url": self.status_url.format(system=system.id),
            "operators": self.operators or [self.sender],
        }

    def build(self, kind: str, system: System, record: Suspension, held: int = 0,
              now: float | None = None) -> bytes:
        """The notice as bytes (CRLF), `kind` "suspended" or "lifted" (for a
        sender's record: the templates notice_restricted, notice_unrestricted)."""
        context = self._context(system, record) | {
            **{f"held_{lang}": count("messages", held, lang) for lang in LANGS},
            "lifted_at": utc_time(record.lifted_at), "purged": record.purge,
            "grace_until": utc_time(record.grace_until),
            "lifted_by": record.lifted_by or "", "reason": record.lift_reason or record.reason
            or ""}
        subject, text, html = self._render(
            kind if record.sender is None else record.actions[kind == "lifted"], context)
        msg = EmailMessage(policy=SMTP)
        msg["From"] = f"ЭПБШ mail gateway <{self.sender}>"
        msg["To"] = ", ".join(system.owners)
        if self.operators:
            msg["Cc"] = ", ".join(self.operators)
        _subject(msg, subject)
        msg["Date"] = format_datetime(datetime.fromtimestamp(now or time.time(), UTC))
        msg["Message-ID"] = make_msgid(domain=self.hostname)
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(text)
        msg.add_alternative(html, subtype="html")
        return msg.as_bytes()

    def alert(self, kind: str, context: dict[str, Any]) -> None:
        """An alert to the operators (templates alert_KIND.subject.j2 and
        .txt.j2), spooled like a notice. Blocking."""
        context = {"hostname": self.hostname, **context}
        render = self.templates.get_template
        msg = EmailMessage(policy=SMTP)
        msg["From"] = f"mailgw at {self.hostname} <{self.sender}>"
        msg["To"] = ", ".join(self.operators or [self.sender])
        _subject(msg, " ".join(render(f"alert_{kind}.subject.j2").render(**context).split()))
        msg["Date"] = format_datetime(datetime.now(UTC))
        msg["Message-ID"] = make_msgid(domain=self.hostname)
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(render(f"alert_{kind}.txt.j2").render(**context))
        self.outbox.post(origin="notice", system=None, sender=self.sender,
                         recipients=self.operators or [self.sender], data=msg.as_bytes())

    def send(self, kind: str, system: System, record: Suspension, held: int = 0) -> None:
        """Spool the notice durably and hand it to delivery. Blocking (disk):
        run it off the event loop."""
        self.outbox.post(origin="notice", system=system.id, sender=self.sender,
                         recipients=[*system.owners, *self.operators],
                         data=self.build(kind, system, record, held))


class NoticeDispatcher:
    """Sends every notice the store says is due (suspensions and lifts, those
    made while no gateway ran included), each once across every gateway."""

    def __init__(self, *, notifier: Notifier, store: StoreAccess, directory: SystemDirectory,
                 held: Callable[[str, str | None], Awaitable[int]],
                 run_io: Callable[..., Awaitable[object]]):
        """`held(system, sender)`: its mail (that sender's) waiting at the
        gateway, named in the notice."""
        self.notifier, self.store, self.directory = notifier, store, directory
        self.held, self.run_io = held, run_io
        self._spooling = Outage(log, "sending owner notices")

    async def send_due(self) -> None:
        """Claimed before it is spooled: a crash in between loses that one
        notice, where the other order could send two."""
        store = self.store.store
        try:
            due = await self.store("read notices", store.pending_notices)
        except Unavailable:
            return
        for kind, record in due:
            assert record.id is not None
            system = self.directory.get(record.system)
            if system is None:
                continue  # no longer in the config: nobody to tell
            try:
                if not await self.store("claim notice", store.claim_notice, record.id, kind):
                    continue
                try:
                    await self.run_io(self.notifier.send, kind, system, record,
                                      await self.held(system.id, record.sender))
                except Exception as e:  # the spool's disk, a broken template
                    self._spooling.failed(e, "they wait and are tried again")
                    await self.store("give back a notice", store.unclaim_notice, record.id,
                                     kind)
                    continue
            except Unavailable:
                return
            self._spooling.ok()
