"""reveal_type uses of the public API, checked by test_typing.py (never imported).

Each ``reveal_type`` line ends with ``# revealed: <type>``: the type mypy must
report for it, as mypy prints it (older mypy versions add a
``builtins.`` prefix, which the test ignores).  The core classes come from
``hlcbus._core_py`` (the reference twin; ``_core.pyi`` has the same API).
"""
# reveal_type is a type checker built-in (typing has it only from 3.11 on).
# ruff: noqa: F821

import datetime
from typing import Any, Mapping

import hlcbus
from hlcbus import (
    HLC,
    BusStats,
    CloseReport,
    Event,
    EventBus,
    ManualClock,
    PriorityBuffer,
    ReorderBuffer,
    Subscription,
    SubscriptionStats,
    Timestamp,
    telemetry,
)

clock = HLC(1, wall=ManualClock(1_000))
reveal_type(clock)  # revealed: hlcbus._core_py.HLC
reveal_type(clock.now())  # revealed: hlcbus._core_py.Timestamp
reveal_type(clock.update(clock.now()))  # revealed: hlcbus._core_py.Timestamp
reveal_type(clock.last)  # revealed: hlcbus._core_py.Timestamp
reveal_type(clock.node)  # revealed: int
reveal_type(clock.max_drift_ms)  # revealed: int | None
reveal_type(clock.wall_ms())  # revealed: int
reveal_type(ManualClock()())  # revealed: int
reveal_type(ManualClock().advance(5))  # revealed: int

ts = Timestamp(1_000, 2, 3)
reveal_type(ts.physical)  # revealed: int
reveal_type(ts.logical)  # revealed: int
reveal_type(ts.node)  # revealed: int
reveal_type(ts.packed)  # revealed: int
reveal_type(ts < clock.now())  # revealed: bool
reveal_type(ts.to_bytes())  # revealed: bytes
reveal_type(Timestamp.from_bytes(ts.to_bytes()))  # revealed: hlcbus._core_py.Timestamp
reveal_type(Timestamp.from_packed(ts.packed, 1))  # revealed: hlcbus._core_py.Timestamp
reveal_type(Timestamp.parse(str(ts)))  # revealed: hlcbus._core_py.Timestamp
reveal_type(ts.to_datetime())  # revealed: datetime.datetime

event = Event("order.created", {"id": 1}, ts)
reveal_type(event.type)  # revealed: str
reveal_type(event.data)  # revealed: Any
reveal_type(event.timestamp)  # revealed: hlcbus._core_py.Timestamp

heap = PriorityBuffer()
heap.push(ts, "item")
reveal_type(heap.pop())  # revealed: tuple[hlcbus._core_py.Timestamp, Any]
reveal_type(ReorderBuffer().release_all())  # revealed: list[hlcbus._core_py.Event]

bus = EventBus(clock)
reveal_type(bus.publish("order.created", {"id": 1}))  # revealed: hlcbus._core_py.Event
reveal_type(bus.receive(event))  # revealed: bool
sub = bus.subscribe("order.*", maxsize=10)
reveal_type(sub)  # revealed: hlcbus.delivery.Subscription
reveal_type(sub.stats)  # revealed: hlcbus.delivery.SubscriptionStats
reveal_type(sub.get(timeout=1.0))  # revealed: hlcbus._core_py.Event
reveal_type(next(iter(sub)))  # revealed: hlcbus._core_py.Event
reveal_type(bus.replay(ts))  # revealed: list[hlcbus._core_py.Event]
reveal_type(bus.subscriptions)  # revealed: list[hlcbus.delivery.Subscription]
reveal_type(bus.stats)  # revealed: hlcbus.bus.BusStats
reveal_type(bus.close())  # revealed: hlcbus.bus.CloseReport


def on_stats(name: tuple[str, ...], measurements: Mapping[str, Any],
             metadata: Mapping[str, Any]) -> None:
    pass


reveal_type(telemetry.attach("typing", telemetry.SUBSCRIPTION_STATS, on_stats))  # revealed: None
reveal_type(telemetry.detach("typing"))  # revealed: bool
reveal_type(hlcbus.CORE)  # revealed: str

# The names are usable as annotations, too.
stats: SubscriptionStats = sub.stats
totals: BusStats = bus.stats
report: CloseReport = bus.close()
subscription: Subscription = sub
when: datetime.datetime = ts.to_datetime()
