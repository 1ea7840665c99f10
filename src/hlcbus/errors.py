"""The exception hierarchy of hlcbus.

Every error a caller can meet derives from HLCBusError, and each also derives
from the builtin that describes its kind (ValueError for bad or untrusted
input, OverflowError for exhausted ranges), so callers may catch either.
This module imports nothing from hlcbus: the cores raise these too.
"""

from __future__ import annotations

from typing import Any


class HLCBusError(Exception):
    """Base class of every hlcbus error."""


class ClockDriftError(HLCBusError, ValueError):
    """A remote timestamp is further ahead of the local wall clock than allowed.

    The clock that raised it is unchanged.  Attributes: ``remote`` (the
    rejected Timestamp), ``wall_ms`` (the local wall reading) and
    ``max_drift_ms`` (the limit).
    """

    def __init__(self, remote: Any, wall_ms: int, max_drift_ms: int) -> None:
        self.remote = remote
        self.wall_ms = wall_ms
        self.max_drift_ms = max_drift_ms
        ahead = remote.physical - wall_ms
        super().__init__(
            f"remote timestamp {remote!r} is {ahead} ms ahead of the local wall "
            f"clock ({wall_ms} ms); the limit is {max_drift_ms} ms"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.remote, self.wall_ms, self.max_drift_ms))


class ClockOverflowError(HLCBusError, OverflowError):
    """The clock cannot issue a timestamp without breaking its invariants.

    Raised when the 16-bit counter is full under ``overflow="raise"``, or when
    the 48-bit millisecond field is exhausted.  The clock is unchanged.
    """


class BusClosed(HLCBusError, RuntimeError):
    """The bus (or subscription) is closed: nothing more can be published or received."""


class BufferFull(HLCBusError):
    """A subscription's buffer had no room for an event.

    Raised by ``publish``/``receive`` under the ``"error"`` overflow policy:
    the event was still routed to every other matching subscription; for the
    ones named in ``subscriptions`` it was dropped and counted.  Under
    ``"block"``, raised when a full subscription had no room within the
    bus's publish timeout; the wait happens before stamping, so ``event`` is
    None and nothing was published, stored or routed (``bus.stats.refused``
    counts these).
    """

    def __init__(self, event: Any, subscriptions: list[Any]) -> None:
        self.event = event
        self.subscriptions = subscriptions
        names = ", ".join(repr(s.name) for s in subscriptions)
        if event is None:
            super().__init__(f"no room in subscription(s) {names} within the publish timeout: "
                             "nothing was published")
        else:
            super().__init__(f"no room for {event!r} in subscription(s) {names}")
