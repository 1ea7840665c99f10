"""pyperf benchmarks of the key heap at a steady 1,000 entries.

"<impl> push+pop": push one key, pop the min, for PriorityBuffer (c and py)
and for heapq on (physical, logical, node, seq, item) tuples and on bare
``packed << 64 | node`` ints.  "<impl> pop_until": release 100 entries per
call.  ``bench/run_all.py`` runs this script and turns its JSON into RESULTS.md.

Why the keys drift: with uniform random keys, push-random/pop-min decays
within a few thousand steps into "every new key is below the heap's min"
(the heap ends up holding the largest keys seen).  Here key i is
``i * STEP + jitter``, arrivals out of order within a window twice the heap's
span, like messages from several nodes: new keys land all over the heap, for
ever.  Every impl replays the same key sequence from the same starting heap.
"""

import heapq
import itertools
import random
import time
from importlib.metadata import version

import pyperf

from hlcbus import _core, _core_py

SIZE = 1_000  # entries held at steady state
ROUND = 20_000  # keys per round; the heap is reset (untimed) between rounds
BATCH = 100  # entries released per pop_until call
STEP = 1 << 12  # packed-word advance between arrivals: 16 per millisecond
SPREAD = 2 * SIZE * STEP  # arrival jitter
BASE = 1_796_000_000_000 << 16  # a 2026 physical time, packed
WARMUP = 5 * SIZE  # simulated steps before the starting heap is taken
INNER = 10  # push+pop pairs per loop iteration: see time_buffer


def make_keys(seed=2026):
    """Return (starting heap contents, the ROUND keys that follow) as (packed, node) pairs."""
    rng = random.Random(seed)
    stream = [(BASE + i * STEP + rng.randrange(SPREAD), rng.getrandbits(64))
              for i in range(SIZE + WARMUP + ROUND)]
    heap = stream[:SIZE]
    heapq.heapify(heap)
    for key in stream[SIZE:SIZE + WARMUP]:
        heapq.heappushpop(heap, key)
    return heap, stream[SIZE + WARMUP:]


def release_bounds(start, keys):
    """Return, per BATCH of keys pushed, the largest key that pop_until must release.

    Releasing BATCH entries after each BATCH pushed keeps the heap at SIZE.
    Nodes are random 64-bit ids, so keys are distinct and the count is exact.
    """
    heap, bounds = list(start), []
    for i in range(0, len(keys), BATCH):
        for key in keys[i:i + BATCH]:
            heapq.heappush(heap, key)
        bounds.append([heapq.heappop(heap) for _ in range(BATCH)][-1])
    return bounds


def rounds(loops, per_round):
    """Split ``loops`` iterations into rounds of at most ``per_round``."""
    while loops > 0:
        yield min(loops, per_round)
        loops -= per_round


def chunked(keys):
    return [tuple(keys[i:i + INNER]) for i in range(0, len(keys), INNER)]


def filled(core, start):
    buffer = core.PriorityBuffer()
    for ts in start:
        buffer.push(ts, None)
    return buffer


# The loops are unrolled ten times, over keys pre-chunked in tens, for the
# reason bench_clock gives: at ~100 ns a pair, the ~4 ns of a loop iteration
# would otherwise shift the ratios that the targets are about.
def time_buffer(loops, core, start, chunks):
    total = 0.0
    for n in rounds(loops, len(chunks)):
        buffer = filled(core, start)
        push, pop = buffer.push, buffer.pop
        part = chunks[:n]
        t0 = time.perf_counter()
        for k0, k1, k2, k3, k4, k5, k6, k7, k8, k9 in part:
            push(k0, None)
            pop()
            push(k1, None)
            pop()
            push(k2, None)
            pop()
            push(k3, None)
            pop()
            push(k4, None)
            pop()
            push(k5, None)
            pop()
            push(k6, None)
            pop()
            push(k7, None)
            pop()
            push(k8, None)
            pop()
            push(k9, None)
            pop()
        total += time.perf_counter() - t0
    return total


