"""Decisions against labels.

A decision belongs to an incident when it is on the incident's system
between its start and `grace` (1 h) after its last message (bounces come
in after the messages that cause them); a `restrict` must also name the
incident's sender. An incident is caught by the first `suspend` or
`restrict` that belongs to it: time to it from the incident's start, and
the leak, the incident's messages accepted up to it (the crossing message
is relayed). A missed incident leaks all of its messages. Every other
`suspend` is a false suspension, every other `restrict` a false
restriction; `watch` decisions are alerts, counted apart, true when they
belong to an incident. Attribution is by system and time only: a rule that
happens to fire on a system while an incident runs there counts as a catch
(the rule named in the table tells).
"""

from __future__ import annotations

import bisect
import statistics
from typing import Any

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


def score(labels: dict[str, Any], decisions: list[dict[str, Any]], grace: float) -> dict[str, Any]:
    systems = {s["id"]: s for s in labels["systems"]}
    incidents = labels["incidents"]
    by_system: dict[str, list[dict[str, Any]]] = {}
    for inc in incidents:
        by_system.setdefault(inc["system"], []).append(inc)
    catches: dict[str, list[dict[str, Any]]] = {inc["id"]: [] for inc in incidents}
    false_suspensions, false_restrictions = [], []
    watch = {"true": 0, "false": 0, "false_list": []}
    for d in sorted(decisions, key=lambda d: d["ts"]):
        action = d.get("action", "suspend")
        mine = next((inc for inc in by_system.get(d["system"], ())
                     if inc["start"] <= d["ts"] <= inc["end"] + grace
                     and (action != "restrict" or d.get("sender") == inc["sender"])), None)
        if mine is not None:
            if action == "watch":
                watch["true"] += 1
            else:
                catches[mine["id"]].append(d)
            continue
        row = _false(d, systems, labels["cases"])
        if action == "watch":
            watch["false"] += 1
            watch["false_list"].append(row)
        elif action == "restrict":
            false_restrictions.append(row)
        else:
            false_suspensions.append(row)
    rows = [_incident(inc, systems, catches[inc["id"]]) for inc in incidents]
    return {"incidents": rows, "false_suspensions": false_suspensions,
            "false_restrictions": false_restrictions, "watch": watch,
            "totals": _totals(labels, rows, false_suspensions, false_restrictions, watch)}


def _incident(inc: dict[str, Any], systems: dict[str, Any],
              catches: list[dict[str, Any]]) -> dict[str, Any]:
    row = {"id": inc["id"], "kind": inc["kind"], "system": inc["system"],
           "size_class": systems[inc["system"]]["size_class"], "start": inc["start"],
           "end": inc["end"], "messages": inc["messages"], "recipients": inc["recipients"],
           "caught": bool(catches), "decisions": len(catches)}
    if catches:
        first = catches[0]
        row.update(rule=first.get("rule"), action=first.get("action", "suspend"),
                   at=first["ts"], delay=first["ts"] - inc["start"],
                   leak=bisect.bisect_right(inc["accepted"], first["ts"]))
    else:
        row.update(rule=None, action=None, at=None, delay=None, leak=inc["messages"])
    return row


def _false(d: dict[str, Any], systems: dict[str, Any],
           cases: list[dict[str, Any]]) -> dict[str, Any]:
    s = systems.get(d["system"], {})
    return {"system": d["system"], "size_class": s.get("size_class", "?"),
            "daily": s.get("daily"), "rule": d.get("rule"), "action": d.get("action", "suspend"),
            "sender": d.get("sender"), "observed": d.get("observed"),
            "threshold": d.get("threshold"), "ts": d["ts"],
            "reason": (f"sender {d.get('sender')}; " if d.get("action") == "restrict" else "")
            + _reason(d, s, cases)}


def _reason(d: dict[str, Any], system: dict[str, Any], cases: list[dict[str, Any]]) -> str:
    """The hard case going on then, if any; else what ordinary traffic the
    rule reads."""
    ts, rule = d["ts"], str(d.get("rule", ""))
    found = []
    for c in cases:
        if c["system"] not in (None, d["system"]):
            continue
        if not c["start"] - HOUR <= ts <= c["end"] + HOUR:
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
    return f"ordinary traffic ({system.get('daily', 0):,.0f} a working day)"


def _totals(labels: dict[str, Any], rows: list[dict[str, Any]], false_s: list[dict[str, Any]],
            false_r: list[dict[str, Any]], watch: dict[str, Any]) -> dict[str, Any]:
    caught = [r for r in rows if r["caught"]]
    delays = [r["delay"] for r in caught]
    leaks = [r["leak"] for r in rows]
    system_days = sum(s["active_days"] for s in labels["systems"])
    by_rule: dict[str, int] = {}
    for f in false_s:
        by_rule[f["rule"]] = by_rule.get(f["rule"], 0) + 1
    return {
        "incidents": len(rows), "caught": len(caught),
        "delay_median": statistics.median(delays) if delays else None,
        "delay_max": max(delays) if delays else None,
        "leak_median": statistics.median(leaks) if leaks else None,
        "leak_max": max(leaks) if leaks else None,
        "false_suspensions": len(false_s),
        "false_suspensions_by_rule": dict(sorted(by_rule.items(), key=lambda x: -x[1])),
        "systems_falsely_suspended": len({f["system"] for f in false_s}),
        "systems": len(labels["systems"]), "system_days": system_days,
        "false_per_1000_system_days": 1000 * len(false_s) / max(1, system_days),
        "false_restrictions": len(false_r),
        "watch_true": watch["true"], "watch_false": watch["false"],
    }
