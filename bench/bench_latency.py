"""Delivery latency and memory per buffered event; writes one JSON file.

Not a pyperf microbenchmark: latency is a distribution over one paced run,
and memory a single tracemalloc reading.

    python bench/bench_latency.py -o bench/latency.json [--events N]

Latency: one publisher publishes RATE events/s for SECONDS, each carrying its
perf_counter_ns; the handler records the difference.  Reported as p50, p99
and max in ms, for an unordered subscription, an ordered one with
window_ms=100, and an ordered one with window_ms=0 (local ordering).

Memory: an ordered subscription whose window never passes holds N events
with data=None; traced bytes (tracemalloc) divided by N is the cost of one
buffered event, payload excluded.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import tracemalloc

import hlcbus
from hlcbus import EventBus

RATE = 20_000  # events per second
SECONDS = 2.0
BURST = 20  # events per pacing step: time.sleep cannot pace single events


class Recorder:
    def __init__(self, expected: int) -> None:
        self.latencies: list[int] = []
        self.expected = expected
        self.done = threading.Event()

    def __call__(self, event) -> None:
        self.latencies.append(time.perf_counter_ns() - event.data)
        if len(self.latencies) == self.expected:
            self.done.set()


def _percentiles(values: list[int]) -> dict:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6  # noqa: E731
    return {"p50_ms": pick(0.50), "p99_ms": pick(0.99), "max_ms": ordered[-1] / 1e6,
            "events": len(ordered)}


def measure_latency(ordered: bool, window_ms: int) -> dict:
    total = int(RATE * SECONDS)
    recorder = Recorder(total)
    with EventBus() as bus:
        bus.subscribe("a", recorder, ordered=ordered, window_ms=window_ms, maxsize=total)
        step = BURST / RATE
        next_at = time.perf_counter()
        for _ in range(total // BURST):
            for _ in range(BURST):
                bus.publish("a", time.perf_counter_ns())
            next_at += step
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        if not recorder.done.wait(30):
            raise RuntimeError("events were not all delivered within 30 s")
    return _percentiles(recorder.latencies)


def measure_memory(events: int) -> dict:
    bus = EventBus()
    sub = bus.subscribe("a", lambda event: None, ordered=True, window_ms=10**9,
                        maxsize=events + 1)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(events):
        bus.publish("a", None)
    deadline = time.monotonic() + 120
    while sub._inbox and time.monotonic() < deadline:  # wait for the worker to absorb all
        time.sleep(0.01)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    held = sub.stats.pending
    bus.close(drain=False)
    return {"events": held, "bytes_per_event": (after - before) / max(1, held)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--events", type=int, default=1_000_000, help="for the memory reading")
    args = parser.parse_args()
    result = {
        "core": hlcbus.CORE,
        "rate_per_s": RATE,
        "latency": {
            "unordered": measure_latency(False, 100),
            "ordered window_ms=100": measure_latency(True, 100),
            "ordered window_ms=0": measure_latency(True, 0),
        },
        "memory": measure_memory(args.events),
    }
    with open(args.output, "w") as out:
        json.dump(result, out, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
