"""PriorityBuffer: order, ties, pop_until, bad input, reference ownership, threads."""

from __future__ import annotations

import gc
import heapq
import random
import sys
import threading
import weakref
from types import ModuleType
from typing import Any

import pytest


class Item:
    """A weak-referenceable payload that remembers where it came from."""

    def __init__(self, label: Any = None) -> None:
        self.label = label


def _drain(buffer: Any) -> list[tuple[Any, Any]]:
    return [buffer.pop() for _ in range(len(buffer))]


def _labels(pairs: list[tuple[Any, Any]]) -> list[Any]:
    return [item for _, item in pairs]


# --- order ------------------------------------------------------------------------


def test_pops_in_timestamp_order(core: ModuleType) -> None:
    buffer = core.PriorityBuffer()
    fields = [(3, 0, 0), (1, 5, 0), (1, 0, 9), (2, 0, 0), (1, 0, 1), (0, 0xFFFF, 2**64 - 1)]
    for f in fields:
        buffer.push(core.Timestamp(*f), f)
    popped = _drain(buffer)
    assert _labels(popped) == sorted(fields)
    assert all(ts == core.Timestamp(*f) for ts, f in popped)


def test_equal_keys_pop_in_insertion_order(core: ModuleType) -> None:
    buffer = core.PriorityBuffer()
    key, later = core.Timestamp(5, 1, 7), core.Timestamp(6)
    for label in range(20):  # interleaved with other keys so the heap reorders around them
        buffer.push(key, label)
        buffer.push(later, -label)
    assert _labels(_drain(buffer)) == list(range(20)) + [-n for n in range(20)]


def test_node_breaks_ties_between_equal_physical_and_logical(core: ModuleType) -> None:
    buffer = core.PriorityBuffer()
    for node in (9, 2, 2**64 - 1, 0, 5):
        buffer.push(core.Timestamp(5, 1, node), node)
    assert _labels(_drain(buffer)) == [0, 2, 5, 9, 2**64 - 1]


def test_peek_returns_the_minimum_without_removing_it(core: ModuleType) -> None:
    buffer = core.PriorityBuffer()
    buffer.push(core.Timestamp(2), "b")
    buffer.push(core.Timestamp(1), "a")
    assert buffer.peek() == (core.Timestamp(1), "a")
    assert buffer.peek() == (core.Timestamp(1), "a")
    assert len(buffer) == 2
    assert buffer.pop() == (core.Timestamp(1), "a")
    assert buffer.peek() == (core.Timestamp(2), "b")


def test_many_random_entries_pop_sorted_and_stable(core: ModuleType) -> None:
    rng = random.Random(20260101)
    buffer = core.PriorityBuffer()
    entries = []
    for seq in range(10_000):
        # Narrow ranges, so that many keys collide and stability is exercised.
        fields = (rng.randrange(200), rng.randrange(3), rng.randrange(3))
        entries.append((fields, seq))
        buffer.push(core.Timestamp(*fields), seq)
    popped = _drain(buffer)
    assert [((t.physical, t.logical, t.node), s) for t, s in popped] == sorted(entries)
    assert not buffer


def test_interleaved_pushes_and_pops_match_heapq(core: ModuleType) -> None:
    rng = random.Random(7)
    buffer, reference = core.PriorityBuffer(), []
    for seq in range(5_000):
        if rng.random() < 0.6 or not reference:
            fields = (rng.randrange(50), rng.randrange(2), 0)
            buffer.push(core.Timestamp(*fields), seq)
            heapq.heappush(reference, (fields, seq))
        else:
            fields, expected = heapq.heappop(reference)
            ts, item = buffer.pop()
            assert ((ts.physical, ts.logical, ts.node), item) == (fields, expected)
        assert len(buffer) == len(reference)


# --- pop_until ----------------------------------------------------------------------


