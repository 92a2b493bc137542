"""The configuration: config.toml into one frozen, typed, validated tree.

Defaults live here; the file goes on top; unknown keys are rejected;
durations, sizes and networks are parsed at load time; fields are checked
against each other. Every error names the file, the key and what was expected.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mailgw import hashing
from mailgw.anomaly.metrics import METRICS
from mailgw.state import redis_client
from mailgw.units import parse_duration, parse_size

Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$",
    re.IGNORECASE,
)
_SYSTEM_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class ConfigError(Exception):
    """A config file that cannot be used; the text names file, key and expectation."""


def _domain(value: str) -> str:
    value = value.strip().lower().rstrip(".")
    if not _HOSTNAME.match(value):
        raise ValueError(f"expected a domain name, got {value!r}")
    return value


def _hostport(value: str, default_port: int) -> tuple[str, int]:
    """'host', 'host:port', '[v6]:port' -> (host, port)."""
    m = re.match(r"^\[(?P<h6>[^\]]+)\](?::(?P<p6>\d+))?$|^(?P<h>[^:\[\]]+)(?::(?P<p>\d+))?$", value)
    if not m:
        raise ValueError(f"expected host or host:port, got {value!r}")
    host = m.group("h6") or m.group("h")
    port = int(m.group("p6") or m.group("p") or default_port)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {value!r}")
    return host, port


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NextHop(_Model):
    """Where mail for a domain goes instead of its MX: 'host:port'. A host in
    brackets is used as it is, without an MX lookup (as in Postfix)."""

    host: str
    port: int
    mx_lookup: bool

    @classmethod
    def parse(cls, value: str) -> NextHop:
        text = value.strip()
        literal = text.startswith("[")
        host, port = _hostport(text, 25)
        return cls(host=host.lower(), port=port, mx_lookup=not literal)


def _next_hop(value: object) -> object:
    return NextHop.parse(value) if isinstance(value, str) else value


HopField = Annotated[NextHop, BeforeValidator(_next_hop)]


class Listen(_Model):
    host: str
    port: int


def _listen(default_port: int) -> BeforeValidator:
    def parse(value: object) -> object:
        if isinstance(value, str):
            host, port = _hostport(value, default_port)
            return {"host": host, "port": port}
        return value

    return BeforeValidator(parse)


class TLSFiles(_Model):
    cert: Path
    key: Path


class DKIMKey(_Model):
    domain: str
    selector: str
    key_file: Path

    _norm_domain = field_validator("domain")(classmethod(lambda cls, v: _domain(v)))

    @field_validator("selector")
    @classmethod
    def _selector(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", v):
            raise ValueError(f"expected a DKIM selector (letters, digits, . _ -), got {v!r}")
        return v


class Gateway(_Model):
    hostname: str = "localhost"
    listen: list[Annotated[Listen, _listen(25)]] = Field(
        default_factory=lambda: [Listen(host="127.0.0.1", port=2525)], min_length=1
    )
    spool_dir: Path = Path("spool")
    event_log: Path = Path("events.jsonl")
    state_file: Path = Path("state.db")  # suspensions and audit trail (embedded state)
    templates_dir: Path | None = None  # the operator's own versions of some templates
    status_url: str = "http://localhost:8025/v1/systems/{system}/status"
    operators: list[str] = Field(default_factory=list)  # Cc of owner notices
    notice_from: str | None = None  # sender of notices; default postmaster@hostname
    flush_interval: Duration = 0.5  # event log and logs are flushed this often; 0: every line
    tls: TLSFiles | None = None
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # several gateways on one host share the SMTP listen addresses and the
    # kernel spreads connections among them: one event loop is one core
    reuse_port: bool = False

    _norm_hostname = field_validator("hostname")(classmethod(lambda cls, v: _domain(v)))


class Limits(_Model):
    max_message_size: Size = 25 * 1024**2
    max_recipients: int = Field(default=1000, ge=100)
    max_command_length: int = Field(default=512, ge=512)
    max_line_length: int = Field(default=998, ge=998)
    max_connections: int = Field(default=1000, ge=1)
    max_connections_per_ip: int = Field(default=100, ge=1)
    idle_timeout: Duration = 300.0
    session_timeout: Duration = 1800.0
    max_errors: int = Field(default=10, ge=1)
    min_free_disk: Size = 256 * 1024**2


class _Resolving(_Model):
    """A section that looks names up: `resolver`, the DNS servers to ask
    (`ip[:port]`); none: the system's."""

    resolver: list[str] = Field(default_factory=list)

    _resolvers = field_validator("resolver")(classmethod(lambda cls, v: _resolvers(v)))

    def resolver_addresses(self) -> list[tuple[str, int]]:
        return [_hostport(item, 53) for item in self.resolver]


