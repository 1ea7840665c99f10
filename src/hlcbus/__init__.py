"""hlcbus: Hybrid Logical Clock timestamps and HLC-ordered event delivery."""

from hlcbus._compat import CORE
from hlcbus._compat import core as _core
from hlcbus.errors import ClockDriftError, ClockOverflowError, HLCBusError

Timestamp = _core.Timestamp
HLC = _core.HLC
ManualClock = _core.ManualClock
PriorityBuffer = _core.PriorityBuffer

__version__ = "0.1.0"

__all__ = [
    "CORE",
    "HLC",
    "ClockDriftError",
    "ClockOverflowError",
    "HLCBusError",
    "ManualClock",
    "PriorityBuffer",
    "Timestamp",
]
