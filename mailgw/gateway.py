"""The running gateway: builds every stage from the config, hands each its
collaborators, runs ingress and delivery on one event loop, stops cleanly.

Nothing else reads the config or builds objects: this is the one place
where the pieces meet.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import jinja2
from aiohttp import web

from mailgw import config as config_mod
from mailgw.anomaly.engine import Engine
from mailgw.anomaly.rules import Rule
from mailgw.blocklist_guard.dnsbl import Check, DnsblWatch, dnsbl_resolver
from mailgw.blocklist_guard.egress import Egress
from mailgw.blocklist_guard.notices import Notifier
from mailgw.blocklist_guard.suspensions import Guard
from mailgw.clock import Clock, SystemClock
from mailgw.config import Config, TLSFiles
from mailgw.events import EventLog, Tee
from mailgw.metrics import Metrics
from mailgw.outage import Outage
from mailgw.relay import dsn, queue_admin
from mailgw.relay.courier import Courier
from mailgw.relay.delivery import Delivery
from mailgw.relay.destinations import Destinations
from mailgw.relay.dkim import DkimSigner
from mailgw.relay.ingress import Ingress
from mailgw.relay.queue_admin import SpoolLock
from mailgw.relay.routing import Router
from mailgw.relay.spool import STATES, Meta, Recipient, Spool
from mailgw.state.journal import Journal
from mailgw.state.records import AuditEntry, Suspension
from mailgw.state.redis_windows import RedisWindows
from mailgw.state.store import describe, open_store
from mailgw.status import StatusService
from mailgw.systems import SystemDirectory
from mailgw.web.app import WebApp
from mailgw.web.app import start as start_web
from mailgw.web.auth import Tokens

log = logging.getLogger("mailgw")


async def loop_io(executor: ThreadPoolExecutor, fn, *args):  # type: ignore[no-untyped-def]
    return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)


def _tls_context(files: TLSFiles | None) -> ssl.SSLContext | None:
    if files is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(files.cert, files.key)
    return ctx


class StartError(Exception):
    """The gateway cannot start as configured; the message says why."""


def _collect(into: list[tuple[tuple[Any, ...], dict[str, Any]]], *args: Any,
             **fields: Any) -> None:
    into.append((args, fields))


class Gateway:
    def __init__(self, config: Config, clock: Clock | None = None):
        self.config = config
        self.clock = clock or SystemClock()
        self.servers: list[asyncio.AbstractServer] = []
        self.addresses: list[tuple[str, int]] = []
        self.windows: RedisWindows | None = None  # window counts shared with other instances
        self._web: web.AppRunner | None = None
        self.http_addresses: list[tuple[str, int]] = []

    async def start(self) -> None:
        cfg, clock = self.config, self.clock
        self.executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="mailgw-io")
        self.spool_lock = SpoolLock(cfg.gateway.spool_dir)
        cfg.gateway.spool_dir.mkdir(parents=True, exist_ok=True)
        if not self.spool_lock.acquire():
            raise StartError(f"another gateway runs on the spool {cfg.gateway.spool_dir}")
        self.metrics = Metrics(
            queue=lambda: {state: len(self.spool.ids(state)) for state in STATES},
            suspended=lambda: len(self.guard.active()),
            listings=lambda: self.store.dnsbl_listings())
        self.spool = Spool(cfg.gateway.spool_dir, cfg.delivery.max_crashes,
                           disk=Outage(log, "the spool's disk", self.metrics.spool_error,
                                       quiet=10.0))
        recovered = self.spool.recover()
        self.event_log = EventLog(cfg.gateway.event_log, clock,
                                  line_buffered=cfg.gateway.flush_interval == 0)
        self.store = open_store(cfg)
        templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(cfg.gateway.templates_dir),
            autoescape=lambda name: bool(name and name.endswith(".html.j2")),
            undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
        )

        def make_bounce(
            meta: Meta, data: bytes, failed: list[Recipient], reason: str
        ) -> bytes | None:
            if not dsn.should_notify(meta):
                return None
            return dsn.build_dsn(meta, data, failed, reporting_mta=cfg.gateway.hostname,
                                 now=clock.now(), templates=templates, reason=reason)

        courier = Courier(
            helo_name=cfg.delivery.helo_name or cfg.gateway.hostname,
            connect_timeout=cfg.delivery.connect_timeout,
            command_timeout=cfg.delivery.command_timeout, tls_ca_file=cfg.delivery.tls_ca_file,
        )
        loop = asyncio.get_running_loop()
        self.directory = directory = SystemDirectory(cfg.systems)
        self.tokens = Tokens(cfg.http.operator_tokens, cfg.systems)
        notifier = Notifier(
            templates=templates, spool=self.spool, hostname=cfg.gateway.hostname,
            sender=cfg.gateway.notice_from or f"postmaster@{cfg.gateway.hostname}",
            operators=cfg.gateway.operators, status_url=cfg.gateway.status_url,
            submit=lambda meta, data: loop.call_soon_threadsafe(self.delivery.submit, meta, data),
        )

        def held(system: str) -> int:
            """Blocking: a system's mail waiting at the gateway (a suspended
            system's queued mail is held when its turn comes)."""
            return sum(len(self.spool.ids_of(s, system)) for s in ("queue", "hold"))

        def notify(kind: str, record: Suspension) -> None:
            system = directory.get(record.system)
            if system is not None:
                notifier.send(kind, system, record, held(system.id))

        self.engine = engine = Engine([Rule.from_config(r) for r in cfg.anomaly.rules],
                                      {s.id: s.anomaly for s in cfg.systems if s.anomaly})
        self.egress = Egress([str(a) for a in cfg.delivery.source_addresses], clock)
        # the embedded store is itself local and durable; Redis may be away
        # or come back empty, and the journal covers that
        self.journal: Journal | None = None
        if cfg.state.backend == "redis":
            self.windows = RedisWindows(cfg.state.redis_url, cfg.state.redis_prefix,
                                        engine.windows, on_error=self.metrics.backend_error)
            self.journal = Journal(cfg.gateway.spool_dir)
        # every stage's events pass through the guard, which judges them
        self.guard = Guard(
            engine=engine, store=self.store, events=Tee(self.event_log, self.metrics, self.egress),
            clock=clock, executor=self.executor, on_lifted=self._lifted, notify=notify,
            shared=self.windows, metrics=self.metrics, journal=self.journal,
            store_name=describe(cfg),
        )
        self.events = self.guard
        self.delivery = Delivery(
            config=cfg.delivery, spool=self.spool, router=Router(cfg.delivery),
            destinations=Destinations(
                courier, total=cfg.delivery.max_connections,
                per_destination=cfg.delivery.max_connections_per_destination,
                messages_per_link=cfg.delivery.max_messages_per_connection,
                sources=self.egress.usable, pick_source=self.egress.pick,
            ),
            events=self.events, clock=clock, executor=self.executor, make_bounce=make_bounce,
            held=lambda meta: meta.origin == "system" and meta.system is not None
            and self.guard.suspended(meta.system) is not None,
        )
        for aside in recovered.set_aside:
            log.error("%s: set aside in corrupt/: %s; `mailgw queue release %s` tries it again",
                      aside.id, aside.why, aside.id)
            self.events.emit("set_aside", aside.meta.system if aside.meta else None,
                             queue_id=aside.id, reason=aside.why)
        self.delivery.load(recovered.waiting)
        # mail held for a suspension lifted while the gateway was down goes out
        self.guard.held_at_start(await loop_io(self.executor, self.spool.systems_in, "hold"))
        self.ingress = Ingress(
            hostname=cfg.gateway.hostname, limits=cfg.limits,
            directory=directory, spool=self.spool, executor=self.executor,
            events=self.events, clock=clock, on_queued=self.delivery.submit,
            signer=DkimSigner(cfg.dkim) if cfg.dkim else None,
            tls_context=_tls_context(cfg.gateway.tls),
            suspended=self.guard.suspended, decided=self.guard.decided,
            status_url=cfg.gateway.status_url,
        )
        for listen in cfg.gateway.listen:
            server = await loop.create_server(self.ingress.protocol, listen.host, listen.port,
                                              reuse_address=True, backlog=1024,
                                              reuse_port=cfg.gateway.reuse_port)
            self.servers.append(server)
            for sock in server.sockets:
                self.addresses.append(sock.getsockname()[:2])
        if cfg.http.listen:
            web_app = WebApp(
                status=StatusService(directory=directory, engine=engine, guard=self.guard,
                                     shared=self.windows, held=held, clock=clock,
                                     executor=self.executor,
                                     listings=self.store.dnsbl_listings),
                directory=directory, tokens=self.tokens,
                metrics=self.metrics, healthy=self._health, templates=templates,
                secure_cookie=cfg.http.secure_cookie)
            self._web, self.http_addresses = await start_web(
                web_app, [(a.host, a.port) for a in cfg.http.listen],
                _tls_context(cfg.http.tls))
        self._watch: asyncio.Task[None] | None = None
        if self.egress.addresses and cfg.dnsbl.zones:
            def alert(check: Check, top: list[tuple[str, int]], everywhere: bool) -> None:
                notifier.alert("dnsbl_listed", {
                    "address": check.address, "zone": check.zone, "reason": check.reason,
                    "since": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(clock.now())),
                    "top": top, "everywhere": everywhere, "usable": self.egress.usable()})

            self.dnsbl = DnsblWatch(
                addresses=self.egress.addresses, zones=cfg.dnsbl.zones,
                resolver=dnsbl_resolver(cfg.dnsbl.resolver_addresses(), cfg.dnsbl.timeout),
                store=self.store, egress=self.egress, events=self.events, clock=clock,
                run_io=partial(loop_io, self.executor), alert=alert)
            try:
                await self.dnsbl.load()
            except Exception as e:
                log.error("cannot read the DNSBL listings from the state store: %s", e)
            self._watch = asyncio.create_task(self.dnsbl.run(cfg.dnsbl.interval))
        self._delivery_task = asyncio.create_task(self.delivery.run())
        self._flusher = asyncio.create_task(self._flush_logs())
        self._refresher = asyncio.create_task(self.guard.run())
        self._controller = asyncio.create_task(self._take_queue_requests())
        log.info("mailgw listening on %s; %d systems; %d messages waiting in the queue",
                 ", ".join(f"{h}:{p}" for h, p in self.addresses), len(cfg.systems),
                 len(recovered.waiting))

    async def reload(self) -> None:
        """SIGHUP: read the config file again and take in what can change
        while mail flows: the connected systems (networks, logins, sender
        domains, status tokens, their thresholds) and the operator tokens.
        Anything else that changed is reported as needing a restart. A file
        that does not load changes nothing."""
        old = self.config
        if old.source is None:
            log.error("config not reloaded: it was not read from a file")
            return
        try:
            new = await loop_io(self.executor, config_mod.load, old.source)
        except config_mod.ConfigError as e:
            log.error("config not reloaded: %s", e)
            return
        before = {s.id: s for s in old.systems}
        after = {s.id: s for s in new.systems}
        self.directory.load(new.systems)
        self.tokens.load(new.http.operator_tokens, new.systems)
        self.engine.overrides = {s.id: s.anomaly for s in new.systems if s.anomaly}
        restart = [name for name in ("gateway", "limits", "delivery", "dkim", "anomaly",
                                     "state", "http")
                   if getattr(new, name) != getattr(old, name)]
        self.config = old.model_copy(update={"systems": new.systems})
        details = {"added": sorted(after.keys() - before.keys()),
                   "removed": sorted(before.keys() - after.keys()),
                   "changed": sorted(i for i in before.keys() & after.keys()
                                     if before[i] != after[i]),
                   "need_restart": restart}
        log.info("config reloaded: systems added %s, removed %s, changed %s",
                 details["added"], details["removed"], details["changed"])
        if restart:
            log.warning("config sections changed that take effect at restart: %s",
                        ", ".join(restart))
        self.guard.audit(AuditEntry(self.clock.now(), None, "config_reloaded", "SIGHUP",
                                    str(old.source), details))

    def _health(self) -> dict[str, object]:
        """Blocking. Not ok (503) when mail is not accepted: the spool's disk
        is below `min_free_disk`. A state backend that is down is reported
        but is not a failure: mail flows on without it."""
        free = self.spool.free_bytes()
        try:
            self.store.active()
            state = "ok"
        except Exception as e:
            state = f"unreachable: {e}"
        return {"ok": free >= self.config.limits.min_free_disk, "spool_free_bytes": free,
                "state_store": state,
                "window_counts": "in process" if self.windows is None else
                "in process (Redis unreachable)" if self.windows.degraded else "Redis"}

    async def _take_queue_requests(self, every: float = 0.2) -> None:
        """Carry out `mailgw queue release/purge` handed over by the CLI."""
        root = self.config.gateway.spool_dir
        while True:
            await asyncio.sleep(every)
            try:
                for path, request in await loop_io(self.executor, queue_admin.take_requests,
                                                   root):
                    events: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
                    result = await loop_io(
                        self.executor, queue_admin.carry_out, self.spool, request,
                        set(self.guard.active()), partial(_collect, events), self.clock.now())
                    for args, fields in events:  # on the loop: the guard is not threadsafe
                        self.events.emit(*args, **fields)
                    if request["action"] == "release":
                        for message in result["done"]:
                            self.delivery.schedule(message["id"], 0.0)
                    await loop_io(self.executor, queue_admin.answer, path, result)
            except Exception:
                log.exception("cannot carry out a queue request")

    def _lifted(self, system: str, purge: bool) -> None:
        """Release a lifted system's held mail, or purge it if so asked."""
        self.delivery.release(system, purge=purge)

    async def _flush_logs(self) -> None:
        """Logs and events are written buffered; push them out regularly."""
        interval = self.config.gateway.flush_interval or 0.5
        while True:
            await asyncio.sleep(interval)
            self.event_log.flush()
            for handler in logging.getLogger().handlers:
                handler.flush()

    async def stop(self, drain_timeout: float = 30.0) -> None:
        for server in self.servers:
            server.close()
        if self._web is not None:
            await self._web.cleanup()
        await self.ingress.drain(drain_timeout)
        await self.delivery.stop(timeout=10.0)
        self._delivery_task.cancel()
        self._flusher.cancel()
        self._refresher.cancel()
        self._controller.cancel()
        tasks = [self._delivery_task, self._flusher, self._refresher, self._controller]
        if self._watch is not None:
            self._watch.cancel()
            tasks.append(self._watch)
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.guard.settle()
        for server in self.servers:
            await server.wait_closed()
        self.executor.shutdown(wait=True)
        try:
            self.guard.save_baselines()
        except Exception as e:  # the state store is away: they are learned again
            log.error("cannot save the learned baselines: %s", e)
        self.event_log.close()
        self.store.close()
        if self.journal is not None:
            self.journal.close()
        if self.windows is not None:
            await self.windows.close()
        self.spool_lock.release()
        log.info("mailgw stopped")


async def serve(config: Config) -> None:
    """Run until SIGTERM or SIGINT, then finish in-flight transactions and
    stop; SIGHUP reloads the config."""
    gateway = Gateway(config)
    try:
        await gateway.start()
    except OSError as e:  # an address in use, a spool that cannot be written
        raise StartError(str(e)) from e
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[None]] = set()

    def reload() -> None:
        task = asyncio.create_task(gateway.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: finishing transactions in progress")
    await gateway.stop()