class Delivery(_Resolving):
    helo_name: str | None = None
    port: int = Field(default=25, ge=1, le=65535)
    relayhost: HopField | None = None
    routes: dict[str, HopField] = Field(default_factory=dict)
    tls_required_domains: list[str] = Field(default_factory=list)
    tls_ca_file: Path | None = None
    first_retry: Duration = 300.0
    max_retry_interval: Duration = 3600.0
    max_queue_lifetime: Duration = 5 * 86400.0
    retry_jitter: float = Field(default=0.2, ge=0, le=1)
    max_connections: int = Field(default=100, ge=1)
    max_connections_per_destination: int = Field(default=20, ge=1)
    max_messages_per_connection: int = Field(default=100, ge=1)
    connect_timeout: Duration = 30.0
    command_timeout: Duration = 300.0
    max_crashes: int = Field(default=5, ge=1)
    # the gateway's egress addresses: outgoing connections are made from
    # them in turn, leaving out one listed on a DNSBL ([dnsbl]); none: the
    # system picks
    source_addresses: list[IPAddress] = Field(default_factory=list)

    @field_validator("routes")
    @classmethod
    def _route_domains(cls, v: dict[str, NextHop]) -> dict[str, NextHop]:
        return {_domain(k): hop for k, hop in v.items()}

    @field_validator("tls_required_domains")
    @classmethod
    def _tls_domains(cls, v: list[str]) -> list[str]:
        return [_domain(d) for d in v]


def _metric(value: str) -> str:
    if value not in METRICS:
        raise ValueError(f"expected one of the metrics {', '.join(METRICS)}")
    return value


MetricName = Annotated[str, AfterValidator(_metric)]


Chance = Annotated[float, Field(gt=0, lt=1)]


class AnomalyRule(_Model):
    """A rule (mailgw/anomaly/rules.py says what each field does per kind)."""

    name: str
    kind: Literal["ceiling", "ratio", "spike"]
    metric: MetricName
    window: Duration
    # ceiling: the most allowed; ratio: the least abnormal share; spike: times the usual
    threshold: float = Field(ge=0)
    per: MetricName | None = None
    min_sample: float = Field(default=0, ge=0)  # ratio: least divisor; spike: least floor
    min_history: Duration = 14 * 86400.0  # spike: history before its hour-of-week usual
    min_count: float = Field(default=0, ge=0)  # least count of the metric to act on
    baseline: Duration | None = None  # where the system's usual is learned
    factor: float = Field(default=0, ge=0)  # ratio: times the system's usual share
    prior: float = Field(default=0, ge=0, le=1)  # ratio: the usual share with no history
    floor: float = Field(default=0, ge=0)  # spike: times the average count per window
    watch: Chance | None = None  # alert the operators at this chance or below
    suspend: Chance | None = None  # suspend at this chance or below
    respond: Literal["suspend", "watch"] = "suspend"  # a rule without chances
    # whose traffic it judges: the whole system's (a suspension), or each
    # sender's inside it (a restriction of that sender alone)
    scope: Literal["system", "sender"] = "system"

    @model_validator(mode="after")
    def _consistent(self) -> AnomalyRule:
        if (self.kind == "ratio") != (self.per is not None):
            raise ValueError("a ratio rule needs `per` (the divisor); other rules have none")
        if self.window <= 0:
            raise ValueError("window must be longer than 0")
        if self.kind == "spike" and METRICS[self.metric].how != "sum" and not self.baseline:
            raise ValueError("a spike rule on a metric counted per key has no hour-of-week "
                             "usual: it needs `baseline`, the window its usual comes from")
        if self.baseline is not None and self.baseline <= self.window:
            raise ValueError("baseline must be longer than window: the usual is learned "
                             "over more than the window judged")
        if self.kind == "ceiling" and (self.watch or self.suspend):
            raise ValueError("a ceiling is a hard cap: it takes `respond`, not chances")
        if self.watch is not None and self.suspend is not None and self.suspend >= self.watch:
            raise ValueError("suspend must be a smaller chance than watch: stronger evidence")
        return self


