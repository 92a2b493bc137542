"""The mail admins' status page in a real headless Chromium: sign in with the
system's token through the form, see the state in plain words and the chart
of the last 24 hours against the limit; another system's page is refused.
The screenshot is kept in test-artifacts/ (or $MAILGW_TEST_ARTIFACTS)."""

from __future__ import annotations

import os
from pathlib import Path

from mailgw.hashing import hash_token
from tests.conftest import MFA, REPO
from tests.support.browser import drive
from tests.support.gateway import GatewayThread
from tests.support.mail import FOUR_CROSS, send_as_mfa
from tests.support.waiting import wait_until

TOKEN = "mfa-status-token-0123456789"
ARTIFACTS = Path(os.environ.get("MAILGW_TEST_ARTIFACTS", REPO / "test-artifacts"))


def test_status_page_shows_the_suspension_and_the_chart(make_config, dest):
    cfg = make_config(
        delivery={"relayhost": f"[127.0.0.1]:{dest.port}"}, anomaly={"rules": FOUR_CROSS},
        systems=[{**MFA, "status_token_hash": hash_token(TOKEN)}])
    with GatewayThread(cfg) as gw:
        for n in range(4):
            assert send_as_mfa(gw.port, n)[0] == 250
        wait_until(lambda: gw.gateway.suspensions.suspended("mfa"), what="the suspension")

        async def look(browser):  # type: ignore[no-untyped-def]
            await browser.open(gw.http + "/systems/mfa")  # not signed in: the form
            assert await browser.run("location.pathname") == "/login"
            await browser.run(f"""document.querySelector('input[name=token]').value =
                                  {TOKEN!r}; document.querySelector('form').submit()""",
                              navigates=True)
            page = await browser.run("""({
                path: location.pathname,
                state: document.getElementById('state').innerText,
                text: document.body.innerText,
                chart: (r => [r.width, r.height])(
                    document.getElementById('chart').getBoundingClientRect()),
                bars: [...document.querySelectorAll('#chart rect')].map(
                    b => b.getBoundingClientRect().height),
                limit: !!document.querySelector('#chart line[stroke-dasharray]'),
                cookieHidden: document.cookie.indexOf('mailgw_token') < 0,
            })""")
            await browser.screenshot(ARTIFACTS / "status-page.png")
            await browser.open(gw.http + "/systems/other")
            refused = await browser.run("document.body.innerText")
            return page, refused

        page, refused = drive(look)
    assert page["path"] == "/systems/mfa"
    assert page["state"].startswith("Suspended since") and "Отправка приостановлена" in \
        page["state"]
    assert "4 messages in 10 min, limit 3 (rule messages_10m)" in page["text"]
    assert "4 messages in 24 hours" in page["text"]
    assert page["chart"][0] > 600 and page["chart"][1] > 200  # drawn, full size
    assert len(page["bars"]) == 1 and page["bars"][0] > 10  # the 4 messages, above the limit
    assert page["limit"] and page["cookieHidden"]  # the cookie is HttpOnly
    assert "cannot see this system" in refused
    assert (ARTIFACTS / "status-page.png").stat().st_size > 10_000
