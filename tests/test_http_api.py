"""The HTTP side against a running gateway: every endpoint x every kind of
caller (no token, a bad one, another system's, the system's own, an
operator's), the status a mail admin reads once the system is suspended,
health and metrics."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest

from mailgw.hashing import hash_token
from tests.conftest import MFA
from tests.support.gateway import GatewayThread
from tests.support.mail import FOUR_CROSS, send_as_mfa
from tests.support.waiting import wait_until

TOKENS = {"mfa": "mfa-token-0123456789", "mof": "mof-token-0123456789",
          "operator": "operator-token-0123456789", "bad": "not-a-token-of-ours"}
MOF = {"id": "mof", "name": "Ministry of Finance", "owners": ["postmaster@minfin.gov.kz"],
       "networks": ["127.0.0.2/32"], "sender_domains": ["minfin.gov.kz"],
       "status_token_hash": hash_token(TOKENS["mof"])}


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None  # a redirect is an answer to look at


_opener = urllib.request.build_opener(_NoRedirects)


def get(url: str, token: str | None = None) -> tuple[int, dict | str]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with _opener.open(request, timeout=10) as response:
            status, body, kind = response.status, response.read(), response.headers
    except urllib.error.HTTPError as e:
        status, body, kind = e.code, e.read(), e.headers
    if kind.get_content_type() == "application/json":
        return status, json.loads(body)
    return status, body.decode()


def request(method: str, path: str, *fields: bytes, body: bytes = b"") -> bytes:
    head = [f"{method} {path} HTTP/1.1".encode(), b"Host: gw.test", b"Connection: close",
            *fields, f"Content-Length: {len(body)}".encode()]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def raw(base: str, sent: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send exactly these bytes (urllib and aiohttp's client would encode
    them) and read the whole answer: status, headers by lower-case name, body."""
    url = urlsplit(base)
    assert url.hostname and url.port
    with socket.create_connection((url.hostname, url.port), timeout=10) as s:
        s.sendall(sent)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (x.partition(":") for x in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.fixture
def gw(make_config, dest):
    cfg = make_config(
        delivery={"relayhost": f"[127.0.0.1]:{dest.port}"}, anomaly={"rules": FOUR_CROSS},
        systems=[{**MFA, "status_token_hash": hash_token(TOKENS["mfa"])}, MOF],
        http={"listen": ["127.0.0.1:0"], "operator_tokens": [
            {"name": "alice", "token_hash": hash_token(TOKENS["operator"])}]})
    with GatewayThread(cfg) as gateway:
        yield gateway


# caller -> expected status for: mfa's status, an unknown id's status, the
# list, mfa's page (a browser without a valid token is sent to sign in)
MATRIX = {
    None: (401, 401, 401, 303),
    "bad": (401, 401, 401, 303),
    "mof": (403, 403, 403, 403),  # another system's token; it cannot probe for ids either
    "mfa": (200, 403, 403, 200),
    "operator": (200, 404, 200, 200),
}


@pytest.mark.parametrize("caller", list(MATRIX))
def test_authorisation_matrix(gw, caller):
    token = TOKENS.get(caller) if caller else None
    expected = MATRIX[caller]
    got = tuple(get(gw.http + path, token)[0] for path in
                ("/v1/systems/mfa/status", "/v1/systems/nosuch/status", "/v1/systems",
                 "/systems/mfa"))
    assert got == expected
    # health and metrics are open to every caller
    assert get(gw.http + "/healthz", token)[0] == 200
    assert get(gw.http + "/metrics", token)[0] == 200


def test_errors_are_json_with_a_message(gw):
    status, body = get(gw.http + "/v1/systems/mfa/status")
    assert status == 401 and "token" in body["error"]
    status, body = get(gw.http + "/v1/systems/nosuch/status", TOKENS["operator"])
    assert status == 404 and body == {"error": "no such system"}


@pytest.mark.parametrize("token", [b"\xff\xfe", b"caf\xc3\xa9", b"tok\x80en"],
                         ids=["not-utf8", "utf8-not-ascii", "high-byte-inside"])
@pytest.mark.parametrize("field", [b"Authorization: Bearer ", b"Cookie: mailgw_token="],
                         ids=["authorization", "cookie"])
def test_a_token_that_is_not_ascii_is_a_bad_token_not_an_internal_error(gw, caplog, field, token):
    status, _, body = raw(gw.http, request("GET", "/v1/systems/mfa/status", field + token))
    assert status == 401 and json.loads(body)["error"]
    status, _, body = raw(gw.http, request("GET", "/v1/systems", field + token))
    assert status == 401 and json.loads(body)["error"]
    status, headers, _ = raw(gw.http, request("GET", "/systems/mfa", field + token))
    assert (status, headers["location"]) == (303, "/login?next=/systems/mfa")
    assert "Traceback" not in caplog.text and "Error handling request" not in caplog.text


def test_a_login_form_that_is_not_utf8_is_a_bad_token_not_an_internal_error(gw, caplog):
    status, _, body = raw(gw.http, request(
        "POST", "/login", b"Content-Type: application/x-www-form-urlencoded",
        b"Accept-Language: en", body=b"token=\xff\xfe"))
    assert status == 401 and b"This token is not valid." in body
    assert "Traceback" not in caplog.text and "Error handling request" not in caplog.text


PAGE_CSP = ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
            "frame-ancestors 'none'")


