"""The templates: those the package carries, and an operator's directory
that replaces some of them."""

from __future__ import annotations

from mailgw import templating


def test_a_template_in_the_operators_directory_replaces_that_one_only(tmp_path):
    (tmp_path / "dsn.txt.j2").write_text("Our own words about {{ queue_id }}.\n")
    env = templating.environment(tmp_path)
    assert env.get_template("dsn.txt.j2").render(queue_id="Q1") == "Our own words about Q1.\n"
    packaged = templating.environment(None).get_template("login.html.j2").render(next="",
                                                                                  error=None)
    assert env.get_template("login.html.j2").render(next="", error=None) == packaged

