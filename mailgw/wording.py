"""Figures in words, as people write them: English for the log, and Kazakh,
Russian and English for the status page and the owner notices.

`4 messages in 10 min, limit 3`, not `4.0 over 600.0s`; a ratio as a share
of its sample, `12% of 60 delivery attempts bounced in 1 h, limit 10%`;
windows as `10 минут`, `10 минут ішінде`; sizes as `25 MiB`.

What each metric is called, in every language, is its entry in METRICS; how
a finding of each rule kind is put, its sentences in FINDINGS (and TITLES
for a rule's name in words). A new metric is an entry in METRICS (a test
checks every metric of the engine has one); a new rule kind, or a new piece
of evidence (a system's usual value, a test statistic), a sentence in
FINDINGS and a placeholder that `Finding.words` fills in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from mailgw.state.records import Suspension

LANGS = ("kk", "ru", "en")


def _form(lang: str, n: float) -> int:
    """Which form of a word goes with the number `n` (the index in its forms)."""
    if n != int(n):
        return 1  # en "2.5 hours", ru "2,5 часа" (a fraction takes the genitive singular)
    n = abs(int(n))
    if lang == "en":
        return 0 if n == 1 else 1
    if lang == "ru":  # 1, 21 письмо; 2-4, 22 письма; 5-20, 25 писем
        if n % 10 == 1 and n % 100 != 11:
            return 0
        return 1 if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14 else 2
    return 0  # kk: a noun after a numeral stays singular


def _pick(forms: tuple[str, ...], lang: str, n: float) -> str:
    return forms[min(_form(lang, n), len(forms) - 1)]


def number(value: float, lang: str = "en") -> str:
    """4.0 -> "4"; 20000 -> "20,000" (en), "20 000" (ru, kk); 2.5 -> "2.5", "2,5"."""
    text = f"{value:,.0f}" if value == int(value) else f"{value:,.2f}".rstrip("0").rstrip(".")
    if lang == "en":
        return text
    return text.replace(",", "\N{NO-BREAK SPACE}").replace(".", ",")


def percent(ratio: float, lang: str = "en") -> str:
    """0.1234 -> "12%"; under 10%, one decimal where it tells: 0.025 -> "2.5%"."""
    share = ratio * 100
    return number(round(share) if share >= 10 else round(share, 1), lang) + "%"


def things(n: float, one: str, many: str | None = None) -> str:
    """An English count for the log: "1 system", "3 systems"."""
    return f"{number(n)} {one if _form('en', n) == 0 else many or one + 's'}"


_SIZES = ((1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB"))


def size(octets: float) -> str:
    """26214400 -> "25 MiB"; 1536 -> "1.5 KiB"; 900 -> "900 bytes"; a size
    that does not round to one decimal keeps its bytes: "4.9 KiB (5,000 bytes)"."""
    for unit, name in _SIZES:
        if octets >= unit:
            rounded = round(octets / unit, 1)
            exact = "" if rounded * unit == octets else f" ({things(octets, 'byte')})"
            return f"{number(rounded)} {name}{exact}"
    return things(octets, "byte")


# the largest unit a window is a whole number of; days only from 2 days on,
# so that a 24-hour window reads "24 h" as its rule's name does
_UNITS = (
    (86400, {"en": ("day", "days"), "ru": ("день", "дня", "дней"), "kk": ("күн",)}),
    (3600, {"en": ("h",), "ru": ("час", "часа", "часов"), "kk": ("сағат",)}),
    (60, {"en": ("min",), "ru": ("минута", "минуты", "минут"), "kk": ("минут",)}),
    (1, {"en": ("s",), "ru": ("секунда", "секунды", "секунд"), "kk": ("секунд",)}),
)
_RU_ACCUSATIVE = {"минута": "минуту", "секунда": "секунду"}  # "за 1 минуту"


def _duration(seconds: float, lang: str) -> tuple[str, str]:
    for unit, names in _UNITS:
        if seconds >= unit and seconds % unit == 0 and (unit != 86400 or seconds >= 172800):
            n = seconds / unit
            return number(n, lang), _pick(names[lang], lang, n)
    return number(seconds, lang), _pick(_UNITS[-1][1][lang], lang, seconds)


def duration(seconds: float, lang: str = "en") -> str:
    """600 -> "10 min", "10 минут", "10 минут"; 86400 -> "24 h", "24 часа", "24 сағат"."""
    return " ".join(_duration(seconds, lang))


def within(seconds: float, lang: str = "en") -> str:
    """600 -> "in 10 min", "за 10 минут", "10 минут ішінде"."""
    n, unit = _duration(seconds, lang)
    if lang == "ru":
        return f"за {n} {_RU_ACCUSATIVE.get(unit, unit)}"
    return f"{n} {unit} ішінде" if lang == "kk" else f"in {n} {unit}"


def _within_of(seconds: float, lang: str) -> str:
    """As a rule's name has it: "in 10 min", "за 10 минут", "10 минут ішіндегі"."""
    return within(seconds, lang) + ("гі" if lang == "kk" else "")


