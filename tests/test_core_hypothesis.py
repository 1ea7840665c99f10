"""Properties of both cores, and a differential test of the compiled core against the pure one."""

from __future__ import annotations

import heapq
import itertools
from datetime import datetime, timedelta, timezone
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hlcbus._core_py
from hlcbus.errors import ClockOverflowError

MAX_PHYSICAL = 2**48 - 1
TEXT_PHYSICAL_LIMIT = 253_402_300_800_000  # 10000-01-01T00:00:00Z
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Far enough below the end of the 48-bit range that no test sequence can exhaust it.
SAFE_PHYSICAL = MAX_PHYSICAL - 10**6

physicals = st.integers(0, MAX_PHYSICAL)
logicals = st.integers(0, 0xFFFF)
nodes = st.integers(0, 2**64 - 1)
fields = st.tuples(physicals, logicals, nodes)
# Few distinct values per field, so that equal keys and equal prefixes are common.
crowded_fields = st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(0, 2))
some_fields = st.one_of(fields, crowded_fields)


def _key(ts: Any) -> tuple[int, int, int]:
    return ts.physical, ts.logical, ts.node


# --- the clock ------------------------------------------------------------------------

wall_moves = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.integers(0, SAFE_PHYSICAL)),
        st.tuples(st.just("advance"), st.integers(-5_000, 5_000)),
        st.tuples(st.just("now")),
        st.tuples(st.just("update"), st.integers(-5_000, 5_000), logicals, nodes),
    ),
    max_size=60,
)


@given(start=st.integers(0, SAFE_PHYSICAL), moves=wall_moves,
       overflow=st.sampled_from(["carry", "raise"]))
def test_clock_is_monotonic_whatever_the_wall_does(
    core: ModuleType, start: int, moves: list[tuple[Any, ...]], overflow: str
) -> None:
    wall = core.ManualClock(start)
    clock = core.HLC(1, wall=wall, max_drift_ms=None, overflow=overflow)
    issued = [clock.last]
    for move in moves:
        if move[0] == "set":
            wall.set(move[1])
        elif move[0] == "advance":
            wall.advance(min(max(wall() + move[1], 0), SAFE_PHYSICAL) - wall())
        else:
            result = _tick(core, clock, wall, move)
            if result is not None:
                assert result.physical >= wall()  # never behind the wall clock
                issued.append(result)
    assert all(a < b for a, b in itertools.pairwise(issued))
    assert clock.last == issued[-1]


def _tick(core: ModuleType, clock: Any, wall: Any, move: tuple[Any, ...]) -> Any:
    """Run a now or update move; None when overflow='raise' refused it."""
    before = clock.last
    try:
        if move[0] == "now":
            return clock.now()
        physical = min(max(wall() + move[1], 0), SAFE_PHYSICAL)
        remote = core.Timestamp(physical, move[2], move[3])
        result = clock.update(remote)
        assert result > remote
        return result
    except ClockOverflowError:
        assert clock.overflow == "raise" and clock.last == before
        return None


@given(remotes=st.lists(fields, min_size=1, max_size=40), wall_ms=physicals)
def test_update_is_above_the_remote_and_everything_before(
    core: ModuleType, remotes: list[tuple[int, int, int]], wall_ms: int
) -> None:
    clock = core.HLC(1, wall=core.ManualClock(wall_ms), max_drift_ms=None)
    previous = clock.last
    for remote_fields in remotes:
        remote = core.Timestamp(*remote_fields)
        try:
            result = clock.update(remote)
        except ClockOverflowError:
            # Only the very end of the 48-bit range can refuse under overflow='carry'.
            assert max(previous.packed, remote.packed) == 2**64 - 1
            continue
        assert result > remote and result > previous
        assert result.physical >= wall_ms
        previous = result


# --- encodings ---------------------------------------------------------------------------


@given(a=some_fields, b=some_fields)
def test_bytes_sort_like_timestamps_and_round_trip(
    core: ModuleType, a: tuple[int, int, int], b: tuple[int, int, int]
) -> None:
    x, y = core.Timestamp(*a), core.Timestamp(*b)
    assert (x.to_bytes() < y.to_bytes()) == (x < y) == (a < b)
    assert (x.to_bytes() == y.to_bytes()) == (x == y)
    assert core.Timestamp.from_bytes(x.to_bytes()) == x
    assert core.Timestamp.from_bytes(bytearray(y.to_bytes())) == y
    assert core.Timestamp.from_packed(x.packed, x.node) == x


