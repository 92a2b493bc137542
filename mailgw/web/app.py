"""The HTTP side of mailgw (aiohttp): the status API for mail admins and
operators, the status page, metrics and the health check.

    GET /v1/systems/{id}/status   JSON; a system's token sees its own system
    GET /v1/systems               JSON; operators: every system, the DNSBL states
    GET /healthz                  open; 200 while mail is accepted, else 503
    GET /metrics                  open; Prometheus
    GET /systems/{id}             the status page (token cookie, or bearer)
    GET, POST /login; POST /logout

Authorisation: `Authorization: Bearer <token>` (or the page's cookie). No
token or an unknown one: 401. A system's token asking about another system,
or for the list: 403, whether or not that system exists, so a token cannot
probe for ids. An operator asking about an unknown id: 404.

Every response carries SECURITY_HEADERS and a Content-Security-Policy that
lets nothing load, but the page's own inline styles and sign-in form.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import jinja2
from aiohttp import web

from mailgw.clock import utc_time
from mailgw.config import System
from mailgw.metrics import Metrics
from mailgw.status import StatusService
from mailgw.systems import SystemDirectory
from mailgw.web import chart
from mailgw.web.auth import Principal, Tokens

COOKIE = "mailgw_token"
COOKIE_AGE = 8 * 3600

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


def _token(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE)


class WebApp:
    def __init__(self, *, status: StatusService, directory: SystemDirectory, tokens: Tokens,
                 metrics: Metrics, healthy: Callable[[], dict[str, Any]],
                 templates: jinja2.Environment, secure_cookie: bool,
                 run_io: Callable[..., Awaitable[Any]]):
        """`healthy()`: {"ok": bool, ...details} (blocking); `run_io(fn,
        *args)`: `fn` in the gateway's I/O threads."""
        self.status, self.directory, self.tokens = status, directory, tokens
        self.metrics, self.healthy, self.templates = metrics, healthy, templates
        self.secure_cookie, self.run_io = secure_cookie, run_io
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
        system = self._system_for(request)
        if isinstance(system, web.Response):
            return system
        return web.json_response(await self.status.status(system))

    async def api_systems(self, request: web.Request) -> web.Response:
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

    # the page

    def _html(self, template: str, status: int = 200, **context: Any) -> web.Response:
        text = self.templates.get_template(template).render(**context)
        return web.Response(text=text, status=status, content_type="text/html")

    async def root(self, request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/login")

    async def login_form(self, request: web.Request) -> web.Response:
        return self._html("login.html.j2", next=request.query.get("next", ""), error=None)

    async def login(self, request: web.Request) -> web.Response:
        try:
            form: Mapping[str, Any] = await request.post()
        except UnicodeDecodeError:  # a form that is not UTF-8 holds no token of ours
            form = {}
        token = str(form.get("token", "")).strip()
        wanted = str(form.get("next", ""))
        who = self.tokens.who(token)
        if who is None:
            return self._html("login.html.j2", status=401, next=wanted,
                              error="This token is not valid.")
        if who.system is not None:
            target = f"/systems/{who.system}"
        elif wanted.startswith("/systems/") and wanted[len("/systems/"):].replace(
                "-", "").replace("_", "").isalnum():
            target = wanted  # only a page of ours, never another site
        else:
            target = "/v1/systems"
        response = web.HTTPSeeOther(target)
        response.set_cookie(COOKIE, token, max_age=COOKIE_AGE, httponly=True,
                            secure=self.secure_cookie, samesite="Strict", path="/")
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    async def page(self, request: web.Request) -> web.Response:
        if self._who(request) is None:
            raise web.HTTPSeeOther(f"/login?next=/systems/{request.match_info['id']}")
        system = self._system_for(request)
        if isinstance(system, web.Response):
            return self._html("error.html.j2", status=system.status,
                              message="You cannot see this system with your token."
                              if system.status == 403 else "There is no such system.")
        text = status_page(self.templates, await self.status.status(system),
                           *await self.status.history(system.id))
        return web.Response(text=text, content_type="text/html")


def status_page(templates: jinja2.Environment, status: dict[str, Any], start: float,
                counts: list[float]) -> str:
    """A system's page: its status (StatusService.status) and its messages
    per 10 minutes over 24 hours from `start` (StatusService.history)."""
    ten_minutes = next((lim["limit"] for lim in status["limits"]
                        if lim["kind"] == "ceiling" and lim["metric"] == "messages"
                        and lim["window"] == 600), None)
    suspension = status["suspension"]
    drawn = chart.build(start, counts, ten_minutes, suspension and suspension["since"])
    return templates.get_template("status.html.j2").render(s=status, chart=drawn, when=utc_time)


async def start(app: WebApp, listen: list[tuple[str, int]],
                ssl_context: Any = None) -> tuple[web.AppRunner, list[tuple[str, int]]]:
    """Serve `app`; the runner (to stop it) and the bound addresses."""
    runner = web.AppRunner(app.app, access_log=None)
    await runner.setup()
    for host, port in listen:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    return runner, [tuple(a[:2]) for a in runner.addresses]
