"""A short, real simulation of why ordered delivery matters (``python -m hlcbus demo``).

Several nodes, each an HLC with its own node id and a skewed wall clock,
stamp events from their own threads.  Each event reaches one bus through
``receive`` after a random network delay, some beyond the window.  An
unordered and an ordered subscriber watch; the summary compares them.
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from hlcbus import CORE, HLC, Event, EventBus

PROGRESS_EVERY = 0.5  # seconds between progress lines


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Watcher:
    """Counts order inversions and delivery latency as a subscriber sees them."""

    highest: Any = None
    inversions: int = 0
    latencies_ms: list[int] = field(default_factory=list)

    def __call__(self, event: Any) -> None:
        ts = event.timestamp
        if self.highest is not None and ts < self.highest:
            self.inversions += 1
        else:
            self.highest = ts
        self.latencies_ms.append(_wall_ms() - event.data)


class Network:
    """Delivers events to the bus after their delay, from one thread, in due order."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self._due: list[tuple[float, int, Any]] = []
        self._seq = 0
        self._cond = threading.Condition()  # guards _due, _seq and _closed
        self._closed = False
        self.duplicates = 0
        self._thread = threading.Thread(target=self._run, name="demo-network")
        self._thread.start()

    def send(self, event: Any, delay_s: float) -> None:
        with self._cond:
            heapq.heappush(self._due, (time.monotonic() + delay_s, self._seq, event))
            self._seq += 1
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due or self._due[0][0] > time.monotonic():
                    if self._closed and not self._due:
                        return
                    wait = self._due[0][0] - time.monotonic() if self._due else None
                    self._cond.wait(wait)
                _, _, event = heapq.heappop(self._due)
            if not self._bus.receive(event):
                self.duplicates += 1

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()


def _node(index: int, args: argparse.Namespace, network: Network, stop_at: float) -> None:
    rng = random.Random(args.seed * 1000 + index)
    skew = rng.randint(-args.skew_ms, args.skew_ms)
    clock = HLC(node=index + 1, wall=lambda: _wall_ms() + skew)
    interval = args.seconds / max(1, args.events // args.nodes)
    for _ in range(args.events // args.nodes):
        if time.monotonic() >= stop_at:
            break
        event = Event(f"node{index}.tick", _wall_ms(), clock.now())
        late = rng.random() < args.late_fraction
        delay_ms = rng.uniform(args.window_ms, 3 * args.window_ms) if late else rng.uniform(
            0, args.delay_ms)
        network.send(event, delay_ms / 1000)
        if rng.random() < args.duplicate_fraction:
            network.send(event, rng.uniform(0, args.delay_ms) / 1000)
        time.sleep(interval)


def _percentile(values: Sequence[int], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))])


def run(args: argparse.Namespace, out: Any = sys.stdout) -> int:
    """Run the simulation and print its summary; return the exit status."""
    bus = EventBus(HLC(node=0))
    unordered, ordered = Watcher(), Watcher()
    late: list[int] = []
    bus.subscribe("*", unordered, name="unordered")
    ordered_sub = bus.subscribe("*", ordered, ordered=True, window_ms=args.window_ms,
                                on_late=lambda event, ms: late.append(ms), name="ordered")
    network = Network(bus)
    started = time.monotonic()
    stop_at = started + args.seconds
    nodes = [threading.Thread(target=_node, args=(i, args, network, stop_at), name=f"node{i}")
             for i in range(args.nodes)]
    print(f"hlcbus demo ({CORE} core): {args.nodes} nodes, skew up to +/-{args.skew_ms} ms, "
          f"delay up to {args.delay_ms} ms, window {args.window_ms} ms", file=out)
    for thread in nodes:
        thread.start()
    _progress(nodes, ordered_sub, unordered, out)
    network.close()
    report = bus.close()
    elapsed = time.monotonic() - started
    stats = ordered_sub.stats
    _summary(out, stats, bus, network, unordered, ordered, late, elapsed, report)
    return 1 if ordered.inversions else 0


def _progress(nodes: list[threading.Thread], sub: Any, unordered: Watcher, out: Any) -> None:
    while any(thread.is_alive() for thread in nodes):
        for thread in nodes:
            thread.join(PROGRESS_EVERY / len(nodes))
        stats = sub.stats
        print(f"  ... received {stats.received:6d}  delivered in order {stats.delivered:6d}  "
              f"buffered {stats.pending:5d}  late {stats.late:4d}  "
              f"unordered inversions {unordered.inversions:5d}", file=out)


def _summary(out: Any, stats: Any, bus: EventBus, network: Network, unordered: Watcher,
             ordered: Watcher, late: list[int], elapsed: float, report: Any) -> None:
    identity = stats.delivered + stats.late + stats.duplicates + stats.dropped + stats.pending
    lines = [
        "",
        f"events received by the bus   {bus.stats.received}",
        f"duplicates dropped           {bus.stats.duplicates + stats.duplicates}",
        f"order inversions, unordered  {unordered.inversions}",
        f"order inversions, ordered    {ordered.inversions}",
        f"reordered by the buffer      {stats.reordered}",
        f"late (side channel)          {stats.late}"
        + (f", lateness p50 {_percentile(late, 0.5):.0f} ms, max {max(late)} ms" if late else ""),
        f"latency p50/p99, unordered   {_percentile(unordered.latencies_ms, 0.5):.0f} / "
        f"{_percentile(unordered.latencies_ms, 0.99):.0f} ms",
        f"latency p50/p99, ordered     {_percentile(ordered.latencies_ms, 0.5):.0f} / "
        f"{_percentile(ordered.latencies_ms, 0.99):.0f} ms",
        f"throughput                   {bus.stats.received / elapsed:,.0f} events/s "
        f"over {elapsed:.1f} s",
        f"accounting (ordered)         received {stats.received} = delivered "
        f"{stats.delivered} + late {stats.late} + duplicates {stats.duplicates} + dropped "
        f"{stats.dropped} + pending {stats.pending}: "
        + ("ok" if identity == stats.received else "BROKEN"),
        "ordered stream               "
        + ("never went backwards" if not ordered.inversions else "WENT BACKWARDS"),
    ]
    print("\n".join(lines), file=out)


def parser(
    sub: Optional[argparse._SubParsersAction[argparse.ArgumentParser]] = None,
) -> argparse.ArgumentParser:
    """The demo's options (also the ``demo`` sub-command of the CLI)."""
    description = "Simulate skewed nodes feeding one bus; compare unordered and ordered delivery."
    p = (sub.add_parser("demo", help=description, description=description) if sub
         else argparse.ArgumentParser(prog="python -m hlcbus demo", description=description))
    p.add_argument("--nodes", type=int, default=4, help="simulated nodes (default 4)")
    p.add_argument("--events", type=int, default=20_000, help="events in all (default 20000)")
    p.add_argument("--seconds", type=float, default=3.0, help="run time (default 3)")
    p.add_argument("--window-ms", type=int, default=100, help="ordering window (default 100)")
    p.add_argument("--skew-ms", type=int, default=20, help="max clock skew (default 20)")
    p.add_argument("--delay-ms", type=int, default=60, help="max normal delay (default 60)")
    p.add_argument("--late-fraction", type=float, default=0.01,
                   help="events delayed beyond the window (default 0.01)")
    p.add_argument("--duplicate-fraction", type=float, default=0.01,
                   help="events the network sends twice (default 0.01)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    return run(args)
