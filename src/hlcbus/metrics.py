"""Prometheus metrics for EventBus: a collector that reads the stats at scrape time.

``register(bus)`` adds a ``BusCollector`` to a ``prometheus_client`` registry;
``register_bridges(bridge)`` a ``BridgeCollector`` for Redis bridges.
Nothing runs between scrapes (no thread, no hook on the publish path): each
scrape reads ``bus.stats``, the clock's jump counts and each live
subscription's ``stats`` once, so the cost is O(subscriptions) per scrape.
A subscription's samples disappear when it closes, as Prometheus expects of
a target that lost a series.

Needs the extra ``hlcbus[prometheus]`` (``prometheus_client``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "hlcbus.metrics needs prometheus_client; install it with: pip install 'hlcbus[prometheus]'"
    ) from exc

if TYPE_CHECKING:
    from hlcbus.bus import BusStats, EventBus
    from hlcbus.delivery import Subscription, SubscriptionStats
    from hlcbus.redis import RedisBridge

SUB_LABELS = ("node", "subscription", "pattern")
BUS_LABELS = ("node",)

# prometheus_client appends "_total" to counter names: these export as
# hlcbus_events_received_total and so on.
SUB_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("hlcbus_events_received", "received", "Events routed to the subscription."),
    ("hlcbus_events_delivered", "delivered", "Events handed to the subscription's handler."),
    ("hlcbus_events_reordered", "reordered",
     "Events that arrived behind a later timestamp and were put back in order."),
    ("hlcbus_events_late", "late",
     "Events that arrived behind the release point (not delivered)."),
    ("hlcbus_events_duplicate", "duplicates",
     "Events the ordered buffer already held or released."),
    ("hlcbus_events_dropped", "dropped", "Events dropped by the overflow policy or a failure."),
    ("hlcbus_handler_errors", "handler_errors", "Exceptions raised by handlers."),
    ("hlcbus_worker_restarts", "restarts", "Times the subscription's worker thread was restarted."),
)


def _buffer_events(sub: Subscription, stats: SubscriptionStats) -> float:
    buffer = sub._buffer  # the ReorderBuffer of an ordered subscription, else None
    return float(len(buffer)) if buffer is not None else 0.0


SUB_GAUGES: tuple[tuple[str, Callable[[Subscription, SubscriptionStats], float], str], ...] = (
    ("hlcbus_pending_events", lambda sub, stats: float(stats.pending),
     "Events routed but not yet delivered, late, duplicate or dropped."),
    ("hlcbus_buffer_events", _buffer_events,
     "Events held in the ordered reorder buffer (0 for an unordered subscription)."),
    ("hlcbus_watermark_lag_seconds", lambda sub, stats: stats.watermark_lag_ms / 1000,
     "How far the ordered release point trails the wall clock."),
    ("hlcbus_subscription_failed", lambda sub, stats: float(stats.failed),
     "1 once the subscription's worker died too often and was given up, else 0."),
)

BUS_COUNTERS: tuple[tuple[str, Callable[[EventBus, BusStats], int], str], ...] = (
    ("hlcbus_bus_received", lambda bus, stats: stats.received,
     "Events taken by receive (not counting duplicates and drift rejections)."),
    ("hlcbus_bus_duplicates", lambda bus, stats: stats.duplicates,
     "Events receive refused as duplicates."),
    ("hlcbus_clock_drift_rejections", lambda bus, stats: stats.drift_rejections,
     "Events receive refused because their timestamp was beyond the clock's max drift."),
    ("hlcbus_publishes_refused", lambda bus, stats: stats.refused,
     "Publishes refused before stamping by a full 'block' subscription."),
    ("hlcbus_clock_backward_jumps", lambda bus, stats: bus.clock.backward_jumps,
     "Times the wall clock was seen to step backwards."),
    ("hlcbus_clock_forward_jumps", lambda bus, stats: bus.clock.forward_jumps,
     "Times the wall clock was seen to leap forwards."),
)


def node_label(bus: EventBus) -> str:
    """Return the label value for the bus's clock node: 16 lowercase hex digits."""
    return format(bus.clock.node, "016x")


class BusCollector(Collector):
    """A prometheus_client collector for one or more buses.

    Register one collector per registry: a second collector exporting the
    same names raises ValueError ("Duplicated timeseries") at registration,
    so give several buses to one collector instead.  ``collect`` is called
    on the scraping thread; it only reads counters, so it never blocks
    publishers or workers.
    """

    def __init__(self, *buses: EventBus) -> None:
        if not buses:
            raise TypeError("BusCollector needs at least one EventBus")
        self.buses = buses

    def describe(self) -> Iterator[Metric]:
        """Yield the families without samples, so registering does not scrape."""
        sub_counters, sub_gauges, bus_counters = _new_families()
        return iter([*sub_counters, *sub_gauges, *bus_counters])

    def collect(self) -> Iterator[Metric]:
        """Yield every family with the current values of each bus and subscription."""
        sub_counters, sub_gauges, bus_counters = _new_families()
        for bus in self.buses:
            node = node_label(bus)
            bus_stats = bus.stats
            for counter, (_, read, _) in zip(bus_counters, BUS_COUNTERS):
                counter.add_metric([node], read(bus, bus_stats))
            for sub in bus.subscriptions:
                labels = [node, sub.name, sub.pattern]
                stats = sub.stats  # one snapshot per subscription and scrape
                for counter, (_, field, _) in zip(sub_counters, SUB_COUNTERS):
                    counter.add_metric(labels, getattr(stats, field))
                for gauge, (_, value, _) in zip(sub_gauges, SUB_GAUGES):
                    gauge.add_metric(labels, value(sub, stats))
        return iter([*sub_counters, *sub_gauges, *bus_counters])


