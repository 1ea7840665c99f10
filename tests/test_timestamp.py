"""Timestamp: validation, immutability, order, hashing, pickling and both encodings."""

from __future__ import annotations

import copy
import itertools
import operator
import pickle
from datetime import datetime, timezone
from types import ModuleType
from typing import Any

import pytest

MAX_PHYSICAL = 2**48 - 1
MAX_LOGICAL = 2**16 - 1
MAX_NODE = 2**64 - 1
TEXT_PHYSICAL_LIMIT = 253_402_300_800_000  # 10000-01-01T00:00:00Z: the text form ends here
ARGUMENTS = ("physical", "logical", "node")
VALID = {"physical": 1, "logical": 2, "node": 3}
VALID_TEXT = "2024-02-28T12:34:56.789Z-0001-00000000000000FF"
FULLWIDTH_2024 = "\uff12\uff10\uff12\uff14"


def _ms(moment: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime, without float arithmetic."""
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _replace(text: str, position: int, new: str) -> str:
    return text[:position] + new + text[position + len(new):]


# --- construction and validation -----------------------------------------------


def test_fields_and_defaults(core: ModuleType) -> None:
    ts = core.Timestamp(1_700_000_000_000, 7, 42)
    assert (ts.physical, ts.logical, ts.node) == (1_700_000_000_000, 7, 42)
    assert core.Timestamp(5) == core.Timestamp(5, 0, 0)
    assert core.Timestamp(physical=5, logical=1, node=2) == core.Timestamp(5, 1, 2)


def test_range_bounds_are_inclusive(core: ModuleType) -> None:
    ts = core.Timestamp(MAX_PHYSICAL, MAX_LOGICAL, MAX_NODE)
    assert (ts.physical, ts.logical, ts.node) == (MAX_PHYSICAL, MAX_LOGICAL, MAX_NODE)
    zero = core.Timestamp(0, 0, 0)
    assert (zero.physical, zero.logical, zero.node) == (0, 0, 0)


@pytest.mark.parametrize("name", ARGUMENTS)
@pytest.mark.parametrize("bad", [1.0, "1", None, True, False, b"1"], ids=repr)
def test_wrong_type_raises_type_error(core: ModuleType, name: str, bad: Any) -> None:
    # bool is an int subclass, but Timestamp(True) is almost surely a bug.
    with pytest.raises(TypeError, match=f"^{name} must be an int, not {type(bad).__name__}$"):
        core.Timestamp(**{**VALID, name: bad})


@pytest.mark.parametrize(
    ("name", "bad"),
    [("physical", -1), ("physical", 2**48), ("physical", 2**200),
     ("logical", -1), ("logical", 2**16),
     ("node", -1), ("node", 2**64), ("node", -(2**64))],
)
def test_out_of_range_raises_value_error(core: ModuleType, name: str, bad: int) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be in \\[0, 2\\*\\*\\d+\\), got {bad}$"):
        core.Timestamp(**{**VALID, name: bad})


class _Index:
    """An integer-like object (as numpy scalars are): accepted through __index__."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


def test_index_protocol_is_accepted(core: ModuleType) -> None:
    assert core.Timestamp(_Index(5), _Index(6), _Index(7)) == core.Timestamp(5, 6, 7)
    with pytest.raises(ValueError, match="^logical must be in"):
        core.Timestamp(5, _Index(2**16))


# --- immutability --------------------------------------------------------------


@pytest.mark.parametrize("name", [*ARGUMENTS, "packed", "extra", "_packed", "_node"])
def test_attributes_cannot_be_set_or_deleted(core: ModuleType, name: str) -> None:
    ts = core.Timestamp(1, 2, 3)
    with pytest.raises(AttributeError):
        setattr(ts, name, 9)
    with pytest.raises(AttributeError):
        delattr(ts, name)
    assert (ts.physical, ts.logical, ts.node) == (1, 2, 3)


def test_subclassing_is_refused(core: ModuleType) -> None:
    # A subclass could override __eq__/__hash__ and break the heap and the bus.
    with pytest.raises(TypeError, match="not an acceptable base type"):
        type("Sub", (core.Timestamp,), {})


# --- order, equality, hashing ---------------------------------------------------

# Each field is tried at a low and a high value so that every pair of points
# differs in a chosen most-significant field.
_GRID = [(p, c, n) for p in (0, 7, MAX_PHYSICAL) for c in (0, 9, MAX_LOGICAL)
         for n in (0, 5, MAX_NODE)]
_OPERATORS = [operator.lt, operator.le, operator.eq, operator.ne, operator.gt, operator.ge]


@pytest.mark.parametrize("op", _OPERATORS, ids=lambda op: op.__name__)
def test_order_is_physical_then_logical_then_node(core: ModuleType, op: Any) -> None:
    for left, right in itertools.product(_GRID, repeat=2):
        assert op(core.Timestamp(*left), core.Timestamp(*right)) is op(left, right), (left, right)


def test_sorting_matches_tuple_order(core: ModuleType) -> None:
    # (1, 0, big) < (1, 1, 0): logical outranks node; (1, MAX, MAX) < (2, 0, 0).
    fields = [(2, 0, 0), (1, 1, 0), (1, 0, MAX_NODE), (1, MAX_LOGICAL, MAX_NODE), (1, 0, 0)]
    ordered = sorted(core.Timestamp(*f) for f in fields)
    assert [(t.physical, t.logical, t.node) for t in ordered] == sorted(fields)


@pytest.mark.parametrize("other", [1, (1, 2, 3), None, "x", 1.0], ids=repr)
def test_equality_with_other_types_is_false(core: ModuleType, other: Any) -> None:
    ts = core.Timestamp(1, 2, 3)
    assert (ts == other) is False
    assert (ts != other) is True
    assert (other == ts) is False


@pytest.mark.parametrize("other", [1, (1, 2, 3), None, "x"], ids=repr)
@pytest.mark.parametrize("op", [operator.lt, operator.le, operator.gt, operator.ge],
                         ids=lambda op: op.__name__)
def test_ordering_with_other_types_raises(core: ModuleType, other: Any, op: Any) -> None:
    ts = core.Timestamp(1, 2, 3)
    with pytest.raises(TypeError):
        op(ts, other)
    with pytest.raises(TypeError):
        op(other, ts)


def test_equal_timestamps_hash_equal(core: ModuleType) -> None:
    for fields in _GRID:
        assert hash(core.Timestamp(*fields)) == hash(core.Timestamp(*fields))
    # Distinct grid points must stay distinct as set members (equality backs hashing).
    assert len({core.Timestamp(*f) for f in _GRID + _GRID}) == len(_GRID)


def test_hash_spreads_neighbours(core: ModuleType) -> None:
    # Consecutive timestamps from one clock differ only in their low bits;
    # a hash that ignored a field would collide here.
    hashes = {hash(core.Timestamp(p, c, n)) for p in range(20) for c in range(20) for n in (0, 1)}
    assert len(hashes) == 800


# --- pickling -------------------------------------------------------------------


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip(core: ModuleType, protocol: int) -> None:
    ts = core.Timestamp(MAX_PHYSICAL, MAX_LOGICAL, MAX_NODE)
    clone = pickle.loads(pickle.dumps(ts, protocol))
    assert type(clone) is core.Timestamp
    assert clone == ts


def test_copy_returns_equal_timestamp(core: ModuleType) -> None:
    ts = core.Timestamp(1, 2, 3)
    assert copy.copy(ts) == ts
    assert copy.deepcopy(ts) == ts


# --- packed word ----------------------------------------------------------------


def test_packed_word(core: ModuleType) -> None:
    ts = core.Timestamp(0x123456789ABC, 0xDEF0, 7)
    assert ts.packed == 0x123456789ABCDEF0
    assert core.Timestamp.from_packed(ts.packed, 7) == ts
    assert core.Timestamp.from_packed(2**64 - 1) == core.Timestamp(MAX_PHYSICAL, MAX_LOGICAL, 0)


@pytest.mark.parametrize(
    ("packed", "node", "error", "message"),
    [(-1, 0, ValueError, "^packed must be in"), (2**64, 0, ValueError, "^packed must be in"),
     (1.0, 0, TypeError, "^packed must be an int"), (0, -1, ValueError, "^node must be in"),
     (0, None, TypeError, "^node must be an int")],
)
def test_from_packed_validates(
    core: ModuleType, packed: Any, node: Any, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        core.Timestamp.from_packed(packed, node)


# --- bytes ----------------------------------------------------------------------


def test_bytes_golden_vector_from_hlclock(core: ModuleType) -> None:
    # Elixir hlclock's HLClock.Timestamp.encode/1 test vector: 2014-09-14T00:00:00Z.
    ts = core.Timestamp(1410652800000, 0, 0)
    assert ts.to_bytes() == bytes([1, 72, 113, 117, 132] + [0] * 11)
    assert str(ts) == "2014-09-14T00:00:00.000Z-0000-0000000000000000"


def test_bytes_layout_is_big_endian_fields(core: ModuleType) -> None:
    ts = core.Timestamp(0x0102030405FF, 0x0708, 0x090A0B0C0D0E0F10)
    assert ts.to_bytes() == bytes.fromhex("0102030405FF" "0708" "090A0B0C0D0E0F10")


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=lambda w: w.__name__)
def test_from_bytes_accepts_bytes_like(core: ModuleType, wrap: Any) -> None:
    ts = core.Timestamp(MAX_PHYSICAL, 0x1234, MAX_NODE - 1)
    assert core.Timestamp.from_bytes(wrap(ts.to_bytes())) == ts


def test_from_bytes_accepts_a_slice_of_a_larger_buffer(core: ModuleType) -> None:
    ts = core.Timestamp(99, 1, 2)
    framed = b"\xff" * 3 + ts.to_bytes() + b"\xee"
    assert core.Timestamp.from_bytes(memoryview(framed)[3:19]) == ts


@pytest.mark.parametrize("size", [0, 1, 15, 17, 32])
@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=lambda w: w.__name__)
def test_from_bytes_wrong_length(core: ModuleType, size: int, wrap: Any) -> None:
    with pytest.raises(ValueError, match=f"^data must be 16 bytes, got {size}$"):
        core.Timestamp.from_bytes(wrap(bytes(size)))


