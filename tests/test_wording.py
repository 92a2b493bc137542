"""Figures in words: what the log, the page and the notices say of a rule's
finding, a window, a count, in Kazakh, Russian and English."""

from __future__ import annotations

import pytest

from mailgw import wording
from mailgw.anomaly.metrics import METRICS
from mailgw.anomaly.rules import Rule
from mailgw.config import DEFAULT_RULES
from mailgw.state.records import Suspension

MESSAGES_10M = Rule("messages_10m", "ceiling", "messages", 600, 3)
BOUNCE_RATE = Rule("bounce_rate_1h", "ratio", "perm_failures", 3600, 0.1, "attempts", 50)
SPIKE = Rule("spike_1h", "spike", "messages", 3600, 10, min_sample=200)
BYTES = Rule("bytes_24h", "ceiling", "bytes", 86400, 50 * 1024**2)


@pytest.mark.parametrize("rule,observed,counts,expected", [
    (MESSAGES_10M, 4, None, {
        "en": "4 messages in 10 min, limit 3",
        "ru": "4 письма за 10 минут, порог 3",
        "kk": "10 минут ішінде 4 хат, шегі 3"}),
    (BOUNCE_RATE, 0.1234, {"attempts/3600s": 60, "perm_failures/3600s": 7}, {
        "en": "12% of 60 delivery attempts bounced in 1 h, limit 10%",
        "ru": "отказы в доставке: 12% из 60 попыток доставки за 1 час, порог 10%",
        "kk": "1 сағат ішінде тұрақты бас тартулар: 12% (жеткізу әрекеттері: 60), шегі 10%"}),
    (BOUNCE_RATE, 0.5, {"attempts/3600s": 21}, {
        "en": "50% of 21 delivery attempts bounced in 1 h, limit 10%",
        "ru": "отказы в доставке: 50% из 21 попытки доставки за 1 час, порог 10%",
        "kk": "1 сағат ішінде тұрақты бас тартулар: 50% (жеткізу әрекеттері: 21), шегі 10%"}),
    (SPIKE, 900, None, {
        "en": "900 messages in 1 h, over 10 times the system's usual",
        "ru": "900 писем за 1 час — более чем в 10 раз больше обычного для системы",
        "kk": "1 сағат ішінде 900 хат — жүйе үшін әдеттегіден 10 еседен астам"}),
    (BYTES, 60 * 1024**2, None, {
        "en": "60 MiB of mail in 24 h, limit 50 MiB",
        "ru": "60 MiB почты за 24 часа, порог 50 MiB",
        "kk": "24 сағат ішінде 60 MiB пошта, шегі 50 MiB"}),
], ids=["ceiling", "ratio", "ratio-of-21", "spike", "bytes"])
def test_a_finding_reads_as_people_write_it(rule, observed, counts, expected):
    finding = wording.Finding.of(rule, observed, rule.threshold, rule.window,
                                 {"counts": counts} if counts else None)
    assert {lang: finding.words(lang) for lang in wording.LANGS} == expected


@pytest.mark.parametrize("seconds,en,ru,kk,ru_within,kk_within", [
    (60, "1 min", "1 минута", "1 минут", "за 1 минуту", "1 минут ішінде"),
    (600, "10 min", "10 минут", "10 минут", "за 10 минут", "10 минут ішінде"),
    (3600, "1 h", "1 час", "1 сағат", "за 1 час", "1 сағат ішінде"),
    (86400, "24 h", "24 часа", "24 сағат", "за 24 часа", "24 сағат ішінде"),
    (172800, "2 days", "2 дня", "2 күн", "за 2 дня", "2 күн ішінде"),
    (90, "90 s", "90 секунд", "90 секунд", "за 90 секунд", "90 секунд ішінде"),
])
def test_windows_are_words_not_seconds(seconds, en, ru, kk, ru_within, kk_within):
    assert [wording.duration(seconds, lang) for lang in ("en", "ru", "kk")] == [en, ru, kk]
    assert (wording.within(seconds, "ru"), wording.within(seconds, "kk")) == (
        ru_within, kk_within)
    assert wording.within(seconds) == f"in {en}"


@pytest.mark.parametrize("n,ru", [(1, "1 письмо"), (2, "2 письма"), (5, "5 писем"),
                                  (11, "11 писем"), (21, "21 письмо"), (22, "22 письма"),
                                  (112, "112 писем"), (20000, "20\N{NO-BREAK SPACE}000 писем")])
def test_russian_counts_agree_with_their_number(n, ru):
    assert wording.count("messages", n, "ru") == ru


def test_english_counts_and_numbers():
    assert [wording.things(n, "system") for n in (0, 1, 3)] == [
        "0 systems", "1 system", "3 systems"]
    assert wording.count("messages", 20000) == "20,000 messages"
    assert (wording.percent(0.05), wording.percent(0.025), wording.percent(0.999)) == (
        "5%", "2.5%", "100%")
    assert (wording.size(26214400), wording.size(1536), wording.size(900)) == (
        "25 MiB", "1.5 KiB", "900 bytes")


def test_every_metric_of_the_engine_has_words_in_every_language():
    assert set(wording.METRICS) == set(METRICS)
    for metric, langs in wording.METRICS.items():
        assert set(langs) == set(wording.LANGS), metric
        for lang, said in langs.items():
            assert said.name and all("{n}" in form for form in said.count), (metric, lang)


def test_every_default_rule_has_a_title_in_words():
    titles = {r.name: wording.title(r, r.window, "ru") for r in DEFAULT_RULES}
    assert titles["mail_loop_1h"] == ("письма с одного ящика на один адрес (больше всего) за 1 час"
                                      " в сравнении с обычным для системы")
    assert titles["spike_1h"] == "письма за 1 час в сравнении с обычным для системы"
    assert not any("_" in t for t in titles.values())  # no metric names left


def test_why_gives_the_finding_and_the_rule_or_the_operators_reason():
    auto = Suspension("mfa", 0, "auto", rule="bounce_rate_1h", observed=0.12, threshold=0.1,
                      window=3600, evidence={"counts": {"attempts/3600s": 60}})
    assert wording.why(auto, BOUNCE_RATE)["en"] == (
        "12% of 60 delivery attempts bounced in 1 h, limit 10% (rule bounce_rate_1h)")
    assert wording.why(auto, BOUNCE_RATE)["kk"].endswith("(bounce_rate_1h ережесі)")
    gone = wording.why(auto, None)  # the rule is no longer in the config
    assert gone["en"] == "0.12 in 1 h, limit 0.1 (rule bounce_rate_1h)"
    manual = Suspension("mfa", 0, "alice", reason="phishing reported")
    assert wording.why(manual, None) == {
        "kk": "alice операторының шешімі: phishing reported",
        "ru": "решение оператора alice: phishing reported",
        "en": "decision of operator alice: phishing reported"}


def test_a_weighed_finding_says_the_systems_usual_and_the_chance_of_it_by_luck():
    record = Suspension("mfa", 0, "auto", rule="bounce_rate_1h", observed=0.3, threshold=0.05,
                        window=3600, evidence={"counts": {"attempts/3600s": 100},
                                               "usual": 0.0296, "chance": 3.2e-9})
    said = wording.why(record, BOUNCE_RATE)
    assert said["en"] == ("30% of 100 delivery attempts bounced in 1 h, limit 5%; usually 3%; "
                          "by chance, at most 1 in 310,000,000 (rule bounce_rate_1h)")
    assert "обычно 3%; случайно — не чаще 1 раза из 310\u00a0000\u00a0000" in said["ru"]
    assert "әдетте 3%" in said["kk"]
