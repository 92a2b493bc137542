"""A tool a test needs that this machine lacks: skipped on a developer's
machine, a failure in CI, where .ci/run installs every one."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing(what: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{what}: .ci/run should have installed it")
    pytest.skip(what)
