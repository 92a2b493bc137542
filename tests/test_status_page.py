"""The mail admins' status page in a real headless Chromium: the URL of the
450 reply opens it (through the sign-in form); it is wholly in Kazakh,
Russian or English, as chosen; the chart's labels are inside the chart;
another system's page is refused; an operator signs in to the list of
systems. Screenshots are kept in test-artifacts/ (or $MAILGW_TEST_ARTIFACTS)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from mailgw.hashing import hash_token
from tests.conftest import MFA, REPO
from tests.support.browser import drive
from tests.support.gateway import GatewayThread
from tests.support.mail import FOUR_CROSS, send_as_mfa
from tests.support.process import free_port
from tests.support.waiting import wait_until

TOKEN = "mfa-status-token-0123456789"
OPERATOR = "operator-token-0123456789"
ARTIFACTS = Path(os.environ.get("MAILGW_TEST_ARTIFACTS", REPO / "test-artifacts"))

# the page's own words, without what is data or a name in every language:
# the language switch, the system's name, rule ids and codes
PAGE_TEXT = """(() => {
    const body = document.body.cloneNode(true);
    body.querySelectorAll('nav, h1, .rule, code').forEach(e => e.remove());
    return body.innerText;
})()"""
# what may stand in Latin letters on a Kazakh or Russian page
TECHNICAL = re.compile(r"\S+@\S+|\b\w+_\w+\b|\bmfa\b|\bUTC\b|\bMiB\b|https?://\S+")
KAZAKH_LETTERS = re.compile("[әғқңөұүһі]", re.IGNORECASE)

SIGN_IN = """document.querySelector('input[name=token]').value = {token!r};
             document.querySelector('form').submit()"""


def test_the_450_link_opens_the_page_wholly_in_each_language(make_config):
    http = free_port()
    cfg = make_config(
        anomaly={"rules": FOUR_CROSS}, http={"listen": [f"127.0.0.1:{http}"]},
        gateway={"status_url": f"http://127.0.0.1:{http}/v1/systems/{{system}}/status",
                 "operators": ["noc@gateway.gov.kz"]},
        systems=[{**MFA, "status_token_hash": hash_token(TOKEN)}])
    with GatewayThread(cfg) as gw:
        for n in range(4):
            assert send_as_mfa(gw.port, n)[0] == 250
        wait_until(lambda: gw.gateway.suspensions.suspended("mfa"), what="the suspension")
        code, reply = send_as_mfa(gw.port, 5)
        assert code == 450
        url = reply.split("Status: ")[1]

        async def look(browser):  # type: ignore[no-untyped-def]
            await browser.open(url)  # as a mail admin clicks it: not signed in yet
            landed = await browser.run("location.pathname + location.search")
            await browser.run(SIGN_IN.format(token=TOKEN), navigates=True)
            pages = {}
            for lang in ("kk", "ru", "en"):
                await browser.run(f"document.querySelector('#langs a[lang={lang}]').click()",
                                  navigates=True)
                pages[lang] = await browser.run(f"""({{
                    path: location.pathname,
                    lang: document.documentElement.lang,
                    state: document.getElementById('state').innerText,
                    text: {PAGE_TEXT},
                    limits: [...document.querySelectorAll('#limits td')].map(c => c.innerText),
                    legend: document.getElementById('legend').innerText,
                    chart: (r => [r.width, r.height])(
                        document.getElementById('chart').getBoundingClientRect()),
                    bars: [...document.querySelectorAll('#chart rect')].map(
                        b => b.getBoundingClientRect().height),
                    svgTexts: [...document.querySelectorAll('#chart text')].map(t => {{
                        const b = t.getBBox(); return [t.textContent, b.x, b.x + b.width]; }}),
                    cookieHidden: document.cookie.indexOf('mailgw_token') < 0,
                }})""")
                await browser.screenshot(ARTIFACTS / f"status-page-{lang}.png")
            await browser.open(url.replace("/mfa/", "/other/"))
            refused = await browser.run("document.body.innerText")
            return landed, pages, refused

        landed, pages, refused = drive(look)
    assert landed == "/login?next=/systems/mfa"  # the 450's URL, then the sign-in form
    kk, ru, en = pages["kk"], pages["ru"], pages["en"]
    assert {p["path"] for p in pages.values()} == {"/systems/mfa"}
    assert [p["lang"] for p in (kk, ru, en)] == ["kk", "ru", "en"]
    assert en["state"].startswith("Relaying suspended since ")
    assert ru["state"].startswith("Отправка писем приостановлена с ")
    assert kk["state"].endswith("хаттарды жіберу тоқтатылды")
    assert "4 messages in 10 min, limit 3 (rule messages_10m)" in en["text"]
    assert "4 письма за 10 минут, порог 3 (правило messages_10m)" in ru["text"]
    assert "10 минут ішінде 4 хат, шегі 3 (messages_10m ережесі)" in kk["text"]
    assert "4 messages in 24 hours, at most 4 in 10 minutes" in en["text"]
    # the limits table in words: what is counted and over what window
    assert ru["limits"][:2] == ["письма за 10 минут (messages_10m)", "10 минут"]
    assert kk["limits"][:2] == ["10 минут ішіндегі хаттар (messages_10m)", "10 минут"]
    assert "момент приостановки" in ru["legend"] and "the suspension" in en["legend"]
    # wholly in the language: nothing of the others is left
    assert not re.search("[А-Яа-яЁё]", en["text"]), en["text"]
    for page in (kk, ru):
        assert not re.search("[A-Za-z]{2,}", TECHNICAL.sub("", page["text"])), page["text"]
    assert not KAZAKH_LETTERS.search(ru["text"]) and KAZAKH_LETTERS.search(kk["text"])
    for page in pages.values():
        assert page["chart"][0] > 600 and page["chart"][1] > 200  # drawn, full size
        assert len(page["bars"]) == 1 and page["bars"][0] > 10  # the 4 messages
        # every label inside the chart, the suspension's among them
        assert [t for t, left, right in page["svgTexts"] if left < 0 or right > 720] == []
        assert any(re.search(r"\d\d:\d\d UTC", t) for t, _, _ in page["svgTexts"])
        assert page["cookieHidden"]  # the cookie is HttpOnly
    assert "cannot see this system" in refused
    assert (ARTIFACTS / "status-page-kk.png").stat().st_size > 10_000


def test_an_operator_signs_in_to_the_list_of_systems(make_config):
    cfg = make_config(anomaly={"rules": FOUR_CROSS}, http={"operator_tokens": [
        {"name": "alice", "token_hash": hash_token(OPERATOR)}]})
    with GatewayThread(cfg) as gw:
        for n in range(4):
            send_as_mfa(gw.port, n)
        wait_until(lambda: gw.gateway.suspensions.suspended("mfa"), what="the suspension")

        async def look(browser):  # type: ignore[no-untyped-def]
            await browser.open(gw.http + "/")
            await browser.run(SIGN_IN.format(token=OPERATOR), navigates=True)
            listed = await browser.run("""({
                path: location.pathname,
                rows: [...document.querySelectorAll('#systems tr')].slice(1).map(
                    r => [...r.cells].map(c => c.innerText)),
                link: document.querySelector('#systems a').getAttribute('href'),
            })""")
            await browser.screenshot(ARTIFACTS / "systems-page.png")
            await browser.run("document.querySelector('#systems a').click()", navigates=True)
            return listed, await browser.run("location.pathname")

        listed, followed = drive(look)
    assert listed["path"] == "/systems"
    ((name, state, why),) = listed["rows"]
    assert name == "Ministry of Foreign Affairs (mfa)"
    assert "messages_10m" in why and state  # suspended, with the rule in words
    assert listed["link"] == followed == "/systems/mfa"
