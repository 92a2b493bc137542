"""Installing as operators do: the README's commands are those CI runs; the
built wheel, installed in a fresh virtual environment, runs a gateway from a
directory with no templates/ in it, which bounces, notifies and serves its
pages with the templates the package carries."""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import smtplib
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.support.needs import missing
from tests.support.process import ServeProcess, free_port
from tests.support.waiting import wait_until


def readme_commands() -> list[str]:
    """The newcomer commands: the first two shell blocks of the README."""
    blocks = re.findall(r"```sh\n(.*?)\n```", (REPO / "README.md").read_text(), re.DOTALL)
    return blocks[:2]


def test_ci_runs_the_readmes_test_command_step_by_step():
    _, tests = readme_commands()
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    steps = tests.split(" && ")
    assert [step for step in steps if step not in ci] == []
    at = [ci.index(step) for step in steps]
    assert at == sorted(at), "in the README's order"



def run(*command: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
    return done


def build_wheel(tmp_path: Path, env: dict[str, str]) -> Path:
    """The wheel `pip install .` would install, built from a copy of the
    sources, so that the build leaves nothing in the checkout."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "mailgw", src / "mailgw",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, src / name)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "wheels", src,
        env=env, timeout=900)
    (wheel,) = (tmp_path / "wheels").glob("mailgw-*.whl")
    return wheel


CONFIG = """
[gateway]
hostname = "gw.test"
listen = ["127.0.0.1:{port}"]
[http]
listen = ["127.0.0.1:{http}"]
[delivery]
relayhost = "[127.0.0.1]:{dest}"
[[systems]]
id = "mfa"
name = "Ministry of Foreign Affairs"
owners = ["postmaster@mfa.gov.kz"]
networks = ["127.0.0.0/8"]
sender_domains = ["mfa.gov.kz"]
"""


@pytest.mark.install
def test_the_wheel_installed_in_a_fresh_venv_bounces_and_notifies_with_its_own_templates(
        tmp_path, dest):
    venv = tmp_path / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", venv], capture_output=True, text=True)
    if made.returncode != 0:
        missing(f"python3 -m venv (Debian: python3-venv): {made.stderr.strip()}")
    # nothing of this checkout: the installed package alone
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MAILGW_COMPILE")}
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", build_wheel(tmp_path, env),
        env=env, timeout=900)
    home = tmp_path / "run"  # the config's directory: no templates/ in it
    home.mkdir()
    port, http = free_port(), free_port()
    config = home / "mailgw.toml"
    config.write_text(CONFIG.format(port=port, http=http, dest=dest.port))
    where = run(venv / "bin" / "python", "-c", "import mailgw; print(mailgw.__file__)",
                cwd=home, env=env).stdout
    assert where.startswith(str(venv)), where
    mailgw = venv / "bin" / "mailgw"
    run(mailgw, "check-config", "--config", config, cwd=home, env=env)

    dest.faults.rcpt["gone@example.com"] = "550 5.1.1 <gone@example.com>: no such user"
    gateway = ServeProcess(config, port, mailgw=(str(mailgw),), env=env).start()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("clerk@mfa.gov.kz", ["gone@example.com", "someone@example.com"],
                            b"Subject: report\r\n\r\nthe report\r\n")
        (dsn,) = wait_until(lambda: [m for m in dest.messages if m.mail_from == ""],
                            timeout=30, what="the DSN")
        report = email.message_from_bytes(dsn.data, policy=email.policy.default)
        assert dsn.rcpt_tos == ["clerk@mfa.gov.kz"]
        assert report.get_content_type() == "multipart/report"
        human = report.get_payload()[0].get_content()
        assert "<gone@example.com>" in human and "no such user" in human

        with urllib.request.urlopen(f"http://127.0.0.1:{http}/login", timeout=10) as page:
            assert page.status == 200 and "<form" in page.read().decode()

        run(mailgw, "suspend", "mfa", "--reason", "a test of the notice", "--config", config,
            cwd=home, env=env)
        (notice,) = wait_until(lambda: [m for m in dest.messages
                                        if "postmaster@mfa.gov.kz" in m.rcpt_tos],
                               timeout=30, what="the owner notice")
        told = email.message_from_bytes(notice.data, policy=email.policy.default)
        assert "Ministry of Foreign Affairs (mfa)" in told["Subject"]
        assert [p.get_content_type() for p in told.iter_parts()] == ["text/plain", "text/html"]
    finally:
        gateway.stop()
