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
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import jinja2
from aiohttp import web

from mailgw import config as config_mod
from mailgw import templating
from mailgw.anomaly.engine import Engine
from mailgw.anomaly.judge import Judge, engines, tunings
from mailgw.blocklist_guard.dnsbl import DnsblWatch, dnsbl_resolver
from mailgw.blocklist_guard.egress import Egress
from mailgw.blocklist_guard.hold import Hold
from mailgw.blocklist_guard.notices import NoticeDispatcher, Notifier
from mailgw.blocklist_guard.suspensions import Suspensions
from mailgw.blocklist_guard.watch import Watcher
from mailgw.clock import Clock, SystemClock
from mailgw.config import Config, TLSFiles
from mailgw.events import EventBus, EventLog
from mailgw.metrics import Metrics
from mailgw.outage import Outage
from mailgw.relay import queue_admin
from mailgw.relay.courier import Courier
from mailgw.relay.delivery import Delivery
from mailgw.relay.destinations import Destinations
from mailgw.relay.dkim import DkimSigner
from mailgw.relay.dsn import Bouncer
from mailgw.relay.ingress import Ingress
from mailgw.relay.outbox import Outbox
from mailgw.relay.routing import Router
from mailgw.relay.spool import Recovered, Spool, SpoolLock
from mailgw.senders import Attribution
from mailgw.state import redis_client
from mailgw.state.access import StoreAccess
from mailgw.state.journal import Journal
from mailgw.state.records import AuditEntry
from mailgw.state.redis_store import RedisStore
from mailgw.state.redis_windows import RedisWindows
from mailgw.state.store import describe, open_store
from mailgw.status import StatusService
from mailgw.systems import SystemDirectory
from mailgw.web.app import WebApp
from mailgw.web.app import start as start_web
from mailgw.web.auth import Tokens
from mailgw.wording import things

log = logging.getLogger("mailgw")
T = TypeVar("T")


def _tls_context(files: TLSFiles | None) -> ssl.SSLContext | None:
    if files is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(files.cert, files.key)
    return ctx


def _addresses(bound: list[tuple[str, int]]) -> str:
    return ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in bound)


class StartError(Exception):
    """The gateway cannot start as configured; the message says why."""


async def _every(seconds: float, work: Callable[[], Awaitable[None]]) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await work()
        except Exception:
            log.exception("periodic work failed")


