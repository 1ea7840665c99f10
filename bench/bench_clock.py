"""pyperf benchmarks of the clock: now, update, to_bytes, from_bytes, str, parse.

Each operation is measured for the compiled core ("c"), the pure core ("py")
and the Python HLCs on PyPI ("hlcpy", "accordsync"), in the same run, beside
the floor every wall-clock HLC pays: one ``time.time_ns()`` call.
``bench/run_all.py`` runs this script and turns its JSON into RESULTS.md.
"""

import secrets
import time
from importlib.metadata import version

import hlcpy
import pyperf
from accordsync_core.hlc import Hlc

from hlcbus import _core, _core_py

# Each time function makes ten calls per loop iteration and declares
# inner_loops=INNER, so the interpreter's own loop (~5 ns a turn, more than the gap
# between "c now" and the floor) weighs a tenth as much, and the same in every
# benchmark: the ratios compare calls, not loops.
INNER = 10
MAX_DRIFT_MS = 60_000  # hlcbus's default limit, also passed to accordsync's receive()
OPERATIONS = ("now", "update", "to_bytes", "from_bytes", "str", "parse")


def time_call(loops, func):
    range_it = range(loops)
    t0 = time.perf_counter()
    for _ in range_it:
        func()
        func()
        func()
        func()
        func()
        func()
        func()
        func()
        func()
        func()
    return time.perf_counter() - t0


def time_call_with(loops, func, arg):
    range_it = range(loops)
    t0 = time.perf_counter()
    for _ in range_it:
        func(arg)
        func(arg)
        func(arg)
        func(arg)
        func(arg)
        func(arg)
        func(arg)
        func(arg)
        func(arg)
        func(arg)
    return time.perf_counter() - t0


# accordsync's Hlc is an immutable value that is handed the wall time: a fair
# "now" reads the clock and ticks, and the caller keeps the returned value.
def time_accordsync_now(loops, clock):
    range_it = range(loops)
    time_ns = time.time_ns
    t0 = time.perf_counter()
    for _ in range_it:
        clock = clock.tick(time_ns() // 1_000_000)
        clock = clock.tick(time_ns() // 1_000_000)
        clock = clock.tick(time_ns() // 1_000_000)
        clock = clock.tick(time_ns() // 1_000_000)
        clock = clock.tick(time_ns() // 1_000_000)
        clock = clock.tick(time_ns() // 1_000_000)
        clock = clock.tick(time_ns() // 1_000_000)
        clock = clock.tick(time_ns() // 1_000_000)
        clock = clock.tick(time_ns() // 1_000_000)
        clock = clock.tick(time_ns() // 1_000_000)
    return time.perf_counter() - t0


def time_accordsync_update(loops, clock, remote):
    range_it = range(loops)
    time_ns = time.time_ns
    t0 = time.perf_counter()
    for _ in range_it:
        clock = clock.receive(remote, time_ns() // 1_000_000, MAX_DRIFT_MS)
        clock = clock.receive(remote, time_ns() // 1_000_000, MAX_DRIFT_MS)
        clock = clock.receive(remote, time_ns() // 1_000_000, MAX_DRIFT_MS)
        clock = clock.receive(remote, time_ns() // 1_000_000, MAX_DRIFT_MS)
        clock = clock.receive(remote, time_ns() // 1_000_000, MAX_DRIFT_MS)
        clock = clock.receive(remote, time_ns() // 1_000_000, MAX_DRIFT_MS)
        clock = clock.receive(remote, time_ns() // 1_000_000, MAX_DRIFT_MS)
        clock = clock.receive(remote, time_ns() // 1_000_000, MAX_DRIFT_MS)
        clock = clock.receive(remote, time_ns() // 1_000_000, MAX_DRIFT_MS)
        clock = clock.receive(remote, time_ns() // 1_000_000, MAX_DRIFT_MS)
    return time.perf_counter() - t0


def hlcbus_cases(core):
    """Return {operation: (time function, args)} for one hlcbus core."""
    clock = core.HLC(max_drift_ms=MAX_DRIFT_MS)
    # Taken from another node just now: update() then runs its full path,
    # drift check included, and the remote stays seconds old at most, far
    # inside the drift limit.  The cost is the same whichever term of the max wins.
    remote = core.HLC().now()
    ts = clock.now()
    return {
        "now": (time_call, clock.now),
        "update": (time_call_with, clock.update, remote),
        "to_bytes": (time_call, ts.to_bytes),
        "from_bytes": (time_call_with, core.Timestamp.from_bytes, ts.to_bytes()),
        "str": (time_call_with, str, ts),
        "parse": (time_call_with, core.Timestamp.parse, str(ts)),
    }


def hlcpy_cases():
    # hlcpy's clock is its own timestamp: sync() ticks it in place and returns
    # None, so its "now" builds no value (hlcbus's now() returns a new Timestamp).
    clock = hlcpy.HLC.from_now()
    return {
        "now": (time_call, clock.sync),
        "update": (time_call_with, clock.merge, hlcpy.HLC.from_now()),
        "to_bytes": (time_call, clock.to_bytes),
        "from_bytes": (time_call_with, hlcpy.HLC.from_bytes, clock.to_bytes()),
        "str": (time_call_with, str, clock),
        "parse": (time_call_with, hlcpy.HLC.from_str, str(clock)),
    }


def accordsync_cases():
    # accordsync has one encoding, text (encode/decode): it is measured as
    # str/parse, and it has no to_bytes/from_bytes.  Node ids are 16 hex
    # digits, the width of hlcbus's 64-bit node in its text form.
    local, other = (f"{secrets.randbits(64):016X}" for _ in range(2))
    now_ms = time.time_ns() // 1_000_000
    clock = Hlc.initial(local).tick(now_ms)
    return {
        "now": (time_accordsync_now, clock),
        "update": (time_accordsync_update, clock, Hlc.initial(other).tick(now_ms)),
        "str": (time_call, clock.encode),
        "parse": (time_call_with, Hlc.decode, clock.encode()),
    }


def main():
    runner = pyperf.Runner()
    runner.metadata["hlcbus_version"] = version("hlcbus")
    runner.metadata["hlcpy_version"] = version("hlcpy")
    runner.metadata["accordsync_version"] = version("accordsync-core")
    runner.bench_time_func("floor time.time_ns", time_call, time.time_ns, inner_loops=INNER)
    impls = {
        "c": hlcbus_cases(_core),
        "py": hlcbus_cases(_core_py),
        "hlcpy": hlcpy_cases(),
        "accordsync": accordsync_cases(),
    }
    # Operation by operation, so the implementations of one operation run
    # back to back and share the machine's state of the moment.
    for operation in OPERATIONS:
        for impl, cases in impls.items():
            if operation in cases:
                func, *args = cases[operation]
                runner.bench_time_func(f"{impl} {operation}", func, *args, inner_loops=INNER)


if __name__ == "__main__":
    main()