class RuleTuning(_Model):
    """One system's own figures for a rule; what it leaves out is the rule's.
    `respond = "watch"`: that system's crossings only alert (a weighing
    rule loses its `suspend`)."""

    threshold: float | None = Field(default=None, ge=0)
    watch: Chance | None = None
    suspend: Chance | None = None
    respond: Literal["suspend", "watch"] | None = None


def _tuning(value: object) -> object:
    """A system's figure for a rule: a number is its threshold."""
    return {"threshold": value} if isinstance(value, int | float) and \
        not isinstance(value, bool) else value


def tuned(rule: AnomalyRule, tuning: RuleTuning) -> AnomalyRule:
    """`rule` as one system has it. ValueError when the result is not a
    rule (suspend not below watch, a chance on a ceiling)."""
    update = tuning.model_dump(exclude_none=True)
    if tuning.respond == "watch":
        update["suspend"] = None
    try:
        mine = AnomalyRule.model_validate({**rule.model_dump(), **update})
    except ValidationError as e:
        raise ValueError("; ".join(err["msg"].removeprefix("Value error, ")
                                   for err in e.errors())) from None
    if tuning.respond == "suspend" and mine.watch is not None and mine.suspend is None:
        raise ValueError("a rule that weighs evidence suspends at a chance: give `suspend` "
                         "(say 1e-7), not `respond`")
    return mine


def _rule(name: str, kind: str, metric: str, window: str, threshold: float,
          **more: object) -> AnomalyRule:
    return AnomalyRule.model_validate({"name": name, "kind": kind, "metric": metric,
                                       "window": window, "threshold": threshold, **more})


WEEK = "7d"  # where each system's usual is learned: long enough for its weekly rhythm
WATCH, SUSPEND = 1e-3, 1e-7  # chances: one in a thousand alerts, one in ten million stops

# Defaults for a government gateway; the reasoning of each is in README
# ("Anomaly rules"). Only evidence of what gets the gateway's addresses
# listed suspends: bounces, blocklist refusals, mail to domains the system
# never wrote to, one address again and again; each judged against the
# system's own usual, so a ministry and a school are held to their own.
# Volume alone, refusals at the gateway and remote throttling only watch:
# a backlog flushed at once, a reporting rush, a misconfigured client are
# not abuse, and stopping them protects no address.

# evidence of what gets the gateway's addresses listed, judged on the system
_EVIDENCE = (
    _rule("bounce_rate_1h", "ratio", "perm_failures", "1h", 0.05, per="attempts",
          baseline=WEEK, factor=3, prior=0.02, min_count=10, min_sample=20,
          watch=WATCH, suspend=SUSPEND),
    _rule("blocklist_rate_1h", "ratio", "blocklist_rejections", "1h", 0.02, per="attempts",
          baseline=WEEK, factor=3, prior=0.002, min_count=5, min_sample=10,
          watch=WATCH, suspend=SUSPEND),
    _rule("new_domains_1h", "ratio", "to_new_domains", "1h", 0.05, per="messages",
          baseline=WEEK, factor=3, prior=0.3, min_count=15, min_sample=20,
          watch=WATCH, suspend=SUSPEND),
)
DEFAULT_RULES = (
    *_EVIDENCE,
    # one mailbox to one address, against the most the system usually sends
    # to one address in its busy hours (a robot's own pattern), over an
    # hour for a fast loop and over three for one that goes on at a pace a
    # person could keep up for an hour but not all afternoon; and the same
    # over the few pairs mailed most, for a loop among a handful of
    # addresses, each under one pair's line, all of them far over it
    *(_rule(f"mail_loop{few}_{w}", "spike", metric, w, 3, baseline=WEEK,
            min_sample=20, floor=10, min_count=20, watch=WATCH, suspend=SUSPEND)
      for few, metric in (("", "top_pair"), ("_few", "top_few_pairs")) for w in ("1h", "3h")),
    # a week is one sample of each hour of the week: a holiday in it would
    # be the whole usual of that day; two weeks, averaged, halve it
    _rule("spike_1h", "spike", "messages", "1h", 3, baseline=WEEK, min_sample=50, floor=1,
          min_history="14d", watch=WATCH),
    _rule("deferral_rate_1h", "ratio", "deferrals", "1h", 0.3, per="attempts",
          baseline=WEEK, factor=3, prior=0.05, min_count=50, min_sample=100, watch=WATCH),
    _rule("rejections_10m", "ceiling", "rejections", "10m", 50, respond="watch"),
    # a login's password guessed: an alert, as the refused logins harm no address
    _rule("auth_failures_10m", "ceiling", "auth_failures", "10m", 20, respond="watch"),
    # one login used from more than ten addresses in an hour: its password
    # is in other hands; that login alone is restricted
    _rule("login_spread_1h", "ceiling", "login_clients", "1h", 10, scope="sender"),
    # the same evidence on each sender's own traffic: one compromised mailbox
    # is restricted while the agency's other senders flow, also in a
    # ministry whose own traffic hides it; a restricted sender's traffic no
    # longer counts against its system, a system rule crossed by one
    # sender's traffic restricts that sender (anomaly/judge.py), and
    # [anomaly.senders] suspends the system when the trouble spreads
    # (held to the fleet's prior, not to a week of their own: a sender is
    # forgotten once its longest window has passed since its last message,
    # so its week would mostly be empty, and it would double what each
    # sender costs)
    *(r.model_copy(update={"name": f"sender_{r.name}", "scope": "sender", "baseline": None})
      for r in _EVIDENCE),
    # a mailbox's drip of spam, a few bounces an hour, never reaches an
    # hour's least count of failures; over a working day's six hours the
    # same line (held to the prior) has the evidence
    _EVIDENCE[0].model_copy(update={"name": "sender_bounce_rate_6h", "scope": "sender",
                                    "baseline": None, "window": 6 * 3600.0}),
)


