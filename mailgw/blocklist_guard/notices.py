"""Owner notices: a suspension and its lift told to the system's owners
(operators in Cc), in Kazakh, Russian and English, plain text and HTML, from
the Jinja2 templates in templates/.

A notice is spooled like any accepted message (origin "notice"), so it
survives a crash and is retried, and it is never counted as the system's
traffic nor held with the system's mail. Exactly once per suspension: the
sender is whoever wins the store's claim for that notice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import Any

import jinja2

from mailgw.config import System
from mailgw.relay.spool import Meta, Recipient, Spool, new_queue_id
from mailgw.state.records import Suspension

_WHY = {
    "kk": "{rule} ережесі: {window} ішінде {observed} (шегі {threshold})",
    "ru": "правило {rule}: {observed} за {window} (порог {threshold})",
    "en": "rule {rule}: {observed} in {window} (threshold {threshold})",
}
_MANUAL = {"kk": "оператор шешімі: {reason}", "ru": "решение оператора: {reason}",
           "en": "operator decision: {reason}"}


def _utc(ts: float | None) -> str:
    return "" if ts is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


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


class Notifier:
    def __init__(self, *, templates: jinja2.Environment, spool: Spool, hostname: str,
                 sender: str, operators: list[str], status_url: str,
                 submit: Callable[[Meta, bytes], object]):
        self.templates, self.spool, self.hostname = templates, spool, hostname
        self.sender, self.operators, self.status_url = sender, operators, status_url
        self.submit = submit

    def _render(self, kind: str, context: dict[str, Any]) -> tuple[str, str, str]:
        def render(part: str) -> str:
            return self.templates.get_template(f"notice_{kind}.{part}.j2").render(**context)

        return " ".join(render("subject").split()), render("txt"), render("html")

    def _context(self, system: System, record: Suspension) -> dict[str, Any]:
        return {
            "system": system, "since": _utc(record.since), "rule": record.rule,
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
            "held": held, "lifted_at": _utc(record.lifted_at),
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
        self._spool(None, self.operators or [self.sender], msg.as_bytes())

    def _spool(self, system: str | None, recipients: list[str], data: bytes) -> None:
        meta = Meta(id=new_queue_id(), system=system, sender=self.sender,
                    recipients=[Recipient(a) for a in recipients],
                    size=len(data), received_at=time.time(), origin="notice")
        self.spool.put(meta, data)
        self.submit(meta, data)

    def send(self, kind: str, system: System, record: Suspension, held: int = 0) -> None:
        """Spool the notice durably and hand it to delivery. Blocking (disk);
        the caller runs it off the event loop and passes a thread-safe submit."""
        self._spool(system.id, [*system.owners, *self.operators],
                    self.build(kind, system, record, held))
