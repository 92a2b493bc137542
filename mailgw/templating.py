"""The Jinja2 templates of DSNs, owner notices, operators' alerts and the
status page, and their check.

Guarantees:
- every template the gateway uses ships inside the package (mailgw/templates/),
  read through importlib.resources, so an installed wheel works wherever it
  is started, with no templates/ directory beside the config;
- an operator replaces a single template by putting a file of the same name
  in `gateway.templates_dir`: that directory is looked in first, the
  package's templates serve the rest.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from jinja2.loaders import split_template_path

from mailgw.anomaly.judge import Judge, engines
from mailgw.anomaly.rules import Decision
from mailgw.blocklist_guard.notices import Notifier
from mailgw.blocklist_guard.watch import alert_context
from mailgw.clock import SystemClock, utc_time
from mailgw.config import Config, System
from mailgw.relay.dsn import build_dsn
from mailgw.relay.queue_file import Meta, Recipient
from mailgw.state.records import Suspension
from mailgw.status import StatusService
from mailgw.systems import SystemDirectory
from mailgw.web.app import LANG_LINKS, render, status_page
from mailgw.wording import LANGS


class _Packaged(jinja2.BaseLoader):
    """The templates inside the package, found wherever it is installed."""

    def __init__(self) -> None:
        self.root = resources.files("mailgw") / "templates"

    def get_source(self, environment: jinja2.Environment,
                   template: str) -> tuple[str, str | None, Callable[[], bool] | None]:
        path = self.root.joinpath(*split_template_path(template))
        try:
            source = path.read_text(encoding="utf-8")
        except OSError:
            raise jinja2.TemplateNotFound(template) from None
        # installed files do not change under a running gateway
        return source, str(path), lambda: True


def environment(override: Path | None) -> jinja2.Environment:
    """The templates: the operator's own directory first (if configured),
    then the package's."""
    mine: list[jinja2.BaseLoader] = [] if override is None else [jinja2.FileSystemLoader(override)]
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader([*mine, _Packaged()]),
        autoescape=lambda name: bool(name and name.endswith(".html.j2")),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


class _Dropped:
    """The outbox of the check: what would be sent is rendered, then dropped."""

    def post(self, **message: object) -> None:
        pass


def _fault(error: Exception) -> str | None:
    """The template (and line) at fault, and what is wrong, if a template is
    at fault: Jinja2 puts the frames of the template it renders into the
    traceback."""
    if isinstance(error, jinja2.TemplateNotFound):
        return f"template {error.name}: not found"
    if isinstance(error, jinja2.TemplateSyntaxError):
        return f"template {error.name}, line {error.lineno}: {error.message}"
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename.endswith(".j2")]
    if not frames:
        return None
    return f"template {Path(frames[-1].filename).name}, line {frames[-1].lineno}: {error}"


