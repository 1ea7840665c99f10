"""Events across two processes through one local Redis; writes one JSON file.

Not a pyperf microbenchmark: each run is two OS processes (a publisher and
a consumer, this script started again with ``--role``) around a throwaway
redis-server, and the figures are distributions over whole runs.

    python bench/bench_redis.py -o bench/redis.json [--events N] [--repeats R]

Two cases move the same payloads, ``{"i": i, "sent_ns": time.time_ns()}``,
as the same entry fields (v, ts, type, ct, data):

- ``hlcbus``: the publisher's EventBus + RedisBridge publishes; the
  consumer's RedisBridge feeds an EventBus with one ordered subscription
  (``window_ms=WINDOW_MS``) whose handler records the arrival.
- ``bare``: the ceiling.  redis-py alone: pipelines of BATCH XADDs, and a
  XREADGROUP (COUNT BATCH) / json.loads / XACK loop.

Saturated: the publisher publishes N events at once; throughput is N over
the time from the first publish to the last delivery (the clocks of both
processes are the same wall clock).  The cases alternate, REPEATS runs each,
and the medians are reported.  Paced: RATE events/s for SECONDS, in bursts
of BURST; latency (publish to handler, p50/p99/max) is reported there, since
at saturation latency is only the queue.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

EVENTS = 200_000  # per saturated run
REPEATS = 5  # saturated runs per case, alternating
BATCH = 256  # XADDs per pipeline and entries per XREADGROUP, as RedisBridge's default
WINDOW_MS = 10  # the consumer's ordered window
RATE = 20_000  # events per second, paced runs
SECONDS = 3.0
BURST = 20  # events per pacing step: time.sleep cannot pace single events
TYPE = "bench"
RUN_TIMEOUT = 120.0  # seconds for one run before its processes are killed
CASES = ("bare", "hlcbus")
# The bare loop's JSON: compact, as hlcbus's codec, from an encoder built once.
ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _payload(i: int) -> dict:
    return {"i": i, "sent_ns": time.time_ns()}


def _pace(total: int, rate: int, send) -> None:
    """Call ``send(start, count)`` over ``total`` events: all at once, or ``rate`` per second."""
    if not rate:
        for start in range(0, total, BATCH):
            send(start, min(BATCH, total - start))
        return
    step, next_at = BURST / rate, time.perf_counter()
    for start in range(0, total, BURST):
        send(start, min(BURST, total - start))
        next_at += step
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


class Recorder:
    """Arrival times minus send times; ``done`` is set at the ``expected``-th event."""

    def __init__(self, expected: int) -> None:
        self.latencies: list[int] = []
        self.first_sent = self.last_at = 0
        self.expected = expected
        self.done = threading.Event()

    def record(self, data: dict) -> None:
        now = time.time_ns()
        if not self.latencies:
            self.first_sent = data["sent_ns"]
        self.latencies.append(now - data["sent_ns"])
        if len(self.latencies) == self.expected:
            self.last_at = now
            self.done.set()

    def result(self) -> dict:
        ordered = sorted(self.latencies)
        pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6  # noqa: E731
        elapsed = (self.last_at - self.first_sent) / 1e9
        return {"events": len(ordered), "seconds": elapsed,
                "events_per_s": len(ordered) / elapsed, "p50_ms": pick(0.50),
                "p99_ms": pick(0.99), "max_ms": ordered[-1] / 1e6}


# --- the child processes ------------------------------------------------------------

def bare_publish(url: str, stream: str, total: int, rate: int) -> None:
    import redis

    client = redis.Redis.from_url(url)
    ct, kind = b"application/json", TYPE.encode()

    def send(start: int, count: int) -> None:
        pipe = client.pipeline(transaction=False)
        for i in range(start, start + count):
            data = ENCODE(_payload(i)).encode()
            pipe.xadd(stream, {b"v": b"1", b"ts": time.time_ns().to_bytes(16, "big"),
                               b"type": kind, b"ct": ct, b"data": data})
        pipe.execute()

    _pace(total, rate, send)
    client.close()


def bare_consume(url: str, stream: str, total: int) -> dict:
    import redis

    client = redis.Redis.from_url(url)
    group = "bare"
    client.xgroup_create(stream, group, id="$", mkstream=True)
    recorder = Recorder(total)
    print("ready", flush=True)
    deadline = time.monotonic() + RUN_TIMEOUT
    while not recorder.done.is_set() and time.monotonic() < deadline:
        reply = client.xreadgroup(group, group, {stream: ">"}, count=BATCH, block=100)
        if not reply:
            continue
        entries = reply[0][1]
        for _, fields in entries:
            recorder.record(json.loads(fields[b"data"]))
        client.xack(stream, group, *[entry_id for entry_id, _ in entries])
    client.close()
    return recorder.result()


def hlcbus_publish(url: str, stream: str, total: int, rate: int) -> None:
    from hlcbus import EventBus
    from hlcbus.redis import RedisBridge

    # max_pending holds a whole saturated run: the publisher never waits on Redis.
    with EventBus() as bus, RedisBridge(bus, url, stream=stream, batch_size=BATCH,
                                        max_pending=total) as bridge:
        publish = bus.publish

        def send(start: int, count: int) -> None:
            for i in range(start, start + count):
                publish(TYPE, _payload(i))

        _pace(total, rate, send)
        if not bridge.close(timeout=RUN_TIMEOUT):
            raise RuntimeError(f"the publisher's bridge left events unsent: {bridge.stats}")


def hlcbus_consume(url: str, stream: str, total: int, window_ms: int) -> dict:
    from hlcbus import EventBus
    from hlcbus.redis import RedisBridge

    recorder = Recorder(total)
    bus = EventBus()
    # Room for a whole run: back-pressure is not what this measures.
    bus.subscribe(TYPE, lambda event: recorder.record(event.data), ordered=True,
                  window_ms=window_ms, maxsize=total + 1)
    bridge = RedisBridge(bus, url, stream=stream, batch_size=BATCH).start()
    print("ready", flush=True)
    recorder.done.wait(RUN_TIMEOUT)
    bridge.close()
    bus.close(drain=False)
    result = recorder.result()
    result["bridge"] = {"read": bridge.stats.read, "delivered": bridge.stats.delivered}
    return result


def child(args: argparse.Namespace) -> None:
    case, _, part = args.role.partition("-")
    if part == "publish":
        (bare_publish if case == "bare" else hlcbus_publish)(args.url, args.stream, args.events,
                                                             args.rate)
        return
    if case == "bare":
        result = bare_consume(args.url, args.stream, args.events)
    else:
        result = hlcbus_consume(args.url, args.stream, args.events, args.window_ms)
    print(json.dumps(result), flush=True)


# --- the parent -----------------------------------------------------------------------

def _spawn(role: str, url: str, stream: str, events: int, rate: int, window_ms: int,
           ) -> subprocess.Popen:
    command = [sys.executable, __file__, "--role", role, "--url", url, "--stream", stream,
               "--events", str(events), "--rate", str(rate), "--window-ms", str(window_ms)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def run_once(case: str, url: str, stream: str, events: int, rate: int, window_ms: int) -> dict:
    """One consumer process, ready before one publisher process starts; the consumer's figures."""
    consumer = _spawn(f"{case}-consume", url, stream, events, rate, window_ms)
    publisher = None
    try:
        if consumer.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{case} consumer did not start")
        publisher = _spawn(f"{case}-publish", url, stream, events, rate, window_ms)
        line = consumer.stdout.readline()
        consumer.wait(RUN_TIMEOUT)
        publisher.wait(RUN_TIMEOUT)
        if consumer.returncode or publisher.returncode or not line:
            raise RuntimeError(f"{case} run failed: consumer {consumer.returncode}, "
                               f"publisher {publisher.returncode}")
        result = json.loads(line)
        if result["events"] != events:
            raise RuntimeError(f"{case}: {result['events']} of {events} events arrived")
        return result
    finally:
        for process in (consumer, publisher):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


