"""Tables for a terminal, and everything as JSON for comparisons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from .clock import local

TARGETS = ("every incident caught, 0 false suspensions, median leak <= 100, max leak <= 300; "
           "sender rules: collateral 0 for a single-mailbox compromise, leak no worse than "
           "system-level suspension")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def number(x: float | None) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not x.is_integer():
        return f"{x:.4g}" if abs(x) < 1 else f"{x:,.1f}"
    return f"{int(x):,}"


def table(header: list[str], rows: list[list[str]], right: frozenset[int] = frozenset()) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [v.rjust(w) if i in right else v.ljust(w)
                 for i, (v, w) in enumerate(zip(row, widths, strict=True))]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def incidents(result: dict[str, Any]) -> str:
    rows = [[r["id"], r["kind"], r["system"], r["size_class"], str(r["senders"]),
             local(r["start"]), duration(r["end"] - r["start"]), number(r["messages"]),
             r["how"], r["rule"] or "-", duration(r["delay"]), duration(r["contained_after"]),
             number(r["leak"]), number(r["collateral"]), number(r["own"])]
            for r in result["incidents"]]
    return table(["id", "kind", "system", "size", "snd", "start (local)", "lasted", "messages",
                  "how", "rule", "after", "contained", "leak", "collateral", "own"], rows,
                 frozenset({4, 6, 7, 10, 11, 12, 13, 14}))


def falses(items: list[dict[str, Any]], collateral: bool = True) -> str:
    rows = [[f["system"], f["size_class"], f["rule"] or "-", number(f["observed"]),
             number(f["threshold"]), local(f["ts"])]
            + ([number(f.get("collateral"))] if collateral else []) + [f["reason"]]
            for f in items]
    return table(["system", "size", "rule", "observed", "threshold", "when (local)"]
                 + (["refused"] if collateral else []) + ["reason (guess)"], rows,
                 frozenset({3, 4, 6} if collateral else {3, 4}))


def totals(t: dict[str, Any], labels: dict[str, Any], replay: dict[str, Any]) -> str:
    p = labels["params"]
    rules = ", ".join(f"{k} {v}" for k, v in t["false_suspensions_by_rule"].items()) or "-"
    speed = f"{replay['events'] / replay['seconds']:,.0f} events/s"
    if replay["mode"] == "stream":
        how = (f"{replay['seconds']:.1f} s, {speed}: one replay, each suspension lifted "
               f"an hour after it ({replay['events'] - replay['trace_events']:,} lifts)")
    else:
        done = "" if replay["converged"] else ", NOT converged"
        how = (f"{replay['seconds']:.1f} s for the trace, {speed}; {len(replay['passes'])} "
               f"passes{done}, {sum(x['seconds'] for x in replay['passes']):.0f} s in all")
    ways = ", ".join(f"{k} {v}" for k, v in t["contained_by"].items())
    lines = [
        ("incidents caught", f"{t['caught']} / {t['incidents']}, contained {t['contained']} "
                             f"({ways})"),
        ("time to decision", f"median {duration(t['delay_median'])}, "
                             f"max {duration(t['delay_max'])} (incidents caught)"),
        ("time to containment", f"median {duration(t['contained_median'])}, "
                                f"max {duration(t['contained_max'])} (incidents contained)"),
        ("leak (messages)", f"median {number(t['leak_median'])}, max {number(t['leak_max'])}, "
                            f"total {number(t['leak_total'])} (a missed incident leaks all)"),
        ("collateral", f"{number(t['collateral_total'])} messages of other senders refused in "
                       f"{t['incidents_with_collateral']} incidents (max "
                       f"{number(t['collateral_max'])}; "
                       f"{number(t['collateral_lift_total'])} to the operator's lift)"),
        ("  single mailbox", f"{t['single_mailbox']} incidents: collateral "
                             f"{number(t['single_mailbox_collateral'])}, leak "
                             f"{number(t['single_mailbox_leak'])}"),
        ("  own mail refused", f"{number(t['own_total'])} ordinary messages of incident senders"),
        ("escalations", f"{t['escalations']} incidents contained by one, "
                        f"{t['false_escalations']} false"),
        ("false suspensions", f"{t['false_suspensions']} on {t['systems_falsely_suspended']} of "
                              f"{t['systems']} systems, {t['false_per_1000_system_days']:.1f} per "
                              f"1,000 system-days, "
                              f"{number(t['false_suspension_collateral'])} messages refused"),
        ("  by rule", rules),
        ("false restrictions", f"{t['false_restrictions']} of "
                               f"{t['senders_falsely_restricted']} senders, "
                               f"{t['false_restrictions_per_1000_system_days']:.1f} per 1,000 "
                               f"system-days, {number(t['false_restriction_collateral'])} "
                               "messages refused"),
        ("watch alerts", f"{t['watch_true']} during incidents, {t['watch_false']} false"),
        ("trace", f"{labels['events']:,} events, {p['days']} days, {p['systems']} systems, "
                  f"seed {p['seed']}, scale {p['scale']:g}"),
        ("replay", how),
        ("targets", TARGETS),
    ]
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in lines)


def show(result: dict[str, Any], labels: dict[str, Any], replay: dict[str, Any]) -> None:
    print("\nIncidents\n")
    print(incidents(result))
    print(f"\nFalse suspensions: {len(result['false_suspensions'])}\n")
    if result["false_suspensions"]:
        print(falses(result["false_suspensions"]))
    if result["false_restrictions"]:
        print(f"\nFalse restrictions: {len(result['false_restrictions'])}\n")
        print(falses(result["false_restrictions"]))
    if result["watch"]["false_list"]:
        print(f"\nFalse watch alerts: {result['watch']['false']}\n")
        print(falses(result["watch"]["false_list"], collateral=False))
    print("\nTotals\n")
    print(totals(result["totals"], labels, replay))


def write_json(path: Path, result: dict[str, Any], labels: dict[str, Any],
               replay: dict[str, Any], decisions: list[dict[str, Any]], config: str) -> None:
    doc = {"params": labels["params"], "config": config, "events": labels["events"],
           "event_kinds": labels["event_kinds"], "replay": replay, "targets": TARGETS,
           **result, "decisions": decisions, "systems": labels["systems"],
           "cases": labels["cases"]}
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
