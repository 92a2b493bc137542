"""Retry schedule and the Received header: small pure functions, as tables."""

from __future__ import annotations

import random

import pytest

from mailgw.config import Delivery
from mailgw.relay.delivery import retry_delay
from mailgw.relay.received import received_header


@pytest.mark.parametrize("attempts,base", [
    (1, 300), (2, 600), (3, 1200), (4, 2400), (5, 3600), (9, 3600), (40, 3600),
])
def test_backoff_doubles_from_first_retry_up_to_the_cap_with_jitter(attempts, base):
    config = Delivery()  # Postfix-like defaults: 5 min, capped at 1 h, jitter 20%
    rng = random.Random(attempts)
    delays = [retry_delay(attempts, config, rng) for _ in range(200)]
    assert all(base * 0.8 <= d <= base * 1.2 for d in delays)
    assert max(delays) - min(delays) > base * 0.2  # jitter spreads retries out


def test_no_jitter_gives_the_exact_schedule():
    config = Delivery(first_retry=60, max_retry_interval=600, retry_jitter=0)
    assert [retry_delay(n, config, random.Random()) for n in range(1, 7)] == [
        60, 120, 240, 480, 600, 600]


@pytest.mark.parametrize("helo,shown", [
    ("mail.mfa.gov.kz", "mail.mfa.gov.kz"),
    ("[192.0.2.1]", "[192.0.2.1]"),
    ("evil\r\nX-Injected: 1", "unknown"),
    ("a (comment) b", "unknown"),
    (None, "unknown"),
])
def test_received_header_shows_only_a_sanitised_helo(helo, shown):
    header = received_header(helo=helo, client_ip="192.0.2.7", hostname="gw.test",
                             protocol="ESMTPS", queue_id="Q1", recipient=None, now=0)
    assert header.startswith(f"Received: from {shown} ([192.0.2.7])\r\n".encode())
    assert header.count(b"\r\n") == 3 and b"X-Injected" not in header
    assert header.endswith(b"Thu, 01 Jan 1970 00:00:00 +0000\r\n")
