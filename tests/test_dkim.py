"""DKIM signatures made by mailgw, checked by independent verifiers against a
real DNS server: opendkim-testmsg (Debian's opendkim-tools, libopendkim) and
dkimpy's verifier.

libopendkim asks the resolvers of /etc/resolv.conf on port 53, so the test
DNS server listens on 127.0.5.3:53 and opendkim-testmsg runs in a private
mount namespace whose /etc/resolv.conf names it (root and util-linux's
unshare, as in CI). The machine's own resolver config is never touched.
"""

from __future__ import annotations

import re
import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dkim
import dns.resolver
import pytest

from mailgw.config import DKIMKey
from mailgw.relay.dkim import DkimKeyError, DkimSigner
from tests.support.dns import DNSTestServer
from tests.support.gateway import GatewayThread
from tests.support.waiting import wait_until

DNS_HOST = "127.0.5.3"
MSG = (
    b"From: Clerk <clerk@mfa.gov.kz>\r\nTo: someone@example.com\r\nSubject: quarterly report\r\n"
    b"Date: Mon, 25 Nov 2024 10:00:00 +0500\r\nMessage-ID: <r1@mfa.gov.kz>\r\n\r\n"
    b"Dear colleague,\r\n\r\nthe report is attached.\r\n"
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """domain -> (private key file, TXT record text), made by opendkim-genkey."""
    out = {}
    for domain in ("mfa.gov.kz", "moj.gov.kz"):
        d = tmp_path_factory.mktemp(domain)
        subprocess.run(["opendkim-genkey", "-b", "2048", "-d", domain, "-s", "sel", "-D", str(d)],
                       check=True)
        txt = (d / "sel.txt").read_text()
        record = "".join(re.findall(r'"([^"]*)"', txt))
        out[domain] = (d / "sel.private", record)
    return out


@pytest.fixture(scope="module")
def dkim_dns(keys) -> Iterator[DNSTestServer]:
    server = DNSTestServer(host=DNS_HOST, port=53)
    try:
        server.start()
    except OSError as e:
        pytest.fail(f"the DKIM test needs {DNS_HOST}:53 for libopendkim's resolver: {e}")
    for domain, (_, record) in keys.items():
        chunks = " ".join(f'"{record[i:i + 250]}"' for i in range(0, len(record), 250))
        server.add(f"sel._domainkey.{domain}. 60 IN TXT {chunks}")
    yield server
    server.stop()


def signer(keys, *domains: str) -> DkimSigner:
    return DkimSigner([DKIMKey(domain=d, selector="sel", key_file=keys[d][0]) for d in domains])


def opendkim_verify(message: bytes, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert shutil.which("opendkim-testmsg"), "install Debian's opendkim-tools"
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {DNS_HOST}\noptions timeout:2 attempts:1\n")
    (tmp_path / "msg.eml").write_bytes(message)
    script = (f"mount --bind {resolv} /etc/resolv.conf && "
              f"opendkim-testmsg -t {tmp_path} < {tmp_path / 'msg.eml'}")
    return subprocess.run(["unshare", "--mount", "sh", "-c", script],
                          capture_output=True, text=True, timeout=30)


def dkimpy_verify(message: bytes) -> bool:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [DNS_HOST]

    def txt(name: bytes, timeout: int = 5) -> bytes:
        answer = resolver.resolve(name.decode(), "TXT")
        return b"".join(b"".join(r.strings) for r in answer)

    return bool(dkim.verify(message, dnsfunc=txt))


def test_signature_verifies_with_opendkim_and_dkimpy(keys, dkim_dns, tmp_path):
    signed = signer(keys, "mfa.gov.kz").sign(MSG, "mfa.gov.kz") + MSG
    assert signed.startswith(b"DKIM-Signature: ")
    result = opendkim_verify(signed, tmp_path)
    assert result.returncode == 0, result.stderr
    assert dkimpy_verify(signed)


def test_tampered_body_fails_opendkim(keys, dkim_dns, tmp_path):
    signed = signer(keys, "mfa.gov.kz").sign(MSG, "mfa.gov.kz") + MSG
    tampered = signed.replace(b"the report is attached", b"the invoice is attached")
    result = opendkim_verify(tampered, tmp_path)
    assert result.returncode != 0
    assert not dkimpy_verify(tampered)


@pytest.mark.parametrize("configured,envelope,expected", [
    (("mfa.gov.kz", "moj.gov.kz"), "moj.gov.kz", "mfa.gov.kz"),  # From: domain wins
    (("moj.gov.kz",), "moj.gov.kz", "moj.gov.kz"),              # else the envelope's
    (("moj.gov.kz",), "other.kz", None),                        # else unsigned
])
def test_key_selection(keys, configured, envelope, expected):
    header = signer(keys, *configured).sign(MSG, envelope)
    if expected is None:
        assert header == b""
    else:
        assert re.search(rb"\bd=" + expected.encode() + rb";", header.replace(b"\r\n\t", b""))
        assert b"h=from:" in header.replace(b"\r\n", b"").replace(b" ", b"").replace(b"\t", b"")


def test_bad_key_file_is_named_in_the_error(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(DkimKeyError, match="bad.pem is not an RSA private key"):
        DkimSigner([DKIMKey(domain="mfa.gov.kz", selector="s", key_file=bad)])
    with pytest.raises(DkimKeyError, match="cannot read"):
        DkimSigner([DKIMKey(domain="mfa.gov.kz", selector="s", key_file=tmp_path / "none.pem")])


def test_gateway_signs_once_and_the_delivered_bytes_verify(keys, dkim_dns, make_config, dest,
                                                           tmp_path):
    cfg = make_config(
        delivery={"relayhost": f"[127.0.0.1]:{dest.port}"},
        dkim=[{"domain": "mfa.gov.kz", "selector": "sel", "key_file": str(keys["mfa.gov.kz"][0])}],
    )
    with GatewayThread(cfg) as gw, smtplib.SMTP("127.0.0.1", gw.port) as c:
        c.sendmail("clerk@mfa.gov.kz", ["someone@example.com"], MSG)
        wait_until(lambda: dest.messages)
    delivered = dest.messages[0].data
    assert delivered.count(b"DKIM-Signature:") == 1
    assert delivered.startswith(b"DKIM-Signature:")
    result = opendkim_verify(delivered, tmp_path)
    assert result.returncode == 0, result.stderr
