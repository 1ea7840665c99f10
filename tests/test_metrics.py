"""hlcbus.metrics: the Prometheus collector, scraped over a real HTTP endpoint on loopback."""

from __future__ import annotations

import importlib
import json
import re
import socket
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bus_helpers import BUS_NODE, START_MS, Recorder, assert_accounting, remote, wait_stats

import hlcbus
from hlcbus import ClockDriftError, EventBus

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from hlcbus import metrics  # noqa: E402

DASHBOARD = Path(__file__).resolve().parent.parent / "examples" / "grafana-dashboard.json"
SCRAPE_TIMEOUT = 5.0  # seconds
MAX_DRIFT_MS = 100
HELD_WINDOW_MS = 50  # the ManualClock never advances, so this subscription holds its events

SUB_COUNTER_FIELDS = {
    "hlcbus_events_received_total": "received",
    "hlcbus_events_delivered_total": "delivered",
    "hlcbus_events_reordered_total": "reordered",
    "hlcbus_events_late_total": "late",
    "hlcbus_events_duplicate_total": "duplicates",
    "hlcbus_events_dropped_total": "dropped",
    "hlcbus_handler_errors_total": "handler_errors",
    "hlcbus_worker_restarts_total": "restarts",
}


@pytest.fixture
def drift_bus() -> Iterator[EventBus]:
    """A bus on a ManualClock that rejects timestamps more than MAX_DRIFT_MS ahead."""
    wall = hlcbus.ManualClock(START_MS)
    bus = EventBus(hlcbus.HLC(BUS_NODE, wall=wall, max_drift_ms=MAX_DRIFT_MS))
    try:
        yield bus
    finally:
        bus.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, str], float]:
    """GET /metrics over loopback (no proxy); return {(sample, subscription or node): value}."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=SCRAPE_TIMEOUT) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("hlcbus_"):
                key = sample.labels.get("subscription", sample.labels["node"])
                samples[sample.name, key] = sample.value
    return samples


def exported_names(bus: EventBus) -> set[str]:
    registry = prometheus_client.CollectorRegistry()
    metrics.register(bus, registry=registry)
    text = prometheus_client.generate_latest(registry).decode()
    return {sample.name for family in text_string_to_metric_families(text)
            for sample in family.samples}


def run_traffic(bus: EventBus) -> tuple[Any, Any, Any]:
    """Publish and receive on three subscriptions; return them once their stats settle."""
    ordered_rec, plain_rec = Recorder(), Recorder()
    ordered = bus.subscribe("*", ordered_rec, ordered=True, window_ms=0, name="ordered",
                             on_late=ordered_rec.on_late)
    plain = bus.subscribe("*", plain_rec, name="plain")
    held = bus.subscribe("r", Recorder(), ordered=True, window_ms=HELD_WINDOW_MS, name="held")
    first = bus.publish("a")
    assert ordered_rec.wait_for(1) == [first]
    behind = remote(START_MS - 1, node=4)  # below `first`, which was released: late
    assert bus.receive(behind) is True
    assert bus.receive(behind) is False  # a duplicate, refused by the bus
    with pytest.raises(ClockDriftError):
        bus.receive(remote(START_MS + MAX_DRIFT_MS + 1, node=5))
    bus.receive(remote(START_MS + 1, node=6))
    ordered_rec.wait_late(1)
    plain_rec.wait_for(3)
    for sub, expected in ((ordered, {"delivered": 2, "late": 1}), (plain, {"delivered": 3}),
                          (held, {"pending": 2})):
        assert_accounting(wait_stats(sub, **expected))
    return ordered, plain, held


def test_scrape_over_http_matches_the_stats(drift_bus: EventBus) -> None:
    bus = drift_bus
    subs = run_traffic(bus)
    registry = prometheus_client.CollectorRegistry()
    collector = metrics.register(bus, registry=registry)
    server, thread = prometheus_client.start_http_server(free_port(), addr="127.0.0.1",
                                                         registry=registry)
    try:
        samples = scrape(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    metrics.unregister(collector, registry=registry)

    for sub in subs:
        stats = sub.stats
        for name, field in SUB_COUNTER_FIELDS.items():
            assert samples[name, sub.name] == getattr(stats, field), (name, sub.name)
        assert samples["hlcbus_pending_events", sub.name] == stats.pending
        assert samples["hlcbus_watermark_lag_seconds", sub.name] == stats.watermark_lag_ms / 1000
        assert samples["hlcbus_subscription_failed", sub.name] == 0
    ordered, plain, held = subs
    assert samples["hlcbus_buffer_events", held.name] == held.stats.pending == 2
    assert samples["hlcbus_buffer_events", plain.name] == 0
    assert samples["hlcbus_events_late_total", ordered.name] == 1

    node = metrics.node_label(bus)
    assert node == f"{BUS_NODE:016x}"
    stats = bus.stats
    assert (stats.received, stats.duplicates, stats.drift_rejections) == (2, 1, 1)
    assert samples["hlcbus_bus_received_total", node] == stats.received
    assert samples["hlcbus_bus_duplicates_total", node] == stats.duplicates
    assert samples["hlcbus_clock_drift_rejections_total", node] == 1
    assert samples["hlcbus_publishes_refused_total", node] == stats.refused == 0
    assert samples["hlcbus_clock_backward_jumps_total", node] == bus.clock.backward_jumps
    assert samples["hlcbus_clock_forward_jumps_total", node] == bus.clock.forward_jumps
    assert {name for name, _ in samples} == set(metrics.metric_names())


def test_dashboard_uses_only_exported_names(bus: EventBus) -> None:
    bus.subscribe("*", Recorder(), ordered=True)
    # The bridge's names are checked against a real scrape in test_redis.py.
    exported = exported_names(bus) | set(metrics.bridge_metric_names())
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"]
             for target in panel.get("targets", ())]
    exprs += [variable["definition"] for variable in dashboard["templating"]["list"]
              if "definition" in variable]
    used = {name for expr in exprs for name in re.findall(r"hlcbus_[a-z_]+", expr)}
    assert used == set(re.findall(r"hlcbus_[a-z_]+", DASHBOARD.read_text()))
    assert used, "the dashboard queries no hlcbus metric"
    assert used <= exported, f"not exported: {sorted(used - exported)}"


def test_a_closed_subscription_leaves_the_scrape(bus: EventBus) -> None:
    sub = bus.subscribe("*", Recorder(), name="gone")
    registry = prometheus_client.CollectorRegistry()
    metrics.register(bus, registry=registry)
    assert registry.get_sample_value("hlcbus_events_received_total", {
        "node": metrics.node_label(bus), "subscription": "gone", "pattern": "*"}) == 0
    sub.close()
    assert registry.get_sample_value("hlcbus_pending_events", {
        "node": metrics.node_label(bus), "subscription": "gone", "pattern": "*"}) is None


def test_a_second_collector_in_one_registry_is_refused(bus: EventBus) -> None:
    registry = prometheus_client.CollectorRegistry()
    collector = metrics.register(bus, registry=registry)
    with pytest.raises(ValueError, match="Duplicated"):
        metrics.register(bus, registry=registry)
    metrics.unregister(collector, registry=registry)
    metrics.register(bus, registry=registry)  # free again


def test_missing_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "hlcbus.metrics")
    with pytest.raises(ImportError, match=re.escape("hlcbus[prometheus]")):
        importlib.import_module("hlcbus.metrics")
