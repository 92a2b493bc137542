"""The HTTP side of mailgw (aiohttp): the status API for mail admins and
operators, the status page, metrics and the health check.

    GET /v1/systems/{id}/status   JSON; a system's token sees its own system
    GET /v1/systems               JSON; operators: every system, the DNSBL states
    GET /healthz                  open; 200 while mail is accepted, else 503
    GET /metrics                  open; Prometheus
    GET /systems/{id}             the status page (token cookie, or bearer)
    GET /systems                  operators: every system's state, a page
    GET, POST /login; POST /logout

The two /v1/systems endpoints answer a browser (Accept: text/html before
JSON) with a redirect to their page, so that the URL in a 450 reply or an
owner notice opens the page; any other client gets JSON. Pages are in
Kazakh, Russian or English: `?lang=` (kept in a cookie), else the
browser's Accept-Language, else Kazakh.

Authorisation: `Authorization: Bearer <token>` (or the page's cookie). No
token or an unknown one: 401. A system's token asking about another system,
or for the list: 403, whether or not that system exists, so a token cannot
probe for ids. An operator asking about an unknown id: 404.

Every response carries SECURITY_HEADERS and a Content-Security-Policy that
lets nothing load, but the page's own inline styles and sign-in form.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import jinja2
from aiohttp import web

from mailgw import wording
from mailgw.anomaly.rules import Rule
from mailgw.clock import utc_time
from mailgw.config import System
from mailgw.metrics import Metrics
from mailgw.status import StatusService
from mailgw.systems import SystemDirectory
from mailgw.web import chart
from mailgw.web.auth import Principal, Tokens
from mailgw.web.negotiate import language, wants_html

COOKIE = "mailgw_token"
COOKIE_AGE = 8 * 3600
LANG_COOKIE = "mailgw_lang"
DEFAULT_LANG = "kk"  # the state language, when the browser names none of ours
# a page of ours to go back to after signing in; never another site
_NEXT = re.compile(r"^/systems(?:/[a-z0-9][a-z0-9_-]{0,62})?$")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",  # status data must not be kept by proxies
}
# the page needs its inline styles and its sign-in form; nothing else loads anything
PAGE_CSP = ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
            "frame-ancestors 'none'")
OTHER_CSP = "default-src 'none'; frame-ancestors 'none'"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="mailgw"'} if status == 401 else None
    return web.json_response({"error": message}, status=status, headers=headers)


async def _secure(request: web.Request, response: web.StreamResponse) -> None:
    """On every response of the app: ours, errors raised or unexpected, and
    aiohttp's own 404 and 405."""
    response.headers.update(SECURITY_HEADERS)
    response.headers["Content-Security-Policy"] = (
        PAGE_CSP if response.content_type == "text/html" else OTHER_CSP)
    if request.path.startswith("/v1/systems"):
        response.headers["Vary"] = "Accept"  # JSON or a redirect to the page


def _token(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE)