text_fields = st.tuples(st.integers(0, TEXT_PHYSICAL_LIMIT - 1), logicals, nodes)


@given(a=st.one_of(text_fields, crowded_fields), b=st.one_of(text_fields, crowded_fields))
def test_text_sorts_like_timestamps_and_round_trips(
    core: ModuleType, a: tuple[int, int, int], b: tuple[int, int, int]
) -> None:
    x, y = core.Timestamp(*a), core.Timestamp(*b)
    assert (str(x) < str(y)) == (x < y)
    assert core.Timestamp.parse(str(x)) == x
    assert len(str(x)) == 46


@given(ts_fields=text_fields)
def test_text_and_datetime_agree_with_the_standard_library(
    core: ModuleType, ts_fields: tuple[int, int, int]
) -> None:
    ts = core.Timestamp(*ts_fields)
    moment = EPOCH + timedelta(milliseconds=ts.physical)
    assert ts.to_datetime() == moment
    expected = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    assert str(ts) == f"{expected}-{ts.logical:04X}-{ts.node:016X}"


# --- the heap -----------------------------------------------------------------------------

heap_ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), crowded_fields),
        st.tuples(st.just("pop")),
        st.tuples(st.just("peek")),
        st.tuples(st.just("pop_until"), crowded_fields),
        st.tuples(st.just("clear")),
    ),
    max_size=80,
)


@given(ops=heap_ops)
def test_heap_matches_a_sorted_reference(core: ModuleType, ops: list[tuple[Any, ...]]) -> None:
    buffer = core.PriorityBuffer()
    reference: list[tuple[tuple[int, int, int], int]] = []  # a heapq of (key, seq)
    for seq, op in enumerate(ops):
        _apply_heap_op(core, buffer, reference, seq, op)
        assert len(buffer) == len(reference)
        assert bool(buffer) == bool(reference)


def _apply_heap_op(core: ModuleType, buffer: Any, reference: list[Any], seq: int,
                   op: tuple[Any, ...]) -> None:
    name = op[0]
    if name == "push":
        buffer.push(core.Timestamp(*op[1]), seq)
        heapq.heappush(reference, (op[1], seq))
    elif name == "clear":
        buffer.clear()
        reference.clear()
    elif not reference and name in ("pop", "peek"):
        with pytest.raises(IndexError):
            getattr(buffer, name)()
    elif name == "pop":
        ts, item = buffer.pop()
        assert (_key(ts), item) == heapq.heappop(reference)
    elif name == "peek":
        ts, item = buffer.peek()
        assert (_key(ts), item) == reference[0]
    else:
        expected = []
        while reference and reference[0][0] <= op[1]:
            expected.append(heapq.heappop(reference))
        released = buffer.pop_until(core.Timestamp(*op[1]))
        assert [(_key(ts), item) for ts, item in released] == expected


# --- differential: the compiled core must do exactly what the pure one does -------------------


class _Index:
    """An integer-like argument, accepted through __index__."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"_Index({self.value})"


class _BadIndex:
    def __index__(self) -> Any:
        return "not an int"  # noqa: PLE0305 -- the bad input under test

    def __repr__(self) -> str:
        return "_BadIndex()"


class _ScriptedWall:
    """A Python wall callable whose reading the operation sequence sets."""

    def __init__(self) -> None:
        self.reading: Any = 1_700_000_000_000

    def __call__(self) -> Any:
        return self.reading


def _either(*strategies: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Pick one of ``strategies`` with equal odds.

    st.one_of flattens nested one_ofs into a single list of branches, so a
    branch made of many alternatives (like any_value) would crowd out the others.
    """
    return st.sampled_from(strategies).flatmap(lambda strategy: strategy)


edge_ints = st.sampled_from([0, 1, -1, 0xFFFF, 2**16, MAX_PHYSICAL, 2**48, 2**64 - 1, 2**64,
                             TEXT_PHYSICAL_LIMIT - 1, TEXT_PHYSICAL_LIMIT, 1_700_000_000_000])
