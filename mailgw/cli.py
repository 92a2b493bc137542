"""The `mailgw` command: serve the gateway and look after its config.

Exit status:
  0  done (`dnsbl`: every address looked up, none listed);
  1  a problem the operator must fix (a bad config, a gateway that did not answer);
  2  a usage error (an unknown system or message);
  3  nothing to do (already suspended, not suspended, no message changed);
  4  `dnsbl`: an egress address is listed;
  5  the state store cannot be reached (one line on stderr names it, a
     Redis password masked);
  6  `dnsbl`: some lookups failed and none found a listing: not checked.

The verbs that only read (status, history, queue list and show, dnsbl,
check-config) never create the state file or the spool: where there are
none yet, they say so on stderr and answer from nothing.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn, TextIO, TypeVar

import click
import tomli_w

from mailgw import config as config_mod
from mailgw import hashing
from mailgw.clock import utc_time
from mailgw.relay.spool import STATE_NAMES
from mailgw.senders import Attribution
from mailgw.state.records import Suspension
from mailgw.units import parse_duration
from mailgw.wording import things, why

if TYPE_CHECKING:
    from mailgw.relay.queue_file import Meta
    from mailgw.relay.spool import Spool
    from mailgw.state.store import Store

T = TypeVar("T")
LISTED = 4  # exit status of `dnsbl`: an egress address is listed
STORE_DOWN = 5  # exit status: the state store cannot be reached
NOT_CHECKED = 6  # exit status of `dnsbl`: lookups failed, none listed

CONFIG_OPTION = click.option(
    "--config", "config_path", type=click.Path(path_type=Path),
    default=lambda: os.environ.get("MAILGW_CONFIG", "config.toml"), show_default="config.toml",
    help="Config file (or MAILGW_CONFIG).",
)


def _load(path: Path) -> config_mod.Config:
    try:
        return config_mod.load(path)
    except config_mod.ConfigError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)


@click.group()
@click.version_option(package_name="mailgw")
def main() -> None:
    """mailgw: SMTP relay of the e-government email gateway."""


class _UnflushedHandler(logging.StreamHandler[TextIO]):
    """A StreamHandler flushes its stream after every record, which would
    make the buffer above useless; this one leaves flushing to its owner."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)


@main.command()
@CONFIG_OPTION
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def serve(config_path: Path, log_level: str) -> None:
    """Run the gateway: SMTP ingress and delivery. SIGTERM stops it cleanly."""
    cfg = _load(config_path)
    # buffered: a write per log line would cost the event loop a system call
    # each; the gateway flushes every flush_interval and logging at exit
    stream = open(sys.stderr.fileno(), "w", buffering=1 << 16, closefd=False)  # noqa: SIM115
    handler = (logging.StreamHandler(stream) if cfg.gateway.flush_interval == 0
               else _UnflushedHandler(stream))
    logging.basicConfig(level=log_level.upper(), handlers=[handler],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiosmtpd logs every command line at INFO; the gateway logs what matters
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    from mailgw.gateway import StartError

    try:
        if cfg.gateway.event_loop == "uvloop":
            import uvloop

            uvloop.run(_serve(cfg))
        else:
            asyncio.run(_serve(cfg))
    except StartError as e:
        logging.getLogger("mailgw").error("cannot start: %s", e)
        sys.exit(1)


async def _serve(cfg: config_mod.Config) -> None:
    from mailgw.gateway import serve as run

    await run(cfg)


@main.command("check-config")
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML.")
def check_config(config_path: Path, as_json: bool) -> None:
    """Validate the config and print the effective config (defaults filled in);
    render every template once (DSNs, notices, alerts, the pages)."""
    from mailgw import templating
    from mailgw.state.store import masked

    cfg = _load(config_path)
    found = asyncio.run(templating.problems(templating.environment(cfg.gateway.templates_dir),
                                            cfg))
    if cfg.state.backend == "redis":
        found += _redis_refuses(cfg)
    for problem in found:
        click.echo(f"error: {config_path}: {problem}", err=True)
    if found:
        sys.exit(1)
    data = cfg.model_dump(mode="json", exclude={"source"}, exclude_none=True)
    data["state"]["redis_url"] = masked(cfg.state.redis_url)  # printed, never a secret
    if cfg.state.sentinel_password is not None:
        data["state"]["sentinel_password"] = "***"
    if not cfg.systems:
        click.echo(f"warning: {config_path} has no [[systems]]: no client can relay "
                   "through this gateway", err=True)
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        click.echo(f"# {config_path}: OK, {things(len(cfg.systems), 'system')}\n")
        click.echo(tomli_w.dumps(data))


@main.command()
@CONFIG_OPTION
@click.argument("events", type=click.File("rb"))
def replay(config_path: Path, events: BinaryIO) -> None:
    """Run the configured anomaly rules on an event log (ts ascending), with
    the clock taken from the events; print one JSON line per decision, and
    a summary per rule and per system on stderr."""
    from mailgw.anomaly.judge import engines
    from mailgw.replay import BadLog, Replay

    cfg = _load(config_path)
    engine, senders = engines(cfg.anomaly, cfg.systems, history=False)
    try:
        Replay(engine, senders, sys.stdout, sys.stderr).run(events, events.name)
    except BadLog as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)


