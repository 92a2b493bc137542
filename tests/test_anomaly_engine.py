"""The anomaly engine on synthetic event streams, time from the events:
windows slide, rules fire on the crossing event and only then, the gateway's
own mail is not counted, and the default rules tell a government system's
normal week from a compromised account, a loop and a bounce storm."""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import sys
from collections.abc import Collection

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgw.anomaly.engine import Engine
from mailgw.anomaly.judge import engines
from mailgw.anomaly.metrics import FEW, METRICS, per_key, summed
from mailgw.anomaly.rules import Rule
from mailgw.anomaly.windows import KEY_CAP, Counter, KeyCounter
from mailgw.config import Anomaly
from tests.support.shared_windows import fresh_prefix, run_in_process, run_on_redis

T0 = 1_732_406_400.0  # a Monday, 00:00 UTC


def accepted(ts, rcpts, system="mfa", size=2048, sender="a@mfa.gov.kz"):
    return {"ts": ts, "system": system, "event": "accepted", "queue_id": "q",
            "sender": sender, "recipients": rcpts, "size": size}


def outcome(ts, kind, system="mfa", **extra):
    return {"ts": ts, "system": system, "event": kind, "recipient": "x@example.com",
            "code": {"delivered": 250, "bounced": 550, "deferred": 451}[kind], **extra}


def default_engine():
    """The defaults' engine of systems."""
    return engines(Anomaly(), [])[0]


def default_senders():
    """The defaults' engine of senders."""
    return engines(Anomaly(), [])[1]


def observe(engine, events):
    return [(i, d) for i, e in enumerate(events) for d in engine.observe(e)]


@pytest.fixture(params=["in-process", "redis", "cluster"])
def run(request):
    """The engine over a stream, counting in process, in a real Redis or in
    a Redis Cluster of three masters."""
    if request.param == "in-process":
        return run_in_process
    url = request.getfixturevalue("redis_cluster" if request.param == "cluster"
                                  else "redis_server").url
    prefix = fresh_prefix()
    return lambda engine, events, senders=None: run_on_redis(url, prefix, engine, events,
                                                             senders)


@pytest.mark.parametrize("times,at,expected", [
    ([0, 10, 20], 20, 3),
    ([0, 10, 20], 64, 2),    # the first 5 s bucket has slid out
    ([0, 10, 20], 80, 0),    # everything is older than the window
    ([0, 30, 59], 59, 3),
    ([100, 58], 100, 2),     # a little late: still in the window, counted
    ([100, 30], 100, 1),     # older than the window (a clock stepped back): not counted
])
def test_counter_slides_by_buckets(times, at, expected):
    c = Counter(60)  # 12 buckets of 5 s
    for t in times:
        c.add(T0 + t)
    assert c.total(T0 + at) == expected


def test_key_counter_does_not_count_keys_older_than_its_window():
    k = KeyCounter(60)
    k.add(T0 + 100, ("a",))
    k.add(T0 + 30, ("b", "a"))
    assert (k.distinct(T0 + 100), k.top(T0 + 100)) == (1, 1)


def test_key_counter_memory_is_capped_under_a_flood():
    k = KeyCounter(600)
    k.add(T0, tuple(f"d{i}.example" for i in range(50_000)))
    assert k.distinct(T0) == KEY_CAP  # "at least the cap", far above any threshold
    assert sum(len(s or ()) for s in k.slots) == KEY_CAP


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 40), st.lists(st.sampled_from("abcdefg"), max_size=4)),
                max_size=60))
def test_key_counter_few_is_its_busiest_keys_counts_summed(steps):
    """Kept as keys are counted and their buckets leave, the FEW busiest
    keys' counts summed equal the same worked out from the totals."""
    k, ts = KeyCounter(60, few=True), T0
    for gap, keys in steps:
        ts += gap
        _, top, few = k.add(ts, tuple(keys))
        assert few == sum(sorted(k.totals.values(), reverse=True)[:FEW])
        assert top == max(k.totals.values(), default=0)
    assert k.few(ts + 30) == sum(sorted(k.totals.values(), reverse=True)[:FEW])


