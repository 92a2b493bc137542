"""Installing as operators do: the README's commands are those CI runs."""

from __future__ import annotations

import re

from tests.conftest import REPO


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