def _redis_refuses(cfg: config_mod.Config) -> list[str]:
    """Redis refusing this config (a wrong password, a CA that does not sign
    its certificate): an error. One that does not answer now is only a
    warning: a gateway starts without it and counts alone meanwhile."""
    from mailgw.state.redis_client import UNAVAILABLE, misconfigured
    from mailgw.state.store import describe

    store = _store(cfg)
    try:
        store.active()
    except UNAVAILABLE as e:
        refused = misconfigured(e)
        if refused is not None:
            return [f"state: {describe(cfg)}: {refused}"]
        click.echo(f"warning: state: {describe(cfg)} does not answer now ({e}); a gateway "
                   "starts without it and counts alone until it answers", err=True)
    finally:
        store.close()
    return []


def _store(cfg: config_mod.Config) -> Store:
    from mailgw.state.store import open_store

    return _call(cfg, open_store, cfg)


def _reader(cfg: config_mod.Config) -> Store | None:
    """The state store to read from; None when there is none yet (the
    embedded file was never made), which a verb that only reads does not make."""
    if cfg.state.backend == "embedded" and not cfg.gateway.state_file.exists():
        click.echo(f"note: no state yet ({cfg.gateway.state_file} does not exist): nothing "
                   "has been suspended or recorded", err=True)
        return None
    return _store(cfg)


def _spool_to_read(cfg: config_mod.Config) -> Spool | None:
    """The spool to read from; None (said on stderr) when there is none yet."""
    if not cfg.gateway.spool_dir.is_dir():
        click.echo(f"note: no spool yet ({cfg.gateway.spool_dir} does not exist): no mail",
                   err=True)
        return None
    return _spool(cfg)