def _new_families() -> tuple[list[CounterMetricFamily], list[GaugeMetricFamily],
                             list[CounterMetricFamily]]:
    """Return empty families: subscription counters, subscription gauges, bus counters."""
    return (
        [CounterMetricFamily(name, doc, labels=SUB_LABELS) for name, _, doc in SUB_COUNTERS],
        [GaugeMetricFamily(name, doc, labels=SUB_LABELS) for name, _, doc in SUB_GAUGES],
        [CounterMetricFamily(name, doc, labels=BUS_LABELS) for name, _, doc in BUS_COUNTERS],
    )


def register(bus: EventBus, *more: EventBus,
             registry: CollectorRegistry = REGISTRY) -> BusCollector:
    """Export ``bus`` (and ``more`` buses) to ``registry``; return the collector.

    Raises ValueError if the registry already exports these names (another
    BusCollector is registered there).
    """
    collector = BusCollector(bus, *more)
    registry.register(collector)
    return collector


def unregister(collector: Collector, registry: CollectorRegistry = REGISTRY) -> None:
    """Stop exporting ``collector`` from ``registry``.  Raises KeyError if absent."""
    registry.unregister(collector)


def metric_names() -> Iterable[str]:
    """Return the bus's names as exported (counters with their ``_total`` suffix)."""
    counters = [name for name, _, _ in SUB_COUNTERS + BUS_COUNTERS]
    gauges = [name for name, _, _ in SUB_GAUGES]
    return [f"{name}_total" for name in counters] + gauges


# --- Redis bridges ---------------------------------------------------------------------

BRIDGE_LABELS = ("node", "stream")
BRIDGE_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("hlcbus_redis_sent", "sent", "Events appended to the stream."),
    ("hlcbus_redis_encode_errors", "encode_errors", "Events whose payload the codec refused."),
    ("hlcbus_redis_unsent", "unsent", "Events given up at close, Redis being unreachable."),
    ("hlcbus_redis_refused", "refused", "Publishes the bridge's full buffer refused."),
    ("hlcbus_redis_send_failures", "send_failures", "Failed XADD batches (each retried)."),
    ("hlcbus_redis_read", "read", "Stream entries read and handled."),
    ("hlcbus_redis_delivered", "delivered", "Entries the bus took."),
    ("hlcbus_redis_duplicates", "duplicates", "Entries the bus refused as duplicates."),
    ("hlcbus_redis_own", "own", "Entries of this node's own, skipped."),
    ("hlcbus_redis_dead_lettered", "dead_lettered",
     "Rejected entries kept in the dead-letter stream."),
    ("hlcbus_redis_dead_letter_failures", "dead_letter_failures",
     "Rejected entries Redis refused to keep (acknowledged all the same)."),
    ("hlcbus_redis_acked", "acked", "Entries acknowledged."),
    ("hlcbus_redis_errors", "errors", "Reader failures other than the connection."),
    ("hlcbus_redis_reconnects", "reconnects", "Times Redis became reachable again."),
)
BRIDGE_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("hlcbus_redis_pending_out_events", "pending_out", "Events waiting to be sent."),
    ("hlcbus_redis_connected", "connected", "1 while Redis answers the bridge, else 0."),
)
BRIDGE_REJECTED = ("hlcbus_redis_rejected", "Entries not delivered, by reason.")


class BridgeCollector(Collector):
    """A prometheus_client collector for Redis bridges (hlcbus.redis), one per registry."""

    def __init__(self, *bridges: RedisBridge) -> None:
        if not bridges:
            raise TypeError("BridgeCollector needs at least one RedisBridge")
        self.bridges = bridges

    def describe(self) -> Iterator[Metric]:
        return iter(_bridge_families())

    def collect(self) -> Iterator[Metric]:
        *counters, rejected = families = _bridge_families()
        for bridge in self.bridges:
            labels = [node_label(bridge.bus), bridge.stream]
            stats = vars(bridge.stats)  # one snapshot per bridge and scrape
            fields = [field for _, field, _ in BRIDGE_COUNTERS + BRIDGE_GAUGES]
            for family, field in zip(counters, fields):
                family.add_metric(labels, float(stats[field]))
            for reason, count in stats["rejected"].items():
                rejected.add_metric([*labels, reason], count)
        return iter(families)


def _bridge_families() -> list[CounterMetricFamily | GaugeMetricFamily]:
    """Empty families: the bridge counters, gauges, then rejections by reason."""
    name, doc = BRIDGE_REJECTED
    return [
        *(CounterMetricFamily(n, d, labels=BRIDGE_LABELS) for n, _, d in BRIDGE_COUNTERS),
        *(GaugeMetricFamily(n, d, labels=BRIDGE_LABELS) for n, _, d in BRIDGE_GAUGES),
        CounterMetricFamily(name, doc, labels=(*BRIDGE_LABELS, "reason")),
    ]


def register_bridges(bridge: RedisBridge, *more: RedisBridge,
                     registry: CollectorRegistry = REGISTRY) -> BridgeCollector:
    """Export ``bridge`` (and ``more``) to ``registry``; return the collector."""
    collector = BridgeCollector(bridge, *more)
    registry.register(collector)
    return collector


def bridge_metric_names() -> Iterable[str]:
    """Return the bridge's names as exported (counters with their ``_total`` suffix)."""
    counters = [name for name, _, _ in BRIDGE_COUNTERS] + [BRIDGE_REJECTED[0]]
    return [f"{name}_total" for name in counters] + [name for name, _, _ in BRIDGE_GAUGES]


__all__ = ["BridgeCollector", "BusCollector", "bridge_metric_names", "metric_names",
           "node_label", "register", "register_bridges", "unregister"]
