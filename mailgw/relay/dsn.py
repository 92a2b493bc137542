"""Delivery status notifications (RFC 3464, in an RFC 6522 multipart/report).

Guarantees:
- `should_notify` is false for the null sender (the message is a bounce
  itself) and for anything the gateway made (DSNs, notices): no DSN loops;
- the DSN has three parts: a human explanation from the template `dsn.txt.j2`,
  the machine-readable message/delivery-status, and the original's header
  section only (never its body: that is the sender's own and may be large);
- CRLF line endings throughout, ready to spool and send from <>.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid

import jinja2

from mailgw.clock import Clock
from mailgw.relay.headers import header_section
from mailgw.relay.spool import Meta, Recipient

_ENHANCED = re.compile(r"^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b")


def should_notify(meta: Meta) -> bool:
    return meta.sender != "" and meta.origin == "system"


def _status(r: Recipient, reason: str) -> str:
    if reason == "expired":
        return "4.4.7"
    m = _ENHANCED.match(r.response or "")
    if m:
        return m.group(1)
    return "5.0.0" if (r.code or 0) >= 500 else "4.0.0"


def _rfc5322_date(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, UTC))


def _one_line(reply: str | None) -> str:
    """Remote replies may be multi-line and long; a DSN line must stay under 998."""
    return " ".join((reply or "").split())[:900]


def _crlf(text: str) -> str:
    return "\r\n".join(text.splitlines()) + "\r\n"


def build_dsn(
    meta: Meta, original: bytes, failed: list[Recipient], *, reporting_mta: str, now: float,
    templates: jinja2.Environment, reason: str = "failed", lifetime: str = "5 days",
) -> bytes:
    boundary = f"=_mailgw_{secrets.token_hex(12)}"
    human = templates.get_template("dsn.txt.j2").render(
        reporting_mta=reporting_mta, reason=reason, queue_id=meta.id, lifetime=lifetime,
        failed=[{"address": r.address, "response": _one_line(r.response)} for r in failed],
    )
    per_message = (
        f"Reporting-MTA: dns; {reporting_mta}\r\n"
        f"X-Mailgw-Queue-ID: {meta.id}\r\n"
        f"Arrival-Date: {_rfc5322_date(meta.received_at)}\r\n"
    )
    per_recipient = []
    for r in failed:
        block = (
            f"Final-Recipient: rfc822; {r.address}\r\n"
            f"Action: failed\r\n"
            f"Status: {_status(r, reason)}\r\n"
        )
        if r.remote:
            block += f"Remote-MTA: dns; {r.remote}\r\n"
        if r.code and r.response:
            block += f"Diagnostic-Code: smtp; {_one_line(r.response)}\r\n"
        block += f"Last-Attempt-Date: {_rfc5322_date(now)}\r\n"
        per_recipient.append(block)
    status = per_message + "".join("\r\n" + b for b in per_recipient)
    head = (
        f'From: "Mail Delivery System" <MAILER-DAEMON@{reporting_mta}>\r\n'
        f"To: <{meta.sender}>\r\n"
        f"Subject: Undelivered Mail Returned to Sender\r\n"
        f"Date: {_rfc5322_date(now)}\r\n"
        f"Message-ID: {make_msgid(domain=reporting_mta)}\r\n"
        f"Auto-Submitted: auto-replied\r\n"
        f"MIME-Version: 1.0\r\n"
        f"Content-Type: multipart/report; report-type=delivery-status;\r\n"
        f'\tboundary="{boundary}"\r\n'
        f"\r\n"
        f"This is a MIME-encapsulated message.\r\n"
        f"\r\n--{boundary}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: 8bit\r\n"
        f"Content-Description: Notification\r\n\r\n"
        f"{_crlf(human)}"
        f"\r\n--{boundary}\r\n"
        f"Content-Type: message/delivery-status\r\n"
        f"Content-Description: Delivery report\r\n\r\n"
        f"{status}"
        f"\r\n--{boundary}\r\n"
        f"Content-Type: text/rfc822-headers\r\n"
        f"Content-Description: Undelivered message headers\r\n\r\n"
    ).encode()
    # the original's header bytes go in as they came (RFC 6532 allows 8-bit
    # headers; re-encoding them could only lose information)
    return head + header_section(original) + f"\r\n--{boundary}--\r\n".encode()


class Bouncer:
    """The DSN due for a message's failed recipients, or None when none is
    (`should_notify`): what delivery calls when recipients bounce or expire."""

    def __init__(self, *, templates: jinja2.Environment, reporting_mta: str, clock: Clock):
        self.templates, self.reporting_mta, self.clock = templates, reporting_mta, clock

    def __call__(self, meta: Meta, original: bytes, failed: list[Recipient],
                 reason: str) -> bytes | None:
        if not should_notify(meta):
            return None
        return build_dsn(meta, original, failed, reporting_mta=self.reporting_mta,
                         now=self.clock.now(), templates=self.templates, reason=reason)