RULE = Rule("m10", "ceiling", "messages", 600, 5)


def test_ceiling_fires_on_the_crossing_event_and_once(run):
    decisions = run(Engine([RULE]), [accepted(T0 + i, ["x@example.com"]) for i in range(10)])
    assert [i for i, _ in decisions] == [5]  # the sixth message crosses 5: it is the last relayed
    d = decisions[0][1]
    assert (d.rule, d.observed, d.threshold, d.window) == ("m10", 6, 5, 600)


def test_a_lift_rearms_the_rule_and_counting_starts_afresh(run):
    engine = Engine([RULE])
    assert len(run(engine, [accepted(T0 + i, ["x@e.com"]) for i in range(20)])) == 1
    lift = {"ts": T0 + 21, "system": "mfa", "event": "lifted"}
    after = run(engine, [lift, *(accepted(T0 + 22 + i, ["x@e.com"]) for i in range(6))])
    assert [i for i, _ in after] == [6]  # six new messages, not the old twenty


def test_per_system_threshold_override(run):
    engine = Engine([RULE], overrides={"mof": {"m10": dataclasses.replace(RULE, threshold=100)}})
    mof = run(engine, [accepted(T0 + i, ["x@e.com"], system="mof") for i in range(50)])
    mfa = run(engine, [accepted(T0 + i, ["x@e.com"]) for i in range(50)])
    assert mof == [] and len(mfa) == 1


def test_a_systems_own_figures_make_a_rule_watch_or_suspend_for_it_alone(run):
    from mailgw.anomaly.judge import tunings
    from mailgw.config import AnomalyRule, System

    bounces = {"name": "bounces", "kind": "ratio", "metric": "perm_failures", "window": "1h",
               "threshold": 0.05, "per": "attempts", "min_count": 5, "min_sample": 10,
               "watch": 1e-3, "suspend": 1e-7}
    systems = [System.model_validate({
        "id": sid, "name": sid, "owners": [f"postmaster@{sid}.gov.kz"],
        "sender_domains": [f"{sid}.gov.kz"], "networks": ["10.9.0.0/16"],
        "anomaly": {"bounces": tuning}})
        for sid, tuning in (("quiet", {"respond": "watch"}),
                            ("strict", {"watch": 1e-2, "suspend": 1e-3}))]
    anomaly = Anomaly(rules=[AnomalyRule.model_validate(bounces)])
    engine = Engine([Rule.from_config(r) for r in anomaly.rules], tunings(anomaly, systems))

    def acts(system, every):
        """The actions on 40 attempts of which every `every`-th bounced."""
        return {d.action for _, d in run(engine, [
            outcome(T0 + i, "delivered" if i % every else "bounced", system=system)
            for i in range(40)])}

    # half bounced: one in a billion by chance
    assert "suspend" in acts("mfa", 2) and acts("quiet", 2) == {"watch"}
    # a quarter: one in 3,000
    assert acts("moj", 4) == {"watch"} and "suspend" in acts("strict", 4)


def test_a_rule_one_system_makes_suspend_is_counted_per_sender_to_find_whose():
    from mailgw.config import System

    def senders_count_deferrals(tuning):
        systems = [System.model_validate({
            "id": "mfa", "name": "MFA", "owners": ["postmaster@mfa.gov.kz"],
            "networks": ["10.1.0.0/16"], "sender_domains": ["mfa.gov.kz"],
            "anomaly": tuning})]
        senders = engines(Anomaly(), systems)[1]
        assert senders is not None
        return senders.window_of("deferrals", 3600) is not None

    # deferral_rate_1h only watches, so its count is not a sender's to
    # answer for, unless a system has it suspend
    assert not senders_count_deferrals({})
    assert senders_count_deferrals({"deferral_rate_1h": {"suspend": 1e-9}})