class Gateway:
    def __init__(self, config: Config, clock: Clock | None = None):
        self.config = config
        self.clock = clock or SystemClock()
        self.senders = Attribution.of(config.systems)  # whose each message is
        self.servers: list[asyncio.AbstractServer] = []
        self.addresses: list[tuple[str, int]] = []
        self.windows: RedisWindows | None = None  # window counts shared with other instances
        self.sender_windows: RedisWindows | None = None  # and those of senders
        self.journal: Journal | None = None
        self._web: web.AppRunner | None = None
        self.http_addresses: list[tuple[str, int]] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        cfg, clock = self.config, self.clock
        self.executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="mailgw-io")
        run_io = self.run_io
        recovered = self._open_spool()
        self.events = EventBus(clock)
        self.event_log = EventLog(cfg.gateway.event_log,
                                  line_buffered=cfg.gateway.flush_interval == 0)
        self.events.subscribe(self.event_log.write)
        self.events.subscribe(self.metrics.count)
        engine, senders = engines(cfg.anomaly, cfg.systems, attribution=self.senders)
        self._open_state(engine, senders)
        self.egress = Egress([str(a) for a in cfg.delivery.source_addresses], clock)
        self.events.subscribe(self.egress.count)
        templates = templating.environment(cfg.gateway.templates_dir)
        loop = asyncio.get_running_loop()
        outbox = Outbox(self.spool, clock, submit=lambda meta, data: loop.call_soon_threadsafe(
            self.delivery.submit, meta, data))
        self.judge = Judge(engine, suspend=lambda d: self.suspensions.decided(d),
                           watch=lambda d: self.watcher.watched(d), shared=self.windows,
                           senders=senders, shared_senders=self.sender_windows)
        self.hold = Hold(spool=self.spool, events=self.events, run_io=run_io,
                         in_force=lambda key: self.suspensions.record(key),
                         sender_of=self.senders.of_meta,
                         schedule=lambda queue_id, at: self.delivery.schedule(queue_id, at))
        self.suspensions = Suspensions(
            store=self.store_access, judge=self.judge, events=self.events, clock=clock,
            run_io=run_io, hold=self.hold, journal=self.journal,
            escalation=cfg.anomaly.senders, delay=self.metrics.suspension_delay.observe)
        self.events.subscribe(self.judge.observe)
        self.events.subscribe(self.suspensions.audit_held)
        self.delivery = self._delivery(outbox, templates)
        self._report(recovered)
        await self.suspensions.start(await run_io(self.spool.systems_in, "hold"))
        self.judge.restore_baselines(await self.store_access.quietly(
            "read baselines", self.store.load_baselines) or {})
        self.delivery.load(recovered.waiting)
        self.directory = SystemDirectory(cfg.systems)
        self.tokens = Tokens(cfg.http.operator_tokens, cfg.systems)
        notifier, notices = self._notices(templates, outbox)
        await self._listen()
        await self._serve_http(templates)
        self._run(self.delivery.run(), self._flush_logs(), self.suspensions.run(),
                  _every(1.0, notices.send_due),
                  _every(300.0, self._save_baselines),
                  queue_admin.serve_requests(
                      spool=self.spool, stopped=self.hold.stopped_by,
                      events=self.events, schedule=self.delivery.schedule, run_io=run_io,
                      clock=clock))
        if self.egress.addresses and cfg.dnsbl.zones:
            await self._watch_dnsbl(notifier)
        log.info("mailgw listening: SMTP on %s, HTTP %s; %s; %s waiting in the queue",
                 _addresses(self.addresses),
                 f"on {_addresses(self.http_addresses)}" if self.http_addresses else "off",
                 things(len(cfg.systems), "system"), things(len(recovered.waiting), "message"))

    async def run_io(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in the I/O thread pool: the one executor of the gateway."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _run(self, *work: Coroutine[Any, Any, None]) -> None:
        self._tasks.extend(asyncio.create_task(w) for w in work)

    def _open_spool(self) -> Recovered:
        cfg = self.config
        cfg.gateway.spool_dir.mkdir(parents=True, exist_ok=True)
        self.spool_lock = SpoolLock(cfg.gateway.spool_dir)
        if not self.spool_lock.acquire():
            raise StartError(f"another gateway runs on the spool {cfg.gateway.spool_dir}")
        self.metrics = Metrics(
            queue=lambda: self.spool.census(), free_disk=lambda: self.spool.free_bytes(),
            min_free_disk=cfg.limits.min_free_disk,
            in_force=lambda: list(self.suspensions.in_force().values()),
            listings=lambda: self.store.dnsbl_listings(), clock=self.clock)
        self.spool = Spool(cfg.gateway.spool_dir, cfg.delivery.max_crashes,
                           disk=Outage(log, "the spool's disk", self.metrics.spool_error,
                                       quiet=10.0))
        return self.spool.recover()

    def _notices(self, templates: jinja2.Environment, outbox: Outbox
                 ) -> tuple[Notifier, NoticeDispatcher]:
        """Who tells the owners and the operators: notices, alerts, watches."""
        cfg = self.config.gateway
        notifier = Notifier(templates=templates, outbox=outbox, hostname=cfg.hostname,
                            sender=cfg.notice_from or f"postmaster@{cfg.hostname}",
                            operators=cfg.operators, status_url=cfg.status_url,
                            rule=self.judge.rule)
        self.watcher = Watcher(events=self.events, notifier=notifier,
                               audit=self.suspensions.audit, run_io=self.run_io,
                               spawn=self.suspensions.spawn)
        return notifier, NoticeDispatcher(notifier=notifier, store=self.store_access,
                                          directory=self.directory, held=self._held,
                                          run_io=self.run_io)

    def _report(self, recovered: Recovered) -> None:
        for aside in recovered.set_aside:
            log.error("%s: set aside in corrupt/: %s; `mailgw queue release %s` tries it again",
                      aside.id, aside.why, aside.id)
            self.events.emit("set_aside", aside.meta.system if aside.meta else None,
                             queue_id=aside.id, reason=aside.why)

    def _open_state(self, engine: Engine, senders: Engine | None) -> None:
        cfg = self.config
        self.store = open_store(cfg)
        self.store_access = StoreAccess(
            self.store, self.executor, name=describe(cfg), count=self.metrics.backend_error,
            consequence="suspensions hold from what this gateway knows"
            + ("; audit entries wait in its journal" if cfg.state.backend == "redis" else ""))
        if cfg.state.backend == "redis":
            assert isinstance(self.store, RedisStore)
            refused = redis_client.probe(self.store.r)
            if refused is not None:
                raise StartError(f"{describe(cfg)}: {refused}")
            # Redis may be away or come back empty: the journal covers that;
            # the embedded store is itself local and durable
            self.journal = Journal(cfg.gateway.spool_dir)
            state = cfg.state
            self.windows = RedisWindows(
                state.redis_url, state.redis_prefix, engine.windows, metrics=engine.metrics,
                on_error=self.metrics.backend_error,
                ca_file=str(state.tls_ca_file) if state.tls_ca_file else None,
                sentinel_password=state.sentinel_password)
            if senders is not None:
                # an event's tallies, its sender's and its system's, in one script call
                self.sender_windows = RedisWindows(
                    state.redis_url, f"{state.redis_prefix}u:", senders.windows,
                    metrics=senders.metrics, along=self.windows)

    def _delivery(self, outbox: Outbox, templates: jinja2.Environment) -> Delivery:
        cfg = self.config.delivery
        courier = Courier(helo_name=cfg.helo_name or self.config.gateway.hostname,
                          connect_timeout=cfg.connect_timeout,
                          command_timeout=cfg.command_timeout, tls_ca_file=cfg.tls_ca_file)
        return Delivery(
            config=cfg, spool=self.spool, router=Router(cfg), events=self.events,
            destinations=Destinations(
                courier, total=cfg.max_connections,
                per_destination=cfg.max_connections_per_destination,
                messages_per_link=cfg.max_messages_per_connection,
                sources=self.egress.usable, pick_source=self.egress.pick),
            clock=self.clock, executor=self.executor, outbox=outbox, hold=self.hold,
            make_bounce=Bouncer(templates=templates, reporting_mta=self.config.gateway.hostname,
                                clock=self.clock))

    async def _listen(self) -> None:
        cfg = self.config
        self.ingress = Ingress(
            hostname=cfg.gateway.hostname, limits=cfg.limits, directory=self.directory,
            spool=self.spool, executor=self.executor, events=self.events, clock=self.clock,
            on_queued=self.delivery.submit, signer=DkimSigner(cfg.dkim) if cfg.dkim else None,
            tls_context=_tls_context(cfg.gateway.tls), suspended=self.suspensions.suspended,
            restricted=self.suspensions.restricted, senders=self.senders,
            decided=self.judge.settled, status_url=cfg.gateway.status_url)
        loop = asyncio.get_running_loop()
        for listen in cfg.gateway.listen:
            server = await loop.create_server(self.ingress.protocol, listen.host, listen.port,
                                              reuse_address=True, backlog=1024,
                                              reuse_port=cfg.gateway.reuse_port)
            self.servers.append(server)
            self.addresses.extend(sock.getsockname()[:2] for sock in server.sockets)

    async def _serve_http(self, templates: jinja2.Environment) -> None:
        cfg = self.config
        if not cfg.http.listen:
            return
        status = StatusService(directory=self.directory, judge=self.judge,
                               suspended=self.suspensions.suspended, held=self._held,
                               restricted=self.suspensions.restrictions,
                               spared=self.suspensions.spared, clock=self.clock,
                               listings=self._listings)
        web_app = WebApp(status=status, directory=self.directory, tokens=self.tokens,
                         metrics=self.metrics, healthy=self._health, templates=templates,
                         secure_cookie=cfg.http.secure_cookie, run_io=self.run_io,
                         operators=cfg.gateway.operators)
        self._web, self.http_addresses = await start_web(
            web_app, [(a.host, a.port) for a in cfg.http.listen], _tls_context(cfg.http.tls))

    async def _watch_dnsbl(self, notifier: Notifier) -> None:
        cfg = self.config.dnsbl
        self.dnsbl = DnsblWatch(
            addresses=self.egress.addresses, zones=cfg.zones,
            resolver=dnsbl_resolver(cfg.resolver_addresses(), cfg.timeout),
            store=self.store_access, egress=self.egress, events=self.events, clock=self.clock,
            notifier=notifier, run_io=self.run_io)
        await self.dnsbl.load()
        self._run(self.dnsbl.run(cfg.interval))

    async def _held(self, system: str, sender: str | None = None) -> int:
        return await self.run_io(self.hold.count, system, sender)

    async def _listings(self) -> list[dict[str, Any]]:
        """The DNSBL states as the store has them; none while it is away."""
        return await self.store_access.quietly(
            "read DNSBL listings", self.store.dnsbl_listings) or []

    async def _save_baselines(self) -> None:
        await self.store_access.quietly("save baselines", self.store.save_baselines,
                                        self.judge.baselines())

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
            new = await self.run_io(config_mod.load, old.source)
        except config_mod.ConfigError as e:
            log.error("config not reloaded: %s", e)
            return
        before = {s.id: s for s in old.systems}
        after = {s.id: s for s in new.systems}
        self.directory.load(new.systems)
        self.senders.load(new.systems)
        self.tokens.load(new.http.operator_tokens, new.systems)
        # the systems' own figures, for the rules running (new rules need a restart)
        try:
            self.judge.set_overrides(tunings(old.anomaly, new.systems))
        except ValueError as e:
            log.error("the systems' own rule figures not reloaded: against the rules "
                      "running, %s (they take effect at a restart)", e)
        # operator tokens are taken in at once; the rest of [http] at a restart
        http = old.http.model_copy(update={"operator_tokens": new.http.operator_tokens})
        restart = [name for name, was in (("gateway", old.gateway), ("limits", old.limits),
                                          ("delivery", old.delivery), ("dkim", old.dkim),
                                          ("anomaly", old.anomaly), ("state", old.state),
                                          ("http", http)) if getattr(new, name) != was]
        self.config = old.model_copy(update={"systems": new.systems, "http": http})
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
        self.suspensions.audit(AuditEntry(self.clock.now(), None, "config_reloaded", "SIGHUP",
                                          str(old.source), details))

    def reopen_logs(self) -> None:
        """SIGUSR1: the event log goes on in a new file at its path, after
        logrotate renamed the old one (the text log is stderr's)."""
        try:
            self.event_log.reopen()
        except OSError as e:
            log.error("event log not reopened, still writing the old file: %s", e)
            return
        log.info("event log reopened: %s", self.event_log.path)

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
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.suspensions.settle()
        for server in self.servers:
            await server.wait_closed()
        await self._save_baselines()
        self.executor.shutdown(wait=True)
        self.event_log.close()
        self.store.close()
        if self.journal is not None:
            self.journal.close()
        for windows in (self.windows, self.sender_windows):
            if windows is not None:
                await windows.close()
        self.spool_lock.release()
        log.info("mailgw stopped")


async def serve(config: Config) -> None:
    """Run until SIGTERM or SIGINT, then finish in-flight transactions and
    stop; SIGHUP reloads the config; SIGUSR1 reopens the event log."""
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
    loop.add_signal_handler(signal.SIGUSR1, gateway.reopen_logs)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: finishing transactions in progress")
    await gateway.stop()