def test_pop_until_is_inclusive_and_ordered(core: ModuleType) -> None:
    buffer = core.PriorityBuffer()
    fields = [(7, 0, 0), (5, 0, 4), (5, 0, 3), (3, 1, 0), (5, 0, 3), (4, 0xFFFF, 2**64 - 1)]
    for seq, f in enumerate(fields):
        buffer.push(core.Timestamp(*f), seq)
    released = buffer.pop_until(core.Timestamp(5, 0, 3))
    assert type(released) is list
    assert [(t.physical, t.logical, t.node) for t, _ in released] == [
        (3, 1, 0), (4, 0xFFFF, 2**64 - 1), (5, 0, 3), (5, 0, 3)]
    assert _labels(released) == [3, 5, 2, 4]  # equal keys keep insertion order
    assert _labels(_drain(buffer)) == [1, 0]


def test_pop_until_below_everything_or_on_empty_returns_nothing(core: ModuleType) -> None:
    buffer = core.PriorityBuffer()
    assert buffer.pop_until(core.Timestamp(2**48 - 1, 0xFFFF, 2**64 - 1)) == []
    buffer.push(core.Timestamp(5), "x")
    assert buffer.pop_until(core.Timestamp(4, 0xFFFF, 2**64 - 1)) == []
    assert len(buffer) == 1


def test_pop_until_the_maximum_takes_everything(core: ModuleType) -> None:
    buffer = core.PriorityBuffer()
    for n in range(100):
        buffer.push(core.Timestamp(n % 10, 0, n), n)
    released = buffer.pop_until(core.Timestamp(2**48 - 1, 0xFFFF, 2**64 - 1))
    assert len(released) == 100 and not buffer
    assert [t for t, _ in released] == sorted(t for t, _ in released)


# --- size, clear, empty ---------------------------------------------------------------


def test_len_and_bool(core: ModuleType) -> None:
    buffer = core.PriorityBuffer()
    assert len(buffer) == 0 and not buffer
    buffer.push(core.Timestamp(1), None)
    buffer.push(core.Timestamp(1), None)
    assert len(buffer) == 2 and buffer
    buffer.pop()
    assert len(buffer) == 1
    assert repr(buffer) == "<PriorityBuffer of 1 entries>"


def test_clear_empties_and_the_buffer_stays_usable(core: ModuleType) -> None:
    buffer = core.PriorityBuffer()
    for n in range(50):
        buffer.push(core.Timestamp(n), n)
    buffer.clear()
    assert len(buffer) == 0 and not buffer
    buffer.clear()
    buffer.push(core.Timestamp(2), "b")
    buffer.push(core.Timestamp(1), "a")
    assert _labels(_drain(buffer)) == ["a", "b"]


def test_empty_pop_and_peek_raise_index_error(core: ModuleType) -> None:
    buffer = core.PriorityBuffer()
    with pytest.raises(IndexError, match="^pop from an empty PriorityBuffer$"):
        buffer.pop()
    with pytest.raises(IndexError, match="^peek at an empty PriorityBuffer$"):
        buffer.peek()
    buffer.push(core.Timestamp(1), None)
    buffer.pop()
    with pytest.raises(IndexError):
        buffer.pop()


@pytest.mark.parametrize(
    "bad", [None, 5, (1, 0, 0), "2026-12-03T12:00:00.000Z-0001-00000000000000FF"], ids=repr
)
def test_bad_keys_raise_type_error_and_change_nothing(core: ModuleType, bad: Any) -> None:
    buffer = core.PriorityBuffer()
    buffer.push(core.Timestamp(3), "kept")
    with pytest.raises(TypeError, match="^ts must be a Timestamp, not "):
        buffer.push(bad, "lost")
    with pytest.raises(TypeError, match="^ts must be a Timestamp, not "):
        buffer.pop_until(bad)
    assert len(buffer) == 1
    assert buffer.peek() == (core.Timestamp(3), "kept")


def test_any_object_is_an_item(core: ModuleType) -> None:
    buffer = core.PriorityBuffer()
    shared = Item()
    for item in (None, shared, shared, 1.5, buffer):
        buffer.push(core.Timestamp(1), item)
    assert _labels(_drain(buffer)) == [None, shared, shared, 1.5, buffer]


# --- reference ownership: every reference taken is given back exactly once ------------


def _pushed(core: ModuleType, buffer: Any, count: int) -> list[weakref.ref[Item]]:
    refs = []
    for n in range(count):
        item = Item(n)
        buffer.push(core.Timestamp(n % 7, 0, n), item)
        refs.append(weakref.ref(item))
    return refs