def test_ratio_waits_for_its_minimum_sample():
    rule = Rule("bounce", "ratio", "perm_failures", 3600, 0.10, per="attempts", min_sample=50)
    events = [outcome(T0 + i, "bounced") for i in range(10)]  # 100% bounces, but only 10
    assert observe(Engine([rule]), events) == []
    events += [outcome(T0 + 10 + i, "delivered") for i in range(39)]
    assert observe(Engine([rule]), events) == []  # 49 attempts
    events.append(outcome(T0 + 60, "delivered"))
    (i, d), = observe(Engine([rule]), events)
    assert i == 49 and d.observed == 0.2


@pytest.mark.parametrize("event", [
    outcome(T0, "bounced", origin="dsn"),  # the gateway's own bounce notices
    outcome(T0, "bounced", origin="notice"),
    {"ts": T0, "system": "mfa", "event": "rejected", "reason": "suspended", "code": 450},
    {"ts": T0, "system": None, "event": "rejected", "reason": "relay_denied", "code": 550},
])
def test_the_gateways_own_traffic_is_not_counted(event):
    rule = Rule("any", "ceiling", "perm_failures", 600, 0)
    rej = Rule("rej", "ceiling", "rejections", 600, 0)
    assert Engine([rule, rej]).observe(event) == []


def office_week(rng):
    """A ministry's normal week: its clerks' mail in office hours, quiet
    weekend, a reporting rush on Thursday, a circular to 300 addresses on
    Tuesday."""
    events = []
    domains = ["gov.kz", "mfa.gov.kz", "mail.ru", "gmail.com", "yandex.kz", "minfin.gov.kz"] + [
        f"akimat{i}.gov.kz" for i in range(40)]
    for day in range(7):
        per_hour = 0 if day >= 5 else 40
        for hour in range(9, 18):
            for _ in range(per_hour):
                ts = T0 + day * 86400 + hour * 3600 + rng.uniform(0, 3600)
                events.append(accepted(ts, [f"u{rng.randrange(500)}@{rng.choice(domains)}"],
                                       sender=f"clerk{rng.randrange(60)}@mfa.gov.kz"))
                events.append(outcome(ts + 1, "bounced" if rng.random() < 0.02 else "delivered"))
        if day == 1:  # the circular: one message, 300 recipients across the agencies
            rcpts = [f"head{i}@{domains[i % len(domains)]}" for i in range(300)]
            events.append(accepted(T0 + 86400 + 11 * 3600, rcpts))
        if day == 3:  # quarterly reports to the ministry of finance, all afternoon
            for i in range(250):
                events.append(accepted(T0 + 3 * 86400 + 14 * 3600 + i * 40,
                                       ["reports@minfin.gov.kz"],
                                       sender=f"clerk{i % 60}@mfa.gov.kz"))
    return sorted(events, key=lambda e: e["ts"])


def suspensions(decisions):
    return [(i, d) for i, d in decisions if d.action == "suspend"]


def test_defaults_never_suspend_a_normal_government_week(run):
    assert suspensions(run(default_engine(), office_week(random.Random(7)),
                           default_senders())) == []


def spam_blast(rng):
    return [accepted(T0 + i * 0.5, [f"{rng.getrandbits(32):x}@{rng.getrandbits(40):x}.com"])
            for i in range(2000)]


def forwarding_loop():
    return [accepted(T0 + i * 0.2, ["desk@partner.example"]) for i in range(2000)]


def loop_among_a_few():
    """A loop between one mailbox and three addresses, each pair at a pace
    under one pair's line (twenty an hour each), the three together far over."""
    return [accepted(T0 + i * 60, [f"desk{i % 3}@partner.example"]) for i in range(300)]


def bounce_storm(rng):
    events = []
    for i in range(2000):
        events.append(accepted(T0 + i, [f"old{i}@example.org"]))
        events.append(outcome(T0 + i + 0.5, "bounced" if rng.random() < 0.4 else "delivered"))
    return events