@pytest.mark.parametrize("method,path,caller,status,csp", [
    ("GET", "/v1/systems/mfa/status", "operator", 200, None),
    ("GET", "/v1/systems", None, 401, None),
    ("GET", "/v1/systems/nosuch/status", "operator", 404, None),
    ("GET", "/v1/systems/mfa/status", "mof", 403, None),
    ("GET", "/systems/mfa", None, 303, None),  # to the sign-in page
    ("POST", "/logout", None, 303, None),
    ("GET", "/metrics", None, 200, None),
    ("GET", "/healthz", None, 200, None),
    ("GET", "/login", None, 200, PAGE_CSP),
    ("GET", "/systems/mfa", "mfa", 200, PAGE_CSP),
    ("GET", "/systems/nosuch", "operator", 404, PAGE_CSP),
    ("GET", "/systems", "operator", 200, PAGE_CSP),
    ("GET", "/", "operator", 303, None),
    ("GET", "/no/such/path", None, 404, None),  # aiohttp's own
    ("DELETE", "/healthz", None, 405, None),  # aiohttp's own
], ids=["api", "api-401", "api-404", "api-403", "page-redirect", "logout-redirect", "metrics",
        "healthz", "login-page", "status-page", "error-page", "systems-page", "root-redirect",
        "aiohttp-404", "aiohttp-405"])
def test_every_response_carries_the_security_headers(gw, method, path, caller, status, csp):
    fields = [f"Authorization: Bearer {TOKENS[caller]}".encode()] if caller else []
    got, headers, _ = raw(gw.http, request(method, path, *fields))
    assert got == status
    assert {name: headers.get(name) for name in (
        "x-content-type-options", "referrer-policy", "x-frame-options", "cache-control",
        "content-security-policy")} == {
        "x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
        "x-frame-options": "DENY", "cache-control": "no-store",
        "content-security-policy": csp or "default-src 'none'; frame-ancestors 'none'"}