def _loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _summary(runs: list[dict]) -> dict:
    keys = ("events_per_s", "seconds", "p50_ms", "p99_ms", "max_ms")
    summary = {key: statistics.median(run[key] for run in runs) for key in keys}
    summary["runs_events_per_s"] = [round(run["events_per_s"]) for run in runs]
    return summary


def measure(args: argparse.Namespace, url: str, flush) -> dict:
    saturated: dict[str, list[dict]] = {case: [] for case in CASES}
    loads = [_loadavg()]
    for rep in range(args.repeats):
        for case in CASES:
            flush()
            saturated[case].append(run_once(case, url, f"bench:{case}:{rep}", args.events, 0,
                                            args.window_ms))
            loads.append(_loadavg())
    paced = {}
    for case in CASES:
        flush()
        result = run_once(case, url, f"bench:{case}:paced", int(RATE * SECONDS), RATE,
                          args.window_ms)
        paced[case] = {key: result[key] for key in ("p50_ms", "p99_ms", "max_ms", "events")}
        loads.append(_loadavg())
    summary = {case: _summary(runs) for case, runs in saturated.items()}
    return {"saturated": summary,
            "ratio": summary["hlcbus"]["events_per_s"] / summary["bare"]["events_per_s"],
            "paced": paced, "load_avg_1min": {"min": min(loads), "max": max(loads)}}


