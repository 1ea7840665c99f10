"""pyperf benchmarks of hlcbus.arrays, per timestamp, beside the scalar path and plain numpy.

Benchmarks are named "<impl> <operation>", and every value is the cost of
one timestamp (each call handles ROWS rows and declares inner_loops=ROWS):
- "arrays <op>": hlcbus.arrays on ROWS rows (checks included);
- "c now_many", "py now_many": HLC.now_many(ROWS) on each core;
- "numpy <op>": the obvious pure-numpy code for the same result, no checks;
- "scalar <op>": a Python loop over the compiled core's Timestamp, on
  SCALAR_ROWS rows (a million would take seconds per value; the cost per
  timestamp hardly depends on the count, except for sort's log n).

``make bench`` runs it through run_all.py, which checks the targets:
Targets (issue 6): >= 50 million timestamps/s (<= 20 ns each) for pack,
unpack, encode, decode; >= 100 million/s (<= 10 ns) for now_many.
"""

import time
from importlib.metadata import version

import numpy as np
import pyperf

from hlcbus import _core, _core_py, arrays

ROWS = 1_000_000
SCALAR_ROWS = 10_000
T0 = 1_796_299_200_000  # 2026-12-03T12:00:00Z, in ms


def time_call(loops, func, *args):
    t0 = time.perf_counter()
    for _ in range(loops):
        func(*args)
    return time.perf_counter() - t0


def columns(rows):
    rng = np.random.default_rng(6)
    physical = rng.integers(T0, T0 + 86_400_000, rows, dtype=np.uint64)
    logical = rng.integers(0, 1 << 16, rows, dtype=np.uint64)
    node = rng.integers(0, 1 << 63, rows, dtype=np.uint64)
    return physical, logical, (physical << np.uint64(16)) | logical, node


def arrays_cases():
    physical, logical, packed, node = columns(ROWS)
    encoded = arrays.encode(packed, node)
    texts = arrays.format(packed, node)
    return {
        "pack": (arrays.pack, physical, logical),
        "unpack": (arrays.unpack, packed),
        "encode": (arrays.encode, packed, node),
        "decode": (arrays.decode, encoded),
        "to_datetime64": (arrays.to_datetime64, packed),
        "sort": (arrays.sort, packed, node),
        "format": (arrays.format, packed, node),
        "parse": (arrays.parse, texts),
    }


def numpy_cases():
    physical, logical, packed, node = columns(ROWS)
    encoded = arrays.encode(packed, node)
    sixteen = np.uint64(16)

    def pack(p, c):
        return (p << sixteen) | c

    def unpack(w):
        return w >> sixteen, w & np.uint64(0xFFFF)

    def encode(w, n):
        return np.stack((w, n), axis=1).astype(">u8").view(np.uint8)

    def decode(rows):
        words = rows.view(">u8").astype(np.uint64)
        return words[:, 0], words[:, 1]

    def now_many(n):
        first = (time.time_ns() // 1_000_000) << 16
        return np.arange(first, first + n, dtype=np.uint64)

    def to_datetime64(w):
        return (w >> sixteen).astype("datetime64[ms]")

    def sort(w, n):
        order = np.lexsort((n, w))
        return w[order], n[order]

    return {
        "pack": (pack, physical, logical),
        "unpack": (unpack, packed),
        "encode": (encode, packed, node),
        "decode": (decode, encoded),
        "now_many": (now_many, ROWS),
        "to_datetime64": (to_datetime64, packed),
        "sort": (sort, packed, node),
    }


def scalar_cases():
    physical, logical, packed, node = (c[:SCALAR_ROWS].tolist() for c in columns(SCALAR_ROWS))
    Timestamp = _core.Timestamp
    stamps = [Timestamp.from_packed(p, n) for p, n in zip(packed, node)]
    blobs = [ts.to_bytes() for ts in stamps]
    texts = [str(ts) for ts in stamps]
    clock = _core.HLC()
    return {
        "pack": (lambda: [Timestamp(p, c).packed for p, c in zip(physical, logical)],),
        "unpack": (lambda: [(ts.physical, ts.logical) for ts in stamps],),
        "encode": (lambda: [ts.to_bytes() for ts in stamps],),
        "decode": (lambda: [Timestamp.from_bytes(b) for b in blobs],),
        "now_many": (lambda: [clock.now() for _ in range(SCALAR_ROWS)],),
        "sort": (lambda: sorted(stamps),),
        "format": (lambda: [str(ts) for ts in stamps],),
        "parse": (lambda: [Timestamp.parse(t) for t in texts],),
    }


def main():
    runner = pyperf.Runner()
    runner.metadata["hlcbus_version"] = version("hlcbus")
    runner.metadata["numpy_version"] = np.__version__
    runner.metadata["rows"] = ROWS
    impls = {
        "arrays": arrays_cases(),
        "numpy": numpy_cases(),
        "scalar": scalar_cases(),
    }
    impls["arrays"]["now_many"] = (_core.HLC().now_many, ROWS)
    impls["py"] = {"now_many": (_core_py.HLC().now_many, ROWS)}
    operations = ("pack", "unpack", "encode", "decode", "now_many", "to_datetime64", "sort",
                  "format", "parse")
    for operation in operations:
        for impl, cases in impls.items():
            if operation not in cases:
                continue
            func, *args = cases[operation]
            rows = SCALAR_ROWS if impl == "scalar" else ROWS
            name = "c now_many" if (impl, operation) == ("arrays", "now_many") else (
                f"{impl} {operation}")
            runner.bench_time_func(name, time_call, func, *args, inner_loops=rows)


if __name__ == "__main__":
    main()
