"""Helpers shared by the bus tests: recording handlers, bounded waits, accounting.

The bus delivers on worker threads, so a test never sleeps to wait for a
delivery: handlers record into a Recorder, which notifies a Condition, and
the test waits on it with a bound (``WAIT``) that only a bug can exhaust.
Counters that a worker updates after the handler returns (``delivered``)
have no notification of their own; ``wait_stats`` polls them on a short,
bounded Condition wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import hlcbus

WAIT = 5.0  # seconds: the longest a test waits for what should happen at once
POLL = 0.002  # seconds: re-check interval for counters nobody notifies
START_MS = 1_700_000_000_000  # a ManualClock start: a plausible epoch reading
BUS_NODE = 0xB05  # node id of the bus clock in ManualClock tests


class Recorder:
    """A handler (and on_late/on_error target) that records calls and wakes waiters.

    ``events`` is the flat sequence delivered (batches are flattened), ``calls``
    the raw payloads, ``late`` the (event, lateness_ms) pairs given to on_late,
    ``errors`` the (payload, exception) pairs given to on_error.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.events: list[Any] = []
        self.calls: list[Any] = []
        self.late: list[tuple[Any, int]] = []
        self.errors: list[tuple[Any, BaseException]] = []
        self.threads: set[str] = set()

    def __call__(self, payload: Any) -> None:
        with self.cond:
            self.threads.add(threading.current_thread().name)
            self.calls.append(payload)
            if isinstance(payload, list):
                self.events.extend(payload)
            else:
                self.events.append(payload)
            self.cond.notify_all()

    def on_late(self, event: Any, lateness_ms: int) -> None:
        with self.cond:
            self.late.append((event, lateness_ms))
            self.cond.notify_all()

    def on_error(self, payload: Any, exc: BaseException) -> None:
        with self.cond:
            self.errors.append((payload, exc))
            self.cond.notify_all()

    def wait_until(self, predicate: Callable[[], bool], timeout: float = WAIT,
                   what: str = "condition") -> None:
        """Wait (bounded) until ``predicate()`` holds; it is checked under ``cond``."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting for {what}: {self.summary()}")
                self.cond.wait(min(remaining, 0.05))

    def wait_for(self, count: int, timeout: float = WAIT) -> list[Any]:
        """Wait until at least ``count`` events were delivered; return a copy of them."""
        self.wait_until(lambda: len(self.events) >= count, timeout, f"{count} events")
        with self.cond:
            return list(self.events)

    def wait_late(self, count: int, timeout: float = WAIT) -> list[tuple[Any, int]]:
        self.wait_until(lambda: len(self.late) >= count, timeout, f"{count} late reports")
        with self.cond:
            return list(self.late)

    def wait_errors(self, count: int, timeout: float = WAIT) -> list[tuple[Any, BaseException]]:
        self.wait_until(lambda: len(self.errors) >= count, timeout, f"{count} errors")
        with self.cond:
            return list(self.errors)

    def summary(self) -> str:
        return f"{len(self.events)} events, {len(self.late)} late, {len(self.errors)} errors"


class Gate(Recorder):
    """A slow handler: it blocks on ``release`` before recording each payload.

    ``entered`` is set when the worker first calls it, so a test knows the
    worker is parked inside the handler (its inbox and ready queue empty).
    The wait is bounded so that a failing test cannot hang its worker forever.
    """

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, payload: Any) -> None:
        self.entered.set()
        self.release.wait(4 * WAIT)
        super().__call__(payload)


def stamps(events: Iterable[Any]) -> list[Any]:
    return [e.timestamp for e in events]


def assert_strictly_increasing(events: Iterable[Any]) -> None:
    ts = stamps(events)
    for a, b in zip(ts, ts[1:]):
        assert a < b, f"order broken: {a!r} then {b!r}"


def accounting_holds(stats: Any) -> bool:
    return stats.received == (stats.delivered + stats.late + stats.duplicates
                              + stats.dropped + stats.pending)


def assert_accounting(stats: Any) -> None:
    assert accounting_holds(stats), (
        f"received {stats.received} != delivered {stats.delivered} + late {stats.late} "
        f"+ duplicates {stats.duplicates} + dropped {stats.dropped} + pending {stats.pending}"
    )


def wait_stats(sub: Any, timeout: float = WAIT, **expected: Any) -> Any:
    """Wait (bounded) until ``sub.stats`` has the ``expected`` fields and balances.

    Returns the stats.  Fails naming the last snapshot on timeout.
    """
    deadline = time.monotonic() + timeout
    idle = threading.Condition()
    while True:
        stats = sub.stats
        if accounting_holds(stats) and all(getattr(stats, k) == v for k, v in expected.items()):
            return stats
        if time.monotonic() >= deadline:
            raise AssertionError(f"stats never reached {expected} with balanced accounts: {stats}")
        with idle:  # nothing notifies counters: a short bounded wait between reads
            idle.wait(POLL)


def manual_bus(start_ms: int = START_MS, node: int = BUS_NODE,
               **bus_kwargs: Any) -> tuple[hlcbus.EventBus, hlcbus.ManualClock]:
    """Return a bus whose clock reads a ManualClock, and that ManualClock."""
    wall = hlcbus.ManualClock(start_ms)
    bus = hlcbus.EventBus(hlcbus.HLC(node, wall=wall), **bus_kwargs)
    return bus, wall


def remote(physical: int, logical: int = 0, node: int = 7, type: str = "r",
           data: Any = None) -> Any:
    """An Event stamped elsewhere, with exactly the given timestamp."""
    return hlcbus.Event(type, data, hlcbus.Timestamp(physical, logical, node))


def bus_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("hlcbus-")]


class ExcepthookRecorder:
    """Stands in for threading.excepthook and records what reaches it."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def __call__(self, args: Any) -> None:
        self.calls.append((args.exc_type, args.thread.name if args.thread else None))