@dataclass(frozen=True)
class Said:
    """A metric in one language."""

    count: tuple[str, ...]  # "{n} message", "{n} messages": the forms by the plural rule
    name: str  # what it counts, as a label: "messages"
    of: tuple[str, ...] = ()  # ru: the count after "из" (genitive), where it differs
    did: str = ""  # en: what a ratio's part did ("bounced"); else "counted as <name>"


METRICS: dict[str, dict[str, Said]] = {
    "messages": {
        "en": Said(("{n} message", "{n} messages"), "messages"),
        "ru": Said(("{n} письмо", "{n} письма", "{n} писем"), "письма",
                 of=("{n} письма", "{n} писем")),
        "kk": Said(("{n} хат",), "хаттар"),
    },
    "recipients": {
        "en": Said(("{n} recipient", "{n} recipients"), "recipients"),
        "ru": Said(("{n} получатель", "{n} получателя", "{n} получателей"), "получатели",
                 of=("{n} получателя", "{n} получателей")),
        "kk": Said(("{n} алушы",), "алушылар"),
    },
    "bytes": {  # {n} is a size: "25 MiB"
        "en": Said(("{n} of mail",), "volume of mail"),
        "ru": Said(("{n} почты",), "объём почты"),
        "kk": Said(("{n} пошта",), "пошта көлемі"),
    },
    "attempts": {
        "en": Said(("{n} delivery attempt", "{n} delivery attempts"), "delivery attempts"),
        "ru": Said(("{n} попытка доставки", "{n} попытки доставки", "{n} попыток доставки"),
                 "попытки доставки", of=("{n} попытки доставки", "{n} попыток доставки")),
        "kk": Said(("{n} жеткізу әрекеті",), "жеткізу әрекеттері"),
    },
    "perm_failures": {
        "en": Said(("{n} bounce", "{n} bounces"), "bounces (permanent failures)", did="bounced"),
        "ru": Said(("{n} отказ в доставке", "{n} отказа в доставке", "{n} отказов в доставке"),
                 "отказы в доставке"),
        "kk": Said(("{n} тұрақты бас тарту",), "тұрақты бас тартулар"),
    },
    "deferrals": {
        "en": Said(("{n} deferral", "{n} deferrals"), "deferrals (temporary failures)",
                 did="were deferred"),
        "ru": Said(("{n} временный отказ", "{n} временных отказа", "{n} временных отказов"),
                 "временные отказы"),
        "kk": Said(("{n} уақытша бас тарту",), "уақытша бас тартулар"),
    },
    "blocklist_rejections": {
        "en": Said(("{n} refusal naming a blocklist", "{n} refusals naming a blocklist"),
                 "refusals naming a blocklist", did="were refused naming a blocklist"),
        "ru": Said(("{n} отказ со ссылкой на чёрный список",
                  "{n} отказа со ссылкой на чёрный список",
                  "{n} отказов со ссылкой на чёрный список"),
                 "отказы со ссылкой на чёрный список"),
        "kk": Said(("қара тізімге сілтеме жасалған {n} бас тарту",),
                 "қара тізімге сілтеме жасалған бас тартулар"),
    },
    "rejections": {
        "en": Said(("{n} command refused by the gateway", "{n} commands refused by the gateway"),
                 "commands refused by the gateway"),
        "ru": Said(("{n} команда, отклонённая шлюзом", "{n} команды, отклонённые шлюзом",
                  "{n} команд, отклонённых шлюзом"), "команды, отклонённые шлюзом"),
        "kk": Said(("шлюз қабылдамаған {n} команда",), "шлюз қабылдамаған командалар"),
    },
    "recipient_domains": {
        "en": Said(("{n} recipient domain", "{n} recipient domains"), "distinct recipient domains"),
        "ru": Said(("{n} домен получателей", "{n} домена получателей", "{n} доменов получателей"),
                 "разные домены получателей"),
        "kk": Said(("{n} алушы домені",), "әртүрлі алушы домендері"),
    },
    "top_recipient": {
        "en": Said(("{n} message to one recipient", "{n} messages to one recipient"),
                 "messages to the busiest single recipient"),
        "ru": Said(("{n} письмо одному получателю", "{n} письма одному получателю",
                  "{n} писем одному получателю"), "письма одному получателю (больше всего)"),
        "kk": Said(("бір алушыға {n} хат",), "бір алушыға жіберілген хаттар (ең көбі)"),
    },
    "top_pair": {
        "en": Said(("{n} message from one mailbox to one address",
                    "{n} messages from one mailbox to one address"),
                   "messages from one mailbox to one address (the most)"),
        "ru": Said(("{n} письмо с одного ящика на один адрес",
                    "{n} письма с одного ящика на один адрес",
                    "{n} писем с одного ящика на один адрес"),
                   "письма с одного ящика на один адрес (больше всего)"),
        "kk": Said(("бір жәшіктен бір мекенжайға {n} хат",),
                   "бір жәшіктен бір мекенжайға жіберілген хаттар (ең көбі)"),
    },
    "top_few_pairs": {
        "en": Said(("{n} message over the three busiest pairs of mailbox and address",
                    "{n} messages over the three busiest pairs of mailbox and address"),
                   "messages over the three busiest pairs of mailbox and address"),
        "ru": Said(("{n} письмо по трём самым частым парам «ящик — адрес»",
                    "{n} письма по трём самым частым парам «ящик — адрес»",
                    "{n} писем по трём самым частым парам «ящик — адрес»"),
                   "письма по трём самым частым парам «ящик — адрес»"),
        "kk": Said(("ең жиі үш «жәшік — мекенжай» жұбы бойынша {n} хат",),
                   "ең жиі үш «жәшік — мекенжай» жұбы бойынша хаттар"),
    },
    "to_new_domains": {
        "en": Said(("{n} message to a new domain", "{n} messages to a new domain"),
                   "messages to a domain never mailed before", did="went to a new domain"),
        "ru": Said(("{n} письмо на новый домен", "{n} письма на новый домен",
                    "{n} писем на новый домен"),
                   "письма на домены, куда система раньше не писала",
                   of=("{n} письма на новый домен", "{n} писем на новый домен")),
        "kk": Said(("жаңа доменге {n} хат",), "жүйе бұрын жазбаған домендерге хаттар"),
    },
    "login_clients": {
        "en": Said(("{n} address one login sent from", "{n} addresses one login sent from"),
                   "addresses one login sent mail from"),
        "ru": Said(("{n} адрес, с которого отправляла одна учётная запись",
                    "{n} адреса, с которых отправляла одна учётная запись",
                    "{n} адресов, с которых отправляла одна учётная запись"),
                   "адреса, с которых отправляла почту одна учётная запись"),
        "kk": Said(("бір тіркелгі хат жіберген {n} мекенжай",),
                   "бір тіркелгі хат жіберген мекенжайлар"),
    },
    "auth_failures": {
        "en": Said(("{n} failed login", "{n} failed logins"), "failed SMTP logins"),
        "ru": Said(("{n} неудачный вход", "{n} неудачных входа", "{n} неудачных входов"),
                   "неудачные входы SMTP AUTH"),
        "kk": Said(("{n} сәтсіз кіру әрекеті",), "SMTP AUTH сәтсіз кіру әрекеттері"),
    },
}