any_int = _either(edge_ints, st.integers(-10, 70_000), st.integers(-(2**70), 2**70))
# Anything a caller might pass where an int is expected.
any_value = _either(
    any_int, any_int.map(_Index), st.just(_BadIndex()), st.floats(), st.none(), st.booleans(),
    st.text(max_size=3), st.binary(max_size=3),
)
full_logicals = _either(logicals, st.sampled_from([0xFFFE, 0xFFFF]))
# Remote physical minus the wall reading: both sides of the default 60 s drift limit.
near_deltas = _either(
    st.integers(-2_000, 70_000), st.sampled_from([-1, 0, 1, 59_999, 60_000, 60_001]))

# A timestamp for update/push/pop_until: valid fields, one near the wall (around
# the drift limit), the clock's last, one with a full counter, or a non-Timestamp.
ts_specs = _either(
    st.tuples(st.just("fields"), fields),
    st.tuples(st.just("near"), near_deltas, full_logicals, nodes),
    st.tuples(st.just("last")),
    st.tuples(st.just("full"), st.sampled_from([0xFFFE, 0xFFFF])),
    st.tuples(st.just("raw"), any_value),
)

VALID_TEXT = "2026-12-03T12:00:00.000Z-0001-00000000000000FF"
valid_text = _either(
    st.just(VALID_TEXT), text_fields.map(lambda f: str(hlcbus._core_py.Timestamp(*f))))
# One character replaced: the length stays right, so parsing gets past the length check.
mutated_text = st.builds(
    lambda base, position, new: base[:position] + new + base[position + 1:],
    valid_text,
    st.sampled_from(range(46)),
    st.sampled_from("0123456789ABCDEFabcdef-:.TZ +é٣"),
)
texts = _either(valid_text, mutated_text, mutated_text, st.text(max_size=50), any_value)
byte_strings = _either(st.binary(min_size=16, max_size=16), st.binary(max_size=20))

differential_ops = st.lists(
    _either(
        st.tuples(st.just("hlc"), nodes, st.just("manual"),
                  _either(st.none(), st.integers(0, 100_000)), st.sampled_from(["carry", "raise"])),
        # node=None draws a random id, which would differ between the two runs.
        st.tuples(st.just("hlc"), _either(nodes, any_value.filter(lambda v: v is not None)),
                  st.sampled_from(["manual", "scripted", "number"]),
                  _either(st.none(), st.integers(0, 100_000), any_value),
                  st.sampled_from(["carry", "raise", "wrap", None])),
        st.tuples(st.just("manual"), _either(physicals, any_value)),
        st.tuples(st.just("set"), _either(physicals, any_value)),
        st.tuples(st.just("advance"), _either(st.integers(-3_000, 3_000), any_value)),
        st.tuples(st.just("script"), _either(st.integers(0, 2**48 + 5), any_value)),
        st.tuples(st.just("now")),
        st.tuples(st.just("update"), ts_specs),
        st.tuples(st.just("update"), ts_specs),
        st.tuples(st.just("wall_ms")),
        st.tuples(st.just("timestamp"), any_value, any_value, any_value),
        st.tuples(st.just("from_packed"), any_value, any_value),
        st.tuples(st.just("inspect"), fields),
        st.tuples(st.just("parse"), texts),
        st.tuples(st.just("from_bytes"), st.sampled_from([bytes, bytearray, memoryview]),
                  byte_strings),
        st.tuples(st.just("push"), ts_specs, st.integers()),
        st.tuples(st.just("push"), ts_specs, st.integers()),
        st.tuples(st.just("pop")),
        st.tuples(st.just("peek")),
        st.tuples(st.just("pop_until"), ts_specs),
        st.tuples(st.just("clear")),
    ),
    max_size=40,
)


