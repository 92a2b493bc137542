"""DSNs as a mail client and a DSN parser would read them."""

from __future__ import annotations

import email
import email.policy

import jinja2
import pytest

from mailgw import templating
from mailgw.relay.dsn import build_dsn, should_notify
from mailgw.relay.spool import Meta, Recipient

ORIGINAL = (
    b"Received: from mail.mfa.gov.kz ([127.0.0.1])\r\n\tby gw.test (mailgw) with ESMTP id Q1;\r\n"
    b"\tMon, 25 Nov 2024 00:00:00 +0000\r\n"
    b"From: clerk@mfa.gov.kz\r\nTo: a@example.com, b@example.com\r\nSubject: report\r\n"
    b"Message-ID: <orig@mfa.gov.kz>\r\n\r\nSECRET BODY TEXT\r\n"
)


@pytest.fixture
def templates() -> jinja2.Environment:
    return templating.environment(None)  # the templates the package carries


def meta(sender="clerk@mfa.gov.kz", origin="system") -> Meta:
    return Meta(id="Q1", system="mfa", sender=sender, size=len(ORIGINAL), received_at=1732406400.0,
                origin=origin, recipients=[
                    Recipient("a@example.com", "delivered", 250, "250 2.0.0 Ok", "mx.example.com"),
                    Recipient("b@example.com", "bounced", 550,
                              "550 5.1.1 <b@example.com>: Recipient address rejected: no such user",
                              "mx.example.com"),
                    Recipient("c@example.org", "bounced", 554, "554 transaction failed", None),
                ])


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def test_dsn_is_a_well_formed_multipart_report_about_the_failed_recipients_only(templates):
    m = meta()
    failed = [r for r in m.recipients if r.state == "bounced"]
    raw = build_dsn(m, ORIGINAL, failed, reporting_mta="gw.test", now=1732410000.0,
                    templates=templates)
    dsn = parse(raw)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["To"] == "clerk@mfa.gov.kz" and "MAILER-DAEMON@gw.test" in dsn["From"]
    assert dsn["Auto-Submitted"] == "auto-replied"
    human, status, headers = dsn.get_payload()
    assert [p.get_content_type() for p in (human, status, headers)] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    text = human.get_content()
    assert "b@example.com" in text and "no such user" in text and "a@example.com" not in text
    assert "Ваше сообщение не доставлено" in text and "жеткізілмеді" in text
    blocks = status.get_payload()  # per-message block, then one per recipient
    assert blocks[0]["Reporting-MTA"] == "dns; gw.test"
    assert [b["Final-Recipient"] for b in blocks[1:]] == ["rfc822; b@example.com",
                                                         "rfc822; c@example.org"]
    assert [b["Status"] for b in blocks[1:]] == ["5.1.1", "5.0.0"]
    assert all(b["Action"] == "failed" for b in blocks[1:])
    assert blocks[1]["Remote-MTA"] == "dns; mx.example.com"
    assert blocks[1]["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
    assert b"Subject: report" in raw and b"SECRET BODY TEXT" not in raw


def test_every_line_ends_in_crlf_and_fits_rfc5322(templates):
    m = meta()
    m.recipients[1].response = "550 " + "x" * 3000
    raw = build_dsn(m, ORIGINAL, m.recipients[1:], reporting_mta="gw.test", now=1.0,
                    templates=templates)
    assert raw.count(b"\n") == raw.count(b"\r\n") and raw.count(b"\r") == raw.count(b"\r\n")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_expired_mail_reports_4_4_7(templates):
    m = meta()
    raw = build_dsn(m, ORIGINAL, m.recipients[1:2], reporting_mta="gw.test", now=1.0,
                    templates=templates, reason="expired")
    _, status, _ = parse(raw).get_payload()
    assert status.get_payload()[1]["Status"] == "4.4.7"
    assert "within" in parse(raw).get_payload()[0].get_content()


@pytest.mark.parametrize("sender,origin,expected", [
    ("clerk@mfa.gov.kz", "system", True),
    ("", "system", False),         # a bounce never gets a bounce
    ("clerk@mfa.gov.kz", "dsn", False),
    ("clerk@mfa.gov.kz", "notice", False),
])
def test_who_gets_a_dsn(sender, origin, expected):
    assert should_notify(meta(sender, origin)) is expected
