"""An outage of something the gateway depends on (the state store, the
spool's disk, the event log's disk), told once: one log line when it starts,
one when it ends, whatever number of calls fail in between. Each failure is
still counted, for the metrics; a traceback per retry would bury the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class Outage:
    def __init__(self, log: logging.Logger, what: str,
                 count: Callable[[], None] = lambda: None, quiet: float = 0.0):
        """`what` names the dependency in the log ("the state store");
        `count()` is called on every failure (a metric); `quiet`: seconds
        without a failure before a success ends the outage (for a
        dependency where some calls get through while others fail, as
        small writes on a nearly full disk)."""
        self.log, self.what, self.count, self.quiet = log, what, count, quiet
        self.since: float | None = None  # monotonic time of the first failure
        self._last = 0.0  # of the latest failure

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, error: BaseException, consequence: str = "") -> None:
        """A call failed; the first of an outage is logged, with `consequence`
        (what the gateway does meanwhile)."""
        self.count()
        self._last = time.monotonic()
        if self.since is None:
            self.since = self._last
            self.log.error("%s unavailable: %s%s", self.what, _describe(error),
                           f"; {consequence}" if consequence else "")

    def ok(self) -> None:
        """A call succeeded: an outage, if there was one, is over."""
        if self.since is not None and time.monotonic() - self._last >= self.quiet:
            self.log.warning("%s back after %.0f s", self.what, time.monotonic() - self.since)
            self.since = None


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if isinstance(error, OSError) else f"{type(error).__name__}: {text}"
