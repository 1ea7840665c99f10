"""ReorderBuffer: the ordered-delivery state of one subscription, in both cores."""

from __future__ import annotations

import collections
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import hlcbus._core_py as pure


def events(core: ModuleType, keys: list[tuple[int, int, int]]) -> collections.deque[Any]:
    return collections.deque(core.Event("t", n, core.Timestamp(*key)) for n, key in enumerate(keys))


def keys_of(released: list[Any]) -> list[tuple[int, int, int]]:
    return [(e.timestamp.physical, e.timestamp.logical, e.timestamp.node) for e in released]


def test_absorb_then_release_in_order(core: ModuleType) -> None:
    buffer = core.ReorderBuffer()
    inbox = events(core, [(5, 0, 1), (3, 0, 1), (4, 0, 2), (4, 0, 1)])
    assert buffer.absorb(inbox, 4) == [] and not inbox
    assert len(buffer) == 4 and buffer.reordered == 3
    assert buffer.peek() == core.Timestamp(3, 0, 1)
    released = buffer.release(core.Timestamp(4, 0, 2))
    assert keys_of(released) == [(3, 0, 1), (4, 0, 1), (4, 0, 2)]
    assert buffer.last_released == core.Timestamp(4, 0, 2)
    assert keys_of(buffer.release_all()) == [(5, 0, 1)] and not buffer


def test_below_released_is_late_unless_released_before(core: ModuleType) -> None:
    buffer = core.ReorderBuffer()
    buffer.absorb(events(core, [(10, 0, 1), (20, 0, 1)]), 2)
    buffer.release_all()
    again = events(core, [(10, 0, 1), (15, 0, 1), (20, 0, 1), (21, 0, 1)])
    late = buffer.absorb(again, 4)
    assert keys_of(late) == [(15, 0, 1)]  # (10,0,1) and (20,0,1) were released: duplicates
    assert buffer.duplicates == 2 and len(buffer) == 1


def test_a_key_buffered_twice_is_released_once(core: ModuleType) -> None:
    buffer = core.ReorderBuffer()
    first = core.Event("t", "first", core.Timestamp(7, 1, 3))
    second = core.Event("t", "second", core.Timestamp(7, 1, 3))
    buffer.absorb(collections.deque([first, second]), 2)
    released = buffer.release_all()
    assert [e.data for e in released] == ["first"] and buffer.duplicates == 1


def test_expire_forgets_released_keys(core: ModuleType) -> None:
    buffer = core.ReorderBuffer()
    buffer.absorb(events(core, [(10, 0, 1)]), 1)
    buffer.release_all()
    buffer.expire(11)
    # Forgotten, so a repeat can no longer be told from a late event.
    assert keys_of(buffer.absorb(events(core, [(10, 0, 1)]), 1)) == [(10, 0, 1)]
    buffer.expire(2**60)  # beyond the 48-bit range: forgets everything, no overflow
    buffer.expire(-5)


def test_evict_and_clear(core: ModuleType) -> None:
    buffer = core.ReorderBuffer()
    buffer.absorb(events(core, [(3, 0, 0), (1, 0, 0), (2, 0, 0)]), 3)
    assert buffer.evict(2) == 2 and buffer.peek() == core.Timestamp(3, 0, 0)
    assert buffer.evict(5) == 1 and buffer.peek() is None
    buffer.absorb(events(core, [(4, 0, 0), (5, 0, 0)]), 2)
    assert buffer.clear() == 2 and len(buffer) == 0 and not buffer


def test_absorb_rejects_non_events(core: ModuleType) -> None:
    buffer = core.ReorderBuffer()
    with pytest.raises(TypeError, match="absorb takes Events"):
        buffer.absorb(collections.deque([object()]), 1)
    with pytest.raises(TypeError, match="bound must be a Timestamp"):
        buffer.release(5)


# One operation: ("absorb", keys) | ("release", key) | ("expire", physical) | ("evict", n)
KEY = st.tuples(st.integers(0, 40), st.integers(0, 2), st.integers(0, 2))
OPS = st.lists(st.one_of(
    st.tuples(st.just("absorb"), st.lists(KEY, max_size=8)),
    st.tuples(st.just("release"), KEY),
    st.tuples(st.just("expire"), st.integers(-1, 45)),
    st.tuples(st.just("evict"), st.integers(0, 3)),
), max_size=30)


def run(core: ModuleType, ops: list[Any]) -> list[Any]:
    """Apply ``ops`` and record every observable result."""
    buffer, trace = core.ReorderBuffer(), []
    for op, arg in ops:
        if op == "absorb":
            trace.append(keys_of(buffer.absorb(events(core, arg), len(arg))))
        elif op == "release":
            trace.append(keys_of(buffer.release(core.Timestamp(*arg))))
        elif op == "expire":
            trace.append(buffer.expire(arg))
        else:
            trace.append(buffer.evict(arg))
        trace.append((len(buffer), buffer.reordered, buffer.duplicates,
                      repr(buffer.last_released), repr(buffer.peek())))
    return trace


@given(OPS)
def test_released_stream_is_strictly_increasing(ops: list[Any]) -> None:
    buffer, released = pure.ReorderBuffer(), []
    for op, arg in ops:
        if op == "absorb":
            buffer.absorb(events(pure, arg), len(arg))
        elif op == "release":
            released += keys_of(buffer.release(pure.Timestamp(*arg)))
    released += keys_of(buffer.release_all())
    assert all(a < b for a, b in zip(released, released[1:]))


@pytest.mark.compiled
@given(OPS)
def test_compiled_matches_pure(compiled: ModuleType, ops: list[Any]) -> None:
    assert run(compiled, ops) == run(pure, ops)
