"""Prometheus metrics (`GET /metrics`). Counters follow the event stream (the
metrics are an EventSink beside the event log); the spool's states and free
space, and the suspensions and restrictions in force, are read when scraped. Spool states are
labelled as the CLI names them (queued, delivering, held, set aside)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mailgw.clock import Clock
from mailgw.events import Event
from mailgw.relay.spool import STATE_NAMES, State
from mailgw.state.records import Suspension

Census = Mapping[State, tuple[int, float | None]]


class _Scraped(Collector):
    def __init__(self, queue: Callable[[], Census], free_disk: Callable[[], int],
                 min_free_disk: int, in_force: Callable[[], Collection[Suspension]],
                 listings: Callable[[], list[dict[str, Any]]], clock: Clock):
        self.queue, self.free_disk, self.min_free_disk = queue, free_disk, min_free_disk
        self.in_force, self.listings, self.clock = in_force, listings, clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        sizes = GaugeMetricFamily("mailgw_queue_messages", "Messages in the spool by state",
                                  labels=["state"])
        # "mail waits too long" is alertable only on the age of the oldest
        ages = GaugeMetricFamily("mailgw_queue_oldest_message_age_seconds",
                                 "Since the message longest in each state was accepted "
                                 "(0: none there)", labels=["state"])
        now = self.clock.now()
        for state, (n, first) in self.queue().items():
            sizes.add_metric([STATE_NAMES[state]], n)
            ages.add_metric([STATE_NAMES[state]], 0.0 if first is None else max(now - first, 0.0))
        yield sizes
        yield ages
        yield GaugeMetricFamily("mailgw_spool_free_bytes", "Free space on the spool's disk",
                                value=self.free_disk())
        yield GaugeMetricFamily("mailgw_spool_min_free_bytes", "limits.min_free_disk: below "
                                "this, mail is refused (452 4.3.1)", value=self.min_free_disk)
        records = self.in_force()
        yield GaugeMetricFamily("mailgw_suspensions_active", "Systems suspended now",
                                value=sum(r.sender is None for r in records))
        restricted = GaugeMetricFamily("mailgw_senders_restricted", "Senders restricted now, "
                                       "by system", labels=["system"])
        by_system: dict[str, int] = {}
        for r in records:
            if r.sender is not None:
                by_system[r.system] = by_system.get(r.system, 0) + 1
        for system, n in sorted(by_system.items()):
            restricted.add_metric([system], n)
        yield restricted
        listed = GaugeMetricFamily("mailgw_dnsbl_listed", "1 while an egress address is "
                                   "listed on a DNSBL zone", labels=["address", "zone"])
        try:
            for entry in self.listings():
                listed.add_metric([entry["address"], entry["zone"]], int(entry["listed"]))
        except Exception:  # the state store is away: the other metrics still count
            pass
        yield listed


class Metrics:
    def __init__(self, *, queue: Callable[[], Census], free_disk: Callable[[], int],
                 min_free_disk: int, in_force: Callable[[], Collection[Suspension]],
                 listings: Callable[[], list[dict[str, Any]]], clock: Clock):
        """`queue()`: per spool state, its messages and when the oldest
        arrived (blocking); `free_disk()`: the spool's free bytes;
        `in_force()`: the suspensions and restrictions in force; `listings()`:
        the DNSBL states."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.accepted = Counter("mailgw_messages_accepted", "Messages accepted (250)",
                                ["origin"], registry=r)
        self.rejected = Counter("mailgw_rejections", "Transactions or commands refused, by "
                                "reason", ["reason"], registry=r)
        self.outcomes = Counter("mailgw_deliveries", "Delivery attempts per recipient, by "
                                "outcome", ["outcome"], registry=r)
        self.suspension_delay = Histogram(
            "mailgw_suspension_delay_seconds",
            "From the event that crossed a rule to the suspension taking effect",
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5), registry=r)
        self.backend_errors = Counter("mailgw_state_backend_errors", "Failed calls to the "
                                      "state backend, by what was tried", ["operation"],
                                      registry=r)
        self.events = Counter("mailgw_events", "Suspension and queue events", ["event"],
                              registry=r)
        self.spool_errors = Counter("mailgw_spool_write_errors", "Spool writes that failed "
                                    "(a full or failing disk); each is tried again", registry=r)
        r.register(_Scraped(queue, free_disk, min_free_disk, in_force, listings, clock))

    def count(self, event: Event) -> None:
        """A subscriber of the event bus."""
        kind = event["event"]
        if kind == "accepted":
            self.accepted.labels(event.get("origin", "system")).inc()
        elif kind == "rejected":
            self.rejected.labels(str(event.get("reason", "other"))).inc()
        elif kind in ("delivered", "bounced", "deferred"):
            self.outcomes.labels(kind).inc()
        elif kind in ("suspended", "lifted", "restricted", "unrestricted", "watch", "held",
                      "released", "purged", "set_aside", "dnsbl_listed", "dnsbl_delisted"):
            self.events.labels(kind).inc()

    def spool_error(self) -> None:
        self.spool_errors.inc()

    def backend_error(self, operation: str) -> None:
        self.backend_errors.labels(operation).inc()

    def render(self) -> bytes:
        """Blocking (the queue sizes read the spool)."""
        return generate_latest(self.registry)