def _call(cfg: config_mod.Config, fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)`, a state store call; a store that cannot be reached ends
    the command with one line and exit 5."""
    from mailgw.state.store import UNAVAILABLE

    try:
        return fn(*args)
    except UNAVAILABLE as e:
        _store_down(cfg, e)


def _store_down(cfg: config_mod.Config, error: Exception, then: str = "") -> NoReturn:
    from mailgw.state.store import describe

    click.echo(f"error: the state store ({describe(cfg)}) is unavailable: "
               f"{' '.join(str(error).split()) or type(error).__name__}{then}", err=True)
    sys.exit(STORE_DOWN)


def _known(cfg: config_mod.Config, system: str) -> None:
    if system not in {s.id for s in cfg.systems}:
        click.echo(f"error: no system {system!r} in {cfg.source}", err=True)
        sys.exit(2)


def _when(ts: float | None) -> str:
    return utc_time(ts, seconds=True)


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


OPERATOR_OPTION = click.option("--operator", default=getpass.getuser, show_default="login name",
                               help="Who does this, for the audit trail.")
REASON_OPTION = click.option("--reason", required=True, help="Why, for the audit trail.")
SENDER_OPTION = click.option("--sender", help="One sender (address, or login) of the system "
                             "rather than all of it.")
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")


@main.command()
@CONFIG_OPTION
@JSON_OPTION
@click.argument("system", required=False)
def status(config_path: Path, as_json: bool, system: str | None) -> None:
    """Suspension state of every system, or of one, and its mail held at
    the gateway (in the spool's hold/)."""
    cfg = _load(config_path)
    if system:
        _known(cfg, system)
    store = _reader(cfg)
    active = _call(cfg, store.active) if store else {}
    spared = _call(cfg, store.spared, time.time()) if store else {}
    spool = _spool_to_read(cfg)
    held = spool.count_by_system("hold") if spool else Counter[str]()
    ids = [system] if system else [s.id for s in cfg.systems]
    restricted: dict[str, list[Suspension]] = {}
    for r in sorted(active.values(), key=lambda r: r.since):
        if r.sender is not None:
            restricted.setdefault(r.system, []).append(r)
    graces: dict[str, list[Suspension]] = {}
    for r in sorted(spared.values(), key=lambda r: r.grace_until or 0.0):
        graces.setdefault(r.system, []).append(r)
    if as_json:
        click.echo(json.dumps([{"system": i, "state": "suspended" if i in active else "active",
                                "suspension": active[i].as_dict() if i in active else None,
                                "restricted_senders": [r.as_dict()
                                                       for r in restricted.get(i, [])],
                                "spared_senders": [r.as_dict() for r in graces.get(i, [])],
                                "held": held[i]} for i in ids], indent=2, ensure_ascii=False))
        return
    rules = {r.name: r for r in cfg.anomaly.rules}
    rows = []
    for i in ids:
        record = active.get(i)
        rows.append([i, "suspended" if record else "active", str(held[i]),
                     _when(record.since) if record else "",
                     why(record, rules.get(record.rule or ""))["en"] if record else "",
                     record.by if record else ""])
        rows += [[f"  sender {r.sender}", "restricted", "", _when(r.since),
                  why(r, rules.get(r.rule or ""))["en"], r.by] for r in restricted.get(i, [])]
        rows += [[f"  sender {r.sender}", "spared", "", _when(r.lifted_at),
                  f"until {_when(r.grace_until)}: {r.lift_reason}", r.lifted_by or ""]
                 for r in graces.get(i, [])]
    _table(rows, ["SYSTEM", "STATE", "HELD", "SINCE", "WHY", "BY"])


@main.command()
@CONFIG_OPTION
@REASON_OPTION
@OPERATOR_OPTION
@JSON_OPTION
@SENDER_OPTION
@click.argument("system")
def suspend(config_path: Path, reason: str, operator: str, as_json: bool, sender: str | None,
            system: str) -> None:
    """Suspend a system by hand (with --sender: restrict only that sender of
    it); a running gateway obeys within a second."""
    cfg = _load(config_path)
    _known(cfg, system)
    sender = _sender(cfg, system, sender)
    store = _store(cfg)
    record = _call(cfg, store.suspend, Suspension(system, time.time(), operator, reason=reason,
                                                  sender=sender))
    if record is None:
        click.echo(f"{_whom(system, sender)} is already {_done(sender)}", err=True)
        sys.exit(3)
    click.echo(json.dumps(record.as_dict(), indent=2, ensure_ascii=False) if as_json
               else f"{_whom(system, sender)} {_done(sender)} by {operator}: {reason}")


@main.command()
@CONFIG_OPTION
@REASON_OPTION
@OPERATOR_OPTION
@click.option("--purge", is_flag=True, help="Delete the held mail instead of releasing it.")
@click.option("--grace", callback=lambda ctx, param, value: _grace(value),
              help="With --sender: spare that sender this long (30m, 2h, at most 1d): its "
                   "mail is neither judged nor counted, so the rest of a mailing the owner "
                   "vouched for, and its server's retries, do not restrict it again.")
@JSON_OPTION
@SENDER_OPTION
@click.argument("system")
def lift(config_path: Path, reason: str, operator: str, purge: bool, grace: float | None,
         as_json: bool, sender: str | None, system: str) -> None:
    """Lift a system's suspension (with --sender: that sender's
    restriction); the held mail it stopped is released for delivery (or
    deleted, with --purge)."""
    if grace is not None and sender is None:
        raise click.UsageError("--grace spares one sender: give --sender too (a whole "
                               "system's traffic is never left unjudged)")
    cfg = _load(config_path)
    _known(cfg, system)
    sender = _sender(cfg, system, sender)
    store = _store(cfg)
    now = time.time()
    record = _call(cfg, store.lift, system, operator, reason, now, purge, sender,
                   None if grace is None else now + grace)
    if record is None:
        click.echo(f"{_whom(system, sender)} is not {_done(sender)}", err=True)
        sys.exit(3)
    click.echo(json.dumps(record.as_dict(), indent=2, ensure_ascii=False) if as_json
               else f"{_whom(system, sender)}: {'suspension' if sender is None else 'restriction'}"
               f" lifted by {operator}: {reason}"
               + ("; held mail will be purged" if purge else "")
               + (f"; spared until {_when(record.grace_until)}" if record.grace_until else ""))


# a grace is for the rest of one mailing the owner vouched for; a sender
# whose usual traffic crosses a rule wants its system's thresholds raised
LONGEST_GRACE = 86400.0


def _grace(value: str | None) -> float | None:
    """--grace in seconds."""
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--grace") from None
    if not 0 < seconds <= LONGEST_GRACE:
        raise click.BadParameter(f"{value}: a grace runs more than 0 and at most 1d "
                                 "(a sender that needs longer needs its system's thresholds "
                                 "raised)", param_hint="--grace")
    return seconds


def _sender(cfg: config_mod.Config, system: str, sender: str | None) -> str | None:
    """--sender as the gateway names that sender (mailgw/senders.py)."""
    if sender is None:
        return None
    return Attribution.of(cfg.systems).sender(system, sender, sender)


def _whom(system: str, sender: str | None) -> str:
    return system if sender is None else f"sender {sender} of {system}"


def _done(sender: str | None) -> str:
    return "suspended" if sender is None else "restricted"


@main.command()
@CONFIG_OPTION
@JSON_OPTION
@click.argument("system", required=False)
def history(config_path: Path, as_json: bool, system: str | None) -> None:
    """The audit trail: who suspended or lifted what, when and why."""
    cfg = _load(config_path)
    if system:
        _known(cfg, system)
    store = _reader(cfg)
    entries = _call(cfg, store.history, system) if store else []
    if as_json:
        click.echo(json.dumps([vars(e) for e in entries], indent=2, ensure_ascii=False))
        return
    _table([[_when(e.ts), e.system or "", e.action, str(e.details.get("sender") or ""), e.by,
             e.reason or ""] for e in entries],
           ["WHEN", "SYSTEM", "ACTION", "SENDER", "BY", "REASON"])


@main.group()
def queue() -> None:
    """Look at the spool; release or purge held and deferred mail."""


def _spool(cfg: config_mod.Config) -> Spool:
    from mailgw.relay.spool import Spool

    return Spool(cfg.gateway.spool_dir, cfg.delivery.max_crashes)


@queue.command("list")
@CONFIG_OPTION
@JSON_OPTION
@click.option("--system", help="Only this system's mail.")
@click.option("--state", "states", multiple=True, type=click.Choice(list(STATE_NAMES.values())),
              help="Only mail in this state (repeatable).")
def queue_list(config_path: Path, as_json: bool, system: str | None,
               states: tuple[str, ...]) -> None:
    """Messages in the spool: queued (new or deferred), held (a suspended
    system's), delivering, set aside (crashed delivery repeatedly, or
    unreadable; `queue release` tries it again)."""
    from mailgw.relay.queue_file import UNREADABLE
    from mailgw.relay.spool import STATES

    cfg = _load(config_path)
    if system:
        _known(cfg, system)
    spool = _spool_to_read(cfg)
    rows: list[tuple[str, str, Meta | None]] = []
    for state in STATES:
        if spool is None or states and STATE_NAMES[state] not in states:
            continue
        for queue_id in spool.ids(state):
            try:
                meta = spool.read(state, queue_id)
            except FileNotFoundError:
                continue  # moved on meanwhile
            except UNREADABLE:
                if system is None:
                    rows.append((queue_id, STATE_NAMES[state], None))
                continue
            if system is None or meta.system == system:
                rows.append((queue_id, STATE_NAMES[state], meta))
    if as_json:
        click.echo(json.dumps([{"state": st, **asdict(m)} if m else
                               {"state": st, "id": i, "unreadable": True} for i, st, m in rows],
                              indent=2))
        return
    _table([[i, st, "(unreadable metadata)", "", "", "", "", "", ""] if m is None else
            [m.id, st, m.system or f"({m.origin})", m.sender or "<>",
             str(len(m.pending())), str(m.attempts), str(m.crashes),
             _when(m.next_try) if st == "queued" and m.attempts else "", str(m.size)]
            for i, st, m in rows],
           ["ID", "STATE", "SYSTEM", "SENDER", "PENDING", "ATTEMPTS", "CRASHES", "NEXT TRY",
            "SIZE"])


@queue.command("show")
@CONFIG_OPTION
@JSON_OPTION
@click.argument("queue_id")
def queue_show(config_path: Path, as_json: bool, queue_id: str) -> None:
    """One message: envelope, each recipient's state, its headers."""
    from email.parser import BytesHeaderParser

    from mailgw.relay.queue_file import UNREADABLE
    from mailgw.relay.spool import STATES

    cfg = _load(config_path)
    spool = _spool_to_read(cfg)
    state = next((st for st in STATES if queue_id in spool.ids(st)), None) if spool else None
    if spool is None or state is None:
        click.echo(f"error: no message {queue_id!r} in the spool", err=True)
        sys.exit(2)
    try:
        meta, data = spool.load(state, queue_id)
    except UNREADABLE:
        click.echo(f"error: the metadata of {queue_id} cannot be read: "
                   f"{cfg.gateway.spool_dir}/{state}/{queue_id}.msg", err=True)
        sys.exit(1)
    headers = BytesHeaderParser().parsebytes(data)
    shown = {k: str(headers[k]) for k in ("From", "To", "Subject", "Date", "Message-ID")
             if headers[k] is not None}
    if as_json:
        click.echo(json.dumps({"state": STATE_NAMES[state], **asdict(meta),
                               "headers": shown}, indent=2, ensure_ascii=False))
        return
    click.echo(f"{meta.id}  {STATE_NAMES[state]}  system {meta.system or '-'} "
               f"({meta.origin})  {meta.size} bytes  received {_when(meta.received_at)}")
    click.echo(f"from <{meta.sender}>  attempts {meta.attempts}"
               + (f"  next try {_when(meta.next_try)}" if meta.attempts else "")
               + (f"  crashed {meta.crashes} times" if meta.crashes else ""))
    _table([[r.address, r.state, str(r.code or ""), r.response or ""]
            for r in meta.recipients], ["RECIPIENT", "STATE", "CODE", "LAST RESPONSE"])
    for name, value in shown.items():
        click.echo(f"{name}: {value}")


def _change(action: str, config_path: Path, reason: str, operator: str,
            queue_ids: tuple[str, ...], system: str | None, as_json: bool) -> None:
    from mailgw.blocklist_guard.hold import stopped_by
    from mailgw.clock import SystemClock
    from mailgw.events import EventBus, EventLog
    from mailgw.relay import queue_admin
    from mailgw.relay.spool import SpoolLock

    cfg = _load(config_path)
    if bool(queue_ids) == bool(system):
        click.echo("error: name message ids or --system, not both", err=True)
        sys.exit(2)
    if system:
        _known(cfg, system)
    store = _store(cfg)
    request = {"action": action, "ids": list(queue_ids), "system": system,
               "operator": operator}
    spool = _spool(cfg)
    lock = SpoolLock(cfg.gateway.spool_dir)
    if lock.acquire():  # no gateway runs on this spool: do it here
        try:
            # alone, the CLI learns what is suspended from the store before
            # it changes anything: if it cannot, nothing is done
            active = _call(cfg, store.active)
            senders = Attribution.of(cfg.systems)
            result, told = queue_admin.carry_out(
                spool, request, lambda meta: stopped_by(meta, senders.of_meta, active.get),
                time.time())
            log = EventLog(cfg.gateway.event_log)
            bus = EventBus(SystemClock())
            bus.subscribe(log.write)
            for event, owner, fields in told:
                bus.emit(event, owner, **fields)
            log.close()
        finally:
            lock.release()
    else:  # the gateway decides, from what it knows even while the store is away
        if cfg.state.backend != "redis":  # no outbox for the audit entry: the store first
            _call(cfg, store.active)
        try:
            result = queue_admin.hand_over(cfg.gateway.spool_dir, request)
        except TimeoutError:
            click.echo("error: the running gateway did not take the request in time; "
                       "nothing was changed, or it is being changed now", err=True)
            sys.exit(1)
    verb = "released" if action == "release" else "purged"
    by_system: dict[str | None, list[str]] = {}
    for message in result["done"]:
        by_system.setdefault(message["system"], []).append(message["id"])
        if not as_json:
            click.echo(f"{message['id']} {verb}")
    _record_change(cfg, store, verb, operator, reason, by_system)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    for skip in result["skipped"]:
        click.echo(f"{skip['id']} not {verb}: {skip['why']}", err=True)
    if not result["done"]:
        sys.exit(3)


def _record_change(cfg: config_mod.Config, store: Store, verb: str, operator: str,
                   reason: str, by_system: dict[str | None, list[str]]) -> None:
    """One audit entry per system and command. With Redis away, into the
    outbox beside the spool, which the gateway writes to Redis once it is back."""
    from mailgw.state.journal import Journal
    from mailgw.state.records import AuditEntry
    from mailgw.state.store import UNAVAILABLE, describe

    for owner, ids in by_system.items():
        entry = AuditEntry(time.time(), owner, verb, operator, reason, {"messages": ids})
        try:
            store.record(entry)
        except UNAVAILABLE as e:
            if cfg.state.backend != "redis":
                _store_down(cfg, e, f"; the messages above were {verb}, the audit trail "
                            "does not say so")
            journal = Journal(cfg.gateway.spool_dir)
            journal.queue(entry)
            journal.close()
            click.echo(f"note: the state store ({describe(cfg)}) is unavailable; the audit "
                       f"entry of {owner or 'the gateway'} waits in {journal.path} and goes "
                       "in when it is back", err=True)


def _queue_change(action: str, help_text: str):  # type: ignore[no-untyped-def]
    @queue.command(action, help=help_text)
    @CONFIG_OPTION
    @REASON_OPTION
    @OPERATOR_OPTION
    @JSON_OPTION
    @click.option("--system", help="All of this system's held and queued mail.")
    @click.argument("queue_ids", nargs=-1)
    def command(config_path: Path, reason: str, operator: str, as_json: bool,
                system: str | None, queue_ids: tuple[str, ...]) -> None:
        _change(action, config_path, reason, operator, queue_ids, system, as_json)

    return command


_queue_change("release", "Send held or deferred mail now (by id, or --system). A suspended "
              "system's mail stays held until its suspension is lifted.")
_queue_change("purge", "Delete held or queued mail (by id, or --system), without a bounce.")


@main.command()
@CONFIG_OPTION
@JSON_OPTION
def dnsbl(config_path: Path, as_json: bool) -> None:
    """Look up every egress address on every DNSBL zone now, beside what the
    gateway last recorded. (The running gateway records changes and alerts.)
    Exit 4 if one is listed, 6 if lookups failed and none is listed."""
    from mailgw.blocklist_guard.dnsbl import check_every, dnsbl_resolver

    cfg = _load(config_path)
    addresses = [str(a) for a in cfg.delivery.source_addresses]
    if not addresses or not cfg.dnsbl.zones:
        click.echo("error: no delivery.source_addresses or dnsbl.zones to check", err=True)
        sys.exit(2)
    store = _reader(cfg)
    recorded = {(e["address"], e["zone"]): e
                for e in (_call(cfg, store.dnsbl_listings) if store else [])}
    resolver = dnsbl_resolver(cfg.dnsbl.resolver_addresses(), cfg.dnsbl.timeout)
    checks = asyncio.run(check_every(resolver, addresses, cfg.dnsbl.zones))
    rows: list[dict[str, Any]] = []
    for c in checks:
        known = recorded.get((c.address, c.zone))
        rows.append({"address": c.address, "zone": c.zone,
                     "now": "error" if c.listed is None else "listed" if c.listed else "clean",
                     "reason": c.reason,
                     "recorded": "" if known is None else "listed" if known["listed"] else "clean",
                     "since": None if known is None else known["since"]})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        _table([[r["address"], r["zone"], r["now"], r["recorded"], _when(r["since"]),
                 r["reason"]] for r in rows],
               ["ADDRESS", "ZONE", "NOW", "RECORDED", "SINCE", "REASON"])
    if any(r["now"] == "listed" for r in rows):
        sys.exit(LISTED)
    failed = sum(r["now"] == "error" for r in rows)
    if failed:
        click.echo(f"error: {things(failed, 'lookup')} of {len(rows)} failed: not checked",
                   err=True)
        sys.exit(NOT_CHECKED)


@main.command("hash-password")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def hash_password(password: str) -> None:
    """Hash an SMTP AUTH password; prints the line for the system's
    [[systems.auth]] table."""
    click.echo(tomli_w.dumps({"password_hash": hashing.hash_password(password)}), nl=False)


@main.command("hash-token")
@click.option("--token", default=None, help="Hash this token instead of making a new one.")
@click.option("--operator", "operator", default=None, metavar="NAME",
              help="An operator's token: print its [[http.operator_tokens]] table.")
def hash_token(token: str | None, operator: str | None) -> None:
    """Make a status token (or hash a given one). Prints what goes into the
    config: `status_token_hash = ...` for a system's [[systems]] table, or
    with --operator the whole [[http.operator_tokens]] table; a new token
    itself goes to stderr, for whoever will use it, and nowhere else."""
    if token is None:
        token = hashing.new_token()
        whose = f"operator {operator}" if operator else "the mail admins of the system"
        click.echo(f"token (give it to {whose}; it is kept nowhere): {token}", err=True)
    elif not hashing.is_token_text(token):
        raise click.BadParameter("printable ASCII only: a token travels in an HTTP header",
                                 param_hint="--token")
    digest = hashing.hash_token(token)
    click.echo(tomli_w.dumps({"status_token_hash": digest} if operator is None else {
        "http": {"operator_tokens": [{"name": operator, "token_hash": digest}]}}), nl=False)
