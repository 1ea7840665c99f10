"""hlcbus: Hybrid Logical Clock timestamps and HLC-ordered event delivery."""

from hlcbus import telemetry
from hlcbus._compat import CORE
from hlcbus._compat import core as _core
from hlcbus.bus import BusStats, CloseReport, EventBus
from hlcbus.delivery import Subscription, SubscriptionStats
from hlcbus.errors import (
    BufferFull,
    BusClosed,
    ClockDriftError,
    ClockOverflowError,
    HLCBusError,
)

Timestamp = _core.Timestamp
HLC = _core.HLC
Event = _core.Event
ManualClock = _core.ManualClock
PriorityBuffer = _core.PriorityBuffer
ReorderBuffer = _core.ReorderBuffer

__version__ = "0.1.0"

__all__ = [
    "CORE",
    "HLC",
    "BufferFull",
    "BusClosed",
    "BusStats",
    "ClockDriftError",
    "ClockOverflowError",
    "CloseReport",
    "Event",
    "EventBus",
    "HLCBusError",
    "ManualClock",
    "PriorityBuffer",
    "ReorderBuffer",
    "Subscription",
    "SubscriptionStats",
    "Timestamp",
    "telemetry",
]