def blocklist_storm(rng):
    """A compromised account's spam, refused by sites that check blocklists."""
    events = []
    for i in range(2000):
        events.append(accepted(T0 + i, [f"x{i}@example.org"]))
        refused = rng.random() < 0.3
        events.append(outcome(T0 + i + 0.5, "bounced" if refused else "delivered",
                              response="554 5.7.1 Service unavailable; Client host [192.0.2.1] "
                              "blocked using zen.spamhaus.org" if refused else "250 ok"))
    return events


def after_a_normal_week(abuse):
    """The abuse on the Monday after the system's first week: judged against
    what the system usually does."""
    week = office_week(random.Random(7))
    return week, [{**e, "ts": e["ts"] + 7 * 86400 + 10 * 3600} for e in abuse]


@pytest.mark.parametrize("name,abuse,rule", [
    ("spam to random domains", spam_blast(random.Random(1)), "new_domains_1h"),
    ("forwarding loop", forwarding_loop(), "mail_loop_1h"),
    ("loop among a few addresses", loop_among_a_few(), "mail_loop_few_3h"),
    ("bounce storm", bounce_storm(random.Random(2)), "bounce_rate_1h"),
    ("spam refused by blocklists", blocklist_storm(random.Random(3)), "blocklist_rate_1h"),
])
def test_defaults_suspend_abuse_within_its_first_few_hundred_messages(run, name, abuse, rule):
    week, abuse = after_a_normal_week(abuse)
    decisions = suspensions(run(default_engine(), week + abuse, default_senders()))
    assert decisions, name
    (i, d), *_ = decisions
    messages = sum(1 for e in abuse[: i + 1 - len(week)] if e["event"] == "accepted")
    assert d.rule == rule and i >= len(week) and messages <= 400, (name, d, messages)


def restrictions(decisions, rule):
    return [(i, d) for i, d in decisions if d.rule == rule and d.action == "suspend"]


def robot_weeks(weeks: int):
    """An office's people, and its robot mailing the same monitoring
    address 30 times in each of two morning hours, every working day."""
    week = office_week(random.Random(7))
    events = [{**e, "ts": e["ts"] + w * 7 * 86400} for w in range(weeks) for e in week]
    for day in range(weeks * 7):
        if day % 7 < 5:
            events += [accepted(T0 + day * 86400 + 8 * 3600 + k * 120, ["monitor@gov.kz"],
                                sender="noreply@mfa.gov.kz") for k in range(60)]
    return sorted(events, key=lambda e: e["ts"])


def test_a_robot_past_its_own_peak_to_one_address_is_not_a_loop_and_a_new_loop_is(run):
    engine, senders = default_engine(), default_senders()
    assert restrictions(run(engine, robot_weeks(2), senders), "mail_loop_1h") == []
    # quarter-end, Wednesday of week 3: the robot sends 80 in an hour, after
    # lunch rather than in the morning; then a clerk's forwarding rule loops
    day = T0 + 16 * 86400
    peak = [accepted(day + 14 * 3600 + k * 45, ["monitor@gov.kz"], sender="noreply@mfa.gov.kz")
            for k in range(80)]
    loop = [accepted(day + 16 * 3600 + k * 12, ["desk@partner.example"],
                     sender="clerk@mfa.gov.kz") for k in range(300)]
    decisions = run(engine, peak + loop, senders)
    assert [d for _, d in decisions if d.rule.startswith("mail_loop")
            and d.ts < loop[0]["ts"]] == []
    (i, d), = restrictions(decisions, "mail_loop_1h")
    # three times the robot's 30, plus the floor: the loop's 110th is luck,
    # well past it is not
    assert d.sender == "clerk@mfa.gov.kz" and d.usual == pytest.approx(30, abs=3)
    assert d.expected == 3 * d.usual + 20
    assert 110 < i - len(peak) + 1 < 200


