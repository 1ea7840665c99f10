"""hlcbus: Hybrid Logical Clock timestamps and HLC-ordered event delivery."""

from hlcbus._compat import CORE
from hlcbus._compat import core as _core
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

from hlcbus.bus import BusStats, CloseReport, EventBus  # noqa: E402  (needs the core above)
from hlcbus.delivery import Subscription, SubscriptionStats  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "CORE",
    "BufferFull",
    "BusClosed",
    "BusStats",
    "CloseReport",
    "EventBus",
    "Subscription",
    "SubscriptionStats",
    "HLC",
    "ClockDriftError",
    "ClockOverflowError",
    "Event",
    "HLCBusError",
    "ManualClock",
    "PriorityBuffer",
    "ReorderBuffer",
    "Timestamp",
]