def test_hash_token_refuses_a_token_that_would_never_be_accepted():
    done = subprocess.run([sys.executable, "-m", "mailgw", "hash-token", "--token", "café"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "printable ASCII" in done.stderr, done


def test_a_mail_admin_reads_the_suspension_and_the_counts(gw):
    status, body = get(gw.http + "/v1/systems/mfa/status", TOKENS["mfa"])
    assert body["state"] == "active" and body["suspension"] is None
    for n in range(4):
        assert send_as_mfa(gw.port, n)[0] == 250
    wait_until(lambda: get(gw.http + "/v1/systems/mfa/status", TOKENS["mfa"])[1]["state"]
               == "suspended", what="the suspension on the status endpoint")
    status, body = get(gw.http + "/v1/systems/mfa/status", TOKENS["mfa"])
    sus = body["suspension"]
    assert (sus["rule"], sus["observed"], sus["threshold"], sus["window"], sus["by"]) == (
        "messages_10m", 4, 3, 600, "auto")
    assert "messages_10m" in sus["why"]["ru"] and "10 min" in sus["why"]["en"]
    assert body["windows"] == {"messages/600s": 4}
    (limit,) = body["limits"]
    assert (limit["rule"], limit["current"], limit["limit"]) == ("messages_10m", 4, 3)
    assert isinstance(body["held"], int)
    _, listing = get(gw.http + "/v1/systems", TOKENS["operator"])
    states = {s["system"]: s["state"] for s in listing["systems"]}
    assert states == {"mfa": "suspended", "mof": "active"}


def test_metrics_count_what_happened(gw):
    for n in range(4):
        send_as_mfa(gw.port, n)
    wait_until(lambda: "mfa" in gw.gateway.suspensions.in_force())
    _, text = get(gw.http + "/metrics")
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines()
                 if line and not line.startswith("#"))
    assert float(lines['mailgw_messages_accepted_total{origin="system"}']) == 4
    assert float(lines["mailgw_suspensions_active"]) == 1
    assert float(lines["mailgw_suspension_delay_seconds_count"]) == 1
    assert 'mailgw_queue_messages{state="queued"}' in lines
    send_as_mfa(gw.port, 9)  # refused: suspended
    _, text = get(gw.http + "/metrics")
    assert 'mailgw_rejections_total{reason="suspended"} 1.0' in text


def test_health_turns_503_when_the_spool_is_short_of_disk(make_config):
    cfg = make_config(limits={"min_free_disk": "1000000G"})
    with GatewayThread(cfg) as gateway:
        status, body = get(gateway.http + "/healthz")
    assert status == 503 and body["ok"] is False and body["state_store"] == "ok"


BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"


@pytest.mark.parametrize("accept,expected", [
    (BROWSER, (303, "/systems/mfa")),  # the link of a 450 or a notice, opened in a browser
    ("text/html", (303, "/systems/mfa")),
    ("*/*", (200, None)),  # curl
    ("application/json", (200, None)),
    ("application/json, text/html;q=0.5", (200, None)),
    ("", (200, None)),
])
def test_the_status_url_answers_a_browser_with_the_page_and_a_client_with_json(
        gw, accept, expected):
    fields = [f"Authorization: Bearer {TOKENS['mfa']}".encode()]
    if accept:
        fields.append(f"Accept: {accept}".encode())
    status, headers, body = raw(gw.http, request("GET", "/v1/systems/mfa/status", *fields))
    assert (status, headers.get("location")) == expected
    assert headers["vary"] == "Accept"  # a cache keeps the two apart
    if status == 200:
        assert json.loads(body)["system"] == "mfa"


def test_a_browser_without_a_token_follows_the_link_to_the_sign_in_and_back(gw):
    status, headers, _ = raw(gw.http, request("GET", "/v1/systems/mfa/status",
                                              f"Accept: {BROWSER}".encode()))
    assert (status, headers["location"]) == (303, "/systems/mfa")
    status, headers, _ = raw(gw.http, request("GET", "/systems/mfa"))
    assert (status, headers["location"]) == (303, "/login?next=/systems/mfa")
    # an id that is not one of ours never makes a redirect of its own
    status, headers, _ = raw(gw.http, request("GET", "/v1/systems/%2F%2Fevil.example/status",
                                              f"Accept: {BROWSER}".encode()))
    assert (status, headers["location"]) == (303, "/systems")
    status, headers, _ = raw(gw.http, request("GET", "/v1/systems", f"Accept: {BROWSER}".encode()))
    assert (status, headers["location"]) == (303, "/systems")


def login(gw, token: str, next_page: str = "") -> tuple[int, str]:
    body = f"token={token}&next={next_page}".encode()
    status, headers, _ = raw(gw.http, request(
        "POST", "/login", b"Content-Type: application/x-www-form-urlencoded", body=body))
    return status, headers.get("location", "")


def test_after_sign_in_an_operator_lands_on_the_list_and_a_mail_admin_on_the_page(gw):
    assert login(gw, TOKENS["operator"]) == (303, "/systems")
    assert login(gw, TOKENS["operator"], "/systems/mof") == (303, "/systems/mof")
    assert login(gw, TOKENS["operator"], "https://evil.example/") == (303, "/systems")
    assert login(gw, TOKENS["mfa"], "/systems/mof") == (303, "/systems/mfa")
    status, headers, body = raw(gw.http, request(
        "GET", "/systems", f"Authorization: Bearer {TOKENS['operator']}".encode()))
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'href="/systems/mfa"' in body and b'href="/systems/mof"' in body
    status, headers, _ = raw(gw.http, request(
        "GET", "/systems", f"Authorization: Bearer {TOKENS['mfa']}".encode()))
    assert (status, headers["location"]) == (303, "/systems/mfa")
    assert raw(gw.http, request("GET", "/systems"))[1]["location"] == "/login?next=/systems"


@pytest.mark.parametrize("fields,expected", [
    ([], "kk"),
    ([b"Accept-Language: ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7"], "ru"),
    ([b"Accept-Language: de-DE,de;q=0.9,en;q=0.5"], "en"),
    ([b"Accept-Language: ru", b"Cookie: mailgw_lang=en"], "en"),  # chosen before
], ids=["default", "browser-ru", "browser-de-en", "chosen"])
def test_pages_are_in_the_language_asked_for(gw, fields, expected):
    _, _, body = raw(gw.http, request("GET", "/login", *fields))
    assert f'<html lang="{expected}">'.encode() in body


def test_choosing_a_language_is_kept_for_the_next_pages(gw):
    _, headers, body = raw(gw.http, request("GET", "/login?lang=ru&next=/systems/mfa",
                                            b"Accept-Language: en"))
    assert b'<html lang="ru">' in body and "mailgw_lang=ru" in headers["set-cookie"]
    # the switch keeps the page's other parameters
    assert b'href="/login?lang=kk&amp;next=/systems/mfa"' in body
