"""pyperf benchmarks of the event bus, beside its peers, in one run.

Benchmarks are named "<impl> <operation>":
- "<impl> publish/emit N": the cost on the publisher's thread of one publish
  with N trivial subscribers.  For hlcbus that is the publisher thread's CPU
  time (time.thread_time), since its workers run concurrently and would
  otherwise be billed to the publisher; pyee, blinker and psygnal call their
  handlers synchronously, so their CPU time is the whole emit.
- "<impl> end-to-end ...": wall time per event from the first publish to the
  last delivery, for one or four publisher threads and one subscriber with a
  trivial handler; 1 / time is the throughput.
- "queue.Queue put" and "SimpleQueue put": the FIFOs the card names, for scale.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from importlib.metadata import version

import pyperf

import hlcbus
from hlcbus.quickbench import end_to_end, publish_cost, unattached_execute


def _noop(*args, **kwargs):
    return None


# --- publish cost on the publisher's thread --------------------------------------


def hlcbus_publish(subscribers: int, ordered: bool = False):
    def bench(loops: int) -> float:
        return publish_cost(subscribers, loops, ordered) * loops
    return bench


def pyee_emit(subscribers: int):
    from pyee import EventEmitter

    def bench(loops: int) -> float:
        emitter = EventEmitter()
        handlers = [lambda value: None for _ in range(subscribers)]  # pyee keeps one of each
        for handler in handlers:
            emitter.on("a", handler)
        emit = emitter.emit
        start = time.thread_time()
        for _ in itertools.repeat(None, loops):
            emit("a", 1)
        return time.thread_time() - start
    return bench


def blinker_send(subscribers: int):
    import blinker

    def bench(loops: int) -> float:
        signal = blinker.Signal()
        receivers = [lambda sender, **kw: None for _ in range(subscribers)]
        for receiver in receivers:
            signal.connect(receiver)
        send = signal.send
        start = time.thread_time()
        for _ in itertools.repeat(None, loops):
            send(1)
        return time.thread_time() - start
    return bench


def psygnal_emit(subscribers: int):
    from psygnal import Signal

    class Emitter:
        a = Signal(int)

    def bench(loops: int) -> float:
        emitter = Emitter()
        handlers = [lambda value: None for _ in range(subscribers)]
        for handler in handlers:
            emitter.a.connect(handler)
        emit = emitter.a.emit
        start = time.thread_time()
        for _ in itertools.repeat(None, loops):
            emit(1)
        return time.thread_time() - start
    return bench


def fifo_put(factory):
    def bench(loops: int) -> float:
        fifo = factory()
        put = fifo.put
        start = time.perf_counter()
        for _ in itertools.repeat(None, loops):
            put(1)
        return time.perf_counter() - start
    return bench


# --- end to end --------------------------------------------------------------------


def hlcbus_end_to_end(publishers: int, ordered: bool):
    def bench(loops: int) -> float:
        return end_to_end(publishers, ordered, loops) * loops
    return bench


def telemetry_unattached(loops: int) -> float:
    return unattached_execute(loops) * loops


def straw_man_end_to_end(loops: int) -> float:
    """hlcpy stamps, queue.Queue hands off, heapq orders: the obvious design."""
    import hlcpy

    clock = hlcpy.HLC.from_now()
    handoff: queue.Queue = queue.Queue()
    done = threading.Event()
    seq = itertools.count()

    def consume() -> None:
        heap: list = []
        delivered = 0
        while delivered < loops:
            heapq.heappush(heap, handoff.get())
            while heap:  # window 0: release everything received
                heapq.heappop(heap)
                delivered += 1
        done.set()

    consumer = threading.Thread(target=consume)
    consumer.start()
    start = time.perf_counter()
    for _ in itertools.repeat(None, loops):
        clock.sync()
        handoff.put((clock.tuple(), next(seq), None))
    done.wait()
    elapsed = time.perf_counter() - start
    consumer.join()
    return elapsed


def main() -> None:
    runner = pyperf.Runner()
    runner.metadata["hlcbus_core"] = hlcbus.CORE
    for peer in ("pyee", "blinker", "psygnal"):
        runner.metadata[f"{peer}_version"] = version(peer)
    for n in (1, 10):
        runner.bench_time_func(f"hlcbus publish {n}", hlcbus_publish(n))
        runner.bench_time_func(f"hlcbus publish {n} ordered", hlcbus_publish(n, True))
        runner.bench_time_func(f"pyee emit {n}", pyee_emit(n))
        runner.bench_time_func(f"blinker send {n}", blinker_send(n))
        runner.bench_time_func(f"psygnal emit {n}", psygnal_emit(n))
    runner.bench_time_func("telemetry execute unattached", telemetry_unattached)
    runner.bench_time_func("queue.Queue put", fifo_put(queue.Queue))
    runner.bench_time_func("SimpleQueue put", fifo_put(queue.SimpleQueue))
    runner.bench_time_func("straw man end-to-end 1 publisher", straw_man_end_to_end)
    for publishers in (1, 4):
        for ordered in (False, True):
            kind = "ordered" if ordered else "unordered"
            runner.bench_time_func(f"hlcbus end-to-end {publishers} publisher {kind}",
                                   hlcbus_end_to_end(publishers, ordered))


if __name__ == "__main__":
    main()