def test_a_loop_too_slow_for_an_hour_is_caught_over_three(run):
    engine, senders = default_engine(), default_senders()
    week, loop = after_a_normal_week(
        [accepted(T0 + k * 120, ["desk@partner.example"], sender="clerk@mfa.gov.kz")
         for k in range(120)])  # one every two minutes for four hours
    decisions = run(engine, week + loop, senders)
    assert restrictions(decisions, "mail_loop_1h") == []
    (i, d), = restrictions(decisions, "mail_loop_3h")
    # past its first hour (30), within its first three (90)
    assert d.sender == "clerk@mfa.gov.kz" and 30 < i - len(week) + 1 <= 90


def test_the_busy_hours_usual_is_not_one_odd_hour():
    from mailgw.anomaly.windows import Baseline

    b = Baseline()
    assert b.busiest(T0, 5) is None  # nothing learned
    for hour, count in enumerate([3, 4]):
        b.seen(T0 + hour * 3600, count)
    assert b.busiest(T0 + 2 * 3600, 5) == 3  # two learned: the quieter of them
    for hour, count in enumerate([10, 10, 10, 10, 10, 500], start=2):
        b.seen(T0 + hour * 3600, count)  # a loop's hour among a working day's
    assert b.busiest(T0 + 8 * 3600, 5) == 10


def test_a_refusal_counts_as_a_blocklist_one_only_if_it_names_a_blocklist():
    rule = Rule("bl", "ceiling", "blocklist_rejections", 600, 0)
    engine = Engine([rule])
    unknown_user = outcome(T0, "bounced", response="550 5.1.1 user not listed in directory")
    assert engine.observe(unknown_user) == []
    listed = outcome(T0 + 1, "deferred", response="451 4.7.1 your IP is listed on SORBS")
    (d,) = engine.observe(listed)
    assert d.rule == "bl" and d.observed == 1


# metrics the gateway does not have, each one entry in a table of the test's own
EXTENDED = {
    **METRICS,
    "large_messages": summed("accepted", adds=lambda e: float(e.get("size", 0) > 10 << 20)),
    "senders": per_key("accepted", keys=lambda e: (e["sender"].lower(),), read="distinct"),
}


@pytest.mark.parametrize("rule,events,crossing", [
    (Rule("large_10m", "ceiling", "large_messages", 600, 2),
     [accepted(T0 + i, ["x@e.com"], size=(20 if i % 2 else 1) << 20) for i in range(10)],
     5),  # the third large one
    (Rule("senders_10m", "ceiling", "senders", 600, 3),
     [{**accepted(T0 + i, ["x@e.com"]), "sender": f"U{i % 5}@mfa.gov.kz"} for i in range(10)],
     3),  # the fourth sender
])
def test_a_new_metric_is_one_entry_in_the_metrics_table(run, rule, events, crossing):
    engine = Engine([rule], metrics=EXTENDED)
    assert [i for i, _ in run(engine, events)] == [crossing]


def test_replay_prints_the_engines_decisions(tmp_path):
    log = tmp_path / "events.jsonl"
    week, loop = after_a_normal_week(forwarding_loop())
    log.write_text("".join(json.dumps(e) + "\n" for e in week + loop))
    config = tmp_path / "c.toml"
    config.write_text("")
    out = subprocess.run([sys.executable, "-m", "mailgw", "replay", "--config", str(config),
                          str(log)], capture_output=True, text=True, check=True)
    decisions = [json.loads(line) for line in out.stdout.splitlines()]
    # a loop is one mailbox's: that sender is restricted, not the system
    (decision,) = [d for d in decisions if d["action"] != "watch"]
    assert decision["action"] == "restrict" and decision["sender"] == "a@mfa.gov.kz"
    assert decision["system"] == "mfa" and decision["rule"] == "mail_loop_1h"
    assert decision["observed"] > decision["expected"] and decision["chance"] < 1e-7
    # what an operator backtesting a config reads at the end
    summary = out.stderr.splitlines()
    assert summary[0].startswith(f"replay: {len(week) + len(loop):,} events from 2024-11-24")
    assert any(line.split() == ["mail_loop_1h", "0", "1", "1"] for line in summary)  # a watch first
    assert any(line.startswith("mfa") and "restricted a@mfa.gov.kz 2024-12-01 10:00 UTC" in line
               and "(mail_loop_1h); 4 watches" in line for line in summary)  # each loop rule's