def time_heapq_tuples(loops, start, chunks):
    """Push (physical, logical, node, seq, item) entries, built as a heapq buffer must."""
    total = 0.0
    push, pop = heapq.heappush, heapq.heappop
    for n in rounds(loops, len(chunks)):
        heap = list(start)
        seq = itertools.count(len(start)).__next__
        part = chunks[:n]
        t0 = time.perf_counter()
        for k0, k1, k2, k3, k4, k5, k6, k7, k8, k9 in part:
            physical, logical, node = k0
            push(heap, (physical, logical, node, seq(), None))
            pop(heap)
            physical, logical, node = k1
            push(heap, (physical, logical, node, seq(), None))
            pop(heap)
            physical, logical, node = k2
            push(heap, (physical, logical, node, seq(), None))
            pop(heap)
            physical, logical, node = k3
            push(heap, (physical, logical, node, seq(), None))
            pop(heap)
            physical, logical, node = k4
            push(heap, (physical, logical, node, seq(), None))
            pop(heap)
            physical, logical, node = k5
            push(heap, (physical, logical, node, seq(), None))
            pop(heap)
            physical, logical, node = k6
            push(heap, (physical, logical, node, seq(), None))
            pop(heap)
            physical, logical, node = k7
            push(heap, (physical, logical, node, seq(), None))
            pop(heap)
            physical, logical, node = k8
            push(heap, (physical, logical, node, seq(), None))
            pop(heap)
            physical, logical, node = k9
            push(heap, (physical, logical, node, seq(), None))
            pop(heap)
        total += time.perf_counter() - t0
    return total


def time_heapq_ints(loops, start, chunks):
    """Push bare packed << 64 | node ints: heap work only, no seq, no item."""
    total = 0.0
    push, pop = heapq.heappush, heapq.heappop
    for n in rounds(loops, len(chunks)):
        heap = list(start)
        part = chunks[:n]
        t0 = time.perf_counter()
        for k0, k1, k2, k3, k4, k5, k6, k7, k8, k9 in part:
            push(heap, k0)
            pop(heap)
            push(heap, k1)
            pop(heap)
            push(heap, k2)
            pop(heap)
            push(heap, k3)
            pop(heap)
            push(heap, k4)
            pop(heap)
            push(heap, k5)
            pop(heap)
            push(heap, k6)
            pop(heap)
            push(heap, k7)
            pop(heap)
            push(heap, k8)
            pop(heap)
            push(heap, k9)
            pop(heap)
        total += time.perf_counter() - t0
    return total


# Only pop_until is timed; the pushes that refill the heap between calls are
# not.  One perf_counter pair per call adds ~50 ns to calls of several us.
def time_pop_until(loops, core, start, batches, bounds):
    total = 0.0
    for n in rounds(loops, len(batches)):
        buffer = filled(core, start)
        push, pop_until = buffer.push, buffer.pop_until
        for batch, bound in zip(batches[:n], bounds[:n], strict=True):
            for ts in batch:
                push(ts, None)
            t0 = time.perf_counter()
            pop_until(bound)
            total += time.perf_counter() - t0
    return total


def main():
    runner = pyperf.Runner()
    # Read back by run_all.py, so RESULTS.md states the set-up it measured.
    runner.metadata["hlcbus_version"] = version("hlcbus")
    runner.metadata["heap_entries"] = SIZE
    runner.metadata["released_per_call"] = BATCH
    start, keys = make_keys()
    bounds = release_bounds(start, keys)
    stamps = {}
    for impl, core in (("c", _core), ("py", _core_py)):
        stamps[impl] = [[core.Timestamp.from_packed(*key) for key in part]
                        for part in (start, keys, bounds)]
        runner.bench_time_func(f"{impl} PriorityBuffer push+pop", time_buffer, core,
                               stamps[impl][0], chunked(stamps[impl][1]), inner_loops=INNER)

    # heapq gets its keys as (physical, logical, node) tuples and builds each
    # entry in the timed loop, with a seq from a counter: PriorityBuffer.push
    # does the same work inside.  The packed ints carry no seq and no item.
    fields = [(packed >> 16, packed & 0xFFFF, node) for packed, node in keys]
    tuples_start = [(packed >> 16, packed & 0xFFFF, node, seq, None)
                    for seq, (packed, node) in enumerate(start)]
    heapq.heapify(tuples_start)
    runner.bench_time_func("heapq tuples push+pop", time_heapq_tuples, tuples_start,
                           chunked(fields), inner_loops=INNER)
    ints_start = [packed << 64 | node for packed, node in start]
    heapq.heapify(ints_start)
    runner.bench_time_func("heapq packed ints push+pop", time_heapq_ints, ints_start,
                           chunked([packed << 64 | node for packed, node in keys]),
                           inner_loops=INNER)

    for impl, core in (("c", _core), ("py", _core_py)):
        start_ts, keys_ts, bounds_ts = stamps[impl]
        batches = [keys_ts[i:i + BATCH] for i in range(0, len(keys_ts), BATCH)]
        runner.bench_time_func(f"{impl} PriorityBuffer pop_until", time_pop_until, core,
                               start_ts, batches, bounds_ts)


if __name__ == "__main__":
    main()
