"""The event store: recent events by timestamp, for replay.

Publishers only append to a bounded staging deque (one atomic C call on the
publish path).  ``maintain()`` moves staged events into a list sorted by
timestamp, then purges by age and count; replays, subscriptions with
``replay_from`` and the subscription workers (at most every
MAINTAIN_INTERVAL) call it.  A range query is then two binary searches and a
slice: O(log n + k).

Guarantees:
- Memory is bounded by ``max_events`` staged plus ``max_events`` sorted events.
- Events come back in timestamp order, whatever order they arrived in.
"""

from __future__ import annotations

import bisect
import collections
import operator
import threading
import time
from typing import Callable, Optional

from hlcbus._compat import core

Timestamp = core.Timestamp

MAINTAIN_INTERVAL = 1.0  # seconds: how often workers fold staged events in

_timestamp_of = operator.attrgetter("timestamp")


class EventStore:
    """Events kept for ``ttl_ms`` (of event time) and at most ``max_events``."""

    def __init__(self, ttl_ms: int, max_events: int, wall: Callable[[], int]) -> None:
        self.ttl_ms = ttl_ms
        self.max_events = max_events
        self._wall = wall
        # Appended by publishers without a lock; the oldest fall off when full.
        self._staged: collections.deque[core.Event] = collections.deque(maxlen=max_events)
        self.add = self._staged.append
        # Guards _sorted and _maintained_at: folding staged events in and reading
        # a range must not interleave.
        self._lock = threading.Lock()
        self._sorted: list[core.Event] = []
        self._maintained_at = time.monotonic()

    def maintain(self) -> None:
        """Fold staged events into the sorted list, then purge by age and count."""
        with self._lock:
            self._fold()
            self._purge()
            self._maintained_at = time.monotonic()

    def maintain_if_due(self) -> None:
        """maintain(), at most every MAINTAIN_INTERVAL; cheap when not due."""
        if time.monotonic() - self._maintained_at >= MAINTAIN_INTERVAL:
            self.maintain()

    def _fold(self) -> None:
        staged, fresh = self._staged, []
        for _ in range(len(staged)):
            fresh.append(staged.popleft())
        if not fresh:
            return
        fresh.sort(key=_timestamp_of)
        merged = self._sorted
        if merged and fresh[0].timestamp <= merged[-1].timestamp:
            merged.extend(fresh)
            merged.sort(key=_timestamp_of)  # two sorted runs: Timsort merges in O(n)
            # receive() forgets timestamps after its dedupe horizon (seconds), the
            # store keeps events for its TTL: a repeat arriving in between lands
            # here, beside the first copy, which the stable sort keeps first.
            self._sorted = [e for i, e in enumerate(merged) if not i or e != merged[i - 1]]
        else:
            merged.extend(fresh)

    def _purge(self) -> None:
        merged = self._sorted
        drop = max(0, len(merged) - self.max_events)
        horizon = self._wall() - self.ttl_ms
        if horizon > 0:
            expired = bisect.bisect_left(merged, Timestamp(horizon), key=_timestamp_of)
            drop = max(drop, expired)
        if drop:
            del merged[:drop]

    def range(self, start: Optional[Timestamp], end: Optional[Timestamp]) -> list[core.Event]:
        """The stored events with ``start <= timestamp <= end``, in timestamp order."""
        self.maintain()
        with self._lock:
            merged = self._sorted
            low = 0 if start is None else bisect.bisect_left(merged, start, key=_timestamp_of)
            high = (len(merged) if end is None
                    else bisect.bisect_right(merged, end, key=_timestamp_of))
            return merged[low:high]

    def __len__(self) -> int:
        return len(self._sorted) + len(self._staged)