def said(metric: str, lang: str = "en") -> Said:
    """How `metric` is said; a metric with no entry yet is called by its name."""
    entry = METRICS.get(metric)
    return entry[lang] if entry else Said(("{n} " + metric,), metric)


def amount(metric: str, n: float, lang: str = "en") -> str:
    """The figure of a metric, a size for "bytes": "4", "25 MiB"."""
    return size(n) if metric == "bytes" else number(n, lang)


def count(metric: str, n: float, lang: str = "en") -> str:
    """"4 messages", "4 письма", "4 хат"."""
    return _pick(said(metric, lang).count, lang, n).format(n=amount(metric, n, lang))


def _count_of(metric: str, n: float, lang: str) -> str:
    """A count after "of" / "из": ru "из 21 попытки доставки", "из 60 попыток доставки"."""
    words = said(metric, lang)
    if not words.of:
        return count(metric, n, lang)
    return words.of[0 if _form(lang, n) == 0 else 1].format(n=amount(metric, n, lang))


def _times(factor: float, lang: str) -> str:
    forms = {"en": ("{n} times",), "ru": ("{n} раз", "{n} раза", "{n} раз"),
             "kk": ("{n} еседен",)}[lang]
    return _pick(forms, lang, factor).format(n=number(factor, lang))


# A finding of each rule kind, in each language. Placeholders: {count} the
# observed count; {within} the window; {limit} the threshold; ratios: {name}
# the part's name, {share} the observed share, {sample} the divisor's count
# ("of 60 delivery attempts"), {per} the divisor's name, {did} what the part
# did (en); spikes: {times} the factor over the usual.
FINDINGS: dict[str, dict[str, str]] = {
    "ceiling": {
        "en": "{count} {within}, limit {limit}",
        "ru": "{count} {within}, порог {limit}",
        "kk": "{within} {count}, шегі {limit}",
    },
    "ratio": {
        "en": "{share} of {sample} {did} {within}, limit {limit}",
        "ru": "{name}: {share} из {sample} {within}, порог {limit}",
        "kk": "{within} {name}: {share} ({per}: {sample}), шегі {limit}",
    },
    "spike": {
        "en": "{count} {within}, over {times} the system's usual",
        "ru": "{count} {within} — более чем в {times} больше обычного для системы",
        "kk": "{within} {count} — жүйе үшін әдеттегіден {times} астам",
    },
}
_UNSAMPLED = {  # a ratio whose sample was not recorded
    "en": "{share} of {per} {did} {within}, limit {limit}",
    "ru": "{name}: {share} ({per}) {within}, порог {limit}",
    "kk": "{within} {name}: {share} ({per}), шегі {limit}",
}
_UNKNOWN_KIND = {  # a rule no longer configured: the figures as recorded
    "en": "{observed} {within}, limit {limit}",
    "ru": "{observed} {within}, порог {limit}",
    "kk": "{within} {observed}, шегі {limit}",
}

