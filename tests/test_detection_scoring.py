"""bench/detection's scorer on a small hand-made trace: leak, collateral and
the escalation it models are what the definitions say (bench/README.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from detection_trace.score import Messages, escalations, score  # noqa: E402

H = 3600.0
T = 1_000_000.0  # the incident's start


def system(sid: str, subaddress: str | None = None) -> dict:
    return {"id": sid, "size_class": "small", "daily": 100.0, "active_days": 10,
            "subaddress": subaddress, "usual_bounce_rate": 0.01, "usual_deferral_rate": 0.01,
            "robot": f"noreply@{sid}.gov.kz"}


def incident(iid: str, sid: str, senders: list[str], accepted: list[float],
             by: list[int] | None = None, kind: str = "mailbox_spam") -> dict:
    return {"id": iid, "kind": kind, "system": sid, "start": T, "end": accepted[-1],
            "senders": senders, "by": by or [0] * len(accepted), "accepted": accepted,
            "messages": len(accepted), "recipients": len(accepted)}


def mail(*streams: tuple[str, list[float]]) -> Messages:
    m = Messages()
    for ts, who in sorted((t, who) for who, times in streams for t in times):
        m.add(ts, who)
    return m


BAD = "bad@a.gov.kz"
# the compromised mailbox: 10 spam messages a minute apart from T + 60
SPAM = [T + 60 * i for i in range(1, 11)]
# two colleagues: one message every 2 minutes from T (30 each over the hour)
ALICE = [T + 120 * i for i in range(30)]
BOB = [T + 120 * i + 30 for i in range(30)]


def one_mailbox(decisions: list[dict], **more: object) -> dict:
    labels = {"systems": [system("a", subaddress="+")], "cases": [],
              "incidents": [incident("01", "a", [BAD], SPAM)]}
    messages = {"a": mail((BAD, SPAM), ("alice@a.gov.kz", ALICE), ("bob@a.gov.kz", BOB))}
    return score(labels, decisions, H, messages, **more)


def test_a_restriction_leaks_up_to_it_and_costs_the_others_nothing():
    # the sender as the engine might name it: tag and capitals go (subaddress "+")
    d = {"ts": T + 60 * 4 + 5, "system": "a", "action": "restrict",
         "sender": "bad+x@A.GOV.KZ", "rule": "new_domains_sender"}
    row = one_mailbox([d])["incidents"][0]
    assert row["leak"] == 4  # T+60 .. T+240 went out, T+300 on was refused
    assert row["collateral"] == 0 and row["collateral_lift"] == 0
    assert row["how"] == "restrict 1/1" and row["contained_by"] == ["restrict"]
    assert row["contained_after"] == pytest.approx(60 * 4 + 5)


def test_a_suspension_leaks_as_much_and_refuses_the_colleagues_until_the_end():
    d = {"ts": T + 60 * 4 + 5, "system": "a", "action": "suspend", "rule": "bounce_rate_1h"}
    result = one_mailbox([d])
    row = result["incidents"][0]
    assert row["leak"] == 4 and row["how"] == "suspend"
    # alice and bob in (T+245, T+600]: alice at 360, 480, 600; bob at 270, 390, 510
    assert row["collateral"] == 6
    # to the operator's lift an hour after the suspension: all of theirs after it
    after = [t for t in ALICE + BOB if T + 245 < t <= T + 245 + H]
    assert row["collateral_lift"] == len(after)
    assert result["false_suspensions"] == []


def test_a_missed_incident_leaks_everything():
    row = one_mailbox([])["incidents"][0]
    assert row["how"] == "missed" and row["leak"] == len(SPAM)
    assert row["contained_at"] is None and row["collateral"] == 0


def test_false_decisions_carry_what_they_refused_in_the_hour_before_the_lift():
    later = T + 5 * H  # long after the incident and its grace
    alice = [t + 5 * H for t in ALICE]
    labels = {"systems": [system("a")], "cases": [], "incidents": [incident("01", "a", [BAD],
                                                                             SPAM)]}
    messages = {"a": mail((BAD, SPAM), ("alice@a.gov.kz", ALICE + alice), ("bob@a.gov.kz", BOB))}
    decisions = [{"ts": later, "system": "a", "action": "restrict", "sender": "alice@a.gov.kz",
                  "rule": "r"},
                 {"ts": T + 60, "system": "a", "action": "restrict", "sender": "bob@a.gov.kz",
                  "rule": "r"}]
    result = score(labels, decisions, H, messages)
    false = result["false_restrictions"]
    assert [f["sender"] for f in false] == ["bob@a.gov.kz", "alice@a.gov.kz"]
    assert false[0]["during"] == "01"  # a colleague restricted while the incident ran
    assert false[0]["collateral"] == sum(1 for t in BOB if T + 60 < t <= T + 60 + H)
    assert false[1]["collateral"] == 29  # alice's mail in (later, later + 1 h]
    assert result["totals"]["false_restrictions_per_1000_system_days"] == pytest.approx(200)
    assert result["incidents"][0]["how"] == "missed"


def test_a_rotating_sender_escalates_when_a_new_address_is_restricted():
    # three addresses of the system in turn, 4 messages each, a minute apart
    senders = ["x1@a.gov.kz", "x2@a.gov.kz", "x3@a.gov.kz"]
    times = [T + 60 * i for i in range(12)]
    by = [i // 4 for i in range(12)]
    labels = {"systems": [system("a")], "cases": [],
              "incidents": [incident("01", "a", senders, times, by, "sender_rotation")]}
    messages = {"a": mail(*((s, [t for t, b in zip(times, by, strict=True) if b == i])
                            for i, s in enumerate(senders)), ("alice@a.gov.kz", ALICE))}
    decisions = [
        # x1 restricted after its third message; x2 first sent at T+240, after it
        {"ts": T + 150, "system": "a", "action": "restrict", "sender": senders[0], "rule": "r"},
        {"ts": T + 330, "system": "a", "action": "restrict", "sender": senders[1], "rule": "r"},
    ]
    result = score(labels, decisions, H, messages)
    (esc,) = result["escalations"]
    assert esc["ts"] == T + 330 and "first seen" in esc["why"]
    row = result["incidents"][0]
    # x1: T+0..T+120 leaked (3); x2: T+240, T+300 leaked (2); after T+330 all refused
    assert row["leak"] == 5
    assert row["system_stop"] == "escalate" and row["contained_by"] == ["escalate"]
    assert row["how"] == "restrict 2/3, escalation"
    assert row["contained_at"] == T + 330
    # alice after T+330 up to the incident's last message (T+660): 360..600
    assert row["collateral"] == 3
    assert result["false_suspensions"] == []


def test_three_senders_restricted_within_the_window_escalate():
    messages = {"a": mail(*((f"p{i}@a.gov.kz", [T - H]) for i in range(4)))}
    decisions = [{"ts": T + 600 * i, "system": "a", "action": "restrict",
                  "sender": f"p{i}@a.gov.kz", "rule": "r"} for i in range(4)]
    # the first three within the hour: the third escalates; the fourth comes
    # while that escalation holds
    (esc,) = escalations(decisions, messages, after=3, window=H, lift_after=H)
    assert esc["ts"] == T + 1200 and esc["senders"] == ["p0@a.gov.kz", "p1@a.gov.kz",
                                                         "p2@a.gov.kz"]
    # two an hour apart and more never do (all seen long before)
    spread = [{**d, "ts": T + 4000 * i} for i, d in enumerate(decisions)]
    assert escalations(spread, messages, after=3, window=H, lift_after=H) == []
    # and unattributed to an incident, an escalation is a false suspension
    labels = {"systems": [system("a")], "cases": [], "incidents": []}
    result = score(labels, decisions, H, messages)
    (false,) = result["false_suspensions"]
    assert false["action"] == "escalate" and false["ts"] == T + 1200
    assert result["totals"]["false_escalations"] == 1
    assert len(result["false_restrictions"]) == 4


def test_a_multi_mailbox_incident_is_contained_once_every_mailbox_is():
    senders = ["m1@a.gov.kz", "m2@a.gov.kz"]
    times = [T + 60 * i for i in range(10)]
    by = [i % 2 for i in range(10)]
    labels = {"systems": [system("a")], "cases": [],
              "incidents": [incident("01", "a", senders, times, by, "multi_compromise")]}
    messages = {"a": mail(*((s, [t for t, b in zip(times, by, strict=True) if b == i])
                            for i, s in enumerate(senders)))}
    decisions = [{"ts": T + 100, "system": "a", "action": "restrict", "sender": senders[0],
                  "rule": "r"},
                 {"ts": T + 400, "system": "a", "action": "restrict", "sender": senders[1],
                  "rule": "r"}]
    row = score(labels, decisions, H, messages, escalate_after=3)["incidents"][0]
    # m1 leaked T+0 (restricted at T+100); m2 leaked T+60, T+180, T+300
    assert row["leak"] == 4 and row["collateral"] == 0
    assert row["how"] == "restrict 2/2" and row["contained_at"] == T + 400
