"""logrotate and the event log: the file renamed under a running `mailgw
serve`, then SIGUSR1; what was emitted before is in the renamed file, what
is emitted after in a new one at the path, and no event is lost or doubled
while mail flows throughout."""

from __future__ import annotations

import json
import signal
import threading

from tests.support.process import ServeProcess, free_port
from tests.support.waiting import wait_until
from tests.test_serve_e2e import send_one, write_config


def accepted_ids(path) -> list[str]:  # type: ignore[no-untyped-def]
    if not path.exists():
        return []
    return [e["queue_id"] for e in map(json.loads, path.read_text().splitlines())
            if e["event"] == "accepted"]


def test_sigusr1_reopens_the_event_log_after_a_rename_and_loses_nothing(tmp_path, dest):
    port = free_port()
    gw = ServeProcess(write_config(tmp_path, dest.port, port), port).start()
    events, rotated = tmp_path / "events.jsonl", tmp_path / "events.jsonl.1"
    reopened = threading.Event()
    sent: list[tuple[str, bool]] = []  # queue id, whether sending began after the reopen
    stop = threading.Event()

    def client() -> None:
        n = 0
        while not stop.is_set():
            after = reopened.is_set()
            queue_id = send_one(port, n)
            n += 1
            if queue_id:
                sent.append((queue_id, after))

    sender = threading.Thread(target=client)
    sender.start()
    try:
        wait_until(lambda: accepted_ids(events), what="events in the log")
        events.rename(rotated)  # as logrotate does; the gateway still writes the old file
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: "event log reopened" in gw.log.read_text(), what="the reopen")
        reopened.set()
        wait_until(lambda: sum(after for _, after in sent) >= 20, timeout=30,
                   what="mail sent after the reopen")
    finally:
        stop.set()
        sender.join(30)
        assert gw.terminate() == 0  # flushes what is buffered
    old, new = accepted_ids(rotated), accepted_ids(events)
    assert sorted(old + new) == sorted(queue_id for queue_id, _ in sent)  # each once
    assert {queue_id for queue_id, after in sent if after} <= set(new)
    assert old and sent[0][0] in old
    assert "Traceback" not in gw.log.read_text()