async def problems(templates: jinja2.Environment, cfg: Config) -> list[str]:
    """Every template rendered once on a representative case (a suspension
    and its lift, DSNs, an alert, the pages) by the code that renders it in
    the gateway, so each is given what it will be given: what is missing or
    broken, a line each."""
    found = []
    override = cfg.gateway.templates_dir
    if override is not None and not override.is_dir():
        found.append(f"gateway.templates_dir: {override}: no such directory")
    now = time.time()
    system = System.model_validate({
        "id": "example", "name": "Example agency mail server", "networks": ["192.0.2.0/24"],
        "owners": ["postmaster@example.gov.kz"], "sender_domains": ["example.gov.kz"]})
    suspended = Suspension(system.id, now - 1800, "auto", "messages_10m", 1200.0, 1000.0, 600.0,
                           evidence={"top_domains": ["example.com", "example.org"]}, id=7)
    lifted = replace(suspended, lifted_at=now, lifted_by="alice", lift_reason="password reset")
    restricted = replace(suspended, id=8, sender="clerk@example.gov.kz")
    notifier = Notifier(templates=templates, outbox=_Dropped(), hostname=cfg.gateway.hostname,
                        sender=cfg.gateway.notice_from or f"postmaster@{cfg.gateway.hostname}",
                        operators=cfg.gateway.operators, status_url=cfg.gateway.status_url)
    bounced = Meta(id="0000000000000ABCDEF", system=system.id, sender="clerk@example.gov.kz",
                   recipients=[Recipient("gone@example.com", "bounced", 550,
                                         "550 5.1.1 no such user", "mx.example.com")],
                   size=100, received_at=now - 60)
    status, start, counts, overview = await _status(cfg, system, suspended, now)

    cases: list[tuple[str, Callable[[], object]]] = [
        ("the owner notice of a suspension",
         lambda: notifier.send("suspended", system, suspended, held=3)),
        ("the owner notice of a lift", lambda: notifier.send("lifted", system, lifted)),
        ("the owner notice of a sender's restriction",
         lambda: notifier.send("suspended", system, restricted, held=2)),
        ("the owner notice of a restriction's lift",
         lambda: notifier.send("lifted", system, replace(
             restricted, lifted_at=now, lifted_by="alice", lift_reason="password reset",
             grace_until=now + 7200))),
        ("a DSN", lambda: [build_dsn(
            bounced, b"Subject: report\r\n\r\nbody\r\n", bounced.recipients,
            reporting_mta=cfg.gateway.hostname, now=now, templates=templates, reason=reason)
            for reason in ("failed", "expired")]),
        ("the operators' alert of a DNSBL listing", lambda: notifier.alert("dnsbl_listed", {
            "address": "192.0.2.10", "zone": "zen.spamhaus.org", "reason": "listed",
            "since": utc_time(now), "top": [(system.id, 120)], "everywhere": False,
            "usable": ["192.0.2.11"]})),
        ("the operators' alert of a watch", lambda: notifier.alert("watch", alert_context(
            Decision(now, system.id, "spike_1h", 480, 3, 3600, action="watch", usual=95,
                     expected=335, surprise=40)))),
        *((f"the status page ({lang})",
           lambda lang=lang: status_page(templates, status, start, counts, lang))
          for lang in LANGS),
        *((f"the operators' list of systems ({lang})",
           lambda lang=lang: render(
               templates, "systems.html.j2", lang, LANG_LINKS, systems=overview,
               dnsbl=[{"address": "192.0.2.10", "zone": "zen.spamhaus.org", "listed": True,
                       "reason": "listed", "since": now}]))
          for lang in LANGS),
        ("the sign-in page", lambda: render(templates, "login.html.j2", "en", LANG_LINKS,
                                            next="/systems/example", error=True)),
        ("the error page", lambda: render(templates, "error.html.j2", "en", LANG_LINKS,
                                          refused=True)),
    ]
    faults: set[str] = set()
    for what, draw in cases:
        try:
            draw()
        except Exception as e:
            fault = _fault(e)
            if fault is None:
                found.append(f"{what}: {type(e).__name__}: {e}")
            elif fault not in faults:  # a template shared by pages is told once
                faults.add(fault)
                found.append(f"{fault} ({what})")
    return found


async def _status(cfg: Config, system: System, suspended: Suspension, now: float
                  ) -> tuple[dict[str, Any], float, list[float], list[dict[str, Any]]]:
    """What the status page of a suspended `system` shows, with a day of
    traffic for its chart, from the configured rules."""
    engine, senders = engines(cfg.anomaly, [system])
    judge = Judge(engine, senders=senders, suspend=lambda decision: None,
                  watch=lambda decision: None)
    for minutes in range(0, 24 * 60, 25):
        judge.observe({"ts": now - minutes * 60, "system": system.id, "event": "accepted",
                       "sender": "clerk@example.gov.kz", "recipients": ["a@example.com"],
                       "size": 100})

    async def held(system_id: str) -> int:
        return 3

    async def listings() -> list[dict[str, Any]]:
        return []

    service = StatusService(directory=SystemDirectory([system]), judge=judge,
                            suspended=lambda system_id: suspended, held=held,
                            clock=SystemClock(), listings=listings)
    return (await service.status(system), *await service.history(system.id),
            await service.overview())