def test_replay_refuses_events_out_of_order(tmp_path):
    log = tmp_path / "events.jsonl"
    log.write_text(json.dumps(accepted(T0 + 5, ["a@b.kz"])) + "\n"
                   + json.dumps(accepted(T0, ["a@b.kz"])) + "\n")
    config = tmp_path / "c.toml"
    config.write_text("")
    out = subprocess.run([sys.executable, "-m", "mailgw", "replay", "--config", str(config),
                          str(log)], capture_output=True, text=True)
    assert out.returncode == 1 and f"{log}:2: ts goes backwards" in out.stderr


@pytest.mark.parametrize("bad", [b"not json", b"[1, 2]", b'{"event": "accepted"}',
                                 b'{"ts": "soon"}', b'{"ts": 1, "x": "\xff"}'])
def test_replay_names_a_line_that_is_not_an_event(tmp_path, bad):
    log = tmp_path / "events.jsonl"
    log.write_bytes(json.dumps(accepted(T0, ["a@b.kz"])).encode() + b"\n" + bad + b"\n")
    config = tmp_path / "c.toml"
    config.write_text("")
    out = subprocess.run([sys.executable, "-m", "mailgw", "replay", "--config", str(config),
                          str(log)], capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr == f"error: {log}:2: not an event (a JSON object with ts)\n"


def office_weeks(weeks: int, system: str = "mfa", per_hour: int = 40,
                 holidays: Collection[int] = (), correspondents: int = 1):
    """Steady office traffic: 40 messages an hour, 9 to 18, Monday to
    Friday, but on `holidays` (days from T0), to one address (or to each
    of `correspondents` in turn)."""
    events = []
    for day in range(weeks * 7):
        if day % 7 >= 5 or day in holidays:
            continue
        for hour in range(9, 18):
            for k in range(per_hour):
                events.append(accepted(T0 + day * 86400 + hour * 3600 + k * 3600 / per_hour,
                                       [f"x{k % correspondents}@gov.kz"], system=system))
    return events


def night_burst(day: int, n: int, system: str = "mfa"):
    return [accepted(T0 + day * 86400 + 2 * 3600 + i * 10, [f"u{i}@example.com"], system=system)
            for i in range(n)]


def test_a_spike_at_night_after_weeks_of_office_traffic_is_watched_not_suspended(run):
    engine = default_engine()
    assert run(engine, office_weeks(3)) == []
    (i, d), = run(engine, night_burst(22, 250))  # Tuesday of week 4, 02:00
    # its usual at that hour is ~0: the floor of 50 decides, and the 79th is
    # more than luck gives; volume alone only alerts the operators
    assert (d.rule, d.action, i) == ("spike_1h", "watch", 78)


def test_a_watch_alerts_once_while_its_rule_stays_crossed_and_again_after_a_quiet_hour(run):
    engine = default_engine()
    assert run(engine, office_weeks(3)) == []
    night = T0 + 22 * 86400  # Tuesday of week 4
    # three hours of a burst from 02:00, 240 an hour: crossed all along
    burst = [accepted(night + 2 * 3600 + i * 15, [f"u{i}@example.com"]) for i in range(720)]
    # and another at 07:00, after two hours without a message
    later = [accepted(night + 7 * 3600 + i * 15, [f"v{i}@example.com"]) for i in range(240)]
    decisions = run(engine, burst + later)
    assert [(d.rule, d.action) for _, d in decisions] == [("spike_1h", "watch")] * 2
    assert decisions[0][0] < 100 and 720 <= decisions[1][0] < 820


def test_a_holiday_in_a_systems_first_weeks_does_not_make_the_next_normal_day_a_spike():
    # first seen the Saturday before; 400 an hour on working days, its first
    # Monday a holiday, learned as silent hours: a week of history would be
    # all of that Monday's usual, and the next Monday three times over it
    events = [accepted(T0 - 2 * 86400 + 10 * 3600, ["x@gov.kz"]),
              *office_weeks(4, per_hour=400, holidays={0}, correspondents=400)]
    assert observe(default_engine(), events) == []


def test_a_usual_is_the_mean_of_its_first_weeks_then_a_moving_average():
    from mailgw.anomaly.windows import Baseline

    b, nine = Baseline(), T0 + 9 * 3600
    for week, count in enumerate([0, 100, 100]):
        b.seen(nine + week * 7 * 86400, count)
    assert b.expected(nine + 2 * 7 * 86400, 0) == 50  # (0 + 100) / 2
    assert b.expected(nine + 3 * 7 * 86400, 0) == pytest.approx(200 / 3)
    b.seen(nine + 3 * 7 * 86400, 100)
    # from the fourth week on, a week weighs 0.3
    assert b.expected(nine + 4 * 7 * 86400, 0) == pytest.approx(200 / 3 + 0.3 * 100 / 3)


def test_a_normal_day_after_learning_is_not_a_spike():
    assert observe(default_engine(), office_weeks(4)) == []


def test_a_new_system_has_no_spike_judgement_and_a_quiet_one_stays_under_the_floor():
    engine = default_engine()
    assert observe(engine, night_burst(0, 250, system="new")) == []  # ceilings still apply
    quiet = [accepted(T0 + d * 86400 + 10 * 3600, ["x@gov.kz"], system="q") for d in range(21)]
    assert observe(engine, quiet + night_burst(22, 20, system="q")) == []  # 20 is not "10x of 1"


def test_a_baseline_survives_a_snapshot():
    from mailgw.anomaly.windows import Baseline

    b, hour, count = Baseline(), None, 0
    for e in office_weeks(3):  # told each hour's running count, as the windows do
        count = count + 1 if int(e["ts"] // 3600) == hour else 1
        hour = int(e["ts"] // 3600)
        b.seen(e["ts"], count)
    again = Baseline.restore(json.loads(json.dumps(b.snapshot())))
    ts = T0 + 22 * 86400 + 10 * 3600
    assert again.expected(ts, 14 * 86400) == b.expected(ts, 14 * 86400) > 30


def test_learned_baselines_survive_a_restart_through_the_state_store(tmp_path):
    from mailgw.state.embedded import EmbeddedStore

    before = default_engine()
    observe(before, office_weeks(3))
    EmbeddedStore(tmp_path / "state.db").save_baselines(before.baselines())
    after = default_engine()  # a restarted gateway
    after.restore_baselines(EmbeddedStore(tmp_path / "state.db").load_baselines())
    at_10, at_2 = T0 + 22 * 86400 + 10 * 3600, T0 + 22 * 86400 + 2 * 3600
    for ts in (at_10, at_2):
        usual = [e.learned["mfa"]["messages"].expected(ts, 7 * 86400) for e in (before, after)]
        assert usual[0] == usual[1] is not None
    assert after.learned["mfa"]["messages"].expected(at_10, 7 * 86400) > 30
    # a per-key spike's busy hours too, under its metric and window
    busy = [e.learned["mfa"]["top_pair/3600s"].busiest(at_10, 5) for e in (before, after)]
    assert busy[0] == busy[1] == 40


def test_refusals_of_the_gateways_own_making_are_not_the_systems_rejections():
    rule = Rule("rejections_10m", "ceiling", "rejections", 600, 2)
    engine = Engine([rule])
    theirs = [{"ts": T0 + i, "system": "mfa", "event": "rejected", "reason": reason}
              for i, reason in enumerate(["suspended", "internal_error", "store_failed",
                                          "disk_low", "shutting_down", "too_many_connections"])]
    assert observe(engine, theirs) == []
    mine = [{"ts": T0 + 10 + i, "system": "mfa", "event": "rejected", "reason": "sender_domain"}
            for i in range(3)]
    assert [i for i, _ in observe(engine, mine)] == [2]


def test_what_a_system_has_sent_to_is_remembered_across_a_period_within_its_bound():
    from mailgw.anomaly.windows import SEEN_CAP, SEEN_PERIOD, Seen

    seen = Seen()
    # each message's keys a tuple of its own, as the metrics' functions make
    # them (a constant tuple is one object: Seen would take it as asked again)
    assert seen.novel(T0, tuple(["a.kz", "b.kz", "a.kz"])) == 2  # a repeat within a message is not new
    assert seen.novel(T0 + 60, tuple(["a.kz", "c.kz"])) == 1
    later = T0 + SEEN_PERIOD  # the next period still knows the last one's keys
    assert seen.novel(later, tuple(["b.kz"])) == 0
    assert seen.novel(later + SEEN_PERIOD, tuple(["b.kz"])) == 0  # carried forward when used
    assert seen.novel(later + 3 * SEEN_PERIOD, tuple(["b.kz"])) == 1  # forgotten when not
    flood = tuple(f"x{i}.example" for i in range(2 * SEEN_CAP))
    assert seen.novel(later + 3 * SEEN_PERIOD, flood) >= 2 * SEEN_CAP * 0.99
    # past the cap the filter learns no more: a flood's later keys stay new
    assert seen.novel(later + 3 * SEEN_PERIOD, flood[-100:]) >= 95
    assert len(seen.cur) + len(seen.prev) == 16 * 1024  # its whole memory, whatever came


def test_the_keys_probes_worked_out_once_are_bounded_and_answer_alike_when_worked_out_again():
    from mailgw.anomaly import windows
    from mailgw.anomaly.windows import Seen

    seen = Seen()
    assert seen.novel(T0, tuple(["kept.kz"])) == 1
    many = tuple(f"d{i}.example" for i in range(windows.PROBES_CAP + 10))
    for i in range(0, len(many), 1000):  # other systems' domains, past the bound
        Seen().novel(T0, many[i:i + 1000])
    assert 0 < len(windows._probes) <= windows.PROBES_CAP  # forgotten when full
    assert "kept.kz" not in windows._probes
    assert seen.novel(T0, tuple(["kept.kz"])) == 0  # its probes again, the same bits


def test_the_same_keys_asked_twice_get_one_answer_and_new_ones_find_them_seen():
    from mailgw.anomaly.windows import Seen

    seen = Seen()
    keys = tuple(["new.kz"])  # made for each event, as the metrics' functions make them
    assert seen.novel(T0, keys) == 1
    assert seen.novel(T0, keys) == 1  # the same event's keys, asked by the other engine
    assert seen.novel(T0, tuple(["new.kz"])) == 0  # the next message to it


def test_a_system_and_its_senders_judge_a_domain_new_alike_from_one_memory():
    from mailgw.anomaly.judge import Judge

    engine, senders = engines(Anomaly(), [])
    judge = Judge(engine, senders=senders, suspend=lambda d: None, watch=lambda d: None)
    assert engine.local.memory is senders.local.memory  # one memory of the system's
    judge.observe(accepted(T0, ["x@new.kz", "y@new.kz"]))
    judge.observe(accepted(T0 + 1, ["z@new.kz"], sender="b@mfa.gov.kz"))
    judge.observe(accepted(T0 + 2, ["z@other.kz"], sender="b@mfa.gov.kz"))
    window = ("to_new_domains", 3600.0)
    assert engine.now("mfa", T0 + 3)[window] == 2  # the first message, and the third
    assert senders.now("mfa a@mfa.gov.kz", T0 + 3)[window] == 1
    # new to b, not to its system, which had mailed new.kz
    assert senders.now("mfa b@mfa.gov.kz", T0 + 3)[window] == 1
