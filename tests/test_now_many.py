"""HLC.now_many: a batch of packed words equal to n calls of now(), on both cores."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hlcbus.errors import ClockOverflowError

np = pytest.importorskip("numpy", reason="numpy is not installed (it is in the test extra)")

MAX_PHYSICAL = 2**48 - 1
MAX_LOGICAL = 0xFFFF
T0 = 1_700_000_000_000  # an arbitrary wall reading, in ms


def _state(clock: Any) -> tuple[Any, ...]:
    """Everything a failed call must leave unchanged."""
    return clock.last, clock.backward_jumps, clock.forward_jumps


def _outcome(call: Any) -> Any:
    """The result of ``call()``, or its ClockOverflowError's message."""
    try:
        return call()
    except ClockOverflowError as exc:
        return str(exc)


def _clock(core: ModuleType, wall_ms: int, physical: int, logical: int, overflow: str) -> Any:
    """A clock on a ManualClock at ``wall_ms`` whose last word is (physical, logical) or later."""
    clock = core.HLC(7, wall=core.ManualClock(wall_ms), max_drift_ms=None, overflow=overflow)
    if (physical, logical) > (0, 0):
        # update() issues remote + 1; a remote one below keeps a full counter reachable.
        below = (physical << 16 | logical) - 1
        clock.update(core.Timestamp.from_packed(below, 2))
    return clock


def test_returns_increasing_uint64_words_of_this_clock(core: ModuleType) -> None:
    clock = _clock(core, T0, 0, 0, "carry")
    words = clock.now_many(5)
    assert words.dtype == np.uint64 and words.shape == (5,)
    assert words.tolist() == [T0 << 16 | i for i in range(5)]
    assert clock.last == core.Timestamp(T0, 4, 7)
    assert clock.now() == core.Timestamp(T0, 5, 7)


def test_zero_returns_empty_and_changes_nothing(core: ModuleType) -> None:
    clock = _clock(core, T0, T0, 3, "raise")
    before = _state(clock)
    words = clock.now_many(0)
    assert words.dtype == np.uint64 and words.shape == (0,)
    assert _state(clock) == before


def test_carries_into_the_next_millisecond(core: ModuleType) -> None:
    clock = _clock(core, T0, T0, MAX_LOGICAL - 1, "carry")
    words = clock.now_many(3).tolist()
    assert words == [T0 << 16 | MAX_LOGICAL, (T0 + 1) << 16, (T0 + 1) << 16 | 1]


@pytest.mark.parametrize(("logical", "n"), [(MAX_LOGICAL, 1), (MAX_LOGICAL - 2, 3), (0, 65536)])
def test_full_counter_raises_when_asked_and_changes_nothing(
        core: ModuleType, logical: int, n: int) -> None:
    clock = _clock(core, T0, T0, logical, "raise")
    if logical == 0:  # a fresh millisecond: its 65536 words fit, one more does not
        clock = _clock(core, T0, 0, 0, "raise")
        assert clock.now_many(n).tolist()[-1] == T0 << 16 | MAX_LOGICAL
        clock = _clock(core, T0 + 1, 0, 0, "raise")
        n += 1
    before = _state(clock)
    with pytest.raises(ClockOverflowError, match="counter is full"):
        clock.now_many(n)
    assert _state(clock) == before


@pytest.mark.parametrize("overflow", ["carry", "raise"])
def test_end_of_48_bit_range_raises(core: ModuleType, overflow: str) -> None:
    clock = _clock(core, MAX_PHYSICAL, MAX_PHYSICAL, MAX_LOGICAL - 2, overflow)
    before = _state(clock)
    with pytest.raises(ClockOverflowError, match="48-bit range"):
        clock.now_many(3)
    assert _state(clock) == before
    assert clock.now_many(2).tolist()[-1] == 2**64 - 1
    with pytest.raises(ClockOverflowError, match="48-bit range"):
        clock.now_many(1)


@pytest.mark.parametrize(("n", "error", "message"), [
    (-1, ValueError, "n must be >= 0, got -1"),
    (1.0, TypeError, "n must be an int, not float"),
    (True, TypeError, "n must be an int, not bool"),
    ("3", TypeError, "n must be an int, not str"),
    (None, TypeError, "n must be an int, not NoneType"),
])
def test_bad_n(core: ModuleType, n: Any, error: type[Exception], message: str) -> None:
    clock = _clock(core, T0, 0, 0, "carry")
    before = _state(clock)
    with pytest.raises(error, match=message):
        clock.now_many(n)
    assert _state(clock) == before


def test_accepts_an_index(core: ModuleType) -> None:
    clock = _clock(core, T0, 0, 0, "carry")
    assert clock.now_many(np.int64(2)).tolist() == [T0 << 16, T0 << 16 | 1]


@given(
    wall_ms=st.sampled_from([0, 1, T0, MAX_PHYSICAL - 1, MAX_PHYSICAL]),
    physical=st.sampled_from([0, 1, T0 - 1, T0, T0 + 1, MAX_PHYSICAL - 1, MAX_PHYSICAL]),
    logical=st.sampled_from([0, 1, 2, MAX_LOGICAL - 2, MAX_LOGICAL - 1, MAX_LOGICAL]),
    n=st.integers(0, 5),
    overflow=st.sampled_from(["carry", "raise"]),
)
def test_equals_now_repeated(core: ModuleType, wall_ms: int, physical: int, logical: int,
                             n: int, overflow: str) -> None:
    try:
        batch, single = (_clock(core, wall_ms, physical, logical, overflow) for _ in range(2))
    except ClockOverflowError:
        return  # a state update() itself refuses under overflow="raise"
    expected: list[int] = []
    try:
        for _ in range(n):
            expected.append(single.now().packed)
    except ClockOverflowError as exc:
        before = _state(batch)
        with pytest.raises(ClockOverflowError, match=str(exc)):
            batch.now_many(n)
        assert _state(batch) == before
        return
    assert batch.now_many(n).tolist() == expected
    assert batch.last == single.last
    assert _outcome(batch.now) == _outcome(single.now)


def test_interleaves_with_now(core: ModuleType) -> None:
    clock = _clock(core, T0, 0, 0, "carry")
    seen = [clock.now().packed]
    for n in (1, 100, 0, 70_000):
        seen.extend(clock.now_many(n).tolist())
        seen.append(clock.now().packed)
    assert all(a < b for a, b in zip(seen, seen[1:]))


def test_a_million_is_one_step(core: ModuleType) -> None:
    clock = _clock(core, T0, 0, 0, "carry")
    words = clock.now_many(1_000_000)
    assert int(words[0]) == T0 << 16 and bool(np.all(np.diff(words) == 1))
    assert clock.last.packed == int(words[-1])
