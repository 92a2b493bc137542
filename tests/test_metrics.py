"""The metrics read from the spool when scraped, on a real spool: its states
under the names the CLI gives them, how long the oldest message of each has
waited, and the free space against the configured floor."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from mailgw.metrics import Metrics
from mailgw.relay.spool import Meta, Recipient, Spool, new_queue_id
from mailgw.state.records import Suspension


class FixedClock:
    def __init__(self, now: float):
        self.value = now

    def now(self) -> float:
        return self.value


def put(spool: Spool, received_at: float) -> str:
    meta = Meta(id=new_queue_id(), system="mfa", sender="a@mfa.gov.kz",
                recipients=[Recipient("x@example.com")], size=1, received_at=received_at)
    spool.put(meta, b"x")
    return meta.id


def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(metrics.render().decode())
            for s in family.samples}


def test_spool_states_carry_the_cli_names_and_the_age_of_their_oldest_message(tmp_path):
    spool = Spool(tmp_path)
    put(spool, received_at=1000.0)  # the oldest waiting
    put(spool, received_at=1500.0)
    held = put(spool, received_at=1900.0)
    spool.claim(held)
    spool.hold(held)
    metrics = Metrics(queue=spool.census, free_disk=lambda: 300 * 2**20,
                      min_free_disk=256 * 2**20, in_force=lambda: [
                          Suspension("mfa", 1.0, "auto"),
                          Suspension("moj", 1.0, "auto", sender="a@moj.gov.kz"),
                          Suspension("moj", 1.0, "auto", sender="b@moj.gov.kz")],
                      listings=list, clock=FixedClock(2000.0))
    got = scrape(metrics)
    assert {labels[0][1]: n for (name, labels), n in got.items()
            if name == "mailgw_queue_messages"} == {
        "queued": 2, "held": 1, "delivering": 0, "set aside": 0}
    assert {labels[0][1]: age for (name, labels), age in got.items()
            if name == "mailgw_queue_oldest_message_age_seconds"} == {
        "queued": 1000.0, "held": 100.0, "delivering": 0.0, "set aside": 0.0}
    assert got[("mailgw_spool_free_bytes", ())] == 300 * 2**20
    assert got[("mailgw_spool_min_free_bytes", ())] == 256 * 2**20
    assert got[("mailgw_suspensions_active", ())] == 1
    assert got[("mailgw_senders_restricted", (("system", "moj"),))] == 2


def test_a_message_whose_metadata_cannot_be_read_is_counted_without_breaking_the_scrape(tmp_path):
    spool = Spool(tmp_path)
    broken = put(spool, received_at=1000.0)
    (tmp_path / "queue" / f"{broken}.msg").rename(tmp_path / "corrupt" / f"{broken}.msg")
    (tmp_path / "corrupt" / f"{broken}.msg").write_bytes(b"not json\n")
    metrics = Metrics(queue=spool.census, free_disk=lambda: 1, min_free_disk=0,
                      in_force=list, listings=list, clock=FixedClock(2000.0))
    got = scrape(metrics)
    assert got[("mailgw_queue_messages", (("state", "set aside"),))] == 1
    assert got[("mailgw_queue_oldest_message_age_seconds", (("state", "set aside"),))] == 0.0