class WebApp:
    def __init__(self, *, status: StatusService, directory: SystemDirectory, tokens: Tokens,
                 metrics: Metrics, healthy: Callable[[], dict[str, Any]],
                 templates: jinja2.Environment, secure_cookie: bool,
                 run_io: Callable[..., Awaitable[Any]], operators: list[str] | None = None):
        """`healthy()`: {"ok": bool, ...details} (blocking); `run_io(fn,
        *args)`: `fn` in the gateway's I/O threads; `operators`: whom mail
        admins ask for a lift."""
        self.status, self.directory, self.tokens = status, directory, tokens
        self.metrics, self.healthy, self.templates = metrics, healthy, templates
        self.secure_cookie, self.run_io = secure_cookie, run_io
        self.operators = operators or []
        self.app = web.Application(client_max_size=16 * 1024)
        self.app.on_response_prepare.append(_secure)
        self.app.add_routes([
            web.get("/v1/systems/{id}/status", self.api_status),
            web.get("/v1/systems", self.api_systems),
            web.get("/healthz", self.healthz),
            web.get("/metrics", self.metrics_page),
            web.get("/", self.root),
            web.get("/login", self.login_form),
            web.post("/login", self.login),
            web.post("/logout", self.logout),
            web.get("/systems", self.overview_page),
            web.get("/systems/{id}", self.page),
        ])

    # the API

    def _who(self, request: web.Request) -> Principal | None:
        return self.tokens.who(_token(request))

    def _system_for(self, request: web.Request) -> System | web.Response:
        """The system asked about, or the refusal to answer."""
        who = self._who(request)
        if who is None:
            return _error(401, "a valid bearer token is needed")
        system_id = request.match_info["id"]
        if not who.can_see(system_id):
            return _error(403, "this token is not for that system")
        system = self.directory.get(system_id)
        if system is None:
            return _error(404, "no such system")  # fixed: what a client sent is not echoed
        return system

    async def api_status(self, request: web.Request) -> web.Response:
        if wants_html(request.headers.get("Accept", "")):  # the link in a 450 or a notice
            raise web.HTTPSeeOther(self._page_of(request.match_info["id"]))
        system = self._system_for(request)
        if isinstance(system, web.Response):
            return system
        return web.json_response(await self.status.status(system))

    async def api_systems(self, request: web.Request) -> web.Response:
        if wants_html(request.headers.get("Accept", "")):
            raise web.HTTPSeeOther("/systems")
        who = self._who(request)
        if who is None:
            return _error(401, "a valid bearer token is needed")
        if who.operator is None:
            return _error(403, "the list of systems is for operators")
        return web.json_response({"systems": await self.status.overview(),
                                  "dnsbl": await self.status.dnsbl()})

    async def healthz(self, request: web.Request) -> web.Response:
        health = await self.run_io(self.healthy)
        return web.json_response(health, status=200 if health["ok"] else 503)

    async def metrics_page(self, request: web.Request) -> web.Response:
        body = await self.run_io(self.metrics.render)
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    # the pages

    @staticmethod
    def _page_of(system_id: str) -> str:
        """The page of a system; an id that cannot be one leads to the list."""
        path = f"/systems/{system_id}"
        return path if _NEXT.match(path) else "/systems"

    @staticmethod
    def _lang(request: web.Request) -> str:
        asked = request.query.get("lang")
        if asked in wording.LANGS:
            return asked
        kept = request.cookies.get(LANG_COOKIE)
        if kept in wording.LANGS:
            return kept
        return language(request.headers.get("Accept-Language", ""), wording.LANGS,
                        DEFAULT_LANG)

    def _html(self, request: web.Request, template: str, status: int = 200,
              **context: Any) -> web.Response:
        lang = self._lang(request)
        switch = {code: str(request.rel_url.update_query(lang=code)) for code in wording.LANGS}
        text = render(self.templates, template, lang, switch, **context)
        response = web.Response(text=text, status=status, content_type="text/html")
        if request.query.get("lang") in wording.LANGS:  # kept for the next pages
            response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, httponly=True,
                                secure=self.secure_cookie, samesite="Lax", path="/")
        return response

    async def root(self, request: web.Request) -> web.Response:
        who = self._who(request)
        if who is None:
            raise web.HTTPSeeOther("/login")
        raise web.HTTPSeeOther(f"/systems/{who.system}" if who.system else "/systems")

    async def login_form(self, request: web.Request) -> web.Response:
        return self._html(request, "login.html.j2", next=request.query.get("next", ""),
                          error=False)

    async def login(self, request: web.Request) -> web.Response:
        try:
            form: Mapping[str, Any] = await request.post()
        except UnicodeDecodeError:  # a form that is not UTF-8 holds no token of ours
            form = {}
        token = str(form.get("token", "")).strip()
        wanted = str(form.get("next", ""))
        who = self.tokens.who(token)
        if who is None:
            return self._html(request, "login.html.j2", status=401, next=wanted, error=True)
        if who.system is not None:
            target = f"/systems/{who.system}"
        elif _NEXT.match(wanted):
            target = wanted
        else:
            target = "/systems"
        response = web.HTTPSeeOther(target)
        response.set_cookie(COOKIE, token, max_age=COOKIE_AGE, httponly=True,
                            secure=self.secure_cookie, samesite="Strict", path="/")
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    async def overview_page(self, request: web.Request) -> web.Response:
        who = self._who(request)
        if who is None:
            raise web.HTTPSeeOther("/login?next=/systems")
        if who.operator is None:  # a system's token: its own page is its list
            raise web.HTTPSeeOther(f"/systems/{who.system}")
        return self._html(request, "systems.html.j2", systems=await self.status.overview(),
                          dnsbl=await self.status.dnsbl())

    async def page(self, request: web.Request) -> web.Response:
        if self._who(request) is None:
            raise web.HTTPSeeOther(f"/login?next={self._page_of(request.match_info['id'])}")
        system = self._system_for(request)
        if isinstance(system, web.Response):
            return self._html(request, "error.html.j2", status=system.status,
                              refused=system.status == 403)
        status = await self.status.status(system)
        start, counts = await self.status.history(system.id)
        return self._html(request, "status.html.j2", **status_context(
            status, start, counts, self._lang(request), self.operators))