class Senders(_Model):
    """Restrictions of single senders, and when they become the system's."""

    # senders of one system counted at a time: the recently active stay, the
    # idle go
    max_per_system: int = Field(default=2000, ge=1)
    # the system is suspended when this many of its senders were restricted
    # within `escalate_window` (two mailboxes of one agency in an hour is
    # rarely chance: a phishing wave inside it, or its own server), or when a
    # sender first seen after one of its senders was restricted is
    # restricted too (a spammer changing MAIL FROM; with 2, the first rule
    # covers it)
    escalate_after: int = Field(default=2, ge=2)
    escalate_window: Duration = 3600.0


class Anomaly(_Model):
    rules: list[AnomalyRule] = Field(default_factory=lambda: list(DEFAULT_RULES))
    senders: Senders = Field(default_factory=Senders)

    @field_validator("rules")
    @classmethod
    def _unique(cls, v: list[AnomalyRule]) -> list[AnomalyRule]:
        names = [r.name for r in v]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"rule names must be unique: {sorted(dup)}")
        return v


def _resolvers(v: list[str]) -> list[str]:
    for item in v:
        host, _ = _hostport(item, 53)
        ipaddress.ip_address(host)  # a resolver is an address, never a name
    return v


def _token_hash(v: str | None) -> str | None:
    if v is not None and not hashing.is_token_hash(v):
        raise ValueError("expected a sha256$... hash from `mailgw hash-token`, not a token")
    return v


class Auth(_Model):
    username: str = Field(min_length=1, max_length=256)
    password_hash: str

    @field_validator("password_hash")
    @classmethod
    def _hashed(cls, v: str) -> str:
        if not hashing.is_password_hash(v):
            raise ValueError("expected a scrypt hash from `mailgw hash-password`, not a password")
        return v


class System(_Model):
    id: str
    name: str
    owners: list[str] = Field(min_length=1)
    networks: list[Network] = Field(default_factory=list)
    sender_domains: list[str] = Field(min_length=1)
    auth: list[Auth] = Field(default_factory=list)
    status_token_hash: str | None = None
    # rule name -> this system's threshold, or its own figures (RuleTuning)
    anomaly: dict[str, Annotated[RuleTuning, BeforeValidator(_tuning)]] = Field(
        default_factory=dict)
    # who a message's sender is (mailgw/senders.py): its envelope sender, or
    # its SMTP AUTH login where each mailbox logs in with its own
    sender_by: Literal["envelope", "login"] = "envelope"
    subaddress: str | None = Field(default=None, min_length=1, max_length=1)  # e.g. "+"

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _SYSTEM_ID.match(v):
            raise ValueError(f"expected lower-case letters, digits, - and _, got {v!r}")
        return v

    @field_validator("owners")
    @classmethod
    def _owners(cls, v: list[str]) -> list[str]:
        for addr in v:
            if not _EMAIL.match(addr):
                raise ValueError(f"expected an email address, got {addr!r}")
        return v

    @field_validator("networks", mode="before")
    @classmethod
    def _networks(cls, v: object) -> object:
        if not isinstance(v, list):
            return v
        out = []
        for item in v:
            try:
                out.append(ipaddress.ip_network(item, strict=True))
            except ValueError as e:
                raise ValueError(f"expected a network in CIDR form, got {item!r} ({e})") from None
        return out

    @field_validator("sender_domains")
    @classmethod
    def _sender_domains(cls, v: list[str]) -> list[str]:
        return [_domain(d) for d in v]

    _token = field_validator("status_token_hash")(classmethod(lambda cls, v: _token_hash(v)))

    @model_validator(mode="after")
    def _reachable(self) -> System:
        if not self.networks and not self.auth:
            raise ValueError("a system needs networks or auth credentials, or it can never relay")
        return self


