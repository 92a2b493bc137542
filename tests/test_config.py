"""Config errors name the file, the key and what was expected; the example
config.toml is valid; lookups of systems are right."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mailgw import config, hashing
from mailgw.anomaly.metrics import METRICS
from mailgw.systems import SystemDirectory
from tests.conftest import REPO
from tests.support.process import free_port

RULE = """
[[anomaly.rules]]
name = "bounce_rate"
kind = "ratio"
metric = "perm_failures"
per = "attempts"
window = "1h"
threshold = 0.1
"""
METRIC_NAMES = ", ".join(METRICS)

SYSTEM = """
[[systems]]
id = "mfa"
name = "MFA"
owners = ["postmaster@mfa.gov.kz"]
networks = ["10.1.0.0/16"]
sender_domains = ["mfa.gov.kz"]
"""


@pytest.mark.parametrize("text,expected", [
    ("[gateway]\nhostnme = 'x'\n", "gateway.hostnme: unknown key"),
    ("[limits]\nmax_recipients = 50\n", "limits.max_recipients: Input should be greater than or equal to 100"),
    ("[limits]\nidle_timeout = '5q'\n", "limits.idle_timeout: expected a duration"),
    ("[limits]\nmax_message_size = 'big'\n", "limits.max_message_size: expected a size"),
    ("[delivery]\nresolver = ['dns.example']\n", "delivery.resolver"),
    (SYSTEM.replace("10.1.0.0/16", "10.1.0.300/16"), "systems[mfa].networks: expected a network in CIDR form"),
    (SYSTEM.replace("10.1.0.0/16", "10.1.0.1/16"), "systems[mfa].networks: expected a network in CIDR form"),
    (SYSTEM.replace('id = "mfa"', 'id = "MFA!"'), "systems[0].id: expected lower-case"),  # no id to name it by
    (SYSTEM.replace('owners = ["postmaster@mfa.gov.kz"]', "owners = []"), "systems[mfa].owners"),
    (SYSTEM + SYSTEM, "systems[1].id: duplicate system id 'mfa'"),  # the id names two
    (SYSTEM + SYSTEM.replace('"mfa"', '"moj"'), "systems[moj].networks[0]: 10.1.0.0/16 is already a network of 'mfa'"),
    (SYSTEM + SYSTEM.replace('"mfa"', '"moj"').replace('"mfa.gov.kz"', '"bad domain"').replace("10.1.", "10.2."), "systems[moj].sender_domains: expected a domain name"),
    (SYSTEM + "status_token_hash = 'plaintext-token'\n", "systems[mfa].status_token_hash: expected a sha256$"),
    (SYSTEM + "[[systems.auth]]\nusername = 'u'\npassword_hash = 'secret'\n", "systems[mfa].auth[0].password_hash: expected a scrypt hash"),
    (SYSTEM.replace("[[systems]]", "[[systems]]\nbogus = 1"), "systems[mfa].bogus: unknown key"),
    ("[gateway\n", "TOML syntax error"),
    ("[gateway]\nreuse_port = true\n", "gateway.reuse_port: gateways sharing a port must count and suspend together"),
    (RULE.replace('"perm_failures"', '"bounces"'), f"anomaly.rules[0].metric: expected one of the metrics {METRIC_NAMES} (got 'bounces')"),
    (RULE.replace('"attempts"', '"tries"'), f"anomaly.rules[0].per: expected one of the metrics {METRIC_NAMES} (got 'tries')"),
    (SYSTEM + "anomaly = { bounce_rate_1h = { suspend = 0.01 } }\n", "systems[mfa].anomaly.bounce_rate_1h: suspend must be a smaller chance than watch"),
    (SYSTEM + "anomaly = { rejections_10m = { watch = 0.01 } }\n", "systems[mfa].anomaly.rejections_10m: a ceiling is a hard cap"),
    (SYSTEM + "anomaly = { no_such_rule = 3 }\n", "systems[mfa].anomaly.no_such_rule: no rule named 'no_such_rule'"),
    (SYSTEM + "anomaly = { spike_1h = { treshold = 4 } }\n", "systems[mfa].anomaly.spike_1h.treshold: unknown key"),
    (SYSTEM + 'anomaly = { spike_1h = { respond = "suspend" } }\n', "systems[mfa].anomaly.spike_1h: a rule that weighs evidence suspends at a chance"),
])
def test_config_errors_name_file_key_and_expectation(tmp_path, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as e:
        config.load(path)
    assert str(e.value).startswith(f"{path}: ")
    assert expected in str(e.value)


@pytest.mark.parametrize("text,key,secret", [
    (SYSTEM + "status_token_hash = 'the-token-itself-0123'\n", "systems[mfa].status_token_hash",
     "the-token-itself-0123"),
    (SYSTEM + "[[systems.auth]]\nusername = 'u'\npassword_hash = 'hunter2-pasted'\n",
     "systems[mfa].auth[0].password_hash", "hunter2-pasted"),
    (SYSTEM + "[[systems.auth]]\nusername = 'u'\npassword = 'hunter2-pasted'\n",
     "systems[mfa].auth[0].password", "hunter2-pasted"),
    ("[[http.operator_tokens]]\nname = 'alice'\ntoken_hash = 'alice-token-0123456789'\n",
     "http.operator_tokens[0].token_hash", "alice-token-0123456789"),
    ("[state]\nredis_url = 'http://:s3cret-pass@redis.internal:6379/0'\n", "state.redis_url",
     "s3cret-pass"),
    ("[state]\nredis_url = 8675309123\n", "state.redis_url", "8675309123"),
], ids=["status-token", "password-hash", "password", "operator-token", "redis-url",
        "redis-url-type"])
def test_a_config_error_never_echoes_a_secret(tmp_path, text, key, secret):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as e:
        config.load(path)
    assert f"{path}: {key}: " in str(e.value) and secret not in str(e.value), str(e.value)


def test_check_config_warns_of_a_config_with_no_systems_and_masks_the_redis_password(tmp_path):
    # a closed loopback port: check-config probes the Redis it names
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    path = tmp_path / "c.toml"
    path.write_text(f"[state]\nbackend = 'redis'\nredis_url = '{url}'\n")
    out = subprocess.run([sys.executable, "-m", "mailgw", "check-config", "--config", str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"warning: {path} has no [[systems]]" in out.stderr
    assert "does not answer now" in out.stderr
    assert "OK, 0 systems" in out.stdout and "s3cret" not in out.stdout + out.stderr
    assert f'redis_url = "{url.replace("s3cret", "***")}"' in out.stdout


def test_auth_without_tls_is_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(SYSTEM + f"[[systems.auth]]\nusername='u'\npassword_hash='{hashing.hash_password('pw')}'\n")
    with pytest.raises(config.ConfigError, match="gateway.tls: SMTP AUTH is offered only after STARTTLS"):
        config.load(path)


def test_example_config_is_valid_and_check_config_prints_it():
    out = subprocess.run([sys.executable, "-m", "mailgw", "check-config", "--config",
                          str(REPO / "config.toml")], capture_output=True, text=True, check=True)
    assert "OK, 1 system\n" in out.stdout and "max_queue_lifetime = 432000.0" in out.stdout
    assert out.stderr == ""


@pytest.mark.parametrize("text,key", [
    ("[limits]\nmax_errors = 0\n", "limits.max_errors"),
    (RULE.replace('"perm_failures"', '"bounces"'), "anomaly.rules[0].metric"),
])
def test_check_config_exits_1_with_the_error(tmp_path, text, key):
    path = tmp_path / "c.toml"
    path.write_text(text)
    out = subprocess.run([sys.executable, "-m", "mailgw", "check-config", "--config", str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert f"{path}: {key}:" in out.stderr


def test_units_and_relative_paths(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[gateway]\nspool_dir = 'q'\n[delivery]\nfirst_retry = '5m'\n"
                    "max_queue_lifetime = '5d'\nrelayhost = '[127.0.0.1]:2526'\n"
                    "routes = { 'Gov.KZ' = 'mx.gov.kz' }\n" + SYSTEM)
    cfg = config.load(path)
    assert cfg.gateway.spool_dir == tmp_path / "q"
    assert cfg.delivery.first_retry == 300 and cfg.delivery.max_queue_lifetime == 432000
    assert cfg.delivery.relayhost is not None and not cfg.delivery.relayhost.mx_lookup
    assert cfg.delivery.routes["gov.kz"].mx_lookup and cfg.delivery.routes["gov.kz"].port == 25


def test_longest_prefix_wins_and_ipv4_mapped_addresses_match():
    def system(i: str, nets: list[str]) -> config.System:
        return config.System(id=i, name=i, owners=["a@b.kz"], networks=nets, sender_domains=["b.kz"])

    d = SystemDirectory([system("wide", ["10.0.0.0/8"]), system("narrow", ["10.1.2.0/24"]),
                         system("v6", ["2001:db8::/32"])])
    assert d.by_ip("10.1.2.3").id == "narrow"
    assert d.by_ip("10.9.9.9").id == "wide"
    assert d.by_ip("::ffff:10.1.2.3").id == "narrow"
    assert d.by_ip("2001:db8::1").id == "v6"
    assert d.by_ip("192.0.2.1") is None
    assert d.by_ip("not-an-ip") is None