LANG_LINKS = {code: f"?lang={code}" for code in wording.LANGS}  # a page's own, in each language


def render(templates: jinja2.Environment, template: str, lang: str,
           switch: Mapping[str, str], **context: Any) -> str:
    """A page in `lang`, its templates' `t(kk, ru, en)` choosing the text;
    `switch`: the page's address in each language."""

    def t(kk: str, ru: str, en: str, **values: Any) -> str:
        """The text in the page's language, `values` filled in."""
        text = {"kk": kk, "ru": ru, "en": en}[lang]
        return text.format(**values) if values else text

    return templates.get_template(template).render(lang=lang, t=t, switch=switch,
                                                   when=utc_time, **context)


def status_context(status: dict[str, Any], start: float, counts: list[float], lang: str,
                   operators: Sequence[str]) -> dict[str, Any]:
    """What a system's page shows: its status (StatusService.status) and its
    messages per 10 minutes over 24 hours from `start` (StatusService.history)."""
    ten_minutes = next((lim["limit"] for lim in status["limits"]
                        if lim["kind"] == "ceiling" and lim["metric"] == "messages"
                        and lim["window"] == 600), None)
    suspension = status["suspension"]
    drawn = chart.build(start, counts, ten_minutes, suspension and suspension["since"])
    return {"s": status, "chart": drawn,
            "limits": [_limit_in_words(row, lang) for row in status["limits"]],
            "held": wording.count("messages", status["held"], lang),
            "total": wording.count("messages", drawn.total, lang),
            "peak": wording.number(drawn.peak, lang),
            "limit": wording.number(ten_minutes or 0, lang), "operators": operators}


def status_page(templates: jinja2.Environment, status: dict[str, Any], start: float,
                counts: list[float], lang: str, operators: Sequence[str] = ()) -> str:
    """A system's page as the gateway renders it (check-config renders it too)."""
    return render(templates, "status.html.j2", lang, LANG_LINKS,
                  **status_context(status, start, counts, lang, operators))


def _limit_in_words(row: Mapping[str, Any], lang: str) -> dict[str, Any]:
    """A row of the limits table (Judge.limits) as the page says it."""
    rule = Rule(row["rule"], row["kind"], row["metric"], row["window"], row["threshold"],
                row["per"])

    def figure(value: float) -> str:
        return (wording.percent(value, lang) if row["kind"] == "ratio"
                else wording.amount(row["metric"], value, lang))

    limit = None if row["limit"] is None else figure(row["limit"])
    if limit is not None and row["kind"] == "ratio" and row["min_sample"]:
        limit += f" ({wording.said(row['per'], lang).name}: ≥ " \
                 f"{wording.number(row['min_sample'], lang)})"
    return {"rule": row["rule"], "what": wording.title(rule, rule.window, lang),
            "window": wording.duration(row["window"], lang), "now": figure(row["current"]),
            "limit": limit,
            "over": row["limit"] is not None and row["current"] > row["limit"]}


async def start(app: WebApp, listen: list[tuple[str, int]],
                ssl_context: Any = None) -> tuple[web.AppRunner, list[tuple[str, int]]]:
    """Serve `app`; the runner (to stop it) and the bound addresses."""
    runner = web.AppRunner(app.app, access_log=None)
    await runner.setup()
    for host, port in listen:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    return runner, [tuple(a[:2]) for a in runner.addresses]