# a rule's name in words: {name} what it counts, {within} its window ("in 10
# min"; kk "10 минут ішіндегі"), {per} a ratio's divisor
TITLES: dict[str, dict[str, str]] = {
    "ceiling": {"en": "{name} {within}", "ru": "{name} {within}", "kk": "{within} {name}"},
    "ratio": {"en": "{name} / {per} {within}", "ru": "{name} / {per} {within}",
              "kk": "{within} {name} / {per}"},
    "spike": {"en": "{name} {within}, against the system's usual",
              "ru": "{name} {within} в сравнении с обычным для системы",
              "kk": "{within} {name}, жүйе үшін әдеттегімен салыстырғанда"},
}


class RuleShape(Protocol):
    """What wording needs of a rule (anomaly.rules.Rule, config.AnomalyRule)."""

    @property
    def kind(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def per(self) -> str | None: ...


def _key(metric: str, window: float) -> str:
    return f"{metric}/{window:g}s"  # how a decision's evidence names a window's count


@dataclass(frozen=True)
class Finding:
    """What a rule found: `observed` against `threshold` over `window`
    seconds; for a ratio, `sample` is the divisor's count (the attempts)."""

    kind: str
    metric: str
    per: str | None
    observed: float
    threshold: float
    window: float
    sample: float | None = None
    usual: float | None = None  # the system's usual, in the unit of `observed`
    chance: float | None = None  # of so much by luck (the bound the rule weighed)

    @classmethod
    def of(cls, rule: RuleShape, observed: float, threshold: float, window: float,
           evidence: Mapping[str, Any] | None = None) -> Finding:
        """The finding of `rule`; `evidence`: a suspension record's (the
        windows read when it was made, where a ratio's sample is found; the
        system's usual and the chance, where the rule weighed them)."""
        evidence = evidence or {}
        counts = evidence.get("counts") or {}
        sample = counts.get(_key(rule.per, window)) if rule.per else None
        return cls(rule.kind, rule.metric, rule.per, observed, threshold, window,
                   float(sample) if sample is not None else None, evidence.get("usual"),
                   evidence.get("chance"))

    def limit(self, lang: str = "en") -> str:
        if self.kind == "ratio":
            return percent(self.threshold, lang)
        if self.kind == "spike":
            return _times(self.threshold, lang)
        return amount(self.metric, self.threshold, lang)

    def words(self, lang: str = "en") -> str:
        part, per = said(self.metric, lang), said(self.per or "", lang)
        sentence = FINDINGS.get(self.kind, _UNKNOWN_KIND)[lang]
        sample = ""
        if self.kind == "ratio" and self.sample is None:
            sentence = _UNSAMPLED[lang]
        elif self.sample is not None:
            sample = (_count_of(self.per or "", self.sample, lang) if lang == "ru"
                      else number(self.sample, lang) if lang == "kk"
                      else count(self.per or "", self.sample, lang))
        said_ = sentence.format(
            count=count(self.metric, self.observed, lang), within=within(self.window, lang),
            limit=self.limit(lang), name=part.name, share=percent(self.observed, lang),
            sample=sample, per=per.name, did=part.did or f"counted as {part.name}",
            times=_times(self.threshold, lang), observed=number(self.observed, lang))
        if self.usual is not None:
            usual = (percent(self.usual, lang) if self.kind == "ratio"
                     else amount(self.metric, round(self.usual, 1), lang))
            said_ += _USUAL[lang].format(usual=usual)
        if self.chance:
            said_ += _CHANCE[lang].format(odds=number(_odds(self.chance), lang))
        return said_


# the evidence a weighing rule adds: the system's usual, and how unlikely by luck
_USUAL = {"en": "; usually {usual}", "ru": "; обычно {usual}", "kk": "; әдетте {usual}"}
_CHANCE = {"en": "; by chance, at most 1 in {odds}",
           "ru": "; случайно — не чаще 1 раза из {odds}",
           "kk": "; кездейсоқ болуы — {odds} реттің ең көбі 1-і"}


def _odds(chance: float) -> float:
    """1/chance, to two significant figures: a chance people can read."""
    odds = 1.0 / chance
    return float(f"{odds:.2g}") if odds < 1e15 else 1e15


def title(rule: RuleShape, window: float, lang: str = "en") -> str:
    """A rule's name in words: "messages in 10 min", "письма за 10 минут",
    "10 минут ішіндегі хаттар"."""
    sentence = TITLES.get(rule.kind, TITLES["ceiling"])[lang]
    return sentence.format(name=said(rule.metric, lang).name, within=_within_of(window, lang),
                           per=said(rule.per or "", lang).name)


_RULE = {"en": "{finding} (rule {rule})", "ru": "{finding} (правило {rule})",
         "kk": "{finding} ({rule} ережесі)"}
_OPERATOR = {"en": "decision of operator {by}: {reason}",
             "ru": "решение оператора {by}: {reason}",
             "kk": "{by} операторының шешімі: {reason}"}


# a system suspended because its senders' restrictions became the system's
# (blocklist_guard/suspensions.py: the record's evidence says which)
_SEVERAL = {"en": "{n} of its senders restricted {within}: {senders}",
            "ru": "{within} ограничено отправителей системы: {n} ({senders})",
            "kk": "{within} жүйенің {n} жіберушісі шектелді: {senders}"}
_ROTATION = {"en": "{new}, a sender first seen after {first} was restricted, restricted too: "
                   "one sender changing its MAIL FROM",
             "ru": "{new}, впервые появившийся после ограничения {first}, тоже ограничен: "
                   "похоже, один отправитель меняет адрес MAIL FROM",
             "kk": "{first} шектелгеннен кейін алғаш көрінген {new} жіберушісі де шектелді: "
                   "бір жіберуші MAIL FROM мекенжайын ауыстырып жүрген сияқты"}


def _escalated(evidence: Mapping[str, Any], lang: str) -> str:
    senders = list(evidence.get("senders", []))
    if evidence.get("escalated") == "rotation" and len(senders) >= 2:
        return _ROTATION[lang].format(new=senders[-1], first=senders[0])
    return _SEVERAL[lang].format(n=number(len(senders), lang), senders=", ".join(senders),
                                 within=within(float(evidence.get("window", 3600)), lang))


def why(record: Suspension, rule: RuleShape | None) -> dict[str, str]:
    """Why a system is suspended (a sender restricted), a sentence per
    language (kk, ru, en): the rule's finding, its senders' restrictions
    that became the system's, or the operator's decision and reason.
    `rule`: the record's rule as configured (None: no longer, or none)."""
    out = {}
    for lang in LANGS:
        if record.rule is None and "escalated" in record.evidence:
            out[lang] = _escalated(record.evidence, lang)
            continue
        if record.rule is None:
            out[lang] = _OPERATOR[lang].format(by=record.by, reason=record.reason or "")
            continue
        if rule is not None and record.observed is not None and record.threshold is not None:
            finding = Finding.of(rule, record.observed, record.threshold, record.window or 0,
                                 record.evidence)
        else:  # the rule is gone from the config: the figures as recorded
            finding = Finding("", "", None, record.observed or 0, record.threshold or 0,
                              record.window or 0)
        out[lang] = _RULE[lang].format(finding=finding.words(lang), rule=record.rule)
    return out