def versions() -> dict:
    import redis

    import hlcbus
    try:
        import hiredis
        parser = f"hiredis {hiredis.__version__}"
    except ImportError:
        parser = "python"
    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    return {"core": hlcbus.CORE, "redis_py": redis.__version__, "parser": parser,
            "redis_server": server.stdout.split()[2].removeprefix("v=")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output")
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--window-ms", type=int, default=WINDOW_MS)
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--stream", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        child(args)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import redis
    from redis_server import RedisServer

    with tempfile.TemporaryDirectory(prefix="hlcbus-bench-redis-") as directory:
        server = RedisServer(Path(directory)).start()
        try:
            client = redis.Redis.from_url(server.url)
            result = {**versions(), "events": args.events, "repeats": args.repeats,
                      "batch_size": BATCH, "window_ms": args.window_ms, "rate_per_s": RATE,
                      "paced_seconds": SECONDS, "cpus": os.cpu_count(),
                      **measure(args, server.url, client.flushall)}
            client.close()
        finally:
            server.stop()
    if args.output:
        with open(args.output, "w") as out:
            json.dump(result, out, indent=2)
    print_table(result)


def print_table(result: dict) -> None:
    window = result["window_ms"]
    print(f"{result['events']:,} events, {result['repeats']} runs per case (medians); "
          f"load {result['load_avg_1min']['min']:.2f}-{result['load_avg_1min']['max']:.2f}")
    print(f"{'case':<8} {'events/s':>10} {'runs':<40}")
    for case, row in result["saturated"].items():
        runs = ", ".join(f"{value:,}" for value in row["runs_events_per_s"])
        print(f"{case:<8} {row['events_per_s']:>10,.0f} {runs}")
    print(f"hlcbus / bare throughput: {result['ratio']:.3f}")
    print(f"paced {result['rate_per_s']:,} events/s, latency ms (hlcbus: window_ms={window}):")
    for case, row in result["paced"].items():
        print(f"{case:<8} p50 {row['p50_ms']:8.3f}  p99 {row['p99_ms']:8.3f}  "
              f"max {row['max_ms']:8.3f}")
    hlc = result["paced"]["hlcbus"]
    print(f"hlcbus minus the window: p50 {hlc['p50_ms'] - window:.3f}  "
          f"p99 {hlc['p99_ms'] - window:.3f}")


if __name__ == "__main__":
    main()