@pytest.mark.parametrize("bad", ["0" * 16, list(range(16)), 0, None], ids=repr)
def test_from_bytes_wrong_type(core: ModuleType, bad: Any) -> None:
    with pytest.raises(TypeError, match="^data must be bytes-like"):
        core.Timestamp.from_bytes(bad)


# --- text -----------------------------------------------------------------------


def test_text_example_from_the_issue(core: ModuleType) -> None:
    text = "2026-12-03T12:00:00.000Z-0001-00000000000000FF"
    ts = core.Timestamp.parse(text)
    assert ts.physical == _ms(datetime(2026, 12, 3, 12, tzinfo=timezone.utc))
    assert (ts.logical, ts.node) == (1, 255)
    assert str(ts) == text


@pytest.mark.parametrize(
    "moment",
    [datetime(1970, 1, 1), datetime(2000, 2, 29, 23, 59, 59, 999_000),
     datetime(2100, 3, 1), datetime(2024, 12, 31, 0, 0, 0, 1000),
     datetime(9999, 12, 31, 23, 59, 59)],
    ids=str,
)
def test_text_agrees_with_datetime(core: ModuleType, moment: datetime) -> None:
    ts = core.Timestamp(_ms(moment.replace(tzinfo=timezone.utc)), 0xABCD, 0x0123456789ABCDEF)
    expected = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    assert str(ts) == f"{expected}-ABCD-0123456789ABCDEF"
    assert core.Timestamp.parse(str(ts)) == ts