class OperatorToken(_Model):
    name: str = Field(min_length=1)  # who holds it
    token_hash: str

    _token = field_validator("token_hash")(classmethod(lambda cls, v: _token_hash(v)))


class Http(_Model):
    """The status API and page, metrics and health check."""

    listen: list[Annotated[Listen, _listen(8025)]] = Field(
        default_factory=lambda: [Listen(host="127.0.0.1", port=8025)]
    )  # empty: no HTTP
    operator_tokens: list[OperatorToken] = Field(default_factory=list)
    tls: TLSFiles | None = None
    # the page's sign-in cookie is sent over HTTPS only; browsers make an
    # exception for http://localhost
    secure_cookie: bool = True


# Widely used IP blocklists. Spamhaus (and some others) refuse queries that
# come through big public resolvers: point `dnsbl.resolver` at your own.
DEFAULT_ZONES = ("zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org",
                 "psbl.surriel.com", "dnsbl-1.uceprotect.net")


class Dnsbl(_Resolving):
    """Watching the egress addresses (delivery.source_addresses) on DNSBLs."""

    zones: list[str] = Field(default_factory=lambda: list(DEFAULT_ZONES))
    interval: Duration = 900.0
    timeout: Duration = 5.0

    _zones = field_validator("zones")(classmethod(lambda cls, v: [_domain(z) for z in v]))


class State(_Model):
    backend: Literal["embedded", "redis"] = "embedded"
    # one server, a Sentinel group or a cluster (mailgw/state/redis_client.py)
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "mailgw:"
    tls_ca_file: Path | None = None  # rediss://: the CA that signed Redis's certificate
    sentinel_password: str | None = None  # sentinels that want a password of their own

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        if not v.startswith(redis_client.SCHEMES):
            raise ValueError("expected redis://[:password@]host:port/db, rediss://..., "
                             "unix://path, redis+sentinel://host:port[,host:port...]/service "
                             "or redis+cluster://host:port[,host:port...]")
        redis_client.group(v)  # a malformed group says what is wrong
        return v

    @field_validator("redis_prefix")
    @classmethod
    def _redis_prefix(cls, v: str) -> str:
        # the keys' hash tags ({system}) are mailgw's: a brace here would move them
        if not v or "{" in v or "}" in v:
            raise ValueError("expected a non-empty prefix without braces, such as \"mailgw:\"")
        return v


