"""The templates: those the package carries, an operator's directory that
replaces some of them, and `check-config`, which renders each once and
names the one that is missing or broken."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import jinja2

from mailgw import config, templating
from mailgw.web.app import LANG_LINKS, render

SYSTEM = """
[[systems]]
id = "mfa"
name = "MFA"
owners = ["postmaster@mfa.gov.kz"]
networks = ["10.1.0.0/16"]
sender_domains = ["mfa.gov.kz"]
"""


def check_config(tmp_path: Path, gateway: str = "") -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.toml"
    path.write_text(f"[gateway]\n{gateway}\n{SYSTEM}")
    return subprocess.run([sys.executable, "-m", "mailgw", "check-config", "--config", str(path)],
                          capture_output=True, text=True, cwd=tmp_path)


def test_a_template_in_the_operators_directory_replaces_that_one_only(tmp_path):
    (tmp_path / "dsn.txt.j2").write_text("Our own words about {{ queue_id }}.\n")
    env = templating.environment(tmp_path)
    assert env.get_template("dsn.txt.j2").render(queue_id="Q1") == "Our own words about Q1.\n"
    def login(templates):
        return render(templates, "login.html.j2", "en", LANG_LINKS, next="", error=False)

    assert login(env) == login(templating.environment(None))


def test_check_config_passes_on_the_packaged_templates_from_a_directory_without_any(tmp_path):
    done = check_config(tmp_path)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "templates").exists()


def test_check_config_fails_naming_a_broken_template_of_the_operators_and_the_line(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notice_suspended.txt.j2").write_text("Dear owners,\n{{ system.nmae }} is stopped.\n")
    (mine / "status.html.j2").write_text("{% extends 'page_base.html.j2' %}{% block body %}\n")
    done = check_config(tmp_path, f'templates_dir = "{mine}"')
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith("error: ") and "template notice_suspended.txt.j2, line 2: " in lines[0]
    assert "nmae" in lines[0] and "(the owner notice of a suspension)" in lines[0]
    assert "template status.html.j2, line 1: Unexpected end of template" in lines[1]


def test_check_config_fails_on_a_templates_dir_that_is_not_there(tmp_path):
    done = check_config(tmp_path, 'templates_dir = "templates"')
    assert done.returncode == 1
    assert f"gateway.templates_dir: {tmp_path / 'templates'}: no such directory" in done.stderr


def test_every_template_missing_is_named_once(tmp_path):
    bare = jinja2.Environment(loader=jinja2.FileSystemLoader(tmp_path),
                              undefined=jinja2.StrictUndefined)
    cfg = config.Config.model_validate({"systems": []})
    found = asyncio.run(templating.problems(bare, cfg))
    assert found == [
        "template notice_suspended.subject.j2: not found (the owner notice of a suspension)",
        "template notice_lifted.subject.j2: not found (the owner notice of a lift)",
        "template notice_restricted.subject.j2: not found (the owner notice of a sender's "
        "restriction)",
        "template notice_unrestricted.subject.j2: not found (the owner notice of a "
        "restriction's lift)",
        "template dsn.txt.j2: not found (a DSN)",
        "template alert_dnsbl_listed.subject.j2: not found (the operators' alert of a DNSBL listing)",
        "template alert_watch.subject.j2: not found (the operators' alert of a watch)",
        "template status.html.j2: not found (the status page (kk))",
        "template systems.html.j2: not found (the operators' list of systems (kk))",
        "template login.html.j2: not found (the sign-in page)",
        "template error.html.j2: not found (the error page)",
    ]
