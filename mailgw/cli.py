"""The `mailgw` command: serve the gateway and look after its config.

Exit status: 0 success, 1 a problem the operator must fix (bad config),
2 a usage error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import TextIO

import click
import tomli_w

from mailgw import config as config_mod
from mailgw import hashing

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


@main.command()
@CONFIG_OPTION
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def serve(config_path: Path, log_level: str) -> None:
    """Run the gateway: SMTP ingress and delivery. SIGTERM stops it cleanly."""
    cfg = _load(config_path)
    # buffered: a write per log line would cost the event loop a system call
    # each; the gateway flushes twice a second and logging flushes at exit
    stream = open(sys.stderr.fileno(), "w", buffering=1 << 16, closefd=False)  # noqa: SIM115
    logging.basicConfig(level=log_level.upper(), stream=stream,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiosmtpd logs every command line at INFO; the gateway logs what matters
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    if cfg.gateway.event_loop == "uvloop":
        import uvloop

        uvloop.run(_serve(cfg))
    else:
        asyncio.run(_serve(cfg))


async def _serve(cfg: config_mod.Config) -> None:
    from mailgw.gateway import serve as run

    await run(cfg)


@main.command("check-config")
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML.")
def check_config(config_path: Path, as_json: bool) -> None:
    """Validate the config and print the effective config (defaults filled in)."""
    cfg = _load(config_path)
    data = cfg.model_dump(mode="json", exclude={"source"}, exclude_none=True)
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        click.echo(f"# {config_path}: OK, {len(cfg.systems)} systems\n")
        click.echo(tomli_w.dumps(data))


@main.command()
@CONFIG_OPTION
@click.argument("events", type=click.File("r", encoding="utf-8"))
def replay(config_path: Path, events: TextIO) -> None:
    """Run the configured anomaly rules on an event log (ts ascending), with
    the clock taken from the events; print one JSON line per decision."""
    from mailgw.anomaly.engine import Engine
    from mailgw.anomaly.rules import Rule

    cfg = _load(config_path)
    engine = Engine([Rule.from_config(r) for r in cfg.anomaly.rules],
                    {s.id: s.anomaly for s in cfg.systems if s.anomaly})
    out = sys.stdout
    last = float("-inf")
    for number, line in enumerate(events, 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
            ts = float(event["ts"])
        except (ValueError, KeyError, TypeError):
            click.echo(f"error: {events.name}:{number}: not an event (a JSON object with ts)",
                       err=True)
            sys.exit(1)
        if ts < last:
            click.echo(f"error: {events.name}:{number}: ts goes backwards; replay needs the "
                       f"events in time order", err=True)
            sys.exit(1)
        last = ts
        for decision in engine.observe(event):
            out.write(json.dumps(decision.as_dict()) + "\n")


@main.command("hash-password")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def hash_password(password: str) -> None:
    """Hash an SMTP AUTH password for a system's `auth.password_hash`."""
    click.echo(hashing.hash_password(password))


@main.command("hash-token")
@click.option("--token", default=None, help="Hash this token instead of making a new one.")
def hash_token(token: str | None) -> None:
    """Make a status token (or hash a given one) for `status_token_hash`."""
    if token is None:
        token = hashing.new_token()
        click.echo(f"token: {token}")
    click.echo(f"status_token_hash = \"{hashing.hash_token(token)}\"")
