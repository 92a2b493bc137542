"""Decisions against labels: what each incident leaked, what stopping it
cost the system's other senders, and what every false decision cost.

Who a decision stops. A `suspend` stops the whole system: every later
message of it is refused (450) until it is lifted. A `restrict` stops one
sender (as mailgw/senders.py attributes it: the envelope sender, domain
lower-cased, `+tag` dropped where the system declares `subaddress`): that
sender's later messages only. The gateway also suspends a system on its
own when its senders' restrictions pile up (config `[anomaly.senders]`):
`escalate_after` (3) senders restricted within `escalate_window` (1 h), or
a sender restricted whose first message came after an earlier restriction
of the system within the window (a spammer rotating MAIL FROM). That is
decided outside the engine, so replay never prints it: `escalations`
works it out from the `restrict` decisions and the trace's messages, and
an escalation stops the system like a `suspend`. While an escalation's
suspension holds (`lift_after`, the operator's hour) no other is counted,
and the restrictions before it no longer count towards the next.

A decision belongs to an incident when it is on the incident's system
between its start and `grace` (1 h) after its last message (bounces come
after the messages that cause them); a `restrict` must also name one of
the incident's senders. Attribution of a suspension is by system and time
only: a rule that happens to fire on a system while an incident runs
there counts (the rule named in the table tells).

Per incident: each of its senders is stopped at the earlier of its own
first restriction and the system's first suspension or escalation; an
incident message is leaked when it was accepted at or before its sender's
stop (the crossing message is relayed). The incident is contained at the
moment after which none of its messages leaked (when its last message
leaked: once all of its senders were stopped, if ever), and `how` says
what did it: `restrict` (k of n senders), `suspend`, `escalation`. The
collateral: the messages of the system's other senders accepted after
the system's stop up to the incident's end, which a suspended system
would have had refused with 450 (`collateral_lift` counts on to an
operator's lift, `lift_after` after the stop, if that is later); `own`:
the incident senders' own ordinary mail refused up to the end (a shared
role address restricted stops its honest mail too). A restriction costs
the other senders nothing.

Every other decision is false: a `suspend` (or an escalation while the
system was not already suspended) a false suspension, its collateral the
system's messages in the `lift_after` after it; a `restrict` a false
restriction, its collateral that sender's messages in the `lift_after`
after it; `watch` decisions are alerts, counted apart.
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from mailgw.senders import Policy, identity

from .clock import HOUR

OUTCOMES = ("bounce", "perm", "fail", "blocklist")
# the hard cases that last the whole trace or touch every system explain
# only the rules that read what they change (by words in the rule's name);
# one of the system's own, going on at the time, explains any rule
EXPLAINS = {
    "blocklist_partner": OUTCOMES,
    "misconfigured_client": ("reject",),
    "daily_batch": ("message", "spike", "recipient", "one_", "top"),
    "destination_outage": ("defer", "attempt"),
    "destination_refusing": OUTCOMES,
    "egress_listed": OUTCOMES,
}
WHOLE_TRACE = {"blocklist_partner", "misconfigured_client", "daily_batch"}
# one mailbox compromised: what sender-level containment should stop alone
SINGLE_MAILBOX = {"spam_random", "night_drip", "night_burst", "ministry_compromise",
                  "blocklist_spam", "mailbox_spam", "mailbox_drip"}
INF = float("inf")


@dataclass
class Messages:
    """A system's messages (its own traffic, `accepted`), in time order,
    with their senders as attributed."""

    times: list[float] = field(default_factory=list)
    senders: list[str | None] = field(default_factory=list)
    first: dict[str, float] = field(default_factory=dict)  # sender -> its first message

    def add(self, ts: float, sender: str | None) -> None:
        self.times.append(ts)
        self.senders.append(sender)
        if sender is not None and sender not in self.first:
            self.first[sender] = ts

    def between(self, after: float, until: float, senders: Iterable[str] | None = None,
                but: frozenset[str] = frozenset()) -> int:
        """Messages in (after, until]: of `senders` only if given, of none of `but`."""
        lo = bisect.bisect_right(self.times, after)
        hi = bisect.bisect_right(self.times, until)
        if senders is not None:
            wanted = set(senders)
            return sum(1 for s in self.senders[lo:hi] if s in wanted)
        if not but:
            return hi - lo
        return sum(1 for s in self.senders[lo:hi] if s not in but)


def policies(labels: dict[str, Any]) -> dict[str, Policy]:
    return {s["id"]: Policy("envelope", s.get("subaddress")) for s in labels["systems"]}


def read_messages(path: Path, labels: dict[str, Any]) -> dict[str, Messages]:
    """Every system's own messages in the trace (not the gateway's DSNs)."""
    pol = policies(labels)
    out: dict[str, Messages] = {}
    with open(path, "rb") as f:
        for line in f:
            if b'"event":"accepted"' not in line or b'"origin"' in line:
                continue
            e = orjson.loads(line)
            system = e.get("system")
            if system is None:
                continue
            who = identity(e.get("sender") or "", e.get("auth"), pol.get(system, Policy()))
            out.setdefault(system, Messages()).add(e["ts"], who)
    return out


def escalations(decisions: list[dict[str, Any]], messages: dict[str, Messages],
                after: int = 3, window: float = HOUR,
                lift_after: float = HOUR) -> list[dict[str, Any]]:
    """The gateway's suspensions of systems whose senders' restrictions
    piled up (the module's docstring), as decisions of action "escalate"."""
    out = []
    restricted: dict[str, list[tuple[float, str]]] = {}  # since the last escalation
    held: dict[str, float] = {}  # system -> until when its escalation holds
    for d in sorted(decisions, key=lambda d: d["ts"]):
        if d.get("action") != "restrict":
            continue
        system, sender, ts = d["system"], d.get("sender"), d["ts"]
        if ts < held.get(system, -INF):
            continue
        earlier = [(t, s) for t, s in restricted.get(system, []) if ts - window <= t <= ts]
        first = messages.get(system, Messages()).first.get(sender, ts) if sender else ts
        senders = {s for _, s in earlier} | {sender}
        why = None
        if len(senders) >= after:
            why = f"{len(senders)} senders restricted within {window / 60:g} min"
        elif any(first > t for t, s in earlier if s != sender):
            why = f"{sender}, first seen after a restriction, restricted"
        restricted[system] = [*earlier, (ts, sender)]
        if why:
            out.append({"ts": ts, "system": system, "action": "escalate",
                        "rule": "escalation", "why": why, "senders": sorted(s for s in senders
                                                                            if s)})
            held[system] = ts + lift_after
            restricted[system] = []
    return out


def score(labels: dict[str, Any], decisions: list[dict[str, Any]], grace: float,
          messages: dict[str, Messages] | None = None, lift_after: float = HOUR,
          escalate_after: int = 3, escalate_window: float = HOUR) -> dict[str, Any]:
    messages = messages if messages is not None else {}
    pol = policies(labels)
    systems = {s["id"]: s for s in labels["systems"]}
    incidents = labels["incidents"]
    by_system: dict[str, list[dict[str, Any]]] = {}
    for inc in incidents:
        by_system.setdefault(inc["system"], []).append(inc)
    decided = []
    for d in decisions:
        d = dict(d)
        if d.get("sender") is not None:
            d["sender"] = identity(d["sender"], None, pol.get(d["system"], Policy()))
        decided.append(d)
    escalated = escalations(decided, messages, escalate_after, escalate_window, lift_after)
    # when replay's own suspensions hold, as the bench's operator lifts them
    suspended: dict[str, list[float]] = {}
    for d in decided:
        if d.get("action", "suspend") == "suspend":
            suspended.setdefault(d["system"], []).append(d["ts"])
    catches: dict[str, list[dict[str, Any]]] = {inc["id"]: [] for inc in incidents}
    false_suspensions, false_restrictions = [], []
    watch: dict[str, Any] = {"true": 0, "false": 0, "false_list": []}
    for d in sorted(decided + escalated, key=lambda d: (d["ts"], d.get("action") == "escalate")):
        action = d.get("action", "suspend")
        mine = next((inc for inc in by_system.get(d["system"], ())
                     if inc["start"] <= d["ts"] <= inc["end"] + grace
                     and (action != "restrict" or d.get("sender") in inc["senders"])), None)
        if mine is not None:
            if action == "watch":
                watch["true"] += 1
            else:
                catches[mine["id"]].append(d)
            continue
        during = next((inc["id"] for inc in by_system.get(d["system"], ())
                       if inc["start"] <= d["ts"] <= inc["end"] + grace), None)
        row = _false(d, systems, labels["cases"], during)
        mail = messages.get(d["system"], Messages())
        if action == "watch":
            watch["false"] += 1
            watch["false_list"].append(row)
        elif action == "restrict":
            row["collateral"] = mail.between(d["ts"], d["ts"] + lift_after, [d["sender"]])
            false_restrictions.append(row)
        else:
            if action == "escalate" and any(t <= d["ts"] < t + lift_after
                                            for t in suspended.get(d["system"], ())):
                continue  # the system was suspended already: nothing more refused
            row["collateral"] = mail.between(d["ts"], d["ts"] + lift_after)
            false_suspensions.append(row)
    rows = [_incident(inc, systems, catches[inc["id"]], messages.get(inc["system"], Messages()),
                      lift_after) for inc in incidents]
    return {"incidents": rows, "false_suspensions": false_suspensions,
            "false_restrictions": false_restrictions, "watch": watch,
            "escalations": escalated,
            "totals": _totals(labels, rows, false_suspensions, false_restrictions, watch)}


def _incident(inc: dict[str, Any], systems: dict[str, Any], catches: list[dict[str, Any]],
              mail: Messages, lift_after: float) -> dict[str, Any]:
    senders: list[str] = inc["senders"]
    accepted: list[float] = inc["accepted"]
    by: list[int] = inc.get("by") or [0] * len(accepted)
    row: dict[str, Any] = {
        "id": inc["id"], "kind": inc["kind"], "system": inc["system"],
        "size_class": systems[inc["system"]]["size_class"], "start": inc["start"],
        "end": inc["end"], "messages": inc["messages"], "recipients": inc["recipients"],
        "senders": len(senders), "caught": bool(catches), "decisions": len(catches)}
    stop_system = next((d for d in catches if d.get("action", "suspend") in
                        ("suspend", "escalate")), None)
    system_at = stop_system["ts"] if stop_system else INF
    restricted = {}
    for d in catches:
        if d.get("action") == "restrict":
            restricted.setdefault(d["sender"], d["ts"])
    stop = {s: min(restricted.get(s, INF), system_at) for s in senders}
    leaked = [t <= stop[senders[i]] for t, i in zip(accepted, by, strict=True)]
    last = max((n for n, x in enumerate(leaked) if x), default=-1)
    later = {senders[i] for i in by[last + 1:]}
    if later:
        contained = max([stop[s] for s in later] + ([accepted[last]] if last >= 0 else []))
    else:
        contained = max(stop.values())
    if contained == INF:
        contained = None
    binding = {("restrict" if restricted.get(s, INF) < system_at else
                stop_system["action"] if stop_system else "-")
               for s in (later or senders) if stop[s] < INF}
    how = []
    if restricted:
        how.append(f"restrict {len(restricted)}/{len(senders)}")
    if stop_system and (stop_system["action"] != "restrict"):
        how.append("escalation" if stop_system["action"] == "escalate" else "suspend")
    if not catches:
        how = ["missed"]
    elif contained is None:
        how.append("(not contained)")
    first = catches[0] if catches else None
    row.update(
        how=", ".join(how), contained_by=sorted(binding - {"-"}),
        rule=(stop_system or first or {}).get("rule") if catches else None,
        action=first.get("action", "suspend") if first else None,
        at=first["ts"] if first else None,
        delay=first["ts"] - inc["start"] if first else None,
        contained_at=contained,
        contained_after=contained - inc["start"] if contained is not None else None,
        leak=sum(leaked),
        restricted=len(restricted), system_stop=stop_system["action"] if stop_system else None,
        system_stop_at=system_at if stop_system else None)
    mine = frozenset(senders)
    if stop_system:
        row["collateral"] = mail.between(system_at, inc["end"], but=mine)
        row["collateral_lift"] = mail.between(
            system_at, max(inc["end"], system_at + lift_after), but=mine)
    else:
        row["collateral"] = row["collateral_lift"] = 0
    # the incident senders' own mail refused: all of theirs after their
    # stop up to the end, less the incident's own messages then
    own = sum(mail.between(stop[s], inc["end"], [s]) for s in senders if stop[s] < inc["end"])
    row["own"] = max(0, own - (len(accepted) - sum(leaked)))
    return row


def _false(d: dict[str, Any], systems: dict[str, Any], cases: list[dict[str, Any]],
           during: str | None = None) -> dict[str, Any]:
    s = systems.get(d["system"], {})
    action = d.get("action", "suspend")
    note = f"during incident {during}; " if during else ""
    if action == "restrict" or d.get("sender"):
        note += f"sender {d.get('sender')}; "
    if action == "escalate":
        note += f"{d.get('why')}; "
    return {"system": d["system"], "size_class": s.get("size_class", "?"),
            "daily": s.get("daily"), "rule": d.get("rule"), "action": action,
            "sender": d.get("sender"), "observed": d.get("observed"),
            "threshold": d.get("threshold"), "ts": d["ts"], "during": during,
            "reason": note + _reason(d, s, cases)}


def _reason(d: dict[str, Any], system: dict[str, Any], cases: list[dict[str, Any]]) -> str:
    """The hard case going on then, if any; else what ordinary traffic the
    rule reads. A case about one mailbox explains a restriction of that
    mailbox only."""
    ts, rule = d["ts"], str(d.get("rule", ""))
    found = []
    for c in cases:
        if c["system"] not in (None, d["system"]):
            continue
        if not c["start"] - HOUR <= ts <= c["end"] + HOUR:
            continue
        if d.get("sender") and c.get("sender") and c["sender"] != d["sender"]:
            continue
        if (c["system"] is None and c["kind"] in WHOLE_TRACE) or (
                (c["system"] is None or c["kind"] in WHOLE_TRACE)
                and not any(w in rule for w in EXPLAINS.get(c["kind"], ()))):
            continue
        found.append(f"{c['kind']}: {c['note']}" if c["kind"] != "rush" else c["note"])
    if found:
        return "; ".join(dict.fromkeys(found))
    if "bounce" in rule or "perm" in rule:
        return f"ordinary bounces (usual {system.get('usual_bounce_rate', 0):.1%})"
    if "defer" in rule:
        return f"ordinary deferrals (usual {system.get('usual_deferral_rate', 0):.1%})"
    if "blocklist" in rule:
        return "ordinary refusals"
    if "domain" in rule:
        return "ordinary variety of correspondents"
    if "reject" in rule:
        return "ordinary refusals at the gateway"
    if d.get("sender") and d.get("sender") == system.get("robot"):
        return "the notification robot's ordinary mail"
    return f"ordinary traffic ({system.get('daily', 0):,.0f} a working day)"


def _spread(values: list[float]) -> tuple[float | None, float | None]:
    return (statistics.median(values), max(values)) if values else (None, None)


def _totals(labels: dict[str, Any], rows: list[dict[str, Any]], false_s: list[dict[str, Any]],
            false_r: list[dict[str, Any]], watch: dict[str, Any]) -> dict[str, Any]:
    caught = [r for r in rows if r["caught"]]
    delays = [r["delay"] for r in caught]
    contained = [r["contained_after"] for r in rows if r["contained_after"] is not None]
    leaks = [r["leak"] for r in rows]
    single = [r for r in rows if r["kind"] in SINGLE_MAILBOX]
    system_days = sum(s["active_days"] for s in labels["systems"])
    per = 1000 / max(1, system_days)
    by_rule: dict[str, int] = {}
    for f in false_s:
        by_rule[f["rule"]] = by_rule.get(f["rule"], 0) + 1
    how: dict[str, int] = {}
    for r in rows:
        key = "missed" if not r["caught"] else "not contained" if r["contained_at"] is None \
            else "+".join(r["contained_by"]) or "?"
        how[key] = how.get(key, 0) + 1
    collateral = [r["collateral"] for r in rows]
    return {
        "incidents": len(rows), "caught": len(caught), "contained": len(contained),
        "contained_by": dict(sorted(how.items())),
        "delay_median": _spread(delays)[0], "delay_max": _spread(delays)[1],
        "contained_median": _spread(contained)[0], "contained_max": _spread(contained)[1],
        "leak_median": _spread(leaks)[0], "leak_max": _spread(leaks)[1],
        "leak_total": sum(leaks),
        "collateral_total": sum(collateral), "collateral_max": max(collateral, default=0),
        "collateral_lift_total": sum(r["collateral_lift"] for r in rows),
        "incidents_with_collateral": sum(1 for c in collateral if c),
        "single_mailbox": len(single),
        "single_mailbox_collateral": sum(r["collateral"] for r in single),
        "single_mailbox_leak": sum(r["leak"] for r in single),
        "own_total": sum(r["own"] for r in rows),
        "escalations": sum(1 for r in rows if r["system_stop"] == "escalate"),
        "false_suspensions": len(false_s),
        "false_suspensions_by_rule": dict(sorted(by_rule.items(), key=lambda x: -x[1])),
        "false_escalations": sum(1 for f in false_s if f["action"] == "escalate"),
        "systems_falsely_suspended": len({f["system"] for f in false_s}),
        "systems": len(labels["systems"]), "system_days": system_days,
        "false_per_1000_system_days": per * len(false_s),
        "false_suspension_collateral": sum(f.get("collateral", 0) for f in false_s),
        "false_restrictions": len(false_r),
        "false_restrictions_per_1000_system_days": per * len(false_r),
        "false_restriction_collateral": sum(f.get("collateral", 0) for f in false_r),
        "senders_falsely_restricted": len({(f["system"], f["sender"]) for f in false_r}),
        "watch_true": watch["true"], "watch_false": watch["false"],
    }
