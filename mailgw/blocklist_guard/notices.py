"""Owner notices: a suspension and its lift told to the system's owners
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

log = logging.getLogger("mailgw.notices")

_WHY = {
    "kk": "{rule} ережесі: {window} ішінде {observed} (шегі {threshold})",
    "ru": "правило {rule}: {observed} за {window} (порог {threshold})",
    "en": "rule {rule}: {observed} in {window} (threshold {threshold})",
}
_MANUAL = {"kk": "оператор шешімі: {reason}", "ru": "решение оператора: {reason}",
           "en": "operator decision: {reason}"}


def _window(seconds: float | None) -> str:
    if not seconds:
        return ""
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"


def explain(record: Suspension) -> dict[str, str]:
    """Why the system is suspended, in a sentence per language (kk, ru, en)."""
    values = {"rule": record.rule, "observed": f"{record.observed:g}" if record.observed
              is not None else "", "threshold": f"{record.threshold:g}" if record.threshold
              is not None else "", "window": _window(record.window),
              "reason": record.reason or ""}
    table = _WHY if record.rule else _MANUAL
    return {lang: text.format(**values) for lang, text in table.items()}


class Post(Protocol):
    """Where notices and alerts go: the outbox (relay/outbox.py); in
    `check-config`, nowhere (templating.py)."""

    def post(self, *, origin: Origin, system: str | None, sender: str,
             recipients: list[str], data: bytes) -> object: ...


class Notifier:
    def __init__(self, *, templates: jinja2.Environment, outbox: Post, hostname: str,
                 sender: str, operators: list[str], status_url: str):
        self.templates, self.outbox, self.hostname = templates, outbox, hostname
        self.sender, self.operators, self.status_url = sender, operators, status_url

    def _render(self, kind: str, context: dict[str, Any]) -> tuple[str, str, str]:
        def render(part: str) -> str:
            return self.templates.get_template(f"notice_{kind}.{part}.j2").render(**context)

        return " ".join(render("subject").split()), render("txt"), render("html")

    def _context(self, system: System, record: Suspension) -> dict[str, Any]:
        return {
            "system": system, "since": utc_time(record.since), "rule": record.rule,
            "observed": record.observed, "threshold": record.threshold,
            "window": _window(record.window),
            **{f"why_{lang}": text for lang, text in explain(record).items()},
            "top_domains": record.evidence.get("top_domains", []),
            "status_url": self.status_url.format(system=system.id),
            "operators": self.operators or [self.sender],
        }

    def build(self, kind: str, system: System, record: Suspension, held: int = 0,
              now: float | None = None) -> bytes:
        """The notice as bytes (CRLF), `kind` "suspended" or "lifted"."""
        context = self._context(system, record) | {
            "held": held, "lifted_at": utc_time(record.lifted_at),
            "lifted_by": record.lifted_by or "", "reason": record.lift_reason or record.reason
            or ""}
        subject, text, html = self._render(kind, context)
        msg = EmailMessage(policy=SMTP)
        msg["From"] = f"ЭПБШ mail gateway <{self.sender}>"
        msg["To"] = ", ".join(system.owners)
        if self.operators:
            msg["Cc"] = ", ".join(self.operators)
        msg["Subject"] = subject
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
        msg["Subject"] = " ".join(render(f"alert_{kind}.subject.j2").render(**context).split())
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
                 held: Callable[[str], Awaitable[int]],
                 run_io: Callable[..., Awaitable[object]]):
        """`held(system)`: its mail waiting at the gateway, named in the notice."""
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
                                      await self.held(system.id))
                except Exception as e:  # the spool's disk, a broken template
                    self._spooling.failed(e, "they wait and are tried again")
                    await self.store("give back a notice", store.unclaim_notice, record.id,
                                     kind)
                    continue
            except Unavailable:
                return
            self._spooling.ok()
