"""Sending one message as a connected system would, and the small rule most
suspension tests use."""

from __future__ import annotations

import smtplib

# "more than 3 messages in 10 minutes": the 4th message crosses it
FOUR_CROSS = [{"name": "messages_10m", "kind": "ceiling", "metric": "messages",
               "window": "10m", "threshold": 3}]


def send_as_mfa(port: int, n: int) -> tuple[int, str]:
    """(code, text) of the MAIL reply if it was refused, else of the DATA reply."""
    return send(port, n, "a@mfa.gov.kz")


def send(port: int, n: int, sender: str, source: str = "127.0.0.1") -> tuple[int, str]:
    """As `send_as_mfa`, from `sender` connecting from the address `source`
    (another 127.x address is another system's network)."""
    with smtplib.SMTP("127.0.0.1", port, source_address=(source, 0)) as c:
        c.ehlo("mail." + sender.partition("@")[2])
        code, text = c.mail(sender)
        if code != 250:
            return code, text.decode()
        c.rcpt(f"u{n}@example.com")
        code, text = c.data(f"Subject: {n}\r\n\r\nbody\r\n".encode())
        return code, text.decode()