def _alive(refs: list[weakref.ref[Item]]) -> int:
    return sum(ref() is not None for ref in refs)


def test_pop_releases_items(core: ModuleType) -> None:
    buffer = core.PriorityBuffer()
    refs = _pushed(core, buffer, 40)
    assert _alive(refs) == 40
    for _ in range(30):
        buffer.pop()
    assert _alive(refs) == 10
    assert len(buffer.pop_until(core.Timestamp(2**48 - 1))) == 10
    assert _alive(refs) == 0


def test_clear_releases_items(core: ModuleType) -> None:
    buffer = core.PriorityBuffer()
    refs = _pushed(core, buffer, 40)
    buffer.clear()
    assert _alive(refs) == 0


def test_dropping_the_buffer_releases_items(core: ModuleType) -> None:
    buffer = core.PriorityBuffer()
    refs = _pushed(core, buffer, 40)
    del buffer
    assert _alive(refs) == 0


def test_reference_cycle_through_an_item_is_collected(core: ModuleType) -> None:
    # A subscriber's item may refer back to the buffer that holds it; the
    # garbage collector must see the buffer's items to break such a cycle.
    buffer = core.PriorityBuffer()
    item = Item(buffer)
    buffer.push(core.Timestamp(1), item)
    ref = weakref.ref(item)
    del buffer, item
    gc.collect()
    assert ref() is None


def test_refcounts_balance(core: ModuleType) -> None:
    # A missing decref leaks (caught by the weakref tests); an extra decref
    # frees an object still in use, which only an exact count shows early.
    buffer = core.PriorityBuffer()
    item, key = Item(), core.Timestamp(1)
    base_item, base_key = sys.getrefcount(item), sys.getrefcount(key)
    buffer.push(key, item)
    assert sys.getrefcount(item) > base_item
    buffer.peek()
    buffer.pop()
    for _ in range(3):
        buffer.push(key, item)
    buffer.pop_until(key)
    buffer.push(key, item)
    buffer.clear()
    assert (sys.getrefcount(item), sys.getrefcount(key)) == (base_item, base_key)


def test_popped_pair_outlives_the_buffer(core: ModuleType) -> None:
    buffer = core.PriorityBuffer()
    buffer.push(core.Timestamp(1, 2, 3), Item("payload"))
    ts, item = buffer.pop()
    del buffer
    gc.collect()
    assert (ts, item.label) == (core.Timestamp(1, 2, 3), "payload")


class _Reentrant:
    """An item whose finalizer uses the buffer that is releasing it."""

    def __init__(self, buffer: Any, key: Any) -> None:
        self.buffer, self.key = buffer, key

    def __del__(self) -> None:
        self.buffer.push(self.key, "pushed by a finalizer")


def test_finalizer_may_use_the_buffer_during_clear(core: ModuleType) -> None:
    buffer = core.PriorityBuffer()
    key = core.Timestamp(9)
    buffer.push(key, _Reentrant(buffer, key))
    done = threading.Event()

    def clear() -> None:
        buffer.clear()
        done.set()

    # In a thread, so that a deadlock fails the test instead of hanging the suite.
    worker = threading.Thread(target=clear, daemon=True)
    worker.start()
    assert done.wait(10), "clear() deadlocked on a finalizer that pushes"
    worker.join()
    assert buffer.pop() == (key, "pushed by a finalizer")


# --- threads -----------------------------------------------------------------------------


def _run_together(count: int, work: Any) -> None:
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            work(index)
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def test_concurrent_pushes_and_pops_lose_nothing(core: ModuleType) -> None:
    buffer = core.PriorityBuffer()
    per_thread = 5_000
    popped: list[list[Any]] = [[] for _ in range(4)]

    def work(index: int) -> None:
        for n in range(per_thread):
            buffer.push(core.Timestamp(n, 0, index), (index, n))
            if n % 2:
                popped[index].append(buffer.pop()[1])

    _run_together(4, work)
    rest = _labels(_drain(buffer))
    everything = [label for labels in popped for label in labels] + rest
    assert sorted(everything) == sorted((i, n) for i in range(4) for n in range(per_thread))