def test_text_extremes_round_trip(core: ModuleType) -> None:
    first = core.Timestamp(0)
    last = core.Timestamp(TEXT_PHYSICAL_LIMIT - 1, MAX_LOGICAL, MAX_NODE)
    assert str(first) == "1970-01-01T00:00:00.000Z-0000-0000000000000000"
    assert str(last) == "9999-12-31T23:59:59.999Z-FFFF-FFFFFFFFFFFFFFFF"
    assert core.Timestamp.parse(str(first)) == first
    assert core.Timestamp.parse(str(last)) == last


@pytest.mark.parametrize("physical", [TEXT_PHYSICAL_LIMIT, MAX_PHYSICAL])
def test_text_after_year_9999_raises(core: ModuleType, physical: int) -> None:
    with pytest.raises(ValueError, match="no text form"):
        str(core.Timestamp(physical))


def test_leap_day_accepted_on_leap_years(core: ModuleType) -> None:
    for year in (2024, 2000):
        ts = core.Timestamp.parse(_replace(VALID_TEXT, 0, f"{year}-02-29"))
        assert ts.to_datetime().date() == datetime(year, 2, 29).date()


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (VALID_TEXT[:-1], "expected 46 characters, got 45"),
        (VALID_TEXT + "0", "expected 46 characters, got 47"),
        ("", "expected 46 characters, got 0"),
        (_replace(VALID_TEXT, 10, " "), "expected 'T' at position 10"),
        (_replace(VALID_TEXT, 23, "+"), "expected 'Z' at position 23"),
        (_replace(VALID_TEXT, 29, "_"), "expected '-' at position 29"),
        (_replace(VALID_TEXT, 0, "20x4"), "year '20x4' is not decimal digits"),
        (_replace(VALID_TEXT, 5, "13"), "month 13 is out of range"),
        (_replace(VALID_TEXT, 5, "00"), "month 0 is out of range"),
        (_replace(VALID_TEXT, 8, "30"), "day 30 is out of range for 2024-02"),
        (_replace(VALID_TEXT, 8, "00"), "day 0 is out of range for 2024-02"),
        (_replace(VALID_TEXT, 0, "2023-02-29"), "day 29 is out of range for 2023-02"),
        (_replace(VALID_TEXT, 0, "2100-02-29"), "day 29 is out of range for 2100-02"),
        (_replace(VALID_TEXT, 0, "2024-04-31"), "day 31 is out of range for 2024-04"),
        (_replace(VALID_TEXT, 11, "24"), "hour 24 is out of range"),
        (_replace(VALID_TEXT, 14, "60"), "minute 60 is out of range"),
        (_replace(VALID_TEXT, 17, "60"), "second 60 is out of range"),
        (_replace(VALID_TEXT, 20, "1 2"), "millisecond '1 2' is not decimal digits"),
        (_replace(VALID_TEXT, 25, "000a"), "counter '000a' is not 4 upper-case hex digits"),
        (_replace(VALID_TEXT, 44, "ff"), "node '00000000000000ff' is not 16 upper-case hex digits"),
        (_replace(VALID_TEXT, 30, "G"), "node 'G0000000000000FF' is not 16 upper-case hex digits"),
        (_replace(VALID_TEXT, 0, "1969"), "year 1969 is before 1970"),
        (_replace(VALID_TEXT, 0, "0000"), "year 0 is before 1970"),
        # Full-width digits: str.isdigit() and int() accept them, the format does not.
        (_replace(VALID_TEXT, 0, FULLWIDTH_2024), f"year {FULLWIDTH_2024!r} is not decimal digits"),
    ],
)
def test_parse_rejects_malformed_text(core: ModuleType, text: str, why: str) -> None:
    with pytest.raises(ValueError) as caught:
        core.Timestamp.parse(text)
    assert str(caught.value) == f"malformed timestamp text {text!r}: {why}"


