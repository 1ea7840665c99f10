"""One node of test_redis_processes: a bus on a skewed clock, bridged to a Redis stream.

Run as ``python redis_node.py URL STREAM NODE SKEW_MS COUNT WINDOW_MS [ON_DOWN]``.
It subscribes an ordered handler to every node's events, starts its bridge
(so its consumer group exists), prints ``ready`` and waits for ``go`` on
stdin: the parent's barrier, so no node publishes before every group is
there to read it.  Then it publishes COUNT events of type ``node.<NODE>``, paced
in small bursts so that the nodes' publishes and receives interleave, waits
(bounded) until its handler has every node's events and its reader has read
back its own, closes, and prints one JSON line of what it published, what
was delivered, in order, and every counter.  Exit status 1 if the wait timed
out, and a traceback with status 1 on any exception.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
import time
from typing import Any

from hlcbus import HLC, EventBus
from hlcbus.redis import RedisBridge

NODES = 3  # how many nodes publish on the stream: the handler waits for all of them
BURST = 10  # events published between two pauses ...
PAUSE = 0.001  # seconds: ... so each node's publishing overlaps the others' arrivals
DONE_TIMEOUT = 60.0  # seconds for every event to be delivered after publishing
OWN_TIMEOUT = 10.0  # seconds, after that, for the reader to read this node's own entries
POLL = 0.01  # seconds between checks of the bridge's counters


def main(argv: list[str]) -> int:
    args = _parse(argv)
    expected = NODES * args.count
    delivered: list[tuple[str, str, int]] = []
    done = threading.Event()

    def handler(event: Any) -> None:
        delivered.append((event.timestamp.to_bytes().hex(), event.type, event.data["i"]))
        if len(delivered) == expected:
            done.set()

    clock = HLC(node=args.node, wall=lambda: time.time_ns() // 1_000_000 + args.skew)
    bus = EventBus(clock)
    try:
        sub = bus.subscribe("node.*", handler, ordered=True, window_ms=args.window,
                            name="ordered")
        bridge = RedisBridge(bus, args.url, stream=args.stream, on_down=args.on_down).start()
        try:
            print("ready", flush=True)
            line = sys.stdin.readline().strip()
            if line != "go":
                raise RuntimeError(f"expected 'go' on stdin, got {line!r}")
            published = _publish(bus, args.node, args.count)
            # Close only once the reader has also read back this node's own entries,
            # so close interrupts no batch and the bridge's counters balance.
            timed_out = not (done.wait(DONE_TIMEOUT) and _wait_own(bridge, args.count))
        finally:
            bridge.close()
    finally:
        bus.close()
    print(json.dumps({
        "node": args.node,
        "published": published,
        "delivered": delivered,
        "timed_out": timed_out,
        "sub": dataclasses.asdict(sub.stats),
        "bridge": dataclasses.asdict(bridge.stats),
        "bus": dataclasses.asdict(bus.stats),
    }), flush=True)
    return 1 if timed_out else 0


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("stream")
    parser.add_argument("node", type=int)
    parser.add_argument("skew", type=int, help="ms added to this node's wall clock")
    parser.add_argument("count", type=int, help="events this node publishes")
    parser.add_argument("window", type=int, help="the ordered subscriber's window, ms")
    parser.add_argument("on_down", nargs="?", default="buffer")
    return parser.parse_args(argv)


def _publish(bus: EventBus, node: int, count: int) -> list[str]:
    """Publish ``count`` events in bursts; return their timestamps as hex."""
    published = []
    for i in range(count):
        published.append(bus.publish(f"node.{node}", {"i": i}).timestamp.to_bytes().hex())
        if i % BURST == BURST - 1:
            time.sleep(PAUSE)  # pacing, not synchronisation
    return published


def _wait_own(bridge: RedisBridge, count: int) -> bool:
    """Wait (bounded) until the reader has read back this node's ``count`` entries."""
    deadline = time.monotonic() + OWN_TIMEOUT
    while bridge.stats.own < count:
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