class Config(_Model):
    gateway: Gateway = Field(default_factory=Gateway)
    limits: Limits = Field(default_factory=Limits)
    delivery: Delivery = Field(default_factory=Delivery)
    dkim: list[DKIMKey] = Field(default_factory=list)
    anomaly: Anomaly = Field(default_factory=Anomaly)
    state: State = Field(default_factory=State)
    http: Http = Field(default_factory=Http)
    dnsbl: Dnsbl = Field(default_factory=Dnsbl)
    systems: list[System] = Field(default_factory=list)
    source: Path | None = None

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        seen_ids: dict[str, int] = {}
        seen_nets: dict[Network, str] = {}
        seen_users: dict[str, str] = {}
        ids: list[object] = [s.id for s in self.systems]
        for i, system in enumerate(self.systems):
            named = _system_key(ids, i)
            if system.id in seen_ids:
                raise _KeyError(f"{named}.id", f"duplicate system id {system.id!r}")
            seen_ids[system.id] = i
            for j, net in enumerate(system.networks):
                other = seen_nets.setdefault(net, system.id)
                if other != system.id:
                    raise _KeyError(f"{named}.networks[{j}]",
                                    f"{net} is already a network of {other!r}")
            for j, cred in enumerate(system.auth):
                other = seen_users.setdefault(cred.username, system.id)
                if other != system.id:
                    raise _KeyError(
                        f"{named}.auth[{j}].username",
                        f"{cred.username!r} is already a login of {other!r}",
                    )
        rules = {r.name: r for r in self.anomaly.rules}
        for i, system in enumerate(self.systems):
            for name, tuning in system.anomaly.items():
                named = f"{_system_key(ids, i)}.anomaly.{name}"
                if name not in rules:
                    raise _KeyError(named, f"no rule named {name!r} in [anomaly]")
                try:
                    tuned(rules[name], tuning)
                except ValueError as e:
                    raise _KeyError(named, str(e)) from None
        seen_dkim: set[str] = set()
        for i, key in enumerate(self.dkim):
            if key.domain in seen_dkim:
                raise _KeyError(f"dkim[{i}].domain", f"two keys for {key.domain!r}")
            seen_dkim.add(key.domain)
        if self.gateway.reuse_port and self.state.backend != "redis":
            raise _KeyError(
                "gateway.reuse_port", "gateways sharing a port must count and suspend together: "
                "set state.backend = \"redis\""
            )
        if any(s.auth for s in self.systems) and self.gateway.tls is None:
            raise _KeyError(
                "gateway.tls", "SMTP AUTH is offered only after STARTTLS; set cert and key"
            )
        return self

    def resolve_paths(self, base: Path) -> Config:
        """Relative paths in the file are relative to the file's directory."""

        def rel(p: Path) -> Path:
            return p if p.is_absolute() else base / p

        gw = self.gateway
        tls = gw.tls and gw.tls.model_copy(
            update={"cert": rel(gw.tls.cert), "key": rel(gw.tls.key)}
        )
        gateway = gw.model_copy(
            update={
                "spool_dir": rel(gw.spool_dir),
                "event_log": rel(gw.event_log),
                "state_file": rel(gw.state_file),
                "templates_dir": gw.templates_dir and rel(gw.templates_dir),
                "tls": tls,
            }
        )
        ca = self.delivery.tls_ca_file
        delivery = self.delivery.model_copy(update={"tls_ca_file": ca and rel(ca)})
        dkim = [k.model_copy(update={"key_file": rel(k.key_file)}) for k in self.dkim]
        http_tls = self.http.tls and self.http.tls.model_copy(
            update={"cert": rel(self.http.tls.cert), "key": rel(self.http.tls.key)})
        http = self.http.model_copy(update={"tls": http_tls})
        redis_ca = self.state.tls_ca_file
        state = self.state.model_copy(update={"tls_ca_file": redis_ca and rel(redis_ca)})
        return self.model_copy(update={"gateway": gateway, "delivery": delivery, "dkim": dkim,
                                       "http": http, "state": state})


class _KeyError(ValueError):
    """A cross-field error that knows which key it is about."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


def _system_key(ids: list[object], i: int) -> str:
    """A system as an error names it: `systems[mfa]` by its id when that is
    a valid one that no other system has, else `systems[3]` by its place."""
    sid = ids[i] if i < len(ids) else None
    named = isinstance(sid, str) and _SYSTEM_ID.match(sid) and ids.count(sid) == 1
    return f"systems[{sid if named else i}]"


def _format_loc(loc: tuple[object, ...], raw: dict[str, object]) -> str:
    if len(loc) >= 2 and loc[0] == "systems" and isinstance(loc[1], int):
        systems = raw.get("systems")
        ids = [s.get("id") if isinstance(s, dict) else None
               for s in (systems if isinstance(systems, list) else [])]
        out, loc = _system_key(ids, loc[1]), loc[2:]
    else:
        out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "is-instance[")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


# keys whose value may be a secret pasted in the wrong place: an error about
# one never shows what it holds
_SECRET_KEY = re.compile(r"(?:^|_)(?:hash|password|token|secret)$|^redis_url$")


def _secret(loc: tuple[object, ...]) -> bool:
    return any(isinstance(part, str) and _SECRET_KEY.search(part) for part in loc)


def load(path: str | Path) -> Config:
    """Read, parse and validate a config file; ConfigError names file and key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: TOML syntax error: {e}") from None
    if "source" in raw:
        raise ConfigError(f"{path}: source: unknown key")
    try:
        config = Config.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            ctx_err = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_err, _KeyError):
                lines.append(f"{path}: {ctx_err.key}: {ctx_err.message}")
                continue
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] == "missing":
                msg = "required key is missing"
            quiet = (err["type"] in ("missing", "extra_forbidden") or "got " in msg
                     or _secret(err["loc"]))
            got = "" if quiet else f" (got {err['input']!r})"
            lines.append(f"{path}: {_format_loc(err['loc'], raw)}: {msg}{got}")
        raise ConfigError("\n".join(lines)) from None
    return config.resolve_paths(path.resolve().parent).model_copy(update={"source": path})