class OrderedModel:
    """What one ordered subscription must have delivered, for a ManualClock-driven bus.

    Valid when the test waits for quiescence after every step (``settle``) and
    the bus clock is a ManualClock: then the release point is exact.  An
    event routed at or below what was released is late; ``settle(wall)``
    releases every buffered event below the watermark ``wall - window_ms``
    (everything, for ``window_ms=0``: the bus clock is above all it admitted).
    """

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self.buffered: list[Any] = []
        self.released: list[Any] = []
        self.late: list[Any] = []

    @property
    def last_released(self) -> Any:
        return self.released[-1].timestamp if self.released else None

    def route(self, event: Any) -> None:
        last = self.last_released
        if last is not None and event.timestamp <= last:
            self.late.append(event)
        else:
            self.buffered.append(event)

    def settle(self, wall_ms: int) -> None:
        if self.window_ms:
            due = [e for e in self.buffered if e.timestamp.physical < wall_ms - self.window_ms]
        else:
            due = list(self.buffered)
        due.sort(key=lambda e: e.timestamp)
        self.buffered = [e for e in self.buffered if e not in due]
        self.released.extend(due)

    def drain(self) -> None:
        self.released.extend(sorted(self.buffered, key=lambda e: e.timestamp))
        self.buffered = []

    @property
    def pending(self) -> int:
        return len(self.buffered)

    def wait_matches(self, rec: Recorder, timeout: float = WAIT) -> None:
        """Wait until ``rec`` saw as many deliveries and late reports as predicted; compare."""
        rec.wait_until(lambda: len(rec.events) >= len(self.released)
                       and len(rec.late) >= len(self.late), timeout,
                       f"{len(self.released)} released and {len(self.late)} late")
        with rec.cond:
            assert rec.events == self.released
            assert [e for e, _ in rec.late] == self.late
