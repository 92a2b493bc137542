"""An outage is told once when it starts and once when it ends."""

from __future__ import annotations

import logging

from mailgw.outage import Outage


def test_an_outage_logs_one_line_at_start_and_one_at_end_and_counts_every_failure(caplog):
    counted = []
    outage = Outage(logging.getLogger("test.outage"), "the state store",
                    count=lambda: counted.append(1))
    with caplog.at_level(logging.INFO, logger="test.outage"):
        outage.ok()  # nothing was wrong: nothing to say
        for _ in range(5):
            outage.failed(ConnectionError("Connection refused"), "suspensions hold from memory")
        assert outage.down
        outage.ok()
        outage.ok()
    assert [r.getMessage() for r in caplog.records] == [
        "the state store unavailable: Connection refused; "
        "suspensions hold from memory",
        "the state store back after 0 s",
    ]
    assert not caplog.records[0].exc_info  # a line, not a traceback
    assert len(counted) == 5 and not outage.down
