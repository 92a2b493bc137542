"""Waiting for something to become true, without fixed sleeps."""

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, what: str = "") -> T:
    """The predicate's first true value."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    return value