@pytest.mark.parametrize("bad", [VALID_TEXT.encode(), None, 0, bytearray(46)], ids=repr)
def test_parse_non_str_raises_type_error(core: ModuleType, bad: Any) -> None:
    with pytest.raises(TypeError, match="^text must be a str, not "):
        core.Timestamp.parse(bad)


def test_parse_accepts_str_subclass(core: ModuleType) -> None:
    class Text(str):
        pass

    assert core.Timestamp.parse(Text(VALID_TEXT)) == core.Timestamp.parse(VALID_TEXT)


# --- datetime and repr ----------------------------------------------------------


def test_to_datetime_is_aware_utc(core: ModuleType) -> None:
    moment = core.Timestamp(1410652800123, 5, 6).to_datetime()
    assert moment == datetime(2014, 9, 14, 0, 0, 0, 123_000, tzinfo=timezone.utc)
    assert moment.utcoffset() is not None and moment.utcoffset().total_seconds() == 0


def test_to_datetime_after_year_9999_raises(core: ModuleType) -> None:
    assert core.Timestamp(TEXT_PHYSICAL_LIMIT - 1).to_datetime().year == 9999
    with pytest.raises(ValueError, match="year 9999"):
        core.Timestamp(TEXT_PHYSICAL_LIMIT).to_datetime()


def test_repr_names_the_fields(core: ModuleType) -> None:
    assert repr(core.Timestamp(1, 2, 3)) == "Timestamp(physical=1, logical=2, node=3)"
