"""Timing loops shared by ``python -m hlcbus bench`` and ``bench/bench_bus.py``.

``python -m hlcbus bench`` is a quick look (a few seconds, best of a few
rounds); the pyperf scripts in ``bench/`` are the measurement of record.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from typing import Any, Callable, TextIO

from hlcbus import CORE, EventBus, telemetry

BIG = 10**8  # maxsize large enough that no overflow policy is exercised


def _noop(event: Any) -> None:
    return None


class Counter:
    """A trivial handler that signals when it has seen ``expected`` events."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.seen = 0
        self.done = threading.Event()

    def __call__(self, event: Any) -> None:
        self.seen += 1
        if self.seen == self.expected:
            self.done.set()


def publish_cost(subscribers: int, events: int, ordered: bool = False) -> float:
    """Seconds of the publisher thread's CPU per publish, with trivial subscribers."""
    bus = EventBus()
    for _ in range(subscribers):
        bus.subscribe("a", _noop, ordered=ordered, window_ms=0, maxsize=BIG)
    publish = bus.publish
    start = time.thread_time()
    for _ in itertools.repeat(None, events):
        publish("a", 1)
    elapsed = time.thread_time() - start
    bus.close()
    return elapsed / events


def end_to_end(publishers: int, ordered: bool, events: int) -> float:
    """Wall seconds per event, first publish to last delivery, one subscriber."""
    per_thread = max(1, events // publishers)
    counter = Counter(per_thread * publishers)
    bus = EventBus()
    bus.subscribe("a", counter, ordered=ordered, window_ms=0, maxsize=BIG)
    start_line = threading.Barrier(publishers + 1)

    def publish() -> None:
        publish_ = bus.publish
        start_line.wait()
        for _ in itertools.repeat(None, per_thread):
            publish_("a", None)

    threads = [threading.Thread(target=publish) for _ in range(publishers)]
    for thread in threads:
        thread.start()
    start_line.wait()
    start = time.perf_counter()
    counter.done.wait()
    elapsed = time.perf_counter() - start
    for thread in threads:
        thread.join()
    bus.close()
    return elapsed / (per_thread * publishers)


def unattached_execute(events: int) -> float:
    """Seconds per telemetry.execute() with no handler attached to the name."""
    execute, name, measurements = telemetry.execute, ("hlcbus", "bench", "none"), {"n": 1}
    start = time.perf_counter()
    for _ in itertools.repeat(None, events):
        execute(name, measurements)
    return (time.perf_counter() - start) / events


def _best(rounds: int, measure: Callable[[], float]) -> float:
    return min(measure() for _ in range(rounds))


def run(events: int = 200_000, rounds: int = 3, out: TextIO = sys.stdout) -> None:
    """Print a quick table: publish cost, end-to-end throughput, telemetry cost."""
    print(f"hlcbus quick bench ({CORE} core, best of {rounds} rounds of {events:,} events)",
          file=out)
    rows = [
        ("publish, 1 subscriber", _best(rounds, lambda: publish_cost(1, events)), "cpu"),
        ("publish, 10 subscribers", _best(rounds, lambda: publish_cost(10, events)), "cpu"),
        ("end to end, 1 publisher, unordered",
         _best(rounds, lambda: end_to_end(1, False, events)), "rate"),
        ("end to end, 1 publisher, ordered", _best(rounds, lambda: end_to_end(1, True, events)),
         "rate"),
        ("end to end, 4 publishers, ordered", _best(rounds, lambda: end_to_end(4, True, events)),
         "rate"),
        ("telemetry.execute, nothing attached", _best(rounds, lambda: unattached_execute(events)),
         "cpu"),
    ]
    for label, seconds, kind in rows:
        figure = (f"{seconds * 1e9:8.0f} ns" if kind == "cpu"
                  else f"{1 / seconds:12,.0f} events/s")
        print(f"  {label:38s} {figure}", file=out)
    print("For the measurement of record: make bench (pyperf, peers in the same run).", file=out)