class _Session:
    """Runs an operation sequence against one core and records what each step returned."""

    def __init__(self, core: ModuleType, overflow: str) -> None:
        self.core = core
        self.manual = core.ManualClock(1_700_000_000_000)
        self.scripted = _ScriptedWall()
        self.clock = core.HLC(7, wall=self.manual, overflow=overflow)
        self.buffer = core.PriorityBuffer()

    def run(self, ops: list[tuple[Any, ...]]) -> list[Any]:
        log = []
        for op in ops:
            try:
                result = getattr(self, "op_" + op[0])(*op[1:])
            except Exception as exc:  # noqa: BLE001 -- the error is the result to compare
                result = exc
            # forward_jumps is left out: it compares wall progress with the
            # monotonic clock, which advances differently in the two runs.
            log.append((op[0], _normal(result), _normal(self.clock.last),
                        self.clock.backward_jumps, len(self.buffer)))
        return log

    def _timestamp(self, spec: tuple[Any, ...]) -> Any:
        kind = spec[0]
        if kind == "fields":
            return self.core.Timestamp(*spec[1])
        if kind == "near":
            physical = min(max(self.manual() + spec[1], 0), MAX_PHYSICAL)
            return self.core.Timestamp(physical, spec[2], spec[3])
        if kind == "last":
            return self.clock.last
        if kind == "full":  # the counter at or next to its end, where overflow policies differ
            return self.core.Timestamp(max(self.manual(), self.clock.last.physical), spec[1], 3)
        return spec[1]

    def op_hlc(self, node: Any, wall_kind: str, max_drift_ms: Any, overflow: Any) -> Any:
        wall = {"manual": self.manual, "scripted": self.scripted, "number": 5}[wall_kind]
        self.clock = self.core.HLC(node, wall=wall, max_drift_ms=max_drift_ms, overflow=overflow)
        return (repr(self.clock), self.clock.node, self.clock.max_drift_ms, self.clock.overflow)

    def op_manual(self, start: Any) -> Any:
        self.manual = self.core.ManualClock(start)
        return repr(self.manual)

    def op_set(self, ms: Any) -> Any:
        return self.manual.set(ms), self.manual()

    def op_advance(self, delta: Any) -> Any:
        return self.manual.advance(delta), self.manual()

    def op_script(self, reading: Any) -> None:
        self.scripted.reading = reading

    def op_now(self) -> Any:
        return self.clock.now()

    def op_update(self, spec: tuple[Any, ...]) -> Any:
        return self.clock.update(self._timestamp(spec))

    def op_wall_ms(self) -> Any:
        return self.clock.wall_ms()

    def op_timestamp(self, physical: Any, logical: Any, node: Any) -> Any:
        return self.core.Timestamp(physical, logical, node)

    def op_from_packed(self, packed: Any, node: Any) -> Any:
        return self.core.Timestamp.from_packed(packed, node)

    def op_inspect(self, ts_fields: tuple[int, int, int]) -> Any:
        ts = self.core.Timestamp(*ts_fields)
        return (ts.packed, hash(ts), ts.to_bytes(), _attempt(str, ts), _attempt(ts.to_datetime))

    def op_parse(self, text: Any) -> Any:
        return self.core.Timestamp.parse(text)

    def op_from_bytes(self, wrap: Any, data: bytes) -> Any:
        return self.core.Timestamp.from_bytes(wrap(data))

    def op_push(self, spec: tuple[Any, ...], item: int) -> Any:
        return self.buffer.push(self._timestamp(spec), item)

    def op_pop(self) -> Any:
        return self.buffer.pop()

    def op_peek(self) -> Any:
        return self.buffer.peek()

    def op_pop_until(self, spec: tuple[Any, ...]) -> Any:
        return self.buffer.pop_until(self._timestamp(spec))

    def op_clear(self) -> Any:
        return self.buffer.clear(), repr(self.buffer)


def _attempt(function: Any, *args: Any) -> Any:
    try:
        return function(*args)
    except Exception as exc:  # noqa: BLE001 -- the error is the result to compare
        return exc


def _normal(value: Any) -> Any:
    """A core-independent description: Timestamps by repr, errors by type name and message."""
    if isinstance(value, BaseException):
        return ("raised", type(value).__name__, str(value))
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, *map(_normal, value))
    if type(value).__name__ == "Timestamp":
        return ("Timestamp", repr(value))
    return (type(value).__name__, repr(value))


@pytest.mark.compiled
@settings(max_examples=200)
@given(overflow=st.sampled_from(["carry", "raise"]), ops=differential_ops)
def test_compiled_core_behaves_exactly_like_the_pure_core(
    compiled: ModuleType, overflow: str, ops: list[tuple[Any, ...]]
) -> None:
    expected = _Session(hlcbus._core_py, overflow).run(ops)
    actual = _Session(compiled, overflow).run(ops)
    for step, (want, got) in enumerate(zip(expected, actual)):
        assert got == want, f"step {step}: {ops[step]!r}"
    assert len(actual) == len(expected)
