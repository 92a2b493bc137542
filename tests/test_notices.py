"""Owner notices as a mail client reads them: the subject decodes with its
spaces (Kazakh, Russian and English names, long enough to fold), the body
says why in figures, and a suspension by an operator gives the operator's
reason, not "abnormal traffic"."""

from __future__ import annotations

import email
import email.header
import email.policy
import time

import pytest

from mailgw.anomaly.rules import Rule
from mailgw.blocklist_guard.notices import Notifier
from mailgw.clock import SystemClock
from mailgw.config import System
from mailgw.relay.outbox import Outbox
from mailgw.relay.spool import Spool
from mailgw.state.records import Suspension
from mailgw.templating import environment

RULE = Rule("messages_10m", "ceiling", "messages", 600, 3)
AUTO = Suspension("mfa", time.time(), "auto", rule="messages_10m", observed=4, threshold=3,
                  window=600, evidence={"counts": {"messages/600s": 4}})
BY_HAND = Suspension("mfa", time.time(), "alice", reason="phishing reported to CERT-KZ")


@pytest.fixture
def notifier(make_config, tmp_path) -> Notifier:
    cfg = make_config()
    outbox = Outbox(Spool(tmp_path / "spool"), SystemClock(), submit=lambda meta, data: None)
    return Notifier(templates=environment(cfg.gateway.templates_dir), outbox=outbox, hostname="gw.test",
                    sender="postmaster@gw.test", operators=["noc@gateway.gov.kz"],
                    status_url="https://gw.example/v1/systems/{system}/status",
                    rule=lambda name: RULE if name == RULE.name else None)


def system(name: str) -> System:
    return System(id="mfa", name=name, owners=["postmaster@mfa.gov.kz"],
                  networks=["10.1.0.0/16"], sender_domains=["mfa.gov.kz"])


@pytest.mark.parametrize("name", [
    "Министерство иностранных дел РК",  # the one whose folding used to eat a space
    "Қазақстан Республикасының Сыртқы істер министрлігі",
    "Ministry of Foreign Affairs",
    "МИД",
], ids=["russian-name", "kazakh-name", "english-name", "short-name"])
@pytest.mark.parametrize("kind,words", [
    ("suspended", "жіберу тоқтатылды / отправка приостановлена / relaying suspended"),
    ("lifted", "жіберу қалпына келтірілді / отправка возобновлена / relaying resumed"),
], ids=["suspended", "lifted"])
def test_the_subject_decodes_with_its_spaces_in_a_mail_client(notifier, name, kind, words):
    record = AUTO if kind == "suspended" else Suspension(
        **{**AUTO.as_dict(), "lifted_at": time.time(), "lifted_by": "bob",
           "lift_reason": "password reset"})
    raw = notifier.build(kind, system(name), record, held=2)
    expected = f"[ЭПБШ] {name} (mfa): {words}"
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Subject"] == expected
    # as older readers decode it, encoded word by encoded word
    legacy = email.message_from_bytes(raw, policy=email.policy.compat32)
    assert str(email.header.make_header(email.header.decode_header(legacy["Subject"]))) == \
        expected
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))


def test_a_rules_notice_says_abnormal_traffic_in_figures(notifier):
    text = email.message_from_bytes(notifier.build("suspended", system("MFA"), AUTO, held=2),
                                    policy=email.policy.default)
    body = text.get_body(("plain",)).get_content()
    assert "трафиктің қалыптан тыс белсенділігі" in body and "abnormal traffic" in body
    assert "10 минут ішінде 4 хат, шегі 3 (messages_10m ережесі)" in body
    assert "4 письма за 10 минут, порог 3 (правило messages_10m)" in body
    assert "4 messages in 10 min, limit 3 (rule messages_10m)" in body
    assert "held at the gateway: 2 messages" in body and "задержано: 2 письма" in body


def test_an_operators_suspension_gives_the_operators_reason_not_abnormal_traffic(notifier):
    message = email.message_from_bytes(notifier.build("suspended", system("MFA"), BY_HAND),
                                       policy=email.policy.default)
    for part in (message.get_body(("plain",)), message.get_body(("html",))):
        body = part.get_content()
        assert "abnormal" not in body and "аномальн" not in body and "қалыптан тыс" not in body
        assert "decision of operator alice: phishing reported to CERT-KZ" in body
        assert "решение оператора alice: phishing reported to CERT-KZ" in body
        assert "alice операторының шешімі: phishing reported to CERT-KZ" in body


def test_a_lift_with_purge_says_the_held_mail_was_deleted(notifier):
    purged = Suspension(**{**BY_HAND.as_dict(), "lifted_at": time.time(), "lifted_by": "bob",
                           "lift_reason": "spam confirmed", "purge": True})
    message = email.message_from_bytes(notifier.build("lifted", system("MFA"), purged),
                                       policy=email.policy.default)
    body = message.get_body(("plain",)).get_content()
    assert "was deleted" in body and "удалены" in body and "being delivered" not in body


def test_a_senders_lift_with_a_grace_says_until_when_its_mail_is_not_checked(notifier):
    lifted = Suspension(**{**BY_HAND.as_dict(), "sender": "press@mfa.gov.kz",
                           "lifted_at": 1_796_000_000.0, "lifted_by": "bob",
                           "lift_reason": "press release", "grace_until": 1_796_007_200.0})
    for grace in (True, False):
        record = lifted if grace else Suspension(**{**lifted.as_dict(), "grace_until": None})
        message = email.message_from_bytes(notifier.build("lifted", system("MFA"), record),
                                           policy=email.policy.default)
        for part in ("plain", "html"):
            body = message.get_body((part,)).get_content()
            lines = ("2026-11-30 02:53 UTC дейін бұл жіберушінің хаттары ережелермен",
                     "До 2026-11-30 02:53 UTC письма этого отправителя не проверяются",
                     "Until 2026-11-30 02:53 UTC this sender's mail is not checked")
            assert all((line in body) == grace for line in lines), body
        if grace:
            assert "\r\n\r\nРУССКИЙ" in message.get_body(("plain",)).get_content()
