"""Sending one message as a connected system would, and the small rule most
suspension tests use."""

from __future__ import annotations

import smtplib

# "more than 3 messages in 10 minutes": the 4th message crosses it
FOUR_CROSS = [{"name": "messages_10m", "kind": "ceiling", "metric": "messages",
               "window": "10m", "threshold": 3}]


def send_as_mfa(port: int, n: int) -> tuple[int, str]:
    """(code, text) of the MAIL reply if it was refused, else of the DATA reply."""
    with smtplib.SMTP("127.0.0.1", port) as c:
        c.ehlo("mail.mfa.gov.kz")
        code, text = c.mail("a@mfa.gov.kz")
        if code != 250:
            return code, text.decode()
        c.rcpt(f"u{n}@example.com")
        code, text = c.data(f"Subject: {n}\r\n\r\nbody\r\n".encode())
        return code, text.decode()
